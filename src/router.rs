//! Routing to providers: which sessions serve which namespace, the routed
//! requests waiting for an answer, and their deadlines.
//!
//! A routed request gets a gateway-chosen id; the provider's answer is
//! matched by that id *and* by the provider that was asked, then handed to
//! the caller's outbound queue with the caller's own id. Several providers of
//! one namespace share the load, fewest pending first; a request goes to
//! exactly one. An answer owed to an element of a batch goes into that
//! batch's one answer array ([`Gather`]), which is sent once its last routed
//! answer (or -32004/-32005) is in. Only a provider whose rights meet the
//! request's own need (the routed method's rule, [`Routed::need`]) is sent
//! it. Must not read sockets or decide rights beyond "this provider holds
//! what this request needs".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxBuildHasher;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::bus::{Bus, Origin};
use crate::catalog::{self, Need};
use crate::hub::SessionHandle;
use crate::metrics::{NamespaceMetrics, RoutedEnd};
use crate::outbound::{Bound, Guard};
use crate::rpc::{self, Code, RpcError};
pub use crate::util::push_json_str;

struct Pending {
    caller: Caller,
    provider: Provider,
    deadline: Instant,
    started: Instant,
}

/// Who waits for a routed request's answer.
enum Caller {
    /// A session on this node, with its own id for the request.
    Local {
        session: Arc<SessionHandle>,
        id: Box<RawValue>,
        metrics: Arc<NamespaceMetrics>,
        /// `None`: the answer is a message of its own.
        batch: Option<(Arc<Gather>, usize)>,
    },
    /// Another node (through the bus), with its id for the request.
    Remote { node: Arc<str>, gid: u64 },
}

/// Who serves a routed request.
enum Provider {
    Local(Arc<SessionHandle>),
    /// Another node; `None` until a node has taken it.
    Remote(Option<Arc<str>>),
}

impl Provider {
    fn is_session(&self, id: u64) -> bool {
        matches!(self, Provider::Local(s) if s.id == id)
    }
}

impl Caller {
    fn is_session(&self, id: u64) -> bool {
        matches!(self, Caller::Local { session, .. } if session.id == id)
    }
}

/// How a routed request ended, for its caller.
enum Outcome<'a> {
    /// The provider's answer: `"result":…` or `"error":…`, as a key and its
    /// value (kept apart so the answer is copied once, into the caller's
    /// message), or `""` and the whole fragment from another node.
    Answer(&'static str, &'a str),
    Error(&'a RpcError),
}

pub struct Router {
    providers: RwLock<HashMap<Box<str>, Vec<Arc<SessionHandle>>>>,
    /// Keyed by the gateway's own sequential ids, never by a peer's bytes:
    /// a fast hash is safe here (SipHash was a visible share of a profile).
    pending: DashMap<u64, Pending, FxBuildHasher>,
    next_id: AtomicU64,
    /// Requests to and answers from providers on other nodes.
    bus: Arc<dyn Bus>,
}

/// What `route` needs to know about the request.
pub struct Routed<'a> {
    pub ns: &'a str,
    /// What the provider must hold for THIS request: the routed method's
    /// own rule, the need the gate judged the caller by.
    pub need: Need,
    pub method: &'a str,
    pub id: Option<&'a RawValue>,
    pub params: Option<&'a RawValue>,
    pub timeout: Duration,
    pub max_pending: usize,
    /// Bound of the provider's queue for notifications (no answer owed).
    pub queue_cap: usize,
    /// Bound of the provider's queue for requests; past it the caller gets
    /// -32004 "provider busy".
    pub provider_cap: usize,
    /// Bytes bound of the provider's queue (with either cap).
    pub queue_bytes: usize,
    /// A provider whose queue stays full this long is closed (1008).
    pub stall: Duration,
    /// Where the answer's latency is counted.
    pub metrics: Arc<NamespaceMetrics>,
    /// A batch element: the batch's answer array and where in its local
    /// part this element's answer belongs (see [`Gather`]).
    pub batch: Option<(Arc<Gather>, usize)>,
    /// When the caller's frame was read: the start of the request leg of
    /// the time the gateway adds (`routed_added_seconds`).
    pub read_at: Instant,
}

impl Router {
    pub fn new(bus: Arc<dyn Bus>) -> Router {
        Router {
            providers: RwLock::default(),
            pending: DashMap::with_hasher(FxBuildHasher),
            next_id: AtomicU64::new(0),
            bus,
        }
    }

    /// `session` serves `ns` from now on. Registering twice is harmless.
    pub fn register(&self, session: &Arc<SessionHandle>, ns: &str) {
        let mut map = self.providers.write();
        let list = map.entry(Box::from(ns)).or_default();
        if list.is_empty() {
            self.bus.serve(ns, true);
        }
        if !list.iter().any(|s| s.id == session.id) {
            list.push(session.clone());
        }
    }

    pub fn unregister(&self, session_id: u64, ns: &str) {
        let mut map = self.providers.write();
        if let Some(list) = map.get_mut(ns) {
            list.retain(|s| s.id != session_id);
            if list.is_empty() {
                map.remove(ns);
                self.bus.serve(ns, false);
            }
        }
    }

    /// Namespaces `session_id` serves.
    pub fn served_by(&self, session_id: u64) -> Vec<String> {
        let map = self.providers.read();
        let mut v: Vec<String> = map
            .iter()
            .filter(|(_, list)| list.iter().any(|s| s.id == session_id))
            .map(|(ns, _)| ns.to_string())
            .collect();
        v.sort();
        v
    }

    /// How many providers serve each namespace, by name.
    pub fn providers_by_namespace(&self) -> Vec<(String, usize)> {
        let map = self.providers.read();
        let mut v: Vec<(String, usize)> = map
            .iter()
            .map(|(ns, list)| (ns.to_string(), list.len()))
            .collect();
        v.sort();
        v
    }

    /// Sends a caller's request to one provider. Errors: no provider holding
    /// `r.need` (-32004), too many pending (-32006).
    pub fn route(&self, caller: &Arc<SessionHandle>, r: Routed<'_>) -> Result<(), RpcError> {
        // In a cluster every request goes through the namespace's queue
        // group, so providers on every node share the load; while the
        // cluster is unreachable, this node's own providers serve.
        if self.bus.up() && crate::config::valid_token(r.ns) {
            return self.route_remote(caller, r);
        }
        let Some(provider) = self.pick(r.ns, r.need) else {
            return Err(RpcError::new(Code::NoProvider));
        };
        // The whole message in one buffer: envelope, gateway id, body.
        let mut out = String::with_capacity(body_capacity(&r) + 48);
        out.push_str("{\"jsonrpc\":\"2.0\",");
        let mut gid = None;
        if let Some(caller_id) = r.id {
            let id = self.wait(caller, caller_id, &r, Provider::Local(provider.clone()))?;
            out.push_str("\"id\":");
            out.push_str(itoa::Buffer::new().format(id));
            out.push(',');
            gid = Some(id);
        }
        push_request_body(&mut out, caller, &r);
        match gid {
            Some(gid) => {
                let queued = provider.outbound.push_request(
                    Utf8Bytes::from(out),
                    gid,
                    r.need,
                    r.read_at,
                    Bound {
                        messages: r.provider_cap,
                        bytes: r.queue_bytes,
                        stall: r.stall,
                    },
                );
                if !queued {
                    // Answered like any routed end, so a batch's array
                    // gets its element too.
                    let busy = RpcError::with_message(Code::NoProvider, "provider busy");
                    self.fail(gid, &busy, RoutedEnd::ProviderBusy);
                }
            }
            None => {
                // No answer is owed: a notification is dropped, not queued
                // without bound, when the provider is behind.
                provider.outbound.push_event(
                    Utf8Bytes::from(out),
                    Guard::Needs(r.need),
                    Bound {
                        messages: r.queue_cap,
                        bytes: r.queue_bytes,
                        stall: Duration::MAX,
                    },
                );
            }
        }
        Ok(())
    }

    /// Notes a caller's request as pending with `provider`; returns its
    /// gateway id, or -32006 past the caller's pending bound.
    fn wait(
        &self,
        caller: &Arc<SessionHandle>,
        caller_id: &RawValue,
        r: &Routed<'_>,
        provider: Provider,
    ) -> Result<u64, RpcError> {
        if caller.waiting.load(Ordering::Acquire) as usize >= r.max_pending {
            return Err(RpcError::new(Code::TooManyPending));
        }
        let gid = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        caller.waiting.fetch_add(1, Ordering::AcqRel);
        if let Provider::Local(p) = &provider {
            p.serving.fetch_add(1, Ordering::AcqRel);
        }
        let started = Instant::now();
        let batch = r.batch.clone().map(|(gather, at)| {
            let slot = gather.owe(at);
            (gather, slot)
        });
        self.pending.insert(
            gid,
            Pending {
                caller: Caller::Local {
                    session: caller.clone(),
                    id: caller_id.to_owned(),
                    metrics: r.metrics.clone(),
                    batch,
                },
                provider,
                deadline: started + r.timeout,
                started,
            },
        );
        Ok(gid)
    }

    /// This node's provider of `ns` that meets `need` with the fewest
    /// pending requests.
    fn pick(&self, ns: &str, need: Need) -> Option<Arc<SessionHandle>> {
        let map = self.providers.read();
        map.get(ns)
            .into_iter()
            .flatten()
            .filter(|p| {
                p.rights()
                    .is_some_and(|rights| catalog::satisfies(rights, need))
            })
            .min_by_key(|p| p.serving.load(Ordering::Relaxed))
            .cloned()
    }

    /// Hands a caller's request to the bus: one node's provider takes it,
    /// or it fails with -32004 once the bus says none would.
    fn route_remote(&self, caller: &Arc<SessionHandle>, r: Routed<'_>) -> Result<(), RpcError> {
        let mut body = String::with_capacity(body_capacity(&r));
        push_request_body(&mut body, caller, &r);
        let Some(caller_id) = r.id else {
            self.bus.notify(r.ns, body);
            return Ok(());
        };
        let gid = self.wait(caller, caller_id, &r, Provider::Remote(None))?;
        self.bus.route(r.ns, gid, r.timeout, body);
        Ok(())
    }

    /// Another node's request for a provider of `ns` here. `Err`: why
    /// none takes it (the caller gets -32004).
    pub fn serve_remote(
        &self,
        ns: &str,
        need: Need,
        from: Origin,
        body: &str,
        bound: Bound,
    ) -> Result<(), &'static str> {
        let provider = self.pick(ns, need).ok_or("no provider")?;
        let gid = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        provider.serving.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        self.pending.insert(
            gid,
            Pending {
                caller: Caller::Remote {
                    node: from.node,
                    gid: from.gid,
                },
                provider: Provider::Local(provider.clone()),
                deadline: started + from.timeout,
                started,
            },
        );
        let message = format!("{{\"jsonrpc\":\"2.0\",\"id\":{gid},{body}");
        if !provider
            .outbound
            .push_request(Utf8Bytes::from(message), gid, need, started, bound)
        {
            if let Some((_, p)) = self.pending.remove(&gid) {
                Self::release(&p);
            }
            return Err("provider busy");
        }
        Ok(())
    }

    /// Another node's routed notification for a provider of `ns` here.
    pub fn notify_remote(&self, ns: &str, need: Need, body: &str, bound: Bound) {
        if let Some(provider) = self.pick(ns, need) {
            let message = format!("{{\"jsonrpc\":\"2.0\",{body}");
            provider
                .outbound
                .push_event(Utf8Bytes::from(message), Guard::Needs(need), bound);
        }
    }

    /// A node took our request `gid` (or said why not: -32004).
    pub fn accepted(&self, gid: u64, outcome: Result<Arc<str>, String>) {
        match outcome {
            Ok(node) => {
                if let Some(mut p) = self.pending.get_mut(&gid) {
                    if let Provider::Remote(slot @ None) = &mut p.provider {
                        *slot = Some(node);
                    }
                }
            }
            Err(why) => {
                let err = if why == "provider busy" {
                    RpcError::with_message(Code::NoProvider, "provider busy")
                } else {
                    RpcError::new(Code::NoProvider)
                };
                self.fail(gid, &err, RoutedEnd::ProviderGone);
            }
        }
    }

    /// `node` answered our request `gid`.
    pub fn answer_remote(&self, node: &str, gid: u64, fragment: &str) {
        let from_node = |p: &Pending| match &p.provider {
            Provider::Remote(Some(n)) => **n == *node,
            // The answer overtook the node's "ok".
            Provider::Remote(None) => true,
            Provider::Local(_) => false,
        };
        if let Some((_, p)) = self.pending.remove_if(&gid, |_, p| from_node(p)) {
            // On this node the answer leg starts as the bus hands it over.
            let read = Instant::now();
            self.finish(
                p,
                Outcome::Answer("", fragment),
                RoutedEnd::Answered,
                Some(read),
            );
        }
    }

    /// `node` is gone: what it served fails with -32004, what it asked is dropped.
    pub fn node_gone(&self, node: &str) {
        let affected: Vec<(u64, bool)> = self
            .pending
            .iter()
            .filter_map(|p| match (&p.provider, &p.caller) {
                (Provider::Remote(Some(n)), _) if **n == *node => Some((*p.key(), true)),
                (_, Caller::Remote { node: n, .. }) if **n == *node => Some((*p.key(), false)),
                _ => None,
            })
            .collect();
        let err = RpcError::with_message(Code::NoProvider, "provider disconnected");
        for (gid, served) in affected {
            if served {
                self.fail(gid, &err, RoutedEnd::ProviderGone);
            } else if let Some((_, p)) = self.pending.remove(&gid) {
                Self::release(&p);
            }
        }
    }

    /// Whether routed request `gid` still waits for its answer (a queued
    /// request that no longer does is not sent).
    pub fn is_pending(&self, gid: u64) -> bool {
        self.pending.contains_key(&gid)
    }

    /// A provider answered (its frame read at `read_at`); true if it
    /// answered a request pending with it. Answers to ids it was not asked
    /// are ignored.
    pub fn answer(
        &self,
        provider: &SessionHandle,
        id: &RawValue,
        outcome: Result<&RawValue, &RawValue>,
        read_at: Instant,
    ) -> bool {
        let Ok(gid) = id.get().parse::<u64>() else {
            tracing::debug!("answer with an id the gateway never sent");
            return false;
        };
        let Some((_, p)) = self
            .pending
            .remove_if(&gid, |_, p| p.provider.is_session(provider.id))
        else {
            tracing::debug!(gid, "late or foreign answer ignored");
            return false;
        };
        let answer = match outcome {
            Ok(result) => Outcome::Answer("\"result\":", result.get()),
            Err(error) => Outcome::Answer("\"error\":", error.get()),
        };
        self.finish(p, answer, RoutedEnd::Answered, Some(read_at));
        true
    }

    /// The counts a pending request held. A batch element keeps its
    /// caller's slot until the batch's array is queued ([`Gather`]): its
    /// answer waits there meanwhile, and the pending bound must cover it.
    fn release(p: &Pending) {
        if let Caller::Local { session, batch, .. } = &p.caller {
            if batch.is_none() {
                session.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if let Provider::Local(s) = &p.provider {
            s.serving.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Hands the outcome to the caller: its session here, or its node.
    /// `read`: when a provider's answer was read (the answer leg starts).
    fn finish(&self, p: Pending, outcome: Outcome<'_>, end: RoutedEnd, read: Option<Instant>) {
        Self::release(&p);
        match p.caller {
            Caller::Local {
                session,
                id,
                metrics,
                batch,
            } => {
                metrics.routed(end, p.started);
                let out = match outcome {
                    Outcome::Answer(key, value) => {
                        let id = id.get();
                        let mut out =
                            String::with_capacity(26 + id.len() + key.len() + value.len());
                        out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
                        out.push_str(id);
                        out.push(',');
                        out.push_str(key);
                        out.push_str(value);
                        out.push('}');
                        out
                    }
                    Outcome::Error(e) => {
                        let mut out = Vec::with_capacity(96);
                        rpc::write_error(&mut out, Some(&id), e);
                        String::from_utf8(out).unwrap_or_default()
                    }
                };
                match batch {
                    Some((gather, slot)) => gather.fill(slot, out.into_bytes()),
                    None => session.outbound.push_reply(Utf8Bytes::from(out), read),
                }
            }
            Caller::Remote { node, gid } => {
                let fragment = match outcome {
                    Outcome::Answer(key, value) => [key, value].concat(),
                    Outcome::Error(e) => error_fragment(e),
                };
                self.bus.answer(&node, gid, fragment);
            }
        }
    }

    fn fail(&self, gid: u64, error: &RpcError, end: RoutedEnd) {
        if let Some((_, p)) = self.pending.remove(&gid) {
            self.finish(p, Outcome::Error(error), end, None);
        }
    }

    /// Fails every request past its deadline with -32005.
    pub fn expire(&self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|p| p.deadline <= now)
            .map(|p| *p.key())
            .collect();
        let err = RpcError::new(Code::ProviderTimeout);
        for gid in expired {
            self.fail(gid, &err, RoutedEnd::Timeout);
        }
    }

    /// A session ended: it serves nothing more, its pending requests as a
    /// provider fail with -32004 at once, its own waiting requests are dropped.
    pub fn session_ended(&self, session: &SessionHandle) {
        let session_id = session.id;
        {
            let mut map = self.providers.write();
            map.retain(|ns, list| {
                list.retain(|s| s.id != session_id);
                if list.is_empty() {
                    self.bus.serve(ns, false);
                }
                !list.is_empty()
            });
        }
        // Most sessions end with nothing pending: they need not walk every
        // request pending in the gateway (a peer opening and closing
        // connections would otherwise make each close cost the whole map).
        // The counts go up before a request is noted as pending.
        if session.waiting.load(Ordering::Acquire) == 0
            && session.serving.load(Ordering::Acquire) == 0
        {
            return;
        }
        let affected: Vec<(u64, bool)> = self
            .pending
            .iter()
            .filter(|p| p.provider.is_session(session_id) || p.caller.is_session(session_id))
            .map(|p| (*p.key(), p.provider.is_session(session_id)))
            .collect();
        let err = RpcError::with_message(Code::NoProvider, "provider disconnected");
        for (gid, as_provider) in affected {
            if as_provider {
                self.fail(gid, &err, RoutedEnd::ProviderGone);
            } else if let Some((_, p)) = self.pending.remove(&gid) {
                Self::release(&p);
            }
        }
    }
}

/// Room for [`push_request_body`]'s output: the params and the method
/// plus the caller block (its rights list is usually short).
fn body_capacity(r: &Routed<'_>) -> usize {
    160 + r.method.len() + r.params.map_or(2, |p| p.get().len())
}

/// Appends what a provider gets after the id, `"method":…}` (for another
/// node the whole body), written in place: no intermediate strings.
fn push_request_body(out: &mut String, caller: &SessionHandle, r: &Routed<'_>) {
    out.push_str("\"method\":");
    push_json_str(out, r.method);
    out.push_str(",\"params\":");
    out.push_str(r.params.map_or("{}", RawValue::get));
    out.push_str(",\"caller\":{\"user\":");
    push_json_str(out, caller.user().map_or("", |u| &**u));
    out.push_str(",\"sessionId\":\"");
    push_hex16(out, caller.id);
    out.push_str("\",\"rights\":[");
    for (n, right) in caller.rights().unwrap_or_default().iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        push_json_str(out, right.name());
    }
    out.push_str("]}}");
}

/// Appends `id` as 16 lowercase hex digits (`SessionHandle::id_string`)
/// without the formatting machinery.
fn push_hex16(out: &mut String, id: u64) {
    for shift in (0..16).rev() {
        let nibble = ((id >> (shift * 4)) & 0xf) as u8;
        out.push(char::from(if nibble < 10 {
            b'0' + nibble
        } else {
            b'a' + nibble - 10
        }));
    }
}

/// `"error":{…}` for an answer that goes to another node.
fn error_fragment(e: &RpcError) -> String {
    let mut out = Vec::with_capacity(96);
    rpc::write_error(&mut out, None, e);
    let text = String::from_utf8(out).unwrap_or_default();
    // `{"jsonrpc":"2.0","id":null,` … `}`
    let start = text.find("\"error\"").unwrap_or(0);
    text.get(start..text.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

fn push_message(caller: &SessionHandle, message: Vec<u8>, read: Option<Instant>) {
    if let Ok(text) = String::from_utf8(message) {
        caller.outbound.push_reply(Utf8Bytes::from(text), read);
    }
}

/// One batch's answer array while routed elements are still owed their
/// answers (JSON-RPC 2.0 §6: a batch gets exactly one array).
///
/// `dispatch` writes the immediate answers into one buffer as usual (`[`,
/// then the answers with their commas) and notes, for each element it
/// forwarded, the offset in that buffer where its answer belongs. Once the
/// buffer is sealed and no answer is owed, the array is assembled in element
/// order and sent: at once by `seal`, or by whoever fills the last slot.
pub struct Gather {
    caller: Arc<SessionHandle>,
    state: Mutex<GatherState>,
}

#[derive(Default)]
struct GatherState {
    /// `[` and the immediate answers; `None` until `dispatch` has seen
    /// every element.
    local: Option<Vec<u8>>,
    /// Forwarded elements in element order: the offset in `local` where
    /// each answer goes, and the answer once it is in.
    routed: Vec<(usize, Option<Vec<u8>>)>,
    owed: usize,
}

impl Gather {
    pub fn new(caller: Arc<SessionHandle>) -> Arc<Gather> {
        Arc::new(Gather {
            caller,
            state: Mutex::default(),
        })
    }

    /// One more answer owed, to go at offset `at` of the local part.
    fn owe(&self, at: usize) -> usize {
        let mut s = self.state.lock();
        s.routed.push((at, None));
        s.owed += 1;
        s.routed.len() - 1
    }

    /// A forwarded element's answer (or its -32004/-32005) is in.
    fn fill(&self, slot: usize, answer: Vec<u8>) {
        let mut s = self.state.lock();
        let Some(entry) = s.routed.get_mut(slot) else {
            return;
        };
        if entry.1.replace(answer).is_none() {
            s.owed -= 1;
        }
        if s.owed == 0 {
            if let Some(local) = s.local.take() {
                let array = assemble(&local, &s.routed);
                let slots = s.routed.len();
                drop(s);
                // A batch's array is not timed: its answers were read at
                // different instants.
                push_message(&self.caller, array, None);
                self.release(slots);
            }
        }
    }

    /// The caller's pending slots its routed elements held, now that their
    /// answers have left the gather.
    fn release(&self, slots: usize) {
        let slots = u32::try_from(slots).unwrap_or(u32::MAX);
        self.caller.waiting.fetch_sub(slots, Ordering::AcqRel);
    }

    /// `dispatch` has seen every element; `local` is `[` and the immediate
    /// answers, without the closing `]`. Returns the whole array if no
    /// answer is owed any more (it is then the caller's to send).
    pub fn seal(&self, local: Vec<u8>) -> Option<Vec<u8>> {
        let mut s = self.state.lock();
        if s.owed == 0 {
            let array = assemble(&local, &s.routed);
            let slots = s.routed.len();
            drop(s);
            self.release(slots);
            return Some(array);
        }
        s.local = Some(local);
        None
    }
}

/// The array: the local part with each routed answer spliced in at its
/// offset, a comma before it unless it is the first element, then `]`.
fn assemble(local: &[u8], routed: &[(usize, Option<Vec<u8>>)]) -> Vec<u8> {
    let len = routed.iter().flat_map(|(_, a)| a).map(|a| a.len() + 1);
    let mut out = Vec::with_capacity(local.len() + len.sum::<usize>() + 1);
    let mut from = 0;
    for (n, (at, answer)) in routed.iter().enumerate() {
        let Some(answer) = answer else { continue };
        let at = (*at).clamp(from, local.len());
        out.extend_from_slice(local.get(from..at).unwrap_or_default());
        if n > 0 || at > 1 {
            out.push(b',');
        }
        out.extend_from_slice(answer);
        from = at;
    }
    out.extend_from_slice(local.get(from..).unwrap_or_default());
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_ids_are_written_as_id_string_writes_them() {
        for id in [0, 1, 0xa, 0x3f9a_0c2b_71d4_e856, u64::MAX] {
            let mut out = String::new();
            super::push_hex16(&mut out, id);
            assert_eq!(out, format!("{id:016x}"));
        }
    }
}

//! Routing to providers: which sessions serve which namespace, the routed
//! requests waiting for an answer, and their deadlines.
//!
//! A routed request gets a gateway-chosen id; the provider's answer is
//! matched by that id *and* by the provider that was asked, then handed to
//! the caller's outbound queue with the caller's own id. Several providers of
//! one namespace share the load, fewest pending first; a request goes to
//! exactly one. An answer owed to an element of a batch goes into that
//! batch's one answer array ([`Gather`]), which is sent once its last routed
//! answer (or -32004/-32005) is in. Must not read sockets or decide rights
//! beyond "this provider still holds the namespace's need".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::catalog::{self, Need};
use crate::hub::SessionHandle;
use crate::metrics::{NamespaceMetrics, RoutedEnd};
use crate::outbound::Guard;
use crate::rpc::{self, Code, RpcError};
pub use crate::util::push_json_str;

struct Pending {
    caller: Arc<SessionHandle>,
    caller_id: Box<RawValue>,
    provider: Arc<SessionHandle>,
    deadline: Instant,
    started: Instant,
    metrics: Arc<NamespaceMetrics>,
    /// `None`: the answer is a message of its own.
    batch: Option<(Arc<Gather>, usize)>,
}

#[derive(Default)]
pub struct Router {
    providers: RwLock<HashMap<Box<str>, Vec<Arc<SessionHandle>>>>,
    pending: DashMap<u64, Pending>,
    next_id: AtomicU64,
}

/// What `route` needs to know about the request.
pub struct Routed<'a> {
    pub ns: &'a str,
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
    /// A provider whose queue stays full this long is closed (1008).
    pub stall: Duration,
    /// Where the answer's latency is counted.
    pub metrics: Arc<NamespaceMetrics>,
    /// A batch element: the batch's answer array and where in its local
    /// part this element's answer belongs (see [`Gather`]).
    pub batch: Option<(Arc<Gather>, usize)>,
}

impl Router {
    /// `session` serves `ns` from now on. Registering twice is harmless.
    pub fn register(&self, session: &Arc<SessionHandle>, ns: &str) {
        let mut map = self.providers.write();
        let list = map.entry(Box::from(ns)).or_default();
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

    /// Sends a caller's request to one provider. Errors: no provider (-32004),
    /// too many pending (-32006).
    pub fn route(&self, caller: &Arc<SessionHandle>, r: Routed<'_>) -> Result<(), RpcError> {
        let provider = {
            let map = self.providers.read();
            map.get(r.ns)
                .into_iter()
                .flatten()
                .filter(|p| {
                    p.rights()
                        .is_some_and(|rights| catalog::satisfies(rights, r.need))
                })
                .min_by_key(|p| p.serving.load(Ordering::Relaxed))
                .cloned()
        };
        let Some(provider) = provider else {
            return Err(RpcError::new(Code::NoProvider));
        };
        let mut out = String::with_capacity(160 + r.params.map_or(2, |p| p.get().len()));
        out.push_str("{\"jsonrpc\":\"2.0\",");
        let mut gid = None;
        if let Some(caller_id) = r.id {
            if caller.waiting.load(Ordering::Acquire) as usize >= r.max_pending {
                return Err(RpcError::new(Code::TooManyPending));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
            caller.waiting.fetch_add(1, Ordering::AcqRel);
            provider.serving.fetch_add(1, Ordering::AcqRel);
            let started = Instant::now();
            let batch = r.batch.map(|(gather, at)| {
                let slot = gather.owe(at);
                (gather, slot)
            });
            self.pending.insert(
                id,
                Pending {
                    caller: caller.clone(),
                    caller_id: caller_id.to_owned(),
                    provider: provider.clone(),
                    deadline: started + r.timeout,
                    started,
                    metrics: r.metrics.clone(),
                    batch,
                },
            );
            out.push_str("\"id\":");
            out.push_str(&id.to_string());
            out.push(',');
            gid = Some(id);
        }
        out.push_str("\"method\":");
        push_json_str(&mut out, r.method);
        out.push_str(",\"params\":");
        out.push_str(r.params.map_or("{}", RawValue::get));
        out.push_str(",\"caller\":{\"user\":");
        push_json_str(&mut out, caller.user().map_or("", |u| &**u));
        out.push_str(",\"sessionId\":\"");
        out.push_str(&caller.id_string());
        out.push_str("\",\"rights\":");
        out.push_str(
            &serde_json::to_string(&caller.rights().unwrap_or_default().names())
                .unwrap_or_else(|_| "[]".into()),
        );
        out.push_str("}}");
        match gid {
            Some(gid) => {
                let queued = provider.outbound.push_request(
                    Utf8Bytes::from(out),
                    gid,
                    r.provider_cap,
                    r.stall,
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
                    Guard::Always,
                    r.queue_cap,
                    Duration::MAX,
                );
            }
        }
        Ok(())
    }

    /// Whether routed request `gid` still waits for its answer (a queued
    /// request that no longer does is not sent).
    pub fn is_pending(&self, gid: u64) -> bool {
        self.pending.contains_key(&gid)
    }

    /// A provider answered; true if it answered a request pending with it.
    /// Answers to ids it was not asked are ignored.
    pub fn answer(
        &self,
        provider: &SessionHandle,
        id: &RawValue,
        outcome: Result<&RawValue, &RawValue>,
    ) -> bool {
        let Ok(gid) = id.get().parse::<u64>() else {
            tracing::debug!("answer with an id the gateway never sent");
            return false;
        };
        let Some((_, p)) = self
            .pending
            .remove_if(&gid, |_, p| p.provider.id == provider.id)
        else {
            tracing::debug!(gid, "late or foreign answer ignored");
            return false;
        };
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(p.caller_id.get().as_bytes());
        match outcome {
            Ok(result) => {
                out.extend_from_slice(b",\"result\":");
                out.extend_from_slice(result.get().as_bytes());
            }
            Err(error) => {
                out.extend_from_slice(b",\"error\":");
                out.extend_from_slice(error.get().as_bytes());
            }
        }
        out.push(b'}');
        self.finish(p, out, RoutedEnd::Answered);
        true
    }

    fn finish(&self, p: Pending, message: Vec<u8>, end: RoutedEnd) {
        p.metrics.routed(end, p.started);
        p.caller.waiting.fetch_sub(1, Ordering::AcqRel);
        p.provider.serving.fetch_sub(1, Ordering::AcqRel);
        match p.batch {
            Some((gather, slot)) => gather.fill(slot, message),
            None => push_message(&p.caller, message),
        }
    }

    fn fail(&self, gid: u64, error: &RpcError, end: RoutedEnd) {
        if let Some((_, p)) = self.pending.remove(&gid) {
            let mut out = Vec::with_capacity(96);
            rpc::write_error(&mut out, Some(&p.caller_id), error);
            self.finish(p, out, end);
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
    pub fn session_ended(&self, session_id: u64) {
        {
            let mut map = self.providers.write();
            map.retain(|_, list| {
                list.retain(|s| s.id != session_id);
                !list.is_empty()
            });
        }
        let affected: Vec<(u64, bool)> = self
            .pending
            .iter()
            .filter(|p| p.provider.id == session_id || p.caller.id == session_id)
            .map(|p| (*p.key(), p.provider.id == session_id))
            .collect();
        let err = RpcError::with_message(Code::NoProvider, "provider disconnected");
        for (gid, as_provider) in affected {
            if as_provider {
                self.fail(gid, &err, RoutedEnd::ProviderGone);
            } else if let Some((_, p)) = self.pending.remove(&gid) {
                p.caller.waiting.fetch_sub(1, Ordering::AcqRel);
                p.provider.serving.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

fn push_message(caller: &SessionHandle, message: Vec<u8>) {
    if let Ok(text) = String::from_utf8(message) {
        caller.outbound.push_reply(Utf8Bytes::from(text));
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
                drop(s);
                push_message(&self.caller, array);
            }
        }
    }

    /// `dispatch` has seen every element; `local` is `[` and the immediate
    /// answers, without the closing `]`. Returns the whole array if no
    /// answer is owed any more (it is then the caller's to send).
    pub fn seal(&self, local: Vec<u8>) -> Option<Vec<u8>> {
        let mut s = self.state.lock();
        if s.owed == 0 {
            return Some(assemble(&local, &s.routed));
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

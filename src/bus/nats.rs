//! The cluster bus through NATS (server 2.10 or newer, JetStream on).
//!
//! Subjects, under `[cluster] prefix` (P):
//! - `P.route.<ns>`, queue group `<ns>`: routed requests; only nodes with a
//!   provider of `<ns>` subscribe, NATS picks one, "no responders" when none.
//!   The serving node answers the request at once ("ok" or why not), then
//!   sends the provider's answer to `P.answer.<caller node>`.
//! - `P.ev.<topic>`: events; a node subscribes to the patterns its own
//!   sessions want (`a.b.*` as `P.ev.a.b.>`).
//! - `P.node.<node>`: each node's heartbeat ([`Presence`]) every 200 ms; a
//!   node silent for 700 ms is gone.
//! - `P.sessions`, `P.close`: cluster-wide session list and close.
//! - `P.login`: failed and successful logins, for cluster-wide lockout (the
//!   name typed as its keyed digest, never as text), and operators' unlocks.
//!
//! The shared configuration is key `shared` of the JetStream key-value
//! bucket `P_config` (its revision is the Management API's), the resume
//! key is key `resume-key`. Must not log a credential or a value.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{shared, BoxFuture, Bus, Closed, Inbound, Origin, Presence, WriteError};
use crate::config::{ClusterSection, Config, ConfigError};
use crate::rights::RightSet;

/// How often a node says it is alive, and after how long silence it is gone.
const HEARTBEAT: Duration = Duration::from_millis(200);
const GONE_AFTER: Duration = Duration::from_millis(700);
/// How long a routed request waits for a node to take it.
const ACCEPT_WITHIN: Duration = Duration::from_secs(1);
/// How long a node that said goodbye is remembered as gone: longer than its
/// "ok" to one of our requests can trail its goodbye (`ACCEPT_WITHIN`).
const LEFT_REMEMBERED: Duration = Duration::from_secs(5);
/// The most goodbyes remembered at once (each is forgotten after
/// `LEFT_REMEMBERED`); past it a goodbye is not remembered, and a late "ok"
/// from that node is watched as from an unknown node (gone at its silence).
const LEFT_MAX: usize = 1024;
/// How long a cluster-wide list or close waits for the other nodes.
const GATHER_WITHIN: Duration = Duration::from_millis(500);
/// How long a stopping node waits for what it queued for the other nodes
/// (answers, its goodbye) to be published.
const LEAVE_WITHIN: Duration = Duration::from_secs(1);
/// The largest piece of a node's answer to a cluster-wide list.
const LIST_PIECE: usize = 256 * 1024;
/// How long an admin write waits for the key-value store.
const WRITE_WITHIN: Duration = Duration::from_secs(3);
/// Messages waiting for the publisher task before more are dropped.
const OUTGOING: usize = 65_536;
const SHARED_KEY: &str = "shared";
const RESUME_KEY: &str = "resume-key";

pub struct Nats {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    prefix: String,
    client: Client,
    kv: Store,
    up: AtomicBool,
    /// Set once by `stop`: no heartbeat goes out after it.
    leaving: AtomicBool,
    /// Held while a heartbeat or the goodbye is published, so a heartbeat
    /// already under way as the node stops cannot follow its goodbye.
    saying: tokio::sync::Mutex<()>,
    rt: tokio::runtime::Handle,
    resume_key: [u8; 32],
    /// The shared configuration text as last seen in NATS, and its revision.
    shared: Mutex<(String, u64)>,
    peers: Mutex<HashMap<String, (Instant, Presence)>>,
    /// Nodes that said goodbye lately, and when: their late "ok" must not
    /// bring them back as peers (see `watch_peer`).
    left: Mutex<HashMap<String, Instant>>,
    inbound: OnceLock<Arc<dyn Inbound>>,
    control: mpsc::UnboundedSender<Control>,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<Control>>>,
    /// The connection events, until `start` hands them to their task.
    events: Mutex<Option<mpsc::UnboundedReceiver<async_nats::Event>>>,
    /// Numbers this process's events; starts at random so a restarted node's
    /// events are not taken for ones the other nodes already delivered.
    next_event: AtomicU64,
    /// Events and answers, published in order by one task.
    outgoing: mpsc::Sender<Outgoing>,
    /// The task that publishes `outgoing`: not in `tasks`, as `stop` lets
    /// it finish what is queued first.
    publisher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Every task of this bus, aborted by `stop`.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// Recently delivered events (an event may match two of our patterns).
    seen: Mutex<Seen>,
}

/// What the publisher task takes, in order.
enum Outgoing {
    Message(String, HeaderMap, Bytes),
    /// Everything before it is published and flushed: say so.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Event ids (origin node, number) delivered lately, and their order.
type Seen = (HashSet<(String, u64)>, VecDeque<(String, u64)>);

enum Control {
    Serve(String, bool),
    Interest(String, bool),
}

/// The NATS connection options of `[cluster]` (credentials read from files).
async fn options(c: &ClusterSection) -> anyhow::Result<ConnectOptions> {
    let mut o = ConnectOptions::new()
        .name(&c.node)
        .connection_timeout(Duration::from_secs(3))
        .ping_interval(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((n as u64 * 100).min(1000)));
    if let (Some(user), Some(file)) = (&c.nats_user, &c.nats_password_file) {
        let password = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("[cluster] nats_password_file {}: {e}", file.display()))?;
        o = o.user_and_password(user.clone(), password.trim_end().to_owned());
    }
    if let Some(creds) = &c.nats_creds_file {
        o = o
            .credentials_file(creds)
            .await
            .map_err(|e| anyhow::anyhow!("[cluster] nats_creds_file {}: {e}", creds.display()))?;
    }
    if let Some(ca) = &c.nats_ca {
        o = o.add_root_certificates(ca.clone());
    }
    if c.nats.iter().any(|u| u.starts_with("tls://")) {
        o = o.require_tls(true);
    }
    Ok(o)
}

/// Connects to NATS (no event callback: the CLI's one-shot commands).
async fn connect_plain(c: &ClusterSection) -> anyhow::Result<Client> {
    options(c)
        .await?
        .connect(c.nats.as_slice())
        .await
        .map_err(|e| anyhow::anyhow!("[cluster] cannot connect to NATS: {e}"))
}

async fn bucket(client: &Client, prefix: &str) -> anyhow::Result<Store> {
    let js = async_nats::jetstream::new(client.clone());
    let name = format!("{prefix}_config");
    if let Ok(kv) = js.get_key_value(&name).await {
        return Ok(kv);
    }
    // Three replicas where JetStream has three servers, else one.
    let mut created = Err(None);
    for replicas in [3, 1] {
        let config = kv::Config {
            bucket: name.clone(),
            history: 16,
            num_replicas: replicas,
            ..Default::default()
        };
        match js.create_key_value(config).await {
            Ok(kv) => {
                created = Ok(kv);
                break;
            }
            Err(e) => created = Err(Some(e)),
        }
    }
    match created {
        Ok(kv) => Ok(kv),
        // A node racing us created it first.
        Err(_) => js.get_key_value(&name).await.map_err(|e| {
            anyhow::anyhow!("[cluster] cannot open key-value bucket {name} (JetStream on, NATS 2.10 or newer?): {e}")
        }),
    }
}

/// The value of `key`, created as `seed` if absent (an atomic create: a
/// node racing us wins and we take its value). Returns it and its revision.
async fn get_or_create(kv: &Store, key: &str, seed: Bytes) -> anyhow::Result<(Bytes, u64)> {
    for _ in 0..3 {
        if let Some(e) = kv.entry(key).await? {
            if e.operation == Operation::Put {
                return Ok((e.value, e.revision));
            }
        }
        match kv.create(key, seed.clone()).await {
            Ok(revision) => return Ok((seed, revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("[cluster] key {key} keeps changing")
}

impl Nats {
    /// Connects, opens (or creates) the bucket, seeds the shared
    /// configuration from `path` when NATS has none, and returns the bus
    /// with the configuration this node runs.
    pub async fn connect(path: &Path, file: &Config) -> anyhow::Result<(Arc<Nats>, Config)> {
        let c = &file.cluster;
        let (events_tx, events) = mpsc::unbounded_channel();
        let client = options(c)
            .await?
            .event_callback(move |e| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(e);
                }
            })
            .connect(c.nats.as_slice())
            .await
            .map_err(|e| anyhow::anyhow!("[cluster] cannot connect to NATS: {e}"))?;
        let kv = bucket(&client, &c.prefix).await?;
        let (local, shared_file) = shared::split(file.source.text()).map_err(anyhow::Error::msg)?;
        let (text, revision) =
            get_or_create(&kv, SHARED_KEY, Bytes::from(shared_file.clone())).await?;
        let text = String::from_utf8(text.to_vec())
            .map_err(|_| anyhow::anyhow!("[cluster] the shared configuration is not UTF-8"))?;
        if !shared::same(&text, &shared_file) {
            tracing::warn!(
                revision,
                "the config file's shared sections differ from the cluster's; following the cluster (see `adjunct-gateway cluster export`)"
            );
        }
        let seed: [u8; 32] = rand::random();
        let (key, _) = get_or_create(&kv, RESUME_KEY, Bytes::from(crate::util::hex(&seed))).await?;
        let resume_key = parse_key(&key)
            .ok_or_else(|| anyhow::anyhow!("[cluster] the shared resume key is malformed"))?;
        let mut config = Config::parse(path, &shared::compose(&local, &text)).map_err(|e| {
            anyhow::anyhow!("the cluster's shared configuration with this node's file: {e}")
        })?;
        config.source.set_revision(revision.to_string());
        let (control, control_rx) = mpsc::unbounded_channel();
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING);
        let inner = Arc::new(Inner {
            node: c.node.clone(),
            prefix: c.prefix.clone(),
            client,
            kv,
            up: AtomicBool::new(true),
            leaving: AtomicBool::new(false),
            saying: tokio::sync::Mutex::new(()),
            rt: tokio::runtime::Handle::current(),
            resume_key,
            shared: Mutex::new((text, revision)),
            peers: Mutex::new(HashMap::new()),
            left: Mutex::new(HashMap::new()),
            inbound: OnceLock::new(),
            control,
            control_rx: Mutex::new(Some(control_rx)),
            events: Mutex::new(Some(events)),
            next_event: AtomicU64::new(u64::from(rand::random::<u32>()) << 32),
            outgoing,
            publisher: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        });
        let publisher = inner.rt.spawn(inner.clone().publisher(outgoing_rx));
        *inner.publisher.lock() = Some(publisher);
        tracing::info!(node = %c.node, revision, "joined the cluster");
        Ok((Arc::new(Nats { inner }), config))
    }
}

fn parse_key(hex: &[u8]) -> Option<[u8; 32]> {
    let hex = std::str::from_utf8(hex).ok()?.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// `list` as JSON arrays of at most `max` bytes each (an item larger than
/// that alone in its array); at least one array, empty for an empty list.
fn list_pieces(list: &[Value], max: usize) -> Vec<Vec<u8>> {
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut piece: Vec<u8> = b"[".to_vec();
    for item in list {
        let Ok(text) = serde_json::to_vec(item) else {
            continue;
        };
        if piece.len() > 1 && piece.len() + text.len() + 2 > max {
            piece.push(b']');
            pieces.push(std::mem::replace(&mut piece, b"[".to_vec()));
        }
        if piece.len() > 1 {
            piece.push(b',');
        }
        piece.extend_from_slice(&text);
    }
    piece.push(b']');
    pieces.push(piece);
    pieces
}

fn header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

impl Inner {
    fn subject(&self, tail: &str) -> String {
        format!("{}.{tail}", self.prefix)
    }

    fn inbound(&self) -> Option<&Arc<dyn Inbound>> {
        self.inbound.get()
    }

    /// Publishes without waiting, in order. While NATS is down the client
    /// holds what it can and sends it on reconnecting (an answer is not lost
    /// to a server switch); past `OUTGOING` waiting messages, dropped.
    fn send(&self, subject: String, headers: HeaderMap, body: Bytes) {
        if self
            .outgoing
            .try_send(Outgoing::Message(subject, headers, body))
            .is_err()
        {
            tracing::debug!("cluster publish queue full; message dropped");
        }
    }

    /// The one task that publishes what `send` queued, so events from one
    /// node reach the others in the order they were published.
    /// A message NATS refuses (larger than the server's `max_payload`, the
    /// connection closed) is lost to the other nodes: said on the log, at
    /// most every ten seconds, with how many.
    async fn publisher(self: Arc<Self>, mut rx: mpsc::Receiver<Outgoing>) {
        let mut failed = 0u64;
        let mut report = crate::util::Every::new(Duration::from_secs(10));
        while let Some(item) = rx.recv().await {
            let (subject, headers, body) = match item {
                Outgoing::Message(subject, headers, body) => (subject, headers, body),
                Outgoing::Flush(done) => {
                    let _ = self.client.flush().await;
                    let _ = done.send(());
                    continue;
                }
            };
            let bytes = body.len();
            if let Err(e) = self
                .client
                .publish_with_headers(subject, headers, body)
                .await
            {
                failed += 1;
                if report.due() {
                    tracing::warn!(error = %e, bytes, lost = std::mem::take(&mut failed), "cluster message not published (NATS max_payload?)");
                }
            }
        }
    }

    fn spawn(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let handle = self.rt.spawn(task);
        self.tasks.lock().push(handle.abort_handle());
        handle
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Agw-Node", self.node.as_str());
        h
    }

    /// Subscribes to `subject` (in `queue` if given) and hands each message to `on`.
    fn listen(
        self: &Arc<Self>,
        subject: String,
        queue: Option<String>,
        on: impl Fn(&Arc<Inner>, async_nats::Message) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        self.spawn(async move {
            let sub = match queue {
                Some(q) => me.client.queue_subscribe(subject.clone(), q).await,
                None => me.client.subscribe(subject.clone()).await,
            };
            let mut sub = match sub {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(subject, error = %e, "cannot subscribe in NATS");
                    return;
                }
            };
            while let Some(m) = sub.next().await {
                on(&me, m);
            }
        })
    }

    /// Serializes subscription changes, so an on and an off arrive in order.
    async fn control(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Control>) {
        let mut subs: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        while let Some(c) = rx.recv().await {
            let (key, subject, queue, on) = match &c {
                Control::Serve(ns, on) => (
                    format!("r {ns}"),
                    self.subject(&format!("route.{ns}")),
                    Some(ns.clone()),
                    *on,
                ),
                Control::Interest(p, on) => {
                    let subject = match p.strip_suffix(".*") {
                        Some(stem) => format!("ev.{stem}.>"),
                        None => format!("ev.{p}"),
                    };
                    (format!("e {p}"), self.subject(&subject), None, *on)
                }
            };
            if !on {
                if let Some(t) = subs.remove(&key) {
                    t.abort();
                }
                continue;
            }
            if subs.contains_key(&key) {
                continue;
            }
            let task = match c {
                Control::Serve(ns, _) => {
                    self.listen(subject, queue, move |me, m| me.on_request(&ns, m))
                }
                Control::Interest(..) => self.listen(subject, None, |me, m| me.on_event(m)),
            };
            subs.insert(key, task);
        }
    }

    fn on_request(self: &Arc<Self>, ns: &str, m: async_nats::Message) {
        let Some(inbound) = self.inbound() else {
            return;
        };
        let Ok(body) = std::str::from_utf8(&m.payload) else {
            return;
        };
        let Some(reply) = m.reply.clone() else {
            inbound.notify(ns, body);
            return;
        };
        let origin = (|| {
            Some(Origin {
                node: Arc::from(header(&m, "Agw-Node")?),
                gid: header(&m, "Agw-Gid")?.parse().ok()?,
                timeout: Duration::from_millis(header(&m, "Agw-Timeout")?.parse().ok()?),
            })
        })();
        let verdict = match origin {
            Some(o) => inbound.request(ns, o, body),
            None => Err("malformed request"),
        };
        let answer = match verdict {
            Ok(()) => Bytes::from_static(b"ok"),
            Err(why) => Bytes::from(why),
        };
        let me = self.clone();
        self.rt.spawn(async move {
            let _ = me
                .client
                .publish_with_headers(reply, me.headers(), answer)
                .await;
        });
    }

    fn on_event(&self, m: async_nats::Message) {
        let Some(inbound) = self.inbound() else {
            return;
        };
        let (Some(origin), Some(id)) = (header(&m, "Agw-Node"), header(&m, "Agw-Event")) else {
            return;
        };
        if origin == self.node {
            return;
        }
        let key = (origin.to_owned(), id.parse().unwrap_or(0));
        {
            let mut seen = self.seen.lock();
            if !seen.0.insert(key.clone()) {
                return;
            }
            seen.1.push_back(key);
            if seen.1.len() > 4096 {
                if let Some(old) = seen.1.pop_front() {
                    seen.0.remove(&old);
                }
            }
        }
        let Some(topic) = m.subject.strip_prefix(&format!("{}.ev.", self.prefix)) else {
            return;
        };
        let Ok(data) = serde_json::from_slice::<&RawValue>(&m.payload) else {
            return;
        };
        inbound.event(topic, data);
    }

    fn on_answer(&self, m: async_nats::Message) {
        let Some(inbound) = self.inbound() else {
            return;
        };
        let (Some(node), Some(gid)) = (header(&m, "Agw-Node"), header(&m, "Agw-Gid")) else {
            return;
        };
        let (Ok(gid), Ok(fragment)) = (gid.parse(), std::str::from_utf8(&m.payload)) else {
            return;
        };
        inbound.answer(node, gid, fragment);
    }

    fn on_presence(&self, m: async_nats::Message) {
        let Ok(p) = serde_json::from_slice::<Presence>(&m.payload) else {
            return;
        };
        if p.node == self.node {
            return;
        }
        if header(&m, "Agw-Leaving").is_some() {
            {
                // Under the `left` lock, as in `watch_peer`: whichever of
                // the two comes second fails what the node took.
                let mut left = self.left.lock();
                if left.len() < LEFT_MAX {
                    left.insert(p.node.clone(), Instant::now());
                }
                self.peers.lock().remove(&p.node);
            }
            if let Some(i) = self.inbound() {
                i.node_gone(&p.node);
            }
            return;
        }
        // Back (restarted under the same name): a peer again.
        self.left.lock().remove(&p.node);
        self.peers
            .lock()
            .insert(p.node.clone(), (Instant::now(), p));
    }

    fn on_login(&self, m: async_nats::Message) {
        let Some(inbound) = self.inbound() else {
            return;
        };
        if header(&m, "Agw-Node") == Some(self.node.as_str()) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
            return;
        };
        // An operator's unlock: an account name, no address (older nodes
        // ignore it).
        if v["unlock"].as_bool() == Some(true) {
            if let Some(u) = v["user"].as_str() {
                inbound.unlocked(u);
            }
            return;
        }
        let Some(ip) = v["ip"].as_str().and_then(|s| s.parse().ok()) else {
            return;
        };
        // The digest of the name typed (16 hex digits), never the name.
        let name = v["name"]
            .as_str()
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        match (v["ok"].as_bool(), name) {
            (Some(true), Some(n)) => inbound.login_ok(n, ip),
            (Some(true), None) => {}
            _ => inbound.login_failed(name, ip),
        }
    }

    /// Tells the other nodes of a login or an unlock (`P.login`).
    fn tell_login(&self, body: Value) {
        let subject = self.subject("login");
        self.send(subject, self.headers(), Bytes::from(body.to_string()));
    }

    fn reply(self: &Arc<Self>, m: &async_nats::Message, body: Bytes) {
        if let Some(reply) = m.reply.clone() {
            let me = self.clone();
            self.rt.spawn(async move {
                let _ = me.client.publish(reply, body).await;
            });
        }
    }

    /// Answers a cluster-wide list with this node's part, in pieces of at
    /// most `LIST_PIECE` bytes (NATS refuses a message past its
    /// `max_payload`, 1 MB by default: a node with many thousand sessions
    /// would otherwise be missing from the list). Every piece but the last
    /// says `Agw-More`; [`Inner::gather`] waits for each node's last.
    fn reply_list(self: &Arc<Self>, m: &async_nats::Message, list: &[Value]) {
        let Some(reply) = m.reply.clone() else { return };
        let pieces = list_pieces(list, LIST_PIECE);
        let me = self.clone();
        self.rt.spawn(async move {
            let last = pieces.len().saturating_sub(1);
            for (n, piece) in pieces.into_iter().enumerate() {
                let mut h = HeaderMap::new();
                if n < last {
                    h.insert("Agw-More", "1");
                }
                let sent = me
                    .client
                    .publish_with_headers(reply.clone(), h, piece.into())
                    .await;
                if sent.is_err() {
                    return;
                }
            }
        });
    }

    /// Watches a node that took one of our requests as a peer, heard from
    /// now, if its heartbeat has not come yet: should it never come (the
    /// node died first), the node is declared gone after `GONE_AFTER` and
    /// what it took fails with -32004 instead of waiting out the routed
    /// timeout. A heartbeat that does come replaces the empty presence.
    /// True if the node has said goodbye meanwhile (its "ok" trailed its
    /// goodbye): it is not watched, and what it took must fail now. Called
    /// after the request is recorded as the node's: a goodbye that comes
    /// later finds it there.
    fn watch_peer(&self, node: &str) -> bool {
        if node == self.node {
            return false;
        }
        let left = self.left.lock();
        if left.contains_key(node) {
            return true;
        }
        self.peers.lock().entry(node.to_owned()).or_insert_with(|| {
            let presence = Presence {
                node: node.to_owned(),
                ..Presence::default()
            };
            (Instant::now(), presence)
        });
        false
    }

    /// Heartbeats out, silent peers declared gone.
    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let Some(inbound) = self.inbound() else {
                continue;
            };
            {
                let _saying = self.saying.lock().await;
                if self.up.load(Ordering::Acquire) && !self.leaving.load(Ordering::Acquire) {
                    if let Ok(body) = serde_json::to_vec(&inbound.presence()) {
                        let subject = self.subject(&format!("node.{}", self.node));
                        let _ = self.client.publish(subject, body.into()).await;
                    }
                }
            }
            let gone: Vec<String> = {
                let mut peers = self.peers.lock();
                let gone: Vec<String> = peers
                    .iter()
                    .filter(|(_, (seen, _))| seen.elapsed() >= GONE_AFTER)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in &gone {
                    peers.remove(n);
                }
                gone
            };
            self.left
                .lock()
                .retain(|_, at| at.elapsed() < LEFT_REMEMBERED);
            for n in gone {
                tracing::warn!(node = %n, "cluster node stopped answering");
                inbound.node_gone(&n);
            }
        }
    }

    /// Installs each new revision of the shared configuration.
    async fn watch(self: Arc<Self>) {
        loop {
            match self.kv.watch_with_history(SHARED_KEY).await {
                Ok(mut w) => {
                    while let Some(Ok(e)) = w.next().await {
                        if e.operation != Operation::Put {
                            continue;
                        }
                        let Ok(text) = String::from_utf8(e.value.to_vec()) else {
                            continue;
                        };
                        {
                            let mut s = self.shared.lock();
                            if e.revision > s.1 {
                                *s = (text.clone(), e.revision);
                            }
                        }
                        if let Some(i) = self.inbound() {
                            // Off the runtime's workers, as a SIGHUP reload:
                            // installing waits for the configuration lock,
                            // which an admin write may hold across a NATS
                            // round trip that needs the workers. Awaited, so
                            // revisions are installed in order.
                            let (i, revision) = (i.clone(), e.revision);
                            let _ = tokio::task::spawn_blocking(move || i.config(&text, revision))
                                .await;
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "watch on the shared configuration failed"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Follows the connection state.
    async fn connection(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<async_nats::Event>) {
        while let Some(e) = events.recv().await {
            let up = match e {
                async_nats::Event::Connected => true,
                async_nats::Event::Disconnected | async_nats::Event::Closed => false,
                async_nats::Event::SlowConsumer(sid) => {
                    if let Some(i) = self.inbound() {
                        i.dropped(sid);
                    }
                    continue;
                }
                _ => continue,
            };
            if self.up.swap(up, Ordering::AcqRel) != up {
                if up {
                    tracing::info!("NATS reachable again: cluster up");
                } else {
                    tracing::error!("NATS unreachable: cluster down; serving this node's own sessions with the last configuration");
                }
                if let Some(i) = self.inbound() {
                    i.cluster_up(up);
                }
            }
        }
    }

    /// Asks every node on `subject` and gathers the answers until every
    /// known peer answered or `GATHER_WITHIN` passed.
    async fn gather(&self, subject: String, body: Bytes, want: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        if !self.up.load(Ordering::Acquire) || want == 0 {
            return out;
        }
        let inbox = self.client.new_inbox();
        let Ok(mut sub) = self.client.subscribe(inbox.clone()).await else {
            return out;
        };
        if self
            .client
            .publish_with_reply(subject, inbox, body)
            .await
            .is_err()
        {
            return out;
        }
        let deadline = tokio::time::Instant::now() + GATHER_WITHIN;
        // A node's answer may come in pieces (`reply_list`): only its last
        // counts as that node's.
        let mut whole = 0;
        while whole < want {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(m)) => {
                    if header(&m, "Agw-More").is_none() {
                        whole += 1;
                    }
                    out.push(m.payload);
                }
                _ => break,
            }
        }
        out
    }
}

impl Bus for Nats {
    fn node(&self) -> &str {
        &self.inner.node
    }

    fn up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn start(&self, inbound: Arc<dyn Inbound>) {
        let me = &self.inner;
        if me.inbound.set(inbound).is_err() {
            return;
        }
        if let Some(rx) = me.control_rx.lock().take() {
            me.spawn(me.clone().control(rx));
        }
        me.listen(me.subject(&format!("answer.{}", me.node)), None, |me, m| {
            me.on_answer(m)
        });
        me.listen(me.subject("node.*"), None, |me, m| me.on_presence(m));
        me.listen(me.subject("login"), None, |me, m| me.on_login(m));
        me.listen(me.subject("sessions"), None, |me, m| {
            if let Some(i) = me.inbound() {
                me.reply_list(&m, &i.sessions());
            }
        });
        me.listen(me.subject("close"), None, |me, m| {
            let Some(i) = me.inbound() else { return };
            let Ok(v) = serde_json::from_slice::<Value>(&m.payload) else {
                return;
            };
            let (Some(id), Some(actor)) = (v["id"].as_u64(), v["actor"].as_u64()) else {
                return;
            };
            let answer = match i.close(id, RightSet::from_bits(actor as u16)) {
                None => return,
                Some(Closed::Closed) => "closed".to_owned(),
                Some(Closed::Refused(r)) => format!("refused {}", r.name()),
            };
            me.reply(&m, Bytes::from(answer));
        });
        me.spawn(me.clone().heartbeat());
        me.spawn(me.clone().watch());
        if let Some(events) = me.events.lock().take() {
            me.spawn(me.clone().connection(events));
        }
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let me = &self.inner;
            me.leaving.store(true, Ordering::Release);
            for t in me.tasks.lock().drain(..) {
                t.abort();
            }
            if me.up.swap(false, Ordering::AcqRel) {
                // Behind everything queued (answers to other nodes' callers
                // among it): the others fail what this node served at once,
                // rather than after its heartbeat goes silent. Bounded: a
                // NATS that takes nothing does not hold the shutdown.
                let bye = Presence {
                    node: me.node.clone(),
                    ..Presence::default()
                };
                let mut h = me.headers();
                h.insert("Agw-Leaving", "1");
                let body = serde_json::to_vec(&bye).unwrap_or_default();
                let subject = me.subject(&format!("node.{}", me.node));
                let (done, flushed) = tokio::sync::oneshot::channel();
                let said = async {
                    let _saying = me.saying.lock().await;
                    let bye = Outgoing::Message(subject, h, body.into());
                    me.outgoing.send(bye).await.ok()?;
                    me.outgoing.send(Outgoing::Flush(done)).await.ok()?;
                    flushed.await.ok()
                };
                let _ = tokio::time::timeout(LEAVE_WITHIN, said).await;
            }
            if let Some(publisher) = me.publisher.lock().take() {
                publisher.abort();
            }
        })
    }

    fn load(&self, path: &Path) -> Result<Config, ConfigError> {
        let file = Config::load(path)?;
        let (local, _) = shared::split(file.source.text()).map_err(|message| ConfigError {
            file: path.to_path_buf(),
            line: None,
            message,
        })?;
        let (text, revision) = self.inner.shared.lock().clone();
        let mut config = Config::parse(path, &shared::compose(&local, &text))?;
        config.source.set_revision(revision.to_string());
        Ok(config)
    }

    fn base_text(&self, _path: &Path, live: &Config) -> Result<String, WriteError> {
        Ok(live.source.text().to_owned())
    }

    fn write(
        &self,
        _path: &Path,
        _base: &str,
        text: &str,
        expected: &str,
    ) -> Result<String, WriteError> {
        if !self.up() {
            return Err(WriteError::Unavailable);
        }
        let expected: u64 = expected
            .parse()
            .map_err(|_| WriteError::Stale { on_disk: false })?;
        let (_, shared_text) = shared::split(text).map_err(|_| WriteError::Unavailable)?;
        let kv = self.inner.kv.clone();
        let done = self.inner.rt.block_on(async move {
            tokio::time::timeout(
                WRITE_WITHIN,
                kv.update(SHARED_KEY, Bytes::from(shared_text.clone()), expected),
            )
            .await
            .map(|r| r.map(|rev| (rev, shared_text)))
        });
        match done {
            Ok(Ok((revision, shared_text))) => {
                let mut s = self.inner.shared.lock();
                if revision > s.1 {
                    *s = (shared_text, revision);
                }
                Ok(revision.to_string())
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(WriteError::Stale { on_disk: false })
            }
            _ => Err(WriteError::Unavailable),
        }
    }

    fn resume_key(&self) -> Option<[u8; 32]> {
        Some(self.inner.resume_key)
    }

    fn serve(&self, ns: &str, on: bool) {
        if crate::config::valid_token(ns) {
            let _ = self.inner.control.send(Control::Serve(ns.to_owned(), on));
        }
    }

    fn route(&self, ns: &str, gid: u64, timeout: Duration, body: String) {
        let me = self.inner.clone();
        let subject = me.subject(&format!("route.{ns}"));
        self.inner.rt.spawn(async move {
            let mut h = me.headers();
            h.insert("Agw-Gid", gid.to_string().as_str());
            h.insert("Agw-Timeout", timeout.as_millis().to_string().as_str());
            let sent = tokio::time::timeout(
                ACCEPT_WITHIN,
                me.client.request_with_headers(subject, h, body.into()),
            )
            .await;
            let outcome = match sent {
                Ok(Ok(m)) if &m.payload[..] == b"ok" => header(&m, "Agw-Node")
                    .map(Arc::from)
                    .ok_or_else(|| "no provider".to_owned()),
                Ok(Ok(m)) => Err(String::from_utf8_lossy(&m.payload).into_owned()),
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    Err("no provider".to_owned())
                }
                _ => Err("no provider answered in time".to_owned()),
            };
            let Some(i) = me.inbound() else { return };
            let node = outcome.as_ref().ok().cloned();
            i.accepted(gid, outcome);
            // Taken by a node already gone: fail it now, not at the routed
            // timeout.
            if let Some(node) = node {
                if me.watch_peer(&node) {
                    i.node_gone(&node);
                }
            }
        });
    }

    fn notify(&self, ns: &str, body: String) {
        let subject = self.inner.subject(&format!("route.{ns}"));
        self.inner
            .send(subject, self.inner.headers(), Bytes::from(body));
    }

    fn answer(&self, node: &str, gid: u64, fragment: String) {
        let mut h = self.inner.headers();
        h.insert("Agw-Gid", gid.to_string().as_str());
        let subject = self.inner.subject(&format!("answer.{node}"));
        self.inner.send(subject, h, Bytes::from(fragment));
    }

    fn interest(&self, pattern: &str, on: bool) {
        let _ = self
            .inner
            .control
            .send(Control::Interest(pattern.to_owned(), on));
    }

    fn publish(&self, topic: &str, data: &RawValue) {
        let mut h = self.inner.headers();
        let id = self.inner.next_event.fetch_add(1, Ordering::Relaxed);
        h.insert("Agw-Event", id.to_string().as_str());
        let subject = self.inner.subject(&format!("ev.{topic}"));
        self.inner
            .send(subject, h, Bytes::from(data.get().to_owned()));
    }

    fn sessions(&self) -> BoxFuture<'_, Vec<Value>> {
        Box::pin(async move {
            let want = self.inner.peers.lock().len();
            let answers = self
                .inner
                .gather(self.inner.subject("sessions"), Bytes::new(), want + 1)
                .await;
            let mut out = Vec::new();
            for a in answers {
                if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&a) {
                    out.extend(
                        list.into_iter()
                            .filter(|s| s["node"].as_str() != Some(&self.inner.node)),
                    );
                }
            }
            out
        })
    }

    fn close(&self, id: u64, actor: RightSet) -> BoxFuture<'_, Option<Closed>> {
        Box::pin(async move {
            let body = serde_json::json!({ "id": id, "actor": actor.bits() }).to_string();
            let answers = self
                .inner
                .gather(self.inner.subject("close"), Bytes::from(body), 1)
                .await;
            let a = answers.first()?;
            let text = std::str::from_utf8(a).ok()?;
            match text.strip_prefix("refused ") {
                Some(name) => crate::rights::Right::from_name(name).map(Closed::Refused),
                None => Some(Closed::Closed),
            }
        })
    }

    fn sessions_of(&self, user: &str) -> usize {
        self.inner
            .peers
            .lock()
            .values()
            .map(|(_, p)| p.users.get(user).copied().unwrap_or(0))
            .sum()
    }

    fn login_failed(&self, name: Option<u64>, ip: IpAddr) {
        let name = name.map(|n| format!("{n:016x}"));
        self.inner
            .tell_login(serde_json::json!({ "ok": false, "name": name, "ip": ip.to_string() }));
    }

    fn login_ok(&self, name: u64, ip: IpAddr) {
        let name = format!("{name:016x}");
        self.inner
            .tell_login(serde_json::json!({ "ok": true, "name": name, "ip": ip.to_string() }));
    }

    fn unlocked(&self, user: &str) {
        self.inner
            .tell_login(serde_json::json!({ "unlock": true, "user": user }));
    }
}

/// `adjunct-gateway cluster export`: the shared configuration as stored.
pub async fn export(file: &Config) -> anyhow::Result<(String, u64)> {
    let client = connect_plain(&file.cluster).await?;
    let kv = bucket(&client, &file.cluster.prefix).await?;
    match kv.entry(SHARED_KEY).await? {
        Some(e) if e.operation == Operation::Put => {
            Ok((String::from_utf8_lossy(&e.value).into_owned(), e.revision))
        }
        _ => anyhow::bail!("no shared configuration in NATS yet (no node has started)"),
    }
}

/// `adjunct-gateway cluster status`: the nodes heard from within a second.
pub async fn status(file: &Config) -> anyhow::Result<Vec<Presence>> {
    let client = connect_plain(&file.cluster).await?;
    let mut sub = client
        .subscribe(format!("{}.node.*", file.cluster.prefix))
        .await?;
    let mut nodes: HashMap<String, Presence> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(p) = serde_json::from_slice::<Presence>(&m.payload) {
            nodes.insert(p.node.clone(), p);
        }
    }
    let mut list: Vec<Presence> = nodes.into_values().collect();
    list.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_goes_in_pieces_that_each_fit_and_together_are_the_list() {
        let list: Vec<Value> = (0..500)
            .map(|n| serde_json::json!({"id": n, "user": "app1", "pad": "x".repeat(n % 50)}))
            .collect();
        let pieces = list_pieces(&list, 2048);
        assert!(pieces.len() > 5);
        let mut back = Vec::new();
        for p in &pieces {
            assert!(p.len() <= 2048, "{}", p.len());
            let part: Vec<Value> = serde_json::from_slice(p).unwrap();
            back.extend(part);
        }
        assert_eq!(back, list);
        assert_eq!(list_pieces(&[], 2048), [b"[]".to_vec()]);
        let big = [serde_json::json!("y".repeat(5000))];
        assert_eq!(list_pieces(&big, 2048).len(), 1, "alone in its piece");
    }
}

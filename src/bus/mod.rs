//! The bus: everything that crosses nodes, behind one narrow interface —
//! route a request to a namespace, publish an event, store and announce the
//! shared configuration, list and close sessions, share failed logins.
//!
//! [`Local`] is a single node: nothing crosses, the configuration is the
//! file (today's behaviour, no NATS). [`nats::Nats`] is a cluster through
//! NATS. The router, broker, hub and handlers call [`Bus`] and never ask
//! which one runs; what arrives from other nodes comes in through the one
//! [`Inbound`] handler given at start. Fan-out to this node's own sessions
//! stays in the broker and router: the bus moves bytes between nodes only.
//!
//! Must not know sessions or sockets: it sees ids, names and JSON text.

pub mod nats;
pub mod shared;

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::{revision_of, Config, ConfigError};
use crate::rights::{Right, RightSet};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the configuration could not be stored.
#[derive(Debug)]
pub enum WriteError {
    /// The revision is not the current one (`on_disk`: the file was edited
    /// by hand and not reloaded).
    Stale { on_disk: bool },
    /// The shared store (NATS) cannot be reached.
    Unavailable,
    /// Reading or writing the file failed.
    Io(std::io::Error),
}

/// What closing a session on another node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Closed,
    /// The actor lacks this right, which the session holds.
    Refused(Right),
}

/// A routed request that came from another node.
#[derive(Debug, Clone)]
pub struct Origin {
    pub node: Arc<str>,
    /// The caller node's id for the request.
    pub gid: u64,
    pub timeout: Duration,
}

/// This node's state, as the other nodes see it (`cluster status`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Presence {
    pub node: String,
    pub sessions: usize,
    pub revision: String,
    /// Authenticated sessions per user (the cluster-wide per-user limit).
    pub users: std::collections::HashMap<String, usize>,
}

/// What arrives from other nodes; the gateway implements it once.
pub trait Inbound: Send + Sync {
    /// A routed request for a provider on this node. `Err`: why none takes it.
    fn request(&self, ns: &str, from: Origin, body: &str) -> Result<(), &'static str>;
    /// A routed notification (no answer owed) for a provider on this node.
    fn notify(&self, ns: &str, body: &str);
    /// Another node took (Ok: its name) or refused our request `gid`.
    fn accepted(&self, gid: u64, outcome: Result<Arc<str>, String>);
    /// `node` answered our request `gid`: `"result":…` or `"error":…`.
    fn answer(&self, node: &str, gid: u64, fragment: &str);
    /// `node` stopped answering: what it served fails, what it asked is dropped.
    fn node_gone(&self, node: &str);
    /// An event published on another node.
    fn event(&self, topic: &str, data: &RawValue);
    /// This node's sessions, for a cluster-wide list.
    fn sessions(&self) -> Vec<Value>;
    /// Close session `id` if it lives here; `None`: not here.
    fn close(&self, id: u64, actor: RightSet) -> Option<Closed>;
    /// A new revision of the shared configuration.
    fn config(&self, shared: &str, revision: u64);
    /// A failed login on another node (`name`: the digest of the name
    /// typed, `lockout::Lockout::name`).
    fn login_failed(&self, name: Option<u64>, ip: IpAddr);
    /// A password login from `ip` succeeded on another node (`name`: the
    /// account's digest).
    fn login_ok(&self, name: u64, ip: IpAddr);
    /// An operator cleared `user`'s lockout on another node.
    fn unlocked(&self, user: &str);
    /// This node's state for its heartbeat.
    fn presence(&self) -> Presence;
    /// The cluster became reachable (true) or not.
    fn cluster_up(&self, up: bool);
    /// NATS messages for this node were dropped because it read them too
    /// slowly (its subscription's buffer was full): counted and logged,
    /// never silent.
    fn dropped(&self, subscription: u64);
}

/// What crosses nodes. Every call returns at once; what needs an answer
/// from another node comes back through [`Inbound`] or a future.
pub trait Bus: Send + Sync {
    /// This node's name (`[cluster] node`).
    fn node(&self) -> &str;
    /// Whether other nodes can be reached now (false: one node, or NATS down).
    fn up(&self) -> bool;
    /// Starts delivering what arrives to `inbound`.
    fn start(&self, inbound: Arc<dyn Inbound>);
    /// Leaves the cluster: nothing more is sent or delivered (shutdown).
    /// What was queued for the other nodes goes first, within a bound.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// Reads the configuration this node runs: the file, and in a cluster
    /// the shared sections from the cluster.
    fn load(&self, path: &Path) -> Result<Config, ConfigError>;
    /// The text a Management API change edits, checked against `live`.
    fn base_text(&self, path: &Path, live: &Config) -> Result<String, WriteError>;
    /// Stores `text` (edited from `base`) if `expected` is still the current
    /// revision; returns the new revision.
    fn write(
        &self,
        path: &Path,
        base: &str,
        text: &str,
        expected: &str,
    ) -> Result<String, WriteError>;
    /// The resume-token key every node shares, if the bus holds one.
    fn resume_key(&self) -> Option<[u8; 32]>;

    /// This node has (true) or no longer has (false) a provider of `ns`.
    fn serve(&self, ns: &str, on: bool);
    /// Sends routed request `gid` to one provider of `ns` on some node;
    /// `body` is the request after its id (`"method":…}`).
    fn route(&self, ns: &str, gid: u64, timeout: Duration, body: String);
    /// Sends a routed notification to one provider of `ns` on some node.
    fn notify(&self, ns: &str, body: String);
    /// Answers `node`'s request `gid` (`"result":…` or `"error":…`).
    fn answer(&self, node: &str, gid: u64, fragment: String);

    /// This node has (true) or no longer has (false) subscribers of `pattern`.
    fn interest(&self, pattern: &str, on: bool);
    /// Hands an event to the other nodes (this node delivers its own).
    fn publish(&self, topic: &str, data: &RawValue);

    /// Sessions on the other nodes.
    fn sessions(&self) -> BoxFuture<'_, Vec<Value>>;
    /// Closes session `id` on whichever other node holds it.
    fn close(&self, id: u64, actor: RightSet) -> BoxFuture<'_, Option<Closed>>;
    /// Authenticated sessions `user` holds on the other nodes.
    fn sessions_of(&self, user: &str) -> usize;
    /// Tells the other nodes of a failed login.
    fn login_failed(&self, name: Option<u64>, ip: IpAddr);
    /// Tells the other nodes of a successful password login from `ip`.
    fn login_ok(&self, name: u64, ip: IpAddr);
    /// Tells the other nodes that an operator cleared account `user`'s
    /// lockout (`admin.users.unlock`), so they clear theirs.
    fn unlocked(&self, user: &str);
}

/// A single node: nothing crosses, the configuration is the file.
pub struct Local {
    node: String,
}

impl Local {
    /// The bus of a single node named `node`.
    pub fn bus(node: &str) -> Arc<dyn Bus> {
        Arc::new(Local {
            node: node.to_owned(),
        })
    }
}

impl Bus for Local {
    fn node(&self) -> &str {
        &self.node
    }
    fn up(&self) -> bool {
        false
    }
    fn start(&self, _inbound: Arc<dyn Inbound>) {}
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn load(&self, path: &Path) -> Result<Config, ConfigError> {
        Config::load(path)
    }
    fn base_text(&self, path: &Path, live: &Config) -> Result<String, WriteError> {
        let disk = std::fs::read_to_string(path).map_err(WriteError::Io)?;
        if revision_of(&disk) != live.source.revision() {
            return Err(WriteError::Stale { on_disk: true });
        }
        Ok(disk)
    }
    fn write(
        &self,
        path: &Path,
        base: &str,
        text: &str,
        _expected: &str,
    ) -> Result<String, WriteError> {
        // The caller holds the config lock and checked `expected` against
        // the live revision and the file (`base_text`).
        if text != base {
            crate::persist::write_atomic(path, text).map_err(WriteError::Io)?;
        }
        Ok(revision_of(text))
    }
    fn resume_key(&self) -> Option<[u8; 32]> {
        None
    }

    fn serve(&self, _ns: &str, _on: bool) {}
    fn route(&self, _ns: &str, _gid: u64, _timeout: Duration, _body: String) {}
    fn notify(&self, _ns: &str, _body: String) {}
    fn answer(&self, _node: &str, _gid: u64, _fragment: String) {}
    fn interest(&self, _pattern: &str, _on: bool) {}
    fn publish(&self, _topic: &str, _data: &RawValue) {}
    fn sessions(&self) -> BoxFuture<'_, Vec<Value>> {
        Box::pin(async { Vec::new() })
    }
    fn close(&self, _id: u64, _actor: RightSet) -> BoxFuture<'_, Option<Closed>> {
        Box::pin(async { None })
    }
    fn sessions_of(&self, _user: &str) -> usize {
        0
    }
    fn login_failed(&self, _name: Option<u64>, _ip: IpAddr) {}
    fn login_ok(&self, _name: u64, _ip: IpAddr) {}
    fn unlocked(&self, _user: &str) {}
}

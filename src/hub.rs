//! The hub: every live WebSocket session by id, with its user, endpoint,
//! peer, start time and current rights; revocation and shutdown reach
//! sessions through it.
//!
//! Must not touch sockets: it talks to sessions only through their
//! `Outbound` queue and their rights cell.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use dashmap::DashMap;

use crate::catalog::Endpoint;
use crate::directory::Directory;
use crate::outbound::Outbound;
use crate::rights::{Right, RightSet};
use crate::rpc::Close;

/// Set in the rights cell once the session has authenticated.
const AUTHENTICATED: u32 = 1 << 31;

/// What the rest of the gateway knows of one session.
pub struct SessionHandle {
    pub id: u64,
    pub endpoint: Endpoint,
    pub peer: SocketAddr,
    pub connected_at: SystemTime,
    user: OnceLock<Arc<str>>,
    rights: AtomicU32,
    /// The password the session's credential rested on (0: a certificate).
    stamp: std::sync::atomic::AtomicU64,
    pub outbound: Outbound,
    /// Routed requests this session waits on (as a caller).
    pub waiting: AtomicU32,
    /// Routed requests this session is serving (as a provider).
    pub serving: AtomicU32,
    /// Topic patterns this session subscribed to (for cleanup and limits).
    pub topics: parking_lot::Mutex<Vec<Box<str>>>,
}

impl SessionHandle {
    /// The id as clients see it: 16 hex digits.
    pub fn id_string(&self) -> String {
        format!("{:016x}", self.id)
    }

    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.get()
    }

    /// The password generation the session's credential was checked against
    /// (`Account::stamp`; 0 for a certificate, which no password change
    /// affects).
    pub fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::Acquire)
    }

    /// The session as `admin.sessions.list` shows it, on node `node`.
    pub fn describe(&self, node: &str) -> serde_json::Value {
        let connected_at = self
            .connected_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        serde_json::json!({
            "sessionId": self.id_string(),
            "user": self.user().map(|u| &**u),
            "endpoint": self.endpoint.name(),
            "peer": self.peer.to_string(),
            "connectedAt": connected_at,
            "rights": self.rights().unwrap_or_default().names(),
            "node": node,
        })
    }

    /// Current rights, or `None` before authentication.
    pub fn rights(&self) -> Option<RightSet> {
        let cell = self.rights.load(Ordering::Acquire);
        (cell & AUTHENTICATED != 0).then(|| RightSet::from_bits(cell as u16))
    }

    /// Marks the session authenticated as `user`; false if it already was.
    pub(crate) fn authenticate(&self, user: Arc<str>, rights: RightSet) -> bool {
        if self.user.set(user).is_err() {
            return false;
        }
        self.rights
            .store(AUTHENTICATED | u32::from(rights.bits()), Ordering::Release);
        true
    }

    fn set_rights(&self, rights: RightSet) {
        self.rights
            .store(AUTHENTICATED | u32::from(rights.bits()), Ordering::Release);
    }
}

/// A user who may open a session now.
#[derive(Debug, Clone)]
pub struct Granted {
    pub user: Arc<str>,
    pub rights: RightSet,
    /// The password the credential rests on (`Account::stamp`); 0 for a
    /// certificate, which no password change affects.
    pub stamp: u64,
}

/// Why `Hub::bind` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The user already holds the limit of sessions.
    TooManySessions,
    /// The session was already authenticated.
    AlreadyBound,
}

/// A session closed by a rights change, for the audit trail.
pub struct Revoked {
    pub session: Arc<SessionHandle>,
    pub reason: &'static str,
}

/// Live sessions by id, and how many each user holds.
#[derive(Default)]
pub struct Hub {
    sessions: DashMap<u64, Arc<SessionHandle>>,
    per_user: DashMap<Arc<str>, usize>,
}

impl Hub {
    /// Registers a new session with a fresh random id.
    pub fn open(&self, endpoint: Endpoint, peer: SocketAddr) -> Arc<SessionHandle> {
        loop {
            let id: u64 = rand::random();
            if id == 0 {
                continue;
            }
            if let dashmap::Entry::Vacant(slot) = self.sessions.entry(id) {
                let handle = Arc::new(SessionHandle {
                    id,
                    endpoint,
                    peer,
                    connected_at: SystemTime::now(),
                    user: OnceLock::new(),
                    rights: AtomicU32::new(0),
                    stamp: std::sync::atomic::AtomicU64::new(0),
                    outbound: Outbound::default(),
                    waiting: AtomicU32::new(0),
                    serving: AtomicU32::new(0),
                    topics: parking_lot::Mutex::new(Vec::new()),
                });
                slot.insert(handle.clone());
                return handle;
            }
        }
    }

    /// Authenticates `session` as `user`, unless the user already holds
    /// `limit` sessions or the session was already authenticated.
    pub fn bind(
        &self,
        session: &SessionHandle,
        granted: &Granted,
        limit: usize,
    ) -> Result<(), BindError> {
        let user = &granted.user;
        {
            let mut n = self.per_user.entry(user.clone()).or_insert(0);
            if *n >= limit {
                return Err(BindError::TooManySessions);
            }
            *n += 1;
        }
        session.stamp.store(granted.stamp, Ordering::Release);
        if session.authenticate(user.clone(), granted.rights) {
            Ok(())
        } else {
            // A concurrent login won the race; the gate normally stops this.
            self.release(user);
            Err(BindError::AlreadyBound)
        }
    }

    /// Brings one session in line with `directory` (see `apply`); returns
    /// the reason if it had to be closed.
    pub fn recheck(&self, s: &SessionHandle, directory: &Directory) -> Option<&'static str> {
        let user = s.user()?;
        let stamp = s.stamp.load(Ordering::Acquire);
        let reason = match directory.get(user).filter(|a| a.enabled) {
            None => Some("rights revoked"),
            Some(a)
                if s.endpoint == Endpoint::Adjunct
                    && !a.rights.contains(Right::AdjunctServerConnection) =>
            {
                Some("rights revoked")
            }
            Some(a) if stamp != 0 && !a.credential_current(stamp) => Some("credentials changed"),
            Some(a) => {
                s.set_rights(a.rights);
                None
            }
        };
        if let Some(reason) = reason {
            // Nothing more may be served: clear the rights before closing.
            s.set_rights(RightSet::EMPTY);
            s.outbound.close(Close::Policy, reason);
        }
        reason
    }

    /// Every user holding authenticated sessions, with how many.
    pub fn users(&self) -> Vec<(Arc<str>, usize)> {
        self.per_user
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    /// Authenticated sessions `user` holds now.
    pub fn sessions_of(&self, user: &str) -> usize {
        self.per_user.get(user).map_or(0, |n| *n)
    }

    fn release(&self, user: &str) {
        if let Some(mut n) = self.per_user.get_mut(user) {
            *n = n.saturating_sub(1);
        }
        self.per_user.remove_if(user, |_, n| *n == 0);
    }

    /// The session with this id, if it is live.
    pub fn get(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.sessions.get(&id).map(|s| s.value().clone())
    }

    /// Every live session (anonymous ones included), in no particular order.
    pub fn list(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions.iter().map(|s| s.value().clone()).collect()
    }

    pub fn remove(&self, id: u64) {
        if let Some((_, s)) = self.sessions.remove(&id) {
            if let Some(user) = s.user() {
                self.release(user);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Recomputes every authenticated session's rights from `directory`:
    /// a user gone or disabled, or an /adjunct session that lost Adjunct
    /// Server Connection, or one whose password changed since its
    /// credential was checked, is closed with 1008; the others get the new
    /// rights.
    pub fn apply(&self, directory: &Directory) -> Vec<Revoked> {
        let mut revoked = Vec::new();
        for entry in self.sessions.iter() {
            let s = entry.value();
            if let Some(reason) = self.recheck(s, directory) {
                revoked.push(Revoked {
                    session: s.clone(),
                    reason,
                });
            }
        }
        revoked
    }

    /// Asks every session to close (shutdown).
    pub fn close_all(&self, code: Close, reason: &'static str) {
        for s in self.sessions.iter() {
            s.outbound.close(code, reason);
        }
    }
}

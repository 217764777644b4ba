//! Brute-force protection: failed logins per account (the system's
//! "Password Reject Limit", leading to "Locked – Password Error") and per
//! source address (HTTP 429 for a while).
//!
//! Owns counters and clocks only. Must not verify passwords, log, or choose
//! what the wire says: `auth` does that, and a locked account answers exactly
//! like a wrong password. Only known accounts get an entry, so the account
//! map is bounded by the directory; the address map is bounded by pruning and
//! a hard cap.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::Security;

/// The per-address failure window ("failures a minute").
const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it new addresses are not tracked until a
/// prune frees room (the per-account lockout still applies to them).
const MAX_ADDRESSES: usize = 100_000;

#[derive(Default)]
struct AccountState {
    /// Times of the most recent failures, at most `reject_limit` of them.
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

struct AddressState {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// What a recorded failure changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// This failure locked the account.
    pub account_locked: bool,
    /// This failure blocked the source address.
    pub address_blocked: bool,
}

#[derive(Default)]
pub struct Lockout {
    accounts: DashMap<Arc<str>, AccountState>,
    addresses: DashMap<IpAddr, AddressState>,
}

impl Lockout {
    /// Is `user` locked at `now`?
    pub fn is_locked(&self, user: &str, now: Instant) -> bool {
        self.accounts
            .get(user)
            .and_then(|a| a.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Is `ip` refused at `now`?
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.addresses
            .get(&source(ip))
            .and_then(|a| a.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Records a failed login from `ip`, against `account` when it names a
    /// known user.
    pub fn failed(
        &self,
        account: Option<&Arc<str>>,
        ip: IpAddr,
        now: Instant,
        sec: &Security,
    ) -> Tripped {
        Tripped {
            account_locked: account.is_some_and(|a| self.account_failed(a, now, sec)),
            address_blocked: self.address_failed(ip, now, sec),
        }
    }

    fn account_failed(&self, user: &Arc<str>, now: Instant, sec: &Security) -> bool {
        let mut state = self.accounts.entry(user.clone()).or_default();
        if state.locked_until.is_some_and(|until| now < until) {
            // Already locked: the lock runs from when it was set.
            return false;
        }
        state.locked_until = None;
        let window = Duration::from_secs(sec.reject_window_secs);
        let limit = sec.reject_limit.max(1) as usize;
        state.failures.push_back(now);
        while state.failures.len() > limit
            || state
                .failures
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
        {
            state.failures.pop_front();
        }
        if state.failures.len() >= limit {
            state.failures.clear();
            state.locked_until = now.checked_add(Duration::from_secs(sec.lockout_secs));
            return true;
        }
        false
    }

    fn address_failed(&self, ip: IpAddr, now: Instant, sec: &Security) -> bool {
        let ip = source(ip);
        if self.addresses.len() >= MAX_ADDRESSES && !self.addresses.contains_key(&ip) {
            // Full (a spread-out attack): forget what expired, then every
            // address not blocked right now, rather than stop counting.
            self.prune(now, sec);
            if self.addresses.len() >= MAX_ADDRESSES {
                self.addresses
                    .retain(|_, a| a.blocked_until.is_some_and(|u| now < u));
            }
        }
        let mut state = self.addresses.entry(ip).or_insert(AddressState {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if state.blocked_until.is_some_and(|until| now < until) {
            return false;
        }
        if now.duration_since(state.window_start) >= ADDRESS_WINDOW {
            state.window_start = now;
            state.failures = 0;
            state.blocked_until = None;
        }
        state.failures = state.failures.saturating_add(1);
        if state.failures > sec.ip_reject_limit {
            state.blocked_until = now.checked_add(Duration::from_secs(sec.ip_block_secs));
            state.failures = 0;
            return true;
        }
        false
    }

    /// A successful login resets the account's count (not a running lock:
    /// `auth` refuses locked accounts before it gets here).
    pub fn succeeded(&self, user: &str) {
        let now = Instant::now();
        self.accounts
            .remove_if(user, |_, a| a.locked_until.is_none_or(|u| now >= u));
    }

    /// Forgets entries that no longer matter; called now and then.
    pub fn prune(&self, now: Instant, sec: &Security) {
        let window = Duration::from_secs(sec.reject_window_secs);
        self.accounts.retain(|_, a| {
            a.locked_until.is_some_and(|u| now < u)
                || a.failures
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
        });
        self.addresses.retain(|_, a| {
            a.blocked_until.is_some_and(|u| now < u)
                || now.duration_since(a.window_start) < ADDRESS_WINDOW
        });
    }
}

/// The unit one source is counted as: an IPv4 address, or an IPv6 /64 (a
/// single host usually holds a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec() -> Security {
        Security {
            reject_limit: 3,
            reject_window_secs: 60,
            lockout_secs: 100,
            ip_reject_limit: 4,
            ip_block_secs: 30,
            resume_token_secs: 60,
            resume_key_file: "k".into(),
            administrator: "admin".into(),
            password_complexity: crate::directory::Complexity::Medium,
        }
    }

    #[test]
    fn the_limit_th_failure_in_the_window_locks_for_lockout_secs() {
        let l = Lockout::default();
        let s = sec();
        let u: Arc<str> = "bob".into();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(!l.failed(Some(&u), ip, t0, &s).account_locked);
        // The first failure falls out of the window: still two in it.
        let t1 = t0 + Duration::from_secs(61);
        assert!(!l.failed(Some(&u), ip, t1, &s).account_locked);
        assert!(!l.failed(Some(&u), ip, t1, &s).account_locked);
        assert!(l.failed(Some(&u), ip, t1, &s).account_locked);
        assert!(l.is_locked("bob", t1 + Duration::from_secs(99)));
        assert!(!l.is_locked("bob", t1 + Duration::from_secs(100)));
        assert!(!l.is_locked("alice", t1));
    }

    #[test]
    fn success_resets_the_count() {
        let l = Lockout::default();
        let s = sec();
        let u: Arc<str> = "bob".into();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        l.failed(Some(&u), ip, t, &s);
        l.failed(Some(&u), ip, t, &s);
        l.succeeded("bob");
        assert!(!l.failed(Some(&u), ip, t, &s).account_locked);
        assert!(!l.is_locked("bob", t));
    }

    #[test]
    fn more_than_ip_reject_limit_a_minute_blocks_the_address() {
        let l = Lockout::default();
        let s = sec();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        let t = Instant::now();
        for _ in 0..4 {
            assert!(!l.failed(None, ip, t, &s).address_blocked);
        }
        assert!(l.failed(None, ip, t, &s).address_blocked);
        assert!(l.is_blocked(ip, t + Duration::from_secs(29)));
        assert!(!l.is_blocked(ip, t + Duration::from_secs(30)));
        assert!(!l.is_blocked(other, t));
        l.prune(t + Duration::from_secs(120), &s);
        assert!(l.addresses.is_empty());
    }
}

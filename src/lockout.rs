//! Brute-force protection: failed logins per (account, source address) (the
//! system's "Password Reject Limit", leading to "Locked – Password Error"
//! for that address only), a progressive schedule per account across all
//! addresses (checks spaced by a growing delay, and refused when the next
//! free turn is too far off), and per source address (HTTP 429 for a while,
//! and a cap on password checks in progress at once).
//!
//! Owns counters and clocks only. Must not verify passwords, log, or choose
//! what the wire says: `auth` does that, and a locked account answers exactly
//! like a wrong password. Every name a peer types is counted, known or not,
//! so neither a lock nor a delay tells an existing account from an unknown
//! one; names are kept as keyed 64-bit digests, never as the text typed.
//! Every map is bounded by pruning and a hard cap.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Security;

/// The per-address failure window ("failures a minute").
const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Entries each map holds at most; past it new keys are not tracked until a
/// prune frees room (the other tables still apply to them).
const MAX_ENTRIES: usize = 100_000;
/// The first progressive delay; each further failure doubles it.
const DELAY_BASE: Duration = Duration::from_millis(250);

/// One account from one source address.
#[derive(Default)]
struct PairState {
    /// Times of the most recent failures, at most `reject_limit` of them.
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// One account from everywhere.
struct NameState {
    failures: u32,
    last: Instant,
    /// Attempts given a turn by [`InFlight::schedule`] and not decided yet:
    /// they may all fail, so they count toward the delay like failures.
    pending: u32,
    /// The latest turn handed out; the next one is at least a delay later.
    slot: Option<Instant>,
}

impl NameState {
    fn new(now: Instant) -> NameState {
        NameState {
            failures: 0,
            last: now,
            pending: 0,
            slot: None,
        }
    }

    /// The spacing between checks of this account now: nothing up to
    /// `account_delay_after` recent failures and pending attempts, then
    /// 250 ms doubling per further one, capped at `account_delay_max_ms`.
    fn delay(&self, now: Instant, sec: &Security) -> Duration {
        let window = Duration::from_secs(sec.reject_window_secs);
        let failures = if now.duration_since(self.last) < window {
            self.failures
        } else {
            0
        };
        let excess = failures
            .saturating_add(self.pending)
            .saturating_sub(sec.account_delay_after);
        if excess == 0 {
            return Duration::ZERO;
        }
        let doubled = DELAY_BASE.saturating_mul(1 << (excess - 1).min(16));
        doubled.min(Duration::from_millis(sec.account_delay_max_ms))
    }
}

struct AddressState {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// Password checks from this address in progress (see [`InFlight`]).
    in_flight: u32,
    /// When a throttled attempt from here was last audited, and how many
    /// since were not (one line per `THROTTLED_AUDIT_EVERY`, not per try).
    throttled_audited: Option<Instant>,
    throttled_quiet: u32,
}

/// A throttled address gets one audit line this often, with the count of
/// the attempts in between: each try is counted in the metrics, but one
/// peer must not be able to write the log as fast as it can send.
const THROTTLED_AUDIT_EVERY: Duration = Duration::from_secs(10);

/// What a recorded failure changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// This failure locked the account for this address.
    pub account_locked: bool,
    /// This failure blocked the source address.
    pub address_blocked: bool,
}

/// Why a password check may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// The address failed too often and is blocked for `ip_block_secs`.
    Blocked,
    /// The address already has `max_verifying_per_ip` checks in progress,
    /// or its failure budget is spoken for by checks in progress.
    Busy,
    /// The account's next free turn is further off than
    /// `account_delay_max_ms`: enough attempts on it already wait.
    Account,
}

/// A name as the tables key it: a keyed digest. Under one key (a
/// cluster's nodes share theirs) the same name has the same digest, so a
/// failure is told to the other nodes by digest, never by the text typed.
pub type Name = u64;

pub struct Lockout {
    pairs: DashMap<(Name, IpAddr), PairState>,
    names: DashMap<Name, NameState>,
    addresses: DashMap<IpAddr, AddressState>,
    key: Hmac<Sha256>,
}

impl Default for Lockout {
    /// Under a random key.
    fn default() -> Lockout {
        Lockout::with_key(&rand::random())
    }
}

impl Lockout {
    /// Digests names under `key`.
    pub fn with_key(key: &[u8; 32]) -> Lockout {
        Lockout {
            pairs: DashMap::new(),
            names: DashMap::new(),
            addresses: DashMap::new(),
            // Any key length is accepted; the fallback is never taken.
            key: Hmac::new_from_slice(key).unwrap_or_else(|_| Hmac::new(&Default::default())),
        }
    }

    /// The digest of a typed name, as the tables and the other nodes know it.
    pub fn name(&self, user: &str) -> Name {
        let mut mac = self.key.clone();
        mac.update(user.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(first)
    }

    /// Is `user` locked for logins from `ip` at `now`?
    pub fn is_locked(&self, user: &str, ip: IpAddr, now: Instant) -> bool {
        self.pairs
            .get(&(self.name(user), source(ip)))
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

    /// Starts a password check from `ip`: it counts against the address's
    /// failure budget and its concurrency cap until the guard drops, so
    /// checks started in parallel cannot overrun either.
    pub fn begin(
        &self,
        ip: IpAddr,
        now: Instant,
        sec: &Security,
    ) -> Result<InFlight<'_>, Throttle> {
        let ip = source(ip);
        self.make_room_for_address(ip, now, sec);
        let mut state = self.addresses.entry(ip).or_insert_with(|| fresh(now));
        if state.blocked_until.is_some_and(|until| now < until) {
            return Err(Throttle::Blocked);
        }
        if now.duration_since(state.window_start) >= ADDRESS_WINDOW {
            state.window_start = now;
            state.failures = 0;
            state.blocked_until = None;
        }
        // One more failure than the limit is what blocks; in-flight checks
        // may all fail, so they may not add up past that.
        if state.in_flight >= sec.max_verifying_per_ip
            || state.failures.saturating_add(state.in_flight) > sec.ip_reject_limit
        {
            return Err(Throttle::Busy);
        }
        state.in_flight += 1;
        Ok(InFlight {
            lockout: self,
            ip,
            name: None,
        })
    }

    /// The spacing between checks of `user` now (see [`NameState::delay`]).
    pub fn delay(&self, user: &str, now: Instant, sec: &Security) -> Duration {
        self.names
            .get(&self.name(user))
            .map_or(Duration::ZERO, |n| n.delay(now, sec))
    }

    /// Room for `name` in the account map, freeing some if it is full.
    fn room_for_name(&self, name: Name, now: Instant, sec: &Security) -> bool {
        if self.names.contains_key(&name) || self.names.len() < MAX_ENTRIES {
            return true;
        }
        self.prune(now, sec);
        if self.names.len() >= MAX_ENTRIES {
            // Keep the names being delayed or checked; forget the rest.
            self.names
                .retain(|_, n| n.pending > 0 || n.failures > sec.account_delay_after);
        }
        self.names.len() < MAX_ENTRIES
    }

    /// Records a failed login from `ip`, against `user` when the attempt
    /// named one (a password login, known or not; a token of a locked user).
    pub fn failed(&self, user: Option<&str>, ip: IpAddr, now: Instant, sec: &Security) -> Tripped {
        self.failed_as(user.map(|u| self.name(u)), ip, now, sec)
    }

    /// [`Lockout::failed`] with the name already digested (another node's).
    pub fn failed_as(
        &self,
        name: Option<Name>,
        ip: IpAddr,
        now: Instant,
        sec: &Security,
    ) -> Tripped {
        let account_locked = name.is_some_and(|name| {
            self.name_failed(name, now, sec);
            self.pair_failed(name, source(ip), now, sec)
        });
        Tripped {
            account_locked,
            address_blocked: self.address_failed(ip, now, sec),
        }
    }

    fn name_failed(&self, name: Name, now: Instant, sec: &Security) {
        if !self.room_for_name(name, now, sec) {
            return;
        }
        let window = Duration::from_secs(sec.reject_window_secs);
        let mut state = self
            .names
            .entry(name)
            .or_insert_with(|| NameState::new(now));
        if now.duration_since(state.last) >= window {
            // Quiet for a whole window: the delay starts over.
            state.failures = 0;
        }
        state.failures = state.failures.saturating_add(1);
        state.last = now;
    }

    fn pair_failed(&self, name: Name, ip: IpAddr, now: Instant, sec: &Security) -> bool {
        let key = (name, ip);
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_ENTRIES {
            self.prune(now, sec);
            if self.pairs.len() >= MAX_ENTRIES {
                self.pairs
                    .retain(|_, p| p.locked_until.is_some_and(|u| now < u));
                if self.pairs.len() >= MAX_ENTRIES {
                    return false;
                }
            }
        }
        let mut state = self.pairs.entry(key).or_default();
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

    /// Frees room in the address map before `ip` is added to a full one.
    fn make_room_for_address(&self, ip: IpAddr, now: Instant, sec: &Security) {
        if self.addresses.len() >= MAX_ENTRIES && !self.addresses.contains_key(&ip) {
            // Full (a spread-out attack): forget what expired, then every
            // address not blocked and not checking right now, rather than
            // stop counting.
            self.prune(now, sec);
            if self.addresses.len() >= MAX_ENTRIES {
                self.addresses
                    .retain(|_, a| a.in_flight > 0 || a.blocked_until.is_some_and(|u| now < u));
            }
        }
    }

    fn address_failed(&self, ip: IpAddr, now: Instant, sec: &Security) -> bool {
        let ip = source(ip);
        self.make_room_for_address(ip, now, sec);
        let mut state = self.addresses.entry(ip).or_insert_with(|| fresh(now));
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

    /// A successful login of `user` from `ip` resets that pair's count and
    /// the account's delay (not a running lock: `auth` refuses locked pairs
    /// before it gets here).
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        self.succeeded_as(self.name(user), ip);
    }

    /// [`Lockout::succeeded`] with the name already digested.
    pub fn succeeded_as(&self, name: Name, ip: IpAddr) {
        let now = Instant::now();
        self.pairs.remove_if(&(name, source(ip)), |_, a| {
            a.locked_until.is_none_or(|u| now >= u)
        });
        self.names.remove(&name);
    }

    /// Forgets every lock and failure of `user`, from every address
    /// (`admin.users.unlock`). True if the account was locked anywhere at
    /// `now` or its attempts were being delayed.
    pub fn unlock(&self, user: &str, now: Instant, sec: &Security) -> bool {
        let name = self.name(user);
        let delayed = !self.delay(user, now, sec).is_zero();
        let mut locked = false;
        self.pairs.retain(|(n, _), p| {
            if *n != name {
                return true;
            }
            locked |= p.locked_until.is_some_and(|u| now < u);
            false
        });
        self.names.remove(&name);
        locked || delayed
    }

    /// Forgets entries that no longer matter; called now and then.
    /// A throttled attempt from `ip`: `Some(n)` when it is to be audited,
    /// with `n` throttled attempts since the last line that were not;
    /// `None` when this one is only counted.
    pub fn throttled_audit(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        let Some(mut a) = self.addresses.get_mut(&source(ip)) else {
            return Some(0);
        };
        match a.throttled_audited {
            Some(at) if now.duration_since(at) < THROTTLED_AUDIT_EVERY => {
                a.throttled_quiet = a.throttled_quiet.saturating_add(1);
                None
            }
            _ => {
                a.throttled_audited = Some(now);
                Some(std::mem::take(&mut a.throttled_quiet))
            }
        }
    }

    pub fn prune(&self, now: Instant, sec: &Security) {
        let window = Duration::from_secs(sec.reject_window_secs);
        self.pairs.retain(|_, a| {
            a.locked_until.is_some_and(|u| now < u)
                || a.failures
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
        });
        self.names
            .retain(|_, n| n.pending > 0 || now.duration_since(n.last) < window);
        self.addresses.retain(|_, a| {
            a.in_flight > 0
                || a.blocked_until.is_some_and(|u| now < u)
                || now.duration_since(a.window_start) < ADDRESS_WINDOW
        });
    }
}

fn fresh(now: Instant) -> AddressState {
    AddressState {
        window_start: now,
        failures: 0,
        blocked_until: None,
        in_flight: 0,
        throttled_audited: None,
        throttled_quiet: 0,
    }
}

/// A password check in progress from one address, and once scheduled, on
/// one account; counted out on drop (also when the session goes away
/// mid-check). Keep it until the outcome is recorded, so the count never
/// dips between the check and its failure.
pub struct InFlight<'a> {
    lockout: &'a Lockout,
    ip: IpAddr,
    name: Option<Name>,
}

impl InFlight<'_> {
    /// Takes this attempt's turn on `user`'s schedule and returns when it
    /// may be checked. Undelayed accounts go now. A delayed one gets
    /// `max(now, previous turn or last failure + delay)`, so however many
    /// addresses guess in parallel, checks of one account are spaced by its
    /// delay; a turn further off than `account_delay_max_ms` is refused at
    /// once ([`Throttle::Account`]), so no attempt waits longer than that
    /// (a Basic login must finish within the handshake timeout). Unknown
    /// names alike.
    pub fn schedule(
        &mut self,
        user: &str,
        now: Instant,
        sec: &Security,
    ) -> Result<Instant, Throttle> {
        let lockout = self.lockout;
        let name = lockout.name(user);
        if self.name.is_some() || !lockout.room_for_name(name, now, sec) {
            // A full map (a spread of names) leaves this one unscheduled.
            return Ok(now);
        }
        let mut state = lockout
            .names
            .entry(name)
            .or_insert_with(|| NameState::new(now));
        let delay = state.delay(now, sec);
        let slot = if delay.is_zero() {
            now
        } else {
            let previous = state.slot.map_or(state.last, |s| s.max(state.last));
            previous.checked_add(delay).unwrap_or(now).max(now)
        };
        if slot.duration_since(now) > Duration::from_millis(sec.account_delay_max_ms) {
            return Err(Throttle::Account);
        }
        state.slot = Some(slot);
        state.pending = state.pending.saturating_add(1);
        self.name = Some(name);
        Ok(slot)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Entries with checks in flight are never pruned, so this finds it.
        if let Some(mut a) = self.lockout.addresses.get_mut(&self.ip) {
            a.in_flight = a.in_flight.saturating_sub(1);
        }
        if let Some(name) = self.name {
            if let Some(mut n) = self.lockout.names.get_mut(&name) {
                n.pending = n.pending.saturating_sub(1);
            }
        }
    }
}

/// The unit one source is counted as: an IPv4 address, or an IPv6 /64 (a
/// single host usually holds a whole /64).
pub fn source(ip: IpAddr) -> IpAddr {
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
            account_delay_after: 4,
            account_delay_max_ms: 1000,
            ip_reject_limit: 4,
            ip_block_secs: 30,
            max_verifying_per_ip: 2,
            resume_token_secs: 60,
            resume_key_file: "k".into(),
            administrator: "admin".into(),
            password_complexity: crate::directory::Complexity::Medium,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limit_th_failure_in_the_window_locks_the_pair_for_lockout_secs() {
        let l = Lockout::default();
        let s = Security {
            ip_reject_limit: 100,
            ..sec()
        };
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t0 = Instant::now();
        assert!(!l.failed(Some("bob"), a, t0, &s).account_locked);
        // The first failure falls out of the window: still two in it.
        let t1 = t0 + Duration::from_secs(61);
        assert!(!l.failed(Some("bob"), a, t1, &s).account_locked);
        assert!(!l.failed(Some("bob"), a, t1, &s).account_locked);
        assert!(l.failed(Some("bob"), a, t1, &s).account_locked);
        assert!(l.is_locked("bob", a, t1 + Duration::from_secs(99)));
        assert!(!l.is_locked("bob", a, t1 + Duration::from_secs(100)));
        // Only from that address, and only that account.
        assert!(!l.is_locked("bob", b, t1));
        assert!(!l.is_locked("alice", a, t1));
        // Unknown names lock the same way (nothing tells them apart).
        for _ in 0..3 {
            l.failed(Some("no such user"), b, t1, &s);
        }
        assert!(l.is_locked("no such user", b, t1));
    }

    #[test]
    fn success_resets_the_count_and_unlock_clears_every_address() {
        let l = Lockout::default();
        let s = Security {
            ip_reject_limit: 100,
            ..sec()
        };
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let t = Instant::now();
        l.failed(Some("bob"), a, t, &s);
        l.failed(Some("bob"), a, t, &s);
        l.succeeded("bob", a);
        assert!(!l.failed(Some("bob"), a, t, &s).account_locked);
        assert!(!l.is_locked("bob", a, t));
        for addr in [a, b] {
            for _ in 0..3 {
                l.failed(Some("bob"), addr, t, &s);
            }
        }
        assert!(l.is_locked("bob", a, t) && l.is_locked("bob", b, t));
        assert!(l.unlock("bob", t, &s));
        assert!(!l.is_locked("bob", a, t) && !l.is_locked("bob", b, t));
        assert!(!l.unlock("bob", t, &s));
    }

    #[test]
    fn the_account_delay_grows_across_addresses_and_is_capped() {
        let l = Lockout::default();
        let s = Security {
            ip_reject_limit: 100,
            ..sec()
        };
        let t = Instant::now();
        let mut delays = Vec::new();
        for i in 0..9 {
            delays.push(l.delay("bob", t, &s).as_millis());
            l.failed(Some("bob"), ip(&format!("10.0.1.{i}")), t, &s);
        }
        assert_eq!(delays, [0, 0, 0, 0, 0, 250, 500, 1000, 1000]);
        // A quiet window later it starts over.
        assert!(l.delay("bob", t + Duration::from_secs(60), &s).is_zero());
        l.failed(Some("bob"), ip("10.0.1.1"), t + Duration::from_secs(60), &s);
        assert!(l.delay("bob", t + Duration::from_secs(60), &s).is_zero());
    }

    /// Parallel attempts on a delayed account from many addresses are given
    /// turns a delay apart, and refused at once past the maximum delay; an
    /// unknown name is scheduled exactly alike.
    #[test]
    fn a_delayed_account_checks_one_attempt_per_turn_from_any_address() {
        let l = Lockout::default();
        let s = Security {
            ip_reject_limit: 100,
            ..sec()
        };
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        for user in ["bob", "no such user"] {
            // Five failures: one past account_delay_after = 4.
            for i in 0..5 {
                l.failed(Some(user), ip(&format!("10.0.2.{i}")), t, &s);
            }
            let mut turns = Vec::new();
            let mut held = Vec::new();
            for i in 0..6 {
                let mut g = l.begin(ip(&format!("10.0.3.{i}")), t, &s).unwrap();
                turns.push(g.schedule(user, t, &s));
                held.push(g);
            }
            // 250, then 500 ms apart (the waiting one counts), then the
            // next turn would be 1750 ms off: over the 1000 ms maximum.
            assert_eq!(
                turns,
                [
                    Ok(ms(250)),
                    Ok(ms(750)),
                    Err(Throttle::Account),
                    Err(Throttle::Account),
                    Err(Throttle::Account),
                    Err(Throttle::Account),
                ],
                "{user}"
            );
            // Those refused hold no turn; the others do until they drop.
            drop(held);
            let mut g = l.begin(ip("10.0.3.9"), ms(500), &s).unwrap();
            assert_eq!(g.schedule(user, ms(500), &s), Ok(ms(1000)));
        }
    }

    /// Attempts in progress count like failures: once more than
    /// account_delay_after are failed or pending, the schedule starts.
    #[test]
    fn attempts_in_progress_count_toward_the_account_delay() {
        let l = Lockout::default();
        let s = Security {
            ip_reject_limit: 100,
            ..sec()
        };
        let t = Instant::now();
        let mut held = Vec::new();
        let mut turns = Vec::new();
        for i in 0..7 {
            let mut g = l.begin(ip(&format!("10.0.4.{i}")), t, &s).unwrap();
            turns.push(g.schedule("carol", t, &s).unwrap());
            held.push(g);
        }
        let ms = |n: u64| t + Duration::from_millis(n);
        assert_eq!(turns, [t, t, t, t, t, ms(250), ms(750)]);
        // Their failures take the place of their turns (the guard is held
        // until the failure is recorded, so the count never dips).
        for (i, g) in held.into_iter().enumerate() {
            l.failed(Some("carol"), ip(&format!("10.0.4.{i}")), ms(800), &s);
            drop(g);
        }
        assert_eq!(l.delay("carol", ms(800), &s), Duration::from_millis(1000));
        // A success resets the schedule; delay 0 turns it off.
        l.succeeded("carol", ip("10.0.4.0"));
        let mut g = l.begin(ip("10.0.4.7"), ms(800), &s).unwrap();
        assert_eq!(g.schedule("carol", ms(800), &s), Ok(ms(800)));
        let off = Security {
            account_delay_max_ms: 0,
            ..s
        };
        for _ in 0..20 {
            l.failed(Some("dave"), ip("10.0.4.8"), t, &off);
        }
        let mut g = l.begin(ip("10.0.4.9"), t, &off).unwrap();
        assert_eq!(g.schedule("dave", t, &off), Ok(t));
    }

    #[test]
    fn a_throttled_address_is_audited_once_per_ten_seconds_with_the_count() {
        let l = Lockout::default();
        let s = sec();
        let addr = ip("10.0.0.9");
        let t = Instant::now();
        for _ in 0..5 {
            l.failed(None, addr, t, &s);
        }
        assert_eq!(l.throttled_audit(addr, t), Some(0));
        for k in 1..=3 {
            assert_eq!(l.throttled_audit(addr, t + Duration::from_secs(k)), None);
        }
        assert_eq!(
            l.throttled_audit(addr, t + Duration::from_secs(10)),
            Some(3)
        );
        // An address the tables do not know is always audited.
        assert_eq!(l.throttled_audit(ip("10.0.0.10"), t), Some(0));
    }

    #[test]
    fn more_than_ip_reject_limit_a_minute_blocks_the_address() {
        let l = Lockout::default();
        let s = sec();
        let addr = ip("10.0.0.2");
        let other = ip("10.0.0.3");
        let t = Instant::now();
        for _ in 0..4 {
            assert!(!l.failed(None, addr, t, &s).address_blocked);
        }
        assert!(l.failed(None, addr, t, &s).address_blocked);
        assert!(l.is_blocked(addr, t + Duration::from_secs(29)));
        assert!(!l.is_blocked(addr, t + Duration::from_secs(30)));
        assert!(!l.is_blocked(other, t));
        assert_eq!(l.begin(addr, t, &s).err(), Some(Throttle::Blocked));
        l.prune(t + Duration::from_secs(120), &s);
        assert!(l.addresses.is_empty());
    }

    #[test]
    fn checks_in_flight_count_against_the_cap_and_the_budget() {
        let l = Lockout::default();
        let s = sec();
        let addr = ip("10.0.0.4");
        let t = Instant::now();
        let first = l.begin(addr, t, &s).unwrap();
        let second = l.begin(addr, t, &s).unwrap();
        // max_verifying_per_ip = 2.
        assert_eq!(l.begin(addr, t, &s).err(), Some(Throttle::Busy));
        drop(first);
        let third = l.begin(addr, t, &s).unwrap();
        drop((second, third));
        // The budget: three failures, and two checks in flight that may both
        // fail make five, one more than ip_reject_limit = 4, which blocks;
        // a third check would overrun it.
        let wide = Security {
            max_verifying_per_ip: 10,
            ..sec()
        };
        for _ in 0..3 {
            l.failed(None, addr, t, &wide);
        }
        let one = l.begin(addr, t, &wide).unwrap();
        let two = l.begin(addr, t, &wide).unwrap();
        assert_eq!(l.begin(addr, t, &wide).err(), Some(Throttle::Busy));
        drop((one, two));
        // An IPv6 /64 is one source.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let _x = l.begin(v6a, t, &s).unwrap();
        let _y = l.begin(v6b, t, &s).unwrap();
        assert_eq!(l.begin(v6a, t, &s).err(), Some(Throttle::Busy));
    }
}

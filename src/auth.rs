//! Authentication: the one place that decides whether a credential names a
//! live service user, for every way in (a password by `session.login` or
//! Basic on the upgrade, a resume token by `session.resume` or Bearer, a
//! client certificate on /adjunct), with account lockout and per-address
//! throttling, and an audit line for every outcome.
//!
//! Must not touch sockets or decide per-method rights (that is the catalog's
//! gate). Every failure of a credential looks the same to the peer: unknown
//! user, wrong password, disabled, locked and a bad token are all `Failed`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::catalog::Endpoint;
use crate::directory::{Account, LoginFailure};
use crate::gateway::Gateway;
pub use crate::hub::Granted;
use crate::hub::{BindError, SessionHandle};
use crate::lockout::Throttle;
use crate::metrics::Login;
use crate::rights::Right;
use crate::tls::ClientIdentity;

/// What a peer offers.
pub enum Credential<'a> {
    Password { user: &'a str, password: &'a str },
    Token(&'a str),
    Certificate(&'a ClientIdentity),
}

impl Credential<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Credential::Password { .. } => "password",
            Credential::Token(_) => "token",
            Credential::Certificate(_) => "certificate",
        }
    }
}

/// Where an attempt comes from.
#[derive(Clone, Copy)]
pub struct Attempt {
    pub peer: SocketAddr,
    pub endpoint: Endpoint,
}

/// Why an attempt was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Unknown user, wrong password, disabled, locked, bad token: one answer.
    Failed,
    /// The source address failed too often; it is refused for a while.
    Throttled,
    /// The source address already has `[security] max_verifying_per_ip`
    /// password checks in progress (or its failure budget is spoken for by
    /// them); retry shortly.
    InProgress,
    /// The verification queue is full (a login storm); retry shortly.
    Busy,
    /// Too many password attempts on this user name (known or not) already
    /// wait for their turn (`lockout`'s per-account schedule); retry later.
    UserThrottled,
    /// Authenticated, but /adjunct needs Adjunct Server Connection.
    NoConnectionRight,
    /// The user already holds `[limits] max_connections_per_user` sessions.
    TooManySessions,
}

/// Checks `cred`; on success the caller binds the session (`Hub::bind`).
pub async fn authenticate(
    gw: &Gateway,
    cred: Credential<'_>,
    at: Attempt,
) -> Result<Granted, Refused> {
    let snap = gw.snapshot_owned();
    let sec = &snap.config.security;
    let how = Some(cred.kind());
    let ip = at.peer.ip();
    let is_certificate = matches!(cred, Credential::Certificate(_));
    let claimed: &str = match &cred {
        Credential::Password { user, .. } => user,
        _ => "",
    };
    // A certificate cannot be guessed: nothing that stops guessing refuses it.
    if !is_certificate && gw.lockout.is_blocked(ip, Instant::now()) {
        audit(gw, at, claimed, how, Login::Throttled, "address throttled");
        return Err(Refused::Throttled);
    }
    // Held until the outcome is recorded (to the end of this function): the
    // check counts against the address's budget, its share of the verifier
    // and the account's schedule until its failure is counted in their place.
    let mut in_flight = None;
    // The account, and the stamp of the credential that proved it (its
    // password's or its certificate claim's); or who failed, and why.
    type Checked<'a> = Result<(&'a Account, u64), (Option<Arc<str>>, &'static str)>;
    let checked: Checked<'_> = match &cred {
        Credential::Password { user, password } => {
            let throttled = |reason: &str, refused: Refused| {
                audit(gw, at, user, how, Login::Throttled, reason);
                refused
            };
            let refused = |t: Throttle| match t {
                Throttle::Blocked => throttled("address throttled", Refused::Throttled),
                Throttle::Busy => throttled(
                    "too many logins in progress from this address",
                    Refused::InProgress,
                ),
                Throttle::Account => throttled(
                    "too many logins waiting for this user name",
                    Refused::UserThrottled,
                ),
            };
            let guard =
                in_flight.insert(gw.lockout.begin(ip, Instant::now(), sec).map_err(refused)?);
            let turn = guard.schedule(user, Instant::now(), sec).map_err(refused)?;
            tokio::time::sleep_until(turn.into()).await;
            match gw.verifier.login(&snap.directory, user, password).await {
                Ok(name) => snap
                    .directory
                    .get(&name)
                    .map(|a| (a, a.stamp))
                    .ok_or((None, "unknown user")),
                Err(LoginFailure::Busy) => {
                    return Err(throttled("verification queue full", Refused::Busy))
                }
                // Every typed name is counted, known or not (see `lockout`).
                Err(f) => Err((Some(Arc::from(*user)), f.reason())),
            }
        }
        Credential::Token(token) => {
            let now = crate::util::unix_now();
            match gw
                .resume
                .check(token, &snap.directory, now, sec.resume_token_secs)
            {
                Some((a, stamp)) if a.enabled => Ok((a, stamp)),
                Some(_) => Err((None, "disabled")),
                None => Err((None, "invalid or expired token")),
            }
        }
        Credential::Certificate(id) => match snap.directory.by_client_cert(id) {
            Some(a) if a.enabled => Ok((a, a.cert_stamp)),
            Some(_) => Err((None, "disabled")),
            None => Err((None, "no service user for this certificate")),
        },
    };
    // A locked account fails whatever was presented, and that counts as a
    // failure like any other: a right guess must not look different. The
    // lock is per (account, source address). A certificate is a credential
    // of its own and is not locked out.
    let checked = match checked {
        Ok((a, _)) if !is_certificate && gw.lockout.is_locked(&a.name, ip, Instant::now()) => {
            Err((Some(a.name.clone()), "account locked"))
        }
        other => other,
    };
    let (name, stamp) = match checked {
        Ok((a, stamp)) => (a.name.clone(), stamp),
        Err((_, reason)) if is_certificate => {
            // Not a guess: an unclaimed certificate may still log in.
            audit(gw, at, "", how, Login::Failed, reason);
            return Err(Refused::Failed);
        }
        Err((account, reason)) => {
            let now = Instant::now();
            let account = account.as_deref();
            // Known or not alike, so the count tells no account apart.
            let locked = account.is_some_and(|a| gw.lockout.is_locked(a, ip, now));
            // The name's digest, once: counted here and told to the others
            // (guesses spread over nodes count once on every node).
            let digest = account.map(|a| gw.lockout.name(a));
            let tripped = gw.lockout.failed_as(digest, ip, now, sec);
            gw.bus.login_failed(digest, ip);
            if locked {
                audit(gw, at, claimed, how, Login::Locked, "account locked");
            } else {
                audit(gw, at, claimed, how, Login::Failed, reason);
            }
            if tripped.account_locked {
                tracing::warn!(target: "audit", event = "lockout", user = audited_name(gw, account.unwrap_or_default()), peer = %at.peer, lockout_secs = sec.lockout_secs, "account locked for this address after repeated failures");
            }
            if tripped.address_blocked {
                tracing::warn!(target: "audit", event = "address_blocked", peer = %at.peer, block_secs = sec.ip_block_secs, "source address throttled after repeated failures");
            }
            return Err(Refused::Failed);
        }
    };
    // A reload may have landed during the password check: use the current view.
    let now_snap = gw.snapshot();
    let Some(rights) = now_snap.directory.live_rights(&name) else {
        audit(gw, at, &name, how, Login::Failed, "disabled");
        return Err(Refused::Failed);
    };
    if at.endpoint == Endpoint::Adjunct && !rights.contains(Right::AdjunctServerConnection) {
        audit(
            gw,
            at,
            &name,
            how,
            Login::Failed,
            "no Adjunct Server Connection",
        );
        return Err(Refused::NoConnectionRight);
    }
    let held = gw.hub.sessions_of(&name) + gw.bus.sessions_of(&name);
    if held >= now_snap.config.limits.max_connections_per_user {
        audit(
            gw,
            at,
            &name,
            how,
            Login::Refused,
            "too many sessions for this user",
        );
        return Err(Refused::TooManySessions);
    }
    if matches!(cred, Credential::Password { .. }) {
        // Only the password resets its own failure count.
        let digest = gw.lockout.name(&name);
        gw.lockout.succeeded_as(digest, ip);
        gw.bus.login_ok(digest, ip);
    }
    gw.metrics.login(Login::Ok);
    tracing::info!(target: "audit", event = "login", outcome = "ok", user = &*name, peer = %at.peer, endpoint = at.endpoint.name(), credential = how, "login succeeded");
    Ok(Granted {
        user: name,
        rights,
        stamp,
    })
}

/// Authenticates `session` as `granted`, within the per-user limit, then
/// re-reads the current directory: a reload between the check and the bind
/// must not leave the session with rights (or a password) it no longer has.
pub fn bind(gw: &Gateway, session: &SessionHandle, granted: &Granted) -> Result<(), Refused> {
    let limit = gw.snapshot().config.limits.max_connections_per_user;
    if let Err(e) = gw.hub.bind(session, granted, limit) {
        let refused = match e {
            BindError::TooManySessions => Refused::TooManySessions,
            // A concurrent login won the race; the gate normally stops this.
            BindError::AlreadyBound => Refused::Failed,
        };
        // Lost the user's last slot to a concurrent login since the check.
        let at = Attempt {
            peer: session.peer,
            endpoint: session.endpoint,
        };
        audit(
            gw,
            at,
            &granted.user,
            // The credential is not known here; the check that granted it was audited.
            None,
            Login::Refused,
            "too many sessions for this user",
        );
        return Err(refused);
    }
    // Against the configuration installed last, until none is installed
    // meanwhile: a reload that lands during the recheck applies its rights
    // to this session too, and an older recheck must not write over them.
    let stale = loop {
        let snap = gw.snapshot_owned();
        let reason = gw.hub.recheck(session, &snap.directory);
        if reason.is_some() || Arc::ptr_eq(&snap, &gw.snapshot()) {
            break reason;
        }
    };
    if let Some(reason) = stale {
        // The credential went stale during the check (a password reset, a
        // disable): the session is closing with no rights, and is told so.
        tracing::warn!(target: "audit", event = "revoked", session = %session.id_string(), user = &*granted.user, peer = %session.peer, endpoint = session.endpoint.name(), reason, "session closed: changed while logging in");
        return Err(Refused::Failed);
    }
    Ok(())
}

/// A fresh resume token for `session`'s user, only while the password
/// generation its credential was checked against is still the account's
/// current one (and the account is enabled): a login that raced a password
/// reset must not carry a token across it.
pub fn resume_token(gw: &Gateway, session: &SessionHandle) -> Option<(String, u64)> {
    let snap = gw.snapshot();
    let account = snap.directory.get(session.user()?)?;
    let stamp = session.stamp();
    if !account.enabled || (stamp != 0 && !account.credential_current(stamp)) {
        return None;
    }
    let secs = snap.config.security.resume_token_secs;
    let expires = crate::util::unix_now().saturating_add(secs);
    // A certificate session's token rests on the claim, like the session.
    let token = if stamp != 0 && stamp == account.cert_stamp {
        gw.resume.issue_certificate(account, expires)?
    } else {
        gw.resume.issue(account, expires)
    };
    Some((token, expires))
}

/// A user name as the audit trail shows it: a known account as it is; any
/// other text as `unknown:` and a keyed pseudonym (people type passwords
/// into the name field), stable so repeated attempts correlate. Both log
/// formats escape it, so it cannot inject a line.
fn audited_name(gw: &Gateway, user: &str) -> String {
    if user.is_empty() || gw.snapshot().directory.get(user).is_some() {
        return user.to_owned();
    }
    format!("unknown:{}", gw.resume.pseudonym("audit-user", user))
}

/// A refused attempt: counted, and an audit line (a throttled address's
/// attempts: one line per 10 s with the count of those not written).
fn audit(gw: &Gateway, at: Attempt, user: &str, how: Option<&str>, outcome: Login, reason: &str) {
    gw.metrics.login(outcome);
    let quiet = if outcome == Login::Throttled {
        match gw.lockout.throttled_audit(at.peer.ip(), Instant::now()) {
            Some(quiet) => (quiet > 0).then_some(quiet),
            None => return,
        }
    } else {
        None
    };
    // No name claimed (a token, a certificate): no `user` field.
    let user = (!user.is_empty()).then(|| audited_name(gw, user));
    tracing::warn!(target: "audit", event = "login", outcome = outcome.name(), user, peer = %at.peer, endpoint = at.endpoint.name(), credential = how, reason, not_audited = quiet, "login refused");
}

//! The Management API's write path: one change at a time, from an edit of
//! the config text to a new live snapshot.
//!
//! A change is: take the config lock, refuse a stale revision, edit the text
//! ([`edit`]), validate it with `Config::parse`, judge it ([`delegation`]),
//! write it ([`persist`]), then install it through the same function as a
//! reload (revocation included) and audit it. Every step before the write
//! can refuse with nothing changed. Must not know the wire: handlers in
//! `methods::admin` map params and errors.

pub mod delegation;
pub mod edit;
pub use crate::persist;

use std::sync::Arc;

use toml_edit::DocumentMut;

use crate::bus::WriteError;
use crate::catalog::{self, Method};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::hub::SessionHandle;
use delegation::{Actor, Change, Refusal};

/// Who asks for a change, through which method, from which revision.
pub struct Request<'a> {
    pub session: &'a SessionHandle,
    pub method: Method,
    /// The revision the client last read (`admin.config.get` and friends).
    pub revision: &'a str,
}

/// A change that was written and installed.
#[derive(Debug)]
pub struct Committed<T> {
    pub revision: String,
    /// Sessions closed because the change took their connection right.
    pub revoked: usize,
    pub changes: Vec<Change>,
    pub value: T,
}

/// Why a change was not made. In every case nothing was written.
#[derive(Debug)]
pub enum ChangeError {
    /// `revision` is not the live one, or the file was edited on disk and
    /// not reloaded (`on_disk`): the change would be made from a stale view.
    Stale { current: String, on_disk: bool },
    /// The edit cannot be made, or its result is not a valid config.
    Invalid(String),
    /// A delegation rule refuses it.
    Refused(Refusal),
    /// The session no longer holds the method's right (a concurrent change
    /// took it while this one waited for the lock).
    Gone,
    /// Reading or writing the config file failed.
    Io(std::io::Error),
    /// The cluster's shared configuration cannot be reached (NATS down).
    Unavailable,
}

fn stored(e: WriteError, current: &str) -> ChangeError {
    match e {
        WriteError::Stale { on_disk } => ChangeError::Stale {
            current: current.to_owned(),
            on_disk,
        },
        WriteError::Unavailable => ChangeError::Unavailable,
        WriteError::Io(e) => ChangeError::Io(e),
    }
}

/// Makes one change: see the module doc for the steps. `edit` gets the
/// document to change and the live config to look things up in.
pub fn change<T>(
    gw: &Arc<Gateway>,
    req: &Request<'_>,
    edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<T, edit::EditError>,
) -> Result<Committed<T>, ChangeError> {
    let serial = gw.config_lock();
    let live = gw.snapshot_owned();
    let current = live.config.source.revision();
    let stale = |on_disk| ChangeError::Stale {
        current: current.to_owned(),
        on_disk,
    };
    if req.revision != current {
        return Err(stale(false));
    }
    let path = gw.config_path();
    // The file (single node), or the cluster's shared text with this
    // node's sections: the bus says which text a change edits.
    let disk = gw
        .bus
        .base_text(path, &live.config)
        .map_err(|e| stored(e, current))?;
    // Re-gated under the lock: the gate ran before this change waited.
    let (method, need) = catalog::method_entry(req.method);
    let rights = req.session.rights().unwrap_or_default();
    if !catalog::satisfies(rights, need) {
        return Err(ChangeError::Gone);
    }
    let user = req.session.user().map_or("", |u| &**u);
    let mut doc = edit::parse(&disk).map_err(ChangeError::Invalid)?;
    let value = edit(&mut doc, &live.config).map_err(ChangeError::Invalid)?;
    let text = doc.to_string();
    let new = Config::parse(path, &text).map_err(|e| ChangeError::Invalid(e.message))?;
    let changes = delegation::diff(&live.config, &new);
    let actor = Actor { name: user, rights };
    if let Err(refusal) = delegation::check(actor, &live.config.security.administrator, &changes) {
        audit_refused(req.session, method, &refusal);
        return Err(ChangeError::Refused(refusal));
    }
    let revision = gw
        .bus
        .write(path, &disk, &text, current)
        .map_err(|e| stored(e, current))?;
    let mut new = new;
    new.source.set_revision(revision.clone());
    let revoked = gw.install(&serial, new);
    audit_change(req.session, method, current, &revision, &changes, revoked);
    Ok(Committed {
        revision,
        revoked,
        changes,
        value,
    })
}

/// What `admin.users.unlock` did.
#[derive(Debug)]
pub struct Unlocked {
    /// The live revision, unchanged: an unlock writes nothing.
    pub revision: String,
    /// The account was locked from some address, or its logins delayed.
    pub cleared: bool,
}

/// Clears the lockout of account `name` from every address and its
/// progressive delay. Judged like a password change of that account
/// (`delegation::may_unlock`), under the config lock and against the
/// revision the client read, like a change; but nothing is written, so the
/// revision stays. Audited as `admin_unlock`.
pub fn unlock(gw: &Arc<Gateway>, req: &Request<'_>, name: &str) -> Result<Unlocked, ChangeError> {
    let _serial = gw.config_lock();
    let live = gw.snapshot_owned();
    let current = live.config.source.revision();
    if req.revision != current {
        return Err(ChangeError::Stale {
            current: current.to_owned(),
            on_disk: false,
        });
    }
    let (method, need) = catalog::method_entry(req.method);
    let rights = req.session.rights().unwrap_or_default();
    if !catalog::satisfies(rights, need) {
        return Err(ChangeError::Gone);
    }
    let Some(account) = live.config.users.iter().find(|u| u.name == name) else {
        return Err(ChangeError::Invalid("no such service user".into()));
    };
    let user = req.session.user().map_or("", |u| &**u);
    let actor = Actor { name: user, rights };
    let security = &live.config.security;
    let held = live.config.rights_of(account);
    if let Err(refusal) = delegation::may_unlock(actor, &security.administrator, name, held) {
        audit_refused(req.session, method, &refusal);
        return Err(ChangeError::Refused(refusal));
    }
    let cleared = gw.lockout.unlock(name, std::time::Instant::now(), security);
    // Every node keeps its own counts (each failure is told to all): each
    // clears its own.
    gw.bus.unlocked(name);
    let s = req.session;
    tracing::info!(
        target: "audit",
        event = "admin_unlock",
        user,
        peer = %s.peer,
        endpoint = s.endpoint.name(),
        session = %s.id_string(),
        method,
        name,
        cleared,
        "account lockout cleared through the Management API"
    );
    Ok(Unlocked {
        revision: current.to_owned(),
        cleared,
    })
}

/// One line for the change, then one per account or group it touched, with
/// rights before and after. Names and rights only: never a secret.
fn audit_change(
    s: &SessionHandle,
    method: &str,
    before: &str,
    after: &str,
    changes: &[Change],
    revoked: usize,
) {
    let user = s.user().map_or("", |u| &**u);
    tracing::info!(
        target: "audit",
        event = "admin_change",
        user,
        peer = %s.peer,
        endpoint = s.endpoint.name(),
        session = %s.id_string(),
        method,
        revision_before = before,
        revision_after = after,
        revoked,
        "configuration changed through the Management API"
    );
    for c in changes {
        tracing::info!(
            target: "audit",
            event = "admin_change_item",
            user,
            session = %s.id_string(),
            method,
            kind = c.kind.name(),
            name = c.name.as_str(),
            change = c.verb(),
            rights_before = c.before.map(|r| r.names().join(", ")),
            rights_after = c.after.map(|r| r.names().join(", ")),
            password_changed = c.password,
            enabled_before = c.enabled.0,
            enabled_after = c.enabled.1,
            "account or group changed"
        );
    }
}

/// A write the delegation rules refused.
pub fn audit_refused(s: &SessionHandle, method: &str, refusal: &Refusal) {
    tracing::warn!(
        target: "audit",
        event = "admin_refused",
        user = s.user().map_or("", |u| &**u),
        peer = %s.peer,
        endpoint = s.endpoint.name(),
        session = %s.id_string(),
        method,
        reason = %refusal,
        "Management API change refused"
    );
}

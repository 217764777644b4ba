//! admin.*: the Management API (docs/ADMIN.md). Reads answer from the live
//! snapshot and hub; writes go through `admin::change`, which serializes
//! them, validates, applies the delegation rules, writes the file and
//! installs the result. A handler here only maps params and errors.
//!
//! Must never put a password, a hash or a TURN secret in an answer, an
//! error or a log line.

use serde::Deserialize;
use serde_json::{json, Value};
use toml_edit::{value, DocumentMut, Table};

use super::adjunct::truncate;
use super::params::Params;
use super::Ctx;
use crate::admin::delegation::{self, Kind, Refusal};
use crate::admin::edit::{self, EditError, Section};
use crate::admin::{self, ChangeError, Committed};
use crate::bus::Closed;
use crate::catalog::{Endpoint, Method};
use crate::config::Config;
use crate::directory::check_complexity;
use crate::gateway::Snapshot;
use crate::hub::SessionHandle;
use crate::rights::{Right, RightSet};
use crate::rpc::{Close, Code, RpcError};

/// What answers carry in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// Longest password the API accepts: longer ones could never log in.
const MAX_PASSWORD_BYTES: usize = 1024;

// ------------------------------------------------------------------ reads

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionFilter {
    user: Option<String>,
    endpoint: Option<String>,
}

pub async fn sessions_list(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let f: SessionFilter = params.decode()?;
    let endpoint = match f.endpoint.as_deref() {
        None => None,
        Some("adjunct") => Some(Endpoint::Adjunct),
        Some("portal") => Some(Endpoint::Portal),
        Some(_) => {
            return Err(RpcError::invalid_params(
                "params.endpoint must be \"adjunct\" or \"portal\" (or be left out)",
            ))
        }
    };
    let node = ctx.gw.bus.node();
    let mut list: Vec<Value> = ctx.gw.hub.list().iter().map(|s| s.describe(node)).collect();
    // The other nodes' sessions (none on a single node).
    list.extend(ctx.gw.bus.sessions().await);
    list.retain(|s| {
        endpoint.is_none_or(|e| s["endpoint"] == e.name())
            && f.user.as_deref().is_none_or(|u| s["user"] == u)
    });
    list.sort_by_key(|s| {
        (
            s["connectedAt"].as_u64().unwrap_or(0),
            s["sessionId"].as_str().unwrap_or_default().to_owned(),
        )
    });
    // What the caller could not close, with the reason (the admin page
    // disables those controls); judged from the rights each session holds.
    let actor = ctx.session.rights().unwrap_or_default();
    let may_close = gate_refusal(actor, Method::AdminSessionsClose);
    for s in &mut list {
        let held: RightSet = s["rights"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|r| r.as_str().and_then(Right::from_name))
                    .collect()
            })
            .unwrap_or_default();
        let close = may_close.clone().or_else(|| {
            delegation::may_manage(actor, held, held)
                .err()
                .map(|right| {
                    Refusal::Lacks {
                        right,
                        kind: Kind::Session,
                        name: s["sessionId"].as_str().unwrap_or_default().to_owned(),
                    }
                    .to_string()
                })
        });
        if let Some(close) = close {
            s["refused"] = json!({ "close": close });
        }
    }
    Ok(json!({ "sessions": list }))
}

/// The config as the file says it, as JSON, with every secret redacted.
pub fn config_get(snap: &Snapshot) -> Result<Value, RpcError> {
    let c = &snap.config;
    let table: toml::Table =
        toml::from_str(c.source.text()).map_err(|_| RpcError::new(Code::Internal))?;
    let mut config = serde_json::to_value(table).map_err(|_| RpcError::new(Code::Internal))?;
    redact(&mut config);
    Ok(json!({ "revision": c.source.revision(), "config": config }))
}

/// Keys whose values are secrets: passwords (hashes), TURN secrets, and
/// anything else that says secret, password or token, except the keys that
/// name a file or a complexity level.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    (k.contains("password") || k.contains("secret") || k.contains("token"))
        && !k.ends_with("_file")
        && !k.ends_with("_secs")
        && k != "password_complexity"
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(k) {
                    *v = match v {
                        Value::Array(items) => Value::Array(vec![json!(REDACTED); items.len()]),
                        _ => json!(REDACTED),
                    };
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

pub fn users_list(ctx: &Ctx<'_>, snap: &Snapshot) -> Result<Value, RpcError> {
    let c = &snap.config;
    let actor = actor(ctx);
    let users: Vec<Value> = c
        .users
        .iter()
        .map(|u| {
            let mut v = json!({
                "name": u.name,
                "groups": u.groups,
                "rights": c.rights_of(u).names(),
                "enabled": u.enabled,
                "administrator": c.is_administrator(&u.name),
            });
            if let Some(cert) = &u.client_cert {
                v["clientCert"] = json!(cert);
            }
            let p = delegation::preview_account(actor, c, u);
            let mut refused = serde_json::Map::new();
            let gated = [
                ("delete", Method::AdminUsersDelete, p.delete),
                ("enabled", Method::AdminUsersUpdate, p.enabled),
                ("password", Method::AdminUsersSetPassword, p.password),
            ];
            for (key, method, refusal) in gated {
                if let Some(why) =
                    gate_refusal(actor.rights, method).or(refusal.map(|r| r.to_string()))
                {
                    refused.insert(key.into(), json!(why));
                }
            }
            let groups: serde_json::Map<String, Value> =
                match gate_refusal(actor.rights, Method::AdminUsersUpdate) {
                    Some(why) => c
                        .groups
                        .iter()
                        .map(|g| (g.name.clone(), json!(why)))
                        .collect(),
                    None => p
                        .groups
                        .into_iter()
                        .map(|(g, r)| (g, json!(r.to_string())))
                        .collect(),
                };
            if !groups.is_empty() {
                refused.insert("groups".into(), Value::Object(groups));
            }
            if !refused.is_empty() {
                v["refused"] = Value::Object(refused);
            }
            v
        })
        .collect();
    Ok(json!({
        "revision": c.source.revision(),
        "passwordComplexity": complexity_name(c.security.password_complexity),
        "users": users,
    }))
}

pub fn groups_list(ctx: &Ctx<'_>, snap: &Snapshot) -> Result<Value, RpcError> {
    let c = &snap.config;
    let actor = actor(ctx);
    let groups: Vec<Value> = c
        .groups
        .iter()
        .map(|g| {
            let members: Vec<&str> = c
                .users
                .iter()
                .filter(|u| u.groups.contains(&g.name))
                .map(|u| u.name.as_str())
                .collect();
            let p = delegation::preview_group(actor, c, g);
            let mut refused = serde_json::Map::new();
            let update = gate_refusal(actor.rights, Method::AdminGroupsUpdate);
            let rights: serde_json::Map<String, Value> = match update {
                Some(why) => Right::all()
                    .map(|r| (r.name().to_owned(), json!(why)))
                    .collect(),
                None => p
                    .rights
                    .into_iter()
                    .map(|(r, why)| (r.name().to_owned(), json!(cell_reason(r, &g.name, &why))))
                    .collect(),
            };
            if !rights.is_empty() {
                refused.insert("rights".into(), Value::Object(rights));
            }
            let delete = gate_refusal(actor.rights, Method::AdminGroupsDelete).or_else(|| {
                if members.is_empty() {
                    p.delete.map(|r| r.to_string())
                } else {
                    Some(in_use(&g.name, &members))
                }
            });
            let assign = gate_refusal(actor.rights, Method::AdminUsersUpdate)
                .or(p.assign.map(|r| r.to_string()));
            for (key, why) in [("delete", delete), ("assign", assign)] {
                if let Some(why) = why {
                    refused.insert(key.into(), json!(why));
                }
            }
            let mut v = json!({ "name": g.name, "rights": g.rights.names(), "members": members });
            if !refused.is_empty() {
                v["refused"] = Value::Object(refused);
            }
            v
        })
        .collect();
    Ok(json!({ "revision": c.source.revision(), "groups": groups }))
}

/// The session as the delegation rules see it.
fn actor<'a>(ctx: &'a Ctx<'_>) -> delegation::Actor<'a> {
    delegation::Actor {
        name: ctx.session.user().map_or("", |u| &**u),
        rights: ctx.session.rights().unwrap_or_default(),
    }
}

/// Why the gate would refuse `method` to `rights`, in words (`None`: it would not).
fn gate_refusal(rights: crate::rights::RightSet, method: Method) -> Option<String> {
    let (name, need) = crate::catalog::method_entry(method);
    if crate::catalog::satisfies(rights, need) {
        return None;
    }
    let right = crate::catalog::named_right(need).map_or("a right", Right::name);
    Some(format!("{name} needs \"{right}\", which you do not hold"))
}

/// A matrix cell's reason: granting or revoking a right one lacks is said
/// the same way in every group, so a page can show it once per right.
fn cell_reason(right: Right, group: &str, why: &Refusal) -> String {
    match why {
        Refusal::Lacks {
            right: r,
            kind: Kind::Group,
            name,
        } if *r == right && name == group => {
            format!(
                "you do not hold \"{}\", so you cannot grant or revoke it",
                right.name()
            )
        }
        _ => why.to_string(),
    }
}

/// The refusal of deleting a group that is still assigned.
fn in_use(group: &str, members: &[&str]) -> String {
    format!(
        "rights group {group:?} is still assigned to {}; take it from them first",
        members.join(", ")
    )
}

fn complexity_name(c: crate::directory::Complexity) -> &'static str {
    match c {
        crate::directory::Complexity::Low => "low",
        crate::directory::Complexity::Medium => "medium",
        crate::directory::Complexity::High => "high",
    }
}

/// `admin.status`: what the Overview shows, from the live hub, router,
/// metrics and snapshot.
pub fn status(ctx: &Ctx<'_>, snap: &Snapshot) -> Result<Value, RpcError> {
    let gw = ctx.gw;
    let mut sessions = serde_json::Map::new();
    for e in [Endpoint::Adjunct, Endpoint::Portal] {
        sessions.insert(e.name().into(), json!(0));
    }
    for s in gw.hub.list() {
        if let Some(n) = sessions.get_mut(s.endpoint.name()) {
            *n = json!(n.as_u64().unwrap_or(0) + 1);
        }
    }
    let providers: serde_json::Map<String, Value> = gw
        .router
        .providers_by_namespace()
        .into_iter()
        .map(|(ns, n)| (ns, json!(n)))
        .collect();
    let (succeeded, failed) = gw.metrics.logins_last_minute();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node": node_name(),
        "uptimeSecs": gw.started.elapsed().as_secs(),
        "sessions": sessions,
        "providers": providers,
        "logins": {
            "succeeded": succeeded,
            "failed": failed,
            "windowSecs": crate::metrics::window::SECS,
        },
        "revision": snap.config.source.revision(),
    }))
}

/// This host's name, read once (Linux; elsewhere `$HOSTNAME`, else "localhost").
fn node_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    limit: Option<u64>,
}

/// Lines answered when `limit` is left out.
const AUDIT_DEFAULT: u64 = 100;

/// `admin.audit.recent`: the newest audit lines from the in-memory ring,
/// newest first, each the JSON object the audit file has.
pub fn audit_recent(params: Params<'_>) -> Result<Value, RpcError> {
    let p: AuditParams = params.decode()?;
    let max = crate::audit::RING_LINES as u64;
    let limit = p.limit.unwrap_or(AUDIT_DEFAULT);
    if limit == 0 || limit > max {
        return Err(RpcError::invalid_params(format!(
            "params.limit must be 1 to {max} (or be left out: {AUDIT_DEFAULT})"
        )));
    }
    let lines: Vec<Value> = crate::audit::global()
        .recent(limit as usize)
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Ok(json!({ "lines": lines, "capacity": max }))
}

// --------------------------------------------------------- session control

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseParams {
    #[serde(rename = "sessionId")]
    session_id: String,
    reason: Option<String>,
}

/// Closes a session with 1008 `closed by administrator`. Closing reaches
/// into the session's rights, so the actor must hold all of them.
pub async fn sessions_close(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: CloseParams = params.decode()?;
    let no_such =
        || RpcError::invalid_params(format!("no live session {:?}", truncate(&p.session_id)));
    let id = u64::from_str_radix(&p.session_id, 16)
        .ok()
        .filter(|_| p.session_id.len() == 16)
        .ok_or_else(no_such)?;
    let (method, _) = crate::catalog::method_entry(Method::AdminSessionsClose);
    let actor = ctx.session.rights().unwrap_or_default();
    let reason: Option<String> = p.reason.as_ref().map(|r| r.chars().take(256).collect());
    let s = ctx.session;
    let Some(target) = ctx.gw.hub.get(id) else {
        // Another node's session: that node checks the rights and closes it.
        return match ctx.gw.bus.close(id, actor).await {
            None => Err(no_such()),
            Some(Closed::Refused(right)) => {
                let refusal = Refusal::Lacks {
                    right,
                    kind: Kind::Session,
                    name: p.session_id.clone(),
                };
                admin::audit_refused(s, method, &refusal);
                Err(refused(&refusal))
            }
            Some(Closed::Closed) => {
                audit_closed(s, &p.session_id, None, reason.as_deref());
                Ok(json!({ "closed": p.session_id }))
            }
        };
    };
    let held = target.rights().unwrap_or_default();
    if let Err(right) = delegation::may_manage(actor, held, held) {
        let refusal = Refusal::Lacks {
            right,
            kind: Kind::Session,
            name: target.id_string(),
        };
        admin::audit_refused(ctx.session, method, &refusal);
        return Err(refused(&refusal));
    }
    target
        .outbound
        .close(Close::Policy, "closed by administrator");
    let user = target.user().map(|u| &**u);
    audit_closed(
        s,
        &target.id_string(),
        Some(user.unwrap_or("")),
        reason.as_deref(),
    );
    Ok(json!({ "closed": target.id_string() }))
}

/// The audit line of a session an administrator closed (on this node or,
/// without its user known here, on another).
fn audit_closed(s: &SessionHandle, closed: &str, closed_user: Option<&str>, reason: Option<&str>) {
    tracing::warn!(
        target: "audit",
        event = "admin_session_closed",
        user = s.user().map_or("", |u| &**u),
        peer = %s.peer,
        endpoint = s.endpoint.name(),
        session = %s.id_string(),
        closed_session = closed,
        closed_user,
        reason,
        "session closed by an administrator"
    );
}

/// The SIGHUP path, for operators without a shell on the gateway host.
pub async fn config_reload(ctx: &Ctx<'_>) -> Result<Value, RpcError> {
    let s = ctx.session;
    let user = s.user().map_or("", |u| &**u);
    let gw = ctx.gw.clone();
    let turn = ctx.gw.writes.enter().await.ok_or_else(writer_busy)?;
    // Off the async workers: it reads files and may wait for a change's fsync.
    let reloaded = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        gw.reload()
    })
    .await
    .map_err(|_| RpcError::new(Code::Internal))?;
    match reloaded {
        Ok(report) => {
            // Like SIGHUP: the audit file is reopened (external rotation).
            if let Err(e) = crate::audit::global().configure(&ctx.gw.snapshot().config.audit) {
                tracing::error!(error = %e, "[audit] file cannot be opened; audit lines go to the previous file");
            }
            tracing::info!(target: "audit", event = "reload", outcome = "ok", user, peer = %s.peer, session = %s.id_string(), revoked = report.revoked, "configuration reloaded through the Management API");
            let snap = ctx.gw.snapshot();
            Ok(json!({
                "revision": snap.config.source.revision(),
                "revoked": report.revoked,
                "listenChanged": report.listen_changed,
            }))
        }
        Err(e) => {
            tracing::error!(target: "audit", event = "reload", outcome = "refused", user, peer = %s.peer, session = %s.id_string(), error = %e, "configuration refused; the old one stays");
            Err(RpcError::with_message(
                Code::Internal,
                format!("the config file was refused; the old one stays: {e}"),
            ))
        }
    }
}

// ------------------------------------------------------------------ writes

/// Runs `edit` as one change (off the async workers: it writes and fsyncs)
/// and answers the new revision.
async fn write<T: Send + 'static>(
    ctx: &Ctx<'_>,
    method: Method,
    revision: String,
    edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<T, EditError> + Send + 'static,
) -> Result<Committed<T>, RpcError> {
    on_writer(ctx, method, revision, move |gw, req| {
        admin::change(gw, req, edit)
    })
    .await
}

/// Runs `step` on the one configuration writer (`Gateway::writes`: -32029
/// when too many wait), off the async workers: the config lock may be held
/// by another change's fsync.
async fn on_writer<T: Send + 'static>(
    ctx: &Ctx<'_>,
    method: Method,
    revision: String,
    step: impl FnOnce(
            &std::sync::Arc<crate::gateway::Gateway>,
            &admin::Request<'_>,
        ) -> Result<T, ChangeError>
        + Send
        + 'static,
) -> Result<T, RpcError> {
    let gw = ctx.gw.clone();
    let session = ctx.session.clone();
    let turn = ctx.gw.writes.enter().await.ok_or_else(writer_busy)?;
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        let req = admin::Request {
            session: &session,
            method,
            revision: &revision,
        };
        step(&gw, &req)
    })
    .await
    .map_err(|_| RpcError::new(Code::Internal))?
    .map_err(|e| change_error(e, method))
}

/// -32029 when too many writes (or new-password hashes) already wait.
fn writer_busy() -> RpcError {
    RpcError::with_message(
        Code::RateLimited,
        "too many configuration changes in progress; retry shortly",
    )
}

fn answer<T>(c: Committed<T>) -> Value {
    json!({ "revision": c.revision, "revoked": c.revoked })
}

fn change_error(e: ChangeError, method: Method) -> RpcError {
    match e {
        ChangeError::Stale { current, on_disk } => {
            let msg = if on_disk {
                "the config file was edited on disk and not reloaded: call admin.config.reload, then read again"
            } else {
                "the configuration changed since it was read: read it again"
            };
            RpcError::with_message(Code::StaleRevision, msg)
                .with_data(json!({ "revision": current }))
        }
        ChangeError::Invalid(why) => RpcError::invalid_params(why),
        ChangeError::Refused(r) => refused(&r),
        ChangeError::Gone => match crate::catalog::method_entry(method).1 {
            crate::catalog::Need::Right(r) => RpcError::forbidden(r),
            _ => RpcError::new(Code::Forbidden),
        },
        ChangeError::Unavailable => RpcError::new(Code::ClusterUnavailable),
        ChangeError::Io(e) => {
            tracing::error!(error = %e, "cannot read or write the config file");
            RpcError::with_message(
                Code::Internal,
                "cannot read or write the config file; nothing changed",
            )
        }
    }
}

/// -32003 with the rule that refused and, for rights, the one missing.
fn refused(r: &Refusal) -> RpcError {
    let data = match r {
        Refusal::Lacks { right, kind, name } => json!({
            "rule": "delegation",
            "right": right.name(),
            kind.name(): name,
        }),
        Refusal::Administrator(_) => json!({ "rule": "administrator" }),
    };
    RpcError::with_message(Code::Forbidden, r.to_string()).with_data(data)
}

/// Checks the complexity rule and hashes, off the async workers. A write
/// from a stale view is refused first: it would be refused after the hash
/// anyway, and a full-cost hash per stale retry is waste.
async fn new_password(
    ctx: &Ctx<'_>,
    snap: &Snapshot,
    revision: &str,
    user: &str,
    password: String,
) -> Result<String, RpcError> {
    let current = snap.config.source.revision();
    if revision != current {
        return Err(RpcError::with_message(
            Code::StaleRevision,
            "the configuration changed since it was read: read it again",
        )
        .with_data(json!({ "revision": current })));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(RpcError::invalid_params(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    check_complexity(
        &password,
        Some(user),
        snap.config.security.password_complexity,
    )
    .map_err(RpcError::invalid_params)?;
    // The same bounded workers as login verification: a burst of writes
    // waits or is refused, never hashes (19 MiB each) all at once.
    ctx.gw
        .verifier
        .hash(password)
        .await
        .map_err(|_| writer_busy())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NetworkParams {
    revision: String,
    stun_urls: Option<Vec<String>>,
    turn_urls: Option<Vec<String>>,
}

pub async fn network_set(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: NetworkParams = params.decode()?;
    if p.stun_urls.is_none() && p.turn_urls.is_none() {
        return Err(RpcError::invalid_params(
            "give params.stun_urls, params.turn_urls or both",
        ));
    }
    let (stun, turn) = (p.stun_urls, p.turn_urls);
    let done = write(ctx, Method::AdminNetworkSet, p.revision, move |doc, _| {
        if let Some(urls) = &stun {
            edit::set_topology(doc, "stun_urls", urls)?;
        }
        if let Some(urls) = &turn {
            edit::set_topology(doc, "turn_urls", urls)?;
        }
        Ok((stun, turn))
    })
    .await?;
    // URLs are not secrets: the audit trail says what the topology became.
    let (stun, turn) = &done.value;
    let (stun, turn) = (
        stun.as_ref().map(|u| u.join(", ")),
        turn.as_ref().map(|u| u.join(", ")),
    );
    tracing::info!(target: "audit", event = "admin_network", user = ctx.session.user().map_or("", |u| &**u), session = %ctx.session.id_string(), stun_urls = stun.as_deref(), turn_urls = turn.as_deref(), revision = %done.revision, "network topology set");
    Ok(answer(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateUser {
    revision: String,
    name: String,
    password: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
    enabled: Option<bool>,
}

pub async fn users_create(
    ctx: &Ctx<'_>,
    snap: &Snapshot,
    params: Params<'_>,
) -> Result<Value, RpcError> {
    let p: CreateUser = params.decode()?;
    if !crate::config::valid_user_name(&p.name) {
        return Err(RpcError::invalid_params(
            "params.name must be 1-64 printable characters without ':' or spaces at the ends",
        ));
    }
    let hash = new_password(ctx, snap, &p.revision, &p.name, p.password).await?;
    let done = write(ctx, Method::AdminUsersCreate, p.revision, move |doc, _| {
        let mut t = Table::new();
        t.insert("password", value(hash));
        t.insert("groups", edit::strings(p.groups.unwrap_or_default()));
        if let Some(enabled) = p.enabled {
            t.insert("enabled", value(enabled));
        }
        edit::append(doc, Section::Users, &p.name, t)
    })
    .await?;
    Ok(answer(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateUser {
    revision: String,
    name: String,
    groups: Option<Vec<String>>,
    enabled: Option<bool>,
}

pub async fn users_update(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: UpdateUser = params.decode()?;
    if p.groups.is_none() && p.enabled.is_none() {
        return Err(RpcError::invalid_params(
            "give params.groups, params.enabled or both",
        ));
    }
    let done = write(ctx, Method::AdminUsersUpdate, p.revision, move |doc, _| {
        let t = edit::find(doc, Section::Users, &p.name)?;
        if let Some(groups) = &p.groups {
            t.insert("groups", edit::strings(groups));
        }
        if let Some(enabled) = p.enabled {
            t.insert("enabled", value(enabled));
            if !enabled {
                // Tokens issued so far stay void after a later re-enable.
                let generation = t
                    .get("token_generation")
                    .and_then(|v| v.as_integer())
                    .unwrap_or(0);
                t.insert("token_generation", value(generation.saturating_add(1)));
            }
        }
        Ok(())
    })
    .await?;
    Ok(answer(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Named {
    revision: String,
    name: String,
}

pub async fn users_delete(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Named = params.decode()?;
    let done = write(
        ctx,
        Method::AdminUsersDelete,
        p.revision,
        move |doc, config| {
            if config
                .turn
                .static_user
                .as_ref()
                .is_some_and(|(u, _)| *u == p.name)
            {
                return Err(format!(
                    "{:?} is the [turn] service_user; change [turn] first",
                    p.name
                ));
            }
            edit::remove(doc, Section::Users, &p.name)
        },
    )
    .await?;
    Ok(answer(done))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetPassword {
    revision: String,
    name: String,
    password: String,
}

pub async fn users_set_password(
    ctx: &Ctx<'_>,
    snap: &Snapshot,
    params: Params<'_>,
) -> Result<Value, RpcError> {
    let p: SetPassword = params.decode()?;
    existing_user(snap, &p.name)?;
    let hash = new_password(ctx, snap, &p.revision, &p.name, p.password).await?;
    let done = write(
        ctx,
        Method::AdminUsersSetPassword,
        p.revision,
        move |doc, _| {
            edit::find(doc, Section::Users, &p.name)?.insert("password", value(hash));
            Ok(())
        },
    )
    .await?;
    Ok(answer(done))
}

/// `-32602` unless `name` is a service user in `snap`.
fn existing_user(snap: &Snapshot, name: &str) -> Result<(), RpcError> {
    if snap.config.users.iter().any(|u| u.name == name) {
        return Ok(());
    }
    Err(RpcError::invalid_params(format!(
        "no service user named {:?}",
        truncate(name)
    )))
}

/// Clears the lockout of a user (every address) and its login delay. Writes
/// nothing: the answer carries the unchanged revision.
pub async fn users_unlock(
    ctx: &Ctx<'_>,
    snap: &Snapshot,
    params: Params<'_>,
) -> Result<Value, RpcError> {
    let p: Named = params.decode()?;
    existing_user(snap, &p.name)?;
    let name = p.name;
    let done = on_writer(ctx, Method::AdminUsersUnlock, p.revision, move |gw, req| {
        admin::unlock(gw, req, &name)
    })
    .await?;
    Ok(json!({ "revision": done.revision, "revoked": 0, "unlocked": done.cleared }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupParams {
    revision: String,
    name: String,
    rights: Vec<String>,
}

/// Right names must be exact; the first unknown one is named.
fn known_rights(rights: &[String]) -> Result<(), RpcError> {
    match rights.iter().find(|r| Right::from_name(r).is_none()) {
        Some(r) => Err(RpcError::invalid_params(format!(
            "unknown service right {:?}",
            truncate(r)
        ))),
        None => Ok(()),
    }
}

pub async fn groups_create(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: GroupParams = params.decode()?;
    known_rights(&p.rights)?;
    if p.name.trim().is_empty() || p.name.len() > 64 || p.name.chars().any(char::is_control) {
        return Err(RpcError::invalid_params(
            "params.name must be 1-64 printable characters",
        ));
    }
    let done = write(ctx, Method::AdminGroupsCreate, p.revision, move |doc, _| {
        let mut t = Table::new();
        t.insert("rights", edit::strings(&p.rights));
        edit::append(doc, Section::Groups, &p.name, t)
    })
    .await?;
    Ok(answer(done))
}

pub async fn groups_update(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: GroupParams = params.decode()?;
    known_rights(&p.rights)?;
    let done = write(ctx, Method::AdminGroupsUpdate, p.revision, move |doc, _| {
        edit::find(doc, Section::Groups, &p.name)?.insert("rights", edit::strings(&p.rights));
        Ok(())
    })
    .await?;
    Ok(answer(done))
}

pub async fn groups_delete(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Named = params.decode()?;
    let done = write(
        ctx,
        Method::AdminGroupsDelete,
        p.revision,
        move |doc, config| {
            let members: Vec<&str> = config
                .users
                .iter()
                .filter(|u| u.groups.contains(&p.name))
                .map(|u| u.name.as_str())
                .collect();
            if !members.is_empty() {
                return Err(in_use(&p.name, &members));
            }
            edit::remove(doc, Section::Groups, &p.name)
        },
    )
    .await?;
    Ok(answer(done))
}

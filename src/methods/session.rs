//! session.login and session.info.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::catalog::Endpoint;
use crate::dispatch::Ctx;
use crate::gateway::Snapshot;
use crate::rights::Right;
use crate::rpc::{self, Close, Code, RpcError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    user: String,
    password: String,
}

pub async fn login(ctx: &mut Ctx<'_>, params: Option<&RawValue>) -> Result<Value, RpcError> {
    let p: LoginParams = rpc::params(params)?;
    let s = ctx.session;
    // Hold an owned snapshot: verification waits on the worker pool.
    let snap = ctx.gw.snapshot_owned();
    let name = match ctx
        .gw
        .verifier
        .login(&snap.directory, &p.user, &p.password)
        .await
    {
        Ok(name) => name,
        Err(failure) => {
            crate::session::audit_login_failed(&p.user, s.peer, s.endpoint, failure.reason());
            return Err(RpcError::new(Code::LoginFailed));
        }
    };
    // A reload may have landed during the password check: use the current view.
    let snap = ctx.gw.snapshot_owned();
    let Some(rights) = snap.directory.live_rights(&name) else {
        crate::session::audit_login_failed(&p.user, s.peer, s.endpoint, "disabled");
        return Err(RpcError::new(Code::LoginFailed));
    };
    if s.endpoint == Endpoint::Adjunct && !rights.contains(Right::AdjunctServerConnection) {
        crate::session::audit_login_failed(
            &p.user,
            s.peer,
            s.endpoint,
            "no Adjunct Server Connection",
        );
        ctx.close = Some((Close::Policy, "Adjunct Server Connection right required"));
        return Err(RpcError::forbidden(Right::AdjunctServerConnection));
    }
    if !s.authenticate(name.clone(), rights) {
        // A concurrent login won the race; the gate normally stops this.
        return Err(RpcError::with_message(
            Code::InvalidRequest,
            "already authenticated",
        ));
    }
    tracing::info!(target: "audit", event = "login", outcome = "ok", user = ?&*name, peer = %s.peer, endpoint = s.endpoint.name(), method = "password", "login succeeded");
    Ok(identity(&snap, ctx, false))
}

pub fn info(ctx: &mut Ctx<'_>, snap: &Snapshot) -> Result<Value, RpcError> {
    Ok(identity(snap, ctx, true))
}

fn identity(snap: &Snapshot, ctx: &Ctx<'_>, with_endpoint: bool) -> Value {
    let s = ctx.session;
    let user = s.user().map_or("", |u| &**u);
    let groups = snap
        .directory
        .get(user)
        .map(|a| a.groups.clone())
        .unwrap_or_default();
    let rights = s.rights().unwrap_or_default().names();
    let mut v = json!({
        "sessionId": s.id_string(),
        "user": user,
        "groups": groups,
        "rights": rights,
    });
    if with_endpoint {
        v["endpoint"] = json!(s.endpoint.name());
    }
    v
}

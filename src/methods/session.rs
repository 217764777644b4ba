//! session.login, session.resume, session.token and session.info.

use serde::Deserialize;
use serde_json::{json, Value};

use super::params::Params;
use super::Ctx;
use crate::auth::{self, Attempt, Credential, Refused};
use crate::gateway::Snapshot;
use crate::rights::Right;
use crate::rpc::{Close, Code, RpcError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginParams {
    user: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResumeParams {
    token: String,
}

/// session.login {user, password}
pub async fn login(ctx: &mut Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: LoginParams = params.decode()?;
    let cred = Credential::Password {
        user: &p.user,
        password: &p.password,
    };
    establish(ctx, cred).await
}

/// session.resume {token}: a resume token instead of the password.
pub async fn resume(ctx: &mut Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: ResumeParams = params.decode()?;
    establish(ctx, Credential::Token(&p.token)).await
}

/// session.token: a fresh resume token for an authenticated session (one
/// that came in by Basic, Bearer or certificate has not seen one).
pub fn token(ctx: &mut Ctx<'_>) -> Result<Value, RpcError> {
    // None: the password changed (or the user was disabled) since this
    // session's credential was checked; it is being closed.
    let (token, expires) = auth::resume_token(ctx.gw, ctx.session).ok_or_else(|| {
        RpcError::with_message(Code::LoginFailed, "credentials changed; log in again")
    })?;
    Ok(json!({ "resumeToken": token, "resumeExpires": expires }))
}

/// Authenticates the session with `cred` and answers its identity and a
/// resume token.
async fn establish(ctx: &mut Ctx<'_>, cred: Credential<'_>) -> Result<Value, RpcError> {
    let s = ctx.session;
    let at = Attempt {
        peer: s.peer,
        endpoint: s.endpoint,
    };
    let granted = match auth::authenticate(ctx.gw, cred, at).await {
        Ok(g) => g,
        Err(refused) => return Err(refusal(ctx, refused)),
    };
    if let Err(refused) = auth::bind(ctx.gw, s, &granted) {
        return Err(refusal(ctx, refused));
    }
    let snap = ctx.gw.snapshot();
    let mut v = identity(&snap, ctx, false);
    if let Some((token, expires)) = auth::resume_token(ctx.gw, s) {
        v["resumeToken"] = json!(token);
        v["resumeExpires"] = json!(expires);
    }
    Ok(v)
}

/// The JSON-RPC answer to a refused authentication (docs/PROTOCOL.md).
fn refusal(ctx: &mut Ctx<'_>, refused: Refused) -> RpcError {
    match refused {
        Refused::Failed => RpcError::new(Code::LoginFailed),
        Refused::Throttled => RpcError::with_message(
            Code::RateLimited,
            "too many failed logins from this address; try later",
        ),
        Refused::InProgress => RpcError::with_message(
            Code::RateLimited,
            "too many logins in progress from this address; retry shortly",
        ),
        Refused::Busy => {
            RpcError::with_message(Code::RateLimited, "login queue full; retry shortly")
        }
        Refused::UserThrottled => RpcError::with_message(
            Code::RateLimited,
            "too many logins waiting for this user name; retry later",
        ),
        Refused::NoConnectionRight => {
            ctx.close = Some((Close::Policy, "Adjunct Server Connection right required"));
            RpcError::forbidden(Right::AdjunctServerConnection)
        }
        Refused::TooManySessions => RpcError::new(Code::TooManySessions),
    }
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
        v["node"] = json!(ctx.gw.bus.node());
    }
    v
}

//! The gateway's own method handlers, one file per family. A handler runs
//! only after the gate has let its request through.

mod session;
mod turn;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::catalog::Method;
use crate::dispatch::Ctx;
use crate::gateway::Snapshot;
use crate::rpc::{Code, Request, RpcError};

/// A handler's answer.
pub enum Reply {
    Value(Value),
    Error(RpcError),
    /// Answered later through the session's outbound queue (routed requests).
    Later,
}

impl From<Result<Value, RpcError>> for Reply {
    fn from(r: Result<Value, RpcError>) -> Reply {
        match r {
            Ok(v) => Reply::Value(v),
            Err(e) => Reply::Error(e),
        }
    }
}

pub async fn call(
    ctx: &mut Ctx<'_>,
    snap: &Snapshot,
    method: Method,
    params: Option<&RawValue>,
) -> Reply {
    match method {
        Method::SessionLogin => session::login(ctx, params).await.into(),
        Method::SessionInfo => session::info(ctx, snap).into(),
        Method::SessionPing => Reply::Value(Value::Object(Default::default())),
        Method::TurnCredentials => turn::credentials(ctx, snap, params).into(),
        _ => Reply::Error(RpcError::new(Code::MethodNotFound)),
    }
}

/// Sends a request to a provider of `ns`.
pub async fn route(_ctx: &mut Ctx<'_>, _snap: &Snapshot, _ns: &str, _req: &Request<'_>) -> Reply {
    Reply::Error(RpcError::new(Code::NoProvider))
}

//! turn.credentials: TURN details for WebRTC, for holders of TURN Server Connection.

use serde::Deserialize;
use serde_json::Value;

use super::params::Params;
use super::Ctx;
use crate::gateway::Snapshot;
use crate::rpc::RpcError;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TtlParams {
    ttl: Option<u64>,
}

pub fn credentials(ctx: &Ctx<'_>, snap: &Snapshot, params: Params<'_>) -> Result<Value, RpcError> {
    let p: TtlParams = params.decode()?;
    let account = ctx.session.user().map_or("", |u| &**u);
    let c = &snap.config;
    tracing::info!(target: "audit", event = "turn_credentials", user = account, "TURN credentials issued");
    Ok(crate::turn::credentials(
        &c.turn,
        &c.topology,
        account,
        p.ttl,
        crate::util::unix_now(),
    ))
}

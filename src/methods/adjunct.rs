//! adjunct.register / unregister / publish: application servers as providers.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::params::Params;
use super::Ctx;
use crate::broker::{self, Delivery};
use crate::catalog::{self, Need};
use crate::gateway::Snapshot;
use crate::rpc::RpcError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Namespaces {
    namespaces: Vec<String>,
}

/// The need to register for a routed namespace, which the session itself
/// must meet: a right that opens some operation of it. (What it is then
/// sent is judged per request: only what its rights open.)
fn namespace_need(ctx: &Ctx<'_>, snap: &Snapshot, ns: &str) -> Result<(), RpcError> {
    let need = in_catalog(snap, ns)?;
    require(ctx, need)
}

/// `ns`'s registration need, or -32602 when it is not a routed namespace.
fn in_catalog(snap: &Snapshot, ns: &str) -> Result<Need, RpcError> {
    snap.config.catalog.provider_need(ns).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "namespace {:?} is not in the catalog",
            truncate(ns)
        ))
    })
}

/// -32003 naming the missing right unless the session meets `need`.
fn require(ctx: &Ctx<'_>, need: Need) -> Result<(), RpcError> {
    let rights = ctx.session.rights().unwrap_or_default();
    if !catalog::satisfies(rights, need) {
        return Err(catalog::Denied::Missing(need).to_error());
    }
    Ok(())
}

pub fn register(ctx: &Ctx<'_>, snap: &Snapshot, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Namespaces = params.decode()?;
    if p.namespaces.is_empty() {
        return Err(RpcError::invalid_params(
            "params.namespaces must not be empty",
        ));
    }
    for ns in &p.namespaces {
        namespace_need(ctx, snap, ns)?;
    }
    for ns in &p.namespaces {
        ctx.gw.router.register(ctx.session, ns);
    }
    tracing::info!(namespaces = p.namespaces.join(", "), "provider registered");
    Ok(json!({ "namespaces": ctx.gw.router.served_by(ctx.session.id) }))
}

pub fn unregister(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Namespaces = params.decode()?;
    for ns in &p.namespaces {
        ctx.gw.router.unregister(ctx.session.id, ns);
    }
    Ok(json!({ "namespaces": ctx.gw.router.served_by(ctx.session.id) }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Publish<'a> {
    topic: String,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

pub fn publish(ctx: &Ctx<'_>, snap: &Snapshot, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Publish = params.decode()?;
    if !broker::valid_topic(&p.topic, false) {
        return Err(RpcError::invalid_params(format!(
            "invalid topic {:?}",
            truncate(&p.topic)
        )));
    }
    in_catalog(snap, broker::namespace(&p.topic))?;
    let uncovered = || {
        RpcError::invalid_params(format!(
            "no catalog rule covers topic {:?}",
            truncate(&p.topic)
        ))
    };
    // An event speaks for what it concerns: only a right that may update
    // that (not merely some right of the namespace) may announce it.
    let may_publish = snap
        .config
        .catalog
        .publish_need(&p.topic)
        .ok_or_else(uncovered)?;
    require(ctx, may_publish).map_err(|e| e.with_topic(&p.topic))?;
    // Delivered to those who read what the topic concerns.
    let need = snap
        .config
        .catalog
        .topic_need(&p.topic)
        .ok_or_else(uncovered)?;
    let null = RawValue::NULL;
    let limits = &snap.config.limits;
    let fanout = ctx.gw.broker.publish(
        &p.topic,
        p.data.unwrap_or(null),
        &Delivery {
            need,
            queue_cap: limits.outbound_queue,
            queue_bytes: limits.queue_bytes,
            stall: std::time::Duration::from_secs(limits.stalled_close_secs),
        },
    );
    ctx.gw.metrics.events(fanout.delivered, fanout.dropped);
    Ok(json!({ "delivered": fanout.delivered }))
}

/// Caps what of a peer's string goes into an error message.
pub fn truncate(s: &str) -> String {
    crate::util::prefix_chars(s, 64).to_owned()
}

//! events.subscribe / unsubscribe. Each topic is gated here by the catalog's
//! rule for reading what it concerns (all or nothing), and each event again
//! at delivery by the broker.

use serde::Deserialize;
use serde_json::{json, Value};

use super::adjunct::truncate;
use super::params::Params;
use super::Ctx;
use crate::broker;
use crate::catalog::{self, Denied};
use crate::gateway::Snapshot;
use crate::rpc::RpcError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Topics {
    topics: Vec<String>,
}

pub fn subscribe(ctx: &Ctx<'_>, snap: &Snapshot, params: Params<'_>) -> Result<Value, RpcError> {
    let mut p: Topics = params.decode()?;
    let mut unique = std::collections::HashSet::new();
    p.topics.retain(|t| unique.insert(t.clone()));
    // More distinct topics than a session may hold can never fit: refused
    // before each is checked against the session's own.
    if p.topics.len() > snap.config.limits.max_subscriptions {
        return Err(too_many(snap));
    }
    let rights = ctx.session.rights().unwrap_or_default();
    for t in &p.topics {
        if !broker::valid_topic(t, true) {
            return Err(RpcError::invalid_params(format!(
                "invalid topic {:?}",
                truncate(t)
            )));
        }
        let ns = broker::namespace(t);
        if snap.config.catalog.provider_need(ns).is_none() {
            return Err(RpcError::invalid_params(format!(
                "topic namespace {:?} is not in the catalog",
                truncate(ns)
            )));
        }
        let Some(need) = snap.config.catalog.topic_need(t) else {
            return Err(RpcError::invalid_params(format!(
                "no catalog rule covers topic {:?}",
                truncate(t)
            )));
        };
        if !catalog::satisfies(rights, need) {
            if let Some(right) = catalog::named_right(need) {
                ctx.gw.metrics.forbidden(right);
            }
            return Err(Denied::Missing(need).to_error().with_topic(t));
        }
    }
    let mut mine = ctx.session.topics.lock();
    let new: Vec<&String> = p
        .topics
        .iter()
        .filter(|t| !mine.iter().any(|m| **m == ***t))
        .collect();
    if mine.len() + new.len() > snap.config.limits.max_subscriptions {
        return Err(too_many(snap));
    }
    for t in new {
        if ctx.gw.broker.subscribe(ctx.session, t) {
            mine.push(Box::from(t.as_str()));
        }
    }
    Ok(json!({ "subscribed": p.topics }))
}

fn too_many(snap: &Snapshot) -> RpcError {
    RpcError::invalid_params(format!(
        "at most {} subscriptions per session",
        snap.config.limits.max_subscriptions
    ))
}

pub fn unsubscribe(ctx: &Ctx<'_>, params: Params<'_>) -> Result<Value, RpcError> {
    let p: Topics = params.decode()?;
    // Only what the session holds reaches the broker, each once: a list of
    // topics it does not hold, or one topic many times, costs one pass over
    // the list and one over the session's own subscriptions.
    let asked: std::collections::HashSet<&str> = p.topics.iter().map(String::as_str).collect();
    let mut mine = ctx.session.topics.lock();
    mine.retain(|m| {
        let drop = asked.contains(&**m);
        if drop {
            ctx.gw.broker.unsubscribe(ctx.session.id, m);
        }
        !drop
    });
    Ok(json!({ "unsubscribed": p.topics }))
}

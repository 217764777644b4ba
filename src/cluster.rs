//! This node in a cluster: joining at start (the bus chosen by `[cluster]`)
//! and what the node does with what the bus brings from the other nodes —
//! the one [`Inbound`] handler.
//!
//! Everything that arrives goes through the paths local traffic takes:
//! events through the broker's fan-out (rights checked at delivery),
//! routed requests through the router, a new shared configuration through
//! `Gateway::install`. Must not talk NATS (that is `bus::nats`).

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::Value;

use crate::broker::Delivery;
use crate::bus::{self, shared, Bus, Closed, Inbound, Origin, Presence};
use crate::catalog::{Need, Target};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::outbound::Bound;
use crate::rights::RightSet;
use crate::rpc::Close;

/// Builds this node's gateway: alone when `[cluster] nats` is empty, else
/// joined to the cluster (the shared configuration then comes from NATS).
pub async fn join(config: Config) -> anyhow::Result<Arc<Gateway>> {
    if config.cluster.nats.is_empty() {
        return Gateway::new(config);
    }
    let path = config.path.clone();
    let (nats, config) = bus::nats::Nats::connect(&path, &config).await?;
    let bus: Arc<dyn Bus> = nats;
    let gw = Gateway::with_bus(config, bus.clone())?;
    gw.metrics.cluster_up(bus.up());
    bus.start(Arc::new(Node(
        Arc::downgrade(&gw),
        std::sync::atomic::AtomicU64::new(0),
    )));
    Ok(gw)
}

/// Whether `tail` (a JSON object's members and its closing brace, as nodes
/// send them) makes a JSON object: what reaches a client from another node
/// is JSON whatever that node sent.
fn well_formed(tail: &str) -> bool {
    let object = format!("{{{tail}");
    serde_json::from_str::<serde::de::IgnoredAny>(&object).is_ok()
}

/// The method of a routed request's `tail` (as in [`well_formed`]), or
/// `None` when the tail is not a JSON object with a string `method`.
fn method_of(tail: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Head {
        method: String,
    }
    let object = format!("{{{tail}");
    serde_json::from_str::<Head>(&object).ok().map(|h| h.method)
}

/// What a provider of `ns` here must hold to be sent `method`: the
/// method's own rule in this node's catalog. `None`: no routed method of
/// `ns` (no provider here may take it).
fn routed_need(gw: &Gateway, ns: &str, method: &str) -> Option<Need> {
    let entry = gw.snapshot().config.catalog.lookup(method)?;
    (entry.target == Target::Routed(ns)).then_some(entry.need)
}

/// The gateway as the bus sees it (weak: the bus must not keep it alive).
/// The gateway, and when a slow-consumer warning was last logged (Unix
/// seconds): NATS reports every dropped message, the log gets one line per
/// 10 s.
struct Node(Weak<Gateway>, std::sync::atomic::AtomicU64);

impl Node {
    fn gw(&self) -> Option<Arc<Gateway>> {
        self.0.upgrade()
    }
}

impl Inbound for Node {
    fn request(&self, ns: &str, from: Origin, body: &str) -> Result<(), &'static str> {
        let method = method_of(body).ok_or("malformed request")?;
        let gw = self.gw().ok_or("no provider")?;
        // Served here only by a provider that meets the method's own rule,
        // as on the caller's node.
        let need = routed_need(&gw, ns, &method).ok_or("no provider")?;
        let snap = gw.snapshot();
        let l = &snap.config.limits;
        gw.router.serve_remote(
            ns,
            need,
            from,
            body,
            Bound {
                messages: l.provider_queue,
                bytes: l.queue_bytes,
                stall: Duration::from_secs(l.stalled_close_secs),
            },
        )
    }

    fn notify(&self, ns: &str, body: &str) {
        let Some(method) = method_of(body) else {
            return;
        };
        let Some(gw) = self.gw() else { return };
        if let Some(need) = routed_need(&gw, ns, &method) {
            let l = &gw.snapshot().config.limits;
            gw.router.notify_remote(
                ns,
                need,
                body,
                Bound {
                    messages: l.outbound_queue,
                    bytes: l.queue_bytes,
                    stall: Duration::MAX,
                },
            );
        }
    }

    fn accepted(&self, gid: u64, outcome: Result<Arc<str>, String>) {
        if let Some(gw) = self.gw() {
            gw.router.accepted(gid, outcome);
        }
    }

    fn answer(&self, node: &str, gid: u64, fragment: &str) {
        if !well_formed(&format!("{fragment}}}")) {
            tracing::debug!(node, "malformed answer from another node dropped");
            return;
        }
        if let Some(gw) = self.gw() {
            gw.router.answer_remote(node, gid, fragment);
        }
    }

    fn node_gone(&self, node: &str) {
        if let Some(gw) = self.gw() {
            gw.router.node_gone(node);
        }
    }

    fn event(&self, topic: &str, data: &RawValue) {
        let Some(gw) = self.gw() else { return };
        let snap = gw.snapshot();
        // Whether the publisher might publish it was decided on its node;
        // who reads it, by this node's catalog, as for its own publishes.
        let Some(need) = snap.config.catalog.topic_need(topic) else {
            return;
        };
        let l = &snap.config.limits;
        let fanout = gw.broker.deliver(
            topic,
            data,
            &Delivery {
                need,
                queue_cap: l.outbound_queue,
                queue_bytes: l.queue_bytes,
                stall: Duration::from_secs(l.stalled_close_secs),
            },
        );
        gw.metrics.events(fanout.delivered, fanout.dropped);
    }

    fn sessions(&self) -> Vec<Value> {
        let Some(gw) = self.gw() else {
            return Vec::new();
        };
        let node = gw.bus.node();
        gw.hub.list().iter().map(|s| s.describe(node)).collect()
    }

    fn close(&self, id: u64, actor: RightSet) -> Option<Closed> {
        let gw = self.gw()?;
        let target = gw.hub.get(id)?;
        let held = target.rights().unwrap_or_default();
        if let Err(right) = crate::admin::delegation::may_manage(actor, held, held) {
            return Some(Closed::Refused(right));
        }
        target
            .outbound
            .close(Close::Policy, "closed by administrator");
        tracing::warn!(target: "audit", event = "admin_session_closed", closed_session = %target.id_string(), closed_user = target.user().map_or("", |u| &**u), "session closed by an administrator on another node");
        Some(Closed::Closed)
    }

    fn config(&self, shared_text: &str, revision: u64) {
        let Some(gw) = self.gw() else { return };
        let serial = gw.config_lock();
        let live = gw.snapshot_owned();
        let installed: u64 = live.config.source.revision().parse().unwrap_or(0);
        if revision <= installed {
            return;
        }
        let composed = shared::split(live.config.source.text())
            .map(|(local, _)| shared::compose(&local, shared_text));
        let parsed = composed
            .and_then(|text| Config::parse(gw.config_path(), &text).map_err(|e| e.to_string()));
        match parsed {
            Ok(mut config) => {
                config.source.set_revision(revision.to_string());
                let revoked = gw.install(&serial, config);
                tracing::info!(target: "audit", event = "reload", outcome = "ok", revision = %revision, revoked, "shared configuration installed from the cluster");
            }
            Err(e) => {
                gw.metrics.reload(false);
                tracing::error!(target: "audit", event = "reload", outcome = "refused", revision = %revision, error = %e, "shared configuration from the cluster refused; the old one stays");
            }
        }
    }

    fn login_failed(&self, name: Option<u64>, ip: IpAddr) {
        let Some(gw) = self.gw() else { return };
        // Every typed name counts, known or not (see `lockout`), as here.
        gw.lockout
            .failed_as(name, ip, Instant::now(), &gw.snapshot().config.security);
    }

    fn login_ok(&self, name: u64, ip: IpAddr) {
        if let Some(gw) = self.gw() {
            gw.lockout.succeeded_as(name, ip);
        }
    }

    fn unlocked(&self, user: &str) {
        if let Some(gw) = self.gw() {
            let cleared = gw
                .lockout
                .unlock(user, Instant::now(), &gw.snapshot().config.security);
            tracing::info!(user, cleared, "account lockout cleared on another node");
        }
    }

    fn presence(&self) -> Presence {
        let Some(gw) = self.gw() else {
            return Presence::default();
        };
        Presence {
            node: gw.bus.node().to_owned(),
            sessions: gw.hub.len(),
            revision: gw.snapshot().config.source.revision().to_owned(),
            users: heaviest_users(gw.hub.users(), PRESENCE_USERS_BYTES),
        }
    }

    fn dropped(&self, subscription: u64) {
        use std::sync::atomic::Ordering;
        if let Some(gw) = self.gw() {
            gw.metrics.cluster_dropped();
        }
        let now = crate::util::unix_now();
        let last = self.1.load(Ordering::Relaxed);
        if now >= last.saturating_add(10)
            && self
                .1
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(subscription, "this node reads NATS too slowly: messages for it are being dropped (adjunct_gateway_cluster_dropped_total counts them)");
        }
    }

    fn cluster_up(&self, up: bool) {
        if let Some(gw) = self.gw() {
            gw.metrics.cluster_up(up);
        }
    }
}

/// Room for the user counts in a heartbeat: well under NATS's smallest
/// usual message limit (1 MB), which a heartbeat must never exceed (a node
/// whose heartbeats fail is declared gone).
const PRESENCE_USERS_BYTES: usize = 256 * 1024;

/// The users with the most sessions, as many as fit in about `budget` bytes
/// of JSON: the ones the cluster-wide per-user limit is most likely to stop.
fn heaviest_users(
    mut users: Vec<(Arc<str>, usize)>,
    budget: usize,
) -> std::collections::HashMap<String, usize> {
    // A name, its quotes, colon, count and comma.
    let cost = |name: &str| name.len() + 24;
    if users.iter().map(|(u, _)| cost(u)).sum::<usize>() > budget {
        users.sort_unstable_by_key(|u| std::cmp::Reverse(u.1));
    }
    let mut left = budget;
    let mut out = std::collections::HashMap::new();
    for (user, n) in users {
        let Some(rest) = left.checked_sub(cost(&user)) else {
            break;
        };
        left = rest;
        out.insert(user.to_string(), n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_carries_the_heaviest_users_that_fit() {
        let users: Vec<(Arc<str>, usize)> = (0..1000)
            .map(|n| (Arc::from(format!("user-{n:04}").as_str()), n % 7 + 1))
            .collect();
        let all = heaviest_users(users.clone(), usize::MAX);
        assert_eq!(all.len(), 1000);
        let some = heaviest_users(users, 100 * 33);
        assert_eq!(some.len(), 100);
        assert!(some.values().all(|n| *n == 7), "the heaviest first");
        let json = serde_json::to_string(&some).unwrap();
        assert!(json.len() <= 100 * 33, "{}", json.len());
    }
}

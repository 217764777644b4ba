//! Events: who subscribed to which topic pattern, and fan-out — the one
//! place events are delivered.
//!
//! Topics are dot-separated (`cti.call.201`); a pattern may end in `.*`
//! (everything below). A publish is serialized once and the same bytes are
//! queued for every subscriber; rights are checked again at each delivery,
//! so a reload that takes a right away stops that session's events at once.
//! A full subscriber queue drops the event for that subscriber only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::bus::Bus;
use crate::catalog::{self, Need};
use crate::hub::SessionHandle;
use crate::outbound::{Bound, Guard};

/// Longest topic or pattern accepted: the bound of method names.
pub const MAX_TOPIC_LEN: usize = catalog::MAX_METHOD_LEN;

pub struct Broker {
    /// Per pattern, its subscribers by session id: a fan-out walks them in
    /// one dense array, and a subscribe or unsubscribe is one lookup, not a
    /// scan of every subscriber (100,000 sessions subscribing to one
    /// pattern would otherwise cost a quadratic number of comparisons).
    subscribers: DashMap<Box<str>, Subscribers>,
    /// Events to and from other nodes; told which patterns this node wants.
    bus: Arc<dyn Bus>,
}

/// Session id → session: ids are the gateway's own (sequential), so the
/// cheap hash is safe.
type Subscribers = IndexMap<u64, Arc<SessionHandle>, FxBuildHasher>;

/// Is `topic` well formed? A topic has the grammar of a method name
/// (`catalog::canonical`: lowercase segments, at least two); a pattern
/// (when `pattern` is true) may instead be a prefix of one or more such
/// segments followed by `.*`.
pub fn valid_topic(topic: &str, pattern: bool) -> bool {
    if topic.len() > MAX_TOPIC_LEN {
        return false;
    }
    match topic.strip_suffix(".*") {
        Some(prefix) if pattern => prefix.split('.').all(catalog::valid_segment),
        _ => catalog::canonical(topic),
    }
}

/// The namespace of a topic (its first segment).
pub fn namespace(topic: &str) -> &str {
    topic.split('.').next().unwrap_or_default()
}

/// Delivery settings for one publish.
pub struct Delivery {
    pub need: Need,
    pub queue_cap: usize,
    pub queue_bytes: usize,
    pub stall: Duration,
}

/// What one publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Subscribers the event was queued to.
    pub delivered: usize,
    /// Subscribers allowed to see it whose queue was full (or who were closing).
    pub dropped: usize,
}

impl Broker {
    pub fn new(bus: Arc<dyn Bus>) -> Broker {
        Broker {
            subscribers: DashMap::new(),
            bus,
        }
    }

    /// Adds `session` to `pattern`; false if it already was there.
    pub fn subscribe(&self, session: &Arc<SessionHandle>, pattern: &str) -> bool {
        let mut list = self.subscribers.entry(Box::from(pattern)).or_default();
        if list.contains_key(&session.id) {
            return false;
        }
        // Under the entry's lock, so an on and an off reach the bus in order.
        if list.is_empty() {
            self.bus.interest(pattern, true);
        }
        list.insert(session.id, session.clone());
        true
    }

    pub fn unsubscribe(&self, session_id: u64, pattern: &str) {
        if let dashmap::Entry::Occupied(mut e) = self.subscribers.entry(Box::from(pattern)) {
            // Order is no promise: the last subscriber takes the gap.
            e.get_mut().swap_remove(&session_id);
            if e.get().is_empty() {
                self.bus.interest(pattern, false);
                e.remove();
            }
        }
    }

    /// Delivers one event to every subscriber on this node that may see it,
    /// and hands it to the other nodes, which deliver to theirs.
    pub fn publish(&self, topic: &str, data: &RawValue, delivery: &Delivery) -> Fanout {
        self.bus.publish(topic, data);
        self.deliver(topic, data, delivery)
    }

    /// Delivers one event to every subscriber on this node that may see it.
    pub fn deliver(&self, topic: &str, data: &RawValue, delivery: &Delivery) -> Fanout {
        let mut text = String::with_capacity(64 + topic.len() + data.get().len());
        text.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"topic\":");
        crate::util::push_json_str(&mut text, topic);
        text.push_str(",\"data\":");
        text.push_str(data.get());
        text.push_str("}}");
        let message = Utf8Bytes::from(text);

        // The exact topic, then every `prefix.*` above it.
        let mut patterns = vec![topic.to_owned()];
        let mut cut = topic.len();
        while let Some(dot) = topic.get(..cut).and_then(|t| t.rfind('.')) {
            patterns.push(format!("{}.*", topic.get(..dot).unwrap_or_default()));
            cut = dot;
        }
        patterns.retain(|p| self.subscribers.contains_key(p.as_str()));
        // A session subscribed through two patterns gets the event once.
        let mut seen: Option<HashSet<u64>> = (patterns.len() > 1).then(HashSet::new);
        let mut fanout = Fanout::default();
        // One pattern at a time, so no two shard locks are held at once.
        for pattern in &patterns {
            let Some(list) = self.subscribers.get(pattern.as_str()) else {
                continue;
            };
            for sub in list.values() {
                if let Some(seen) = seen.as_mut() {
                    if !seen.insert(sub.id) {
                        continue;
                    }
                }
                let allowed = sub
                    .rights()
                    .is_some_and(|r| catalog::satisfies(r, delivery.need));
                if !allowed {
                    continue;
                }
                if sub.outbound.push_event(
                    message.clone(),
                    Guard::Needs(delivery.need),
                    Bound {
                        messages: delivery.queue_cap,
                        bytes: delivery.queue_bytes,
                        stall: delivery.stall,
                    },
                ) {
                    fanout.delivered += 1;
                } else {
                    fanout.dropped += 1;
                }
            }
        }
        fanout
    }

    /// Removes every subscription of a session that ended.
    pub fn session_ended(&self, session: &SessionHandle) {
        let patterns = std::mem::take(&mut *session.topics.lock());
        for p in patterns {
            self.unsubscribe(session.id, &p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_syntax() {
        assert!(valid_topic("cti.call.201", false));
        assert!(!valid_topic("cti.call.*", false));
        assert!(valid_topic("cti.call.*", true));
        assert!(valid_topic("cti.*", true));
        assert!(!valid_topic("*", true));
        assert!(!valid_topic("cti..x", true));
        assert!(!valid_topic("cti.*.x", true));
        assert!(!valid_topic("cti.call 1", false));
        assert!(!valid_topic(&"a".repeat(300), false));
        // The grammar of method names: two segments at least, lowercase.
        assert!(!valid_topic("cti", false));
        assert!(!valid_topic("cti", true));
        assert!(!valid_topic("cti.Call.1", false));
        assert!(!valid_topic("cti.Call.*", true));
        assert!(!valid_topic("cti.call.", false));
        assert!(valid_topic("voicemail.security", false));
        let long = format!("cti.{}", "x".repeat(MAX_TOPIC_LEN - 4));
        assert!(valid_topic(&long, false));
        assert!(!valid_topic(&format!("{long}x"), false));
        assert_eq!(namespace("cti.call.1"), "cti");
    }
}

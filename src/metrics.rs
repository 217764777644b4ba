//! Prometheus metrics: the families, the handles the hot path bumps, and the
//! operator listener that serves them (`GET /metrics` on `[admin] listen`,
//! [`exporter`]) in the text format 0.0.4 or OpenMetrics ([`exposition`]),
//! with the standard `process_*` families ([`process`]) and
//! `adjunct_gateway_build_info`.
//!
//! Every label value is chosen by the gateway, never by a peer: methods are
//! the catalog's names (a routed one is counted as `namespace.*`, an unknown
//! one as `unknown`), rights are the sixteen display names, namespaces are the
//! catalog's. Handles are resolved when the gateway starts (or, for a routed
//! namespace, on its first request), so counting is one atomic add: no label
//! lookup, no allocation per request.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use crate::catalog::{self, Endpoint, Entry, Target};
use crate::rights::Right;
use crate::rpc::{Code, Reply};

mod exporter;
pub mod exposition;
mod process;
pub mod window;

pub use exporter::Exporter;
pub use exposition::Format;

type Label = (&'static str, Cow<'static, str>);
type One = [Label; 1];
type Two = [Label; 2];

fn label(key: &'static str, value: impl Into<Cow<'static, str>>) -> Label {
    (key, value.into())
}

/// A handle on the series `labels` of `family` (created if new).
fn series<L, M, C>(family: &Family<L, M, C>, labels: L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    family.get_or_create(&labels).clone()
}

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AtCapacity,
    TooManyFromAddress,
    /// `[limits] max_unauthenticated_per_ip`: the source already holds its
    /// share of the connections that have not authenticated.
    TooManyUnauthenticatedFromAddress,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::AtCapacity,
        Refusal::TooManyFromAddress,
        Refusal::TooManyUnauthenticatedFromAddress,
    ];
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    Ok,
    /// Wrong password or token, unknown or disabled user, missing endpoint right.
    Failed,
    /// Refused because the account is locked out.
    Locked,
    /// Refused because the source address is blocked for too many failures
    /// (or the verification queue is full).
    Throttled,
    /// Authenticated, but the user already holds its session limit.
    Refused,
}

impl Login {
    const ALL: [Login; 5] = [
        Login::Ok,
        Login::Failed,
        Login::Locked,
        Login::Throttled,
        Login::Refused,
    ];

    /// The label value, also the audit line's `outcome`.
    pub const fn name(self) -> &'static str {
        match self {
            Login::Ok => "ok",
            Login::Failed => "failed",
            Login::Locked => "locked",
            Login::Throttled => "throttled",
            Login::Refused => "refused",
        }
    }
}

/// How one request was answered, as counted by `requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    /// Refused by the gate: not authenticated or a right missing.
    Denied,
    /// Refused by the rate limit.
    Limited,
    /// Handed to a provider; its answer is counted by the routed histogram.
    Routed,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Denied,
        Outcome::Limited,
        Outcome::Routed,
    ];

    const fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Denied => "denied",
            Outcome::Limited => "limited",
            Outcome::Routed => "routed",
        }
    }

    fn of(reply: &Reply) -> Outcome {
        match reply {
            Reply::Value(_) | Reply::Static(_) => Outcome::Ok,
            Reply::Later => Outcome::Routed,
            Reply::Error(e) => match e.code {
                Code::NotAuthenticated | Code::Forbidden => Outcome::Denied,
                Code::RateLimited => Outcome::Limited,
                _ => Outcome::Error,
            },
        }
    }
}

/// How a routed request (one that was owed an answer) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoutedEnd {
    /// The provider answered (a result or an error).
    Answered,
    /// No answer within `[routing] request_timeout_ms` (-32005).
    Timeout,
    /// The provider disconnected first (-32004).
    ProviderGone,
    /// The provider's queue was full (-32004 "provider busy").
    ProviderBusy,
}

impl RoutedEnd {
    const ALL: [RoutedEnd; 4] = [
        RoutedEnd::Answered,
        RoutedEnd::Timeout,
        RoutedEnd::ProviderGone,
        RoutedEnd::ProviderBusy,
    ];

    const fn name(self) -> &'static str {
        match self {
            RoutedEnd::Answered => "answered",
            RoutedEnd::Timeout => "timeout",
            RoutedEnd::ProviderGone => "provider_gone",
            RoutedEnd::ProviderBusy => "provider_busy",
        }
    }
}

/// The two legs of the time the gateway itself adds to a routed request
/// (`routed_added_seconds`); the provider's own time is in neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The caller's frame read → the request written to the provider.
    Request = 0,
    /// The provider's answer read → the answer written to the caller.
    Answer = 1,
}

/// Counts per outcome for one method (or one routed namespace).
type ByOutcome = [Counter; Outcome::ALL.len()];

/// The handles of one routed namespace: its requests and their latency.
pub struct NamespaceMetrics {
    requests: ByOutcome,
    seconds: [Histogram; RoutedEnd::ALL.len()],
}

impl NamespaceMetrics {
    /// A routed request that was sent at `started` has ended.
    pub fn routed(&self, end: RoutedEnd, started: Instant) {
        self.seconds[end as usize].observe(started.elapsed().as_secs_f64());
    }
}

fn added_histogram() -> Histogram {
    // 10 µs .. ~1.3 s: the gateway's own part is meant to be well under 1 ms.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~12 s
    Histogram::new(exponential_buckets(0.0005, 2.5, 12))
}

/// The gateway's metrics. Clones share the same values.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    sessions: [Gauge; 2],
    dozing: Gauge,
    logins: [Counter; Login::ALL.len()],
    requests: Family<Two, Counter>,
    /// Indexed by `catalog::Method as usize`.
    local: Vec<ByOutcome>,
    unknown: Counter,
    invalid: Counter,
    namespaces: RwLock<HashMap<Box<str>, Arc<NamespaceMetrics>>>,
    routed_seconds: Family<Two, Histogram, fn() -> Histogram>,
    /// Indexed by `Leg as usize`.
    routed_added: [Histogram; 2],
    forbidden: [Counter; 16],
    events_delivered: Counter,
    events_dropped: Counter,
    outbound_drain: Histogram,
    tls_failures: Counter,
    refused: [Counter; Refusal::ALL.len()],
    reloads: [Counter; 2],
    /// Logins of the last minute, for `admin.status`.
    recent_logins: window::LastMinute,
    cluster_up: Gauge,
    cluster_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every family and resolves every fixed label set.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("adjunct_gateway");

        let build_info = Family::<One, Gauge>::default();
        registry.register(
            "build_info",
            "The gateway's version, as a label; the value is always 1",
            build_info.clone(),
        );
        series(&build_info, [label("version", env!("CARGO_PKG_VERSION"))]).set(1);

        let sessions = Family::<One, Gauge>::default();
        registry.register(
            "sessions",
            "WebSocket sessions open, by endpoint",
            sessions.clone(),
        );
        let sessions = [Endpoint::Adjunct, Endpoint::Portal]
            .map(|e| series(&sessions, [label("endpoint", e.name())]));
        let dozing = Gauge::default();
        registry.register(
            "sessions_dozing",
            "Sessions idle with no WebSocket read buffer (given back until the socket has bytes)",
            dozing.clone(),
        );

        let logins = Family::<One, Counter>::default();
        registry.register("logins", "Login attempts, by outcome", logins.clone());
        let logins = Login::ALL.map(|o| series(&logins, [label("outcome", o.name())]));

        let requests = Family::<Two, Counter>::default();
        registry.register(
            "requests",
            "JSON-RPC requests, by method (routed ones as namespace.*) and outcome",
            requests.clone(),
        );
        // A local method is never routed: that series is not exposed.
        let by_outcome = |method: Cow<'static, str>| -> ByOutcome {
            Outcome::ALL.map(|o| match o {
                Outcome::Routed => Counter::default(),
                _ => series(
                    &requests,
                    [label("method", method.clone()), label("outcome", o.name())],
                ),
            })
        };
        let mut local: Vec<ByOutcome> = Vec::new();
        for (name, method) in catalog::local_methods() {
            let i = method as usize;
            while local.len() <= i {
                local.push(Default::default());
            }
            local[i] = by_outcome(Cow::Borrowed(name));
        }
        let error = |method: &'static str| {
            series(
                &requests,
                [label("method", method), label("outcome", "error")],
            )
        };
        let unknown = error("unknown");
        let invalid = error("invalid");

        let routed_seconds =
            Family::<Two, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "routed_request_duration",
            "Time from routing a request to a provider to its answer, timeout or the provider's disconnect, by namespace and outcome",
            Unit::Seconds,
            routed_seconds.clone(),
        );

        let routed_added =
            Family::<One, Histogram, fn() -> Histogram>::new_with_constructor(added_histogram);
        registry.register_with_unit(
            "routed_added",
            "Time the gateway itself adds to a routed request, by leg: request (the caller's frame read to the request written to the provider) and answer (the provider's answer read to the answer written to the caller); the provider's own time is in neither",
            Unit::Seconds,
            routed_added.clone(),
        );
        let routed_added =
            ["request", "answer"].map(|leg| series(&routed_added, [label("leg", leg)]));

        let forbidden = Family::<One, Counter>::default();
        registry.register(
            "forbidden",
            "Requests and subscriptions refused for a missing right, by the right",
            forbidden.clone(),
        );
        let forbidden: [Counter; 16] = std::array::from_fn(|i| {
            let right = Right::all().nth(i).map_or("", Right::name);
            series(&forbidden, [label("right", right)])
        });

        let events_delivered = Counter::default();
        registry.register(
            "events_delivered",
            "Events queued to subscribers",
            events_delivered.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events dropped because a subscriber's outbound queue was full (or it was closing)",
            events_dropped.clone(),
        );
        let outbound_drain = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "outbound_queue_depth",
            "Messages waiting in a session's outbound queue each time the session drained it",
            outbound_drain.clone(),
        );
        let tls_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or were abandoned",
            tls_failures.clone(),
        );
        let refused = Family::<One, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections refused by [limits] admission, by reason",
            refused.clone(),
        );
        let refused = Refusal::ALL.map(|r| {
            let reason = match r {
                Refusal::AtCapacity => "at_capacity",
                Refusal::TooManyFromAddress => "per_address",
                Refusal::TooManyUnauthenticatedFromAddress => "unauthenticated_per_address",
            };
            series(&refused, [label("reason", reason)])
        });
        let reloads = Family::<One, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome",
            reloads.clone(),
        );
        let reloads = ["ok", "refused"].map(|o| series(&reloads, [label("outcome", o)]));

        let cluster_up = Gauge::default();
        registry.register(
            "cluster_up",
            "1 while this node reaches the cluster through NATS; 0 while it does not, or when it runs alone",
            cluster_up.clone(),
        );
        let cluster_dropped = Counter::default();
        registry.register(
            "cluster_dropped",
            "NATS messages for this node dropped because it read them too slowly (cross-node events past its capacity)",
            cluster_dropped.clone(),
        );

        let metrics = Metrics(Arc::new(Inner {
            registry: root,
            sessions,
            dozing,
            logins,
            requests,
            local,
            unknown,
            invalid,
            namespaces: RwLock::default(),
            routed_seconds,
            routed_added,
            forbidden,
            events_delivered,
            events_dropped,
            outbound_drain,
            tls_failures,
            refused,
            reloads,
            recent_logins: window::LastMinute::default(),
            cluster_up,
            cluster_dropped,
        }));
        for ns in catalog::builtin_namespaces() {
            metrics.namespace(ns);
        }
        metrics
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// The exposition of every family in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        match format {
            Format::OpenMetrics => self.encode(),
            Format::Text => exposition::to_text_format(&self.encode()),
        }
    }

    /// A session opened; it counts as open until the guard drops.
    pub fn session_opened(&self, endpoint: Endpoint) -> OpenSession {
        let gauge = self.0.sessions[endpoint as usize].clone();
        gauge.inc();
        OpenSession(gauge)
    }

    /// A session's link gave its read buffer back; it counts as dozing
    /// until the guard drops.
    pub fn dozing(&self) -> Dozing {
        self.0.dozing.inc();
        Dozing(self.0.dozing.clone())
    }

    pub fn login(&self, outcome: Login) {
        self.0.logins[outcome as usize].inc();
        self.0.recent_logins.count(outcome == Login::Ok);
    }

    /// Logins (succeeded, failed: every other outcome) in the last minute.
    pub fn logins_last_minute(&self) -> (u64, u64) {
        self.0.recent_logins.totals()
    }

    /// One request was answered (`entry` is `None` for an unknown method;
    /// `routed`, a routed namespace's handles when the caller has them).
    pub fn request(
        &self,
        entry: Option<&Entry<'_>>,
        routed: Option<&NamespaceMetrics>,
        reply: &Reply,
    ) {
        let outcome = Outcome::of(reply) as usize;
        match entry.map(|e| e.target) {
            None => {
                self.0.unknown.inc();
            }
            Some(Target::Local(m)) => {
                if let Some(c) = self.0.local.get(m as usize) {
                    c[outcome].inc();
                }
            }
            Some(Target::Routed(ns)) => match routed {
                Some(m) => {
                    m.requests[outcome].inc();
                }
                None => {
                    self.namespace(ns).requests[outcome].inc();
                }
            },
        };
    }

    /// A frame or batch element that is not a valid JSON-RPC request.
    pub fn invalid_request(&self) {
        self.0.invalid.inc();
    }

    /// A request refused for a missing right.
    pub fn forbidden(&self, right: Right) {
        self.0.forbidden[right as usize].inc();
    }

    /// The handles of a routed namespace (one of the catalog's).
    pub fn namespace(&self, ns: &str) -> Arc<NamespaceMetrics> {
        if let Some(m) = self.0.namespaces.read().get(ns) {
            return m.clone();
        }
        let mut map = self.0.namespaces.write();
        map.entry(Box::from(ns))
            .or_insert_with(|| {
                let inner = &self.0;
                let method: Cow<'static, str> = Cow::Owned(format!("{ns}.*"));
                let requests = Outcome::ALL.map(|o| {
                    let labels = [label("method", method.clone()), label("outcome", o.name())];
                    series(&inner.requests, labels)
                });
                let seconds = RoutedEnd::ALL.map(|end| {
                    let labels = [
                        label("namespace", ns.to_owned()),
                        label("outcome", end.name()),
                    ];
                    series(&inner.routed_seconds, labels)
                });
                Arc::new(NamespaceMetrics { requests, seconds })
            })
            .clone()
    }

    /// One publish: how many subscribers got the event and how many did not.
    pub fn events(&self, delivered: usize, dropped: usize) {
        self.0.events_delivered.inc_by(delivered as u64);
        self.0.events_dropped.inc_by(dropped as u64);
    }

    /// A session drained `depth` messages from its outbound queue at once.
    pub fn outbound_drained(&self, depth: usize) {
        if depth > 0 {
            self.0.outbound_drain.observe(depth as f64);
        }
    }

    /// A routed request's `leg` took `seconds` inside the gateway.
    pub fn routed_added(&self, leg: Leg, seconds: f64) {
        if let Some(h) = self.0.routed_added.get(leg as usize) {
            h.observe(seconds);
        }
    }

    pub fn tls_handshake_failed(&self) {
        self.0.tls_failures.inc();
    }

    /// A connection refused by admission (`[limits]`).
    pub fn connection_refused(&self, refusal: Refusal) {
        self.0.refused[refusal as usize].inc();
    }

    pub fn reload(&self, ok: bool) {
        self.0.reloads[usize::from(!ok)].inc();
    }

    /// The cluster became reachable or not.
    /// NATS dropped messages for this node (a slow consumer).
    pub fn cluster_dropped(&self) {
        self.0.cluster_dropped.inc();
    }

    pub fn cluster_up(&self, up: bool) {
        self.0.cluster_up.set(i64::from(up));
    }
}

/// Counts a session as open while alive.
pub struct OpenSession(Gauge);

/// Counts a session as dozing while alive.
pub struct Dozing(Gauge);

impl Drop for Dozing {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::RpcError;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn every_family_is_exposed_before_anything_happened() {
        let m = Metrics::new();
        let text = m.encode();
        for family in [
            "adjunct_gateway_build_info",
            "process_cpu_seconds",
            "adjunct_gateway_sessions",
            "adjunct_gateway_sessions_dozing",
            "adjunct_gateway_logins",
            "adjunct_gateway_requests",
            "adjunct_gateway_forbidden",
            "adjunct_gateway_routed_request_duration_seconds",
            "adjunct_gateway_events_delivered",
            "adjunct_gateway_events_dropped",
            "adjunct_gateway_outbound_queue_depth",
            "adjunct_gateway_tls_handshake_failures",
            "adjunct_gateway_connections_refused",
            "adjunct_gateway_config_reloads",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{family} missing:\n{text}"
            );
        }
        for outcome in ["ok", "failed", "locked", "throttled", "refused"] {
            let series = format!("adjunct_gateway_logins_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&series), "{series} missing");
        }
        assert!(text
            .contains("adjunct_gateway_requests_total{method=\"session.ping\",outcome=\"ok\"} 0"));
        assert!(
            text.contains("adjunct_gateway_forbidden_total{right=\"TURN Server Connection\"} 0")
        );
        assert!(text.ends_with("# EOF\n"));
        let version = format!(
            "adjunct_gateway_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        let plain = m.encode_as(Format::Text);
        assert!(plain.contains("# TYPE adjunct_gateway_logins_total counter\n"));
        assert!(plain.contains(&version) && !plain.contains("# EOF"));
    }

    #[test]
    fn values_move_and_labels_stay_the_gateways_own() {
        let m = Metrics::new();
        let c = catalog::Catalog::default();
        let ping = c.lookup("session.ping");
        m.request(ping.as_ref(), None, &Reply::Value(serde_json::json!({})));
        m.request(
            ping.as_ref(),
            None,
            &Reply::Error(RpcError::new(Code::NotAuthenticated)),
        );
        let routed = c.lookup("cti.make_call_from_a_peer");
        m.request(routed.as_ref(), None, &Reply::Later);
        m.request(
            None,
            None,
            &Reply::Error(RpcError::new(Code::MethodNotFound)),
        );
        m.login(Login::Failed);
        m.forbidden(Right::OneXCtiApi);
        m.namespace("cti")
            .routed(RoutedEnd::Answered, Instant::now());
        let _open = m.session_opened(Endpoint::Portal);
        let text = m.encode();
        for series in [
            "adjunct_gateway_requests_total{method=\"session.ping\",outcome=\"ok\"} 1",
            "adjunct_gateway_requests_total{method=\"session.ping\",outcome=\"denied\"} 1",
            "adjunct_gateway_requests_total{method=\"cti.*\",outcome=\"routed\"} 1",
            "adjunct_gateway_requests_total{method=\"unknown\",outcome=\"error\"} 1",
            "adjunct_gateway_logins_total{outcome=\"failed\"} 1",
            "adjunct_gateway_forbidden_total{right=\"one-X CTI API\"} 1",
            "adjunct_gateway_sessions{endpoint=\"portal\"} 1",
            "adjunct_gateway_routed_request_duration_seconds_count{namespace=\"cti\",outcome=\"answered\"} 1",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        assert!(
            !text.contains("make_call_from_a_peer"),
            "a peer's string became a label"
        );
        drop(_open);
        assert!(
            line(&m.encode(), "adjunct_gateway_sessions{endpoint=\"portal\"}")
                .is_some_and(|l| l.ends_with(" 0"))
        );
    }
}

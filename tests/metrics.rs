//! Metrics (issues 8 and 12): `GET /metrics` on the admin listener of a real
//! gateway, scraped while sessions log in, call, get refused, route to a
//! provider and receive events; values must move, labels must stay the
//! gateway's own. Both exposition formats (text 0.0.4 by default, OpenMetrics
//! on request) go through `promtool check metrics`.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPEN_METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes until `series` has `want` (bounded: sessions end asynchronously).
async fn wait_for(gw: &TestGateway, series: &str, want: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = gw.scrape().await;
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} not exposed:\n{text}"))
}

/// How long the test's provider holds a routed request before answering.
const PROVIDER_TIME: std::time::Duration = std::time::Duration::from_millis(200);

#[tokio::test]
async fn scraped_values_move_with_logins_requests_refusals_routing_and_events() {
    let gw = TestGateway::start().await;
    let before = gw.scrape().await;
    assert!(
        before.contains("HTTP/1.1 200 OK\r\n")
            && before.contains(&format!("content-type: {TEXT_TYPE}\r\n")),
        "{before}"
    );
    for series in [
        "adjunct_gateway_logins_total{outcome=\"ok\"}",
        "adjunct_gateway_logins_total{outcome=\"failed\"}",
        "adjunct_gateway_logins_total{outcome=\"locked\"}",
        "adjunct_gateway_logins_total{outcome=\"throttled\"}",
        "adjunct_gateway_sessions{endpoint=\"portal\"}",
        "adjunct_gateway_events_delivered_total",
        "adjunct_gateway_tls_handshake_failures_total",
        "adjunct_gateway_config_reloads_total{outcome=\"ok\"}",
    ] {
        assert_eq!(value(&before, series), 0.0, "{series}");
    }

    // Logins, one failed; the session gauge follows.
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    let mut bad = gw.ws("/portal", &[]).await.unwrap();
    let (code, _) = bad
        .err(
            "session.login",
            json!({"user": "portal1", "password": "wrong-Pass-9"}),
        )
        .await;
    assert_eq!(code, -32002);
    let mut cti = gw.login("/portal", "cti1", CTI_PW).await;
    let mut provider = gw.cti_provider().await;

    // Requests: ok, denied with the right named, unknown and invalid.
    portal.ok("session.ping", json!(null)).await;
    portal.ok("session.ping", json!(null)).await;
    let (code, _) = cti.err("turn.credentials", json!(null)).await;
    assert_eq!(code, -32003);
    let (code, _) = portal.err("nope.Injected_Label_1", json!(null)).await;
    assert_eq!(code, -32601);
    portal.send_text("{not json").await;
    assert_eq!(common::code(&portal.recv().await), -32700);

    // A routed round trip, and an event to a subscriber.
    portal
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    portal
        .send_text(r#"{"jsonrpc":"2.0","id":"c1","method":"cti.make_call_xyz","params":{}}"#)
        .await;
    let routed = provider.recv().await;
    // The provider takes its time; that time is the provider's, not the gateway's.
    tokio::time::sleep(PROVIDER_TIME).await;
    provider
        .send_text(
            json!({"jsonrpc": "2.0", "id": routed["id"], "result": {"ok": true}}).to_string(),
        )
        .await;
    assert_eq!(portal.recv().await["result"], json!({"ok": true}));
    let published = provider
        .ok(
            "adjunct.publish",
            json!({"topic": "cti.call.7", "data": {"state": "ringing"}}),
        )
        .await;
    assert_eq!(published["delivered"], 1);
    assert_eq!(portal.recv().await["method"], "event");

    // A TLS handshake that never happens.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    drop(tcp);

    // Reloads: one applied, one refused.
    gw.edit_and_reload(|t| t).unwrap();
    gw.edit_and_reload(|t| t.replace("[tls]", "[tls\n"))
        .unwrap_err();

    let text = wait_for(&gw, "adjunct_gateway_tls_handshake_failures_total", 1.0).await;
    for (series, want) in [
        ("adjunct_gateway_logins_total{outcome=\"ok\"}", 3.0),
        ("adjunct_gateway_logins_total{outcome=\"failed\"}", 1.0),
        ("adjunct_gateway_sessions{endpoint=\"portal\"}", 3.0),
        ("adjunct_gateway_sessions{endpoint=\"adjunct\"}", 1.0),
        (
            "adjunct_gateway_requests_total{method=\"session.ping\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "adjunct_gateway_requests_total{method=\"session.login\",outcome=\"error\"}",
            1.0,
        ),
        (
            "adjunct_gateway_requests_total{method=\"turn.credentials\",outcome=\"denied\"}",
            1.0,
        ),
        (
            "adjunct_gateway_forbidden_total{right=\"TURN Server Connection\"}",
            1.0,
        ),
        (
            "adjunct_gateway_requests_total{method=\"unknown\",outcome=\"error\"}",
            1.0,
        ),
        (
            "adjunct_gateway_requests_total{method=\"invalid\",outcome=\"error\"}",
            1.0,
        ),
        (
            "adjunct_gateway_requests_total{method=\"cti.*\",outcome=\"routed\"}",
            1.0,
        ),
        (
            "adjunct_gateway_routed_request_duration_seconds_count{namespace=\"cti\",outcome=\"answered\"}",
            1.0,
        ),
        // Both legs of the one routed request were timed.
        (
            "adjunct_gateway_routed_added_seconds_count{leg=\"request\"}",
            1.0,
        ),
        (
            "adjunct_gateway_routed_added_seconds_count{leg=\"answer\"}",
            1.0,
        ),
        ("adjunct_gateway_events_delivered_total", 1.0),
        ("adjunct_gateway_events_dropped_total", 0.0),
        ("adjunct_gateway_config_reloads_total{outcome=\"ok\"}", 1.0),
        ("adjunct_gateway_config_reloads_total{outcome=\"refused\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    assert!(value(&text, "adjunct_gateway_outbound_queue_depth_count") >= 2.0);
    // The gateway's own part leaves out the provider's time, which the whole
    // routed duration includes. (The two are not nested otherwise: the request
    // leg starts at the frame's read, before the routed clock starts.)
    let added = value(
        &text,
        "adjunct_gateway_routed_added_seconds_sum{leg=\"request\"}",
    ) + value(
        &text,
        "adjunct_gateway_routed_added_seconds_sum{leg=\"answer\"}",
    );
    let whole = value(
        &text,
        "adjunct_gateway_routed_request_duration_seconds_sum{namespace=\"cti\",outcome=\"answered\"}",
    );
    let provider_time = PROVIDER_TIME.as_secs_f64();
    assert!(whole >= provider_time, "{whole}");
    assert!(added > 0.0 && added < provider_time, "{added} of {whole}");
    // What a peer chose never becomes a label.
    assert!(!text.contains("Injected_Label") && !text.contains("make_call_xyz"));

    // Closed sessions leave the gauge.
    drop(bad);
    drop(cti);
    drop(portal);
    wait_for(&gw, "adjunct_gateway_sessions{endpoint=\"portal\"}", 0.0).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_admin_listener_serves_only_get_metrics_and_stops_with_the_gateway() {
    let gw = TestGateway::start().await;
    let admin = gw.admin_addr();
    assert!(admin.ip().is_loopback());
    assert_ne!(admin, gw.addr);
    let (status, _) = raw_http(admin, "GET /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 404);
    let (status, text) = raw_http(admin, "POST /metrics HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, 405, "{text}");
    let (status, _) = raw_http(admin, "nonsense\r\n\r\n").await;
    assert_eq!(status, 400);
    // The public port does not serve metrics.
    let (status, _) = gw.http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 404);
    gw.shutdown().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the metrics listener outlived the gateway"
    );
}

#[tokio::test]
async fn an_empty_admin_listen_turns_the_metrics_listener_off() {
    adjunct_gateway::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_config(dir.path(), "", "");
    let text = std::fs::read_to_string(&path).unwrap();
    let on = "[admin]\nlisten = \"127.0.0.1:0\"";
    assert!(text.contains(on));
    std::fs::write(&path, text.replace(on, "[admin]\nlisten = \"\"")).unwrap();
    let config = adjunct_gateway::config::Config::load(&path).unwrap();
    let running = adjunct_gateway::start(config).await.unwrap();
    assert_eq!(running.admin_addr, None);
    running.shutdown().await;
}

#[tokio::test]
async fn lockout_and_throttling_count_as_locked_and_throttled_logins() {
    let gw = TestGateway::start_with(
        "",
        "[security]\nreject_limit = 2\nlockout_secs = 600\nip_reject_limit = 4\nip_block_secs = 60\n",
    )
    .await;
    let mut c = gw.ws("/portal", &[]).await.unwrap();
    let wrong = |user: &str| json!({"user": user, "password": "wrong-Pass-0"});
    for _ in 0..2 {
        assert_eq!(c.err("session.login", wrong("cti1")).await.0, -32002);
    }
    // Locked: the right password is refused, and counted as such.
    let right = json!({"user": "cti1", "password": CTI_PW});
    assert_eq!(c.err("session.login", right).await.0, -32002);
    // Failures from this address (unknown users: no account to lock)
    // until the address is throttled.
    let mut failed = 2;
    loop {
        let (code, _) = c
            .err("session.login", wrong(&format!("nobody{failed}")))
            .await;
        if code == -32029 {
            break;
        }
        assert_eq!(code, -32002);
        failed += 1;
        assert!(failed < 10, "never throttled");
    }
    // The upgrade is refused with 429 before any credential is looked at.
    let (status, _) = gw
        .http("GET /portal HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await;
    assert_eq!(status, 429);
    let text = gw.scrape().await;
    assert_eq!(
        value(&text, "adjunct_gateway_logins_total{outcome=\"locked\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "adjunct_gateway_logins_total{outcome=\"failed\"}"),
        f64::from(failed)
    );
    assert_eq!(
        value(&text, "adjunct_gateway_logins_total{outcome=\"throttled\"}"),
        2.0
    );
    assert_eq!(
        value(&text, "adjunct_gateway_logins_total{outcome=\"ok\"}"),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "adjunct_gateway_requests_total{method=\"session.login\",outcome=\"limited\"}"
        ),
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_refused_at_capacity_are_counted() {
    let gw = TestGateway::start_with("", "[limits]\nmax_connections = 1\n").await;
    let mut a = gw.login("/portal", "portal1", PORTAL_PW).await;
    let (status, _) = gw.http("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 503);
    a.ok("session.ping", json!(null)).await;
    let text = gw.scrape().await;
    assert_eq!(
        value(
            &text,
            "adjunct_gateway_connections_refused_total{reason=\"at_capacity\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "adjunct_gateway_connections_refused_total{reason=\"per_address\"}"
        ),
        0.0
    );
    gw.shutdown().await;
}

/// Fails at once, in one line, when promtool is missing (never skips).
fn require_promtool() {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "promtool is not installed: run scripts/test (it installs coturn, chromium, nodejs, npm, prometheus)"
        ),
    }
}

/// `promtool check metrics` on `exposition`: its exit code and every line
/// it printed (the problems it found).
fn promtool(exposition: &str) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = exposition.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let mut problems: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    problems.sort();
    (out.status.code(), problems)
}

/// One scrape with `accept` (if any): (Content-Type, body).
async fn fetch(admin: SocketAddr, accept: Option<&str>) -> (String, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let (status, text) = raw_http(
        admin,
        &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_else(|| panic!("no content-type: {head}"))
        .to_owned();
    (content_type, body.to_owned())
}

/// The families an exposition declares, with their type.
fn families(exposition: &str) -> Vec<(String, String)> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Every declared family has a non-empty HELP of the same name.
fn assert_help_on_every_family(exposition: &str) {
    for (name, _) in families(exposition) {
        let help = format!("# HELP {name} ");
        assert!(
            exposition
                .lines()
                .any(|l| l.strip_prefix(&help).is_some_and(|h| !h.trim().is_empty())),
            "{name} has no HELP"
        );
    }
}

#[tokio::test]
async fn both_exposition_formats_pass_promtool() {
    require_promtool();
    let gw = TestGateway::start().await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    portal.ok("session.ping", json!(null)).await;
    let mut cti = gw.login("/portal", "cti1", CTI_PW).await;
    assert_eq!(cti.err("turn.credentials", json!(null)).await.0, -32003);
    let admin = gw.admin_addr();

    let (content_type, text) = fetch(admin, None).await;
    assert_eq!(content_type, TEXT_TYPE);
    assert_help_on_every_family(&text);
    let (code, problems) = promtool(&text);
    assert_eq!(
        (code, problems.as_slice()),
        (Some(0), &[][..]),
        "promtool on the text format:\n{text}"
    );

    // promtool reads only the text format 0.0.4. There an OpenMetrics
    // counter family `x` (samples `x_total`) looks like a second family
    // `x_total` without HELP, so that note, for each counter and nothing
    // else, is the one it may print.
    let (content_type, open_metrics) = fetch(admin, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(content_type, OPEN_METRICS_TYPE);
    assert_help_on_every_family(&open_metrics);
    let mut expected: Vec<String> = families(&open_metrics)
        .into_iter()
        .filter(|(_, kind)| kind == "counter")
        .map(|(name, _)| format!("{name}_total no help text"))
        .collect();
    expected.sort();
    assert!(expected.len() >= 8, "{open_metrics}");
    let (code, problems) = promtool(&open_metrics);
    assert_eq!(
        (code, problems),
        (Some(3), expected),
        "promtool on OpenMetrics:\n{open_metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_format_follows_accept_and_both_carry_the_same_series() {
    let gw = TestGateway::start().await;
    let admin = gw.admin_addr();
    let text_types = [
        None,
        Some("text/plain;version=0.0.4"),
        Some("*/*"),
        Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
    ];
    for accept in text_types {
        let (content_type, body) = fetch(admin, accept).await;
        assert_eq!(content_type, TEXT_TYPE, "{accept:?}");
        assert!(
            !body.contains("# EOF") && !body.contains("# UNIT"),
            "{accept:?}"
        );
        assert!(body.contains("# TYPE adjunct_gateway_logins_total counter\n"));
        assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"));
    }
    for accept in [PROMETHEUS_ACCEPT, "application/openmetrics-text"] {
        let (content_type, body) = fetch(admin, Some(accept)).await;
        assert_eq!(content_type, OPEN_METRICS_TYPE, "{accept}");
        assert!(body.ends_with("\n# EOF\n"), "{accept}");
        assert!(body.contains("# TYPE adjunct_gateway_logins counter\n"));
        assert!(body.contains("# UNIT process_cpu_seconds seconds\n"));
    }

    // The same series in both, only the metadata differs.
    let series = |body: &str| -> Vec<String> {
        let mut names: Vec<String> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
            .collect();
        names.sort();
        names
    };
    let (_, text) = fetch(admin, None).await;
    let (_, open_metrics) = fetch(admin, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(series(&text), series(&open_metrics));

    // The build and the process, in both formats.
    for body in [&text, &open_metrics] {
        let version = format!(
            "adjunct_gateway_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(body, &version), Some(1.0), "{body}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value(body, "process_start_time_seconds");
        // This test process started the gateway, less than a day ago.
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started}"
        );
        assert!(value(body, "process_cpu_seconds_total") >= 0.0);
        let open = value(body, "process_open_fds");
        assert!(open >= 3.0, "{open}");
        assert!(value(body, "process_max_fds") >= open);
        let resident = value(body, "process_resident_memory_bytes");
        assert!(resident > 0.0);
        assert!(value(body, "process_virtual_memory_bytes") >= resident);
    }
    gw.shutdown().await;
}

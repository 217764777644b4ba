//! Metrics (issue 8): `GET /metrics` on the admin listener of a real
//! gateway, scraped while sessions log in, call, get refused, route to a
//! provider and receive events; values must move, labels must stay the
//! gateway's own.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

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

#[tokio::test]
async fn scraped_values_move_with_logins_requests_refusals_routing_and_events() {
    let gw = TestGateway::start().await;
    let before = gw.scrape().await;
    assert!(
        before.contains("HTTP/1.1 200 OK\r\n")
            && before.contains("Content-Type: application/openmetrics-text"),
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
    let mut provider = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    provider
        .ok("adjunct.register", json!({"namespaces": ["cti"]}))
        .await;

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
        ("adjunct_gateway_events_delivered_total", 1.0),
        ("adjunct_gateway_events_dropped_total", 0.0),
        ("adjunct_gateway_config_reloads_total{outcome=\"ok\"}", 1.0),
        ("adjunct_gateway_config_reloads_total{outcome=\"refused\"}", 1.0),
    ] {
        assert_eq!(value(&text, series), want, "{series}");
    }
    assert!(value(&text, "adjunct_gateway_outbound_queue_depth_count") >= 2.0);
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

//! The example CTI provider (examples/cti_provider.rs) behaves like a real
//! application server: run as a real process against a real gateway, it
//! survives the gateway restarting on the same port (close 1001, then
//! refused connects), resumes with its token, falls back to the password
//! when the token is refused, registers again, never prints an error for a
//! normal shutdown, and exits 0 on Ctrl-C.
//!
//! The example is built by the test itself (`cargo build --example
//! cti_provider`), so `cargo test --test provider_example` works alone.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use adjunct_gateway::config::Config;
use common::*;
use serde_json::json;
use support::ExampleProvider;

async fn start_in(config_path: &Path) -> adjunct_gateway::Running {
    adjunct_gateway::start(Config::load(config_path).unwrap())
        .await
        .unwrap()
}

/// Routes `cti.make_call` until a provider answers (at most 30 s): proves
/// the provider is registered with this gateway. Returns the call id.
async fn make_call_when_served(port: u16, ca_pem: &str) -> u64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut portal = ws_connect(addr, ca_pem, "/portal", &[]).await.unwrap();
    portal
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = portal
            .call("cti.make_call", json!({"from": "201", "to": "202"}))
            .await;
        if let Some(id) = r["result"]["callId"].as_u64() {
            return id;
        }
        assert_eq!(code(&r), -32004, "{r}");
        assert!(Instant::now() < deadline, "the provider never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_provider_reconnects_resumes_and_stops_cleanly_on_ctrl_c() {
    adjunct_gateway::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, ca_pem) = write_config(dir.path(), "", "");
    let gw = start_in(&config_path).await;
    let port = gw.addr.port();
    // Restarts bind the same port, as a real restart does.
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
            1,
        ),
    )
    .unwrap();

    let mut provider = ExampleProvider::spawn(port, "app1", APP_PW, &dir.path().join("ca.pem"));
    let first = make_call_when_served(port, &ca_pem).await;
    provider.wait_for_stdout("(password)", 1).await;

    // A normal restart: 1001, a gap in which connects are refused, then the
    // same gateway (same resume key) again. The provider resumes by token.
    gw.shutdown().await;
    provider.wait_for_stdout("cannot reach", 1).await;
    let gw = start_in(&config_path).await;
    let second = make_call_when_served(port, &ca_pem).await;
    assert!(
        second > first,
        "calls survive the reconnect: {first}, {second}"
    );
    let out = provider.stdout();
    assert!(out.contains("gateway going away (1001"), "{out}");
    assert!(out.contains("(resume token)"), "{out}");
    assert_eq!(out.matches("registered for cti.*").count(), 2, "{out}");

    // A gateway with a new resume key refuses the token: the provider logs
    // in with the password instead.
    gw.shutdown().await;
    std::fs::remove_file(dir.path().join("resume.key")).unwrap();
    let gw = start_in(&config_path).await;
    make_call_when_served(port, &ca_pem).await;
    let out = provider.stdout();
    assert!(out.contains("the resume token was refused"), "{out}");
    assert_eq!(out.matches("(password)").count(), 2, "{out}");

    let status = provider.interrupt().await;
    let (out, err) = (provider.stdout(), provider.stderr());
    assert_eq!(status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.ends_with("stopped\n"), "{out}");
    // Restarts are routine: nothing at all on stderr.
    assert!(err.is_empty(), "stderr:\n{err}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_password_ends_the_example_with_status_1_and_one_line() {
    let gw = TestGateway::start().await;
    let mut provider = ExampleProvider::spawn(
        gw.addr.port(),
        "app1",
        "wrong-Pass-9",
        &gw.dir.path().join("ca.pem"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = provider.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the provider kept retrying a refused password"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
    let err = provider.stderr();
    assert!(
        err.starts_with("cti_provider: error: the gateway refused app1's password (401)")
            && err.lines().count() == 1,
        "{err}"
    );
    gw.shutdown().await;
}

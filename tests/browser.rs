//! The demo page (assets/portal.html) in real headless Chromium against a
//! real gateway and the real example CTI provider (examples/cti_provider.rs):
//! the CTI panel makes, answers, holds and clears a call and shows every
//! `cti.call.*` event; a TURN server that never answers is reported within
//! 2 s, naming its address; the page logs no console error (its CSP
//! included). The coturn relay check of the same page is in tests/turn.rs.
//! scripts/test installs chromium, node and playwright-core.

mod common;
#[path = "browser/support.rs"]
mod support;

use common::*;
use serde_json::Value;
use support::{sign_in_on_page, ExampleProvider};

/// The JSON line portal.mjs prints on stdout.
fn report(out: &str) -> Value {
    out.lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON report in: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_page_drives_calls_through_the_example_provider_and_reports_a_silent_turn_server()
{
    // A UDP port that is bound, so nothing reports it unreachable, and never
    // answers: a TURN server that is down behind a firewall.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let turn_addr = silent.local_addr().unwrap().to_string();
    let gw = TestGateway::start_with(
        "",
        &format!(
            "[network_topology]\nturn_urls = [\"turn:{turn_addr}?transport=udp\"]\n\n[turn]\nsecrets = [\"browser-secret\"]\n\n[portal]\nallowed_origins = []\ndemo_page = true\n"
        ),
    )
    .await;
    let port = gw.addr.port();
    let mut provider = ExampleProvider::spawn(port, "app1", APP_PW, &gw.dir.path().join("ca.pem"));
    provider.wait_for_stdout("registered for cti.*", 1).await;
    let url = format!("https://127.0.0.1:{port}/");

    let flags = ["--expect-turn-unreachable", &turn_addr, "--cti"];
    let (ok, out) = sign_in_on_page(&url, "portal1", PORTAL_PW, &flags);
    assert!(ok, "{out}");
    let r = report(&out);
    assert_eq!(r["state"], "turn-unreachable", "{out}");
    let status = r["status"].as_str().unwrap();
    assert!(
        status.contains(&format!("No answer from the TURN server at {turn_addr}")),
        "{status}"
    );
    assert!(r["turnMs"].as_u64().unwrap() <= 2000, "{out}");
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{out}");
    assert_eq!(r["cspViolations"], serde_json::json!([]), "{out}");
    // Every event of the call, per extension, in order, as the page shows them.
    let shown = |topic: &str| -> Vec<String> {
        r["ctiEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["topic"] == topic)
            .map(|e| e["state"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        shown("cti.call.201"),
        ["dialing", "connected", "held", "cleared"],
        "{out}"
    );
    assert_eq!(
        shown("cti.call.202"),
        ["ringing", "connected", "held", "cleared"],
        "{out}"
    );
    // The provider really served them.
    let served = provider.stdout();
    for method in ["cti.make_call", "cti.answer", "cti.hold", "cti.clear"] {
        assert!(served.contains(&format!("portal1 -> {method}")), "{served}");
    }

    // turn1 holds TURN Server Connection only: the panel says which right
    // call control needs, and its controls are disabled.
    let flags = ["--expect-turn-unreachable", &turn_addr, "--expect-cti-off"];
    let (ok, out) = sign_in_on_page(&url, "turn1", TURN_PW, &flags);
    assert!(ok, "{out}");
    let r = report(&out);
    assert_eq!(
        r["ctiStatus"], "Call control needs the right one-X CTI API, which turn1 does not hold.",
        "{out}"
    );
    assert_eq!(r["ctiEvents"], serde_json::json!([]), "{out}");

    assert_eq!(provider.interrupt().await.code(), Some(0));
    assert!(provider.stderr().is_empty(), "{}", provider.stderr());
    drop(silent);
    gw.shutdown().await;
}

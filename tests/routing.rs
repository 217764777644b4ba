//! Providers and events (issue 4): routed round trips, rights on both sides,
//! provider loss, timeouts, load sharing, the pending cap, wildcard topics,
//! revocation at delivery, and slow subscribers that must not slow others.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

async fn provider(gw: &TestGateway) -> Client {
    gw.cti_provider().await
}

/// Reads the next routed request a provider receives.
async fn next_request(p: &mut Client) -> Value {
    let v = p.recv().await;
    assert!(v.get("method").is_some(), "expected a routed request: {v}");
    v
}

#[tokio::test]
async fn a_routed_round_trip_keeps_the_callers_id() {
    let gw = TestGateway::start().await;
    let mut prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "portal1", PORTAL_PW).await;
    let caller_session = caller.ok("session.info", json!(null)).await["sessionId"].clone();
    caller.send_text(r#"{"jsonrpc":"2.0","id":"call-1","method":"cti.make_call","params":{"from":"201","to":"202"}}"#).await;
    let req = next_request(&mut prov).await;
    assert_eq!(req["method"], "cti.make_call");
    assert_eq!(req["params"], json!({"from": "201", "to": "202"}));
    assert_eq!(req["caller"]["user"], "portal1");
    assert_eq!(req["caller"]["sessionId"], caller_session);
    assert_eq!(
        req["caller"]["rights"],
        json!(["one-X CTI API", "TURN Server Connection"])
    );
    let gid = req["id"].clone();
    assert_ne!(
        gid,
        json!("call-1"),
        "the provider must see a gateway-chosen id"
    );
    prov.send_text(json!({"jsonrpc": "2.0", "id": gid, "result": {"callId": 7}}).to_string())
        .await;
    let answer = caller.recv().await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": "call-1", "result": {"callId": 7}})
    );

    // Errors come back as the provider sent them, again with the caller's id.
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":99,"method":"cti.hold","params":{"call":7}}"#)
        .await;
    let req = next_request(&mut prov).await;
    prov.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": 4001, "message": "no such call"}}).to_string()).await;
    assert_eq!(
        caller.recv().await,
        json!({"jsonrpc": "2.0", "id": 99, "error": {"code": 4001, "message": "no such call"}})
    );

    // An answer to an id the provider was never given is ignored.
    prov.send_text(json!({"jsonrpc": "2.0", "id": 123456, "result": 1}).to_string())
        .await;
    assert!(caller
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn rights_are_checked_on_both_sides() {
    let gw = TestGateway::start().await;
    let _prov = provider(&gw).await;
    let mut no_cti = gw.login("/portal", "turn1", TURN_PW).await;
    let (code_, e) = no_cti.err("cti.make_call", json!({})).await;
    assert_eq!(
        (code_, e["data"]["right"].clone()),
        (-32003, json!("one-X CTI API"))
    );
    let (code_, e) = no_cti
        .err("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    assert_eq!(
        (code_, e["data"]["right"].clone()),
        (-32003, json!("one-X CTI API"))
    );
    // A portal session may not act as a provider or publisher.
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    for (m, p) in [
        ("adjunct.register", json!({"namespaces": ["cti"]})),
        (
            "adjunct.publish",
            json!({"topic": "cti.call.1", "data": {}}),
        ),
        ("adjunct.unregister", json!({"namespaces": ["cti"]})),
    ] {
        let (code_, e) = portal.err(m, p).await;
        assert_eq!(code_, -32003, "{m}");
        assert_eq!(e["data"]["right"], "Adjunct Server Connection");
    }
    // Unknown namespaces and malformed topics are invalid params.
    assert_eq!(
        portal
            .err("events.subscribe", json!({"topics": ["nope.x"]}))
            .await
            .0,
        -32602
    );
    assert_eq!(
        portal
            .err("events.subscribe", json!({"topics": ["cti..x"]}))
            .await
            .0,
        -32602
    );
    assert_eq!(
        portal
            .err("events.subscribe", json!({"topics": [1]}))
            .await
            .0,
        -32602
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn no_provider_and_provider_loss_answer_32004() {
    let gw = TestGateway::start().await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    let (code_, e) = caller.err("cti.make_call", json!({})).await;
    assert_eq!(
        (code_, e["message"].clone()),
        (-32004, json!("no provider"))
    );

    let mut prov = provider(&gw).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":1,"method":"cti.make_call"}"#)
        .await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":2,"method":"cti.answer"}"#)
        .await;
    next_request(&mut prov).await;
    next_request(&mut prov).await;
    let started = Instant::now();
    drop(prov); // the provider's connection dies mid-request
    let a = caller.recv().await;
    let b = caller.recv().await;
    assert_eq!(code(&a), -32004);
    assert_eq!(code(&b), -32004);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "pending requests must fail at once"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_request_times_out_with_32005() {
    let gw = TestGateway::start_with("", "[routing]\nrequest_timeout_ms = 300\n").await;
    let mut prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    let started = Instant::now();
    let (code_, _) = caller.err("cti.make_call", json!({})).await;
    assert_eq!(code_, -32005);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The late answer is dropped, not delivered twice.
    let req = next_request(&mut prov).await;
    prov.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": 1}).to_string())
        .await;
    assert!(caller
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn two_providers_share_the_load_and_no_request_goes_to_both() {
    let gw = TestGateway::start().await;
    let mut p1 = provider(&gw).await;
    let mut p2 = provider(&gw).await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    for i in 0..10 {
        caller
            .send_text(json!({"jsonrpc": "2.0", "id": i, "method": "cti.ping"}).to_string())
            .await;
    }
    // Collect everything first (answering would change who has fewest pending).
    let mut seen = std::collections::HashSet::new();
    let mut got: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for (n, p) in [&mut p1, &mut p2].into_iter().enumerate() {
        while let Some(v) = p.recv_within(Duration::from_millis(500)).await {
            assert!(
                seen.insert(v["id"].to_string()),
                "a request went to two providers"
            );
            got[n].push(v);
        }
    }
    assert_eq!(
        [got[0].len(), got[1].len()],
        [5, 5],
        "fewest pending first alternates between idle providers"
    );
    for (n, p) in [&mut p1, &mut p2].into_iter().enumerate() {
        for v in &got[n] {
            p.send_text(json!({"jsonrpc": "2.0", "id": v["id"], "result": n}).to_string())
                .await;
        }
    }
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(caller.recv().await["id"].as_i64().unwrap());
    }
    ids.sort();
    assert_eq!(ids, (0..10).collect::<Vec<_>>());
    gw.shutdown().await;
}

/// A batch element answered while another is still owed waits in the
/// batch's array until it is sent, and keeps its pending slot until then:
/// the pending bound covers the answers a caller's batches hold.
#[tokio::test]
async fn a_batchs_held_answers_count_as_pending() {
    let gw = TestGateway::start_with("", "[limits]\nmax_pending_per_session = 2\n").await;
    let mut prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    caller
        .send_text(r#"[{"jsonrpc":"2.0","id":1,"method":"cti.a"},{"jsonrpc":"2.0","id":2,"method":"cti.b"}]"#)
        .await;
    let a = next_request(&mut prov).await;
    let b = next_request(&mut prov).await;
    let (first, second) = if a["method"] == "cti.a" {
        (a, b)
    } else {
        (b, a)
    };
    prov.send_text(json!({"jsonrpc": "2.0", "id": first["id"], "result": "a"}).to_string())
        .await;
    // Lets the answer reach the gather before the next request (ordering
    // only: were it later, the slot would be held either way).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code_, e) = caller.err("cti.c", json!({})).await;
    assert_eq!(
        (code_, e["message"].clone()),
        (-32006, json!("too many pending requests")),
        "the answered element still holds its slot"
    );
    prov.send_text(json!({"jsonrpc": "2.0", "id": second["id"], "result": "b"}).to_string())
        .await;
    let array = caller.recv().await;
    assert_eq!(
        array,
        json!([
            {"jsonrpc": "2.0", "id": 1, "result": "a"},
            {"jsonrpc": "2.0", "id": 2, "result": "b"}
        ])
    );
    // Both slots are free again.
    for (id, method) in [(3, "cti.d"), (4, "cti.e")] {
        caller
            .send_text(json!({"jsonrpc": "2.0", "id": id, "method": method}).to_string())
            .await;
    }
    for _ in 0..2 {
        let r = next_request(&mut prov).await;
        prov.send_text(json!({"jsonrpc": "2.0", "id": r["id"], "result": 0}).to_string())
            .await;
    }
    let mut ids = vec![
        caller.recv().await["id"].clone(),
        caller.recv().await["id"].clone(),
    ];
    ids.sort_by_key(|v| v.as_i64());
    assert_eq!(ids, [json!(3), json!(4)]);
    gw.shutdown().await;
}

#[tokio::test]
async fn pending_requests_are_capped_per_session() {
    let gw = TestGateway::start_with("", "[limits]\nmax_pending_per_session = 2\n").await;
    let _prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":1,"method":"cti.a"}"#)
        .await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":2,"method":"cti.b"}"#)
        .await;
    let (code_, e) = caller.err("cti.c", json!({})).await;
    assert_eq!(
        (code_, e["message"].clone()),
        (-32006, json!("too many pending requests"))
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn wildcard_topics_and_single_delivery() {
    let gw = TestGateway::start().await;
    let mut publisher = provider(&gw).await;
    let mut wild = gw.login("/portal", "portal1", PORTAL_PW).await;
    let mut exact = gw.login("/portal", "cti1", CTI_PW).await;
    assert_eq!(
        wild.ok(
            "events.subscribe",
            json!({"topics": ["cti.call.*", "cti.call.201"]})
        )
        .await,
        json!({"subscribed": ["cti.call.*", "cti.call.201"]})
    );
    exact
        .ok("events.subscribe", json!({"topics": ["cti.call.201"]}))
        .await;

    let r = publisher
        .ok(
            "adjunct.publish",
            json!({"topic": "cti.call.201", "data": {"state": "ringing"}}),
        )
        .await;
    assert_eq!(r, json!({"delivered": 2}));
    let ev = wild.recv().await;
    assert_eq!(
        ev,
        json!({"jsonrpc": "2.0", "method": "event", "params": {"topic": "cti.call.201", "data": {"state": "ringing"}}})
    );
    assert_eq!(exact.recv().await["params"]["topic"], "cti.call.201");
    assert!(
        wild.recv_within(Duration::from_millis(200)).await.is_none(),
        "delivered twice"
    );

    // Deeper topics match `cti.call.*`; siblings do not.
    assert_eq!(
        publisher
            .ok(
                "adjunct.publish",
                json!({"topic": "cti.call.202.leg", "data": 1})
            )
            .await,
        json!({"delivered": 1})
    );
    assert_eq!(wild.recv().await["params"]["topic"], "cti.call.202.leg");
    assert_eq!(
        publisher
            .ok(
                "adjunct.publish",
                json!({"topic": "cti.agent.7", "data": 1})
            )
            .await,
        json!({"delivered": 0})
    );

    wild.ok(
        "events.unsubscribe",
        json!({"topics": ["cti.call.*", "cti.call.201"]}),
    )
    .await;
    assert_eq!(
        publisher
            .ok(
                "adjunct.publish",
                json!({"topic": "cti.call.201", "data": 2})
            )
            .await,
        json!({"delivered": 1})
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_takes_the_right_away_stops_events_at_once() {
    let gw = TestGateway::start().await;
    let mut publisher = provider(&gw).await;
    let mut sub = gw.login("/portal", "portal1", PORTAL_PW).await;
    sub.ok("events.subscribe", json!({"topics": ["cti.*"]}))
        .await;
    assert_eq!(
        publisher
            .ok("adjunct.publish", json!({"topic": "cti.call.1", "data": 1}))
            .await["delivered"],
        1
    );
    sub.recv().await;
    gw.edit_and_reload(|t| {
        t.replace(
            "rights = [\"TURN Server Connection\", \"one-X CTI API\"]",
            "rights = [\"TURN Server Connection\"]",
        )
    })
    .unwrap();
    assert_eq!(
        publisher
            .ok("adjunct.publish", json!({"topic": "cti.call.1", "data": 2}))
            .await["delivered"],
        0
    );
    assert!(sub.recv_within(Duration::from_millis(300)).await.is_none());
    // The session itself lives on (it kept its connection right).
    assert_eq!(sub.ok("session.ping", json!(null)).await, json!({}));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_subscriber_loses_events_not_the_others_latency() {
    let gw = TestGateway::start_with("", "[limits]\noutbound_queue = 64\n").await;
    let mut publisher = provider(&gw).await;
    let mut slow = gw.login("/portal", "portal1", PORTAL_PW).await;
    let mut fast = gw.login("/portal", "cti1", CTI_PW).await;
    slow.ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    fast.ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;

    // `slow` reads nothing; 2,000 events of 8 KiB (16 MB) overflow every
    // buffer on its way. After each batch of 16 the fast subscriber must have
    // every event of it, promptly.
    let pad = "x".repeat(8 * 1024);
    let total = 2000;
    let batch = 16;
    let mut worst = Duration::ZERO;
    for start in (0..total).step_by(batch) {
        let started = Instant::now();
        for i in start..start + batch {
            publisher
                .send_text(json!({"jsonrpc": "2.0", "id": i, "method": "adjunct.publish", "params": {"topic": "cti.call.1", "data": {"n": i, "pad": pad}}}).to_string())
                .await;
        }
        for i in start..start + batch {
            let v = fast.recv().await;
            assert_eq!(v["method"], "event", "{}", v["method"]);
            assert_eq!(v["params"]["data"]["n"], i);
        }
        worst = worst.max(started.elapsed());
        for _ in 0..batch {
            assert!(
                publisher.recv().await["result"]["delivered"]
                    .as_u64()
                    .unwrap()
                    >= 1
            );
        }
    }
    assert!(
        worst < Duration::from_secs(5),
        "the fast subscriber waited {worst:?} for a batch"
    );

    // Now `slow` reads: it gets what fit, then an event.lost with the count.
    let mut events = 0;
    let lost = loop {
        let v = slow.recv().await;
        match v["method"].as_str() {
            Some("event") => events += 1,
            Some("event.lost") => break v["params"]["count"].as_u64().unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(lost > 0);
    assert!(events < total);
    // The metrics saw the drops too.
    let dropped = sample(&gw.scrape().await, "adjunct_gateway_events_dropped_total").unwrap();
    assert!(dropped >= lost as f64, "{dropped} dropped, {lost} lost");
    gw.shutdown().await;
}

/// examples/cti_provider.rs, run as a real process against a real gateway.
#[tokio::test]
async fn the_example_cti_provider_serves_calls_and_publishes_events() {
    let gw = TestGateway::start().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_adjunct-gateway"))
        .parent()
        .unwrap()
        .join("examples/cti_provider");
    assert!(
        bin.exists(),
        "build the example first: cargo build --example cti_provider ({})",
        bin.display()
    );
    let ca = gw.dir.path().join("ca.pem");
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "--url",
            &format!("wss://localhost:{}/adjunct", gw.addr.port()),
            "--user",
            "app1",
            "--ca",
            ca.to_str().unwrap(),
        ])
        .env("ADJUNCT_GATEWAY_PASSWORD", APP_PW)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    portal
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    // Wait (bounded) for the provider to register.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = portal.call("cti.list", json!({})).await;
        if r.get("result").is_some() {
            break;
        }
        assert_eq!(code(&r), -32004);
        assert!(Instant::now() < deadline, "the example never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let call = portal
        .ok("cti.make_call", json!({"from": "201", "to": "202"}))
        .await;
    let id = call["callId"].as_u64().unwrap();
    let mut states = Vec::new();
    while states.len() < 2 {
        let v = portal.recv().await;
        assert_eq!(v["method"], "event");
        states.push((
            v["params"]["topic"].as_str().unwrap().to_owned(),
            v["params"]["data"]["state"].as_str().unwrap().to_owned(),
        ));
    }
    states.sort();
    assert_eq!(
        states,
        [
            ("cti.call.201".to_owned(), "dialing".to_owned()),
            ("cti.call.202".to_owned(), "ringing".to_owned())
        ]
    );
    assert_eq!(
        portal.ok("cti.answer", json!({"callId": id})).await["state"],
        "connected"
    );
    assert_eq!(portal.err("cti.hold", json!({"callId": 999})).await.0, 4004);
    child.kill().await.unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn routed_requests_in_a_batch_are_answered_inside_its_one_array() {
    // `pbx` is a routed namespace nobody serves; 1.5 s is long enough to
    // see the array wait for its slowest element, short enough for a test.
    let gw = TestGateway::start_with(
        "",
        "[routing]\nrequest_timeout_ms = 1500\n\n[[catalog]]\nnamespace = \"pbx\"\nany_of = [\"one-X CTI API\"]\n",
    )
    .await;
    let mut prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "cti1", CTI_PW).await;
    let started = Instant::now();
    caller
        .send_text(
            json!([
                {"jsonrpc": "2.0", "id": "a", "method": "cti.make_call", "params": {"from": "201"}},
                {"jsonrpc": "2.0", "id": 1, "method": "session.ping"},
                {"jsonrpc": "2.0", "method": "session.ping"},
                {"jsonrpc": "2.0", "id": "b", "method": "cti.hold", "params": [7]},
                {"jsonrpc": "2.0", "id": "c", "method": "pbx.dial"},
                {"jsonrpc": "2.0", "id": "d", "method": "cti.never_answered"},
                {"jsonrpc": "2.0", "method": "cti.note"},
            ])
            .to_string(),
        )
        .await;
    let mut asked = Vec::new();
    for _ in 0..4 {
        asked.push(next_request(&mut prov).await);
    }
    let methods: Vec<&str> = asked
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "cti.make_call",
            "cti.hold",
            "cti.never_answered",
            "cti.note"
        ]
    );
    assert!(
        asked[3].get("id").is_none(),
        "a notification owes no answer"
    );
    // Answered out of order; the third is never answered.
    for (req, result) in [
        (&asked[1], json!({"held": 7})),
        (&asked[0], json!({"callId": 9})),
    ] {
        prov.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": result}).to_string())
            .await;
    }
    // The array waits for its last element; the session serves meanwhile.
    let pong = caller.call("session.ping", json!(null)).await;
    assert_eq!(pong["result"], json!({}), "{pong}");
    assert!(
        caller.events.is_empty(),
        "part of the batch came early: {:?}",
        caller.events
    );
    let array = caller.recv().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the batch was answered before its last element timed out: {array}"
    );
    let items = array
        .as_array()
        .unwrap_or_else(|| panic!("not one array: {array}"));
    let ids: Vec<&Value> = items.iter().map(|i| &i["id"]).collect();
    assert_eq!(
        ids,
        [
            &json!("a"),
            &json!(1),
            &json!("b"),
            &json!("c"),
            &json!("d")
        ],
        "{array}"
    );
    assert_eq!(items[0]["result"], json!({"callId": 9}));
    assert_eq!(items[1]["result"], json!({}));
    assert_eq!(items[2]["result"], json!({"held": 7}));
    assert_eq!(
        (code(&items[3]), items[3]["error"]["message"].clone()),
        (-32004, json!("no provider"))
    );
    assert_eq!(code(&items[4]), -32005);
    // Nothing of the batch arrives on its own, before or after.
    assert!(caller
        .recv_within(Duration::from_millis(300))
        .await
        .is_none());

    // A batch of routed requests only: its array comes once both are in; a
    // provider lost mid-batch answers its elements with -32004 in it.
    caller
        .send_text(
            json!([
                {"jsonrpc": "2.0", "id": 10, "method": "cti.a"},
                {"jsonrpc": "2.0", "id": 11, "method": "cti.b"},
            ])
            .to_string(),
        )
        .await;
    let first = next_request(&mut prov).await;
    next_request(&mut prov).await;
    prov.send_text(json!({"jsonrpc": "2.0", "id": first["id"], "result": true}).to_string())
        .await;
    drop(prov);
    let array = caller.recv().await;
    assert_eq!(
        array[0],
        json!({"jsonrpc": "2.0", "id": 10, "result": true})
    );
    assert_eq!(array[1]["id"], 11);
    assert_eq!(
        (code(&array[1]), array[1]["error"]["message"].clone()),
        (-32004, json!("provider disconnected"))
    );
    assert_eq!(array.as_array().map(Vec::len), Some(2), "{array}");
    gw.shutdown().await;
}

/// With `max_message_bytes` above 4 MiB, messages that large go through:
/// a routed answer to the caller, an event to a subscriber, and a batch's
/// array of such answers. Before, tungstenite's write buffer was bounded at
/// 4 MiB (then at twice the message limit), so writing them failed and the
/// receiving session was dropped.
#[tokio::test]
async fn messages_past_four_mib_go_through_when_the_limit_allows_them() {
    let gw = TestGateway::start_with(
        "max_message_bytes = 8388608",
        "[limits]\nqueue_bytes = 33554432\n",
    )
    .await;
    let mut prov = provider(&gw).await;
    let mut caller = gw.login("/portal", "portal1", PORTAL_PW).await;
    let pad = "z".repeat(5 << 20);

    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"big","method":"cti.make_call","params":{}}"#)
        .await;
    let req = next_request(&mut prov).await;
    prov.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"pad": pad}}).to_string())
        .await;
    let answer = caller.recv().await;
    assert_eq!(answer["id"], "big", "the caller's answer");
    assert_eq!(
        answer["result"]["pad"].as_str().map(str::len),
        Some(5 << 20)
    );

    caller
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    let r = prov
        .ok(
            "adjunct.publish",
            json!({"topic": "cti.call.9", "data": {"pad": pad}}),
        )
        .await;
    assert_eq!(r, json!({"delivered": 1}));
    let ev = caller.recv().await;
    assert_eq!(ev["params"]["topic"], "cti.call.9");
    assert_eq!(
        ev["params"]["data"]["pad"].as_str().map(str::len),
        Some(5 << 20)
    );

    // A batch's array is larger still: three answers of 6 MiB (18 MiB, more
    // than twice the message limit).
    caller
        .send_text(r#"[{"jsonrpc":"2.0","id":1,"method":"cti.a"},{"jsonrpc":"2.0","id":2,"method":"cti.b"},{"jsonrpc":"2.0","id":3,"method":"cti.c"}]"#)
        .await;
    let six = "s".repeat(6 << 20);
    for _ in 0..3 {
        let r = next_request(&mut prov).await;
        prov.send_text(json!({"jsonrpc": "2.0", "id": r["id"], "result": six}).to_string())
            .await;
    }
    let array = caller.recv().await;
    let lens: Vec<Option<usize>> = array
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["result"].as_str().map(str::len))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(lens, [Some(6 << 20); 3], "the batch's array");
    // Still served.
    caller.ok("session.ping", json!({})).await;
    gw.shutdown().await;
}

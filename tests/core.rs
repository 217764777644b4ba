//! Gateway core (issue 2): endpoints, both login paths, the /adjunct gate,
//! every error code, batches, auth timeout, 1009/1003, reload revocation and
//! graceful shutdown — all through real TLS WebSocket sessions.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn http_paths_answer_as_documented() {
    let gw = TestGateway::start().await;
    let (status, body) = gw.http("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(body.ends_with("ok\n"), "{body}");
    let (status, body) = gw.http("GET /adjunct HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 426);
    assert!(body.contains("Upgrade: websocket"), "{body}");
    assert_eq!(
        gw.http("GET /portal HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
        426
    );
    assert_eq!(
        gw.http("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await.0,
        404
    );
    let (status, body) = gw
        .http("GET /portal HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        .await;
    assert_eq!(status, 426);
    assert!(body.contains("Sec-WebSocket-Version: 13"));
    gw.shutdown().await;
}

#[tokio::test]
async fn basic_auth_on_the_upgrade() {
    let gw = TestGateway::start().await;
    // Right credentials on /adjunct: authenticated from the first frame.
    let mut c = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    let info = c.ok("session.info", json!(null)).await;
    assert_eq!(info["user"], "app1");
    assert_eq!(info["endpoint"], "adjunct");
    assert_eq!(info["groups"], json!(["Application Servers"]));
    assert_eq!(
        info["rights"],
        json!(["one-X CTI API", "Adjunct Server Connection"])
    );
    assert_eq!(info["sessionId"].as_str().unwrap().len(), 16);

    // Wrong password, unknown user, disabled user: 401 with the challenge.
    for (user, pw) in [("app1", "wrong"), ("ghost", APP_PW), ("off1", OFF_PW)] {
        let auth = basic(user, pw);
        let req = format!("GET /adjunct HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: {auth}\r\n\r\n");
        let (status, body) = gw.http(&req).await;
        assert_eq!(status, 401, "{user}");
        assert!(
            body.contains("WWW-Authenticate: Basic realm=\"adjunct-gateway\""),
            "{body}"
        );
    }
    // Good credentials but no Adjunct Server Connection: 403 on /adjunct ...
    let req = format!("GET /adjunct HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: {}\r\n\r\n", basic("portal1", PORTAL_PW));
    assert_eq!(gw.http(&req).await.0, 403);
    // ... and fine on /portal.
    let mut p = gw
        .ws(
            "/portal",
            &[("Authorization", &basic("portal1", PORTAL_PW))],
        )
        .await
        .unwrap();
    assert_eq!(
        p.ok("session.info", json!(null)).await["endpoint"],
        "portal"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn session_login_path() {
    let gw = TestGateway::start().await;
    let mut c = gw.ws("/portal", &[]).await.unwrap();
    // Anything but login before authentication: -32001.
    assert_eq!(c.err("session.info", json!(null)).await.0, -32001);
    assert_eq!(c.err("session.ping", json!(null)).await.0, -32001);
    assert_eq!(c.err("turn.credentials", json!(null)).await.0, -32001);
    // Wrong password, unknown user, disabled account: the same -32002.
    for (user, pw) in [("portal1", "nope"), ("ghost", PORTAL_PW), ("off1", OFF_PW)] {
        let (code, e) = c
            .err("session.login", json!({"user": user, "password": pw}))
            .await;
        assert_eq!(code, -32002);
        assert_eq!(e["message"], "login failed");
        assert!(e.get("data").is_none(), "no detail may leak: {e}");
    }
    let r = c
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    assert_eq!(r["user"], "portal1");
    assert_eq!(r["groups"], json!(["Portal Users"]));
    assert_eq!(
        r["rights"],
        json!(["one-X CTI API", "TURN Server Connection"])
    );
    assert_eq!(c.ok("session.ping", json!(null)).await, json!({}));
    assert_eq!(
        c.ok("session.info", json!(null)).await["sessionId"],
        r["sessionId"]
    );
    // A second login: -32600.
    assert_eq!(
        c.err(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW})
        )
        .await
        .0,
        -32600
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn adjunct_login_without_the_connection_right_is_refused_and_closed() {
    let gw = TestGateway::start().await;
    let mut c = gw.ws("/adjunct", &[]).await.unwrap();
    let (code, e) = c
        .err(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    assert_eq!(code, -32003);
    assert_eq!(e["data"]["right"], "Adjunct Server Connection");
    assert_eq!(c.closed().await, Some(1008));
    // The same user may log in on /adjunct once it holds the right: app1 can.
    let mut ok = gw.login("/adjunct", "app1", APP_PW).await;
    assert_eq!(
        ok.ok("session.info", json!(null)).await["endpoint"],
        "adjunct"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn every_error_code_of_the_core() {
    let gw = TestGateway::start().await;
    let mut c = gw.login("/portal", "cti1", CTI_PW).await;
    // -32700 parse error, id null.
    c.send_text("{\"jsonrpc\":").await;
    let v = c.recv().await;
    assert_eq!(code(&v), -32700);
    assert_eq!(v["id"], json!(null));
    // -32600 invalid request, id echoed when it can be found.
    c.send_text(r#"{"jsonrpc":"1.0","id":"a","method":"session.ping"}"#)
        .await;
    let v = c.recv().await;
    assert_eq!((code(&v), v["id"].clone()), (-32600, json!("a")));
    c.send_text("42").await;
    assert_eq!(code(&c.recv().await), -32600);
    // -32601 method not found.
    assert_eq!(c.err("session.nope", json!(null)).await.0, -32601);
    assert_eq!(c.err("nonsense", json!({})).await.0, -32601);
    // -32602 invalid params (a param of the wrong type).
    assert_eq!(
        c.err("events.subscribe", json!({"topics": "cti.call.1"}))
            .await
            .0,
        -32602
    );
    // -32003 forbidden, naming the missing right.
    let (code_, e) = c.err("turn.credentials", json!({})).await;
    assert_eq!(code_, -32003);
    assert_eq!(e["data"]["right"], "TURN Server Connection");
    // A portal session may not call adjunct.* even with the right elsewhere.
    assert_eq!(
        c.err("adjunct.register", json!({"namespaces": ["cti"]}))
            .await
            .0,
        -32003
    );
    // Ids of every JSON type: tests/bad_input.rs. A notification gets nothing.
    c.send_text(r#"{"jsonrpc":"2.0","method":"session.ping"}"#)
        .await;
    assert!(
        c.recv_within(Duration::from_millis(300)).await.is_none(),
        "a notification was answered"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_params_are_32602() {
    let gw = TestGateway::start().await;
    let mut c = gw.ws("/portal", &[]).await.unwrap();
    // The message names the member and what it must be, in the protocol's
    // words, never the decoder's (`invalid type: integer, expected a string`).
    for (params, says) in [
        (
            json!({"user": 5, "password": "x"}),
            "params.user must be a string",
        ),
        (
            json!({"user": "portal1"}),
            "params.password is required and must be a string",
        ),
        (
            json!({"user": "portal1", "password": "x", "extra": 1}),
            "params.extra is not a parameter of session.login (it takes user, password)",
        ),
        (
            json!(["portal1", 5]),
            "params[1] (password) must be a string",
        ),
    ] {
        let (code_, e) = c.err("session.login", params).await;
        assert_eq!((code_, e["message"].as_str()), (-32602, Some(says)), "{e}");
    }
    let mut t = gw.login("/portal", "portal1", PORTAL_PW).await;
    let (code_, e) = t.err("turn.credentials", json!({"ttl": "x"})).await;
    assert_eq!(code_, -32602);
    assert_eq!(
        e["message"],
        "params.ttl must be a non-negative integer (or be left out)"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn batches_are_answered_element_by_element() {
    let gw = TestGateway::start().await;
    let mut c = gw.login("/portal", "cti1", CTI_PW).await;
    c.send_text(r#"[{"jsonrpc":"2.0","id":1,"method":"session.ping"},{"jsonrpc":"2.0","id":2,"method":"turn.credentials"},{"jsonrpc":"2.0","method":"session.ping"},{"jsonrpc":"2.0","id":3,"method":"nope"},5]"#).await;
    let v = c.recv().await;
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 4, "{v}");
    assert_eq!(arr[0]["result"], json!({}));
    assert_eq!(arr[1]["error"]["code"], -32003);
    assert_eq!(arr[2]["error"]["code"], -32601);
    assert_eq!(arr[3]["error"]["code"], -32600);
    // 33 elements: one -32600.
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"session.ping"}"#;
    c.send_text(format!("[{}]", vec![one; 33].join(","))).await;
    let v = c.recv().await;
    assert_eq!(code(&v), -32600);
    // Empty batch: -32600.
    c.send_text("[]").await;
    assert_eq!(code(&c.recv().await), -32600);
    // Only notifications: no answer at all.
    c.send_text(r#"[{"jsonrpc":"2.0","method":"session.ping"}]"#)
        .await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_sessions_time_out_with_1008() {
    let gw = TestGateway::start_with("auth_timeout_secs = 1", "").await;
    let mut c = gw.ws("/portal", &[]).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(c.closed().await, Some(1008));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // An authenticated session is not affected by the auth deadline.
    let mut ok = gw.login("/portal", "cti1", CTI_PW).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ok.ok("session.ping", json!(null)).await, json!({}));
    gw.shutdown().await;
}

#[tokio::test]
async fn oversize_closes_1009_and_binary_closes_1003() {
    let gw = TestGateway::start_with("max_message_bytes = 1024", "").await;
    let mut c = gw.login("/portal", "cti1", CTI_PW).await;
    c.send_text(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"session.ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(2000)
    ))
    .await;
    assert_eq!(c.closed().await, Some(1009));
    let mut b = gw.login("/portal", "cti1", CTI_PW).await;
    b.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(b.closed().await, Some(1003));
    // Everyone else carries on.
    let mut other = gw.login("/portal", "portal1", PORTAL_PW).await;
    assert_eq!(other.ok("session.ping", json!(null)).await, json!({}));
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_revokes_and_updates_live_sessions() {
    let gw = TestGateway::start().await;
    let mut app = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    let mut cti = gw.login("/portal", "cti1", CTI_PW).await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    assert_eq!(portal.ok("session.ping", json!(null)).await, json!({}));

    // Application Servers lose Adjunct Server Connection; cti1 is disabled;
    // Portal Users lose one-X CTI API but keep their connection.
    let report = gw
        .edit_and_reload(|t| {
            t.replace(
                "rights = [\"Adjunct Server Connection\", \"one-X CTI API\"]",
                "rights = [\"one-X CTI API\"]",
            )
            .replace(
                "rights = [\"TURN Server Connection\", \"one-X CTI API\"]",
                "rights = [\"TURN Server Connection\"]",
            )
            .replace(
                "groups = [\"CTI Only\"]",
                "groups = [\"CTI Only\"]\nenabled = false",
            )
        })
        .unwrap();
    assert_eq!(report.revoked, 2);
    assert_eq!(app.closed().await, Some(1008));
    assert_eq!(cti.closed().await, Some(1008));
    let info = portal.ok("session.info", json!(null)).await;
    assert_eq!(info["rights"], json!(["TURN Server Connection"]));

    // A config that fails validation is refused whole; the old one stays.
    let err = gw
        .edit_and_reload(|t| t.replace("\"TURN Server Connection\"]", "\"TURN Server Conection\"]"))
        .unwrap_err();
    assert!(err.contains("unknown service right"), "{err}");
    assert_eq!(
        portal.ok("session.info", json!(null)).await["rights"],
        json!(["TURN Server Connection"])
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_sessions_with_1001() {
    let gw = TestGateway::start().await;
    let mut a = gw.login("/portal", "cti1", CTI_PW).await;
    let mut b = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    let mut anon = gw.ws("/portal", &[]).await.unwrap();
    let addr = gw.addr;
    let stop = tokio::spawn(gw.shutdown());
    assert_eq!(a.closed().await, Some(1001));
    assert_eq!(b.closed().await, Some(1001));
    assert_eq!(anon.closed().await, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), stop)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

//! TURN credentials (issue 3) proven against real components: credentials
//! fetched from a running gateway over wss allocate a relay on a real coturn
//! (`turnserver` + `turnutils_uclient`, Debian package coturn), and the demo
//! page in a real headless Chromium gathers a `relay` candidate with them.
//! scripts/test installs coturn, chromium, node and playwright-core.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use support::{run_portal_script, sign_in_on_page};

/// A coturn server on 127.0.0.1 with a free UDP port, killed on drop.
struct Coturn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: apt-get install coturn chromium nodejs npm (see .ci/run)"
    );
}

impl Coturn {
    /// `auth`: the coturn options that choose the credential mechanism.
    fn start(auth: &[String]) -> Coturn {
        require("turnserver");
        require("turnutils_stunclient");
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let d = dir.path();
        let mut args: Vec<String> = [
            "-n",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
            "--listening-port",
            &port.to_string(),
            "--min-port",
            "49152",
            "--max-port",
            "65535",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--realm",
            "portal.test",
            "--allow-loopback-peers",
            "--no-rfc5780",
            "--no-software-attribute",
            "--simple-log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for (flag, file) in [
            ("--log-file", "turn.log"),
            ("--pidfile", "turn.pid"),
            ("--db", "turndb"),
        ] {
            args.push(flag.into());
            args.push(d.join(file).display().to_string());
        }
        args.extend(auth.iter().cloned());
        let child = Command::new("turnserver")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let coturn = Coturn {
            child,
            port,
            _dir: dir,
        };
        // Ready once a STUN binding request is answered.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = Command::new("timeout")
                .args([
                    "1",
                    "turnutils_stunclient",
                    "-p",
                    &port.to_string(),
                    "127.0.0.1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return coturn;
            }
            assert!(Instant::now() < deadline, "coturn did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Tries a relay allocation with these credentials; true if coturn allocated.
    fn allocate(&self, username: &str, credential: &str) -> bool {
        let out = Command::new("timeout")
            .args([
                "30",
                "turnutils_uclient",
                "-y",
                "-c",
                "-n",
                "1",
                "-p",
                &self.port.to_string(),
                "-u",
                username,
                "-w",
                credential,
                "127.0.0.1",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success() && text.contains("Total lost packets 0")
    }

    fn topology(&self) -> String {
        format!(
            "[network_topology]\nstun_urls = [\"stun:127.0.0.1:{0}\"]\nturn_urls = [\"turn:127.0.0.1:{0}?transport=udp\"]\n",
            self.port
        )
    }
}

fn turn_entry(result: &Value) -> (String, String) {
    let turn = &result["iceServers"][1];
    (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    )
}

/// Runs several allocations at once (each successful one waits 1-6 s in uclient).
fn allocate_all(coturn: &Coturn, creds: &[(String, String)]) -> Vec<bool> {
    std::thread::scope(|s| {
        let handles: Vec<_> = creds
            .iter()
            .map(|(u, c)| s.spawn(move || coturn.allocate(u, c)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_credentials_from_the_gateway_allocate_on_coturn() {
    let coturn = Coturn::start(&[
        "--use-auth-secret".into(),
        "--static-auth-secret".into(),
        "s3cret-current".into(),
        "--static-auth-secret".into(),
        "s3cret-older".into(),
    ]);
    // The gateway starts out signing with what is now the older secret.
    let gw = TestGateway::start_with(
        "",
        &format!(
            "{}\n[turn]\nsecrets = [\"s3cret-older\"]\n",
            coturn.topology()
        ),
    )
    .await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    let before = portal.ok("turn.credentials", json!({})).await;
    assert_eq!(
        before["iceServers"][0]["urls"],
        json!([format!("stun:127.0.0.1:{}", coturn.port)])
    );
    assert_eq!(before["ttl"], 3600);
    let (old_user, old_cred) = turn_entry(&before);
    assert!(old_user.ends_with(":portal1"));
    let expiry: u64 = old_user.split(':').next().unwrap().parse().unwrap();
    assert_eq!(expiry, before["expiresAt"].as_u64().unwrap());

    // Rotate: the new secret signs, the old one is still accepted by coturn.
    gw.edit_and_reload(|t| {
        t.replace(
            "secrets = [\"s3cret-older\"]",
            "secrets = [\"s3cret-current\", \"s3cret-older\"]",
        )
    })
    .unwrap();
    let after = portal.ok("turn.credentials", json!({"ttl": 600})).await;
    assert_eq!(after["ttl"], 600);
    let (new_user, new_cred) = turn_entry(&after);
    assert_ne!(new_cred, old_cred);

    // A forged credential, and a credential whose username has expired.
    let forged = (new_user.clone(), forge(&new_cred));
    let short = portal.ok("turn.credentials", json!({"ttl": 1})).await;
    let expired = turn_entry(&short);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let results = tokio::task::block_in_place(|| {
        allocate_all(
            &coturn,
            &[(new_user, new_cred), (old_user, old_cred), forged, expired],
        )
    });
    assert_eq!(
        results,
        [true, true, false, false],
        "[current secret, older secret, forged, expired]"
    );

    // The secret itself is in no answer the gateway gives.
    let info = portal.ok("session.info", json!(null)).await;
    assert!(!after.to_string().contains("s3cret") && !info.to_string().contains("s3cret"));
    gw.shutdown().await;
}

fn forge(credential: &str) -> String {
    let mut bytes = credential.as_bytes().to_vec();
    bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn static_credentials_work_with_lt_cred_mech() {
    let coturn = Coturn::start(&[
        "--lt-cred-mech".into(),
        "--user".into(),
        "turn1:Static-Turn-9".into(),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("turn.pw");
    std::fs::write(&pw, "Static-Turn-9\n").unwrap();
    let extra = format!(
        "{}\n[turn]\nmode = \"static\"\nservice_user = \"turn1\"\npassword_file = \"{}\"\n",
        coturn.topology(),
        pw.display()
    );
    let gw = TestGateway::start_with("", &extra).await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    let r = portal.ok("turn.credentials", json!(null)).await;
    let (user, cred) = turn_entry(&r);
    assert_eq!(user, "turn1");
    let results = tokio::task::block_in_place(|| {
        allocate_all(&coturn, &[(user.clone(), cred), (user, "wrong".into())])
    });
    assert_eq!(results, [true, false]);
    // A session without TURN Server Connection gets nothing.
    let mut app = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    let (code_, e) = app.err("turn.credentials", json!({})).await;
    assert_eq!(
        (code_, e["data"]["right"].clone()),
        (-32003, json!("TURN Server Connection"))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_page_in_chromium_gathers_a_relay_candidate() {
    let coturn = Coturn::start(&[
        "--use-auth-secret".into(),
        "--static-auth-secret".into(),
        "browser-secret".into(),
    ]);
    let gw = TestGateway::start_with(
        "",
        &format!("{}\n[turn]\nsecrets = [\"browser-secret\"]\n\n[portal]\nallowed_origins = []\ndemo_page = true\n", coturn.topology()),
    )
    .await;
    let url = format!("https://127.0.0.1:{}/", gw.addr.port());
    let (ok, out) = sign_in_on_page(&url, "portal1", PORTAL_PW, &["--expect-relay"]);
    assert!(ok, "no relay candidate: {out}");
    assert!(out.contains("relay"), "{out}");
    // A wrong password ends in login-failed, not in TURN details.
    let (ok, out) = sign_in_on_page(&url, "portal1", "nope", &[]);
    assert!(!ok && out.contains("login-failed"), "{out}");
    // A page on another origin cannot open /portal (HTTP 403).
    let (ok, out) =
        tokio::task::block_in_place(|| run_portal_script(&["--url", &url, "--bad-origin-check"]));
    assert!(ok, "a foreign origin opened /portal: {out}");
    gw.shutdown().await;
}

#[tokio::test]
async fn portal_refuses_foreign_origins_and_serves_the_demo_page() {
    let gw = TestGateway::start_with(
        "",
        "[portal]\nallowed_origins = [\"https://portal.example.com\"]\n",
    )
    .await;
    assert!(gw
        .ws("/portal", &[("Origin", "https://evil.example")])
        .await
        .is_err());
    let up = |origin: &str| {
        format!("GET /portal HTTP/1.1\r\nHost: localhost:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n", gw.addr.port())
    };
    assert_eq!(gw.http(&up("https://evil.example")).await.0, 403);
    assert_eq!(gw.http(&up("https://portal.example.com")).await.0, 101);
    assert_eq!(
        gw.http(&up(&format!("https://localhost:{}", gw.addr.port())))
            .await
            .0,
        101
    );
    // No Origin: not a browser, allowed.
    let mut c = gw.ws("/portal", &[]).await.unwrap();
    c.ok(
        "session.login",
        json!({"user": "portal1", "password": PORTAL_PW}),
    )
    .await;
    let (status, page) = gw.http("GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status, 200);
    assert!(page.contains("Content-Type: text/html") && page.contains("RTCPeerConnection"));
    assert!(page.contains("Content-Security-Policy"));
    gw.shutdown().await;
}

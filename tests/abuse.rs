//! The abuse table (issue 13): one row per attack on the gateway's resources
//! or credentials, each against its own real gateway process (the release
//! or debug binary of this build, real TLS, real WebSockets). Every row
//! asserts the documented answer (docs/LIMITS.md), that a bystander session
//! still gets its ping answered afterwards, and that the gateway's resident
//! memory stays under the bound written in the row.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::proc::Proc;
use common::*;
use serde_json::json;

const LOGIN_FAILED: i64 = -32002;

/// A gateway process on a generated config, its log kept in memory.
struct Target {
    proc: Proc,
    _dir: tempfile::TempDir,
    config_path: PathBuf,
    ca_pem: String,
    addr: SocketAddr,
    bystander: Option<Client>,
}

impl Target {
    /// `extra` is appended to the test config (sections other than
    /// `[server]`, which gets `server`). A bystander logs in as portal1.
    async fn start(server: &str, extra: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let (config_path, ca_pem) = write_config(dir.path(), server, extra);
        let config = config_path.to_str().unwrap();
        let proc = Proc::spawn(&["serve", "--config", config], dir.path(), None);
        let addr = proc.listening().await;
        let mut target = Target {
            proc,
            _dir: dir,
            config_path,
            ca_pem,
            addr,
            bystander: None,
        };
        target.bystander = Some(target.login("/portal", "portal1", PORTAL_PW).await);
        target
    }

    /// Everything the gateway logged so far.
    fn log(&self) -> String {
        self.proc.stderr()
    }

    async fn ws(&self, path: &str) -> Client {
        ws_connect(self.addr, &self.ca_pem, path, &[])
            .await
            .unwrap()
    }

    async fn login(&self, path: &str, user: &str, password: &str) -> Client {
        let mut c = self.ws(path).await;
        c.ok("session.login", json!({"user": user, "password": password}))
            .await;
        c
    }

    /// Rewrites the config file with `f` and sends SIGHUP; waits for the
    /// reload to be logged.
    fn edit_and_reload(&self, f: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        std::fs::write(&self.config_path, f(text)).unwrap();
        let before = self.log().matches("configuration reloaded").count();
        self.proc.signal("HUP");
        for _ in 0..200 {
            if self.log().matches("configuration reloaded").count() > before {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("no reload logged:\n{}", self.log());
    }

    /// Resident memory of the gateway process, in MiB.
    fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.pid())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib / 1024
    }

    /// The row's closing checks: the bystander's ping is answered, and the
    /// gateway holds at most `rss_bound_mib` of memory.
    async fn check(mut self, rss_bound_mib: u64) {
        let mut bystander = self.bystander.take().unwrap();
        bystander.ok("session.ping", json!(null)).await;
        let rss = self.rss_mib();
        assert!(
            rss <= rss_bound_mib,
            "gateway RSS {rss} MiB over the row's bound {rss_bound_mib} MiB"
        );
        assert!(self.proc.running(), "the gateway exited");
    }
}

/// An argon2id hash whose check takes about a second (64 MiB, t = 16, the
/// most time the gateway accepts): long enough to reset the password while
/// a login with the old one is being checked.
fn slow_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(65_536, 16, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"slow-salt-16byte").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

// ------------------------------------------------------------------- rows

/// Break 1: a login with the old password whose check began before a
/// password reset must not come out of it with a session or a token.
#[tokio::test]
async fn row_a_login_racing_a_password_reset_gets_no_session_and_no_token() {
    const OLD: &str = "victim-Old-1x";
    const NEW: &str = "victim-New-2x";
    let victim = format!(
        "[[service_user]]\nname = \"victim\"\npassword = \"{}\"\ngroups = [\"Portal Users\"]\n",
        slow_hash(OLD)
    );
    let t = Target::start("", &victim).await;
    let mut attacker = t.ws("/portal").await;
    attacker
        .send_text(
            json!({"jsonrpc":"2.0","id":1,"method":"session.login",
                   "params":{"user":"victim","password":OLD}})
            .to_string(),
        )
        .await;
    // The check is running (about a second); reset the password meanwhile.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let new_hash = cheap_hash(NEW);
    t.edit_and_reload(|text| {
        let old_hash = text
            .split("name = \"victim\"\npassword = \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap()
            .to_owned();
        text.replace(&old_hash, &new_hash)
    });
    let answer = attacker.recv().await;
    assert_eq!(code(&answer), LOGIN_FAILED, "{answer}");
    assert!(answer.get("result").is_none(), "{answer}");
    assert_eq!(attacker.closed().await, Some(1008));
    // The new password works, and only it.
    let mut owner = t.login("/portal", "victim", NEW).await;
    owner.ok("session.info", json!(null)).await;
    t.check(128).await;
}

/// Disabling a user voids its tokens for good: re-enabling does not revive
/// them.
#[tokio::test]
async fn row_disable_then_enable_does_not_revive_old_tokens() {
    const ADMIN_PW: &str = "admin-Pass-0x";
    let admin = format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n",
        cheap_hash(ADMIN_PW)
    );
    let t = Target::start("", &admin).await;
    let mut victim = t.ws("/portal").await;
    let r = victim
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    let token = r["resumeToken"].as_str().unwrap().to_owned();
    let mut op = t.login("/portal", "admin", ADMIN_PW).await;
    for enabled in [false, true] {
        let rev = op.ok("admin.users.list", json!(null)).await["revision"]
            .as_str()
            .unwrap()
            .to_owned();
        op.ok(
            "admin.users.update",
            json!({"revision": rev, "name": "portal1", "enabled": enabled}),
        )
        .await;
    }
    let mut again = t.ws("/portal").await;
    let (code, _) = again.err("session.resume", json!({"token": token})).await;
    assert_eq!(code, LOGIN_FAILED);
    // The password still works, and its new token resumes.
    let mut fresh = t.ws("/portal").await;
    let r = fresh
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    let token = r["resumeToken"].as_str().unwrap();
    let mut resumed = t.ws("/portal").await;
    resumed.ok("session.resume", json!({"token": token})).await;
    // The bystander (portal1 too) was closed by the disable: use a new one.
    let mut t = t;
    t.bystander = Some(resumed);
    t.check(128).await;
}

/// A password that passes the complexity rules, different for each (i, k).
fn unique_password(i: usize, k: usize) -> String {
    let letter = |n: usize| char::from(b'a' + (n % 26) as u8);
    format!("Np-{}{}-{k}-Xy", letter(i / 26), letter(i))
}

/// Break 3: concurrent admin writes that each hash a new password. The
/// hashes run on the verification workers (a few wait, the rest get -32029
/// at once), so memory and threads stay flat.
#[tokio::test]
async fn row_concurrent_password_writes_are_bounded() {
    const ADMIN_PW: &str = "admin-Pass-0x";
    let admin = format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n[limits]\nmax_connections_per_user = 1000\nrequest_burst = 1000\n",
        cheap_hash(ADMIN_PW)
    );
    let t = Target::start("", &admin).await;
    let mut sessions = Vec::new();
    for _ in 0..150 {
        sessions.push(t.login("/portal", "admin", ADMIN_PW).await);
    }
    let rev = sessions[0].ok("admin.users.list", json!(null)).await["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two writes pipelined on each session: 300 in flight at once.
    for (i, s) in sessions.iter_mut().enumerate() {
        for k in 0..2 {
            let req = json!({"jsonrpc":"2.0","id":k,"method":"admin.users.set_password",
                "params":{"revision":rev,"name":"cti1","password":unique_password(i, k)}});
            s.send_text(req.to_string()).await;
        }
    }
    let (mut done, mut stale, mut busy) = (0, 0, 0);
    for s in &mut sessions {
        for _ in 0..2 {
            let a = s.recv().await;
            match code(&a) {
                0 if a.get("result").is_some() => done += 1,
                -32040 => stale += 1,
                -32029 => busy += 1,
                _ => panic!("unexpected answer {a}"),
            }
        }
    }
    assert_eq!(done + stale + busy, 300);
    assert!(done >= 1, "one write must land");
    assert!(busy >= 1, "the hashing line must have refused some");
    let threads: u64 = std::fs::read_to_string(format!("/proc/{}/status", t.proc.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(threads <= 64, "{threads} threads");
    t.check(256).await;
}

/// Break 2: a provider that reads nothing while callers keep retrying after
/// timeouts. Its queue is bounded (`provider_queue`): callers get -32005,
/// then -32004 "provider busy", and a provider full for
/// `stalled_close_secs` is closed, after which callers get -32004 at once.
#[tokio::test]
async fn row_a_provider_that_reads_nothing_cannot_grow_memory() {
    let t = Target::start(
        "",
        "[routing]\nrequest_timeout_ms = 300\n[limits]\nprovider_queue = 64\nstalled_close_secs = 2\nwrite_stall_secs = 2\nrequest_burst = 100000\nrequests_per_sec = 100000\nmax_pending_per_session = 64\n",
    )
    .await;
    let mut prov = t.login("/adjunct", "app1", APP_PW).await;
    prov.ok("adjunct.register", json!({"namespaces": ["cti"]}))
        .await;
    // From here on the provider reads nothing. Large requests fill the
    // socket buffers quickly.
    let pad = "x".repeat(16 * 1024);
    let mut callers = Vec::new();
    for _ in 0..10 {
        callers.push(t.login("/portal", "portal1", PORTAL_PW).await);
    }
    let (mut timeouts, mut busy, mut gone) = (0u32, 0u32, 0u32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while gone == 0 && tokio::time::Instant::now() < deadline {
        for c in &mut callers {
            for id in 0..32 {
                let req = json!({"jsonrpc":"2.0","id":id,"method":"cti.make_call",
                                 "params":{"from":"201","to":"202","pad":pad}});
                c.send_text(req.to_string()).await;
            }
        }
        for c in &mut callers {
            for _ in 0..32 {
                let a = c.recv().await;
                match (code(&a), a["error"]["message"].as_str()) {
                    (-32005, _) => timeouts += 1,
                    (-32004, Some("provider busy")) => busy += 1,
                    (-32004, _) => gone += 1,
                    _ => panic!("unexpected answer {a}"),
                }
            }
        }
    }
    assert!(timeouts > 0, "the first requests time out");
    assert!(busy > 0, "a full provider queue answers provider busy");
    assert!(gone > 0, "the stalled provider is closed; then no provider");
    drop(prov);
    t.check(160).await;
}

/// Events queued before a right was removed are not delivered after the
/// removal took effect: the right is checked again when each is written.
#[tokio::test]
async fn row_events_queued_before_a_revocation_are_not_delivered_after_it() {
    const ADMIN_PW: &str = "admin-Pass-0x";
    const EVENTS: usize = 3000;
    let admin = format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n[limits]\noutbound_queue = 100000\nrequest_burst = 100000\nrequests_per_sec = 100000\n",
        cheap_hash(ADMIN_PW)
    );
    let t = Target::start("", &admin).await;
    let mut subscriber = t.login("/portal", "cti1", CTI_PW).await;
    subscriber
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    let mut publisher = t.login("/adjunct", "app1", APP_PW).await;
    let mut op = t.login("/portal", "admin", ADMIN_PW).await;
    // 3,000 events of 16 KiB (48 MiB) while the subscriber reads nothing:
    // far more than the socket buffers hold, so most wait in its queue.
    let pad = "z".repeat(16 * 1024);
    for n in 0..EVENTS {
        let ev = json!({"jsonrpc":"2.0","method":"adjunct.publish",
                        "params":{"topic":"cti.call.201","data":{"n":n,"pad":pad}}});
        publisher.send_text(ev.to_string()).await;
    }
    publisher.ok("session.ping", json!(null)).await;
    // Take one-X CTI API away from the subscriber's group.
    let rev = op.ok("admin.groups.list", json!(null)).await["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    op.ok(
        "admin.groups.update",
        json!({"revision": rev, "name": "CTI Only", "rights": []}),
    )
    .await;
    // Now read: what the socket buffers already held arrives, the rest of
    // the queue must not.
    let mut received = 0;
    while let Some(m) = subscriber.recv_within(Duration::from_secs(2)).await {
        if m["method"] == "event" {
            received += 1;
        }
    }
    assert!(
        received < EVENTS / 2,
        "{received} of {EVENTS} events delivered after the right was removed"
    );
    t.check(256).await;
}

/// A subscriber that reads too slowly while events keep coming is closed
/// with 1008 `subscriber too slow` once it has been dropping them for
/// `stalled_close_secs`.
#[tokio::test]
async fn row_a_stalled_subscriber_is_closed_with_1008() {
    let t = Target::start(
        "",
        "[limits]\noutbound_queue = 16\nstalled_close_secs = 1\nwrite_stall_secs = 20\nrequest_burst = 100000\nrequests_per_sec = 100000\n",
    )
    .await;
    let mut subscriber = t.login("/portal", "cti1", CTI_PW).await;
    subscriber
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    // It reads one message every 100 ms: never silent, always behind.
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            match subscriber.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => return None,
            }
        }
        None
    });
    let mut publisher = t.login("/adjunct", "app1", APP_PW).await;
    let pad = "y".repeat(48 * 1024);
    while !reader.is_finished() {
        for _ in 0..50 {
            let ev = json!({"jsonrpc":"2.0","method":"adjunct.publish",
                            "params":{"topic":"cti.call.201","data":{"pad":pad}}});
            publisher.send_text(ev.to_string()).await;
        }
        publisher.ok("session.ping", json!(null)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 1008 when the close frame gets through; dropped when its socket was
    // full at that moment (it reads slowly). Either way for this reason.
    let closed = reader.await.unwrap();
    assert!(closed.is_none() || closed == Some(1008), "{closed:?}");
    assert!(t.log().contains("subscriber too slow"));
    t.check(256).await;
}

/// A peer that answers no ping is dropped after two heartbeats.
#[tokio::test]
async fn row_a_silent_peer_is_dropped_after_two_heartbeats() {
    let t = Target::start("heartbeat_secs = 1", "").await;
    let mut silent = t.login("/portal", "cti1", CTI_PW).await;
    // Read nothing (so no pong is sent) for more than two heartbeats. The
    // bystander keeps reading meanwhile, as a live client does.
    let mut t = t;
    let mut bystander = t.bystander.take().unwrap();
    let live = tokio::spawn(async move {
        for _ in 0..7 {
            bystander.ok("session.ping", json!(null)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bystander
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    t.bystander = Some(live.await.unwrap());
    // Whatever the socket still holds, the connection ends without a
    // session: the stream ends (or errors) instead of answering.
    let ping = json!({"jsonrpc":"2.0","id":1,"method":"session.ping"}).to_string();
    let _ = futures_util::SinkExt::send(
        &mut silent.ws,
        tokio_tungstenite::tungstenite::Message::text(ping),
    )
    .await;
    let mut answered = false;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut silent.ws),
    )
    .await
    {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            answered |= t.as_str().contains("\"id\":1");
        }
    }
    assert!(!answered, "a dropped session answered");
    assert!(t.log().contains("peer silent for two heartbeats"));
    t.check(128).await;
}

// ------------------------------------------- admission and credential rows

/// The metrics listener of a [`Target`] and its scrape.
impl Target {
    fn metrics_addr(&self) -> SocketAddr {
        let log = self.log();
        let addr = log
            .lines()
            .find(|l| l.contains("serving GET /metrics"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .unwrap_or_else(|| panic!("no metrics listener logged:\n{log}"));
        addr.parse().unwrap()
    }

    /// One series' value now (0 when not exposed yet).
    async fn metric(&self, series: &str) -> f64 {
        let (status, text) = raw_http(
            self.metrics_addr(),
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        sample(&text, series).unwrap_or(0.0)
    }

    /// A WebSocket on `path` from another loopback address.
    async fn ws_from(&self, local: &str, path: &str, headers: &[(&str, &str)]) -> Client {
        let tls = tls_connect_from(self.addr, local.parse().unwrap(), &connector(&self.ca_pem))
            .await
            .unwrap();
        ws_over(tls, self.addr, path, headers).await.unwrap()
    }
}

const ATTACKER: &str = "127.0.0.2";

/// One wrong `session.login` for `user` on each connection, all sent
/// before any answer is read.
async fn send_guesses(storm: &mut [Client], user: &str) {
    for c in storm {
        c.send_text(
            json!({"jsonrpc":"2.0","id":1,"method":"session.login",
                   "params":{"user": user,"password":"wrong-Guess-1"}})
            .to_string(),
        )
        .await;
    }
}

/// The storm's answers as (checked: -32002, refused: -32029 with
/// `refusal`); anything else fails the row.
async fn tally(storm: &mut [Client], refusal: &str) -> (usize, usize) {
    let (mut checked, mut refused) = (0, 0);
    for c in storm {
        let answer = c.recv().await;
        match code(&answer) {
            LOGIN_FAILED => checked += 1,
            -32029 => {
                assert_eq!(answer["error"]["message"], refusal, "{answer}");
                refused += 1;
            }
            _ => panic!("unexpected answer {answer}"),
        }
    }
    (checked, refused)
}
const ADMIN_PW: &str = "admin-Pass-0x";
const REFUSED_UNAUTH: &str =
    "adjunct_gateway_connections_refused_total{reason=\"unauthenticated_per_address\"}";

fn admin_user() -> String {
    format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n",
        cheap_hash(ADMIN_PW)
    )
}

/// 1,000 plain TCP connects that never say a word, from one address: it gets
/// `[limits] max_unauthenticated_per_ip` (64) of the pre-authentication
/// slots, the rest are refused (503 path, counted by reason), the ones it got
/// are dropped after `first_byte_timeout_secs` (3), and a client from
/// another address connects and logs in all along.
#[tokio::test]
async fn row_idle_connects_from_one_address_leave_room_for_everyone_else() {
    const IDLE: usize = 1000;
    let t = Target::start("", "").await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(ATTACKER.parse().unwrap(), 0))
            .unwrap();
        idle.push(socket.connect(t.addr).await.unwrap());
    }
    // Another address is served while the attacker holds its share.
    let mut other = t.login("/portal", "turn1", TURN_PW).await;
    other.ok("session.ping", json!(null)).await;
    let refused = t.metric(REFUSED_UNAUTH).await;
    assert!(
        refused >= (IDLE - 64 - 36) as f64,
        "only {refused} of {IDLE} idle connects refused"
    );
    // Every idle connection is closed by the gateway: the admitted ones at
    // the first-byte deadline, the refused ones when their 503 gave up.
    for mut conn in idle {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let end = tokio::time::timeout(WAIT, conn.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(Ok(0) | Err(_))),
            "an idle connection was kept: {end:?}"
        );
    }
    let admitted = IDLE as f64 - t.metric(REFUSED_UNAUTH).await;
    let dropped = t
        .metric("adjunct_gateway_tls_handshake_failures_total")
        .await;
    assert!(
        dropped >= admitted,
        "{admitted} admitted but {dropped} dropped at the first-byte deadline"
    );
    // The slots are free again for that address too.
    let mut back = t.ws_from(ATTACKER, "/portal", &[]).await;
    back.ok(
        "session.login",
        json!({"user": "portal1", "password": PORTAL_PW}),
    )
    .await;
    t.check(128).await;
}

/// 200 wrong logins at once from one address, each checked for about a
/// second: all are answered, at most `[security] max_verifying_per_ip` (4)
/// are checked at a time and the rest get -32029 unchecked, and a login
/// from another address goes through meanwhile.
#[tokio::test]
async fn row_parallel_wrong_logins_from_one_address_hold_only_their_share() {
    const PARALLEL: usize = 200;
    let victim = format!(
        "[[service_user]]\nname = \"victim\"\npassword = \"{}\"\ngroups = [\"Portal Users\"]\n\n[limits]\nmax_unauthenticated_per_ip = 1000\n",
        slow_hash("victim-Right-1x")
    );
    let t = Target::start("", &victim).await;
    let mut storm = Vec::with_capacity(PARALLEL);
    for _ in 0..PARALLEL {
        storm.push(t.ws_from(ATTACKER, "/portal", &[]).await);
    }
    send_guesses(&mut storm, "victim").await;
    // Another address logs in while the storm is being checked.
    let mut other = t.login("/portal", "turn1", TURN_PW).await;
    other.ok("session.ping", json!(null)).await;
    let (checked, throttled) = tally(
        &mut storm,
        "too many logins in progress from this address; retry shortly",
    )
    .await;
    assert_eq!(checked + throttled, PARALLEL);
    assert!(
        (1..=8).contains(&checked),
        "{checked} of {PARALLEL} parallel logins were checked"
    );
    let counted_throttled = t
        .metric("adjunct_gateway_logins_total{outcome=\"throttled\"}")
        .await;
    assert_eq!(counted_throttled, throttled as f64);
    t.check(160).await;
}

/// Five wrong guesses for the administrator from one address lock it for
/// that address only: from another it logs in, and `admin.users.unlock`
/// clears the lock (without changing the revision).
#[tokio::test]
async fn row_guesses_from_one_address_do_not_lock_the_administrator_out() {
    let t = Target::start("", &admin_user()).await;
    let mut attacker = t.ws_from(ATTACKER, "/portal", &[]).await;
    for _ in 0..5 {
        let (code, _) = attacker
            .err(
                "session.login",
                json!({"user": "admin", "password": "guess-Pass-9"}),
            )
            .await;
        assert_eq!(code, LOGIN_FAILED);
    }
    // Locked for the attacker's address: the right password fails there.
    let (code, _) = attacker
        .err(
            "session.login",
            json!({"user": "admin", "password": ADMIN_PW}),
        )
        .await;
    assert_eq!(code, LOGIN_FAILED);
    // Not from the administrator's own address.
    let mut op = t.login("/portal", "admin", ADMIN_PW).await;
    let revision = op.ok("admin.users.list", json!(null)).await["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let unlock = |rev: &str| json!({"revision": rev, "name": "admin"});
    let (stale, _) = op
        .err("admin.users.unlock", unlock("0000000000000000"))
        .await;
    assert_eq!(stale, -32040);
    // Locked before, then not any more: the second unlock finds nothing.
    for was_locked in [true, false] {
        let r = op.ok("admin.users.unlock", unlock(&revision)).await;
        assert_eq!(r["unlocked"], was_locked, "{r}");
        assert_eq!(r["revision"], revision.as_str(), "an unlock writes nothing");
    }
    // Unlocked: the attacker's address may log in again (with the password).
    let mut again = t.ws_from(ATTACKER, "/portal", &[]).await;
    again
        .ok(
            "session.login",
            json!({"user": "admin", "password": ADMIN_PW}),
        )
        .await;
    assert!(t.log().contains("admin_unlock"));
    t.check(128).await;
}

/// A second `Authorization`, `Origin` or `Host` header: 400, whichever one
/// the gateway would have taken.
#[tokio::test]
async fn row_duplicate_credential_or_origin_headers_get_400() {
    let t = Target::start("", "").await;
    const UPGRADE: &str = "GET /adjunct HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let good = basic("app1", APP_PW);
    let bad = basic("app1", "wrong");
    for (extra, name) in [
        (
            format!("Authorization: {bad}\r\nAuthorization: {good}\r\n"),
            "Authorization",
        ),
        (
            format!("Authorization: {good}\r\nauthorization: {bad}\r\n"),
            "Authorization",
        ),
        (
            "Origin: https://a.example\r\nOrigin: https://b.example\r\n".to_owned(),
            "Origin",
        ),
        ("Host: other\r\n".to_owned(), "Host"),
    ] {
        let request = format!("{UPGRADE}{extra}\r\n");
        let (status, text) = raw_https(t.addr, &t.ca_pem, request.as_bytes()).await;
        assert_eq!(status, 400, "{extra}: {text}");
        assert!(
            text.ends_with(&format!("duplicate {name} header\n")),
            "{text}"
        );
    }
    // One of each is an ordinary upgrade.
    let once = format!("{UPGRADE}Authorization: {good}\r\n\r\n");
    let (status, text) = raw_https(t.addr, &t.ca_pem, once.as_bytes()).await;
    assert_eq!(status, 101, "{text}");
    t.check(128).await;
}

/// `Origin` on /adjunct: refused (403) unless listed in `[adjunct]
/// allowed_origins`; the gateway's own origin is not enough there, and an
/// application server (no `Origin`) is unaffected.
#[tokio::test]
async fn row_a_browser_origin_on_adjunct_needs_to_be_listed() {
    let t = Target::start(
        "",
        "[adjunct]\nallowed_origins = [\"https://ops.example\"]\n",
    )
    .await;
    let auth = basic("app1", APP_PW);
    let own = format!("https://localhost:{}", t.addr.port());
    for origin in ["https://evil.example", own.as_str(), "https://ops.example/"] {
        let r = ws_connect(
            t.addr,
            &t.ca_pem,
            "/adjunct",
            &[("Authorization", &auth), ("Origin", origin)],
        )
        .await;
        match r {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 403, "{origin}")
            }
            other => panic!("{origin}: expected 403, got {:?}", other.map(|_| "101")),
        }
    }
    let mut listed = ws_connect(
        t.addr,
        &t.ca_pem,
        "/adjunct",
        &[("Authorization", &auth), ("Origin", "https://ops.example")],
    )
    .await
    .unwrap();
    assert_eq!(listed.ok("session.info", json!(null)).await["user"], "app1");
    let mut server = ws_connect(t.addr, &t.ca_pem, "/adjunct", &[("Authorization", &auth)])
        .await
        .unwrap();
    server.ok("session.ping", json!(null)).await;
    assert!(t.log().contains("origin_refused"));
    t.check(128).await;
}

/// Refusals a peer can repeat at will reach the audit trail at a bounded
/// rate (10 lines a second in all), with a count of those not written, so
/// they cannot push the rest out of it; the metric still counts each.
#[tokio::test]
async fn row_repeated_refusals_reach_the_audit_at_a_bounded_rate() {
    let t = Target::start("", "").await;
    let mut s = t.login("/portal", "cti1", CTI_PW).await;
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let (code, _) = s.err("admin.config.get", json!(null)).await;
        assert_eq!(code, -32003, "forbidden");
    }
    // Ten lines for each second (or part of one) the requests took, one more
    // second for the last request.
    let windows = started.elapsed().as_secs() as usize + 2;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.err("admin.config.get", json!(null)).await;
    // The log is written after the answer: wait for the last line.
    let mut log = t.log();
    for _ in 0..50 {
        if log.contains("not_audited") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        log = t.log();
    }
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request refused"))
        .collect();
    // 201 refusals: ten lines a second, and one says how many were not
    // written.
    assert!(
        (2..=10 * windows + 1).contains(&refused.len()) && refused.len() < 100,
        "{} lines:\n{}",
        refused.len(),
        refused.join("\n")
    );
    assert!(
        refused.iter().any(|l| l.contains("not_audited")),
        "{}",
        refused.join("\n")
    );
    t.check(128).await;
}

/// A name that is not an account is audited as a keyed pseudonym (people
/// type passwords there), the same one each time; and it is locked and
/// counted `locked` exactly like a real account, so /metrics tells none
/// apart.
#[tokio::test]
async fn row_unknown_names_are_pseudonymous_and_lock_like_real_ones() {
    const TYPED: &str = "Typed-Password-In-Name-Field-7";
    let t = Target::start("", "").await;
    let mut c = t.ws_from(ATTACKER, "/portal", &[]).await;
    // Six tries each: the sixth finds the pair locked (reject_limit = 5).
    for user in [TYPED, "cti1"] {
        for _ in 0..6 {
            let (code, _) = c
                .err(
                    "session.login",
                    json!({"user": user, "password": "x-Wrong-1"}),
                )
                .await;
            assert_eq!(code, LOGIN_FAILED);
        }
    }
    let locked = t
        .metric("adjunct_gateway_logins_total{outcome=\"locked\"}")
        .await;
    assert_eq!(
        locked, 2.0,
        "an unknown name and a real one must count alike"
    );
    let log = t.log();
    assert!(!log.contains(TYPED), "the typed name reached the log");
    let pseudonyms: std::collections::HashSet<&str> = log
        .match_indices("unknown:")
        .filter_map(|(i, _)| log.get(i + 8..i + 24))
        .collect();
    assert_eq!(pseudonyms.len(), 1, "{pseudonyms:?}");
    assert!(pseudonyms
        .iter()
        .all(|p| p.len() == 16 && p.chars().all(|ch| ch.is_ascii_hexdigit())));
    assert!(log.contains("\"cti1\""), "a known name is logged as it is");
    // Unknown names are checked against a default-cost dummy hash (19 MiB
    // per check), unlike the cheap test hashes of the other rows.
    t.check(192).await;
}

/// A session may hold at most `max_subscriptions` topic patterns.
#[tokio::test]
async fn row_subscriptions_past_the_bound_are_refused() {
    let t = Target::start("", "[limits]\nmax_subscriptions = 4\n").await;
    let mut s = t.login("/portal", "cti1", CTI_PW).await;
    let four: Vec<String> = (0..4).map(|n| format!("cti.call.{n}")).collect();
    s.ok("events.subscribe", json!({ "topics": four })).await;
    let (code, e) = s
        .err("events.subscribe", json!({"topics": ["cti.call.9"]}))
        .await;
    assert_eq!(code, -32602);
    assert_eq!(e["message"], "at most 4 subscriptions per session");
    // More distinct topics in one request than a session may hold.
    let five: Vec<String> = (10..15).map(|n| format!("cti.call.{n}")).collect();
    let (code, e) = s.err("events.subscribe", json!({ "topics": five })).await;
    assert_eq!(
        (code, e["message"].clone()),
        (-32602, json!("at most 4 subscriptions per session"))
    );
    // An unsubscribe naming a topic it does not hold thousands of times, and
    // one it holds: only that one goes, once (one slot is free again, not
    // more).
    let mut many = vec!["cti.call.9"; 4000];
    many.push("cti.call.0");
    s.ok("events.unsubscribe", json!({ "topics": many })).await;
    s.ok("events.subscribe", json!({"topics": ["cti.call.9"]}))
        .await;
    let (code, _) = s
        .err("events.subscribe", json!({"topics": ["cti.call.8"]}))
        .await;
    assert_eq!(code, -32602, "the bound still holds");
    t.check(128).await;
}

/// A request head that never ends is cut off at `handshake_timeout_secs`,
/// without an answer.
#[tokio::test]
async fn row_a_request_head_that_never_ends_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Target::start(
        "",
        "[limits]\nhandshake_timeout_secs = 1\nfirst_byte_timeout_secs = 1\n",
    )
    .await;
    let mut tls = tls_connect(t.addr, &t.ca_pem).await.unwrap();
    tls.write_all(b"GET /portal HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still open after 5 s");
    assert!(
        buf.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&buf)
    );
    t.check(128).await;
}

/// Voicemail users and servers for the catalog rows: one group per right
/// (the servers add Adjunct Server Connection), one user per group.
fn voicemail_directory() -> String {
    let hash = cheap_hash(VM_PW);
    let mut s = String::new();
    for (name, rights) in [
        (
            "vm-basic-server",
            &["Adjunct Server Connection", "Voicemail Pro Basic"][..],
        ),
        (
            "vm-admin-server",
            &["Adjunct Server Connection", "Voicemail Pro Administrator"],
        ),
        (
            "vm-all-server",
            &[
                "Adjunct Server Connection",
                "Voicemail Pro Basic",
                "Voicemail Pro Standard",
                "Voicemail Pro Administrator",
            ],
        ),
        ("vm-standard", &["Voicemail Pro Standard"]),
        ("vm-admin", &["Voicemail Pro Administrator"]),
    ] {
        let list: Vec<String> = rights.iter().map(|r| format!("\"{r}\"")).collect();
        s += &format!(
            "\n[[rights_group]]\nname = \"{name}\"\nrights = [{}]\n\n[[service_user]]\nname = \"{name}\"\npassword = \"{hash}\"\ngroups = [\"{name}\"]\n",
            list.join(", ")
        );
    }
    s
}

const VM_PW: &str = "voice-Mail-3x";

/// The routed requests (with a `method`) that reached `provider` so far:
/// a ping's answer comes after anything queued to it before.
async fn routed_to(provider: &mut Client) -> Vec<serde_json::Value> {
    provider.ok("session.ping", json!(null)).await;
    provider
        .events
        .drain(..)
        .filter(|m| m.get("id").is_some() && m.get("method").is_some())
        .collect()
}

/// A provider that holds only the weakest right of `voicemail` (Basic) is
/// never sent an Administrator's `voicemail.security.set` (nor its params):
/// the caller gets -32004 at once. It cannot publish
/// `voicemail.security.changed` either (-32003 naming Administrator), while
/// `voicemail.backup.done`, which Basic may update, still goes out. A
/// provider holding Administrator is sent the request.
#[tokio::test]
async fn row_a_provider_with_a_weaker_right_gets_no_stronger_request_and_forges_no_event() {
    let t = Target::start("", &voicemail_directory()).await;
    let mut weak = t.login("/adjunct", "vm-basic-server", VM_PW).await;
    weak.ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    let mut admin = t.login("/portal", "vm-admin", VM_PW).await;
    admin
        .ok("events.subscribe", json!({"topics": ["voicemail.*"]}))
        .await;
    let secret = json!({"settings": {"pin": "4711"}});
    let (code, e) = admin.err("voicemail.security.set", secret.clone()).await;
    assert_eq!((code, e["message"].as_str()), (-32004, Some("no provider")));
    assert_eq!(routed_to(&mut weak).await, Vec::<serde_json::Value>::new());

    let (code, e) = weak
        .err(
            "adjunct.publish",
            json!({"topic": "voicemail.security.changed", "data": {"pin": "0000"}}),
        )
        .await;
    assert_eq!(code, -32003, "{e}");
    assert_eq!(e["data"]["right"], "Voicemail Pro Administrator");
    assert_eq!(e["data"]["topic"], "voicemail.security.changed");
    let (code, _) = weak
        .err(
            "adjunct.publish",
            json!({"topic": "voicemail.config.changed"}),
        )
        .await;
    assert_eq!(
        code, -32003,
        "Basic reads the configuration, not updates it"
    );
    let r = weak
        .ok("adjunct.publish", json!({"topic": "voicemail.backup.done"}))
        .await;
    assert_eq!(r["delivered"], 0, "Administrator does not read backups");
    admin.ok("session.ping", json!(null)).await;
    assert!(
        admin.events.iter().all(|m| m["method"] != "event"),
        "{:?}",
        admin.events
    );

    // The right provider is sent it, params and all.
    let mut strong = t.login("/adjunct", "vm-admin-server", VM_PW).await;
    strong
        .ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    admin
        .send_text(
            json!({"jsonrpc":"2.0","id":"s1","method":"voicemail.security.set","params":secret})
                .to_string(),
        )
        .await;
    let req = strong.recv().await;
    assert_eq!(req["method"], "voicemail.security.set");
    assert_eq!(req["params"], secret);
    strong
        .send_text(json!({"jsonrpc":"2.0","id":req["id"],"result":{"ok":true}}).to_string())
        .await;
    let answer = admin.recv().await;
    assert_eq!(answer["result"], json!({"ok": true}), "{answer}");
    assert_eq!(routed_to(&mut weak).await, Vec::<serde_json::Value>::new());
    t.check(128).await;
}

/// Other spellings of a protected method do not slip past its rule: a
/// class's own name is judged by the class's rule, and a name that is not
/// canonical (empty last segment, capitals) is no method (-32601). None of
/// them reaches the provider, which holds every voicemail right.
#[tokio::test]
async fn row_non_canonical_method_names_do_not_get_past_the_specific_rules() {
    let t = Target::start("", &voicemail_directory()).await;
    let mut provider = t.login("/adjunct", "vm-all-server", VM_PW).await;
    provider
        .ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    for (user, method, want, right) in [
        (
            "vm-standard",
            "voicemail.security",
            -32003,
            Some("Voicemail Pro Administrator"),
        ),
        ("vm-standard", "voicemail.security.", -32601, None),
        ("vm-standard", "voicemail.Security.set", -32601, None),
        ("vm-standard", "voicemail..security.set", -32601, None),
        (
            "vm-admin",
            "voicemail.backup",
            -32003,
            Some("Voicemail Pro Basic"),
        ),
        ("vm-admin", "voicemail.backup.", -32601, None),
        ("vm-admin", "voicemail.BACKUP.create", -32601, None),
        ("vm-admin", "Voicemail.backup.create", -32601, None),
    ] {
        let mut c = t.login("/portal", user, VM_PW).await;
        let (code, e) = c.err(method, json!({})).await;
        assert_eq!(code, want, "{user} {method}: {e}");
        assert_eq!(e["data"]["right"].as_str(), right, "{user} {method}: {e}");
    }
    // Topics: the same grammar; a two-segment topic concerns itself.
    let mut standard = t.login("/portal", "vm-standard", VM_PW).await;
    let (code, e) = standard
        .err(
            "events.subscribe",
            json!({"topics": ["voicemail.security"]}),
        )
        .await;
    assert_eq!(code, -32003, "{e}");
    let (code, _) = standard
        .err(
            "events.subscribe",
            json!({"topics": ["voicemail.Security.changed"]}),
        )
        .await;
    assert_eq!(code, -32602);
    assert_eq!(
        routed_to(&mut provider).await,
        Vec::<serde_json::Value>::new()
    );
    t.check(128).await;
}

/// A provider that reads a little (one message a second) while callers keep
/// sending: its queue is bounded in bytes as well as messages, the callers
/// get -32004 provider busy, and since it never catches up it is closed
/// with 1008 after `stalled_close_secs`, though it drains now and then.
#[tokio::test]
async fn row_a_provider_that_reads_a_little_is_bounded_and_closed() {
    let t = Target::start(
        "",
        "[routing]\nrequest_timeout_ms = 60000\n[limits]\nstalled_close_secs = 3\nrequest_burst = 100000\nrequests_per_sec = 100000\nmax_pending_per_session = 1000\nqueue_bytes = 1048576\n",
    )
    .await;
    let mut prov = t.login("/adjunct", "app1", APP_PW).await;
    prov.ok("adjunct.register", json!({"namespaces": ["cti"]}))
        .await;
    let reader = tokio::spawn(async move {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), prov.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => tokio::time::sleep(Duration::from_secs(1)).await,
                _ => return None,
            }
        }
    });
    let pad = "x".repeat(16 * 1024);
    let mut callers = Vec::new();
    for _ in 0..10 {
        callers.push(t.login("/portal", "portal1", PORTAL_PW).await);
    }
    let mut busy = 0;
    for round in 0..20 {
        for c in &mut callers {
            for id in 0..20 {
                let req = json!({"jsonrpc":"2.0","id": round * 100 + id,"method":"cti.make_call",
                                 "params":{"from":"201","to":"202","pad":pad}});
                c.send_text(req.to_string()).await;
            }
        }
        for c in &mut callers {
            while let Some(a) = c.recv_within(Duration::from_millis(50)).await {
                if code(&a) == -32004 && a["error"]["message"] == "provider busy" {
                    busy += 1;
                }
            }
        }
        let log = t.log();
        if busy > 0 && log.contains("connection dropped") || log.contains("provider too slow") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(busy > 0, "no caller was told provider busy");
    // Its socket is full, so the close frame cannot get through: the gateway
    // drops the connection as soon as the close is asked for (the provider
    // would only see that after reading through its socket buffers).
    let mut dropped = false;
    for _ in 0..200 {
        let log = t.log();
        if log.contains("provider too slow")
            || log.contains("closed while the peer reads nothing; connection dropped")
        {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dropped, "the slow provider was never closed:\n{}", t.log());
    reader.abort();
    t.check(192).await;
}

/// A hash in the config sizes the verifier's memory and sets its running
/// time: one asking for 4 TiB (which aborted the process at the first login
/// naming its user) is refused at reload with its line, the old config
/// stays, and logins naming that user are answered as before.
#[tokio::test]
async fn row_a_hostile_password_hash_is_refused_at_reload() {
    let t = Target::start("", &admin_user()).await;
    let text = std::fs::read_to_string(&t.config_path).unwrap();
    let cheap = cheap_hash(ADMIN_PW);
    assert!(text.contains(&cheap));
    std::fs::write(
        &t.config_path,
        text.replace(&cheap, &cheap.replace("m=256,", "m=4294967295,")),
    )
    .unwrap();
    t.proc.signal("HUP");
    let refused = (0..200).find_map(|_| {
        let log = t.log();
        if log.contains("configuration reloaded") {
            panic!("the hostile hash was taken:\n{log}");
        }
        let line = log.lines().find(|l| l.contains("configuration refused"));
        match line {
            Some(l) => Some(l.to_owned()),
            None => {
                std::thread::sleep(Duration::from_millis(25));
                None
            }
        }
    });
    let refused = refused.expect("no reload outcome logged");
    assert!(
        refused.contains("cost out of bounds") && refused.contains("m = 4294967295"),
        "{refused}"
    );
    assert!(refused.contains("gateway.toml:"), "no file:line: {refused}");
    // The old hash stays in force: a wrong guess fails, the password works.
    let mut c = t.ws_from(ATTACKER, "/portal", &[]).await;
    let (code, _) = c
        .err(
            "session.login",
            json!({"user": "admin", "password": "guess-Pass-9"}),
        )
        .await;
    assert_eq!(code, LOGIN_FAILED);
    t.login("/portal", "admin", ADMIN_PW).await;
    t.check(128).await;
}

/// Forty wrong logins at once for one name, each from its own address (so
/// no address or pair limit applies): the account's schedule lets
/// `account_delay_after` + 1 through, then one per turn a delay apart
/// (250 ms at least), and refuses at once those whose turn would be over
/// `account_delay_max_ms` off; a real account and an unknown name alike.
/// The rightful user then still gets in within a turn.
#[tokio::test]
async fn row_parallel_guesses_from_many_addresses_are_checked_at_the_scheduled_rate() {
    const PARALLEL: usize = 40;
    const AFTER: usize = 2;
    let extra = format!(
        "{}\n[security]\naccount_delay_after = {AFTER}\naccount_delay_max_ms = 1000\n",
        admin_user()
    );
    let t = Target::start("", &extra).await;
    for (subnet, user) in [(1, "admin"), (2, "nobody-here")] {
        let mut storm = Vec::with_capacity(PARALLEL);
        for i in 0..PARALLEL {
            storm.push(
                t.ws_from(&format!("127.0.{subnet}.{}", i + 10), "/portal", &[])
                    .await,
            );
        }
        let start = std::time::Instant::now();
        send_guesses(&mut storm, user).await;
        let (checked, refused) = tally(
            &mut storm,
            "too many logins waiting for this user name; retry later",
        )
        .await;
        let elapsed = start.elapsed();
        // Free ones, then at most one per 250 ms since the storm began.
        let allowed = AFTER + 1 + 1 + (elapsed.as_millis() / 250) as usize;
        assert!(
            checked <= allowed,
            "{user}: {checked} of {PARALLEL} guesses checked in {elapsed:?} (at most {allowed})"
        );
        assert!(refused >= 1, "{user}: none refused");
        assert_eq!(checked + refused, PARALLEL);
    }
    // The queue has drained: the administrator's next turn is within a delay.
    t.login("/portal", "admin", ADMIN_PW).await;
    t.check(192).await;
}

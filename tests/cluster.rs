//! Cluster mode: real nats-server processes (JetStream on, free loopback
//! ports) and three gateway nodes in this process, each with its own TLS
//! listener, driven by real TLS WebSocket clients.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin-Pass-0x";
const NO_PROVIDER: i64 = -32004;
const PROVIDER_TIMEOUT: i64 = -32005;
const STALE: i64 = -32040;
const UNAVAILABLE: i64 = -32050;
const LOGIN_FAILED: i64 = -32002;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server process, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl NatsServer {
    fn start(port: u16, store: &Path, extra: &[String]) -> NatsServer {
        let mut args = vec![
            "-js".to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            store.display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut s = NatsServer {
            child: None,
            port,
            args,
            _dir: None,
        };
        s.resume();
        s
    }

    /// A lone server with its own store.
    fn single() -> NatsServer {
        let dir = tempfile::tempdir().unwrap();
        let mut s = NatsServer::start(free_port(), dir.path(), &[]);
        s._dir = Some(dir);
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) with the same port and store.
    fn resume(&mut self) {
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (scripts/test installs it)");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `[cluster]` section and an administrator every node's file has.
fn node_extra(node: &str, urls: &[String], prefix: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n[security]\nreject_limit = 3\n\n[cluster]\nnats = [{}]\nnode = \"{node}\"\nprefix = \"{prefix}\"\n",
        cheap_hash(ADMIN_PW),
        urls.join(", ")
    )
}

/// Three nodes, a, b and c, on the NATS at `urls`.
async fn three_nodes(urls: &[String]) -> Vec<TestGateway> {
    // A fresh prefix per test: the tests share no state even on one NATS.
    let prefix = format!("t{}", free_port());
    let mut nodes = Vec::new();
    for node in ["a", "b", "c"] {
        nodes.push(TestGateway::start_with("", &node_extra(node, urls, &prefix)).await);
    }
    // Each node hears the others' heartbeats.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nodes
}

async fn provider(gw: &TestGateway) -> Client {
    gw.cti_provider().await
}

/// Answers routed requests until `n` were answered; returns how many.
async fn serve(p: &mut Client, within: Duration) -> usize {
    let mut n = 0;
    while let Some(req) = p.recv_within(within).await {
        if req.get("method").is_none() {
            continue;
        }
        p.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"by": "me"}}).to_string())
            .await;
        n += 1;
    }
    n
}

/// Waits (up to 5 s) until `f` holds.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn revision_of(gw: &TestGateway) -> String {
    gw.gateway().snapshot().config.source.revision().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_on_one_node_reaches_a_provider_on_another_and_the_load_is_shared() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);

    let mut prov_a = provider(a).await;
    let mut caller = b.login("/portal", "portal1", PORTAL_PW).await;
    let info = caller.ok("session.info", json!(null)).await;
    assert_eq!(info["node"], "b");
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"x-1","method":"cti.make_call","params":{"to":"202"}}"#)
        .await;
    let req = prov_a.recv().await;
    assert_eq!(req["method"], "cti.make_call");
    assert_eq!(req["caller"]["user"], "portal1");
    assert_eq!(req["caller"]["sessionId"], info["sessionId"]);
    prov_a
        .send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"callId": 7}}).to_string())
        .await;
    assert_eq!(
        caller.recv().await,
        json!({"jsonrpc": "2.0", "id": "x-1", "result": {"callId": 7}})
    );

    // A second provider on another node: the queue group shares the load.
    let mut prov_c = provider(c).await;
    // Its queue-group subscription reaches the NATS server asynchronously.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for i in 0..30 {
        caller
            .send_text(
                json!({"jsonrpc": "2.0", "id": i, "method": "cti.ping", "params": {}}).to_string(),
            )
            .await;
    }
    let (na, nc) = tokio::join!(
        serve(&mut prov_a, Duration::from_millis(3000)),
        serve(&mut prov_c, Duration::from_millis(3000))
    );
    assert_eq!(na + nc, 30, "each request reaches exactly one provider");
    assert!(
        na > 0 && nc > 0,
        "both nodes' providers served: a {na}, c {nc}"
    );
    let mut answered = 0;
    while let Some(v) = caller.recv_within(Duration::from_millis(500)).await {
        if v.get("result").is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 30);

    // A provider that goes away fails what waits on it with -32004, not
    // -32005 after the 5 s timeout.
    drop(prov_c);
    // c's node leaves the queue group once it has seen its provider go,
    // which reaches the NATS server asynchronously (a request c takes
    // before then is answered -32004 at once: it has no provider).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"gone","method":"cti.hold","params":{}}"#)
        .await;
    let req = prov_a.recv().await;
    assert_eq!(req["method"], "cti.hold");
    drop(prov_a);
    let v = caller
        .recv_within(Duration::from_secs(3))
        .await
        .expect("an answer before the routed timeout");
    assert_eq!((v["id"].clone(), code(&v)), (json!("gone"), NO_PROVIDER));

    // No provider anywhere: -32004 at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c, _) = caller.err("cti.make_call", json!({})).await;
    assert_eq!(c, NO_PROVIDER);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_cross_nodes_with_rights_checked_where_delivered_and_sessions_list_the_cluster() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut publisher = provider(a).await;
    let mut sub_b = b.login("/portal", "portal1", PORTAL_PW).await;
    let mut sub_c = c.login("/portal", "cti1", CTI_PW).await;
    let mut turn_c = c.login("/portal", "turn1", TURN_PW).await;
    sub_b
        .ok("events.subscribe", json!({"topics": ["cti.call.*"]}))
        .await;
    sub_c
        .ok(
            "events.subscribe",
            json!({"topics": ["cti.call.201", "cti.*"]}),
        )
        .await;
    // turn1 lacks one-X CTI API: refused at subscribe time as on one node.
    let (code_turn, _) = turn_c
        .err("events.subscribe", json!({"topics": ["cti.*"]}))
        .await;
    assert_eq!(code_turn, -32003);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = publisher
        .ok(
            "adjunct.publish",
            json!({"topic": "cti.call.201", "data": {"state": "ringing"}}),
        )
        .await;
    assert_eq!(
        r["delivered"], 0,
        "delivered counts this node's subscribers only"
    );
    for sub in [&mut sub_b, &mut sub_c] {
        let ev = sub.recv().await;
        assert_eq!(ev["method"], "event");
        assert_eq!(
            ev["params"],
            json!({"topic": "cti.call.201", "data": {"state": "ringing"}})
        );
    }
    // Two matching patterns on c: the event still arrives once.
    assert!(sub_c
        .recv_within(Duration::from_millis(400))
        .await
        .is_none());
    // Events from one publisher arrive on another node in publish order.
    for i in 0..20 {
        publisher
            .send_text(json!({"jsonrpc": "2.0", "method": "adjunct.publish", "params": {"topic": "cti.call.9", "data": i}}).to_string())
            .await;
    }
    for i in 0..20 {
        assert_eq!(sub_b.recv().await["params"]["data"], i);
    }

    // The whole cluster's sessions, each with its node.
    let mut admin = a.login("/portal", "admin", ADMIN_PW).await;
    let list = admin.ok("admin.sessions.list", json!({})).await;
    let nodes_of = |user: &str| -> Vec<String> {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["user"] == user)
            .map(|s| s["node"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(nodes_of("portal1"), ["b"]);
    assert_eq!(nodes_of("cti1"), ["c"]);
    assert_eq!(nodes_of("app1"), ["a"]);

    // Closing a session on another node.
    let id = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["user"] == "cti1")
        .unwrap()["sessionId"]
        .clone();
    let closed = admin
        .ok("admin.sessions.close", json!({"sessionId": id}))
        .await;
    assert_eq!(closed["closed"], id);
    assert_eq!(sub_c.closed().await, Some(1008));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_write_on_one_node_revokes_on_another_and_stale_writes_are_refused() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut victim = c.login("/portal", "portal1", PORTAL_PW).await;
    let mut admin = a.login("/portal", "admin", ADMIN_PW).await;
    let before = admin.ok("admin.users.list", json!(null)).await["revision"].clone();
    assert_eq!(
        before.as_str(),
        Some(revision_of(c).as_str()),
        "one revision cluster-wide"
    );
    let r = admin
        .ok(
            "admin.users.update",
            json!({"revision": before, "name": "portal1", "enabled": false}),
        )
        .await;
    let after = r["revision"].as_str().unwrap().to_owned();
    assert_ne!(Value::from(after.clone()), before);
    assert_eq!(victim.closed().await, Some(1008), "revoked on node c");
    assert!(eventually(|| revision_of(b) == after && revision_of(c) == after).await);
    // Written with the old revision: refused, nothing changed.
    let (code, _) = admin
        .err(
            "admin.users.update",
            json!({"revision": before, "name": "cti1", "enabled": false}),
        )
        .await;
    assert_eq!(code, STALE);
    // The same stale revision on another node is refused by NATS too.
    let mut admin_b = b.login("/portal", "admin", ADMIN_PW).await;
    let (code, _) = admin_b
        .err(
            "admin.users.update",
            json!({"revision": before, "name": "cti1", "enabled": false}),
        )
        .await;
    assert_eq!(code, STALE);
    // The file keeps its own sections; the shared ones live in NATS.
    let exported = adjunct_gateway::bus::nats::export(&a.gateway().snapshot().config)
        .await
        .unwrap();
    assert_eq!(exported.1.to_string(), after);
    assert!(!exported.0.contains("[server]") && exported.0.contains("portal1"));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_from_one_node_works_on_another_and_lockout_counts_across_nodes() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut on_a = a.ws("/portal", &[]).await.unwrap();
    let r = on_a
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    let token = r["resumeToken"].as_str().unwrap().to_owned();
    let mut on_b = b.ws("/portal", &[]).await.unwrap();
    let r = on_b.ok("session.resume", json!({"token": token})).await;
    assert_eq!(r["user"], "portal1");

    // What the nodes tell each other of logins, as NATS carries it.
    use futures_util::StreamExt;
    let prefix = a.gateway().snapshot().config.cluster.prefix.clone();
    let listener = async_nats::connect(nats.url()).await.unwrap();
    let mut told = listener.subscribe(format!("{prefix}.login")).await.unwrap();
    listener.flush().await.unwrap();

    // reject_limit = 3: one wrong guess on each node locks the account.
    for gw in [a, b, c] {
        let mut s = gw.ws("/portal", &[]).await.unwrap();
        let (code, _) = s
            .err(
                "session.login",
                json!({"user": "cti1", "password": "wrong-Guess-1"}),
            )
            .await;
        assert_eq!(code, LOGIN_FAILED);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut s = a.ws("/portal", &[]).await.unwrap();
    let (code, _) = s
        .err("session.login", json!({"user": "cti1", "password": CTI_PW}))
        .await;
    assert_eq!(
        code, LOGIN_FAILED,
        "locked on node a by guesses on a, b and c"
    );
    // Told by digest: the name typed (people type passwords there) never
    // crosses in clear.
    let mut failures = 0;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), told.next()).await {
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        assert!(!text.contains("cti1"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"].as_str().map(str::len), Some(16), "{text}");
        failures += 1;
    }
    assert!(failures >= 4, "the four failures were told ({failures})");
    // An operator on node b clears the lock: on every node.
    let mut op = b.login("/portal", "admin", ADMIN_PW).await;
    let revision = op.ok("admin.users.list", json!(null)).await["revision"].clone();
    op.ok(
        "admin.users.unlock",
        json!({"revision": revision, "name": "cti1"}),
    )
    .await;
    // Lets the unlock cross to node a (ordering, not a measurement).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut s = a.ws("/portal", &[]).await.unwrap();
    s.ok("session.login", json!({"user": "cti1", "password": CTI_PW}))
        .await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_nats_down_nodes_serve_their_own_sessions_and_refuse_admin_writes() {
    let mut nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let a = &nodes[0];
    let mut prov = provider(a).await;
    let mut caller = a.login("/portal", "portal1", PORTAL_PW).await;
    let mut admin = a.login("/portal", "admin", ADMIN_PW).await;
    let rev = admin.ok("admin.users.list", json!(null)).await["revision"].clone();
    assert_eq!(
        sample(&a.scrape().await, "adjunct_gateway_cluster_up"),
        Some(1.0)
    );

    nats.stop();
    let gw = a.gateway().clone();
    assert!(eventually(|| !gw.bus.up()).await, "the node notices");
    assert_eq!(
        sample(&a.scrape().await, "adjunct_gateway_cluster_up"),
        Some(0.0)
    );
    let (code, e) = admin
        .err(
            "admin.users.update",
            json!({"revision": rev, "name": "cti1", "enabled": false}),
        )
        .await;
    assert_eq!(
        (code, e["message"].clone()),
        (UNAVAILABLE, json!("cluster unavailable"))
    );
    // Routing among this node's own sessions goes on.
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":1,"method":"cti.make_call","params":{}}"#)
        .await;
    assert_eq!(serve(&mut prov, Duration::from_millis(500)).await, 1);
    assert_eq!(caller.recv().await["result"], json!({"by": "me"}));

    // NATS back: the node reconnects by itself and writes work again.
    nats.resume();
    assert!(eventually(|| gw.bus.up()).await, "reconnected");
    let mut ok = false;
    for _ in 0..20 {
        let r = admin
            .call(
                "admin.users.update",
                json!({"revision": rev, "name": "cti1", "enabled": false}),
            )
            .await;
        if r.get("result").is_some() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "admin writes work again after NATS is back");
    // The other nodes watch again and install the new revision.
    let after = revision_of(a);
    let b = &nodes[1];
    assert!(
        eventually(|| revision_of(b) == after).await,
        "b installs {after}"
    );
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_nats_server_of_three_stops_and_routing_goes_on() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<String> = cports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let mut servers: Vec<NatsServer> = (0..3)
        .map(|i| {
            let extra = vec![
                "--name".to_string(),
                format!("n{i}"),
                "--cluster_name".into(),
                "agwtest".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cports[i]),
                "--routes".into(),
                routes.join(","),
            ];
            NatsServer::start(ports[i], dirs[i].path(), &extra)
        })
        .collect();
    let urls: Vec<String> = servers.iter().map(NatsServer::url).collect();
    let prefix = format!("t{}", free_port());
    // JetStream elects its leader before the first node can open the bucket.
    let mut a = None;
    for _ in 0..60 {
        a = try_start(&node_extra("a", &urls, &prefix)).await;
        if a.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let a = a.expect("the 3-server JetStream cluster came up");
    let b = TestGateway::start_with("", &node_extra("b", &urls, &prefix)).await;
    let mut prov = provider(&a).await;
    let mut caller = b.login("/portal", "portal1", PORTAL_PW).await;
    let mut admin = a.login("/portal", "admin", ADMIN_PW).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":1,"method":"cti.make_call","params":{}}"#)
        .await;
    assert_eq!(serve(&mut prov, Duration::from_millis(500)).await, 1);
    assert_eq!(caller.recv().await["id"], 1);

    // Each server in turn is the one that stops (then comes back): no
    // session is lost, and a request is answered once the clients have
    // moved to another server.
    for (i, server) in servers.iter_mut().enumerate() {
        server.stop();
        let mut answered = false;
        for attempt in 0..40 {
            let id = 100 * (i + 1) + attempt;
            caller
                .send_text(
                    json!({"jsonrpc": "2.0", "id": id, "method": "cti.make_call", "params": {}})
                        .to_string(),
                )
                .await;
            serve(&mut prov, Duration::from_millis(300)).await;
            let v = caller.recv().await;
            if v.get("result").is_some() {
                answered = true;
                break;
            }
            // -32004 while no node is reachable; -32005 at the routed
            // timeout for a request that was in the stopped server when it
            // went (NATS does not redeliver core messages). Never anything else.
            assert!(
                [NO_PROVIDER, PROVIDER_TIMEOUT].contains(&code(&v)),
                "attempt {attempt}: only -32004 or -32005 while reconnecting: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(answered, "routing works with server {i} stopped");
        assert_eq!(caller.ok("session.ping", json!(null)).await, json!({}));
        assert_eq!(admin.ok("session.ping", json!(null)).await, json!({}));
        server.resume();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
    drop(dirs);
}

/// A node on `extra`'s cluster, or `None` if it cannot join yet.
async fn try_start(extra: &str) -> Option<TestGateway> {
    adjunct_gateway::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let (config_path, ca_pem) = write_config(dir.path(), "", extra);
    let config = adjunct_gateway::config::Config::load(&config_path).unwrap();
    let running = adjunct_gateway::start(config).await.ok()?;
    let addr = running.addr;
    Some(TestGateway {
        dir,
        config_path,
        ca_pem,
        running: Some(running),
        addr,
    })
}

/// Node `name` of cluster `prefix` as the real binary (so it can be
/// signalled and killed), with app1 registered on it as a provider of
/// `cti`: the process, its address and CA, its directory, the provider.
async fn binary_node_with_provider(
    nats: &NatsServer,
    prefix: &str,
    name: &str,
) -> (
    tokio::process::Child,
    std::net::SocketAddr,
    String,
    tempfile::TempDir,
    Client,
) {
    let dir = tempfile::tempdir().unwrap();
    let (path, ca_pem) = write_config(dir.path(), "", &node_extra(name, &[nats.url()], prefix));
    let port = free_port();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let d = tokio::process::Command::new(env!("CARGO_BIN_EXE_adjunct-gateway"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut prov = None;
    for _ in 0..100 {
        if let Ok(p) = ws_connect(
            addr,
            &ca_pem,
            "/adjunct",
            &[("Authorization", &basic("app1", APP_PW))],
        )
        .await
        {
            prov = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut prov = prov.expect("node d serves");
    prov.ok("adjunct.register", json!({"namespaces": ["cti"]}))
        .await;
    (d, addr, ca_pem, dir, prov)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_fails_what_it_served_and_its_clients_resume_elsewhere() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let b = &nodes[1];
    // Node d is the real binary, so it can be killed with SIGKILL: it says
    // goodbye to nobody, the others notice its silence.
    let prefix = b.gateway().snapshot().config.cluster.prefix.clone();
    let (mut d, addr, ca_pem, _dir, mut prov) =
        binary_node_with_provider(&nats, &prefix, "d").await;
    let mut on_d = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
    let token = on_d
        .ok("session.login", json!({"user": "cti1", "password": CTI_PW}))
        .await["resumeToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut caller = b.login("/portal", "portal1", PORTAL_PW).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"p","method":"cti.make_call","params":{}}"#)
        .await;
    assert_eq!(prov.recv().await["method"], "cti.make_call");
    d.kill().await.unwrap();
    // Failed with -32004 when d's heartbeat goes silent, not -32005 after 5 s.
    let v = caller
        .recv_within(Duration::from_secs(3))
        .await
        .expect("an answer before the routed timeout");
    assert_eq!((v["id"].clone(), code(&v)), (json!("p"), NO_PROVIDER));
    // d's client comes back through the balancer to b with its token.
    let mut on_b = b.ws("/portal", &[]).await.unwrap();
    let r = on_b.ok("session.resume", json!({"token": token})).await;
    assert_eq!(r["user"], "cti1");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_delivering_node_checks_rights_after_an_admin_change_elsewhere() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut publisher = provider(a).await;
    let mut sub = c.login("/portal", "portal1", PORTAL_PW).await;
    sub.ok("events.subscribe", json!({"topics": ["cti.*"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher
        .ok("adjunct.publish", json!({"topic": "cti.x", "data": 1}))
        .await;
    assert_eq!(sub.recv().await["params"]["data"], 1);

    // On b, Portal Users lose one-X CTI API; portal1's session on c stays
    // (it still may connect) but gets no more cti events.
    let mut admin = b.login("/portal", "admin", ADMIN_PW).await;
    let rev = admin.ok("admin.groups.list", json!(null)).await["revision"].clone();
    let r = admin
        .ok(
            "admin.groups.update",
            json!({"revision": rev, "name": "Portal Users", "rights": ["TURN Server Connection"]}),
        )
        .await;
    let after = r["revision"].as_str().unwrap().to_owned();
    assert!(eventually(|| revision_of(c) == after).await);
    publisher
        .ok("adjunct.publish", json!({"topic": "cti.x", "data": 2}))
        .await;
    assert!(
        sub.recv_within(Duration::from_millis(700)).await.is_none(),
        "no event without the right"
    );
    assert_eq!(sub.ok("session.ping", json!(null)).await, json!({}));
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_export_and_status_read_the_cluster() {
    let nats = NatsServer::single();
    let nodes = three_nodes(&[nats.url()]).await;
    let bin = env!("CARGO_BIN_EXE_adjunct-gateway");
    let path = nodes[0].config_path.clone();
    let out = tokio::process::Command::new(bin)
        .args(["cluster", "status", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for node in ["a", "b", "c"] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(node)),
            "{node} in {text}"
        );
    }
    let out = tokio::process::Command::new(bin)
        .args(["cluster", "export", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let shared = String::from_utf8_lossy(&out.stdout);
    assert!(shared.contains("[[service_user]]") && !shared.contains("[cluster]"));
    for n in nodes {
        n.shutdown().await;
    }
}

/// The serving node sends a routed request only to a provider that meets
/// the method's own rule: a Voicemail Pro Basic server on node a is never
/// sent an Administrator's `voicemail.security.set` from node b (the caller
/// gets -32004 at once, not the provider's silence), nor the same call as a
/// notification; a Basic operation still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_serving_node_sends_a_provider_only_what_its_rights_open() {
    const PW: &str = "voice-Mail-3x";
    let nats = NatsServer::single();
    let prefix = format!("t{}", free_port());
    let users = format!(
        "\n[[rights_group]]\nname = \"vm basic server\"\nrights = [\"Adjunct Server Connection\", \"Voicemail Pro Basic\"]\n\n[[rights_group]]\nname = \"vm admin\"\nrights = [\"Voicemail Pro Administrator\"]\n\n[[service_user]]\nname = \"vmserver\"\npassword = \"{hash}\"\ngroups = [\"vm basic server\"]\n\n[[service_user]]\nname = \"vm-admin\"\npassword = \"{hash}\"\ngroups = [\"vm admin\"]\n",
        hash = cheap_hash(PW)
    );
    let mut nodes = Vec::new();
    for node in ["a", "b"] {
        let extra = format!("{}{users}", node_extra(node, &[nats.url()], &prefix));
        nodes.push(TestGateway::start_with("", &extra).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut weak = a.login("/adjunct", "vmserver", PW).await;
    weak.ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = b.login("/portal", "vm-admin", PW).await;
    admin
        .send_text(r#"{"jsonrpc":"2.0","method":"voicemail.security.set","params":{"pin":"4711"}}"#)
        .await;
    let v = admin
        .call("voicemail.security.set", json!({"pin": "4711"}))
        .await;
    assert_eq!(code(&v), NO_PROVIDER, "{v}");
    // What the weak provider is sent next is the Basic operation, nothing before it.
    admin
        .send_text(r#"{"jsonrpc":"2.0","id":"read","method":"voicemail.config.get"}"#)
        .await;
    let req = weak.recv().await;
    assert_eq!(req["method"], "voicemail.config.get", "{req}");
    for n in nodes {
        n.shutdown().await;
    }
}

/// A NATS client playing a node that serves `cti` ("ghost") takes the
/// `cti.make_call` (id "p") a portal user on `a` sends; the request as the
/// bus brought it, to answer as the test wants.
async fn ghost_takes_a_request(
    a: &TestGateway,
    nats: &NatsServer,
    prefix: &str,
) -> (async_nats::Client, async_nats::Message, Client) {
    use futures_util::StreamExt;
    let ghost = async_nats::connect(nats.url()).await.unwrap();
    let mut taken = ghost
        .queue_subscribe(format!("{prefix}.route.cti"), "cti".to_owned())
        .await
        .unwrap();
    ghost.flush().await.unwrap();
    let mut caller = a.login("/portal", "portal1", PORTAL_PW).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"p","method":"cti.make_call","params":{}}"#)
        .await;
    let m = tokio::time::timeout(Duration::from_secs(5), taken.next())
        .await
        .expect("the request reaches the bus")
        .unwrap();
    (ghost, m, caller)
}

/// The ghost says "ok" to request `m` as `node`; the caller must then get
/// -32004 for it before the routed timeout (5 s).
async fn ok_then_no_provider(
    ghost: &async_nats::Client,
    m: async_nats::Message,
    node: &str,
    caller: &mut Client,
) {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Agw-Node", node);
    ghost
        .publish_with_headers(m.reply.unwrap(), h, "ok".into())
        .await
        .unwrap();
    ghost.flush().await.unwrap();
    let v = caller
        .recv_within(Duration::from_secs(3))
        .await
        .expect("an answer before the routed timeout (5 s)");
    assert_eq!(
        (v["id"].clone(), code(&v)),
        (json!("p"), NO_PROVIDER),
        "{v}"
    );
}

/// A node that took a request but was never heard from (its first heartbeat
/// not in yet when it died; here a NATS client that answers "ok" and never
/// sends one) is watched from the moment it took the request: the caller
/// gets -32004 when it stays silent, not -32005 at the routed timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_never_heard_from_fails_what_it_took_at_its_silence() {
    let nats = NatsServer::single();
    let prefix = format!("t{}", free_port());
    let a = TestGateway::start_with("", &node_extra("a", &[nats.url()], &prefix)).await;
    let (ghost, m, mut caller) = ghost_takes_a_request(&a, &nats, &prefix).await;
    ok_then_no_provider(&ghost, m, "ghost", &mut caller).await;
    a.shutdown().await;
}

/// Waits past the silence that declares a node gone (0.7 s, checked every
/// 0.2 s), then checks the captured log never says `node` stopped answering.
async fn never_declared_gone(logs: &std::sync::Mutex<Vec<u8>>, node: &str, why: &str) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        !text
            .lines()
            .any(|l| l.contains("stopped answering") && l.contains(node)),
        "{why}:\n{text}"
    );
}

/// A node's "ok" to a request can trail its goodbye (they travel on two
/// subscriptions). The request fails at once (-32004), and the node is not
/// taken back as a peer: before, it was, and was then declared gone a
/// second time ("stopped answering") 0.7 s later, and cluster-wide lists
/// waited for it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ok_that_trails_its_nodes_goodbye_does_not_bring_the_node_back() {
    let logs = capture_logs("warn");
    let nats = NatsServer::single();
    let prefix = format!("t{}", free_port());
    let a = TestGateway::start_with("", &node_extra("a", &[nats.url()], &prefix)).await;
    let (ghost, m, mut caller) = ghost_takes_a_request(&a, &nats, &prefix).await;
    let mut bye = async_nats::HeaderMap::new();
    bye.insert("Agw-Leaving", "1");
    ghost
        .publish_with_headers(
            format!("{prefix}.node.ghost-left"),
            bye,
            r#"{"node":"ghost-left","sessions":0,"revision":"","users":{}}"#.into(),
        )
        .await
        .unwrap();
    ghost.flush().await.unwrap();
    // Lets node a take the goodbye first (sequencing, not a measurement:
    // should it come later, the old code passes too, never the new one fails).
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok_then_no_provider(&ghost, m, "ghost-left", &mut caller).await;
    // A node taken back as a peer would be logged gone by then.
    never_declared_gone(&logs, "ghost-left", "the node that left was taken back").await;
    a.shutdown().await;
}

/// A node stopped with SIGTERM sends what it owes the other nodes before it
/// leaves: the answer its provider sent as the signal came reaches the
/// caller on another node, and its goodbye is heard (the other node does
/// not wait for its silence). Before, the stopping node dropped its queue
/// and left the goodbye to a task the exiting process never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopping_sends_what_it_owes_and_says_goodbye() {
    let logs = capture_logs("warn");
    let nats = NatsServer::single();
    let prefix = format!("t{}", free_port());
    let b = TestGateway::start_with("", &node_extra("b-stays", &[nats.url()], &prefix)).await;
    let (mut d, _, _, _dir, mut prov) = binary_node_with_provider(&nats, &prefix, "d-stops").await;
    let mut caller = b.login("/portal", "portal1", PORTAL_PW).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    caller
        .send_text(r#"{"jsonrpc":"2.0","id":"p","method":"cti.make_call","params":{}}"#)
        .await;
    let req = prov.recv().await;
    prov.send_text(json!({"jsonrpc": "2.0", "id": req["id"], "result": {"callId": 9}}).to_string())
        .await;
    let pid = d.id().expect("d runs").to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let v = caller
        .recv_within(Duration::from_secs(5))
        .await
        .expect("the answer");
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "id": "p", "result": {"callId": 9}})
    );
    let exited = tokio::time::timeout(Duration::from_secs(15), d.wait())
        .await
        .expect("d stops")
        .unwrap();
    assert!(exited.success(), "{exited:?}");
    // Its goodbye came: it was not declared gone for its silence.
    never_declared_gone(&logs, "d-stops", "d went silent instead of saying goodbye").await;
    b.shutdown().await;
}

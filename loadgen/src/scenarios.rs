//! The six scenarios of the benchmark: hold, rpc, routed, fanout, portal,
//! storm. Each takes a server (the gateway or the baseline) and returns
//! numbers; none of them asserts anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::drive::{drive, new_hist, Load, Stats};
use crate::net::{self, id_of, Target, Ws};
use crate::scrape;
use crate::servers::{Server, Users};

/// Handshakes in flight at once while opening many sessions.
const OPENING: usize = 256;

pub const PING: fn(u64) -> String =
    |id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"session.ping"}}"#);

/// How a session authenticates: the gateway takes a resume token, the
/// baseline nothing.
#[derive(Clone)]
pub struct Auth {
    pub app: Option<String>,
    pub portal: Option<String>,
}

impl Auth {
    pub fn gateway(users: &Users) -> Auth {
        Auth {
            app: Some(format!("Bearer {}", users.app_token)),
            portal: Some(format!("Bearer {}", users.portal_token)),
        }
    }

    pub fn none() -> Auth {
        Auth {
            app: None,
            portal: None,
        }
    }
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_secs(pid: u32) -> f64 {
    let ticks = clock_ticks();
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses.
            let rest = s.get(s.rfind(')')? + 2..)?.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Opens `n` sessions on `path` and parks each in a task that answers the
/// server's pings until `stop` is set. Returns how many opened.
pub async fn open_idle(
    target: &Target,
    path: &'static str,
    auth: Option<String>,
    n: usize,
    touch: usize,
    stop: Arc<tokio::sync::Notify>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> usize {
    let opened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut openers = Vec::with_capacity(n);
    for _ in 0..n {
        let target = target.clone();
        let auth = auth.clone();
        let stop = stop.clone();
        let opened = opened.clone();
        let gate = gate.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            let ws = {
                let Ok(_permit) = gate.acquire().await else {
                    return;
                };
                target.connect(path, auth.as_deref()).await
            };
            let Ok(mut ws) = ws else {
                let _ = tx.send(());
                return;
            };
            if touch > 0 && !touch_once(&mut ws, touch).await {
                let _ = tx.send(());
                return;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(());
            let stopped = stop.notified();
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    () = &mut stopped => break,
                    m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
                }
            }
            let _ = ws.close(None).await;
        }));
        openers.push(rx);
    }
    for rx in openers {
        let _ = rx.await;
    }
    opened.load(Ordering::Relaxed)
}

/// Sends one `session.ping` of about `bytes` (the id is that long, so the
/// answer is too) and reads the answer: a session that was busy once.
async fn touch_once(ws: &mut Ws, bytes: usize) -> bool {
    let id = "x".repeat(bytes);
    let request = format!(r#"{{"jsonrpc":"2.0","id":"{id}","method":"session.ping"}}"#);
    if ws.send(Message::text(request)).await.is_err() {
        return false;
    }
    matches!(ws.next().await, Some(Ok(_)))
}

/// The gateway's default `[server] heartbeat_secs`: an idle session gives
/// its buffers back at its next heartbeat.
const GATEWAY_HEARTBEAT: Duration = Duration::from_secs(30);

#[derive(Serialize, Clone, Debug)]
pub struct HoldStep {
    pub sessions: usize,
    pub rss_kib: u64,
    pub kib_per_session: f64,
    /// session.ping p99 (ms) on 20 probe sessions at 2,000 requests/s while these are held.
    pub probe_p99_ms: f64,
}

/// Idle sessions in steps; RSS per session and a latency probe at each.
/// With `touch` > 0 each session first sends and receives one message of
/// about that many bytes, and RSS is read after a gateway heartbeat.
pub async fn hold(
    server: &Server,
    auth: &Auth,
    steps: &[usize],
    probe: bool,
    settle: Duration,
    touch: usize,
) -> anyhow::Result<Vec<HoldStep>> {
    let target = server.target()?;
    tokio::time::sleep(settle).await;
    let rss0 = server.rss_kib();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    let mut held = 0usize;
    let mut out = Vec::new();
    for &n in steps {
        if n > held {
            held += open_idle(
                &target,
                "/adjunct",
                auth.app.clone(),
                n - held,
                touch,
                stop.clone(),
                &mut tasks,
            )
            .await;
        }
        tokio::time::sleep(settle * 2).await;
        if touch > 0 {
            tokio::time::sleep(GATEWAY_HEARTBEAT).await;
        }
        let rss = server.rss_kib();
        let probe_p99_ms = if probe {
            rpc(
                server,
                auth,
                20,
                Load::Open { rate: 100.0 },
                settle,
                settle * 3,
            )
            .await?
            .stats
            .ms(0.99)
        } else {
            0.0
        };
        out.push(HoldStep {
            sessions: held,
            rss_kib: rss,
            kib_per_session: rss.saturating_sub(rss0) as f64 / held.max(1) as f64,
            probe_p99_ms,
        });
    }
    stop.notify_waiters();
    for t in tasks {
        let _ = t.await;
    }
    Ok(out)
}

/// Result of a request scenario, with the server's CPU use.
pub struct Run {
    pub stats: Stats,
    pub server_cpu_secs: f64,
    /// The time the gateway added to routed requests in the measured window,
    /// from its /metrics; None when not scraped or not exposed.
    pub added: Option<scrape::Added>,
}

impl Run {
    /// Requests per second of server CPU (per server core).
    pub fn per_core(&self) -> f64 {
        self.stats.answered as f64 / self.server_cpu_secs.max(1e-9)
    }
}

/// `n` connections to `path` on `target`.
async fn connect_all(
    target: &Target,
    path: &str,
    token: Option<&str>,
    n: usize,
) -> anyhow::Result<Vec<Ws>> {
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(target.connect(path, token).await?);
    }
    Ok(sockets)
}

/// session.ping on `conns` connections.
pub async fn rpc(
    server: &Server,
    auth: &Auth,
    conns: usize,
    load: Load,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Run> {
    let target = server.target()?;
    let sockets = connect_all(&target, "/adjunct", auth.app.as_deref(), conns).await?;
    let watched = Watched {
        pids: &[server.pid()],
        admin: None,
    };
    measure_requests(watched, sockets, PING, load, warmup, measure).await
}

/// The server processes a request scenario watches: their CPU use, and the
/// gateway's metrics listener (`[admin] listen`) if it is to be scraped.
#[derive(Clone, Copy)]
pub struct Watched<'a> {
    pub pids: &'a [u32],
    pub admin: Option<u16>,
}

/// Drives every socket and sums the results; the CPU of the `watched`
/// processes is sampled over the measured window only, and so is the
/// gateway's /metrics when its port is given.
async fn measure_requests(
    watched: Watched<'_>,
    sockets: Vec<Ws>,
    request: fn(u64) -> String,
    load: Load,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Run> {
    let cpu = || watched.pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(drive(ws, request, load, warmup, measure)))
        .collect();
    let scrape = || async {
        match watched.admin {
            Some(port) => scrape::fetch(port).await,
            None => None,
        }
    };
    tokio::time::sleep(warmup).await;
    let cpu0 = cpu();
    let before = scrape().await;
    tokio::time::sleep(measure).await;
    let cpu1 = cpu();
    let after = scrape().await;
    let added = before
        .zip(after)
        .and_then(|(before, after)| scrape::routed_added(&before, &after));
    let mut stats = Stats::new(measure.as_secs_f64());
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(&s);
        }
    }
    Ok(Run {
        stats,
        server_cpu_secs: cpu1 - cpu0,
        added,
    })
}

/// cti.* from `conns` clients through the gateway to `providers` providers
/// (in this process) and back; the gateway's /metrics, if it has the
/// listener, tells the time it added ([`Run::added`]).
pub async fn routed(
    server: &Server,
    auth: &Auth,
    providers: usize,
    conns: usize,
    load: Load,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Run> {
    let target = server.target()?;
    let provider_tasks = start_providers(&target, auth, providers).await?;
    let watched = Watched {
        pids: &[server.pid()],
        admin: server.admin_port,
    };
    let run = routed_from(&target, watched, auth, conns, load, warmup, measure).await;
    for t in provider_tasks {
        t.abort();
    }
    run
}

/// A routed request as `cti.echo` (providers answer `{}`).
const ROUTED: fn(u64) -> String =
    |id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"cti.echo","params":{{}}}}"#);

/// `n` providers of `cti` on `target`, each answering at once; abort the
/// tasks to disconnect them.
pub async fn start_providers(
    target: &Target,
    auth: &Auth,
    n: usize,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let mut raw = net::Raw::open(target.connect("/adjunct", auth.app.as_deref()).await?);
        raw.call(1, "adjunct.register", r#"{"namespaces":["cti"]}"#)
            .await?;
        tasks.push(tokio::spawn(serve_provider(raw)));
    }
    Ok(tasks)
}

/// cti.* from `conns` clients on `target` to whatever providers serve `cti`
/// (on this node or, in a cluster, another); what `watched` says is sampled.
pub async fn routed_from(
    target: &Target,
    watched: Watched<'_>,
    auth: &Auth,
    conns: usize,
    load: Load,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Run> {
    let sockets = connect_all(target, "/portal", auth.portal.as_deref(), conns).await?;
    measure_requests(watched, sockets, ROUTED, load, warmup, measure).await
}

/// A provider that answers every routed request with `{}` at once, all
/// that one read brought in one write. Like the fan-out subscribers
/// ([`count_events`]) it reads and writes frames on the TLS stream itself:
/// the generator should take as little of the machine as it can.
async fn serve_provider(raw: net::Raw) {
    use std::io::Write;
    let mut answer = Vec::with_capacity(64);
    net::serve_frames(raw, |payload, out| {
        if let Some(id) = std::str::from_utf8(payload).ok().and_then(id_of) {
            answer.clear();
            let _ = write!(answer, r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
            net::push_client_frame(out, 0x1, &answer);
        }
    })
    .await;
}

#[derive(Serialize, Clone, Debug)]
pub struct Fanout {
    pub subscribers: usize,
    pub published: u64,
    pub delivered: u64,
    pub lost: u64,
    pub deliveries_per_sec: f64,
}

/// One publisher, `subscribers` subscribers of `cti.bench`.
pub async fn fanout(
    server: &Server,
    auth: &Auth,
    subscribers: usize,
    depth: usize,
    measure: Duration,
) -> anyhow::Result<Fanout> {
    let target = server.target()?;
    fanout_across(&target, &target, auth, subscribers, depth, measure).await
}

/// One publisher on `publish_at`, `subscribers` subscribers of `cti.bench`
/// on `subscribe_at` (the same node, or another node of a cluster).
pub async fn fanout_across(
    publish_at: &Target,
    subscribe_at: &Target,
    auth: &Auth,
    subscribers: usize,
    depth: usize,
    measure: Duration,
) -> anyhow::Result<Fanout> {
    let target = subscribe_at;
    let delivered = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut subs = Vec::new();
    for _ in 0..subscribers {
        let mut raw = net::Raw::open(target.connect("/portal", auth.portal.as_deref()).await?);
        raw.call(1, "events.subscribe", r#"{"topics":["cti.bench"]}"#)
            .await?;
        let (delivered, lost, counting) = (delivered.clone(), lost.clone(), counting.clone());
        subs.push(tokio::spawn(count_events(raw, delivered, lost, counting)));
    }
    let publisher = publish_at.connect("/adjunct", auth.app.as_deref()).await?;
    let request: fn(u64) -> String = |id| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"adjunct.publish","params":{{"topic":"cti.bench","data":{{"n":{id}}}}}}}"#
        )
    };
    let warmup = Duration::from_millis(500);
    let pub_task = tokio::spawn(drive(
        publisher,
        request,
        Load::Closed { depth },
        warmup,
        measure,
    ));
    tokio::time::sleep(warmup).await;
    counting.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(measure).await;
    counting.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let published = pub_task.await.map(|s| s.answered).unwrap_or(0);
    for s in subs {
        s.abort();
    }
    let delivered = delivered.load(Ordering::Relaxed);
    Ok(Fanout {
        subscribers,
        published,
        delivered,
        lost: lost.load(Ordering::Relaxed),
        deliveries_per_sec: delivered as f64 / secs,
    })
}

/// A fan-out subscriber that costs the machine little, so that the figure
/// is the gateway's: it reads the TLS stream itself and walks the frames,
/// counting events by the prefix the gateway writes them with
/// (`{"jsonrpc":"2.0","method":"event"`), without building a message per
/// frame or checking UTF-8 (tungstenite's reader cost the generator about
/// 0.3 of a core at the fan-out peak). Answers pings; ends at a close or
/// when the stream does.
async fn count_events(
    raw: net::Raw,
    delivered: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    counting: Arc<std::sync::atomic::AtomicBool>,
) {
    const EVENT: &[u8] = br#"{"jsonrpc":"2.0","method":"event""#;
    net::serve_frames(raw, |payload, _| {
        if !counting.load(Ordering::Relaxed) {
            return;
        }
        if payload.starts_with(EVENT) {
            delivered.fetch_add(1, Ordering::Relaxed);
        } else if let Ok(t) = std::str::from_utf8(payload) {
            if t.contains("\"event.lost\"") {
                let n = t
                    .split("\"count\":")
                    .nth(1)
                    .and_then(|r| r.trim_end_matches(['}', ']']).parse::<u64>().ok())
                    .unwrap_or(0);
                lost.fetch_add(n, Ordering::Relaxed);
            }
        }
    })
    .await;
}

/// The User Portal flow, `workers` at a time: TLS connect, upgrade with the
/// token (gateway) or nothing (baseline), one request, close.
pub async fn portal(
    server: &Server,
    auth: &Auth,
    workers: usize,
    measure: Duration,
) -> anyhow::Result<Run> {
    let target = server.target()?;
    let is_gateway = auth.portal.is_some();
    let pid = server.pid();
    let until = Instant::now() + measure;
    let cpu0 = cpu_secs(pid);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let target = target.clone();
        let auth = auth.portal.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::new(measure.as_secs_f64());
            while Instant::now() < until {
                let t = Instant::now();
                let Ok(mut ws) = target.connect("/portal", auth.as_deref()).await else {
                    continue;
                };
                let ok = if is_gateway {
                    net::call(&mut ws, 1, "turn.credentials", "{}")
                        .await
                        .is_ok()
                } else {
                    net::call(&mut ws, 1, "session.ping", "{}").await.is_ok()
                };
                let _ = ws.close(None).await;
                if ok {
                    stats.answered += 1;
                    let _ = stats.hist.record(t.elapsed().as_micros().max(1) as u64);
                }
            }
            stats
        }));
    }
    let mut stats = Stats::new(measure.as_secs_f64());
    for t in tasks {
        if let Ok(s) = t.await {
            stats.merge(&s);
        }
    }
    let cpu1 = cpu_secs(pid);
    Ok(Run {
        stats,
        server_cpu_secs: cpu1 - cpu0,
        added: None,
    })
}

#[derive(Serialize, Clone, Debug)]
pub struct Storm {
    pub sessions: usize,
    pub reconnected: usize,
    pub secs: f64,
    pub p99_ms: f64,
}

/// `n` token-authenticated sessions; the gateway restarts; every session
/// reconnects at once with its token. Seconds from the restart until the
/// last is back and answering.
pub async fn storm<F, Fut>(
    server: Server,
    auth: &Auth,
    n: usize,
    restart: F,
) -> anyhow::Result<(Storm, Server)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Server>>,
{
    let target = server.target()?;
    let back = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let restarted_at = Arc::new(parking_lot::Mutex::new(None::<Instant>));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let opened = Arc::new(AtomicUsize::new(0));
    let settled = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (target, auth) = (target.clone(), auth.app.clone());
        let (back, armed, restarted_at, done_tx, opened, settled, gate) = (
            back.clone(),
            armed.clone(),
            restarted_at.clone(),
            done_tx.clone(),
            opened.clone(),
            settled.clone(),
            gate.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let first = {
                let Ok(_p) = gate.acquire().await else { return };
                target.connect("/adjunct", auth.as_deref()).await
            };
            if first.is_ok() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            settled.fetch_add(1, Ordering::Relaxed);
            let Ok(mut ws) = first else { return };
            // Wait for the restart to take this session away.
            while let Some(Ok(_)) = ws.next().await {}
            // Free the descriptor before taking a new one.
            drop(ws);
            if !armed.load(Ordering::Relaxed) {
                return;
            }
            let mut ws = match target
                .connect_retrying("/adjunct", auth.as_deref(), Duration::from_secs(120))
                .await
            {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("storm: reconnect failed: {e}");
                    return;
                }
            };
            let answer = net::call(&mut ws, 7, "session.ping", "{}").await;
            if let Err(e) = &answer {
                eprintln!("storm: first request failed: {e}");
            }
            if answer.is_ok() {
                back.fetch_add(1, Ordering::Relaxed);
                if let Some(t0) = *restarted_at.lock() {
                    let _ = done_tx.send(t0.elapsed());
                }
            }
            // Hold it until the scenario ends.
            while let Some(Ok(_)) = ws.next().await {}
        }));
    }
    drop(done_tx);
    while settled.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last upgrades settle into sessions.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = opened.load(Ordering::Relaxed);
    armed.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    *restarted_at.lock() = Some(t0);
    server.stop().await;
    let server = restart().await?;
    let mut hist = new_hist();
    let deadline = t0 + Duration::from_secs(120);
    let mut last = Duration::ZERO;
    while back.load(Ordering::Relaxed) < held && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), done_rx.recv()).await {
            Ok(Some(d)) => {
                last = last.max(d);
                let _ = hist.record(d.as_micros().max(1) as u64);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    while let Ok(d) = done_rx.try_recv() {
        last = last.max(d);
        let _ = hist.record(d.as_micros().max(1) as u64);
    }
    for t in tasks {
        t.abort();
    }
    Ok((
        Storm {
            sessions: held,
            reconnected: back.load(Ordering::Relaxed),
            secs: last.as_secs_f64(),
            p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        },
        server,
    ))
}

#[derive(Serialize, Clone, Debug)]
pub struct LoginStorm {
    pub logins: usize,
    pub verified_secs: f64,
    pub pings: usize,
    pub ping_p50_ms: f64,
    pub ping_p99_ms: f64,
}

/// `n` logins of unknown users arrive at once (each costs a full argon2id run
/// against the dummy hash, like a wrong password)
/// while an established session sends session.ping every 5 ms.
pub async fn login_storm(server: &Server, auth: &Auth, n: usize) -> anyhow::Result<LoginStorm> {
    let target = server.target()?;
    let mut pinger = target.connect("/adjunct", auth.app.as_deref()).await?;
    let gate = Arc::new(tokio::sync::Semaphore::new(OPENING));
    let mut opening = Vec::with_capacity(n);
    for _ in 0..n {
        let (target, gate) = (target.clone(), gate.clone());
        opening.push(tokio::spawn(async move {
            let _p = gate.acquire().await.ok()?;
            target.connect("/portal", None).await.ok()
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for o in opening {
        if let Ok(Some(ws)) = o.await {
            sockets.push(ws);
        }
    }
    let logins = sockets.len();
    let t0 = Instant::now();
    let storm: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            tokio::spawn(async move {
                let params = format!(r#"{{"user":"ghost-{i}","password":"wrong"}}"#);
                // Refused, as intended: only the answer's arrival matters.
                let _ = net::call(&mut ws, 1, "session.login", &params).await;
            })
        })
        .collect();
    let mut hist = new_hist();
    let mut pings = 0usize;
    let mut id = 100u64;
    while storm.iter().any(|t| !t.is_finished()) {
        let t = Instant::now();
        net::call(&mut pinger, id, "session.ping", "{}").await?;
        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
        pings += 1;
        id += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let verified_secs = t0.elapsed().as_secs_f64();
    Ok(LoginStorm {
        logins,
        verified_secs,
        pings,
        ping_p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        ping_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

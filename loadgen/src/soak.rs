//! The soak: normal traffic and every known attacker at once against one
//! gateway on its default limits, sampled once a second (RSS, the
//! bystander's ping p99, refusals by kind). It reports; it never asserts.
//! BENCHMARKS.md plots its JSON (scripts/plot_soak.py).
//!
//! Normal: pings, routed `cti.*` requests to two providers that answer,
//! events to subscribers that read. Attackers: a provider that reads nothing
//! (and comes back when closed) with callers retrying after timeouts;
//! concurrent password writes by an administrator; idle TCP connections
//! from one address; wrong-password logins from another; subscribers that
//! never read.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::drive::new_hist;
use crate::net::{self, Target, Ws};
use crate::scenarios::Auth;
use crate::scrape;
use crate::servers::{Server, Workdir};

/// One second of the soak.
#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    pub t: f64,
    pub rss_kib: u64,
    pub bystander_p99_ms: f64,
    pub bystander_answered: u64,
    /// Pings with no answer within 1 s.
    pub bystander_missed: u64,
    /// Normal requests answered with a result this second.
    pub normal_ok: u64,
    /// Counter families from /metrics (summed over labels), cumulative.
    pub counters: BTreeMap<String, f64>,
}

#[derive(Serialize, Debug)]
pub struct Soak {
    pub secs: u64,
    pub warmup_secs: u64,
    pub samples: Vec<Sample>,
    /// After warm-up: RSS at its lowest and highest, and the slope of a
    /// least-squares line through it (KiB per minute).
    pub rss_after_warmup_min_kib: u64,
    pub rss_after_warmup_max_kib: u64,
    pub rss_slope_kib_per_min: f64,
    pub bystander_p99_median_ms: f64,
    pub bystander_missed_total: u64,
}

/// Stops every task at the deadline.
#[derive(Clone)]
struct Clock(Instant);

impl Clock {
    fn running(&self) -> bool {
        Instant::now() < self.0
    }
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

pub async fn run(
    gateway: &Server,
    work: &Workdir,
    auth: &Auth,
    secs: u64,
    warmup_secs: u64,
) -> anyhow::Result<Soak> {
    let target = gateway.target()?;
    let clock = Clock(Instant::now() + Duration::from_secs(secs));
    let normal_ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();

    // `spawn(n, make)` starts n tasks of one kind.
    let mut spawn = |count: usize, make: &dyn Fn() -> tokio::task::JoinHandle<()>| {
        tasks.extend((0..count).map(|_| make()));
    };
    let (t, c, app, portal) = (&target, &clock, &auth.app, &auth.portal);
    let calls = |method: &'static str, every_ms: u64, ok: &Arc<AtomicU64>| {
        let ok = ok.clone();
        move || {
            let every = Duration::from_millis(every_ms);
            tokio::spawn(caller(
                t.clone(),
                portal.clone(),
                c.clone(),
                method,
                every,
                ok.clone(),
            ))
        }
    };
    let uncounted = Arc::new(AtomicU64::new(0));

    // Normal: two providers that answer, callers, a publisher, subscribers.
    spawn(2, &|| {
        tokio::spawn(provider(t.clone(), app.clone(), c.clone(), true))
    });
    spawn(8, &calls("session.ping", 10, &normal_ok));
    spawn(4, &calls("cti.make_call", 20, &normal_ok));
    spawn(50, &|| {
        tokio::spawn(subscriber(t.clone(), portal.clone(), c.clone(), true))
    });
    spawn(1, &|| {
        tokio::spawn(publisher(t.clone(), app.clone(), c.clone()))
    });

    // Attackers.
    spawn(1, &|| {
        tokio::spawn(provider(t.clone(), app.clone(), c.clone(), false))
    });
    spawn(4, &calls("cti.make_call", 1, &uncounted));
    spawn(5, &|| {
        tokio::spawn(subscriber(t.clone(), portal.clone(), c.clone(), false))
    });
    for _ in 0..20 {
        tasks.push(tokio::spawn(admin_writer(
            target.clone(),
            work.admin_password.clone(),
            clock.clone(),
        )));
    }
    for _ in 0..20 {
        tasks.push(tokio::spawn(wrong_logins(target.clone(), clock.clone())));
    }
    tasks.push(tokio::spawn(idle_connections(
        target.clone(),
        300,
        clock.clone(),
    )));

    // The bystander and the sampler.
    let samples = sample(gateway, work, &target, auth, clock.clone(), normal_ok).await?;
    for t in tasks {
        t.abort();
    }
    Ok(summarize(secs, warmup_secs, samples))
}

/// Every second: RSS, the bystander's pings, the counters.
async fn sample(
    gateway: &Server,
    work: &Workdir,
    target: &Target,
    auth: &Auth,
    clock: Clock,
    normal_ok: Arc<AtomicU64>,
) -> anyhow::Result<Vec<Sample>> {
    let start = Instant::now();
    let mut bystander = target.connect("/portal", auth.portal.as_deref()).await?;
    let mut samples = Vec::new();
    let mut id = 0u64;
    while clock.running() {
        let second = Instant::now() + Duration::from_secs(1);
        let mut hist = new_hist();
        let (mut answered, mut missed) = (0u64, 0u64);
        while Instant::now() < second {
            id += 1;
            let sent = Instant::now();
            bystander
                .send(Message::text(crate::scenarios::PING(id)))
                .await?;
            match tokio::time::timeout(Duration::from_secs(1), answer(&mut bystander, id)).await {
                Ok(Ok(())) => {
                    answered += 1;
                    let _ = hist.record(sent.elapsed().as_micros() as u64);
                }
                _ => missed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        samples.push(Sample {
            t: start.elapsed().as_secs_f64(),
            rss_kib: gateway.rss_kib(),
            bystander_p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
            bystander_answered: answered,
            bystander_missed: missed,
            normal_ok: normal_ok.swap(0, Ordering::Relaxed),
            counters: counters(work.admin_port).await,
        });
    }
    Ok(samples)
}

async fn answer(ws: &mut Ws, id: u64) -> anyhow::Result<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if net::id_of(t.as_str()) == Some(id) => return Ok(()),
            Some(Ok(_)) => continue,
            _ => anyhow::bail!("bystander connection ended"),
        }
    }
}

/// Counter families of the exposition, summed over their labels.
async fn counters(admin_port: Option<u16>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(port) = admin_port else { return out };
    let Some(text) = scrape::fetch(port).await else {
        return out;
    };
    for s in scrape::samples(&text) {
        if s.name.ends_with("_total") && !s.name.starts_with("process_") {
            *out.entry(s.name.to_owned()).or_insert(0.0) += s.value;
        }
    }
    out
}

/// Keeps a session open on `path`, reconnecting after it ends, until the
/// deadline; `work` runs on each connection.
async fn reconnecting<F, Fut>(
    target: &Target,
    path: &str,
    auth: Option<&str>,
    clock: &Clock,
    mut work: F,
) where
    F: FnMut(Ws) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while clock.running() {
        match target.connect(path, auth).await {
            Ok(ws) => work(ws).await,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A provider of `cti`: `healthy` answers every request; the other reads
/// nothing after registering (and registers again when closed).
async fn provider(target: Target, auth: Option<String>, clock: Clock, healthy: bool) {
    reconnecting(
        &target,
        "/adjunct",
        auth.as_deref(),
        &clock.clone(),
        |mut ws| {
            let clock = clock.clone();
            async move {
                if net::call(&mut ws, 1, "adjunct.register", r#"{"namespaces":["cti"]}"#)
                    .await
                    .is_err()
                {
                    return;
                }
                if !healthy {
                    // Hold the connection and read nothing until the gateway
                    // drops it (or the soak ends).
                    while clock.running() {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if ws.send(Message::Ping(Default::default())).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                while clock.running() {
                    let Some(Ok(Message::Text(t))) = ws.next().await else {
                        return;
                    };
                    let Some(id) = net::id_of(t.as_str()) else {
                        continue;
                    };
                    let reply = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"ok":true}}}}"#);
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            }
        },
    )
    .await;
}

/// Sends `method` every `every`, one at a time, retrying after any error.
async fn caller(
    target: Target,
    auth: Option<String>,
    clock: Clock,
    method: &'static str,
    every: Duration,
    ok: Arc<AtomicU64>,
) {
    let params = r#"{"from":"201","to":"202"}"#;
    reconnecting(
        &target,
        "/portal",
        auth.as_deref(),
        &clock.clone(),
        |mut ws| {
            let (clock, ok) = (clock.clone(), ok.clone());
            async move {
                let mut id = 0;
                while clock.running() {
                    id += 1;
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        net::call(&mut ws, id, method, params),
                    )
                    .await
                    {
                        Ok(Ok(_)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        // An error answer (busy, timeout): go on.
                        Ok(Err(e)) if e.to_string().contains("failed:") => {}
                        _ => return,
                    }
                    tokio::time::sleep(every).await;
                }
            }
        },
    )
    .await;
}

/// Subscribes to `cti.call.*`; `reads` or never reads again.
async fn subscriber(target: Target, auth: Option<String>, clock: Clock, reads: bool) {
    reconnecting(
        &target,
        "/portal",
        auth.as_deref(),
        &clock.clone(),
        |mut ws| {
            let clock = clock.clone();
            async move {
                let sub = r#"{"topics":["cti.call.*"]}"#;
                if net::call(&mut ws, 1, "events.subscribe", sub)
                    .await
                    .is_err()
                {
                    return;
                }
                while clock.running() {
                    if reads {
                        if !matches!(ws.next().await, Some(Ok(_))) {
                            return;
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        // Only notice when the gateway has dropped it.
                        if ws.send(Message::Ping(Default::default())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// 200 events a second, 1 KiB each.
async fn publisher(target: Target, auth: Option<String>, clock: Clock) {
    let pad = "p".repeat(1024);
    reconnecting(
        &target,
        "/adjunct",
        auth.as_deref(),
        &clock.clone(),
        |mut ws| {
            let (clock, pad) = (clock.clone(), pad.clone());
            async move {
                let mut id = 0;
                while clock.running() {
                    id += 1;
                    let params = format!(r#"{{"topic":"cti.call.201","data":{{"pad":"{pad}"}}}}"#);
                    if net::call(&mut ws, id, "adjunct.publish", &params)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        },
    )
    .await;
}

/// Sets the victim's password over and over with the revision it just read.
async fn admin_writer(target: Target, password: String, clock: Clock) {
    let login = serde_json::json!({"user": "admin", "password": password}).to_string();
    reconnecting(&target, "/portal", None, &clock.clone(), |mut ws| {
        let (clock, login) = (clock.clone(), login.clone());
        async move {
            if net::call(&mut ws, 1, "session.login", &login)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            let mut id = 1;
            while clock.running() {
                id += 2;
                let Ok(list) = net::call(&mut ws, id, "admin.users.list", "null").await else {
                    return;
                };
                let Ok(rev) = net::string_field(&list, &["result", "revision"]) else {
                    return;
                };
                let pw = adjunct_gateway::directory::random_secret(16);
                let params =
                    serde_json::json!({"revision": rev, "name": "soak-victim", "password": pw});
                match net::call(
                    &mut ws,
                    id + 1,
                    "admin.users.set_password",
                    &params.to_string(),
                )
                .await
                {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("failed:") => {}
                    Err(_) => return,
                }
            }
        }
    })
    .await;
}

/// Wrong-password logins for the administrator from 127.0.0.4.
async fn wrong_logins(target: Target, clock: Clock) {
    let login = r#"{"user":"admin","password":"not-the-password"}"#;
    while clock.running() {
        let Ok(mut ws) = target.connect_from(ip(4), "/portal", None).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut id = 0;
        while clock.running() {
            id += 1;
            match net::call(&mut ws, id, "session.login", login).await {
                Err(e) if e.to_string().contains("failed:") => {}
                _ => break,
            }
        }
    }
}

/// `n` TCP connections from 127.0.0.3 that never send a byte, reopened as
/// the gateway drops them.
async fn idle_connections(target: Target, n: usize, clock: Clock) {
    let mut open: Vec<tokio::net::TcpStream> = Vec::with_capacity(n);
    while clock.running() {
        open.retain(|c| {
            let mut b = [0u8; 1];
            // Closed by the gateway: readable with 0 bytes.
            !matches!(c.try_read(&mut b), Ok(0))
        });
        while open.len() < n && clock.running() {
            let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                break;
            };
            if socket.bind(std::net::SocketAddr::new(ip(3), 0)).is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(1), socket.connect(target.addr)).await {
                Ok(Ok(c)) => open.push(c),
                _ => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn summarize(secs: u64, warmup_secs: u64, samples: Vec<Sample>) -> Soak {
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= warmup_secs as f64)
        .collect();
    let rss: Vec<(f64, f64)> = after.iter().map(|s| (s.t, s.rss_kib as f64)).collect();
    let n = rss.len().max(1) as f64;
    let (mx, my) = (
        rss.iter().map(|p| p.0).sum::<f64>() / n,
        rss.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = rss.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = rss.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope_per_sec = if var > 0.0 { cov / var } else { 0.0 };
    let mut p99: Vec<f64> = after.iter().map(|s| s.bystander_p99_ms).collect();
    p99.sort_by(f64::total_cmp);
    Soak {
        secs,
        warmup_secs,
        rss_after_warmup_min_kib: after.iter().map(|s| s.rss_kib).min().unwrap_or(0),
        rss_after_warmup_max_kib: after.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        rss_slope_kib_per_min: slope_per_sec * 60.0,
        bystander_p99_median_ms: p99.get(p99.len() / 2).copied().unwrap_or(0.0),
        bystander_missed_total: samples.iter().map(|s| s.bystander_missed).sum(),
        samples,
    }
}

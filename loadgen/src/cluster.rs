//! The `cluster` subcommand (issue 14): one `nats-server -js` and two
//! gateway nodes, a and b (the release binary), on this machine. It
//! measures routed latency at half the peak for callers on the providers'
//! node and on the other node, cross-node event deliveries, how long an
//! admin change takes to reach every node, and how long requests pending on
//! a killed node wait for their -32004. It reports; it never asserts.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::drive::Load;
use crate::net::{self, id_of, Target, Ws};
use crate::scenarios::{self, Auth, Fanout, Run};
use crate::servers::{self, Nats, Server, Workdir, VICTIM_GROUP};

/// `error.code` for "no provider" and "forbidden".
const NO_PROVIDER: i64 = -32004;
const FORBIDDEN: i64 = -32003;
/// How long a state is waited for before the measurement counts as failed.
const PATIENCE: Duration = Duration::from_secs(10);

/// What `adjunct-loadgen cluster` is asked to do.
pub struct Plan {
    pub conns: usize,
    pub depth: usize,
    pub providers: usize,
    pub subscribers: usize,
    pub changes: usize,
    pub kills: usize,
    pub pending: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Routed {
    /// Closed loop: requests answered per second.
    pub peak_per_sec: f64,
    /// Requests per CPU-second of node a, node b and NATS together.
    pub peak_per_server_cpu_sec: f64,
    pub peak_p99_ms: f64,
    /// Open loop at half `peak_per_sec`.
    pub half_rate_per_sec: f64,
    pub half_p50_ms: f64,
    pub half_p99_ms: f64,
}

/// Delays in milliseconds: median and maximum over `samples`.
#[derive(Serialize, Clone, Debug, Default)]
pub struct Delays {
    pub samples: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

impl Delays {
    fn of(mut ms: Vec<f64>) -> Delays {
        ms.sort_by(f64::total_cmp);
        Delays {
            samples: ms.len(),
            median_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Killed {
    pub kills: usize,
    /// From SIGKILL to each pending request's answer on node a.
    pub failed: Delays,
    /// Answers that were not -32004 (e.g. -32005 after the routed timeout).
    pub other_answers: usize,
    /// The first few of them, with how long after the kill each came
    /// (milliseconds), so a run that gets them says what they were.
    pub others: Vec<(f64, String)>,
    /// Pending requests that got no answer within 10 s.
    pub unanswered: usize,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    pub machine: String,
    /// Callers on node a, providers on node a (NATS still in the path).
    pub same_node: Routed,
    /// Callers on node b, providers on node a.
    pub cross_node: Routed,
    /// Publisher on node a, subscribers on node b.
    pub events: Option<Fanout>,
    /// Events published times subscribers: what full delivery would be.
    /// `delivered + lost` below it is what vanished unreported on the way.
    pub events_offered: u64,
    /// From sending `admin.groups.update` on node a until sessions on both
    /// nodes see the change.
    pub admin_change: Delays,
    /// The admin write's own answer time on node a.
    pub admin_write: Delays,
    pub node_killed: Killed,
}

pub async fn run(bin: &Path, plan: &Plan, machine: String) -> anyhow::Result<Report> {
    let dir = std::env::temp_dir().join(format!("adjunct-loadgen-cluster-{}", std::process::id()));
    let outcome = run_in(bin, plan, machine, &dir).await;
    if outcome.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("cluster: logs kept in {}", dir.display());
    }
    outcome
}

async fn run_in(bin: &Path, plan: &Plan, machine: String, dir: &Path) -> anyhow::Result<Report> {
    let work = Workdir::create(dir, servers::Profile::Cluster)?;
    let nats = Nats::start(dir).await?;
    let prefix = format!("lg{}", std::process::id());
    let node_a = work.node("a", &nats.url, &prefix)?;
    let node_b = work.node("b", &nats.url, &prefix)?;
    // a seeds the shared configuration; b finds it.
    let a = work.start_node(bin, &node_a).await?;
    let b = work.start_node(bin, &node_b).await?;
    let (ta, tb) = (a.target()?, b.target()?);
    // The resume key is shared: tokens minted on a work on b.
    let auth = Auth::gateway(&work.users(&ta).await?);
    // Each node hears the other's heartbeat.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut report = Report {
        machine,
        ..Report::default()
    };

    eprintln!(
        "cluster routed: {} providers on a; {} callers x {} in flight on a, then on b",
        plan.providers, plan.conns, plan.depth
    );
    let providers = scenarios::start_providers(&ta, &auth, plan.providers).await?;
    ready(&tb, &auth).await?;
    let pids = [a.pid(), b.pid(), nats.pid()];
    report.same_node = routed(&ta, &pids, &auth, plan).await?;
    report.cross_node = routed(&tb, &pids, &auth, plan).await?;
    for p in providers {
        p.abort();
    }

    eprintln!(
        "cluster events: 1 publisher on a, {} subscribers on b",
        plan.subscribers
    );
    let events =
        scenarios::fanout_across(&ta, &tb, &auth, plan.subscribers, 8, plan.measure).await?;
    report.events_offered = events.published * events.subscribers as u64;
    report.events = Some(events);

    eprintln!(
        "cluster admin: {} changes on a, seen on a and b",
        plan.changes
    );
    let (change, write) = admin_changes(&work, &ta, &tb, plan.changes).await?;
    report.admin_change = change;
    report.admin_write = write;

    eprintln!(
        "cluster kill: {} pending on b's provider, b killed, {} times",
        plan.pending, plan.kills
    );
    let mut delays = Vec::new();
    let mut killed = Killed::default();
    let mut b = Some(b);
    for _ in 0..plan.kills {
        let b = match b.take() {
            Some(b) => b,
            None => {
                let b = work.start_node(bin, &node_b).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                b
            }
        };
        let tb = b.target()?;
        kill_with_pending(b, &ta, &tb, &auth, plan.pending, &mut delays, &mut killed).await?;
        killed.kills += 1;
    }
    killed.failed = Delays::of(delays);
    report.node_killed = killed;

    if let Some(b) = b {
        b.stop().await;
    }
    a.stop().await;
    nats.stop().await;
    Ok(report)
}

/// Waits until a routed request from `callers_at` is answered by a provider.
async fn ready(callers_at: &Target, auth: &Auth) -> anyhow::Result<()> {
    let mut ws = callers_at
        .connect("/portal", auth.portal.as_deref())
        .await?;
    let deadline = Instant::now() + PATIENCE;
    for id in 1.. {
        let answer = net::ask(&mut ws, id, "cti.echo", "{}").await?;
        if net::error_code(&answer).is_none() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no provider reachable within {PATIENCE:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = ws.close(None).await;
    Ok(())
}

/// Closed-loop peak from callers on `callers_at`, then open loop at half of it.
async fn routed(
    callers_at: &Target,
    pids: &[u32],
    auth: &Auth,
    plan: &Plan,
) -> anyhow::Result<Routed> {
    let run = |load| {
        scenarios::routed_from(
            callers_at,
            scenarios::Watched { pids, admin: None },
            auth,
            plan.conns,
            load,
            plan.warmup,
            plan.measure,
        )
    };
    let peak: Run = run(Load::Closed { depth: plan.depth }).await?;
    let half = peak.stats.rate() / 2.0;
    let open = run(Load::Open {
        rate: half / plan.conns.max(1) as f64,
    })
    .await?;
    Ok(Routed {
        peak_per_sec: peak.stats.rate(),
        peak_per_server_cpu_sec: peak.per_core(),
        peak_p99_ms: peak.stats.ms(0.99),
        half_rate_per_sec: open.stats.rate(),
        half_p50_ms: open.stats.ms(0.5),
        half_p99_ms: open.stats.ms(0.99),
    })
}

/// Logs `user` in on `target`'s `/portal`.
async fn login(target: &Target, user: &str, password: &str) -> anyhow::Result<Ws> {
    let mut ws = target.connect("/portal", None).await?;
    let params = serde_json::json!({"user": user, "password": password}).to_string();
    net::call(&mut ws, 1, "session.login", &params).await?;
    Ok(ws)
}

/// `changes` times: the administrator on a takes `TURN Server Connection`
/// from (or gives it back to) `Bench Victims`, while a victim session on
/// each node asks `turn.credentials` back to back until its answer flips.
/// Returns (until both flipped, the write's own answer), from the send.
async fn admin_changes(
    work: &Workdir,
    ta: &Target,
    tb: &Target,
    changes: usize,
) -> anyhow::Result<(Delays, Delays)> {
    let mut admin = login(ta, "admin", &work.admin_password).await?;
    let mut victim_a = login(ta, "bench-victim", &work.victim_password).await?;
    let mut victim_b = login(tb, "bench-victim", &work.victim_password).await?;
    let listed = net::call(&mut admin, 2, "admin.groups.list", "{}").await?;
    let mut revision = net::string_field(&listed, &["result", "revision"])?;
    let (mut reach, mut write) = (Vec::new(), Vec::new());
    for (i, id) in (0..changes).zip(10u64..) {
        let revoke = i % 2 == 0;
        let rights: &[&str] = if revoke {
            &["one-X CTI API"]
        } else {
            &["TURN Server Connection", "one-X CTI API"]
        };
        let params =
            serde_json::json!({"revision": revision, "name": VICTIM_GROUP, "rights": rights})
                .to_string();
        let t0 = Instant::now();
        let (written, seen_a, seen_b) = tokio::join!(
            async {
                let answer = net::ask(&mut admin, id, "admin.groups.update", &params).await?;
                anyhow::Ok((answer, t0.elapsed()))
            },
            flipped(&mut victim_a, revoke, t0),
            flipped(&mut victim_b, revoke, t0),
        );
        let (answer, took) = written?;
        anyhow::ensure!(
            net::error_code(&answer).is_none(),
            "admin.groups.update failed: {answer}"
        );
        revision = net::string_field(&answer, &["result", "revision"])?;
        let both = seen_a?.max(seen_b?);
        reach.push(both.as_secs_f64() * 1e3);
        write.push(took.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok((Delays::of(reach), Delays::of(write)))
}

/// Asks `turn.credentials` back to back until it is refused (`revoked`) or
/// granted (not `revoked`); the time since `t0` when it was.
async fn flipped(ws: &mut Ws, revoked: bool, t0: Instant) -> anyhow::Result<Duration> {
    for id in 100.. {
        let answer = net::ask(ws, id, "turn.credentials", "{}").await?;
        let refused = net::error_code(&answer) == Some(FORBIDDEN);
        if refused == revoked {
            return Ok(t0.elapsed());
        }
        anyhow::ensure!(
            t0.elapsed() < PATIENCE,
            "the change did not arrive within {PATIENCE:?}"
        );
    }
    anyhow::bail!("ran out of request ids")
}

/// A provider on b that answers `cti.echo` and keeps every other request
/// pending; callers on a send `pending` of those; b is SIGKILLed; each
/// caller's wait for its answer is a sample.
async fn kill_with_pending(
    mut b: Server,
    ta: &Target,
    tb: &Target,
    auth: &Auth,
    pending: usize,
    delays: &mut Vec<f64>,
    killed: &mut Killed,
) -> anyhow::Result<()> {
    let mut provider = tb.connect("/adjunct", auth.app.as_deref()).await?;
    net::call(
        &mut provider,
        1,
        "adjunct.register",
        r#"{"namespaces":["cti"]}"#,
    )
    .await?;
    let held = Arc::new(AtomicUsize::new(0));
    let holding = held.clone();
    let serving = tokio::spawn(async move {
        while let Some(Ok(m)) = provider.next().await {
            let Message::Text(t) = m else { continue };
            let (t, Some(id)) = (t.as_str(), id_of(t.as_str())) else {
                continue;
            };
            if t.contains("\"cti.echo\"") {
                let answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
                if provider.send(Message::text(answer)).await.is_err() {
                    return;
                }
            } else {
                holding.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // Only b's provider serves cti now (a's left after the routed runs).
    ready(ta, auth).await?;
    let mut callers = Vec::with_capacity(pending);
    for _ in 0..pending {
        let mut ws = ta.connect("/portal", auth.portal.as_deref()).await?;
        ws.send(Message::text(
            r#"{"jsonrpc":"2.0","id":7,"method":"cti.hold","params":{}}"#,
        ))
        .await?;
        callers.push(ws);
    }
    let deadline = Instant::now() + PATIENCE;
    while held.load(Ordering::Relaxed) < pending {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {pending} requests reached b's provider",
            held.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    b.child.start_kill()?;
    let waits: Vec<_> = callers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let answer = net::answer(&mut ws, 7, PATIENCE).await;
                (answer, t0.elapsed())
            })
        })
        .collect();
    for w in waits {
        match w.await {
            Ok((Ok(answer), took)) => {
                if net::error_code(&answer) == Some(NO_PROVIDER) {
                    delays.push(took.as_secs_f64() * 1e3);
                } else {
                    killed.other_answers += 1;
                    if killed.others.len() < 5 {
                        let text: String = answer.chars().take(200).collect();
                        killed.others.push((took.as_secs_f64() * 1e3, text));
                    }
                }
            }
            _ => killed.unanswered += 1,
        }
    }
    let _ = b.child.wait().await;
    serving.abort();
    Ok(())
}

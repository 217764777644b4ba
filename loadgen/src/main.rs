//! adjunct-loadgen: drives a real gateway (the release binary, started here
//! on a generated config) and a baseline echo server over real TLS
//! WebSockets, and prints what they sustain: a table, and JSON with --json.
//!
//! Scenarios: hold (RSS per idle session, with a latency probe), rpc
//! (pipelined session.ping, closed loop for the peak, then open loop at
//! shares of it: the latency-against-load curve), routed (cti.* through the
//! gateway to providers in this process; the same curve, with the time the
//! gateway itself added, from its /metrics), fanout
//! (one publisher, many subscribers), portal (connect + TLS + upgrade + one
//! request + close), logins (wrong-password logins at once while a session
//! pings), storm (a restart; every session reconnects with its resume
//! token). `cluster`, its own subcommand since it needs nats-server: two
//! nodes and one NATS (see cluster.rs). It reports; it never asserts. See
//! BENCHMARKS.md.

mod baseline;
mod cluster;
mod drive;
mod net;
mod scenarios;
mod scrape;
mod servers;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use drive::Load;
use scenarios::{Auth, Fanout, HoldStep, LoginStorm, Storm};
use servers::Workdir;

#[derive(Parser)]
#[command(
    name = "adjunct-loadgen",
    version,
    about = "Load generator and benchmark for adjunct-gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the scenarios against the gateway and the baseline.
    Run(RunArgs),
    /// Normal load and every known attacker at once on the default limits,
    /// sampled each second (RSS, bystander p99, refusals); see BENCHMARKS.md.
    Soak(SoakArgs),
    /// Cluster mode (issue 14): one nats-server (from PATH) and two gateway
    /// nodes on this machine; routed latency same-node and cross-node,
    /// cross-node events, admin change propagation, a killed node.
    Cluster(ClusterArgs),
    /// The baseline echo server (started by `run`).
    BaselineServer {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The gateway binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/adjunct-gateway")]
    gateway_bin: PathBuf,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "hold,rpc,routed,fanout,portal,logins,storm"
    )]
    scenarios: Vec<String>,
    /// Idle session counts for `hold`, ascending.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,19000")]
    steps: Vec<usize>,
    #[command(flatten)]
    load: LoadArgs,
    /// Subscribers for `fanout`.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Concurrent flows for `portal`.
    #[arg(long, default_value_t = 32)]
    portal_workers: usize,
    /// Wrong-password logins at once for `logins`.
    #[arg(long, default_value_t = 1000)]
    logins: usize,
    /// Sessions for `storm`.
    #[arg(long, default_value_t = 10_000)]
    storm: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds of warm-up before each measured run (and of settling in `hold`).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open-loop points of the latency-against-load curve of rpc and routed,
    /// in percent of the measured closed-loop peak (each in (0, 100]).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,25,50,75,90",
        conflicts_with = "no_curve"
    )]
    curve: Vec<f64>,
    /// Skip the curve: rpc and routed run one open loop at half the peak only.
    #[arg(long)]
    no_curve: bool,
    /// Interleaved gateway/baseline rounds for rpc and portal (medians reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Skip the latency probe while holding sessions.
    #[arg(long)]
    no_probe: bool,
    /// `hold`: each session first sends and receives one message of about
    /// this many bytes (0: none), then idles; RSS is read after one gateway
    /// heartbeat (30 s), when idle sessions give their buffers back.
    #[arg(long, default_value_t = 0)]
    hold_touch: usize,
}

#[derive(clap::Args, Clone)]
struct SoakArgs {
    /// The gateway binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/adjunct-gateway")]
    gateway_bin: PathBuf,
    /// How long the soak runs, in seconds.
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Seconds at the start left out of the summary (RSS grows to its
    /// working size first).
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// Also write the samples and the summary as JSON here (for
    /// scripts/plot_soak.py).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The request load of `rpc` and `routed` (and of `cluster`'s routed rows).
#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// Connections for rpc and routed callers (cluster: on node a, then on
    /// node b).
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Providers of `cti` for routed (cluster: on node a).
    #[arg(long, default_value_t = 4)]
    providers: usize,
}

#[derive(clap::Args, Clone)]
struct ClusterArgs {
    /// The gateway binary (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/adjunct-gateway")]
    gateway_bin: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
    /// Event subscribers on node b (the publisher is on node a).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Admin changes made on node a (each timed until both nodes have it).
    #[arg(long, default_value_t = 20)]
    changes: usize,
    /// Times node b is SIGKILLed with requests pending on its provider.
    #[arg(long, default_value_t = 5)]
    kills: usize,
    /// Requests pending on node b's provider at each kill.
    #[arg(long, default_value_t = 20)]
    pending: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Seconds of warm-up before each measured run.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct Report {
    machine: String,
    fd_limit: u64,
    hold: Option<Pair<Vec<HoldStep>>>,
    rpc: Option<Pair<RateRow>>,
    /// The p99 of the curve's 50 % point (kept for older readers).
    rpc_half_rate_p99_ms: Option<f64>,
    rpc_curve: Option<Vec<CurvePoint>>,
    routed: Option<RateRow>,
    routed_half_rate_p99_ms: Option<f64>,
    routed_curve: Option<Vec<CurvePoint>>,
    fanout: Option<Fanout>,
    portal: Option<Pair<RateRow>>,
    logins: Option<LoginStorm>,
    storm: Option<Storm>,
}

#[derive(Serialize, Clone)]
struct Pair<T> {
    gateway: T,
    baseline: Option<T>,
}

/// Medians over the rounds.
#[derive(Serialize, Clone, Default)]
struct RateRow {
    per_sec: f64,
    per_server_cpu_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

impl RateRow {
    fn of(runs: &[scenarios::Run]) -> RateRow {
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        RateRow {
            per_sec: med(runs.iter().map(|r| r.stats.rate()).collect()),
            per_server_cpu_sec: med(runs.iter().map(|r| r.per_core()).collect()),
            p50_ms: med(runs.iter().map(|r| r.stats.ms(0.5)).collect()),
            p99_ms: med(runs.iter().map(|r| r.stats.ms(0.99)).collect()),
            p999_ms: med(runs.iter().map(|r| r.stats.ms(0.999)).collect()),
        }
    }
}

/// One open-loop run at a share of the closed-loop peak.
#[derive(Serialize, Clone)]
struct CurvePoint {
    /// Percent of the peak offered.
    percent: f64,
    /// Requests per second offered (the schedule).
    target_per_sec: f64,
    /// Answers per second received in the measured window; below the target
    /// the server (or the generator, see the send lag) fell behind.
    per_sec: f64,
    /// Latency from when each request was due (not when it left).
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// How late the generator sent requests after they were due; part of
    /// the latency above.
    send_lag_p50_ms: f64,
    send_lag_p99_ms: f64,
    /// routed only: the time the gateway itself added in the window, from
    /// its /metrics (`adjunct_gateway_routed_added_seconds`); null when the
    /// gateway does not expose it.
    gateway_added: Option<scrape::Added>,
}

/// The open-loop points to run: the curve's, plus 50 % for the half-rate
/// figures if the curve lacks it (only 50 % with --no-curve).
fn curve_percents(args: &RunArgs) -> anyhow::Result<Vec<f64>> {
    if args.no_curve {
        return Ok(vec![50.0]);
    }
    if let Some(bad) = args
        .curve
        .iter()
        .find(|p| !(p.is_finite() && **p > 0.0 && **p <= 100.0))
    {
        anyhow::bail!("--curve: {bad} is not a percentage of the peak in (0, 100]");
    }
    let mut percents = args.curve.clone();
    if !percents.contains(&50.0) {
        percents.push(50.0);
    }
    Ok(percents)
}

/// Open-loop runs of `scenario` at `percents` of `peak` requests/s, spread
/// over `conns` connections.
async fn curve<F, Fut>(
    name: &str,
    peak: f64,
    conns: usize,
    percents: &[f64],
    mut scenario: F,
) -> anyhow::Result<Vec<CurvePoint>>
where
    F: FnMut(Load) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<scenarios::Run>>,
{
    if peak <= 0.0 {
        eprintln!("{name}: no peak measured, so no open-loop runs");
        return Ok(Vec::new());
    }
    let mut points = Vec::with_capacity(percents.len());
    for &percent in percents {
        let target = peak * percent / 100.0;
        eprintln!("{name}: open loop at {percent} % of the peak ({target:.0}/s)");
        let run = scenario(Load::Open {
            rate: target / conns.max(1) as f64,
        })
        .await?;
        let s = &run.stats;
        let point = CurvePoint {
            percent,
            target_per_sec: target,
            per_sec: s.rate(),
            p50_ms: s.ms(0.5),
            p99_ms: s.ms(0.99),
            p999_ms: s.ms(0.999),
            send_lag_p50_ms: s.lag_ms(0.5),
            send_lag_p99_ms: s.lag_ms(0.99),
            gateway_added: run.added,
        };
        if point.per_sec < 0.95 * target {
            eprintln!(
                "{name}: at {percent} % only {:.0} of {target:.0}/s answered (send lag p99 {:.2} ms: a high lag means the generator fell behind)",
                point.per_sec, point.send_lag_p99_ms
            );
        }
        points.push(point);
    }
    Ok(points)
}

/// The half-rate p99 and the curve proper (without an added 50 % point).
fn split_curve(args: &RunArgs, points: Vec<CurvePoint>) -> (Option<f64>, Option<Vec<CurvePoint>>) {
    let half = points.iter().find(|p| p.percent == 50.0).map(|p| p.p99_ms);
    let curve = (!args.no_curve).then(|| {
        points
            .into_iter()
            .filter(|p| args.curve.contains(&p.percent))
            .collect()
    });
    (half, curve)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    adjunct_gateway::tls::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Cmd::BaselineServer { listen, cert, key } => {
            rt.block_on(baseline::serve(listen, &cert, &key))
        }
        Cmd::Run(args) => rt.block_on(run(args)),
        Cmd::Soak(args) => rt.block_on(soak(args)),
        Cmd::Cluster(args) => rt.block_on(cluster(args)),
    }
}

async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    net::raise_fd_limit();
    let gateway_bin = release_bin(&args.gateway_bin)?;
    let plan = cluster::Plan {
        conns: args.load.conns,
        depth: args.load.depth,
        providers: args.load.providers,
        subscribers: args.subscribers,
        changes: args.changes,
        kills: args.kills,
        pending: args.pending,
        warmup: Duration::from_secs_f64(args.warmup),
        measure: Duration::from_secs_f64(args.secs),
    };
    let report = cluster::run(&gateway_bin, &plan, machine()).await?;
    print_cluster(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The gateway binary, or a clear error saying how to build it.
fn release_bin(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    path.canonicalize()
        .map_err(|e| anyhow::anyhow!("{}: {e} (cargo build --release first)", path.display()))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let want = |s: &str| args.scenarios.iter().any(|x| x == s);
    let percents = curve_percents(&args)?;
    let fd_limit = net::raise_fd_limit();
    let biggest = args
        .steps
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(args.storm);
    eprintln!("descriptor limit: {fd_limit}");
    if (fd_limit as usize) < biggest + 200 {
        eprintln!("note: the descriptor limit ({fd_limit}) caps sessions below {biggest}; counts above it will fail to open");
    }
    let gateway_bin = release_bin(&args.gateway_bin)?;
    let dir = std::env::temp_dir().join(format!("adjunct-loadgen-{}", std::process::id()));
    let work = Workdir::create(&dir, servers::Profile::Bench)?;
    let mut gateway = work.start_gateway(&gateway_bin).await?;
    let users = work.users(&gateway.target()?).await?;
    let gw_auth = Auth::gateway(&users);
    let none = Auth::none();
    let baseline = work.start_baseline().await?;
    let warmup = Duration::from_secs_f64(args.warmup);
    let measure = Duration::from_secs_f64(args.secs);
    let mut report = Report {
        machine: machine(),
        fd_limit,
        ..Report::default()
    };

    if want("hold") {
        eprintln!(
            "hold: {:?} idle sessions (gateway, then baseline)",
            args.steps
        );
        let (steps, probe, touch) = (&args.steps, !args.no_probe, args.hold_touch);
        let g = scenarios::hold(&gateway, &gw_auth, steps, probe, warmup, touch).await?;
        let b = scenarios::hold(&baseline, &none, steps, probe, warmup, touch).await?;
        report.hold = Some(Pair {
            gateway: g,
            baseline: Some(b),
        });
    }
    if want("rpc") {
        eprintln!(
            "rpc: {} connections x {} in flight, {} rounds",
            args.load.conns, args.load.depth, args.rounds
        );
        let (mut g, mut b) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            let load = Load::Closed {
                depth: args.load.depth,
            };
            g.push(
                scenarios::rpc(&gateway, &gw_auth, args.load.conns, load, warmup, measure).await?,
            );
            b.push(scenarios::rpc(&baseline, &none, args.load.conns, load, warmup, measure).await?);
        }
        let gateway_row = RateRow::of(&g);
        let points = curve(
            "rpc",
            gateway_row.per_sec,
            args.load.conns,
            &percents,
            |load| scenarios::rpc(&gateway, &gw_auth, args.load.conns, load, warmup, measure),
        )
        .await?;
        (report.rpc_half_rate_p99_ms, report.rpc_curve) = split_curve(&args, points);
        report.rpc = Some(Pair {
            gateway: gateway_row,
            baseline: Some(RateRow::of(&b)),
        });
    }
    if want("routed") {
        eprintln!(
            "routed: {} clients x {} in flight, {} providers",
            args.load.conns, args.load.depth, args.load.providers
        );
        let routed = |load| {
            scenarios::routed(
                &gateway,
                &gw_auth,
                args.load.providers,
                args.load.conns,
                load,
                warmup,
                measure,
            )
        };
        let peak = routed(Load::Closed {
            depth: args.load.depth,
        })
        .await?;
        let row = RateRow::of(std::slice::from_ref(&peak));
        let points = curve("routed", row.per_sec, args.load.conns, &percents, routed).await?;
        if points.iter().any(|p| p.gateway_added.is_none()) {
            eprintln!(
                "routed: the gateway's /metrics has no {} in some windows: its columns read n/a",
                scrape::ROUTED_ADDED
            );
        }
        (report.routed_half_rate_p99_ms, report.routed_curve) = split_curve(&args, points);
        report.routed = Some(row);
    }
    if want("fanout") {
        eprintln!("fanout: 1 publisher, {} subscribers", args.subscribers);
        report.fanout =
            Some(scenarios::fanout(&gateway, &gw_auth, args.subscribers, 8, measure).await?);
    }
    if want("portal") {
        eprintln!(
            "portal: {} concurrent flows, {} rounds",
            args.portal_workers, args.rounds
        );
        let (mut g, mut b) = (Vec::new(), Vec::new());
        for _ in 0..args.rounds {
            g.push(scenarios::portal(&gateway, &gw_auth, args.portal_workers, measure).await?);
            b.push(scenarios::portal(&baseline, &none, args.portal_workers, measure).await?);
        }
        report.portal = Some(Pair {
            gateway: RateRow::of(&g),
            baseline: Some(RateRow::of(&b)),
        });
    }
    baseline.stop().await;
    if want("logins") {
        eprintln!(
            "logins: {} wrong-password logins at once, pinging meanwhile",
            args.logins
        );
        report.logins = Some(scenarios::login_storm(&gateway, &gw_auth, args.logins).await?);
    }
    if want("storm") {
        eprintln!("storm: {} sessions, then a gateway restart", args.storm);
        let bin = gateway_bin.clone();
        let (storm, restarted) =
            scenarios::storm(gateway, &gw_auth, args.storm, || work.start_gateway(&bin)).await?;
        report.storm = Some(storm);
        gateway = restarted;
    }
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    print_table(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    net::raise_fd_limit();
    let gateway_bin = release_bin(&args.gateway_bin)?;
    let dir = std::env::temp_dir().join(format!("adjunct-loadgen-soak-{}", std::process::id()));
    let work = Workdir::create(&dir, servers::Profile::Soak)?;
    let gateway = work.start_gateway(&gateway_bin).await?;
    let users = work.users(&gateway.target()?).await?;
    eprintln!(
        "soak: {} s (summary after {} s of warm-up): normal load and every attacker at once",
        args.secs, args.warmup
    );
    let report = soak::run(
        &gateway,
        &work,
        &Auth::gateway(&users),
        args.secs,
        args.warmup,
    )
    .await?;
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RSS after warm-up: {:.1}..{:.1} MiB, slope {:+.1} KiB/min; bystander p99 median {:.2} ms; pings unanswered within 1 s: {}",
        report.rss_after_warmup_min_kib as f64 / 1024.0,
        report.rss_after_warmup_max_kib as f64 / 1024.0,
        report.rss_slope_kib_per_min,
        report.bystander_p99_median_ms,
        report.bystander_missed_total
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn ratio(g: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", g / b)
    } else {
        "-".into()
    }
}

fn print_table(r: &Report) {
    println!("machine: {}; descriptor limit {}", r.machine, r.fd_limit);
    println!(
        "{:<34} {:>16} {:>16} {:>7}",
        "scenario", "gateway", "baseline", "ratio"
    );
    if let Some(h) = &r.hold {
        let base = h.baseline.clone().unwrap_or_default();
        for (i, g) in h.gateway.iter().enumerate() {
            let b = base.get(i);
            println!(
                "{:<34} {:>11.1} KiB {:>11.1} KiB {:>7}",
                format!("hold {} sessions: RSS/session", g.sessions),
                g.kib_per_session,
                b.map_or(0.0, |b| b.kib_per_session),
                ratio(g.kib_per_session, b.map_or(0.0, |b| b.kib_per_session))
            );
            if g.probe_p99_ms > 0.0 {
                println!(
                    "{:<34} {:>13.2} ms {:>13.2} ms",
                    format!("  ping p99 while holding {}", g.sessions),
                    g.probe_p99_ms,
                    b.map_or(0.0, |b| b.probe_p99_ms)
                );
            }
        }
    }
    let pair_rows = |name: &str, unit: &str, p: &Pair<RateRow>| {
        let b = p.baseline.clone().unwrap_or_default();
        println!(
            "{:<34} {:>12.0} {unit} {:>12.0} {unit} {:>7}",
            format!("{name} /s"),
            p.gateway.per_sec,
            b.per_sec,
            ratio(p.gateway.per_sec, b.per_sec)
        );
        println!(
            "{:<34} {:>12.0} {unit} {:>12.0} {unit} {:>7}",
            format!("{name} per server core"),
            p.gateway.per_server_cpu_sec,
            b.per_server_cpu_sec,
            ratio(p.gateway.per_server_cpu_sec, b.per_server_cpu_sec)
        );
        println!(
            "{:<34} {:>13.2} ms {:>13.2} ms",
            format!("{name} p50 / p99 / p999"),
            p.gateway.p50_ms,
            b.p50_ms
        );
        println!(
            "{:<34} {:>13.2} ms {:>13.2} ms",
            "", p.gateway.p99_ms, b.p99_ms
        );
        println!(
            "{:<34} {:>13.2} ms {:>13.2} ms",
            "", p.gateway.p999_ms, b.p999_ms
        );
    };
    if let Some(p) = &r.rpc {
        pair_rows("rpc", "req", p);
    }
    if let Some(p99) = r.rpc_half_rate_p99_ms {
        println!("{:<34} {:>13.2} ms", "rpc p99 at half the peak (open)", p99);
    }
    if let Some(row) = &r.routed {
        println!("{:<34} {:>12.0} req", "routed /s", row.per_sec);
        println!("{:<34} {:>13.2} ms", "routed p99 (closed loop)", row.p99_ms);
    }
    if let Some(p99) = r.routed_half_rate_p99_ms {
        println!(
            "{:<34} {:>13.2} ms",
            "routed p99 at half the peak (open)", p99
        );
    }
    print_curve(r);
    if let Some(f) = &r.fanout {
        println!(
            "{:<34} {:>12.0} /s  ({} published, {} lost)",
            format!("fanout to {} deliveries", f.subscribers),
            f.deliveries_per_sec,
            f.published,
            f.lost
        );
    }
    if let Some(p) = &r.portal {
        pair_rows("portal flows", "fl.", p);
    }
    if let Some(l) = &r.logins {
        println!(
            "{:<34} {:>13.2} ms  (p50 {:.2} ms, {} pings; {} logins verified in {:.1} s)",
            "ping p99 during a login storm",
            l.ping_p99_ms,
            l.ping_p50_ms,
            l.pings,
            l.logins,
            l.verified_secs
        );
    }
    if let Some(s) = &r.storm {
        println!(
            "{:<34} {:>12.2} s   ({} of {} back, p99 {:.0} ms)",
            "storm: all sessions back after restart", s.secs, s.reconnected, s.sessions, s.p99_ms
        );
    }
}

/// The latency-against-load curve of rpc and routed, one line per point.
fn print_curve(r: &Report) {
    let rows = [("rpc", &r.rpc_curve), ("routed", &r.routed_curve)];
    if rows
        .iter()
        .all(|(_, c)| c.as_ref().is_none_or(Vec::is_empty))
    {
        return;
    }
    println!(
        "{:<14} {:>10} {:>10} {:>7} {:>7} {:>7} {:>8}  gateway adds, p50/p99 ms: request | answer",
        "open loop", "offered/s", "answered", "p50 ms", "p99 ms", "p999 ms", "lag p99",
    );
    for (name, points) in rows {
        for p in points.iter().flatten() {
            let added = match (&p.gateway_added, name) {
                (_, "rpc") => "-".to_owned(),
                (None, _) => "n/a".to_owned(),
                (Some(a), _) => format!("{} | {}", leg(&a.request), leg(&a.answer)),
            };
            println!(
                "{:<14} {:>10.0} {:>10.0} {:>7.2} {:>7.2} {:>7.2} {:>8.2}  {added}",
                format!("{name} {} %", p.percent),
                p.target_per_sec,
                p.per_sec,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.send_lag_p99_ms
            );
        }
    }
}

fn leg(l: &Option<scrape::Leg>) -> String {
    l.as_ref()
        .map_or("n/a".into(), |l| format!("{:.3}/{:.3}", l.p50_ms, l.p99_ms))
}

fn print_cluster(r: &cluster::Report) {
    println!(
        "machine: {}; two gateway nodes and one nats-server on it",
        r.machine
    );
    println!("{:<44} {:>12} {:>12}", "cluster", "same node", "cross node");
    let (s, c) = (&r.same_node, &r.cross_node);
    println!(
        "{:<44} {:>8.0} req {:>8.0} req",
        "routed peak /s (closed loop)", s.peak_per_sec, c.peak_per_sec
    );
    println!(
        "{:<44} {:>8.0} req {:>8.0} req",
        "routed per CPU-second (a + b + NATS)",
        s.peak_per_server_cpu_sec,
        c.peak_per_server_cpu_sec
    );
    println!(
        "{:<44} {:>8.0} req {:>8.0} req",
        "open loop at half the peak /s", s.half_rate_per_sec, c.half_rate_per_sec
    );
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms",
        "  p50 at half the peak", s.half_p50_ms, c.half_p50_ms
    );
    println!(
        "{:<44} {:>9.2} ms {:>9.2} ms",
        "  p99 at half the peak", s.half_p99_ms, c.half_p99_ms
    );
    if let Some(f) = &r.events {
        println!(
            "{:<44} {:>12.0} /s  ({} published, {} of {} delivered, {} reported lost)",
            format!("events a -> {} subscribers on b", f.subscribers),
            f.deliveries_per_sec,
            f.published,
            f.delivered,
            r.events_offered,
            f.lost
        );
    }
    println!(
        "{:<44} {:>9.1} ms  (max {:.1} ms, {} changes; the write itself {:.1} ms)",
        "admin change on a seen on a and b (median)",
        r.admin_change.median_ms,
        r.admin_change.max_ms,
        r.admin_change.samples,
        r.admin_write.median_ms
    );
    let k = &r.node_killed;
    println!(
        "{:<44} {:>9.0} ms  (max {:.0} ms; {} requests over {} kills; {} other answers, {} unanswered)",
        "node b killed: pending -> -32004 (median)",
        k.failed.median_ms,
        k.failed.max_ms,
        k.failed.samples,
        k.kills,
        k.other_answers,
        k.unanswered
    );
}

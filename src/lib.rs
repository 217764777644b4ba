//! adjunct-gateway: a TLS WebSocket gateway for a business telephone system.
//!
//! A request travels one way through these modules:
//!
//! - [`server`]: accept, admission by `[limits]`, TLS ([`tls`]), the HTTP
//!   request ([`http`]), path routing, authentication on the upgrade.
//! - [`auth`]: every credential (password, resume token, client certificate)
//!   checked in one place, with lockout and per-address throttling
//!   ([`lockout`]) and tokens ([`resume`]).
//! - [`session`]: one WebSocket: its loop, heartbeat, auth deadline, close
//!   codes; [`session::link`] the WebSocket over TLS, which gives its
//!   buffers back while idle; [`outbound`] is the queue other tasks write
//!   to it through, [`rate`] its request budget.
//! - [`dispatch`]: one frame: parse ([`rpc`]), look up ([`catalog`]), gate
//!   ([`catalog::gate`]), then a handler in [`methods`] or a route to a provider.
//! - [`router`]: routed requests to providers and their answers back;
//!   [`broker`]: event subscriptions and fan-out.
//! - [`hub`]: live sessions by id; revocation and shutdown reach sessions here.
//! - [`bus`]: the one interface for what crosses nodes (routing to another
//!   node's provider, events, the shared configuration, sessions, failed
//!   logins): [`bus::Local`] for a single node, [`bus::nats`] for a cluster;
//!   [`cluster`] joins at start and handles what other nodes send.
//!
//! Shared state is one handle, [`gateway::Gateway`]: the config snapshot
//! ([`config`], swapped whole on reload), the users ([`directory`]), the hub,
//! the password verifier, the certificate store. [`rights`] is the table of
//! the sixteen service rights; [`turn`] the coturn-compatible credentials;
//! [`portal`] the Origin check and the embedded pages (demo, admin);
//! [`starter`] the embedded default configuration.
//!
//! The Management API (`admin.*`, handled in [`methods`]) changes the config
//! through [`admin`]: delegation rules, comment-keeping edits, atomic writes,
//! then the same install path as a reload.
//!
//! Operations: [`metrics`] (Prometheus families, counted on the path above,
//! served on `[admin] listen`), [`audit`] (the audit trail as JSON lines on
//! disk, a `tracing` layer), [`jsonlog`] (the JSON line of both the audit
//! trail and `--log-format json`), [`call`] (the operator's command-line
//! client).

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bounded;
pub mod broker;
pub mod bus;
pub mod call;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod dispatch;
pub mod gateway;
pub mod http;
pub mod hub;
pub mod jsonlog;
pub mod lockout;
pub mod methods;
pub mod metrics;
pub mod outbound;
pub mod persist;
pub mod portal;
pub mod rate;
pub mod resume;
pub mod rights;
pub mod router;
pub mod rpc;
pub mod server;
pub mod session;
pub mod starter;
pub mod tls;
pub mod turn;
pub mod util;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use config::Config;
use gateway::Gateway;
use metrics::Exporter;
use server::Server;

/// A gateway serving in the background (tests, benchmarks, embedding).
pub struct Running {
    pub addr: SocketAddr,
    /// Where `GET /metrics` is served (`None`: `[admin] listen` is empty).
    pub admin_addr: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    exporter: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes every session with 1001, waits for them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.gateway.bus.stop().await;
        if let Some(exporter) = self.exporter.take() {
            exporter.abort();
        }
    }
}

/// A listener that cannot be opened, said with its key and address in one
/// line: "cannot listen on [server] listen 127.0.0.1:8443: Address already
/// in use (os error 98)".
fn cannot_listen(key: &str, addr: impl std::fmt::Display, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot listen on {key} {addr}: {e}")
}

/// Binds `[server] listen`.
async fn bind_server(gateway: &Arc<Gateway>) -> anyhow::Result<Server> {
    let listen = gateway.snapshot().config.listen;
    Server::bind(gateway.clone())
        .await
        .map_err(|e| cannot_listen("[server] listen", listen, e))
}

/// Binds `[admin] listen` (unless empty) and serves `/metrics` in a task.
async fn start_exporter(
    gateway: &Gateway,
) -> anyhow::Result<(Option<SocketAddr>, Option<tokio::task::JoinHandle<()>>)> {
    let listen = gateway.snapshot().config.admin.listen.clone();
    let Some(exporter) = Exporter::bind(&listen, gateway.metrics.clone())
        .await
        .map_err(|e| cannot_listen("[admin] listen", &listen, e))?
    else {
        return Ok((None, None));
    };
    let addr = exporter.local_addr()?;
    Ok((Some(addr), Some(tokio::spawn(exporter.run()))))
}

/// Binds `[server] listen` and serves in a spawned task.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let gateway = cluster::join(config).await?;
    let server = bind_server(&gateway).await?;
    let addr = server.local_addr()?;
    let (admin_addr, exporter) = start_exporter(&gateway).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        stop: Some(stop),
        task,
        exporter,
    })
}

/// Serves until Ctrl-C or SIGTERM; SIGHUP (on Unix) reloads the config.
/// Signal handlers are installed before the listener is announced, so a
/// supervisor may signal as soon as it sees "listening".
/// `[audit] file` is opened here (the binary installs [`audit::layer`]).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    audit::global()
        .configure(&config.audit)
        .map_err(|e| anyhow::anyhow!("[audit] file: {e}"))?;
    let gateway = cluster::join(config).await?;
    let server = bind_server(&gateway).await?;
    let (admin_addr, exporter) = start_exporter(&gateway).await?;
    let Signals { hangup, shutdown } = signals;
    let reloader = tokio::spawn(reload_on_hangup(gateway.clone(), hangup));
    if let Some(admin) = admin_addr {
        tracing::info!(addr = %admin, "serving GET /metrics");
    }
    tracing::info!(addr = %server.local_addr()?, "listening");
    server.run(shutdown).await;
    gateway.bus.stop().await;
    reloader.abort();
    if let Some(exporter) = exporter {
        exporter.abort();
    }
    audit::global().flush();
    Ok(())
}

/// The process signals the gateway answers, installed up front.
struct Signals {
    hangup: Hangup,
    shutdown: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

impl Signals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let hangup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = Box::pin(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        Ok(Signals { hangup, shutdown })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Signals> {
        let shutdown = Box::pin(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        Ok(Signals {
            hangup: (),
            shutdown,
        })
    }
}

#[cfg(unix)]
async fn reload_on_hangup(gateway: Arc<Gateway>, mut hup: Hangup) {
    while hup.recv().await.is_some() {
        // Off the runtime's workers: a reload waits for the configuration
        // lock, which an admin write may hold across a NATS round trip that
        // needs those workers to finish.
        let gw = gateway.clone();
        let Ok(reloaded) = tokio::task::spawn_blocking(move || gw.reload()).await else {
            continue;
        };
        match reloaded {
            Ok(report) => {
                // Reopened on every reload, so an external rotation works too.
                if let Err(e) = audit::global().configure(&gateway.snapshot().config.audit) {
                    tracing::error!(error = %e, "[audit] file cannot be opened; audit lines go to the previous file");
                }
                tracing::info!(target: "audit", event = "reload", outcome = "ok", revoked = report.revoked, "configuration reloaded");
                if report.listen_changed {
                    tracing::warn!(
                        "[server] listen or [admin] listen changed: takes effect after a restart"
                    );
                }
            }
            Err(e) => {
                tracing::error!(target: "audit", event = "reload", outcome = "refused", error = %e, "configuration refused; the old one stays")
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_hangup(_gateway: Arc<Gateway>, _hup: Hangup) {}

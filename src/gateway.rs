//! The shared handles every connection holds: the current configuration
//! snapshot (swapped whole on reload), the hub of live sessions, the password
//! verifier, the TLS certificate store and connection admission counters.
//!
//! Reload lives here because it touches all of them at once, and so does
//! `install`, the one path by which a reload or a Management API change
//! (`admin::change`) becomes the live configuration. Neither reaches into a
//! socket, only into the hub.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use dashmap::DashMap;

use crate::broker::Broker;
use crate::bus::Bus;
use crate::config::{Config, Limits};
use crate::directory::{Directory, Verifier};
use crate::hub::{Hub, SessionHandle};
use crate::metrics::Metrics;
pub use crate::metrics::Refusal;
use crate::router::Router;
use crate::tls::CertStore;

/// Management API writes waiting for the writer before more are refused.
pub const MAX_WRITES_WAITING: usize = 16;

/// One consistent view of the configuration and the users built from it.
pub struct Snapshot {
    pub config: Config,
    pub directory: Directory,
}

impl Snapshot {
    pub fn new(config: Config) -> Snapshot {
        let directory = Directory::from_config(&config);
        Snapshot { config, directory }
    }
}

pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    pub hub: Hub,
    pub router: Router,
    pub broker: Broker,
    pub verifier: Verifier,
    pub certs: Arc<CertStore>,
    /// Rebuilt on reload (the client CA may change); handshakes take the current one.
    pub tls: ArcSwap<rustls::ServerConfig>,
    pub admission: Admission,
    pub lockout: crate::lockout::Lockout,
    /// Resume-token key; read once at start (a new key file needs a restart).
    pub resume: crate::resume::ResumeKey,
    pub metrics: Metrics,
    /// What crosses nodes (a single node: [`crate::bus::Local`]).
    pub bus: Arc<dyn Bus>,
    /// Management API writes and reloads by API: one at a time, a few
    /// waiting, the rest refused (-32029) instead of piling up threads.
    pub writes: crate::bounded::Line,
    /// When this gateway started (`admin.status` uptime).
    pub started: std::time::Instant,
    /// How fast refusals any peer can cause reach the audit trail.
    pub refusals: crate::audit::Sampler,
    config_path: PathBuf,
    reload_lock: parking_lot::Mutex<()>,
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub revoked: usize,
    /// `[server] listen` or `[admin] listen` changed: applies after a restart.
    pub listen_changed: bool,
}

impl Gateway {
    /// Builds the shared state of a single node from a validated config
    /// (reads the TLS files).
    pub fn new(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let bus = crate::bus::Local::bus(&config.cluster.node);
        Gateway::with_bus(config, bus)
    }

    /// Builds the shared state over `bus` (the caller starts the bus).
    pub fn with_bus(config: Config, bus: Arc<dyn Bus>) -> anyhow::Result<Arc<Gateway>> {
        crate::tls::install_provider();
        let key = crate::tls::load_certified_key(&config.tls_cert, &config.tls_key)
            .map_err(anyhow::Error::msg)?;
        let certs = CertStore::new(key);
        let tls = crate::tls::server_config(certs.clone(), config.tls_client_ca.as_deref())
            .map_err(anyhow::Error::msg)?;
        // A cluster shares one key, so a token works on every node.
        let resume = match bus.resume_key() {
            Some(key) => crate::resume::ResumeKey::from_bytes(&key)?,
            None => crate::resume::ResumeKey::load_or_create(&config.security.resume_key_file)?,
        };
        Ok(Arc::new(Gateway {
            started: std::time::Instant::now(),
            refusals: crate::audit::Sampler::new(crate::audit::REFUSALS_PER_SEC),
            config_path: config.path.clone(),
            snapshot: ArcSwap::from_pointee(Snapshot::new(config)),
            hub: Hub::default(),
            router: Router::new(bus.clone()),
            broker: Broker::new(bus.clone()),
            verifier: Verifier::new(Verifier::default_workers()),
            certs,
            tls: ArcSwap::new(tls),
            admission: Admission::default(),
            // Keyed alike on every node: failures travel as name digests.
            lockout: crate::lockout::Lockout::with_key(&resume.derive("lockout")),
            resume,
            metrics: Metrics::new(),
            bus,
            writes: crate::bounded::Line::new(1, MAX_WRITES_WAITING),
            reload_lock: parking_lot::Mutex::new(()),
        }))
    }

    /// The current snapshot; cheap, lock-free, consistent for as long as held.
    pub fn snapshot(&self) -> Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// A session ended: forget it everywhere. Its pending requests as a
    /// provider fail at once.
    pub fn end_session(&self, session: &SessionHandle) {
        self.hub.remove(session.id);
        self.router.session_ended(session);
        self.broker.session_ended(session);
    }

    /// The current snapshot as an owned `Arc`, for holding across long awaits.
    pub fn snapshot_owned(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads the config file and the TLS files. All or nothing: on any
    /// error the running configuration stays and the error is returned.
    /// Sessions whose rights went away are closed with 1008 at once.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let result = self.try_reload();
        self.metrics.reload(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, String> {
        let serial = self.config_lock();
        let config = self
            .bus
            .load(&self.config_path)
            .map_err(|e| e.to_string())?;
        let key = crate::tls::load_certified_key(&config.tls_cert, &config.tls_key)?;
        let old = self.snapshot();
        let listen_changed =
            config.listen != old.config.listen || config.admin.listen != old.config.admin.listen;
        drop(old);
        let tls = crate::tls::server_config(self.certs.clone(), config.tls_client_ca.as_deref())?;
        self.certs.replace(key);
        self.tls.store(tls);
        let revoked = self.install(&serial, config);
        Ok(ReloadReport {
            revoked,
            listen_changed,
        })
    }

    /// The config file this gateway was started with (reloads re-read it,
    /// Management API changes rewrite it).
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    /// Serializes everything that replaces the configuration: reloads and
    /// Management API changes. Hold it from reading the file to `install`.
    pub fn config_lock(&self) -> ConfigLock<'_> {
        ConfigLock {
            _held: self.reload_lock.lock(),
        }
    }

    /// Makes `config` the live configuration and applies it to every session
    /// at once: rights recomputed, sessions that lost their connection right
    /// closed with 1008 and audited. The one path for reloads and Management
    /// API changes alike; returns how many sessions were closed.
    pub fn install(&self, _serial: &ConfigLock<'_>, config: Config) -> usize {
        let snapshot = Arc::new(Snapshot::new(config));
        self.snapshot.store(snapshot.clone());
        let revoked = self.hub.apply(&snapshot.directory);
        for r in &revoked {
            tracing::warn!(
                target: "audit",
                event = "revoked",
                session = %r.session.id_string(),
                user = r.session.user().map_or("", |u| &**u),
                peer = %r.session.peer,
                endpoint = r.session.endpoint.name(),
                reason = r.reason,
                "session closed: rights revoked"
            );
        }
        revoked.len()
    }
}

/// Proof that the caller holds the config lock (see [`Gateway::config_lock`]).
pub struct ConfigLock<'a> {
    _held: parking_lot::MutexGuard<'a, ()>,
}

/// Connection counts for the `[limits]` admission checks.
#[derive(Default)]
pub struct Admission {
    total: AtomicUsize,
    unauthenticated: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    /// Not yet authenticated, per source (`lockout::source`: an IPv6 /64 is one).
    unauthenticated_per_source: DashMap<IpAddr, usize>,
}

/// Takes one from a per-address count, forgetting the address at zero.
fn count_out(map: &DashMap<IpAddr, usize>, ip: IpAddr) {
    if let dashmap::Entry::Occupied(mut e) = map.entry(ip) {
        *e.get_mut() = e.get().saturating_sub(1);
        if *e.get() == 0 {
            e.remove();
        }
    }
}

impl Admission {
    /// Counts a new connection in, or refuses it.
    pub fn admit(gw: &Arc<Gateway>, ip: IpAddr, limits: &Limits) -> Result<Ticket, Refusal> {
        let a = &gw.admission;
        if a.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            a.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::AtCapacity);
        }
        if a.unauthenticated.fetch_add(1, Ordering::AcqRel) >= limits.max_unauthenticated {
            a.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            a.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::AtCapacity);
        }
        let mut n = a.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip {
            drop(n);
            a.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            a.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyFromAddress);
        }
        *n += 1;
        drop(n);
        let source = crate::lockout::source(ip);
        let mut u = a.unauthenticated_per_source.entry(source).or_insert(0);
        if *u >= limits.max_unauthenticated_per_ip {
            drop(u);
            count_out(&a.per_ip, ip);
            a.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            a.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::TooManyUnauthenticatedFromAddress);
        }
        *u += 1;
        Ok(Ticket {
            gw: gw.clone(),
            ip,
            source,
            authenticated: false,
        })
    }
}

/// A counted connection; dropping it counts it out.
pub struct Ticket {
    gw: Arc<Gateway>,
    ip: IpAddr,
    source: IpAddr,
    authenticated: bool,
}

impl Ticket {
    /// The connection has authenticated: it no longer counts as unauthenticated.
    pub fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            let a = &self.gw.admission;
            a.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            count_out(&a.unauthenticated_per_source, self.source);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let a = &self.gw.admission;
        a.total.fetch_sub(1, Ordering::AcqRel);
        if !self.authenticated {
            a.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            count_out(&a.unauthenticated_per_source, self.source);
        }
        count_out(&a.per_ip, self.ip);
    }
}

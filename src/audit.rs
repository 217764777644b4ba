//! The audit trail on disk: every `tracing` event with `target: "audit"`
//! (logins, refusals, revocations, reloads, administration) as one JSON object
//! per line, with the session (id, peer, endpoint, user) of the enclosing
//! `session` span, appended to `[audit] file` and rotated by size. The line
//! format is [`crate::jsonlog`]'s, the same as `--log-format json`; every
//! event and field is listed in docs/AUDIT.md.
//!
//! The layer only formats the line and hands it to a writer thread through a
//! bounded queue, so a slow or failing disk never blocks a session: a full
//! queue drops the line and counts it. Write errors (full disk, unwritable
//! file) are reported on the log, at most every ten seconds, with the number
//! of lines lost; nothing here panics.
//!
//! The file is process-wide, like the log: the binary installs [`layer`] and
//! [`AuditLog::configure`]s [`global`] at start and on every SIGHUP (which
//! also reopens the file, for external rotation).
//!
//! The same layer keeps the newest lines in memory, file or no file, in a
//! ring bounded by [`RING_LINES`] and [`RING_BYTES`]: what
//! `admin.audit.recent` answers, as the file has them (secrets redacted).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::AuditSection;
use crate::jsonlog::{self, SESSION_SPAN};

/// The target audit events are emitted with.
pub const TARGET: &str = "audit";
/// Lines waiting for the writer thread; past it lines are dropped and counted.
const QUEUE: usize = 4096;
/// The in-memory ring keeps at most this many lines…
pub const RING_LINES: usize = 1000;
/// …and at most this many bytes of them (a line is at most a few KiB).
pub const RING_BYTES: usize = 1 << 20;
/// At most one error report per this long.
const REPORT_EVERY: Duration = Duration::from_secs(10);

enum Msg {
    Line(String),
    Use(Option<Sink>),
    Flush(SyncSender<()>),
}

/// The audit file of this process (see [`global`]).
pub struct AuditLog {
    sender: OnceLock<SyncSender<Msg>>,
    enabled: AtomicBool,
    /// Lines dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
    /// Lines lost in all (queue full or write errors), for tests and operators.
    lost: AtomicU64,
    /// The newest lines, oldest first.
    ring: parking_lot::Mutex<Ring>,
}

/// The newest audit lines, bounded by count and by bytes.
#[derive(Default)]
struct Ring {
    lines: VecDeque<Arc<str>>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, line: Arc<str>) {
        self.bytes += line.len();
        self.lines.push_back(line);
        while self.lines.len() > RING_LINES || (self.bytes > RING_BYTES && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len();
            }
        }
    }
}

/// The process's audit log, written by [`layer`].
pub fn global() -> &'static AuditLog {
    static GLOBAL: OnceLock<AuditLog> = OnceLock::new();
    GLOBAL.get_or_init(AuditLog::new)
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog::new()
    }
}

impl AuditLog {
    /// An audit log that writes nothing until configured.
    pub fn new() -> AuditLog {
        AuditLog {
            sender: OnceLock::new(),
            enabled: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            ring: parking_lot::Mutex::default(),
        }
    }

    /// The newest `n` audit lines (as written, without the newline), newest
    /// first; at most what the ring holds.
    pub fn recent(&self, n: usize) -> Vec<Arc<str>> {
        self.ring
            .lock()
            .lines
            .iter()
            .rev()
            .take(n)
            .cloned()
            .collect()
    }

    fn remember(&self, line: &str) {
        self.ring
            .lock()
            .push(Arc::from(line.trim_end_matches('\n')));
    }

    /// Opens (or reopens) `[audit] file` for appending, or stops writing when
    /// none is set. On error the previous file stays in use.
    pub fn configure(&'static self, audit: &AuditSection) -> Result<(), String> {
        let sink = match &audit.file {
            None => None,
            Some(path) => Some(Sink::open(path, audit.max_bytes, audit.keep)?),
        };
        let on = sink.is_some();
        if on || self.sender.get().is_some() {
            let _ = self.sender().send(Msg::Use(sink));
        }
        self.enabled.store(on, Ordering::Release);
        Ok(())
    }

    /// Waits until every line queued so far is written (bounded: 5 s).
    pub fn flush(&self) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        let (ack, done) = sync_channel(1);
        if sender.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
    }

    /// The writer thread's queue, starting the thread on first use.
    fn sender(&'static self) -> &'static SyncSender<Msg> {
        self.sender.get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || Writer::new(self).run(rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the audit writer: audit lines will be lost");
            }
            tx
        })
    }

    fn submit(&self, line: String) {
        let Some(sender) = self.sender.get() else {
            return;
        };
        match sender.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Audit lines lost since start (queue full, write errors).
    pub fn lines_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

// ------------------------------------------------------------- the writer

/// The open audit file and its rotation settings.
struct Sink {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// `audit.log` -> `audit.log.N`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl Sink {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Sink, String> {
        let file = open_append(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Sink {
            path: path.to_owned(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += len;
        Ok(())
    }

    /// audit.log.(keep-1) -> .keep, …, audit.log -> .1, then a new audit.log.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                match std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

struct Writer {
    log: &'static AuditLog,
    sink: Option<Sink>,
    /// Lines lost to write errors since the last report.
    lost: u64,
    /// Error reports, at most one per `REPORT_EVERY`.
    reports: crate::util::Every,
}

impl Writer {
    fn new(log: &'static AuditLog) -> Writer {
        Writer {
            log,
            sink: None,
            lost: 0,
            reports: crate::util::Every::new(REPORT_EVERY),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        for msg in rx {
            match msg {
                Msg::Use(sink) => self.sink = sink,
                Msg::Line(line) => self.write(line.as_bytes()),
                Msg::Flush(ack) => {
                    let _ = ack.try_send(());
                }
            }
            self.report_drops();
        }
    }

    fn write(&mut self, line: &[u8]) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        if let Err(e) = sink.write(line) {
            self.lost += 1;
            self.log.lost.fetch_add(1, Ordering::Relaxed);
            let path = sink.path.display().to_string();
            self.report(&path, &e.to_string());
        }
    }

    /// Reports lines the layer dropped on a full queue.
    fn report_drops(&mut self) {
        let dropped = self.log.dropped.load(Ordering::Relaxed);
        if dropped > 0 && self.reports.due() {
            self.log.dropped.fetch_sub(dropped, Ordering::Relaxed);
            tracing::error!(
                lost = dropped,
                "audit lines dropped: the audit writer cannot keep up"
            );
        }
    }

    fn report(&mut self, path: &str, error: &str) {
        if self.reports.due() {
            tracing::error!(
                file = path,
                error,
                lost = std::mem::take(&mut self.lost),
                "cannot write the audit log"
            );
        }
    }
}

// -------------------------------------------------------------- the layer

/// The layer that writes audit events to [`global`], filtered to audit
/// events and session spans (so `RUST_LOG` never silences the audit trail).
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    AuditLayer { log: global() }.with_filter(AuditFilter)
}

struct AuditLayer {
    log: &'static AuditLog,
}

struct AuditFilter;

impl<S> Filter<S> for AuditFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        wanted(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if wanted(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    /// Audit events and the session span are INFO or above. Without this
    /// hint the whole subscriber's hint becomes TRACE, and every `log::trace!`
    /// in the WebSocket library (one per frame) is built and dispatched.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }
}

fn wanted(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.name() == SESSION_SPAN && meta.target().starts_with("adjunct_gateway")
    } else {
        meta.target() == TARGET
    }
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Kept with or without a file: the ring's lines carry them too.
        jsonlog::keep_span_fields(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        jsonlog::update_span_fields(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let fields = jsonlog::event_fields(event, &ctx);
        // No target: every audit line's is `audit`.
        let line = jsonlog::line(event.metadata().level(), None, &fields, jsonlog::time_now());
        self.log.remember(&line);
        if self.log.enabled.load(Ordering::Acquire) {
            self.log.submit(line);
        }
    }
}

/// Lines a second for the refusals any peer can cause at will (an upgrade
/// from a foreign origin, a request its session lacks the right for).
pub const REFUSALS_PER_SEC: u32 = 10;

/// Bounds how fast one kind of audit line is written, whoever causes it:
/// the first `per_sec` lines of each second are written, the rest counted
/// and reported (`not_audited`) on the next line written. Without it, a
/// peer repeating a refused request could push everything else out of the
/// ring `admin.audit.recent` reads and rotate the file's history away.
pub struct Sampler {
    per_sec: u32,
    state: parking_lot::Mutex<SamplerState>,
}

struct SamplerState {
    window: Instant,
    written: u32,
    quiet: u64,
}

impl Sampler {
    pub fn new(per_sec: u32) -> Sampler {
        Sampler {
            per_sec,
            state: parking_lot::Mutex::new(SamplerState {
                window: Instant::now(),
                written: 0,
                quiet: 0,
            }),
        }
    }

    /// `Some(n)`: write this line, noting `n` lines not written since the
    /// last one (`None` in the line when 0); the outer `None`: count it only.
    pub fn admit(&self, now: Instant) -> Option<Option<u64>> {
        let mut s = self.state.lock();
        if now.saturating_duration_since(s.window) >= Duration::from_secs(1) {
            s.window = now;
            s.written = 0;
        }
        if s.written >= self.per_sec {
            s.quiet = s.quiet.saturating_add(1);
            return None;
        }
        s.written += 1;
        let quiet = std::mem::take(&mut s.quiet);
        Some((quiet > 0).then_some(quiet))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_sampler_writes_its_lines_a_second_and_counts_the_rest() {
        let sampler = Sampler::new(3);
        let t0 = Instant::now();
        let got: Vec<_> = (0..5).map(|_| sampler.admit(t0)).collect();
        assert_eq!(got, [Some(None), Some(None), Some(None), None, None]);
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(sampler.admit(later), Some(Some(2)), "the two not written");
        assert_eq!(sampler.admit(later), Some(None));
    }
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn read_lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A private log and layer, the same code as the global one.
    fn with_log<T>(log: &'static AuditLog, f: impl FnOnce() -> T) -> T {
        let subscriber =
            tracing_subscriber::registry().with(AuditLayer { log }.with_filter(AuditFilter));
        tracing::subscriber::with_default(subscriber, f)
    }

    fn leaked() -> &'static AuditLog {
        Box::leak(Box::new(AuditLog::new()))
    }

    #[test]
    fn audit_events_become_json_lines_with_their_session_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = leaked();
        log.configure(&AuditSection {
            file: Some(path.clone()),
            max_bytes: 1 << 20,
            keep: 2,
        })
        .unwrap();
        with_log(log, || {
            tracing::info!("not an audit event");
            let span = tracing::info_span!(
                target: "adjunct_gateway::session",
                "session",
                id = "00000000000000aa",
                peer = "127.0.0.1:4000",
                endpoint = "portal",
                user = tracing::field::Empty,
            );
            let _in = span.enter();
            span.record("user", "portal\"1");
            tracing::warn!(target: "audit", event = "forbidden", method = "turn.credentials", right = "TURN Server Connection", password = "hunter2", "request refused");
        });
        log.flush();
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let l = &lines[0];
        assert_eq!(l["event"], "forbidden");
        assert_eq!(l["level"], "WARN");
        assert_eq!(l["method"], "turn.credentials");
        assert_eq!(l["session"], "00000000000000aa");
        assert_eq!(l["peer"], "127.0.0.1:4000");
        assert_eq!(l["endpoint"], "portal");
        assert_eq!(l["user"], "portal\"1");
        assert_eq!(l["message"], "request refused");
        assert_eq!(l["password"], "<redacted>");
        let time = l["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.len() >= 20, "{time}");
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(raw.starts_with("{\"time\":"), "{raw}");
        assert!(!raw.contains("hunter2"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_redacted_without_a_file_and_stays_bounded() {
        let log = leaked();
        with_log(log, || {
            tracing::info!("not an audit event");
            for n in 0..(RING_LINES as u32 + 5) {
                tracing::info!(target: "audit", event = "login", n, password = "hunter2");
            }
        });
        let recent = log.recent(3);
        let ns: Vec<u64> = recent
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        let last = RING_LINES as u64 + 4;
        assert_eq!(ns, [last, last - 1, last - 2], "newest first");
        assert!(
            recent[0].contains("\"password\":\"<redacted>\""),
            "{}",
            recent[0]
        );
        assert!(!recent[0].ends_with('\n'));
        assert_eq!(log.recent(usize::MAX).len(), RING_LINES);
        // Bounded by bytes as well: big lines push the old ones out.
        let pad = "z".repeat(64 * 1024);
        with_log(log, || {
            for _ in 0..40 {
                tracing::info!(target: "audit", event = "login", pad = pad.as_str());
            }
        });
        let kept = log.recent(usize::MAX);
        assert!(kept.iter().map(|l| l.len()).sum::<usize>() <= RING_BYTES);
        assert!(kept.len() < 40 && kept.len() >= 10, "{}", kept.len());
    }

    #[test]
    fn the_file_rotates_by_size_keeps_n_and_appends_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "{\"before\":true}\n").unwrap();
        let log = leaked();
        let config = AuditSection {
            file: Some(path.clone()),
            max_bytes: 4096,
            keep: 2,
        };
        log.configure(&config).unwrap();
        let pad = "x".repeat(1000);
        with_log(log, || {
            for n in 0..20u32 {
                tracing::info!(target: "audit", event = "login", n, pad = pad.as_str());
            }
        });
        log.flush();
        let current = read_lines(&path);
        let first = read_lines(&numbered(&path, 1));
        let second = read_lines(&numbered(&path, 2));
        assert!(!numbered(&path, 3).exists(), "more than keep = 2 kept");
        for f in [&path, &numbered(&path, 1), &numbered(&path, 2)] {
            assert!(std::fs::metadata(f).unwrap().len() <= 4096);
        }
        // The newest lines, in order, across the files; the oldest rotated away.
        let ns: Vec<u64> = second
            .iter()
            .chain(&first)
            .chain(&current)
            .map(|l| l["n"].as_u64().unwrap())
            .collect();
        assert_eq!(*ns.last().unwrap(), 19);
        assert!(ns.windows(2).all(|w| w[1] == w[0] + 1), "{ns:?}");
        assert!(ns.len() < 20);

        // Reconfiguring (a restart, a SIGHUP) appends to what is there.
        let kept = current.len();
        log.configure(&config).unwrap();
        with_log(
            log,
            || tracing::info!(target: "audit", event = "reload", n = 20u32),
        );
        log.flush();
        assert_eq!(read_lines(&path).len(), kept + 1);
    }

    #[test]
    fn an_unwritable_file_is_refused_at_configure_and_never_panics_later() {
        let dir = tempfile::tempdir().unwrap();
        let log = leaked();
        let missing = dir.path().join("no/such/dir/audit.log");
        let err = log
            .configure(&AuditSection {
                file: Some(missing),
                max_bytes: 4096,
                keep: 1,
            })
            .unwrap_err();
        assert!(err.contains("no/such/dir"), "{err}");

        // The file's directory disappears under a running log: lines are
        // lost and reported, the caller never notices.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("audit.log");
        log.configure(&AuditSection {
            file: Some(path.clone()),
            max_bytes: 4096,
            keep: 1,
        })
        .unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        let pad = "y".repeat(3000);
        with_log(log, || {
            for _ in 0..5 {
                tracing::info!(target: "audit", event = "login", pad = pad.as_str());
            }
        });
        log.flush();
        assert!(log.lines_lost() > 0);
    }
}

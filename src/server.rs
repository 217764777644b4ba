//! The listener: accept with back-off, admission by `[limits]`, the TLS
//! handshake and the HTTP request under one deadline, path routing
//! (/adjunct, /portal, /healthz, the demo and admin pages), authentication on the
//! upgrade, then the hand-over to a session. Graceful shutdown stops
//! accepting, asks every session to close with 1001 and waits for them.
//!
//! Never parses JSON-RPC: once upgraded, the connection belongs to `session`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Attempt, Credential, Granted, Refused};
use crate::catalog::Endpoint;
use crate::config::Config;
use crate::gateway::{Admission, Gateway, Refusal, Ticket};
use crate::http::{self, Answer, Head, HeadError};
use crate::hub::SessionHandle;
use crate::rpc::Close;
use crate::tls::ClientIdentity;

pub use crate::session::{Transport, Ws};

/// Connections being refused at capacity at once; past this they are dropped
/// without a TLS handshake, so refusing cannot itself exhaust the machine.
const MAX_REFUSING: usize = 256;
/// Pending connections the kernel may queue for accept.
const LISTEN_BACKLOG: u32 = 8192;
/// How long shutdown waits for sessions to finish their close handshakes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

pub struct Server {
    listener: TcpListener,
    gw: Arc<Gateway>,
}

impl Server {
    /// Binds `[server] listen`.
    pub async fn bind(gw: Arc<Gateway>) -> std::io::Result<Server> {
        let addr = gw.snapshot().config.listen;
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // A restart binds again at once, past connections in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        // A deep accept queue (the kernel caps it at somaxconn): after a
        // restart every application server reconnects at once, and a SYN
        // dropped from a full queue costs its client a second or more.
        let listener = socket.listen(LISTEN_BACKLOG)?;
        Ok(Server { listener, gw })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then closes every session with 1001.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let refusing = Arc::new(AtomicUsize::new(0));
        let sweeper = tokio::spawn(expire_routed(self.gw.clone()));
        let mut failed_accepts = 0u64;
        let mut accept_report = crate::util::Every::new(Duration::from_secs(10));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let conn = Conn {
                            gw: self.gw.clone(),
                            acceptor: TlsAcceptor::from(self.gw.tls.load_full()),
                            peer,
                            cancel: cancel.clone(),
                            refusing: refusing.clone(),
                        };
                        tracker.spawn(conn.serve(tcp));
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning,
                        // and say so at most every ten seconds.
                        failed_accepts += 1;
                        if accept_report.due() {
                            tracing::warn!(error = %e, failures = std::mem::take(&mut failed_accepts), "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: closing {} sessions", self.gw.hub.len());
        cancel.cancel();
        self.gw
            .hub
            .close_all(Close::ShuttingDown, "server shutting down");
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; dropping remaining connections");
        }
        sweeper.abort();
    }
}

/// How often routed requests are checked against their deadline.
const EXPIRE_EVERY: Duration = Duration::from_millis(50);

/// Ticks of `EXPIRE_EVERY` between prunes of the lockout tables.
const PRUNE_EVERY_TICKS: u32 = 200;

/// Fails routed requests whose provider did not answer in time (-32005),
/// and now and then forgets lockout entries that ran out.
async fn expire_routed(gw: Arc<Gateway>) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tick.tick().await;
        let now = Instant::now();
        gw.router.expire(now);
        ticks += 1;
        if ticks >= PRUNE_EVERY_TICKS {
            ticks = 0;
            gw.lockout.prune(now, &gw.snapshot().config.security);
        }
    }
}

/// One accepted TCP connection before it becomes a session.
struct Conn {
    gw: Arc<Gateway>,
    acceptor: TlsAcceptor,
    peer: SocketAddr,
    cancel: CancellationToken,
    refusing: Arc<AtomicUsize>,
}

/// What the handshake phase produced. The stream is boxed: a future keeps
/// room for every value it ever moved, so a 1.5 KiB stream passed by value
/// from here to the session loop would be held three times while idle.
struct Upgraded {
    ws: Box<Ws>,
    endpoint: Endpoint,
    user: Option<Granted>,
}

/// A connection that became a session.
struct Opened {
    ws: Box<Ws>,
    handle: Arc<SessionHandle>,
    ticket: Ticket,
}

impl Conn {
    async fn serve(self, tcp: TcpStream) {
        // The session's future is the task's state for the connection's
        // life: everything before it runs in `open`, whose state (limits,
        // the refusal, the handshake's result) is gone by then.
        let Some(Opened { ws, handle, ticket }) = self.open(tcp).await else {
            return;
        };
        crate::session::run(self.gw.clone(), ws, handle, ticket).await;
    }

    /// Admission, the handshake and binding a user who authenticated on
    /// the upgrade; `None` when the connection ends here.
    async fn open(&self, tcp: TcpStream) -> Option<Opened> {
        let _ = tcp.set_nodelay(true);
        let snap = self.gw.snapshot();
        let limits = snap.config.limits.clone();
        let ws_config = ws_config(&snap.config);
        drop(snap);
        let deadline = Duration::from_secs(limits.handshake_timeout_secs);
        let mut ticket = match Admission::admit(&self.gw, self.peer.ip(), &limits) {
            Ok(t) => t,
            Err(refusal) => {
                // Boxed: a rare path, and its TLS accept is larger than the
                // session that a task must otherwise have room for.
                Box::pin(self.refuse(tcp, refusal, deadline)).await;
                return None;
            }
        };
        // Boxed: a task is as big as its biggest state, and the handshake's
        // (TLS, HTTP, authentication) is several KiB an idle session need
        // not keep. Freed when the handshake ends.
        let handshake = Box::pin(self.handshake(tcp, &limits, ws_config));
        let upgraded = tokio::select! {
            r = tokio::time::timeout(deadline, handshake) => r,
            () = self.cancel.cancelled() => return None,
        };
        let Ok(Some(up)) = upgraded else { return None };
        let handle = self.gw.hub.open(up.endpoint, self.peer);
        // Opened as shutdown began: `close_all` may have gone over the hub
        // before this session was in it. Checked after the session is in:
        // either this sees the cancel or `close_all` sees the session.
        if self.cancel.is_cancelled() {
            handle
                .outbound
                .close(Close::ShuttingDown, "server shutting down");
        }
        if let Some(granted) = up.user {
            match auth::bind(&self.gw, &handle, &granted) {
                Ok(()) => ticket.authenticated(),
                // Lost a race for the user's last slot since the check.
                Err(Refused::TooManySessions) => handle
                    .outbound
                    .close(Close::TryAgain, "too many sessions for this user"),
                // The credential went stale meanwhile: already closing (1008).
                Err(_) => {}
            }
        }
        Some(Opened {
            ws: up.ws,
            handle,
            ticket,
        })
    }

    /// At capacity: a clean 503 when we can afford the TLS handshake.
    async fn refuse(&self, tcp: TcpStream, refusal: Refusal, deadline: Duration) {
        self.gw.metrics.connection_refused(refusal);
        tracing::warn!(peer = %self.peer, ?refusal, "connection refused");
        if self.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
            let _ = tokio::time::timeout(deadline.min(Duration::from_secs(2)), async {
                if let Ok(mut tls) = self.acceptor.accept(tcp).await {
                    http::respond(
                        &mut tls,
                        &Answer::text(503, "Service Unavailable", "at capacity")
                            .header("Retry-After", "5"),
                    )
                    .await;
                }
            })
            .await;
        }
        self.refusing.fetch_sub(1, Ordering::AcqRel);
    }

    async fn handshake(
        &self,
        tcp: TcpStream,
        limits: &crate::config::Limits,
        ws_config: WebSocketConfig,
    ) -> Option<Upgraded> {
        // A connection that says nothing holds a pre-authentication slot
        // for the first-byte deadline only, not the whole handshake's.
        let first_byte = Duration::from_secs(limits.first_byte_timeout_secs);
        if !first_byte_within(&tcp, first_byte).await {
            self.gw.metrics.tls_handshake_failed();
            tracing::debug!(peer = %self.peer, "no first byte in time; dropped");
            return None;
        }
        let mut tls = match self.acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(e) => {
                self.gw.metrics.tls_handshake_failed();
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                return None;
            }
        };
        let (head, rest) = match http::read_head(&mut tls, limits.max_header_bytes).await {
            Ok(x) => x,
            Err(HeadError::Io) => return None,
            Err(HeadError::Malformed) => {
                http::respond(
                    &mut tls,
                    &Answer::text(400, "Bad Request", "malformed HTTP request"),
                )
                .await;
                return None;
            }
            Err(HeadError::TooLarge) => {
                http::respond(
                    &mut tls,
                    &Answer::text(
                        431,
                        "Request Header Fields Too Large",
                        "request head too large",
                    ),
                )
                .await;
                return None;
            }
        };
        // Present only with `[tls] client_ca`, and then already verified.
        let client = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(ClientIdentity::of);
        let (endpoint, user) = match self.route(&head, client.as_ref()).await {
            Ok(x) => x,
            Err(answer) => {
                http::respond(&mut tls, &answer).await;
                return None;
            }
        };
        let key = head.ws_key.as_deref().unwrap_or_default();
        http::switch_protocols(&mut tls, key).await.ok()?;
        let ws = crate::session::link::open(tls, rest, ws_config).await;
        Some(Upgraded {
            ws: Box::new(ws),
            endpoint,
            user,
        })
    }

    /// Decides what a request head gets: an endpoint to upgrade to (with the
    /// user if it authenticated on the upgrade), or a plain answer.
    async fn route(
        &self,
        head: &Head,
        client: Option<&ClientIdentity>,
    ) -> Result<(Endpoint, Option<Granted>), Answer> {
        if let Some(name) = head.duplicate {
            // Two credentials or two origins: which one counts is ambiguous.
            return Err(Answer::text(
                400,
                "Bad Request",
                &format!("duplicate {name} header"),
            ));
        }
        let snap = self.gw.snapshot();
        let portal = &snap.config.portal;
        // An embedded page that is off is a path like any unknown one.
        let page_on = match head.path.as_str() {
            "/" => portal.demo_page,
            "/admin" => portal.admin_page,
            _ => false,
        };
        let endpoint = match head.path.as_str() {
            "/adjunct" => Endpoint::Adjunct,
            "/portal" => Endpoint::Portal,
            "/healthz" if head.method == "GET" => return Err(Answer::text(200, "OK", "ok")),
            "/" if head.method == "GET" && page_on => return Err(crate::portal::demo_page()),
            "/admin" if head.method == "GET" && page_on => return Err(crate::portal::admin_page()),
            // A page that exists: another method is not allowed on it (RFC 9110).
            "/healthz" | "/" | "/admin" if head.path == "/healthz" || page_on => {
                return Err(
                    Answer::text(405, "Method Not Allowed", "method not allowed")
                        .header("Allow", "GET"),
                )
            }
            _ => return Err(Answer::text(404, "Not Found", "not found")),
        };
        if head.method != "GET" {
            return Err(
                Answer::text(405, "Method Not Allowed", "method not allowed")
                    .header("Allow", "GET"),
            );
        }
        if !head.upgrade_websocket {
            return Err(
                Answer::text(426, "Upgrade Required", "this endpoint speaks WebSocket")
                    .header("Upgrade", "websocket"),
            );
        }
        if head.ws_version.as_deref() != Some("13") {
            return Err(
                Answer::text(426, "Upgrade Required", "unsupported Sec-WebSocket-Version")
                    .header("Sec-WebSocket-Version", "13"),
            );
        }
        if !head.connection_upgrade || head.ws_key.as_deref().is_none_or(|k| k.len() != 24) {
            return Err(Answer::text(
                400,
                "Bad Request",
                "missing Connection: Upgrade or Sec-WebSocket-Key",
            ));
        }
        // /portal also accepts its own origin (the demo page); /adjunct only
        // listed ones: a browser holding a client certificate must not be
        // driven there cross-site.
        let origin_ok = match endpoint {
            Endpoint::Portal => {
                crate::portal::origin_allowed(&snap.config.portal.allowed_origins, true, head)
            }
            Endpoint::Adjunct => {
                crate::portal::origin_allowed(&snap.config.adjunct.allowed_origins, false, head)
            }
        };
        if !origin_ok {
            if let Some(quiet) = self.gw.refusals.admit(std::time::Instant::now()) {
                // The first 256 characters: the head may carry 16 KiB of it.
                let origin = head
                    .origin
                    .as_deref()
                    .map(|o| crate::util::prefix_chars(o, 256));
                tracing::warn!(target: "audit", event = "origin_refused", peer = %self.peer, endpoint = endpoint.name(), origin, not_audited = quiet, "upgrade from a foreign origin refused");
            }
            return Err(Answer::text(403, "Forbidden", "origin not allowed"));
        }
        let block_secs = snap.config.security.ip_block_secs;
        drop(snap);
        let at = Attempt {
            peer: self.peer,
            endpoint,
        };
        // A certificate alone is not a guess: the address block does not
        // refuse it (auth does not either).
        let certificate_only =
            head.authorization.is_none() && endpoint == Endpoint::Adjunct && client.is_some();
        if !certificate_only && self.gw.lockout.is_blocked(self.peer.ip(), Instant::now()) {
            self.gw.metrics.login(crate::metrics::Login::Throttled);
            return Err(refusal(Refused::Throttled, block_secs));
        }
        let outcome = match head.authorization.as_deref() {
            Some(value) => {
                if let Some(token) = http::bearer_token(value) {
                    auth::authenticate(&self.gw, Credential::Token(token), at).await
                } else if let Some((user, password)) = http::basic_credentials(value) {
                    let cred = Credential::Password {
                        user: &user,
                        password: &password,
                    };
                    auth::authenticate(&self.gw, cred, at).await
                } else {
                    return Err(refusal(Refused::Failed, block_secs));
                }
            }
            None => match (endpoint, client) {
                (Endpoint::Adjunct, Some(id)) => {
                    match auth::authenticate(&self.gw, Credential::Certificate(id), at).await {
                        // A certificate no user claims: the peer may still log in.
                        Err(Refused::Failed) => return Ok((endpoint, None)),
                        other => other,
                    }
                }
                _ => return Ok((endpoint, None)),
            },
        };
        match outcome {
            Ok(granted) => Ok((endpoint, Some(granted))),
            Err(refused) => Err(refusal(refused, block_secs)),
        }
    }
}

/// Waits for the peer's first byte (without consuming it) for at most
/// `within`; false when it closed or stayed silent.
async fn first_byte_within(tcp: &TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, tcp.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// The HTTP answer to a refused authentication on the upgrade.
fn refusal(refused: Refused, block_secs: u64) -> Answer {
    match refused {
        Refused::Failed => Answer::text(401, "Unauthorized", "authentication failed")
            .header("WWW-Authenticate", "Basic realm=\"adjunct-gateway\""),
        Refused::Throttled => Answer::text(
            429,
            "Too Many Requests",
            "too many failed logins from this address",
        )
        .header("Retry-After", block_secs.to_string()),
        Refused::InProgress => Answer::text(
            429,
            "Too Many Requests",
            "too many logins in progress from this address",
        )
        .header("Retry-After", "1"),
        Refused::Busy => {
            Answer::text(503, "Service Unavailable", "login queue full").header("Retry-After", "1")
        }
        Refused::UserThrottled => Answer::text(
            429,
            "Too Many Requests",
            "too many logins waiting for this user name",
        )
        .header("Retry-After", "1"),
        Refused::NoConnectionRight => {
            Answer::text(403, "Forbidden", "Adjunct Server Connection right required")
        }
        Refused::TooManySessions => Answer::text(
            503,
            "Service Unavailable",
            "too many sessions for this user",
        )
        .header("Retry-After", "5"),
    }
}

/// WebSocket settings: a 4 KiB read buffer instead of tungstenite's 128 KiB
/// while the session reads (none while it dozes: `session::link`), writes
/// handed to TLS in 16 KiB pieces, and the configured message limit.
///
/// The write buffer has no bound of tungstenite's own: past one, tungstenite
/// refuses the message (the session would end) or keeps a pong back, which
/// a dozing link would then lose; and no fixed bound fits every message the
/// gateway writes (a batch's array of routed answers can be `max_batch` + 1
/// times `max_message_bytes`, and both may change by a reload or differ
/// between cluster nodes). The buffer is bounded all the same: the session
/// waits for the socket to take what is buffered past 16 KiB before it
/// buffers the next message, so it holds at most one message and 16 KiB.
pub fn ws_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(crate::session::link::READ_BUFFER)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

//! The operator listener on `[admin] listen`: plain HTTP/1.1 through hyper,
//! `GET /metrics` and nothing else. Bounded so a scanner or a stuck client
//! cannot exhaust it: at most `MAX_CONNECTIONS` at once (further ones are
//! closed at once, unanswered), a request head within `HEADER_READ_TIMEOUT`
//! and at most `MAX_HEAD_BYTES`, one answer per connection
//! (`Connection: close`), and the whole connection within `DEADLINE`.
//!
//! Must not change any value: it only encodes [`Metrics`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, VARY};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::exposition::Format;
use super::Metrics;

/// Connections served at once; past this a new one is closed at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Time allowed from accept to the end of the request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for a whole connection, from accept to the last byte.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's smallest read buffer); larger gets 431.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Header lines allowed in a request; more gets 431.
const MAX_HEADERS: usize = 64;

/// The operator listener: `GET /metrics` on `[admin] listen`.
pub struct Exporter {
    listener: TcpListener,
    metrics: Metrics,
}

impl Exporter {
    /// Binds `listen`; `None` when it is empty (turned off).
    pub async fn bind(listen: &str, metrics: Metrics) -> std::io::Result<Option<Exporter>> {
        if listen.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = listen.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "[admin] listen is not an address:port",
            )
        })?;
        // The caller names `[admin] listen` and the address in the error.
        let listener = TcpListener::bind(addr).await?;
        Ok(Some(Exporter { listener, metrics }))
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped or aborted (which also ends the
    /// connections in flight: they live in a `JoinSet`).
    pub async fn run(self) {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(false)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        let mut connections = JoinSet::new();
        loop {
            let (tcp, _) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            if connections.len() >= MAX_CONNECTIONS {
                continue;
            }
            let metrics = self.metrics.clone();
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&metrics, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = http.serve_connection(TokioIo::new(tcp), service);
            connections.spawn(async move {
                let _ = tokio::time::timeout(DEADLINE, connection).await;
            });
        }
    }
}

/// The answer to one request (hyper adds `Date` and `Content-Length`, and
/// answers 400 and 431 itself).
fn answer(metrics: &Metrics, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let accept = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut response = plain(
        StatusCode::OK,
        format.content_type(),
        metrics.encode_as(format),
    );
    // The body depends on Accept: caches must key on it.
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept"));
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    plain(status, "text/plain; charset=utf-8", format!("{body}\n"))
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Said even to HTTP/1.0, where it is the default: hyper adds no second one.
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

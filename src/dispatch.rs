//! One text frame in, its answer out: parse the JSON-RPC envelope, look the
//! method up in the catalog, ask the gate, then call the handler or route it.
//! A batch is answered with one array; when it holds forwarded routed
//! requests, the array is finished and sent by the router (`Gather`).
//!
//! This is the whole per-request path and it never touches a socket, so the
//! fuzz target and the benchmarks drive it directly. Every refusal comes from
//! `catalog::gate`; a denied request never reaches its handler.

use std::sync::Arc;

use crate::catalog::{self, Entry, Target};
use crate::gateway::Snapshot;
use crate::hub::SessionHandle;
pub use crate::methods::Ctx;
use crate::methods::{self, Batching, Handled, Reply};
use crate::metrics::NamespaceMetrics;
use crate::rights::Right;
use crate::rpc::{self, Close, Code, Incoming, Invalid, Item, Request, RpcError};

impl Ctx<'_> {
    /// Spends one request of the budget. When it is gone the request gets
    /// -32029, and a session refused `rate_limited_close_after` times in a
    /// row is closed with 1008.
    fn admit(&mut self, snap: &Snapshot) -> Result<(), RpcError> {
        if self.rate.take() {
            return Ok(());
        }
        if self.rate.refused_in_row() >= snap.config.limits.rate_limited_close_after {
            self.close = Some((Close::Policy, "rate limit exceeded"));
        }
        Err(RpcError::new(Code::RateLimited))
    }
}

/// Handles one text frame, appending the answer (if any) to `out`.
pub async fn frame(ctx: &mut Ctx<'_>, text: &str, out: &mut Vec<u8>) {
    // A guard, not an Arc clone: no shared refcount touched per frame.
    let snap = ctx.gw.snapshot();
    let limits = &snap.config.limits;
    let bounds = rpc::Bounds {
        max_batch: limits.max_batch,
        max_depth: limits.max_json_depth,
    };
    match rpc::parse(text, bounds) {
        Incoming::Unusable(err) => {
            ctx.gw.metrics.invalid_request();
            let err = ctx.admit(&snap).err().unwrap_or(err);
            rpc::write_error(out, None, &err);
        }
        Incoming::Single(req) => {
            one(ctx, &snap, req, out).await;
        }
        // Boxed: batches are rare, and their state would otherwise size
        // every session's future (it is kept while the session idles).
        Incoming::Batch(reqs) => Box::pin(batch(ctx, &snap, reqs, out)).await,
    }
}

/// Handles a batch: one answer array for all its elements, or nothing when
/// none is owed an answer. Routed elements forwarded to a provider are
/// answered in the same array, which then waits for them (in a `Gather`)
/// while the session goes on serving.
async fn batch(
    ctx: &mut Ctx<'_>,
    snap: &Snapshot,
    reqs: Vec<Result<Item<'_>, Invalid<'_>>>,
    out: &mut Vec<u8>,
) {
    out.push(b'[');
    ctx.batch = Some(Batching {
        at: 0,
        gather: None,
    });
    let mut any = false;
    for req in reqs {
        let mark = out.len();
        if any {
            out.push(b',');
        }
        if let Some(b) = &mut ctx.batch {
            b.at = mark;
        }
        match one(ctx, snap, req, out).await {
            Wrote::Answer => any = true,
            // Its answer is spliced in at `mark` later, comma included.
            Wrote::Later => {
                out.truncate(mark);
                any = true;
            }
            Wrote::Nothing => out.truncate(mark),
        }
        if ctx.close.is_some() {
            break;
        }
    }
    match ctx.batch.take().and_then(|b| b.gather) {
        Some(gather) => {
            let local = std::mem::take(out);
            if let Some(array) = gather.seal(local) {
                *out = array;
            }
        }
        None if any => out.push(b']'),
        // Only notifications: JSON-RPC says send nothing at all.
        None => out.clear(),
    }
}

/// What one request added to the answer.
enum Wrote {
    Nothing,
    Answer,
    /// Forwarded to a provider; the answer comes later.
    Later,
}

/// Handles one request, writing its immediate answer (if any) to `out`.
async fn one(
    ctx: &mut Ctx<'_>,
    snap: &Snapshot,
    item: Result<Item<'_>, Invalid<'_>>,
    out: &mut Vec<u8>,
) -> Wrote {
    let req = match item {
        Ok(Item::Call(req)) => req,
        Ok(Item::Answer(answer)) => {
            // A provider answering a routed request: never refused (a
            // caller waits for it) and never answered back. An answer to
            // nothing pending spends the budget like any other element.
            let delivered = ctx.session.rights().is_some()
                && ctx
                    .gw
                    .router
                    .answer(ctx.session, answer.id, answer.outcome, ctx.read_at());
            if !delivered {
                let _ = ctx.admit(snap);
            }
            return Wrote::Nothing;
        }
        Err(invalid) => {
            ctx.gw.metrics.invalid_request();
            let err = ctx.admit(snap).err().unwrap_or(invalid.error);
            rpc::write_error(out, invalid.id, &err);
            return Wrote::Answer;
        }
    };
    let entry = snap.config.catalog.lookup(&req.method);
    // A routed namespace's metric handles, looked up once per request.
    let routed = match entry.map(|e| e.target) {
        Some(Target::Routed(ns)) => Some(ctx.gw.metrics.namespace(ns)),
        _ => None,
    };
    let reply = match ctx.admit(snap) {
        Ok(()) => match call(ctx, entry, routed.as_ref(), snap, &req) {
            Handled::Now(reply) => reply,
            Handled::Waits(handler) => handler.await,
        },
        Err(e) => Reply::Error(e),
    };
    ctx.gw
        .metrics
        .request(entry.as_ref(), routed.as_deref(), &reply);
    let Some(id) = req.id else {
        return Wrote::Nothing;
    };
    match reply {
        Reply::Value(v) => rpc::write_result(out, Some(id), &v),
        Reply::Static(v) => rpc::write_raw_result(out, Some(id), v),
        Reply::Error(e) => rpc::write_error(out, Some(id), &e),
        Reply::Later => return Wrote::Later,
    }
    Wrote::Answer
}

fn call<'a>(
    ctx: &'a mut Ctx<'_>,
    entry: Option<Entry<'_>>,
    routed: Option<&Arc<NamespaceMetrics>>,
    snap: &'a Snapshot,
    req: &'a Request<'_>,
) -> Handled<'a> {
    let Some(entry) = entry else {
        return Handled::Now(Reply::Error(RpcError::new(Code::MethodNotFound)));
    };
    let rights = ctx.session.rights();
    if let Err(denied) = catalog::gate(&entry, rights, ctx.session.endpoint) {
        if let Some(right) = denied.right() {
            ctx.gw.metrics.forbidden(right);
            if let Some(quiet) = ctx.gw.refusals.admit(std::time::Instant::now()) {
                audit_forbidden(ctx.session, &req.method, right, quiet);
            }
        }
        return Handled::Now(Reply::Error(denied.to_error()));
    }
    match entry.target {
        Target::Local(method) => methods::call(ctx, snap, method, req.params),
        Target::Routed(ns) => {
            let metrics = routed
                .cloned()
                .unwrap_or_else(|| ctx.gw.metrics.namespace(ns));
            Handled::Now(methods::route(ctx, snap, ns, entry.need, req, metrics))
        }
    }
}

fn audit_forbidden(session: &SessionHandle, method: &str, right: Right, quiet: Option<u64>) {
    let shown = crate::util::prefix_chars(method, 128);
    tracing::warn!(
        target: "audit",
        event = "forbidden",
        user = session.user().map_or("", |u| &**u),
        method = shown,
        right = right.name(),
        not_audited = quiet,
        "request refused"
    );
}

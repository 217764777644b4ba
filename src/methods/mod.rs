//! The gateway's own method handlers, one file per family, and `params`:
//! how every handler decodes its params and the one wording of a -32602
//! mismatch. A handler runs only after the gate has let its request through.

mod adjunct;
mod admin;
mod events;
mod params;
mod session;
mod turn;

use serde_json::value::RawValue;
use serde_json::Value;

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::{Method, Need};
use crate::gateway::Gateway;
use crate::gateway::Snapshot;
use crate::hub::SessionHandle;
use crate::rate::RateLimit;
use crate::router::Gather;
use crate::router::Routed;
use crate::rpc::Close;
pub use crate::rpc::Reply;
use crate::rpc::Request;
use crate::rpc::RpcError;
pub use params::Params;

/// What a handler may see and change of its session.
pub struct Ctx<'a> {
    pub gw: &'a Arc<Gateway>,
    pub session: &'a Arc<SessionHandle>,
    /// The session's request budget.
    pub rate: &'a mut RateLimit,
    /// Set by a handler that wants the session closed after its answer.
    pub close: Option<(Close, &'static str)>,
    /// Set while the elements of a batch are handled.
    pub batch: Option<Batching>,
    /// When the frame was read (the session's wake-up); `None`: now.
    /// Routed requests and answers time the gateway's own part from it.
    pub read_at: Option<std::time::Instant>,
}

/// A batch being answered: where a forwarded element's answer belongs.
pub struct Batching {
    /// Offset in the answer buffer where the current element's answer goes.
    pub at: usize,
    pub(crate) gather: Option<Arc<Gather>>,
}

impl Batching {
    /// The batch's answer array, made when its first element is forwarded
    /// (a batch of local methods never makes one).
    pub fn gather(&mut self, caller: &Arc<SessionHandle>) -> Arc<Gather> {
        self.gather
            .get_or_insert_with(|| Gather::new(caller.clone()))
            .clone()
    }
}

impl Ctx<'_> {
    /// When the frame being handled was read.
    pub fn read_at(&self) -> std::time::Instant {
        self.read_at.unwrap_or_else(std::time::Instant::now)
    }
}

impl<'a> Ctx<'a> {
    pub fn new(
        gw: &'a Arc<Gateway>,
        session: &'a Arc<SessionHandle>,
        rate: &'a mut RateLimit,
    ) -> Ctx<'a> {
        Ctx {
            gw,
            session,
            rate,
            close: None,
            batch: None,
            read_at: None,
        }
    }
}

/// Runs `method`'s handler: answered now, or a boxed future for the
/// handlers that wait (argon2, the store, the bus, other sessions). Were
/// they awaited in place, the largest of their states would size the
/// dispatch future of every request, session.ping's too (1.6 KB, built and
/// copied per frame), for methods called about once a session.
pub fn call<'a>(
    ctx: &'a mut Ctx<'_>,
    snap: &'a Snapshot,
    method: Method,
    params: Option<&'a RawValue>,
) -> Handled<'a> {
    let params = Params::new(method, params);
    match method {
        Method::SessionLogin => waits(session::login(ctx, params)),
        Method::SessionResume => waits(session::resume(ctx, params)),
        Method::SessionToken => Handled::Now(session::token(ctx).into()),
        Method::SessionInfo => Handled::Now(session::info(ctx, snap).into()),
        Method::SessionPing => Handled::Now(Reply::Static("{}")),
        Method::TurnCredentials => Handled::Now(turn::credentials(ctx, snap, params).into()),
        Method::AdjunctRegister => Handled::Now(adjunct::register(ctx, snap, params).into()),
        Method::AdjunctUnregister => Handled::Now(adjunct::unregister(ctx, params).into()),
        Method::AdjunctPublish => Handled::Now(adjunct::publish(ctx, snap, params).into()),
        Method::EventsSubscribe => Handled::Now(events::subscribe(ctx, snap, params).into()),
        Method::EventsUnsubscribe => Handled::Now(events::unsubscribe(ctx, params).into()),
        Method::AdminSessionsList => waits(admin::sessions_list(ctx, params)),
        Method::AdminSessionsClose => waits(admin::sessions_close(ctx, params)),
        Method::AdminConfigGet => Handled::Now(admin::config_get(snap).into()),
        Method::AdminConfigReload => waits(admin::config_reload(ctx)),
        Method::AdminNetworkSet => waits(admin::network_set(ctx, params)),
        Method::AdminUsersList => Handled::Now(admin::users_list(ctx, snap).into()),
        Method::AdminUsersCreate => waits(admin::users_create(ctx, snap, params)),
        Method::AdminUsersUpdate => waits(admin::users_update(ctx, params)),
        Method::AdminUsersDelete => waits(admin::users_delete(ctx, params)),
        Method::AdminUsersSetPassword => waits(admin::users_set_password(ctx, snap, params)),
        Method::AdminUsersUnlock => waits(admin::users_unlock(ctx, snap, params)),
        Method::AdminGroupsList => Handled::Now(admin::groups_list(ctx, snap).into()),
        Method::AdminGroupsCreate => waits(admin::groups_create(ctx, params)),
        Method::AdminGroupsUpdate => waits(admin::groups_update(ctx, params)),
        Method::AdminGroupsDelete => waits(admin::groups_delete(ctx, params)),
        Method::AdminStatus => Handled::Now(admin::status(ctx, snap).into()),
        Method::AdminAuditRecent => Handled::Now(admin::audit_recent(params).into()),
    }
}

/// A handler's answer, or the wait for it.
pub enum Handled<'a> {
    Now(Reply),
    Waits(Pin<Box<dyn Future<Output = Reply> + Send + 'a>>),
}

fn waits<'a, F>(handler: F) -> Handled<'a>
where
    F: Future<Output = Result<Value, RpcError>> + Send + 'a,
{
    Handled::Waits(Box::pin(async move { handler.await.into() }))
}

/// Sends a request to a provider of `ns`; the answer arrives later.
/// `need` is the method's own rule, the one the gate judged the caller by:
/// only a provider that meets it too is sent the request (a provider
/// holding a weaker right of the namespace never sees a stronger
/// operation's request or params).
pub fn route(
    ctx: &mut Ctx<'_>,
    snap: &Snapshot,
    ns: &str,
    need: Need,
    req: &Request<'_>,
    metrics: std::sync::Arc<crate::metrics::NamespaceMetrics>,
) -> Reply {
    let routed = Routed {
        ns,
        need,
        method: &req.method,
        id: req.id,
        params: req.params,
        timeout: Duration::from_millis(snap.config.routing.request_timeout_ms),
        max_pending: snap.config.limits.max_pending_per_session,
        queue_cap: snap.config.limits.outbound_queue,
        provider_cap: snap.config.limits.provider_queue,
        queue_bytes: snap.config.limits.queue_bytes,
        stall: Duration::from_secs(snap.config.limits.stalled_close_secs),
        metrics,
        batch: match (&mut ctx.batch, req.id) {
            (Some(b), Some(_)) => Some((b.gather(ctx.session), b.at)),
            _ => None,
        },
        read_at: ctx.read_at(),
    };
    match ctx.gw.router.route(ctx.session, routed) {
        Ok(()) => Reply::Later,
        Err(e) => Reply::Error(e),
    }
}

/// Whether `method`'s decoder takes `params` (the test that keeps the
/// catalog's param descriptions in step with the decoders).
#[cfg(test)]
fn decoder_accepts(method: Method, params: Params<'_>) -> bool {
    fn ok<'a, T: serde::Deserialize<'a>>(p: Params<'a>) -> bool {
        p.decode::<T>().is_ok()
    }
    match method {
        Method::SessionLogin => ok::<session::LoginParams>(params),
        Method::SessionResume => ok::<session::ResumeParams>(params),
        Method::TurnCredentials => ok::<turn::TtlParams>(params),
        Method::AdjunctRegister | Method::AdjunctUnregister => ok::<adjunct::Namespaces>(params),
        Method::AdjunctPublish => ok::<adjunct::Publish>(params),
        Method::EventsSubscribe | Method::EventsUnsubscribe => ok::<events::Topics>(params),
        Method::AdminSessionsList => ok::<admin::SessionFilter>(params),
        Method::AdminSessionsClose => ok::<admin::CloseParams>(params),
        Method::AdminNetworkSet => ok::<admin::NetworkParams>(params),
        Method::AdminUsersCreate => ok::<admin::CreateUser>(params),
        Method::AdminUsersUpdate => ok::<admin::UpdateUser>(params),
        Method::AdminUsersDelete | Method::AdminUsersUnlock | Method::AdminGroupsDelete => {
            ok::<admin::Named>(params)
        }
        Method::AdminUsersSetPassword => ok::<admin::SetPassword>(params),
        Method::AdminGroupsCreate | Method::AdminGroupsUpdate => ok::<admin::GroupParams>(params),
        Method::AdminAuditRecent => ok::<admin::AuditParams>(params),
        Method::SessionToken
        | Method::SessionInfo
        | Method::SessionPing
        | Method::AdminConfigGet
        | Method::AdminConfigReload
        | Method::AdminUsersList
        | Method::AdminGroupsList
        | Method::AdminStatus => true,
    }
}

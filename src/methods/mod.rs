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

pub async fn call(
    ctx: &mut Ctx<'_>,
    snap: &Snapshot,
    method: Method,
    params: Option<&RawValue>,
) -> Reply {
    let params = Params::new(method, params);
    match method {
        Method::SessionLogin => session::login(ctx, params).await.into(),
        Method::SessionResume => session::resume(ctx, params).await.into(),
        Method::SessionToken => session::token(ctx).into(),
        Method::SessionInfo => session::info(ctx, snap).into(),
        Method::SessionPing => Reply::Value(Value::Object(Default::default())),
        Method::TurnCredentials => turn::credentials(ctx, snap, params).into(),
        Method::AdjunctRegister => adjunct::register(ctx, snap, params).into(),
        Method::AdjunctUnregister => adjunct::unregister(ctx, params).into(),
        Method::AdjunctPublish => adjunct::publish(ctx, snap, params).into(),
        Method::EventsSubscribe => events::subscribe(ctx, snap, params).into(),
        Method::EventsUnsubscribe => events::unsubscribe(ctx, params).into(),
        Method::AdminSessionsList => admin::sessions_list(ctx, params).await.into(),
        Method::AdminSessionsClose => admin::sessions_close(ctx, params).await.into(),
        Method::AdminConfigGet => admin::config_get(snap).into(),
        Method::AdminConfigReload => admin::config_reload(ctx).await.into(),
        Method::AdminNetworkSet => admin::network_set(ctx, params).await.into(),
        Method::AdminUsersList => admin::users_list(ctx, snap).into(),
        Method::AdminUsersCreate => admin::users_create(ctx, snap, params).await.into(),
        Method::AdminUsersUpdate => admin::users_update(ctx, params).await.into(),
        Method::AdminUsersDelete => admin::users_delete(ctx, params).await.into(),
        Method::AdminUsersSetPassword => admin::users_set_password(ctx, snap, params).await.into(),
        Method::AdminUsersUnlock => admin::users_unlock(ctx, snap, params).await.into(),
        Method::AdminGroupsList => admin::groups_list(ctx, snap).into(),
        Method::AdminGroupsCreate => admin::groups_create(ctx, params).await.into(),
        Method::AdminGroupsUpdate => admin::groups_update(ctx, params).await.into(),
        Method::AdminGroupsDelete => admin::groups_delete(ctx, params).await.into(),
        Method::AdminStatus => admin::status(ctx, snap).into(),
        Method::AdminAuditRecent => admin::audit_recent(params).into(),
    }
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

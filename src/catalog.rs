//! The catalog: which right each method (or routed namespace) needs, where it
//! may be called, and what serves it. One data table, plus the namespaces a
//! config adds with `[[catalog]]`; and `gate`, the one place that says yes or no.
//!
//! Must not know about sockets, sessions or handlers' internals: the gate sees
//! a catalog entry, the caller's `RightSet` (none before login) and the endpoint.

use crate::rights::{Right, RightSet};
use crate::rpc::{Code, RpcError};

/// Which endpoint a session came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Adjunct,
    Portal,
}

impl Endpoint {
    pub const fn name(self) -> &'static str {
        match self {
            Endpoint::Adjunct => "adjunct",
            Endpoint::Portal => "portal",
        }
    }
}

/// What a caller must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only before authentication (session.login).
    Anonymous,
    /// Any authenticated session.
    Authenticated,
    /// This one right.
    Right(Right),
    /// At least one of these rights.
    AnyOf(RightSet),
}

/// Where a method may be called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    Anywhere,
    AdjunctOnly,
}

/// The gateway's own methods; each has one handler under `methods/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    SessionLogin,
    SessionResume,
    SessionToken,
    SessionInfo,
    SessionPing,
    TurnCredentials,
    AdjunctRegister,
    AdjunctUnregister,
    AdjunctPublish,
    EventsSubscribe,
    EventsUnsubscribe,
    AdminSessionsList,
    AdminSessionsClose,
    AdminConfigGet,
    AdminConfigReload,
    AdminNetworkSet,
    AdminUsersList,
    AdminUsersCreate,
    AdminUsersUpdate,
    AdminUsersDelete,
    AdminUsersSetPassword,
    AdminUsersUnlock,
    AdminGroupsList,
    AdminGroupsCreate,
    AdminGroupsUpdate,
    AdminGroupsDelete,
    AdminStatus,
    AdminAuditRecent,
}

impl Method {
    /// The members of its params object, in positional order (PROTOCOL.md
    /// §6, ADMIN.md), with what each must be: the decoders' errors are
    /// worded from this list. Methods listed with none read no params at all.
    pub const fn params(self) -> &'static [Param] {
        use ParamKind::{Any, Bool, Str, StrList, UInt};
        const fn req(name: &'static str, kind: ParamKind) -> Param {
            Param {
                name,
                kind,
                optional: false,
            }
        }
        const fn opt(name: &'static str, kind: ParamKind) -> Param {
            Param {
                name,
                kind,
                optional: true,
            }
        }
        // Inline consts: the tables are built at compile time.
        match self {
            Method::SessionLogin => const { &[req("user", Str), req("password", Str)] },
            Method::SessionResume => const { &[req("token", Str)] },
            Method::SessionToken | Method::SessionInfo | Method::SessionPing => &[],
            Method::TurnCredentials => const { &[opt("ttl", UInt)] },
            Method::AdjunctRegister | Method::AdjunctUnregister => {
                const { &[req("namespaces", StrList)] }
            }
            Method::AdjunctPublish => const { &[req("topic", Str), opt("data", Any)] },
            Method::EventsSubscribe | Method::EventsUnsubscribe => {
                const { &[req("topics", StrList)] }
            }
            Method::AdminSessionsList => const { &[opt("user", Str), opt("endpoint", Str)] },
            Method::AdminSessionsClose => const { &[req("sessionId", Str), opt("reason", Str)] },
            Method::AdminConfigGet
            | Method::AdminConfigReload
            | Method::AdminUsersList
            | Method::AdminGroupsList
            | Method::AdminStatus => &[],
            Method::AdminAuditRecent => const { &[opt("limit", UInt)] },
            Method::AdminNetworkSet => {
                const {
                    &[
                        req("revision", Str),
                        opt("stun_urls", StrList),
                        opt("turn_urls", StrList),
                    ]
                }
            }
            Method::AdminUsersCreate => {
                const {
                    &[
                        req("revision", Str),
                        req("name", Str),
                        req("password", Str),
                        opt("groups", StrList),
                        opt("enabled", Bool),
                    ]
                }
            }
            Method::AdminUsersUpdate => {
                const {
                    &[
                        req("revision", Str),
                        req("name", Str),
                        opt("groups", StrList),
                        opt("enabled", Bool),
                    ]
                }
            }
            Method::AdminUsersDelete | Method::AdminUsersUnlock | Method::AdminGroupsDelete => {
                const { &[req("revision", Str), req("name", Str)] }
            }
            Method::AdminUsersSetPassword => {
                const { &[req("revision", Str), req("name", Str), req("password", Str)] }
            }
            Method::AdminGroupsCreate | Method::AdminGroupsUpdate => {
                const {
                    &[
                        req("revision", Str),
                        req("name", Str),
                        req("rights", StrList),
                    ]
                }
            }
        }
    }
}

/// One member of a method's params.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    /// May be left out or `null` (in positional params it must still be given).
    pub optional: bool,
}

/// The JSON a param must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Str,
    /// A non-negative integer (up to 2^64 - 1).
    UInt,
    Bool,
    /// An array of strings.
    StrList,
    Any,
}

impl ParamKind {
    /// What a value must be, as error messages say it.
    pub const fn describe(self) -> &'static str {
        match self {
            ParamKind::Str => "a string",
            ParamKind::UInt => "a non-negative integer",
            ParamKind::Bool => "true or false",
            ParamKind::StrList => "an array of strings",
            ParamKind::Any => "any JSON value",
        }
    }
}

/// What serves a request once the gate lets it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    Local(Method),
    /// Sent to a provider of this namespace.
    Routed(&'a str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub need: Need,
    pub reach: Reach,
    pub target: Target<'a>,
}

const fn local(method: Method, need: Need, reach: Reach) -> Entry<'static> {
    Entry {
        need,
        reach,
        target: Target::Local(method),
    }
}

use Need::{Anonymous, Authenticated};

const READ: Need = Need::Right(Right::ManagementApiRead);
const WRITE: Need = Need::Right(Right::ManagementApiWrite);
const SECURITY: Need = Need::Right(Right::WebControlSecurity);
use Reach::{AdjunctOnly, Anywhere};

/// The gateway's methods. A method missing here cannot be reached.
const METHODS: &[(&str, Entry<'static>)] = &[
    (
        "session.ping",
        local(Method::SessionPing, Authenticated, Anywhere),
    ),
    (
        "session.login",
        local(Method::SessionLogin, Anonymous, Anywhere),
    ),
    (
        "session.resume",
        local(Method::SessionResume, Anonymous, Anywhere),
    ),
    (
        "session.token",
        local(Method::SessionToken, Authenticated, Anywhere),
    ),
    (
        "session.info",
        local(Method::SessionInfo, Authenticated, Anywhere),
    ),
    (
        "turn.credentials",
        local(
            Method::TurnCredentials,
            Need::Right(Right::TurnServerConnection),
            Anywhere,
        ),
    ),
    (
        "adjunct.register",
        local(
            Method::AdjunctRegister,
            Need::Right(Right::AdjunctServerConnection),
            AdjunctOnly,
        ),
    ),
    (
        "adjunct.unregister",
        local(
            Method::AdjunctUnregister,
            Need::Right(Right::AdjunctServerConnection),
            AdjunctOnly,
        ),
    ),
    (
        "adjunct.publish",
        local(
            Method::AdjunctPublish,
            Need::Right(Right::AdjunctServerConnection),
            AdjunctOnly,
        ),
    ),
    // Each topic is gated again by its namespace's need in the handler.
    (
        "events.subscribe",
        local(Method::EventsSubscribe, Authenticated, Anywhere),
    ),
    (
        "events.unsubscribe",
        local(Method::EventsUnsubscribe, Authenticated, Anywhere),
    ),
    // The Management API (docs/ADMIN.md). Writes are judged again by
    // `admin::delegation` once the gate has let them through.
    (
        "admin.sessions.list",
        local(Method::AdminSessionsList, READ, Anywhere),
    ),
    (
        "admin.sessions.close",
        local(Method::AdminSessionsClose, WRITE, Anywhere),
    ),
    (
        "admin.config.get",
        local(Method::AdminConfigGet, READ, Anywhere),
    ),
    (
        "admin.config.reload",
        local(Method::AdminConfigReload, WRITE, Anywhere),
    ),
    (
        "admin.network.set",
        local(Method::AdminNetworkSet, WRITE, Anywhere),
    ),
    (
        "admin.users.list",
        local(Method::AdminUsersList, SECURITY, Anywhere),
    ),
    (
        "admin.users.create",
        local(Method::AdminUsersCreate, SECURITY, Anywhere),
    ),
    (
        "admin.users.update",
        local(Method::AdminUsersUpdate, SECURITY, Anywhere),
    ),
    (
        "admin.users.delete",
        local(Method::AdminUsersDelete, SECURITY, Anywhere),
    ),
    (
        "admin.users.set_password",
        local(Method::AdminUsersSetPassword, SECURITY, Anywhere),
    ),
    (
        "admin.users.unlock",
        local(Method::AdminUsersUnlock, SECURITY, Anywhere),
    ),
    (
        "admin.groups.list",
        local(Method::AdminGroupsList, SECURITY, Anywhere),
    ),
    (
        "admin.groups.create",
        local(Method::AdminGroupsCreate, SECURITY, Anywhere),
    ),
    (
        "admin.groups.update",
        local(Method::AdminGroupsUpdate, SECURITY, Anywhere),
    ),
    (
        "admin.groups.delete",
        local(Method::AdminGroupsDelete, SECURITY, Anywhere),
    ),
    ("admin.status", local(Method::AdminStatus, READ, Anywhere)),
    (
        "admin.audit.recent",
        local(Method::AdminAuditRecent, SECURITY, Anywhere),
    ),
];

/// The name and need of one of the gateway's own methods, from the table
/// (for handlers that must re-check their need later, and for audit lines).
pub fn method_entry(method: Method) -> (&'static str, Need) {
    METHODS
        .iter()
        .find(|(_, e)| e.target == Target::Local(method))
        .map_or(("", Need::Anonymous), |(name, e)| (*name, e.need))
}

/// The gateway's own methods by name, in table order.
pub fn local_methods() -> impl Iterator<Item = (&'static str, Method)> {
    METHODS
        .iter()
        .filter_map(|(name, entry)| match entry.target {
            Target::Local(m) => Some((*name, m)),
            Target::Routed(_) => None,
        })
}

/// Namespaces served by providers (and topics of their events).
const NAMESPACES: &[(&str, Need)] = &[("cti", Need::Right(Right::OneXCtiApi))];

/// The routed namespaces every gateway has (config may add more).
pub fn builtin_namespaces() -> impl Iterator<Item = &'static str> {
    NAMESPACES.iter().map(|(ns, _)| *ns)
}

/// Namespaces of the gateway's own methods: never routed, never added by config.
pub const RESERVED: &[&str] = &["session", "turn", "adjunct", "events", "admin", "event"];

/// The built-in table plus namespaces from `[[catalog]]` entries in the config.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    extra: Vec<(String, Need)>,
}

impl Catalog {
    /// `extra` must not name reserved or built-in namespaces (config validates).
    pub fn new(extra: Vec<(String, Need)>) -> Self {
        Catalog { extra }
    }

    /// Is `ns` a namespace of the built-in table or the config?
    pub fn is_builtin_namespace(ns: &str) -> bool {
        NAMESPACES.iter().any(|(n, _)| *n == ns)
    }

    /// The need of a routed namespace, if it is one.
    pub fn namespace(&self, ns: &str) -> Option<Need> {
        NAMESPACES
            .iter()
            .map(|(n, need)| (*n, *need))
            .chain(self.extra.iter().map(|(n, need)| (n.as_str(), *need)))
            .find(|(n, _)| *n == ns)
            .map(|(_, need)| need)
    }

    /// The entry for `method`, or `None`: -32601.
    pub fn lookup<'m>(&self, method: &'m str) -> Option<Entry<'m>> {
        if let Some((_, entry)) = METHODS.iter().find(|(name, _)| *name == method) {
            return Some(*entry);
        }
        let (ns, rest) = method.split_once('.')?;
        if rest.is_empty() {
            return None;
        }
        self.namespace(ns).map(|need| Entry {
            need,
            reach: Anywhere,
            target: Target::Routed(ns),
        })
    }
}

/// Why the gate said no.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    NotAuthenticated,
    AlreadyAuthenticated,
    Missing(Need),
    WrongEndpoint,
}

/// The gate: `rights` is `None` before authentication.
pub fn gate(entry: &Entry<'_>, rights: Option<RightSet>, endpoint: Endpoint) -> Result<(), Denied> {
    let rights = match (entry.need, rights) {
        (Need::Anonymous, None) => return Ok(()),
        (Need::Anonymous, Some(_)) => return Err(Denied::AlreadyAuthenticated),
        (_, None) => return Err(Denied::NotAuthenticated),
        (_, Some(r)) => r,
    };
    if entry.reach == Reach::AdjunctOnly && endpoint != Endpoint::Adjunct {
        return Err(Denied::WrongEndpoint);
    }
    if satisfies(rights, entry.need) {
        Ok(())
    } else {
        Err(Denied::Missing(entry.need))
    }
}

/// Does `rights` meet `need`? (`Anonymous` is never met by an authenticated set.)
pub fn satisfies(rights: RightSet, need: Need) -> bool {
    match need {
        Need::Anonymous => false,
        Need::Authenticated => true,
        Need::Right(r) => rights.contains(r),
        Need::AnyOf(set) => rights.intersects(set),
    }
}

/// The right to name in `data.right` when `need` is missing.
pub fn named_right(need: Need) -> Option<Right> {
    match need {
        Need::Right(r) => Some(r),
        Need::AnyOf(set) => set.iter().next(),
        _ => None,
    }
}

impl Denied {
    /// The right a forbidden caller lacks (`None`: not a missing-right refusal).
    pub fn right(self) -> Option<Right> {
        match self {
            Denied::Missing(need) => named_right(need),
            Denied::WrongEndpoint => Some(Right::AdjunctServerConnection),
            Denied::NotAuthenticated | Denied::AlreadyAuthenticated => None,
        }
    }

    /// The wire answer for a refusal.
    pub fn to_error(self) -> RpcError {
        match self {
            Denied::NotAuthenticated => RpcError::new(Code::NotAuthenticated),
            Denied::AlreadyAuthenticated => {
                RpcError::with_message(Code::InvalidRequest, "already authenticated")
            }
            Denied::WrongEndpoint => RpcError::new(Code::Forbidden).with_data(serde_json::json!({
                "right": Right::AdjunctServerConnection.name(),
                "endpoint": "adjunct",
            })),
            Denied::Missing(need) => match need {
                Need::AnyOf(set) => RpcError::new(Code::Forbidden).with_data(serde_json::json!({
                    "right": named_right(need).map(Right::name),
                    "anyOf": set.names(),
                })),
                _ => match named_right(need) {
                    Some(r) => RpcError::forbidden(r),
                    None => RpcError::new(Code::Forbidden),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_are_unreachable() {
        let c = Catalog::default();
        assert_eq!(c.lookup("session.nope"), None);
        assert_eq!(c.lookup("admin"), None);
        assert_eq!(c.lookup("cti."), None);
        assert_eq!(c.lookup(""), None);
    }

    #[test]
    fn routed_namespaces_carry_their_right() {
        let c = Catalog::new(vec![(
            "voicemail".into(),
            Need::AnyOf(RightSet::of(Right::VoicemailProBasic).with(Right::VoicemailProStandard)),
        )]);
        let e = c.lookup("cti.make_call").unwrap();
        assert_eq!(e.target, Target::Routed("cti"));
        assert_eq!(e.need, Need::Right(Right::OneXCtiApi));
        let v = c.lookup("voicemail.list").unwrap();
        assert!(gate(
            &v,
            Some(RightSet::of(Right::VoicemailProStandard)),
            Endpoint::Portal
        )
        .is_ok());
        assert!(gate(&v, Some(RightSet::of(Right::OneXCtiApi)), Endpoint::Portal).is_err());
    }

    #[test]
    fn gate_before_and_after_login() {
        let c = Catalog::default();
        let login = c.lookup("session.login").unwrap();
        let ping = c.lookup("session.ping").unwrap();
        assert_eq!(gate(&login, None, Endpoint::Portal), Ok(()));
        assert_eq!(
            gate(&ping, None, Endpoint::Portal),
            Err(Denied::NotAuthenticated)
        );
        assert_eq!(
            gate(&login, Some(RightSet::EMPTY), Endpoint::Portal),
            Err(Denied::AlreadyAuthenticated)
        );
        assert_eq!(gate(&ping, Some(RightSet::EMPTY), Endpoint::Portal), Ok(()));
    }

    #[test]
    fn turn_needs_its_right_and_names_it() {
        let c = Catalog::default();
        let turn = c.lookup("turn.credentials").unwrap();
        let err = gate(
            &turn,
            Some(RightSet::of(Right::OneXCtiApi)),
            Endpoint::Portal,
        )
        .unwrap_err();
        let rpc = err.to_error();
        assert_eq!(rpc.code, Code::Forbidden);
        assert_eq!(rpc.data.unwrap()["right"], "TURN Server Connection");
    }

    #[test]
    fn admin_methods_need_the_management_rights() {
        let c = Catalog::default();
        for (method, right) in [
            ("admin.sessions.list", Right::ManagementApiRead),
            ("admin.config.reload", Right::ManagementApiWrite),
            ("admin.users.set_password", Right::WebControlSecurity),
            ("admin.users.unlock", Right::WebControlSecurity),
        ] {
            let e = c.lookup(method).unwrap();
            assert_eq!(e.need, Need::Right(right), "{method}");
            let Target::Local(m) = e.target else {
                panic!("{method} is routed")
            };
            assert_eq!(method_entry(m), (method, e.need));
        }
        assert_eq!(c.lookup("admin.nope"), None);
    }

    #[test]
    fn adjunct_methods_only_on_adjunct() {
        let c = Catalog::default();
        let reg = c.lookup("adjunct.register").unwrap();
        let asc = RightSet::of(Right::AdjunctServerConnection);
        assert_eq!(
            gate(&reg, Some(asc), Endpoint::Portal),
            Err(Denied::WrongEndpoint)
        );
        assert_eq!(gate(&reg, Some(asc), Endpoint::Adjunct), Ok(()));
    }
}

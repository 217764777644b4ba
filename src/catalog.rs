//! The catalog: which rights open each method, where it may be called, and
//! what serves it. Two data tables: the gateway's own methods (`METHODS`) and
//! the operations of each application behind it (`RULES`, method patterns
//! under one namespace per application, most specific wins), plus the rules
//! a config adds or replaces with `[[catalog]]`; topics are judged by the
//! same rules. `gate` is the one place that says yes or no; `doc` renders the
//! tables for people (docs/RIGHTS.md).
//!
//! Must not know about sockets, sessions or handlers' internals: the gate sees
//! a catalog entry, the caller's `RightSet` (none before login) and the endpoint.

pub mod doc;

use std::fmt;

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

// Reading is opened by the right that changes the same thing: Management
// API Write reads what it changes (and the revision every write needs).
const READ: Need = Need::AnyOf(rights(&[
    Right::ManagementApiRead,
    Right::ManagementApiWrite,
]));
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

/// The gateway's own methods with their entries, in table order.
pub fn local_entries() -> impl Iterator<Item = (&'static str, Entry<'static>)> {
    METHODS.iter().copied()
}

/// One rule of the built-in routed catalog: a method pattern and the rights
/// that open it, with what it opens in the telephone system's words and, where
/// the system's table is ambiguous, the choice made and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `ns.*` (every method of the namespace no more specific rule covers),
    /// `ns.prefix.*` (every method below the prefix) or an exact method.
    pub pattern: &'static str,
    pub any_of: RightSet,
    /// What it opens.
    pub opens: &'static str,
    /// The choice made where the table is ambiguous, and why ("" when none).
    pub choice: &'static str,
}

/// A set of rights, at compile time.
const fn rights(list: &[Right]) -> RightSet {
    let mut set = RightSet::EMPTY;
    let mut i = 0;
    while i < list.len() {
        set = set.with(list[i]);
        i += 1;
    }
    set
}

const fn rule(
    pattern: &'static str,
    any_of: &[Right],
    opens: &'static str,
    choice: &'static str,
) -> Rule {
    Rule {
        pattern,
        any_of: rights(any_of),
        opens,
        choice,
    }
}

/// The choice behind every namespace rule of an application.
const UNNAMED: &str = "An operation the grammar does not name counts as a configuration change, \
    so the rights that update the configuration open it and nothing wider does by accident; \
    a [[catalog]] rule can open it differently.";

use Right::{
    MediaManagerAdministrator as MMA, MediaManagerStandard as MMS, OneXPortalAdministrator as OXA,
    OneXPortalSuperUser as OXS, ReporterAdministrator as RA, VoicemailProAdministrator as VA,
    VoicemailProBasic as VB, VoicemailProStandard as VS, WebControlAdministrator as WCA,
    WebControlSecurity as WCS, WebRtcGatewayAdministrator as WRA,
};

/// The applications behind the gateway and their operations: the one table
/// (docs/RIGHTS.md is generated from it). Method grammar:
/// `<ns>.config.get` reads an application's configuration, `<ns>.config.set`
/// updates it, `<ns>.security.*` reads and updates its security settings,
/// `<ns>.backup.*` backs up and restores; the rest is per application.
/// Reading is opened by every right that updates the same thing.
pub const RULES: &[Rule] = &[
    rule(
        "cti.*",
        &[Right::OneXCtiApi],
        "one-X CTI commands and call events",
        "",
    ),
    // Voicemail Pro
    rule(
        "voicemail.*",
        &[VS, VA],
        "any other voicemail operation",
        UNNAMED,
    ),
    rule(
        "voicemail.config.get",
        &[VB, VS, VA],
        "read the voicemail configuration",
        "",
    ),
    rule(
        "voicemail.config.set",
        &[VS, VA],
        "update the voicemail configuration",
        "",
    ),
    rule(
        "voicemail.security.*",
        &[VA],
        "read and update the voicemail security settings",
        "Only Administrator updates them, so only Administrator reads them: \
         the table gives Basic and Standard no part of security.",
    ),
    rule(
        "voicemail.backup.*",
        &[VB, VS],
        "back up and restore the voicemail server",
        "Not Administrator: its row does not list backup, and the table keeps \
         administration and backup apart (one-X Portal says so outright); a group \
         with Administrator and Standard does both.",
    ),
    rule(
        "voicemail.upgrade.*",
        &[VB, VS],
        "upgrade the voicemail server",
        "Upgrade goes with backup and restore, as in the table.",
    ),
    // one-X Portal
    rule(
        "onex-portal.*",
        &[OXA],
        "any other one-X Portal operation",
        UNNAMED,
    ),
    rule(
        "onex-portal.config.get",
        &[OXA],
        "read the one-X Portal configuration",
        "Only Administrator updates it; Super User's row is backup and restore only.",
    ),
    rule(
        "onex-portal.config.set",
        &[OXA],
        "update the one-X Portal configuration",
        "",
    ),
    rule(
        "onex-portal.security.*",
        &[OXA],
        "read and update the one-X Portal security settings",
        "",
    ),
    rule(
        "onex-portal.backup.*",
        &[OXS],
        "back up and restore one-X Portal",
        "Not Administrator: the table says so.",
    ),
    // Web Control
    rule(
        "webcontrol.*",
        &[WCA],
        "any other Web Control operation",
        UNNAMED,
    ),
    rule(
        "webcontrol.config.get",
        &[WCA],
        "read the Web Control configuration settings",
        "",
    ),
    rule(
        "webcontrol.config.set",
        &[WCA],
        "update the Web Control configuration settings",
        "",
    ),
    rule(
        "webcontrol.security.*",
        &[WCS],
        "read and update the Web Control security settings",
        "Security only, not Administrator: the table gives the two rights separate halves. \
         For the gateway itself the same right opens admin.users.* and admin.groups.*.",
    ),
    // WebRTC Gateway
    rule(
        "webrtc.*",
        &[WRA],
        "any other WebRTC Gateway operation",
        UNNAMED,
    ),
    rule(
        "webrtc.config.get",
        &[WRA],
        "read the WebRTC Gateway configuration",
        "",
    ),
    rule(
        "webrtc.config.set",
        &[WRA],
        "update the WebRTC Gateway configuration",
        "",
    ),
    // Media Manager
    rule(
        "mediamanager.*",
        &[MMA],
        "any other Media Manager operation, its other settings included",
        "\"Configuration and settings\" are one area, config; any other settings \
         method counts as a configuration change (Administrator).",
    ),
    rule(
        "mediamanager.config.get",
        &[MMS, MMA],
        "read the Media Manager configuration",
        "",
    ),
    rule(
        "mediamanager.config.set",
        &[MMA],
        "update the Media Manager configuration and settings",
        "",
    ),
    rule(
        "mediamanager.recordings.*",
        &[MMS, MMA],
        "access the recordings",
        "Administrator too: access to all archived recordings includes the current ones.",
    ),
    rule(
        "mediamanager.archive.*",
        &[MMA],
        "access all archived recordings",
        "Administrator only: Standard's row says \"the recordings\", Administrator's \
         \"all archived recordings\".",
    ),
    // Contact reporter
    rule(
        "reporter.*",
        &[RA],
        "any other contact reporter operation",
        "The table gives only configuration access, so every reporter operation counts \
         as configuration.",
    ),
    rule(
        "reporter.config.get",
        &[RA],
        "read the contact reporter configuration",
        "",
    ),
    rule(
        "reporter.config.set",
        &[RA],
        "update the contact reporter configuration",
        "",
    ),
];

/// The routed namespaces every gateway has, in table order (config may add more).
pub fn builtin_namespaces() -> impl Iterator<Item = &'static str> {
    RULES
        .iter()
        .filter_map(|r| r.pattern.strip_suffix(".*"))
        .filter(|ns| !ns.contains('.'))
}

/// Namespaces of the gateway's own methods: never routed, never added by config.
pub const RESERVED: &[&str] = &["session", "turn", "adjunct", "events", "admin", "event"];

/// Longest method (or topic) accepted; a pattern's body (without `.*`)
/// is held to the same bound, so every pattern can match something.
pub const MAX_METHOD_LEN: usize = 128;

/// One segment of a method, topic or pattern: lowercase ASCII letters,
/// digits, `_` and `-`, at least one. Lowercase only, so one operation has
/// one spelling and no variant slips past the rule that names it.
pub fn valid_segment(seg: &str) -> bool {
    !seg.is_empty()
        && seg
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Is `name` a canonical method or topic name: at most [`MAX_METHOD_LEN`]
/// bytes, at least two segments, each a [`valid_segment`]? A routed method
/// that is not is unknown (-32601), whatever a rule's prefix would say.
pub fn canonical(name: &str) -> bool {
    name.len() <= MAX_METHOD_LEN && name.contains('.') && name.split('.').all(valid_segment)
}

/// A method pattern, parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Every method below this prefix; a namespace is the shortest prefix
    /// (`ns` and `ns.*` are the same pattern).
    Below(Box<str>),
    Exact(Box<str>),
}

impl Pattern {
    /// Parses `ns`, `ns.prefix.*` or `ns.method`: dot-separated
    /// [`valid_segment`]s (the grammar of methods), the last one possibly `*`.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let body = s.strip_suffix(".*");
        let segments = body.unwrap_or(s);
        let valid = segments.len() <= MAX_METHOD_LEN && segments.split('.').all(valid_segment);
        if !valid {
            return Err(format!(
                "{s:?} is not a method pattern: a namespace, a prefix ending in \".*\" or a method, \
                 made of lowercase letters, digits, '_' and '-' between dots (at most {MAX_METHOD_LEN} bytes)"
            ));
        }
        let ns = namespace_of(segments);
        if RESERVED.contains(&ns) {
            return Err(format!(
                "namespace {ns:?} is reserved for the gateway's own methods"
            ));
        }
        Ok(match body {
            Some(prefix) => Pattern::Below(prefix.into()),
            None if !s.contains('.') => Pattern::Below(s.into()),
            None => Pattern::Exact(s.into()),
        })
    }

    pub fn namespace(&self) -> &str {
        match self {
            Pattern::Below(p) | Pattern::Exact(p) => namespace_of(p),
        }
    }

    /// Does the pattern cover `method`? A class covers the methods below
    /// it and its own name too: `voicemail.security` is judged by
    /// `voicemail.security.*`, not by the wider namespace rule.
    pub fn matches(&self, method: &str) -> bool {
        match self {
            Pattern::Exact(m) => **m == *method,
            Pattern::Below(p) => method
                .strip_prefix(&**p)
                .is_some_and(|rest| rest.is_empty() || strictly_below(rest)),
        }
    }

    /// Is every method this pattern names strictly below `prefix`?
    fn is_below(&self, prefix: &str) -> bool {
        let (Pattern::Below(p) | Pattern::Exact(p)) = self;
        p.strip_prefix(prefix).is_some_and(strictly_below)
    }

    /// Larger is more specific: an exact method, then the longer prefix.
    fn specificity(&self) -> (bool, usize) {
        match self {
            Pattern::Exact(m) => (true, m.len()),
            Pattern::Below(p) => (false, p.len()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Below(p) => write!(f, "{p}.*"),
            Pattern::Exact(m) => f.write_str(m),
        }
    }
}

/// Is `rest` (what follows a prefix) `.` and at least one more character?
fn strictly_below(rest: &str) -> bool {
    rest.strip_prefix('.').is_some_and(|r| !r.is_empty())
}

fn namespace_of(s: &str) -> &str {
    s.split('.').next().unwrap_or_default()
}

/// What a topic concerns: `a.b.c` concerns `a.b` (its last segment
/// dropped), and a two-segment topic `a.b` concerns `a.b` itself, never the
/// whole namespace.
pub fn subject(topic: &str) -> &str {
    match topic.rsplit_once('.') {
        Some((head, _)) if head.contains('.') => head,
        _ => topic,
    }
}

/// The need of a rule: one right by itself (so refusals name just it), else any of them.
fn need_of(set: RightSet) -> Need {
    let mut it = set.iter();
    match (it.next(), it.next()) {
        (Some(r), None) => Need::Right(r),
        _ => Need::AnyOf(set),
    }
}

/// One rule in force: built in, built in and overridden by the config, or
/// added by the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRule {
    pub pattern: Pattern,
    pub any_of: RightSet,
    /// The built-in rule of the same pattern, if there is one.
    pub builtin: Option<&'static Rule>,
    /// The config replaced (or added) this rule.
    pub configured: bool,
}

/// The built-in rules with the `[[catalog]]` entries of the config applied.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// Most specific first, so the first match wins.
    rules: Vec<CatalogRule>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new(Vec::new())
    }
}

impl Catalog {
    /// `configured` replaces the built-in rule of the same pattern or adds a
    /// rule. Config validates the entries (no duplicates, none with no right).
    pub fn new(configured: Vec<(Pattern, RightSet)>) -> Self {
        let mut rules: Vec<CatalogRule> = RULES
            .iter()
            .filter_map(|r| {
                Some(CatalogRule {
                    pattern: Pattern::parse(r.pattern).ok()?,
                    any_of: r.any_of,
                    builtin: Some(r),
                    configured: false,
                })
            })
            .collect();
        for (pattern, any_of) in configured {
            match rules.iter_mut().find(|r| r.pattern == pattern) {
                Some(r) => {
                    r.any_of = any_of;
                    r.configured = true;
                }
                None => rules.push(CatalogRule {
                    pattern,
                    any_of,
                    builtin: None,
                    configured: true,
                }),
            }
        }
        // Stable: equally specific rules keep table order (they never overlap).
        rules.sort_by_key(|r| std::cmp::Reverse(r.pattern.specificity()));
        Catalog { rules }
    }

    /// Every rule in force, most specific first.
    pub fn rules(&self) -> &[CatalogRule] {
        &self.rules
    }

    /// The rule that governs a routed `method`: the most specific match.
    pub fn rule_for(&self, method: &str) -> Option<&CatalogRule> {
        self.rules.iter().find(|r| r.pattern.matches(method))
    }

    /// The built-in rule that governs `pattern`'s methods without the config:
    /// what a configured rule of that pattern would override or narrow.
    pub fn builtin_under(pattern: &Pattern) -> Option<&'static Rule> {
        let (Pattern::Below(p) | Pattern::Exact(p)) = pattern;
        let default = Catalog::default();
        let own = default.rules.iter().find(|r| r.pattern == *pattern);
        own.or_else(|| default.rule_for(p)).and_then(|r| r.builtin)
    }

    /// The need to register for `ns`: a right that opens some operation of
    /// it. What a provider then receives is judged request by request, by
    /// each method's own rule (`lookup`). `None`: not a routed namespace.
    pub fn provider_need(&self, ns: &str) -> Option<Need> {
        let mut found = false;
        let set = self
            .rules
            .iter()
            .filter(|r| r.pattern.namespace() == ns)
            .inspect(|_| found = true)
            .fold(RightSet::EMPTY, |s, r| s.union(r.any_of));
        found.then(|| need_of(set))
    }

    /// The need to receive events on `topic` (a topic, or a pattern ending in
    /// `.*`). A topic concerns its [`subject`], so it is read like the method
    /// `<subject>.get`. A pattern needs a right that reads some topic below it
    /// (each event is checked again on delivery). `None`: no rule covers it.
    pub fn topic_need(&self, topic: &str) -> Option<Need> {
        let set =
            match topic.strip_suffix(".*") {
                None => self.rule_for(&format!("{}.get", subject(topic)))?.any_of,
                Some(prefix) => {
                    // Topics right below `prefix`, topics deeper down that no rule
                    // under it covers, and the rules under it.
                    let near = [format!("{prefix}.get"), format!("{prefix}.*.get")];
                    let mut covered = false;
                    let mut set = RightSet::EMPTY;
                    for rule in near.iter().filter_map(|m| self.rule_for(m)).chain(
                        self.rules.iter().filter(|r| {
                            r.pattern.is_below(prefix)
                                && match &r.pattern {
                                    Pattern::Exact(m) => m.ends_with(".get"),
                                    Pattern::Below(_) => true,
                                }
                        }),
                    ) {
                        covered = true;
                        set = set.union(rule.any_of);
                    }
                    if !covered {
                        return None;
                    }
                    set
                }
            };
        Some(need_of(set))
    }

    /// The need to publish on `topic` (a valid concrete topic): the right
    /// that updates what it concerns, what the method `<subject>.set` needs
    /// (`cti.call.201`: `cti.call.set`). `None`: no rule covers it.
    pub fn publish_need(&self, topic: &str) -> Option<Need> {
        let rule = self.rule_for(&format!("{}.set", subject(topic)))?;
        Some(need_of(rule.any_of))
    }

    /// The entry for `method`, or `None`: -32601. A routed method must be
    /// [`canonical`]; its need is its own rule's, which is also what the
    /// provider that serves it must hold.
    pub fn lookup<'m>(&self, method: &'m str) -> Option<Entry<'m>> {
        if let Some((_, entry)) = METHODS.iter().find(|(name, _)| *name == method) {
            return Some(*entry);
        }
        let ns = namespace_of(method);
        if RESERVED.contains(&ns) || !canonical(method) {
            return None;
        }
        self.rule_for(method).map(|rule| Entry {
            need: need_of(rule.any_of),
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

    fn set(list: &[Right]) -> RightSet {
        list.iter().copied().collect()
    }

    /// The rights that meet `need` each alone (none when there is no need).
    fn met_alone(need: Option<Need>) -> RightSet {
        match need {
            Some(need) => Right::all()
                .filter(|r| satisfies(RightSet::of(*r), need))
                .collect(),
            None => RightSet::EMPTY,
        }
    }

    #[test]
    fn routed_namespaces_carry_their_right() {
        let c = Catalog::new(vec![(
            Pattern::parse("crm").unwrap(),
            set(&[Right::VoicemailProBasic, Right::VoicemailProStandard]),
        )]);
        let e = c.lookup("cti.make_call").unwrap();
        assert_eq!(e.target, Target::Routed("cti"));
        assert_eq!(e.need, Need::Right(Right::OneXCtiApi));
        let v = c.lookup("crm.list").unwrap();
        assert_eq!(v.target, Target::Routed("crm"));
        let standard = Some(RightSet::of(Right::VoicemailProStandard));
        assert!(gate(&v, standard, Endpoint::Portal).is_ok());
        assert!(gate(&v, Some(RightSet::of(Right::OneXCtiApi)), Endpoint::Portal).is_err());
        assert_eq!(c.lookup("nope.list"), None);
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let c = Catalog::default();
        let need = |m: &str| c.lookup(m).map(|e| e.need);
        use Right::*;
        assert_eq!(
            need("voicemail.config.get"),
            Some(Need::AnyOf(set(&[
                VoicemailProBasic,
                VoicemailProStandard,
                VoicemailProAdministrator
            ])))
        );
        assert_eq!(
            need("voicemail.config.set"),
            Some(Need::AnyOf(set(&[
                VoicemailProStandard,
                VoicemailProAdministrator
            ])))
        );
        // Not named by the grammar: the namespace rule.
        assert_eq!(
            need("voicemail.config.delete"),
            need("voicemail.config.set")
        );
        assert_eq!(
            need("voicemail.security.get"),
            Some(Need::Right(VoicemailProAdministrator))
        );
        assert_eq!(
            need("mediamanager.archive.2024.list"),
            Some(Need::Right(MediaManagerAdministrator))
        );
        assert_eq!(need("voicemail"), None);
        assert_eq!(need("voicemail."), None);
        // Non-canonical spellings name no operation (they used to fall to
        // the wider namespace rule).
        for odd in [
            "voicemail.backup.",
            "voicemail.security.",
            "voicemail.Security.set",
            "voicemail.BACKUP.create",
            "voicemail..security.set",
            "voicemail.security .set",
            "Voicemail.config.get",
        ] {
            assert_eq!(need(odd), None, "{odd:?}");
        }
        let long = format!("voicemail.{}", "x".repeat(MAX_METHOD_LEN - 10));
        assert_eq!(long.len(), MAX_METHOD_LEN);
        assert!(need(&long).is_some());
        assert_eq!(need(&format!("{long}x")), None);
        // A class's own name is judged by the class's rule.
        assert_eq!(need("voicemail.security"), need("voicemail.security.get"));
        assert_eq!(need("voicemail.backup"), need("voicemail.backup.create"));
        assert_eq!(need("voicemail.config"), need("voicemail.config.delete"));

        // A configured prefix does not reach past a built-in exact method.
        let c = Catalog::new(vec![(
            Pattern::parse("voicemail.config.*").unwrap(),
            RightSet::of(VoicemailProAdministrator),
        )]);
        let need = |m: &str| c.lookup(m).map(|e| e.need);
        assert_eq!(
            need("voicemail.config.other"),
            Some(Need::Right(VoicemailProAdministrator))
        );
        assert_eq!(
            need("voicemail.config.get"),
            Catalog::default()
                .lookup("voicemail.config.get")
                .map(|e| e.need)
        );
    }

    #[test]
    fn patterns_parse_and_normalize() {
        assert_eq!(Pattern::parse("cti.*"), Pattern::parse("cti"));
        assert_eq!(Pattern::parse("a.b.*").unwrap().to_string(), "a.b.*");
        assert_eq!(Pattern::parse("a.b").unwrap(), Pattern::Exact("a.b".into()));
        let long = "a".repeat(MAX_METHOD_LEN + 1);
        for bad in [
            "", "*", "a.*.b", "a..b", "a.", ".a", "a b", "events.x", "admin", "CRM", "crm.List",
            &long,
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_need_the_right_that_reads_what_they_concern() {
        let c = Catalog::default();
        use Right::*;
        let reads = |t: &str| met_alone(c.topic_need(t));
        let vb_vs_va = set(&[
            VoicemailProBasic,
            VoicemailProStandard,
            VoicemailProAdministrator,
        ]);
        assert_eq!(reads("voicemail.config.changed"), vb_vs_va);
        assert_eq!(
            reads("voicemail.security.changed"),
            RightSet::of(VoicemailProAdministrator)
        );
        assert_eq!(
            reads("voicemail.backup.done"),
            set(&[VoicemailProBasic, VoicemailProStandard])
        );
        assert_eq!(reads("voicemail.*"), vb_vs_va);
        assert_eq!(
            reads("voicemail.security.*"),
            RightSet::of(VoicemailProAdministrator)
        );
        assert_eq!(reads("cti.call.201"), RightSet::of(OneXCtiApi));
        assert_eq!(reads("cti.*"), RightSet::of(OneXCtiApi));
        assert_eq!(
            reads("mediamanager.recordings.new"),
            set(&[MediaManagerStandard, MediaManagerAdministrator])
        );
        assert_eq!(reads("nope.x"), RightSet::EMPTY);
        // A two-segment topic concerns itself, not its namespace.
        assert_eq!(
            reads("voicemail.security"),
            RightSet::of(VoicemailProAdministrator)
        );
        assert_eq!(reads("voicemail.config"), vb_vs_va);
    }

    #[test]
    fn publishing_needs_the_right_that_updates_what_the_topic_concerns() {
        let c = Catalog::default();
        use Right::*;
        let writes = |t: &str| met_alone(c.publish_need(t));
        assert_eq!(writes("cti.call.201"), RightSet::of(OneXCtiApi));
        assert_eq!(
            writes("voicemail.config.changed"),
            set(&[VoicemailProStandard, VoicemailProAdministrator])
        );
        assert_eq!(
            writes("voicemail.security.changed"),
            RightSet::of(VoicemailProAdministrator)
        );
        assert_eq!(
            writes("voicemail.security"),
            RightSet::of(VoicemailProAdministrator)
        );
        assert_eq!(
            writes("voicemail.backup.done"),
            set(&[VoicemailProBasic, VoicemailProStandard])
        );
        assert_eq!(
            writes("mediamanager.recordings.new"),
            set(&[MediaManagerStandard, MediaManagerAdministrator])
        );
        assert_eq!(writes("nope.x"), RightSet::EMPTY);
    }

    #[test]
    fn canonical_names_and_subjects() {
        for good in ["cti.x", "a-b.c_d.9", "voicemail.security"] {
            assert!(canonical(good), "{good:?}");
        }
        for bad in [
            "", "cti", "cti.", ".cti", "cti..x", "Cti.x", "cti.x y", "cti.é",
        ] {
            assert!(!canonical(bad), "{bad:?}");
        }
        assert_eq!(subject("cti.call.201"), "cti.call");
        assert_eq!(subject("cti.call.201.leg"), "cti.call.201");
        assert_eq!(subject("voicemail.security"), "voicemail.security");
    }

    #[test]
    fn a_provider_needs_a_right_that_opens_some_operation() {
        let c = Catalog::default();
        use Right::*;
        assert_eq!(
            c.provider_need("onex-portal"),
            Some(Need::AnyOf(set(&[
                OneXPortalAdministrator,
                OneXPortalSuperUser
            ])))
        );
        assert_eq!(c.provider_need("cti"), Some(Need::Right(OneXCtiApi)));
        assert_eq!(c.provider_need("admin"), None);
        let names: Vec<_> = builtin_namespaces().collect();
        assert_eq!(
            names,
            [
                "cti",
                "voicemail",
                "onex-portal",
                "webcontrol",
                "webrtc",
                "mediamanager",
                "reporter"
            ]
        );
    }

    #[test]
    fn every_builtin_rule_parses_once_and_opens_something() {
        let mut seen = std::collections::HashSet::new();
        for r in RULES {
            let p = Pattern::parse(r.pattern).unwrap();
            assert_eq!(p.to_string(), r.pattern);
            assert!(seen.insert(p), "{} twice", r.pattern);
            assert!(!r.any_of.is_empty(), "{}", r.pattern);
        }
        assert_eq!(Catalog::default().rules().len(), RULES.len());
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
        // Reading is implied by the right that changes the same thing.
        let read = Need::AnyOf(set(&[Right::ManagementApiRead, Right::ManagementApiWrite]));
        for (method, need) in [
            ("admin.sessions.list", read),
            ("admin.config.get", read),
            (
                "admin.config.reload",
                Need::Right(Right::ManagementApiWrite),
            ),
            (
                "admin.users.set_password",
                Need::Right(Right::WebControlSecurity),
            ),
            ("admin.users.unlock", Need::Right(Right::WebControlSecurity)),
        ] {
            let e = c.lookup(method).unwrap();
            assert_eq!(e.need, need, "{method}");
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

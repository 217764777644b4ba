//! The TOML configuration: its model, its defaults, and validation that
//! reports `file:line: problem`.
//!
//! Owns parsing and checking only; it produces a validated `Config` and never
//! touches sockets or live sessions. Secrets read here (TURN secrets, static
//! TURN password) are never printed: errors name the key, never the value.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{Catalog, Pattern};
use crate::rights::{Right, RightSet};

/// A config problem, located where we can.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    tls: TlsSection,
    #[serde(default)]
    rights_group: Vec<GroupSection>,
    #[serde(default)]
    service_user: Vec<UserSection>,
    #[serde(default)]
    network_topology: TopologySection,
    #[serde(default)]
    turn: TurnSection,
    #[serde(default)]
    portal: PortalSection,
    #[serde(default)]
    adjunct: AdjunctSection,
    #[serde(default)]
    catalog: Vec<CatalogSection>,
    #[serde(default)]
    routing: RoutingSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    security: Security,
    #[serde(default)]
    admin: AdminSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    cluster: ClusterSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: Spanned<String>,
    heartbeat_secs: u64,
    auth_timeout_secs: u64,
    max_message_bytes: usize,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: Spanned::new(0..0, "127.0.0.1:8443".into()),
            heartbeat_secs: 30,
            auth_timeout_secs: 10,
            max_message_bytes: 65536,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Spanned<PathBuf>,
    key: Spanned<PathBuf>,
    /// CA bundle (PEM) for optional client certificates on /adjunct.
    client_ca: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSection {
    name: Spanned<String>,
    #[serde(default)]
    rights: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    name: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    /// Client certificate that authenticates this user by itself (mutual
    /// TLS): its subject CN, or `sha256:` and the hex SHA-256 fingerprint.
    client_cert: Option<Spanned<String>>,
    /// Bumped when the user is disabled: resume tokens issued before are
    /// void for good, even after the user is enabled again.
    #[serde(default)]
    token_generation: u64,
}

/// An ICE server URL as browsers take it (RFC 7064/7065): one of `schemes`,
/// then a host, an optional port and, for TURN, an optional `?transport=`;
/// printable ASCII only, no spaces or controls, at most 256 bytes. Anything
/// else would be handed to every User Portal page as it is.
fn ice_url(url: &str, schemes: [&str; 2]) -> Result<(), String> {
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(format!("must start with {} or {}", schemes[0], schemes[1]));
    };
    if url.len() > 256 || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be at most 256 printable ASCII characters, without spaces".into());
    }
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    if hostport.is_empty() || hostport.contains(['/', '@', '#']) {
        return Err("must be scheme:host[:port] (no path, user or fragment)".into());
    }
    if !query.is_empty() && query != "transport=udp" && query != "transport=tcp" {
        return Err("may only end in ?transport=udp or ?transport=tcp".into());
    }
    Ok(())
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Default, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TopologySection {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TurnMode {
    #[default]
    Rest,
    Static,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TurnSection {
    mode: Spanned<TurnMode>,
    secrets: Vec<String>,
    secrets_file: Option<Spanned<PathBuf>>,
    ttl_secs: u64,
    max_ttl_secs: u64,
    opaque_usernames: bool,
    service_user: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
}

impl Default for TurnSection {
    fn default() -> Self {
        TurnSection {
            mode: Spanned::new(0..0, TurnMode::Rest),
            secrets: Vec::new(),
            secrets_file: None,
            ttl_secs: 3600,
            max_ttl_secs: 86400,
            opaque_usernames: false,
            service_user: None,
            password_file: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct PortalSection {
    pub allowed_origins: Vec<String>,
    pub demo_page: bool,
    /// Serve the administrative page at `GET /admin`.
    pub admin_page: bool,
}

impl Default for PortalSection {
    fn default() -> Self {
        PortalSection {
            allowed_origins: Vec::new(),
            demo_page: true,
            admin_page: true,
        }
    }
}

/// `[adjunct]`: what the /adjunct endpoint accepts beyond credentials.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdjunctSection {
    /// Browser origins allowed to open /adjunct; a request without `Origin`
    /// (an application server) is always allowed, any other is refused.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogSection {
    /// A namespace (the older spelling of `method = "ns"`).
    namespace: Option<Spanned<String>>,
    /// A method pattern: a namespace, a prefix ending in `.*`, or a method.
    method: Option<Spanned<String>>,
    any_of: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub request_timeout_ms: u64,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            request_timeout_ms: 5000,
        }
    }
}

/// `[limits]`: every bound the gateway enforces, with its default.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Connections in total (TLS and WebSocket); past it new ones get 503.
    pub max_connections: usize,
    /// Connections from one source address.
    pub max_connections_per_ip: usize,
    /// Connections not yet authenticated (includes TLS and upgrade in progress).
    pub max_unauthenticated: usize,
    /// Connections not yet authenticated from one source (an IPv6 /64 is one).
    pub max_unauthenticated_per_ip: usize,
    /// A connection whose first byte (the TLS ClientHello) has not arrived
    /// this long after accept is dropped.
    pub first_byte_timeout_secs: u64,
    /// Deadline for the TLS handshake plus the HTTP upgrade request.
    pub handshake_timeout_secs: u64,
    /// Largest HTTP request head accepted (431 above).
    pub max_header_bytes: usize,
    /// Elements in one JSON-RPC batch.
    pub max_batch: usize,
    /// Routed requests one session may have waiting for providers.
    pub max_pending_per_session: usize,
    /// Routed requests waiting to be written to one provider; past it the
    /// caller gets -32004 "provider busy", and a provider that stays full
    /// for `stalled_close_secs` is closed (1008).
    pub provider_queue: usize,
    /// Messages waiting to be written to one session (events past it are dropped).
    pub outbound_queue: usize,
    /// Bytes waiting to be written to one session (events and routed
    /// requests); past it they are refused like past the message bounds.
    pub queue_bytes: usize,
    /// A subscriber that keeps dropping events, or a provider whose request
    /// queue stays full, this long is closed (1008).
    pub stalled_close_secs: u64,
    /// A write that waits this long on a peer that reads nothing drops the
    /// connection (no close frame can get through).
    pub write_stall_secs: u64,
    /// Topic patterns one session may subscribe to.
    pub max_subscriptions: usize,
    /// Authenticated sessions of one service user.
    pub max_connections_per_user: usize,
    /// Requests per second one session may send on average (token bucket).
    pub requests_per_sec: u32,
    /// Requests one session may send in a burst above the average.
    pub request_burst: u32,
    /// A session rate-limited this many times in a row is closed (1008).
    pub rate_limited_close_after: u32,
    /// Deepest JSON nesting accepted in a request.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_connections_per_ip: 50_000,
            max_unauthenticated: 10_000,
            max_unauthenticated_per_ip: 64,
            first_byte_timeout_secs: 3,
            handshake_timeout_secs: 10,
            max_header_bytes: 16 * 1024,
            max_batch: 32,
            max_pending_per_session: 64,
            provider_queue: 4096,
            outbound_queue: 256,
            queue_bytes: 4 << 20,
            stalled_close_secs: 30,
            write_stall_secs: 30,
            max_subscriptions: 256,
            max_connections_per_user: 20_000,
            requests_per_sec: 1000,
            request_burst: 2000,
            rate_limited_close_after: 1000,
            max_json_depth: 32,
        }
    }
}

/// The system's password complexity levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Complexity {
    Low,
    Medium,
    High,
}

/// `[security]`: brute-force protection, resume tokens, the administrator.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// Failed logins for one account from one source address inside
    /// `reject_window_secs` that lock the account for that address.
    pub reject_limit: u32,
    pub reject_window_secs: u64,
    /// How long a locked (account, address) pair stays locked.
    pub lockout_secs: u64,
    /// Failed logins for one account from all addresses after which each
    /// further password attempt on it waits before it is checked.
    pub account_delay_after: u32,
    /// The longest such wait (it doubles from 250 ms); 0: no waits.
    pub account_delay_max_ms: u64,
    /// Failed logins from one address in a minute before its upgrades get 429.
    pub ip_reject_limit: u32,
    /// How long such an address keeps getting 429.
    pub ip_block_secs: u64,
    /// Password checks one source address may have in progress at once.
    pub max_verifying_per_ip: u32,
    /// Lifetime of a resume token.
    pub resume_token_secs: u64,
    /// The resume-token signing key (created 0600 on first start).
    pub resume_key_file: PathBuf,
    /// The built-in administrator account (the Server Administrator).
    pub administrator: String,
    /// Complexity rule for passwords set through the Management API.
    pub password_complexity: Complexity,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            reject_limit: 5,
            reject_window_secs: 600,
            lockout_secs: 600,
            account_delay_after: 10,
            account_delay_max_ms: 5000,
            ip_reject_limit: 20,
            ip_block_secs: 300,
            max_verifying_per_ip: 4,
            resume_token_secs: 86400,
            resume_key_file: PathBuf::from("resume.key"),
            administrator: "admin".into(),
            password_complexity: Complexity::Medium,
        }
    }
}

/// `[admin]`: the operator listener (metrics), never the public port.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Address of the metrics listener; an empty string turns it off.
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9464".into(),
        }
    }
}

/// `[cluster]`: how this node reaches the other nodes through NATS
/// (docs/CLUSTER.md). Node-local; never shared and never logged whole.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// NATS server URLs (`nats://` or `tls://`); empty: a single node.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster (default: the host name).
    pub node: String,
    /// Subject and bucket prefix, so several clusters can share one NATS.
    pub prefix: String,
    /// NATS user name (with `nats_password_file`).
    pub nats_user: Option<String>,
    /// File holding the NATS password (relative to the config file).
    pub nats_password_file: Option<PathBuf>,
    /// A NATS `.creds` file (JWT and NKey seed).
    pub nats_creds_file: Option<PathBuf>,
    /// CA certificate(s) that sign the NATS servers' certificates.
    pub nats_ca: Option<PathBuf>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            nats: Vec::new(),
            node: host_name(),
            prefix: "agw".into(),
            nats_user: None,
            nats_password_file: None,
            nats_creds_file: None,
            nats_ca: None,
        }
    }
}

/// The host name (Linux), or "gateway".
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into())
}

/// A NATS subject token or bucket-name part: letters, digits, `-`, `_`.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `[audit]`: the security audit trail as JSON lines.
#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// File to append to (relative to the config file); none: log only.
    pub file: Option<PathBuf>,
    /// Rotate when the file reaches this size.
    pub max_bytes: u64,
    /// Rotated files kept (audit.log.1 … audit.log.N).
    pub keep: u32,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            file: None,
            max_bytes: 16 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// A rights group after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub rights: RightSet,
}

/// A service user after validation. `password` is a PHC string (never shown).
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub password: String,
    pub groups: Vec<String>,
    pub enabled: bool,
    /// Mutual TLS identity: a subject CN, or `sha256:<hex>` (lower case).
    pub client_cert: Option<String>,
    /// Resume tokens of an earlier generation are void (see `UserSection`).
    pub token_generation: u64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("groups", &self.groups)
            .field("enabled", &self.enabled)
            .field("client_cert", &self.client_cert)
            .field("token_generation", &self.token_generation)
            .finish()
    }
}

/// TURN settings after validation; secrets never print.
#[derive(Clone)]
pub struct TurnConfig {
    pub mode: TurnMode,
    pub secrets: Vec<String>,
    pub ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub opaque_usernames: bool,
    /// Static mode: the account coturn knows, and its TURN password.
    pub static_user: Option<(String, String)>,
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("mode", &self.mode)
            .field(
                "secrets",
                &format_args!("<{} redacted>", self.secrets.len()),
            )
            .field("ttl_secs", &self.ttl_secs)
            .field("max_ttl_secs", &self.max_ttl_secs)
            .field("opaque_usernames", &self.opaque_usernames)
            .field("static_user", &self.static_user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub listen: SocketAddr,
    pub heartbeat_secs: u64,
    pub auth_timeout_secs: u64,
    pub max_message_bytes: usize,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub groups: Vec<Group>,
    pub users: Vec<User>,
    pub topology: TopologySection,
    pub turn: TurnConfig,
    pub portal: PortalSection,
    pub adjunct: AdjunctSection,
    pub catalog: Catalog,
    pub routing: RoutingSection,
    pub limits: Limits,
    pub tls_client_ca: Option<PathBuf>,
    pub security: Security,
    pub admin: AdminSection,
    pub audit: AuditSection,
    pub cluster: ClusterSection,
    /// The text this config was read from, and its revision.
    pub source: Source,
}

/// The text a config was validated from and its revision: what the
/// Management API edits and what its writers must name to avoid lost
/// updates. Never printed: the text holds password hashes and secrets.
#[derive(Clone)]
pub struct Source {
    text: std::sync::Arc<str>,
    revision: String,
}

impl Source {
    pub fn new(text: &str) -> Source {
        Source {
            text: std::sync::Arc::from(text),
            revision: revision_of(text),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// See [`revision_of`].
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// In a cluster the revision is the shared configuration's revision
    /// in NATS, not a hash of the text.
    pub fn set_revision(&mut self, revision: String) {
        self.revision = revision;
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// The revision of a config text: the first 16 hex digits of its SHA-256.
/// A content hash rather than a counter, so it survives restarts and an
/// edit by hand changes it too.
pub fn revision_of(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    crate::util::hex(&digest[..8])
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (relative paths resolve beside it).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let v = Validator { path, text };
        let raw: FileConfig = toml::from_str(text)
            .map_err(|e| v.err(e.span().map(|s| s.start), redact_values(e.message())))?;
        v.build(raw)
    }

    /// Is `name` the built-in administrator account (the Server Administrator)?
    pub fn is_administrator(&self, name: &str) -> bool {
        !self.security.administrator.is_empty() && self.security.administrator == name
    }

    /// The rights of the group named `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// A user's effective rights: the union over its groups; every right
    /// for the built-in administrator (`[security] administrator`).
    pub fn rights_of(&self, user: &User) -> RightSet {
        if self.is_administrator(&user.name) {
            return RightSet::ALL;
        }
        user.groups
            .iter()
            .filter_map(|g| self.group(g))
            .fold(RightSet::EMPTY, |acc, g| acc.union(g.rights))
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Validator<'_> {
    fn err(&self, offset: Option<usize>, message: impl fmt::Display) -> ConfigError {
        let line = offset.map(|o| {
            let upto = self
                .text
                .as_bytes()
                .get(..o)
                .unwrap_or(self.text.as_bytes());
            upto.iter().filter(|b| **b == b'\n').count() + 1
        });
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            message: message.to_string().trim_end().to_owned(),
        }
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl fmt::Display) -> ConfigError {
        let span = s.span();
        self.err((span.end > 0).then_some(span.start), message)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn right(&self, name: &Spanned<String>) -> Result<Right, ConfigError> {
        Right::from_name(name.get_ref())
            .ok_or_else(|| self.at(name, format!("unknown service right {:?}", name.get_ref())))
    }

    /// The `[[catalog]]` entries applied to the built-in catalog. Each may
    /// add a namespace or a rule, or replace a built-in rule of the same
    /// pattern; none may leave an operation reachable by no right.
    fn catalog(&self, entries: &[CatalogSection]) -> Result<Catalog, ConfigError> {
        let mut rules = Vec::new();
        let mut seen = HashSet::new();
        for c in entries {
            let text = match (&c.namespace, &c.method) {
                (Some(ns), None) if ns.get_ref().contains('.') => {
                    return Err(self.at(
                        ns,
                        format!("catalog namespace {:?}: a namespace has no dot (use method = for a pattern)", ns.get_ref()),
                    ))
                }
                (Some(t), None) | (None, Some(t)) => t,
                (Some(_), Some(_)) | (None, None) => {
                    return Err(self.err(
                        c.any_of.first().map(|r| r.span().start),
                        "a [[catalog]] entry names exactly one of method or namespace",
                    ))
                }
            };
            let pattern = Pattern::parse(text.get_ref())
                .map_err(|e| self.at(text, format!("catalog: {e}")))?;
            if !seen.insert(pattern.clone()) {
                return Err(self.at(
                    text,
                    format!("catalog: {pattern} is already defined by another entry"),
                ));
            }
            if c.any_of.is_empty() {
                let message = match Catalog::builtin_under(&pattern) {
                    Some(b) => format!(
                        "catalog {pattern}: any_of is empty, which would make the built-in operation {} reachable by no right",
                        b.pattern
                    ),
                    None => format!("catalog {pattern}: any_of is empty"),
                };
                return Err(self.at(text, message));
            }
            let set = c
                .any_of
                .iter()
                .map(|r| self.right(r))
                .collect::<Result<RightSet, _>>()?;
            rules.push((pattern, set));
        }
        Ok(Catalog::new(rules))
    }

    fn build(&self, raw: FileConfig) -> Result<Config, ConfigError> {
        let s = &raw.server;
        let listen: SocketAddr = s.listen.get_ref().parse().map_err(|_| {
            self.at(
                &s.listen,
                format!("listen: {:?} is not an address:port", s.listen.get_ref()),
            )
        })?;
        if s.heartbeat_secs == 0 || s.auth_timeout_secs == 0 {
            return Err(self.err(
                None,
                "[server] heartbeat_secs and auth_timeout_secs must be at least 1",
            ));
        }
        if !(256..=16 * 1024 * 1024).contains(&s.max_message_bytes) {
            return Err(self.err(
                None,
                "[server] max_message_bytes must be between 256 and 16777216",
            ));
        }

        let mut groups: Vec<Group> = Vec::new();
        for g in &raw.rights_group {
            if g.name.get_ref().trim().is_empty() {
                return Err(self.at(&g.name, "rights group name is empty"));
            }
            if groups.iter().any(|x| x.name == *g.name.get_ref()) {
                return Err(self.at(
                    &g.name,
                    format!("duplicate rights group {:?}", g.name.get_ref()),
                ));
            }
            let rights = g
                .rights
                .iter()
                .map(|r| self.right(r))
                .collect::<Result<RightSet, _>>()?;
            groups.push(Group {
                name: g.name.get_ref().clone(),
                rights,
            });
        }

        let mut users: Vec<User> = Vec::new();
        for u in &raw.service_user {
            let name = u.name.get_ref();
            if !valid_user_name(name) {
                return Err(self.at(&u.name, "service user name must be 1-64 printable characters without spaces at the ends"));
            }
            if users.iter().any(|x| x.name == *name) {
                return Err(self.at(&u.name, format!("duplicate service user {name:?}")));
            }
            let hash = argon2::PasswordHash::new(u.password.get_ref())
                .ok()
                .filter(|h| h.algorithm.as_str().starts_with("argon2"));
            let Some(hash) = hash else {
                // Never echo the value: it may be a plaintext password typed by mistake.
                return Err(self.at(&u.password, format!("service user {name:?}: password is not an argon2 PHC hash string (make one with `adjunct-gateway hash-password`)")));
            };
            if let Err(why) = argon2_params(&hash) {
                return Err(self.at(&u.password, format!("service user {name:?}: password hash cost out of bounds: {why} (make one with `adjunct-gateway hash-password`)")));
            }
            for g in &u.groups {
                if !groups.iter().any(|x| x.name == *g.get_ref()) {
                    return Err(self.at(
                        g,
                        format!(
                            "service user {name:?}: unknown rights group {:?}",
                            g.get_ref()
                        ),
                    ));
                }
            }
            users.push(User {
                name: name.clone(),
                password: u.password.get_ref().clone(),
                groups: u.groups.iter().map(|g| g.get_ref().clone()).collect(),
                enabled: u.enabled,
                token_generation: u.token_generation,
                client_cert: match &u.client_cert {
                    Some(c) => Some(self.client_cert(c, name)?),
                    None => None,
                },
            });
        }

        let catalog = self.catalog(&raw.catalog)?;

        let turn = self.turn(
            &raw.turn,
            raw.network_topology.turn_urls.is_empty(),
            &groups,
            &users,
        )?;
        for (key, urls, schemes) in [
            (
                "stun_urls",
                &raw.network_topology.stun_urls,
                ["stun:", "stuns:"],
            ),
            (
                "turn_urls",
                &raw.network_topology.turn_urls,
                ["turn:", "turns:"],
            ),
        ] {
            for url in urls {
                if let Err(why) = ice_url(url, schemes) {
                    return Err(self.err(None, format!("[network_topology] {key}: {url:?} {why}")));
                }
            }
        }
        let l = &raw.limits;
        if l.max_batch == 0
            || l.outbound_queue < 8
            || l.provider_queue < 8
            || l.queue_bytes < 64 * 1024
            || l.handshake_timeout_secs == 0
            || l.write_stall_secs == 0
            || l.max_header_bytes < 1024
        {
            return Err(self.err(None, "[limits]: max_batch >= 1, outbound_queue >= 8, provider_queue >= 8, queue_bytes >= 65536, handshake_timeout_secs >= 1, write_stall_secs >= 1, max_header_bytes >= 1024"));
        }
        if l.requests_per_sec == 0 || l.request_burst == 0 || l.max_json_depth < 2 {
            return Err(self.err(
                None,
                "[limits]: requests_per_sec >= 1, request_burst >= 1, max_json_depth >= 2",
            ));
        }
        if l.max_unauthenticated_per_ip == 0
            || l.first_byte_timeout_secs == 0
            || l.first_byte_timeout_secs > l.handshake_timeout_secs
        {
            return Err(self.err(
                None,
                "[limits]: max_unauthenticated_per_ip >= 1, first_byte_timeout_secs between 1 and handshake_timeout_secs",
            ));
        }
        let sec = &raw.security;
        if sec.reject_limit == 0
            || sec.reject_window_secs == 0
            || sec.ip_reject_limit == 0
            || sec.resume_token_secs == 0
            || sec.account_delay_after == 0
            || sec.max_verifying_per_ip == 0
        {
            return Err(self.err(None, "[security]: reject_limit, reject_window_secs, ip_reject_limit, resume_token_secs, account_delay_after and max_verifying_per_ip must be at least 1"));
        }
        if sec.account_delay_max_ms > 60_000 {
            return Err(self.err(
                None,
                "[security]: account_delay_max_ms must be at most 60000",
            ));
        }
        // Every other duration too: each is added to a clock reading, and
        // a sum past what the clock can hold ends the task that makes it.
        let srv = &raw.server;
        let durations = [
            ("[server] heartbeat_secs", srv.heartbeat_secs),
            ("[server] auth_timeout_secs", srv.auth_timeout_secs),
            (
                "[limits] first_byte_timeout_secs",
                l.first_byte_timeout_secs,
            ),
            ("[limits] handshake_timeout_secs", l.handshake_timeout_secs),
            ("[limits] stalled_close_secs", l.stalled_close_secs),
            ("[limits] write_stall_secs", l.write_stall_secs),
            (
                "[routing] request_timeout_ms",
                raw.routing.request_timeout_ms / 1000,
            ),
            ("[turn] max_ttl_secs", raw.turn.max_ttl_secs),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, v)| *v > TEN_YEARS) {
            return Err(self.err(
                None,
                format!("{name} must be at most {TEN_YEARS} seconds (ten years)"),
            ));
        }
        if [
            sec.reject_window_secs,
            sec.lockout_secs,
            sec.ip_block_secs,
            sec.resume_token_secs,
        ]
        .iter()
        .any(|v| *v > TEN_YEARS)
        {
            return Err(self.err(
                None,
                format!("[security]: durations must be at most {TEN_YEARS} seconds (ten years)"),
            ));
        }
        let mut claimed = HashSet::new();
        for u in &users {
            if let Some(id) = &u.client_cert {
                if !claimed.insert(id.clone()) {
                    return Err(self.err(
                        None,
                        format!(
                            "service user {:?}: client_cert {id:?} is already claimed by another user",
                            u.name
                        ),
                    ));
                }
            }
        }
        if let Some(ca) = &raw.tls.client_ca {
            if !self.resolve(ca.get_ref()).is_file() {
                return Err(self.at(ca, "[tls] client_ca: no such file"));
            }
        }
        if !raw.admin.listen.is_empty() && raw.admin.listen.parse::<SocketAddr>().is_err() {
            return Err(self.err(
                None,
                format!(
                    "[admin] listen: {:?} is not an address:port",
                    raw.admin.listen
                ),
            ));
        }
        if raw.audit.max_bytes < 4096 {
            return Err(self.err(None, "[audit] max_bytes must be at least 4096"));
        }
        let c = &raw.cluster;
        if !c.nats.is_empty() {
            // The node name becomes a subject token; a dot or space in it
            // would route one node's traffic to another's subjects.
            if !valid_token(&c.node) {
                return Err(self.err(None, format!("[cluster] node: {:?} must be 1-64 letters, digits, '-' or '_' (it becomes a NATS subject token)", c.node)));
            }
            if !valid_token(&c.prefix) {
                return Err(self.err(
                    None,
                    format!(
                        "[cluster] prefix: {:?} must be 1-64 letters, digits, '-' or '_'",
                        c.prefix
                    ),
                ));
            }
            if let Some(bad) = c
                .nats
                .iter()
                .find(|u| !(u.starts_with("nats://") || u.starts_with("tls://")))
            {
                return Err(self.err(
                    None,
                    format!("[cluster] nats: {bad:?} must start with nats:// or tls://"),
                ));
            }
            // Credentials live in files, never in a URL that could be shown.
            if c.nats.iter().any(|u| u.contains('@')) {
                return Err(self.err(None, "[cluster] nats: no credentials in the URL; use nats_user with nats_password_file, or nats_creds_file"));
            }
            if c.nats_user.is_some() != c.nats_password_file.is_some() {
                return Err(self.err(
                    None,
                    "[cluster] nats_user and nats_password_file go together",
                ));
            }
            if c.nats_user.is_some() && c.nats_creds_file.is_some() {
                return Err(self.err(
                    None,
                    "[cluster] give nats_user/nats_password_file or nats_creds_file, not both",
                ));
            }
        }
        if raw.routing.request_timeout_ms == 0 {
            return Err(self.err(None, "[routing] request_timeout_ms must be at least 1"));
        }

        Ok(Config {
            path: self.path.to_path_buf(),
            listen,
            heartbeat_secs: s.heartbeat_secs,
            auth_timeout_secs: s.auth_timeout_secs,
            max_message_bytes: s.max_message_bytes,
            tls_cert: self.resolve(raw.tls.cert.get_ref()),
            tls_key: self.resolve(raw.tls.key.get_ref()),
            groups,
            users,
            topology: raw.network_topology,
            turn,
            portal: raw.portal,
            adjunct: raw.adjunct,
            catalog,
            routing: raw.routing,
            limits: raw.limits,
            tls_client_ca: raw
                .tls
                .client_ca
                .as_ref()
                .map(|p| self.resolve(p.get_ref())),
            security: Security {
                resume_key_file: self.resolve(&raw.security.resume_key_file),
                ..raw.security
            },
            admin: raw.admin,
            audit: AuditSection {
                file: raw.audit.file.as_ref().map(|f| self.resolve(f)),
                ..raw.audit
            },
            cluster: ClusterSection {
                nats_password_file: raw
                    .cluster
                    .nats_password_file
                    .as_ref()
                    .map(|p| self.resolve(p)),
                nats_creds_file: raw
                    .cluster
                    .nats_creds_file
                    .as_ref()
                    .map(|p| self.resolve(p)),
                nats_ca: raw.cluster.nats_ca.as_ref().map(|p| self.resolve(p)),
                ..raw.cluster
            },
            source: Source::new(self.text),
        })
    }

    /// A `client_cert` identity: a CN, or `sha256:` + 64 hex digits.
    fn client_cert(&self, c: &Spanned<String>, user: &str) -> Result<String, ConfigError> {
        let v = c.get_ref().trim();
        if let Some(hex) = v
            .strip_prefix("sha256:")
            .or_else(|| v.strip_prefix("SHA256:"))
        {
            let hex: String = hex.chars().filter(|ch| *ch != ':').collect();
            if hex.len() != 64 || !hex.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(self.at(
                    c,
                    format!("service user {user:?}: client_cert fingerprint must be sha256: and 64 hex digits"),
                ));
            }
            return Ok(format!("sha256:{}", hex.to_ascii_lowercase()));
        }
        if v.is_empty() {
            return Err(self.at(c, format!("service user {user:?}: client_cert is empty")));
        }
        Ok(v.to_owned())
    }

    fn turn(
        &self,
        t: &TurnSection,
        turn_urls_empty: bool,
        groups: &[Group],
        users: &[User],
    ) -> Result<TurnConfig, ConfigError> {
        if t.ttl_secs == 0 || t.max_ttl_secs < t.ttl_secs {
            return Err(self.err(
                None,
                "[turn] ttl_secs must be at least 1 and at most max_ttl_secs",
            ));
        }
        let mut secrets = t.secrets.clone();
        if let Some(file) = &t.secrets_file {
            let text = std::fs::read_to_string(self.resolve(file.get_ref())).map_err(|e| {
                self.at(
                    file,
                    format!("[turn] secrets_file: cannot read: {}", e.kind()),
                )
            })?;
            secrets.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if secrets.iter().any(|s| s.is_empty()) {
            return Err(self.err(None, "[turn] secrets: a secret is empty"));
        }
        if *t.mode.get_ref() == TurnMode::Rest && secrets.is_empty() && !turn_urls_empty {
            return Err(self.at(
                &t.mode,
                "[turn] mode = \"rest\" with turn_urls needs secrets or secrets_file",
            ));
        }
        let mut static_user = None;
        if *t.mode.get_ref() == TurnMode::Static {
            let Some(name) = &t.service_user else {
                return Err(self.at(&t.mode, "[turn] mode = \"static\" needs service_user"));
            };
            let Some(user) = users.iter().find(|u| u.name == *name.get_ref()) else {
                return Err(self.at(
                    name,
                    format!(
                        "[turn] service_user {:?} is not a service user",
                        name.get_ref()
                    ),
                ));
            };
            if !user.enabled {
                return Err(self.at(
                    name,
                    format!("[turn] service_user {:?} is disabled", user.name),
                ));
            }
            let holds = user
                .groups
                .iter()
                .filter_map(|g| groups.iter().find(|x| x.name == *g))
                .any(|g| g.rights.contains(Right::TurnServerConnection));
            if !holds {
                return Err(self.at(name, format!("[turn] service_user {:?} holds no rights group with \"TURN Server Connection\"", user.name)));
            }
            let Some(pw_file) = &t.password_file else {
                return Err(self.at(name, "[turn] mode = \"static\" needs password_file"));
            };
            let pw = std::fs::read_to_string(self.resolve(pw_file.get_ref())).map_err(|e| {
                self.at(
                    pw_file,
                    format!("[turn] password_file: cannot read: {}", e.kind()),
                )
            })?;
            let pw = pw.trim_end_matches(['\r', '\n']).to_owned();
            if pw.is_empty() {
                return Err(self.at(pw_file, "[turn] password_file is empty"));
            }
            static_user = Some((user.name.clone(), pw));
        }
        Ok(TurnConfig {
            mode: *t.mode.get_ref(),
            secrets,
            ttl_secs: t.ttl_secs,
            max_ttl_secs: t.max_ttl_secs,
            opaque_usernames: t.opaque_usernames,
            static_user,
        })
    }
}

/// serde quotes offending values (`invalid type: string "…"`, or a number
/// in backticks); a value may be a secret typed in the wrong place, so
/// quoted text is replaced. Key names (`unknown field `x``) are not values
/// and stay readable.
fn redact_values(message: &str) -> String {
    let keys_only = message.trim_start().starts_with("unknown field");
    let mut out = String::new();
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            None if c == '"' || (c == '`' && !keys_only) => {
                open = Some(c);
                out.push(c);
                out.push('…');
            }
            None => out.push(c),
            Some(q) if c == q => {
                open = None;
                out.push(c);
            }
            Some(_) => {}
        }
    }
    out
}

/// The longest duration any setting may name.
const TEN_YEARS: u64 = 10 * 365 * 86400;

/// The most one stored password hash may make a check cost: a hash in the
/// config sizes the verifier's memory and sets its running time, so a
/// hostile one could abort the process or pin a worker for ever.
pub const ARGON2_MAX_MEMORY_KIB: u32 = 262_144;
/// Passes over the memory (argon2 `t`).
pub const ARGON2_MAX_TIME: u32 = 16;
/// Lanes (argon2 `p`).
pub const ARGON2_MAX_LANES: u32 = 8;
/// Output length in bytes.
pub const ARGON2_OUTPUT_BYTES: std::ops::RangeInclusive<usize> = 16..=64;
/// Decoded salt length in bytes.
pub const ARGON2_MAX_SALT_BYTES: usize = 64;

/// The argon2 cost of a PHC hash if it is within the bounds above, else
/// why not (the cost is not secret; the hash and the password never appear).
/// Config validation refuses a hash that fails this, and the verifier
/// checks it again before it allocates anything.
pub fn argon2_params(hash: &argon2::PasswordHash<'_>) -> Result<argon2::Params, String> {
    let params = argon2::Params::try_from(hash)
        .map_err(|e| format!("argon2 parameters are not valid ({e})"))?;
    let salt_ok = hash.salt.is_some_and(|salt| {
        let mut buf = [0u8; ARGON2_MAX_SALT_BYTES];
        salt.decode_b64(&mut buf).is_ok()
    });
    let output = hash.hash.map_or(0, |h| h.len());
    if params.m_cost() > ARGON2_MAX_MEMORY_KIB {
        Err(format!(
            "m = {} is over {ARGON2_MAX_MEMORY_KIB} (KiB)",
            params.m_cost()
        ))
    } else if params.t_cost() > ARGON2_MAX_TIME {
        Err(format!("t = {} is over {ARGON2_MAX_TIME}", params.t_cost()))
    } else if params.p_cost() > ARGON2_MAX_LANES {
        Err(format!(
            "p = {} is over {ARGON2_MAX_LANES}",
            params.p_cost()
        ))
    } else if !ARGON2_OUTPUT_BYTES.contains(&output) {
        Err(format!(
            "the hash is {output} bytes, not {}..={}",
            ARGON2_OUTPUT_BYTES.start(),
            ARGON2_OUTPUT_BYTES.end()
        ))
    } else if !salt_ok {
        Err(format!(
            "the salt is missing or over {ARGON2_MAX_SALT_BYTES} bytes"
        ))
    } else {
        Ok(params)
    }
}

/// User names reach logs and TURN usernames: no control characters, no ':'.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_urls_are_taken_only_in_their_canonical_printable_form() {
        let turn = ["turn:", "turns:"];
        for ok in [
            "turn:127.0.0.1:3478",
            "turns:turn.example.com:5349?transport=tcp",
            "turn:[::1]:3478?transport=udp",
        ] {
            assert!(ice_url(ok, turn).is_ok(), "{ok}");
        }
        for bad in [
            "stun:127.0.0.1",
            "turn:",
            "turn:host\n:3478",
            "turn:host\u{7}",
            "turn:ho st",
            "turn:h\u{e9}te",
            "turn:user@host",
            "turn:host/path",
            "turn:host?transport=sctp",
            "turn:host?x=1",
        ] {
            assert!(ice_url(bad, turn).is_err(), "{bad:?}");
        }
        assert!(ice_url(&format!("turn:{}", "a".repeat(300)), turn).is_err());
    }

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/gw/gateway.toml"), text)
    }

    fn base() -> String {
        format!(
            "[tls]\ncert = \"c.pem\"\nkey = \"/k.key\"\n\n[[rights_group]]\nname = \"Apps\"\nrights = [\"Adjunct Server Connection\", \"one-X CTI API\"]\n\n[[service_user]]\nname = \"app1\"\npassword = \"{HASH}\"\ngroups = [\"Apps\"]\n"
        )
    }

    #[test]
    fn cluster_keys_are_checked_and_secrets_stay_out_of_urls() {
        let with = |c: &str| parse(&format!("{}\n[cluster]\n{c}\n", base()));
        let c = with(
            "nats = [\"nats://127.0.0.1:4222\"]\nnode = \"gw-a\"\nnats_creds_file = \"gw.creds\"",
        )
        .unwrap();
        assert_eq!(c.cluster.prefix, "agw");
        assert_eq!(
            c.cluster.nats_creds_file,
            Some(PathBuf::from("/etc/gw/gw.creds"))
        );
        assert!(
            parse(&base()).unwrap().cluster.nats.is_empty(),
            "single node by default"
        );
        for (bad, says) in [
            ("nats = [\"nats://h:1\"]\nnode = \"gw.a\"", "node"),
            ("nats = [\"nats://h:1\"]\nprefix = \"a b\"", "prefix"),
            ("nats = [\"http://h:1\"]", "nats://"),
            ("nats = [\"nats://u:hunter2@h:1\"]", "no credentials"),
            ("nats = [\"nats://h:1\"]\nnats_user = \"u\"", "go together"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn a_valid_config_resolves_paths_and_rights() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.tls_cert, PathBuf::from("/etc/gw/c.pem"));
        assert_eq!(c.tls_key, PathBuf::from("/k.key"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        let rights = c.rights_of(&c.users[0]);
        assert!(rights.contains(Right::OneXCtiApi));
        assert!(!rights.contains(Right::TurnServerConnection));
    }

    #[test]
    fn unknown_right_is_reported_with_its_line() {
        let text = base().replace("\"one-X CTI API\"", "\"one-X CTI Api\"");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(7), "{e}");
        assert!(e
            .to_string()
            .starts_with("/etc/gw/gateway.toml:7: unknown service right"));
    }

    #[test]
    fn unknown_group_and_unknown_key_are_errors() {
        let e = parse(&base().replace("groups = [\"Apps\"]", "groups = [\"Appz\"]")).unwrap_err();
        assert_eq!(e.line, Some(12));
        let e = parse(&format!(
            "{}\n[server]\nlisten = \"127.0.0.1:1\"\nheartbeat = 3\n",
            base()
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(16), "{e}");
        assert!(e.message.contains("heartbeat"), "{e}");
    }

    #[test]
    fn a_plaintext_password_is_refused_without_echoing_it() {
        let e = parse(&base().replace(HASH, "hunter2-secret")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(e.line, Some(11));
    }

    /// A stored hash sets the verifier's memory and time: one over the
    /// bounds is refused where it is written, and the bounds themselves pass.
    #[test]
    fn a_password_hash_over_the_cost_bounds_is_refused_at_its_line() {
        for (params, says) in [
            ("m=4294967295,t=2,p=1", "m = 4294967295"),
            ("m=262145,t=2,p=1", "m = 262145"),
            ("m=19456,t=4294967295,p=1", "t = 4294967295"),
            ("m=19456,t=17,p=1", "t = 17"),
            ("m=19456,t=2,p=9", "p = 9"),
        ] {
            let text = base().replace("m=19456,t=2,p=1", params);
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(11), "{params}: {e}");
            assert!(e.to_string().contains(says), "{params}: {e}");
            assert!(!e.to_string().contains("RdescudvJ"), "{e}");
        }
        let short = base().replace("RdescudvJCsgt3ub+b+dWRWJTmaaJObG", "RdescudvJCsgt3ub");
        assert!(parse(&short).unwrap_err().to_string().contains("12 bytes"));
        parse(&base().replace("m=19456,t=2,p=1", "m=262144,t=16,p=8")).unwrap();
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted() {
        let e = parse(&format!("{}\n[turn]\nsecrets = \"hunter2-turn\"\n", base())).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(
            e.to_string().contains("secrets") || e.to_string().contains("sequence"),
            "{e}"
        );
        // A number in the wrong place comes back in backticks: redacted too.
        let e = parse(&format!("{}\n[turn]\nsecrets = [918273645]\n", base())).unwrap_err();
        assert!(!e.to_string().contains("918273645"), "{e}");
    }

    #[test]
    fn client_certs_are_unique_and_durations_bounded() {
        let two = base().replace(
            "groups = [\"Apps\"]\n",
            "groups = [\"Apps\"]\nclient_cert = \"app-host\"\n",
        ) + &format!(
            "[[service_user]]\nname = \"app2\"\npassword = \"{HASH}\"\nclient_cert = \"app-host\"\n"
        );
        assert!(parse(&two)
            .unwrap_err()
            .to_string()
            .contains("already claimed"));
        let forever = format!(
            "{}\n[security]\nlockout_secs = 9223372036854775807\n",
            base()
        );
        assert!(parse(&forever)
            .unwrap_err()
            .to_string()
            .contains("ten years"));
        // The other durations too: each is added to a clock reading.
        for (section, key) in [
            ("server", "heartbeat_secs"),
            ("server", "auth_timeout_secs"),
            ("limits", "write_stall_secs"),
            ("routing", "request_timeout_ms"),
        ] {
            let text = format!("{}\n[{section}]\n{key} = 9223372036854775807\n", base());
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("ten years"), "{e}");
        }
    }

    #[test]
    fn static_turn_needs_the_right() {
        let text = format!("{}\n[turn]\nmode = \"static\"\nservice_user = \"app1\"\npassword_file = \"/nonexistent\"\n", base());
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("TURN Server Connection"), "{e}");
    }

    #[test]
    fn catalog_entries_override_and_add_rules_but_never_close_one() {
        use crate::catalog::Need;
        let entry = |key: &str, pattern: &str, any_of: &str| {
            format!(
                "{}\n[[catalog]]\n{key} = \"{pattern}\"\nany_of = [{any_of}]\n",
                base()
            )
        };
        // Tighten a built-in rule, add a namespace, add a rule below a built-in one.
        let c = parse(&entry(
            "method",
            "voicemail.config.get",
            "\"Voicemail Pro Administrator\"",
        ))
        .unwrap();
        let get = c.catalog.lookup("voicemail.config.get").unwrap();
        assert_eq!(get.need, Need::Right(Right::VoicemailProAdministrator));
        let c = parse(&entry("namespace", "crm", "\"one-X CTI API\"")).unwrap();
        assert_eq!(
            c.catalog.provider_need("crm"),
            Some(Need::Right(Right::OneXCtiApi))
        );
        let c = parse(&entry("method", "cti.admin.*", "\"Web Control Security\"")).unwrap();
        let e = c.catalog.lookup("cti.admin.reset").unwrap();
        assert_eq!(e.need, Need::Right(Right::WebControlSecurity));

        for (key, pattern, want) in [
            (
                "method",
                "voicemail.config.set",
                "built-in operation voicemail.config.set reachable by no right",
            ),
            (
                "method",
                "voicemail.backup.*",
                "built-in operation voicemail.backup.* reachable by no right",
            ),
            (
                "method",
                "cti.make_call",
                "built-in operation cti.* reachable by no right",
            ),
            ("method", "crm.x", "any_of is empty"),
            ("method", "admin.config.get", "reserved"),
            ("method", "voicemail.*.get", "is not a method pattern"),
            ("namespace", "cti.x", "a namespace has no dot"),
        ] {
            let err = parse(&entry(key, pattern, "")).unwrap_err().to_string();
            assert!(err.contains(want), "{pattern}: {err}");
            assert!(err.contains("gateway.toml:"), "{err}");
        }
        let twice = format!(
            "{}\n[[catalog]]\nnamespace = \"cti\"\nany_of = [\"one-X CTI API\"]\n[[catalog]]\nmethod = \"cti.*\"\nany_of = [\"one-X CTI API\"]\n",
            base()
        );
        let err = parse(&twice).unwrap_err().to_string();
        assert!(err.contains("cti.* is already defined"), "{err}");
    }
}

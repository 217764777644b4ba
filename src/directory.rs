//! Service users and rights groups as the gateway looks them up, and password
//! checks.
//!
//! Owns: the per-user effective rights (union over groups), argon2id hashing
//! and verification on a small bounded pool off the async workers, and the
//! dummy verification that makes an unknown or disabled user cost the same as
//! a wrong password. Must not log or return a password or a hash.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

use crate::bounded::Line;

pub use crate::config::Complexity;
use crate::config::Config;
use crate::rights::RightSet;

/// One service user as sessions see it.
pub struct Account {
    pub name: Arc<str>,
    pub groups: Vec<String>,
    pub rights: RightSet,
    pub enabled: bool,
    /// Identifies the current password (a hash of its PHC string): sessions
    /// and tokens resting on another password are void.
    pub stamp: u64,
    /// Resume tokens of another generation are void (bumped on disable).
    pub token_generation: u64,
    /// Identifies the client certificate the user claims (0: none):
    /// sessions and tokens resting on another claim, or on a claim removed,
    /// are void. Never equal to a password's `stamp` in practice (another
    /// digest domain).
    pub cert_stamp: u64,
    hash: Arc<str>,
    /// What a token issued to a certificate session is bound to.
    cert_claim: Option<Arc<str>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("rights", &self.rights)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Changes whenever the password does (for binding tokens to it).
    pub fn password_stamp(&self) -> &str {
        // The salt+hash tail is unique per password setting; never shown.
        &self.hash
    }

    /// What tokens of certificate sessions are bound to: the claim, set
    /// apart from any password hash. `None` without a claim.
    pub fn certificate_stamp(&self) -> Option<&str> {
        self.cert_claim.as_deref()
    }

    /// Whether a session or token resting on credential `stamp` still may:
    /// the current password's, or the current certificate claim's.
    pub fn credential_current(&self, stamp: u64) -> bool {
        stamp == self.stamp || (self.cert_stamp != 0 && stamp == self.cert_stamp)
    }
}

/// Users by name, built from a validated config.
#[derive(Default)]
pub struct Directory {
    users: HashMap<Arc<str>, Account>,
    /// Client-certificate fingerprints (`sha256:…`) to users.
    by_fingerprint: HashMap<String, Arc<str>>,
    /// Client-certificate subject CNs to users; kept apart from fingerprints
    /// so a CN can never pose as one.
    by_cn: HashMap<String, Arc<str>>,
}

impl Directory {
    pub fn from_config(config: &Config) -> Directory {
        let users = config
            .users
            .iter()
            .map(|u| {
                let name: Arc<str> = Arc::from(u.name.as_str());
                let claim = u.client_cert.as_deref().map(cert_claim);
                let account = Account {
                    name: name.clone(),
                    groups: u.groups.clone(),
                    rights: config.rights_of(u),
                    enabled: u.enabled,
                    stamp: stamp_of(&u.password),
                    token_generation: u.token_generation,
                    hash: Arc::from(u.password.as_str()),
                    cert_stamp: claim.as_deref().map_or(0, stamp_of),
                    cert_claim: claim.map(Arc::from),
                };
                (name, account)
            })
            .collect();
        let mut by_fingerprint = HashMap::new();
        let mut by_cn = HashMap::new();
        for u in &config.users {
            if let Some(id) = &u.client_cert {
                let map = if id.starts_with("sha256:") {
                    &mut by_fingerprint
                } else {
                    &mut by_cn
                };
                map.insert(id.clone(), Arc::from(u.name.as_str()));
            }
        }
        Directory {
            users,
            by_fingerprint,
            by_cn,
        }
    }

    /// The user a verified client certificate names: by fingerprint first,
    /// then by subject CN.
    pub fn by_client_cert(&self, id: &crate::tls::ClientIdentity) -> Option<&Account> {
        let name = self
            .by_fingerprint
            .get(&id.fingerprint)
            .or_else(|| id.cn.as_ref().and_then(|cn| self.by_cn.get(cn)))?;
        self.users.get(name)
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.users.get(name)
    }

    /// The rights a live session of `name` holds now, or `None` if the user is
    /// gone or disabled.
    pub fn live_rights(&self, name: &str) -> Option<RightSet> {
        self.users.get(name).filter(|a| a.enabled).map(|a| a.rights)
    }
}

/// A certificate claim as stamps and tokens see it: apart from any PHC
/// string (which starts with `$`).
fn cert_claim(claim: &str) -> String {
    format!("client_cert:{claim}")
}

/// A stable 64-bit digest of a PHC string or a certificate claim (never 0,
/// which means "none").
fn stamp_of(phc: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(phc.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b).max(1)
}

/// Why a login failed. All of them look the same on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    UnknownUser,
    WrongPassword,
    Disabled,
    /// The verification queue is full (a login storm); retry later.
    Busy,
}

impl LoginFailure {
    pub const fn reason(self) -> &'static str {
        match self {
            LoginFailure::UnknownUser => "unknown user",
            LoginFailure::WrongPassword => "wrong password",
            LoginFailure::Disabled => "disabled",
            LoginFailure::Busy => "throttled",
        }
    }
}

/// Longest password we hash; longer ones fail like a wrong password.
const MAX_PASSWORD_BYTES: usize = 1024;
/// Logins waiting for a verification worker before we refuse more.
const MAX_WAITING: usize = 4096;

/// Password hashes for admin writes waiting for a verification worker
/// before more are refused (each running hash holds 19 MiB).
const MAX_HASHES_WAITING: usize = 8;

/// Verifies passwords on a bounded pool so a login storm cannot starve
/// sessions; hashes admin writes' new passwords on the same workers.
pub struct Verifier {
    /// Logins waiting for a worker or running; `MAX_WAITING` may wait.
    logins: Line,
    /// New-password hashes; `MAX_HASHES_WAITING` may wait.
    hashes: Line,
    /// argon2's working memory (19 MiB at the default cost), one per worker,
    /// reused. Allocated afresh per check, glibc keeps a copy in every arena
    /// a blocking thread touched: 850 MiB of RSS after a soak's bursts.
    memory: Arc<Scratch>,
    dummy: Arc<str>,
}

/// Memory blocks for argon2, kept between runs (at most one per worker).
#[derive(Default)]
struct Scratch(parking_lot::Mutex<Vec<Vec<Block>>>);

/// Larger working memory is not kept for the next run (a hash in the config
/// with a huge cost must not pin it).
const KEEP_BLOCKS: usize = 64 * 1024;

impl Scratch {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Block>) -> R) -> R {
        let mut memory = self.0.lock().pop().unwrap_or_default();
        let r = f(&mut memory);
        if memory.len() <= KEEP_BLOCKS {
            self.0.lock().push(memory);
        }
        r
    }
}

impl Verifier {
    /// `workers` concurrent argon2 runs at most (at least 1), logins and
    /// hashes together.
    pub fn new(workers: usize) -> Verifier {
        let workers = Arc::new(Semaphore::new(workers.max(1)));
        // A hash of a random password with the default cost, so unknown users
        // take as long as known ones.
        let dummy = hash_password(&random_secret(24)).unwrap_or_default();
        Verifier {
            logins: Line::sharing(workers.clone(), MAX_WAITING),
            hashes: Line::sharing(workers, MAX_HASHES_WAITING),
            memory: Arc::default(),
            dummy: Arc::from(dummy),
        }
    }

    /// One fewer than the cores, so one core always serves the sessions.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    }

    /// Checks `password` for `user`. Unknown, disabled and wrong cost the same.
    pub async fn login(
        &self,
        directory: &Directory,
        user: &str,
        password: &str,
    ) -> Result<Arc<str>, LoginFailure> {
        let account = directory.get(user);
        let hash = account.map_or_else(|| self.dummy.clone(), |a| a.hash.clone());
        let ok = self.verify(hash, password).await?;
        match account {
            None => Err(LoginFailure::UnknownUser),
            Some(a) if !a.enabled => Err(LoginFailure::Disabled),
            Some(_) if !ok => Err(LoginFailure::WrongPassword),
            Some(a) => Ok(a.name.clone()),
        }
    }

    /// Hashes a new password on the verification workers, so admin writes
    /// cannot hold more memory or threads than verification does. `Busy` at
    /// once when `MAX_HASHES_WAITING` hashes already wait.
    pub async fn hash(&self, password: String) -> Result<String, LoginFailure> {
        let turn = self.hashes.enter().await.ok_or(LoginFailure::Busy)?;
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            memory.with(|blocks| hash_with(&password, blocks))
        })
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(LoginFailure::Busy)
    }

    async fn verify(&self, hash: Arc<str>, password: &str) -> Result<bool, LoginFailure> {
        let too_long = password.len() > MAX_PASSWORD_BYTES;
        let password = if too_long {
            String::new()
        } else {
            password.to_owned()
        };
        let turn = self.logins.enter().await.ok_or(LoginFailure::Busy)?;
        let memory = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            memory.with(|blocks| verify_with(&hash, &password, blocks)) && !too_long
        })
        .await
        .map_err(|_| LoginFailure::Busy)
    }
}

/// argon2id with the crate's default cost (m=19456 KiB, t=2, p=1), as a PHC string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    hash_with(password, &mut Vec::new())
}

/// Verifies against a PHC string; the cost comes from the string itself.
pub fn verify_password(phc: &str, password: &str) -> bool {
    verify_with(phc, password, &mut Vec::new())
}

/// `hash_password` in `memory` (grown to the cost's size, then reused).
fn hash_with(
    password: &str,
    memory: &mut Vec<Block>,
) -> Result<String, argon2::password_hash::Error> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)?;
    let params = Params::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    memory.resize(params.block_count(), Block::default());
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt_bytes,
            &mut out,
            &mut memory[..],
        )?;
    Ok(format!(
        "$argon2id$v={}$m={},t={},p={}${}${}",
        Version::V0x13 as u32,
        params.m_cost(),
        params.t_cost(),
        params.p_cost(),
        salt.as_str(),
        Output::new(&out)?
    ))
}

/// `verify_password` in `memory`: the PHC string's algorithm, version, cost
/// and salt, the output compared in constant time.
fn verify_with(phc: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    // Bounded before anything is allocated or run: the cost comes from the
    // string, and config validation may not be the only way one got here.
    let Ok(params) = crate::config::argon2_params(&parsed) else {
        return false;
    };
    let mut salt_buf = [0u8; crate::config::ARGON2_MAX_SALT_BYTES];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = [0u8; 64];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    memory.resize(params.block_count(), Block::default());
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

/// A random printable secret with lower, upper, digit and symbol characters
/// and no three identical characters in a row (passes every complexity level).
pub fn random_secret(len: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-_.+=";
    let len = len.max(8);
    let mut rng = rand::rng();
    loop {
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let c = char::from(CHARS[rng.random_range(0..CHARS.len())]);
            if out.ends_with(&format!("{c}{c}")) {
                continue;
            }
            out.push(c);
        }
        let classes = [
            out.chars().any(|c| c.is_ascii_lowercase()),
            out.chars().any(|c| c.is_ascii_uppercase()),
            out.chars().any(|c| c.is_ascii_digit()),
            out.chars().any(|c| !c.is_ascii_alphanumeric()),
        ];
        if classes.iter().all(|c| *c) {
            return out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn pooled_hashing_agrees_with_the_argon2_crate_both_ways() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mine = hash_password("pw-1x").unwrap();
        let parsed = PasswordHash::new(&mine).unwrap();
        assert!(Argon2::default().verify_password(b"pw-1x", &parsed).is_ok());
        let salt = SaltString::encode_b64(b"another-salt-16b").unwrap();
        let theirs = Argon2::default()
            .hash_password(b"pw-2x", &salt)
            .unwrap()
            .to_string();
        // The same buffer serves one check after another.
        let mut memory = Vec::new();
        assert!(verify_with(&theirs, "pw-2x", &mut memory));
        assert!(!verify_with(&theirs, "pw-2X", &mut memory));
        assert!(verify_with(&mine, "pw-1x", &mut memory));
        assert!(!verify_with(
            "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$",
            "x",
            &mut memory
        ));
    }

    /// A hash whose cost is out of bounds fails at once, before the
    /// verifier sizes its memory from it or runs its passes (an `m` of
    /// 2^32 - 1 KiB aborted the process; a `t` of 2^32 - 1 never ended).
    #[test]
    fn a_hash_over_the_cost_bounds_is_refused_before_any_work() {
        let good = hash_password("pw-3x").unwrap();
        let hostile = [
            good.replace("m=19456", "m=4294967295"),
            good.replace("m=19456", "m=262145"),
            good.replace("t=2", "t=4294967295"),
            good.replace("t=2", "t=17"),
            good.replace("p=1", "p=9"),
        ];
        for phc in &hostile {
            let mut memory = Vec::new();
            assert!(!verify_with(phc, "pw-3x", &mut memory), "{phc}");
            assert_eq!(memory.capacity(), 0, "{phc} allocated");
        }
        assert!(verify_with(&good, "pw-3x", &mut Vec::new()));
    }

    #[test]
    fn random_secrets_mix_classes() {
        let s = random_secret(20);
        assert_eq!(s.len(), 20);
        assert!(s.chars().any(|c| c.is_ascii_lowercase()));
        assert!(s.chars().any(|c| c.is_ascii_uppercase()));
        assert!(s.chars().any(|c| c.is_ascii_digit()));
    }
}

/// Checks `password` against `level`; the error names the rule broken.
pub fn check_complexity(
    password: &str,
    user: Option<&str>,
    level: Complexity,
) -> Result<(), String> {
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    if user.is_some_and(|u| !u.is_empty() && password.eq_ignore_ascii_case(u)) {
        return Err("the password must not be the user name".into());
    }
    if level == Complexity::Low {
        return Ok(());
    }
    if password.chars().count() < 9 {
        return Err("the password must be at least 9 characters long".into());
    }
    let sets = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    let chars: Vec<char> = password.chars().collect();
    if chars.windows(3).any(|w| w[0] == w[1] && w[1] == w[2]) {
        return Err("the password must not repeat a character 3 times in a row".into());
    }
    match level {
        Complexity::Medium if sets < 2 => Err(
            "the password must mix at least 2 of: lower case, upper case, digits, other characters"
                .into(),
        ),
        Complexity::High if sets < 3 => Err(
            "the password must mix at least 3 of: lower case, upper case, digits, other characters"
                .into(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod complexity_tests {
    use super::*;

    #[test]
    fn complexity_rules() {
        use Complexity::*;
        assert!(check_complexity("bob", Some("bob"), Low)
            .unwrap_err()
            .contains("user name"));
        assert!(check_complexity("x", Some("bob"), Low).is_ok());
        assert!(check_complexity("Ab1", None, Medium)
            .unwrap_err()
            .contains("9"));
        assert!(check_complexity("abcdefghij", None, Medium)
            .unwrap_err()
            .contains("2 of"));
        assert!(check_complexity("abcdefgh1", None, Medium).is_ok());
        assert!(check_complexity("abcdddefgh1", None, Medium)
            .unwrap_err()
            .contains("3 times"));
        assert!(check_complexity("abcdefgh1", None, High)
            .unwrap_err()
            .contains("3 of"));
        assert!(check_complexity("abcdefgH1", None, High).is_ok());
        assert!(check_complexity(&random_secret(20), Some("u"), High).is_ok());
    }
}

//! Resume tokens: a signed (HMAC-SHA256), expiring proof that a session
//! authenticated as a user, so a reconnect costs one HMAC instead of argon2.
//!
//! A token is bound to the user's current password hash: a password change,
//! and removing or disabling the user, void every token at once. The key lives
//! in a 0600 file created on first start, so tokens survive a restart.
//!
//! Must not log or return the key; tokens are credentials and are never
//! logged either.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::directory::{Account, Directory};

type HmacSha256 = Hmac<Sha256>;

const PREFIX: &str = "v1";
/// Longest token accepted; a real one is far shorter.
const MAX_TOKEN_BYTES: usize = 512;
/// What a token naming no account is checked against, shaped like a real
/// stamp (a default-cost PHC string), so the check costs the same and its
/// time does not tell whether the name exists.
const UNKNOWN_STAMP: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The signing key, kept as a keyed HMAC state (cloned per use: cheaper than
/// keying again).
pub struct ResumeKey {
    keyed: HmacSha256,
}

impl std::fmt::Debug for ResumeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKey(<redacted>)")
    }
}

impl ResumeKey {
    /// Reads the key from `path`, or creates it (0600) when the file is absent.
    pub fn load_or_create(path: &Path) -> anyhow::Result<ResumeKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let hex = text.trim();
                let mut key = [0u8; 32];
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    anyhow::bail!(
                        "{}: not a resume key (64 hex digits expected)",
                        path.display()
                    );
                }
                for (i, byte) in key.iter_mut().enumerate() {
                    let pair = hex.get(2 * i..2 * i + 2).unwrap_or("00");
                    *byte = u8::from_str_radix(pair, 16).unwrap_or(0);
                }
                ResumeKey::from_bytes(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let hex = crate::util::hex(&key);
                crate::util::write_private(path, format!("{hex}\n").as_bytes()).map_err(|e| {
                    anyhow::anyhow!("{}: cannot create resume key: {e}", path.display())
                })?;
                ResumeKey::from_bytes(&key)
            }
            Err(e) => anyhow::bail!("{}: cannot read resume key: {e}", path.display()),
        }
    }

    pub fn from_bytes(key: &[u8; 32]) -> anyhow::Result<ResumeKey> {
        let keyed = HmacSha256::new_from_slice(key)
            .map_err(|_| anyhow::anyhow!("resume key: bad length"))?;
        Ok(ResumeKey { keyed })
    }

    /// A token for `account`, valid until `expires` (Unix seconds), bound to
    /// its password.
    pub fn issue(&self, account: &Account, expires: u64) -> String {
        self.issue_bound(account, expires, account.password_stamp())
    }

    /// A token for a session `account` authenticated by client certificate,
    /// bound to the certificate claim instead: it dies with the claim, not
    /// with the password (the session never showed one). `None` without a
    /// claim.
    pub fn issue_certificate(&self, account: &Account, expires: u64) -> Option<String> {
        Some(self.issue_bound(account, expires, account.certificate_stamp()?))
    }

    fn issue_bound(&self, account: &Account, expires: u64, stamp: &str) -> String {
        let user = URL_SAFE_NO_PAD.encode(account.name.as_bytes());
        let mac = self.mac(&user, expires, stamp, account.token_generation);
        format!(
            "{PREFIX}.{user}.{expires}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    /// The account a token names, if it is genuine, unexpired at `now`, not
    /// longer-lived than `max_secs` allows, and the account's password (or
    /// certificate claim) is the one it was issued under; with the stamp of
    /// that credential (`Account::stamp` or `Account::cert_stamp`).
    /// Enabled-ness is the caller's check.
    pub fn check<'d>(
        &self,
        token: &str,
        directory: &'d Directory,
        now: u64,
        max_secs: u64,
    ) -> Option<(&'d Account, u64)> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = token.split('.');
        let (prefix, user, expires, mac) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if prefix != PREFIX || parts.next().is_some() {
            return None;
        }
        let expires = canonical_u64(expires)?;
        // A shorter resume_token_secs applies to tokens already out.
        if expires <= now || expires > now.saturating_add(max_secs) {
            return None;
        }
        let name = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
        let mac_bytes = URL_SAFE_NO_PAD.decode(mac).ok()?;
        // Both MACs are computed and compared whether or not the name exists
        // or claims a certificate, so a forged token's timing does not say
        // which names do.
        let account = directory.get(&name);
        let (password, certificate, generation) =
            account.map_or((UNKNOWN_STAMP, UNKNOWN_STAMP, 0), |a| {
                (
                    a.password_stamp(),
                    a.certificate_stamp().unwrap_or(UNKNOWN_STAMP),
                    a.token_generation,
                )
            });
        // Constant-time comparisons inside `verify_slice`.
        let by_password = self
            .mac(user, expires, password, generation)
            .verify_slice(&mac_bytes)
            .is_ok();
        let by_certificate = self
            .mac(user, expires, certificate, generation)
            .verify_slice(&mac_bytes)
            .is_ok();
        let account = account?;
        if by_password {
            Some((account, account.stamp))
        } else if by_certificate && account.cert_stamp != 0 {
            Some((account, account.cert_stamp))
        } else {
            None
        }
    }

    /// A key for `purpose` derived from this one (the same on every node of
    /// a cluster, which shares this key): domain-separated from tokens (which
    /// start with the version prefix) and pseudonyms (a purpose of ours,
    /// never starting with a NUL) by its NUL-framed prefix.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(b"\0derive\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A stable pseudonym of `text` for `purpose`: 16 hex digits of an HMAC
    /// under this key (domain-separated from tokens, whose MACs start with
    /// the version prefix). The same text gives the same pseudonym until the
    /// key file is replaced; without the key it cannot be reversed.
    pub fn pseudonym(&self, purpose: &str, text: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(purpose.as_bytes());
        mac.update(b"\n");
        mac.update(text.as_bytes());
        let digest = mac.finalize().into_bytes();
        crate::util::hex(digest.get(..8).unwrap_or_default())
    }

    /// Over the user, the expiry, the password and the token generation: a
    /// token dies with any of them. Generation 0 adds nothing, so tokens
    /// issued before generations existed stay valid until disabled once.
    fn mac(&self, user_b64: &str, expires: u64, stamp: &str, generation: u64) -> HmacSha256 {
        #[cfg(test)]
        MACS.with(|n| n.set(n.get() + 1));
        let mut mac = self.keyed.clone();
        mac.update(PREFIX.as_bytes());
        mac.update(b"\n");
        mac.update(user_b64.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(stamp.as_bytes());
        if generation != 0 {
            mac.update(b"\n");
            mac.update(generation.to_string().as_bytes());
        }
        mac
    }
}

/// Only the form `u64::to_string` writes: no sign, no leading zero. The MAC
/// covers the canonical text, so another spelling of the same number must
/// not pass as the same token.
fn canonical_u64(text: &str) -> Option<u64> {
    let n: u64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

#[cfg(test)]
thread_local! {
    /// MACs computed on this thread (tests check that every check computes one).
    static MACS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forged token costs two MACs whether or not its name exists: the
    /// lookup must not end the check early (a timing oracle on names).
    #[test]
    fn a_forged_token_computes_its_mac_for_unknown_names_too() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey::load_or_create(&dir.path().join("k")).unwrap();
        let d = directory(H1);
        let good = key.issue(d.get("app1").unwrap(), 1_000);
        let mac = good.rsplit('.').next().unwrap();
        for user in ["app1", "nobody"] {
            let forged = format!("v1.{}.1000.{mac}A", URL_SAFE_NO_PAD.encode(user));
            let before = MACS.with(|n| n.get());
            assert!(key.check(&forged, &d, 999, 86_400).is_none(), "{user}");
            assert_eq!(MACS.with(|n| n.get()), before + 2, "{user}");
        }
        // A genuine-looking MAC under another name is not a token for it.
        let moved = format!("v1.{}.1000.{mac}", URL_SAFE_NO_PAD.encode("nobody"));
        assert!(key.check(&moved, &d, 999, 86_400).is_none());
    }

    fn directory(hash: &str) -> Directory {
        directory_gen(hash, 0)
    }

    fn directory_gen(hash: &str, generation: u64) -> Directory {
        let text = format!(
            "[tls]\ncert = \"c\"\nkey = \"k\"\n[[service_user]]\nname = \"app1\"\npassword = \"{hash}\"\ntoken_generation = {generation}\n"
        );
        let config = crate::config::Config::parse(Path::new("/x/gateway.toml"), &text).unwrap();
        Directory::from_config(&config)
    }

    const H1: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
    const H2: &str = "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn a_token_checks_until_it_expires_and_dies_with_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey::load_or_create(&dir.path().join("k")).unwrap();
        let d = directory(H1);
        let t = key.issue(d.get("app1").unwrap(), 1_000);
        assert_eq!(&*key.check(&t, &d, 999, 86_400).unwrap().0.name, "app1");
        assert!(key.check(&t, &d, 1_000, 86_400).is_none());
        // Longer-lived than the current maximum allows.
        assert!(key.check(&t, &d, 100, 60).is_none());
        // Another password for the same user.
        assert!(key.check(&t, &directory(H2), 999, 86_400).is_none());
        // Tampered expiry or user.
        let forged = t.replace(".1000.", ".2000.");
        assert!(key.check(&forged, &d, 999, 86_400).is_none());
        assert!(key.check("v1.YQ.1000.AAAA", &d, 999, 86_400).is_none());
        assert!(key.check("garbage", &d, 999, 86_400).is_none());
        // The same expiry spelled another way is not the same token.
        for spelled in [".01000.", ".+1000.", ". 1000."] {
            let other = t.replace(".1000.", spelled);
            assert!(key.check(&other, &d, 999, 86_400).is_none(), "{spelled}");
        }
        // The key file survives: a second load reads the same key.
        let again = ResumeKey::load_or_create(&dir.path().join("k")).unwrap();
        assert!(again.check(&t, &d, 999, 86_400).is_some());
        let other = ResumeKey::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.check(&t, &d, 999, 86_400).is_none());
    }

    #[test]
    fn a_new_token_generation_voids_the_tokens_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let key = ResumeKey::load_or_create(&dir.path().join("k")).unwrap();
        let (g0, g1, g2) = (directory(H1), directory_gen(H1, 1), directory_gen(H1, 2));
        let t0 = key.issue(g0.get("app1").unwrap(), 1_000);
        let t1 = key.issue(g1.get("app1").unwrap(), 1_000);
        assert!(key.check(&t0, &g0, 999, 86_400).is_some());
        assert!(key.check(&t0, &g1, 999, 86_400).is_none());
        assert!(key.check(&t1, &g1, 999, 86_400).is_some());
        assert!(key.check(&t1, &g2, 999, 86_400).is_none());
    }
}

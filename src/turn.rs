//! TURN credentials that coturn accepts.
//!
//! `rest` mode follows draft-uberti-behave-turn-rest-00 as coturn's
//! `use-auth-secret` checks it: username `<expiry unix time>:<account>`,
//! credential base64(HMAC-SHA1(secret, username)), signed with the first
//! configured secret (coturn is given all of them, so older ones keep
//! working during rotation). `static` mode hands out one service user's
//! long-term credentials (coturn `lt-cred-mech`). Secrets never leave here
//! except inside the credential a client is entitled to.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::Sha256;

use crate::config::{TopologySection, TurnConfig, TurnMode};

/// The REST API username and credential for `account`, valid until `expiry`.
pub fn rest_credential(secret: &str, account: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{account}");
    let credential = sign(secret, &username);
    (username, credential)
}

/// base64(HMAC-SHA1(secret, username)), the credential coturn recomputes.
pub fn sign(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A stable pseudonym for `account`: 16 hex digits of HMAC-SHA256 keyed by
/// the signing secret, so TURN logs do not show account names.
pub fn opaque_account(secret: &str, account: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"adjunct-gateway turn account\0");
    mac.update(account.as_bytes());
    crate::util::hex(mac.finalize().into_bytes().get(..8).unwrap_or_default())
}

/// The `turn.credentials` result for `account` at time `now`.
/// `requested_ttl` is clamped to `[1, max_ttl_secs]`.
pub fn credentials(
    turn: &TurnConfig,
    topology: &TopologySection,
    account: &str,
    requested_ttl: Option<u64>,
    now: u64,
) -> Value {
    let ttl = requested_ttl
        .unwrap_or(turn.ttl_secs)
        .clamp(1, turn.max_ttl_secs);
    let expires_at = now.saturating_add(ttl);
    let mut ice = Vec::new();
    if !topology.stun_urls.is_empty() {
        ice.push(json!({ "urls": topology.stun_urls }));
    }
    let pair = match turn.mode {
        TurnMode::Rest => turn.secrets.first().map(|secret| {
            let name = if turn.opaque_usernames {
                opaque_account(secret, account)
            } else {
                account.to_owned()
            };
            rest_credential(secret, &name, expires_at)
        }),
        TurnMode::Static => turn.static_user.clone(),
    };
    if let (false, Some((username, credential))) = (topology.turn_urls.is_empty(), pair) {
        ice.push(
            json!({ "urls": topology.turn_urls, "username": username, "credential": credential }),
        );
    }
    json!({ "iceServers": ice, "ttl": ttl, "expiresAt": expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vector computed independently of this code with OpenSSL:
    ///   printf '%s' '1764000000:portal1' | openssl dgst -sha1 -hmac 'current' -binary | base64
    /// and cross-checked with Python:
    ///   base64.b64encode(hmac.new(b'current', b'1764000000:portal1', hashlib.sha1).digest())
    #[test]
    fn rest_credential_matches_an_independent_vector() {
        let (user, cred) = rest_credential("current", "portal1", 1_764_000_000);
        assert_eq!(user, "1764000000:portal1");
        assert_eq!(cred, "OHek+OS6oXMbI7DkHRxqKCU6M4A=");
    }

    /// RFC 2202 test case 2 (HMAC-SHA1, key "Jefe"), in base64.
    #[test]
    fn hmac_sha1_rfc2202() {
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    fn cfg(mode: TurnMode) -> (TurnConfig, TopologySection) {
        (
            TurnConfig {
                mode,
                secrets: vec!["current".into(), "older".into()],
                ttl_secs: 3600,
                max_ttl_secs: 86400,
                opaque_usernames: false,
                static_user: Some(("turn".into(), "turnpw".into())),
            },
            TopologySection {
                stun_urls: vec!["stun:turn.example.com:3478".into()],
                turn_urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            },
        )
    }

    #[test]
    fn result_shape_and_ttl_clamp() {
        let (t, topo) = cfg(TurnMode::Rest);
        let v = credentials(&t, &topo, "portal1", Some(10_000_000), 1_763_913_600);
        assert_eq!(v["ttl"], 86400);
        assert_eq!(v["expiresAt"], 1_764_000_000u64);
        assert_eq!(v["iceServers"][0]["urls"][0], "stun:turn.example.com:3478");
        assert_eq!(v["iceServers"][1]["username"], "1764000000:portal1");
        assert_eq!(
            v["iceServers"][1]["credential"],
            "OHek+OS6oXMbI7DkHRxqKCU6M4A="
        );
        let v = credentials(&t, &topo, "portal1", None, 0);
        assert_eq!(v["ttl"], 3600);
    }

    #[test]
    fn opaque_usernames_hide_the_account() {
        let (mut t, topo) = cfg(TurnMode::Rest);
        t.opaque_usernames = true;
        let v = credentials(&t, &topo, "portal1", None, 0);
        let user = v["iceServers"][1]["username"].as_str().unwrap();
        assert!(!user.contains("portal1"));
        assert_eq!(user.split(':').nth(1).unwrap().len(), 16);
    }

    #[test]
    fn static_mode_hands_out_the_service_user() {
        let (t, topo) = cfg(TurnMode::Static);
        let v = credentials(&t, &topo, "portal1", None, 0);
        assert_eq!(v["iceServers"][1]["username"], "turn");
        assert_eq!(v["iceServers"][1]["credential"], "turnpw");
    }
}

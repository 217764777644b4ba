//! The embedded default: what `serve` does with no --config and no
//! ./gateway.toml. It makes a dev certificate under certs/ (if absent), a
//! TURN secret, and a starter gateway.toml with one adjunct user and one
//! portal user whose random passwords are printed once and stored only as
//! argon2id hashes.

use std::path::{Path, PathBuf};

use crate::directory::{hash_password, random_secret};

/// Accounts created by the starter, with their one-time passwords.
pub struct Starter {
    pub config_path: PathBuf,
    pub accounts: Vec<(String, String)>,
}

/// Writes the starter files into `dir`. Never overwrites an existing gateway.toml.
pub fn write(dir: &Path) -> anyhow::Result<Starter> {
    let config_path = dir.join("gateway.toml");
    anyhow::ensure!(
        !config_path.exists(),
        "{} already exists",
        config_path.display()
    );
    let certs = dir.join("certs");
    if !certs.join("server.pem").exists() || !certs.join("server.key").exists() {
        crate::tls::write_dev_certs(&certs, &["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    }
    let secrets = dir.join("turn-secrets");
    if !secrets.exists() {
        crate::util::write_private(&secrets, format!("{}\n", random_secret(32)).as_bytes())?;
    }
    let accounts = vec![
        ("appserver1".to_owned(), random_secret(20)),
        ("portal1".to_owned(), random_secret(20)),
    ];
    let hash = |pw: &str| hash_password(pw).map_err(|e| anyhow::anyhow!("hashing failed: {e}"));
    let text = TEMPLATE
        .replace("{APPSERVER_HASH}", &hash(&accounts[0].1)?)
        .replace("{PORTAL_HASH}", &hash(&accounts[1].1)?);
    crate::util::write_private(&config_path, text.as_bytes())?;
    Ok(Starter {
        config_path,
        accounts,
    })
}

const TEMPLATE: &str = r#"# adjunct-gateway starter configuration, written on first `serve`.
# Every key is documented in README.md. Reload with SIGHUP after editing.

[server]
listen = "127.0.0.1:8443"
heartbeat_secs = 30
auth_timeout_secs = 10
max_message_bytes = 65536

[tls]
cert = "certs/server.pem"
key = "certs/server.key"

[network_topology]
# Where WebRTC clients find the TURN server (coturn).
stun_urls = ["stun:127.0.0.1:3478"]
turn_urls = ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]

[turn]
mode = "rest"
# Shared secrets (first one signs); give coturn the same with use-auth-secret.
secrets_file = "turn-secrets"
ttl_secs = 3600
max_ttl_secs = 86400

[portal]
allowed_origins = ["https://127.0.0.1:8443", "https://localhost:8443"]
demo_page = true

[[rights_group]]
name = "Application Servers"
rights = ["Adjunct Server Connection", "one-X CTI API"]

[[rights_group]]
name = "Portal Users"
rights = ["TURN Server Connection", "one-X CTI API"]

[[service_user]]
name = "appserver1"
password = "{APPSERVER_HASH}"
groups = ["Application Servers"]

[[service_user]]
name = "portal1"
password = "{PORTAL_HASH}"
groups = ["Portal Users"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_config_validates_and_never_reuses_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let s = write(dir.path()).unwrap();
        let config = crate::config::Config::load(&s.config_path).unwrap();
        assert_eq!(config.users.len(), 2);
        assert_ne!(s.accounts[0].1, s.accounts[1].1);
        let text = std::fs::read_to_string(&s.config_path).unwrap();
        assert!(
            !text.contains(&s.accounts[0].1),
            "plaintext password written"
        );
        assert!(write(dir.path()).is_err(), "must not overwrite");
    }
}

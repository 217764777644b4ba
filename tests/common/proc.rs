//! A real `adjunct-gateway` process for tests that need the binary itself:
//! its output drained in background threads, signals, bounded waits for a
//! log line or the exit. Killed on drop, and its output printed when a test
//! panics.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_adjunct-gateway");
/// Upper bound for any one process to finish or any one log line to appear.
pub const LIMIT: Duration = Duration::from_secs(15);

/// Removes ANSI escape sequences (the text log format may colour its output).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// Drains a pipe line by line into a shared buffer until EOF.
fn drain(pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = strip_ansi(&String::from_utf8_lossy(&line));
                    sink.lock().unwrap().push_str(&text);
                }
            }
        }
    })
}

/// A running `adjunct-gateway` process whose stdout and stderr are drained
/// in background threads. Dropping it kills the process if still running
/// (and, while panicking, prints what it logged).
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts the binary with `args` in `cwd`; `stdin` is written then closed.
    pub fn spawn(args: &[&str], cwd: &Path, stdin: Option<&str>) -> Proc {
        Proc::spawn_env(args, cwd, stdin, &[])
    }

    /// `spawn` with extra environment variables.
    pub fn spawn_env(args: &[&str], cwd: &Path, stdin: Option<&str>, env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the adjunct-gateway binary");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).unwrap();
            // Dropping the pipe closes it: the child sees EOF.
        }
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stdout.take().unwrap(), stdout.clone()),
            drain(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Proc {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the process to exit, then for its output to be read.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "adjunct-gateway did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// Runs to completion: (exit code, stdout, stderr).
    pub fn finish(mut self) -> (i32, String, String) {
        let status = self.wait_exit(LIMIT);
        let code = status.code().expect("killed by a signal");
        (code, self.stdout(), self.stderr())
    }

    /// Sends a signal by name ("HUP", "TERM") with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Waits (bounded) until `f(stderr)` holds.
    pub async fn wait_stderr(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = self.stderr();
            if f(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} on stderr:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the `listening addr=…` log line and returns the address.
    pub async fn listening(&self) -> SocketAddr {
        let text = self
            .wait_stderr("the listening line", |t| listening_addr(t).is_some())
            .await;
        listening_addr(&text).unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- adjunct-gateway stdout ---\n{}--- adjunct-gateway stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// The address in the gateway's `... listening addr=127.0.0.1:PORT` log line
/// (or its JSON form, `"message":"listening",…,"addr":"127.0.0.1:PORT"`).
pub fn listening_addr(stderr: &str) -> Option<SocketAddr> {
    stderr
        .lines()
        .filter(|l| l.contains("listening"))
        .find_map(|l| {
            let json: Option<serde_json::Value> = serde_json::from_str(l).ok();
            if let Some(addr) = json.as_ref().and_then(|v| v["addr"].as_str()) {
                return addr.parse().ok();
            }
            let rest = &l[l.find("addr=127.0.0.1:")? + "addr=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
}

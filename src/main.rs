//! The command line: parse arguments, call the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use adjunct_gateway::config::Config;
use adjunct_gateway::directory::{check_complexity, hash_password, Complexity};
use clap::{Parser, Subcommand, ValueEnum};

/// Environment variables every command reads, for `--help`.
const ENVIRONMENT: &str = "\
Environment:
  RUST_LOG  The log filter (default: info), e.g. info,audit=warn";

/// `call`'s password. Read by `call` itself, never by clap: an option would
/// invite passing the password on the command line, where every user on the
/// host can read it.
const PASSWORD_ENV: &str = "ADJUNCT_GATEWAY_PASSWORD";

#[derive(Parser)]
#[command(
    name = "adjunct-gateway",
    version,
    about = "TLS WebSocket gateway for adjunct servers and User Portal clients",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One line per event for people, fields as key=value.
    Text,
    /// One JSON object per line, the audit file's fields (docs/AUDIT.md).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. Without --config, uses ./gateway.toml, creating a starter one if absent.
    #[command(after_help = ENVIRONMENT)]
    Serve {
        /// The config file (default: ./gateway.toml, written with a starter
        /// set of users and a dev certificate if absent).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Read one password from stdin and print its argon2id PHC string.
    HashPassword {
        /// Password complexity rules to enforce.
        #[arg(long, value_enum, default_value_t = Complexity::Medium)]
        complexity: Complexity,
        /// The account the password is for (it must not be the password).
        #[arg(long)]
        user: Option<String>,
    },
    /// Validate a config file; on error print file:line and the problem, exit 1.
    CheckConfig {
        /// The config file to validate.
        file: PathBuf,
    },
    /// Write a dev CA (ca.pem) and a server certificate and key signed by it.
    GenCert {
        /// The directory to write ca.pem, server.pem and server.key (0600)
        /// into; created if missing, existing files overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// DNS name or IP address for the server certificate (repeatable;
        /// default: localhost and 127.0.0.1).
        #[arg(long = "host", value_name = "HOST")]
        hosts: Vec<String>,
    },
    /// Print, for each service right, every operation it opens and where it
    /// may be called, then the rules (docs/RIGHTS.md is this output).
    Catalog {
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
        /// Apply this config file's [[catalog]] entries (default: the
        /// built-in catalog alone).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Log in to a gateway, call one method and print its result as JSON.
    /// The password comes from ADJUNCT_GATEWAY_PASSWORD, else a prompt.
    #[command(
        arg_required_else_help = true,
        after_help = "Environment:\n  ADJUNCT_GATEWAY_PASSWORD  The password to log in with \
            (else a prompt without echo); never printed"
    )]
    Call(CallArgs),
    /// Cluster mode (docs/CLUSTER.md): what the cluster holds in NATS.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the shared configuration stored in NATS (TOML, comments kept;
    /// it holds password hashes and TURN secrets: store it like the file).
    Export {
        /// A node's config file; its [cluster] section says where NATS is.
        #[arg(long, value_name = "FILE", default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// List the nodes that are up, their sessions and the revision each
    /// has installed (the nodes heard from within one second).
    Status {
        /// A node's config file; its [cluster] section says where NATS is.
        #[arg(long, value_name = "FILE", default_value = "gateway.toml")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct CallArgs {
    /// The gateway's endpoint, e.g. wss://gw.example.com:8443/adjunct
    #[arg(long)]
    url: String,
    /// The service user to log in as.
    #[arg(long)]
    user: String,
    /// PEM file of the CA to trust (default: the system's roots).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Subscribe to this topic pattern and print its events until Ctrl-C
    /// (repeatable; after METHOD, if one is given).
    #[arg(long = "watch", value_name = "TOPIC")]
    watch: Vec<String>,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// The method, e.g. session.info.
    #[arg(required_unless_present = "watch")]
    method: Option<String>,
    /// Its params as JSON, e.g. '{"ttl": 600}'.
    params: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    adjunct_gateway::tls::install_provider();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::HashPassword { complexity, user } => hash(complexity, user.as_deref()),
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} rights groups, {} service users)",
                    file.display(),
                    c.groups.len(),
                    c.users.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Call(args) => call(args),
        Command::Catalog { json, config } => catalog(json, config),
        Command::Cluster(command) => cluster(command),
        Command::GenCert { out, hosts } => {
            let hosts = if hosts.is_empty() {
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
            } else {
                hosts
            };
            match adjunct_gateway::tls::write_dev_certs(&out, &hosts) {
                Ok(()) => {
                    println!(
                        "wrote {0}/ca.pem, {0}/server.pem, {0}/server.key",
                        out.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gen-cert: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The log on stderr, filtered by `RUST_LOG` (default `info`), plus the
/// audit file layer, which `RUST_LOG` does not filter. The JSON log is the
/// audit file's line format (flat, the same field names), not
/// tracing-subscriber's nested one.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => adjunct_gateway::jsonlog::layer()
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(adjunct_gateway::audit::layer())
        .init();
}

/// `cluster export` and `cluster status`.
fn cluster(command: ClusterCommand) -> ExitCode {
    let (ClusterCommand::Export { config: path } | ClusterCommand::Status { config: path }) =
        &command;
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if config.cluster.nats.is_empty() {
        eprintln!(
            "{}: [cluster] nats is empty: this node runs alone",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use adjunct_gateway::bus::nats;
    let done = rt.block_on(async {
        match command {
            ClusterCommand::Export { .. } => {
                let (text, revision) = nats::export(&config).await?;
                eprintln!("# shared configuration, revision {revision}");
                print!("{text}");
            }
            ClusterCommand::Status { .. } => {
                println!("{:<24} {:>8} revision", "node", "sessions");
                for p in nats::status(&config).await? {
                    println!("{:<24} {:>8} {}", p.node, p.sessions, p.revision);
                }
            }
        }
        anyhow::Ok(())
    });
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let path = match config {
        Some(p) => p,
        None => {
            let p = PathBuf::from("gateway.toml");
            if !p.exists() {
                match adjunct_gateway::starter::write(std::path::Path::new(".")) {
                    Ok(s) => {
                        println!("Wrote a starter configuration to {} (dev certificate in certs/, CA in certs/ca.pem).", s.config_path.display());
                        println!("These passwords are shown once and stored only as hashes:");
                        for (user, pw) in &s.accounts {
                            println!("  {user}: {pw}");
                        }
                    }
                    Err(e) => {
                        eprintln!("cannot write the starter configuration: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            p
        }
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(adjunct_gateway::run(config)) {
        Ok(()) => {
            // Blocking tasks (argon2) must not hold the exit.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("adjunct-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn catalog(json: bool, config: Option<PathBuf>) -> ExitCode {
    use adjunct_gateway::catalog::{doc, Catalog};
    let catalog = match config.map(|p| Config::load(&p)) {
        None => Catalog::default(),
        Some(Ok(c)) => c.catalog,
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{:#}", doc::json(&catalog));
    } else {
        print!("{}", doc::text(&catalog));
    }
    ExitCode::SUCCESS
}

/// Builds a Tokio runtime, or says why not.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("cannot start the runtime: {e}"))
        .ok()
}

fn call(args: CallArgs) -> ExitCode {
    use adjunct_gateway::call::{self, Call};
    let CallArgs {
        url,
        user,
        ca,
        watch,
        timeout,
        method,
        params,
    } = args;
    let params = match params.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            eprintln!("call: PARAMS is not JSON: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) => p,
        Err(_) => match rpassword::prompt_password(format!("password for {user}: ")) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("call: no password: set {PASSWORD_ENV} or run on a terminal ({e})");
                return ExitCode::FAILURE;
            }
        },
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let call = Call {
        url,
        user,
        password,
        ca,
        method,
        params,
        watch,
        timeout: std::time::Duration::from_secs(timeout),
    };
    match runtime.block_on(call::run(call)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("call: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hash(complexity: Complexity, user: Option<&str>) -> ExitCode {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        // Typed by a person: no echo, and asked twice.
        let first = rpassword::prompt_password("password: ");
        let again = first
            .as_ref()
            .ok()
            .map(|_| rpassword::prompt_password("again: "));
        match (first, again) {
            (Ok(a), Some(Ok(b))) if a == b => line = a,
            (Ok(_), Some(Ok(_))) => {
                eprintln!("hash-password: the two passwords differ");
                return ExitCode::FAILURE;
            }
            _ => {
                eprintln!("hash-password: cannot read the password");
                return ExitCode::FAILURE;
            }
        }
    } else if stdin.lock().read_line(&mut line).is_err() {
        eprintln!("hash-password: cannot read stdin");
        return ExitCode::FAILURE;
    }
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if let Err(rule) = check_complexity(password, user, complexity) {
        eprintln!("hash-password: refused: {rule}");
        return ExitCode::FAILURE;
    }
    match hash_password(password) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every subcommand, with the path to its command.
    fn args(cmd: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in cmd.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in cmd.get_subcommands() {
            args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_cli_is_well_formed_and_every_argument_has_help() {
        Cli::command().debug_assert();
        let mut all = Vec::new();
        args(&Cli::command(), "adjunct-gateway", &mut all);
        assert!(all.len() > 10, "{} arguments", all.len());
        let missing: Vec<String> = all
            .iter()
            .filter(|(_, a)| a.get_help().is_none() && a.get_long_help().is_none())
            .map(|(path, a)| format!("{path} {}", a.get_id()))
            .collect();
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn call_help_names_the_password_variable_and_no_subcommand_lacks_about() {
        let mut cli = Cli::command();
        let call = cli.find_subcommand_mut("call").unwrap();
        let help = call.render_long_help().to_string();
        assert!(help.contains(PASSWORD_ENV), "{help}");
        for sub in Cli::command().get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
        }
    }
}

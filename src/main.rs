//! The command line: parse arguments, call the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use adjunct_gateway::config::Config;
use adjunct_gateway::directory::{check_complexity, hash_password, Complexity};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "adjunct-gateway",
    version,
    about = "TLS WebSocket gateway for adjunct servers and User Portal clients"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. Without --config, uses ./gateway.toml, creating a starter one if absent.
    Serve {
        #[arg(long)]
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
    CheckConfig { file: PathBuf },
    /// Write a dev CA (ca.pem) and a server certificate and key signed by it.
    GenCert {
        #[arg(long)]
        out: PathBuf,
        /// DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Log in to a gateway, call one method and print its result as JSON.
    /// The password comes from ADJUNCT_GATEWAY_PASSWORD, else a prompt.
    #[command(arg_required_else_help = true)]
    Call(CallArgs),
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
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Subscribe to this topic pattern and print its events until Ctrl-C
    /// (repeatable; after METHOD, if one is given).
    #[arg(long = "watch", value_name = "TOPIC")]
    watch: Vec<String>,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, default_value_t = 30)]
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
    let password = match std::env::var("ADJUNCT_GATEWAY_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            match rpassword::prompt_password(format!("password for {user}: ")) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("call: no password: set ADJUNCT_GATEWAY_PASSWORD or run on a terminal ({e})");
                    return ExitCode::FAILURE;
                }
            }
        }
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

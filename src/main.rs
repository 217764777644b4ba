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

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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

fn hash(complexity: Complexity, user: Option<&str>) -> ExitCode {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (one line):");
    }
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() {
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

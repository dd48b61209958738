//! The `tokengate` command: parses the command line, sets up logging and the
//! runtime, and hands over to the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokengate::config::{Config, LogConfig, LogFormat, Product};

/// API-token authentication gateway for Jira and Confluence Data Center.
///
/// People and CI pipelines call Jira or Confluence through tokengate with API
/// tokens instead of passwords; tokengate checks the token and forwards the
/// request with upstream credentials.
#[derive(Parser)]
#[command(name = "tokengate", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Check a configuration file; prints every problem and exits non-zero if there is one.
    CheckConfig {
        /// Configuration file.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Run the gateway in front of a built-in simulated Jira, with a temporary store.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Which product to simulate.
        #[arg(long, value_enum, default_value_t = DemoProduct::Jira)]
        product: DemoProduct,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DemoProduct {
    Jira,
    Confluence,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&config.log);
            block_on(async move { tokengate::run(config, shutdown_signal()).await })
        }
        Command::Demo { listen, product } => {
            init_logging(&LogConfig::default());
            let product = match product {
                DemoProduct::Jira => Product::Jira,
                DemoProduct::Confluence => Product::Confluence,
            };
            block_on(async move { tokengate::demo::run(listen, product, shutdown_signal()).await })
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = Result<(), tokengate::StartError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tokengate could not start");
            eprintln!("tokengate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(problems) = config.secrets() {
        let src = std::fs::read_to_string(path).unwrap_or_default();
        for (table, key, message) in problems {
            match Config::line_of_key(&src, table, key) {
                Some(line) => eprintln!("{}:{line}: [{table}] {key}: {message}", path.display()),
                None => eprintln!("{}: [{table}] {key}: {message}", path.display()),
            }
        }
        return ExitCode::from(2);
    }
    println!("{}: OK", path.display());
    ExitCode::SUCCESS
}

fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

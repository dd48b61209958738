//! The `tokengate` command: parses the command line, sets up logging and the
//! runtime, and hands over to the library.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokengate::config::{Config, LogConfig, LogFormat, Product, StoreBackend};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

// Many small, short-lived allocations per proxied request: mimalloc serves
// them faster than glibc's allocator (measured with benches/load.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Maintenance of the token store: counts, export, import, schema
    /// migrations (a sled store only while the gateway is stopped).
    Store {
        #[command(subcommand)]
        action: StoreAction,
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

#[derive(Subcommand)]
enum StoreAction {
    /// Counts: tokens, users, expired, size on disk.
    Stats {
        /// Configuration file; its [tokens] table names the store.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Every token as a JSON line: SHA-256 and metadata, never a plain token.
    Export {
        /// Configuration file; its [tokens] table names the store.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Add tokens from an export; idempotent, keeps ids.
    Import {
        /// Configuration file; its [tokens] table names the store.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Read from here instead of standard input.
        #[arg(long, short)]
        input: Option<PathBuf>,
    },
    /// Bring a PostgreSQL store's schema up to date, then exit (gateways
    /// also do it when they start).
    Migrate {
        /// Configuration file; its [tokens] table names the store.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DemoProduct {
    Jira,
    Confluence,
}

fn main() -> ExitCode {
    // Transparent huge pages make every touched 2 MB area of the heap
    // resident: with them, each idle connection cost ~14 KB more and start-up
    // 40 MB more (docs/benchmarks.md, "A million tokens"). mimalloc's `no_thp` only stops
    // it asking for them; this also covers hosts where THP is "always".
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config: path } => {
            // Every problem of the file and every missing secret, before anything starts.
            let checked = match Config::check_file(&path, &|var| std::env::var(var).ok()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let log = init_logging(&checked.config.log);
            for warning in checked.warning_lines() {
                tracing::warn!("{warning}");
            }
            let listeners = Listeners::of(&checked.config);
            block_on(serve(path, checked.config, log), &listeners)
        }
        Command::Store { action } => store_tool(action),
        Command::Demo { listen, product } => {
            let _ = init_logging(&LogConfig::default());
            let product = match product {
                DemoProduct::Jira => Product::Jira,
                DemoProduct::Confluence => Product::Confluence,
            };
            let listeners = Listeners {
                public: Some((listen, "--listen")),
                admin: None,
            };
            block_on(
                async move { tokengate::demo::run(listen, product, shutdown_signal()).await },
                &listeners,
            )
        }
    }
}

/// The configured listeners, to say which one could not be opened: each
/// address with the setting it came from.
struct Listeners {
    public: Option<(SocketAddr, &'static str)>,
    admin: Option<SocketAddr>,
}

impl Listeners {
    fn of(config: &Config) -> Listeners {
        Listeners {
            public: Some((config.server.listen, "[server] listen")),
            admin: config.admin_listen_addr().ok().flatten(),
        }
    }

    /// The start error in the operator's terms: which listener, which setting.
    fn describe(&self, error: &tokengate::StartError) -> String {
        let tokengate::StartError::Bind { addr, source } = error else {
            return error.to_string();
        };
        let which = match self.public {
            _ if self.admin == Some(*addr) => {
                " (the admin listener for /healthz, /readyz and /metrics, [server] admin_listen)"
                    .to_string()
            }
            Some((public, setting)) if public == *addr => {
                format!(" (the public listener, {setting})")
            }
            _ => String::new(),
        };
        format!("cannot listen on {addr}{which}: {source}")
    }
}

fn block_on(
    fut: impl std::future::Future<Output = Result<(), tokengate::StartError>>,
    listeners: &Listeners,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
            // Once: in the log's format when errors are logged, else plainly.
            let error = listeners.describe(&e);
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!(error, "tokengate could not start");
            } else {
                eprintln!("tokengate could not start: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

fn store_tool(action: StoreAction) -> ExitCode {
    let config_path = match &action {
        StoreAction::Stats { config }
        | StoreAction::Export { config, .. }
        | StoreAction::Import { config, .. }
        | StoreAction::Migrate { config } => config,
    };
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(store_action(action, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokengate store: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn store_action(
    action: StoreAction,
    config: Config,
) -> Result<(), Box<dyn std::error::Error>> {
    use tokengate::store::{open, tools};
    let env = |var: &str| std::env::var(var).ok();
    if let StoreAction::Migrate { .. } = action {
        if config.tokens.backend != StoreBackend::Postgres {
            return Err("[tokens] backend is \"sled\": a sled store is brought up to date when the gateway opens it; nothing to migrate".into());
        }
        let settings = open::postgres_settings(&config, &env)?;
        let (before, after) = tokengate::store::postgres_migrate(&settings).await?;
        if before == after {
            eprintln!("the database schema is at version {after}; nothing to do");
        } else {
            eprintln!("the database schema moved from version {before} to {after}");
        }
        return Ok(());
    }
    let backend = open::open_backend(&config, &env).await?;
    let outcome: Result<(), tools::ToolError> = async {
        match action {
            StoreAction::Stats { .. } => {
                let now = tokengate::clock::Clock::now_ms(&tokengate::clock::SystemClock);
                let disk = (config.tokens.backend == StoreBackend::Sled)
                    .then_some(config.tokens.store_path.as_path());
                let s = tools::stats(&*backend, disk, now).await?;
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            }
            StoreAction::Export { output, .. } => {
                let n = match output {
                    Some(path) => {
                        let f = std::fs::File::create(&path)?;
                        tools::export(&*backend, &mut std::io::BufWriter::new(f)).await?
                    }
                    None => tools::export(&*backend, &mut std::io::stdout().lock()).await?,
                };
                eprintln!("exported {n} tokens");
            }
            StoreAction::Import { input, .. } => {
                let (added, present) = match input {
                    Some(path) => {
                        let f = std::fs::File::open(&path)?;
                        tools::import(&*backend, &mut std::io::BufReader::new(f)).await?
                    }
                    None => tools::import(&*backend, &mut std::io::stdin().lock()).await?,
                };
                eprintln!("imported {added} tokens; {present} were already there");
            }
            StoreAction::Migrate { .. } => {}
        }
        Ok(())
    }
    .await;
    let closed = backend.close().await;
    outcome?;
    closed?;
    if config.tokens.backend == StoreBackend::Sled {
        // Opening replays sled's log since its last snapshot and writes a
        // new one: done here once, the gateway's next start after a bulk
        // import is as quick as any other.
        drop(backend);
        let path = config.tokens.store_path.clone();
        tokio::task::spawn_blocking(move || tokengate::store::SledEngine::reopen(&path).map(drop))
            .await??;
    }
    Ok(())
}

fn check_config(path: &Path) -> ExitCode {
    let env = |var: &str| std::env::var(var).ok();
    match Config::check_file(path, &env) {
        Ok(checked) => {
            if let Err(problem) = tokengate::store::open::check(&checked.config, &env) {
                eprintln!("{}: {problem}", path.display());
                return ExitCode::from(2);
            }
            for warning in checked.warning_lines() {
                eprintln!("{warning}");
            }
            println!("{}: OK", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// Changes the log filter on reload, unless `RUST_LOG` set it.
type LogHandle = Option<reload::Handle<EnvFilter, Registry>>;

fn init_logging(log: &LogConfig) -> LogHandle {
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (json, text) = match log.format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .init();
    (!pinned).then_some(handle)
}

/// Serves until SIGTERM or Ctrl-C; SIGHUP reloads the configuration file.
async fn serve(path: PathBuf, config: Config, log: LogHandle) -> Result<(), tokengate::StartError> {
    let running = tokengate::start(config, tokengate::Options::default()).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let reload_requested = async {
            match hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let reload_requested = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = reload_requested => reload(&path, &running, &log),
        }
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

fn reload(path: &Path, running: &tokengate::Running, log: &LogHandle) {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            for problem in e.to_string().lines() {
                tracing::error!(
                    problem,
                    "configuration reload rejected; the running configuration stays"
                );
            }
            return;
        }
    };
    match running.reload(&config) {
        Ok(restart) => {
            if let Some(handle) = log {
                match EnvFilter::try_new(&config.log.level) {
                    Ok(filter) => {
                        let _ = handle.reload(filter);
                    }
                    Err(e) => tracing::warn!(error = %e, "log level not changed"),
                }
            }
            if !restart.is_empty() {
                tracing::warn!(keys = ?restart, "these changes take effect after a restart");
            }
            tracing::info!(config = %path.display(), "configuration reloaded");
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload rejected; the running configuration stays")
        }
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

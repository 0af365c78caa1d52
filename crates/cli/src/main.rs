//! The `thingmq` binary.

mod api_key;
mod bench;
mod console_user;
mod mqtt_conn;
mod mqtt_pub;
mod mqtt_sub;
mod passwd;
mod simulate;
mod things;

/// See `crates/cli/Cargo.toml`: memory freed by hibernating sessions goes back to the system.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use thingmq_server::{Config, Server};

#[derive(Debug, Parser)]
#[command(name = "thingmq", version, about = "An MQTT broker and IoT platform")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (with embedded defaults when no config file is given).
    Serve(ServeArgs),
    /// Check a config file and exit.
    CheckConfig {
        /// The TOML config file.
        config: PathBuf,
    },
    /// Add, update (-c: create the file) or delete (-D) a user in a password file.
    Passwd(passwd::PasswdArgs),
    /// Create an API key for the REST API: prints the key once and stores its digest.
    ApiKey(api_key::ApiKeyArgs),
    /// Add, list or delete users of the web console (roles admin or viewer).
    ConsoleUser(console_user::ConsoleUserArgs),
    /// Publish a message (flags as mosquitto_pub).
    Pub(mqtt_pub::PubArgs),
    /// Subscribe and print messages (flags as mosquitto_sub).
    Sub(mqtt_sub::SubArgs),
    /// Products of the device registry (thing models).
    #[command(subcommand)]
    Product(things::ProductCommand),
    /// Devices of the device registry.
    #[command(subcommand)]
    Device(things::DeviceCommand),
    /// Run simulated devices of a product (from its thing model) against a running server.
    Simulate(simulate::SimulateArgs),
    /// Make a running broker reload its password files, ACLs, TLS certificates, API keys,
    /// console users and device registry (sends it SIGHUP; see `serve --pid-file`).
    /// Connections stay up, except devices removed, disabled or given a new secret; a broken
    /// file keeps the old rules and the broker logs why.
    Reload {
        /// The file `serve --pid-file` wrote.
        #[arg(long, value_name = "PATH")]
        pid_file: PathBuf,
    },
    /// Load-test an MQTT broker (any broker, not only thingmq) and report throughput, latency
    /// and errors.
    Bench(bench::BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (see docs/config.md).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured listeners (repeatable).
    /// The HTTP API then listens on a free port of the first one's address, unless
    /// `--http-bind` says otherwise.
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<std::net::SocketAddr>,
    /// Serve the REST API and metrics on this address instead of the configured one.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    http_bind: Option<std::net::SocketAddr>,
    /// Do not serve the REST API and metrics.
    #[arg(long)]
    no_http: bool,
    /// Once listening, write the bound addresses as JSON to this file (for scripts and tests
    /// that bind port 0).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Directory of the embedded databases: the device layer's SQLite file and, when
    /// `[storage]` is configured, the session store. Default: `storage.data_dir`, else `data`
    /// next to the config file (or in the working directory without one). Created when
    /// missing.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Write the broker's process id to this file (for `thingmq reload`); removed on exit.
    #[arg(long, value_name = "PATH")]
    pid_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => {
            Config::from_file(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::Passwd(args) => passwd::run(args),
        Command::ApiKey(args) => api_key::run(args),
        Command::ConsoleUser(args) => console_user::run(args),
        Command::Pub(args) => client_tool(mqtt_pub::run(args)),
        Command::Sub(args) => client_tool(mqtt_sub::run(args)),
        Command::Product(cmd) => things::product(cmd),
        Command::Device(cmd) => things::device(cmd),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Reload { pid_file } => reload(&pid_file),
    }
}

/// Sends SIGHUP to the broker whose process id is in `pid_file`.
fn reload(pid_file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("cannot read pid file {}", pid_file.display()))?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .with_context(|| {
            format!(
                "{}: not a process id: {:?}",
                pid_file.display(),
                text.trim()
            )
        })?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).with_context(|| {
        format!(
            "cannot signal process {} (from {}); is the broker running?",
            pid.as_raw_nonzero(),
            pid_file.display()
        )
    })?;
    println!(
        "asked thingmq (pid {}) to reload; its log says whether the files loaded",
        pid.as_raw_nonzero()
    );
    Ok(())
}

/// Removes the pid file when the broker stops, also on an error path.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `pub` and `sub` report errors on one line, the way scripts expect of mosquitto_pub/sub
/// ("Error: connection refused: not authorized (0x87)"), and exit with 1.
fn client_tool(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !args.bind.is_empty() {
        config.listeners = args
            .bind
            .iter()
            .map(|&bind| thingmq_server::config::ListenerConfig::tcp(bind))
            .collect();
        // Ad-hoc listeners (tests, scripts) must not collide on the configured HTTP port.
        if config.http.bind.is_some() {
            config.http.bind = Some(std::net::SocketAddr::new(args.bind[0].ip(), 0));
        }
    }
    if let Some(addr) = args.http_bind {
        config.http.bind = Some(addr);
    }
    if args.no_http {
        config.http.bind = None;
    }
    let http = config.http.clone();
    if let (Some(dir), Some(storage)) = (&args.data_dir, config.storage.as_mut()) {
        if storage.data_dir.is_some() {
            storage.data_dir = Some(dir.clone());
        }
    }
    let data_dir = match (
        &args.data_dir,
        config.storage.as_ref().and_then(|s| s.data_dir.clone()),
    ) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir,
        (None, None) => args
            .config
            .as_deref()
            .and_then(std::path::Path::parent)
            .unwrap_or(std::path::Path::new(""))
            .join(thingmq_server::config::DEFAULT_DATA_DIR),
    };
    if let Some(bind) = http.bind {
        anyhow::ensure!(
            bind.ip().is_loopback() || http.api_keys_file.is_some() || http.users_file.is_some(),
            "the HTTP API on {bind} would be open to the network: set http.api_keys_file or http.users_file"
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let config_listeners = config.listeners.clone();
    let sys_interval_secs = config.sys_interval.map_or(0, |d| d.as_secs());
    runtime.block_on(async move {
        let things = config.things.clone();
        let server = Server::start(config).await?;
        let platform = if things.enabled {
            Some(start_things(&server, &things, &data_dir).await?)
        } else {
            None
        };
        let (stop_http, http_done) = tokio::sync::oneshot::channel::<()>();
        let http_started = match http.bind {
            Some(bind) => Some(
                start_http(
                    &server,
                    &config_listeners,
                    bind,
                    &http,
                    platform.clone(),
                    sys_interval_secs,
                    stop_http,
                )
                .await?,
            ),
            None => None,
        };
        let http_addr = http_started.as_ref().map(|(addr, _)| *addr);
        let access = http_started.map(|(_, access)| access);
        let _pid_file = match &args.pid_file {
            Some(path) => {
                std::fs::write(path, format!("{}\n", std::process::id()))
                    .with_context(|| format!("cannot write pid file {}", path.display()))?;
                Some(PidFile(path.clone()))
            }
            None => None,
        };
        if let Some(path) = &args.ready_file {
            let addrs: Vec<String> = server
                .local_addrs()
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect();
            let http = http_addr.map_or("null".to_owned(), |a| format!("\"{a}\""));
            let json = format!("{{\"mqtt\":[{}],\"http\":{http}}}\n", addrs.join(","));
            std::fs::write(path, json)
                .with_context(|| format!("cannot write ready file {}", path.display()))?;
        }
        tracing::info!("{} running", thingmq_server::VERSION);
        run_until_stopped(&server, || {
            if let Some(access) = &access {
                reload_http_files(access, &http);
            }
            // Devices and products changed with `thingmq things …` while this server runs.
            if let Some(platform) = platform.clone() {
                tokio::spawn(async move {
                    if let Err(e) = platform.reload_registry().await {
                        tracing::error!(
                            "cannot reload the device registry, keeping the loaded one: {e}"
                        );
                    }
                });
            }
        })
        .await?;
        tracing::info!("shutting down");
        drop(http_done);
        if let Some(platform) = &platform {
            platform.shutdown().await;
        }
        server.shutdown().await;
        Ok(())
    })
}

/// Binds the HTTP listener and serves the REST API, metrics and console until `stop` is
/// dropped.
/// Starts the device layer on the server's in-process link and lets devices authenticate.
async fn start_things(
    server: &thingmq_server::ServerHandle,
    config: &thingmq_server::config::ThingsConfig,
    data_dir: &std::path::Path,
) -> anyhow::Result<thingmq_things::runtime::Platform> {
    let url = match &config.database_url {
        Some(url) => url.clone(),
        None => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            format!("sqlite://{}?mode=rwc", data_dir.join("things.db").display())
        }
    };
    let store = thingmq_things::store::Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the device database {}", redact(&url)))?;
    let platform = thingmq_things::runtime::Platform::start(
        store,
        server.local_linker(),
        server.admin(),
        thingmq_things::runtime::PlatformConfig {
            call_timeout: config.call_timeout,
            retention_days: config.retention_days,
            max_uplinks_per_sec: config.max_uplinks_per_sec,
            uplink_burst: config.uplink_burst,
            shadow_save_interval: config.shadow_save_interval,
            ..Default::default()
        },
    )
    .await?;
    server.add_access_hook(std::sync::Arc::new(platform.access_hook()));
    Ok(platform)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// SIGHUP for the HTTP side: reads the API keys and console users files again. A file that
/// does not load keeps the previous keys and users (all or nothing), as the broker does with
/// its password file and ACL.
fn reload_http_files(access: &thingmq_api::Access, http: &thingmq_server::config::HttpConfig) {
    let loaded = (|| -> anyhow::Result<_> {
        let keys = match &http.api_keys_file {
            Some(path) => Some(thingmq_api::keys::ApiKeys::load(path)?),
            None => None,
        };
        let users = match &http.users_file {
            Some(path) => Some(thingmq_api::users::ConsoleUsers::load(path)?),
            None => None,
        };
        Ok((keys, users))
    })();
    match loaded.and_then(|(keys, users)| Ok(access.reload(keys, users)?)) {
        Ok(()) if http.api_keys_file.is_some() || http.users_file.is_some() => {
            tracing::info!("API keys and console users reloaded")
        }
        Ok(()) => {}
        Err(e) => tracing::error!("HTTP reload failed, keeping the previous keys and users: {e}"),
    }
}

/// Binds the HTTP listener and serves the REST API and metrics until `stop` is dropped.
async fn start_http(
    server: &thingmq_server::ServerHandle,
    listeners: &[thingmq_server::config::ListenerConfig],
    bind: std::net::SocketAddr,
    http: &thingmq_server::config::HttpConfig,
    platform: Option<thingmq_things::runtime::Platform>,
    sys_interval_secs: u64,
    stop: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<(std::net::SocketAddr, thingmq_api::Access)> {
    use thingmq_server::config::ListenerTransport;
    let keys = match &http.api_keys_file {
        Some(path) => thingmq_api::keys::ApiKeys::load(path)?,
        None => Default::default(),
    };
    let users = match &http.users_file {
        Some(path) => thingmq_api::users::ConsoleUsers::load(path)?,
        None => Default::default(),
    };
    let access = thingmq_api::Access::new(keys, users).with_secure_cookie(http.secure_cookie);
    // The console's live pages connect to these; `local_addrs` follows the listeners' order.
    let mqtt_ws: Vec<thingmq_api::WsEndpoint> = listeners
        .iter()
        .zip(server.local_addrs())
        .filter_map(|(l, addr)| match &l.transport {
            ListenerTransport::Ws(ws) => Some(thingmq_api::WsEndpoint {
                port: addr.port(),
                path: ws.path.clone(),
                tls: false,
            }),
            ListenerTransport::Wss(_, ws) => Some(thingmq_api::WsEndpoint {
                port: addr.port(),
                path: ws.path.clone(),
                tls: true,
            }),
            _ => None,
        })
        .collect();
    // Where devices connect, for the console's device pages.
    let mqtt: Vec<thingmq_api::MqttEndpoint> = listeners
        .iter()
        .zip(server.local_addrs())
        .filter_map(|(l, addr)| match &l.transport {
            ListenerTransport::Tcp => Some(thingmq_api::MqttEndpoint {
                port: addr.port(),
                tls: false,
            }),
            ListenerTransport::Tls(_) => Some(thingmq_api::MqttEndpoint {
                port: addr.port(),
                tls: true,
            }),
            _ => None,
        })
        .collect();
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for HTTP"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP API and web console ready (/, /api/v1, /metrics)");
    let state = thingmq_api::ApiState {
        admin: server.admin(),
        access: access.clone(),
        mqtt_ws: mqtt_ws.into(),
        mqtt: mqtt.into(),
        sys_interval_secs,
        platform,
    };
    tokio::spawn(async move {
        let mut stop = stop;
        let stopped = async move {
            stop.closed().await;
        };
        if let Err(e) = thingmq_api::serve(listener, state, stopped).await {
            tracing::error!("HTTP server failed: {e}");
        }
    });
    Ok((addr, access))
}

/// Waits for SIGINT or SIGTERM; SIGHUP reloads the password file, the ACL, the TLS
/// certificates and (through `reload_http`) the API keys and console users meanwhile (a
/// broken file keeps the old ones; the log says why).
async fn run_until_stopped(
    server: &thingmq_server::ServerHandle,
    reload_http: impl Fn(),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("cannot handle SIGINT"),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => {
                // Errors are logged by the server; the old rules and certificates stay in
                // force.
                let _ = server.reload_access();
                let _ = server.reload_certificates();
                reload_http();
            }
        }
    }
}

//! The `thingmq` binary.

mod passwd;

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
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (see docs/config.md).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Listen on this address instead of the configured listeners (repeatable).
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<std::net::SocketAddr>,
    /// Once listening, write the bound addresses as JSON to this file (for scripts and tests
    /// that bind port 0).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
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
    }
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
    runtime.block_on(async move {
        let server = Server::start(config).await?;
        if let Some(path) = &args.ready_file {
            let addrs: Vec<String> = server
                .local_addrs()
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect();
            let json = format!("{{\"mqtt\":[{}]}}\n", addrs.join(","));
            std::fs::write(path, json)
                .with_context(|| format!("cannot write ready file {}", path.display()))?;
        }
        tracing::info!("{} running", thingmq_server::VERSION);
        run_until_stopped(&server).await?;
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM; SIGHUP reloads the password file and ACL meanwhile (a broken
/// file keeps the old rules; the server logs why).
async fn run_until_stopped(server: &thingmq_server::ServerHandle) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("cannot handle SIGINT"),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => {
                // The error is logged by the server; the old rules stay in force.
                let _ = server.reload_access();
            }
        }
    }
}

//! `thingmq bench`: a load generator for MQTT brokers.
//!
//! Scenarios: `conn` (connect storm, connections/s and memory per connection), `pub`, `sub`,
//! `fanin` (N publishers → 1 subscriber on `bench/#`), `fanout` (1 publisher → N
//! subscribers), `shared` (a `$share` group), `pairs` (N publisher/subscriber pairs, one topic
//! each) and `retained` (subscribe to many retained topics). Every payload carries its send
//! time, so subscribers measure end-to-end latency into an HDR histogram.
//!
//! Built on `thingmq-codec` and tokio directly, not on a client library: see [`wire`] for why.
//! Module map: [`wire`] (one connection), [`flow`] (publish/subscribe scenarios), [`connect`]
//! (`conn`), [`retained`], [`pacing`], [`payload`], [`report`], [`procfs`] (broker RSS/CPU).

mod connect;
mod flow;
mod pacing;
mod payload;
mod procfs;
mod report;
mod retained;
mod wire;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::{Counters, Report};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thingmq_codec::{ProtocolVersion, QoS};

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// Connect `--clients` clients at `--rate` connections/s, then hold them `--hold` seconds.
    Conn,
    /// Publishers only (default 10), each to its own topic.
    Pub,
    /// Subscribers only (default 10) on `--filter`, counting what others publish.
    Sub,
    /// Many publishers (default 100) → one subscriber on `bench/#`.
    Fanin,
    /// One publisher → many subscribers (default 100) on `bench/#`.
    Fanout,
    /// Publishers (default 10) → a `$share/bench/bench/#` group of subscribers (default 10).
    Shared,
    /// `--publishers` publisher/subscriber pairs (default 100), one topic per pair.
    Pairs,
    /// Store `--topics` retained messages (default 10,000), then time subscribers receiving them.
    Retained,
}

/// Options of `thingmq bench`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BenchArgs {
    /// The scenario.
    #[arg(value_enum)]
    pub(crate) scenario: Scenario,
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) host: String,
    /// Broker port.
    #[arg(short, long, default_value_t = 1883)]
    pub(crate) port: u16,
    /// MQTT version: 3.1.1 or 5.
    #[arg(short = 'V', long = "mqtt-version", default_value = "3.1.1", value_parser = ["3.1.1", "311", "5"])]
    pub(crate) mqtt_version: String,
    /// QoS of publishes and subscriptions.
    #[arg(short, long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub(crate) qos: u8,
    /// Payload size in bytes (at least 16: send time and sequence number).
    #[arg(short = 's', long = "size", default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..))]
    pub(crate) size: u32,
    /// Publishers (overrides the scenario's default).
    #[arg(short = 'P', long)]
    pub(crate) publishers: Option<usize>,
    /// Subscribers (overrides the scenario's default).
    #[arg(short = 'S', long)]
    pub(crate) subscribers: Option<usize>,
    /// Clients of the `conn` scenario.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub(crate) clients: usize,
    /// Total message rate over all publishers in msg/s, paced (0 = as fast as possible); for
    /// `conn`, connections per second.
    #[arg(short, long, default_value_t = 0.0)]
    pub(crate) rate: f64,
    /// Seconds the publishers run.
    #[arg(short, long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// Spread publishes over this many distinct topics `bench/0 …` (0 = one topic per
    /// publisher); for `retained`, the number of retained topics.
    #[arg(long, default_value_t = 0)]
    pub(crate) topics: usize,
    /// Subscription filter (default `bench/#`; `$share/bench/bench/#` for `shared`).
    #[arg(long)]
    pub(crate) filter: Option<String>,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) inflight: u16,
    /// Connection handshakes in progress at once.
    #[arg(long, default_value_t = 100)]
    pub(crate) concurrency: usize,
    /// `conn`: seconds to keep the connections open after connecting.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) hold: f64,
    /// `conn` with `--broker-pid`: seconds the connections are left idle before the broker's
    /// memory is measured (a broker may shrink idle connections after a while: thingmq
    /// hibernates them after `limits.hibernate_after_ms`, 5 s by default).
    #[arg(long, default_value_t = 1.0)]
    pub(crate) settle: f64,
    /// `conn`: each client also subscribes (at `--qos`) to a topic of its own,
    /// `<PREFIX>/<client id>`, as a device does to its command topic.
    #[arg(long, value_name = "PREFIX")]
    pub(crate) subscribe_own: Option<String>,
    /// Longest wait for outstanding deliveries after the publishers stop, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) drain: f64,
    /// The broker's process id: report its RSS and CPU (Linux /proc).
    #[arg(long)]
    pub(crate) broker_pid: Option<u32>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress line.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// Everything a scenario needs, resolved from the arguments.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) args: BenchArgs,
    pub(crate) addr: SocketAddr,
    pub(crate) version: ProtocolVersion,
    pub(crate) qos: QoS,
    pub(crate) counters: Arc<Counters>,
    pub(crate) probe: Option<Arc<Mutex<procfs::Probe>>>,
    /// Makes client ids unique across concurrent bench processes.
    pub(crate) run_id: String,
    /// Subscribers run on their own runtime thread. On the publishers' runtime, 100
    /// unthrottled publisher tasks would get 100 turns for each of the subscriber's, and the
    /// generator, not the broker, would cap what is received; as a separate thread the
    /// subscribers get their share of the CPU from the kernel scheduler.
    pub(crate) sub_runtime: tokio::runtime::Handle,
}

impl Ctx {
    /// `b-<run>-<role><i>`: at most 23 bytes up to a million clients, the length every
    /// MQTT 3.1.1 server must accept and the most MQTT 3.1 allows, so a run is valid with
    /// any broker and any protocol version.
    pub(crate) fn client_id(&self, role: &str, i: usize) -> String {
        client_id(&self.run_id, role, i)
    }

    pub(crate) fn sample_rss(&self) -> Option<u64> {
        self.probe.as_ref()?.lock().ok()?.sample()
    }
}

/// Runs `thingmq bench`.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let sub_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-sub")
        .enable_all()
        .build()
        .context("cannot start the subscribers' runtime")?;
    let json = args.json;
    let report = runtime.block_on(run_async(args, sub_runtime.handle().clone()));
    // Subscriber tasks still reading (after an error) must not keep the process waiting.
    sub_runtime.shutdown_background();
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

async fn run_async(args: BenchArgs, sub_runtime: tokio::runtime::Handle) -> anyhow::Result<Report> {
    let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot resolve {}", args.host))?
        .next()
        .with_context(|| format!("no address for {}", args.host))?;
    let version = match args.mqtt_version.as_str() {
        "5" => ProtocolVersion::V5,
        _ => ProtocolVersion::V3_1_1,
    };
    let qos = QoS::from_u8(args.qos).expect("clap checked the range");
    if args.duration.is_nan() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    let probe = match args.broker_pid {
        Some(pid) => Some(Arc::new(Mutex::new(procfs::Probe::new(pid)?))),
        None => None,
    };
    let nanos = payload::now_ns() % 1_000_000_000;
    let ctx = Arc::new(Ctx {
        run_id: run_id(std::process::id(), nanos),
        args,
        addr,
        version,
        qos,
        counters: Arc::new(Counters::default()),
        probe,
        sub_runtime,
    });
    let progress = Progress::start(&ctx);
    let result = match ctx.args.scenario {
        Scenario::Conn => connect::run(&ctx).await,
        Scenario::Retained => retained::run(&ctx).await,
        _ => flow::run(&ctx).await,
    };
    progress.finish();
    let mut report = result?;
    report.scenario = format!("{:?}", ctx.args.scenario).to_lowercase();
    report.mqtt_version = match version {
        ProtocolVersion::V5 => "5".into(),
        _ => "3.1.1".into(),
    };
    report.qos = ctx.args.qos;
    report.payload_bytes = ctx.args.size as usize;
    if let Some(p) = &ctx.probe {
        report.broker = p.lock().ok().and_then(|mut p| p.finish());
    }
    Ok(report)
}

/// The live progress line on stderr, redrawn from the shared counters.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(ctx: &Arc<Ctx>) -> Progress {
        let visible = !ctx.args.quiet && std::io::stderr().is_terminal();
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                .expect("valid template"),
        );
        let ticker = tokio::spawn({
            let (ctx, bar) = (ctx.clone(), bar.clone());
            async move {
                let c = &ctx.counters;
                let mut last = (0, 0, Instant::now());
                let mut interval = tokio::time::interval(Duration::from_millis(250));
                loop {
                    interval.tick().await;
                    let (sent, recv) = (Counters::get(&c.sent), Counters::get(&c.received));
                    let dt = last.2.elapsed().as_secs_f64().max(1e-3);
                    let rss = ctx
                        .sample_rss()
                        .map(|kb| format!(" broker RSS {} MB", kb / 1024))
                        .unwrap_or_default();
                    bar.set_message(format!(
                        "conn {} sent {} ({:.0}/s) recv {} ({:.0}/s) errors {}{rss}",
                        Counters::get(&c.connected),
                        sent,
                        (sent - last.0) as f64 / dt,
                        recv,
                        (recv - last.1) as f64 / dt,
                        Counters::get(&c.errors),
                    ));
                    bar.tick();
                    last = (sent, recv, Instant::now());
                }
            }
        });
        Progress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

fn client_id(run_id: &str, role: &str, i: usize) -> String {
    format!("b-{run_id}-{role}{i}")
}

/// Eight hex digits from the process id and the clock, so that runs (and their persistent
/// sessions) don't share client ids.
fn run_id(pid: u32, nanos: u64) -> String {
    let mixed = (u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos) as u32;
    format!("{mixed:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_fit_23_bytes_up_to_a_million_clients() {
        let run = run_id(4_194_304, 999_999_999);
        assert_eq!(run.len(), 8);
        for role in ["conn", "pub", "sub"] {
            let id = client_id(&run, role, 999_999);
            assert!(id.len() <= 23, "{id} is {} bytes", id.len());
        }
        assert_ne!(run_id(1, 5), run_id(2, 5));
        assert_ne!(run_id(1, 5), run_id(1, 6));
    }
}

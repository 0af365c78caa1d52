//! `thingmq sub`: subscribe and print messages, with the flags of mosquitto_sub, plus `--json`
//! (one object per line). Reconnects after a lost connection and subscribes again when the
//! broker did not keep the session.

use crate::mqtt_conn::{self, ConnArgs};
use anyhow::bail;
use base64::Engine;
use std::io::Write;
use std::time::Duration;
use thingmq_client::codec::{Publish, SubscribeProperties, SubscriptionOptions};
use thingmq_client::{Client, Event, QoS};

/// Exit code when `-W` expires before `-C` messages arrived (as mosquitto_sub: ETIMEDOUT).
const EXIT_TIMEOUT: i32 = 27;

/// `thingmq sub` flags.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub(crate) struct SubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic filter to subscribe to (repeatable).
    #[arg(short = 't', long)]
    topic: Vec<String>,
    /// QoS of the subscriptions.
    #[arg(short = 'q', long, default_value = "0", value_parser = mqtt_conn::parse_qos)]
    qos: QoS,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Exit after this many seconds (exit code 27 if -C was not reached).
    #[arg(short = 'W', long = "timeout")]
    timeout: Option<u64>,
    /// Print one JSON object per message: topic, qos, retain, payload (UTF-8) or
    /// payload_base64, and properties.
    #[arg(long)]
    json: bool,
    /// Do not print retained messages (those sent because we subscribed).
    #[arg(short = 'R', long = "no-retained")]
    no_retained: bool,
}

pub(crate) fn run(args: SubArgs) -> anyhow::Result<()> {
    let target = args.conn.target()?;
    let mut topics = args.topic.clone();
    topics.extend(target.topic.clone());
    if topics.is_empty() {
        bail!("no topic: give -t (repeatable) or a --url with a topic path");
    }
    for t in &topics {
        thingmq_client::codec::topic::validate_filter(t)
            .map_err(|e| anyhow::anyhow!("invalid topic filter {t:?}: {e}"))?;
    }
    let mut options = args
        .conn
        .options(&target, &format!("thingmq-sub-{}", std::process::id()))?;
    options.user_properties = args.conn.user_properties();
    let options = mqtt_conn::with_reconnect(options);
    let code: i32 = mqtt_conn::runtime()?.block_on(async {
        let deadline = args
            .timeout
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
        let session = mqtt_conn::connect(options, target.transport).await?;
        let client = session.client;
        let mut events = session.events;
        subscribe(&client, &topics, args.qos).await?;
        let mut seen = 0u64;
        let mut out = std::io::stdout().lock();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = sleep_until(deadline) => {
                    let _ = client.disconnect().await;
                    return anyhow::Ok(EXIT_TIMEOUT);
                }
            };
            match event {
                Some(Event::Publish(p)) => {
                    if args.no_retained && p.retain {
                        continue;
                    }
                    print(&mut out, &p, &args)?;
                    seen += 1;
                    if args.count.is_some_and(|c| seen >= c) {
                        client.disconnect().await?;
                        return Ok(0);
                    }
                }
                Some(Event::Connected {
                    session_present, ..
                }) => {
                    if !session_present {
                        subscribe(&client, &topics, args.qos).await?;
                    }
                }
                Some(Event::Disconnected { error: Some(e) }) => {
                    if e.is_permanent() {
                        return Err(e.into());
                    }
                    eprintln!("{e}; reconnecting");
                }
                Some(Event::Disconnected { error: None }) | None => return Ok(0),
                Some(_) => {}
            }
        }
    })?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Subscribes to every topic in one SUBSCRIBE; a refused filter is an error.
async fn subscribe(client: &Client, topics: &[String], qos: QoS) -> anyhow::Result<()> {
    let filters = topics
        .iter()
        .map(|t| {
            let o = SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            };
            (t.clone(), o)
        })
        .collect();
    let ack = client
        .subscribe_many(filters, SubscribeProperties::default())
        .await?;
    for (t, r) in topics.iter().zip(&ack.reasons) {
        if !r.is_success() {
            bail!("subscription to {t:?} refused: {r}");
        }
    }
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn print(out: &mut impl Write, p: &Publish, args: &SubArgs) -> anyhow::Result<()> {
    if args.json {
        writeln!(out, "{}", to_json(p))?;
    } else {
        if args.verbose {
            write!(out, "{} ", p.topic)?;
        }
        out.write_all(&p.payload)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// The `--json` line for a message. The payload is a string when it is UTF-8, else base64
/// under `payload_base64`.
fn to_json(p: &Publish) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut o = Map::new();
    o.insert("topic".into(), json!(p.topic.as_ref() as &str));
    o.insert("qos".into(), json!(p.qos as u8));
    o.insert("retain".into(), json!(p.retain));
    match std::str::from_utf8(&p.payload) {
        Ok(s) => o.insert("payload".into(), json!(s)),
        Err(_) => o.insert(
            "payload_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(&p.payload)),
        ),
    };
    let pr = &p.properties;
    let mut props = Map::new();
    if !pr.user_properties.is_empty() {
        let list: Vec<Value> = pr
            .user_properties
            .iter()
            .map(|(k, v)| json!([k.as_ref() as &str, v.as_ref() as &str]))
            .collect();
        props.insert("user_properties".into(), Value::Array(list));
    }
    if let Some(v) = &pr.content_type {
        props.insert("content_type".into(), json!(v.as_ref() as &str));
    }
    if let Some(v) = &pr.response_topic {
        props.insert("response_topic".into(), json!(v.as_ref() as &str));
    }
    if let Some(v) = &pr.correlation_data {
        props.insert(
            "correlation_data_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(v)),
        );
    }
    if let Some(v) = pr.message_expiry_interval {
        props.insert("message_expiry_interval".into(), json!(v));
    }
    if let Some(v) = pr.payload_format_indicator {
        props.insert("payload_format_indicator".into(), json!(v));
    }
    if !pr.subscription_identifiers.is_empty() {
        let ids: Vec<u32> = pr
            .subscription_identifiers
            .iter()
            .map(|i| i.get())
            .collect();
        props.insert("subscription_identifiers".into(), json!(ids));
    }
    o.insert("properties".into(), Value::Object(props));
    Value::Object(o)
}

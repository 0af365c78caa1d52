//! `thingmq simulate`: N devices of a product, generated from its thing model, speaking Alink
//! to a running thingmq — for demos and for load. Each device registers through the REST API
//! (or fetches its credentials when it exists), connects with an Alink HMAC-SHA256 signature,
//! reports its properties every interval (read-only measurements drift), raises events now
//! and then, and answers property set/get, async services and RRPC calls.

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thingmq_client::{Client, Event, MqttOptions, QoS, Transport};
use thingmq_things::device_auth::{sign, sign_content, SignMethod};
use thingmq_things::now_ms;
use thingmq_things::sim::SimDevice;
use thingmq_things::ThingModel;

#[derive(Debug, clap::Args)]
pub(crate) struct SimulateArgs {
    /// The product whose devices to simulate.
    #[arg(long)]
    product: String,
    /// How many devices.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Device names are this prefix plus a number.
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Milliseconds between property reports of one device.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Chance per report that the device also raises an event.
    #[arg(long, default_value_t = 0.01)]
    event_probability: f64,
    /// MQTT broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// MQTT broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// The REST API that registers the devices.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// An admin API key, when the API needs one (or set `THINGMQ_API_KEY`).
    #[arg(long)]
    api_key: Option<String>,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration_secs: Option<u64>,
    /// New connections per second while starting (a connect storm helps nobody).
    #[arg(long, default_value_t = 500)]
    connect_rate: u32,
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    reports: AtomicU64,
    events: AtomicU64,
    commands: AtomicU64,
}

/// One blocking REST call; returns the status and the JSON body.
fn rest(
    args: &SimulateArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}{path}", args.api.trim_end_matches('/'));
    let mut req = ureq::request(method, &url).set("X-Requested-With", "thingmq-simulate");
    let env_key = std::env::var("THINGMQ_API_KEY").ok();
    if let Some(k) = args.api_key.as_ref().or(env_key.as_ref()) {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e).with_context(|| format!("cannot reach the REST API at {url}")),
    };
    let status = resp.status();
    let value: Value = resp.into_json().unwrap_or(Value::Null);
    Ok((status, value))
}

/// Registers the device or, when it exists, reveals its secret.
fn credentials(args: &SimulateArgs, name: &str) -> anyhow::Result<String> {
    let pk = &args.product;
    let (status, body) = rest(
        args,
        "POST",
        &format!("/api/v1/products/{pk}/devices"),
        Some(json!({"deviceName": name})),
    )?;
    let body = match status {
        201 => body,
        409 => {
            let (status, body) = rest(
                args,
                "POST",
                &format!("/api/v1/devices/{pk}/{name}/credentials"),
                None,
            )?;
            if status != 200 {
                bail!("cannot read the credentials of {name}: {status} {body}");
            }
            body
        }
        _ => bail!("cannot register {name}: {status} {body}"),
    };
    body["deviceSecret"]
        .as_str()
        .map(str::to_owned)
        .context("the API answered without deviceSecret")
}

pub(crate) fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, product) = rest(
        &args,
        "GET",
        &format!("/api/v1/products/{}", args.product),
        None,
    )?;
    if status != 200 {
        bail!("product {:?}: {status} {product}", args.product);
    }
    let model = ThingModel::from_value(&product["tsl"]).context("the product's thing model")?;
    let mut devices = Vec::new();
    for i in 0..args.count {
        let name = format!("{}{i}", args.prefix);
        let secret = credentials(&args, &name)?;
        devices.push((name, secret));
    }
    eprintln!(
        "simulating {} devices of {} against {}:{} (reports every {} ms)",
        devices.len(),
        args.product,
        args.host,
        args.port,
        args.interval_ms
    );
    let args = Arc::new(args);
    let counters = Arc::new(Counters::default());
    runtime.block_on(async move {
        let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
        for (i, (name, secret)) in devices.into_iter().enumerate() {
            let sim = SimDevice::new(model.clone(), i as u64, now_ms());
            tokio::spawn(device(args.clone(), counters.clone(), name, secret, sim));
            tokio::time::sleep(pace).await;
        }
        let started = std::time::Instant::now();
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        ticker.tick().await;
        loop {
            let stop = args
                .duration_secs
                .map(|d| tokio::time::sleep(Duration::from_secs(d).saturating_sub(started.elapsed())));
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = async { if let Some(s) = stop { s.await } else { std::future::pending().await } } => break,
                _ = ticker.tick() => {
                    eprintln!(
                        "{:>6.0} s  connected {}  reports {}  events {}  commands answered {}",
                        started.elapsed().as_secs_f64(),
                        counters.connected.load(Ordering::Relaxed),
                        counters.reports.load(Ordering::Relaxed),
                        counters.events.load(Ordering::Relaxed),
                        counters.commands.load(Ordering::Relaxed),
                    );
                }
            }
        }
        anyhow::Ok(())
    })?;
    Ok(())
}

/// One simulated device, until the process ends.
async fn device(
    args: Arc<SimulateArgs>,
    counters: Arc<Counters>,
    name: String,
    secret: String,
    mut sim: SimDevice,
) {
    let pk = args.product.clone();
    let ts = now_ms().to_string();
    let id = format!("{name}-sim");
    let mut options = MqttOptions::new(format!(
        "{id}|securemode=3,signmethod=hmacsha256,timestamp={ts}|"
    ));
    options.version = thingmq_client::ProtocolVersion::V3_1_1;
    options.username = Some(format!("{name}&{pk}").into());
    let password = sign(
        SignMethod::HmacSha256,
        &secret,
        &sign_content(&id, &name, &pk, Some(&ts)),
    );
    options.password = Some(password.into_bytes().into());
    let transport = Transport::Tcp {
        host: args.host.clone(),
        port: args.port,
    };
    let (client, mut events) = Client::new(options, transport);
    let prefix = format!("/sys/{pk}/{name}/");
    let (tx, mut commands) = tokio::sync::mpsc::channel::<(String, bytes::Bytes)>(64);
    let watcher = counters.clone();
    tokio::spawn(async move {
        let mut up = false;
        while let Some(event) = events.poll().await {
            match event {
                Event::Connected { .. } if !up => {
                    watcher.connected.fetch_add(1, Ordering::Relaxed);
                    up = true;
                }
                Event::Disconnected { .. } if up => {
                    watcher.connected.fetch_sub(1, Ordering::Relaxed);
                    up = false;
                }
                Event::Publish(p) => {
                    let _ = tx.try_send((p.topic.to_string(), p.payload));
                }
                _ => {}
            }
        }
    });
    for filter in ["thing/service/#", "rrpc/request/+"] {
        let _ = client
            .subscribe(format!("{prefix}{filter}"), QoS::AtMostOnce)
            .await;
    }
    let mut ticker = tokio::time::interval(Duration::from_millis(args.interval_ms.max(10)));
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                let now = now_ms();
                let params = sim.tick(now);
                let report = json!({"id": seq.to_string(), "version": "1.0", "params": params,
                    "sys": {"ack": 0}, "method": "thing.event.property.post"});
                if client
                    .publish(format!("{prefix}thing/event/property/post"), QoS::AtMostOnce, false, report.to_string())
                    .await
                    .is_ok()
                {
                    counters.reports.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((event, output)) = sim.maybe_event(args.event_probability, now) {
                    seq += 1;
                    let msg = json!({"id": seq.to_string(), "version": "1.0",
                        "params": {"value": output, "time": now}, "sys": {"ack": 0}});
                    if client
                        .publish(format!("{prefix}thing/event/{event}/post"), QoS::AtMostOnce, false, msg.to_string())
                        .await
                        .is_ok()
                    {
                        counters.events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some((topic, payload)) = commands.recv() => {
                if let Some((reply_topic, reply)) = answer(&mut sim, &prefix, &topic, &payload) {
                    let _ = client.publish(reply_topic, QoS::AtMostOnce, false, reply.to_string()).await;
                    counters.commands.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The device's answer to a command from the platform.
fn answer(
    sim: &mut SimDevice,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Option<(String, Value)> {
    let rest = topic.strip_prefix(prefix)?;
    let request: Value = serde_json::from_slice(payload).ok()?;
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let empty = Map::new();
    let params = request
        .get("params")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let now = now_ms();
    let (reply_topic, data, code, message) = match rest {
        "thing/service/property/set" => match sim.set(params) {
            Ok(()) => (
                format!("{topic}_reply"),
                json!({}),
                200,
                "success".to_string(),
            ),
            Err(v) => (format!("{topic}_reply"), json!({}), 460, v.to_string()),
        },
        "thing/service/property/get" => {
            let ids: Vec<&str> = request
                .get("params")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            (
                format!("{topic}_reply"),
                Value::Object(sim.get(&ids)),
                200,
                "success".into(),
            )
        }
        _ if rest.starts_with("rrpc/request/") => {
            let service = request
                .get("method")
                .and_then(Value::as_str)
                .and_then(|m| m.strip_prefix("thing.service."))
                .unwrap_or_default()
                .to_string();
            let reply_topic = topic.replacen("/rrpc/request/", "/rrpc/response/", 1);
            match sim.call(&service, now) {
                Some(out) => (reply_topic, Value::Object(out), 200, "success".into()),
                None => (
                    reply_topic,
                    json!({}),
                    460,
                    format!("unknown service {service}"),
                ),
            }
        }
        _ => {
            let service = rest.strip_prefix("thing/service/")?;
            if service.ends_with("_reply") {
                return None;
            }
            match sim.call(service, now) {
                Some(out) => (
                    format!("{topic}_reply"),
                    Value::Object(out),
                    200,
                    "success".into(),
                ),
                None => (
                    format!("{topic}_reply"),
                    json!({}),
                    460,
                    format!("unknown service {service}"),
                ),
            }
        }
    };
    Some((
        reply_topic,
        json!({"id": id, "code": code, "data": data, "message": message, "version": "1.0"}),
    ))
}

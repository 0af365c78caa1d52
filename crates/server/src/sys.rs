//! `$SYS/broker/...` topics, published (retained) every configured interval.

use crate::broker::Broker;
use crate::metrics::Metrics;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use thingmq_broker::Message;
use thingmq_codec::QoS;
use tokio::sync::watch;

/// The broker version announced in `$SYS/broker/version`.
pub const VERSION: &str = concat!("thingmq ", env!("CARGO_PKG_VERSION"));

pub(crate) async fn run(broker: Arc<Broker>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => publish_all(&broker),
        }
    }
}

/// Periodic upkeep: drops retained messages whose Message Expiry Interval has passed
/// (they are also skipped on subscribe, so this only bounds memory).
pub(crate) async fn housekeeping(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {
                let now = std::time::Instant::now();
                let removed = broker.retained.write().retain_where(|_, m| !m.is_expired(now));
                if removed > 0 {
                    tracing::debug!(removed, "expired retained messages removed");
                }
            }
        }
    }
}

/// Topic prefix of client lifecycle events: `…/connected` and `…/disconnected`.
pub const CLIENT_EVENTS: &str = "$SYS/brokers/clients";

/// Publishes a client lifecycle event (not retained, QoS 0) on
/// `$SYS/brokers/clients/{connected|disconnected}` with a JSON payload, so the device layer
/// and monitoring tools learn of connections and disconnections as they happen (EMQX
/// publishes the same under `$SYS/brokers/{node}/clients/{id}/…`; we keep the client id in
/// the payload because a client id may hold characters a topic may not). The platform's own
/// in-process links are not announced. A `disconnected` event says why in `reason`
/// (`thingmq_broker::session::CloseReason::name`).
pub(crate) fn client_event(
    broker: &Broker,
    client_id: &str,
    kind: &str,
    info: &crate::admin::ConnectionInfo,
    reason: Option<&str>,
) {
    if info.internal || !broker.client_events {
        return;
    }
    let mut payload = serde_json::json!({
        "clientid": client_id,
        "username": info.username,
        "peer": info.peer.to_string(),
        "protocol": info.protocol.name(),
        "keep_alive": info.keep_alive,
        "connected_at": info.connected_at_ms,
        "ts": crate::admin::unix_ms(std::time::SystemTime::now()),
    });
    if let Some(reason) = reason {
        payload["reason"] = reason.into();
    }
    let message = Message {
        topic: format!("{CLIENT_EVENTS}/{kind}").into(),
        payload: payload.to_string().into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
        expires_at: None,
    };
    broker.publish(&Arc::new(message), None, &mut Vec::new());
}

/// Publishes every `$SYS` topic once.
pub(crate) fn publish_all(broker: &Broker) {
    let m = &broker.metrics;
    let counter = |c: &AtomicU64| Metrics::get(c).to_string();
    let subscriptions = broker.router.read().len().to_string();
    let retained = broker.retained.read().len().to_string();
    let topics: [(&str, String); 24] = [
        ("version", VERSION.to_string()),
        (
            "uptime",
            format!("{} seconds", broker.started.elapsed().as_secs()),
        ),
        ("clients/connected", counter(&m.connections)),
        ("clients/total", counter(&m.sessions)),
        ("clients/connections_total", counter(&m.connections_total)),
        ("messages/received", counter(&m.messages_received)),
        ("messages/sent", counter(&m.messages_sent)),
        ("messages/dropped", {
            let d = Metrics::get(&m.dropped_queue_full)
                + Metrics::get(&m.dropped_expired)
                + Metrics::get(&m.dropped_too_large)
                + Metrics::get(&m.dropped_offline);
            d.to_string()
        }),
        ("bytes/received", counter(&m.bytes_received)),
        ("bytes/sent", counter(&m.bytes_sent)),
        ("subscriptions/count", subscriptions),
        ("retained messages/count", retained),
        ("connections/refused", counter(&m.refused_connections)),
        // What each limit did (docs/config.md lists them with the key that sets the limit).
        ("connections/timed_out", counter(&m.connect_timeouts)),
        (
            "connections/handshake_failed",
            counter(&m.handshake_failures),
        ),
        ("connections/connect_refused", counter(&m.connects_refused)),
        ("connections/auth_failures", counter(&m.auth_failures)),
        (
            "messages/dropped/queue_full",
            counter(&m.dropped_queue_full),
        ),
        ("messages/dropped/too_large", counter(&m.dropped_too_large)),
        ("messages/denied", counter(&m.denied)),
        ("packets/too_large", counter(&m.packets_too_large)),
        ("packets/protocol_errors", counter(&m.protocol_errors)),
        (
            "packets/receive_maximum_exceeded",
            counter(&m.receive_maximum_exceeded),
        ),
        ("publish/throttled", counter(&m.publish_throttled)),
    ];
    let store = m.store.as_ref().map(|h| {
        [
            (
                "store/status",
                if Metrics::get(&h.failing) == 0 {
                    "ok".to_owned()
                } else {
                    "failing".to_owned()
                },
            ),
            ("store/write_failures", counter(&h.write_failures)),
        ]
    });
    for (topic, value) in topics.into_iter().chain(store.into_iter().flatten()) {
        let message = Message {
            topic: format!("$SYS/broker/{topic}").into(),
            payload: value.into(),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            expires_at: None,
        };
        broker.publish(&Arc::new(message), None, &mut Vec::new());
    }
}

//! What bounds a client: `[mqtt]`, the protocol limits of the broker core (validated into
//! `thingmq_broker::BrokerSettings`), and `[limits]`, the connection-level [`Limits`]
//! enforced by connection tasks.

use super::{invalid, raw, set, ConfigError};
use std::time::Duration;
use thingmq_broker::BrokerSettings;
use thingmq_codec::QoS;

/// Limits enforced by connection tasks.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A connection that has not sent CONNECT within this time is closed.
    pub connect_timeout: Duration,
    /// Connections accepted at once over all listeners (0 = no limit).
    pub max_connections: usize,
    /// Messages that may wait for a busy connection before QoS 0 ones are dropped.
    pub outbound_queue: usize,
    /// PUBLISH packets per second one connection may send (0 = no limit). Enforced by not
    /// reading the socket, never by buffering.
    pub max_publish_rate: u64,
    /// PUBLISH bytes (whole packets) per second one connection may send (0 = no limit).
    pub max_publish_bytes_rate: u64,
    /// A session with nothing to do for this long hibernates: it stops being a task until a
    /// packet, a message or a deadline comes (plain TCP connections and offline sessions
    /// only). Zero: never.
    pub hibernate_after: Duration,
}

/// The `[mqtt]` section over the broker core's defaults.
pub(super) fn apply_mqtt(b: &mut BrokerSettings, m: raw::Mqtt) -> Result<(), ConfigError> {
    set(&mut b.max_keep_alive, m.max_keep_alive);
    if let Some(r) = m.receive_maximum {
        if r == 0 {
            return Err(invalid("mqtt.receive_maximum", "must be 1..=65535"));
        }
        b.receive_maximum = r;
    }
    if let Some(r) = m.max_inflight {
        if r == 0 {
            return Err(invalid("mqtt.max_inflight", "must be 1..=65535"));
        }
        b.max_inflight = r;
    }
    if let Some(size) = m.max_packet_size {
        if !(16..=268_435_460).contains(&size) {
            return Err(invalid(
                "mqtt.max_packet_size",
                "must be between 16 and 268435460 bytes",
            ));
        }
        b.max_packet_size = size;
    }
    if let Some(n) = m.max_queued_messages {
        if n == 0 {
            return Err(invalid("mqtt.max_queued_messages", "must be at least 1"));
        }
        b.max_queued_messages = n;
    }
    set(&mut b.max_queued_bytes, m.max_queued_bytes);
    set(&mut b.queue_qos0, m.queue_qos0);
    if let Some(q) = m.max_qos {
        b.max_qos = QoS::from_u8(q).ok_or_else(|| invalid("mqtt.max_qos", "must be 0, 1 or 2"))?;
    }
    set(&mut b.retain_available, m.retain_available);
    set(&mut b.wildcard_subscriptions, m.wildcard_subscriptions);
    set(&mut b.shared_subscriptions, m.shared_subscriptions);
    set(&mut b.subscription_identifiers, m.subscription_identifiers);
    set(&mut b.topic_alias_maximum, m.topic_alias_maximum);
    set(&mut b.max_session_expiry, m.max_session_expiry);
    if let Some(len) = m.max_client_id_len {
        if !(23..=65535).contains(&len) {
            return Err(invalid("mqtt.max_client_id_len", "must be 23..=65535"));
        }
        b.max_client_id_len = len;
    }
    if let Some(levels) = m.max_topic_levels {
        if !(1..=1024).contains(&levels) {
            return Err(invalid("mqtt.max_topic_levels", "must be 1..=1024"));
        }
        b.max_topic_levels = levels;
    }
    Ok(())
}

/// The `[limits]` section over the defaults in `limits`.
pub(super) fn apply_limits(limits: &mut Limits, l: raw::Limits) -> Result<(), ConfigError> {
    if let Some(ms) = l.connect_timeout_ms {
        if ms == 0 {
            return Err(invalid("limits.connect_timeout_ms", "must be above 0"));
        }
        limits.connect_timeout = Duration::from_millis(ms);
    }
    set(&mut limits.max_connections, l.max_connections);
    if let Some(q) = l.outbound_queue {
        if q == 0 {
            return Err(invalid("limits.outbound_queue", "must be above 0"));
        }
        limits.outbound_queue = q;
    }
    set(&mut limits.max_publish_rate, l.max_publish_rate);
    set(&mut limits.max_publish_bytes_rate, l.max_publish_bytes_rate);
    if let Some(ms) = l.hibernate_after_ms {
        limits.hibernate_after = Duration::from_millis(ms);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn settings_are_applied() {
        let c = Config::from_toml(
            "[mqtt]\nmax_qos = 1\nmax_keep_alive = 60\n[limits]\nconnect_timeout_ms = 500\nmax_publish_rate = 20\nmax_publish_bytes_rate = 4096\nhibernate_after_ms = 250\n[sys]\ninterval_secs = 0\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_publish_rate, 20);
        assert_eq!(c.limits.max_publish_bytes_rate, 4096);
        assert_eq!(c.limits.hibernate_after, Duration::from_millis(250));
        assert_eq!(c.broker.max_qos, QoS::AtLeastOnce);
        assert_eq!(c.broker.max_keep_alive, 60);
        assert_eq!(c.limits.connect_timeout, Duration::from_millis(500));
        assert!(c.sys_interval.is_none());
    }
}

//! Connection lifecycle: CONNECT checks, attaching a connection (CONNACK, resending), normal
//! and abnormal disconnects, takeover, wills and session expiry.

use super::{CloseReason, Connection, Output, Session, Will};
use crate::{BrokerSettings, Message, TravellingProperties, Violation};
use bytestring::ByteString;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thingmq_codec::topic::validate_name;
use thingmq_codec::{
    ConnAck, ConnAckProperties, Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode,
};

/// Checks a CONNECT against the spec's client-id rules and the broker's limits. `Err` is the
/// reason code for the refusing CONNACK (mapped to a v3 return code by the codec).
pub fn validate_connect(c: &Connect, s: &BrokerSettings) -> Result<(), ReasonCode> {
    if c.client_id.is_empty() {
        // v3.1 requires 1..=23 characters; v3.1.1 and v5 let the server assign one, but a
        // persistent session needs a stable id [MQTT-3.1.3-8].
        if c.protocol == ProtocolVersion::V3_1 || !c.clean_start {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
    }
    if c.client_id.len() > s.max_client_id_len {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    // Without a Server Keep Alive property a v3 client can't be told to use a shorter
    // keep-alive, so it is refused (as Mosquitto does).
    if !c.protocol.is_v5()
        && s.max_keep_alive > 0
        && (c.keep_alive == 0 || c.keep_alive > s.max_keep_alive)
    {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    if let Some(w) = &c.will {
        validate_name(&w.topic).map_err(|_| ReasonCode::TopicNameInvalid)?;
        if Message::is_reserved_topic(&w.topic) {
            return Err(ReasonCode::NotAuthorized);
        }
        if super::inbound::too_deep(&w.topic, s.max_topic_levels) {
            return Err(ReasonCode::TopicNameInvalid);
        }
        if w.qos > s.max_qos {
            return Err(ReasonCode::QoSNotSupported);
        }
        if w.retain && !s.retain_available {
            return Err(ReasonCode::RetainNotSupported);
        }
        if w.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&w.payload).is_err()
        {
            return Err(ReasonCode::PayloadFormatInvalid);
        }
    }
    if c.properties.authentication_method.is_some() {
        // No enhanced authentication method is configured [MQTT-4.12.0-1].
        return Err(ReasonCode::BadAuthenticationMethod);
    }
    Ok(())
}

/// The keep-alive the server enforces for a requested one.
pub fn effective_keep_alive(requested: u16, s: &BrokerSettings) -> u16 {
    if s.max_keep_alive > 0 && (requested == 0 || requested > s.max_keep_alive) {
        s.max_keep_alive
    } else {
        requested
    }
}

impl Session {
    /// Attaches an accepted connection: sends CONNACK, then resends unacknowledged deliveries
    /// (PUBLISH with DUP, or PUBREL) and what was queued while offline.
    ///
    /// The caller has decided `session_present` (an existing session and no Clean Start) and,
    /// for an empty client id, generated one (`assigned_id`, already the CONNECT's client
    /// id). The session does not keep the client id: its owner does.
    pub fn attach(
        &mut self,
        now: Instant,
        connect: &Connect,
        assigned_id: bool,
        session_present: bool,
        out: &mut Vec<Output>,
    ) {
        let s = self.settings.clone();
        let p = &connect.properties;
        self.protocol = connect.protocol;
        self.expires_at = None;
        self.will = connect
            .will
            .clone()
            .map(|message| Box::new(Will { message, at: None }));
        let requested_expiry = if connect.protocol.is_v5() {
            p.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        self.expiry_interval = requested_expiry.min(s.max_session_expiry);
        let keep_alive = effective_keep_alive(connect.keep_alive, &s);
        let client_window = p.receive_maximum.map_or(u16::MAX, |r| r.get());
        self.conn = Some(Box::new(Connection {
            keep_alive,
            last_packet: now,
            send_window: client_window.min(s.max_inflight.max(1)),
            max_packet_size: p.maximum_packet_size.map(|m| m.get()),
            alias_max_out: p.topic_alias_maximum.unwrap_or(0),
            aliases: None,
            problem_info: p.request_problem_information.unwrap_or(true),
            expiry_at_connect: self.expiry_interval,
        }));

        let properties = if connect.protocol.is_v5() {
            self.connack_properties(connect, requested_expiry, keep_alive, assigned_id)
        } else {
            ConnAckProperties::default()
        };
        out.push(Output::Send(Packet::ConnAck(ConnAck {
            session_present,
            code: ReasonCode::Success,
            properties,
        })));
        if self.persists() {
            self.persist_state(out);
        } else if std::mem::take(&mut self.stored) {
            // A stored session reconnected without a Session Expiry Interval: it now ends
            // with its connection, so nothing of it must survive a restart.
            out.push(Output::Persist(super::PersistOp::Ended));
        }
        self.resend(now, out);
    }

    /// What a v5 client is told in CONNACK: our limits, and where we overrode its requests.
    fn connack_properties(
        &self,
        connect: &Connect,
        requested_expiry: u32,
        keep_alive: u16,
        assigned_id: bool,
    ) -> ConnAckProperties {
        let s = &self.settings;
        let mut props = ConnAckProperties::default();
        if self.expiry_interval != requested_expiry {
            props.session_expiry_interval = Some(self.expiry_interval);
        }
        props.receive_maximum = std::num::NonZeroU16::new(s.receive_maximum);
        if s.max_qos < QoS::ExactlyOnce {
            props.maximum_qos = Some(s.max_qos);
        }
        if !s.retain_available {
            props.retain_available = Some(false);
        }
        props.maximum_packet_size = std::num::NonZeroU32::new(s.max_packet_size);
        if assigned_id {
            props.assigned_client_identifier = Some(connect.client_id.clone());
        }
        props.topic_alias_maximum = Some(s.topic_alias_maximum);
        if !s.wildcard_subscriptions {
            props.wildcard_subscription_available = Some(false);
        }
        if !s.subscription_identifiers {
            props.subscription_identifiers_available = Some(false);
        }
        if !s.shared_subscriptions {
            props.shared_subscription_available = Some(false);
        }
        if keep_alive != connect.keep_alive {
            props.server_keep_alive = Some(keep_alive);
        }
        props
    }

    /// The network connection closed without a DISCONNECT 0x00: the
    /// will is published now or scheduled, and the session ends or starts its expiry.
    pub fn connection_lost(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.lost_because(now, CloseReason::ConnectionLost, out);
    }

    fn lost_because(&mut self, now: Instant, reason: CloseReason, out: &mut Vec<Output>) {
        if self.conn.take().is_none() || self.ended {
            return;
        }
        self.close_reason = Some(reason);
        out.push(Output::Close);
        match self.will.as_mut() {
            Some(w) if w.delay() > 0 => {
                w.at = Some(now + Duration::from_secs(u64::from(w.delay())));
            }
            _ => self.publish_will(now, out),
        }
        self.start_expiry(now, out);
        self.persist_state(out);
    }

    /// Another connection with this client id arrived: tell this one why it is closed (v5
    /// DISCONNECT 0x8E) and treat it as lost; the caller then attaches the new connection or,
    /// on Clean Start, ends the session.
    pub fn takeover(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.conn.is_some() {
            self.send_disconnect(ReasonCode::SessionTakenOver, None, out);
            self.lost_because(now, CloseReason::TakenOver, out);
        }
    }

    /// An administrator disconnects the client (REST API "kick"): v5 clients get DISCONNECT
    /// 0x98 (administrative action). The client did not close the connection itself, so it
    /// counts as an abnormal close: the will goes out and the session lives on per its
    /// expiry interval, as after any lost connection.
    pub fn kick(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.conn.is_some() {
            self.send_disconnect(
                ReasonCode::AdministrativeAction,
                Some("disconnected by an administrator".to_owned()),
                out,
            );
            self.lost_because(now, CloseReason::Kicked, out);
        }
    }

    /// The server is shutting down: v5 clients get DISCONNECT 0x8B. Sessions live in memory
    /// only, so the session ends here, and with it any will — delayed or not — goes out
    /// (the will is published at the earlier of its delay and the end of the session).
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.send_disconnect(ReasonCode::ServerShuttingDown, None, out);
        self.end_because(now, CloseReason::ServerShutdown, out);
    }

    /// Counts as activity for keep-alive: used while the server itself stops reading from
    /// the client (back-pressure), when packets the client sent can't be seen.
    pub fn touch(&mut self, now: Instant) {
        if let Some(c) = self.conn.as_mut() {
            c.last_packet = now;
        }
    }

    /// Closes the connection for a violation found outside the session (a decode error).
    pub fn reject(&mut self, now: Instant, v: &Violation, out: &mut Vec<Output>) {
        self.violation(now, v, out);
    }

    /// Closes the connection because of a protocol violation or an administrative action.
    pub(super) fn violation(&mut self, now: Instant, v: &Violation, out: &mut Vec<Output>) {
        self.send_disconnect(v.reason_code(), Some(v.to_string()), out);
        let reason = match v {
            Violation::KeepAliveTimeout => CloseReason::KeepAliveTimeout,
            v => CloseReason::ProtocolError(v.reason_code()),
        };
        self.lost_because(now, reason, out);
    }

    pub(super) fn on_disconnect(
        &mut self,
        now: Instant,
        d: Disconnect,
        out: &mut Vec<Output>,
    ) -> Result<(), Violation> {
        if let Some(expiry) = d.properties.session_expiry_interval {
            let at_connect = self.conn.as_ref().map_or(0, |c| c.expiry_at_connect);
            if at_connect == 0 && expiry != 0 {
                return Err(Violation::Mqtt_3_14_2_2);
            }
            self.expiry_interval = expiry.min(self.settings.max_session_expiry);
        }
        // Only a DISCONNECT with 0x00 discards the will [MQTT-3.14.4-3]; 0x04 and error
        // codes keep it (§3.1.2.5).
        if d.reason == ReasonCode::Success {
            self.will = None;
        }
        self.lost_because(now, CloseReason::Disconnect(d.reason), out);
        Ok(())
    }

    pub(super) fn send_disconnect(
        &self,
        reason: ReasonCode,
        why: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let Some(conn) = &self.conn else { return };
        if !self.protocol.is_v5() {
            return;
        }
        let mut d = Disconnect::new(reason);
        if conn.problem_info {
            d.properties.reason_string = why.map(ByteString::from);
        }
        out.push(Output::Send(Packet::Disconnect(d)));
    }

    fn start_expiry(&mut self, now: Instant, out: &mut Vec<Output>) {
        match self.expiry_interval {
            0 => self.end(now, out),
            u32::MAX => {}
            secs => self.expires_at = Some(now + Duration::from_secs(u64::from(secs))),
        }
    }

    pub(super) fn publish_will(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(w) = self.will.take().map(|w| w.message) else {
            return;
        };
        if !self.policy.can_publish(&w.topic) {
            out.push(Output::Denied {
                action: "will",
                topic: w.topic,
            });
            return;
        }
        let wp = w.properties;
        let travelling = TravellingProperties {
            payload_format_indicator: wp.payload_format_indicator,
            message_expiry_interval: wp.message_expiry_interval,
            content_type: wp.content_type,
            response_topic: wp.response_topic,
            correlation_data: wp.correlation_data,
            user_properties: wp.user_properties,
        };
        let message = Message::new(now, w.topic, w.payload, w.qos, w.retain, travelling);
        out.push(Output::Will(Arc::new(message)));
    }
}

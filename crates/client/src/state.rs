//! The client session as a pure state machine: packets and requests in, packets to send,
//! events and completed requests out. No sockets and no clock — every call that depends on time
//! takes `now` — so it is tested without either (see the tests at the end).
//!
//! `T` is the caller's completion token for a request: the event loop passes a oneshot sender,
//! the unit tests a number. A request's token comes back in [`Output::Done`] when its
//! acknowledgement arrives (or at once for QoS 0), and is dropped with the state otherwise.

use crate::error::{ClientError, ConnectionError};
use crate::options::{MqttOptions, Request, Response};
use bytestring::ByteString;
use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};
use thingmq_codec::{
    ConnAck, Connect, ConnectProperties, Disconnect, Packet, PacketId, ProtocolVersion, PubAck,
    PubComp, PubRec, PubRel, Publish, QoS, ReasonCode, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// What the state machine asks of its driver.
#[derive(Debug)]
pub enum Output<T> {
    /// Write this packet to the connection.
    Send(Packet),
    /// Tell the application.
    Event(Event),
    /// A request is finished; hand `result` to whoever holds `token`.
    Done {
        /// The token given with the request.
        token: T,
        /// Its outcome.
        result: Result<Response, ClientError>,
    },
    /// Close the connection once everything before this has been written (DISCONNECT sent).
    Close,
}

/// What happened, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted the connection.
    Connected {
        /// Whether the server resumed a session (and with it our subscriptions).
        session_present: bool,
        /// The whole CONNACK, for its v5 properties.
        connack: ConnAck,
    },
    /// A message arrived. A topic alias from the server has been resolved: `topic` is set.
    Publish(Publish),
    /// The connection ended. `error` is `None` after [`Client::disconnect`](crate::Client).
    Disconnected {
        /// Why, unless we asked for it.
        error: Option<ConnectionError>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// CONNECT sent, CONNACK due by the deadline.
    Connecting(Instant),
    Up,
    /// DISCONNECT sent; nothing more goes out.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// QoS 1 sent, waiting for PUBACK.
    Sent1,
    /// QoS 2 sent, waiting for PUBREC.
    Sent2,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct Inflight<T> {
    publish: Publish,
    stage: Stage,
    token: T,
}

#[derive(Debug)]
enum Pending<T> {
    Sub(Subscribe, T),
    Unsub(Unsubscribe, T),
}

/// The client side of an MQTT session: one value lives across reconnects, so in-flight messages
/// survive them.
#[derive(Debug)]
pub struct ClientState<T> {
    opts: MqttOptions,
    link: Link,
    /// Whether a CONNECT has been accepted before: reconnects resume the session rather than
    /// start clean when the options allow it.
    connected_once: bool,
    /// Client identifier in use (the server may assign one).
    client_id: ByteString,
    /// Requests not yet sent: waiting for a connection or for room in the window.
    queue: VecDeque<(Request, T)>,
    /// Our QoS 1/2 PUBLISHes awaiting acknowledgement, in the order they were first sent —
    /// the order they are resent in [MQTT-4.4.0-1].
    inflight: VecDeque<Inflight<T>>,
    /// SUBSCRIBE / UNSUBSCRIBE awaiting their acks, by packet id.
    acks: HashMap<u16, Pending<T>>,
    /// QoS 2 packet ids received (PUBREC sent) and not yet released: exactly-once receive.
    incoming_qos2: HashSet<u16>,
    /// Topic aliases the server set on this connection.
    aliases: HashMap<u16, ByteString>,
    next_id: u16,
    /// From CONNACK: the server's Receive Maximum, Maximum Packet Size, Maximum QoS, Retain
    /// Available, and the keep-alive in force.
    server_receive_max: u16,
    server_max_packet: u32,
    server_max_qos: QoS,
    retain_available: bool,
    keep_alive: Duration,
    /// When we last sent a packet (keep-alive counts from there [MQTT-3.1.2-23]).
    last_sent: Option<Instant>,
    /// PINGREQ outstanding since this instant.
    ping_sent: Option<Instant>,
    out: VecDeque<Output<T>>,
}

impl<T> ClientState<T> {
    /// A session for these options, not connected yet.
    pub fn new(opts: MqttOptions) -> Self {
        ClientState {
            client_id: opts.client_id.clone(),
            keep_alive: opts.keep_alive,
            opts,
            link: Link::Down,
            connected_once: false,
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            acks: HashMap::new(),
            incoming_qos2: HashSet::new(),
            aliases: HashMap::new(),
            next_id: 0,
            server_receive_max: u16::MAX,
            server_max_packet: u32::MAX,
            server_max_qos: QoS::ExactlyOnce,
            retain_available: true,
            last_sent: None,
            ping_sent: None,
            out: VecDeque::new(),
        }
    }

    /// The options this session was made with.
    pub fn options(&self) -> &MqttOptions {
        &self.opts
    }

    /// True once CONNACK accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// Requests waiting to be sent, and messages in flight: the driver stops taking new
    /// requests while this is at the limit, which is how back-pressure reaches the caller.
    pub fn backlog(&self) -> usize {
        self.queue.len() + self.inflight.len() + self.acks.len()
    }

    /// Packet ids of our unacknowledged PUBLISHes, in send order (for tests and diagnostics).
    pub fn inflight_ids(&self) -> Vec<u16> {
        self.inflight
            .iter()
            .filter_map(|i| i.publish.packet_id.map(NonZeroU16::get))
            .collect()
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        self.out.pop_front()
    }

    /// A new connection is open: returns the CONNECT to send first. The CONNACK is due within
    /// the connect timeout.
    pub fn start_connection(&mut self, now: Instant) -> Packet {
        self.link = Link::Connecting(now + self.opts.connect_timeout);
        self.aliases.clear();
        self.ping_sent = None;
        self.last_sent = Some(now);
        let o = &self.opts;
        // A reconnect resumes the session when the server can still hold it: v3 with a
        // persistent session, v5 with a session expiry.
        let resumable = match o.version {
            ProtocolVersion::V5 => o.session_expiry_interval.unwrap_or(0) > 0,
            _ => !o.clean_start,
        };
        let clean_start = if self.connected_once {
            !resumable
        } else {
            o.clean_start
        };
        let v5 = o.version.is_v5();
        Packet::Connect(Box::new(Connect {
            protocol: o.version,
            clean_start,
            keep_alive: u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX),
            client_id: self.client_id.clone(),
            will: o.will.clone(),
            username: o.username.clone(),
            password: o.password.clone(),
            properties: if v5 {
                ConnectProperties {
                    session_expiry_interval: o.session_expiry_interval,
                    receive_maximum: NonZeroU16::new(o.receive_maximum),
                    maximum_packet_size: o.max_packet_size,
                    topic_alias_maximum: (o.topic_alias_maximum > 0)
                        .then_some(o.topic_alias_maximum),
                    user_properties: o.user_properties.clone(),
                    ..ConnectProperties::default()
                }
            } else {
                ConnectProperties::default()
            },
        }))
    }

    /// Gives up on everything queued or in flight: the tokens are dropped, which is how their
    /// waiters learn the client has stopped.
    pub fn abandon(&mut self) {
        self.queue.clear();
        self.inflight.clear();
        self.acks.clear();
        self.out.clear();
    }

    /// The connection is gone (read error, EOF, timeout, or after [`Output::Close`]).
    /// In-flight state is kept for the next connection.
    pub fn connection_lost(&mut self) {
        self.link = Link::Down;
        self.ping_sent = None;
    }

    /// The earliest instant [`handle_timeout`](Self::handle_timeout) must be called at.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.link {
            Link::Connecting(deadline) => Some(deadline),
            Link::Up => {
                if let Some(sent) = self.ping_sent {
                    Some(sent + self.opts.ping_timeout)
                } else if self.keep_alive.is_zero() {
                    None
                } else {
                    self.last_sent.map(|t| t + self.keep_alive)
                }
            }
            Link::Down | Link::Closing => None,
        }
    }

    /// Time has passed: sends PINGREQ when the keep-alive is due, or fails the connection
    /// when CONNACK or PINGRESP is late.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConnectionError> {
        match self.link {
            Link::Connecting(deadline) if now >= deadline => Err(ConnectionError::ConnAckTimeout),
            Link::Up => {
                if let Some(sent) = self.ping_sent {
                    if now >= sent + self.opts.ping_timeout {
                        return Err(ConnectionError::PingTimeout);
                    }
                } else if !self.keep_alive.is_zero()
                    && self.last_sent.is_some_and(|t| now >= t + self.keep_alive)
                {
                    self.ping_sent = Some(now);
                    self.send(now, Packet::PingReq);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A request from the application. It is sent now if connected and the window has room,
    /// otherwise queued; invalid requests complete at once with an error.
    pub fn handle_request(&mut self, now: Instant, request: Request, token: T) {
        if let Err(e) = self.validate(&request) {
            self.out.push_back(Output::Done {
                token,
                result: Err(e),
            });
            return;
        }
        if let Request::Disconnect(d) = request {
            // Queued work is abandoned: its tokens are dropped with the state.
            if matches!(self.link, Link::Up | Link::Connecting(_)) {
                self.send(now, Packet::Disconnect(d));
            }
            self.link = Link::Closing;
            self.out.push_back(Output::Done {
                token,
                result: Ok(Response::Disconnected),
            });
            self.out.push_back(Output::Close);
            return;
        }
        self.queue.push_back((request, token));
        self.drain_queue(now);
    }

    fn validate(&self, request: &Request) -> Result<(), ClientError> {
        let Request::Publish(p) = request else {
            return Ok(());
        };
        if self.link == Link::Up {
            if p.qos > self.server_max_qos {
                return Err(ClientError::QoSNotSupported(self.server_max_qos));
            }
            if p.retain && !self.retain_available {
                return Err(ClientError::RetainNotSupported);
            }
        }
        let mut sized = p.clone();
        if p.qos != QoS::AtMostOnce {
            sized.packet_id = PacketId::new(1);
        }
        let size = thingmq_codec::encoded_len(&Packet::Publish(sized), self.opts.version);
        if size > self.server_max_packet as usize {
            return Err(ClientError::PacketTooLarge {
                size,
                max: self.server_max_packet,
            });
        }
        Ok(())
    }

    /// Sends queued requests while connected and the window allows.
    fn drain_queue(&mut self, now: Instant) {
        if self.link != Link::Up {
            return;
        }
        while let Some((request, _)) = self.queue.front() {
            let needs_slot = matches!(request, Request::Publish(p) if p.qos != QoS::AtMostOnce);
            if needs_slot && self.inflight.len() >= self.window() {
                return;
            }
            let (request, token) = self.queue.pop_front().expect("front exists");
            // Queued while disconnected: checked now against what this server allows.
            if let Err(e) = self.validate(&request) {
                self.out.push_back(Output::Done {
                    token,
                    result: Err(e),
                });
                continue;
            }
            self.send_request(now, request, token);
        }
    }

    /// Our in-flight limit, lowered to the server's Receive Maximum.
    fn window(&self) -> usize {
        usize::from(self.opts.max_inflight.min(self.server_receive_max).max(1))
    }

    fn send_request(&mut self, now: Instant, request: Request, token: T) {
        match request {
            Request::Publish(mut p) => {
                if p.qos == QoS::AtMostOnce {
                    self.send(now, Packet::Publish(p));
                    self.out.push_back(Output::Done {
                        token,
                        result: Ok(Response::Published(None)),
                    });
                    return;
                }
                p.packet_id = Some(self.next_packet_id());
                p.dup = false;
                let stage = if p.qos == QoS::AtLeastOnce {
                    Stage::Sent1
                } else {
                    Stage::Sent2
                };
                self.send(now, Packet::Publish(p.clone()));
                self.inflight.push_back(Inflight {
                    publish: p,
                    stage,
                    token,
                });
            }
            Request::Subscribe(mut s) => {
                s.packet_id = self.next_packet_id();
                self.send(now, Packet::Subscribe(s.clone()));
                self.acks.insert(s.packet_id.get(), Pending::Sub(s, token));
            }
            Request::Unsubscribe(mut u) => {
                u.packet_id = self.next_packet_id();
                self.send(now, Packet::Unsubscribe(u.clone()));
                self.acks
                    .insert(u.packet_id.get(), Pending::Unsub(u, token));
            }
            Request::Disconnect(_) => unreachable!("handled in handle_request"),
        }
    }

    /// The next packet id not used by anything in flight [MQTT-2.2.1-3]. The driver keeps the
    /// backlog far below 65535, so a free one exists.
    fn next_packet_id(&mut self) -> PacketId {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            let Some(id) = NonZeroU16::new(self.next_id) else {
                continue;
            };
            let used = self.acks.contains_key(&id.get())
                || self
                    .inflight
                    .iter()
                    .any(|i| i.publish.packet_id == Some(id));
            if !used {
                return id;
            }
        }
    }

    fn send(&mut self, now: Instant, packet: Packet) {
        self.last_sent = Some(now);
        self.out.push_back(Output::Send(packet));
    }

    /// A packet from the server. An error means the connection must be closed (after sending
    /// the DISCONNECT this queued, if any); the session state stays for a reconnect.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) -> Result<(), ConnectionError> {
        if let Link::Connecting(_) = self.link {
            return match packet {
                Packet::ConnAck(c) => self.on_connack(now, c),
                Packet::Disconnect(d) => Err(server_disconnect(d)),
                Packet::Auth(_) => Err(ConnectionError::Protocol(
                    "enhanced authentication (AUTH) is not supported",
                )),
                _ => Err(ConnectionError::Protocol("expected CONNACK")),
            };
        }
        match packet {
            Packet::Publish(p) => self.on_publish(now, p),
            Packet::PubAck(a) => self.on_puback(now, a),
            Packet::PubRec(r) => self.on_pubrec(now, r),
            Packet::PubRel(r) => self.on_pubrel(now, r),
            Packet::PubComp(c) => self.on_pubcomp(now, c),
            Packet::SubAck(a) => self.on_suback(now, a),
            Packet::UnsubAck(a) => self.on_unsuback(now, a),
            Packet::PingResp => {
                self.ping_sent = None;
                Ok(())
            }
            Packet::Disconnect(d) => Err(server_disconnect(d)),
            Packet::ConnAck(_) => Err(self.protocol_error("second CONNACK")),
            Packet::Auth(_) => Err(self.protocol_error("AUTH is not supported")),
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => Err(self.protocol_error("a server sent a client-only packet")),
        }
    }

    /// Queues a v5 DISCONNECT with Protocol Error (v3 has no way to say why) and returns the
    /// error that closes the connection.
    fn protocol_error(&mut self, what: &'static str) -> ConnectionError {
        self.close_with(ReasonCode::ProtocolError);
        ConnectionError::Protocol(what)
    }

    fn close_with(&mut self, reason: ReasonCode) {
        if self.opts.version.is_v5() {
            self.out
                .push_back(Output::Send(Packet::Disconnect(Disconnect::new(reason))));
        }
    }

    fn on_connack(&mut self, now: Instant, c: ConnAck) -> Result<(), ConnectionError> {
        if !c.code.is_success() {
            self.link = Link::Down;
            return Err(ConnectionError::Refused {
                code: c.code,
                reason_string: c.properties.reason_string.as_ref().map(|s| s.to_string()),
            });
        }
        let p = &c.properties;
        self.link = Link::Up;
        self.connected_once = true;
        if let Some(id) = &p.assigned_client_identifier {
            self.client_id = id.clone();
        }
        self.server_receive_max = p.receive_maximum.map_or(u16::MAX, NonZeroU16::get);
        self.server_max_packet = p.maximum_packet_size.map_or(u32::MAX, |m| m.get());
        self.server_max_qos = p.maximum_qos.unwrap_or(QoS::ExactlyOnce);
        self.retain_available = p.retain_available.unwrap_or(true);
        self.keep_alive = p
            .server_keep_alive
            .map_or(self.opts.keep_alive, |s| Duration::from_secs(s.into()));
        if c.session_present {
            self.resend(now);
        } else {
            self.restart_session();
        }
        self.out.push_back(Output::Event(Event::Connected {
            session_present: c.session_present,
            connack: c,
        }));
        self.drain_queue(now);
        Ok(())
    }

    /// The server kept our session: resend unacknowledged PUBLISHes with DUP set and PUBRELs,
    /// in their original order [MQTT-4.4.0-1], and SUBSCRIBE/UNSUBSCRIBE whose ack was lost.
    fn resend(&mut self, now: Instant) {
        let mut packets = Vec::new();
        for i in &self.inflight {
            packets.push(match i.stage {
                Stage::Sent1 | Stage::Sent2 => {
                    let mut p = i.publish.clone();
                    p.dup = true;
                    Packet::Publish(p)
                }
                Stage::Released => {
                    Packet::PubRel(PubRel::new(i.publish.packet_id.expect("QoS > 0 has an id")))
                }
            });
        }
        let mut acks: Vec<_> = self.acks.iter().collect();
        acks.sort_by_key(|(id, _)| **id);
        for (_, pending) in acks {
            packets.push(match pending {
                Pending::Sub(s, _) => Packet::Subscribe(s.clone()),
                Pending::Unsub(u, _) => Packet::Unsubscribe(u.clone()),
            });
        }
        for p in packets {
            self.send(now, p);
        }
    }

    /// The server has no session for us (first connection or it expired): what it never
    /// acknowledged is sent again as new, and a QoS 2 message it already acknowledged with
    /// PUBREC counts as delivered — it holds the message, only the release was pending.
    fn restart_session(&mut self) {
        self.incoming_qos2.clear();
        let mut requeue = Vec::new();
        for i in std::mem::take(&mut self.inflight) {
            if i.stage == Stage::Released {
                self.out.push_back(Output::Done {
                    token: i.token,
                    result: Ok(Response::Published(Some(ReasonCode::Success))),
                });
            } else {
                let mut p = i.publish;
                p.packet_id = None;
                p.dup = false;
                requeue.push((Request::Publish(p), i.token));
            }
        }
        let mut acks: Vec<_> = self.acks.drain().collect();
        acks.sort_by_key(|(id, _)| *id);
        for (_, pending) in acks {
            requeue.push(match pending {
                Pending::Sub(s, t) => (Request::Subscribe(s), t),
                Pending::Unsub(u, t) => (Request::Unsubscribe(u), t),
            });
        }
        for r in requeue.into_iter().rev() {
            self.queue.push_front(r);
        }
    }

    fn on_publish(&mut self, now: Instant, mut p: Publish) -> Result<(), ConnectionError> {
        if let Some(alias) = p.properties.topic_alias {
            if alias.get() > self.opts.topic_alias_maximum {
                self.close_with(ReasonCode::TopicAliasInvalid);
                return Err(ConnectionError::Protocol("topic alias above our maximum"));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias.get()) {
                    Some(t) => p.topic = t.clone(),
                    None => {
                        self.close_with(ReasonCode::ProtocolError);
                        return Err(ConnectionError::Protocol("unknown topic alias"));
                    }
                }
            } else {
                self.aliases.insert(alias.get(), p.topic.clone());
            }
        } else if p.topic.is_empty() {
            return Err(self.protocol_error("PUBLISH without a topic"));
        }
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => self.out.push_back(Output::Event(Event::Publish(p))),
            (QoS::AtLeastOnce, Some(id)) => {
                self.out.push_back(Output::Event(Event::Publish(p)));
                self.send(now, Packet::PubAck(PubAck::new(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // A resent PUBLISH whose PUBREC was lost is acknowledged again, not delivered
                // again [MQTT-4.3.3-10].
                if self.incoming_qos2.insert(id.get()) {
                    self.out.push_back(Output::Event(Event::Publish(p)));
                }
                self.send(now, Packet::PubRec(PubRec::new(id)));
            }
            _ => return Err(self.protocol_error("QoS > 0 PUBLISH without packet id")),
        }
        Ok(())
    }

    fn take_inflight(&mut self, id: PacketId, stage: Stage) -> Option<Inflight<T>> {
        let pos = self
            .inflight
            .iter()
            .position(|i| i.publish.packet_id == Some(id) && i.stage == stage)?;
        self.inflight.remove(pos)
    }

    fn finish_publish(&mut self, now: Instant, token: T, reason: ReasonCode) {
        let result = if reason.is_success() {
            Ok(Response::Published(Some(reason)))
        } else {
            Err(ClientError::Rejected(reason))
        };
        self.out.push_back(Output::Done { token, result });
        self.drain_queue(now);
    }

    fn on_puback(&mut self, now: Instant, a: PubAck) -> Result<(), ConnectionError> {
        match self.take_inflight(a.packet_id, Stage::Sent1) {
            Some(i) => {
                self.finish_publish(now, i.token, a.reason);
                Ok(())
            }
            // v3 servers may repeat acks after a resend; not worth a disconnect.
            None => Ok(()),
        }
    }

    fn on_pubrec(&mut self, now: Instant, r: PubRec) -> Result<(), ConnectionError> {
        let Some(pos) = self
            .inflight
            .iter()
            .position(|i| i.publish.packet_id == Some(r.packet_id))
        else {
            // Not ours (any more): answer so the server can finish its side.
            let mut rel = PubRel::new(r.packet_id);
            rel.reason = ReasonCode::PacketIdentifierNotFound;
            self.send(now, Packet::PubRel(rel));
            return Ok(());
        };
        if !r.reason.is_success() {
            // A failed PUBREC ends the exchange [MQTT-4.3.3-4].
            let i = self.inflight.remove(pos).expect("position is valid");
            self.finish_publish(now, i.token, r.reason);
            return Ok(());
        }
        self.inflight[pos].stage = Stage::Released;
        self.send(now, Packet::PubRel(PubRel::new(r.packet_id)));
        Ok(())
    }

    fn on_pubrel(&mut self, now: Instant, r: PubRel) -> Result<(), ConnectionError> {
        let mut comp = PubComp::new(r.packet_id);
        if !self.incoming_qos2.remove(&r.packet_id.get()) {
            comp.reason = ReasonCode::PacketIdentifierNotFound;
        }
        self.send(now, Packet::PubComp(comp));
        Ok(())
    }

    fn on_pubcomp(&mut self, now: Instant, c: PubComp) -> Result<(), ConnectionError> {
        if let Some(i) = self.take_inflight(c.packet_id, Stage::Released) {
            self.finish_publish(now, i.token, c.reason);
        }
        Ok(())
    }

    fn on_suback(&mut self, now: Instant, a: SubAck) -> Result<(), ConnectionError> {
        match self.acks.remove(&a.packet_id.get()) {
            Some(Pending::Sub(s, token)) if s.filters.len() == a.reasons.len() => {
                self.out.push_back(Output::Done {
                    token,
                    result: Ok(Response::SubAck(a)),
                });
                self.drain_queue(now);
                Ok(())
            }
            Some(other) => {
                self.acks.insert(a.packet_id.get(), other);
                Err(self.protocol_error("SUBACK does not match its SUBSCRIBE"))
            }
            None => Ok(()),
        }
    }

    fn on_unsuback(&mut self, now: Instant, a: UnsubAck) -> Result<(), ConnectionError> {
        match self.acks.remove(&a.packet_id.get()) {
            Some(Pending::Unsub(_, token)) => {
                self.out.push_back(Output::Done {
                    token,
                    result: Ok(Response::UnsubAck(a)),
                });
                self.drain_queue(now);
                Ok(())
            }
            Some(other) => {
                self.acks.insert(a.packet_id.get(), other);
                Err(self.protocol_error("UNSUBACK for a SUBSCRIBE"))
            }
            None => Ok(()),
        }
    }
}

fn server_disconnect(d: Disconnect) -> ConnectionError {
    ConnectionError::ServerDisconnect {
        reason: d.reason,
        reason_string: d.properties.reason_string.map(|s| s.to_string()),
    }
}

#[cfg(test)]
mod tests;

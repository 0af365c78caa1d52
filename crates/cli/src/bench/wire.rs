//! A bare MQTT connection for the load generator: a TCP stream, a read buffer and a write
//! buffer, with packets encoded and decoded by `thingmq-codec`.
//!
//! Deliberately not a client library: a library's event loop, per-message channels and
//! callbacks cost more per message than the broker spends routing it, so the generator would
//! measure itself. Here a publisher encodes a batch of packets into one buffer and writes it
//! with one system call, and a subscriber decodes a whole socket read in place, so a single
//! generator core can out-run a broker core.

use anyhow::{bail, Context};
use bytes::BytesMut;
use bytestring::ByteString;
use std::net::SocketAddr;
use thingmq_codec::{
    ConnAck, Connect, ConnectProperties, Packet, PacketId, ProtocolVersion, QoS, ReasonCode,
    Subscribe, SubscribeProperties, SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Keep-alive announced in CONNECT. Long, so idle connections held by `conn --hold` and slow
/// runs never need PINGREQ; 0 (no keep-alive) is mishandled by some brokers.
const KEEP_ALIVE_SECS: u16 = 600;

/// Largest packet we accept from the broker.
const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// One connection to the broker.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    pub(crate) version: ProtocolVersion,
}

impl Conn {
    /// Opens a TCP connection, sends CONNECT (clean start) and waits for a successful CONNACK.
    pub(crate) async fn connect(
        addr: SocketAddr,
        client_id: &str,
        version: ProtocolVersion,
    ) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        // Latency is measured per message: do not let Nagle hold small packets back.
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(4096),
            wbuf: BytesMut::with_capacity(4096),
            version,
        };
        let connect = Connect {
            protocol: version,
            clean_start: true,
            keep_alive: KEEP_ALIVE_SECS,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        conn.queue(&Packet::Connect(Box::new(connect)))?;
        conn.flush().await?;
        match conn.read_packet().await? {
            Packet::ConnAck(ConnAck {
                code: ReasonCode::Success,
                ..
            }) => Ok(conn),
            Packet::ConnAck(ConnAck { code, .. }) => bail!("connection refused: {code:?}"),
            other => bail!("expected CONNACK, got packet type {}", other.kind()),
        }
    }

    /// Queues a SUBSCRIBE; the SUBACK is handled by the caller's read loop.
    pub(crate) fn queue_subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).expect("1 is not zero"),
            properties: SubscribeProperties::default(),
            filters: vec![(
                ByteString::from(filter),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        };
        self.queue(&Packet::Subscribe(subscribe))
    }

    /// Encodes a packet into the write buffer.
    pub(crate) fn queue(&mut self, packet: &Packet) -> anyhow::Result<()> {
        thingmq_codec::encode(packet, self.version, &mut self.wbuf)
            .context("cannot encode packet")?;
        Ok(())
    }

    /// Writes the whole write buffer.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream
                .write_all(&self.wbuf)
                .await
                .context("write to broker failed")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Decodes the next buffered packet, if a whole one is there.
    pub(crate) fn next_buffered(&mut self) -> anyhow::Result<Option<Packet>> {
        thingmq_codec::decode(&mut self.rbuf, self.version, MAX_PACKET)
            .context("broker sent a malformed packet")
    }

    /// Reads from the socket into the read buffer; fails when the broker closed it.
    pub(crate) async fn fill(&mut self) -> anyhow::Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .context("read from broker failed")?;
        if n == 0 {
            bail!("broker closed the connection");
        }
        Ok(())
    }

    /// Reads without waiting; returns false when nothing was available.
    pub(crate) fn try_fill(&mut self) -> anyhow::Result<bool> {
        if self.rbuf.capacity() - self.rbuf.len() < 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => bail!("broker closed the connection"),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e).context("read from broker failed"),
        }
    }

    /// Waits for the next whole packet.
    pub(crate) async fn read_packet(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.next_buffered()? {
                return Ok(p);
            }
            self.fill().await?;
        }
    }
}

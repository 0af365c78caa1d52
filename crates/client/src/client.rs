//! [`Client`]: the cloneable handle. It holds only a sender; each call queues a request for
//! the [`EventLoop`] and waits for its acknowledgement.

use crate::error::ClientError;
use crate::event_loop::{Command, Connector, EventLoop};
use crate::options::{MqttOptions, Request, Response, Transport};
use crate::transport::BoxedStream;
use bytes::Bytes;
use bytestring::ByteString;
use std::future::Future;
use std::io;
use thingmq_codec::topic::{validate_filter, validate_name};
use thingmq_codec::{
    Disconnect, PublishProperties, QoS, ReasonCode, SubAck, Subscribe, SubscribeProperties,
    SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

/// Handle to a client session; clone it freely. Calls wait for the server's acknowledgement
/// (PUBACK, PUBCOMP, SUBACK, UNSUBACK), which needs the [`EventLoop`] to be polled.
#[derive(Debug, Clone)]
pub struct Client {
    requests: mpsc::Sender<Command>,
}

/// A message to publish, with its v5 properties (left out on 3.1.1).
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Topic name (no wildcards).
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// v5 properties; `topic_alias` and `subscription_identifiers` are ignored.
    pub properties: PublishProperties,
}

impl Client {
    /// A client that connects over `transport`. Poll the returned [`EventLoop`] to run it.
    pub fn new(options: MqttOptions, transport: Transport) -> (Client, EventLoop) {
        Self::with(options, Connector::Transport(transport))
    }

    /// A client over one stream the caller opened — an in-memory `tokio::io::duplex` link to
    /// an in-process broker, say. There is nothing to reconnect to once it closes, so
    /// reconnecting is turned off.
    pub fn with_stream<S>(mut options: MqttOptions, stream: S) -> (Client, EventLoop)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        options.reconnect = None;
        let mut stream: Option<BoxedStream> = Some(Box::new(stream));
        Self::with(
            options,
            Connector::Custom(Box::new(move || {
                let s = stream.take();
                Box::pin(async move {
                    s.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream used"))
                })
            })),
        )
    }

    /// A client that calls `connect` for each connection attempt, so it can reconnect over
    /// any stream (a new in-memory link to the broker, a proxy, …).
    pub fn with_connector<F, Fut, S>(options: MqttOptions, mut connect: F) -> (Client, EventLoop)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::with(
            options,
            Connector::Custom(Box::new(move || {
                let fut = connect();
                Box::pin(async move { fut.await.map(|s| Box::new(s) as BoxedStream) })
            })),
        )
    }

    fn with(options: MqttOptions, connector: Connector) -> (Client, EventLoop) {
        // Small: the state machine holds the real queue, bounded by `request_capacity`.
        let (tx, rx) = mpsc::channel(16);
        (
            Client { requests: tx },
            EventLoop::new(options, connector, rx),
        )
    }

    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Command { request, reply })
            .await
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Publishes and waits: for QoS 0 until written, for QoS 1 until PUBACK, for QoS 2 until
    /// PUBCOMP. Returns the ack's reason code (`None` for QoS 0). While disconnected the
    /// message waits for the next connection.
    pub async fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<Option<ReasonCode>, ClientError> {
        self.publish_message(Message {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
            properties: PublishProperties::default(),
        })
        .await
    }

    /// [`publish`](Self::publish) with properties.
    pub async fn publish_message(&self, m: Message) -> Result<Option<ReasonCode>, ClientError> {
        validate_name(&m.topic).map_err(|e| invalid(&m.topic, e))?;
        let mut properties = m.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let publish = thingmq_codec::Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic: ByteString::from(m.topic),
            packet_id: None,
            properties,
            payload: m.payload,
        };
        match self.call(Request::Publish(publish)).await? {
            Response::Published(r) => Ok(r),
            other => unreachable!("publish answered with {other:?}"),
        }
    }

    /// Subscribes to one filter and waits for SUBACK. A refusal is not an error here: look at
    /// `reasons[0]` (`is_success()`, or the granted QoS).
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<SubAck, ClientError> {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_many(
            vec![(filter.into(), options)],
            SubscribeProperties::default(),
        )
        .await
    }

    /// Subscribes to several filters in one SUBSCRIBE, with v5 options and properties.
    pub async fn subscribe_many(
        &self,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: SubscribeProperties,
    ) -> Result<SubAck, ClientError> {
        for (f, _) in &filters {
            validate_filter(f).map_err(|e| invalid(f, e))?;
        }
        let subscribe = Subscribe {
            packet_id: placeholder_id(),
            properties,
            filters: filters
                .into_iter()
                .map(|(f, o)| (ByteString::from(f), o))
                .collect(),
        };
        match self.call(Request::Subscribe(subscribe)).await? {
            Response::SubAck(a) => Ok(a),
            other => unreachable!("subscribe answered with {other:?}"),
        }
    }

    /// Unsubscribes from filters and waits for UNSUBACK.
    pub async fn unsubscribe(&self, filters: Vec<String>) -> Result<UnsubAck, ClientError> {
        for f in &filters {
            validate_filter(f).map_err(|e| invalid(f, e))?;
        }
        let unsubscribe = Unsubscribe {
            packet_id: placeholder_id(),
            properties: UnsubscribeProperties::default(),
            filters: filters.into_iter().map(ByteString::from).collect(),
        };
        match self.call(Request::Unsubscribe(unsubscribe)).await? {
            Response::UnsubAck(a) => Ok(a),
            other => unreachable!("unsubscribe answered with {other:?}"),
        }
    }

    /// Sends DISCONNECT (normal disconnection: the will is not published) after everything
    /// queued before it, and stops the event loop. Unacknowledged messages are abandoned.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.disconnect_with(Disconnect::new(ReasonCode::Success))
            .await
    }

    /// [`disconnect`](Self::disconnect) with a reason code and properties (v5).
    pub async fn disconnect_with(&self, d: Disconnect) -> Result<(), ClientError> {
        self.call(Request::Disconnect(d)).await.map(|_| ())
    }
}

/// The real id is assigned when the packet is sent.
fn placeholder_id() -> thingmq_codec::PacketId {
    thingmq_codec::PacketId::MAX
}

fn invalid(topic: &str, e: thingmq_codec::topic::TopicError) -> ClientError {
    ClientError::InvalidTopic {
        topic: topic.to_owned(),
        why: e.to_string(),
    }
}

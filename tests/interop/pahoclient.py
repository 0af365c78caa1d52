"""A thin, test-friendly wrapper around a paho-mqtt 2.x client.

Every callback feeds a queue, and every wait has a timeout, so a test that expects something
the broker never sends fails with a clear message instead of hanging. The client never
reconnects by itself (``reconnect_on_failure=False``): a test sees exactly one connection.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

MQTTv31 = mqtt.MQTTv31
MQTTv311 = mqtt.MQTTv311
MQTTv5 = mqtt.MQTTv5
DISCONNECT = mqtt.DISCONNECT

# Generous: the suite must pass on a loaded two-core machine.
WAIT = 10.0
# How long to wait for something that must NOT arrive, when no fence message can be used.
QUIET = 1.5

_ids = itertools.count(1)


class _Paho(mqtt.Client):
    """paho 2.1 with one parsing bug fixed: it ignores the reason code of a v5 DISCONNECT whose
    Remaining Length is 1 or 2 (reason code without properties, e.g. ``e0 01 8e``) and
    reports "Normal disconnection" instead (eclipse-paho/paho.mqtt.python#860). Mosquitto
    and thingmq send that short form, which the spec allows (§3.14.2.2.1)."""

    def _handle_disconnect(self) -> None:
        length = self._in_packet["remaining_length"]
        if self._protocol == MQTTv5 and 1 <= length <= 2:
            reason = ReasonCode(DISCONNECT >> 4)
            reason.unpack(self._in_packet["packet"])
            self._sock_close()
            self._do_on_disconnect(
                packet_from_broker=True,
                v1_rc=mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS,
                reason=reason,
                properties=None,
            )
            return
        super()._handle_disconnect()


def unique(prefix: str) -> str:
    """A client id / topic segment no other test uses."""
    return f"{prefix}-{next(_ids)}-{uuid.uuid4().hex[:6]}"


def props(packet_type: int, **values) -> Properties:
    """paho Properties, e.g. ``props(PacketTypes.PUBLISH, MessageExpiryInterval=5)``."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


@dataclass
class Connack:
    reason_code: int
    session_present: bool
    properties: Properties | None


@dataclass
class Disconnected:
    reason_code: int
    properties: Properties | None


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = field(default=None, repr=False)

    def prop(self, name: str, default=None):
        if self.properties is None:
            return default
        return getattr(self.properties, name, default)


class Client:
    """One paho client connected to a broker under test."""

    def __init__(
        self,
        broker,
        client_id: str | None = None,
        *,
        protocol: int = MQTTv311,
        clean: bool = True,
        keepalive: int = 60,
        connect_properties: Properties | None = None,
        will: dict | None = None,
        connect: bool = True,
    ):
        self.broker = broker
        self.protocol = protocol
        self.client_id = unique("c") if client_id is None else client_id
        kwargs = {}
        if protocol != MQTTv5:
            kwargs["clean_session"] = clean
        self.c = _Paho(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            reconnect_on_failure=False,
            **kwargs,
        )
        self.clean = clean
        self.keepalive = keepalive
        self.connect_properties = connect_properties
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connacks: queue.Queue[Connack] = queue.Queue()
        self.disconnects: queue.Queue[Disconnected] = queue.Queue()
        self._acks: dict[int, queue.Queue] = {}
        self._acks_lock = threading.Lock()
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        if will:
            self.c.will_set(**will)
        self._started = False
        broker.track(self)
        if connect:
            self.connect()

    # -- callbacks (paho's network thread) --------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put(Connack(reason_code.value, flags.session_present, properties))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put(Disconnected(reason_code.value, properties))

    def _on_message(self, client, userdata, msg):
        props_ = getattr(msg, "properties", None)
        self.messages.put(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), props_))

    def _ack_queue(self, mid: int) -> queue.Queue:
        with self._acks_lock:
            return self._acks.setdefault(mid, queue.Queue())

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._ack_queue(mid).put([rc.value for rc in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._ack_queue(mid).put([rc.value for rc in reason_codes])

    # -- actions ---------------------------------------------------------------------------

    def connect(self, expect_success: bool = True) -> Connack:
        kwargs = {}
        if self.protocol == MQTTv5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_properties
        self.c.connect(self.broker.host, self.broker.port, keepalive=self.keepalive, **kwargs)
        self.c.loop_start()
        self._started = True
        self.connack = self.wait_connack()
        if expect_success:
            assert self.connack.reason_code == 0, f"CONNACK refused: {self.connack}"
        return self.connack

    def wait_connack(self, timeout: float = WAIT) -> Connack:
        try:
            return self.connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout} s") from None

    def subscribe(self, topic, qos: int = 0, *, options: SubscribeOptions | None = None,
                  properties: Properties | None = None) -> list[int]:
        """Subscribes and returns the SUBACK reason codes (one per filter)."""
        if options is not None:
            rc, mid = self.c.subscribe(topic, options=options, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos, properties=properties)
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}{self._lost_connection()}"
        try:
            return self._ack_queue(mid).get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no SUBACK for {topic!r}") from None

    def unsubscribe(self, topic) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        try:
            return self._ack_queue(mid).get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no UNSUBACK for {topic!r}") from None

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                properties: Properties | None = None, wait: bool = True) -> mqtt.MQTTMessageInfo:
        """Publishes; with ``wait`` returns once the QoS flow finished (sent for QoS 0)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, (
            f"publish failed locally: {info.rc}{self._lost_connection()}")
        if wait:
            info.wait_for_publish(timeout=WAIT)
            assert info.is_published(), f"{self.client_id}: publish to {topic!r} not completed"
        return info

    def _lost_connection(self) -> str:
        """For a failed local call (rc 4, MQTT_ERR_NO_CONN): whether and how the connection
        had been closed, so the failure says what the broker did."""
        if self.c.socket() is not None:
            return ""
        try:
            d = self.disconnects.get(timeout=1.0)
        except queue.Empty:
            return " (not connected, no disconnect reported)"
        self.disconnects.put(d)  # still there for expect_disconnect
        return f" (the broker had closed the connection: reason code 0x{d.reason_code:02x})"

    def publish_expecting_disconnect(self, topic: str, payload: bytes | str = b"", qos: int = 0,
                                     properties: Properties | None = None) -> Disconnected:
        """Sends a PUBLISH the broker must answer with DISCONNECT, and returns that DISCONNECT.

        paho 2.1's publish() can return MQTT_ERR_NO_CONN for a packet it did send: its network
        thread may write the packet, read the broker's DISCONNECT and exit while publish() is
        still in ``_packet_queue``, which then takes the exited thread for "no network loop"
        and tries to write itself on the closed socket. The broker answering quickly makes
        that window easy to hit. So NO_CONN is accepted here and the reason code decides: a
        broker that had closed the connection before this PUBLISH reached it cannot have
        answered it with the reason code the caller checks."""
        info = self.c.publish(topic, payload, qos=qos, properties=properties)
        assert info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN), (
            f"publish failed locally: {info.rc}{self._lost_connection()}")
        return self.expect_disconnect()

    def expect_message(self, timeout: float = WAIT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout} s") from None

    def expect_messages(self, n: int, timeout: float = WAIT) -> list[Received]:
        return [self.expect_message(timeout) for _ in range(n)]

    def expect_no_message(self, timeout: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"{self.client_id}: unexpected message {m}")

    def messages_before_fence(self) -> list[Received]:
        """Everything the broker had queued for this client, proven complete by a marker.

        Subscribes to a private ``$fence/...`` topic (no ``#`` or ``+`` filter of a test can
        match it: [MQTT-4.7.2-1]), publishes a marker there and collects what arrives before
        it. Anything the broker routed to this client earlier, or sent with an earlier SUBACK,
        arrives before the marker — so "must not receive" becomes a deterministic check."""
        topic = f"$fence/{unique('f')}"
        self.subscribe(topic, 1)
        self.publish(topic, b"fence", qos=1)
        before = []
        while True:
            m = self.expect_message()
            if m.topic == topic:
                return before
            before.append(m)

    def fence(self) -> None:
        """Asserts that nothing is pending for this client (see ``messages_before_fence``)."""
        before = self.messages_before_fence()
        assert before == [], f"{self.client_id}: unexpected messages: {before}"

    def expect_disconnect(self, timeout: float = WAIT) -> Disconnected:
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: still connected after {timeout} s") from None

    def disconnect(self, properties: Properties | None = None) -> None:
        """Normal DISCONNECT; returns once paho has closed the connection."""
        self.c.disconnect(properties=properties)
        self.expect_disconnect()
        self.stop()

    def abort(self) -> None:
        """Closes the TCP connection without DISCONNECT (an abnormal close: the will fires)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.expect_disconnect()
        self.stop()

    def stop(self) -> None:
        """Stops the network thread and closes the socket (idempotent; used by teardown)."""
        if self._started:
            self._started = False
            if self.c.is_connected():
                # Also wakes paho's network thread at once (loop_stop alone waits up to 1 s).
                self.c.disconnect()
            self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


__all__ = [
    "Client", "Connack", "Disconnected", "Received", "MQTTv31", "MQTTv311", "MQTTv5",
    "PacketTypes", "Properties", "SubscribeOptions", "props", "unique", "WAIT", "QUIET",
]

"""Sessions across connections: will messages, persistent sessions and their offline queue,
clean sessions, will delay, session expiry and message expiry."""

import time

import pytest

import rawmqtt as raw
from pahoclient import (
    MQTTv5, MQTTv311, QUIET, Client, PacketTypes, props, unique,
)

BOTH = pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])


def will(topic, payload=b"offline", qos=1, retain=False, properties=None):
    w = {"topic": topic, "payload": payload, "qos": qos, "retain": retain}
    if properties is not None:
        w["properties"] = properties
    return w


# -- wills -----------------------------------------------------------------------------------


@BOTH
def test_will_is_published_when_the_connection_closes_without_disconnect(broker, protocol):
    watcher = Client(broker)
    watcher.subscribe("will/#", 1)
    dying = Client(broker, protocol=protocol, will=will("will/a", b"gone"))
    dying.abort()
    m = watcher.expect_message()
    assert (m.topic, m.payload, m.qos) == ("will/a", b"gone", 1)  # [MQTT-3.1.2-8]


def test_will_from_raw_socket_client_is_published_when_socket_closes(broker):
    watcher = Client(broker)
    watcher.subscribe("will/raw", 2)
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("raw"), will=("will/raw", b"\x00\x01binary", 2, False))
    m = watcher.expect_message()
    assert (m.payload, m.qos) == (b"\x00\x01binary", 2)


@BOTH
def test_no_will_after_normal_disconnect(broker, protocol):
    watcher = Client(broker)
    watcher.subscribe("will/#", 1)
    leaving = Client(broker, protocol=protocol, will=will("will/b"))
    leaving.disconnect()
    # [MQTT-3.14.4-3]: the will is discarded. Nothing can mark "the broker has finished
    # with that connection", so this waits a little, then makes sure nothing is pending.
    watcher.expect_no_message(QUIET)
    watcher.fence()


def test_v5_disconnect_with_will_message_reason_publishes_the_will(broker):
    from paho.mqtt.reasoncodes import ReasonCode

    watcher = Client(broker)
    watcher.subscribe("will/#", 1)
    leaving = Client(broker, protocol=MQTTv5, will=will("will/c", b"asked for"))
    # Reason 0x04 Disconnect with Will Message (§3.14.2.1).
    leaving.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    assert watcher.expect_message().payload == b"asked for"


def test_retained_will_is_stored_as_retained_message(broker):
    watcher = Client(broker)
    watcher.subscribe("will/retained", 1)
    dying = Client(broker, will=will("will/retained", b"last words", retain=True))
    dying.abort()
    assert watcher.expect_message().payload == b"last words"
    late = Client(broker)
    late.subscribe("will/retained", 1)
    assert [(m.payload, m.retain) for m in late.messages_before_fence()] == [(b"last words", True)]


def test_will_of_taken_over_connection_is_published(broker):
    watcher = Client(broker)
    watcher.subscribe("will/#", 1)
    cid = unique("takeover")
    Client(broker, cid, will=will("will/first", b"first's will"))
    Client(broker, cid)
    # The first connection was closed without DISCONNECT from its client.
    assert watcher.expect_message().payload == b"first's will"


def test_v5_will_properties_are_forwarded(broker):
    watcher = Client(broker, protocol=MQTTv5)
    watcher.subscribe("will/p", 1)
    wp = props(PacketTypes.WILLMESSAGE, ContentType="text/plain", ResponseTopic="r/t",
               CorrelationData=b"\x01\x02", UserProperty=[("a", "1"), ("b", "2")])
    dying = Client(broker, protocol=MQTTv5, will=will("will/p", b"props", properties=wp))
    dying.abort()
    m = watcher.expect_message()
    assert m.payload == b"props"
    assert m.prop("ContentType") == "text/plain"
    assert m.prop("ResponseTopic") == "r/t"
    assert m.prop("CorrelationData") == b"\x01\x02"
    assert m.prop("UserProperty") == [("a", "1"), ("b", "2")]


def test_v5_will_delay_postpones_the_will(broker):
    watcher = Client(broker)
    watcher.subscribe("will/delayed", 1)
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    dying = Client(broker, unique("delay"), protocol=MQTTv5, connect_properties=cp,
                   will=will("will/delayed", b"late", properties=wp))
    closing = time.monotonic()  # the broker cannot see the close before this
    dying.abort()
    m = watcher.expect_message(timeout=10)
    elapsed = time.monotonic() - closing
    assert m.payload == b"late"
    # [MQTT-3.1.3-9]: not before the Will Delay Interval has passed.
    assert elapsed >= 1.9, f"will published after {elapsed:.2f} s, delay was 2 s"


def test_v5_reconnecting_within_will_delay_cancels_the_will(broker):
    watcher = Client(broker)
    watcher.subscribe("will/cancelled", 1)
    cid = unique("back")
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=60)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=3)
    dying = Client(broker, cid, protocol=MQTTv5, connect_properties=cp,
                   will=will("will/cancelled", b"should not", properties=wp))
    dying.abort()
    back = Client(broker, cid, protocol=MQTTv5, clean=False, connect_properties=cp)
    assert back.connack.session_present is True
    back.disconnect()  # normal disconnect: no will either
    watcher.expect_no_message(timeout=4.5)  # past the 3 s delay
    watcher.fence()


def test_v5_will_is_published_when_session_expires_before_will_delay(broker):
    watcher = Client(broker)
    watcher.subscribe("will/expiry", 1)
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=1)
    wp = props(PacketTypes.WILLMESSAGE, WillDelayInterval=60)
    dying = Client(broker, unique("exp"), protocol=MQTTv5, connect_properties=cp,
                   will=will("will/expiry", b"session over", properties=wp))
    dying.abort()
    closed = time.monotonic()
    # §3.1.3.2.2: the will goes out when the session ends, if that is before the delay.
    m = watcher.expect_message(timeout=10)
    assert m.payload == b"session over"
    assert time.monotonic() - closed < 8


# -- persistent and clean sessions -----------------------------------------------------------


def _persistent(broker, cid, protocol, clean):
    if protocol == MQTTv5:
        cp = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
        return Client(broker, cid, protocol=protocol, clean=clean, connect_properties=cp)
    return Client(broker, cid, protocol=protocol, clean=clean)


@BOTH
def test_persistent_session_receives_qos1_messages_published_while_offline(broker, protocol):
    cid = unique("persist")
    sub = _persistent(broker, cid, protocol, clean=False)
    assert sub.connack.session_present is False  # no session existed
    sub.subscribe("p/t", 1)
    sub.disconnect()

    pub = Client(broker)
    for i in range(3):
        pub.publish("p/t", f"m{i}".encode(), qos=1)
    pub.publish("p/t", b"qos0 dropped", qos=0)
    pub.publish("p/t", b"two", qos=2)

    back = _persistent(broker, cid, protocol, clean=False)
    assert back.connack.session_present is True  # [MQTT-3.2.2-2]
    got = back.messages_before_fence()
    assert [(m.payload, m.qos) for m in got] == [
        (b"m0", 1), (b"m1", 1), (b"m2", 1), (b"two", 1)]
    # The subscription itself survived too.
    pub.publish("p/t", b"live", qos=1)
    assert back.expect_message().payload == b"live"


@BOTH
def test_clean_session_discards_the_previous_session(broker, protocol):
    cid = unique("cleaned")
    sub = _persistent(broker, cid, protocol, clean=False)
    sub.subscribe("c/t", 1)
    sub.disconnect()
    pub = Client(broker)
    pub.publish("c/t", b"queued", qos=1)

    fresh = _persistent(broker, cid, protocol, clean=True)
    assert fresh.connack.session_present is False  # [MQTT-3.2.2-1]
    pub.publish("c/t", b"after", qos=1)
    assert fresh.messages_before_fence() == []  # neither queue nor subscription survived


def test_queue_qos0_setting_keeps_qos0_messages_for_offline_sessions(start_broker):
    b = start_broker("[mqtt]\nqueue_qos0 = true\n")
    cid = unique("q0")
    sub = Client(b, cid, clean=False)
    sub.subscribe("q0/t", 0)
    sub.disconnect()
    pub = Client(b)
    pub.publish("q0/t", b"kept", qos=0)
    pub.fence()
    back = Client(b, cid, clean=False)
    assert [m.payload for m in back.messages_before_fence()] == [b"kept"]


def _publish_packet_id(p: raw.Packet) -> bytes:
    topic_len = int.from_bytes(p.body[:2], "big")
    return p.body[2 + topic_len : 4 + topic_len]


def test_unacknowledged_qos1_message_is_resent_with_dup_after_reconnect(broker):
    cid = unique("dup")
    pub = Client(broker)
    with raw.RawClient(*broker.addr) as s:
        s.connect(cid, clean=False)
        s.send(raw.subscribe(1, [("d/t", 1)]))
        s.expect(raw.SUBACK)
        pub.publish("d/t", b"unacked", qos=1)
        first = s.expect(raw.PUBLISH)
        assert first.flags == 0x02  # QoS 1, DUP 0, RETAIN 0
        # Closed without PUBACK.
    with raw.RawClient(*broker.addr) as s:
        ack = s.connect(cid, clean=False)
        assert ack.connack_session_present
        again = s.expect(raw.PUBLISH)
        # [MQTT-4.4.0-1]: resent with DUP=1 and the same packet id.
        assert again.flags == 0x0A
        assert _publish_packet_id(again) == _publish_packet_id(first)
        assert again.body.endswith(b"unacked")


def test_v5_session_expires_after_its_expiry_interval(broker):
    cid = unique("expires")
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=1)
    sub = Client(broker, cid, protocol=MQTTv5, connect_properties=cp)
    sub.subscribe("e/t", 1)
    sub.disconnect()
    time.sleep(2.5)  # let the 1 s session expiry pass (scenario setup, not an assertion)
    back = Client(broker, cid, protocol=MQTTv5, clean=False, connect_properties=cp)
    assert back.connack.session_present is False


def test_v5_session_expiry_zero_ends_the_session_at_disconnect(broker):
    cid = unique("zero")
    sub = Client(broker, cid, protocol=MQTTv5)  # no Session Expiry Interval: 0
    sub.subscribe("z/t", 1)
    sub.disconnect()
    back = Client(broker, cid, protocol=MQTTv5, clean=False)
    assert back.connack.session_present is False


def test_v5_queued_message_expires_while_session_is_offline(broker):
    cid = unique("mexp")
    cp = props(PacketTypes.CONNECT, SessionExpiryInterval=300)
    sub = Client(broker, cid, protocol=MQTTv5, connect_properties=cp)
    sub.subscribe("x/t", 1)
    sub.disconnect()
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("x/t", b"short", qos=1,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    pub.publish("x/t", b"long", qos=1,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=120))
    pub.publish("x/t", b"forever", qos=1)
    time.sleep(2.5)  # let the 1 s message expire (scenario setup, not an assertion)
    back = Client(broker, cid, protocol=MQTTv5, clean=False, connect_properties=cp)
    got = back.messages_before_fence()
    # [MQTT-3.3.2-5]: the expired message is not delivered; the others carry the remaining
    # lifetime [MQTT-3.3.2-6] (or none when published without one).
    assert [m.payload for m in got] == [b"long", b"forever"]
    remaining = got[0].prop("MessageExpiryInterval")
    assert remaining is not None and 100 <= remaining < 120, remaining
    assert got[1].prop("MessageExpiryInterval") is None


def test_v5_retained_message_expires(broker):
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("x/retained", b"brief", qos=1, retain=True,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    time.sleep(2.5)  # let it expire (scenario setup, not an assertion)
    sub = Client(broker, protocol=MQTTv5)
    sub.subscribe("x/retained", 1)
    assert sub.messages_before_fence() == []

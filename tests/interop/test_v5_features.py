"""MQTT 5 features: No Local, shared subscriptions, topic aliases, and the properties a
broker must forward unchanged."""

import queue
import struct
import time

import pytest

import rawmqtt as raw
from pahoclient import (
    MQTTv5, MQTTv311, WAIT, Client, PacketTypes, SubscribeOptions, props, unique,
)

# -- No Local ---------------------------------------------------------------------------------


def test_no_local_subscription_does_not_receive_own_messages(broker):
    me = Client(broker, protocol=MQTTv5)
    other = Client(broker, protocol=MQTTv5)
    me.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
    other.subscribe("nl/t", 1)
    me.publish("nl/t", b"mine", qos=1)
    assert other.expect_message().payload == b"mine"
    assert me.messages_before_fence() == []  # [MQTT-3.8.3-3]
    other.publish("nl/t", b"theirs", qos=1)
    assert [m.payload for m in me.messages_before_fence()] == [b"theirs"]


def test_without_no_local_a_client_receives_its_own_messages(broker):
    me = Client(broker, protocol=MQTTv5)
    me.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=False))
    me.publish("nl/t", b"echo", qos=1)
    assert [m.payload for m in me.messages_before_fence()] == [b"echo"]


# -- shared subscriptions ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])
def test_shared_subscription_distributes_messages_between_members(broker, protocol):
    a = Client(broker, protocol=protocol)
    b = Client(broker, protocol=protocol)
    plain = Client(broker, protocol=protocol)
    assert a.subscribe("$share/g/jobs/+", 1) == [1]
    assert b.subscribe("$share/g/jobs/+", 1) == [1]
    plain.subscribe("jobs/+", 1)
    pub = Client(broker, protocol=protocol)
    sent = [f"job{i}".encode() for i in range(20)]
    for p in sent:
        pub.publish("jobs/x", p, qos=1)

    got_a, got_b = [], []
    deadline = time.monotonic() + 2 * WAIT
    while len(got_a) + len(got_b) < len(sent):
        assert time.monotonic() < deadline, f"only {got_a + got_b} arrived"
        for who, got in ((a, got_a), (b, got_b)):
            try:
                got.append(who.messages.get(timeout=0.05).payload)
            except queue.Empty:
                pass
    got_a += [m.payload for m in a.messages_before_fence()]
    got_b += [m.payload for m in b.messages_before_fence()]
    # Each message to exactly one member of the group; each member gets some.
    assert sorted(got_a + got_b) == sorted(sent), (got_a, got_b)
    assert got_a and got_b, (got_a, got_b)
    # A non-shared subscription still gets its own copy of everything.
    assert [m.payload for m in plain.messages_before_fence()] == sent


def test_different_share_groups_each_get_a_copy(broker):
    g1 = Client(broker, protocol=MQTTv5)
    g2 = Client(broker, protocol=MQTTv5)
    g1.subscribe("$share/one/s/t", 1)
    g2.subscribe("$share/two/s/t", 1)
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("s/t", b"both groups", qos=1)
    assert [m.payload for m in g1.messages_before_fence()] == [b"both groups"]
    assert [m.payload for m in g2.messages_before_fence()] == [b"both groups"]


def test_shared_subscription_gets_no_retained_messages(broker):
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("sr/t", b"retained", qos=1, retain=True)
    member = Client(broker, protocol=MQTTv5)
    member.subscribe("$share/g/sr/t", 1)
    assert member.messages_before_fence() == []  # [MQTT-4.8.2-?] §4.8.2


def test_invalid_shared_subscription_filter_is_refused(broker):
    with raw.RawClient(*broker.addr) as s:
        s.connect("badshare", version=raw.V5)
        s.send(raw.subscribe(3, [("$share/g", 1), ("$share/g+/t", 1)], version=raw.V5))
        ack = s.expect(raw.SUBACK)
        assert ack.suback_codes(raw.V5) == [0x8F, 0x8F]


# -- topic aliases ----------------------------------------------------------------------------


def test_topic_alias_maximum_is_announced(start_broker):
    b = start_broker("[mqtt]\ntopic_alias_maximum = 5\n")
    c = Client(b, protocol=MQTTv5)
    assert getattr(c.connack.properties, "TopicAliasMaximum", None) == 5


def test_publish_with_topic_alias_from_client_is_routed_to_the_full_topic(broker):
    sub = Client(broker, protocol=MQTTv5)
    sub.subscribe("ta/#", 1)
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("ta/long/topic/name", b"first", qos=1,
                properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"second", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("ta/other", b"third", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    pub.publish("", b"fourth", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    got = [(m.topic, m.payload) for m in sub.messages_before_fence()]
    assert got == [("ta/long/topic/name", b"first"), ("ta/long/topic/name", b"second"),
                   ("ta/other", b"third"), ("ta/other", b"fourth")]


def test_topic_alias_above_maximum_is_a_protocol_error(start_broker):
    b = start_broker("[mqtt]\ntopic_alias_maximum = 2\n")
    c = Client(b, protocol=MQTTv5)
    d = c.publish_expecting_disconnect("ta/x", b"x", properties=props(PacketTypes.PUBLISH, TopicAlias=3))
    assert d.reason_code == 0x94  # [MQTT-3.3.2-9] Topic Alias invalid


def test_unknown_topic_alias_is_a_protocol_error(broker):
    c = Client(broker, protocol=MQTTv5)
    d = c.publish_expecting_disconnect("", b"x", properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    assert d.reason_code == 0x82


def test_broker_uses_topic_aliases_toward_a_client_that_allows_them(broker):
    pub = Client(broker, protocol=MQTTv5)
    with raw.RawClient(*broker.addr) as s:
        # CONNECT with Topic Alias Maximum (0x22) = 4.
        s.connect(unique("alias"), version=raw.V5, props=b"\x22" + struct.pack("!H", 4))
        s.send(raw.subscribe(1, [("al/+", 0)], version=raw.V5))
        s.expect(raw.SUBACK)
        pub.publish("al/t", b"1", qos=1)
        pub.publish("al/t", b"2", qos=1)
        first = s.expect(raw.PUBLISH).publish(raw.V5)
        second = s.expect(raw.PUBLISH).publish(raw.V5)
    # The first carries the topic and sets the alias; the next may use the alias alone.
    assert first.topic == "al/t" and first.payload == b"1"
    alias = first.properties.get(0x23)
    assert alias and 1 <= alias[0] <= 4, first.properties
    assert second.payload == b"2"
    assert second.properties.get(0x23) == alias
    assert second.topic in ("", "al/t")


def test_no_topic_alias_toward_a_client_that_did_not_allow_them(broker):
    pub = Client(broker, protocol=MQTTv5)
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("noalias"), version=raw.V5)
        s.send(raw.subscribe(1, [("al/+", 0)], version=raw.V5))
        s.expect(raw.SUBACK)
        pub.publish("al/t", b"1", qos=1)
        pub.publish("al/t", b"2", qos=1)
        for _ in range(2):
            p = s.expect(raw.PUBLISH).publish(raw.V5)
            assert p.topic == "al/t" and 0x23 not in p.properties  # [MQTT-3.3.2-7]


# -- forwarded properties ---------------------------------------------------------------------


def test_publish_properties_are_forwarded_unchanged(broker):
    sub = Client(broker, protocol=MQTTv5)
    sub.subscribe("props/t", 2)
    pub = Client(broker, protocol=MQTTv5)
    user = [("region", "eu"), ("k", "v1"), ("k", "v2"), ("ünï", "cödé")]
    pub.publish("props/t", "héllo".encode(), qos=2, properties=props(
        PacketTypes.PUBLISH,
        UserProperty=user,
        ContentType="application/json",
        ResponseTopic="reply/here",
        CorrelationData=b"\x00\x01\xfe\xff",
        PayloadFormatIndicator=1,
    ))
    m = sub.expect_message()
    assert m.payload == "héllo".encode()
    # [MQTT-3.3.2-17/-18]: order of user properties kept; §3.3.2.3: forwarded unaltered.
    assert m.prop("UserProperty") == user
    assert m.prop("ContentType") == "application/json"
    assert m.prop("ResponseTopic") == "reply/here"
    assert m.prop("CorrelationData") == b"\x00\x01\xfe\xff"
    assert m.prop("PayloadFormatIndicator") == 1


def test_request_response_round_trip_with_correlation_data(broker):
    server = Client(broker, protocol=MQTTv5)
    server.subscribe("svc/req", 1)
    caller = Client(broker, protocol=MQTTv5)
    caller.subscribe("svc/reply/me", 1)
    caller.publish("svc/req", b"ping", qos=1, properties=props(
        PacketTypes.PUBLISH, ResponseTopic="svc/reply/me", CorrelationData=b"id-42"))
    req = server.expect_message()
    server.publish(req.prop("ResponseTopic"), b"pong", qos=1, properties=props(
        PacketTypes.PUBLISH, CorrelationData=req.prop("CorrelationData")))
    reply = caller.expect_message()
    assert (reply.payload, reply.prop("CorrelationData")) == (b"pong", b"id-42")


def test_payload_format_indicator_with_invalid_utf8_is_refused(broker):
    sub = Client(broker, protocol=MQTTv5)
    sub.subscribe("pfi/t", 1)
    pub = Client(broker, protocol=MQTTv5)
    info = pub.c.publish("pfi/t", b"\xff\xfe not utf-8", qos=1,
                         properties=props(PacketTypes.PUBLISH, PayloadFormatIndicator=1))
    info.wait_for_publish(timeout=WAIT)
    # PUBACK 0x99 Payload format invalid, or a DISCONNECT 0x99 [MQTT-3.3.2-4]; never forwarded.
    assert sub.messages_before_fence() == []


def test_v311_subscriber_gets_message_without_v5_properties(broker):
    sub = Client(broker, protocol=MQTTv311)
    sub.subscribe("mixed", 1)
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("mixed", b"plain", qos=1,
                properties=props(PacketTypes.PUBLISH, UserProperty=[("a", "b")]))
    m = sub.expect_message()
    assert m.payload == b"plain"

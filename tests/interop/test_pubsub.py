"""Publish/subscribe: QoS flows, wildcards, `$` topics, overlapping subscriptions, QoS
downgrade and invalid filters. Each test gets a fresh broker, so topics need no prefixes."""

import json
import time

import pytest

import rawmqtt as raw
from pahoclient import (
    MQTTv5, MQTTv31, MQTTv311, Client, PacketTypes, props,
)

VERSIONS = pytest.mark.parametrize(
    "protocol", [MQTTv31, MQTTv311, MQTTv5], ids=["v3.1", "v3.1.1", "v5"]
)


@VERSIONS
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_is_delivered_once_with_equal_payload_at_each_qos(broker, protocol, qos):
    sub = Client(broker, protocol=protocol)
    pub = Client(broker, protocol=protocol)
    assert sub.subscribe("q/t", qos) == [qos]
    payload = bytes(range(256)) * 4
    pub.publish("q/t", payload, qos=qos)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos, m.retain) == ("q/t", payload, qos, False)
    # Exactly once, also for QoS 1 (no duplicate when nothing was lost).
    if qos == 0:
        pub.fence()  # the QoS 0 publish has been routed once this returns
    sub.fence()


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])
def test_many_messages_arrive_in_order_at_qos_2(broker, protocol):
    sub = Client(broker, protocol=protocol)
    pub = Client(broker, protocol=protocol)
    sub.subscribe("order", 2)
    infos = [pub.publish("order", str(i).encode(), qos=2, wait=False) for i in range(50)]
    for info in infos:
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    got = [m.payload for m in sub.expect_messages(50)]
    assert got == [str(i).encode() for i in range(50)]  # [MQTT-4.6.0-5] order per topic
    sub.fence()


def test_large_payload_is_delivered_intact(broker):
    sub = Client(broker, protocol=MQTTv5)
    pub = Client(broker, protocol=MQTTv311)
    sub.subscribe("big", 1)
    payload = bytes(i % 251 for i in range(200_000))
    pub.publish("big", payload, qos=1)
    assert sub.expect_message().payload == payload


def test_v311_and_v5_clients_talk_to_each_other(broker):
    v3 = Client(broker, protocol=MQTTv311)
    v5 = Client(broker, protocol=MQTTv5)
    v3.subscribe("x/from5", 1)
    v5.subscribe("x/from3", 1)
    v5.publish("x/from5", b"five", qos=1,
               properties=props(PacketTypes.PUBLISH, UserProperty=[("k", "v")]))
    v3.publish("x/from3", b"three", qos=1)
    assert v3.expect_message().payload == b"five"
    assert v5.expect_message().payload == b"three"


def received_topics(client) -> list[str]:
    return sorted(m.topic for m in client.messages_before_fence())


def test_single_level_wildcard_matches_exactly_one_level(broker):
    sub = Client(broker)
    pub = Client(broker)
    sub.subscribe([("sport/+", 1), ("+/+", 1), ("/+", 1), ("a/+/c", 1)])
    topics = ["sport", "sport/", "sport/tennis", "sport/tennis/player1", "/finance",
              "a/b/c", "a//c", "a/b/c/d", "a/c"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    # sport/+ ─ sport/, sport/tennis; +/+ ─ sport/, sport/tennis, /finance, a/c;
    # /+ ─ /finance; a/+/c ─ a/b/c, a//c. One copy each.
    assert received_topics(sub) == sorted(
        ["sport/", "sport/tennis", "/finance", "a/b/c", "a//c", "a/c"]
    )


def test_multi_level_wildcard_matches_parent_and_all_children(broker):
    sub = Client(broker)
    pub = Client(broker)
    sub.subscribe("sport/tennis/player1/#", 1)
    topics = ["sport/tennis/player1", "sport/tennis/player1/ranking",
              "sport/tennis/player1/score/wimbledon", "sport/tennis/player2", "sport/tennis"]
    for t in topics:
        pub.publish(t, b"x", qos=1)
    assert received_topics(sub) == sorted(topics[:3])  # [MQTT-4.7.1-2]


def test_hash_alone_matches_every_topic_not_starting_with_dollar(broker):
    sub = Client(broker)
    pub = Client(broker)
    sub.subscribe("#", 1)
    for t in ["a", "a/b", "/x", "$foo/bar", "$foo"]:
        pub.publish(t, b"x", qos=1)
    assert received_topics(sub) == ["/x", "a", "a/b"]


def test_dollar_topics_are_not_matched_by_leading_wildcards(broker):
    sub = Client(broker)
    dollar = Client(broker)
    pub = Client(broker)
    sub.subscribe([("#", 1), ("+/bar", 1), ("+", 1)])
    dollar.subscribe([("$foo/#", 1), ("$foo/+", 1)])
    pub.publish("$foo/bar", b"dollar", qos=1)
    pub.publish("baz/bar", b"plain", qos=1)
    # [MQTT-4.7.2-1]: filters starting with a wildcard don't match $-topics.
    assert received_topics(sub) == ["baz/bar"]
    assert received_topics(dollar) == ["$foo/bar"]


def test_clients_cannot_publish_to_sys_topics(start_broker):
    b = start_broker("[sys]\ninterval_secs = 0\nclient_events = false\n")
    watcher = Client(b, protocol=MQTTv5)
    watcher.subscribe("$SYS/#", 0)
    pub = Client(b, protocol=MQTTv311)
    pub.publish("$SYS/broker/fake", b"spoof", qos=1)
    assert watcher.messages_before_fence() == []


def test_client_events_announce_connections_and_disconnections(start_broker):
    b = start_broker("[sys]\ninterval_secs = 0\n")
    watcher = Client(b, protocol=MQTTv5)
    watcher.subscribe("$SYS/brokers/clients/+", 0)
    device = Client(b, "lamp-1", protocol=MQTTv5)
    m = watcher.expect_message()
    assert m.topic == "$SYS/brokers/clients/connected"
    event = json.loads(m.payload)
    assert (event["clientid"], event["protocol"]) == ("lamp-1", "5.0")
    device.abort()
    m = watcher.expect_message()
    assert m.topic == "$SYS/brokers/clients/disconnected"
    event = json.loads(m.payload)
    assert (event["clientid"], event["reason"]) == ("lamp-1", "connection_lost")


def test_sys_topics_are_published_and_only_under_dollar_sys(start_broker):
    b = start_broker("[sys]\ninterval_secs = 1\n")
    everything = Client(b)
    everything.subscribe("#", 0)
    sys_ = Client(b, protocol=MQTTv5)
    sys_.subscribe("$SYS/#", 0)
    wanted = {"$SYS/broker/version", "$SYS/broker/uptime", "$SYS/broker/clients/connected"}
    retained, live = {}, {}
    deadline = time.monotonic() + 20
    while not wanted <= live.keys():
        assert time.monotonic() < deadline, f"missing live $SYS topics: {wanted - live.keys()}"
        m = sys_.expect_message()
        # Retained values (sent on subscribe) may predate our connection; the periodic
        # publications after it arrive with RETAIN 0.
        (retained if m.retain else live)[m.topic] = m.payload
    assert live["$SYS/broker/version"].startswith(b"thingmq"), live["$SYS/broker/version"]
    assert live["$SYS/broker/uptime"].split()[0].isdigit(), live["$SYS/broker/uptime"]
    assert int(live["$SYS/broker/clients/connected"]) >= 2
    assert "$SYS/broker/version" in retained  # $SYS values are retained
    # The periodic publication has been routed to both clients by now: '#' got none of it.
    leaked = [m.topic for m in everything.messages_before_fence() if m.topic.startswith("$")]
    assert leaked == []


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])
def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker, protocol):
    sub = Client(broker, protocol=protocol)
    pub = Client(broker, protocol=protocol)
    sub.subscribe("ov/+", 0)
    sub.subscribe("ov/#", 2)
    sub.subscribe("ov/a", 1)
    pub.publish("ov/a", b"one", qos=2)
    got = sub.messages_before_fence()
    assert [(m.topic, m.payload, m.qos) for m in got] == [("ov/a", b"one", 2)]


def test_v5_overlapping_subscriptions_carry_every_subscription_identifier(broker):
    sub = Client(broker, protocol=MQTTv5)
    pub = Client(broker, protocol=MQTTv5)
    sub.subscribe("si/+", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    sub.subscribe("si/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2))
    sub.subscribe("si/a", 1)  # no identifier
    pub.publish("si/a", b"both", qos=1)
    pub.publish("si/a/deep", b"one", qos=1)
    got = sub.messages_before_fence()
    assert [m.payload for m in got] == [b"both", b"one"]
    # [MQTT-3.3.4-3/-5]: one copy carrying the identifiers of all matching subscriptions.
    assert sorted(got[0].prop("SubscriptionIdentifier", [])) == [1, 2]
    assert got[1].prop("SubscriptionIdentifier", []) == [2]


@pytest.mark.parametrize("pub_qos,sub_qos", [(2, 0), (2, 1), (1, 0), (1, 2), (0, 2)])
def test_delivery_qos_is_the_lower_of_publish_and_subscription_qos(broker, pub_qos, sub_qos):
    sub = Client(broker, protocol=MQTTv5)
    pub = Client(broker, protocol=MQTTv311)
    sub.subscribe("dg", sub_qos)
    pub.publish("dg", b"down", qos=pub_qos)
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"down", min(pub_qos, sub_qos))


def test_max_qos_limits_granted_qos_and_is_announced(start_broker):
    b = start_broker("[mqtt]\nmax_qos = 1\n")
    v5 = Client(b, protocol=MQTTv5)
    assert getattr(v5.connack.properties, "MaximumQoS", None) == 1
    assert v5.subscribe("mq", 2) == [1]
    v3 = Client(b, protocol=MQTTv311)
    assert v3.subscribe("mq3", 2) == [1]


def test_unsubscribe_stops_delivery(broker):
    sub = Client(broker, protocol=MQTTv5)
    pub = Client(broker)
    sub.subscribe("un/t", 1)
    assert sub.unsubscribe("un/t") == [0]
    assert sub.unsubscribe("un/t") == [0x11]  # No subscription existed
    pub.publish("un/t", b"x", qos=1)
    sub.fence()


@pytest.mark.parametrize("version,failure", [(raw.V311, 0x80), (raw.V5, 0x8F)],
                         ids=["v3.1.1", "v5"])
def test_subscribing_to_an_invalid_filter_is_refused_in_suback(broker, version, failure):
    with raw.RawClient(*broker.addr) as s:
        s.connect("badfilter", version=version)
        s.send(raw.subscribe(7, [("ok/t", 1), ("a/#/b", 1), ("a+/b", 0)], version=version))
        ack = s.expect(raw.SUBACK)
        assert ack.body[:2] == b"\x00\x07"
        # [MQTT-4.7.1-1/-2]: '#' last and alone, '+' alone in its level; the others still work.
        assert ack.suback_codes(version) == [1, failure, failure]
        s.send(raw.packet(raw.PINGREQ, 0, b""))
        s.expect(raw.PINGRESP)

"""Retained messages (§3.3.1.3) and the v5 subscription options that govern them."""

import pytest

from pahoclient import MQTTv5, MQTTv311, Client, SubscribeOptions

BOTH = pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])


def payloads(messages):
    return [(m.topic, m.payload, m.retain) for m in messages]


@BOTH
def test_retained_message_is_sent_with_retain_flag_to_a_new_subscriber(broker, protocol):
    pub = Client(broker, protocol=protocol)
    pub.publish("r/t", b"kept", qos=1, retain=True)
    sub = Client(broker, protocol=protocol)
    sub.subscribe("r/t", 1)
    # [MQTT-3.3.1-8]: RETAIN is 1 on messages sent because of a new subscription.
    assert payloads(sub.messages_before_fence()) == [("r/t", b"kept", True)]


@BOTH
def test_retained_message_is_replaced_by_newer_one(broker, protocol):
    pub = Client(broker, protocol=protocol)
    pub.publish("r/t", b"old", qos=1, retain=True)
    pub.publish("r/t", b"new", qos=1, retain=True)
    sub = Client(broker, protocol=protocol)
    sub.subscribe("r/#", 1)
    assert payloads(sub.messages_before_fence()) == [("r/t", b"new", True)]


@BOTH
def test_retained_message_is_deleted_by_empty_payload(broker, protocol):
    pub = Client(broker, protocol=protocol)
    pub.publish("r/t", b"soon gone", qos=1, retain=True)
    pub.publish("r/t", b"", qos=1, retain=True)
    sub = Client(broker, protocol=protocol)
    sub.subscribe("r/t", 1)
    # [MQTT-3.3.1-10/-11]: removed, and the empty message itself is not stored.
    assert sub.messages_before_fence() == []


def test_non_retained_publish_leaves_the_retained_message_alone(broker):
    pub = Client(broker)
    pub.publish("r/t", b"kept", qos=1, retain=True)
    pub.publish("r/t", b"passing", qos=1, retain=False)
    sub = Client(broker)
    sub.subscribe("r/t", 1)
    assert payloads(sub.messages_before_fence()) == [("r/t", b"kept", True)]


def test_wildcard_subscription_gets_every_matching_retained_message(broker):
    pub = Client(broker)
    for t in ["home/kitchen/temp", "home/hall/temp", "home/kitchen/light", "office/temp"]:
        pub.publish(t, t.encode(), qos=1, retain=True)
    sub = Client(broker)
    sub.subscribe("home/+/temp", 1)
    got = sorted(payloads(sub.messages_before_fence()))
    assert got == [("home/hall/temp", b"home/hall/temp", True),
                   ("home/kitchen/temp", b"home/kitchen/temp", True)]


def test_retained_message_is_sent_at_the_lower_of_its_qos_and_the_subscription_qos(broker):
    pub = Client(broker)
    pub.publish("r/q2", b"two", qos=2, retain=True)
    pub.publish("r/q0", b"zero", qos=0, retain=True)
    pub.fence()  # the QoS 0 publish has been handled
    sub = Client(broker)
    sub.subscribe("r/q2", 1)
    sub.subscribe("r/q0", 2)
    got = sorted((m.topic, m.qos) for m in sub.messages_before_fence())
    assert got == [("r/q0", 0), ("r/q2", 1)]


@BOTH
def test_live_message_to_existing_subscriber_has_retain_flag_cleared(broker, protocol):
    sub = Client(broker, protocol=protocol)
    sub.subscribe("r/live", 1)
    pub = Client(broker, protocol=protocol)
    pub.publish("r/live", b"fresh", qos=1, retain=True)
    m = sub.expect_message()
    # [MQTT-3.3.1-9] (v3.1.1) / Retain As Published = 0 [MQTT-3.3.1-12] (v5).
    assert (m.payload, m.retain) == (b"fresh", False)


def test_v5_retain_as_published_keeps_the_retain_flag_on_live_messages(broker):
    sub = Client(broker, protocol=MQTTv5)
    sub.subscribe("rap/#", options=SubscribeOptions(qos=1, retainAsPublished=True))
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("rap/a", b"retained", qos=1, retain=True)
    pub.publish("rap/b", b"plain", qos=1, retain=False)
    got = payloads(sub.messages_before_fence())
    assert got == [("rap/a", b"retained", True), ("rap/b", b"plain", False)]  # [MQTT-3.3.1-13]


def _subscribe_twice(broker, handling):
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("rh/t", b"kept", qos=1, retain=True)
    sub = Client(broker, protocol=MQTTv5)
    options = SubscribeOptions(qos=1, retainHandling=handling)
    sub.subscribe("rh/t", options=options)
    first = payloads(sub.messages_before_fence())
    sub.subscribe("rh/t", options=options)  # the same filter again: an existing subscription
    second = payloads(sub.messages_before_fence())
    return first, second


def test_v5_retain_handling_0_sends_retained_on_every_subscribe(broker):
    first, second = _subscribe_twice(broker, SubscribeOptions.RETAIN_SEND_ON_SUBSCRIBE)
    assert first == [("rh/t", b"kept", True)]
    assert second == [("rh/t", b"kept", True)]  # [MQTT-3.3.1-9]


def test_v5_retain_handling_1_sends_retained_only_for_a_new_subscription(broker):
    first, second = _subscribe_twice(broker, SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
    assert first == [("rh/t", b"kept", True)]
    assert second == []  # [MQTT-3.3.1-10]


def test_v5_retain_handling_2_never_sends_retained(broker):
    first, second = _subscribe_twice(broker, SubscribeOptions.RETAIN_DO_NOT_SEND)
    assert first == []  # [MQTT-3.3.1-11]
    assert second == []


def test_retained_message_survives_its_publisher_disconnecting(broker):
    pub = Client(broker, protocol=MQTTv5)
    pub.publish("r/orphan", b"still here", qos=1, retain=True)
    pub.disconnect()
    sub = Client(broker)
    sub.subscribe("r/orphan", 1)
    assert payloads(sub.messages_before_fence()) == [("r/orphan", b"still here", True)]

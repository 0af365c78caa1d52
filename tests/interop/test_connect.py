"""Connecting: protocol versions, client ids, keep-alive, takeover and broken clients."""

import time

import pytest

import rawmqtt as raw
from pahoclient import (
    MQTTv5, MQTTv31, MQTTv311, Client, PacketTypes, props, unique,
)


@pytest.mark.parametrize("protocol", [MQTTv31, MQTTv311, MQTTv5], ids=["v3.1", "v3.1.1", "v5"])
def test_client_of_each_protocol_version_is_accepted_and_can_ping(broker, protocol):
    c = Client(broker, protocol=protocol, keepalive=60)
    assert c.connack.reason_code == 0
    assert c.connack.session_present is False
    # A round trip through the broker proves the connection is usable after CONNACK.
    topic = f"hello/{unique('t')}"
    c.subscribe(topic, 1)
    c.publish(topic, b"hi", qos=1)
    assert c.expect_message().payload == b"hi"
    c.disconnect()


@pytest.mark.parametrize("version", [raw.V31, raw.V311, raw.V5], ids=["v3.1", "v3.1.1", "v5"])
def test_raw_connack_has_the_right_shape_for_each_version(broker, version):
    with raw.RawClient(*broker.addr) as s:
        ack = s.connect(unique("raw"), version=version)
        assert ack.connack_code == 0
        assert ack.connack_session_present is False
        if version == raw.V5:
            # Flags, reason code, then a property block.
            length, pos = raw.read_varint(ack.body, 2)
            assert len(ack.body) == pos + length
        else:
            assert len(ack.body) == 2
        s.send(raw.packet(raw.PINGREQ, 0, b""))
        assert s.expect(raw.PINGRESP).body == b""


def test_v5_client_with_empty_id_is_assigned_a_client_identifier(broker):
    c = Client(broker, client_id="", protocol=MQTTv5)
    assigned = getattr(c.connack.properties, "AssignedClientIdentifier", None)
    assert assigned, f"no Assigned Client Identifier in CONNACK: {c.connack.properties}"
    other = Client(broker, client_id="", protocol=MQTTv5)
    assert other.connack.properties.AssignedClientIdentifier != assigned


def test_v311_empty_client_id_with_clean_session_is_accepted(broker):
    with raw.RawClient(*broker.addr) as s:
        assert s.connect("", version=raw.V311, clean=True).connack_code == 0


def test_v311_empty_client_id_without_clean_session_is_refused_with_return_code_2(broker):
    # [MQTT-3.1.3-8]: CONNACK 0x02 (identifier rejected), then close.
    with raw.RawClient(*broker.addr) as s:
        ack = s.connect("", version=raw.V311, clean=False)
        assert ack.connack_code == 2
        assert ack.connack_session_present is False
        assert s.wait_closed() == []


def test_v31_empty_client_id_is_refused_with_return_code_2(broker):
    with raw.RawClient(*broker.addr) as s:
        ack = s.connect("", version=raw.V31, clean=True)
        assert ack.connack_code == 2
        s.wait_closed()


def test_unsupported_protocol_level_is_refused_with_return_code_1(broker):
    with raw.RawClient(*broker.addr) as s:
        s.send(raw.connect("lvl", version=7))
        p = s.expect(raw.CONNACK)
        assert p.connack_code == 1
        s.wait_closed()


def test_receive_maximum_is_announced_in_v5_connack(start_broker):
    b = start_broker("[mqtt]\nreceive_maximum = 7\n")
    c = Client(b, protocol=MQTTv5)
    assert getattr(c.connack.properties, "ReceiveMaximum", None) == 7


def test_max_keep_alive_is_announced_as_server_keep_alive(start_broker):
    b = start_broker("[mqtt]\nmax_keep_alive = 10\n")
    c = Client(b, protocol=MQTTv5, keepalive=60)
    assert getattr(c.connack.properties, "ServerKeepAlive", None) == 10


def test_keep_alive_within_the_maximum_gets_no_server_keep_alive(start_broker):
    b = start_broker("[mqtt]\nmax_keep_alive = 100\n")
    c = Client(b, protocol=MQTTv5, keepalive=30)
    assert getattr(c.connack.properties, "ServerKeepAlive", None) is None


def test_silent_client_is_closed_after_one_and_a_half_keep_alives_and_its_will_is_published(broker):
    watcher = Client(broker)
    will_topic = f"will/{unique('ka')}"
    watcher.subscribe(will_topic, 1)
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("silent"), keepalive=1, will=(will_topic, b"gone", 1, False))
        started = time.monotonic()
        # [MQTT-3.1.2-24]: closed once 1.5 × keep-alive passed without a packet.
        assert s.wait_closed(timeout=8.0) == []
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 6.0, f"closed after {elapsed:.2f} s"
    m = watcher.expect_message()
    assert (m.topic, m.payload) == (will_topic, b"gone")


def test_v5_silent_client_gets_disconnect_keep_alive_timeout(broker):
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("silent5"), version=raw.V5, keepalive=1)
        packets = s.wait_closed(timeout=8.0)
    assert [p.kind for p in packets] == [raw.DISCONNECT]
    assert packets[0].disconnect_reason == 0x8D


def test_pings_keep_a_connection_alive(broker):
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("pinger"), keepalive=1)
        for _ in range(4):
            time.sleep(0.5)  # pacing the pings, not an assertion
            s.send(raw.packet(raw.PINGREQ, 0, b""))
            s.expect(raw.PINGRESP)


@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])
def test_second_connection_with_same_client_id_takes_over(broker, protocol):
    cid = unique("twin")
    first = Client(broker, cid, protocol=protocol)
    second = Client(broker, cid, protocol=protocol)
    d = first.expect_disconnect()
    if protocol == MQTTv5:
        # DISCONNECT 0x8E Session taken over [MQTT-3.1.4-3].
        assert d.reason_code == 0x8E
    # The new connection works.
    topic = f"twin/{unique('t')}"
    second.subscribe(topic, 1)
    second.publish(topic, b"still here", qos=1)
    assert second.expect_message().payload == b"still here"
    second.fence()
    assert second.disconnects.empty()


def test_v5_taken_over_connection_gets_disconnect_0x8e_on_the_wire(broker):
    cid = unique("wire")
    with raw.RawClient(*broker.addr) as first, raw.RawClient(*broker.addr) as second:
        first.connect(cid, version=raw.V5)
        assert second.connect(cid, version=raw.V5).connack_code == 0
        packets = first.wait_closed()
    assert [p.kind for p in packets] == [raw.DISCONNECT]
    assert packets[0].disconnect_reason == 0x8E


def test_garbage_bytes_close_that_connection_but_others_keep_working(broker):
    other = Client(broker)
    topic = f"alive/{unique('t')}"
    other.subscribe(topic, 1)
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("garbage"))
        s.send(b"\xff\xff\xff\xff\xff\xff\xff\xff")
        s.wait_closed()
    other.publish(topic, b"ok", qos=1)
    assert other.expect_message().payload == b"ok"


def test_http_request_instead_of_connect_is_closed_without_waiting_for_the_connect_timeout(broker):
    with raw.RawClient(*broker.addr) as s:
        s.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        s.wait_closed(timeout=12)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"closed after {elapsed:.1f} s"


def test_first_packet_other_than_connect_closes_the_connection(broker):
    with raw.RawClient(*broker.addr) as s:
        s.send(raw.packet(raw.PINGREQ, 0, b""))
        assert s.wait_closed() == []


def test_v311_second_connect_on_same_connection_closes_it(broker):
    with raw.RawClient(*broker.addr) as s:
        cid = unique("twice")
        s.connect(cid)
        s.send(raw.connect(cid))
        # [MQTT-3.1.0-2]: a protocol violation; v3 has no DISCONNECT from the server.
        assert s.wait_closed() == []


def test_v5_second_connect_gets_protocol_error_and_close(broker):
    with raw.RawClient(*broker.addr) as s:
        cid = unique("twice5")
        s.connect(cid, version=raw.V5)
        s.send(raw.connect(cid, version=raw.V5))
        packets = s.wait_closed()
    assert [p.kind for p in packets] == [raw.DISCONNECT]
    assert packets[0].disconnect_reason == 0x82


def test_publish_above_max_packet_size_gets_disconnect_0x95(start_broker):
    b = start_broker("[mqtt]\nmax_packet_size = 128\n")
    c = Client(b, protocol=MQTTv5)
    assert getattr(c.connack.properties, "MaximumPacketSize", None) == 128
    # Raw paho call: the broker may answer (DISCONNECT 0x95) and close before paho's publish()
    # returns, and paho then reports MQTT_ERR_NO_CONN for a packet it did send.
    c.c.publish(f"big/{unique('t')}", b"x" * 1000, qos=0)
    d = c.expect_disconnect()
    assert d.reason_code == 0x95


def test_small_publish_under_max_packet_size_is_delivered(start_broker):
    b = start_broker("[mqtt]\nmax_packet_size = 128\n")
    c = Client(b, protocol=MQTTv5)
    topic = f"s/{unique('t')}"
    c.subscribe(topic, 1)
    c.publish(topic, b"small", qos=1)
    assert c.expect_message().payload == b"small"


def test_connection_that_never_sends_connect_is_closed_after_connect_timeout(start_broker):
    b = start_broker("[limits]\nconnect_timeout_ms = 500\n")
    with raw.RawClient(*b.addr) as s:
        started = time.monotonic()
        assert s.wait_closed(timeout=8.0) == []
        assert time.monotonic() - started < 6.0


def test_v5_session_expiry_above_maximum_is_answered_in_connack(start_broker):
    b = start_broker("[mqtt]\nmax_session_expiry = 30\n")
    c = Client(b, protocol=MQTTv5, clean=True,
               connect_properties=props(PacketTypes.CONNECT, SessionExpiryInterval=3600))
    assert getattr(c.connack.properties, "SessionExpiryInterval", None) == 30

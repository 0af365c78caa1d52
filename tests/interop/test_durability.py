"""Durability: what survives a broker restart (SIGTERM) and a crash (SIGKILL) with the
on-disk store — persistent sessions with their subscriptions, offline queue and in-flight
messages in both directions, session expiry counted in wall-clock time, retained messages
with their properties and expiry, and pending delayed wills. See docs/durability.md."""

from __future__ import annotations

import struct
import subprocess
import time

import pytest

import rawmqtt as raw
from conftest import thingmq_bin
from durable import DurableBroker
from pahoclient import MQTTv5, MQTTv311, QUIET, Client, PacketTypes, SubscribeOptions, props, unique

RESTART = pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])


@pytest.fixture
def durable(tmp_path, request):
    d = DurableBroker(tmp_path, sync=getattr(request, "param", "always"))
    yield d
    failed = any(
        getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
        for w in ("setup", "call")
    )
    d.teardown()
    if failed:
        for b in d.all:
            print(f"---- {b.log_path.name} (last lines) ----\n{b.log_tail()}")


def v5_session(expiry: int) -> dict:
    return {"protocol": MQTTv5, "clean": False,
            "connect_properties": props(PacketTypes.CONNECT, SessionExpiryInterval=expiry)}


@RESTART
@pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])
def test_offline_queue_and_subscriptions_survive_a_restart(durable, kill, protocol):
    b = durable.start()
    sid = unique("sub")
    kw = v5_session(3600) if protocol == MQTTv5 else {"clean": False}
    sub = Client(b, sid, **kw)
    assert sub.subscribe("dur/q1/#", 1) == [1]
    assert sub.subscribe("dur/q2", 2) == [2]
    sub.disconnect()
    pub = Client(b)
    for i in range(5):
        pub.publish(f"dur/q1/{i}", f"one-{i}".encode(), qos=1)
    for i in range(3):
        pub.publish("dur/q2", f"two-{i}".encode(), qos=2)
    pub.publish("dur/q1/zero", b"qos0 is not kept offline", qos=0)

    b = durable.restart(kill=kill)
    sub = Client(b, sid, **kw)
    assert sub.connack.session_present
    got = sub.messages_before_fence()
    # paho hands a QoS 2 message over at PUBREL, which may come after the fence.
    while len(got) < 8:
        got.append(sub.expect_message())
    got.sort(key=lambda m: (m.qos, m.topic, m.payload))
    assert [(m.topic, m.payload, m.qos) for m in got] == (
        [(f"dur/q1/{i}", f"one-{i}".encode(), 1) for i in range(5)]
        + [("dur/q2", f"two-{i}".encode(), 2) for i in range(3)]
    )
    # The subscriptions themselves came back with their QoS.
    Client(b).publish("dur/q1/after", b"live", qos=1)
    m = sub.expect_message()
    assert (m.topic, m.payload, m.qos) == ("dur/q1/after", b"live", 1)


@RESTART
def test_subscription_options_and_identifiers_survive_a_restart(durable, kill):
    b = durable.start()
    sid = unique("sub")
    sub = Client(b, sid, **v5_session(3600))
    sub.subscribe("opt/a", options=SubscribeOptions(qos=1, noLocal=True, retainAsPublished=True),
                  properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
    sub.disconnect()
    b = durable.restart(kill=kill)
    sub = Client(b, sid, **v5_session(3600))
    assert sub.connack.session_present
    Client(b).publish("opt/a", b"x", qos=1, retain=True)
    m = sub.expect_message()
    assert m.retain, "Retain As Published was kept"
    assert m.prop("SubscriptionIdentifier") == [42]
    # No Local: the subscriber's own message does not come back to it.
    sub.publish("opt/a", b"mine", qos=1)
    sub.fence()


@RESTART
def test_session_expiry_keeps_counting_while_the_broker_is_down(durable, kill):
    b = durable.start()
    short, long_ = unique("short"), unique("long")
    Client(b, short, **v5_session(2)).disconnect()
    Client(b, long_, **v5_session(3600)).disconnect()
    durable.kill() if kill else durable.stop()
    time.sleep(3)
    b = durable.start()
    assert not Client(b, short, **v5_session(60)).connack.session_present
    assert Client(b, long_, **v5_session(60)).connack.session_present


def test_a_clean_session_is_not_kept(durable):
    b = durable.start()
    cid = unique("clean")
    c = Client(b, cid, clean=True)
    c.subscribe("clean/t", 1)
    c.disconnect()
    b = durable.restart()
    c = Client(b, cid, clean=False)
    assert not c.connack.session_present


@RESTART
def test_inflight_qos1_and_qos2_deliveries_are_resent_after_a_restart(durable, kill):
    """A subscriber that never acknowledged gets the PUBLISHes again with DUP and the same
    packet ids; one whose PUBREC was taken gets the PUBREL, not the message again."""
    b = durable.start()
    sid = unique("raw")
    with raw.RawClient(*b.addr) as s:
        s.connect(sid, clean=False)
        s.send(raw.subscribe(1, [("inf/1", 1), ("inf/2", 2), ("inf/3", 2)]))
        s.expect(raw.SUBACK)
        pub = Client(b)
        pub.publish("inf/1", b"q1", qos=1)
        pub.publish("inf/2", b"q2", qos=2)
        pub.publish("inf/3", b"q2-rec", qos=2)
        first = {}
        for _ in range(3):
            p = s.expect(raw.PUBLISH).publish()
            first[p.topic] = p
        # PUBREC the third: the broker owes a PUBREL for it from now on.
        s.send(raw.packet(raw.PUBREC, 0, struct.pack("!H", first["inf/3"].packet_id)))
        s.expect(raw.PUBREL)
        pub.stop()
    b = durable.restart(kill=kill)
    with raw.RawClient(*b.addr) as s:
        assert s.connect(sid, clean=False).connack_session_present
        again, rels = {}, []
        for _ in range(3):
            p = s.recv_packet()
            if p.kind == raw.PUBLISH:
                pp = p.publish()
                again[pp.topic] = pp
            else:
                assert p.kind == raw.PUBREL
                rels.append(struct.unpack("!H", p.body[:2])[0])
        assert rels == [first["inf/3"].packet_id]
        assert set(again) == {"inf/1", "inf/2"}
        for t in ("inf/1", "inf/2"):
            assert again[t].dup and again[t].packet_id == first[t].packet_id
            assert again[t].payload == first[t].payload
        s.send(raw.packet(raw.PUBACK, 0, struct.pack("!H", again["inf/1"].packet_id)))
        s.send(raw.packet(raw.PUBREC, 0, struct.pack("!H", again["inf/2"].packet_id)))
        s.expect(raw.PUBREL)
        s.send(raw.packet(raw.PUBCOMP, 0, struct.pack("!H", again["inf/2"].packet_id)))
        s.send(raw.packet(raw.PUBCOMP, 0, struct.pack("!H", first["inf/3"].packet_id)))
        # PINGRESP is written only once what the acknowledgements before it changed is
        # stored, so after it even SIGKILL can't bring those messages back.
        s.send(raw.packet(raw.PINGREQ, 0, b""))
        s.expect(raw.PINGRESP)
        s.send(raw.disconnect())
    # Everything was acknowledged: nothing comes back after another restart.
    b = durable.restart(kill=kill)
    with raw.RawClient(*b.addr) as s:
        assert s.connect(sid, clean=False).connack_session_present
        with pytest.raises(TimeoutError):
            s.recv_packet(timeout=QUIET)


@RESTART
def test_a_qos2_message_awaiting_pubrel_is_not_routed_twice_after_a_restart(durable, kill):
    b = durable.start()
    watcher_id = unique("w")
    w = Client(b, watcher_id, clean=False)
    w.subscribe("q2in/t", 2)
    pid_ = 7
    sid = unique("pub")
    with raw.RawClient(*b.addr) as s:
        s.connect(sid, clean=False)
        s.send(raw.publish("q2in/t", b"once", qos=2, packet_id=pid_))
        s.expect(raw.PUBREC)
    m = w.expect_message()
    assert m.payload == b"once"
    w.stop()
    b = durable.restart(kill=kill)
    w = Client(b, watcher_id, clean=False)
    with raw.RawClient(*b.addr) as s:
        assert s.connect(sid, clean=False).connack_session_present
        # The client did not see our PUBREC (as far as it knows) and sends the PUBLISH again.
        body = raw.string("q2in/t") + struct.pack("!H", pid_) + b"once"
        s.send(raw.packet(raw.PUBLISH, (2 << 1) | 8, body))
        s.expect(raw.PUBREC)
        s.send(raw.packet(raw.PUBREL, 2, struct.pack("!H", pid_)))
        s.expect(raw.PUBCOMP)
    w.fence()


@RESTART
def test_retained_messages_with_properties_and_expiry_survive_a_restart(durable, kill):
    b = durable.start()
    pub = Client(b, protocol=MQTTv5)
    pub.publish("ret/keep", b"kept", qos=1, retain=True, properties=props(
        PacketTypes.PUBLISH, ContentType="text/plain", UserProperty=[("k", "v")],
        ResponseTopic="ret/reply", CorrelationData=b"\x01\x02", PayloadFormatIndicator=1,
        MessageExpiryInterval=3600))
    pub.publish("ret/short", b"expires", qos=1, retain=True,
                properties=props(PacketTypes.PUBLISH, MessageExpiryInterval=2))
    pub.publish("ret/cleared", b"x", qos=1, retain=True)
    pub.publish("ret/cleared", b"", qos=1, retain=True)
    durable.kill() if kill else durable.stop()
    time.sleep(2.5)
    b = durable.start()
    sub = Client(b, protocol=MQTTv5)
    sub.subscribe("ret/#", 1)
    got = sub.messages_before_fence()
    assert [(m.topic, m.payload, m.retain) for m in got] == [("ret/keep", b"kept", True)]
    m = got[0]
    assert m.prop("ContentType") == "text/plain"
    assert m.prop("UserProperty") == [("k", "v")]
    assert m.prop("ResponseTopic") == "ret/reply"
    assert m.prop("CorrelationData") == b"\x01\x02"
    assert m.prop("PayloadFormatIndicator") == 1
    assert 3590 <= m.prop("MessageExpiryInterval") <= 3600


@RESTART
def test_a_pending_delayed_will_is_published_after_a_restart(durable, kill):
    b = durable.start()
    topic = f"will/{unique('d')}"
    dying = Client(b, unique("dying"), **v5_session(3600),
                   will={"topic": topic, "payload": b"late", "qos": 1, "retain": True,
                         "properties": props(PacketTypes.WILLMESSAGE, WillDelayInterval=3)})
    dying.abort()
    # The will is pending (3 s) when the broker goes down.
    b = durable.restart(kill=kill)
    started = time.monotonic()
    watcher = Client(b)
    watcher.subscribe(topic, 1)
    m = watcher.expect_message()
    assert m.payload == b"late"
    assert time.monotonic() - started < 8


def test_a_will_pending_at_shutdown_waits_for_its_delay(durable):
    """SIGTERM treats the connection as lost: a delayed will is kept, not published."""
    b = durable.start()
    topic = f"will/{unique('s')}"
    Client(b, unique("alive"), **v5_session(3600),
           will={"topic": topic, "payload": b"bye", "qos": 1, "retain": True,
                 "properties": props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)})
    b = durable.restart()
    watcher = Client(b)
    watcher.subscribe(topic, 1)
    # Retained on publication, so a watcher that subscribes late still sees it.
    m = watcher.expect_message()
    assert m.payload == b"bye"


def test_a_truncated_store_is_refused_with_a_message_naming_the_file(durable):
    b = durable.start()
    c = Client(b, unique("s"), clean=False)
    c.subscribe("t/#", 1)
    c.disconnect()
    durable.stop()
    size = durable.store_file.stat().st_size
    with open(durable.store_file, "r+b") as f:
        f.truncate(size // 3)
    r = subprocess.run(
        [thingmq_bin(), "serve", "--bind", "127.0.0.1:0", "--config",
         str(durable.workdir / "durable1.toml")],
        capture_output=True, timeout=30, text=True)
    assert r.returncode != 0
    assert str(durable.store_file) in r.stderr, r.stderr


def test_a_store_with_garbage_in_its_header_is_refused(durable):
    b = durable.start()
    Client(b, unique("s"), clean=False).disconnect()
    durable.stop()
    with open(durable.store_file, "r+b") as f:
        f.write(b"\xff" * 64)
    r = subprocess.run(
        [thingmq_bin(), "serve", "--bind", "127.0.0.1:0", "--config",
         str(durable.workdir / "durable1.toml")],
        capture_output=True, timeout=30, text=True)
    assert r.returncode != 0
    assert str(durable.store_file) in r.stderr, r.stderr


@pytest.mark.parametrize("durable", ["interval", "never"], indirect=True)
def test_interval_and_never_keep_acknowledged_messages_across_sigkill(durable):
    """Without fsync before the acknowledgement, the batch is still written to the OS
    first: killing the process (not the machine) loses nothing acknowledged."""
    b = durable.start()
    sid = unique("sub")
    sub = Client(b, sid, clean=False)
    sub.subscribe("lazy/#", 1)
    sub.disconnect()
    pub = Client(b)
    for i in range(20):
        pub.publish(f"lazy/{i}", str(i).encode(), qos=1)
    b = durable.restart(kill=True)
    sub = Client(b, sid, clean=False)
    assert sub.connack.session_present
    got = sub.messages_before_fence()
    assert [m.payload for m in got] == [str(i).encode() for i in range(20)]


def test_a_restored_session_keeps_its_users_access_rules(tmp_path):
    """After a restart the offline session acts under its last user's ACL: a will the
    user may not write is still refused."""
    from test_auth import ACL, passwd

    pw = tmp_path / "passwords"
    passwd(pw, "alice", "wonderland", create=True)
    passwd(pw, "bob", "builder")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    d = DurableBroker(tmp_path, extra=(
        f'[auth]\nallow_anonymous = false\npassword_file = "{pw}"\nacl_file = "{acl}"\n'))
    try:
        b = d.start()
        bob = Client(b, unique("bob"), **v5_session(3600), connect=False,
                     will={"topic": "status/bob", "payload": b"gone", "qos": 1,
                           "properties": props(PacketTypes.WILLMESSAGE, WillDelayInterval=1)})
        bob.c.username_pw_set("bob", "builder")
        bob.connect()
        b = d.restart(kill=True)
        watcher = Client(b, connect=False)
        watcher.c.username_pw_set("alice", "wonderland")
        watcher.connect()
        watcher.subscribe("status/#", 1)
        watcher.expect_no_message(3.0)
        watcher.fence()
    finally:
        d.teardown()


@RESTART
def test_shared_subscription_messages_queued_for_an_offline_member_survive_a_restart(durable, kill):
    """A message the `$share` group picked for an offline persistent member is that
    member's: kept across a restart like any queued message, QoS 1 and QoS 2."""
    b = durable.start()
    sid = unique("member")
    m = Client(b, sid, **v5_session(3600))
    assert m.subscribe("$share/g/sh1/#", 1) == [1]
    assert m.subscribe("$share/g/sh2", 2) == [2]
    m.disconnect()
    pub = Client(b)
    for i in range(3):
        pub.publish(f"sh1/{i}", f"one-{i}".encode(), qos=1)
    for i in range(2):
        pub.publish("sh2", f"two-{i}".encode(), qos=2)
    b = durable.restart(kill=kill)
    m = Client(b, sid, **v5_session(3600))
    assert m.connack.session_present
    got = m.messages_before_fence()
    while len(got) < 5:
        got.append(m.expect_message())
    got.sort(key=lambda x: (x.qos, x.topic, x.payload))
    assert [(x.topic, x.payload, x.qos) for x in got] == (
        [(f"sh1/{i}", f"one-{i}".encode(), 1) for i in range(3)]
        + [("sh2", f"two-{i}".encode(), 2) for i in range(2)]
    )
    # The shared subscription itself is back: a new message goes to the member.
    Client(b).publish("sh1/live", b"live", qos=1)
    assert m.expect_message().payload == b"live"


@RESTART
def test_a_shared_subscription_message_in_flight_is_resent_after_a_restart(durable, kill):
    b = durable.start()
    sid = unique("raw")
    with raw.RawClient(*b.addr) as s:
        s.connect(sid, clean=False)
        s.send(raw.subscribe(1, [("$share/g/shf/t", 1)]))
        s.expect(raw.SUBACK)
        Client(b).publish("shf/t", b"unacked", qos=1)
        first = s.expect(raw.PUBLISH).publish()
    b = durable.restart(kill=kill)
    with raw.RawClient(*b.addr) as s:
        assert s.connect(sid, clean=False).connack_session_present
        again = s.expect(raw.PUBLISH).publish()
        assert again.dup and again.packet_id == first.packet_id and again.payload == b"unacked"


def test_shared_messages_handed_on_from_an_expired_member_are_kept_for_the_next(durable):
    """A member whose session expires after a restart hands its undelivered shared messages
    to another member of the group; the one it hands them to keeps them across a crash."""
    b = durable.start()
    short, long_ = unique("short"), unique("long")
    for cid, expiry in ((short, 4), (long_, 3600)):
        c = Client(b, cid, **v5_session(expiry))
        assert c.subscribe("$share/g/hand/#", 1) == [1]
        c.disconnect()
    pub = Client(b)
    # Both members are offline: the group takes them in turn.
    for i in range(6):
        pub.publish(f"hand/{i}", str(i).encode(), qos=1)
    b = durable.restart(kill=True)
    # The short session expires (its expiry counts from the crash) and hands its messages on.
    time.sleep(5)
    b = durable.restart(kill=True)
    m = Client(b, long_, **v5_session(3600))
    assert m.connack.session_present
    got = m.messages_before_fence()
    assert sorted(x.payload for x in got) == [str(i).encode() for i in range(6)]


@RESTART
def test_retained_messages_queued_on_subscribe_and_not_yet_sent_survive_a_restart(durable, kill):
    """A v5 client with Receive Maximum 1 gets one retained message at SUBSCRIBE and the
    others wait in its session: all are delivered after a restart."""
    b = durable.start()
    pub = Client(b)
    for i in range(4):
        pub.publish(f"rq/{i}", f"r{i}".encode(), qos=1, retain=True)
    sid = unique("raw5")
    props5 = b"\x11" + struct.pack("!I", 3600) + b"\x21" + struct.pack("!H", 1)
    with raw.RawClient(*b.addr) as s:
        s.connect(sid, version=raw.V5, clean=False, props=props5)
        s.send(raw.subscribe(1, [("rq/#", 1)], version=raw.V5))
        s.expect(raw.SUBACK)
        first = s.expect(raw.PUBLISH).publish(version=raw.V5)
        assert first.retain
        # Not acknowledged: the window of 1 is full, the other three wait.
        with pytest.raises(TimeoutError):
            s.recv_packet(timeout=0.5)
    b = durable.restart(kill=kill)
    with raw.RawClient(*b.addr) as s:
        assert s.connect(sid, version=raw.V5, clean=False, props=props5).connack_session_present
        got = []
        for _ in range(4):
            p = s.expect(raw.PUBLISH).publish(version=raw.V5)
            got.append(p)
            s.send(raw.packet(raw.PUBACK, 0, struct.pack("!H", p.packet_id)))
        assert got[0].dup and got[0].packet_id == first.packet_id
        assert sorted(p.payload for p in got) == [f"r{i}".encode() for i in range(4)]
        assert all(p.retain for p in got)

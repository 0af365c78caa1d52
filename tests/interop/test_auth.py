"""Authentication (password file, anonymous policy) and authorization (ACL file) against the
real binary, with paho-mqtt v3.1.1 and v5 clients; the password file is made with
`thingmq passwd`."""

import queue
import signal
import subprocess
import time

import pytest
from paho.mqtt.client import MQTTv5, MQTTv311

import rawmqtt as raw
from conftest import thingmq_bin
from pahoclient import Client

ACL = """
# every client may use the test suite's fence topics
pattern readwrite $fence/#

user alice
topic readwrite home/#
topic deny home/secret
topic read status/#

user bob
topic read home/#

pattern readwrite devices/%c/#
pattern read users/%u/inbox
"""


def passwd(path, user, password, create=False):
    args = [thingmq_bin(), "passwd"] + (["-c"] if create else []) + ["--stdin", str(path), user]
    done = subprocess.run(args, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def secured(tmp_path, start_broker):
    pw = tmp_path / "passwords"
    passwd(pw, "alice", "wonderland", create=True)
    passwd(pw, "bob", "builder")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = start_broker(
        f'[auth]\nallow_anonymous = false\npassword_file = "{pw}"\nacl_file = "{acl}"\n'
    )
    broker.acl_path = acl
    return broker


def login(broker, user, password, protocol=MQTTv311, client_id=None, expect_success=True, will=None):
    c = Client(broker, client_id, protocol=protocol, connect=False, will=will)
    if user is not None:
        c.c.username_pw_set(user, password)
    c.connect(expect_success=expect_success)
    return c


def publish_reason(client, topic, qos=1):
    """Publishes and returns the PUBACK reason code paho reports."""
    acks = queue.Queue()
    client.c.on_publish = lambda c, u, mid, rc, props: acks.put(rc.value)
    client.publish(topic, b"x", qos=qos)
    return acks.get(timeout=10)


def test_password_file_is_made_by_thingmq_passwd_and_holds_no_plain_text(tmp_path):
    pw = tmp_path / "pw"
    passwd(pw, "carol", "s3cret-pass", create=True)
    text = pw.read_text()
    assert text.startswith("carol:$argon2id$")
    assert "s3cret-pass" not in text


def test_right_password_is_accepted(secured):
    for protocol in (MQTTv311, MQTTv5):
        c = login(secured, "alice", "wonderland", protocol)
        assert c.connack.reason_code == 0
    assert raw_v311_connack_code(secured, "alice", "wonderland") == 0


def raw_v311_connack_code(broker, username=None, password=None):
    """The v3.1.1 CONNACK return code byte (paho maps it onto v5 reason codes)."""
    packet = bytearray(raw.connect("raw-auth"))
    # Byte 9 is the connect flags: set the user name / password flags, append the fields.
    if username is not None:
        packet[9] |= 0x80
        packet += raw.string(username)
    if password is not None:
        packet[9] |= 0x40
        packet += raw.string(password)
    body = bytes(packet[2:])
    with raw.RawClient(*broker.addr) as c:
        c.send(raw.packet(raw.CONNECT, 0, body))
        return c.expect(raw.CONNACK).connack_code


def test_wrong_password_is_refused_with_bad_username_or_password(secured):
    assert raw_v311_connack_code(secured, "alice", "nope") == 4
    # paho reports v3 return code 4 as its v5 equivalent
    assert login(secured, "alice", "nope", MQTTv311, expect_success=False).connack.reason_code == 0x86
    assert login(secured, "alice", "nope", MQTTv5, expect_success=False).connack.reason_code == 0x86


def test_unknown_user_is_refused(secured):
    assert login(secured, "mallory", "x", MQTTv5, expect_success=False).connack.reason_code == 0x86


def test_anonymous_client_is_refused_when_anonymous_access_is_off(secured):
    assert raw_v311_connack_code(secured) == 5
    assert login(secured, None, None, MQTTv311, expect_success=False).connack.reason_code == 0x87
    assert login(secured, None, None, MQTTv5, expect_success=False).connack.reason_code == 0x87


def test_plain_text_password_file_stops_the_broker_with_a_clear_error(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("alice:wonderland\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[auth]\npassword_file = "{pw}"\n')
    done = subprocess.run(
        [thingmq_bin(), "serve", "--bind", "127.0.0.1:0", "--config", str(cfg),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode != 0
    assert "line 1" in done.stderr and "passwd" in done.stderr, done.stderr


def test_granted_topic_is_published_and_received(secured):
    sub = login(secured, "bob", "builder")
    assert sub.subscribe("home/#", 1) == [1]
    pub = login(secured, "alice", "wonderland", MQTTv5)
    assert publish_reason(pub, "home/kitchen") == 0
    assert sub.expect_message().topic == "home/kitchen"


def test_v5_publish_to_a_denied_topic_gets_not_authorized_and_is_not_delivered(secured):
    sub = login(secured, "alice", "wonderland")
    sub.subscribe("status/#", 1)
    bob = login(secured, "bob", "builder", MQTTv5)
    assert publish_reason(bob, "status/x") == 0x87
    sub.fence()


def test_v311_publish_to_a_denied_topic_is_dropped_silently(secured):
    sub = login(secured, "alice", "wonderland")
    sub.subscribe("status/#", 1)
    bob = login(secured, "bob", "builder", MQTTv311)
    bob.publish("status/x", b"x", qos=1)  # still acknowledged: v3 can't say why
    sub.fence()


def test_subscription_to_a_denied_filter_is_refused(secured):
    v5 = login(secured, "bob", "builder", MQTTv5)
    assert v5.subscribe("status/#", 1) == [0x87]
    v3 = login(secured, "bob", "builder", MQTTv311)
    assert v3.subscribe("status/#", 1) == [0x80]


def test_deny_rule_wins_over_a_wider_grant(secured):
    alice = login(secured, "alice", "wonderland", MQTTv5)
    assert alice.subscribe("home/secret", 1) == [0x87]
    assert publish_reason(alice, "home/secret") == 0x87
    assert alice.subscribe("home/#", 1) == [1]
    # A wildcard subscription that is granted still does not deliver the denied topic.
    other = login(secured, "alice", "wonderland", MQTTv5)
    assert publish_reason(other, "home/secret") == 0x87
    assert publish_reason(other, "home/hall") == 0
    assert alice.expect_message().topic == "home/hall"
    alice.fence()


def test_read_only_topic_can_be_subscribed_but_not_published(secured):
    alice = login(secured, "alice", "wonderland", MQTTv5)
    assert alice.subscribe("status/#", 0) == [0]
    assert publish_reason(alice, "status/x") == 0x87


def test_pattern_rules_substitute_client_id_and_username(secured):
    dev = login(secured, "bob", "builder", MQTTv5, client_id="dev42")
    assert dev.subscribe("devices/dev42/#", 1) == [1]
    assert dev.subscribe("devices/dev43/#", 1) == [0x87]
    assert publish_reason(dev, "devices/dev42/temp") == 0
    assert dev.expect_message().topic == "devices/dev42/temp"
    assert dev.subscribe("users/bob/inbox", 1) == [1]
    assert dev.subscribe("users/alice/inbox", 1) == [0x87]


def test_will_to_a_topic_the_client_may_not_write_is_not_published(secured):
    watcher = login(secured, "alice", "wonderland")
    watcher.subscribe("status/#", 1)
    bob = login(secured, "bob", "builder", will={"topic": "status/bob", "payload": b"gone", "qos": 1})
    bob.abort()
    deadline = time.monotonic() + 10
    while not any("not authorized" in line and "will" in line
                  for line in secured.log_tail(400).splitlines()):
        assert time.monotonic() < deadline, "the refused will was not logged"
        time.sleep(0.05)
    watcher.fence()


def test_sighup_reloads_the_acl_without_dropping_connections(secured):
    bob = login(secured, "bob", "builder", MQTTv5)
    assert bob.subscribe("status/#", 1) == [0x87]
    secured.acl_path.write_text(ACL.replace("user bob\n", "user bob\ntopic read status/#\n"))
    secured.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while bob.subscribe("status/#", 1) != [1]:
        assert time.monotonic() < deadline, "new ACL not in force after SIGHUP"
        time.sleep(0.1)
    assert bob.disconnects.empty(), "reload dropped the connection"


def test_broken_acl_on_reload_keeps_the_previous_rules(secured):
    bob = login(secured, "bob", "builder", MQTTv5)
    secured.acl_path.write_text("topic sometimes home/#\n")
    secured.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "keeping the previous rules" not in secured.log_tail(200):
        assert time.monotonic() < deadline, "the failed reload was not logged"
        time.sleep(0.05)
    assert bob.subscribe("home/#", 1) == [1]
    assert bob.subscribe("status/#", 1) == [0x87]

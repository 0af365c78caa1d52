"""Hibernation (`limits.hibernate_after_ms`) with clients we did not write: paho-mqtt and
Mosquitto's command-line clients fall asleep on the broker (the `thingmq_sessions_hibernating`
gauge on /metrics says so) and still get their messages, are answered, kept alive by their
PINGREQs and timed out without them."""

import re
import time

import pytest

import rawmqtt as raw
from pahoclient import MQTTv5, MQTTv311, Client, unique
from test_http_api import http
from test_mosquitto_clients import mosquitto_pub, subs  # noqa: F401 - `subs` is a fixture

CONFIG = "[limits]\nhibernate_after_ms = 50\n"
BOTH = pytest.mark.parametrize("protocol", [MQTTv311, MQTTv5], ids=["v3.1.1", "v5"])


def hibernating(broker) -> int:
    status, text = http(broker, "GET", "/metrics")
    assert status == 200
    m = re.search(r"^thingmq_sessions_hibernating (\d+)$", text, re.M)
    assert m, "no thingmq_sessions_hibernating on /metrics"
    return int(m.group(1))


def wait_hibernating(broker, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hibernating(broker) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {n} sessions hibernating after {timeout} s")


@BOTH
def test_hibernated_paho_clients_publish_and_receive(start_broker, protocol):
    broker = start_broker(CONFIG)
    sub = Client(broker, protocol=protocol)
    sub.subscribe("h/#", 1)
    pub = Client(broker, protocol=protocol)
    wait_hibernating(broker, 2)
    for i in range(3):
        pub.publish("h/x", f"m{i}", qos=1)  # waits for the PUBACK
        m = sub.expect_message()
        assert (m.topic, m.payload, m.qos) == ("h/x", f"m{i}".encode(), 1)
        wait_hibernating(broker, 2)


def test_a_paho_client_pinging_while_hibernated_stays_connected(start_broker):
    broker = start_broker(CONFIG)
    c = Client(broker, keepalive=1)
    c.subscribe("k/t", 0)
    # Three keep-alive periods: without the PINGREQs reaching the sleeping session the broker
    # would have closed it after 1.5 s.
    time.sleep(3.5)
    Client(broker).publish("k/t", b"still here")
    assert c.expect_message().payload == b"still here"


def test_a_silent_client_is_timed_out_while_hibernated(start_broker):
    broker = start_broker(CONFIG)
    watcher = Client(broker)
    watcher.subscribe("wills/#", 0)
    with raw.RawClient(*broker.addr) as s:
        s.connect(unique("silent"), keepalive=1, will=("wills/silent", b"timed out", 0, False))
        wait_hibernating(broker, 1)
        started = time.monotonic()
        m = watcher.expect_message()
        assert (m.topic, m.payload) == ("wills/silent", b"timed out")
        assert time.monotonic() - started < 5


def test_mosquitto_sub_receives_after_hibernating(start_broker, subs):  # noqa: F811
    broker = start_broker(CONFIG)
    sub = subs(broker, "-t", "ms/#", "-q", "1", "-C", "2", "-W", "20", "-v")
    sub.wait_subscribed()
    wait_hibernating(broker, 1)
    mosquitto_pub(broker, "-t", "ms/a", "-m", "one", "-q", "1")
    time.sleep(0.3)  # both sessions fall asleep again
    wait_hibernating(broker, 1)
    mosquitto_pub(broker, "-t", "ms/b", "-m", "two", "-q", "1")
    lines = sub.finish()
    assert "ms/a one" in lines and "ms/b two" in lines, lines

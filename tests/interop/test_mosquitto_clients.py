"""Smoke tests with Eclipse Mosquitto's command-line clients (Debian package
mosquitto-clients; ``scripts/test`` installs it)."""

import shutil
import subprocess
import time

import pytest

from pahoclient import Client, MQTTv5, unique

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("mosquitto_pub", "mosquitto_sub", "stdbuf")),
    reason="mosquitto-clients is not installed (apt-get install mosquitto-clients)",
)

VERSIONS = pytest.mark.parametrize("version", ["mqttv311", "5"], ids=["v3.1.1", "v5"])
TIMEOUT = 15


def mosquitto_pub(broker, *args: str) -> None:
    cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), *args]
    r = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{cmd} -> {r.returncode}: {r.stderr.decode(errors='replace')}"


class Sub:
    """A running mosquitto_sub that reports its SUBACK (-d) before the test publishes."""

    def __init__(self, broker, *args: str):
        # stdbuf: with a pipe as stdout, mosquitto_sub would hold its output (the SUBACK line
        # we wait for) in a full buffer until it exits.
        self.cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.port),
                    "-d", *args]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []

    def wait_subscribed(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if "received SUBACK" in line:
                return
        raise AssertionError(f"mosquitto_sub never got a SUBACK: {self.lines}")

    def finish(self) -> list[str]:
        """Waits for the process to exit (``-C``/``-W`` end it); returns all its output lines."""
        try:
            out, _ = self.proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"mosquitto_sub did not exit: {self.lines} {out!r}") from None
        self.lines += out.decode(errors="replace").splitlines()
        assert self.proc.returncode == 0, f"{self.cmd} -> {self.proc.returncode}: {self.lines}"
        return self.lines

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def subs():
    started: list[Sub] = []

    def start(broker, *args: str) -> Sub:
        s = Sub(broker, *args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


@VERSIONS
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mosquitto_pub_to_mosquitto_sub(broker, subs, version, qos):
    topic = f"mosq/{unique('t')}"
    payload = f"hello v{version} q{qos}"
    sub = subs(broker, "-V", version, "-q", qos, "-t", topic, "-C", "1", "-W", "10",
               "-F", "%q|%r|%t|%p")
    sub.wait_subscribed()
    mosquitto_pub(broker, "-V", version, "-q", qos, "-t", topic, "-m", payload)
    lines = sub.finish()
    assert f"{qos}|0|{topic}|{payload}" in lines, lines


@VERSIONS
def test_mosquitto_retained_message_reaches_a_later_subscriber(broker, subs, version):
    topic = f"mosq/retained/{unique('t')}"
    mosquitto_pub(broker, "-V", version, "-q", "1", "-r", "-t", topic, "-m", "kept")
    sub = subs(broker, "-V", version, "-q", "1", "-t", topic, "-C", "1", "-W", "5",
               "-F", "%r|%p")
    lines = sub.finish()
    assert "1|kept" in lines, lines


def test_mosquitto_sub_gives_up_after_its_timeout_without_messages(broker, subs):
    sub = subs(broker, "-V", "mqttv311", "-t", "mosq/silence", "-C", "1", "-W", "2",
               "-F", "MSG:%p")
    sub.wait_subscribed()
    started = time.monotonic()
    try:
        out, _ = sub.proc.communicate(timeout=TIMEOUT)
    finally:
        sub.kill()
    assert time.monotonic() - started < TIMEOUT
    lines = out.decode(errors="replace").splitlines()
    assert not [line for line in lines if line.startswith("MSG:")], lines


def test_mosquitto_v5_user_property_reaches_paho(broker):
    c = Client(broker, protocol=MQTTv5)
    topic = f"mosq/props/{unique('t')}"
    c.subscribe(topic, 1)
    mosquitto_pub(broker, "-V", "mqttv5", "-q", "1", "-t", topic, "-m", "with props",
                  "-D", "publish", "user-property", "origin", "mosquitto",
                  "-D", "publish", "content-type", "text/plain")
    m = c.expect_message()
    assert m.payload == b"with props"
    assert m.prop("UserProperty") == [("origin", "mosquitto")]
    assert m.prop("ContentType") == "text/plain"


def test_paho_publish_reaches_mosquitto_sub(broker, subs):
    topic = f"mosq/paho/{unique('t')}"
    sub = subs(broker, "-V", "mqttv5", "-q", "2", "-t", topic, "-C", "1", "-W", "10",
               "-F", "%q|%p")
    sub.wait_subscribed()
    Client(broker, protocol=MQTTv5).publish(topic, b"from paho", qos=2)
    assert "2|from paho" in sub.finish()


def test_mosquitto_clients_can_use_wildcards_and_many_messages(broker, subs):
    root = unique("w")
    sub = subs(broker, "-V", "mqttv311", "-q", "1", "-t", f"{root}/+/temp", "-C", "3",
               "-W", "10", "-F", "%t=%p")
    sub.wait_subscribed()
    for room, value in [("kitchen", "21"), ("hall", "19"), ("attic", "15")]:
        mosquitto_pub(broker, "-q", "1", "-t", f"{root}/{room}/temp", "-m", value)
    lines = sub.finish()
    for room, value in [("kitchen", "21"), ("hall", "19"), ("attic", "15")]:
        assert f"{root}/{room}/temp={value}" in lines, lines

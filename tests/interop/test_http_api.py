"""The REST API and /metrics of the real binary, over HTTP, with paho-mqtt clients as the
devices it reports on and commands; API keys made with `thingmq api-key`."""

import json
import subprocess
import urllib.error
import urllib.request

from paho.mqtt.client import MQTTv5

from conftest import thingmq_bin
from pahoclient import Client


def http(broker, method, path, body=None, key=None):
    """Returns (status, parsed JSON or text)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{broker.http}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def api_key(path, name, role):
    done = subprocess.run(
        [thingmq_bin(), "api-key", "--file", str(path), "--role", role, name],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_overview_and_client_list_show_a_connected_paho_client(broker):
    c = Client(broker, "paho-listed", protocol=MQTTv5)
    c.subscribe("room/+/temp", qos=1)
    status, overview = http(broker, "GET", "/api/v1/overview")
    assert status == 200
    assert overview["connections"] == 1
    status, clients = http(broker, "GET", "/api/v1/clients?connected=true")
    assert status == 200
    network = [x for x in clients["items"] if not x["connection"]["internal"]]
    assert [x["client_id"] for x in network] == ["paho-listed"]
    assert network[0]["connection"]["protocol"] == "5.0"
    # The device layer's in-process link is listed too, marked internal.
    assert any(x["connection"]["internal"] for x in clients["items"])
    status, detail = http(broker, "GET", "/api/v1/clients/paho-listed")
    assert status == 200
    assert detail["subscriptions"][0]["filter"] == "room/+/temp"


def test_message_published_over_http_reaches_a_paho_subscriber(broker):
    c = Client(broker)
    c.subscribe("cmd/#", qos=1)
    status, body = http(broker, "POST", "/api/v1/publish",
                        {"topic": "cmd/lamp", "payload": "on", "qos": 1, "retain": True})
    assert status == 200, body
    assert body["subscribers"] == 1
    m = c.expect_message()
    assert (m.topic, m.payload, m.qos) == ("cmd/lamp", b"on", 1)
    status, retained = http(broker, "GET", "/api/v1/retained/cmd/lamp")
    assert status == 200 and retained["payload"] == "on"
    status, err = http(broker, "POST", "/api/v1/publish", {"topic": "cmd/#"})
    assert status == 400 and err["code"] == "invalid_input" and err["message"].startswith("topic")


def test_kick_sends_v5_disconnect_administrative_action(broker):
    c = Client(broker, "to-kick", protocol=MQTTv5)
    status, _ = http(broker, "DELETE", "/api/v1/clients/to-kick")
    assert status == 204
    assert c.expect_disconnect().reason_code == 0x98


def test_metrics_scrape_is_prometheus_text(broker):
    Client(broker)
    status, text = http(broker, "GET", "/metrics")
    assert status == 200
    assert "# TYPE thingmq_connections gauge" in text
    assert "\nthingmq_connections 1\n" in text


def test_api_keys_gate_the_api_by_role(start_broker, tmp_path):
    keys = tmp_path / "api-keys"
    admin = api_key(keys, "ops", "admin")
    viewer = api_key(keys, "dashboard", "viewer")
    assert admin not in keys.read_text() and viewer not in keys.read_text()
    broker = start_broker(f'[http]\napi_keys_file = "{keys}"\n')
    assert http(broker, "GET", "/api/v1/overview")[0] == 401
    assert http(broker, "GET", "/metrics", key="tmq_guess")[0] == 401
    assert http(broker, "GET", "/api/v1/overview", key=viewer)[0] == 200
    body = {"topic": "t", "payload": "x"}
    assert http(broker, "POST", "/api/v1/publish", body, key=viewer)[0] == 403
    assert http(broker, "POST", "/api/v1/publish", body, key=admin)[0] == 200


def test_broken_api_key_file_stops_the_server_with_a_clear_message(tmp_path):
    keys = tmp_path / "api-keys"
    keys.write_text("ops:admin:tmq_not_a_digest\n")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[http]\napi_keys_file = "{keys}"\n')
    done = subprocess.run([thingmq_bin(), "serve", "--config", str(conf), "--bind", "127.0.0.1:0",
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "line 1" in done.stderr and "SHA-256" in done.stderr, done.stderr

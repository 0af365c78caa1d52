"""The device layer against the real binary, with paho-mqtt playing Alink devices: the
registry is filled with `thingmq product add` / `thingmq device add`, and every signature
is computed here with Python's own `hmac`, independently of thingmq's code."""

import hashlib
import hmac
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from paho.mqtt.client import MQTTv311

from conftest import REPO, thingmq_bin
from pahoclient import Client

PK = "thermostat"


def run(*args):
    done = subprocess.run([thingmq_bin(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def platform(start_broker, tmp_path):
    """A broker whose registry holds the thermostat product and devices t1, t2."""
    data = tmp_path / "data"
    run("product", "add", "--tsl", str(REPO / "examples/things/thermostat.json"),
        "--data-dir", str(data))
    secrets = {}
    for name in ("t1", "t2"):
        out = json.loads(run("device", "add", PK, name, "--data-dir", str(data)))
        assert (out["productKey"], out["deviceName"]) == (PK, name)
        secrets[name] = out["deviceSecret"]
    broker = start_broker("[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
                          data_dir=data)
    return broker, secrets


def alink_login(broker, name, secret, method="hmacsha256", timestamp="1700000000000",
                expect_success=True, tamper=False):
    """Connects as device `name` with an Alink signed client id, username and password."""
    client_id = f"sensor-{name}"
    params = [f"securemode=3"]
    if method is not None:
        params.append(f"signmethod={method}")
    if timestamp is not None:
        params.append(f"timestamp={timestamp}")
    mqtt_client_id = f"{client_id}|{','.join(params)}|"
    content = f"clientId{client_id}deviceName{name}productKey{PK}"
    if timestamp is not None:
        content += f"timestamp{timestamp}"
    if method == "sha256":
        # No HMAC: the digest of the content with the secret appended.
        password = hashlib.sha256((content + secret).encode()).hexdigest()
    else:
        digest = {"hmacsha256": hashlib.sha256, "hmacsha1": hashlib.sha1,
                  "hmacmd5": hashlib.md5, None: hashlib.md5}[method]
        password = hmac.new(secret.encode(), content.encode(), digest).hexdigest()
    if tamper:
        password = password[:-1] + ("0" if password[-1] != "0" else "1")
    c = Client(broker, mqtt_client_id, protocol=MQTTv311, connect=False)
    c.c.username_pw_set(f"{name}&{PK}", password.upper() if method == "hmacsha1" else password)
    c.connect(expect_success=expect_success)
    return c


def topic(name, rest):
    return f"/sys/{PK}/{name}/{rest}"


@pytest.mark.parametrize("method", ["hmacsha256", "hmacsha1", "hmacmd5", "sha256", None])
def test_alink_signatures_computed_by_python_let_devices_in(platform, method):
    broker, secrets = platform
    c = alink_login(broker, "t1", secrets["t1"], method=method,
                    timestamp=None if method == "hmacmd5" else "1700000000000")
    assert c.connack.reason_code == 0


def test_wrong_signature_unknown_device_and_other_secret_are_refused(platform):
    broker, secrets = platform
    bad = alink_login(broker, "t1", secrets["t1"], tamper=True, expect_success=False)
    assert bad.connack.reason_code == 0x86  # v3.1.1 return code 4, as paho reports it
    ghost = alink_login(broker, "ghost", secrets["t1"], expect_success=False)
    assert ghost.connack.reason_code == 0x86
    swapped = alink_login(broker, "t1", secrets["t2"], expect_success=False)
    assert swapped.connack.reason_code == 0x86
    bad_sha = alink_login(broker, "t1", secrets["t1"], method="sha256", tamper=True,
                          expect_success=False)
    assert bad_sha.connack.reason_code == 0x86


def test_plain_secret_login_and_topics_confined_to_the_device(platform):
    broker, secrets = platform
    c = Client(broker, "plain-t2", protocol=MQTTv311, connect=False)
    c.c.username_pw_set(f"t2&{PK}", secrets["t2"])
    c.connect()
    assert c.subscribe(topic("t2", "#"), 1) == [1]
    assert c.subscribe(topic("t1", "#"), 1) == [0x80]
    assert c.subscribe("#", 0) == [0x80]


def test_property_report_event_and_strict_validation_replies(platform):
    broker, secrets = platform
    c = alink_login(broker, "t1", secrets["t1"])
    c.subscribe(topic("t1", "thing/#"), 1)
    c.publish(topic("t1", "thing/event/property/post"),
              json.dumps({"id": "101", "version": "1.0",
                          "params": {"CurrentTemperature": 20.5, "Humidity": 44},
                          "method": "thing.event.property.post"}), qos=1)
    reply = json.loads(expect_on(c, topic("t1", "thing/event/property/post_reply")).payload)
    assert (reply["id"], reply["code"]) == ("101", 200)

    c.publish(topic("t1", "thing/event/property/post"),
              json.dumps({"id": "102", "params": {"Humidity": 140}}), qos=1)
    reply = json.loads(expect_on(c, topic("t1", "thing/event/property/post_reply")).payload)
    assert reply["code"] == 460 and "Humidity" in reply["message"], reply

    c.publish(topic("t1", "thing/event/SensorFault/post"),
              json.dumps({"id": "103", "params": {"value": {"Detail": "probe open"}}}), qos=1)
    reply = json.loads(expect_on(c, topic("t1", "thing/event/SensorFault/post_reply")).payload)
    assert (reply["id"], reply["code"]) == ("103", 200)

    c.publish(topic("t1", "thing/event/property/post"), b"not json", qos=1)
    reply = json.loads(expect_on(c, topic("t1", "thing/event/property/post_reply")).payload)
    assert reply["code"] == 400


def test_no_reply_when_the_device_asks_for_none(platform):
    broker, secrets = platform
    c = alink_login(broker, "t1", secrets["t1"])
    c.subscribe(topic("t1", "thing/#"), 1)
    c.publish(topic("t1", "thing/event/property/post"),
              json.dumps({"id": "5", "params": {"Humidity": 40}, "sys": {"ack": 0}}), qos=1)
    c.publish(topic("t1", "thing/event/property/post"),
              json.dumps({"id": "6", "params": {"Humidity": 41}}), qos=1)
    reply = json.loads(expect_on(c, topic("t1", "thing/event/property/post_reply")).payload)
    assert reply["id"] == "6"


def expect_on(client, wanted):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = client.expect_message(timeout=max(0.1, deadline - time.monotonic()))
        if m.topic == wanted:
            return m
    raise AssertionError(f"nothing on {wanted}")


def test_product_add_refuses_an_invalid_thing_model_naming_the_path(tmp_path):
    tsl = tmp_path / "bad.json"
    tsl.write_text(json.dumps({"profile": {"productKey": "p"}, "properties": [
        {"identifier": "t", "name": "t", "accessMode": "r",
         "dataType": {"type": "int", "specs": {"min": "10", "max": "1"}}}]}))
    done = subprocess.run([thingmq_bin(), "product", "add", "--tsl", str(tsl),
                           "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "properties[0]" in done.stderr, done.stderr


def api(broker, method, path, body=None):
    import urllib.error
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{broker.http}{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_simulated_devices_report_and_answer_commands_over_the_rest_api(start_broker, tmp_path):
    broker = start_broker("[sys]\ninterval_secs = 0\n")
    tsl = json.loads((REPO / "examples/things/thermostat.json").read_text())
    status, _ = api(broker, "POST", "/api/v1/products", {"productKey": PK, "tsl": tsl})
    assert status == 201
    sim = subprocess.Popen(
        [thingmq_bin(), "simulate", "--product", PK, "--count", "3", "--interval-ms", "200",
         "--host", broker.host, "--port", str(broker.port), "--api", f"http://{broker.http}",
         "--duration-secs", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            status, devices = api(broker, "GET", f"/api/v1/devices?product={PK}&online=true")
            if devices["total"] == 3:
                break
            assert time.monotonic() < deadline, f"simulated devices not online: {devices}"
            time.sleep(0.2)
        # The simulator validates the set against the thing model and answers it.
        status, answer = api(broker, "POST", f"/api/v1/devices/{PK}/sim-1/properties",
                             {"TargetTemperature": 23.5})
        assert status == 200 and answer["reply"]["code"] == 200, answer
        status, answer = api(broker, "POST", f"/api/v1/devices/{PK}/sim-2/services/Boost",
                             {"Minutes": 15})
        assert status == 200 and answer["reply"]["code"] == 200, answer
        assert "EndsAt" in answer["reply"]["data"], answer
        # Reports arrive in the shadow, and they pass strict validation.
        deadline = time.monotonic() + 10
        while True:
            _, shadow = api(broker, "GET", f"/api/v1/devices/{PK}/sim-0/shadow")
            if "CurrentTemperature" in shadow["reported"]:
                break
            assert time.monotonic() < deadline, shadow
            time.sleep(0.2)
        _, shadow = api(broker, "GET", f"/api/v1/devices/{PK}/sim-1/shadow")
        deadline = time.monotonic() + 10
        while shadow["reported"].get("TargetTemperature", {}).get("value") != 23.5:
            assert time.monotonic() < deadline, shadow
            time.sleep(0.2)
            _, shadow = api(broker, "GET", f"/api/v1/devices/{PK}/sim-1/shadow")
    finally:
        sim.terminate()
        try:
            out, _ = sim.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
            out, _ = sim.communicate()
    assert "simulating 3 devices" in out, out


def sub_sign(pk, dn, secret, method="hmacsha1"):
    """A topo/add item or combine/login params, signed here with Python's hmac / hashlib."""
    client_id, ts = f"{pk}.{dn}", "1700000000000"
    content = f"clientId{client_id}deviceName{dn}productKey{pk}timestamp{ts}"
    if method == "sha256":
        sign = hashlib.sha256((content + secret).encode()).hexdigest()
    else:
        digest = {"hmacsha1": hashlib.sha1, "hmacsha256": hashlib.sha256,
                  "hmacmd5": hashlib.md5}[method]
        sign = hmac.new(secret.encode(), content.encode(), digest).hexdigest()
    return {"productKey": pk, "deviceName": dn, "clientId": client_id, "timestamp": ts,
            "signmethod": method, "signMethod": method, "sign": sign}


def request(client, topic_, id_, params):
    client.publish(topic_, json.dumps({"id": id_, "version": "1.0", "params": params}), qos=1)
    return json.loads(expect_on(client, topic_ + "_reply").payload)


def test_a_gateway_attaches_logs_in_and_reports_for_a_sub_device(start_broker, tmp_path):
    data = tmp_path / "data"
    run("product", "add", "--tsl", str(REPO / "examples/things/gateway.json"), "--key", "gw",
        "--node-type", "gateway", "--data-dir", str(data))
    run("product", "add", "--tsl", str(REPO / "examples/things/thermostat.json"), "--key", "sub",
        "--node-type", "sub-device", "--data-dir", str(data))
    gw = json.loads(run("device", "add", "gw", "g1", "--data-dir", str(data)))["deviceSecret"]
    s1 = json.loads(run("device", "add", "sub", "s1", "--data-dir", str(data)))["deviceSecret"]
    broker = start_broker("[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
                          data_dir=data)
    c = Client(broker, "gw-g1", protocol=MQTTv311, connect=False)
    c.c.username_pw_set("g1&gw", gw)
    c.connect()
    assert c.subscribe("/sys/gw/g1/thing/topo/#", 1) == [1]
    assert c.subscribe("/ext/session/gw/g1/combine/#", 1) == [1]
    # Before login the sub-device's topics are closed to the gateway.
    assert c.subscribe("/sys/sub/s1/thing/#", 1) == [0x80]

    reply = request(c, "/sys/gw/g1/thing/topo/add", "1", [sub_sign("sub", "s1", gw)])
    assert reply["code"] == 401, reply  # signed with the gateway's secret, not the sub-device's
    reply = request(c, "/sys/gw/g1/thing/topo/add", "2", [sub_sign("sub", "s1", s1)])
    assert (reply["code"], reply["data"]) == (200, [{"productKey": "sub", "deviceName": "s1"}])
    reply = request(c, "/ext/session/gw/g1/combine/login", "3",
                    sub_sign("sub", "s1", s1, "hmacsha256"))
    assert reply["code"] == 200, reply

    assert c.subscribe("/sys/sub/s1/thing/#", 1) == [1]
    t0 = 1_700_000_000_000
    reply = request(c, "/sys/sub/s1/thing/event/property/history/post", "4", [
        {"identity": {"productKey": "sub", "deviceName": "s1"},
         "properties": [{"Humidity": {"value": 41, "time": t0}},
                        {"Humidity": {"value": 42, "time": t0 + 1000}}]}])
    assert reply["code"] == 200, reply
    reply = request(c, "/sys/sub/s1/thing/event/property/post", "5", {"Humidity": 43})
    assert reply["code"] == 200, reply

    # History is written in batches: wait for all three, in time order.
    deadline = time.monotonic() + 10
    while True:
        status, history = api(broker, "GET", "/api/v1/devices/sub/s1/properties/Humidity/history?from=0")
        assert status == 200, history
        values = [p["value"] for p in history["points"]]
        if len(values) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert values == [41, 42, 43], history
    status, device = api(broker, "GET", "/api/v1/devices/sub/s1")
    assert status == 200 and device["online"] is True, device

    reply = request(c, "/ext/session/gw/g1/combine/logout", "6",
                    {"productKey": "sub", "deviceName": "s1"})
    assert reply["code"] == 200, reply
    status, device = api(broker, "GET", "/api/v1/devices/sub/s1")
    assert device["online"] is False, device


def test_a_device_over_its_quota_gets_429(start_broker, tmp_path):
    data = tmp_path / "data"
    run("product", "add", "--tsl", str(REPO / "examples/things/thermostat.json"),
        "--data-dir", str(data))
    secret = json.loads(run("device", "add", PK, "fast", "--data-dir", str(data)))["deviceSecret"]
    broker = start_broker("[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n"
                          "[things]\nmax_uplinks_per_sec = 1\nuplink_burst = 3\n", data_dir=data)
    c = Client(broker, "fast-1", protocol=MQTTv311, connect=False)
    c.c.username_pw_set(f"fast&{PK}", secret)
    c.connect()
    c.subscribe(topic("fast", "thing/#"), 1)
    for i in range(6):
        c.publish(topic("fast", "thing/event/property/post"),
                  json.dumps({"id": str(i), "params": {"Humidity": i}}), qos=1)
    codes = [json.loads(expect_on(c, topic("fast", "thing/event/property/post_reply")).payload)["code"]
             for _ in range(6)]
    assert sorted(codes) == [200, 200, 200, 429, 429, 429], codes


def plain_login(broker, name, secret, expect_success=True):
    c = Client(broker, f"plain-{name}-{time.monotonic_ns()}", protocol=MQTTv311, connect=False)
    c.c.username_pw_set(f"{name}&{PK}", secret)
    c.connect(expect_success=expect_success)
    return c


def test_registry_changes_from_the_cli_apply_on_sighup(platform, tmp_path):
    """`thingmq device add|disable|delete` on the database of a running server: nothing
    changes until SIGHUP; then the new device gets in and the disabled one is disconnected."""
    broker, secrets = platform
    data = tmp_path / "data"
    t1 = plain_login(broker, "t1", secrets["t1"])
    t2 = plain_login(broker, "t2", secrets["t2"])
    t3 = json.loads(run("device", "add", PK, "t3", "--data-dir", str(data)))["deviceSecret"]
    assert "disabled" in run("device", "disable", PK, "t1", "--data-dir", str(data))
    assert "deleted" in run("device", "delete", PK, "t2", "--data-dir", str(data))
    refused = plain_login(broker, "t3", t3, expect_success=False)
    assert refused.connack.reason_code != 0
    refused.stop()
    t1.expect_no_message(timeout=0.3)
    assert t1.c.is_connected()

    broker.proc.send_signal(signal.SIGHUP)
    t1.expect_disconnect()
    t2.expect_disconnect()
    t1.stop()
    t2.stop()
    plain_login(broker, "t3", t3).stop()
    for name in ("t1", "t2"):
        c = plain_login(broker, name, secrets[name], expect_success=False)
        assert c.connack.reason_code != 0, name
        c.stop()
    listed = run("device", "list", PK, "--data-dir", str(data))
    assert "t1\tdisabled" in listed and "t3\tenabled" in listed and "t2\t" not in listed
    assert "enabled" in run("device", "enable", PK, "t1", "--data-dir", str(data))
    broker.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        c = plain_login(broker, "t1", secrets["t1"], expect_success=False)
        ok = c.connack.reason_code == 0
        c.stop()
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ok, "t1 was enabled again but still refused after the reload"


def test_a_gateway_logs_in_batches_hears_topology_changes_and_registers_sub_devices(
        start_broker, tmp_path):
    data = tmp_path / "data"
    thermostat = str(REPO / "examples/things/thermostat.json")
    run("product", "add", "--tsl", str(REPO / "examples/things/gateway.json"), "--key", "gw",
        "--node-type", "gateway", "--data-dir", str(data))
    run("product", "add", "--tsl", thermostat, "--key", "sub", "--node-type", "sub-device",
        "--data-dir", str(data))
    run("product", "add", "--tsl", thermostat, "--key", "dyn", "--node-type", "sub-device",
        "--dynamic-register", "--data-dir", str(data))
    gw = json.loads(run("device", "add", "gw", "g1", "--data-dir", str(data)))["deviceSecret"]
    secrets = {dn: json.loads(run("device", "add", "sub", dn, "--data-dir", str(data)))["deviceSecret"]
               for dn in ("s1", "s2")}
    broker = start_broker("[auth]\nallow_anonymous = false\n[sys]\ninterval_secs = 0\n",
                          data_dir=data)
    c = Client(broker, "gw-g1", protocol=MQTTv311, connect=False)
    c.c.username_pw_set("g1&gw", gw)
    c.connect()
    assert c.subscribe("/sys/gw/g1/thing/#", 1) == [1]
    assert c.subscribe("/ext/session/gw/g1/combine/#", 1) == [1]
    reply = request(c, "/sys/gw/g1/thing/topo/add", "1",
                    [sub_sign("sub", dn, secrets[dn]) for dn in ("s1", "s2")])
    assert reply["code"] == 200, reply

    # batch_login: s2 signed with s1's secret fails the whole batch, naming s2.
    batch = "/ext/session/gw/g1/combine/batch_login"
    reply = request(c, batch, "2", {"deviceList": [sub_sign("sub", "s1", secrets["s1"]),
                                                   sub_sign("sub", "s2", secrets["s1"])]})
    assert reply["code"] == 401, reply
    assert [(d["deviceName"], d["code"]) for d in reply["data"]] == [("s2", 401)], reply
    assert api(broker, "GET", "/api/v1/devices/sub/s1")[1]["online"] is False
    # The batch's own signMethod (plain sha256) for items that name none.
    items = [sub_sign("sub", dn, secrets[dn], "sha256") for dn in ("s1", "s2")]
    for item in items:
        del item["signmethod"], item["signMethod"]
    reply = request(c, batch, "3", {"signMethod": "sha256", "deviceList": items})
    assert reply["code"] == 200, reply
    assert reply["data"] == [{"productKey": "sub", "deviceName": dn} for dn in ("s1", "s2")]
    for dn in ("s1", "s2"):
        assert api(broker, "GET", f"/api/v1/devices/sub/{dn}")[1]["online"] is True

    # Disabled, enabled, deleted over the REST API: the gateway hears each on topo/change.
    def change():
        m = json.loads(expect_on(c, "/sys/gw/g1/thing/topo/change").payload)
        assert m["method"] == "thing.topo.change", m
        return m["params"]["status"], m["params"]["subList"]
    s2 = [{"productKey": "sub", "deviceName": "s2"}]
    assert api(broker, "PATCH", "/api/v1/devices/sub/s2", {"enabled": False})[0] == 200
    assert change() == (8, s2)
    assert api(broker, "GET", "/api/v1/devices/sub/s2")[1]["online"] is False
    assert api(broker, "PATCH", "/api/v1/devices/sub/s2", {"enabled": True})[0] == 200
    assert change() == (2, s2)
    assert api(broker, "DELETE", "/api/v1/devices/sub/s2")[0] in (200, 204)
    assert change() == (1, s2)

    out = "/ext/session/gw/g1/combine/batch_logout"
    reply = request(c, out, "4", [{"productKey": "sub", "deviceName": "s1"},
                                  {"productKey": "sub", "deviceName": "s2"}])
    assert reply["code"] == 6100, reply  # s2 is gone, so s1 stays online
    assert api(broker, "GET", "/api/v1/devices/sub/s1")[1]["online"] is True
    reply = request(c, out, "5", [{"productKey": "sub", "deviceName": "s1"}])
    assert reply["code"] == 200, reply
    assert api(broker, "GET", "/api/v1/devices/sub/s1")[1]["online"] is False

    # thing/sub/register: only for a product that allows it; the secret answered works.
    register = "/sys/gw/g1/thing/sub/register"
    reply = request(c, register, "6", [{"productKey": "sub", "deviceName": "new"}])
    assert reply["code"] == 401, reply
    assert api(broker, "GET", "/api/v1/devices/sub/new")[0] == 404
    reply = request(c, register, "7", [{"productKey": "ghost", "deviceName": "new"}])
    assert reply["code"] == 6250, reply
    reply = request(c, register, "8", [{"productKey": "dyn", "deviceName": "n1"}])
    assert reply["code"] == 200, reply
    [entry] = reply["data"]
    assert (entry["productKey"], entry["deviceName"]) == ("dyn", "n1"), reply
    secret = entry["deviceSecret"]
    reply = request(c, "/sys/gw/g1/thing/topo/add", "9", [sub_sign("dyn", "n1", secret)])
    assert reply["code"] == 200, reply
    reply = request(c, "/ext/session/gw/g1/combine/login", "10",
                    sub_sign("dyn", "n1", secret, "hmacsha256"))
    assert reply["code"] == 200, reply
    assert api(broker, "GET", "/api/v1/devices/dyn/n1")[1]["online"] is True

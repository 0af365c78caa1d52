#!/usr/bin/env python3
"""Persistent QoS 1 throughput: P paho publishers (one process each) publish QoS 1 for T
seconds, 100 in flight each, to topics an offline persistent subscriber (clean session 0)
subscribed to, so every message is queued for a persistent session. Prints acknowledged
messages per second.

    scripts/bench_persistence.py thingmq BIN [always|interval|never|none]
    scripts/bench_persistence.py mosquitto [BIN]

Each broker runs on 127.0.0.1 on a free port in a temporary directory and is stopped (by
PID) at the end. Needs paho-mqtt (tests/interop/requirements.txt)."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PUBLISHERS = int(os.environ.get("BENCH_PUBLISHERS", "4"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
PAYLOAD = b"x" * 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("broker did not listen")


def publisher(port: int, i: int, seconds: float, out: mp.Queue) -> None:
    acked = 0

    def on_publish(*_args):
        nonlocal acked
        acked += 1

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{i}")
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(200)
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if c.publish(f"bench/{i}", PAYLOAD, qos=1).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.0005)
    out.put(acked)
    c.disconnect()
    c.loop_stop()


def run(port: int) -> float:
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", clean_session=False)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    done = sub.subscribe("bench/#", 1)
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    assert done[0] == 0
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=publisher, args=(port, i, SECONDS, out)) for i in range(PUBLISHERS)]
    for p in procs:
        p.start()
    total = sum(out.get(timeout=SECONDS + 60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    return total / SECONDS


def main() -> None:
    kind = sys.argv[1]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "thingmq":
            policy = sys.argv[3] if len(sys.argv) > 3 else "always"
            conf = f"[[listeners]]\nbind = \"127.0.0.1:{port}\"\n[mqtt]\nmax_queued_messages = 100000000\n[sys]\ninterval_secs = 0\n[http]\nenabled = false\n"
            if policy != "none":
                conf += f"[storage]\ndata_dir = \"{tmp}/data\"\nsync = \"{policy}\"\n"
            path = f"{tmp}/thingmq.toml"
            open(path, "w").write(conf)
            cmd = [sys.argv[2], "serve", "--config", path]
        else:
            policy = "persistence true"
            conf = (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {tmp}/\nmax_queued_messages 100000000\n")
            path = f"{tmp}/mosquitto.conf"
            open(path, "w").write(conf)
            cmd = [sys.argv[2] if len(sys.argv) > 2 else "mosquitto", "-c", path]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            rate = run(port)
            print(f"{kind} {policy}: {rate:,.0f} persistent QoS 1 msg/s "
                  f"({PUBLISHERS} publishers, {SECONDS:g} s)")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()

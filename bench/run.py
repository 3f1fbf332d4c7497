"""Run every benchmark scenario against the gateway and against ngircd, in one run.

    python3 bench/run.py            # the full run (several minutes), table on stdout
    python3 bench/run.py --smoke    # seconds: small numbers, keeps the script working
    python3 bench/run.py --only fanout,ingest --baseline main~5   # and against an older commit
    python3 bench/run.py --only clients   # the store's own Redis client parts vs redis-py's

It starts its own redis-server, gateways and ngircd on free loopback ports and stops them
all at the end. Every target is a ratio within this one run: the machine is shared.

--baseline REV exports that commit (git archive) into the run's temporary folder and, after
the usual scenarios, runs the gateway-only ones (see COMPARED) against this checkout's
gateway and REV's gateway in turn, interleaved (current, baseline, baseline, current, ...)
so that the noise of the shared machine hits both. Each gateway is fresh per run, alone on
the freshly flushed redis-server, driven by this checkout's load generator, and configured
only through --port, --redis-url and CHAT_* variables, which every revision understands.
The extra table gives the median of each side and the ratio current/baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis as redis_py  # noqa: E402

from bench.loadgen import (  # noqa: E402
    CHAT,
    IRC,
    IRC_PASS,
    Result,
    close_all,
    connect_many,
    connect_ws_many,
    fanout,
    latency,
)
from bench.shards import run_shards  # noqa: E402
from bench.targets import print_targets  # noqa: E402
from scripts.procs import die_with_parent, free_port, stop_process, wait_port  # noqa: E402
from scripts.redisserver import redis_server_argv  # noqa: E402


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by a process (this one if pid is None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_fine(pid: int | None = None) -> float:
    """Like cpu_seconds but to the nanosecond (the scheduler's run time of every thread),
    not in clock ticks: a tick is 10 ms and a smoke run is shorter than that."""
    if pid is None:
        return time.process_time()
    try:
        tasks = Path(f"/proc/{pid}/task")
        return sum(int((t / "schedstat").read_text().split()[0]) for t in tasks.iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)


class CpuMeter:
    """CPU used by each named process over a scenario, as cores busy (1.0 = one core)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.cores: dict[str, float] = {}
        self.used: dict[str, float] = {}  # CPU seconds, by name (cpu_seconds_fine)

    def __enter__(self) -> CpuMeter:
        self.wall = time.perf_counter()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.start_fine = {name: cpu_seconds_fine(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.wall
        self.cores = {
            f"cpu_{name}": round((cpu_seconds(pid) - self.start[name]) / wall, 2)
            for name, pid in self.pids.items()
        }
        self.used = {
            name: cpu_seconds_fine(pid) - self.start_fine[name] for name, pid in self.pids.items()
        }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: Imports every module of the gateway, and so compiles it and what it uses.
_IMPORT_ALL = """
import importlib, pkgutil, gateway, store
for pkg in (gateway, store):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        importlib.import_module(m.name)
import uvloop, server
"""


def compile_trees(trees: list[Path]) -> None:
    """Compile what a gateway imports into PYTHONPYCACHEPREFIX (by importing all of it), as
    a deployment's first start leaves it: every gateway of a run then starts alike."""
    for tree in trees:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        env.pop("PYTHONSAFEPATH", None)
        subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=tree, env=env, check=True)


class Procs:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: list[str],
        port: int,
        name: str,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        with open(self.workdir / f"{name}.log", "ab") as log:  # the child keeps its copy
            proc = subprocess.Popen(
                args, stdout=log, stderr=log, cwd=cwd, env=env, preexec_fn=die_with_parent()
            )
        self.procs.append(proc)
        wait_port(port, proc)
        return proc

    def spawn(
        self, args: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process without waiting for its port."""
        with open(self.workdir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                args, stdout=log, stderr=log, cwd=ROOT, env=env, preexec_fn=die_with_parent()
            )
        self.procs.append(proc)
        return proc

    def start_redis(self, port: int) -> subprocess.Popen[bytes]:
        """A throwaway redis-server on loopback: no persistence, files in the workdir."""
        try:
            args = redis_server_argv(port, self.workdir)
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
        return self.start(args, port, "redis")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        stop_process(proc, signal.SIGTERM, 15)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])


#: --only names, in the order they run.
SCENARIOS = (
    "fanout",
    "fanoutweb",
    "fanoutirc",
    "fanout2",
    "latency",
    "latency20",
    "ingest",
    "ingest2",
    "workers",
    "idle",
    "idleweb",
    "idleirc",
    "login",
    "shards",
    "clients",
    "crowd",
    "broadcast",
    "storm",
    "broadcastdoors",
)
#: The crowd scenarios (bench/crowd.py): they share one set-up of N users; broadcast and
#: storm need crowd's logins, so asking for either runs it too.
CROWD = ("crowd", "broadcast", "storm", "broadcastdoors")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool


_RATE_CPU = (
    Metric("rate", "deliveries/s", True),
    Metric("gw_cpu_ns", "gateway CPU ns per delivery", False),
)
_INGEST_CPU = (
    Metric("rate", "accepted/s", True),
    Metric("gw_cpu_ns", "gateway CPU ns per message", False),
)
#: The gateway-only scenarios --baseline runs against both trees, and what it compares.
COMPARED: dict[str, tuple[Metric, ...]] = {
    "fanout": _RATE_CPU,
    "ingest": _INGEST_CPU,
    "fanout2": _RATE_CPU,
    "ingest2": _INGEST_CPU,
    "latency": (Metric("p50_ms", "p50 ms", False), Metric("p99_ms", "p99 ms", False)),
    "idle": (Metric("bytes_per_connection", "RSS bytes per idle connection", False),),
    "fanoutweb": _RATE_CPU,
    "fanoutirc": _RATE_CPU,
    "idleweb": (Metric("bytes_per_connection", "RSS bytes per idle connection", False),),
    "idleirc": (Metric("bytes_per_connection", "RSS bytes per idle connection", False),),
}
#: How both sides of --baseline are configured: variables every revision reads.
COMPARE_ENV = {
    "CHAT_WEB_PORT": "0",
    "CHAT_IRC_PORT": "0",
    "CHAT_RATE": "0",
    "CHAT_MAX_PER_IP": "0",
    "CHAT_MAX_PENDING_LOGINS": "0",
    "CHAT_MAX_REGISTRATIONS": "0",
    "CHAT_MAX_PENDING_PER_IP": "0",  # every bench client comes from 127.0.0.1
    "CHAT_MAX_PENDING_HASHES": "100000",  # thousands log in at once: queue, never refuse
    "CHAT_SCRYPT_LOG_N": "10",
    "CHAT_LOG_LEVEL": "WARNING",
}


@dataclass
class Baseline:
    rev: str  # as given
    commit: str
    tree: Path
    reps: int


class Bench:
    def __init__(
        self,
        smoke: bool,
        workdir: Path,
        only: set[str] | None = None,
        baseline: Baseline | None = None,
        users: int = 50_000,
        crowd_seconds: float = 30.0,
        storm_cap: float = 60.0,
        crowd_gateways: int = 3,
        crowd_args: tuple[str, ...] = (),
    ) -> None:
        self.smoke = smoke
        self.users = users
        self.crowd_seconds = crowd_seconds
        self.storm_cap = storm_cap
        self.crowd_gateways = crowd_gateways
        self.crowd_args = crowd_args
        self.workdir = workdir
        self.only = set(SCENARIOS) if only is None else only
        self.baseline = baseline
        self.procs = Procs(workdir)
        self.rows: list[dict[str, object]] = []
        self.compare_rows: list[dict[str, object]] = []
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"

    # -- processes -------------------------------------------------------------------------

    def start_redis(self) -> None:
        self.redis_pid = self.procs.start_redis(self.redis_port).pid

    def flush_redis(self) -> None:
        """Empty Redis between scenarios, but keep the store's epoch: without it the
        gateways rightly tell every user "the chat store was reset", and the load
        generator would count those notices as deliveries."""
        r = redis_py.Redis(port=self.redis_port)
        try:
            epoch = r.get("chat:{g}:epoch")
            r.flushall()
            if epoch is not None:
                r.set("chat:{g}:epoch", epoch)
        finally:
            r.close()

    def gateway_args(self, port: int, *extra: str, redis_url: str | None = None) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "server.py"),
            "--port",
            str(port),
            "--redis-url",
            redis_url or self.redis_url,
            "--rate",
            "0",
            "--max-per-ip",
            "0",
            "--max-pending-logins",
            "0",
            "--max-registrations",
            "0",
            "--max-pending-per-ip",
            "0",
            "--max-pending-hashes",
            "100000",
            "--log-level",
            "WARNING",
            "--web-port",
            "0",
            "--irc-port",
            "0",
            *extra,
        ]

    def gateway(
        self, *extra: str, redis_url: str | None = None
    ) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        args = self.gateway_args(port, *extra, redis_url=redis_url)
        proc = self.procs.start(args, port, f"gateway-{port}")
        return port, proc

    def gateway_proc(self, port: int, *extra: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """A gateway on `port` (again, after a SIGKILL); without `wait` the caller waits."""
        if wait:
            return self.procs.start(self.gateway_args(port, *extra), port, f"gateway-{port}")
        return self.procs.spawn(self.gateway_args(port, *extra), f"gateway-{port}")

    @staticmethod
    def free_port() -> int:
        return free_port()

    def gateway_at(
        self, tree: Path, side: str, **extra_env: str
    ) -> tuple[int, subprocess.Popen[bytes]]:
        """A gateway run from the source tree `tree` (this checkout or an exported commit),
        set up only through --port, --redis-url and CHAT_* variables; inherited CHAT_*
        variables are dropped so that both sides get exactly COMPARE_ENV."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.pop("PYTHONSAFEPATH", None)  # the script's folder must come first on sys.path
        env.update(COMPARE_ENV, PYTHONPATH=str(tree))
        env.update(extra_env)
        proc = self.procs.start(
            [
                sys.executable,
                str(tree / "server.py"),
                "--port",
                str(port),
                "--redis-url",
                self.redis_url,
            ],
            port,
            f"{side}-{port}",
            cwd=tree,
            env=env,
        )
        return port, proc

    def ngircd(self) -> tuple[int, subprocess.Popen[bytes]] | None:
        exe = shutil.which("ngircd") or (
            "/usr/sbin/ngircd" if Path("/usr/sbin/ngircd").exists() else None
        )
        if exe is None:
            print(
                "ngircd not installed (apt-get install ngircd): reference skipped", file=sys.stderr
            )
            return None
        port = free_port()
        conf = self.workdir / "ngircd.conf"
        conf.write_text(f"""[Global]
Name = bench.local
Info = benchmark reference
Listen = 127.0.0.1
Ports = {port}
ServerUID = {os.getuid()}
ServerGID = {os.getgid()}
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600
[Options]
DNS = no
Ident = no
PAM = no
""")
        proc = self.procs.start([exe, "-n", "-f", str(conf)], port, "ngircd")
        return port, proc

    # -- scenarios -------------------------------------------------------------------------

    def row(self, scenario: str, server: str, result: Result | None, **extra: object) -> None:
        row: dict[str, object] = {"scenario": scenario, "server": server}
        if result is not None:
            row.update(
                delivered=result.delivered,
                expected=result.expected,
                lost=result.lost,
                seconds=round(result.seconds, 3),
                rate=round(result.rate),
            )
            row.update({k: round(v, 3) for k, v in result.extra.items()})
        row.update(extra)
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    async def settle(self, seconds: float) -> None:
        """Let a gateway settle between rows (closes, collection, RSS); a tenth of that in
        a smoke run, whose figures nobody reads."""
        await asyncio.sleep(seconds / 10 if self.smoke else seconds)

    async def fanout_web(
        self,
        port: int,
        web_port: int,
        members: int,
        senders: int,
        messages: int,
        meter: CpuMeter | None = None,
        deflate: bool = True,
    ) -> Result:
        """Fan-out with `senders` line-protocol members sending and every other member a
        web-door reader: the web door's delivery cost beside the line door's. `deflate`:
        the readers offer compression, as browsers do; without it, what a client that
        does not gets."""
        sending = await connect_many(
            "127.0.0.1", port, CHAT, senders, prefix="fwsend", chat="general"
        )
        readers = await connect_ws_many(
            "127.0.0.1", web_port, members - senders, prefix="fwr", deflate=deflate
        )
        await self.settle(0.5)
        if meter is None:
            result = await fanout(sending, [*sending, *readers], "general", messages)
        else:
            with meter:
                result = await fanout(sending, [*sending, *readers], "general", messages)
        close_all([*sending, *readers])
        await self.settle(0.5)
        return result

    async def fanout_one(
        self,
        dialect_name: str,
        ports: list[int],
        members: int,
        senders: int,
        messages: int,
        meter: CpuMeter | None = None,
    ) -> Result:
        dialect = {"chat": CHAT, "irc+pass": IRC_PASS}.get(dialect_name, IRC)
        chat = "general" if dialect is CHAT else "bench"
        per_port = members // len(ports)
        peers = []
        for k, port in enumerate(ports):
            peers += await connect_many(
                "127.0.0.1", port, dialect, per_port, prefix=f"f{k}u", chat=chat
            )
        per_gw_senders = senders // len(ports)
        sending = [
            p
            for k in range(len(ports))
            for p in peers[k * per_port : k * per_port + per_gw_senders]
        ]
        await self.settle(0.5)
        if meter is None:
            result = await fanout(sending, peers, chat, messages)
        else:
            with meter:
                result = await fanout(sending, peers, chat, messages)
        close_all(peers)
        await self.settle(0.5)
        return result

    async def latency_one(
        self,
        dialect_name: str,
        port: int,
        members: int,
        rate: int,
        seconds: float,
        server_pid: int,
    ) -> Result:
        dialect = CHAT if dialect_name == "chat" else IRC
        chat = "general" if dialect is CHAT else "bench"
        peers = await connect_many(
            "127.0.0.1",
            port,
            dialect,
            members,
            prefix=f"lat{members}_",
            chat=chat,
            samples=min(20, members - 1),
        )
        await self.settle(0.5)
        sender = peers[-1]  # not a sampled reader
        pids: dict[str, int | None] = {"server": server_pid, "loadgen": None}
        if dialect is CHAT:
            pids["redis"] = self.redis_pid
        with CpuMeter(pids) as cpu:
            result = await latency(sender, peers, chat, rate, seconds)
        result.extra.update(cpu.cores)
        close_all(peers)
        await self.settle(0.5)
        return result

    async def ingest_one(
        self, ports: list[int], prefixes: list[str], n_senders: int, per: int, meter: CpuMeter
    ) -> Result:
        """`n_senders` (split over `ports`) send `per` messages each into one chat as fast
        as accepted; one observer on the first gateway counts what comes back."""
        share = n_senders // len(ports)
        peers = await connect_many(
            "127.0.0.1", ports[0], CHAT, share + 1, prefix=prefixes[0], chat="general"
        )
        observer = peers[share]
        for port, prefix in zip(ports[1:], prefixes[1:], strict=True):
            peers += await connect_many(
                "127.0.0.1", port, CHAT, share, prefix=prefix, chat="general"
            )
        senders = [p for p in peers if p is not observer]
        with meter:
            r = await fanout(senders, [observer], "general", per)
        r = Result(len(senders) * per, observer.count, r.seconds, meter.cores)
        close_all(peers)
        await self.settle(0.5)
        return r

    async def idle_one(
        self, port: int, pid: int, n_idle: int, door: str = "line"
    ) -> dict[str, float]:
        """RSS of gateway `pid` before and after `n_idle` users log in on `door` (`port` is
        that door's port) and stay idle."""
        await self.settle(1)
        before = rss_kb(pid)
        peers: list[Any]
        if door == "web":
            peers = await connect_ws_many("127.0.0.1", port, n_idle, prefix="idlew", parallel=500)
        else:
            dialect = IRC_PASS if door == "irc" else CHAT
            chat = "bench" if door == "irc" else "general"
            peers = await connect_many(
                "127.0.0.1", port, dialect, n_idle, prefix=f"idle{door[0]}", chat=chat,
                parallel=500,
            )  # fmt: skip
        await self.settle(2)
        after = rss_kb(pid)
        close_all(peers)
        await self.settle(0.5)
        return {
            "rss_before_kb": before,
            "rss_after_kb": after,
            "bytes_per_connection": (after - before) * 1024 / n_idle,
            "lost": 0.0,
        }

    def gateway_workers(self, workers: int) -> tuple[int, subprocess.Popen[bytes], list[int]]:
        """One gateway of `workers` processes on one port; once each listens: its port,
        the supervisor and the workers' pids."""
        port = free_port()
        metrics = free_port(workers)  # worker i's metrics on metrics + i
        args = self.gateway_args(
            port, "--scrypt-log-n", "10", "--workers", str(workers), "--metrics-port", str(metrics)
        )
        proc = self.procs.start(args, port, f"workers{workers}-{port}")
        for i in range(workers):
            wait_port(metrics + i, proc)
        from bench.crowd import children

        return port, proc, children(proc)  # its workers: a spare comes later (SPARE_AFTER)

    async def workers_rows(
        self, members: int, senders: int, messages: int, n_senders: int, per: int
    ) -> None:
        """Fan-out and ingest through one port served by --workers 1, then --workers 2."""
        rates: dict[str, dict[int, float]] = {"fanout": {}, "ingest": {}}
        for workers in (1, 2):
            port, proc, pids = self.gateway_workers(workers)
            named: dict[str, int | None] = {f"worker{k + 1}": p for k, p in enumerate(pids)}
            named.update(redis=self.redis_pid, loadgen=None)
            self.flush_redis()
            meter = CpuMeter(named)
            r = await self.fanout_one("chat", [port], members, senders, messages, meter)
            rates["fanout"][workers] = r.rate
            self.row(
                f"fanout 1 gateway, --workers {workers}",
                "gateway",
                r,
                workers=workers,
                cpu_workers=round(sum(v for k, v in meter.cores.items() if "worker" in k), 2),
                cpu_redis=meter.cores.get("cpu_redis"),
                cpu_loadgen=meter.cores.get("cpu_loadgen"),
                vs_1_worker=round(r.rate / rates["fanout"][1], 2) if workers > 1 else None,
            )
            self.flush_redis()
            meter = CpuMeter(named)
            r = await self.ingest_one([port], [f"w{workers}i"], n_senders, per, meter)
            rates["ingest"][workers] = r.rate
            self.row(
                f"ingest 1 gateway, --workers {workers}",
                "gateway",
                r,
                workers=workers,
                accepted_per_s=round(r.rate),
                cpu_workers=round(sum(v for k, v in meter.cores.items() if "worker" in k), 2),
                vs_1_worker=round(r.rate / rates["ingest"][1], 2) if workers > 1 else None,
            )
            self.procs.stop(proc)

    def idle_size(self) -> int:
        return 300 if self.smoke else 10_000

    def sizes(self) -> tuple[int, int, int]:
        """Fan-out: members, senders, messages per sender."""
        return (20, 4, 50) if self.smoke else (200, 20, 2000)

    def ingest_sizes(self) -> tuple[int, int]:
        """Ingest: senders, messages per sender."""
        return (2, 200) if self.smoke else (10, 5000)

    def latency_sizes(self) -> tuple[int, float]:
        """Latency: messages per second, seconds."""
        return (200, 1.0) if self.smoke else (1000, 5.0)

    async def run(self) -> None:
        self.start_redis()
        if self.only - set(CROWD) - {"clients"}:
            await self.run_scenarios()
        if "clients" in self.only:
            self.run_clients()
        if self.only & {"crowd", "broadcast", "storm"}:
            from bench.crowd import Crowd

            await Crowd(
                self, self.users, self.crowd_seconds, self.storm_cap, self.crowd_gateways
            ).run(self.only)
        if "broadcastdoors" in self.only:  # a crowd of its own: a third on each door
            from bench.crowd import Crowd

            self.flush_redis()
            await Crowd(
                self, self.users, self.crowd_seconds, 0, self.crowd_gateways, doors=True
            ).run(self.only)
        if self.baseline is not None:
            await self.compare(self.baseline)

    def meter(self, gateway_pid: int) -> CpuMeter:
        """CPU of the gateway, Redis and this process (the load generator) over a row."""
        return CpuMeter({"gateway": gateway_pid, "redis": self.redis_pid, "loadgen": None})

    @staticmethod
    def cpu_per_delivery(meter: CpuMeter, r: Result) -> dict[str, float]:
        """Each process's CPU ns per delivered message: on two shared cores the rate is the
        sum of these (and the kernel's share in each), not the gateway's alone."""
        n = max(1, r.delivered)
        return {f"{name}_ns": round(used * 1e9 / n, 1) for name, used in meter.used.items()}

    def per_core(self, meter: CpuMeter, r: Result, line: float | None) -> dict[str, float]:
        """Deliveries per second of gateway CPU (what one gateway core could fan out with
        the readers elsewhere), and against the line row's (`line`)."""
        used = meter.used.get("gateway", 0.0)
        rate = r.delivered / used if used > 0 else 0.0
        out = {"per_gw_core": round(rate)}
        if line:
            out["vs_line_per_core"] = round(rate / line, 2)
        return out

    async def run_scenarios(self) -> None:
        only = self.only
        members, senders, messages = self.sizes()
        g1, g1proc = self.gateway("--scrypt-log-n", "10")
        g2, g2proc = self.gateway("--scrypt-log-n", "10")
        irc = self.ngircd()

        # 1. fan-out, one gateway, and the reference
        one_gw = None
        line_core = None
        if "fanout" in only:
            if irc:
                r = await self.fanout_one("irc", [irc[0]], members, senders, messages)
                self.row("fanout 1 server", "ngircd", r)
                irc_fanout = r.rate
            self.flush_redis()
            meter = self.meter(g1proc.pid)
            r = await self.fanout_one("chat", [g1], members, senders, messages, meter)
            self.row(
                "fanout 1 server",
                "gateway",
                r,
                vs_ngircd=round(r.rate / irc_fanout, 2) if irc else None,
                **self.cpu_per_delivery(meter, r),
                **self.per_core(meter, r, None),
            )
            one_gw = r.rate
            line_core = self.per_core(meter, r, None)["per_gw_core"]

        # 1b. the same with the readers on the web door (WebSocket, JSON frames)
        if "fanoutweb" in only:
            self.flush_redis()
            web_port = free_port()
            gw_port, web_gw = self.gateway("--scrypt-log-n", "10", "--web-port", str(web_port))
            wait_port(web_port)
            for deflate in (True, False):
                meter = self.meter(web_gw.pid)
                r = await self.fanout_web(
                    gw_port, web_port, members, senders, messages, meter, deflate
                )
                self.row(
                    f"fanout {members - senders} web + {senders} line readers"
                    + ("" if deflate else " (no compression)"),
                    "gateway",
                    r,
                    vs_line=round(r.rate / one_gw, 2) if one_gw else None,
                    vs_ngircd=round(r.rate / irc_fanout, 2) if irc and "fanout" in only else None,
                    **self.cpu_per_delivery(meter, r),
                    **self.per_core(meter, r, line_core),
                )
            self.procs.stop(web_gw)

        # 1c. the same with every member on the gateway's IRC door, beside ngircd
        if "fanoutirc" in only:
            self.flush_redis()
            irc_port = free_port()
            _, irc_gw = self.gateway("--scrypt-log-n", "10", "--irc-port", str(irc_port))
            wait_port(irc_port)
            meter = self.meter(irc_gw.pid)
            r = await self.fanout_one("irc+pass", [irc_port], members, senders, messages, meter)
            self.row(
                f"fanout {members} irc readers",
                "gateway",
                r,
                vs_line=round(r.rate / one_gw, 2) if one_gw else None,
                vs_ngircd=round(r.rate / irc_fanout, 2) if irc and "fanout" in only else None,
                **self.cpu_per_delivery(meter, r),
                **self.per_core(meter, r, line_core),
            )
            self.procs.stop(irc_gw)

        # 2. the same over two gateways on one Redis
        if "fanout2" in only:
            self.flush_redis()
            r = await self.fanout_one("chat", [g1, g2], members, senders, messages)
            self.row(
                "fanout 2 gateways",
                "gateway",
                r,
                vs_1_gateway=round(r.rate / one_gw, 2) if one_gw else None,
            )

        # 3. latency at 1,000 messages/s into a 200-member chat, and (3b) into a 20-member
        # chat: what latency is without the fan-out's CPU
        rate, secs = self.latency_sizes()
        for key, label, size in (
            ("latency", "latency 1000/s", members),
            ("latency20", "latency 1000/s, 20 members", 20),
        ):
            if key not in only:
                continue
            irc_p99 = None
            if irc:
                r = await self.latency_one("irc", irc[0], size, rate, secs, irc[1].pid)
                self.row(label, "ngircd", r)
                irc_p99 = r.extra["p99_ms"]
            self.flush_redis()
            r = await self.latency_one("chat", g1, size, rate, secs, g1proc.pid)
            self.row(
                label,
                "gateway",
                r,
                p99_vs_ngircd=round(r.extra["p99_ms"] / irc_p99, 2) if irc_p99 else None,
            )

        # 4. ingest: messages accepted per second into one chat
        n_senders, per = self.ingest_sizes()
        if "ingest" in only:
            self.flush_redis()
            meter = CpuMeter({"gateway": g1proc.pid, "redis": self.redis_pid, "loadgen": None})
            r = await self.ingest_one([g1], ["in"], n_senders, per, meter)
            self.row("ingest", "gateway", r, accepted_per_s=round(r.rate))

        # 4b. ingest through two gateways (half the senders on each), one chat
        if "ingest2" in only:
            self.flush_redis()
            pids = {
                "gateway1": g1proc.pid,
                "gateway2": g2proc.pid,
                "redis": self.redis_pid,
                "loadgen": None,
            }
            r = await self.ingest_one([g1, g2], ["ia", "ib"], n_senders, per, CpuMeter(pids))
            self.row("ingest 2 gateways", "gateway", r, accepted_per_s=round(r.rate))

        # 4c. fan-out and ingest on one gateway of --workers 1, then --workers 2 (one port)
        if "workers" in only:
            await self.workers_rows(members, senders, messages, n_senders, per)

        # 5. idle memory: logged-in idle connections on a fresh gateway, per door
        line_idle: float | None = None
        for key, door in (("idle", "line"), ("idleweb", "web"), ("idleirc", "irc")):
            if key not in only:
                continue
            self.flush_redis()
            n_idle = self.idle_size()
            door_port = free_port()
            opt = {"line": [], "web": ["--web-port"], "irc": ["--irc-port"]}[door]
            g3, g3proc = self.gateway("--scrypt-log-n", "4", *opt, *([str(door_port)] * len(opt)))
            if opt:
                wait_port(door_port)
            m = await self.idle_one(door_port if opt else g3, g3proc.pid, n_idle, door)
            per_conn = m["bytes_per_connection"]
            line_idle = per_conn if door == "line" else line_idle
            self.row(
                "idle memory" + ("" if door == "line" else f" ({door} door)"),
                "gateway",
                None,
                connections=n_idle,
                rss_before_kb=m["rss_before_kb"],
                rss_after_kb=m["rss_after_kb"],
                bytes_per_connection=round(per_conn),
                vs_line=round(per_conn / line_idle, 2) if line_idle and door != "line" else None,
            )
            self.procs.stop(g3proc)

        # 6. login burst at the default password cost
        if "login" in only:
            self.flush_redis()
            n_login = 50 if self.smoke else 1000
            g4, g4proc = self.gateway()  # default --scrypt-log-n 14
            t = time.perf_counter()
            hashlib.scrypt(
                b"bench-password", salt=b"0" * 16, n=1 << 14, r=8, p=1, maxmem=64 << 20, dklen=32
            )
            hash_ms = (time.perf_counter() - t) * 1000
            began = time.perf_counter()
            peers = await connect_many(
                "127.0.0.1", g4, CHAT, n_login, prefix="burst", chat="general", parallel=n_login
            )
            took = time.perf_counter() - began
            self.row(
                "login burst",
                "gateway",
                None,
                users=n_login,
                seconds=round(took, 2),
                logins_per_s=round(n_login / took, 1),
                scrypt_ms_one_core=round(hash_ms, 1),
                cores=os.cpu_count(),
            )
            close_all(peers)
            self.procs.stop(g4proc)

        # 7. many chats on a standalone Redis and on a 3-master cluster (bench/shards.py)
        if "shards" in only:
            await run_shards(self)

        # --baseline's gateways run alone
        self.procs.stop(g1proc)
        self.procs.stop(g2proc)
        if irc:
            self.procs.stop(irc[1])

    def run_clients(self) -> None:
        """bench/clients.py in a process of its own (its CPU is the client's alone), with
        its own redis-server and Redis Cluster; its rows join this run's table."""
        out = self.workdir / "clients.json"
        args = [sys.executable, str(ROOT / "bench" / "clients.py"), "--json", str(out)]
        proc = subprocess.run(
            [*args, *(["--smoke"] if self.smoke else [])],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"bench/clients.py failed:\n{proc.stderr[-3000:]}")
        for row in json.loads(out.read_text()):
            self.rows.append(row)
            print(json.dumps(row), flush=True)

    # -- --baseline ------------------------------------------------------------------------

    def compare_title(self, key: str) -> str:
        members, senders, messages = self.sizes()
        n_senders, per = self.ingest_sizes()
        rate, _ = self.latency_sizes()
        return {
            "fanout": f"fan-out {members} members {senders}x{messages} one gateway",
            "fanout2": f"fan-out {members} members {senders}x{messages} two gateways",
            "ingest": f"ingest {n_senders}x{per} one gateway",
            "ingest2": f"ingest {n_senders}x{per} two gateways",
            "latency": f"latency {rate}/s {members} members one gateway",
            "idle": f"idle memory {self.idle_size()} connections one gateway",
            "idleweb": f"idle memory {self.idle_size()} web connections one gateway",
            "idleirc": f"idle memory {self.idle_size()} irc connections one gateway",
            "fanoutweb": f"fan-out {members - senders} web + {senders} line readers one gateway",
            "fanoutirc": f"fan-out {members} irc readers one gateway",
        }[key]

    async def compare_once(self, key: str, tree: Path, side: str) -> dict[str, float]:
        """One run of scenario `key` on fresh gateway(s) from `tree`; its metrics."""
        self.flush_redis()
        door = {"idleweb": "web", "fanoutweb": "web", "idleirc": "irc", "fanoutirc": "irc"}
        door_port = free_port()
        env = {}
        if door.get(key) == "web":
            env["CHAT_WEB_PORT"] = str(door_port)
        elif door.get(key) == "irc":
            env["CHAT_IRC_PORT"] = str(door_port)
        if key.startswith("idle"):  # cheap hashes: the logins are not what is measured
            port, proc = self.gateway_at(tree, side, CHAT_SCRYPT_LOG_N="4", **env)
            try:
                if key in door:
                    wait_port(door_port)
                    port = door_port
                return await self.idle_one(port, proc.pid, self.idle_size(), door.get(key, "line"))
            finally:
                self.procs.stop(proc)
        count = 2 if key.endswith("2") else 1
        gateways = [self.gateway_at(tree, side, **env) for _ in range(count)]
        ports = [port for port, _ in gateways]
        pids: dict[str, int | None] = {
            f"gateway{k}": proc.pid for k, (_, proc) in enumerate(gateways, 1)
        }
        meter = CpuMeter({**pids, "redis": self.redis_pid, "loadgen": None})
        try:
            if key == "fanoutweb":
                wait_port(door_port)
                # plain frames on both sides: an older gateway agrees no compression, and
                # the load generator's inflating would be measured, not the gateway
                r = await self.fanout_web(
                    ports[0], door_port, *self.sizes(), meter=meter, deflate=False
                )
            elif key == "fanoutirc":
                wait_port(door_port)
                r = await self.fanout_one("irc+pass", [door_port], *self.sizes(), meter=meter)
            elif key.startswith("fanout"):
                r = await self.fanout_one("chat", ports, *self.sizes(), meter=meter)
            elif key.startswith("ingest"):
                prefixes = ["ia", "ib"][: len(ports)]
                r = await self.ingest_one(ports, prefixes, *self.ingest_sizes(), meter)
            else:
                members = self.sizes()[0]
                rate, secs = self.latency_sizes()
                r = await self.latency_one(
                    "chat", ports[0], members, rate, secs, gateways[0][1].pid
                )
        finally:
            for _, proc in gateways:
                self.procs.stop(proc)
        gateway_cpu = sum(meter.used.get(name, 0.0) for name in pids)
        metrics = {
            "rate": r.rate,
            "lost": float(r.lost),
            "gw_cpu_ns": gateway_cpu / r.delivered * 1e9 if r.delivered and meter.used else 0.0,
            **r.extra,
        }
        return metrics

    async def compare(self, base: Baseline) -> None:
        """Every COMPARED scenario in --only, `reps` times on each side, interleaved: the
        side that goes first alternates (current, baseline, baseline, current, ...)."""
        sides = {"current": ROOT, "baseline": base.tree}
        for key in (k for k in COMPARED if k in self.only):
            title = self.compare_title(key)
            runs: dict[str, list[dict[str, float]]] = {"current": [], "baseline": []}
            for rep in range(base.reps):
                order = ["current", "baseline"] if rep % 2 == 0 else ["baseline", "current"]
                for side in order:
                    m = await self.compare_once(key, sides[side], side)
                    runs[side].append(m)
                    shown = {k: round(m[k], 3) for k in ["lost", *(x.key for x in COMPARED[key])]}
                    print(
                        json.dumps({"compare": title, "side": side, "rep": rep + 1, **shown}),
                        flush=True,
                    )
            for metric in COMPARED[key]:
                cur = [m[metric.key] for m in runs["current"]]
                old = [m[metric.key] for m in runs["baseline"]]
                med_cur, med_old = statistics.median(cur), statistics.median(old)
                ratio = med_cur / med_old if med_old else None
                worse = None
                if ratio is not None:
                    worse = (1 - ratio) if metric.higher_is_better else (ratio - 1)
                self.compare_rows.append(
                    {
                        "scenario": title,
                        "server": f"gateway vs {base.rev}",
                        "key": key,
                        "metric": metric.label,
                        "higher_is_better": metric.higher_is_better,
                        "baseline": base.rev,
                        "baseline_commit": base.commit,
                        "current_median": round(med_cur, 3),
                        "baseline_median": round(med_old, 3),
                        "ratio": None if ratio is None else round(ratio, 3),
                        "within_10pct": None if worse is None else worse <= 0.10,
                        "current_spread_pct": spread_pct(cur),
                        "baseline_spread_pct": spread_pct(old),
                        "current_runs": [round(x, 3) for x in cur],
                        "baseline_runs": [round(x, 3) for x in old],
                        "lost": sum(int(m["lost"]) for ms in runs.values() for m in ms),
                    }
                )


def spread_pct(values: list[float]) -> float:
    """(max - min) / median, in percent: how far apart repeated runs of one side were."""
    mid = statistics.median(values)
    return round((max(values) - min(values)) / mid * 100, 1) if mid else 0.0


def export_rev(rev: str, dest: Path) -> str:
    """`git archive REV | tar -x -C dest`; the full commit id."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        raise SystemExit(f"--baseline {rev}: not a commit of {ROOT}")
    commit = found.stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout)
    assert archive.stdout is not None
    archive.stdout.close()
    if archive.wait() != 0 or untar.returncode != 0 or not (dest / "server.py").is_file():
        raise SystemExit(f"--baseline {rev}: could not export {commit} with server.py")
    return commit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, seconds")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument(
        "--only",
        help=f"comma-separated scenarios to run, of: {','.join(SCENARIOS)} (default: all); "
        f"--baseline compares those of them in: {','.join(COMPARED)}",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the gateway-only scenarios against the gateway of this git revision, "
        "interleaved with this checkout's, and report the medians and ratios",
    )
    parser.add_argument(
        "--users",
        type=int,
        help="crowd, broadcast, storm: users in #general (default 50000, with --smoke 300)",
    )
    parser.add_argument(
        "--crowd-seconds",
        type=float,
        help="broadcast: seconds at each rate (default 30, with --smoke 1)",
    )
    parser.add_argument(
        "--storm-cap",
        type=float,
        help="storm: seconds the password-login storm may take before it is cut off and "
        "its rate reported (default 60, with --smoke 30; 0: only the resume-token storm)",
    )
    parser.add_argument(
        "--crowd-gateways",
        type=int,
        default=3,
        help="crowd, broadcast, storm: gateways the users are spread over (default 3)",
    )
    parser.add_argument(
        "--crowd-args",
        default="",
        metavar="ARGS",
        help="crowd, broadcast, storm: more options for each of their gateways, e.g. "
        "'--fanout-chunk 0' (one string)",
    )
    parser.add_argument(
        "--cpus",
        metavar="LIST",
        help="run the bench and everything it starts on these CPUs only (e.g. 0 or 0,1; "
        "children inherit it): the same scenario on fewer cores, to measure how it scales",
    )
    parser.add_argument(
        "--reps",
        type=int,
        help="--baseline: runs of each side per scenario (default 3, with --smoke 2)",
    )
    args = parser.parse_args()
    only = None
    if args.only:
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = only - set(SCENARIOS)
        if unknown:
            parser.error(f"--only: unknown {', '.join(sorted(unknown))}; known: {SCENARIOS}")
    if args.reps is None:
        args.reps = 2 if args.smoke else 3
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.cpus:
        try:
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        except (ValueError, OSError) as exc:
            parser.error(f"--cpus {args.cpus}: {exc} (this machine's CPUs: "
                         f"{sorted(os.sched_getaffinity(0))})")  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still stop and clean up
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        # Gateways start as a deployment's do, from cached bytecode, kept out of the tree
        # and compiled here before anything starts: a gateway restarted in a storm compiled
        # every module again (a second of CPU) where PYTHONDONTWRITEBYTECODE is set, and
        # the first gateway of a run that compiled them itself started 16 MB bigger (the
        # compiler's memory stays with the process), which made the crowd's RSS per
        # connection read ~2,000 B when it ran first and ~2,900 B after other rows.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        trees = [ROOT]
        baseline = None
        if args.baseline:
            tree = Path(tmp) / "baseline"
            commit = export_rev(args.baseline, tree)
            baseline = Baseline(args.baseline, commit, tree, args.reps)
            trees.append(tree)
        compile_trees(trees)
        bench = Bench(
            args.smoke,
            Path(tmp),
            only,
            baseline,
            users=args.users or (300 if args.smoke else 50_000),
            crowd_seconds=args.crowd_seconds or (1.0 if args.smoke else 30.0),
            storm_cap=(30.0 if args.smoke else 60.0) if args.storm_cap is None else args.storm_cap,
            crowd_gateways=args.crowd_gateways,
            crowd_args=tuple(args.crowd_args.split()),
        )
        try:
            asyncio.run(bench.run())
        finally:
            bench.procs.stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(bench.rows + bench.compare_rows, indent=1))
    print_table(bench.rows)
    print_targets(bench.rows)
    if baseline is not None:
        print_compare(bench.compare_rows, baseline)
    return 0


def print_table(rows: list[dict[str, object]]) -> None:
    print("\n| scenario | server | result |\n| --- | --- | --- |")
    for row in rows:
        rest = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("scenario", "server") and v is not None
        )
        print(f"| {row['scenario']} | {row['server']} | {rest} |")


def print_compare(rows: list[dict[str, object]], base: Baseline) -> None:
    print(
        f"\n### vs baseline {base.rev} ({base.commit[:12]}): median of {base.reps} runs each, "
        "interleaved; ratio = current/baseline\n"
        "\n| scenario | metric | current | baseline | current/baseline | within 10% "
        "| spread current | spread baseline | lost |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )

    def num(v: object) -> str:
        return f"{v:,.0f}" if isinstance(v, float) and abs(v) >= 1000 else f"{v:.4g}"

    for row in rows:
        better = "higher" if row["higher_is_better"] else "lower"
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        within = "n/a" if row["within_10pct"] is None else "yes" if row["within_10pct"] else "NO"
        print(
            f"| {row['scenario']} | {row['metric']} ({better} is better) "
            f"| {num(row['current_median'])} | {num(row['baseline_median'])} | {ratio} "
            f"| {within} | {row['current_spread_pct']}% "
            f"| {row['baseline_spread_pct']}% | {row['lost']} |"
        )
    noisy = [
        float(row[side])  # type: ignore[arg-type]
        for row in rows
        for side in ("current_spread_pct", "baseline_spread_pct")
    ]
    if noisy and max(noisy) > 10:
        print(
            f"\nnote: runs of one side differed by up to {max(noisy):.0f}% (spread = (max - min)"
            " / median); a ratio inside its rows' spread is noise. Gateway CPU per message"
            " moves far less with the load of a shared machine than wall-clock rates do;"
            " more --reps narrow the medians."
        )
    headline = {"fanout": "fan-out", "ingest": "ingest", "idle": "idle memory"}

    def summary(metrics: tuple[str, ...]) -> str:
        return ", ".join(
            f"{headline[str(row['key'])]} "
            + ("n/a" if row["ratio"] is None else f"{row['ratio']:.2f}x")
            for row in rows
            if row["key"] in headline and row["metric"] in metrics
        )

    cpu = summary(("gateway CPU ns per delivery", "gateway CPU ns per message"))
    memory = summary(("RSS bytes per idle connection",))
    rates = summary(("deliveries/s", "accepted/s")) or ("" if memory else "nothing compared")
    print(
        f"\nvs baseline {base.rev}: {rates}"
        + (f" (gateway CPU per message: {cpu})" if cpu else "")
        + (f"{'; ' if rates else ''}RSS per idle connection: {memory}" if memory else "")
    )


if __name__ == "__main__":
    sys.exit(main())

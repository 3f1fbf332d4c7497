"""The crowd scenarios of bench/run.py: tens of thousands of users in one #general.

    crowd      N users logged in over 3 gateways on one Redis: gateway RSS per connection,
               Redis memory per user, time until all are logged in
    broadcast  one message into #general at 1/s and 10/s: time until the last member
               has each message (p50, p99, max), lost, the gateways' CPU
    storm      SIGKILL the gateway holding a third of the users; its clients come back as
               client.py does, with passwords and then with resume tokens: time until all
               are at `* ready`, and the latency the other gateways' users see meanwhile

The users are spread over load-generator processes (bench/swarm.py), each at most 20,000
descriptors, connecting from their own loopback addresses (127.0.0.2, ...). Accounts and
their resume tokens are written to Redis by the real scripts (register_claim.lua, register.lua,
token_issue.lua) with one password hash computed once at the gateways' default cost, so
setting up 50,000 users takes seconds, not 50,000 hashes.

Each gateway runs supervised (`--workers 1`): the storm SIGKILLs the worker, and its
supervisor restarts it as in production (gateway/workers.py: after 0.1 s, from its warm
spare). With 20,000 descriptors per process two gateways cannot hold 50,000 users, so the
third must come back (and a full gateway says `! server busy` so that clients move on).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis as redis_py

from bench.breakdown import MachineCpu, fanout_report, stages
from bench.loadgen import CHAT, Peer, close_all, connect_many
from bench.swarm import PASSWORD, bench_token
from gateway.core.names import name_key, name_skeleton
from gateway.core.passwords import hash_password
from gateway.core.tokens import token_hash
from scripts.procs import die_with_parent
from store import keys
from store.scripts import SCRIPTS

if TYPE_CHECKING:
    from bench.run import Bench

__all__ = ["Crowd"]

ROOT = Path(__file__).resolve().parent.parent
#: Users per load-generator process: under its 20,000 descriptors with room to spare.
PER_WORKER = 17_000
#: Source addresses each worker connects from (each has its own ~28,000 ports).
SOURCES_PER_WORKER = 3
PREFIX = "c"
#: Gateways the crowd is spread over (`--crowd-gateways`).
GATEWAYS = 3


class Worker:
    """One bench/swarm.py process and its JSON-lines channel."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, log: Path) -> Worker:
        with open(log, "ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ROOT / "bench" / "swarm.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=64 << 20,
                preexec_fn=die_with_parent(),
            )
        return cls(proc)

    async def ask(self, **req: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        async with self._lock:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load-generator worker exited during {req['op']}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    async def stop(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.ask(op="close"), 5)
                await asyncio.wait_for(self.proc.wait(), 5)
            except (TimeoutError, RuntimeError, OSError):
                if self.proc.returncode is None:
                    try:
                        self.proc.kill()
                    except ProcessLookupError:
                        pass
                await self.proc.wait()


def keep_worst(worst: list[float], since_kill_ns: int, value: float) -> None:
    """`value` (ms, rounded to 0.1) into its whole second after the kill in `worst`, if
    the largest there; moments before the kill are not kept."""
    if since_kill_ns < 0:
        return
    second = since_kill_ns // 1_000_000_000
    worst.extend([0.0] * (second + 1 - len(worst)))
    worst[second] = max(worst[second], round(value, 1))


def _kernel_counters(path: str, table: str) -> dict[str, int]:
    """One table of /proc/net/netstat or /proc/net/snmp (a line of names, then a line of
    values, each after `table:`); empty if it cannot be read."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith(f"{table}:"):
            return {k: int(v) for k, v in zip(names.split()[1:], values.split()[1:], strict=False)}
    return {}


def listen_overflows() -> int:
    """The machine's count of connections dropped because a listen queue was full (each
    such client's SYN is resent after 1 s, then 2 s...): TcpExt ListenOverflows."""
    return _kernel_counters("/proc/net/netstat", "TcpExt").get("ListenOverflows", 0)


def packet_losses() -> dict[str, int]:
    """The machine's counts of packets the kernel dropped because a CPU's input backlog was
    full (net.core.netdev_max_backlog; on loopback every packet passes it) and of TCP
    segments resent: each resend is a wait of 200 ms or more (the retransmission timeout)
    for somebody."""
    try:
        drops = sum(
            int(line.split()[1], 16)
            for line in Path("/proc/net/softnet_stat").read_text().splitlines()
        )
    except OSError:
        drops = 0
    resent = _kernel_counters("/proc/net/snmp", "Tcp").get("RetransSegs", 0)
    return {"kernel_backlog_drops": drops, "tcp_resent_segments": resent}


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the name; None once it has exited (or is a zombie:
    its sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return None if fields[0] == "Z" else fields


def children(proc: subprocess.Popen[bytes]) -> list[int]:
    """A supervised gateway's live processes, oldest first: its worker, then its spare
    (started 2 s after the worker runs). Read from /proc, which costs nothing, where
    `ss -p` would read every descriptor of every process (50,000 sockets)."""
    listed = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    alive = [(int(stat[19]), int(p)) for p in listed if (stat := _stat(int(p))) is not None]
    return [pid for _, pid in sorted(alive)]


async def wait_worker_async(
    port: int, proc: subprocess.Popen[bytes], dead: int | None = None, timeout: float = 30
) -> int:
    """The pid of the worker of the supervised gateway `proc` once it serves `port` (not
    `dead`, which was just killed), without blocking the event loop."""
    deadline = time.monotonic() + timeout
    while dead is not None and _stat(dead) is not None:  # its sockets close as it exits
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dead} did not die")
        await asyncio.sleep(0.005)
    # greeted: a bare connect can succeed while the dead worker's sockets close
    await wait_port_async(port, proc, max(0.0, deadline - time.monotonic()), greeted=True)
    return children(proc)[0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def wait_port_async(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 30, greeted: bool = False
) -> None:
    """Like scripts.procs.wait_port without blocking the event loop (the latency probe
    keeps running while a gateway restarts); with `greeted`, until a connection is also
    sent its first byte (the line door's welcome) within a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway on {port} exited with {proc.returncode}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if not greeted:
                    return
                async with asyncio.timeout(1.0):
                    if await reader.read(1):
                        return
            finally:
                writer.close()
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.01)
    raise TimeoutError(f"nothing {'serving' if greeted else 'listening on'} {port}")


class Crowd:
    def __init__(
        self,
        bench: Bench,
        users: int,
        seconds: float,
        storm_cap: float,
        gateways: int = GATEWAYS,
        doors: bool = False,
    ) -> None:
        self.bench = bench
        #: A third of the users on each door (line, web, IRC) instead of all on the line door.
        self.doors = doors
        self.door_ports: dict[int, tuple[int, int]] = {}  # gateway port -> (web, irc)
        self.gateways = gateways
        self.n = users
        self.seconds = seconds  # each broadcast rate runs this long
        self.storm_cap = storm_cap  # the password storm is cut off after this
        self.seed_log_n = 10 if bench.smoke else 14
        self.workers: list[Worker] = []
        self.ports: list[int] = []
        self.gws: list[subprocess.Popen[bytes]] = []  # each gateway's supervisor
        self.gw_pids: list[int] = []  # each gateway's worker
        self.firsts: dict[int, int] = {}
        self.metrics_ports: dict[int, int] = {}  # gateway port -> its --metrics-port

    # -- set-up --------------------------------------------------------------------------

    def start_gateway(self, port: int) -> subprocess.Popen[bytes]:
        mport = self.metrics_ports.setdefault(port, self.bench.free_port())
        doors: list[str] = []
        if self.doors:
            web, irc = self.door_ports.setdefault(
                port, (self.bench.free_port(), self.bench.free_port())
            )
            doors = ["--web-port", str(web), "--irc-port", str(irc)]
        return self.bench.gateway_proc(
            port, "--workers", "1", "--metrics-port", str(mport), *doors,
            *self.bench.crowd_args, wait=False,
        )  # fmt: skip

    def metrics_lines(self, port: int) -> list[str]:
        """The gateway on `port`'s /metrics, by line (none if it cannot be read)."""
        url = f"http://127.0.0.1:{self.metrics_ports[port]}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return str(r.read().decode()).splitlines()
        except OSError:
            return []

    def loop_lag(self, port: int) -> dict[str, int]:
        """The gateway on `port`'s event-loop lag so far: ticks later than each bound
        (`chat_event_loop_lag_seconds`, cumulative from the top)."""
        counts: dict[str, float] = {}
        for line in self.metrics_lines(port):
            if line.startswith("chat_event_loop_lag_seconds_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                counts[bound] = float(line.split()[-1])
        total = counts.get("+Inf", 0.0)
        return {f"over_{b}s": int(total - n) for b, n in counts.items() if b != "+Inf"}

    def gc_full_pauses(self, port: int) -> tuple[float, int]:
        """Seconds the gateway on `port` spent in full garbage collections so far, and how
        many (its `chat_gc_pause_seconds{generation="2"}`)."""
        got = {"sum": 0.0, "count": 0.0}
        for line in self.metrics_lines(port):
            for k in got:
                if line.startswith(f'chat_gc_pause_seconds_{k}{{generation="2"}}'):
                    got[k] = float(line.split()[-1])
        return got["sum"], int(got["count"])

    def redis(self) -> redis_py.Redis:
        return redis_py.Redis(port=self.bench.redis_port)

    def redis_slowlog(self, reset: bool = False) -> list[str]:
        """Redis' own slow commands (over 10 ms of its time) since the last reset, slowest
        first: a stall inside Redis shows here, waiting for a core does not."""
        r = self.redis()
        try:
            if reset:
                r.config_set("slowlog-log-slower-than", 10_000)
                r.slowlog_reset()
                return []
            entries = sorted(r.slowlog_get(10), key=lambda e: -int(e["duration"]))
            return [
                f"{e['duration'] / 1000:.0f} ms {e['command'].decode(errors='replace')[:60]}"
                for e in entries
            ]
        finally:
            r.close()

    def redis_memory(self) -> int:
        r = self.redis()
        try:
            return int(r.info("memory")["used_memory"])
        finally:
            r.close()

    def seed(self) -> float:
        """Accounts (every one in #general) and a resume token each, by the gateways' own
        scripts and steps (as `RedisStore.register` makes them: the name's look claimed,
        the account created, the member added); one password hash at the default cost
        shared by all. Returns seconds."""
        began = time.perf_counter()
        pw = hash_password(PASSWORD, self.seed_log_n)
        r = self.redis()
        try:
            for name in ("register_claim", "register", "token_issue"):
                r.script_load(SCRIPTS[name].source)
            claim = SCRIPTS["register_claim"].sha
            reg, tok = SCRIPTS["register"].sha, SCRIPTS["token_issue"].sha
            ttl_ms = 30 * 86400 * 1000
            batch = 2000
            now = int(time.time() * 1000)
            for start in range(0, self.n, batch):
                pipe = r.pipeline(transaction=False)
                users = []
                for i in range(start, min(self.n, start + batch)):
                    nick = f"{PREFIX}{i}"
                    u = name_key(nick)
                    users.append(u)
                    pipe.evalsha(
                        claim, 2, keys.skeleton(name_skeleton(nick)), keys.registrations(""), u, 0
                    )
                    pipe.evalsha(reg, 2, keys.user(u), keys.user_chats(u), nick, pw, keys.GENERAL)
                    pipe.evalsha(
                        tok, 1, keys.tokens(u), token_hash(bench_token(nick)), ttl_ms, "", 64
                    )
                pipe.sadd(keys.members(keys.GENERAL), *users)
                pipe.zadd(keys.seen(), dict.fromkeys(users, now))
                results = pipe.execute()
                if any(res != 1 for res in results[0 : 3 * len(users) : 3]) or any(
                    res != 1 for res in results[1 : 3 * len(users) : 3]
                ):
                    raise RuntimeError("seeding: an account was not created")
            r.hsetnx(keys.chat(keys.GENERAL), "name", keys.GENERAL)
            r.zadd(keys.chat_sizes(), {keys.GENERAL: r.scard(keys.members(keys.GENERAL))})
        finally:
            r.close()
        return time.perf_counter() - began

    async def start(self) -> None:
        self.bench.flush_redis()
        self.ports = [self.bench.free_port() for _ in range(self.gateways)]
        self.gws = [self.start_gateway(p) for p in self.ports]
        self.gw_pids = []
        for port, proc in zip(self.ports, self.gws, strict=True):
            self.gw_pids.append(await wait_worker_async(port, proc))
            for door_port in self.door_ports.get(port, ()):
                await wait_port_async(door_port, proc)
        n_workers = max(self.gateways, math.ceil(self.n / PER_WORKER))
        self.workers = [
            await Worker.start(self.bench.workdir / f"swarm{k}.log") for k in range(n_workers)
        ]
        for k, w in enumerate(self.workers):
            first = 2 + SOURCES_PER_WORKER * k
            sources = [
                f"127.0.{a // 256}.{a % 256}" for a in range(first, first + SOURCES_PER_WORKER)
            ]
            door_ports = (
                {
                    "web": [self.door_ports[p][0] for p in self.ports],
                    "irc": [self.door_ports[p][1] for p in self.ports],
                }
                if self.doors
                else {}
            )
            await w.ask(
                op="setup", prefix=PREFIX, ports=self.ports, sources=sources, door_ports=door_ports
            )

    def slices(self) -> list[tuple[int, int]]:
        share = math.ceil(self.n / len(self.workers))
        return [(k * share, min(share, self.n - k * share)) for k in range(len(self.workers))]

    async def ask_all(self, **req: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.ask(**req) for w in self.workers)))

    async def stop(self) -> None:
        for w in self.workers:
            await w.stop()
        self.workers = []
        for proc in self.gws:
            self.bench.procs.stop(proc)
        self.gws = []

    def pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {f"gateway{k + 1}": p for k, p in enumerate(self.gw_pids)}
        pids["redis"] = self.bench.redis_pid
        for k, w in enumerate(self.workers):
            pids[f"loadgen{k + 1}"] = w.proc.pid
        return pids

    # -- (a) everyone logged in ------------------------------------------------------------

    async def login_all(self) -> None:
        from bench.run import CpuMeter, rss_kb

        redis_before = self.redis_memory()
        seed_s = self.seed()
        await self.bench.settle(1)
        rss_before = [rss_kb(p) for p in self.gw_pids]
        began = time.perf_counter()
        with CpuMeter(self.pids()) as cpu:
            replies = await asyncio.gather(
                *(
                    w.ask(op="connect", first=first, count=count, parallel=400, timeout=900)
                    for w, (first, count) in zip(self.workers, self.slices(), strict=True)
                )
            )
        took = time.perf_counter() - began
        ready = sum(r["ready"] for r in replies)
        await self.bench.settle(3)
        rss_after = [rss_kb(p) for p in self.gw_pids]
        per_gw = self.n / self.gateways
        redis_after = self.redis_memory()
        self.bench.row(
            f"crowd: {self.n} users over {self.gateways} gateways, one Redis"
            + (", a third on each door (line, web, IRC)" if self.doors else ""),
            "gateway",
            None,
            users=self.n,
            ready=ready,
            lost=self.n - ready,
            login_seconds=round(took, 2),
            logins_per_s=round(ready / took) if took else None,
            login_method="resume token (nick token), as client.py after its first login",
            gateway_rss_bytes_per_connection=[
                round((a - b) * 1024 / per_gw) for a, b in zip(rss_after, rss_before, strict=True)
            ],
            gateway_rss_mb=[round(a / 1024, 1) for a in rss_after],
            redis_bytes_per_user=round((redis_after - redis_before) / self.n),
            redis_used_mb=round(redis_after / 2**20, 1),
            seed_seconds=round(seed_s, 2),
            cpu_each_gateway=[v for k, v in cpu.cores.items() if "gateway" in k],
            cpu_redis=cpu.cores.get("cpu_redis"),
            cpu_loadgen=round(sum(v for k, v in cpu.cores.items() if "loadgen" in k), 2),
            load_processes=len(self.workers),
        )

    # -- (b) one message to everyone ------------------------------------------------------

    async def broadcast(self, rate: float, first_seq: int) -> int:
        from bench.run import CpuMeter

        sender = (
            await connect_many(
                "127.0.0.1", self.ports[0], CHAT, 1, prefix=f"bcast{first_seq}_", chat="general"
            )
        )[0]
        await self.ask_all(op="reset")
        total = max(1, round(rate * self.seconds))
        sent: dict[int, int] = {}
        before = [fanout_report(self.metrics_ports[port]) for port in self.ports]
        with CpuMeter(self.pids()) as cpu, MachineCpu() as machine:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            for k in range(total):
                seq = first_seq + k
                sent[seq] = time.monotonic_ns()
                await sender.write(f"bc{seq}\r\n".encode())
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            counts, lasts = await self._wait_arrivals(sent, idle=3 if self.bench.smoke else 15)
        close_all([sender])
        after = [fanout_report(self.metrics_ports[port]) for port in self.ports]
        expected = self.n * total
        got = sum(counts.values())
        ms = [(lasts[s] - t) / 1e6 for s, t in sent.items() if s in lasts]
        first_ms = [(self.firsts[s] - t) / 1e6 for s, t in sent.items() if s in self.firsts]
        cores = cpu.cores
        self.bench.row(
            f"broadcast {rate:g} msg/s into #general of {self.n} for {self.seconds:g} s"
            + (", a third on each door (line, web, IRC)" if self.doors else ""),
            "gateway",
            None,
            messages=total,
            members=self.n,
            cpus=len(os.sched_getaffinity(0)),
            expected=expected,
            delivered=got,
            lost=expected - got,
            last_member_p50_ms=round(pct(ms, 0.5), 1),
            last_member_p99_ms=round(pct(ms, 0.99), 1),
            last_member_max_ms=round(max(ms), 1) if ms else None,
            first_member_p50_ms=round(pct(first_ms, 0.5), 1),
            cpu_gateways=round(sum(v for k, v in cores.items() if "gateway" in k), 2),
            cpu_each_gateway=[v for k, v in cores.items() if "gateway" in k],
            cpu_redis=cores.get("cpu_redis"),
            cpu_loadgen=round(sum(v for k, v in cores.items() if "loadgen" in k), 2),
            machine_cores=machine.cores,
            **stages(sent, lasts, before, after),
        )
        return first_seq + total

    async def _wait_arrivals(
        self, sent: dict[int, int], idle: float
    ) -> tuple[dict[int, int], dict[int, int]]:
        """Poll the workers until every member has every message, or nothing more came
        for `idle` seconds. Per message: how many got it, when the last one did."""
        want = self.n * len(sent)
        last_total, changed = -1, time.monotonic()
        while True:
            stats = await self.ask_all(op="stats")
            counts: dict[int, int] = {}
            lasts: dict[int, int] = {}
            firsts = self.firsts = {}
            for st in stats:
                for seq, (count, last, first) in st["arrivals"].items():
                    s = int(seq)
                    counts[s] = counts.get(s, 0) + count
                    lasts[s] = max(lasts.get(s, 0), last)
                    firsts[s] = min(firsts.get(s, first), first)
            total = sum(counts.values())
            if total >= want:
                return counts, lasts
            if total != last_total:
                last_total, changed = total, time.monotonic()
            elif time.monotonic() - changed > idle:
                return counts, lasts
            await asyncio.sleep(0.25)

    # -- (c) the reconnect storm ------------------------------------------------------------

    async def storm(self) -> None:
        victim = self.gateways - 1  # users i % gateways == gateways - 1 are on it
        on_victim = len(range(victim, self.n, self.gateways))
        probe = await self._probe_users()
        try:
            if self.storm_cap > 0:
                await self._password_storm(victim, on_victim, probe)
            r = await self._kill_and_watch(victim, on_victim, probe, "token", 600)
            self.bench.row(
                f"reconnect storm: {on_victim} users' gateway SIGKILLed, resume tokens",
                "gateway",
                None,
                **r,
            )
        finally:
            close_all(probe)

    async def _password_storm(self, victim: int, on_victim: int, probe: list[Peer]) -> None:
        """The storm with password logins (cut off after storm_cap s), then the same users
        put back on the restarted gateway for the token storm."""
        await self.ask_all(op="mode", mode="password")
        r = await self._kill_and_watch(victim, on_victim, probe, "password", self.storm_cap)
        self.bench.row(
            f"reconnect storm: {on_victim} users' gateway SIGKILLed, password logins",
            "gateway",
            None,
            **r,
        )
        await self.ask_all(op="park", group=victim)
        await self.bench.settle(10)  # hash queues drain
        await self.ask_all(op="mode", mode="token")
        await self.ask_all(op="unpark", group=victim, parallel=400, timeout=600)
        await self._wait_ready(self.n, 120)

    async def _probe_users(self) -> list[Peer]:
        """10 users on each surviving gateway in a small chat #probe (samples) and one
        sender: the latency the other gateways' users see during the storm."""
        readers: list[Peer] = []
        for k in range(self.gateways - 1):
            readers += await connect_many(
                "127.0.0.1", self.ports[k], CHAT, 10, prefix=f"probe{k}_", chat="probe", samples=10
            )
        sender = (
            await connect_many("127.0.0.1", self.ports[0], CHAT, 1, prefix="psend", chat="probe")
        )[0]
        return [*readers, sender]

    async def _wait_ready(self, want: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        ready = 0
        while time.monotonic() < deadline:
            ready = sum(s["ready"] for s in await self.ask_all(op="stats"))
            if ready >= want:
                break
            await asyncio.sleep(0.25)
        return ready

    async def _kill_and_watch(
        self, victim: int, on_victim: int, probe: list[Peer], method: str, cap: float
    ) -> dict[str, Any]:
        from bench.run import CpuMeter

        sender, readers = probe[-1], probe[:-1]
        for p in readers:
            p.latencies.clear()
            p.sent.clear()
        await self.ask_all(op="reset")
        done = asyncio.Event()

        async def probing() -> int:
            sent = 0
            while not done.is_set():
                await sender.write(f"t={time.perf_counter_ns()}\r\n".encode())
                sent += 1
                await asyncio.sleep(0.05)
            return sent

        prober = asyncio.create_task(probing())
        await self.bench.settle(1)
        survivors = {k: v for k, v in self.pids().items() if k != f"gateway{victim + 1}"}
        overflows = listen_overflows()
        losses = packet_losses()
        others = [p for k, p in enumerate(self.ports) if k != victim]
        gc_before = [self.gc_full_pauses(p) for p in others]
        lag_before = [self.loop_lag(p) for p in others]
        self.redis_slowlog(reset=True)
        own_lag: list[float] = []  # this process's (the probes') worst lag each second

        async def lagging() -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                start = loop.time()
                await asyncio.sleep(0.01)
                late = (loop.time() - start - 0.01) * 1000
                keep_worst(own_lag, time.monotonic_ns() - killed_ns, late)

        redis_worst: list[float] = []  # Redis' slowest PING each second after the kill

        async def pinging() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.bench.redis_port)
            try:
                while not done.is_set():
                    start = time.monotonic_ns()
                    writer.write(b"PING\r\n")
                    await reader.readline()
                    keep_worst(redis_worst, start - killed_ns, (time.monotonic_ns() - start) / 1e6)
                    await asyncio.sleep(0.01)
            finally:
                writer.close()

        killed_ns = time.monotonic_ns() + 10**12  # set at the kill
        lag_watch = asyncio.gather(lagging(), pinging())
        with CpuMeter(survivors) as cpu:
            killed_ns = time.monotonic_ns()
            dead = self.gw_pids[victim]
            spares = set(children(self.gws[victim])) - {dead}
            os.kill(dead, signal.SIGKILL)  # its supervisor restarts it
            self.gw_pids[victim] = await wait_worker_async(
                self.ports[victim], self.gws[victim], dead
            )
            listening_s = (time.monotonic_ns() - killed_ns) / 1e9
            restarted_from = "spare" if self.gw_pids[victim] in spares else "cold"
            deadline = time.monotonic() + cap
            said = time.monotonic()
            seen_down = False
            timeline: list[int] = []  # users back at each whole second after the kill
            while True:  # until every user is ready again (the drops seen first)
                stats = await self.ask_all(op="stats")
                ready = sum(s["ready"] for s in stats)
                drops = sum(s["drops"] for s in stats)
                seen_down = seen_down or ready < self.n
                while (time.monotonic_ns() - killed_ns) / 1e9 >= len(timeline) + 1:
                    timeline.append(ready - (self.n - on_victim))
                if time.monotonic() - said > 5:
                    said = time.monotonic()
                    print(
                        f"storm ({method}): {ready}/{self.n} ready, {drops} dropped, "
                        f"{sum(s['busy'] for s in stats)} busy refusals",
                        file=sys.stderr,
                        flush=True,
                    )
                if (seen_down and ready >= self.n) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        done.set()
        probes = await prober
        await lag_watch
        await asyncio.sleep(0.5)  # the last probes reach their readers (counted: not a settle)
        all_back = ready >= self.n
        last_ns = max(s["last_ready_ns"] for s in stats)
        seconds = (
            (last_ns - killed_ns) / 1e9 if all_back else (time.monotonic_ns() - killed_ns) / 1e9
        )
        back = ready - (self.n - on_victim)
        lat = [x / 1e6 for p in readers for x in p.latencies]
        worst: list[float] = []  # the others' worst delay of each second after the kill
        for p in readers:
            for sent, x in zip(p.sent, p.latencies, strict=True):
                keep_worst(worst, max(0, sent - killed_ns), x / 1e6)  # earlier: second 0
        expected = probes * len(readers)
        lost = packet_losses()
        return {
            "users_on_killed_gateway": on_victim,
            "method": method,
            "all_back": all_back,
            "seconds_until_all_ready": round(seconds, 2) if all_back else None,
            "back_after_s": None if all_back else round(seconds, 1),
            "back": back,
            "logins_per_s": round(back / seconds, 1) if seconds else None,
            "busy_refusals": sum(s["busy"] for s in stats),
            "restarted_gateway_listening_after_s": round(listening_s, 2),
            "restarted_from": restarted_from,
            "back_at_each_second": timeline,
            "listen_queue_overflows": listen_overflows() - overflows,
            "kernel_backlog_drops": lost["kernel_backlog_drops"] - losses["kernel_backlog_drops"],
            "tcp_resent_segments": lost["tcp_resent_segments"] - losses["tcp_resent_segments"],
            "others_latency_p50_ms": round(pct(lat, 0.5), 2),
            "others_latency_p99_ms": round(pct(lat, 0.99), 2),
            "others_latency_max_ms": round(max(lat), 2) if lat else None,
            "others_worst_ms_each_second": worst,
            "probe_process_lag_worst_ms_each_second": own_lag,
            "redis_ping_worst_ms_each_second": redis_worst,
            "redis_slowlog": self.redis_slowlog(),
            "other_gateways_loop_lag_ticks": [
                {
                    k: after.get(k, 0) - before.get(k, 0)
                    for k in ("over_0.1s", "over_0.25s", "over_0.5s", "over_1.0s")
                }
                for before, after in zip(
                    lag_before, [self.loop_lag(p) for p in others], strict=True
                )
            ],
            "probe_messages": probes,
            "probe_lost": max(0, expected - len(lat)),
            "cpu_other_gateways": [v for k, v in cpu.cores.items() if "gateway" in k],
            "restarted_gateway_full_gc": "{1} in {0:.2f} s".format(
                *self.gc_full_pauses(self.ports[victim])
            ),
            "other_gateways_full_gc": [
                f"{after[1] - before[1]} in {after[0] - before[0]:.2f} s"
                for before, after in zip(
                    gc_before, [self.gc_full_pauses(p) for p in others], strict=True
                )
            ],
            "cpu_redis": cpu.cores.get("cpu_redis"),
            "cpu_loadgen": round(sum(v for k, v in cpu.cores.items() if "loadgen" in k), 2),
        }

    # -- all three -------------------------------------------------------------------------

    async def run(self, only: set[str]) -> None:
        try:
            await self.start()
            await self.login_all()
            if self.doors:  # the doors' row: the busy rate only
                await self.broadcast(10, 0)
                return
            if "broadcast" in only:
                seq = await self.broadcast(1, 0)
                await self.broadcast(10, seq)
            if "storm" in only:
                await self.storm()
        finally:
            await self.stop()

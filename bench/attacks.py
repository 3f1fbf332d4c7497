"""Replay the attacks of "Attacked before launch" against two real gateways on one Redis.

    python3 bench/attacks.py              # the full run (a few minutes), table on stdout
    python3 bench/attacks.py --smoke      # seconds: small numbers, keeps the script working
    python3 bench/attacks.py --only hitrun,guess --json rows.json

It starts its own redis-server and two gateways (`server.py`) on free loopback ports and
stops them at the end. A separate probe process, logged in on gateway A, does a `/help`
round trip every ~50 ms; each row gives the slowest one during the attack. After each
attack every attack connection is closed and, `--settle` seconds later (10 s; 1 s with
--smoke), the harness compares who Redis (`chat:gw:*:online`) and `/who #general` think
is online with the logged-in connections it still holds: anything more is a ghost.

Figures, not verdicts: nothing here asserts a time. The issue's targets are gateway RSS
within 10% of its baseline, no ghost session, no stall over 200 ms for other users, and
Redis memory bounded by stated settings; the table shows where each attack stands.

Every gateway setting keeps its default except LOOSENED (printed with the table).
Attackers use their own loopback addresses (127.<attack>.x.y; the half-logins use
127.0.0.2-.9, as in the issue); real users each get one address of 127.100.0.0/16, so the
per-address limits meet the attackers only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import Procs, rss_kb  # noqa: E402
from gateway.presence import HEARTBEAT  # noqa: E402
from scripts.procs import free_port  # noqa: E402
from store import keys  # noqa: E402

#: Settings the harness changes from their defaults, and why (printed with the table).
LOOSENED = {
    "CHAT_WEB_PORT": ("0", "no web door: two gateways would both want port 8080"),
    "CHAT_RATE": ("0", "the backlog storm stores its messages in seconds, not minutes"),
    "CHAT_COMPLAINT_MIN_AGE": (
        "0",
        "sybil accounts are seconds old: the per-address rule is what they meet, not the "
        "hour of account age",
    ),
}
PASSWORD = "attack-bench-pw"
#: Shortest probe window per attack: a few round trips even when the attack is quick.
MIN_WINDOW = 0.3
#: The last line of /help: the probe's round trip ends when it arrives.
HELP_END = re.compile(r"^\*\s+/quit\b")
READY = re.compile(r"^\* ready")

# -- the probe: its own process, so the harness's load never delays its clock ------------

_PROBE = r"""
import socket, sys, threading, time
port, nick, password, source = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.socket()
s.bind((source, 0))
s.connect(("127.0.0.1", port))
s.settimeout(30)
buf = b""
def line():
    global buf
    while b"\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("probe: connection closed")
        buf += chunk
    out, buf = buf.split(b"\n", 1)
    return out.decode(errors="replace").rstrip("\r")
s.sendall(f"{nick}\r\n{password}\r\n".encode())
while not line().startswith("* ready"):
    pass
lock = threading.Lock()
worst, count, started = 0.0, 0, None
def marks():
    global worst, count
    for cmd in sys.stdin:
        with lock:
            if started is not None:  # a round still waiting counts as long as it has waited
                worst = max(worst, time.monotonic() - started)
            print(f"{worst * 1000:.1f} {count}", flush=True)
            worst, count = 0.0, 0
threading.Thread(target=marks, daemon=True).start()
print("ready", flush=True)
while True:
    with lock:
        started = time.monotonic()
    s.sendall(b"/help\r\n")
    while not line().startswith("*   /quit"):
        pass
    with lock:
        worst, count = max(worst, time.monotonic() - started), count + 1
        started = None
    time.sleep(0.05)
"""


class Probe:
    """A logged-in user on another process doing `/help` round trips every ~50 ms."""

    def __init__(self, port: int, nick: str, source: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(port), nick, PASSWORD, source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the probe did not log in")

    def mark(self) -> tuple[float, int]:
        """The slowest round trip (ms) and the count since the last mark; starts anew."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("mark\n")
        self.proc.stdin.flush()
        worst, count = self.proc.stdout.readline().split()
        return float(worst), int(count)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- a line client ------------------------------------------------------------------------


class LoginRefused(Exception):
    pass


class Conn:
    """One line-protocol connection from a chosen loopback source address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str) -> Conn:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 20
        )
        return cls(reader, writer)

    async def line(self, timeout: float = 30.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise ConnectionError("closed")
        return raw.decode(errors="replace").rstrip("\r\n")

    async def until(self, pattern: re.Pattern[str], timeout: float = 30.0) -> list[str]:
        """Lines up to and including the first that matches `pattern`."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            lines.append(await self.line(max(0.01, deadline - time.monotonic())))
            if pattern.search(lines[-1]):
                return lines

    def send(self, *lines: str) -> None:
        self.writer.write("".join(f"{x}\r\n" for x in lines).encode())

    def abort(self) -> None:
        self.writer.transport.abort()


async def login(
    port: int, nick: str, source: str, password: str = PASSWORD
) -> tuple[Conn, list[str]]:
    """A logged-in connection and the lines before `* ready` (the backlog)."""
    c = await Conn.open(port, source)
    c.send(nick, password)
    lines = await c.until(re.compile(r"^(\* ready|! )"))
    if lines[-1].startswith("!"):
        c.abort()
        raise LoginRefused(lines[-1])
    return c, lines[:-1]


async def help_round(c: Conn) -> None:
    c.send("/help")
    await c.until(HELP_END)


# -- the harness --------------------------------------------------------------------------


@dataclass
class Row:
    n: int
    key: str
    attack: str
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    rss_peak_kb: int = 0  # sampled every 20 ms during the attack
    rss_settled_kb: int = 0
    probe_worst_ms: float = 0.0
    probe_rounds: int = 0
    ghosts: int = 0  # at `settled_s` (the settle time, or past a heartbeat if any at 1 s)
    ghosts_1s: int = 0
    settled_s: float = 0.0
    missing: int = 0
    who_online: int = 0
    held_online: int = 0
    redis_before: int = 0
    redis_after: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rss_ratio"] = (
            round(self.rss_settled_kb / self.rss_before_kb, 3) if self.rss_before_kb else None
        )
        return d


class Sizes:
    def __init__(self, smoke: bool) -> None:
        s = smoke
        self.bystanders = 6 if s else 40
        self.hitrun = 16 if s else 120
        self.chat_attempts = 30 if s else 300
        self.sybils = 6 if s else 30
        self.half_per_address = 22 if s else 30
        self.real_logins = 4 if s else 20
        self.registrations = 24 if s else 120
        self.guessers = 6 if s else 30
        self.flood_connections = 10 if s else 40
        self.flood_seconds = 1.0 if s else 3.0
        self.storm_messages = 200 if s else 2000
        self.storm_users = 8 if s else 60
        self.bad_lines = 2000 if s else 10000


class Harness:
    def __init__(self, smoke: bool, workdir: Path, settle: float) -> None:
        self.smoke = smoke
        self.size = Sizes(smoke)
        self.settle = settle
        self.workdir = workdir
        self.procs = Procs(workdir)
        self.redis_port = free_port()
        self.rows: list[Row] = []
        self.held: dict[str, Conn] = {}  # logged-in connections kept all run: nick -> conn
        self._next_real = 0
        self.probe: Probe | None = None

    # -- processes ------------------------------------------------------------------------

    def start(self) -> None:
        redis_proc = self.procs.start_redis(self.redis_port)
        self.redis_pid = redis_proc.pid
        import redis

        self.redis = redis.Redis(port=self.redis_port, decode_responses=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.pop("REDIS_URL", None)
        env.update({k: v for k, (v, _) in LOOSENED.items()})
        env["PYTHONUNBUFFERED"] = "1"
        env["CHAT_IRC_PORT"] = "0"
        self.ports: list[int] = []
        self.gw: list[subprocess.Popen[bytes]] = []
        for _ in range(2):
            port = free_port()
            proc = self.procs.start(
                [
                    sys.executable,
                    str(ROOT / "server.py"),
                    "--port",
                    str(port),
                    "--redis-url",
                    f"redis://127.0.0.1:{self.redis_port}/0",
                ],
                port,
                f"gateway-{port}",
                env=env,
            )
            self.ports.append(port)
            self.gw.append(proc)

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.stop()
        self.procs.stop_all()

    @property
    def a(self) -> int:
        return self.ports[0]

    @property
    def b(self) -> int:
        return self.ports[1]

    def log_size(self, k: int = 0) -> int:
        return (self.workdir / f"gateway-{self.ports[k]}.log").stat().st_size

    def real_address(self) -> str:
        """A fresh address of 127.100.0.0/16 for one real user."""
        i = self._next_real
        self._next_real += 1
        return f"127.100.{i // 250}.{i % 250 + 1}"

    # -- what is online -------------------------------------------------------------------

    def redis_online(self) -> set[str]:
        online: set[str] = set()
        for key in self.redis.scan_iter("chat:{g}:gw:*:online"):
            online |= {str(x) for x in self.redis.smembers(key)}
        return online

    async def who_total(self) -> int:
        c = self.held["watcher"]
        c.send("/who #general")
        line = (await c.until(re.compile(r"^(\* online in|! )")))[-1]
        m = re.search(r"\((\d+)\)", line)
        return int(m.group(1)) if m else -1

    async def sample_peak(self, row: Row) -> None:
        """The attacked gateway's highest RSS, every 20 ms while the attack runs."""
        while True:
            row.rss_peak_kb = max(row.rss_peak_kb, rss_kb(self.gw[0].pid))
            await asyncio.sleep(0.02)

    async def ghosts(self, row: Row) -> int:
        """Users Redis or /who count as online beyond the logged-in connections held."""
        online = self.redis_online()
        held = set(self.held)
        row.held_online = len(held)
        row.missing = len(held - online)
        row.who_online = await self.who_total()
        if online - held:
            row.figures["ghost_names"] = sorted(online - held)[:5]
        return max(len(online - held), row.who_online - len(held))

    # -- set-up ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """The users who are there all along, then a warm-up of ordinary commands."""
        self.probe = Probe(self.a, "probe", self.real_address())
        self.held["probe"] = None  # type: ignore[assignment]  # held by the probe process
        c, _ = await login(self.b, "watcher", self.real_address())
        self.held["watcher"] = c
        nicks = [f"user{i}" for i in range(self.size.bystanders)]
        conns = await asyncio.gather(
            *(login(self.ports[i % 2], n, self.real_address()) for i, n in enumerate(nicks))
        )
        for n, (conn, _) in zip(nicks, conns, strict=True):
            self.held[n] = conn
        w = self.held["watcher"]
        for cmd in ("/get_chats", "/who", "/history 5", "/chats warmup", "/leave #warmup"):
            w.send(cmd)
            await help_round(w)
        for i, n in enumerate(nicks[:4]):
            self.held[n].send(f"hello from {n} {i}")
        await asyncio.sleep(2.0)

    # -- one attack -----------------------------------------------------------------------

    async def run_attack(
        self, n: int, key: str, title: str, attack: Callable[[Row], Awaitable[None]]
    ) -> None:
        row = Row(n, key, title)
        assert self.probe is not None
        self.probe.mark()
        row.rss_before_kb = rss_kb(self.gw[0].pid)
        row.redis_before = int(self.redis.info("memory")["used_memory"])
        t = time.monotonic()
        sampler = asyncio.create_task(self.sample_peak(row))
        try:
            await attack(row)
        except Exception as exc:  # a row that says what broke, and the run goes on
            row.figures["error"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            sampler.cancel()
        row.figures["seconds"] = round(time.monotonic() - t, 1)
        await asyncio.sleep(max(0.0, t + MIN_WINDOW - time.monotonic()))
        row.rss_after_kb = rss_kb(self.gw[0].pid)
        row.probe_worst_ms, row.probe_rounds = self.probe.mark()
        ended = time.monotonic()
        await asyncio.sleep(min(1.0, self.settle))
        row.ghosts_1s = await self.ghosts(row)
        # a ghost must outlive the presence heartbeat, which rewrites each gateway's set
        wait = max(self.settle, HEARTBEAT + 1.0 if row.ghosts_1s else 0.0)
        await asyncio.sleep(max(0.0, ended + wait - time.monotonic()))
        row.settled_s = round(time.monotonic() - ended, 1)
        row.rss_settled_kb = rss_kb(self.gw[0].pid)
        row.redis_after = int(self.redis.info("memory")["used_memory"])
        row.ghosts = await self.ghosts(row)
        self.rows.append(row)
        print(json.dumps(row.as_dict()), flush=True)

    # -- 1. hit-and-run registrations ------------------------------------------------------

    async def hitrun(self, row: Row) -> None:
        n = self.size.hitrun

        async def one(i: int) -> None:
            c = await Conn.open(self.a, f"127.1.{i // 20}.{i % 20 + 1}")
            c.send(f"hitrun{i}", PASSWORD)
            # closed at once, or up to 0.4 s later: some land while the hash runs, some
            # while the account is being written
            await asyncio.sleep((i % 9) * 0.05)
            c.abort()

        await asyncio.gather(*(one(i) for i in range(n)))
        await asyncio.sleep(1.0 + n * 0.1 / 2)  # the hashes that were started finish
        registered = [i for i in range(n) if self.redis.exists(keys.user(f"hitrun{i}"))]
        row.figures["hit_and_runs"] = n
        row.figures["accounts_created"] = len(registered)
        if not registered:
            row.figures["pm_in_first_login_backlog"] = "n/a (no account was created)"
            return
        target = f"hitrun{registered[0]}"
        w = self.held["watcher"]
        w.send(f"/send {target} hello {target}, sent while you were away")
        reply = (await w.until(re.compile(rf"(@{target} <watcher>|^! )")))[-1]
        if reply.startswith("!"):
            row.figures["pm_in_first_login_backlog"] = f"send refused: {reply}"
            return
        conn, backlog = await login(self.b, target, self.real_address())
        conn.abort()
        row.figures["pm_in_first_login_backlog"] = (
            "yes" if any("sent while you were away" in x for x in backlog) else "NO"
        )

    # -- 2. chat flood ------------------------------------------------------------------------

    async def chatflood(self, row: Row) -> None:
        c, _ = await login(self.a, "flooder2", self.real_address())
        attempts = self.size.chat_attempts
        created = refused = 0
        worst_get = 0.0
        reply_bytes = 0
        w = self.held["watcher"]
        for i in range(attempts):
            c.send(f"/chats flood{i}")
            line = (await c.until(re.compile(r"^(\* joined|\* you are in|! )")))[-1]
            if line.startswith("* joined"):
                created += 1
            else:
                refused += 1
            if i % 10 == 0:
                t = time.monotonic()
                w.send("/get_chats")
                got = (await w.until(re.compile(r"^(\* chats:|! )")))[-1]
                worst_get = max(worst_get, time.monotonic() - t)
                reply_bytes = max(reply_bytes, len(got.encode()))
        c.abort()
        row.figures.update(
            attempts=attempts,
            chats_created=created,
            refused=refused,
            get_chats_worst_ms=round(worst_get * 1000, 1),
            get_chats_reply_bytes=reply_bytes,
            users_online=len(self.held),
        )

    # -- 3. sybil complaints ----------------------------------------------------------------

    async def sybil(self, row: Row) -> None:
        victim, _ = await login(self.b, "victim3", self.real_address())
        self.held["victim3"] = victim
        registered = counted = 0
        replies: dict[str, int] = {}
        for i in range(self.size.sybils):
            try:
                c, _ = await login(self.a, f"sybil{i}", "127.3.0.1")
            except LoginRefused as exc:
                replies[str(exc)[:60]] = replies.get(str(exc)[:60], 0) + 1
                continue
            registered += 1
            c.send("/ban victim3")
            line = (await c.until(re.compile(r"^(\* complaint|! )")))[-1]
            m = re.search(r"\((\d+)/\d+\)", line)
            if m:
                counted = max(counted, int(m.group(1)))
            kind = re.sub(r"\d+", "N", line)[:70]
            replies[kind] = replies.get(kind, 0) + 1
            c.abort()
        row.figures.update(
            sybil_attempts=self.size.sybils,
            sybils_registered=registered,
            complaints_counted=counted,
            victim_banned="yes" if self.redis.exists(keys.ban("victim3")) else "no",
            replies=replies,
        )

    # -- 4. idle half-logins --------------------------------------------------------------

    async def halflogins(self, row: Row) -> None:
        per = self.size.half_per_address
        idle: list[Conn] = []
        admitted = refused = 0
        for k in range(2, 10):
            for _ in range(per):
                c = await Conn.open(self.a, f"127.0.0.{k}")
                idle.append(c)
        for c in idle:
            try:
                first = await c.line(10)
            except (ConnectionError, TimeoutError):
                first = ""
            if "nickname" in first:
                admitted += 1
            else:
                refused += 1

        async def real(i: int) -> float:
            t = time.monotonic()
            conn, _ = await login(self.a, f"real4_{i}", self.real_address())
            took = time.monotonic() - t
            conn.abort()
            return took

        results = await asyncio.gather(
            *(real(i) for i in range(self.size.real_logins)), return_exceptions=True
        )
        ok = [r for r in results if isinstance(r, float)]
        for c in idle:
            c.abort()
        row.figures.update(
            half_logins_tried=len(idle),
            half_logins_held=admitted,
            half_logins_refused=refused,
            real_logins_in=f"{len(ok)}/{len(results)}",
            real_login_worst_ms=round(max(ok) * 1000) if ok else None,
        )

    # -- 5. concurrent registrations, then all closed ---------------------------------------

    async def regstorm(self, row: Row) -> None:
        owner, _ = await login(self.b, "real5", self.real_address())
        owner.abort()
        await asyncio.sleep(0.3)
        m = self.size.registrations
        conns = await asyncio.gather(
            *(Conn.open(self.a, f"127.5.0.{i // 20 + 1}") for i in range(m))
        )
        for i, c in enumerate(conns):
            c.send(f"mass{i}", PASSWORD)
        await asyncio.sleep(0.1)  # the hasher's queue is full of them
        busy = 0
        for c in conns:  # what arrived so far, hardly waiting
            try:
                busy += (await asyncio.wait_for(c.reader.read(65536), 0.005)).count(
                    b"! server busy"
                )
            except TimeoutError:
                pass
            c.abort()
        t = time.monotonic()
        conn, _ = await login(self.a, "real5", self.real_address())
        took = time.monotonic() - t
        conn.abort()
        await asyncio.sleep(1.0)
        created = sum(1 for i in range(m) if self.redis.exists(keys.user(f"mass{i}")))
        row.figures.update(
            registrations=m,
            busy_seen_before_close=busy,
            accounts_created=created,
            real_login_after_ms=round(took * 1000),
        )

    # -- 6. parallel password guessing --------------------------------------------------------

    async def guessing(self, row: Row) -> None:
        owner, _ = await login(self.b, "owner6", self.real_address())
        owner.abort()
        await asyncio.sleep(0.3)
        counts = {"wrong": 0, "locked": 0, "busy": 0, "other": 0}

        async def guesser(i: int) -> None:
            c = await Conn.open(self.a, f"127.6.0.{i % 8 + 1}")
            c.send("owner6", *(f"guess-{i}-{k}" for k in range(3)))
            try:
                while True:
                    line = await c.line(30)
                    if line.startswith("! wrong password"):
                        counts["wrong"] += 1
                    elif "too many" in line and "fail" in line:
                        counts["locked"] += 1
                    elif "server busy" in line:
                        counts["busy"] += 1
                    elif line.startswith("! "):
                        counts["other"] += 1
            except (ConnectionError, TimeoutError):
                pass
            c.abort()

        await asyncio.gather(*(guesser(i) for i in range(self.size.guessers)))
        try:
            conn, _ = await login(self.b, "owner6", self.real_address())
            conn.abort()
            owner_in = "yes"
        except LoginRefused as exc:
            owner_in = f"NO ({exc})"
        row.figures.update(
            guesses_sent=self.size.guessers * 3,
            guesses_evaluated=counts["wrong"],
            refused_locked=counts["locked"],
            refused_busy=counts["busy"],
            owner_can_log_in=owner_in,
        )

    # -- 7. pre-login floods ----------------------------------------------------------------

    async def flood(self, row: Row, unit: bytes) -> None:
        n = self.size.flood_connections
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _FLOODER,
            str(self.a),
            str(n),
            unit.hex(),
            str(self.size.flood_seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
        sent, conns = (int(x) for x in out.split())
        row.figures.update(
            connections=conns,
            flood_s=self.size.flood_seconds,
            mib_sent=round(sent / (1 << 20), 1),
        )

    # -- 8. returning users' backlog storm ----------------------------------------------------

    async def storm(self, row: Row) -> None:
        users = [f"storm{i}" for i in range(self.size.storm_users)]
        addresses = {u: self.real_address() for u in users}

        async def join(u: str) -> None:
            c, _ = await login(self.a, u, addresses[u])
            c.send("/chats storm")
            await c.until(re.compile(r"^(\* joined|\* you are in)"))
            c.abort()

        await asyncio.gather(*(join(u) for u in users))
        poster, _ = await login(self.b, "poster8", self.real_address())
        poster.send("/chats storm")
        await poster.until(re.compile(r"^\* joined"))
        total = self.size.storm_messages
        for start in range(0, total, 100):
            poster.send(*(f"storm message {k} " + "x" * 80 for k in range(start, start + 100)))
            await poster.until(re.compile(rf"<poster8> storm message {start + 99} "))
        poster.abort()
        await asyncio.sleep(1.5)  # cursors of the joiners are flushed
        if self.probe is not None:
            self.probe.mark()  # the stall of the logins, not of the set-up
        before = rss_kb(self.gw[0].pid)
        row.rss_before_kb = before  # the logins are the attack; the set-up is not
        row.rss_peak_kb = before
        t = time.monotonic()
        logged = await asyncio.gather(*(login(self.a, u, addresses[u]) for u in users))
        took = time.monotonic() - t
        during = max(rss_kb(self.gw[0].pid), row.rss_peak_kb)
        lines = [len(b) for _, b in logged]
        for c, _ in logged:
            c.abort()
        row.figures.update(
            stored_messages=total,
            logins=len(users),
            backlog_lines_per_login=max(lines),
            all_logins_s=round(took, 2),
            peak_rss_kb_per_login=round((during - before) / len(users), 1),
        )

    # -- 9. look-alikes and bad input ---------------------------------------------------------

    async def badinput(self, row: Row) -> None:
        looks = ["prоbe", "wаtcher", "ρrobe", "user0\u200b"]  # Cyrillic o, a; Greek rho; ZWSP
        accepted = []
        for k, nick in enumerate(looks):
            c = await Conn.open(self.a, f"127.9.0.{k + 1}")
            await c.line()
            c.send(nick)
            reply = await c.line()
            if "New nickname" in reply or "Password for" in reply:
                accepted.append(nick)
            c.abort()
        c, _ = await login(self.a, "noisy9", self.real_address())
        bad = [
            "/history ²",
            "/history -1",
            "/history 99999999999999999999",
            "/history ٣",
            "/history x",
            "/nosuch",
            "/send",
            "/leave",
        ]
        n = self.size.bad_lines
        log_before = self.log_size(0)
        replies = 0
        for start in range(0, n, 500):
            c.send(*(bad[k % len(bad)] for k in range(start, min(n, start + 500))))
            c.send("/help")
            replies += sum(1 for x in await c.until(HELP_END) if x.startswith("! "))
        await asyncio.sleep(0.5)
        grown = self.log_size(0) - log_before
        c.abort()
        row.figures.update(
            look_alikes_tried=len(looks),
            look_alikes_accepted=len(accepted),
            bad_lines=n,
            error_replies=replies,
            log_bytes_per_10k_lines=round(grown * 10000 / n),
        )

    # -- all --------------------------------------------------------------------------------

    def attacks(self) -> list[tuple[str, str, Callable[[Row], Awaitable[None]]]]:
        return [
            ("hitrun", "hit-and-run registrations", self.hitrun),
            ("chatflood", "chat flood + /get_chats", self.chatflood),
            ("sybil", "sybil complaints, one address", self.sybil),
            ("halflogin", "idle half-logins from 127.0.0.2-.9", self.halflogins),
            ("regstorm", "concurrent registrations, closed", self.regstorm),
            ("guess", "parallel password guessing", self.guessing),
            ("emptyflood", "pre-login flood: empty lines", lambda r: self.flood(r, b"\r\n")),
            ("iacflood", "pre-login flood: telnet IAC NOP", lambda r: self.flood(r, b"\xff\xf1")),
            ("storm", "returning users' backlog storm", self.storm),
            ("badinput", "look-alike nicks, /history ² input", self.badinput),
        ]

    async def run(self, only: set[str] | None) -> None:
        self.start()
        await self.setup()
        for n, (key, title, attack) in enumerate(self.attacks(), 1):
            if only is None or key in only:
                await self.run_attack(n, key, title, attack)
        for c in self.held.values():
            if c is not None:
                c.abort()


_FLOODER = r"""
import selectors, socket, sys, time
port, count, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[4])
unit = bytes.fromhex(sys.argv[3])
chunk = unit * (32768 // len(unit))
sel = selectors.DefaultSelector()
opened = 0
for i in range(count):
    s = socket.socket()
    s.bind((f"127.7.0.{i // 10 + 1}", 0))  # 10 per address: under the pending-login bound
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        continue
    s.setblocking(False)
    sel.register(s, selectors.EVENT_WRITE)
    opened += 1
sent = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for key, _ in sel.select(0.1):
        try:
            sent += key.fileobj.send(chunk)
        except BlockingIOError:
            pass
        except OSError:
            sel.unregister(key.fileobj)
print(sent, opened)
"""


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def print_table(rows: list[Row], settle: float, command: str) -> None:
    print(f"\nattacks on gateway A (of two on one Redis); `{command}`")
    print(
        "settings: defaults except "
        + "; ".join(f"{k}={v} ({why})" for k, (v, why) in LOOSENED.items())
    )
    print(
        f"\n| # | attack | RSS before MB | right after MB (peak) | {settle:g} s after MB (ratio) "
        "| worst probe ms | ghosts | Redis used_memory MB before -> after | the attack's figures |"
        "\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for r in rows:
        ratio = r.rss_settled_kb / r.rss_before_kb if r.rss_before_kb else 0
        figures = ", ".join(f"{k}={v}" for k, v in r.figures.items())
        print(
            f"| {r.n} | {r.attack} | {mb(r.rss_before_kb)} "
            f"| {mb(r.rss_after_kb)} ({mb(r.rss_peak_kb)}) "
            f"| {mb(r.rss_settled_kb)} ({ratio:.2f}) | {r.probe_worst_ms:.0f} "
            f"| {r.ghosts} at {r.settled_s:g} s ({r.ghosts_1s} at 1 s; held {r.held_online}, "
            f"/who {r.who_online}, missing {r.missing}) "
            f"| {r.redis_before / 1e6:.1f} -> {r.redis_after / 1e6:.1f} | {figures} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, seconds")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--settle", type=float, help="seconds before the 'after' figures")
    parser.add_argument("--only", help="comma-separated attack keys (default: all)")
    args = parser.parse_args()
    settle = args.settle if args.settle is not None else (1.0 if args.smoke else 10.0)
    only = {x.strip() for x in args.only.split(",")} if args.only else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="chat-attacks-") as tmp:
        harness = Harness(args.smoke, Path(tmp), settle)
        try:
            asyncio.run(harness.run(only))
        finally:
            harness.stop()
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "settle": settle,
                    "loosened": {k: v for k, (v, _) in LOOSENED.items()},
                    "rows": [r.as_dict() for r in harness.rows],
                },
                indent=1,
            )
        )
    print_table(harness.rows, settle, "python3 bench/attacks.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

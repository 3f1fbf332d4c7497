"""One gateway's CPU per resume-token login and per leave, and how long a crowd takes to
come and to go.

A reconnect storm is logins (the restarted gateway's CPU per login bounds how fast its
users are back), and a crowd that drops at once (a proxy or a NAT in front of thousands of
clients dying) is leaves, during which the gateway's other users wait for its event loop.
`bench/run.py`'s crowd and storm rows measure these among three gateways and a load
generator on two cores; this measures one gateway's own cost, quickly enough to compare
two trees in a minute.

    python3 bench/logins.py [--users 16000] [--reps 3] [--tree PATH]

A Redis on a free port, the users seeded as bench/run.py's crowd seeds them (accounts in
`#general`, a resume token each), one gateway; then, per rep: every user logs in by token,
400 at a time (as the crowd's load generator does), and then every connection is closed in
the same moment. Prints, per rep: logins per second and the gateway's CPU per login; the
time from the closes until Redis shows none of them online (the presence every other
gateway reads) and the gateway's CPU per leave. `--tree`: another checkout's gateway (a
`git worktree` of the commit before a change), interleaved with this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as redis_py
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.crowd import Crowd  # noqa: E402
from bench.instructions import scratch_redis, tree_gateway  # noqa: E402
from bench.run import COMPARE_ENV  # noqa: E402
from bench.swarm import bench_token  # noqa: E402
from scripts.procs import free_port, stop_process, wait_port  # noqa: E402
from store import keys  # noqa: E402

PARALLEL = 400  # logins in flight, as the crowd's load generator
#: bench/run.py's: no limit that the bench's one address would hit
ENV = {**COMPARE_ENV, "CHAT_METRICS_PORT": "0"}


class _Seeder:
    """What `Crowd.seed` needs of a crowd: its users and its Redis."""

    def __init__(self, users: int, redis_port: int) -> None:
        self.n, self.seed_log_n, self.port = users, 10, redis_port

    def redis(self) -> redis_py.Redis:
        return redis_py.Redis(port=self.port)


class _User(asyncio.Protocol):
    """Sends `nick token` after the greeting; done at `* ready`."""

    def __init__(self, nick: str, ready: asyncio.Future[None]) -> None:
        self.nick, self.ready, self.seen = nick, ready, b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.ready.done():
            return
        first = not self.seen
        self.seen = (self.seen + data)[-4096:]
        if first and self.transport is not None:
            self.transport.write(f"{self.nick} {bench_token(self.nick)}\r\n".encode())
        if b"* ready" in self.seen:
            self.ready.set_result(None)
        elif b"! " in self.seen:
            self.ready.set_exception(RuntimeError(f"{self.nick}: {self.seen[-200:]!r}"))


def _idle_s() -> float:
    """The machine's idle CPU seconds so far (all cores)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rep(
    port: int, pid: int, users: int, r: redis_py.Redis, parallel: int, redis_pid: int
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    transports: list[asyncio.Transport] = []

    async def one(i: int) -> None:
        async with gate:
            ready: asyncio.Future[None] = loop.create_future()
            transport, _ = await loop.create_connection(
                lambda: _User(f"c{i}", ready), "127.0.0.1", port
            )
            transports.append(transport)
            await asyncio.wait_for(ready, 120)

    cpu, redis_cpu, own_cpu = _cpu_s(pid), _cpu_s(redis_pid), time.process_time()
    idle = _idle_s()
    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(users)))
    login_s = time.perf_counter() - began
    login_cpu = _cpu_s(pid) - cpu
    redis_cpu = _cpu_s(redis_pid) - redis_cpu
    own_cpu = time.process_time() - own_cpu
    idle = _idle_s() - idle
    await asyncio.sleep(2)  # the logins' last writes (presence) done
    online = [k for k in r.scan_iter(keys.gateway_online("*")) if not k.endswith(b":next")]
    if len(online) != 1 or r.scard(online[0]) != users:
        raise SystemExit(f"expected {users} users online in one set, found {online}")
    cpu = _cpu_s(pid)
    began = time.perf_counter()
    for t in transports:
        t.abort()  # a reset each: as a dead proxy's clients vanish
    while r.scard(online[0]):
        if time.perf_counter() - began > 120:
            raise SystemExit("the users were still online after 120 s")
        await asyncio.sleep(0.01)
    leave_s = time.perf_counter() - began
    await asyncio.sleep(1)  # the rest of the leaves' work, if any, counted too
    leave_cpu = _cpu_s(pid) - cpu
    return {
        "logins_per_s": users / login_s,
        "cpu_us_per_login": login_cpu / users * 1e6,
        "gateway_cores": login_cpu / login_s,
        "redis_cores": redis_cpu / login_s,
        "clients_cores": own_cpu / login_s,
        "idle_cores": idle / login_s,
        "offline_s": leave_s,
        "cpu_us_per_leave": leave_cpu / users * 1e6,
    }


def _run_tree(tree: Path, users: int, reps: int, parallel: int) -> list[dict[str, float]]:
    redis_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="chat-logins-") as workdir:
        redis = scratch_redis(redis_port, Path(workdir))
        gateway = None
        try:
            wait_port(redis_port)
            seeder = _Seeder(users, redis_port)
            Crowd.seed(seeder)  # type: ignore[arg-type]  # it reads only these
            gateway = tree_gateway(tree, port, redis_port, ENV)
            wait_port(port, gateway, timeout=60)
            r = seeder.redis()
            out = []
            for _ in range(reps):
                out.append(uvloop.run(_rep(port, gateway.pid, users, r, parallel, redis.pid)))
                time.sleep(1)
            return out
        finally:
            if gateway is not None:
                stop_process(gateway)
            stop_process(redis)


def _show(label: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    each = "; ".join(
        f"{r['logins_per_s']:,.0f}/s {r['cpu_us_per_login']:.0f} us/login (cores: gateway "
        f"{r['gateway_cores']:.2f}, Redis {r['redis_cores']:.2f}, clients "
        f"{r['clients_cores']:.2f}, idle {r['idle_cores']:.2f}), "
        f"offline {r['offline_s']:.2f} s {r['cpu_us_per_leave']:.0f} us/leave"
        for r in rows
    )
    print(f"{label}: {each}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=16_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tree", type=Path, help="another checkout's gateway to compare")
    parser.add_argument("--parallel", type=int, default=PARALLEL, help="logins in flight at once")
    args = parser.parse_args()
    trees = [("this", ROOT)] + ([("tree", args.tree.resolve())] if args.tree else [])
    rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for _ in range(args.reps if args.tree else 1):  # interleaved, one rep a side at a time
        for name, tree in trees:
            rows[name] += _run_tree(tree, args.users, 1 if args.tree else args.reps, args.parallel)
    print(f"{args.users} users, logins {args.parallel} at a time, then all closed at once:")
    meds = {name: _show(f"{name} ({tree})", rows[name]) for name, tree in trees}
    if args.tree:
        this, other = meds["this"], meds["tree"]
        print(
            "medians, this / tree: "
            + ", ".join(f"{k} {this[k] / other[k]:.2f}x" for k in this if other[k])
        )


if __name__ == "__main__":
    main()

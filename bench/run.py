"""Run every benchmark scenario against the gateway and against ngircd, in one run.

    python3 bench/run.py            # the full run (several minutes), table on stdout
    python3 bench/run.py --smoke    # seconds: small numbers, keeps the script working

It starts its own redis-server, gateways and ngircd on free loopback ports and stops them
all at the end. Every target is a ratio within this one run: the machine is shared.
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import CHAT, IRC, Result, close_all, connect_many, fanout, latency  # noqa: E402
from scripts.procs import free_port, wait_port  # noqa: E402


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds used so far by a process (this one if pid is None)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by each named process over a scenario, as cores busy (1.0 = one core)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.cores: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self.wall = time.perf_counter()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *_: object) -> None:
        wall = time.perf_counter() - self.wall
        self.cores = {
            f"cpu_{name}": round((cpu_seconds(pid) - self.start[name]) / wall, 2)
            for name, pid in self.pids.items()
        }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Procs:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], port: int, name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed by the process
        proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=ROOT)
        self.procs.append(proc)
        wait_port(port, proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


class Bench:
    def __init__(self, smoke: bool, workdir: Path) -> None:
        self.smoke = smoke
        self.workdir = workdir
        self.procs = Procs(workdir)
        self.rows: list[dict[str, object]] = []
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"

    # -- processes -------------------------------------------------------------------------

    def start_redis(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server is not on PATH")
        self.redis_pid = self.procs.start(
            [
                exe,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            self.redis_port,
            "redis",
        ).pid

    def flush_redis(self) -> None:
        with socket.create_connection(("127.0.0.1", self.redis_port)) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(100)

    def gateway(self, *extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        proc = self.procs.start(
            [
                sys.executable,
                str(ROOT / "server.py"),
                "--port",
                str(port),
                "--redis-url",
                self.redis_url,
                "--rate",
                "0",
                "--max-per-ip",
                "0",
                "--max-pending-logins",
                "0",
                "--log-level",
                "WARNING",
                *extra,
            ],
            port,
            f"gateway-{port}",
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

    async def fanout_one(
        self, dialect_name: str, ports: list[int], members: int, senders: int, messages: int
    ) -> Result:
        dialect = CHAT if dialect_name == "chat" else IRC
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
        await asyncio.sleep(0.5)
        result = await fanout(sending, peers, chat, messages)
        close_all(peers)
        await asyncio.sleep(0.5)
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
        await asyncio.sleep(0.5)
        sender = peers[-1]  # not a sampled reader
        pids: dict[str, int | None] = {"server": server_pid, "loadgen": None}
        if dialect is CHAT:
            pids["redis"] = self.redis_pid
        with CpuMeter(pids) as cpu:
            result = await latency(sender, peers, chat, rate, seconds)
        result.extra.update(cpu.cores)
        close_all(peers)
        await asyncio.sleep(0.5)
        return result

    async def run(self) -> None:
        small = self.smoke
        members, senders, messages = (20, 4, 50) if small else (200, 20, 500)
        self.start_redis()
        g1, g1proc = self.gateway("--scrypt-log-n", "10")
        g2, g2proc = self.gateway("--scrypt-log-n", "10")
        irc = self.ngircd()

        # 1. fan-out, one gateway, and the reference
        if irc:
            r = await self.fanout_one("irc", [irc[0]], members, senders, messages)
            self.row("fanout 1 server", "ngircd", r)
            irc_fanout = r.rate
        self.flush_redis()
        r = await self.fanout_one("chat", [g1], members, senders, messages)
        self.row(
            "fanout 1 server",
            "gateway",
            r,
            vs_ngircd=round(r.rate / irc_fanout, 2) if irc else None,
        )
        one_gw = r.rate

        # 2. the same over two gateways on one Redis
        self.flush_redis()
        r = await self.fanout_one("chat", [g1, g2], members, senders, messages)
        self.row("fanout 2 gateways", "gateway", r, vs_1_gateway=round(r.rate / one_gw, 2))

        # 3. latency at 1,000 messages/s into a 200-member chat
        rate, secs = (200, 1.0) if small else (1000, 5.0)
        irc_p99 = None
        if irc:
            r = await self.latency_one("irc", irc[0], members, rate, secs, irc[1].pid)
            self.row("latency 1000/s", "ngircd", r)
            irc_p99 = r.extra["p99_ms"]
        self.flush_redis()
        r = await self.latency_one("chat", g1, members, rate, secs, g1proc.pid)
        self.row(
            "latency 1000/s",
            "gateway",
            r,
            p99_vs_ngircd=round(r.extra["p99_ms"] / irc_p99, 2) if irc_p99 else None,
        )

        # 3b. the same rate into a 20-member chat: what latency is without the fan-out's CPU
        small_members = 20
        irc_p99 = None
        if irc:
            r = await self.latency_one("irc", irc[0], small_members, rate, secs, irc[1].pid)
            self.row("latency 1000/s, 20 members", "ngircd", r)
            irc_p99 = r.extra["p99_ms"]
        self.flush_redis()
        r = await self.latency_one("chat", g1, small_members, rate, secs, g1proc.pid)
        self.row(
            "latency 1000/s, 20 members",
            "gateway",
            r,
            p99_vs_ngircd=round(r.extra["p99_ms"] / irc_p99, 2) if irc_p99 else None,
        )

        # 4. ingest: messages accepted per second into one chat
        self.flush_redis()
        n_senders, per = (2, 200) if small else (10, 5000)
        peers = await connect_many(
            "127.0.0.1", g1, CHAT, n_senders + 1, prefix="in", chat="general"
        )
        observer = peers[-1]
        with CpuMeter({"gateway": g1proc.pid, "redis": self.redis_pid, "loadgen": None}) as cpu:
            r = await fanout(peers[:-1], [observer], "general", per)
        r = Result(n_senders * per, observer.count, r.seconds, cpu.cores)
        self.row("ingest", "gateway", r, accepted_per_s=round(r.rate))
        close_all(peers)
        await asyncio.sleep(0.5)

        # 4b. ingest through two gateways (half the senders on each), one chat
        self.flush_redis()
        half = n_senders // 2
        peers = await connect_many("127.0.0.1", g1, CHAT, half + 1, prefix="ia", chat="general")
        peers += await connect_many("127.0.0.1", g2, CHAT, half, prefix="ib", chat="general")
        observer = peers[half]
        senders_ = peers[:half] + peers[half + 1 :]
        pids = {
            "gateway1": g1proc.pid,
            "gateway2": g2proc.pid,
            "redis": self.redis_pid,
            "loadgen": None,
        }
        with CpuMeter(pids) as cpu:
            r = await fanout(senders_, [observer], "general", per)
        r = Result(len(senders_) * per, observer.count, r.seconds, cpu.cores)
        self.row("ingest 2 gateways", "gateway", r, accepted_per_s=round(r.rate))
        close_all(peers)
        await asyncio.sleep(0.5)

        # 5. idle memory: logged-in idle connections on a fresh gateway
        self.flush_redis()
        n_idle = 300 if small else 10_000
        g3, g3proc = self.gateway("--scrypt-log-n", "4")
        await asyncio.sleep(1)
        before = rss_kb(g3proc.pid)
        peers = await connect_many(
            "127.0.0.1", g3, CHAT, n_idle, prefix="idle", chat="general", parallel=500
        )
        await asyncio.sleep(2)
        after = rss_kb(g3proc.pid)
        per_conn = (after - before) * 1024 / n_idle
        self.row(
            "idle memory",
            "gateway",
            None,
            connections=n_idle,
            rss_before_kb=before,
            rss_after_kb=after,
            bytes_per_connection=round(per_conn),
        )
        close_all(peers)
        self.procs.stop(g3proc)

        # 6. login burst at the default password cost
        self.flush_redis()
        n_login = 50 if small else 1000
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny numbers, seconds")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as tmp:
        bench = Bench(args.smoke, Path(tmp))
        try:
            asyncio.run(bench.run())
        finally:
            bench.procs.stop_all()
    if args.json:
        Path(args.json).write_text(json.dumps(bench.rows, indent=1))
    print_table(bench.rows)
    return 0


def print_table(rows: list[dict[str, object]]) -> None:
    print("\n| scenario | server | result |\n| --- | --- | --- |")
    for row in rows:
        rest = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("scenario", "server") and v is not None
        )
        print(f"| {row['scenario']} | {row['server']} | {rest} |")


if __name__ == "__main__":
    sys.exit(main())

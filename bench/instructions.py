"""The gateway's user-space instructions per fan-out delivery, door by door (callgrind).

Seconds on this shared two-core machine spread 10-50 % between runs of the same code;
instructions counted by callgrind spread 5-10 % (only the batching depends on timing),
so a change of a door's fan-out path of 10 % shows here and not in `bench/run.py`. The
kernel's side (the bytes each send copies) is not counted.

    python3 bench/instructions.py [--doors line,irc] [--messages 200] [--tree PATH]
    python3 bench/instructions.py --doors ingest --messages 1000 [--tree PATH]

For each door: a Redis on a free port, a gateway under valgrind (`--tool=callgrind`),
200 members logged in, the counters zeroed (`callgrind_control -z`), 20 senders x
`--messages` messages fanned out to all, the counters dumped (`-d`); prints the dump's
instructions divided by the deliveries. About 90 s a door. `--tree`: another checkout's
gateway (e.g. a `git worktree` of the commit before a change). `ingest`: bench/run.py's
ingest row instead, 10 senders x `--messages` into `#general` and one reader; prints
instructions per accepted message (the batching settles in one of a few modes, a few %
apart: run each side twice).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import CHAT, IRC_PASS, close_all, connect_many, fanout  # noqa: E402
from scripts.procs import free_port, stop_process, wait_port  # noqa: E402
from scripts.redisserver import redis_server_argv  # noqa: E402

MEMBERS, SENDERS = 200, 20
INGEST_SENDERS = 10
ENV = {  # as bench/run.py's COMPARE_ENV: no limits that a bench's one address would hit
    "CHAT_RATE": "0",
    "CHAT_MAX_PER_IP": "0",
    "CHAT_MAX_PENDING_LOGINS": "0",
    "CHAT_MAX_REGISTRATIONS": "0",
    "CHAT_MAX_PENDING_PER_IP": "0",
    "CHAT_MAX_PENDING_HASHES": "100000",
    "CHAT_SCRYPT_LOG_N": "4",  # the logins are not what is counted
    "CHAT_LOGIN_TIMEOUT": "600",  # logins under valgrind are slow
    "CHAT_LOG_LEVEL": "WARNING",
    "CHAT_WEB_PORT": "0",
}


async def _drive(door: str, port: int, pid: int, messages: int) -> int:
    """Deliveries made (fan-out), or messages accepted (`ingest`: bench/run.py's ingest
    row, INGEST_SENDERS senders into a chat that one observer reads)."""
    dialect = IRC_PASS if door == "irc" else CHAT
    chat = "bench" if door == "irc" else "general"
    n = INGEST_SENDERS + 1 if door == "ingest" else MEMBERS
    peers = await connect_many("127.0.0.1", port, dialect, n, prefix="i", chat=chat)
    senders, readers = (peers[:-1], peers[-1:]) if door == "ingest" else (peers[:SENDERS], peers)
    await asyncio.sleep(3.0)  # the last logins' work done
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    result = await fanout(senders, readers, chat, messages, idle=60.0)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    close_all(peers)
    if result.lost:
        raise SystemExit(f"{door}: {result.lost} deliveries lost")
    return result.delivered


def scratch_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A redis-server on loopback `port` that keeps nothing on disk (`workdir`: where it
    would, not the caller's current directory)."""
    return subprocess.Popen(redis_server_argv(port, workdir), stdout=subprocess.DEVNULL)


def tree_gateway(
    tree: Path,
    port: int,
    redis_port: int,
    settings: dict[str, str],
    wrapper: Sequence[str] = (),
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """The gateway of checkout `tree` on `port`, on the Redis at `redis_port`, with
    `settings` as its environment's CHAT_ variables (this process's own left out), run
    under `wrapper` (e.g. valgrind) if given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(settings, PYTHONPATH=str(tree))
    argv = [*wrapper, sys.executable, str(tree / "server.py"), "--port", str(port)]
    argv += ["--redis-url", f"redis://127.0.0.1:{redis_port}"]
    return subprocess.Popen(argv, cwd=tree, env=env, **popen)


def count(door: str, tree: Path, messages: int) -> float:
    """Instructions per delivery of `door` ("line" or "irc"), or per accepted message
    ("ingest", on the line door), on the gateway of `tree`."""
    out = Path(tempfile.mkdtemp(prefix="callgrind-"))
    redis_port, port, irc_port = free_port(), free_port(), free_port()
    redis = scratch_redis(redis_port, out)
    gateway = None
    try:
        wait_port(redis_port)
        gateway = tree_gateway(
            tree,
            port,
            redis_port,
            {**ENV, "CHAT_IRC_PORT": str(irc_port if door == "irc" else 0)},
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        door_port = irc_port if door == "irc" else port
        wait_port(door_port, gateway, timeout=120.0)
        delivered = uvloop.run(_drive(door, door_port, gateway.pid, messages))
        dumps = sorted(out.glob("cg.*.1"))
        if not dumps:
            raise SystemExit(f"{door}: callgrind wrote no dump in {out}")
        found = re.search(r"^summary: (\d+)", dumps[0].read_text(), re.M)
        assert found is not None
        return int(found.group(1)) / delivered
    finally:
        if gateway is not None:
            gateway.kill()  # valgrind may not stop on SIGTERM promptly; the dump is taken
            gateway.wait()
        stop_process(redis)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--doors",
        default="line,irc",
        help="comma-separated: line, irc (fan-out), ingest (10 senders, one reader)",
    )
    parser.add_argument("--messages", type=int, default=200, help="per sender")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the gateway's source tree")
    args = parser.parse_args()
    for door in args.doors.split(","):
        per = count(door, args.tree.resolve(), args.messages)
        what = "accepted message" if door == "ingest" else "delivery"
        print(f"{door}: {per:.0f} instructions per {what} ({args.tree})", flush=True)


if __name__ == "__main__":
    main()

"""The command line of a redis-server that this project starts itself, shared by the cluster
script, the benchmarks and the tests: each such server is then equally safe (loopback only,
files in a directory of its own, no snapshots), and a missing redis-server is reported with
one message."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

__all__ = ["HOST", "MISSING", "redis_server_argv", "redis_server_exe"]

HOST = "127.0.0.1"
MISSING = "redis-server is not on PATH: apt-get install redis-server"


def redis_server_exe() -> str:
    """The redis-server executable; FileNotFoundError(MISSING) if there is none."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError(MISSING)
    return exe


def redis_server_argv(
    port: int,
    workdir: Path | str,
    *extra: str,
    appendfsync: Literal["always", "everysec"] | None = None,
    exe: str | None = None,
) -> list[str]:
    """redis-server on loopback `port` in the foreground, its files in `workdir` (which must
    exist), then `extra` options. It never snapshots (`--save ''`), and appends its writes to
    a file only when given `appendfsync`: nothing it holds is wanted after it stops, unless
    asked for. `exe`: the executable, if already found (else redis_server_exe())."""
    appendonly = ("yes", "--appendfsync", appendfsync) if appendfsync else ("no",)
    return [
        exe or redis_server_exe(),
        "--port", str(port),
        "--bind", HOST,
        "--dir", str(workdir),
        "--daemonize", "no",
        "--save", "",
        "--appendonly", *appendonly,
        *extra,
    ]  # fmt: skip

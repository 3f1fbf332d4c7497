"""`--redis-wait-replica` against a real master and replica (store/replicas.py): a master
with no replica is found so once, its posts stand and are no longer waited for; a replica
attached ends that; a replica attached but not answering still leaves posts unconfirmed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scripts.procs import free_port, stop_process, wait_port
from scripts.redisserver import redis_server_argv
from store import keys
from store.contract import PostStatus
from store.redis import RedisStore, open_store
from tests.store.test_store import POLICY, register

WAIT_MS = 300


@pytest.fixture
def redis_servers(redis_server: str, tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        work = tmp_path / str(port)
        work.mkdir()
        argv = redis_server_argv(
            port, work, "--repl-diskless-sync-delay", "0", *args, exe=redis_server
        )
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        wait_port(port, proc)
        return port, proc

    yield start
    for proc in started:  # SIGKILL: a master's SIGTERM waits up to 10 s for a paused replica
        proc.send_signal(signal.SIGCONT)
        stop_process(proc, signal.SIGKILL)


async def _post(s: RedisStore, text: str) -> tuple[PostStatus, float]:
    start = time.monotonic()
    (result,) = await s.post_chat("ann", "ANN", keys.GENERAL, "general", [text])
    return result.status, time.monotonic() - start


async def test_a_master_without_replica_is_not_waited_for_until_one_catches_up(
    redis_servers: Any,
) -> None:
    port, _ = redis_servers()
    s = await open_store(f"redis://127.0.0.1:{port}/0", replace(POLICY, wait_replica_ms=WAIT_MS))
    try:
        await register(s, "ann")
        status, took = await _post(s, "first")  # its WAIT times out: then no replica found
        assert status is PostStatus.OK and took >= WAIT_MS / 1000
        (((master, slots), since),) = s.unprotected_shards().items()
        assert (master, slots) == (f"127.0.0.1:{port}", "all") and since <= time.time()
        for n in range(5):  # not waited for any more
            status, took = await _post(s, f"n{n}")
            assert status is PostStatus.OK and took < WAIT_MS / 1000 / 2
        # a replica attached and caught up: protected again, posts waited for and confirmed
        _, replica = redis_servers("--replicaof", "127.0.0.1", str(port))
        for _ in range(100):
            if not s.unprotected_shards():
                break
            await asyncio.sleep(0.1)
        assert s.unprotected_shards() == {}
        status, took = await _post(s, "kept")
        assert status is PostStatus.OK and took < WAIT_MS / 1000
        # a replica that is there but does not answer: the sender is told, as before
        replica.send_signal(signal.SIGSTOP)
        status, took = await _post(s, "paused")
        assert status is PostStatus.UNCONFIRMED and took >= WAIT_MS / 1000
        assert s.unprotected_shards() == {}
    finally:
        await s.close()

"""Fixtures: a private redis-server for the session, gateways per test.

`backend` runs a test twice, on real Redis and on the embedded store. Tests that need
several gateways use `redis_only`. With CI=true, failing to start redis-server fails the
run instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401  # imported first: see below
import pytest

from tests.helpers import Client, Gateway, RedisProcess

# hypothesis is imported at the top on purpose: its pytest plugin otherwise imports it at
# the terminal summary, where pytest's assertion rewriting of it can hit CPython 3.11.7's
# "AST constructor recursion depth mismatch" bug (gh-106905) after the core tests ran.

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"))
    try:
        proc.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        if IN_CI:
            pytest.fail(f"cannot start redis-server in CI: {exc}")
        pytest.skip(f"redis-server unavailable: {exc}")
    yield proc
    proc.stop()


@pytest.fixture
def redis_url(redis_proc: RedisProcess) -> str:
    redis_proc.cli("FLUSHALL")
    return redis_proc.url


@pytest.fixture(params=["redis", "embedded"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The store URL for single-gateway tests: private Redis, or None (embedded)."""
    if request.param == "embedded":
        return None
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """A redis-server of the test's own, for tests that stop or restart it."""
    started: list[RedisProcess] = []

    def start(appendonly: bool = False) -> RedisProcess:
        proc = RedisProcess(tmp_path / f"redis{len(started)}", appendonly=appendonly)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[GatewayFactory]:
    started: list[Gateway] = []

    def start(redis_url: str | None, *args: str, **env: str) -> Gateway:
        gw = Gateway(redis_url, tmp_path, *args, **env).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.kill()


@pytest.fixture
async def clients() -> Iterator[Callable[[int], Client]]:  # type: ignore[misc]
    opened: list[Client] = []

    async def connect(port: int, source: str | None = None) -> Client:
        c = await Client.connect(port, source)
        opened.append(c)
        return c

    yield connect  # type: ignore[misc]
    for c in opened:
        await c.close()

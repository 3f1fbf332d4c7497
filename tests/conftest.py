"""Fixtures: a private redis-server for the session, gateways per test.

`backend` runs a test three times: on real Redis, on the embedded store, and on a Redis
Cluster (3 masters, 3 replicas, started once for the session). Tests that need
several gateways use `redis_url`. `two_users` and `two_gateways` start the usual scene:
alice and bob logged in on one gateway, or on two gateways sharing one Redis.

Without redis-server on PATH every test that needs it is skipped with one message (the
embedded-store tests still run); with CI=true the run fails at once instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import hypothesis  # noqa: F401  # imported first: see below
import pytest

from scripts.rediscluster import LocalRedisCluster
from scripts.redisserver import MISSING as REDIS_MISSING
from tests.helpers import Client, Gateway, RedisProcess

# hypothesis is imported at the top on purpose: its pytest plugin otherwise imports it at
# the terminal summary, where pytest's assertion rewriting of it can hit CPython 3.11.7's
# "AST constructor recursion depth mismatch" bug (gh-106905) after the core tests ran.

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: $XDG_DATA_HOME of this test run (see pytest_sessionstart), removed at its end.
_DATA_HOME = tempfile.mkdtemp(prefix="chat-test-data-")


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and shutil.which("redis-server") is None:
        pytest.exit(REDIS_MISSING, returncode=1)
    # Gateways a test starts without --redis-url and without --data keep their embedded
    # store's file under $XDG_DATA_HOME: a directory of this run, never the user's own.
    os.environ["XDG_DATA_HOME"] = _DATA_HOME


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_DATA_HOME, ignore_errors=True)


def require_redis_server() -> str:
    """The redis-server executable, or a skip: every test that needs one is skipped from
    this one line, so the summary shows one reason for all."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip(REDIS_MISSING)
    return exe


#: End-to-end tests (real processes and real time, on two workers sharing two cores) that
#: fail are run once more (pytest-rerunfailures); the summary names every rerun, so a
#: flaky test stays in sight. Unit, core, store and contract tests get no second run.
E2E_RERUNS = 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in item.path.parts or item.path.name.endswith("_smoke.py"):
            item.add_marker(pytest.mark.flaky(reruns=E2E_RERUNS))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.path.name == "test_bench_smoke.py":  # the benchmark starts its own
        require_redis_server()


@pytest.fixture(scope="session")
def redis_server() -> str:
    return require_redis_server()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for report in terminalreporter.stats.get("rerun", []):
        terminalreporter.write_line(f"RERUN (failed once, then run again) {report.nodeid}")
    skipped = terminalreporter.stats.get("skipped", [])
    missing = sum(REDIS_MISSING in str(report.longrepr) for report in skipped)
    if missing:
        terminalreporter.write_sep("!", f"{missing} tests skipped: {REDIS_MISSING}", yellow=True)


@pytest.fixture(scope="session")
def redis_proc(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisProcess]:
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


@pytest.fixture(params=["redis", "embedded", "cluster"])
def backend(request: pytest.FixtureRequest) -> str | None:
    """The store URL for single-gateway tests: private Redis, None (embedded), or the seed
    URL of the session's Redis Cluster."""
    if request.param == "embedded":
        return None
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["redis", "cluster"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The store URL for tests with several gateways (or the admin tool) on one store: the
    session's standalone Redis, or the seed URL of its Redis Cluster."""
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
def private_redis(redis_server: str, tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
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


Scene = Callable[..., Awaitable[tuple]]


@pytest.fixture
def two_users(backend: str | None, gateways: GatewayFactory, clients) -> Scene:
    """`await two_users(*gateway_args, **env)`: one gateway on `backend`, alice and bob
    logged in on it; returns (gateway, alice, bob)."""

    async def start(*args: str, **env: str) -> tuple[Gateway, Client, Client]:
        gw = gateways(backend, *args, **env)
        alice, bob = await clients(gw.port), await clients(gw.port)
        await alice.login("alice")
        await bob.login("bob")
        return gw, alice, bob

    return start


@pytest.fixture
def two_gateways(gateways: GatewayFactory, clients) -> Scene:
    """`await two_gateways(redis_url)`: two gateways on that Redis, alice logged in on the
    first and bob on the second; returns (gateway1, gateway2, alice, bob)."""

    async def start(redis_url: str) -> tuple[Gateway, Gateway, Client, Client]:
        g1, g2 = gateways(redis_url), gateways(redis_url)
        alice, bob = await clients(g1.port), await clients(g2.port)
        await alice.login("alice")
        await bob.login("bob")
        return g1, g2, alice, bob

    return start


# --- Redis Cluster (issue 10) ----------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRedisCluster]:
    """A local 3-master, 3-replica Redis Cluster for the session (about 3 s to start)."""
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except (OSError, RuntimeError) as exc:
        if IN_CI:
            pytest.fail(f"cannot start a Redis Cluster in CI: {exc}")
        pytest.skip(f"Redis Cluster unavailable: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """The seed URL (`redis://h:p,h:p,...`) of the session's cluster, emptied. A node that
    an earlier test killed (or paused) is started (resumed) first: it rejoins as a
    replica. Slots an earlier test moved stay where they are."""
    for node in redis_cluster.nodes:
        if node.paused:
            redis_cluster.kill(node, signal.SIGCONT)
        if not node.alive():
            redis_cluster.restart(node)
    redis_cluster.wait_stable(15.0)
    redis_cluster.flushall()
    return redis_cluster.seed_url

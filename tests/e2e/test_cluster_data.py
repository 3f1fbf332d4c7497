"""scripts/cluster.py --redis-cluster keeps its data between runs in --data-dir, as the
plain mode does, on the ports --redis-port gives (and refuses ports that cannot be)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from tests.e2e.test_first_day import Cluster
from tests.helpers import ROOT, Client, messages, wait_port


async def _up(cluster: Cluster) -> None:
    await asyncio.to_thread(cluster.wait_output, "gateways up", 60)
    await asyncio.to_thread(wait_port, cluster.ports[0], cluster.proc, 30)


async def _stop(cluster: Cluster) -> None:
    cluster.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(cluster.proc.wait, 60) == 0, cluster.output()
    cluster.close()


async def test_the_redis_cluster_is_kept_between_runs_on_its_ports(tmp_path) -> None:
    first = Cluster(tmp_path, 1, "--redis-cluster")
    port = first.redis_port
    try:
        await _up(first)
        out = first.output()
        nodes = ",".join(f"127.0.0.1:{port + i}" for i in range(6))
        assert f"redis: redis://{nodes} " in out, out  # the ports --redis-port gave
        alice = await Client.connect(first.ports[0])
        await alice.login("alice", "alice-pass")
        await alice.send("kept across runs")
        await alice.expect("kept across runs")  # stored; a clean stop writes it to disk
        await alice.close()
    finally:
        await _stop(first)

    again = Cluster(tmp_path, 1, "--redis-cluster", redis_port=port)
    try:
        await _up(again)
        assert "redis: bringing back the Redis Cluster kept in " in again.output()
        c = await Client.connect(again.ports[0])
        await c.expect("nickname")
        await c.send("alice")
        assert await c.line() == "* Password for alice:"  # the account is still there
        await c.send("alice-pass")
        await c.expect("^\\* ready")
        await c.send("/history 5")
        assert ("#general", "alice", "kept across runs") in messages(await c.lines())
        await c.close()
    finally:
        await _stop(again)

    # the kept cluster's ports, or another data dir: other ports are refused in one line
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cluster.py"), "--redis-cluster",
         "--redis-port", str(port + 100), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith(f"cluster: error: --redis-port {port + 100}: the Redis Cluster")
    assert f"give --redis-port {port}" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_redis_port_the_cluster_cannot_use_is_refused(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cluster.py"), "--redis-cluster",
         "--redis-port", "60000", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "give at most 55530" in done.stderr

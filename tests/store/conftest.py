"""A Redis Cluster for the store tests: 3 masters and 3 replicas, one for the session.

A minimal starter of its own (the shared `redis_cluster` fixture lives on another branch
and replaces this one at merge). Each node's cluster bus listens on port + 10000, so a
port is used only when both are free. With CI=true a cluster that cannot start fails the
run instead of skipping.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from scripts.procs import free_port, stop_process, wait_port
from tests.conftest import IN_CI, require_redis_server

NODES = 6
START_TIMEOUT = 30.0


def _bus_free(port: int) -> bool:
    if port + 10000 > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port + 10000))
        except OSError:
            return False
    return True


def _cluster_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports and _bus_free(port):
            ports.append(port)
    return ports


@dataclass
class StoreCluster:
    """Six cluster nodes on loopback; `url` names one of them (the store finds the rest)."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self) -> None:
        exe = require_redis_server()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli is not on PATH")
        self.ports = _cluster_ports(NODES)
        for port in self.ports:
            d = self.workdir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            args = [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(d),
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--repl-diskless-sync-delay",
                "0",
            ]
            self.procs.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port, proc in zip(self.ports, self.procs, strict=True):
            wait_port(port, proc=proc)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not all(self._ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        while not self._replicas_synced():  # so that WAIT 1 can be acknowledged
            if time.monotonic() > deadline:
                raise TimeoutError("the replicas did not finish their first sync")
            time.sleep(0.1)

    @staticmethod
    def _ok(port: int) -> bool:
        r = redis.Redis(port=port, decode_responses=True)
        try:
            return "cluster_state:ok" in str(r.execute_command("CLUSTER", "INFO"))
        finally:
            r.close()

    def _replicas_synced(self) -> bool:
        synced = 0
        for port in self.ports:
            r = redis.Redis(port=port, decode_responses=True)
            try:
                info = r.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") == "up":
                    synced += 1
            finally:
                r.close()
        return synced == NODES // 2

    def masters(self) -> list[int]:
        out = []
        for port in self.ports:
            r = redis.Redis(port=port, decode_responses=True)
            try:
                if r.info("replication")["role"] == "master":
                    out.append(port)
            finally:
                r.close()
        return out

    def flushall(self) -> None:
        for port in self.masters():
            r = redis.Redis(port=port, decode_responses=True)
            try:
                r.flushall()
            finally:
                r.close()

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


@pytest.fixture(scope="session")
def _store_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreCluster]:
    cluster = StoreCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except (OSError, RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
        cluster.stop()
        if IN_CI:
            pytest.fail(f"cannot start a Redis Cluster in CI: {exc}")
        pytest.skip(f"Redis Cluster unavailable: {exc}")
    yield cluster
    cluster.stop()

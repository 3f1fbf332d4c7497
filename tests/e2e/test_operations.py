"""What an operator runs: the local cluster, metrics and health, logs, the compose file."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import yaml

from scripts.procs import stop_process
from tests.helpers import ROOT, eventually, free_port, messages, metrics, wait_port


def _two_consecutive_free_ports() -> list[int]:
    """The cluster script takes consecutive ports from --first-port."""
    import socket

    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return [port, port + 1]
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


async def test_local_cluster_runs_and_stops_cleanly(redis_server, tmp_path, clients) -> None:
    ports = _two_consecutive_free_ports()
    redis_port = free_port()
    log = open(tmp_path / "cluster.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "cluster.py"),
            "--gateways",
            "2",
            "--first-port",
            str(ports[0]),
            "--redis-port",
            str(redis_port),
            "--metrics-first-port",
            str(_two_consecutive_free_ports()[0]),
            "--web-first-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--scrypt-log-n",
            "10",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(ports[0], proc=proc)
        # the second gateway listens on first-port + 1
        wait_port(ports[1], proc=proc)
        a, b = await clients(ports[0]), await clients(ports[1])
        await a.login("alice")
        await b.login("bob")
        await a.send("across the cluster")
        assert messages([await b.expect("across")]) == [("#general", "alice", "across the cluster")]
        stopped = asyncio.create_task(asyncio.to_thread(stop_process, proc, signal.SIGINT, 30))
        assert await b.expect("shutting down") == "* server shutting down"
        assert await stopped == 0
        assert (tmp_path / "data").exists()
    finally:  # let the script stop its gateways and Redis, then insist
        stop_process(proc, signal.SIGTERM, 30)
        log.close()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_metrics_and_health(redis_url, gateways, clients) -> None:
    mport = free_port()
    gw = gateways(redis_url, "--metrics-port", str(mport))
    a = await clients(gw.port)
    await a.login("alice")
    await a.send("counted")
    await a.expect("counted")
    status, body = await asyncio.to_thread(_get, mport, "/healthz")
    assert (status, body) == (200, "ok\n")
    status, body = await asyncio.to_thread(_get, mport, "/metrics")
    assert status == 200
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert values["chat_connections"] == 1
    assert values["chat_logins_total"] == 1
    assert values["chat_messages_in_total"] == 1
    assert values["chat_message_lines_out_total"] == 1
    assert values["chat_redis_up"] == 1
    assert values["chat_delivery_latency_seconds_count"] == 1
    # the collector's pauses are measured, from the full collection made once serving
    assert values['chat_gc_pause_seconds_count{generation="2"}'] >= 1


async def test_a_stalled_event_loop_shows_in_the_lag_metric(redis_url, gateways) -> None:
    """What every user of a gateway waited for at once (a burst of logins, a big fan-out, a
    pause) is counted: a gateway stopped for 0.4 s shows one wake-up later than 0.25 s."""
    mport = free_port()
    gw = gateways(redis_url, "--metrics-port", str(mport))
    assert gw.proc is not None
    late = 'chat_event_loop_lag_seconds_bucket{le="0.25"}'
    count = "chat_event_loop_lag_seconds_count"
    before = await eventually(
        lambda: (m := metrics(mport))[count] >= 5 and m, "the lag probe ticking"
    )
    gw.proc.send_signal(signal.SIGSTOP)
    await asyncio.sleep(0.4)
    gw.proc.send_signal(signal.SIGCONT)
    after = await eventually(
        lambda: (m := metrics(mport))[count] > before[count] and m, "the lag probe again"
    )
    assert (after[count] - after[late]) - (before[count] - before[late]) >= 1
    assert (
        after["chat_event_loop_lag_seconds_sum"] - before["chat_event_loop_lag_seconds_sum"] >= 0.3
    )


async def test_health_fails_while_redis_is_down(private_redis, gateways) -> None:
    redis = private_redis()
    mport = free_port()
    gateways(redis.url, "--metrics-port", str(mport))
    redis.stop()

    async def unhealthy() -> bool:
        return (await asyncio.to_thread(_get, mport, "/healthz"))[0] == 503

    await eventually(unhealthy, "/healthz answering 503")


async def test_logs_have_connection_events_and_never_a_password(backend, gateways, clients) -> None:
    gw = gateways(backend)
    a = await clients(gw.port)
    await a.login("alice", "hunter2-secret")
    b = await clients(gw.port)
    await b.expect("nickname")
    await b.send("alice")
    await b.expect("Password")
    await b.send("wrong-guess-123")
    await b.expect("wrong password")
    await a.send("/quit")
    await a.expect("bye")
    log = await gw.logged("event=disconnect")
    for event in ("event=connect", "event=login", "event=wrong_password", "event=disconnect"):
        assert event in log
    assert "hunter2-secret" not in log and "wrong-guess-123" not in log


def test_compose_file_has_redis_with_aof_and_three_gateways() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    # What `docker compose up` starts; the `cluster` profile is test_deploy.py's.
    services = {n: s for n, s in compose["services"].items() if "profiles" not in s}
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "everysec" in redis["command"]
    assert redis["healthcheck"]["test"]
    published = sorted(
        p.split(":")[0]
        for name, s in services.items()
        if name != "redis"
        for p in s["ports"]
        if p.endswith(":8000")
    )
    assert published == ["8001", "8002", "8003"]
    for name, service in services.items():
        if name == "redis":
            continue
        assert service["build"] == "."
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthz" in " ".join(service["healthcheck"]["test"])
    assert "server.py" in (ROOT / "Dockerfile").read_text()

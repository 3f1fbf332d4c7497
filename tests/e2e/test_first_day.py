"""First-day bugs, end to end: plain client stdin kinds, the cluster script as a supervisor,
the redis-cli examples of docs/REDIS.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from scripts.procs import stop_process
from scripts.rediscluster import free_cluster_ports
from tests.helpers import (
    ROOT,
    Client,
    eventually_sync,
    free_port,
    messages,
    shown_recorded,
    wait_port,
)


def _plain_client(port: int, nick: str, stdin, timeout: float = 30) -> tuple[int, str, str, float]:
    """client.py --plain with the given stdin (an open file); (exit code, out, err, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "client.py"),
            "--plain",
            "--server",
            f"127.0.0.1:{port}",
            "--nick",
            nick,
        ],
        stdin=stdin,
        capture_output=True,
        env=dict(os.environ, CHAT_PASSWORD="secret123"),
        timeout=timeout,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - started


async def test_plain_client_reads_a_regular_file_as_stdin(backend, gateways, tmp_path) -> None:
    gw = gateways(backend)
    script = tmp_path / "lines.txt"
    script.write_text("from a file\n\n/who\nsecond line\n")
    with open(script, "rb") as f:
        code, out, err, _ = await asyncio.to_thread(_plain_client, gw.port, "filebot", f)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    assert messages(out.splitlines()) == [
        ("#general", "filebot", "from a file"),
        ("#general", "filebot", "second line"),
    ]
    assert "* online in #general (1): filebot" in out


async def test_plain_client_with_dev_null_stdin_exits_promptly(backend, gateways) -> None:
    gw = gateways(backend)
    with open(os.devnull, "rb") as f:
        code, out, err, took = await asyncio.to_thread(_plain_client, gw.port, "nullbot", f, 20)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    assert "* ready: logged in as nullbot" in out
    assert took < 10


# --- scripts/cluster.py as a supervisor ------------------------------------------------


def _consecutive_free_ports(n: int) -> int:
    """The first of n consecutive free loopback ports (cluster.py counts up from it)."""
    for _ in range(200):
        first = free_port()
        socks = []
        try:
            for port in range(first, first + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports")


def _children(pid: int) -> dict[int, str]:
    """Live child processes of `pid`: pid -> command line."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        ppid = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("PPid:"))
        state = next(x.split()[1] for x in status.splitlines() if x.startswith("State:"))
        if ppid == pid and state != "Z":
            out[int(entry.name)] = cmdline
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


#: cluster.py with a shorter LISTEN_TIMEOUT (seconds), so that a test need not wait 20 s.
_WITH_LISTEN_TIMEOUT = (
    "import sys; sys.path.insert(0, {root!r}); import scripts.cluster as cluster; "
    "cluster.LISTEN_TIMEOUT = {timeout!r}; sys.exit(cluster.main())"
)


class Cluster:
    def __init__(
        self,
        tmp_path: Path,
        gateways: int,
        *extra: str,
        redis_port: int | None = None,
        listen_timeout: float | None = None,
    ) -> None:
        self.first = _consecutive_free_ports(gateways)
        self.ports = list(range(self.first, self.first + gateways))
        # a Redis Cluster takes six ports from --redis-port on, and their bus ports
        if redis_port is None:
            redis_port = free_cluster_ports(6) if "--redis-cluster" in extra else free_port()
        self.redis_port = redis_port
        self.log_path = tmp_path / "cluster.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        script = [str(ROOT / "scripts" / "cluster.py")]
        if listen_timeout is not None:
            script = ["-c", _WITH_LISTEN_TIMEOUT.format(root=str(ROOT), timeout=listen_timeout)]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *script,
                "--gateways",
                str(gateways),
                "--first-port",
                str(self.first),
                "--redis-port",
                str(self.redis_port),
                "--metrics-first-port",
                "0",
                "--web-first-port",
                "0",
                "--irc-first-port",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
                "--scrypt-log-n",
                "10",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        self.seen: set[int] = set()  # every child ever seen, killed in close() if alive

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> dict[int, str]:
        found = _children(self.proc.pid)
        self.seen.update(found)
        return found

    def wait_up(self, timeout: float = 30) -> None:
        """Every gateway accepts connections (and so does Redis)."""
        for port in [self.redis_port, *self.ports]:
            wait_port(port, proc=self.proc, timeout=timeout)
        self.children()

    def wait_output(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return self.output()
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not printed by cluster.py:\n{self.output()}")

    def gateway_pid(self, port: int) -> int:
        for pid, cmd in self.children().items():
            if "server.py" in cmd and f"--port {port} " in cmd + " ":
                return pid
        raise AssertionError(f"no gateway process for port {port}: {_children(self.proc.pid)}")

    def close(self) -> None:
        for pid in self.seen | set(self.children()):  # leave nothing behind, even on failure
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        stop_process(self.proc, signal.SIGKILL, 5)
        self.log.close()


def test_cluster_sighup_leaves_no_child_process(tmp_path) -> None:
    cluster = Cluster(tmp_path, 2)
    try:
        cluster.wait_up()
        children = cluster.children()
        assert len(children) == 3, children  # redis-server and two gateways
        cluster.proc.send_signal(signal.SIGHUP)  # what closing its terminal sends
        assert cluster.proc.wait(30) == 0, cluster.output()
        eventually_sync(
            lambda: not any(_alive(pid) for pid in children), f"no child left of {children}"
        )
        assert "SIGHUP" in cluster.output()
    finally:
        cluster.close()


async def test_cluster_restarts_a_killed_gateway_and_keeps_the_others(tmp_path, clients) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        await asyncio.to_thread(cluster.wait_up)
        p1, p2, p3 = cluster.ports
        pids = {port: cluster.gateway_pid(port) for port in cluster.ports}
        bob = await clients(p3)
        await bob.login("bob")
        os.kill(pids[p2], signal.SIGKILL)
        await asyncio.to_thread(cluster.wait_output, f"gateway 2 (port {p2}) exited")
        assert cluster.proc.poll() is None, cluster.output()  # the supervisor carries on
        await asyncio.to_thread(wait_port, p2, cluster.proc, 15)  # restarted, listening again
        out = await asyncio.to_thread(cluster.wait_output, f"telnet 127.0.0.1 {p2} (restarted)")
        assert f"gateway 2 (port {p2}) exited (killed by SIGKILL; last log line: " in out
        assert "stopping" not in out
        # The others kept running, untouched; the restarted one is a new process that works.
        assert cluster.gateway_pid(p1) == pids[p1] and cluster.gateway_pid(p3) == pids[p3]
        assert cluster.gateway_pid(p2) != pids[p2]
        alice = await clients(p2)
        await alice.login("alice")
        await alice.send("after the restart")
        assert messages([await bob.expect("after the restart")]) == [
            ("#general", "alice", "after the restart")
        ]
        cluster.proc.send_signal(signal.SIGTERM)
        assert await bob.expect("shutting down") == "* server shutting down"
        assert await asyncio.to_thread(cluster.proc.wait, 30) == 0
    finally:
        cluster.close()


def test_cluster_sees_a_gateway_listen_without_connecting_to_it(tmp_path) -> None:
    """cluster.py's checks that a gateway listens are not connections to it: they used to
    be, logged by the gateway (`event=connect`, `event=disconnect ... state=nick by=peer`),
    and so the last log line it reported for a gateway that died was its check's. Nothing
    here connects to the gateway either: any connection seen would be cluster.py's."""
    cluster = Cluster(tmp_path, 1)
    try:
        (port,) = cluster.ports
        cluster.wait_output("all 1 gateways up")
        cluster.wait_output(f"event=listening host=127.0.0.1 port={port} ")
        time.sleep(0.5)  # room for a check's connection to be logged, were there one
        os.kill(cluster.gateway_pid(port), signal.SIGKILL)
        out = cluster.wait_output(f"gateway 1 (port {port}) exited (killed by SIGKILL")
        exited = next(line for line in out.splitlines() if "exited (killed by SIGKILL" in line)
        last = exited.partition("last log line: ")[2]
        assert "event=listening" in last, exited  # the gateway's own last line
        # restarted: seen up again, again without a connection
        out = cluster.wait_output(f"telnet 127.0.0.1 {port} (restarted)")
        time.sleep(0.5)
        out = cluster.output()
        assert "event=connect" not in out and "event=disconnect" not in out, out
        assert cluster.proc.poll() is None, out
    finally:
        cluster.close()


def _ipv6_loopback_listener(port: int) -> socket.socket | None:
    """A socket listening on [::1]:`port` (IPv6 only), or None where that cannot be had."""
    try:
        sock = socket.socket(socket.AF_INET6)
    except OSError:
        return None
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::1", port))
        sock.listen()
    except OSError:
        sock.close()
        return None
    return sock


def test_cluster_stops_a_gateway_that_does_not_listen_in_time(tmp_path) -> None:
    """A gateway that never listens (its Redis does not answer) is stopped after
    LISTEN_TIMEOUT, said so, and restarted; something else listening on its port where a
    connection to 127.0.0.1 does not go (the IPv6 loopback) does not make it up."""
    nobody = free_port()  # the gateway's Redis: nothing answers there
    cluster = Cluster(
        tmp_path, 1, "--redis-url", f"redis://127.0.0.1:{nobody}/0", listen_timeout=1.0
    )
    (port,) = cluster.ports
    elsewhere = _ipv6_loopback_listener(port)  # without it, the timeout is still checked
    try:
        out = cluster.wait_output(
            f"cluster: gateway 1 does not listen on {port} after 1 s; stopping it"
        )
        out = cluster.wait_output(f"gateway 1 (port {port}) exited")
        assert "telnet 127.0.0.1" not in out and "gateways up" not in out, out
        assert cluster.proc.poll() is None, out  # it carries on, restarting the gateway
    finally:
        cluster.close()
        if elsewhere is not None:
            elsewhere.close()


def test_cluster_fails_clearly_when_a_port_is_busy(tmp_path) -> None:
    cluster_ports = _consecutive_free_ports(2)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", cluster_ports + 1))
        squatter.listen()
        proc = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "cluster.py"),
                "--gateways",
                "2",
                "--first-port",
                str(cluster_ports),
                "--redis-port",
                str(free_port()),
                "--metrics-first-port",
                "0",
                "--web-first-port",
                "0",
                "--irc-first-port",
                "0",
                "--data-dir",
                str(tmp_path / "data"),
            ],
            capture_output=True,
            timeout=30,
        )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0, out
    assert f"gateway 2: port {cluster_ports + 1} is busy" in out
    assert "choose others with --first-port" in out  # the option that moves it
    assert "telnet 127.0.0.1" not in out


def _gateway_named_redis(out: str, index: int, nodes: list[str]) -> bool:
    """Gateway `index` printed a line naming one of the cluster's nodes (its listening line
    shows the store URL; a start failure names the address it failed on)."""
    prefix = f"[gateway {index}] "
    return any(
        line.startswith(prefix) and any(node in line for node in nodes) for line in out.splitlines()
    )


async def _talk(port1: int, port2: int) -> None:
    a, b = await Client.connect(port1), await Client.connect(port2)
    try:
        await a.login("alice")
        await b.login("bob")
        await a.send("hello through the cluster")
        await b.expect("<alice> hello through the cluster", timeout=10)
    finally:
        await a.close()
        await b.close()


def test_cluster_with_a_redis_cluster_starts_six_nodes_and_stops_on_sigterm(tmp_path) -> None:
    """--redis-cluster: six cluster nodes that agree, gateways given every node as seeds; a
    killed master is reported (and the script carries on); SIGTERM stops everything.
    Whether the gateways can chat on a cluster is for the store's tests: here they only
    have to run, or have said which Redis they were given."""
    import redis

    cluster = Cluster(tmp_path, 2, "--redis-cluster")
    try:
        out = cluster.wait_output("redis: redis://", timeout=40)
        url_line = next(x for x in out.splitlines() if x.startswith("redis: redis://"))
        nodes = url_line.split("redis://", 1)[1].split()[0].split(",")
        assert len(nodes) == 6, url_line
        assert out.count("redis: master ") == 3, out
        ports = [int(n.rsplit(":", 1)[1]) for n in nodes]
        for port in ports:
            r = redis.Redis(port=port, decode_responses=True, socket_timeout=3)
            try:
                assert r.cluster("info")["cluster_state"] == "ok"
                assert len(r.cluster("slots")) == 3
            finally:
                r.close()
        redis_pids = {
            pid
            for pid, cmd in cluster.children().items()
            if "redis-server" in cmd.split()[0] and any(f":{p} " in cmd + " " for p in ports)
        }
        assert len(redis_pids) == 6, cluster.children()
        deadline = time.monotonic() + 30
        pending = {1, 2}
        while pending and time.monotonic() < deadline:
            out = cluster.output()
            for i in list(pending):
                port = cluster.ports[i - 1]
                if _gateway_named_redis(out, i, nodes) or any(
                    "server.py" in cmd and f"--port {port} " in cmd
                    for cmd in cluster.children().values()
                ):
                    pending.discard(i)
            time.sleep(0.2)
        assert not pending, f"gateways {pending} neither run nor named the Redis:\n{out}"
        # Users on two of its gateways talk through the cluster.
        for port in cluster.ports[:2]:
            wait_port(port, timeout=30)
        asyncio.run(_talk(cluster.ports[0], cluster.ports[1]))
        # A master dies: said, not fatal.
        master = next(x for x in out.splitlines() if x.startswith("redis: master "))
        master_port = int(master.split()[2].rsplit(":", 1)[1])
        master_pid = next(
            pid
            for pid, cmd in cluster.children().items()
            if "redis-server" in cmd.split()[0] and f":{master_port} " in cmd + " "
        )
        os.kill(master_pid, signal.SIGKILL)
        out = cluster.wait_output(f"redis node 127.0.0.1:{master_port} (master) exited")
        assert "killed by SIGKILL" in out and "its replica takes over" in out
        assert cluster.proc.poll() is None, out
        children = cluster.children()
        cluster.proc.send_signal(signal.SIGTERM)
        assert cluster.proc.wait(40) == 0, cluster.output()
        eventually_sync(
            lambda: not any(_alive(pid) for pid in children), f"no child left of {children}"
        )
        assert not [p for p in redis_pids if _alive(p)], cluster.output()
        out = cluster.output()
        assert "SIGTERM" in out and out.rstrip().endswith("stopped"), out
    finally:
        cluster.close()


# --- docs/REDIS.md ---------------------------------------------------------------------


def _redis_doc_examples() -> list[str]:
    text = (ROOT / "docs" / "REDIS.md").read_text()
    block = text.split("## Looking at it with redis-cli", 1)[1].split("```sh", 1)[1]
    return [line for line in block.split("```", 1)[0].splitlines() if line.strip()]


def _run_example(line: str, port: int) -> tuple[int, str]:
    assert "-p 6390" in line, line
    proc = subprocess.run(
        ["sh", "-c", line.replace("-p 6390", f"-p {port}")],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return proc.returncode, proc.stdout + proc.stderr


async def test_redis_doc_examples_run_with_and_without_a_gateway(
    redis_url, gateways, clients
) -> None:
    import shutil

    if shutil.which("redis-cli") is None:
        import pytest

        from tests.conftest import IN_CI

        if IN_CI:  # .ci/run installs redis-tools: a CI run without it is broken
            pytest.fail("redis-cli is needed (apt-get install redis-tools)")
        pytest.skip("redis-cli not installed")
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    examples = _redis_doc_examples()
    assert len(examples) >= 10
    online = next(e for e in examples if "who is online" in e)
    gw = gateways(redis_url)
    alice, bob = await clients(gw.port), await clients(gw.port)
    carol = await clients(gw.port, "127.0.0.2")  # complaints count once per address
    for c, nick in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        await c.login(nick)
    await bob.send("/chats random")
    await bob.expect("joined #random")
    await bob.send("hello random")
    await alice.send("/send bob psst")
    await bob.expect("psst")
    await alice.send("/ban bob")
    await alice.expect("complaint")
    await carol.send("/ban bob")
    await carol.expect("complaint")
    await shown_recorded(redis_url, "bob", "c:random", "p:alice|bob")  # for its example
    code, out = await asyncio.to_thread(_run_example, online, port)
    assert code == 0 and set(out.split()) == {"alice", "bob", "carol"}, out
    results = {e: await asyncio.to_thread(_run_example, e, port) for e in examples}
    for example, (code, out) in results.items():
        assert code == 0 and "ERR" not in out and "WRONGTYPE" not in out, (example, out)
    assert "psst" in results[next(e for e in examples if "chat:{p:alice|bob}:msgs" in e)][1]
    assert "general" in results[next(e for e in examples if "chat:{u:bob}:chats" in e)][1]
    assert "bob" in results[next(e for e in examples if "chat:{c:random}:members" in e)][1]
    assert "alice" in results[next(e for e in examples if "chat:{u:bob}:complaints" in e)][1]
    assert "bob" in results[next(e for e in examples if "HGET 'chat:{u:bob}' name" in e)][1]
    assert results[next(e for e in examples if "chat:{u:bob}:cursor" in e)][1].strip()
    gw.stop()  # no gateway running: the examples still run, and nobody is online
    for example in examples:
        code, out = await asyncio.to_thread(_run_example, example, port)
        assert code == 0 and "ERR" not in out and "WRONGTYPE" not in out, (example, out)
    assert (await asyncio.to_thread(_run_example, online, port))[1].strip() == ""

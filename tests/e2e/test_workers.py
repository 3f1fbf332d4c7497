"""`--workers N`: one port served by N gateway processes (SO_REUSEPORT), supervised.

Real processes throughout: the supervisor (`python3 server.py --workers 2`), its workers, a
redis-server, clients over TCP. Which worker serves a connection is read from the kernel
(`ss -p`: the pid owning the accepted socket).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.settings import host_cores
from tests.helpers import ROOT, Client, free_port, messages


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_") and k != "REDIS_URL"}
    env.update(
        CHAT_SCRYPT_LOG_N="10", CHAT_RATE="0", CHAT_WEB_PORT="0", CHAT_IRC_PORT="0",
        CHAT_MAX_REGISTRATIONS="0", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return env


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet has exited: it serves nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Workers:
    """`python3 server.py --workers N` on a free port; its log in a file."""

    def __init__(self, redis_url: str, tmp: Path, count: int = 2, *args: str) -> None:
        self.port = free_port()
        self.metrics = free_port(2)  # two workers' metrics: this port and the next
        self.log = tmp / f"workers-{self.port}.log"
        argv = [
            sys.executable, str(ROOT / "server.py"), "--workers", str(count), "--port",
            str(self.port), "--metrics-port", str(self.metrics), "--redis-url", redis_url,
            *args,
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=out, stderr=out)
        self.wait_log("event=workers_ready", 1)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, what: str, times: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(what) < times:
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {what!r} x{times}:\n{self.text()}"
            time.sleep(0.05)

    def children(self) -> set[int]:
        """The supervisor's live children: its workers and its spare, once started."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in path.read_text().split() if _alive(int(p))}

    def pids(self) -> set[int]:
        """Its workers: the processes listening on its port."""
        return _listeners(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def _server_pid(port: int, client: Client) -> int:
    """The pid of the process holding the gateway's end of `client`'s connection."""
    mine = client.writer.get_extra_info("sockname")[1]
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} and dport = :{mine} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = re.findall(r"pid=(\d+)", out)
    assert len(set(found)) == 1, out
    return int(found[0])


@pytest.fixture
def workers(redis_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[Workers] = []

    def start(count: int = 2, *args: str) -> Workers:
        w = Workers(redis_url, tmp_path, count, *args)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(signal.SIGKILL)


async def _spread(w: Workers, clients, want: int = 2) -> dict[int, list[Client]]:  # type: ignore[no-untyped-def]
    """Connections opened until `want` workers each hold one, by worker pid."""
    by_pid: dict[int, list[Client]] = {}
    for _ in range(40):
        c = await clients(w.port)
        await c.expect("nickname")
        by_pid.setdefault(_server_pid(w.port, c), []).append(c)
        if len(by_pid) >= want:
            break
    return by_pid


def _listeners(port: int) -> set[int]:
    """The pids listening on `port`."""
    out = subprocess.run(
        ["ss", "-tlnpH", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


async def test_one_port_is_served_by_every_worker_and_their_users_chat(
    workers, clients, redis_url: str, tmp_path: Path
) -> None:
    web, irc = free_port(), free_port()
    w = workers(2, "--web-port", str(web), "--irc-port", str(irc))
    pids = w.pids()
    assert len(pids) == 2
    for port in (w.port, web, irc):  # every door's port, in every worker
        assert _listeners(port) == pids, port
    by_pid = await _spread(w, clients)
    assert set(by_pid) == pids, "connections to the one port did not reach both workers"
    (_, [alice, *_]), (_, [bob, *_]) = sorted(by_pid.items())
    await alice.send("alice")
    await alice.expect("(?i)password")
    await alice.send("secret123")
    await alice.expect("^\\* ready")
    await bob.send("bob")
    await bob.expect("(?i)password")
    await bob.send("secret123")
    await bob.expect("^\\* ready")
    await alice.send("hello from worker A")
    assert messages([await bob.expect("hello from")]) == [
        ("#general", "alice", "hello from worker A")
    ]
    await bob.send("/who")
    assert await bob.expect("online in") == "* online in #general (2): alice, bob"
    # each worker its own metrics port, each counting its own users
    for port in (w.metrics, w.metrics + 1):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
        assert re.search(rb"\nchat_local_users 1\.0\n", body), body[-400:]
    # a second gateway with --workers on the same port would silently share it: refused
    again = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--workers", "2", "--port", str(w.port),
         "--redis-url", redis_url],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 1 and len(errors) == 1, again.stderr
    assert errors[0].endswith("Address already in use (is another gateway running there? "
                              "choose another port with --port)"), errors  # fmt: skip
    assert w.pids() == pids and w.proc.poll() is None


async def test_a_killed_worker_is_restarted_and_the_others_users_stay(workers, clients) -> None:
    w = workers(2)
    by_pid = await _spread(w, clients)
    assert len(by_pid) == 2
    (dead, doomed), (kept, [bob, *_]) = sorted(by_pid.items())
    await bob.send("bob")
    await bob.expect("(?i)password")
    await bob.send("secret123")
    await bob.expect("^\\* ready")
    os.kill(dead, signal.SIGKILL)
    w.wait_log(f"event=worker_exited worker=1 pid={dead} status='killed by SIGKILL'", 1)
    assert await doomed[0].closed()
    # while it is down, the port is the survivor's: every new connection is served
    for _ in range(5):
        c = await clients(w.port)
        await c.expect("nickname")
        assert _server_pid(w.port, c) == kept
    await bob.send("still here")
    assert messages([await bob.expect("still here")]) == [("#general", "bob", "still here")]
    w.wait_log("event=worker_ready worker=1", 1)
    (new,) = w.pids() - {kept}
    assert new != dead and not _alive(dead)
    assert "restart_in=0.1" in w.text()
    by_pid = await _spread(w, clients)
    assert set(by_pid) == {kept, new}
    # a worker that keeps dying waits longer each time (0.1 s, then 0.2 s)
    os.kill(new, signal.SIGKILL)
    w.wait_log(f"event=worker_exited worker=1 pid={new} status='killed by SIGKILL' "
               "restart_in=0.2", 1)  # fmt: skip


async def test_a_stop_signal_stops_every_worker_and_a_killed_supervisor_leaves_none(
    workers, clients
) -> None:
    w = workers(2)
    w.wait_log("event=spare_started", 1)
    pids = w.children()
    assert len(pids) == 3 and len(w.pids()) == 2  # two workers and a spare
    # in the supervisor's session (Linux's autogroup scheduler gives each session its
    # own share of the CPU), in process groups of their own (Ctrl+C is the supervisor's)
    assert {os.getsid(p) for p in pids} == {os.getsid(w.proc.pid)}
    assert os.getpgid(w.proc.pid) not in {os.getpgid(p) for p in pids}
    by_pid = await _spread(w, clients)
    users = [c for group in by_pid.values() for c in group]
    assert w.stop(signal.SIGTERM) == 0
    for c in users:
        assert await c.expect("server shutting down")
        assert await c.closed()
    assert not any(_alive(p) for p in pids)
    assert "event=workers_stopped workers=2 clean=True" in w.text()
    assert "spare_exited" not in w.text()  # it was stopped, not lost
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", w.port), timeout=1).close()

    # SIGKILL leaves the supervisor no time to stop anything: the workers go by themselves
    w = workers(2)
    w.wait_log("event=spare_started", 1)
    pids = w.children()
    assert len(pids) == 3
    w.stop(signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"orphaned workers: {pids}\n{w.text()}"
        time.sleep(0.1)
    assert w.text().count("event=shutdown") == 2  # each told its users, as on SIGTERM


async def test_one_supervised_gateway_is_restarted_from_its_warm_spare(workers, clients) -> None:
    """`--workers 1`: one gateway, supervised. Once it has run a while a spare waits,
    imported; a dead worker's place goes to it (not to a process started cold), and a new
    spare follows; a spare that dies waiting is replaced and then used."""
    w = workers(1)
    w.wait_log("event=spare_started", 1)
    (first,) = w.pids()
    (spare,) = w.children() - {first}
    alice = await clients(w.port)
    await alice.login("alice")
    os.kill(first, signal.SIGKILL)
    assert await alice.closed()
    w.wait_log(f"event=worker_restarted worker=1 pid={spare} from=spare", 1)
    w.wait_log("event=worker_ready worker=1", 1)
    assert w.pids() == {spare}
    back = await clients(w.port)  # the spare serves the port and the chat, as alice
    await back.login("alice")
    await back.send("back")
    assert messages([await back.expect("back")]) == [("#general", "alice", "back")]
    w.wait_log("event=spare_started", 2)
    (second,) = w.children() - {spare}
    os.kill(second, signal.SIGKILL)  # a spare lost while it waits: another follows
    w.wait_log(f"event=spare_exited pid={second} status='killed by SIGKILL'", 1)
    w.wait_log("event=spare_started", 3)
    (third,) = w.children() - {spare}
    os.kill(spare, signal.SIGKILL)
    w.wait_log(f"event=worker_restarted worker=1 pid={third} from=spare", 1)
    w.wait_log("event=worker_ready worker=1", 2)
    assert w.stop(signal.SIGTERM) == 0
    assert "event=workers_stopped workers=1 clean=True" in w.text()
    assert not any(_alive(p) for p in (first, second, third))


async def test_without_spares_a_dead_worker_is_started_anew(workers, clients) -> None:
    w = workers(1, "--spares", "0")
    (first,) = w.pids()
    time.sleep(2.5)  # past the moment a spare would have been started (SPARE_AFTER, 2 s)
    assert w.children() == {first} and "spare_started" not in w.text()
    os.kill(first, signal.SIGKILL)
    w.wait_log("event=worker_restarted worker=1 pid=", 1)
    assert "from=cold" in w.text()
    w.wait_log("event=worker_ready worker=1", 1)
    c = await clients(w.port)
    assert await c.expect("nickname")


def test_a_stop_signal_while_the_workers_start_is_a_clean_stop(redis_url: str, tmp_path) -> None:
    """SIGTERM (Ctrl+C in a service manager) right after start, while the workers are
    still importing and cannot handle it yet: each dies of it, which is a clean stop (exit
    0, nothing left running), not "a worker did not stop cleanly"."""
    log = tmp_path / "workers.log"
    argv = [
        sys.executable, str(ROOT / "server.py"), "--workers", "2", "--port", str(free_port()),
        "--redis-url", redis_url,
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while "event=workers_starting" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.01)
        listing = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        while len(children := listing.read_text().split()) < 2:  # both launched, importing
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(children) == 2
    assert not any(_alive(int(p)) for p in children)
    assert "event=workers_stopped workers=2 clean=True" in log.read_text()


def test_workers_refuses_bad_values_and_the_embedded_store_in_one_line() -> None:
    from gateway.settings import MAX_WORKERS, Settings

    for bad, said in [
        ("0", "out of range; give 1 to 256, or auto"),
        ("-2", "out of range"),
        ("257", "out of range"),
        ("1.5", "not a whole number; give 1 to 256, or auto"),
        ("many", "not a whole number"),
        ("", "not a whole number"),
    ]:
        for argv, env in (
            (["--workers", bad, "--redis-url", "redis://h:1"], {}),
            (["--redis-url", "redis://h:1"], {"CHAT_WORKERS": bad}),
        ):
            done = subprocess.run(
                [sys.executable, "server.py", *argv], cwd=ROOT, env={**_env(), **env},
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
            assert said in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "server.py", "--workers", "2"], cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr == (
        "error: --workers 2 needs --redis-url: the embedded store lives in one process and "
        "cannot be shared by workers (start redis-server and give --redis-url, or use "
        "--workers 1) (see python3 server.py --help)\n"
    ), done.stderr
    assert MAX_WORKERS == 256
    auto = Settings.from_args(["--workers", "auto", "--redis-url", "redis://h:1"], env={})
    assert auto.workers == host_cores()
    assert Settings.from_args([], env={}).workers == 0  # this process, no supervisor
    last = Settings.from_args(["--redis-url", "redis://h:1", "--workers", "3",
                               "--metrics-port", "65533"], env={})  # fmt: skip
    assert last.workers == 3
    done = subprocess.run(
        [sys.executable, "server.py", "--redis-url", "redis://h:1", "--workers", "3",
         "--metrics-port", "65534"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "give at most 65533" in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "server.py", "--redis-url", "redis://h:1", "--workers", "2",
         "--port", "9001", "--metrics-port", "9000"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--port and --metrics-port + 1 (worker 2's) are both 9001" in done.stderr

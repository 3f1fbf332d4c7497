"""The embedded store (server.py without --redis-url) keeps its data across restarts, in a
file of its own per host and port: accounts, chats, history, read positions and resume
tokens are there after Ctrl+C, and after a crash all but about the last second."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, assert_quiet, eventually, free_port, messages


async def test_accounts_chats_history_positions_and_tokens_survive_a_restart(
    gateways, clients, tmp_path
) -> None:
    data = str(tmp_path / "chat.data")
    gw = gateways(None, "--data", data)
    alice, bob = await clients(gw.port), await clients(gw.port)
    await alice.login("alice", "alice-pass")
    await bob.login("bob", "bob-pass")
    await alice.send("/token")
    token = (await alice.expect("^\\* token: ")).split()[2]
    await alice.send("/chats den")
    await alice.expect("current chat is now #den")
    await bob.send("/chats den")
    await bob.expect("joined #den")
    await alice.send("seen by bob before the restart")
    await bob.expect("seen by bob before the restart")
    await bob.close()
    await alice.send("unread by bob")
    await alice.send("/send bob private, unread")
    await alice.expect("private, unread")
    # no waiting: a clean stop writes the read positions, then the last snapshot
    assert gw.stop(signal.SIGTERM) == 0

    again = gateways(None, "--data", data)
    bob = await clients(again.port)
    await bob.expect("nickname")
    await bob.send("bob")
    assert await bob.line() == "* Password for bob:"  # not "New nickname": the account is kept
    await bob.send("bob-pass")
    backlog = []
    while not (line := await bob.line()).startswith("* ready"):
        backlog.append(line)
    # only what bob had not been shown, once: read positions survived too
    assert messages(backlog) == [
        ("#den", "alice", "unread by bob"),
        ("@alice", "alice", "private, unread"),
    ]
    await bob.send("/chats den")
    texts = [t for *_, t in messages(await bob.lines())]
    assert texts == ["seen by bob before the restart", "unread by bob"]  # #den's history
    alice = await clients(again.port)
    await alice.expect("nickname")
    await alice.send(f"alice {token}")  # the resume token still logs in
    await alice.expect("^\\* ready")
    assert "store=embedded data=" in again.output()


async def test_a_crash_loses_at_most_about_a_second(gateways, clients, tmp_path) -> None:
    data = str(tmp_path / "chat.data")
    gw = gateways(None, "--data", data)
    carol = await clients(gw.port)
    await carol.login("carol")
    await carol.send("written before the crash")
    await carol.expect("written before the crash")
    # a snapshot at most a second after a change (and the look at the file itself slack)
    await eventually(
        lambda: os.path.exists(data) and b"written before the crash" in Path(data).read_bytes(),
        "a snapshot that holds carol's message",
        timeout=2.0,
    )
    gw.kill()  # SIGKILL: no shutdown, no last snapshot
    again = gateways(None, "--data", data)
    dave = await clients(again.port)
    await dave.login("dave")
    await dave.send("/history 5")
    assert ("#general", "carol", "written before the crash") in messages(await dave.lines())
    c = await clients(again.port)
    await c.expect("nickname")
    await c.send("carol")
    assert await c.line() == "* Password for carol:"


async def test_each_host_and_port_has_its_own_file_and_one_gateway_per_file(
    gateways, clients, tmp_path
) -> None:
    home = tmp_path / "xdg"
    first = gateways(None, XDG_DATA_HOME=str(home), CHAT_DATA="")
    a = await clients(first.port)
    await a.login("erin")
    second = gateways(None, XDG_DATA_HOME=str(home), CHAT_DATA="")  # another port
    b = await clients(second.port)
    await b.expect("nickname")
    await b.send("erin")
    assert (await b.line()).startswith("* New nickname erin")  # a separate chat
    want = sorted(
        f"127.0.0.1-{p}.chat{s}" for p in (first.port, second.port) for s in ("", ".lock", ".admin")
    )
    await eventually(  # each writes its first snapshot within a second of a change
        lambda: sorted(p.name for p in (home / "chat-gateway").iterdir()) == want,
        f"the files {want}",
    )
    assert oct((home / "chat-gateway").stat().st_mode & 0o777) == "0o700"
    assert oct((home / "chat-gateway" / f"127.0.0.1-{first.port}.chat").stat().st_mode & 0o777) == (
        "0o600"
    )

    # a second gateway on the first one's file is refused with one line, the file untouched
    # (the first one may snapshot meanwhile: what must hold is erin's account in it)
    first_file = home / "chat-gateway" / f"127.0.0.1-{first.port}.chat"
    await eventually(lambda: b"erin" in first_file.read_bytes(), "erin's account in the file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(XDG_DATA_HOME=str(home), CHAT_WEB_PORT="0", CHAT_IRC_PORT="0")
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", str(first.port)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # its port is taken: said before the file
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "choose another port with --port" in errors[0], done.stderr
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", str(free_port()), "--data",
         str(first_file)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # another port, the same file
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is in use by gateway pid" in errors[0], done.stderr
    assert "choose another with --data" in errors[0]
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr, done.stderr
    kept = pickle.loads(first_file.read_bytes())
    assert kept["format"] == 1 and any(b"erin" in k for k in kept["keys"]), kept
    await a.send("still served")
    await a.expect("still served")


async def test_data_none_keeps_nothing_and_a_bad_file_is_one_line(
    gateways, clients, tmp_path
) -> None:
    gw = gateways(None, "--data", "none", XDG_DATA_HOME=str(tmp_path / "xdg"))
    c = await clients(gw.port)
    await c.login("frank")
    await assert_quiet(
        lambda: (tmp_path / "xdg").exists(), 1.3, "a snapshot is due a second after a change"
    )
    assert gw.stop(signal.SIGTERM) == 0
    assert not (tmp_path / "xdg").exists()

    bad = tmp_path / "bad.data"
    bad.write_bytes(b"not a snapshot")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(CHAT_WEB_PORT="0", CHAT_IRC_PORT="0")
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--port", str(free_port()), "--data", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot read the data file {bad}" in errors[0], done.stderr
    assert "not a chat gateway data file" in errors[0], errors  # not unpickling's own words
    assert "--data" in errors[0] and "Traceback" not in done.stderr
    assert bad.read_bytes() == b"not a snapshot"  # never overwritten
    for where in (tmp_path, tmp_path / "dir"):
        where.mkdir(exist_ok=True)
        done = subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--data", str(where)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 2 and done.stderr.startswith("error: --data "), done.stderr
    done = subprocess.run(
        [sys.executable, str(ROOT / "server.py"), "--redis-url", "redis://127.0.0.1:1/0",
         "--data", str(bad)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "--data is the embedded store's file" in done.stderr


def _resp(*words: str) -> bytes:
    """One command as a Redis client sends it (the store takes no inline commands)."""
    parts = [f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words]
    return f"*{len(words)}\r\n".encode() + b"".join(parts)


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on (Linux: its socket inodes in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


async def test_the_embedded_store_serves_only_its_own_gateway(gateways, clients) -> None:
    """The store listens on a loopback port any local user can reach: without the password
    only its gateway holds, it refuses everything (it used to hand anyone the password
    hashes and private messages, and let them make themselves moderators)."""
    import redis

    gw = gateways(None)
    alice = await clients(gw.port)
    await alice.login("alice")
    await alice.send("hello, only the chat sees this")
    await alice.expect("hello, only the chat sees this")
    assert gw.proc is not None
    store_ports = _listening_ports(gw.proc.pid) - {gw.port, gw.web_port, gw.irc_port}
    assert len(store_ports) == 1, store_ports
    port = store_ports.pop()
    outsider = redis.Redis(port=port, protocol=2, socket_timeout=5)
    for command in (("PING",), ("KEYS", "*"), ("HSET", "chat:{u:alice}", "mod", "1")):
        try:
            got = outsider.execute_command(*command)
        except redis.ResponseError as exc:
            assert "disabled" in str(exc), exc
        else:
            raise AssertionError(f"{command} answered {got!r} to a process without the password")
    outsider.close()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as guesser:
        for user in ("default", "gateway"):  # a guessed password logs in as no one
            guesser.sendall(_resp("AUTH", user, "guess") + _resp("GET", "chat:{u:alice}"))
            replies = b""
            while replies.count(b"\r\n") < 2:
                replies += guesser.recv(4096)
            auth, get = replies.split(b"\r\n")[:2]
            assert auth.startswith(b"-") and get.startswith(b"-"), (user, replies)
    admin = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.admin",
            "--redis-url",
            f"redis://127.0.0.1:{port}",
            "users",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
    )
    assert admin.returncode != 0 and b"alice" not in admin.stdout, admin
    await alice.send("still chatting")  # the gateway itself is served as before
    await alice.expect("still chatting")


def _admin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_") and k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "gateway.admin", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
    )


async def test_the_operator_tool_reaches_a_running_embedded_gateway(
    gateways, clients, tmp_path
) -> None:
    """`python3 server.py` alone must be moderatable: the tool finds the running gateway by
    its data file (the key file beside it, readable by this account only) and acts on its
    store; with the gateway stopped it says so in one line. The store still refuses anyone
    without the key (the test above)."""
    data = tmp_path / "group.chat"
    gw = gateways(None, CHAT_DATA=str(data))
    alice, bob = await clients(gw.port), await clients(gw.port)
    await alice.login("alice")
    await bob.login("bob")
    key = data.with_name("group.chat.admin")
    assert key.stat().st_mode & 0o777 == 0o600
    made = _admin("--data", str(data), "mod", "alice")
    assert made.returncode == 0, made.stderr
    assert "alice is now a moderator" in made.stdout
    listed = _admin("--data", str(data), "users")
    assert "alice" in listed.stdout and "moderator" in listed.stdout, listed
    # which store it read, on stderr (the list stays a list)
    assert listed.stderr == f"admin: 2 users in the embedded store of {data}\n", listed.stderr
    await alice.send("/ban bob 2h")  # a moderator's ban, not a complaint: at once
    assert "bob is banned until" in await alice.expect("banned until")
    assert "by a moderator" in await bob.expect("you are banned")
    by_port = _admin("--port", str(gw.port), "bans", env={"CHAT_DATA": str(data)})
    assert by_port.returncode == 0 and "bob" in by_port.stdout, by_port
    gw.stop()
    assert not key.exists()
    gone = _admin("--data", str(data), "users")
    assert gone.returncode == 2 and "no gateway with an embedded store runs" in gone.stderr, gone
    assert len(gone.stderr.strip().splitlines()) == 1, gone.stderr


async def test_the_operator_tool_finds_a_gateway_started_on_another_host_by_its_port(
    gateways, clients, tmp_path
) -> None:
    """A gateway started with `--host 0.0.0.0` (README's advice for a public address) keeps
    `0.0.0.0-PORT.chat`: `admin --port PORT` alone found nothing, and `--host` was refused
    as a command."""
    home = tmp_path / "xdg"
    for attempt in range(3):  # 0.0.0.0:PORT also collides with another test's 127.0.0.1:PORT
        try:
            gw = gateways(None, XDG_DATA_HOME=str(home), CHAT_DATA="", CHAT_HOST="0.0.0.0")
            break
        except RuntimeError:  # exited at start: that port was taken meanwhile; a new one
            if attempt == 2:
                raise
    alice = await clients(gw.port)
    await alice.login("alice")
    env = {"XDG_DATA_HOME": str(home)}
    by_port = _admin("--port", str(gw.port), "mod", "alice", env=env)
    assert by_port.returncode == 0 and "alice is now a moderator" in by_port.stdout, by_port
    by_host = _admin("--host", "0.0.0.0", "--port", str(gw.port), "users", env=env)
    assert by_host.returncode == 0 and "moderator" in by_host.stdout, by_host
    wrong = _admin("--host", "127.0.0.1", "--port", str(gw.port), "users", env=env)
    assert wrong.returncode == 2 and "--host" in wrong.stderr, wrong

"""client.py against real gateways: plain mode, reconnect, and the terminal UI in tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from scripts.procs import stop_process
from tests.conftest import IN_CI
from tests.helpers import ROOT, eventually, free_port, messages, shown_recorded


class PlainClient:
    def __init__(self, servers: str, nick: str, password: str = "secret123") -> None:
        env = dict(os.environ, CHAT_PASSWORD=password)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "client.py"),
                "--plain",
                "--server",
                servers,
                "--nick",
                nick,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            bufsize=0,
        )
        self.lines: list[str] = []

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, text: str, timeout: float = 10) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = await asyncio.wait_for(
                asyncio.to_thread(self.proc.stdout.readline), deadline - time.monotonic()
            )
            if not raw:
                break
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed; got {self.lines!r}")

    def close(self) -> None:
        stop_process(self.proc, signal.SIGKILL)


async def run_script_client(
    port: int, nick: str, password: str, stdin: bytes
) -> tuple[int, str, str]:
    """client.py as a script would run it: stdin piped, to the end; (exit code, out, err)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "client.py"),
        "--server",
        f"127.0.0.1:{port}",
        "--nick",
        nick,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, CHAT_PASSWORD=password),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def test_two_plain_clients_exchange_messages(redis_url, gateways) -> None:
    g1, g2 = gateways(redis_url), gateways(redis_url)
    a = PlainClient(f"127.0.0.1:{g1.port}", "alice")
    b = PlainClient(f"127.0.0.1:{g2.port}", "bob")
    try:
        await a.expect("* ready")
        await b.expect("* ready")
        a.send("hello bob")
        assert messages([await b.expect("hello bob")]) == [("#general", "alice", "hello bob")]
        b.send("/send alice hi alice")
        assert messages([await a.expect("hi alice")]) == [("@bob", "bob", "hi alice")]
    finally:
        a.close()
        b.close()


async def test_plain_client_exits_at_end_of_input(backend, gateways) -> None:
    gw = gateways(backend)
    code, out, err = await run_script_client(
        gw.port, "scripted", "secret123", b"from a script\n/who\n"
    )
    assert code == 0, err
    text = out
    assert "* ready: logged in as scripted" in text
    assert messages(text.splitlines()) == [("#general", "scripted", "from a script")]
    assert "* online in #general (1): scripted" in text
    assert "Traceback" not in err


async def test_a_script_gives_up_on_a_server_that_is_down_once_its_input_ended() -> None:
    """`printf ... | client.py` with no server: it used to retry forever (a cron job or a
    CI step hung); now a round of failed tries after the end of its input ends it, exit 1."""
    port = free_port()  # nothing listens there
    started = time.monotonic()
    code, out, err = await run_script_client(port, "late", "secret123", b"anyone there?\n")
    took = time.monotonic() - started
    assert code == 1, (out, err)
    assert f"cannot reach 127.0.0.1:{port}" in err and "the input has ended" in err, err
    assert out == "" and "Traceback" not in err
    assert took < 10, took


async def test_lines_a_script_sends_before_its_login_follow_it_in_order(backend, gateways) -> None:
    """Lines read before the login are kept and sent once it is done, in order."""
    gw = gateways(backend)
    code, out, err = await run_script_client(gw.port, "early", "secret123", b"one\ntwo\nthree\n")
    assert code == 0, err
    assert [t for _, _, t in messages(out.splitlines())] == ["one", "two", "three"]


async def test_client_reconnects_to_another_gateway_and_shows_what_it_missed(
    redis_url, gateways
) -> None:
    g1, g2 = gateways(redis_url), gateways(redis_url)
    a = PlainClient(f"127.0.0.1:{g1.port},127.0.0.1:{g2.port}", "alice")
    b = PlainClient(f"127.0.0.1:{g2.port}", "bob")
    try:
        await a.expect("* ready")
        await b.expect("* ready")
        a.send("/chats ops")
        await a.expect("joined #ops")
        b.send("/chats ops")
        await b.expect("joined #ops")
        b.send("before the crash")
        await a.expect("before the crash")
        await shown_recorded(redis_url, "alice", "c:ops")
        g1.kill()
        for i in range(3):
            b.send(f"missed {i}")
        b.send("/send alice missed privately")
        await b.expect("missed privately")
        await a.expect("missed privately", timeout=20)
        shown = messages(a.lines)
        assert [t for *_, t in shown].count("before the crash") == 1
        assert [m for m in shown if m[2].startswith("missed")] == [
            ("#ops", "bob", "missed 0"),
            ("#ops", "bob", "missed 1"),
            ("#ops", "bob", "missed 2"),
            ("@bob", "bob", "missed privately"),
        ]
        a.send("back in ops")  # the current chat survived the reconnect
        assert messages([await b.expect("back in ops")]) == [("#ops", "alice", "back in ops")]
    finally:
        a.close()
        b.close()


async def test_client_skips_a_dead_and_a_full_gateway_without_waiting(
    redis_url, gateways, clients
) -> None:
    """A server list whose first entry is down and second full: the client goes straight
    on to the third, with no backoff in between (it used to wait 0.25-0.5 s, then 0.5-1 s,
    before each next server; in a reconnect storm that ladder took tens of seconds)."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    full = gateways(redis_url, "--max-connections", "1")
    live = gateways(redis_url)
    holder = await clients(full.port)  # takes the full gateway's only connection
    await holder.expect("nickname")
    a = PlainClient(f"127.0.0.1:{dead},127.0.0.1:{full.port},127.0.0.1:{live.port}", "alice")
    try:
        await a.expect("* ready")
    finally:
        a.close()
    assert a.proc.stderr is not None
    status = a.proc.stderr.read().decode().splitlines()
    assert status[:3] == [
        f"client: cannot reach 127.0.0.1:{dead} (ConnectionRefusedError: nothing listens "
        "there); trying the next server",
        "client: server busy: this gateway is full, try another one",
        f"client: connection to 127.0.0.1:{full.port} closed before login; trying the next server",
    ], status
    assert not any("retrying in" in line for line in status), status


class Terminal:
    """client.py in a real terminal: a tmux session of its own, keys in, screen out."""

    def __init__(self, tmp_path, command: str, name: str = "ui") -> None:
        exe = shutil.which("tmux")
        if exe is None:
            if IN_CI:
                pytest.fail("tmux is needed for the terminal UI tests")
            pytest.skip("tmux not installed")
        self.tmux, self.sock, self.name = exe, str(tmp_path / "tmux.sock"), name
        self.run("new-session", "-d", "-s", name, "-x", "100", "-y", "20", command)

    def run(self, *args: str) -> str:
        return subprocess.run(
            [self.tmux, "-S", self.sock, *args], check=True, capture_output=True, text=True
        ).stdout

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-t", self.name, "-p")

    async def wait(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} not on screen:\n{self.screen()}")

    def alive(self) -> bool:
        return (
            subprocess.run(
                [self.tmux, "-S", self.sock, "has-session", "-t", self.name], capture_output=True
            ).returncode
            == 0
        )

    def close(self) -> None:
        subprocess.run([self.tmux, "-S", self.sock, "kill-server"], capture_output=True)


async def test_terminal_ui_keeps_typed_input_while_messages_arrive(
    backend, gateways, tmp_path
) -> None:
    gw = gateways(backend)
    term = Terminal(
        tmp_path,
        f"cd {ROOT} && {sys.executable} client.py --server 127.0.0.1:{gw.port} --nick carol",
    )
    run, screen, wait_screen, name = term.run, term.screen, term.wait, term.name
    try:
        await wait_screen("new nickname carol: choose a password:")  # asked once connected
        run("send-keys", "-t", name, "carol-pass", "Enter")
        await wait_screen("ready: logged in as carol")
        assert "carol-pass" not in screen()  # never echoed
        run("send-keys", "-t", name, "half typed wor")
        await wait_screen("#general> half typed wor")
        bob = PlainClient(f"127.0.0.1:{gw.port}", "bob")
        try:
            await bob.expect("* ready")
            bob.send("incoming one")
            bob.send("/send carol incoming private")
            await wait_screen("incoming private")
            # the prompt is erased while a message is printed above it, then drawn again:
            # read the screen once it is back
            s = await wait_screen("#general> half typed wor")
            lines = [line.rstrip() for line in s.splitlines()]
            assert any(line.endswith("#general <bob> incoming one") for line in lines)
            assert any(line.endswith("@bob <bob> incoming private") for line in lines)
            # The input line is intact, below the messages.
            prompt_row = next(i for i, line in enumerate(lines) if line.startswith("#general> "))
            assert lines[prompt_row] == "#general> half typed wor"
            assert prompt_row > max(i for i, line in enumerate(lines) if "incoming" in line)
            run("send-keys", "-t", name, "ds", "Enter")
            assert messages([await bob.expect("half typed words")]) == [
                ("#general", "carol", "half typed words")
            ]
            run("send-keys", "-t", name, "/cha", "Tab")
            await wait_screen("#general> /chats")  # Tab completed the command
            run("send-keys", "-t", name, "games", "Enter")
            await wait_screen("#games>")
        finally:
            bob.close()
        run("send-keys", "-t", name, "/help", "Enter")
        await wait_screen("Up/Down walk your input history")  # answered by the client itself
        run("send-keys", "-t", name, "C-d")
        await eventually(lambda: not term.alive(), "the client exiting on Ctrl+D", timeout=10)
    finally:
        term.close()


async def test_terminal_ui_ctrl_c_leaves_cleanly(backend, gateways, tmp_path) -> None:
    gw = gateways(backend)
    term = Terminal(
        tmp_path,
        f"cd {ROOT} && {sys.executable} client.py --server "
        f"127.0.0.1:{gw.port} --nick dora; echo exit=$?; sleep 30",
    )
    try:
        await term.wait("new nickname dora: choose a password:")
        term.keys("dora-pass", "Enter")
        await term.wait("ready: logged in as dora")
        term.keys("C-c")
        screen = await term.wait("exit=0")
        assert "Traceback" not in screen and "bye" in screen
    finally:
        term.close()


async def test_login_errors_are_shown_plainly(backend, gateways) -> None:
    gw = gateways(backend)
    ok = PlainClient(f"127.0.0.1:{gw.port}", "erin", "erin-password")
    try:
        await ok.expect("* ready")
    finally:
        ok.close()
    code, _, err = await run_script_client(gw.port, "erin", "not-erins-password", b"")
    assert code == 1
    assert "login refused: wrong password" in err
    assert "Traceback" not in err

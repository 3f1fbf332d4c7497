"""client.py against real gateways: plain mode, reconnect, and the terminal UI in tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import IN_CI
from tests.helpers import ROOT, messages


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
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


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
    env = dict(os.environ, CHAT_PASSWORD="secret123")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "client.py"),
        "--server",
        f"127.0.0.1:{gw.port}",
        "--nick",
        "scripted",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"from a script\n/who\n"), 20)
    assert proc.returncode == 0, err
    text = out.decode()
    assert "* ready: logged in as scripted" in text
    assert messages(text.splitlines()) == [("#general", "scripted", "from a script")]
    assert "* online in #general (1): scripted" in text
    assert b"Traceback" not in err


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
        await asyncio.sleep(1.3)  # let the cursor flush
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


def _tmux() -> str:
    exe = shutil.which("tmux")
    if exe is None:
        if IN_CI:
            pytest.fail("tmux is needed for the terminal UI test")
        pytest.skip("tmux not installed")
    return exe


async def test_terminal_ui_keeps_typed_input_while_messages_arrive(
    backend, gateways, tmp_path
) -> None:
    tmux = _tmux()
    gw = gateways(backend)
    sock = str(tmp_path / "tmux.sock")
    name = "chatui"

    def run(*args: str) -> str:
        return subprocess.run(
            [tmux, "-S", sock, *args], check=True, capture_output=True, text=True
        ).stdout

    def screen() -> str:
        return run("capture-pane", "-t", name, "-p")

    async def wait_screen(text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = screen()
            if text in s:
                return s
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} not on screen:\n{screen()}")

    run(
        "new-session",
        "-d",
        "-s",
        name,
        "-x",
        "100",
        "-y",
        "20",
        f"cd {ROOT} && {sys.executable} client.py --server 127.0.0.1:{gw.port} --nick carol",
    )
    try:
        await wait_screen("password for carol")
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
            s = await wait_screen("incoming private")
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
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (
                subprocess.run(
                    [tmux, "-S", sock, "has-session", "-t", name], capture_output=True
                ).returncode
                != 0
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("client did not exit on Ctrl+D")
    finally:
        subprocess.run([tmux, "-S", sock, "kill-server"], capture_output=True)


async def test_terminal_ui_ctrl_c_leaves_cleanly(backend, gateways, tmp_path) -> None:
    tmux = _tmux()
    gw = gateways(backend)
    sock = str(tmp_path / "tmux.sock")

    def run(*args: str) -> str:
        return subprocess.run(
            [tmux, "-S", sock, *args], check=True, capture_output=True, text=True
        ).stdout

    async def wait_for(text: str) -> str:
        screen = ""
        for _ in range(100):
            screen = run("capture-pane", "-t", "ui", "-p")
            if text in screen:
                return screen
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} not on screen:\n{screen}")

    run(
        "new-session",
        "-d",
        "-s",
        "ui",
        "-x",
        "100",
        "-y",
        "20",
        f"cd {ROOT} && {sys.executable} client.py --server 127.0.0.1:{gw.port} --nick dora"
        "; echo exit=$?; sleep 30",
    )
    try:
        await wait_for("password for dora")
        run("send-keys", "-t", "ui", "dora-pass", "Enter")
        await wait_for("ready: logged in as dora")
        run("send-keys", "-t", "ui", "C-c")
        screen = await wait_for("exit=0")
        assert "Traceback" not in screen and "bye" in screen
    finally:
        subprocess.run([tmux, "-S", sock, "kill-server"], capture_output=True)


async def test_login_errors_are_shown_plainly(backend, gateways) -> None:
    gw = gateways(backend)
    ok = PlainClient(f"127.0.0.1:{gw.port}", "erin", "erin-password")
    try:
        await ok.expect("* ready")
    finally:
        ok.close()
    env = dict(os.environ, CHAT_PASSWORD="not-erins-password")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "client.py"),
        "--server",
        f"127.0.0.1:{gw.port}",
        "--nick",
        "erin",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, err = await asyncio.wait_for(proc.communicate(b""), 30)
    assert proc.returncode == 1
    assert "login refused: wrong password" in err.decode()
    assert b"Traceback" not in err

"""client.py as a new user meets it (issue 20): it connects before asking anything, asks the
password again after a typo, never undoes a moderator's kick, never registers an account
that vanished from the server without asking, lists every command in /help and completes
chats that /get_chats showed. Plain mode for scripts, tmux for the terminal UI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from tests.e2e.test_admin import admin
from tests.e2e.test_client import Terminal
from tests.helpers import ROOT, Client, Gateway, assert_quiet, eventually


class Plain:
    """`client.py --plain` with stdin held open (a script that keeps running)."""

    def __init__(self, port: int, nick: str, password: str = "secret123") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "client.py"), "--plain", "--server",
             f"127.0.0.1:{port}", "--nick", nick],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, CHAT_PASSWORD=password),
        )  # fmt: skip

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if line.startswith(b"* ready"):
                return
            assert line, "client.py exited before logging in"
        raise AssertionError("client.py did not log in")

    async def exits(self, timeout: float = 15) -> tuple[int, str]:
        """Its exit status and stderr, once it has exited by itself."""
        code = await asyncio.to_thread(self.proc.wait, timeout)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read().decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _gateway(tmp_path, port: int | None = None, *args: str) -> Gateway:
    """An embedded gateway that keeps nothing, not started yet (on `port`, if given)."""
    gw = Gateway(None, tmp_path, "--data", "none", *args)
    if port is not None:
        gw.port = port
    return gw


async def test_a_kick_is_final_the_client_says_so_and_does_not_log_in_again(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url)
    mod = await clients(gw.port)
    await mod.login("mod")
    code, _, err = await admin(redis_url, "mod", "mod")
    assert code == 0, err
    hal = Plain(gw.port, "hal")
    try:
        await hal.ready()
        await mod.send("/kick hal")
        assert await mod.line() == "* hal was disconnected (every session)"
        code, err = await hal.exits()
    finally:
        hal.kill()
    assert code == 1
    assert "client: you were disconnected by a moderator; not reconnecting" in err, err
    assert gw.output().count("user=hal method=") == 1  # one login
    await assert_quiet(  # no second one: the client has exited, so only one it sent just
        lambda: gw.output().count("user=hal method="), 0.5, "a login sent just before exiting"
    )


async def test_an_account_gone_from_the_server_is_not_registered_again_silently(
    tmp_path, clients
) -> None:
    first = _gateway(tmp_path).start()
    ivy = Plain(first.port, "ivy")
    second: Gateway | None = None
    try:
        await ivy.ready()
        first.stop()  # the gateway comes back with nothing kept: ivy's account is gone
        second = _gateway(tmp_path, first.port).start()
        code, err = await ivy.exits()
        assert code == 1
        assert (
            "client: login refused: the account ivy no longer exists on the server (deleted "
            "by an operator, or expired); not registering it again"
        ) in err, err
        c = await clients(second.port)
        await c.expect("nickname")
        await c.send("ivy")
        assert (await c.line()).startswith("* New nickname ivy")  # nothing was registered
    finally:
        ivy.kill()
        first.kill()
        if second is not None:
            second.kill()


async def test_the_terminal_client_asks_before_registering_a_gone_account(tmp_path) -> None:
    first = _gateway(tmp_path).start()
    term = Terminal(
        tmp_path,
        f"cd {ROOT} && CHAT_PASSWORD=jo-pass {sys.executable} client.py --server "
        f"127.0.0.1:{first.port} --nick jo; echo exit=$?; sleep 30",
    )
    second: Gateway | None = None
    try:
        await term.wait("ready: logged in as jo")
        first.stop()
        second = _gateway(tmp_path, first.port).start()
        screen = await term.wait("register jo again as a new account? [y/N]", timeout=20)
        assert "jo no longer exists on the server" in screen
        assert screen.count("ready: logged in as jo") == 1  # not registered behind our back
        term.keys("y", "Enter")
        await term.wait("reconnected to 127.0.0.1")
        c = await Client.connect(second.port)
        await c.expect("nickname")
        await c.send("jo")
        assert await c.line() == "* Password for jo:"  # registered, since the user said so
        await c.close()
    finally:
        term.close()
        first.kill()
        if second is not None:
            second.kill()


async def test_the_terminal_client_connects_first_then_asks_and_lists_and_completes(
    tmp_path,
) -> None:
    gw = _gateway(tmp_path)  # nothing listens there yet
    term = Terminal(
        tmp_path,
        f"cd {ROOT} && {sys.executable} client.py --server 127.0.0.1:{gw.port}; "
        "echo exit=$?; sleep 30",
    )
    try:
        screen = await term.wait(f"cannot reach 127.0.0.1:{gw.port}")
        assert "nickname:" not in screen and "password" not in screen  # nothing asked yet
        gw.start()
        await term.wait("\nnickname:", timeout=20)  # asked once a server answered
        term.keys("fay", "Enter")
        await term.wait("new nickname fay: choose a password:")
        term.keys("fay-pass", "Enter")
        screen = await term.wait("ready: logged in as fay")
        assert "fay-pass" not in screen

        other = await Client.connect(gw.port)
        await other.login("gil")
        await other.send("/chats rustaceans")
        await other.expect("joined #rustaceans")
        term.keys("/get_chats", "Enter")
        await term.wait("#rustaceans (1 member")
        term.keys("/chats ru", "Tab")  # the chat from /get_chats, without its #
        await term.wait("#general> /chats rustaceans")
        term.keys("Enter")
        await term.wait("#rustaceans>")
        await other.close()

        term.keys("/help", "Enter")
        screen = await term.wait("disconnect every session of nick")
        for command in ("/where", "/token", "/ban <nick> [time]", "/unban <nick>", "/kick"):
            assert command in screen, command
    finally:
        term.close()
        gw.kill()


async def test_the_terminal_client_asks_again_after_a_wrong_password(tmp_path) -> None:
    gw = _gateway(tmp_path).start()
    term: Terminal | None = None
    try:
        owner = await Client.connect(gw.port)
        await owner.login("gus", "gus-pass")
        await owner.close()
        term = Terminal(
            tmp_path,
            f"cd {ROOT} && {sys.executable} client.py --server 127.0.0.1:{gw.port} "
            "--nick gus; echo exit=$?; sleep 30",
        )
        await term.wait("password for gus:")
        term.keys("gus-typo", "Enter")
        screen = await term.wait("-- wrong password")
        assert "exit=" not in screen and "login refused" not in screen
        await eventually(  # asked again
            lambda: term.screen().count("password for gus:") == 2, "the password asked again"
        )
        term.keys("gus-pass", "Enter")
        screen = await term.wait("ready: logged in as gus")
        assert "gus-typo" not in screen and "gus-pass" not in screen
    finally:
        if term is not None:
            term.close()
        gw.kill()

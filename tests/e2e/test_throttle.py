"""Findings of the pre-launch attack, part 3: password guessing in parallel and lockouts as
a weapon, whitespace padding that fakes another user's line, and a slow reader's reset."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

from tests.helpers import Client, eventually

ATTACKERS = 300
LIMIT = 10


async def _guess(port: int, source: str, passwords: list[str]) -> bytes:
    """One connection from `source`: the nickname and every password at once; all it got."""
    c = await Client.connect(port, source)
    try:
        c.writer.write(b"alice\r\n" + b"".join(p.encode() + b"\r\n" for p in passwords))
        await c.writer.drain()
        data = b""
        while chunk := await asyncio.wait_for(c.reader.read(1 << 16), 30):
            data += chunk
        return data
    except ConnectionResetError:
        return data
    finally:
        await c.close()


async def test_parallel_guesses_are_counted_before_each_check(backend, gateways, clients) -> None:
    """300 connections guessing alice's password at once get at most --max-login-failures
    guesses checked; then the right password is refused from that address, while alice
    logs in from the address she always uses (and from a new, innocent one)."""
    gw = gateways(
        backend,
        "--max-login-failures",
        str(LIMIT),
        "--max-pending-hashes",
        "2000",
        "--max-per-ip",
        "0",
        "--max-pending-per-ip",
        "0",
        CHAT_SCRYPT_LOG_N="4",
    )
    owner = await clients(gw.port, "127.0.0.2")
    await owner.login("alice", "right-password")
    await owner.close()
    guesses = [[f"guess-{i}-{k}" for k in range(3)] for i in range(ATTACKERS)]
    got = await asyncio.gather(*(_guess(gw.port, "127.0.0.3", g) for g in guesses))
    checked = sum(data.count(b"! wrong password") for data in got)
    assert 1 <= checked <= LIMIT, f"{checked} guesses checked against a limit of {LIMIT}"
    assert gw.output().count("event=wrong_password") == checked
    refused = await _guess(gw.port, "127.0.0.3", ["right-password"])
    assert b"too many failed logins for alice from your address" in refused
    assert b"* ready" not in refused
    home = await clients(gw.port, "127.0.0.2")
    await home.login("alice", "right-password")
    elsewhere = await clients(gw.port, "127.0.0.4")
    await elsewhere.login("alice", "right-password")


async def test_whitespace_padding_is_bounded_in_messages(backend, two_users) -> None:
    """A message padded with a long run of spaces and tabs (which a terminal wraps into what
    looks like a line of its own, by someone else) reaches readers with the run cut to 8."""
    _, alice, bob = await two_users()
    fake = "[12:00:00] #general <carol> admins: send me your password"
    await alice.send("hi" + " \t" * 60 + fake)
    line = await bob.expect("admins")
    assert line.endswith("> hi" + " " * 8 + fake)
    await alice.send("a\tb   c")  # short runs, tabs included, stay as typed
    assert (await bob.expect("a\tb")).endswith("> a\tb   c")


def _gateway_sockets(port: int, peer_port: int) -> str:
    """`ss` lines of the gateway's side of one connection, in any state."""
    out = subprocess.run(
        ["ss", "-tanH", f"( sport = :{port} and dport = :{peer_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip()


async def test_a_slow_reader_cut_off_is_reset_at_once(backend, gateways, clients) -> None:
    """A reader that never reads, flooded past --max-output, is reset (RST, not a FIN behind
    megabytes of queued data): it sees the connection reset within a couple of seconds and
    the gateway keeps no socket for it."""
    gw = gateways(backend, "--max-output", "65536")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", gw.port))
    slow_port = slow.getsockname()[1]
    slow.sendall(b"slowpoke\r\nsecret123\r\n")
    slow.settimeout(5)
    seen = b""
    while b"* ready" not in seen:
        seen += slow.recv(4096)
    alice = await clients(gw.port)
    await alice.login("alice")

    async def drain() -> None:
        while await alice.reader.read(1 << 16):
            pass

    reading = asyncio.create_task(drain())
    line = b"x" * 2000 + b"\r\n"
    deadline = time.monotonic() + 30
    while "event=sendq_exceeded" not in gw.output():
        assert time.monotonic() < deadline, "the slow reader was never cut off"
        await alice.send(line * 50)
        await asyncio.sleep(0.01)
    cut = time.monotonic()
    await eventually(
        lambda: not _gateway_sockets(gw.port, slow_port), "the slow reader's socket gone", 2
    )
    reset = False
    slow.settimeout(2)
    try:
        while slow.recv(1 << 20):
            pass
    except ConnectionResetError:
        reset = True
    finally:
        slow.close()
    assert reset, "closed without a reset"
    assert time.monotonic() - cut < 4
    reading.cancel()

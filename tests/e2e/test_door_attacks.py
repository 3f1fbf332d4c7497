"""The web and IRC doors attacked (issue 22): each attack replayed against a real gateway,
with what another user notices measured, on the connection kit every door now shares.

A stall is measured as in test_attacks.py: a logged-in telnet user's `/help` round trips
during the attack, 95 % under 200 ms and none over 1 s. Memory is the gateway's RSS
before and after.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.e2e.test_attacks import _help_lines, _probe, stalled
from tests.helpers import Client, assert_quiet, eventually, free_port

_KEY = base64.b64encode(os.urandom(16)).decode()


def _upgrade(port: int, path: str = "/ws", host: str | None = None, origin: str = "") -> bytes:
    host = host or f"127.0.0.1:{port}"
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {_KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _masked(opcode: int, payload: bytes) -> bytes:
    """One client frame (masked with a zero key: the payload stays readable)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    return head + b"\x00\x00\x00\x00" + payload


class RawWebSocket:
    """A WebSocket client on a plain blocking socket: every byte under the test's control."""

    def __init__(self, port: int, source: str = "127.0.0.1", rcvbuf: int = 0, **kw: str) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(_upgrade(port, **kw))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.buf = head.partition(b"\r\n\r\n")[2]

    def send(self, frame: dict[str, object]) -> None:
        self.sock.sendall(_masked(0x1, json.dumps(frame).encode()))

    def frames(self, until: str, timeout: float = 10) -> list[dict[str, object]]:
        """Text frames, read until one of type `until`."""
        out: list[dict[str, object]] = []
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            while len(self.buf) >= 2:
                n = self.buf[1] & 0x7F
                start = 2
                if n == 126:
                    n, start = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127:
                    n, start = struct.unpack("!Q", self.buf[2:10])[0], 10
                if len(self.buf) < start + n:
                    break
                op, payload = self.buf[0] & 0x0F, self.buf[start : start + n]
                self.buf = self.buf[start + n :]
                if op == 0x1:
                    frame = json.loads(payload)
                    out.append(frame)
                    if frame.get("type") == until:
                        return out
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        raise AssertionError(f"no {until!r} frame: {out}")

    def closed_by_server(self, timeout: float) -> bool:
        """Whether the server ends the connection within `timeout` (reading what it sends)."""
        self.sock.settimeout(0.2)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


_WS_FLOODER = r"""
import selectors, socket, sys, time
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
chunk = bytes.fromhex(sys.argv[4]) * int(sys.argv[5])
upgrade = bytes.fromhex(sys.argv[6])
sel = selectors.DefaultSelector()
def open_one():
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(upgrade)
        head = b""
        while b"\r\n\r\n" not in head:
            part = s.recv(4096)
            if not part:
                raise OSError("closed")
            head += part
    except OSError:
        s.close()
        time.sleep(0.01)
        return
    s.setblocking(False)
    sel.register(s, selectors.EVENT_WRITE)
for _ in range(count):
    open_one()
print("ready", flush=True)
while True:
    events = sel.select(timeout=0.1)
    for key, _ in events:
        try:
            key.fileobj.send(chunk)
        except BlockingIOError:
            pass
        except OSError:  # dropped by the gateway: an attacker comes back at once
            sel.unregister(key.fileobj)
            key.fileobj.close()
            open_one()
    while len(sel.get_map()) < count:
        open_one()
"""


@contextmanager
def _ws_flood(port: int, connections: int, unit: bytes, repeat: int) -> Iterator[None]:
    """`connections` WebSockets (upgraded, never logged in) writing `unit` * `repeat` as
    fast as the gateway reads, each reconnecting at once when dropped; from another
    process, so neither the flood nor the GIL delays the probe here."""
    args = [str(port), str(connections), "127.0.0.3", unit.hex(), str(repeat)]
    args.append(_upgrade(port).hex())
    proc = subprocess.Popen([sys.executable, "-c", _WS_FLOODER, *args], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield
    finally:
        proc.kill()
        proc.wait()


async def _stall_under_ws_flood(gw, probe: Client, unit: bytes) -> list[float]:  # type: ignore[no-untyped-def]
    await _help_lines(probe)
    with _ws_flood(gw.web_port, 20, unit, 1400):
        await asyncio.sleep(0.5)
        rtts = await _probe(probe, 3.0)
    print(f"/help round trips under the flood: {len(rtts)}, slowest {max(rtts) * 1000:.0f} ms")
    return rtts


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024  # type: ignore[union-attr]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_a_flood_of_tiny_websocket_pings_does_not_stall_other_users(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_MAX_PER_IP="0")
    probe = await clients(gw.port)
    await probe.login("probe")
    rtts = await _stall_under_ws_flood(gw, probe, _masked(0x9, b""))
    assert not stalled(rtts), stalled(rtts)


async def test_a_flood_of_tiny_websocket_messages_does_not_stall_other_users(
    redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_MAX_PER_IP="0")
    probe = await clients(gw.port)
    await probe.login("probe")
    rtts = await _stall_under_ws_flood(gw, probe, _masked(0x1, b"{}"))
    assert not stalled(rtts), stalled(rtts)


async def test_a_ping_flood_from_a_client_that_never_reads_is_dropped_and_memory_returns(
    redis_url, gateways
) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    assert gw.proc is not None
    await asyncio.sleep(0.5)
    before = _rss(gw.proc.pid)
    ws = RawWebSocket(gw.web_port, rcvbuf=4096)
    assert ws.status == 101
    ws.sock.settimeout(0.5)
    sent, flood = 0, _masked(0x9, b"x" * 125) * 500  # 65 KB of pings a write
    try:
        while sent < 50 << 20:  # what a client that never reads can push: at most 50 MB
            sent += ws.sock.send(flood)
    except OSError:
        pass  # the gateway dropped it
    await asyncio.sleep(1.0)
    after = _rss(gw.proc.pid)
    assert ws.closed_by_server(5), f"still open after {sent >> 20} MB of pings"
    ws.close()
    print(f"pings sent before the drop: {sent} bytes; RSS {before >> 10} -> {after >> 10} KiB")
    assert after < before * 1.1, f"RSS grew from {before >> 10} to {after >> 10} KiB"


async def test_a_websocket_that_never_logs_in_is_cut_at_the_deadline_even_if_it_never_reads(
    redis_url, gateways
) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_LOGIN_TIMEOUT="1")
    ws = RawWebSocket(gw.web_port, rcvbuf=4096)
    assert ws.status == 101
    start = time.monotonic()
    # never read: the login prompt and the timeout's goodbye sit in the buffers; the
    # deadline must still end the connection (closing grace: 5 s)
    assert ws.closed_by_server(10)
    assert time.monotonic() - start < 8
    ws.close()


async def test_half_open_web_requests_count_against_the_address_limit_from_accept(
    redis_url, gateways, clients
) -> None:
    gw = gateways(
        redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_MAX_PER_IP="20", CHAT_LOGIN_TIMEOUT="2"
    )
    socks = []
    try:
        for _ in range(60):  # from one address: a request head that never ends
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.4", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", gw.web_port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        answers = [b""] * len(socks)

        def answered(which: list[int]) -> list[bytes]:
            for k in which:
                answers[k] = answers[k] or _answer_now(socks[k])
            return [answers[k] for k in which]

        def refused() -> int:
            return sum(a.startswith(b"HTTP/1.1 503") for a in answered(list(range(60))))

        await eventually(lambda: refused() >= 40, "40 of 60 half-open requests refused", 1.0)
        held = [k for k, a in enumerate(answers) if a == b""]
        # somebody else still gets in at once
        user = await clients(gw.port)
        await user.expect("nickname", timeout=2)
        # the request deadline (2 s) cuts the 20 held ones too
        await eventually(lambda: all(answered(held)), "an answer to every held request", 3.5)
        late = answered(held)
        assert all(a.startswith(b"HTTP/1.1 408") for a in late), late
    finally:
        for s in socks:
            s.close()


def _answer_now(s: socket.socket) -> bytes:
    """What the server sent so far, without waiting (b"" if nothing yet; b"closed" if it
    hung up)."""
    s.setblocking(False)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return b""
    except OSError:
        return b"closed"
    return data or b"closed"


async def test_web_readers_that_stop_reading_are_dropped_past_the_output_bound(
    redis_url, gateways, clients
) -> None:
    """Pages that stop reading while a chat is busy: each is dropped once more than
    --max-output bytes wait for it (counted in bytes in flight: queued and in the
    transport), and the gateway spends no CPU on them meanwhile (a drain that polled every
    5 ms held 13 % of a core for 60 of them)."""
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    assert gw.proc is not None
    stuck = []
    for i in range(10):
        ws = RawWebSocket(gw.web_port, rcvbuf=4096)
        ws.send({"type": "login", "nick": f"stuck{i}", "password": "secret123"})
        ws.frames(until="ready")  # and never read again
        stuck.append(ws)
    alice = await clients(gw.port)
    await alice.login("alice")
    for i in range(2000):  # 8 MB into #general: twice what a socket's kernel buffers hold
        await alice.send(f"{i} " + "x" * 4000)
    await alice.expect("1999 x", timeout=60)
    await gw.logged("sendq_exceeded door=web", count=10, timeout=10)
    dropped = gw.output().count("sendq_exceeded door=web")
    start = _cpu_seconds(gw.proc.pid)
    await asyncio.sleep(2)
    spent = _cpu_seconds(gw.proc.pid) - start
    print(f"10 stuck readers: {dropped} dropped, {spent:.2f} s of CPU in 2 s")
    for ws in stuck:
        ws.close()
    assert dropped == 10, f"{dropped} of 10 stuck web readers were dropped"
    assert spent < 0.1, f"the gateway spent {spent:.2f} s of CPU in 2 s"


async def test_history_requests_are_bounded_per_user(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url, CHAT_HISTORY_PER_MINUTE="500")
    alice = await clients(gw.port)
    await alice.login("alice")
    for i in range(200):
        await alice.send(f"line {i}")
    await alice.expect("line 199")
    for _ in range(2):
        await alice.send("/history 200")
        await alice.expect("line 199")
    await alice.send("/history 200")
    refused = await alice.expect("! slow down")
    assert "at most 500 messages a minute" in refused
    await alice.send("/chats general")  # a join still works; its history waits too
    assert "you are in #general" in await alice.expect("#general")


async def test_deeply_nested_json_gets_an_error_frame_not_a_traceback(redis_url, gateways) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    ws = RawWebSocket(gw.web_port)
    ws.sock.sendall(_masked(0x1, b"[" * 2500 + b"]" * 2500))
    error = ws.frames(until="error")[-1]
    assert error["code"] == "bad_input"
    ws.send({"type": "login", "nick": "deep", "password": "secret123"})
    ws.frames(until="ready")  # the connection still works
    ws.close()
    assert "Traceback" not in gw.output()


async def test_a_huge_request_line_to_the_metrics_port_leaves_no_traceback(
    redis_url, gateways
) -> None:
    port = free_port()
    gw = gateways(redis_url, CHAT_METRICS_PORT=str(port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    await assert_quiet(
        lambda: "Traceback" in gw.output(), 0.2, "a traceback is logged as the request ends"
    )
    assert "Traceback" not in gw.output()


async def test_a_dns_rebinding_page_cannot_open_the_websocket_unless_its_origin_is_pinned(
    redis_url, gateways
) -> None:
    web = free_port()
    gw = gateways(redis_url, CHAT_WEB_PORT=str(web))
    # an attacker's name resolving to the gateway: the page's Origin and the Host agree
    evil = f"rebind.example:{web}"
    assert RawWebSocket(web, host=evil, origin=f"http://{evil}").status == 403
    assert "origin_not_pinned" in gw.output() and "--web-origins" in gw.output()
    # the page's own origin by address or localhost still works
    assert RawWebSocket(web, origin=f"http://127.0.0.1:{web}").status == 101
    loc = f"localhost:{web}"
    assert RawWebSocket(web, host=loc, origin=f"http://{loc}").status == 101
    # an operator who publishes the chat under a name pins it
    pinned = gateways(
        redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_WEB_ORIGINS="https://chat.example"
    )
    ok = RawWebSocket(pinned.web_port, host="chat.example", origin="https://chat.example")
    assert ok.status == 101

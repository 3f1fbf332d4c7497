"""permessage-deflate on the page's WebSocket (RFC 7692): offered by every browser, each
message compressed on its own, a compressed client message bounded once inflated.

Raw sockets, so that every bit of every frame is the test's to check; the page's own
tests (test_web_browser.py) run through Chromium, which always negotiates it."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import zlib

import pytest

from tests.helpers import free_port

_TAIL = b"\x00\x00\xff\xff"
MAX_LINE = 2000  # the gateways below: a WebSocket message may be 2000 + 1024 bytes


def _compress(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(_TAIL)
    return out[:-4]


def _client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    head = bytes((b0, 0x80 | n)) if n < 126 else struct.pack("!BBH", b0, 0xFE, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Frame:
    def __init__(self, b0: int, payload: bytes) -> None:
        self.rsv1 = bool(b0 & 0x40)
        self.opcode = b0 & 0x0F
        self.raw = payload
        self.data = zlib.decompressobj(-15).decompress(payload + _TAIL) if self.rsv1 else payload

    def json(self) -> dict[str, object]:
        return json.loads(self.data)  # type: ignore[no-any-return]


class DeflateSocket:
    """A WebSocket client that offers `extensions` and shows every frame's RSV1 bit."""

    def __init__(self, port: int, extensions: str | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, head
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in head.decode().split("\r\n")[1:])
        }

    def send(self, frame: dict[str, object], deflate: bool) -> None:
        data = json.dumps({"v": 1, **frame}).encode()
        if deflate:
            self.sock.sendall(_client_frame(0x1, _compress(data), rsv1=True))
        else:
            self.sock.sendall(_client_frame(0x1, data))

    def next(self, timeout: float = 10) -> Frame | None:
        """The next frame, or None once the server closed the connection."""
        end = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                n, start = self.buf[1] & 0x7F, 2
                if n == 126:
                    n, start = struct.unpack("!H", self.buf[2:4])[0], 4
                elif n == 127:
                    n, start = struct.unpack("!Q", self.buf[2:10])[0], 10
                if len(self.buf) >= start + n:
                    f = Frame(self.buf[0], self.buf[start : start + n])
                    self.buf = self.buf[start + n :]
                    return f
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk

    def until(self, kind: str) -> list[Frame]:
        got = []
        while True:
            f = self.next()
            assert f is not None, f"closed before a {kind} frame: {[g.data for g in got]}"
            got.append(f)
            if f.opcode == 0x1 and f.json().get("type") == kind:
                return got

    def close_code(self) -> int:
        """The code of the server's close frame (after any data frames)."""
        while True:
            f = self.next()
            assert f is not None, "closed without a close frame"
            if f.opcode == 0x8:
                return int.from_bytes(f.data[:2], "big")

    def login(self, nick: str, deflate: bool) -> list[Frame]:
        self.until("login_required")
        self.send({"type": "login", "nick": nick, "password": "secret123"}, deflate)
        return self.until("ready")


@pytest.fixture
def web(gateways, redis_url):  # type: ignore[no-untyped-def]
    return gateways(redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_MAX_LINE=str(MAX_LINE))


async def test_a_browser_offer_is_agreed_and_bursts_arrive_compressed(web, clients) -> None:
    ws = DeflateSocket(web.web_port, "permessage-deflate; client_max_window_bits")
    agreed = ws.headers.get("sec-websocket-extensions", "")
    assert agreed.startswith("permessage-deflate"), ws.headers
    assert "server_no_context_takeover" in agreed and "client_no_context_takeover" in agreed
    ws.login("zip", deflate=True)  # the login frame itself compressed
    tel = await clients(web.port)
    await tel.login("tess")
    await tel.send("\r\n".join(f"line {i} of a burst" for i in range(30)))
    await tel.expect("line 29 of a burst")
    items: list[str] = []
    compressed = []
    while len(items) < 30:
        f = ws.next()
        assert f is not None
        body = f.json()
        if body["type"] == "messages":
            items += [i["text"] for i in body["items"]]  # type: ignore[attr-defined, index]
            compressed.append((f.rsv1, len(f.raw), len(f.data)))
    assert items == [f"line {i} of a burst" for i in range(30)]
    assert all(rsv1 for rsv1, _, _ in compressed), compressed
    assert sum(c for _, c, _ in compressed) < sum(p for _, _, p in compressed) / 2, compressed
    # a compressed message from the page reaches a telnet reader
    ws.send({"type": "say", "text": "squeezed " + "y" * 300}, deflate=True)
    await tel.expect("squeezed " + "y" * 300)
    # small frames go plain (RSV1 clear): an error frame is tens of bytes
    ws.send({"type": "nonsense"}, deflate=False)
    err = ws.until("error")[-1]
    assert not err.rsv1 and err.json()["code"] == "bad_input"


async def test_without_an_acceptable_offer_nothing_is_compressed(web, clients) -> None:
    for offer in (
        None,
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=7",
    ):
        ws = DeflateSocket(web.web_port, offer)
        assert "sec-websocket-extensions" not in ws.headers, (offer, ws.headers)
        frames = ws.login(f"plain{len(offer or '')}", deflate=False)
        tel = await clients(web.port)
        await tel.login(f"t{len(offer or '')}")
        await tel.send("\r\n".join(f"plain {i} " + "z" * 200 for i in range(10)))
        while True:
            f = ws.next()
            assert f is not None
            frames.append(f)
            if b"plain 9 " in f.data:
                break
        assert not any(f.rsv1 for f in frames)
        # and RSV1 from a client that did not agree it is a protocol error
        ws.send({"type": "say", "text": "x" * 200}, deflate=True)
        assert ws.close_code() == 1002
        await tel.close()


@pytest.mark.parametrize("inflated", [100_000, 5_000_000])
async def test_a_deflate_bomb_is_cut_at_the_message_limit_and_others_chat_on(
    web, clients, inflated: int
) -> None:
    """A message that inflates past the limit closes that connection with 1009 before
    more than the limit is inflated: one frame of 100 bytes (under the wire limit, so
    only the inflated size can refuse it), and 5 MB in fragments."""
    tel = await clients(web.port)
    await tel.login("calm")
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("bomber", deflate=True)
    bomb = _compress(b'{"v": 1, "type": "say", "text": "' + b"A" * inflated + b'"}')
    assert len(bomb) < 10_000
    for i in range(0, len(bomb), 3000):  # fragments under the wire limit
        chunk = bomb[i : i + 3000]
        last = i + 3000 >= len(bomb)
        ws.sock.sendall(_client_frame(0x1 if i == 0 else 0x0, chunk, fin=last, rsv1=i == 0))
    assert ws.close_code() == 1009
    await tel.send("still here")
    await tel.expect("still here")


async def test_a_fragmented_compressed_message_is_inflated_whole(web, clients) -> None:
    tel = await clients(web.port)
    await tel.login("ear")
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("pieces", deflate=True)
    text = "in three parts " + " ".join(str(i) for i in range(200))
    data = _compress(json.dumps({"v": 1, "type": "say", "text": text}).encode())
    third = len(data) // 3
    ws.sock.sendall(_client_frame(0x1, data[:third], fin=False, rsv1=True))
    ws.sock.sendall(_client_frame(0x0, data[third : 2 * third], fin=False))
    ws.sock.sendall(_client_frame(0x0, data[2 * third :], fin=True))
    await tel.expect(text)


async def test_pages_with_and_without_compression_read_one_burst_each_their_way(
    web, clients
) -> None:
    """The burst is kept once compressed and once plain: neither page gets the other's."""
    zipped = DeflateSocket(web.web_port, "permessage-deflate")
    plain = DeflateSocket(web.web_port, None)
    zipped.login("zipped", deflate=True)
    plain.login("plain", deflate=False)
    tel = await clients(web.port)
    await tel.login("mixer")
    lines = [f"burst {i} " + "q" * 150 for i in range(20)]
    await tel.send("\r\n".join(lines))
    for ws, compressed in ((zipped, True), (plain, False)):
        texts: list[str] = []
        while len(texts) < 20:
            f = ws.next()
            assert f is not None
            body = f.json()  # a frame of the other kind would not parse
            if body["type"] == "messages":
                assert f.rsv1 == compressed
                texts += [i["text"] for i in body["items"]]  # type: ignore[attr-defined, index]
        assert texts == lines


async def test_rsv1_on_a_ping_is_a_protocol_error(web) -> None:
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("pinger", deflate=True)
    ws.sock.sendall(_client_frame(0x9, b"hi", rsv1=True))
    assert ws.close_code() == 1002


async def test_the_websockets_library_asking_for_a_full_server_window_gets_compression(
    web,
) -> None:
    """RFC 7692 7.1.2.1: an offered server_max_window_bits is echoed (websockets fails
    the handshake otherwise)."""
    from websockets.asyncio.client import connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    ws = await connect(
        f"ws://127.0.0.1:{web.web_port}/ws",
        extensions=[ClientPerMessageDeflateFactory(server_max_window_bits=15)],
        origin=f"http://127.0.0.1:{web.web_port}",  # type: ignore[arg-type]
    )
    try:
        assert ws.response is not None
        assert "server_max_window_bits=15" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert json.loads(await ws.recv())["type"] == "login_required"
    finally:
        await ws.close()


async def test_rsv1_on_a_continuation_frame_is_a_protocol_error(web) -> None:
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("frag", deflate=True)
    data = _compress(b'{"v": 1, "type": "say", "text": "in two parts"}')
    ws.sock.sendall(_client_frame(0x1, data[:5], fin=False, rsv1=True))
    ws.sock.sendall(_client_frame(0x0, data[5:], fin=True, rsv1=True))
    assert ws.close_code() == 1002


async def test_a_compressed_message_that_does_not_inflate_is_refused(web, clients) -> None:
    tel = await clients(web.port)
    await tel.login("watch")
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("garbage", deflate=True)
    ws.sock.sendall(_client_frame(0x1, b"\xff" * 40, rsv1=True))  # not a deflate stream
    assert ws.close_code() == 1007
    await tel.send("unaffected")
    await tel.expect("unaffected")


async def test_the_token_frame_is_never_compressed(web) -> None:
    """A secret must not share a compressed message with anything (SECURITY.md: CRIME and
    BREACH need both in one); the token frame is under the compression threshold."""
    ws = DeflateSocket(web.web_port, "permessage-deflate")
    ws.login("keeper", deflate=True)
    ws.send({"type": "token"}, deflate=True)
    token = ws.until("token")[-1]
    assert not token.rsv1 and len(token.json()["token"]) == 64  # type: ignore[arg-type]

"""A second door, written here in a few dozen lines, proves that adding a door is a parser
and a renderer over the core and nothing else: a JSON-lines door and the line door share
one core on real loopback sockets, and their users talk."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gateway.admission import Admission
from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Session
from gateway.doors.line.connection import LineConnection, LineDoor, WriteCoalescer
from tests.core.conftest import Chat


def parse(frame: dict[str, Any]) -> cmd.Command:
    kind = frame.get("type")
    if kind == "login":
        return cmd.Nick(str(frame["nick"]))
    if kind == "password":
        return cmd.Password(str(frame["password"]))
    if kind == "say":
        return cmd.Say((str(frame["text"]),))
    if kind == "join":
        return cmd.Join(str(frame["chat"]))
    return cmd.Rejected(f"unknown frame type {kind!r}")


def render(event: ev.Event) -> list[dict[str, Any]]:
    if isinstance(event, ev.Messages):
        return [
            {
                "type": "message",
                "id": m.id,
                "where": event.where.name,
                "from": m.sender,
                "text": m.text,
            }
            for m in event.items
        ]
    if isinstance(event, ev.Error):
        return [{"type": "error", "code": event.code.value, "text": event.text}]
    return [{"type": type(event).__name__.lower()}]


class JsonConnection(asyncio.Protocol):
    """The whole door: JSON lines in -> commands; events -> JSON lines out."""

    def __init__(self, chat: Chat) -> None:
        self.chat = chat
        self.address = "127.0.0.1"
        self.buffer = b""
        self.inbox: asyncio.Queue[cmd.Command] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.session: Session = self.chat.core.session(self)
        self.pump = asyncio.ensure_future(self._pump())
        self.session.start()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.inbox.put_nowait(parse(json.loads(line)))

    async def _pump(self) -> None:
        while True:
            await self.session.handle(await self.inbox.get())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pump.cancel()
        self.session.closed()

    # the core's sink
    def emit(self, event: ev.Event) -> None:
        for frame in render(event):
            self.transport.write(json.dumps(frame).encode() + b"\n")

    show = emit  # type: ignore[assignment]

    async def drain(self) -> None:
        pass

    def close(self) -> None:
        self.transport.close()

    def overflow(self) -> None:
        self.transport.abort()


async def test_a_json_door_and_the_line_door_share_one_chat(chat: Chat) -> None:
    loop = asyncio.get_running_loop()
    line_door = LineDoor(chat.core, Admission(0, 0, 60), WriteCoalescer(), 4096, 1 << 20)
    chat.fanout.after_batch = line_door.coalescer.flush_now
    line_server = await loop.create_server(lambda: LineConnection(line_door), "127.0.0.1", 0)
    json_server = await loop.create_server(lambda: JsonConnection(chat), "127.0.0.1", 0)
    try:
        tr, tw = await asyncio.open_connection(*line_server.sockets[0].getsockname()[:2])
        jr, jw = await asyncio.open_connection(*json_server.sockets[0].getsockname()[:2])
        for frame in (
            {"type": "login", "nick": "web"},
            {"type": "password", "password": "secret123"},
        ):
            jw.write(json.dumps(frame).encode() + b"\n")
        tw.write(b"telnet\r\nsecret123\r\n")

        async def until(reader: asyncio.StreamReader, needle: bytes) -> list[bytes]:
            seen = []
            while True:
                line = await asyncio.wait_for(reader.readline(), 5)
                seen.append(line)
                if needle in line:
                    return seen

        await until(jr, b'"ready"')
        await until(tr, b"* ready")
        tw.write(b"hello from telnet\r\n")
        frame = json.loads((await until(jr, b"hello from telnet"))[-1])
        assert frame["from"] == "telnet" and frame["where"] == "general" and frame["id"]
        jw.write(b'{"type": "say", "text": "hi from json"}\n')
        assert (await until(tr, b"hi from json"))[-1].endswith(b"#general <web> hi from json\r\n")
        jw.write(b'{"type": "dance"}\n')
        error = json.loads((await until(jr, b'"error"'))[-1])
        assert error == {"type": "error", "code": "bad_input", "text": "unknown frame type 'dance'"}
        for w in (tw, jw):
            w.close()
    finally:
        line_server.close()
        json_server.close()

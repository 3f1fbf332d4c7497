"""A fourth door in a few dozen lines: a JSON-lines codec on the connection kit.

It proves that adding a door is a codec (bytes -> commands, events -> bytes) and nothing
else: admission, output bounds, batching and rendering once come from the kit. It shares
one core with the line door on real loopback sockets, and their users talk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.session import Phase
from gateway.doors.line.codec import LineCodec
from gateway.kit.admission import Admission
from gateway.kit.codec import Codec, Step, Unit
from gateway.kit.render_once import RenderOnce
from gateway.kit.shell import Coalescer, Connection, Door
from tests.core.conftest import Chat


class JsonLines(Codec):
    """The whole door: one JSON object per line, both ways."""

    __slots__ = ("buffer",)
    door = "jsonl"

    def __init__(self) -> None:
        super().__init__(None)
        self.buffer = b""

    def feed(self, data: bytes) -> list[Unit]:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        kind = unit.get("type")
        if kind == "login":
            return (cmd.Nick(str(unit["nick"])), cmd.Password(str(unit["password"])))
        if kind == "say":
            return (cmd.Say((str(unit["text"]),)),)
        if kind == "join":
            return (cmd.Join(str(unit["chat"])),)
        return (self._line({"type": "error", "text": f"unknown frame type {kind!r}"}),)

    def _line(self, frame: dict[str, Any]) -> bytes:
        return json.dumps(frame).encode() + b"\n"

    def encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.Error):
            return self._line({"type": "error", "code": event.code.value, "text": event.text})
        return self._line({"type": type(event).__name__.lower()})

    def show(self, messages: ev.Messages) -> bytes:
        return b"".join(
            self._line(
                {
                    "type": "message",
                    "id": m.id,
                    "where": messages.where.name,
                    "from": m.sender,
                    "text": m.text,
                }
            )
            for m in messages.items
        )

    def refused(self, reason: str) -> bytes:
        return self._line({"type": "error", "text": reason})

    timed_out = refused

    def overflowed(self) -> bytes:
        return b""


async def test_a_json_door_and_the_line_door_share_one_chat(chat: Chat) -> None:
    loop = asyncio.get_running_loop()
    admission, coalescer = Admission(0, 0, 60), Coalescer()
    chat.fanout.after_batch = coalescer.flush_now
    cache = RenderOnce()
    line = Door("line", chat.core, admission, coalescer, 1 << 20, lambda: LineCodec(4096, cache))
    jsonl = Door("jsonl", chat.core, admission, coalescer, 1 << 20, JsonLines)
    line_server = await loop.create_server(lambda: Connection(line), "127.0.0.1", 0)
    json_server = await loop.create_server(lambda: Connection(jsonl), "127.0.0.1", 0)
    try:
        tr, tw = await asyncio.open_connection(*line_server.sockets[0].getsockname()[:2])
        jr, jw = await asyncio.open_connection(*json_server.sockets[0].getsockname()[:2])
        jw.write(b'{"type": "login", "nick": "web", "password": "secret123"}\n')
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
        assert error == {"type": "error", "text": "unknown frame type 'dance'"}
        for w in (tw, jw):
            w.close()
    finally:
        line_server.close()
        json_server.close()

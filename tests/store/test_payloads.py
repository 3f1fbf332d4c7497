"""The pub/sub payload format, checked on both sides against one file of vectors
(payload_vectors.json): the Python encoders and the Lua piece (on a real redis-server)
write each vector's payload byte for byte, the decoder reads it into its events, and the
scripts that publish (post_many, post_private, complain, mod_ban) publish payloads the
decoder reads into the events their replies say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from store import contract as c
from store import keys, payloads
from store.contract import Conv, Position
from store.scripts import LUA_DIR, SCRIPTS
from tests.store import test_scripts as s

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).with_name("payload_vectors.json")).read_text()
)["vectors"]
#: The record kinds the Lua scripts write (the gateway writes the others itself).
LUA_KINDS = {"message", "banned", "presence"}


def channel(spec: list[str]) -> bytes:
    kind, name = spec
    return (keys.chat_channel(name) if kind == "chat" else keys.user_channel(name)).encode()


def encode(record: list[Any]) -> str:
    kind, *fields = record
    if kind == "message":
        return payloads.message_record(*fields)
    if kind == "banned":
        return payloads.banned_record(int(fields[0]), fields[1])
    if kind == "joined":
        return payloads.joined_record(*fields)
    if kind == "left":
        return payloads.left_record(*fields)
    if kind == "tags":
        tid, ms, *rest = fields
        return payloads.tags_record(tid, int(ms), *rest)
    if kind == "presence":
        change, user, name, stamp, reason = fields
        return payloads.presence_record(change, user, name, int(stamp), reason)
    if kind == "kicked":
        return payloads.kicked_record()
    assert kind == "unbanned", kind
    return payloads.unbanned_record()


def message(m: dict[str, Any]) -> c.Message:
    conv = Conv.parse(m["conv"])
    assert conv is not None
    kind = c.Kind(m.get("kind", "M"))
    return c.Message(
        Position(*m["pos"]), conv, m["sender"], m["where"], m["text"], kind, m.get("tags", "")
    )


def event(e: dict[str, Any]) -> c.StoreEvent:
    fields = {k: v for k, v in e.items() if k != "type"}
    if "conv" in fields:
        fields["conv"] = Conv.parse(fields["conv"])
    if "change" in fields:
        fields["change"] = c.Change(fields["change"])
    if "messages" in fields:
        fields["messages"] = [message(m) for m in fields["messages"]]
    if "message" in fields:
        fields["message"] = message(fields["message"])
    made: c.StoreEvent = getattr(c, e["type"])(**fields)
    return made


NAMES = [v["name"] for v in VECTORS]


@pytest.mark.parametrize("vector", VECTORS, ids=NAMES)
def test_the_python_encoders_write_each_vector(vector: dict[str, Any]) -> None:
    assert payloads.payload([encode(r) for r in vector["records"]]) == vector["payload"]


@pytest.mark.parametrize("vector", VECTORS, ids=NAMES)
def test_the_decoder_reads_each_vector(vector: dict[str, Any]) -> None:
    got = payloads.decode(channel(vector["channel"]), vector["payload"].encode())
    assert got == [event(e) for e in vector["events"]]


def test_a_malformed_payload_is_dropped_not_raised() -> None:
    user = keys.user_channel("ann").encode()
    for bad in (b"X", b"M\x1fnot-an-id\x1fc:a\x1fa\x1fb\x1ft", b"M\x1f1-0\x1fq:zz\x1fa\x1fb\x1ft"):
        assert payloads.decode(user, bad) == []
    assert payloads.decode(b"chat:other", b"K") == []
    assert payloads.decode(user, b"\xff") == []


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for script in SCRIPTS.values():
        client.script_load(script.source)
    yield client
    client.close()


#: lua/payload_fn.lua with a body that writes the records it is given (as JSON).
_HARNESS = (
    (LUA_DIR / "payload_fn.lua").read_text()
    + """
local records = {}
for i, r in ipairs(cjson.decode(ARGV[1])) do
  if r[1] == 'message' then records[i] = message_record(r[2], r[3], r[4], r[5], r[6], r[7], r[8])
  elseif r[1] == 'presence' then
    records[i] = presence_record(r[2], r[3], r[4], tostring(r[5]), r[6])
  else records[i] = banned_record(r[2], r[3]) end
end
return payload(records)
"""
)


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if all(r[0] in LUA_KINDS for r in v["records"])],
    ids=[v["name"] for v in VECTORS if all(r[0] in LUA_KINDS for r in v["records"])],
)
def test_the_lua_piece_writes_each_vector(r: redis.Redis, vector: dict[str, Any]) -> None:
    assert r.eval(_HARNESS, 0, json.dumps(vector["records"])) == vector["payload"]


def test_the_scripts_publish_what_the_decoder_reads(r: redis.Redis) -> None:
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe("chat:ch:*")
    sub.get_message(timeout=1)
    try:
        for user in ("ann", "bob"):
            s.register(r, user)

        def events() -> list[c.StoreEvent]:
            return [
                e
                for ch, data in s.published(sub)
                for e in payloads.decode(ch.encode(), data.encode())
            ]

        out = s.post_many(r, [("ann", "hi"), ("bob", "yo")])
        general = Conv.of_chat(keys.GENERAL)
        ids = [keys.position(i) for i in out[1::2]]
        assert events() == [
            c.ChatPosts(
                keys.GENERAL,
                [
                    c.Message(ids[0], general, "ANN", "GENERAL", "hi"),
                    c.Message(ids[1], general, "BOB", "GENERAL", "yo"),
                ],
            )
        ]
        _, mid = s.post_private(r, "ann", "bob", "psst")
        m = c.Message(keys.position(mid), Conv.private("ann", "bob"), "ANN", "BOB", "psst")
        assert sorted(events(), key=str) == sorted(
            [c.PrivatePost("ann", m), c.PrivatePost("bob", m)], key=str
        )
        s.complain(r, "ann", "bob")
        until = int(s.complain(r, "cat", "bob")[2])
        assert events() == [c.UserBanned("bob", until, False)]
        until = int(s.mod_ban(r, "ann")[1])
        assert events() == [c.UserBanned("ann", until, True)]
    finally:
        sub.close()

"""The composed Lua scripts (store/scripts.py) on a real redis-server.

First a cheap lint of the sources (each piece composed in once, KEYS/ARGV read only into
named locals, every script's keys in one cluster slot as the store calls it), then each
script called with the layout store/redis/ and store/batcher.py use. The
operations the store makes of several scripts (a join, a registration, a complaint) are
tested through the store in test_store.py, on a standalone Redis and on a cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from store import keys
from store.keys import position as id_key
from store.scripts import LUA_DIR, NAMES, SCRIPTS, Script, compose, pieces, uses

TTL = 60_000
US = "\x1f"  # field separator in published payloads
RS = "\x1e"  # record separator in post_many's payload

PIECES = {p.name.removesuffix("_fn.lua"): p.read_text() for p in LUA_DIR.glob("*_fn.lua")}
_REF = r"(?:tonumber\()?(?:KEYS|ARGV)(?:\[[^\]]+\])?\)?(?: \* \d+)?"
BINDING = re.compile(rf"^\s*local [a-z_]\w*(?:, [a-z_]\w*)* = {_REF}(?:, {_REF})*$")
FUNCTION = re.compile(r"^local function (\w+)\(", re.M)
#: What may come right before an indented binding: a loop over repeated groups, or the
#: test of whether the optional keys were passed.
OPENER = re.compile(r"^\s*(?:for .* do|if .* then|elseif .* then)$")


def body(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


# -- composition and lint (no Redis) ---------------------------------------------------------


def test_every_script_is_composed_with_its_sha() -> None:
    assert (
        set(SCRIPTS)
        == set(NAMES)
        == {
            "post_many",
            "post_private",
            "post_gate",
            "join",
            "leave",
            "register_claim",
            "register",
            "complain",
            "advance",
            "login_gate",
            "address_gate",
            "token_issue",
            "token_login",
            "enter",
            "give_back",
            "forget",
            "mod_ban",
            "address_count",
            "lift_holds",
            "announce",
        }
    )
    for name, script in SCRIPTS.items():
        assert script == Script.from_source(name, compose(name))
        assert re.fullmatch(r"[0-9a-f]{40}", script.sha)


def test_shared_pieces() -> None:
    assert set(PIECES) == {"time", "bucket", "xadd", "gate", "token", "enter", "payload"}
    assert uses(body("login_gate")) == ("gate",)
    assert uses(body("token_login")) == ("gate", "token", "enter")
    assert uses(body("enter")) == ("enter",)
    assert uses(body("post_many")) == ("time", "bucket", "xadd", "payload")
    assert set(uses(body("post_private"))) == {"time", "bucket", "xadd", "payload"}
    assert set(uses(body("post_gate"))) == {"time", "bucket"}
    assert uses(body("complain")) == ("time", "payload")
    # every script that publishes writes its records with the payload piece only
    for name in NAMES:
        text = body(name)
        if "publish" in text.lower().replace("-- publishes", ""):
            assert "payload" in uses(text), name
            assert "'\\31'" not in text and "'\\30'" not in text, name
    assert not any("chat:clock" in s.source or "clock" in uses(body(n)) for n, s in SCRIPTS.items())


@pytest.mark.parametrize("name", NAMES)
def test_each_piece_once_and_body_last(name: str) -> None:
    source, text, used = SCRIPTS[name].source, body(name), pieces(body(name))
    for piece, piece_text in PIECES.items():
        assert source.count(piece_text) == (1 if piece in used else 0), piece
        assert "KEYS" not in piece_text and "ARGV" not in piece_text, piece
        # a body calling a piece's function names the piece in its `-- uses:` line
        for fn in FUNCTION.findall(piece_text):
            if re.search(rf"\b{fn}\(", text):
                assert piece in used, f"{name} calls {fn} without '-- uses: {piece}'"
    assert source.endswith(text)
    defined = FUNCTION.findall(source)
    assert len(defined) == len(set(defined))


@pytest.mark.parametrize("name", NAMES)
def test_keys_and_argv_only_in_named_locals(name: str) -> None:
    """KEYS[..] and ARGV[..] appear only in `local a, b = KEYS[1], ARGV[2]` lines: at the
    top of the body before any other statement, or first in a loop over repeated groups
    or a branch on whether optional keys were passed."""
    lines = body(name).splitlines()
    header = [line for line in lines if line.startswith("--")]
    assert header[0].startswith(f"-- {name}: ")
    assert any(re.match(r"-- uses: ", line) for line in header)
    assert any("Returns" in line for line in header)
    at_top, previous = True, ""
    for line in lines:
        code = line.split("--", 1)[0].rstrip()
        if not code:
            continue
        bound = "KEYS[" in code or "ARGV[" in code
        if bound:
            assert BINDING.match(code), f"{name}: index outside a named binding: {line}"
            if line.startswith("local "):
                assert at_top, f"{name}: binding after the prelude: {line}"
            else:
                assert OPENER.match(previous) or BINDING.match(previous), line
        elif not line[0].isspace():
            at_top = False
        previous = code


# -- one slot per script -------------------------------------------------------------------


def store_calls(user: str, peer: str, chat: str, address: str) -> dict[str, list[str]]:
    """Each script's KEYS (and the channels it publishes to, which a cluster routes by slot
    too) as store/redis/ and store/batcher.py pass them on a cluster."""
    conv = keys.dm_conv(user, peer)
    return {
        "post_many": [keys.stream(chat), keys.members(chat), keys.chat_channel(chat)],
        "post_private": [keys.conv_stream(conv)],
        "post_gate": [keys.ban(user), keys.rate(user)],
        "join": [keys.chat(chat), keys.members(chat)],
        "leave": [keys.chat(chat), keys.members(chat)],
        "register_claim": [keys.skeleton(user), keys.registrations(address)],
        "register": [keys.user(user), keys.user_chats(user)],
        "complain": [
            keys.complaints(peer),
            keys.ban(peer),
            keys.user(peer),
            keys.complaint_addresses(peer),
            keys.user_addresses(peer),
            keys.user_channel(peer),
        ],
        "mod_ban": [
            keys.ban(peer),
            keys.user(peer),
            keys.complaints(peer),
            keys.complaint_addresses(peer),
            keys.user_channel(peer),
        ],
        "lift_holds": [keys.held_addresses(), keys.held_reasons()],
        "announce": [keys.members(chat), keys.chat_channel(chat)],
        "advance": [keys.cursors(user)],
        "login_gate": [
            keys.login_fails(user, address),
            keys.nick_fails(user),
            keys.known_addresses(user),
        ],
        "address_gate": [keys.address_fails(address)],
        "token_issue": [keys.tokens(user)],
        "token_login": [
            keys.login_fails(user, address),
            keys.nick_fails(user),
            keys.known_addresses(user),
            keys.tokens(user),
            keys.user(user),
            *enter_keys(user, address)[2:],
        ],
        "enter": enter_keys(user, address),
        "give_back": [keys.login_fails(user, address)],
        "forget": forget_keys(user),
        "address_count": [keys.address_connections(address)],
    }


def enter_keys(u: str, address: str) -> list[str]:
    return [
        keys.login_fails(u, address),
        keys.known_addresses(u),
        keys.user_addresses(u),
        keys.user_chats(u),
        keys.user_peers(u),
        keys.cursors(u),
        keys.ban(u),
    ]


def forget_keys(u: str) -> list[str]:
    return [
        keys.user(u),
        keys.user_chats(u),
        keys.user_peers(u),
        keys.cursors(u),
        keys.ban(u),
        keys.rate(u),
        keys.complaints(u),
        keys.complaint_addresses(u),
        keys.complaints_by(u),
        keys.tokens(u),
        keys.user_addresses(u),
        keys.known_addresses(u),
        keys.creations(u),
        keys.nick_fails(u),
    ]


@pytest.mark.parametrize(
    ("user", "peer", "chat", "address"),
    [
        ("alice", "bob", "general", "10.1.2.3"),
        ("zz-top_9", "a.b", "rust-lang", "2001:db8:1:2::"),
        ("x", "y", "c", "::1"),
    ],
)
def test_every_script_touches_one_slot(user: str, peer: str, chat: str, address: str) -> None:
    calls = store_calls(user, peer, chat, address)
    assert set(calls) == set(NAMES)
    for name, ks in calls.items():
        slots = {key_slot(k.encode()) for k in ks}
        assert len(slots) == 1, f"{name}: {ks} hash to {slots}"
    # and the slots differ where they should: a user's, a chat's, the shared one
    assert key_slot(keys.user(user).encode()) != key_slot(keys.chat(chat).encode())
    assert key_slot(keys.seen().encode()) == key_slot(keys.chat_sizes().encode())


# -- on Redis ----------------------------------------------------------------------------------


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for script in SCRIPTS.values():
        assert client.script_load(script.source) == script.sha
    yield client
    client.close()


@pytest.fixture
def sub(r: redis.Redis) -> Iterator[Any]:
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.psubscribe("chat:ch:*")
    ps.get_message(timeout=1)  # the psubscribe confirmation
    yield ps
    ps.close()


def published(ps: Any) -> list[tuple[str, str]]:
    out = []
    while (msg := ps.get_message(timeout=0.05)) is not None:
        out.append((msg["channel"], msg["data"]))
    return out


def call(r: redis.Redis, name: str, keys_: list[str], args: list[Any]) -> Any:
    return r.evalsha(SCRIPTS[name].sha, len(keys_), *keys_, *args)


def now_ms(r: redis.Redis) -> int:
    s, us = r.time()
    return int(s) * 1000 + int(us) // 1000


def claim(
    r: redis.Redis, user: str, skeleton: str, address: str = "1.2.3.4", limit: int = 0
) -> int:
    return int(
        call(
            r,
            "register_claim",
            [keys.skeleton(skeleton), keys.registrations(address)],
            [user, limit],
        )
    )


def create(r: redis.Redis, user: str) -> int:
    return int(
        call(
            r,
            "register",
            [keys.user(user), keys.user_chats(user)],
            [user.upper(), "pwhash", keys.GENERAL],
        )
    )


def join(
    r: redis.Redis, user: str, chat: str, typed: str = "", may_join: int = 1, may_create: str = "ok"
) -> list[Any]:
    return list(
        call(
            r,
            "join",
            [keys.chat(chat), keys.members(chat)],
            [user, typed or chat, may_join, may_create],
        )
    )


def leave(r: redis.Redis, user: str, chat: str) -> list[Any]:
    return list(call(r, "leave", [keys.chat(chat), keys.members(chat)], [user, chat]))


def register(r: redis.Redis, user: str) -> None:
    """An account in #general, as the store's register makes it (its steps, in order)."""
    assert claim(r, user, user) == 1
    assert create(r, user) == 1
    join(r, user, keys.GENERAL)


def post_many(
    r: redis.Redis,
    posts: list[tuple[str, str]],
    chat: str = keys.GENERAL,
    rate: float = 0,
    burst: int = 5,
    max_stored: int = 1000,
    checked: bool = True,
) -> list[Any]:
    """[(user, text)] into one chat, laid out as store/batcher.py does: with each sender's
    ban and bucket (standalone) or without (a cluster: post_gate checked them)."""
    k = [keys.stream(chat), keys.members(chat)]
    a: list[Any] = [chat.upper(), TTL, rate, burst, keys.chat_conv(chat)]
    a += [keys.chat_channel(chat), max_stored, "PUBLISH", 3]
    for user, text in posts:
        if checked:
            k += [keys.ban(user), keys.rate(user)]
        a += [user, user.upper(), text]
    return list(call(r, "post_many", k, a))


def post_private(
    r: redis.Redis,
    user: str,
    peer: str,
    text: str,
    rate: float = 0,
    burst: int = 5,
    max_stored: int = 1000,
    checked: bool = True,
) -> list[Any]:
    conv = keys.dm_conv(user, peer)
    k = [keys.conv_stream(conv)]
    if checked:
        k += [
            keys.ban(user),
            keys.rate(user),
            keys.user(peer),
            keys.user_peers(user),
            keys.user_peers(peer),
        ]
    a = [user, user.upper(), peer, text, TTL, rate, burst, conv]
    a += [keys.user_channel(user), keys.user_channel(peer), max_stored]
    a.append("" if checked else peer.upper())
    a += ["", ""]  # kind, client tags
    return list(call(r, "post_private", k, a))


def post_gate(r: redis.Redis, user: str, n: int, rate: float = 0, burst: int = 5) -> list[Any]:
    return list(call(r, "post_gate", [keys.ban(user), keys.rate(user)], [rate, burst, n]))


def timed(mid: str) -> bool:
    """Whether an id is the one xadd_fn.lua makes from the time: seq = µs in the ms x 1000."""
    seq = id_key(mid)[1]
    return seq % 1000 == 0 and seq < 1_000_000


# -- registration ---------------------------------------------------------------------------


def test_register_claim_and_create(r: redis.Redis) -> None:
    assert claim(r, "ann", "ann") == 1
    assert r.get(keys.skeleton("ann")) == "ann"
    assert create(r, "ann") == 1
    assert create(r, "ann") == 0  # taken: nothing changes
    account = r.hgetall(keys.user("ann"))
    assert account["name"] == "ANN" and account["pw"] == "pwhash"
    assert abs(int(account["created"]) - int(r.time()[0])) <= 1
    assert r.smembers(keys.user_chats("ann")) == {keys.GENERAL}
    assert claim(r, "ann", "ann") == 1  # the same user holds its own look: taken, not look-alike


def test_register_claim_refuses_a_look_alike_of_another_user(r: redis.Redis) -> None:
    assert claim(r, "alice", "a1ice") == 1
    assert claim(r, "aiice", "a1ice") == -2  # AIice: another user, the same look
    assert r.get(keys.skeleton("a1ice")) == "alice"


def test_register_claim_limit_per_address(r: redis.Redis) -> None:
    got = [claim(r, u, u, address="9.9.9.9", limit=2) for u in ("a1", "a2", "a3")]
    assert got == [1, 1, -1]
    assert not r.exists(keys.skeleton("a3"))  # a refused claim holds nothing
    assert claim(r, "b1", "b1", address="8.8.8.8", limit=2) == 1  # another address
    assert 3590 <= r.ttl(keys.registrations("9.9.9.9")) <= 3600
    assert claim(r, "a4", "a4", address="9.9.9.9", limit=0) == 1  # 0: no limit


# -- posting ------------------------------------------------------------------------------------


def test_post_many_ids_increase_and_carry_the_time(r: redis.Redis, sub: Any) -> None:
    for user in ("ann", "bob"):
        register(r, user)
    before = now_ms(r)
    chat_ids: list[str] = []
    dm_ids: list[str] = []
    for turn in range(20):
        out = post_many(r, [("ann", f"a{turn}"), ("bob", f"b{turn}"), ("ann", "again")])
        assert out[0::2] == ["ok"] * 3
        chat_ids += out[1::2]
        pm = post_private(r, "bob", "ann", f"p{turn}")
        assert pm[0] == "ok"
        dm_ids.append(pm[1])
    after = now_ms(r)
    for ids in (chat_ids, dm_ids):
        assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})  # strictly up
    for mid in chat_ids + dm_ids:
        assert before <= id_key(mid)[0] <= after  # the ms part is the server's time
    # timed ids, but for the rare same-microsecond successor within one call
    assert sum(timed(i) for i in chat_ids + dm_ids) >= len(chat_ids + dm_ids) // 2
    # ids of different streams order by time, as the unread replay needs
    merged = sorted(chat_ids + dm_ids, key=id_key)
    assert merged.index(dm_ids[0]) == 3 and merged.index(dm_ids[-1]) == len(merged) - 1
    assert not r.exists("chat:clock")

    stream = r.xrange(keys.stream(keys.GENERAL))
    assert [mid for mid, _ in stream] == chat_ids
    assert stream[0][1] == {"n": "ANN", "t": "a0"}
    assert 0 < r.pttl(keys.stream(keys.GENERAL)) <= TTL
    dm = r.xrange(keys.conv_stream(keys.dm_conv("ann", "bob")))
    assert [mid for mid, _ in dm] == dm_ids
    assert dm[0][1] == {"n": "BOB", "r": "ANN", "t": "p0"}
    assert r.smembers(keys.user_peers("bob")) == {"ann"}
    assert r.smembers(keys.user_peers("ann")) == {"bob"}

    msgs = published(sub)
    channel, payload = msgs[0]
    assert channel == keys.chat_channel(keys.GENERAL)
    assert payload.split(RS) == [
        US.join(["M", chat_ids[0], "c:general", "ANN", "GENERAL", "a0"]),
        US.join(["M", chat_ids[1], "c:general", "BOB", "GENERAL", "b0"]),
        US.join(["M", chat_ids[2], "c:general", "ANN", "GENERAL", "again"]),
    ]
    dm_payload = US.join(["M", dm_ids[0], keys.dm_conv("ann", "bob"), "BOB", "ANN", "p0"])
    assert msgs[1:3] == [
        (keys.user_channel("bob"), dm_payload),
        (keys.user_channel("ann"), dm_payload),
    ]


def test_many_ids_in_one_call_stay_strictly_increasing(r: redis.Redis) -> None:
    """One call of 500 messages runs faster than a microsecond per message at times: where
    two would get the same id, Redis picks the next one."""
    register(r, "ann")
    out = post_many(r, [("ann", str(i)) for i in range(500)])
    ids = out[1::2]
    assert out[0::2] == ["ok"] * 500
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})


def test_ids_fall_back_when_the_time_is_not_above_the_last(r: redis.Redis) -> None:
    """The same microsecond (a stream's last id at or above the time's id), or a clock
    stepped back: the next id is the last one's successor, still increasing."""
    register(r, "ann")
    register(r, "bob")
    now = now_ms(r)
    r.xadd(keys.stream(keys.GENERAL), {"n": "X", "t": "x"}, id=f"{now + 50}-999999")
    out = post_many(r, [("ann", "a"), ("ann", "b")])
    assert out == ["ok", f"{now + 50}-1000000", "ok", f"{now + 50}-1000001"]
    conv = keys.dm_conv("ann", "bob")
    r.xadd(keys.conv_stream(conv), {"n": "X", "t": "x"}, id="99999999999999-7")
    assert post_private(r, "ann", "bob", "z") == ["ok", "99999999999999-8"]
    # a later message in a fresh stream is timed again
    join(r, "ann", "fresh")
    fresh = post_many(r, [("ann", "c")], chat="fresh")
    assert fresh[0] == "ok" and timed(fresh[1]) and abs(id_key(fresh[1])[0] - now) < 5000


def test_streams_keep_at_most_max_stored(r: redis.Redis) -> None:
    register(r, "ann")
    register(r, "bob")
    post_many(r, [("ann", str(i)) for i in range(30)], max_stored=10)
    assert r.xlen(keys.stream(keys.GENERAL)) == 10  # exact MAXLEN
    assert [f["t"] for _, f in r.xrange(keys.stream(keys.GENERAL))] == [
        str(i) for i in range(20, 30)
    ]
    for i in range(12):
        post_private(r, "ann", "bob", str(i), max_stored=5)
    assert r.xlen(keys.conv_stream(keys.dm_conv("ann", "bob"))) == 5


def test_post_many_refuses_nonmembers_and_banned(r: redis.Redis, sub: Any) -> None:
    register(r, "ann")
    register(r, "bob")
    r.set(keys.ban("bob"), "123456", px=60_000)
    out = post_many(r, [("eve", "hi"), ("bob", "hi"), ("ann", "hi"), ("eve", "again")])
    assert out[:6] == ["nomember", "", "banned", "123456", "ok", out[5]]
    assert out[6:] == ["nomember", ""]
    assert r.xlen(keys.stream(keys.GENERAL)) == 1
    assert len(published(sub)) == 1
    # nothing accepted: no stream, no publish
    assert post_many(r, [("eve", "x")], chat="quiet") == ["nomember", ""]
    assert not r.exists(keys.stream("quiet"))
    assert published(sub) == []


def test_post_many_rate_limit(r: redis.Redis) -> None:
    register(r, "ann")
    register(r, "bob")
    out = post_many(r, [("ann", str(i)) for i in range(4)] + [("bob", "b")], rate=1, burst=3)
    assert out[0:6:2] == ["ok", "ok", "ok"]
    assert out[6] == "rate" and 900 <= int(out[7]) <= 1000
    assert out[8] == "ok"
    # each bucket written once, at the end: tokens left, stamped now, expiring when full
    bucket = r.hgetall(keys.rate("ann"))
    assert float(bucket["tokens"]) == 0
    assert abs(int(bucket["ts"]) - id_key(out[1])[0]) <= 1
    assert 0 < r.pttl(keys.rate("ann")) <= 3 * 1000 + 1000
    assert float(r.hget(keys.rate("bob"), "tokens")) == 2
    # the next call sees the saved bucket
    again = post_many(r, [("ann", "x")], rate=1, burst=3)
    assert again[0] == "rate" and 0 < int(again[1]) <= 1000
    # rate 0: no limit, no bucket
    r.delete(keys.rate("bob"))
    assert post_many(r, [("bob", str(i)) for i in range(10)])[0::2] == ["ok"] * 10
    assert not r.exists(keys.rate("bob"))


def test_post_many_without_sender_keys_checks_only_membership(r: redis.Redis) -> None:
    """The cluster layout: post_gate.lua checked ban and rate in the sender's slot, so
    post_many neither reads nor writes them (it could not: another slot)."""
    register(r, "ann")
    r.set(keys.ban("ann"), "123456", px=60_000)
    out = post_many(r, [("ann", str(i)) for i in range(4)], rate=1, burst=1, checked=False)
    assert out[0::2] == ["ok"] * 4
    assert not r.exists(keys.rate("ann"))
    assert post_many(r, [("eve", "x")], checked=False) == ["nomember", ""]
    # the same call with the sender's keys checks them
    assert post_many(r, [("ann", "y")], rate=1, burst=1) == ["banned", "123456"]
    r.delete(keys.ban("ann"))
    out = post_many(r, [("ann", "y"), ("ann", "z")], rate=1, burst=1)
    assert out[0] == "ok" and out[2] == "rate"


def test_post_private_checks(r: redis.Redis) -> None:
    register(r, "ann")
    register(r, "bob")
    assert post_private(r, "ann", "nobody", "hi") == ["nouser"]
    out = [post_private(r, "ann", "bob", str(i), rate=2, burst=2) for i in range(3)]
    assert [o[0] for o in out] == ["ok", "ok", "rate"]
    assert 400 <= int(out[2][1]) <= 500
    assert 0 < r.pttl(keys.rate("ann")) <= 1000 + 1000
    # the bucket is the one post_many and post_gate use
    assert post_many(r, [("ann", "x")], rate=2, burst=2)[0] == "rate"
    assert post_gate(r, "ann", 1, rate=2, burst=2)[0] == "rate"
    r.set(keys.ban("ann"), "777", px=60_000)
    assert post_private(r, "ann", "bob", "hi") == ["banned", "777"]
    assert r.xlen(keys.conv_stream(keys.dm_conv("ann", "bob"))) == 2


def test_post_private_unchecked_stores_only(r: redis.Redis, sub: Any) -> None:
    """The cluster layout: only the stream; the recipient's display name comes from the
    gateway, peers and publishing are the gateway's next step."""
    r.set(keys.ban("ann"), "777", px=60_000)
    out = post_private(r, "ann", "bob", "hi", rate=1, burst=1, checked=False)
    assert out[0] == "ok" and timed(out[1])
    again = post_private(r, "ann", "bob", "hi", rate=1, burst=1, checked=False)
    assert again[0] == "ok" and id_key(again[1]) > id_key(out[1])
    entries = r.xrange(keys.conv_stream(keys.dm_conv("ann", "bob")))
    assert entries[0][1] == {"n": "ANN", "r": "BOB", "t": "hi"}
    assert not r.exists(keys.user_peers("ann"), keys.user_peers("bob"), keys.rate("ann"))
    assert published(sub) == []


def test_post_gate(r: redis.Redis) -> None:
    assert post_gate(r, "ann", 3) == ["ok", ""] * 3  # rate 0: no limit
    assert not r.exists(keys.rate("ann"))
    out = post_gate(r, "ann", 4, rate=1, burst=3)
    assert out[0:6] == ["ok", "", "ok", "", "ok", ""]
    assert out[6] == "rate" and 900 <= int(out[7]) <= 1000
    assert float(r.hget(keys.rate("ann"), "tokens")) == 0
    assert 0 < r.pttl(keys.rate("ann")) <= 4000
    r.set(keys.ban("ann"), "4242", px=60_000)
    assert post_gate(r, "ann", 2, rate=1, burst=3) == ["banned", "4242"] * 2
    # a refused batch takes nothing
    r.delete(keys.rate("bob"))
    r.set(keys.ban("bob"), "1", px=60_000)
    post_gate(r, "bob", 5, rate=1, burst=3)
    assert not r.exists(keys.rate("bob"))


# -- chats ----------------------------------------------------------------------------------


def test_join_and_leave(r: redis.Redis) -> None:
    chat = "rust"
    assert join(r, "ann", chat, "Rust") == ["created", "Rust", 1]
    assert join(r, "ann", chat, "RUST") == ["already", "Rust", 1]
    assert join(r, "bob", chat, "rust") == ["joined", "Rust", 2]
    assert leave(r, "ann", chat) == [1, "Rust", 1]
    assert leave(r, "ann", chat) == [0, "", 0]
    assert leave(r, "bob", chat) == [1, "Rust", 0]
    assert not r.exists(keys.chat(chat), keys.members(chat))  # deleted when empty
    # a new chat of that name takes the name typed now
    assert join(r, "cid", chat, "RuSt") == ["created", "RuSt", 1]


def test_join_limits_passed_by_the_caller(r: redis.Redis) -> None:
    assert join(r, "ann", "c1") == ["created", "c1", 1]
    assert join(r, "bob", "c1", may_join=0) == ["user_limit", "c1", 0]
    assert join(r, "ann", "c1", may_join=0)[0] == "already"  # a member is not refused
    assert join(r, "bob", "c1", may_create="chat_limit")[0] == "joined"  # no creation
    assert join(r, "bob", "new", may_create="chat_limit") == ["chat_limit", "new", 0]
    assert join(r, "bob", "new", may_create="create_rate") == ["create_rate", "new", 0]
    assert not r.exists(keys.chat("new"), keys.members("new"))
    r.hset(keys.chat("old"), "name", "Stale")  # a name left over from an emptied chat
    assert join(r, "bob", "old", "old") == ["created", "old", 1]


# -- complaints and bans --------------------------------------------------------------------


def complain(
    r: redis.Redis,
    by: str,
    target: str = "bob",
    address: str = "",
    young: int = 0,
    rate_wait: int = 0,
    per_address: int = 1,
    threshold: int = 2,
) -> list[Any]:
    return list(
        call(
            r,
            "complain",
            [
                keys.complaints(target),
                keys.ban(target),
                keys.user(target),
                keys.complaint_addresses(target),
                keys.user_addresses(target),
            ],
            [
                by,
                threshold,
                5000,
                keys.user_channel(target),
                address or f"10.0.0.{ord(by[0])}",
                young,
                rate_wait,
                per_address,
                "PUBLISH",
            ],
        )
    )


def test_complain_bans_at_threshold(r: redis.Redis, sub: Any) -> None:
    register(r, "bob")
    r.zadd(keys.user_addresses("bob"), {"10.0.0.9": 1, "10.0.0.8": 2})
    assert complain(r, "ann", "nobody") == ["nouser"]
    assert complain(r, "ann") == ["ok", 1, "BOB"]
    assert complain(r, "ann") == ["again", 1, "BOB"]
    now = now_ms(r)
    status, count, until, name, *held = complain(r, "cat")
    assert (status, count, name) == ("ban", 2, "BOB")
    assert sorted(held) == ["10.0.0.8", "10.0.0.9"]  # for the caller to hold back
    assert now <= int(until) - 5000 <= now + 2000
    assert r.get(keys.ban("bob")) == until
    assert 0 < r.pttl(keys.ban("bob")) <= 5000
    assert not r.exists(keys.complaints("bob"), keys.complaint_addresses("bob"))
    assert complain(r, "dan") == ["banned", until, "BOB"]
    assert published(sub) == [(keys.user_channel("bob"), f"B{US}{until}")]
    # a banned sender is refused by every posting script that checks
    assert post_many(r, [("bob", "hi")]) == ["banned", until]
    assert post_private(r, "bob", "bob", "hi") == ["banned", until]
    assert post_gate(r, "bob", 1) == ["banned", until]


def test_complain_waits_and_address_limit(r: redis.Redis) -> None:
    register(r, "bob")
    assert complain(r, "ann", young=1234) == ["young", "1234", "BOB"]
    assert complain(r, "ann", rate_wait=99) == ["rate", "99", "BOB"]
    assert not r.exists(keys.complaints("bob"))  # neither counted
    assert complain(r, "ann", address="10.9.9.9", threshold=5) == ["ok", 1, "BOB"]
    assert complain(r, "cat", address="10.9.9.9", threshold=5) == ["address", 1, "BOB"]
    assert complain(r, "cat", address="10.9.9.9", threshold=5, per_address=0)[0] == "ok"
    # "again" is told before the waits: a repeated complaint is not a new one
    assert complain(r, "ann", young=5, threshold=5) == ["again", 2, "BOB"]


def mod_ban(r: redis.Redis, target: str, ms: int = 5000) -> list[Any]:
    return list(
        call(
            r,
            "mod_ban",
            [
                keys.ban(target),
                keys.user(target),
                keys.complaints(target),
                keys.complaint_addresses(target),
            ],
            [ms, keys.user_channel(target), "PUBLISH"],
        )
    )


def test_mod_ban(r: redis.Redis, sub: Any) -> None:
    assert mod_ban(r, "nobody") == ["nouser"]
    register(r, "bob")
    complain(r, "ann", threshold=5)
    now = now_ms(r)
    r.zadd(keys.user_addresses("bob"), {"10.0.0.7": now})
    status, until, name, *held = mod_ban(r, "bob")
    assert (status, name) == ("ban", "BOB") and now <= int(until) - 5000 <= now + 2000
    assert held == []  # a moderator's ban holds no address back (only complaints do)
    assert r.get(keys.ban("bob")) == until and 0 < r.pttl(keys.ban("bob")) <= 5000
    assert not r.exists(keys.complaints("bob"), keys.complaint_addresses("bob"))
    assert published(sub) == [(keys.user_channel("bob"), US.join(["B", until, "m"]))]


def lift_holds(r: redis.Redis, by: str, value: str) -> list[Any]:
    return list(call(r, "lift_holds", [keys.held_addresses(), keys.held_reasons()], [by, value]))


def test_lift_holds(r: redis.Redis) -> None:
    now = now_ms(r)
    r.zadd(keys.held_addresses(), {"10.0.0.1": now + 9000, "10.0.0.2": now + 9000})
    r.zadd(keys.held_addresses(), {"10.0.0.3": now + 9000, "10.0.0.9": now - 1})
    r.zadd(
        keys.held_reasons(),
        {"10.0.0.1|bob": now + 5000, "10.0.0.2|bob": now + 5000, "10.0.0.2|cid": now + 9000},
    )
    assert lift_holds(r, "user", "nobody") == []
    # bob's holds go; .2 stays held for cid until cid's end; .3 has no recorded reason
    assert lift_holds(r, "user", "bob") == ["10.0.0.1"]
    assert r.zrange(keys.held_addresses(), 0, -1, withscores=True) == [
        ("10.0.0.2", now + 9000),
        ("10.0.0.3", now + 9000),
    ]
    assert r.zrange(keys.held_reasons(), 0, -1) == ["10.0.0.2|cid"]
    assert lift_holds(r, "address", "10.0.0.2") == ["10.0.0.2"]
    assert lift_holds(r, "address", "10.0.0.2") == []
    assert lift_holds(r, "address", "10.0.0.3") == ["10.0.0.3"]
    assert not r.exists(keys.held_addresses(), keys.held_reasons())


# -- accounts -------------------------------------------------------------------------------


def test_forget_deletes_the_users_own_keys_and_returns_its_chats(r: redis.Redis) -> None:
    register(r, "ann")
    join(r, "ann", "solo")
    r.sadd(keys.user_chats("ann"), "solo")  # the store's step after join.lua
    ks = forget_keys("ann")
    for k in ks[2:]:
        r.set(k, "x")
    assert sorted(call(r, "forget", ks, [])) == sorted([keys.GENERAL, "solo"])
    assert not any(r.exists(k) for k in ks)
    # the memberships are the caller's next step (leave.lua per chat)
    assert r.sismember(keys.members("solo"), "ann")
    assert call(r, "forget", ks, []) == []


def test_advance_never_moves_back(r: redis.Redis) -> None:
    key = keys.cursors("ann")

    def advance(*pairs: str) -> Any:
        return call(r, "advance", [key], [TTL, *pairs])

    assert advance("c:a", "5-3", "c:b", "7-0") == 1
    advance("c:a", "5-2", "c:b", "10-0")
    advance("c:a", "4-9")
    assert r.hgetall(key) == {"c:a": "5-3", "c:b": "10-0"}
    advance("c:a", "5-10")  # numeric, not string, order
    assert r.hget(key, "c:a") == "5-10"
    advance("c:a", "5-999000", "c:b", "10-1000000")  # timed ids: large sequence numbers
    advance("c:a", "5-1000")
    assert r.hgetall(key) == {"c:a": "5-999000", "c:b": "10-1000000"}
    r.hset(key, "c:c", "junk")
    advance("c:c", "1-0")
    assert r.hget(key, "c:c") == "1-0"
    assert 0 < r.pttl(key) <= TTL


def gate(
    r: redis.Redis, nick: str, address: str, take: bool = True, limits: tuple[int, int] = (3, 5)
) -> list[Any]:
    ks = [keys.login_fails(nick, address), keys.nick_fails(nick), keys.known_addresses(nick)]
    return list(call(r, "login_gate", ks, [address, 60, *limits, 86_400_000, int(take)]))


def address_gate(
    r: redis.Redis, nick: str, address: str, take: bool = True, limit: int = 2
) -> list[Any]:
    return list(
        call(r, "address_gate", [keys.address_fails(address)], [nick, 60, limit, int(take)])
    )


def test_login_gate(r: redis.Redis) -> None:
    """Each attempt is counted when it is let through; the pair and nickname limits refuse
    in turn; a known address is exempt from the nickname's limit and says so."""
    assert [gate(r, "ann", "10.0.0.1")[0] for _ in range(4)] == ["ok", "ok", "ok", "pair"]
    assert gate(r, "ann", "10.0.0.9")[1] == 0  # not known
    refused = gate(r, "ann", "10.0.0.1")
    assert refused[0] == "pair" and 0 < refused[1] <= 60_000
    assert r.get(keys.login_fails("ann", "10.0.0.1")) == "3"  # refusals are not counted
    assert gate(r, "ann", "10.0.0.2", take=False)[0] == "ok"  # a peek counts nothing
    assert not r.exists(keys.login_fails("ann", "10.0.0.2"))
    assert r.get(keys.nick_fails("ann")) == "4"
    assert [gate(r, "ann", "10.0.0.2")[0] for _ in range(2)] == ["ok", "nick"]
    r.zadd(keys.known_addresses("ann"), {"10.0.0.3": now_ms(r)})
    got = [gate(r, "ann", "10.0.0.3") for _ in range(4)]
    assert got[:3] == [["ok", 1]] * 3
    assert got[3][0] == "pair" and 0 < got[3][1] <= 60_000
    assert r.get(keys.nick_fails("ann")) == "5"  # known: not counted for the nickname
    r.zadd(keys.known_addresses("ann"), {"10.0.0.4": now_ms(r) - 90_000_000})
    assert gate(r, "ann", "10.0.0.4")[0] == "nick"  # known too long ago: not exempt


def test_address_gate(r: redis.Redis) -> None:
    """Distinct nicknames per address: one nickname's repeated failures count once."""
    assert address_gate(r, "ann", "10.0.0.1") == ["ok", 0]
    assert address_gate(r, "ann", "10.0.0.1") == ["ok", 0]
    assert address_gate(r, "bob", "10.0.0.1", take=False) == ["ok", 0]  # a peek
    assert address_gate(r, "bob", "10.0.0.1") == ["ok", 0]
    refused = address_gate(r, "cid", "10.0.0.1")
    assert refused[0] == "address" and 0 < refused[1] <= 60_000
    assert address_gate(r, "ann", "10.0.0.1")[0] == "ok"  # already counted
    assert address_gate(r, "cid", "10.0.0.1", limit=0)[0] == "ok"  # 0: no limit
    assert r.zcard(keys.address_fails("10.0.0.1")) == 3
    assert 0 < r.pttl(keys.address_fails("10.0.0.1")) <= 60_000


def test_tokens(r: redis.Redis) -> None:
    register(r, "ann")
    tk = keys.tokens("ann")

    def issue(h: str, ttl: int = 60_000, replaces: str = "", keep: int = 3) -> int:
        return int(call(r, "token_issue", [tk], [h, ttl, replaces, keep]))

    def check(h: str) -> Any:
        """The name token h logs in as (token_login.lua), or None."""
        got = token_login(r, "ann", "10.0.0.1", h)
        return got[1] if got[0] == "ok" else None

    now = now_ms(r)
    assert now + 60_000 <= issue("h1") <= now_ms(r) + 60_000
    assert check("h1") == "ANN" and check("nope") is None
    issue("h2", replaces="h1")
    assert check("h1") is None and check("h2") == "ANN"
    issue("h3", ttl=120_000)
    issue("h4")
    issue("h5")  # keep 3: the one that expires first (h2) goes
    assert set(r.hkeys(tk)) == {"h3", "h4", "h5"}
    assert r.pttl(tk) > 100_000  # lives as long as its last token
    r.hset(tk, "old", str(now - 1))
    assert check("old") is None and not r.hexists(tk, "old")  # expired: removed on the way
    r.delete(keys.user("ann"))
    assert check("h3") is None  # no account: no name


def token_login(
    r: redis.Redis,
    nick: str,
    address: str,
    token: str,
    limits: tuple[int, int] = (3, 5),
    held: int = 2,
) -> list[Any]:
    ks = [
        keys.login_fails(nick, address),
        keys.nick_fails(nick),
        keys.known_addresses(nick),
        keys.tokens(nick),
        keys.user(nick),
        *enter_keys(nick, address)[2:],
    ]
    args = [address, 60, *limits, 86_400_000, token, 4, held, 600]
    return list(call(r, "token_login", ks, args))


def test_token_login(r: redis.Redis) -> None:
    """A valid token logs in, in one call: its failed attempts from that address forgiven,
    the address remembered, the state returned; whatever the counters say. A wrong token is
    counted as a failed login, and says whether the address is new to the nickname."""
    register(r, "ann")
    call(r, "token_issue", [keys.tokens("ann")], ["h1", 60_000, "", 3])
    r.sadd(keys.user_peers("ann"), "bob")
    r.hset(keys.cursors("ann"), "c:general", "5-0")
    assert token_login(r, "ann", "10.0.0.1", "nope") == ["bad", 1]  # new address: say so
    assert r.get(keys.login_fails("ann", "10.0.0.1")) == "1"
    assert r.get(keys.nick_fails("ann")) == "1"
    ok, name, chats, peers, cursors, ban = token_login(r, "ann", "10.0.0.1", "h1")
    assert (ok, name, chats, peers, cursors, ban) == (
        "ok", "ANN", ["general"], ["bob"], ["c:general", "5-0"], None
    )  # fmt: skip
    assert not r.exists(keys.login_fails("ann", "10.0.0.1"))  # forgiven
    assert r.zscore(keys.known_addresses("ann"), "10.0.0.1") is not None
    assert r.zscore(keys.user_addresses("ann"), "10.0.0.1") is not None  # a ban holds it
    # a known address now: wrong tokens count for the pair only, and the limit refuses
    for _ in range(3):
        assert token_login(r, "ann", "10.0.0.1", "wrong") == ["bad", 0]
    assert r.get(keys.nick_fails("ann")) == "1"
    refused = token_login(r, "ann", "10.0.0.1", "wrong")
    assert refused[0] == "pair" and 0 < refused[1] <= 60_000
    # a valid token is not locked out (it cannot be guessed), but does not reopen the
    # password guessing of someone else behind that address either
    assert token_login(r, "ann", "10.0.0.1", "h1")[:2] == ["ok", "ANN"]
    assert r.get(keys.login_fails("ann", "10.0.0.1")) == "3"
    # the held addresses are trimmed to the newest `held`; none kept when held is 0
    for a in ("10.0.0.2", "10.0.0.3"):
        token_login(r, "ann", a, "h1")
    assert r.zcard(keys.user_addresses("ann")) == 2
    assert token_login(r, "bob", "10.0.0.9", "h1") == ["bad", 1]  # another user's token
    r.set(keys.ban("ann"), "123")
    r.delete(keys.user_addresses("ann"))
    assert token_login(r, "ann", "10.0.0.4", "h1", held=0)[5] == "123"
    assert not r.exists(keys.user_addresses("ann"))


def test_give_back(r: redis.Redis) -> None:
    """An attempt counted but never checked is given back in one step; never below 0."""
    k = keys.login_fails("ann", "10.0.0.1")
    r.set(k, 2, ex=60)
    assert call(r, "give_back", [k], []) == 1
    assert r.get(k) == "1" and 0 < r.ttl(k) <= 60
    assert call(r, "give_back", [k], []) == 0
    assert not r.exists(k)
    assert call(r, "give_back", [k], []) == 0  # expired meanwhile: no -1 left behind
    assert not r.exists(k)


def test_address_count(r: redis.Redis) -> None:
    k = keys.address_connections("10.0.0.1")

    def count(gw: str, change: int, *live: str) -> int:
        return int(call(r, "address_count", [k], [gw, change, 60_000, *live]))

    assert count("g1", 1, "g1", "g2") == 1
    assert count("g2", 1, "g1", "g2") == 2
    assert count("g2", 1, "g2") == 2  # g1 not live: not counted
    assert count("g2", -1, "g1", "g2") == 2
    assert count("g2", -5, "g1", "g2") == 1 and not r.hexists(k, "g2")

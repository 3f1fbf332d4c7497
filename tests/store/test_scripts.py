"""The composed Lua scripts (store/scripts.py) on a real redis-server.

First a cheap lint of the sources (each piece composed in once, KEYS/ARGV read only into
named locals), then each script called with the layout store/redis_store.py uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from store import keys
from store.scripts import LUA_DIR, NAMES, SCRIPTS, Script, compose, pieces, uses

TTL = 60_000
US = "\x1f"  # field separator in published payloads
RS = "\x1e"  # record separator in post_many's payload

PIECES = {p.name.removesuffix("_fn.lua"): p.read_text() for p in LUA_DIR.glob("*_fn.lua")}
_REF = r"(?:tonumber\()?(?:KEYS|ARGV)(?:\[[^\]]+\])?\)?"
BINDING = re.compile(rf"^\s*local [a-z_]\w*(?:, [a-z_]\w*)* = {_REF}(?:, {_REF})*$")
FUNCTION = re.compile(r"^local function (\w+)\(", re.M)


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
            "join",
            "leave",
            "register",
            "complain",
            "advance",
            "login_gate",
            "token_issue",
            "token_check",
            "forget",
            "mod_ban",
            "address_count",
        }
    )
    for name, script in SCRIPTS.items():
        assert script == Script.from_source(name, compose(name))
        assert re.fullmatch(r"[0-9a-f]{40}", script.sha)


def test_shared_pieces() -> None:
    assert {"time", "clock", "bucket"} <= set(PIECES)
    assert uses(body("post_many")) == ("time", "clock", "bucket")
    assert set(uses(body("post_private"))) == {"time", "clock", "bucket"}
    assert uses(body("complain")) == ("time",)


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
    top of the body before any other statement, or first in a loop over repeated groups."""
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
                assert re.match(r"\s*for .* do$", previous) or BINDING.match(previous), line
        elif not line[0].isspace():
            at_top = False
        previous = code


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
    ps.psubscribe("chat:chan:*")
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


def register(
    r: redis.Redis, user: str, skeleton: str | None = None, address: str = "1.2.3.4", limit: int = 0
) -> int:
    return int(
        call(
            r,
            "register",
            [
                keys.user(user),
                keys.user_chats(user),
                keys.members(keys.GENERAL),
                keys.chat(keys.GENERAL),
                keys.chat_sizes(),
                keys.seen(),
                keys.registrations(address),
                keys.skeleton(skeleton or user),
            ],
            [user, user.upper(), "pwhash", keys.GENERAL, limit],
        )
    )


def post_many(
    r: redis.Redis,
    posts: list[tuple[str, str]],
    chat: str = keys.GENERAL,
    rate: float = 0,
    burst: int = 5,
    max_stored: int = 1000,
) -> list[str]:
    """[(user, text)] into one chat, laid out as redis_store's _Batcher does."""
    k = [keys.stream(chat), keys.members(chat), keys.clock()]
    a: list[Any] = [chat.upper(), TTL, rate, burst, keys.chat_conv(chat), f"chat:chan:{chat}"]
    a.append(max_stored)
    for user, text in posts:
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
) -> list[str]:
    conv = keys.dm_conv(user, peer)
    channels = [f"chat:chan:{user}", f"chat:chan:{peer}"]
    return list(
        call(
            r,
            "post_private",
            [
                keys.conv_stream(conv),
                keys.ban(user),
                keys.rate(user),
                keys.user(peer),
                keys.clock(),
                keys.user_peers(user),
                keys.user_peers(peer),
            ],
            [user, user.upper(), peer, text, TTL, rate, burst, conv, *channels, max_stored],
        )
    )


def id_key(mid: str) -> tuple[int, int]:
    ms, seq = mid.split("-")
    return int(ms), int(seq)


def test_register(r: redis.Redis) -> None:
    assert register(r, "ann") == 1
    assert register(r, "ann") == 0
    account = r.hgetall(keys.user("ann"))
    assert account["name"] == "ANN" and account["pw"] == "pwhash"
    assert abs(int(account["created"]) - int(r.time()[0])) <= 1
    assert r.smembers(keys.members(keys.GENERAL)) == {"ann"}
    assert r.smembers(keys.user_chats("ann")) == {keys.GENERAL}
    assert r.hget(keys.chat(keys.GENERAL), "name") == keys.GENERAL
    assert r.zrange(keys.chat_sizes(), 0, -1, withscores=True) == [(keys.GENERAL, 1.0)]
    assert abs(r.zscore(keys.seen(), "ann") - int(r.time()[0]) * 1000) <= 1500
    assert r.get(keys.skeleton("ann")) == "ann"


def test_register_refuses_a_look_alike_of_another_user(r: redis.Redis) -> None:
    assert register(r, "alice", "a1ice") == 1
    assert register(r, "aiice", "a1ice") == -2  # AIice: another user, the same look
    assert not r.exists(keys.user("aiice"))
    assert r.get(keys.skeleton("a1ice")) == "alice"
    assert register(r, "alice", "a1ice") == 0


def test_register_limit_per_address(r: redis.Redis) -> None:
    assert [register(r, u, address="9.9.9.9", limit=2) for u in ("a1", "a2", "a3")] == [1, 1, -1]
    assert register(r, "a1", address="9.9.9.9", limit=2) == 0  # taken is still told as taken
    assert register(r, "b1", address="8.8.8.8", limit=2) == 1  # another address
    assert 3590 <= r.ttl(keys.registrations("9.9.9.9")) <= 3600
    assert not r.exists(keys.user("a3"))


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


def test_post_many_ids_increase_and_share_the_clock(r: redis.Redis, sub: Any) -> None:
    for user in ("ann", "bob"):
        register(r, user)
    ids: list[str] = []
    for turn in range(20):
        out = post_many(r, [("ann", f"a{turn}"), ("bob", f"b{turn}"), ("ann", "again")])
        assert out[0::2] == ["ok"] * 3
        ids += out[1::2]
        pm = post_private(r, "bob", "ann", f"p{turn}")
        assert pm[0] == "ok"
        ids.append(pm[1])
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})  # strictly increasing
    assert r.get(keys.clock()) == ids[-1]
    stream = r.xrange(keys.stream(keys.GENERAL))
    assert [mid for mid, _ in stream] == [i for i in ids if i not in ids[3::4]]
    assert stream[0][1] == {"n": "ANN", "t": "a0"}
    assert 0 < r.pttl(keys.stream(keys.GENERAL)) <= TTL
    dm = r.xrange(keys.conv_stream(keys.dm_conv("ann", "bob")))
    assert [mid for mid, _ in dm] == ids[3::4]
    assert dm[0][1] == {"n": "BOB", "r": "ANN", "t": "p0"}
    assert r.smembers(keys.user_peers("bob")) == {"ann"}
    assert r.smembers(keys.user_peers("ann")) == {"bob"}

    msgs = published(sub)
    batch = msgs[0]
    assert batch[0] == "chat:chan:general"
    assert batch[1].split(RS) == [
        US.join(["M", ids[0], "c:general", "ANN", "GENERAL", "a0"]),
        US.join(["M", ids[1], "c:general", "BOB", "GENERAL", "b0"]),
        US.join(["M", ids[2], "c:general", "ANN", "GENERAL", "again"]),
    ]
    payload = US.join(["M", ids[3], keys.dm_conv("ann", "bob"), "BOB", "ANN", "p0"])
    assert msgs[1:3] == [("chat:chan:bob", payload), ("chat:chan:ann", payload)]


def test_ids_continue_an_ahead_clock(r: redis.Redis) -> None:
    """A clock ahead of the server time (time stepped back) keeps counting from itself."""
    register(r, "ann")
    r.set(keys.clock(), "99999999999999-7")
    out = post_many(r, [("ann", "x"), ("ann", "y")])
    assert out == ["ok", "99999999999999-8", "ok", "99999999999999-9"]
    assert post_private(r, "ann", "ann", "z") == ["ok", "99999999999999-10"]
    assert r.get(keys.clock()) == "99999999999999-10"


def test_post_many_refuses_nonmembers_and_banned(r: redis.Redis, sub: Any) -> None:
    register(r, "ann")
    register(r, "bob")
    r.set(keys.ban("bob"), "123456", px=60_000)
    out = post_many(r, [("eve", "hi"), ("bob", "hi"), ("ann", "hi"), ("eve", "again")])
    assert out[:6] == ["nomember", "", "banned", "123456", "ok", out[5]]
    assert out[6:] == ["nomember", ""]
    assert r.xlen(keys.stream(keys.GENERAL)) == 1
    assert len(published(sub)) == 1
    # nothing accepted: no clock write, no stream, no publish
    clock = r.get(keys.clock())
    assert post_many(r, [("eve", "x")], chat="quiet") == ["nomember", ""]
    assert r.get(keys.clock()) == clock
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


def test_post_private_checks(r: redis.Redis) -> None:
    register(r, "ann")
    register(r, "bob")
    assert post_private(r, "ann", "nobody", "hi") == ["nouser"]
    out = [post_private(r, "ann", "bob", str(i), rate=2, burst=2) for i in range(3)]
    assert [o[0] for o in out] == ["ok", "ok", "rate"]
    assert 400 <= int(out[2][1]) <= 500
    assert 0 < r.pttl(keys.rate("ann")) <= 1000 + 1000
    # the bucket is the one post_many uses
    refused = post_many(r, [("ann", "x")], rate=2, burst=2)
    assert refused[0] == "rate"
    r.set(keys.ban("ann"), "777", px=60_000)
    assert post_private(r, "ann", "bob", "hi") == ["banned", "777"]
    assert r.xlen(keys.conv_stream(keys.dm_conv("ann", "bob"))) == 2


def test_complain_bans_at_threshold(r: redis.Redis, sub: Any) -> None:
    register(r, "bob")

    r.zadd(keys.user_addresses("bob"), {"10.0.0.9": 1})

    def complain(by: str, target: str = "bob") -> list[Any]:
        return list(
            call(
                r,
                "complain",
                [
                    keys.complaints(target),
                    keys.ban(target),
                    keys.user(target),
                    keys.user(by),
                    keys.complaints_by(by),
                    keys.complaint_addresses(target),
                    keys.user_addresses(target),
                    keys.held_addresses(),
                    keys.bans(),
                ],
                [by, 2, 5000, f"chat:chan:{target}", f"10.0.0.{ord(by[0])}", 0, 0, 1, target],
            )
        )

    assert complain("ann", "nobody") == ["nouser"]
    assert complain("ann") == ["ok", 1, "BOB"]
    assert complain("ann") == ["again", 1, "BOB"]
    now = int(r.time()[0]) * 1000
    status, count, until, name = complain("cat")
    assert (status, count, name) == ("ban", 2, "BOB")
    assert now <= int(until) - 5000 <= now + 2000
    assert r.get(keys.ban("bob")) == until
    assert 0 < r.pttl(keys.ban("bob")) <= 5000
    assert not r.exists(keys.complaints("bob"))
    assert r.zscore(keys.held_addresses(), "10.0.0.9") == int(until)
    assert r.zscore(keys.bans(), "bob") == int(until)  # `admin bans` lists it
    assert complain("dan") == ["banned", until, "BOB"]
    assert published(sub) == [("chat:chan:bob", f"B{US}{until}")]
    # a banned sender is refused by both posting scripts
    assert post_many(r, [("bob", "hi")]) == ["banned", until]
    assert post_private(r, "bob", "bob", "hi") == ["banned", until]


def join(r: redis.Redis, user: str, chat: str, typed: str, limits: tuple[int, ...]) -> Any:
    ks = [
        keys.chat(chat),
        keys.members(chat),
        keys.user_chats(user),
        keys.chat_sizes(),
        keys.creations(user),
    ]
    return call(r, "join", ks, [user, chat, typed, f"chat:chan:{user}", "s1", *limits])


def test_join_and_leave(r: redis.Redis, sub: Any) -> None:
    chat = "rust"
    ks = [keys.chat(chat), keys.members(chat), keys.user_chats("ann"), keys.chat_sizes()]
    limits = (10, 10, 10)
    assert join(r, "ann", chat, "Rust", limits) == ["joined", "Rust"]
    assert join(r, "ann", chat, "RUST", limits) == ["already", "Rust"]
    assert join(r, "bob", chat, "rust", limits) == ["joined", "Rust"]
    assert r.zscore(keys.chat_sizes(), chat) == 2 and r.sismember(keys.user_chats("ann"), chat)
    assert published(sub) == [
        ("chat:chan:ann", US.join(["J", chat, "Rust", "s1"])),
        ("chat:chan:bob", US.join(["J", chat, "Rust", "s1"])),
    ]
    leave = ["ann", chat, "chat:chan:ann", "s3"]
    assert call(r, "leave", ks, leave) == [1, "Rust"]
    assert call(r, "leave", ks, leave) == [0, ""]
    assert r.zscore(keys.chat_sizes(), chat) == 1
    bob = [keys.chat(chat), keys.members(chat), keys.user_chats("bob"), keys.chat_sizes()]
    assert call(r, "leave", bob, ["bob", chat, "chat:chan:bob", "s4"]) == [1, "Rust"]
    assert not r.exists(keys.chat(chat)) and r.zscore(keys.chat_sizes(), chat) is None
    assert published(sub)[0] == ("chat:chan:ann", US.join(["L", chat, "Rust", "s3"]))


def test_join_limits(r: redis.Redis) -> None:
    # (chats a user may be in, chats that may exist, creations per user per hour)
    assert [join(r, "ann", f"c{i}", f"c{i}", (3, 10, 2))[0] for i in range(3)] == [
        "joined",
        "joined",
        "create_rate",
    ]
    assert 3590 <= r.ttl(keys.creations("ann")) <= 3600
    assert join(r, "bob", "c0", "c0", (3, 2, 0)) == ["joined", "c0"]  # joining is no creation
    assert join(r, "bob", "new", "new", (3, 2, 5))[0] == "chat_limit"  # 2 chats exist
    assert join(r, "bob", "c1", "c1", (3, 2, 5))[0] == "joined"
    r.sadd(keys.user_chats("bob"), "general")
    assert join(r, "bob", "c9", "c9", (3, 10, 5))[0] == "user_limit"
    assert r.zcard(keys.chat_sizes()) == 2


def test_forget_takes_an_unseen_account_out_of_everything(r: redis.Redis) -> None:
    register(r, "ann")
    register(r, "bob")
    join(r, "ann", "solo", "solo", (10, 10, 10))
    join(r, "ann", "duo", "duo", (10, 10, 10))
    join(r, "bob", "duo", "duo", (10, 10, 10))
    r.hset(keys.cursors("ann"), "c:general", "1-0")
    r.sadd(keys.user_peers("ann"), "bob")
    now = int(r.time()[0]) * 1000
    ks = [
        keys.seen(),
        keys.chat_sizes(),
        keys.user("ann"),
        keys.user_chats("ann"),
        keys.user_peers("ann"),
        keys.cursors("ann"),
        keys.ban("ann"),
        keys.rate("ann"),
        keys.complaints("ann"),
        keys.tokens("ann"),
        keys.moderators(),
        keys.bans(),
        keys.user_addresses("ann"),
        keys.known_addresses("ann"),
    ]
    r.hset(keys.tokens("ann"), "abc", str(now + 10**9))  # nothing that grants survives
    r.sadd(keys.moderators(), "ann", "bob")
    r.zadd(keys.bans(), {"ann": now + 10**6})
    r.zadd(keys.user_addresses("ann"), {"1.2.3.4": now})
    r.zadd(keys.known_addresses("ann"), {"1.2.3.4": now})
    args = ["ann", now - 60_000, keys.chat_prefix()]
    assert call(r, "forget", ks, args) == 0  # seen just now
    r.zadd(keys.seen(), {"ann": now - 120_000})
    assert call(r, "forget", ks, args) == 1
    own = [k for k in ks[2:] if k not in (keys.moderators(), keys.bans())]
    assert not any(r.exists(k) for k in own) and r.zscore(keys.seen(), "ann") is None
    assert r.smembers(keys.moderators()) == {"bob"} and r.zscore(keys.bans(), "ann") is None
    assert r.smembers(keys.members("duo")) == {"bob"}
    assert r.smembers(keys.members(keys.GENERAL)) == {"bob"}
    assert not r.exists(keys.chat("solo")) and r.zscore(keys.chat_sizes(), "solo") is None
    assert r.zscore(keys.chat_sizes(), "duo") == 1
    assert r.zscore(keys.chat_sizes(), keys.GENERAL) == 1


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
    r.hset(key, "c:c", "junk")
    advance("c:c", "1-0")
    assert r.hget(key, "c:c") == "1-0"
    assert 0 < r.pttl(key) <= TTL


def gate(
    r: redis.Redis, nick: str, address: str, take: bool = True, limits: tuple = (3, 5, 2)
) -> list[Any]:
    ks = [
        keys.login_fails(nick, address),
        keys.nick_fails(nick),
        keys.address_fails(address),
        keys.known_addresses(nick),
    ]
    return call(r, "login_gate", ks, [nick, address, 60, *limits, 86_400_000, int(take)])


def test_login_gate(r: redis.Redis) -> None:
    """Each attempt is counted when it is let through; the three limits refuse in turn."""
    assert [gate(r, "ann", "10.0.0.1")[0] for _ in range(4)] == ["ok", "ok", "ok", "pair"]
    assert 0 < gate(r, "ann", "10.0.0.1")[1] <= 60_000
    assert r.get(keys.login_fails("ann", "10.0.0.1")) == "3"  # refusals are not counted
    assert gate(r, "ann", "10.0.0.2", take=False)[0] == "ok"  # a peek counts nothing
    assert [gate(r, "ann", "10.0.0.2")[0] for _ in range(3)] == ["ok", "ok", "nick"]
    r.zadd(keys.known_addresses("ann"), {"10.0.0.3": r.time()[0] * 1000})
    assert [gate(r, "ann", "10.0.0.3")[0] for _ in range(4)] == ["ok", "ok", "ok", "pair"]
    # from 10.0.0.1, ann counts once; a second nickname fills its limit of two
    assert gate(r, "bob", "10.0.0.1")[0] == "ok"
    refused = gate(r, "cid", "10.0.0.1")
    assert refused[0] == "address" and 0 < refused[1] <= 60_000
    assert r.zcard(keys.address_fails("10.0.0.1")) == 2

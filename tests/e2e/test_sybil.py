"""Sock puppets and look-alikes: fresh accounts from one place cannot ban, a banned user
cannot come back as a new one from the same address, and nobody can register a nickname
that renders like someone else's. Loopback addresses 127.0.0.x play different people."""

from __future__ import annotations

import asyncio

import redis

from store import keys
from tests.helpers import Client, eventually

LOOK_ALIKE = "! bad nickname: too similar to an existing nickname"


async def _new_nick(c: Client, nick: str) -> str:
    """Offer a nickname; the line that answers it (a prompt or a refusal)."""
    await c.expect("nickname")
    await c.send(nick)
    return await c.line()


async def test_sock_puppets_from_one_address_count_once(backend, gateways, clients) -> None:
    gw = gateways(backend)
    bob = await clients(gw.port, "127.0.0.9")
    await bob.login("bob")
    answers = []
    for nick in ("puppet1", "puppet2", "puppet3"):  # the attack: three accounts, one place
        c = await clients(gw.port, "127.0.0.5")
        await c.login(nick)
        await c.send("/ban bob")
        answers.append(await c.expect("complaint"))
    assert answers[0] == "* complaint about bob recorded (1/3)"
    for refused in answers[1:]:
        assert refused == "! a complaint about bob from your address was already counted (1/3)"
    await bob.send("still free")
    await bob.expect("still free")
    carol = await clients(gw.port, "127.0.0.6")  # another person still counts
    await carol.login("carol")
    await carol.send("/ban bob")
    assert await carol.expect("complaint") == "* complaint about bob recorded (2/3)"


async def test_complaints_from_new_accounts_do_not_count(backend, gateways, clients) -> None:
    gw = gateways(backend, CHAT_COMPLAINT_MIN_AGE="2")
    bob, alice = await clients(gw.port), await clients(gw.port, "127.0.0.2")
    await bob.login("bob")
    await alice.login("alice")
    await alice.send("/ban bob")
    refused = await alice.line()  # creation is kept in whole seconds: 1 or 2 s to go
    assert refused in {
        f"! your account is too new for complaints to count; try again in {n} s" for n in (1, 2)
    }

    async def counted() -> bool:
        await alice.send("/ban bob")
        line = await alice.line()
        assert line.startswith(("! your account is too new", "* complaint about bob")), line
        return line == "* complaint about bob recorded (1/3)"

    await eventually(counted, "alice's account 2 s old: her complaint counts", timeout=2.1)


async def test_complaints_per_hour_are_limited(backend, gateways, clients) -> None:
    gw = gateways(backend, CHAT_COMPLAINTS_PER_HOUR="2")
    alice = await clients(gw.port, "127.0.0.2")
    await alice.login("alice")
    for nick in ("bob", "carol", "dave"):
        c = await clients(gw.port)
        await c.login(nick)
    for nick in ("bob", "carol"):
        await alice.send(f"/ban {nick}")
        assert await alice.line() == f"* complaint about {nick} recorded (1/3)"
    await alice.send("/ban dave")  # 20 of 20 users in 2 s is no longer possible
    assert await alice.line() == "! too many complaints: at most 2 an hour; try again in 60 min"
    await alice.send("/ban bob")  # a repeat is still told as a repeat
    assert (await alice.line()).startswith("! you already complained about bob (1/3)")


async def test_a_banned_user_cannot_register_again_from_their_address(
    backend, gateways, clients
) -> None:
    gw = gateways(backend, "--ban-threshold", "2", "--ban-duration", "30")
    housemate = await clients(gw.port, "127.0.0.9")
    await housemate.login("housemate")  # an account from bob's address, before the ban
    bob = await clients(gw.port, "127.0.0.9")
    await bob.login("bob")
    for n, nick in enumerate(("alice", "carol")):
        c = await clients(gw.port, f"127.0.0.{n + 2}")
        await c.login(nick)
        await c.send("/ban bob")
        await c.expect("complaint about bob")
    await bob.expect("you are banned")
    again = await clients(gw.port, "127.0.0.9")
    refused = await _new_nick(again, "bob_again")
    assert refused.startswith("! no new accounts from your address until ")
    assert "banned" in refused
    await again.expect("nickname")  # asked again; nothing was registered
    await again.send("housemate")  # existing accounts from there still log in
    await again.expect("(?i)password")
    await again.send("secret123")
    await again.expect("^\\* ready")
    elsewhere = await clients(gw.port, "127.0.0.7")
    await elsewhere.login("newcomer")  # other addresses register as before


async def test_look_alike_nicknames_are_refused(backend, gateways, clients) -> None:
    gw = gateways(backend)
    alice = await clients(gw.port)
    await alice.login("Alice")
    c = await clients(gw.port)
    for nick in ("\u0410lice", "\u0391lice", "Al\u0456ce", "Alice\u3164", "\u3164"):
        answer = await _new_nick(c, nick)
        assert answer.startswith("! bad nickname: "), (nick, answer)
    assert await _new_nick(c, "AIice") == LOOK_ALIKE  # capital I for l: all Latin
    assert await _new_nick(c, "a1ice") == LOOK_ALIKE
    assert await _new_nick(c, "\u0410\u043b\u0438\u0441\u0430") == (
        "* New nickname \u0410\u043b\u0438\u0441\u0430. Choose a password:"
    )  # a Cyrillic name that looks like no one is welcome
    await c.send("secret123")
    await c.expect("^\\* ready")
    other = await clients(gw.port)
    await other.login("ALICE")  # Alice herself, any case, as before


async def test_a_chat_that_looks_like_a_live_one_is_not_created(
    redis_url, gateways, clients
) -> None:
    """Across gateways: `#poo1` is not made beside `#Pool`, nor `#genera1` beside
    #general; the real chats are joined as before, and the look is free again once the
    chat it belonged to has emptied."""
    gw1, gw2 = gateways(redis_url), gateways(redis_url)
    ann, bob = await clients(gw1.port), await clients(gw2.port)
    await ann.login("ann")
    await bob.login("bob")
    await ann.send("/chats #Pool")
    await ann.expect("joined #Pool")
    for typed, real in (("poo1", "Pool"), ("genera1", "general"), ("GeneraI", "general")):
        await bob.send(f"/chats #{typed}")
        assert await bob.expect("^!") == (
            f"! cannot create #{typed}: it looks like #{real}, which exists; "
            f"join #{real} or choose another name"
        )
    await bob.send("/chats #POOL")  # the chat itself, any case
    await bob.expect("joined #Pool")
    await bob.send("/leave #Pool")
    await bob.expect("left #Pool")
    await ann.send("/chats #POOL")  # a join in other letters records nothing
    await ann.expect("you are in #Pool")
    looks = redis.Redis.from_url(redis_url, decode_responses=True)
    assert looks.hgetall(keys.chat_looks()) == {"poo1": "pool"}
    await ann.send("/leave #Pool")
    await ann.expect("left #Pool")
    await bob.send("/chats #poo1")  # #Pool has emptied: its look is free
    await bob.expect("joined #poo1")
    assert looks.hget(keys.chat_looks(), "poo1") == "poo1"
    for n in range(6):  # chats made and emptied: each creation prunes the dead looks it draws
        await bob.send(f"/chats #tide{n}")
        await bob.expect(f"joined #tide{n}")
        await bob.send(f"/leave #tide{n}")
        await bob.expect(f"left #tide{n}")
    assert looks.hlen(keys.chat_looks()) <= 2, looks.hgetall(keys.chat_looks())  # not 7
    looks.close()


async def test_look_alike_chats_on_every_store(backend, gateways, clients) -> None:
    gw = gateways(backend)
    ann = await clients(gw.port)
    await ann.login("ann")
    for n in range(5):  # made and emptied: their looks are pruned at later creations
        await ann.send(f"/chats #Tide{n}")
        await ann.expect(f"joined #Tide{n}")
        await ann.send(f"/leave #Tide{n}")
        await ann.expect(f"left #Tide{n}")
    await ann.send("/chats #Pool")
    await ann.expect("joined #Pool")
    await ann.send("/chats #poo1")
    assert "it looks like #Pool, which exists" in await ann.expect("^!")


async def test_a_name_typed_decomposed_is_the_same_user(backend, gateways, clients) -> None:
    """`jose` + a combining accent, as some keyboards and clients send it, was refused
    ("only letters"); it is `José` (NFC, then the identity's NFKC and case folding)."""
    gw = gateways(backend)
    first = await clients(gw.port)
    await first.login("Jos\u00e9")
    again = await clients(gw.port)
    await again.expect("nickname")
    await again.send("jose\u0301")
    assert "assword" in await again.line()
    assert "New nickname" not in again.seen[-1]  # the existing account, not a new one
    await again.send("secret123")
    assert (await again.expect("^\\* ready")).startswith("* ready: logged in as Jos\u00e9")
    fresh = await clients(gw.port)
    await fresh.login("Rene\u0301e")  # a new account: kept composed
    await first.send("/send ren\u00e9e hi")
    assert "hi" in await fresh.expect("hi")


async def test_two_gateways_racing_look_alikes_register_one(redis_url, gateways, clients) -> None:
    g1, g2 = gateways(redis_url), gateways(redis_url)
    a, b = await clients(g1.port), await clients(g2.port)
    for c, nick in ((a, "Alice"), (b, "AIice")):  # both pass the nickname check...
        assert (await _new_nick(c, nick)).startswith("* New nickname")
    await asyncio.gather(a.send("secret123"), b.send("secret123"))  # ...one registers
    answers = sorted([await a.expect("^(\\* ready|! )"), await b.expect("^(\\* ready|! )")])
    assert answers[0] == LOOK_ALIKE and answers[1].startswith("* ready"), answers

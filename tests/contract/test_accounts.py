"""The contract's accounts, logins, resume tokens, complaints and moderation, on every store."""

from __future__ import annotations

from typing import Any

from store import memory
from store import redis as redis_store
from store.contract import (
    GENERAL,
    ComplaintStatus,
    Conv,
    LoginGate,
    LoginLimits,
    Position,
    PostStatus,
    Registration,
    UserBanned,
    UserKicked,
    UserState,
    UserUnbanned,
)
from tests.contract.conftest import Backend, MakeStore, listening, post, register

LIMITS = LoginLimits(per_pair=3, per_nick=5, nicks_per_address=2, window=60)
OPEN = LoginLimits(per_pair=0, per_nick=0, nicks_per_address=0, window=60)
G = LoginGate


async def user_state(s: Any, user: str) -> UserState:
    """The user's state as a login reads it."""
    return await s.enter(user, "127.0.0.1")


async def token_name(s: Any, user: str, token_hash: str) -> str | None:
    """The name a resume token logs in as, or None (no login limit in the way)."""
    login = await s.token_login(user, "127.0.0.1", OPEN, token_hash)
    return login.name


async def gates(s: Any, user: str, address: str, n: int) -> list[LoginGate]:
    return [(await s.login_gate(user, address, LIMITS, take=True)).gate for _ in range(n)]


def test_the_memory_store_keeps_redis_policy() -> None:
    for name in (
        "PRESENCE_TTL",
        "ADDRESS_MEMORY",
        "KNOWN_ADDRESSES",
        "SMALL_CHAT",
        "EXACT_ONLINE",
        "HOUR_MS",
    ):
        assert getattr(memory, name) == getattr(redis_store, name), name
    assert memory.ADDRESS_COUNT_TTL_MS == redis_store.ADDRESS_COUNT_TTL_MS


async def test_register_and_look_alikes(make_store: MakeStore) -> None:
    s = await make_store(max_registrations=2)
    assert await s.register("alice", "Alice", "pw", "a1ice", "9.9.9.9") is Registration.CREATED
    assert await s.register("alice", "ALICE", "pw2", "a1ice", "8.8.8.8") is Registration.TAKEN
    assert await s.register("aiice", "AIice", "pw", "a1ice", "8.8.8.8") is Registration.LOOK_ALIKE
    assert (await s.new_name("aiice", "a1ice", "8.8.8.8")).look_alike
    assert not (await s.new_name("alice", "a1ice", "8.8.8.8")).look_alike
    assert await s.register("bob", "Bob", "pw", "bob", "9.9.9.9") is Registration.CREATED
    assert await s.register("cid", "Cid", "pw", "cid", "9.9.9.9") is Registration.LIMITED
    assert await s.register("cid", "Cid", "pw", "cid", "") is Registration.CREATED  # no address
    account = await s.get_account("alice")
    assert account is not None and (account.name, account.password_hash) == ("Alice", "pw")
    assert await s.get_account("nobody") is None
    assert await s.names(["bob", "nobody", "alice"]) == ["Bob", None, "Alice"]  # any slots
    assert await s.names([]) == []
    state = await user_state(s, "bob")
    assert state == UserState({GENERAL: GENERAL}, set(), {}, None)
    top = await s.active_chats_bounded(10, 1000)
    assert top.total == 1 and top.chats[0].members == 3
    assert sorted(u.key for u in await s.users(10)) == ["alice", "bob", "cid"]


async def test_users_newest_first(backend: Backend) -> None:
    s = await backend.make()
    await register(s, "ann", "bob")
    await backend.wait(0.01)
    await s.seen("ann", "1.1.1.1")
    seen = await s.users(10)
    assert [u.key for u in seen] == ["ann", "bob"] and seen[0].seen_ms > seen[1].seen_ms
    assert [(u.name, u.banned_until_ms, u.moderator) for u in seen] == [
        ("ANN", 0, False),
        ("BOB", 0, False),
    ]
    assert [u.key for u in await s.users(1)] == ["ann"]


async def test_login_gate_pair_and_nick(store: Any) -> None:
    s = store
    assert await gates(s, "ann", "10.0.0.1", 4) == [G.OK, G.OK, G.OK, G.PAIR]
    peek = await s.login_gate("ann", "10.0.0.2", LIMITS, take=False)
    assert peek.gate is G.OK
    assert await gates(s, "ann", "10.0.0.2", 3) == [G.OK, G.OK, G.NICK]
    refused = await s.login_gate("ann", "10.0.0.5", LIMITS, take=True)
    assert refused.gate is G.NICK and 0 < refused.wait_ms <= 60_000
    # a success forgives that address's attempts, and makes it known: exempt from the
    # nickname's limit (an attacker elsewhere cannot lock the owner out)
    await s.seen("ann", "10.0.0.1")
    assert await gates(s, "ann", "10.0.0.1", 4) == [G.OK, G.OK, G.OK, G.PAIR]


async def test_login_gate_address_limit(store: Any) -> None:
    s = store
    assert await gates(s, "ann", "10.0.0.9", 2) == [G.OK, G.OK]  # one nickname, once
    assert await gates(s, "bob", "10.0.0.9", 1) == [G.OK]
    refused = await s.login_gate("cid", "10.0.0.9", LIMITS, take=True)
    assert refused.gate is G.ADDRESS and 0 < refused.wait_ms <= 60_000
    # refusals by the address limit are given back to the nickname's counters
    for _ in range(8):
        check = await s.login_gate("cid", "10.0.0.9", LIMITS, take=True)
        assert check.gate is G.ADDRESS
    assert await gates(s, "cid", "10.0.0.7", 3) == [G.OK] * 3
    assert await gates(s, "cid", "10.0.0.8", 3) == [G.OK, G.OK, G.NICK]
    # a nickname that logged in from the address before is not limited by it
    await s.seen("dan", "10.0.0.9")
    assert await gates(s, "dan", "10.0.0.9", 3) == [G.OK] * 3


async def test_login_window_passes_and_attempts_are_given_back(backend: Backend) -> None:
    s = await backend.make()
    limits = LoginLimits(per_pair=2, per_nick=0, nicks_per_address=0, window=1)
    for _ in range(2):
        assert (await s.login_gate("ann", "10.0.0.1", limits, take=True)).gate is G.OK
    assert (await s.login_gate("ann", "10.0.0.1", limits, take=False)).gate is G.PAIR
    await s.give_back_attempt("ann", "10.0.0.1")  # one was never checked
    assert (await s.login_gate("ann", "10.0.0.1", limits, take=True)).gate is G.OK
    locked = await s.login_gate("ann", "10.0.0.1", limits, take=False)
    assert locked.gate is G.PAIR and 0 < locked.wait_ms <= 1000
    await backend.wait(1.05)
    assert (await s.login_gate("ann", "10.0.0.1", limits, take=False)).gate is G.OK


async def test_tokens_replace_bound_revoke(store: Any) -> None:
    s = store
    await register(s, "ann")
    issue = s.issue_token
    await issue("ann", "h1", 60, None, 3)
    assert await token_name(s, "ann", "h1") == "ANN"
    assert await token_name(s, "ann", "h2") is None
    await issue("ann", "h2", 60, "h1", 3)
    assert await token_name(s, "ann", "h1") is None
    assert await token_name(s, "ann", "h2") == "ANN"
    await s.revoke_token("ann", "h2")
    assert await token_name(s, "ann", "h2") is None
    for h in ("a", "b", "c", "d"):
        await issue("ann", h, 60, None, 3)
    assert [await token_name(s, "ann", h) for h in "abcd"] == [None, "ANN", "ANN", "ANN"]
    await s.set_password("ann", "pw2")
    assert await token_name(s, "ann", "d") is None
    account = await s.get_account("ann")
    assert account is not None and account.password_hash == "pw2"


async def test_a_token_expires(backend: Backend) -> None:
    s = await backend.make()
    await register(s, "ann")
    await s.issue_token("ann", "short", 1, None, 5)
    await s.issue_token("ann", "long", 60, None, 5)
    assert await token_name(s, "ann", "short") == "ANN"
    await backend.wait(1.05)
    assert await token_name(s, "ann", "short") is None
    assert await token_name(s, "ann", "long") == "ANN"


async def test_a_token_login_enters_and_a_wrong_one_counts(store: Any) -> None:
    s = store
    await register(s, "ann")
    await s.issue_token("ann", "good", 60, None, 5)
    await s.advance_cursors({"ann": {Conv.of_chat(GENERAL): Position(5, 1)}})
    limits = LoginLimits(per_pair=2, per_nick=0, nicks_per_address=1, window=60)
    login = s.token_login
    ok = await login("ann", "10.1.1.1", limits, "good")
    assert (ok.check.gate, ok.name) == (G.OK, "ANN")
    assert ok.state.chats == {GENERAL: GENERAL}
    assert ok.state.cursors == {Conv.of_chat(GENERAL): Position(5, 1)}
    bad = await login("ann", "10.2.2.2", limits, "wrong")
    assert (bad.check.gate, bad.name, bad.state) == (G.OK, None, None)
    # the address limit: another nickname failing from 10.2.2.2 is one too many
    assert (await login("bob", "10.2.2.2", limits, "wrong")).check.gate is G.ADDRESS
    assert (await login("ann", "10.2.2.2", limits, "wrong")).check.gate is G.OK  # the 2nd
    assert (await login("ann", "10.2.2.2", limits, "wrong")).check.gate is G.PAIR
    # a valid token still logs in there: 256 random bits are not guessed
    assert (await login("ann", "10.2.2.2", limits, "good")).name == "ANN"


async def test_complaints_ban_at_threshold(backend: Backend) -> None:
    s = await backend.make(
        ban_threshold=2, complaints_per_address=1, ban_address_memory=4, complaints_per_hour=5
    )
    await register(s, "ann", "bob", "cid", "dan")
    await s.seen("bob", "10.0.0.9")
    async with listening(s) as (links, events):
        await links.add(users=["bob"])
        assert (await s.complain("ann", "nobody", "1.1.1.1")).status is ComplaintStatus.NO_USER
        c = await s.complain("ann", "bob", "1.1.1.1")
        assert (c.status, c.count, c.name) == (ComplaintStatus.RECORDED, 1, "BOB")
        assert (await s.complain("ann", "bob", "1.1.1.2")).status is ComplaintStatus.AGAIN
        assert (await s.complain("cid", "bob", "1.1.1.1")).status is ComplaintStatus.ADDRESS
        assert [n for n, _ in await s.complaints_about("bob")] == ["ANN"]
        banned = await s.complain("cid", "bob", "2.2.2.2")
        assert (banned.status, banned.count) == (ComplaintStatus.BANNED, 2)
        assert banned.until_ms >= backend.now_ms() + 55_000
        await backend.until(lambda: len(events) == 1)
        assert events == [UserBanned("bob", banned.until_ms, False)]
    again = await s.complain("dan", "bob", "3.3.3.3")
    assert (again.status, again.until_ms) == (ComplaintStatus.ALREADY_BANNED, banned.until_ms)
    assert [(b.key, b.until_ms) for b in await s.bans()] == [("bob", banned.until_ms)]
    held = await s.new_name("eve", "eve", "10.0.0.9")
    assert held.held_until_ms == banned.until_ms  # bob's address may not register meanwhile
    assert (await s.new_name("eve", "eve", "10.0.0.8")).held_until_ms == 0
    assert await post(s, "bob", GENERAL, "x") == [PostStatus.BANNED]
    assert (await user_state(s, "bob")).banned_until_ms == banned.until_ms
    assert await s.complaints_about("bob") == []


async def test_complaint_age_and_rate(make_store: MakeStore) -> None:
    s = await make_store(complaint_min_age=3600, complaints_per_hour=2)
    await register(s, "ann", "x", "y", "z")
    young = await s.complain("ann", "x", "1.1.1.1")
    assert young.status is ComplaintStatus.TOO_NEW and 3_590_000 < young.wait_ms <= 3_600_000
    s = await make_store(complaints_per_hour=2)
    assert (await s.complain("ann", "x", "1.1.1.1")).status is ComplaintStatus.RECORDED
    assert (await s.complain("ann", "y", "1.1.1.1")).status is ComplaintStatus.RECORDED
    rate = await s.complain("ann", "z", "1.1.1.1")
    assert rate.status is ComplaintStatus.RATE and 3_590_000 < rate.wait_ms <= 3_600_000
    assert await s.complaints_about("z") == []


async def test_holds_of_bans_after_complaints_are_listed_and_lifted(backend: Backend) -> None:
    s = await backend.make(ban_threshold=1, ban_address_memory=4, complaints_per_address=0)
    await register(s, "ann", "bob", "cid")
    await s.seen("bob", "10.0.0.1")
    await s.seen("bob", "10.0.0.2")
    await s.seen("cid", "10.0.0.2")  # cid shares one of bob's addresses
    bob = await s.complain("ann", "bob", "1.1.1.1")
    cid = await s.complain("ann", "cid", "1.1.1.1")
    assert bob.status is cid.status is ComplaintStatus.BANNED
    held = {h.address: h for h in await s.holds()}
    assert set(held) == {"10.0.0.1", "10.0.0.2"}
    assert [(b.key, b.name) for b in held["10.0.0.2"].bans] == [("bob", "BOB"), ("cid", "CID")]
    assert held["10.0.0.1"].until_ms == bob.until_ms
    # lifting bob's ban frees the address only he held; cid's ban still holds the other
    assert await s.unban("bob")
    assert (await s.new_name("x", "x", "10.0.0.1")).held_until_ms == 0
    assert (await s.new_name("x", "x", "10.0.0.2")).held_until_ms == cid.until_ms
    assert [(h.address, [b.key for b in h.bans]) for h in await s.holds()] == [
        ("10.0.0.2", ["cid"])
    ]
    assert await s.lift_hold("10.0.0.2")  # an operator's choice, whatever holds it
    assert not await s.lift_hold("10.0.0.2")
    assert await s.holds() == []
    assert (await s.new_name("x", "x", "10.0.0.2")).held_until_ms == 0
    assert [b.key for b in await s.bans()] == ["cid"]  # the ban itself stays


async def test_ban_unban_kick_and_the_bans_list(backend: Backend) -> None:
    store = await backend.make(ban_address_memory=4)
    await register(store, "ann", "bob")
    await store.seen("bob", "10.9.9.9")
    assert await store.ban("nobody", 60) is None
    async with listening(store) as (links, events):
        await links.add(users=["bob"])
        info = await store.ban("bob", 60)
        assert info is not None and (info.key, info.name) == ("bob", "BOB")
        assert abs(info.until_ms - (backend.now_ms() + 60_000)) < 5000
        # a moderator's ban holds no address back from new accounts (only complaints do)
        assert (await store.new_name("zed", "zed", "10.9.9.9")).held_until_ms == 0
        assert await store.holds() == []
        assert [(b.key, b.name, b.until_ms) for b in await store.bans()] == [
            ("bob", "BOB", info.until_ms)
        ]
        seen = [u.banned_until_ms for u in await store.users(10) if u.key == "bob"]
        assert seen == [info.until_ms]
        assert await post(store, "bob", GENERAL, "x") == [PostStatus.BANNED]
        assert await store.unban("bob")
        assert not await store.unban("bob")
        await store.kick("bob")
        await backend.until(lambda: len(events) == 3)
        assert events == [
            UserBanned("bob", info.until_ms, True),
            UserUnbanned("bob"),
            UserKicked("bob"),
        ]
    assert await store.bans() == []
    assert [u.banned_until_ms for u in await store.users(10) if u.key == "bob"] == [0]
    assert await post(store, "bob", GENERAL, "x") == [PostStatus.OK]
    assert not await store.is_moderator("ann")
    assert await store.set_moderator("ann", True) and await store.is_moderator("ann")
    assert [u.moderator for u in await store.users(10) if u.key == "ann"] == [True]
    assert await store.set_moderator("ann", False) and not await store.is_moderator("ann")
    assert not await store.set_moderator("nobody", True)


async def test_a_ban_ends_by_itself(backend: Backend) -> None:
    s = await backend.make()
    await register(s, "bob")
    info = await s.ban("bob", 1)
    assert info is not None and (await user_state(s, "bob")).banned_until_ms == info.until_ms
    await backend.wait(1.05)
    assert (await user_state(s, "bob")).banned_until_ms is None
    assert await s.bans() == []
    assert await post(s, "bob", GENERAL, "x") == [PostStatus.OK]


async def test_delete_user(store: Any) -> None:
    s = store
    await register(s, "ann", "bob", "cid")
    await s.join("ann", "solo", "solo", "o")
    await s.join("ann", "duo", "duo", "o")
    await s.join("bob", "duo", "duo", "o")
    assert (await s.post_private("ann", "ANN", "bob", "hi")).status is PostStatus.OK
    await s.issue_token("ann", "h1", 60, None, 5)
    await s.ban("ann", 60)
    await s.set_moderator("ann", True)
    assert await s.delete_user("ann", "ann")
    assert not await s.delete_user("ann", "ann")
    assert await s.get_account("ann") is None
    assert await token_name(s, "ann", "h1") is None
    assert (await user_state(s, "bob")).peers == set()
    assert await s.read_after({Conv.private("ann", "bob"): None}) == []
    chats = await s.active_chats_bounded(10, 1000)
    assert [(c.name, c.members) for c in chats.chats] == [("general", 2), ("duo", 1)]
    assert await s.bans() == [] and not await s.is_moderator("ann")
    assert not (await s.new_name("ann", "ann", "1.1.1.1")).look_alike
    assert await s.register("ann", "Ann", "pw", "ann", "") is Registration.CREATED
    assert (await user_state(s, "ann")).banned_until_ms is None  # nothing survives


async def test_accounts_unseen_for_their_lifetime_are_forgotten(backend: Backend) -> None:
    s = await backend.make(account_ttl=1)
    await register(s, "bob", "cid")
    await s.join("bob", "den", "Den", "o")
    await backend.wait(0.6)
    await register(s, "dan")
    await backend.wait(0.6)  # bob and cid unseen for 1.2 s, dan for 0.6 s
    assert await s.forget_unseen(1) == 1
    assert await s.forget_unseen(10) == 1
    assert await s.forget_unseen(10) == 0
    assert [await s.get_account(u) is None for u in ("bob", "cid", "dan")] == [True, True, False]
    listed = await s.active_chats_bounded(10, 1000)
    assert [(c.name, c.members) for c in listed.chats] == [("general", 1)]
    await s.heartbeat({"dan"})  # online counts as seen
    await backend.wait(0.6)
    assert await s.forget_unseen(10) == 0

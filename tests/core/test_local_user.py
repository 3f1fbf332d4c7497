"""Per-user memory and bounded background work: shared chat mappings (copied before a
join or leave), cursor flushes in turns, password hashes below the event loop."""

from __future__ import annotations

from gateway.core.user import LocalUser
from store.contract import Conv, Position, UserState


def _state(chats: dict[str, str]) -> UserState:
    return UserState(chats=dict(chats), peers=set(), cursors={}, banned_until_ms=None)


def test_a_join_or_leave_never_changes_another_users_chats() -> None:
    a = LocalUser("a", "a", _state({"general": "general"}))
    b = LocalUser("b", "b", _state({"general": "general"}))
    assert a.chats is b.chats  # one mapping for both: memory per idle user
    a.set_chat("den", "Den")
    assert a.chats == {"general": "general", "den": "Den"}
    assert b.chats == {"general": "general"}
    b.drop_chat("general")
    assert b.chats == {} and LocalUser("c", "c", _state({"general": "general"})).chats == {
        "general": "general"
    }
    a.drop_chat("den")
    assert a.chats == {"general": "general"}


async def test_a_bounded_cursor_flush_takes_turns_and_loses_nothing() -> None:
    from gateway.cursors import Cursors

    written: list[set[str]] = []

    class Store:
        async def advance_cursors(self, updates: dict[str, dict[Conv, Position]]) -> None:
            written.append(set(updates))

    users = {k: LocalUser(k, k, _state({"general": "general"})) for k in "abcde"}
    for u in users.values():
        u.mark_shown(Conv.of_chat("general"), Position(1, 1))
    cursors = Cursors(Store(), users, 1.0)  # type: ignore[arg-type]
    await cursors.flush(2)
    await cursors.flush(2)
    await cursors.flush(2)
    assert written == [{"a", "b"}, {"c", "d"}, {"e"}]  # every user once, in turns
    for u in users.values():
        u.mark_shown(Conv.of_chat("general"), Position(2, 1))
    await cursors.flush()  # shutdown: all at once
    assert written[-1] == set("abcde")


async def test_password_hashes_run_below_the_event_loops_priority() -> None:
    """A storm of password logins must not take the CPU from the chat's event loops."""
    import os
    import threading

    from gateway.core import hashing

    hasher = hashing.Hasher(1, 4)
    nice = await hasher._run(
        lambda: True, lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    )
    assert nice >= hashing.HASH_NICE
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < hashing.HASH_NICE

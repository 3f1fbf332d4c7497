"""Users in the same single chat share one mapping; a join or leave copies it first."""

from __future__ import annotations

from gateway.core.user import LocalUser
from store.contract import UserState


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

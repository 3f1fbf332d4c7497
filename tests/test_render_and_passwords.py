import re

from gateway.core.passwords import hash_password, verify_password
from gateway.doors.line import render
from gateway.settings import Settings

MESSAGE = re.compile(r"^\[[^\]]+\] ([#@]\S+) <([^>]+)> (.*)$")


def test_message_line_matches_the_contract_regex() -> None:
    line = render.message(1_700_000_000_000, "#general", "alice", "hello <world>")
    assert line.endswith(b"\r\n")
    m = MESSAGE.match(line.decode()[:-2])
    assert m and m.groups() == ("#general", "alice", "hello <world>")


def test_notice_and_error() -> None:
    assert render.notice("joined #x") == b"* joined #x\r\n"
    assert render.error("no") == b"! no\r\n"


def test_password_hash_is_salted_and_verifies() -> None:
    a, b = hash_password("secret1", 10), hash_password("secret1", 10)
    assert a != b and "secret1" not in a
    assert verify_password("secret1", a) and verify_password("secret1", b)
    assert not verify_password("secret2", a)
    assert not verify_password("secret1", "garbage")


def test_settings_defaults_and_environment() -> None:
    s = Settings.from_args([], env={})
    assert (
        s.host,
        s.port,
        s.redis_url,
        s.history,
        s.message_ttl,
        s.ban_threshold,
        s.ban_duration,
        s.max_line,
    ) == ("127.0.0.1", 8000, None, 20, 3600, 3, 14400, 4096)
    s = Settings.from_args(["--port", "9000"], env={"CHAT_HISTORY": "5", "REDIS_URL": "redis://x"})
    assert (s.port, s.history, s.redis_url) == (9000, 5, "redis://x")


def test_one_member_is_singular() -> None:
    from gateway.core import events as ev
    from store.contract import ChatInfo

    line = render.render(ev.ChatList((ChatInfo("a", 2, 1), ChatInfo("b", 1, 0)), 2))
    assert line == b"* chats: #a (2 members, 1 online), #b (1 member, 0 online)\r\n"


def test_counts_stopped_at_the_bound_say_so() -> None:
    from gateway.core import events as ev
    from store.contract import ChatInfo

    line = render.render(ev.Online("general", ("a", "b"), 1000, capped=True))
    assert line == b"* online in #general (1000+): a, b and more\r\n"
    line = render.render(ev.ChatList((ChatInfo("general", 50000, 1000, True),), 1))
    assert line == b"* chats: #general (50000 members, 1000+ online)\r\n"

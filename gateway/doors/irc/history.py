"""CHATHISTORY and MARKREAD (IRCv3 draft/chathistory, draft/read-marker) as core
commands: references (`msgid=`, `timestamp=`) become `MessageAt` and `TimeAt`, the
subcommands ranges of the core's `ReadHistory`; the core answers with `HistoryPage`,
`Targets` and `ReadMarker` events (render.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.core import commands as cmd
from gateway.doors.irc.protocol import CHATHISTORY_MAX, IrcMessage, parse_msgid, parse_time
from gateway.kit.codec import Step

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = ["chathistory", "markread", "point"]


def point(ref: str) -> cmd.Point | None:
    """A CHATHISTORY reference; None if it is not one."""
    kind, _, value = ref.partition("=")
    if kind == "msgid":
        return parse_msgid(value)
    if kind == "timestamp":
        ms = parse_time(value)
        return cmd.TimeAt(ms) if ms is not None else None
    return None


def _limit(text: str) -> int | None:
    if not text.isdigit():
        return None
    return max(1, min(int(text), CHATHISTORY_MAX))


def chathistory(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    p = msg.params
    sub = p[0].upper()
    c.history_sub = sub

    def fail(code: str, *context: str) -> None:
        c.fail("CHATHISTORY", code, *context)

    if sub == "TARGETS":
        if len(p) < 4:
            fail("NEED_MORE_PARAMS", sub, "CHATHISTORY TARGETS needs two timestamps and a limit")
            return
        a, b, limit = point(p[1]), point(p[2]), _limit(p[3])
        if not isinstance(a, cmd.TimeAt) or not isinstance(b, cmd.TimeAt) or limit is None:
            fail("INVALID_PARAMS", sub, "timestamps and a limit expected")
            return
        yield cmd.RecentTargets(a.ms, b.ms, limit)
        return
    if sub not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN"):
        fail("INVALID_PARAMS", sub or "*", "unknown CHATHISTORY subcommand")
        return
    need = 5 if sub == "BETWEEN" else 4
    if len(p) < need:
        fail("NEED_MORE_PARAMS", sub, "not enough parameters")
        return
    target = p[1]
    limit = _limit(p[need - 1])
    if limit is None:
        fail("INVALID_PARAMS", sub, target, "bad limit")
        return
    c.history_target = target
    if sub == "LATEST" and p[2] == "*":
        yield cmd.ReadHistory(target, limit, newest=True)
        return
    ref = point(p[2])
    if ref is None:
        fail("INVALID_MSGREFTYPE", sub, target, "bad message reference")
        return
    if sub == "LATEST":
        yield cmd.ReadHistory(target, limit, after=ref, newest=True)
    elif sub == "BEFORE":
        yield cmd.ReadHistory(target, limit, before=ref, newest=True)
    elif sub == "AFTER":
        yield cmd.ReadHistory(target, limit, after=ref)
    elif sub == "AROUND":
        yield cmd.ReadHistory(target, limit, around=ref)
    else:
        other = point(p[3])
        if other is None:
            fail("INVALID_MSGREFTYPE", sub, target, "bad message reference")
            return
        first, second = (ref.ms, getattr(ref, "seq", -1)), (other.ms, getattr(other, "seq", -1))
        if first <= second:  # forwards: the oldest after the first
            yield cmd.ReadHistory(target, limit, after=ref, before=other)
        else:  # backwards: the newest before the first
            yield cmd.ReadHistory(target, limit, after=other, before=ref, newest=True)


def markread(c: IrcCodec, msg: IrcMessage) -> Iterator[Step]:
    if not msg.params or not msg.params[0]:
        c.fail("MARKREAD", "NEED_MORE_PARAMS", "MARKREAD needs a target")
        return
    target = msg.params[0]
    if len(msg.params) < 2:
        yield cmd.MarkRead(target)
        return
    stamp = msg.params[1]
    kind, _, value = stamp.partition("=")
    ms = parse_time(value) if kind == "timestamp" else None
    if ms is None:
        c.fail("MARKREAD", "INVALID_PARAMS", target, "timestamp=... expected")
        return
    yield cmd.MarkRead(target, ms)

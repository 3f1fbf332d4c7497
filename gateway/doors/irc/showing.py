"""How a burst of messages becomes one IRC connection's bytes when the kit's render-once
cache cannot serve it: the connection holds (registering, a JOIN's history), a labeled
command waits for its echo, or it awaits copies of its own messages (every sender without
echo-message leaves them out; notes to oneself come back as echo and delivery).

A chat burst is still rendered once per kind of reader (`IrcShared.blocks`, one block per
message): such a connection joins the blocks of the messages it shows, its own found by
an index of the burst's senders made once per burst (`IrcShared.senders`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.core import events as ev
from gateway.doors.irc import protocol as irc

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = ["Rendered", "rendered", "show"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A chat burst rendered for one kind of reader: its bytes, and where each
    message's lines start in them (`at[i]`; `at[-1]` is the end)."""

    messages: ev.Messages
    data: bytes
    at: list[int]


def show(c: IrcCodec, messages: ev.Messages) -> bytes:
    """A burst for this connection (the fan-out path when it cannot use the kit's
    render-once cache: holding, labeled, or awaiting its own echoes)."""
    if c.holding():
        c.keep(messages)
        return b"" if c.capture is not None else c.take()
    where = messages.where
    if c.pending and isinstance(where, ev.PrivateConv) and where.peer == c.key:
        return _to_self(c, messages)
    if c.pending:
        drop = _without_own(c, messages)
        if len(drop) == len(messages.items):
            return _after_echo(c, b"")
        if c.capture is not None:
            if drop:
                gone = set(drop)
                kept = tuple(m for i, m in enumerate(messages.items) if i not in gone)
                messages = ev.Messages(messages.where, kept)
            c.message_lines(messages)
            return _after_echo(c, b"")
        return _after_echo(c, _shared(c, messages, drop))
    if c.capture is not None:
        c.message_lines(messages)
        return _after_echo(c, b"")
    if isinstance(messages.where, ev.ChatConv):  # the kit keeps the bytes, this their cuts
        return rendered(c, messages).data
    return "".join(irc.message_blocks(messages.where, messages.items, c.nick, c.wants)).encode()


def _to_self(c: IrcCodec, messages: ev.Messages) -> bytes:
    """Notes to oneself from this connection: delivered as to anyone, and with
    echo-message echoed first (the echo carries the label when one waits)."""
    blocks = _blocks(c, messages)
    pending = c.pending
    echoed = []
    for m, block in zip(messages.items, blocks, strict=True):
        key = (c.key, m.text)
        if key in pending:
            pending.remove(key)
            echoed.append(block)
    if not pending:
        c.recache()
    if "echo-message" in c.caps:
        for block in echoed:
            for line in block[:-2].split("\r\n"):
                c.line(line)
    if c.capture is not None and not c.awaiting() and not c.command:
        c.close_label()
    data = b"" if c.capture is not None else c.take()
    data += "".join(blocks).encode()
    if c.deferred and not c.awaiting():
        data += c.deferred.encode() + b"\r\n"
        c.deferred = ""
    return data


def _blocks(c: IrcCodec, messages: ev.Messages) -> list[str]:
    """A burst's per-message blocks for this connection (a note to oneself)."""
    return irc.message_blocks(messages.where, messages.items, c.nick, c.wants)


def rendered(c: IrcCodec, messages: ev.Messages) -> Rendered:
    """A chat burst's bytes for this connection's kind, rendered once for every
    connection of the kind, with where each message's block starts in them."""
    known = c.shared.blocks.get(c.wants)
    if known is None or known.messages is not messages:
        blocks = [
            b.encode() for b in irc.message_blocks(messages.where, messages.items, c.nick, c.wants)
        ]
        known = c.shared.blocks[c.wants] = Rendered(
            messages, b"".join(blocks), [0, *itertools.accumulate(map(len, blocks))]
        )
    return known


def _shared(c: IrcCodec, messages: ev.Messages, drop: list[int]) -> bytes:
    """The burst's bytes less the messages at `drop` (this connection's own, ascending):
    slices of the bytes rendered once for the kind (a busy sender that leaves its own
    messages out rendered every burst itself)."""
    if not isinstance(messages.where, ev.ChatConv):  # private: this connection's own
        gone = set(drop)
        blocks = _blocks(c, messages)
        return "".join(b for i, b in enumerate(blocks) if i not in gone).encode()
    done = rendered(c, messages)
    if not drop:
        cache = c.shared.cache(c.wants)
        if cache.event is not messages:
            cache.keep(messages, done.data)
        return done.data
    data, at, parts = done.data, done.at, []
    start = 0
    for i in drop:
        parts.append(data[start : at[i]])
        start = at[i + 1]
    parts.append(data[start:])
    return b"".join(parts)


def _after_echo(c: IrcCodec, data: bytes) -> bytes:
    if c.capture is not None and not c.awaiting() and not c.command:
        c.close_label()  # the echo that a labeled command waited for came
        data = c.take()
    if c.deferred and not c.awaiting():
        data += c.deferred.encode() + b"\r\n"
        c.deferred = ""
    return data


def _without_own(c: IrcCodec, messages: ev.Messages) -> list[int]:
    """Where in the burst this connection's own messages are that it does not want
    back (all of them without echo-message; none with it), ascending; the copies
    that come are no longer awaited. Another device's messages are always shown. A
    message is this user's when its sender is the user's name (the store writes the
    account's name, the same string as `nick`)."""
    where = messages.where
    target = "#" + where.key if isinstance(where, ev.ChatConv) else where.peer
    pending = c.pending
    if all(p[0] != target for p in pending):
        return []  # nothing awaited here: the usual burst of a busy sender
    echo = "echo-message" in c.caps
    items = messages.items
    drop = []
    for i in _senders(c, messages).get(c.nick, ()):
        key = (target, items[i].text)
        if pending and pending[0] == key:  # the usual case: copies come back in order
            pending.popleft()
        elif key in pending:
            while pending[0] != key and pending[0][0] == target:  # older ones were lost
                pending.popleft()
            if pending[0] == key:
                pending.popleft()
            else:
                pending.remove(key)
        else:
            continue  # another device's message under the same name
        if not echo:
            drop.append(i)
    if not pending:
        c.recache()
    return drop


def _senders(c: IrcCodec, messages: ev.Messages) -> dict[str, list[int]]:
    """Sender name -> where their messages are in the burst, made once per burst for
    every connection (a sender asks for its own: not a scan of the burst each)."""
    known = c.shared.senders
    if known is None or known[0] is not messages:
        at: dict[str, list[int]] = {}
        for i, m in enumerate(messages.items):
            got = at.get(m.sender)
            if got is None:
                at[m.sender] = [i]
            else:
                got.append(i)
        known = c.shared.senders = (messages, at)
    return known[1]

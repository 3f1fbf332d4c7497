"""The IRC door as a kit codec: lines in (protocol.parse -> the command table), core
events out (render.py).

Each line is handled by its command's handler (commands.py), a generator that writes
lines (`line`) and yields the core commands it needs, one at a time: the kit runs each
and the handler goes on with what came back (an error, a join that happened), so one
IRC command may become several core commands. Everything a connection needs beyond
this (admission, deadlines, bounded output, batching of consecutive PRIVMSGs) is the
kit's (gateway/kit/shell.py).

Render once: connections with the same capabilities render a chat burst alike, so they
share one `RenderOnce` (`IrcShared.cache`) while they render plainly; a connection that
needs its own rendering (registering, inside a JOIN or a labeled command, its own
messages awaited to be left out) sets its `cache` to None until it is plain again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gateway.core import events as ev
from gateway.core.names import name_key
from gateway.core.session import Phase
from gateway.doors.irc import numerics as n
from gateway.doors.irc import protocol as irc
from gateway.doors.irc import render, showing
from gateway.doors.irc.commands import COMMANDS, chat_text, plain_post, welcome
from gateway.doors.irc.protocol import LocalIrcUser, format_line
from gateway.doors.irc.registration import Registration
from gateway.kit.codec import Codec, Step, Unit
from gateway.kit.lines import BadEncoding, Line, LineFramer, LineTooLong
from gateway.kit.render_once import RenderOnce

__all__ = ["IrcCodec", "IrcShared"]

#: Own messages awaiting their copy from fan-out (to leave it out) at most.
MAX_PENDING_ECHO = 1024
#: Bytes of a relayed PRIVMSG line beyond its text, its target and twice the nickname.
_ROOM = irc.MAX_LINE - len(f":!@{irc.SERVER} PRIVMSG  :\r\n")
_OVERFLOW = b"ERROR :SendQ exceeded (you are reading too slowly)\r\n"


@dataclass(slots=True)
class IrcShared:
    """What every IRC connection of a gateway shares."""

    max_output: int
    #: Where the gateway keeps its state, as 003 says it ("Redis", "its embedded store").
    store: str = "Redis"
    #: One render cache per set of capabilities that changes how a message looks.
    caches: dict[irc.Wants, RenderOnce] = field(default_factory=dict)
    #: The IRC users of this gateway by nickname key (their last connection's USER).
    users: dict[str, LocalIrcUser] = field(default_factory=dict)
    #: Each kind's last chat burst, rendered (`showing.rendered`).
    blocks: dict[irc.Wants, showing.Rendered] = field(default_factory=dict)
    #: The last burst's senders and where their messages are (`IrcCodec._senders`).
    senders: tuple[ev.Messages, dict[str, list[int]]] | None = None

    def cache(self, wants: irc.Wants) -> RenderOnce:
        found = self.caches.get(wants)
        if found is None:
            found = self.caches[wants] = RenderOnce()
        return found


#: The echo queues of a connection that has sent nothing (most of a big chat's members):
#: one shared empty deque, never added to (a deque is about 600 bytes), replaced by the
#: connection's own at its first message. Only `expect_echo`/`expect_tags` add.
_NO_ECHOES: deque[tuple[str, str]] = deque()


class IrcCodec(Codec):
    __slots__ = (
        "_framer",
        "_held",
        "_held_size",
        "_history",
        "_lines",
        "_post",
        "_welcome_chats",
        "away",
        "batched",
        "caps",
        "capture",
        "chat_keys",
        "chats",
        "command",
        "deferred",
        "errors",
        "history_sub",
        "history_target",
        "key",
        "kick_channel",
        "label",
        "names_mode",
        "nick",
        "online",
        "part_reason",
        "pending",
        "pending_tags",
        "phase",
        "quitting",
        "reg",
        "shared",
        "target",
        "wants",
        "who_mask",
        "whox",
    )

    door = "irc"
    ready_is_login = False  # the login is complete at 001, not at the core's Ready

    def __init__(self, shared: IrcShared) -> None:
        super().__init__(None)
        self.shared = shared
        self._framer: LineFramer | None = None
        self.reg = Registration()
        self.phase = Phase.NICK  # the core session's, as its events tell
        self.caps: set[str] = set()
        self.wants = irc.wants_for(False, False, False)
        self.nick = ""  # the display name, once logged in
        self.key = ""
        self.chats: tuple[str, ...] = ()  # at login (the core's Ready)
        self._welcome_chats: tuple[str, ...] = ()
        self._lines: list[str] = []  # written since the last `take`
        self.capture: list[str] | None = None  # a labeled command's lines
        self.label = ""
        self.command = ""  # the IRC command being handled
        self.target = ""  # its target being handled
        self.errors = 0  # core errors so far: tells a handler whether a command failed
        self.names_mode = "names"  # what an `Online` answers: names, who, ison
        self.whox = ""  # WHO's %fields (WHOX), "" for a plain WHO
        self.online: list[str] | None = None
        #: What is shown later, in order: the backlog before 001, a JOIN's history.
        self._held: list[ev.Messages | ev.Event] | None = []
        self._held_size = 0
        self._history = True  # held messages are history (the backlog): a chathistory batch
        #: (target key, text) sent, not back yet; the shared empty one until the first
        self.pending: deque[tuple[str, str]] = _NO_ECHOES
        self.pending_tags: deque[tuple[str, str]] = _NO_ECHOES  # (target key, tags): TAGMSGs
        #: The chat a batch of PRIVMSGs goes to as typed, the line head that names it,
        #: its pending-echo target and the room for a text relayed in one line.
        self._post = ("", "", "", 0)
        self.batched: list[str] = []  # texts the kit posted with the current PRIVMSG
        self.away = ""
        self.chat_keys: set[str] = set()  # the chats the user is in, as far as told
        self.history_target = ""
        self.history_sub = ""
        self.part_reason = ""
        self.kick_channel = ""  # the channel a KICK names (its 482)
        self.who_mask = "*"
        self.quitting: bool = False
        #: A PONG held until this connection's own messages are echoed (echo-message):
        #: a client that syncs with PING sees its echoes first, as it would on a server
        #: that delivers them before reading on.
        self.deferred = ""

    # -- output helpers (handlers and renderers) ----------------------------------------

    def line(self, text: str, outside: bool = False) -> None:
        """Write a line: into a labeled command's reply while one is captured (not an
        ERROR, nor one `outside` it), else out."""
        if self.capture is not None and not outside and not text.startswith("ERROR"):
            self.capture.append(text)
        else:
            self._lines.append(text)

    def numeric(self, code: str, *params: str) -> None:
        self.line(format_line(code, self.nick or self.reg.nick or "*", *params))

    def notice(self, text: str) -> None:
        self.line(format_line("NOTICE", self.nick or "*", text))

    def fail(self, command: str, code: str, *context: str) -> None:
        """A standard reply (sent whether or not `standard-replies` was asked for: the
        IRCv3 specifications of CHATHISTORY and MARKREAD use them)."""
        self.line(format_line("FAIL", command, code, *context))

    def take(self) -> bytes:
        if not self._lines:
            return b""
        data = "".join(t + "\r\n" for t in self._lines).encode()
        self._lines.clear()
        return data

    def recache(self) -> None:
        """Share the render cache of this connection's kind while it renders plainly."""
        plain = (
            self.reg.registered
            and self._held is None
            and self.capture is None
            and not self.pending
            and not self.pending_tags
            and not self._history
        )
        self.cache = self.shared.cache(self.wants) if plain else None

    def set_caps(self, caps: set[str]) -> None:
        self.caps = caps
        self.wants = irc.wants_for(
            "server-time" in caps, "message-tags" in caps, "account-tag" in caps
        )
        self.recache()

    # -- holding: the backlog before 001, a JOIN's history until its NAMES ---------------

    def hold(self, history: bool = True) -> None:
        if self._held is None:
            self._held = []
        self._history = history
        self.cache = None

    def holding(self) -> bool:
        return self._held is not None

    def keep(self, item: ev.Messages | ev.Event) -> None:
        """Hold `item`; a holder past the output bound gets it all now (the kit drops a
        reader that far behind)."""
        held = self._held
        assert held is not None
        held.append(item)
        if isinstance(item, ev.Messages):
            self._held_size += sum(len(m.text) + 64 for m in item.items)
        if self._held_size > self.shared.max_output:
            self.release()

    def expect_echo(self, target: str, text: str) -> None:
        """A message this connection sent: its copy from fan-out is left out (without
        echo-message) or awaited before a PONG (with it)."""
        if self.pending is _NO_ECHOES:
            self.pending = deque()
        pending = self.pending
        pending.append((target, text))
        if len(pending) > MAX_PENDING_ECHO:  # never came back (lost, or changed)
            pending.popleft()
        self.cache = None

    def expect_tags(self, target: str, tags: str) -> None:
        """A TAGMSG this connection sent: its copy is left out (without echo-message) or
        awaited before a PONG or the end of its label (with it)."""
        if self.pending_tags is _NO_ECHOES:
            self.pending_tags = deque()
        pending = self.pending_tags
        pending.append((target, tags))
        if len(pending) > MAX_PENDING_ECHO:
            pending.popleft()
        self.cache = None

    def drop_tags(self, target: str, tags: str) -> None:
        """A TAGMSG refused: no copy will come."""
        if (target, tags) in self.pending_tags:
            self.pending_tags.remove((target, tags))
        self.recache()

    def own_tags(self, target: str, tags: str) -> bool:
        """Whether a TAGMSG copy is this connection's own (then no longer awaited)."""
        key = (target, tags)
        if key not in self.pending_tags:
            return False
        self.pending_tags.remove(key)
        if not self.pending_tags:
            self.recache()
        return True

    def awaiting(self) -> bool:
        """Whether copies of what this connection sent are still to come."""
        return bool(self.pending or self.pending_tags)

    def echo_arrived(self) -> None:
        """A copy came: close a label that waited for it; release a deferred PONG."""
        if self.capture is not None and not self.awaiting() and not self.command:
            self.close_label()
        if self.deferred and not self.awaiting():
            self.line(self.deferred)
            self.deferred = ""

    def at(self, phase: Phase) -> bool:
        """Whether the core session is in `phase` (as its events told; read afresh after
        each command a handler yields)."""
        return self.phase is phase

    def member_of(self) -> set[str]:
        return self.chat_keys

    def release(self) -> None:
        """Render what was held, in order: messages as chathistory batches (with `batch`
        and `draft/chathistory`), other events as they render."""
        held, self._held, self._held_size = self._held, None, 0
        history, self._history = self._history, False
        for item in held or ():
            if isinstance(item, ev.Messages):
                self.message_lines(item, history)
            else:
                render.RENDER[type(item)](self, item)
        self.recache()

    def message_lines(self, messages: ev.Messages, history: bool = False) -> None:
        if history and "batch" in self.caps and "draft/chathistory" in self.caps:
            render.history_batch(self, messages.where, messages.items)
            return
        for text in irc.message_lines(messages.where, messages.items, self.nick, self.wants):
            self.line(text)

    # -- the welcome -------------------------------------------------------------------

    def welcome(self) -> Iterator[Step]:
        yield from welcome(self)

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Unit]:
        framer = self._framer or LineFramer(irc.MAX_TAGS_IN + irc.MAX_LINE)
        units = framer.feed(data)
        self._framer = None if framer.idle else framer
        return units

    def decode(self, unit: Unit, phase: Phase | None) -> Sequence[Step]:
        return _Lazy(self._unit(unit))

    def _unit(self, unit: Unit) -> Iterator[Step]:
        if self.capture is not None:  # a label still waiting for its echo: late or lost
            self.close_label()
        if self.deferred:  # the client went on: its echo is late or lost
            self.line(self.deferred)
            self.deferred = ""
        if isinstance(unit, LineTooLong):
            self.numeric(n.ERR_INPUTTOOLONG, "Input line was too long")
        elif isinstance(unit, BadEncoding):  # UTF8ONLY: refused, as IRCv3 says
            self.line(format_line("FAIL", "*", "INVALID_UTF8", "line is not UTF-8, discarded"))
        else:
            assert isinstance(unit, Line)
            msg = irc.parse(unit.text)
            if msg is not None:
                body = len(unit.text.encode()) - msg.tag_bytes  # without tags and CRLF
                if msg.tag_bytes > irc.MAX_TAGS_IN or body + 2 > irc.MAX_LINE:
                    self.numeric(n.ERR_INPUTTOOLONG, "Input line was too long")
                else:
                    yield from self._message(msg)
        out = self.take()
        if out:
            yield out

    def _message(self, msg: irc.IrcMessage) -> Iterator[Step]:
        label = msg.tags.get("label") if "labeled-response" in self.caps else None
        if label is not None:
            self.label = label
            self.capture = []
            self.cache = None
        self.command = msg.command
        self.target = msg.params[0] if msg.params else ""
        entry = COMMANDS.get(msg.command)
        if entry is None:
            if self.reg.registered:
                self.numeric(n.ERR_UNKNOWNCOMMAND, msg.command, "Unknown command")
            else:
                self.numeric(n.ERR_NOTREGISTERED, "You have not registered")
            return
        if not self.reg.registered and not entry.before_registration:
            self.numeric(n.ERR_NOTREGISTERED, "You have not registered")
            return
        if len(msg.params) < entry.min_params:
            self.numeric(n.ERR_NEEDMOREPARAMS, msg.command, "Not enough parameters")
            return
        for step in entry.handler(self, msg):
            out = self.take()
            if out:
                yield out
            yield step

    def take_post(self, unit: Unit, phase: Phase | None, chat: str | None) -> str | None:
        if chat is None or type(unit) is not Line:
            return None
        post = self._post
        if post[0] != chat:  # the first line of a batch: what every next one shares
            room = _ROOM - len(chat.encode()) - 1 - 2 * len(self.nick.encode())
            post = self._post = (chat, "PRIVMSG #" + chat + " :", "#" + name_key(chat), room)
        _, head, key, room = post
        line = unit.text
        if line.startswith(head) and line[len(head) : len(head) + 1] != "\x01":
            text = chat_text(line[len(head) :])  # the usual line: no tags, no CTCP
        else:
            msg = irc.parse(line)
            if msg is None or not plain_post(msg, chat) or len(msg.params[0]) != len(chat) + 1:
                return None
            text = chat_text(msg.params[1])
        if not text or (len(text) * 4 > room and len(text.encode()) > room):
            return None  # nothing, or maybe too long to relay in one line: the handler
        self.expect_echo(key, text)
        self.batched.append(text)
        return text

    def end_unit(self) -> bytes:
        self.command = self.target = ""
        if self.capture is None:
            return b""
        if self.awaiting() and "echo-message" in self.caps:
            return b""  # the echo of the labeled message is still to come: it ends it
        self.close_label()
        return self.take()

    def close_label(self) -> None:
        """End the labeled command: its captured lines go out with the label."""
        captured, self.capture = self.capture or [], None
        label, self.label = self.label, ""
        render.labeled(self, label, captured)
        self.recache()

    # -- output ------------------------------------------------------------------------

    def encode(self, event: ev.Event) -> bytes:
        render.RENDER[type(event)](self, event)
        return b"" if self.capture is not None else self.take()

    def show(self, messages: ev.Messages) -> bytes:
        return showing.show(self, messages)

    def refused(self, reason: str) -> bytes:
        return format_line("ERROR", reason, source="").encode() + b"\r\n"

    def timed_out(self, text: str) -> bytes:
        return format_line("ERROR", text, source="").encode() + b"\r\n"

    def overflowed(self) -> bytes:
        return _OVERFLOW


class _Lazy(Sequence[Step]):
    """The steps of a handler, made one at a time: the kit runs each core command before
    the next step is made, so a handler sees what the previous command did."""

    __slots__ = ("_it",)

    def __init__(self, it: Iterator[Step]) -> None:
        self._it = it

    def __iter__(self) -> Iterator[Step]:
        return self._it

    def __len__(self) -> int:
        raise TypeError("a handler's steps are made as they are run")

    def __getitem__(self, i: int) -> Step:  # type: ignore[override]
        raise TypeError("a handler's steps are made as they are run")

"""One IRC client socket: lines -> `protocol.parse` -> core commands; events -> IRC lines.

Registration is the door's own small state machine (CAP, NICK, USER, PASS, AUTHENTICATE):
once it has a nickname and a password (PASS or SASL PLAIN) it logs in through the core
like the other doors, and only after `001` does the client see anything of the chat, so
the backlog the core shows at login is kept until then and replayed after the JOINs.

Input is handled in order by a task that exists only while there is input; output made
in one loop turn is sent with one write; a reader `max_output` bytes behind is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.admission import Admission, Ticket
from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core import history
from gateway.core.names import name_key, sanitize
from gateway.core.session import Core, Phase, Session
from gateway.core.timefmt import ban_end, parse_duration
from gateway.core.tokens import looks_like_token
from gateway.doors.irc import protocol as irc
from gateway.doors.irc.protocol import SERVER, format_line, notice, numeric
from gateway.doors.line.framing import BadEncoding, Line, LineFramer, LineTooLong
from gateway.metrics import METRICS
from store.contract import Conv, Message, Position, Range

__all__ = ["IrcConnection", "IrcDoor"]

log = logging.getLogger("chat.irc")

#: Input lines queued before the socket stops being read (a flood's memory bound).
MAX_QUEUED_LINES = 256
WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
#: Seconds a closing connection may take to send what is queued before it is reset.
CLOSE_GRACE = 5.0
#: Input lines handled before the pump yields to other tasks (many need no await).
YIELD_EVERY = 64
#: Consecutive PRIVMSGs to one chat posted together at most (one post_many call).
MAX_SAY_BATCH = 256
#: Own messages awaiting their copy from fan-out (to drop it, or echo it) at most.
MAX_PENDING_ECHO = 4 * MAX_SAY_BATCH
#: Nicknames answered by one ISON or USERHOST.
ISON_MAX = 32
MOTD = (
    "Welcome to the chat gateway's IRC door.",
    "Chats are channels; #general is joined for you. /quote COMPLAIN <nick> complains",
    "about a user (as /ban on telnet). /quote TOKEN gives a resume token for SASL/PASS.",
    "Messages are kept for a limited time; unread ones are replayed when you connect.",
)
#: What HELP answers (as NOTICEs): the commands that are this server's own.
HELP = (
    "Chats are channels: /join #name, /part #name, /list; /msg nick text is private.",
    "/quote COMPLAIN nick: complain about a user (moderators: COMPLAIN nick 2h bans).",
    "/quote UNBAN nick: a moderator lifts a ban.",
    "/quote TOKEN: a resume token, usable as the server or SASL password.",
    "History: CHATHISTORY (IRCv3); unread messages are replayed when you connect.",
)
_batch_ids = itertools.count(1)


@dataclass(slots=True)
class IrcDoor:
    """What every IRC connection of a listener shares, and the connections written to in
    this loop turn: flushed once, after the turn or when fan-out ends a batch."""

    core: Core
    admission: Admission
    max_output: int
    connections: set[IrcConnection]
    dirty: list[IrcConnection] = field(default_factory=list)
    scheduled: bool = False

    def mark(self, conn: IrcConnection) -> None:
        self.dirty.append(conn)
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_now)

    def flush_now(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for conn in dirty:
            conn.flush()


#: The last chat burst rendered: Messages, Wants, its bytes, and (once a sender needed
#: them) each message's bytes.
_last_render: list[Any] = [None, None, b"", None]


class IrcConnection(asyncio.Protocol):
    __slots__ = (
        "__weakref__",
        "_cap_pending",
        "_capture",
        "_context",
        "_drain",
        "_early",
        "_early_bytes",
        "_errors_seen",
        "_flush_soon",
        "_login_errors",
        "_login_key",
        "_lost",
        "_more",
        "_names_mode",
        "_nick",
        "_online",
        "_out",
        "_password",
        "_pending_echo",
        "_pump",
        "_queue",
        "_queued",
        "_read_paused",
        "_sasl",
        "_sasl_mech",
        "_target",
        "_ticket",
        "_user",
        "_write_paused",
        "address",
        "caps",
        "closing",
        "door",
        "framer",
        "nick",
        "registered",
        "session",
        "transport",
        "wants",
    )

    def __init__(self, door: IrcDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.address = "?"
        self.framer = LineFramer(irc.MAX_TAGS_IN + irc.MAX_LINE)
        self.session: Session | None = None
        self._ticket: Ticket | None = None
        self._queue: deque[Line | LineTooLong | BadEncoding] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._read_paused = False
        self._out: list[bytes] = []
        self._queued = 0
        self._flush_soon = False
        self.closing = False
        self._lost = False
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        # registration
        self.caps: set[str] = set()
        self._cap_pending = False  # CAP LS/REQ seen, CAP END not yet
        self._nick = ""
        self._user = False
        self._password: str | None = None
        self._sasl = False  # logged in by SASL
        self._sasl_mech = False
        self._login_errors: list[ev.Error] = []
        self._login_key = ""  # the account a login is under way for
        self.registered = False  # 001 sent
        self.nick = ""  # the display name, once logged in
        # after registration
        self._early: list[ev.Messages | ev.Event] = []  # shown before 001: replayed after
        self._early_bytes = 0
        self._context = ""  # the IRC command being handled
        self._target = ""
        self._names_mode = "names"
        self._capture: list[str] | None = None  # lines of a labeled command
        self._online: list[str] | None = None  # ISON: names gathered
        self._pending_echo: deque[tuple[str, str]] = deque()  # (conv target, text)
        self._more: list[str] = []  # texts of PRIVMSGs batched with the one being handled
        self.wants = irc.wants_for(False, False, False)
        self._errors_seen = 0  # core errors so far: tells a command whether it failed

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = tcp
        tcp.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        ticket = self.door.admission.admit(self.address, self._login_deadline, self._refused)
        if isinstance(ticket, str):
            self.door.admission.log_refused(ticket, self.address, "irc")
            self._line(format_line("ERROR", ticket, source=""))
            self.close()
            return
        self._ticket = ticket
        self.door.connections.add(self)
        self.session = self.door.core.session(self)
        log.info("event=connect door=irc peer=%s session=%s", self.address, self.session.session_id)
        self.session.start()

    def data_received(self, data: bytes) -> None:
        if self.session is None or self.closing:
            return
        events = self.framer.feed(data)
        if not events:
            return
        self._queue.extend(events)
        if len(self._queue) > MAX_QUEUED_LINES and not self._read_paused and self.transport:
            self._read_paused = True
            self.transport.pause_reading()
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._run())

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._lost = True
        self._out.clear()
        self._queue.clear()
        self.door.connections.discard(self)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self._ticket is not None:
            self._ticket.release()
        if self.session is not None:
            self.session.closed()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _refused(self, reason: str) -> None:
        self._line(format_line("ERROR", reason, source=""))
        self.close()

    def _login_deadline(self) -> None:
        if not self.registered and not self.closing:
            timeout = self.door.admission.login_timeout
            self._line(format_line("ERROR", f"login timed out after {timeout:g} s", source=""))
            self.close()

    # -- input -----------------------------------------------------------------------------

    async def _run(self) -> None:
        handled = 0
        try:
            while self._queue and not self.closing:
                handled += 1
                if handled % YIELD_EVERY == 0:  # a flood of PINGs must not stall the loop
                    await asyncio.sleep(0)
                event = self._queue.popleft()
                if isinstance(event, LineTooLong):
                    self._line(numeric("417", self.nick, "Input line was too long"))
                elif isinstance(event, BadEncoding):
                    self._line(notice(self.nick, "line is not valid UTF-8, discarded"))
                else:
                    msg = irc.parse(event.text)
                    if msg is not None:
                        self._more = self._more_texts(msg)
                        await self._handle(msg)
                        self._more = []
                if self._read_paused and len(self._queue) < MAX_QUEUED_LINES // 4:
                    self._read_paused = False
                    if self.transport and not self.closing:
                        self.transport.resume_reading()
        except Exception:
            log.exception("event=irc_error peer=%s", self.address)
            self.close()
        finally:
            self._pump = None

    def _more_texts(self, msg: irc.IrcMessage) -> list[str]:
        """The texts of the PRIVMSGs queued right after `msg` to the same one chat: posted
        with it as one batch (one Redis call, one publish), as the line door does."""
        if (
            msg.command not in ("PRIVMSG", "NOTICE")
            or not self.registered
            or msg.tags
            or len(msg.params) != 2
            or not msg.params[0].startswith("#")
            or "," in msg.params[0]
        ):
            return []
        more: list[str] = []
        queue = self._queue
        while queue and len(more) < MAX_SAY_BATCH:
            nxt = queue[0]
            if not isinstance(nxt, Line):
                break
            other = irc.parse(nxt.text)
            if (
                other is None
                or other.command not in ("PRIVMSG", "NOTICE")
                or other.tags
                or other.params[:1] != msg.params[:1]
                or len(other.params) != 2
            ):
                break
            queue.popleft()
            more.append(other.params[1])
        return more

    async def _handle(self, msg: irc.IrcMessage) -> None:
        label = msg.tags.get("label") if "labeled-response" in self.caps else None
        if label is not None:
            self._capture = []
        self._context = msg.command
        self._target = msg.params[0] if msg.params else ""
        try:
            handler = _HANDLERS.get(msg.command)
            if handler is None:
                if self.registered:
                    self._line(numeric("421", self.nick, msg.command, "Unknown command"))
                else:
                    self._line(numeric("451", "*", "You have not registered"))
            elif not self.registered and msg.command not in _BEFORE_REGISTRATION:
                self._line(numeric("451", "*", "You have not registered"))
            else:
                await handler(self, msg)
        finally:
            self._context = ""
            captured, self._capture = self._capture, None
            if label is not None and captured is not None:
                self._labeled(label, captured)

    def _labeled(self, label: str, lines: list[str]) -> None:
        if not lines:
            self._line(format_line("ACK", tags={"label": label}))
        elif len(lines) == 1:
            self._line(_with_tags(lines[0], {"label": label}))
        else:
            ref = f"L{next(_batch_ids)}"
            self._line(format_line("BATCH", "+" + ref, "labeled-response", tags={"label": label}))
            for line in lines:  # lines inside a nested batch keep only their own tag
                nested = line.startswith("@") and "batch=" in line.split(" ", 1)[0]
                self._line(line if nested else _with_tags(line, {"batch": ref}))
            self._line(format_line("BATCH", "-" + ref))

    async def _core(self, command: cmd.Command) -> None:
        assert self.session is not None
        await self.session.handle(command)

    # -- registration ----------------------------------------------------------------------

    async def _cap(self, msg: irc.IrcMessage) -> None:
        sub = msg.params[0].upper() if msg.params else ""
        nick = self.nick or "*"
        if sub == "LS":
            self._cap_pending = not self.registered
            v302 = len(msg.params) > 1 and msg.params[1].isdigit() and int(msg.params[1]) >= 302
            caps = " ".join(f"{k}={v}" if v and v302 else k for k, v in irc.CAPS.items())
            self._line(format_line("CAP", nick, "LS", caps))
        elif sub == "LIST":
            self._line(format_line("CAP", nick, "LIST", " ".join(sorted(self.caps))))
        elif sub == "REQ":
            self._cap_pending = not self.registered
            asked = msg.params[1].split() if len(msg.params) > 1 else []
            names = [a.lstrip("-") for a in asked]
            if all(n in irc.CAPS for n in names):
                for a in asked:
                    if a.startswith("-"):
                        self.caps.discard(a[1:])
                    else:
                        self.caps.add(a)
                self._wants_changed()
                self._line(format_line("CAP", nick, "ACK", " ".join(asked)))
            else:
                self._line(format_line("CAP", nick, "NAK", " ".join(asked)))
        elif sub == "END":
            self._cap_pending = False
            await self._try_register()
        else:
            self._line(numeric("410", nick, sub or "*", "Invalid CAP command"))

    def _wants_changed(self) -> None:
        self.wants = irc.wants_for(
            "server-time" in self.caps, "message-tags" in self.caps, "account-tag" in self.caps
        )

    async def _pass(self, msg: irc.IrcMessage) -> None:
        if self.registered:
            self._line(numeric("462", self.nick, "You may not reregister"))
        elif msg.params:
            self._password = msg.params[0]

    async def _nick_cmd(self, msg: irc.IrcMessage) -> None:
        if not msg.params or not msg.params[0]:
            self._line(numeric("431", self.nick or "*", "No nickname given"))
            return
        if self.registered:
            if name_key(msg.params[0]) != name_key(self.nick):
                self._line(
                    numeric(
                        "432", self.nick, msg.params[0], "nickname changes are not supported here"
                    )
                )
            return
        self._nick = msg.params[0]
        await self._try_register()

    async def _user_cmd(self, msg: irc.IrcMessage) -> None:
        if self.registered:
            self._line(numeric("462", self.nick, "You may not reregister"))
            return
        self._user = True
        await self._try_register()

    async def _authenticate(self, msg: irc.IrcMessage) -> None:
        arg = msg.params[0] if msg.params else ""
        nick = self._nick or "*"
        if self.registered or self._sasl:
            self._line(numeric("907", nick, "You have already authenticated using SASL"))
            return
        if not self._sasl_mech:
            if arg.upper() != "PLAIN":
                self._line(numeric("908", nick, "PLAIN", "are available SASL mechanisms"))
                self._line(numeric("904", nick, "SASL authentication failed"))
                return
            self._sasl_mech = True
            self._line(format_line("AUTHENTICATE", "+", source=""))
            return
        self._sasl_mech = False
        if arg == "*":
            self._line(numeric("906", nick, "SASL authentication aborted"))
            return
        try:
            _, authcid, password = base64.b64decode(arg, validate=True).decode().split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._line(numeric("904", nick, "SASL authentication failed"))
            return
        if await self._login(authcid, password):
            self._sasl = True
            assert self.session is not None
            self._line(
                numeric(
                    "900",
                    nick,
                    irc.source_of(self.session.name),
                    self.session.name,
                    f"You are now logged in as {self.session.name}",
                )
            )
            self._line(numeric("903", nick, "SASL authentication successful"))
        else:
            self._line(numeric("904", nick, self._failure_text()))

    def _failure_text(self) -> str:
        return self._login_errors[-1].text if self._login_errors else "login failed"

    async def _login(self, nick: str, password: str) -> bool:
        """Log in through the core; True once the session is READY."""
        session = self.session
        assert session is not None
        self._login_errors.clear()
        nick = sanitize(nick).strip()
        if session.phase is Phase.PASSWORD and name_key(nick) != self._login_key:
            self._login_errors.append(
                ev.Error(ev.ErrorCode.BAD_INPUT, "retry with the same account, or reconnect")
            )
            return False
        self._login_key = name_key(nick)
        if self._phase() is Phase.PASSWORD:
            await self._core(cmd.Password(password))  # a SASL retry for the same account
        elif self._phase() is Phase.NICK:
            if looks_like_token(password):
                await self._core(cmd.Nick(nick, token=password))
                if self._phase() is Phase.NICK and not self.closing:  # a password that shape
                    self._login_errors.clear()
                    await self._core(cmd.Nick(nick))
                    if self._phase() is Phase.PASSWORD:
                        await self._core(cmd.Password(password))
            else:
                await self._core(cmd.Nick(nick))
                if self._phase() is Phase.PASSWORD:
                    await self._core(cmd.Password(password))
        return session.phase is Phase.READY

    def _phase(self) -> Phase:
        assert self.session is not None
        return self.session.phase

    async def _try_register(self) -> None:
        if self.registered or self._cap_pending or not self._nick or not self._user:
            return
        session = self.session
        assert session is not None
        if session.phase is not Phase.READY:
            if self._password is None:
                self._line(
                    notice(
                        self._nick,
                        "this server needs your account's password: set it as the server "
                        "password (PASS), or use SASL PLAIN; a new nickname registers with it",
                    )
                )
                self._line(numeric("464", self._nick, "Password required"))
                self._line(format_line("ERROR", "Password required", source=""))
                self.close()
                return
            password, self._password = self._password, None  # not kept once used
            if not await self._login(self._nick, password):
                if self.closing:
                    return
                code = "464"
                if any(e.code is ev.ErrorCode.BAD_NAME for e in self._login_errors):
                    code = "432"
                why = self._failure_text()
                self._line(numeric(code, self._nick, why))
                self._line(format_line("ERROR", why, source=""))
                self.close()
                return
        await self._welcome()

    async def _welcome(self) -> None:
        """001 to 005, the MOTD, a JOIN and NAMES per chat, then the backlog and whatever
        came live meanwhile, in order; then live."""
        session = self.session
        assert session is not None and session.user is not None
        self.registered = True
        nick = self.nick = session.name
        if self._ticket is not None:
            self._ticket.logged_in()
        self._line(numeric("001", nick, f"Welcome to the chat, {irc.source_of(nick)}"))
        self._line(numeric("002", nick, f"Your host is {SERVER}, a chat gateway"))
        self._line(numeric("003", nick, "This server keeps its state in Redis"))
        self._line(numeric("004", nick, SERVER, "chat-gateway", "i", "nt"))
        self._line(
            numeric(
                "005",
                nick,
                "CASEMAPPING=ascii",
                "CHANTYPES=#",
                "PREFIX=",
                "NETWORK=chat",
                "NICKLEN=32",
                "CHANNELLEN=33",
                "UTF8ONLY",
                f"CHATHISTORY={irc.CHATHISTORY_MAX}",
                "MSGREFTYPES=msgid,timestamp",
                "are supported by this server",
            )
        )
        self._motd()
        chats = list(session.user.chats.values())
        chats.sort(key=lambda n: (name_key(n) != "general", n.casefold()))
        for name in chats:
            self._line(format_line("JOIN", "#" + name, source=irc.source_of(nick)))
            self._line(numeric("331", nick, "#" + name, "No topic is set"))
        for name in chats:
            self._names_mode = "names"
            await self._core(cmd.Who(name))
        early, self._early, self._early_bytes = self._early, [], 0
        for item in early:
            if isinstance(item, ev.Messages):
                self._show_now(item, batch=True)
            else:
                self._render(item)
        if "draft/read-marker" in self.caps:
            for name in chats:
                await self._markread_reply("#" + name)

    def _motd(self) -> None:
        nick = self.nick
        self._line(numeric("375", nick, f"- {SERVER} Message of the day -"))
        for text in MOTD:
            self._line(numeric("372", nick, "- " + text))
        self._line(numeric("376", nick, "End of /MOTD command."))

    # -- commands after registration -----------------------------------------------------

    async def _ping(self, msg: irc.IrcMessage) -> None:
        self._line(format_line("PONG", SERVER, msg.params[0] if msg.params else SERVER))

    async def _ignore(self, msg: irc.IrcMessage) -> None:
        return

    async def _privmsg(self, msg: irc.IrcMessage) -> None:
        if len(msg.params) < 2 or not msg.params[1]:
            self._line(numeric("412", self.nick, "No text to send"))
            return
        texts = [t for t in map(_chat_text, [msg.params[1], *self._more]) if t]
        if not texts:
            self._line(numeric("412", self.nick, "No text to send"))
            return
        for target in msg.params[0].split(",")[:4]:
            self._target = target
            key = name_key(target)
            for text in texts:
                self._pending_echo.append((key, text))
            while len(self._pending_echo) > MAX_PENDING_ECHO:  # never echoed (changed, lost)
                self._pending_echo.popleft()
            errors = self._errors_seen
            if not target.startswith("#"):
                for text in texts:
                    await self._core(cmd.SendPrivate(target, text))
            elif len(texts) == 1:
                await self._core(cmd.SendChat(target[1:], texts[0]))
            else:
                await self._core(cmd.SendChatMany(target[1:], tuple(texts)))
            for text in texts[len(texts) - (self._errors_seen - errors) :]:
                self._drop_pending(key, text)  # refused (the last ones, as a rate limit does)

    def _drop_pending(self, target: str, text: str) -> None:
        try:
            self._pending_echo.remove((target, text))
        except ValueError:
            pass

    async def _join(self, msg: irc.IrcMessage) -> None:
        if not msg.params:
            self._line(numeric("461", self.nick, "JOIN", "Not enough parameters"))
            return
        if msg.params[0] == "0":
            return
        for target in msg.params[0].split(",")[:10]:
            self._target = target
            if not target.startswith("#"):
                self._line(numeric("403", self.nick, target, "No such channel"))
                continue
            ok = self._errors_seen
            await self._core(cmd.Join(target[1:]))
            if self._errors_seen == ok:
                self._names_mode = "names"
                await self._core(cmd.Who(target[1:]))

    async def _part(self, msg: irc.IrcMessage) -> None:
        if not msg.params:
            self._line(numeric("461", self.nick, "PART", "Not enough parameters"))
            return
        for target in msg.params[0].split(",")[:10]:
            self._target = target
            await self._core(cmd.Leave(target.removeprefix("#")))

    async def _list(self, msg: irc.IrcMessage) -> None:
        await self._core(cmd.GetChats())

    async def _names(self, msg: irc.IrcMessage) -> None:
        if not msg.params:
            self._line(numeric("366", self.nick, "*", "End of /NAMES list."))
            return
        for target in msg.params[0].split(",")[:10]:
            self._target = target
            self._names_mode = "names"
            await self._core(cmd.Who(target.removeprefix("#")))

    async def _who(self, msg: irc.IrcMessage) -> None:
        target = msg.params[0] if msg.params else "*"
        if target.startswith("#"):
            self._names_mode = "who"
            await self._core(cmd.Who(target[1:]))
        else:
            self._line(numeric("315", self.nick, target, "End of WHO list."))

    async def _whois(self, msg: irc.IrcMessage) -> None:
        target = msg.params[-1] if msg.params else ""
        self._line(numeric("311", self.nick, target, target, SERVER, "*", target))
        self._line(numeric("318", self.nick, target, "End of /WHOIS list."))

    async def _motd_cmd(self, msg: irc.IrcMessage) -> None:
        self._motd()

    async def _quit(self, msg: irc.IrcMessage) -> None:
        await self._core(cmd.Quit())

    async def _away(self, msg: irc.IrcMessage) -> None:
        if msg.params and msg.params[0]:
            self._line(numeric("306", self.nick, "You have been marked as being away"))
        else:
            self._line(numeric("305", self.nick, "You are no longer marked as being away"))

    async def _ison(self, msg: irc.IrcMessage) -> None:
        asked = " ".join(msg.params).split()[:ISON_MAX]
        self._online = []
        self._names_mode = "ison"
        await self._core(cmd.Who("general"))
        online = {name_key(n) for n in self._online or ()}
        self._online = None
        self._line(numeric("303", self.nick, " ".join(n for n in asked if name_key(n) in online)))

    async def _userhost(self, msg: irc.IrcMessage) -> None:
        asked = " ".join(msg.params).split()[:5]
        self._line(numeric("302", self.nick, " ".join(f"{n}=+{n}@{SERVER}" for n in asked)))

    async def _topic(self, msg: irc.IrcMessage) -> None:
        target = msg.params[0] if msg.params else "*"
        if len(msg.params) > 1:
            self._line(numeric("482", self.nick, target, "Topics are read-only here"))
        else:
            self._line(numeric("331", self.nick, target, "No topic is set"))

    async def _mode(self, msg: irc.IrcMessage) -> None:
        target = msg.params[0] if msg.params else ""
        if len(msg.params) > 1:
            if target.startswith("#") and msg.params[1].lstrip("+") in ("b", ""):
                self._line(numeric("368", self.nick, target, "End of channel ban list"))
            return
        if target.startswith("#"):
            self._line(numeric("324", self.nick, target, "+nt"))
        else:
            self._line(numeric("221", self.nick, "+i"))

    async def _complain(self, msg: irc.IrcMessage) -> None:
        if not msg.params:
            self._line(numeric("461", self.nick, "COMPLAIN", "Not enough parameters"))
            return
        duration = None
        if len(msg.params) > 1:  # a moderator's ban for a set time: COMPLAIN nick 2h
            duration = parse_duration(msg.params[1])
            if duration is None:
                self._line(notice(self.nick, "COMPLAIN nick [duration: 90s, 30m, 2h, 7d]"))
                return
        await self._core(cmd.Ban(msg.params[0], duration))

    async def _unban(self, msg: irc.IrcMessage) -> None:
        if not msg.params:
            self._line(numeric("461", self.nick, "UNBAN", "Not enough parameters"))
            return
        await self._core(cmd.Unban(msg.params[0]))

    async def _help(self, msg: irc.IrcMessage) -> None:
        await self._core(cmd.Help())

    async def _token(self, msg: irc.IrcMessage) -> None:
        await self._core(cmd.IssueToken())

    async def _chathistory(self, msg: irc.IrcMessage) -> None:
        p = msg.params
        sub = p[0].upper() if p else ""
        session = self.session
        assert session is not None
        try:
            if sub == "TARGETS" and len(p) >= 4:
                await self._history_targets(p[1], p[2], int(p[3]))
                return
            if sub in ("LATEST", "BEFORE", "AFTER", "AROUND") and len(p) >= 4:
                target, ref, limit = p[1], p[2], int(p[3])
            elif sub == "BETWEEN" and len(p) >= 5:
                target, ref, limit = p[1], p[2], int(p[4])
            else:
                raise ValueError
        except ValueError:
            self._fail("CHATHISTORY", "INVALID_PARAMS", sub or "*", "bad CHATHISTORY request")
            return
        limit = max(1, min(limit, irc.CHATHISTORY_MAX))
        found = history.conversation(session, target)
        if found is None:
            self._fail("CHATHISTORY", "INVALID_TARGET", sub, target, "no such conversation here")
            return
        conv, where = found
        bound = _bound(ref, conv)
        if bound is None and not (sub == "LATEST" and ref == "*"):
            self._fail("CHATHISTORY", "INVALID_MSGREFTYPE", sub, target, "bad message reference")
            return
        items: list[Message]
        if sub == "LATEST":
            items = await history.messages(session, conv, Range(limit, after=bound, newest=True))
        elif sub == "BEFORE":
            assert bound is not None
            items = await history.messages(session, conv, Range(limit, before=bound, newest=True))
        elif sub == "AFTER":
            assert bound is not None
            items = await history.messages(session, conv, Range(limit, after=bound))
        elif sub == "AROUND":
            assert bound is not None
            before = (
                await history.messages(session, conv, Range(limit // 2, before=bound, newest=True))
                if limit > 1
                else []
            )
            at_or_after = Range(limit - len(before), after=bound.previous())
            items = before + await history.messages(session, conv, at_or_after)
        else:
            other = _bound(p[3], conv)
            if other is None or bound is None:
                self._fail("CHATHISTORY", "INVALID_MSGREFTYPE", sub, target, "bad reference")
                return
            lo, hi = sorted((bound, other))
            items = await history.messages(session, conv, Range(limit, after=lo, before=hi))
        self._history_out(where, target, items)

    def _history_out(self, where: ev.Conversation, target: str, items: list[Message]) -> None:
        batch = "batch" in self.caps
        ref = f"H{next(_batch_ids)}"
        if batch:
            self._line(format_line("BATCH", "+" + ref, "chathistory", target))
        extra = {"batch": ref} if batch else None
        for line in irc.message_lines(where, items, self.nick, self.wants, extra):
            self._line(line)
        if batch:
            self._line(format_line("BATCH", "-" + ref))

    async def _history_targets(self, a: str, b: str, limit: int) -> None:
        session = self.session
        assert session is not None
        ms = [_ms_of(a), _ms_of(b)]
        if ms[0] is None or ms[1] is None:
            self._fail("CHATHISTORY", "INVALID_PARAMS", "TARGETS", "timestamps expected")
            return
        lo, hi = min(ms[0], ms[1]), max(ms[0], ms[1])
        latest = await history.latest(session, max(1, min(limit, irc.CHATHISTORY_MAX)))
        batch = "batch" in self.caps
        ref = f"T{next(_batch_ids)}"
        if batch:
            self._line(format_line("BATCH", "+" + ref, "draft/chathistory-targets"))
        for where, m in latest:
            if not lo <= m.ms <= hi:
                continue
            name = "#" + where.name if isinstance(where, ev.ChatConv) else where.name
            tags = {"batch": ref} if batch else None
            self._line(format_line("CHATHISTORY", "TARGETS", name, irc.iso_time(m.ms), tags=tags))
        if batch:
            self._line(format_line("BATCH", "-" + ref))

    async def _markread(self, msg: irc.IrcMessage) -> None:
        session = self.session
        assert session is not None
        if not msg.params:
            self._fail("MARKREAD", "NEED_MORE_PARAMS", "target needed")
            return
        target = msg.params[0]
        found = history.conversation(session, target)
        if found is None:
            self._fail("MARKREAD", "INVALID_PARAMS", target, "no such conversation here")
            return
        if len(msg.params) > 1:
            stamp = msg.params[1]
            ms = _ms_of(stamp)
            if ms is None:
                self._fail("MARKREAD", "INVALID_PARAMS", target, "timestamp=... expected")
                return
            before = await history.read_marker(session, found[0])
            after = await history.mark_read(session, found[0], ms)
            if after != before and after is not None and session.user is not None:
                line = _markread_line(target, after)
                for other in session.user.sessions:  # the user's other IRC clients here
                    sink = other.sink
                    if sink is not self and isinstance(sink, IrcConnection):
                        sink.read_marker_moved(line)
        await self._markread_reply(target)

    def read_marker_moved(self, line: str) -> None:
        """Another client of this user on this gateway moved a read marker."""
        if self.registered and "draft/read-marker" in self.caps:
            self._line(line)

    async def _markread_reply(self, target: str) -> None:
        session = self.session
        assert session is not None
        found = history.conversation(session, target)
        if found is None:
            return
        mid = await history.read_marker(session, found[0])
        self._line(_markread_line(target, mid))

    def _fail(self, command: str, code: str, *context: str) -> None:
        if "standard-replies" in self.caps:
            self._line(format_line("FAIL", command, code, *context))
        else:
            self._line(notice(self.nick, f"{command}: {context[-1]}"))

    # -- the core's sink -------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        if isinstance(event, ev.Error):
            self._errors_seen += 1
            if not self.registered:
                self._login_errors.append(event)
                if event.code in (ev.ErrorCode.LOCKED_OUT, ev.ErrorCode.TIMEOUT):
                    self._line(format_line("ERROR", event.text, source=""))
                return
        if not self.registered:
            if isinstance(event, ev.BacklogCut | ev.Banned | ev.StoreReset):
                self._early.append(event)
            elif isinstance(event, ev.Ready) and not self._cap_pending and self._user:
                pass  # _try_register goes on to the welcome when the login returns
            return
        if self._early and not isinstance(event, ev.Online | ev.Error):
            self._early.append(event)  # keep the order: the backlog is replayed first
            return
        self._render(event)

    def show(self, messages: ev.Messages) -> None:
        if self.closing:
            return
        if self._pending_echo:
            keep = self._own_echo(messages)
            if keep is not None:
                if not any(keep):
                    return
                self._show_some(messages, keep)
                return
        if not self.registered or (self._early and self._context != "JOIN"):
            self._hold_early(messages)
            return
        self._show_now(messages, batch=self._context == "JOIN")

    def _hold_early(self, messages: ev.Messages) -> None:
        self._early.append(messages)
        self._early_bytes += sum(len(m.text) + 64 for m in messages.items)
        if self._early_bytes > self.door.max_output:
            self.overflow()

    def _own_echo(self, messages: ev.Messages) -> list[bool] | None:
        """Which messages to show, when this connection's own are among them (dropped, or
        kept with echo-message); None: all. Another device's messages are always shown."""
        me = self.nick
        where = messages.where
        target = "#" + where.key if isinstance(where, ev.ChatConv) else where.peer
        keep: list[bool] | None = None
        pending = self._pending_echo
        echo = "echo-message" in self.caps
        for i, m in enumerate(messages.items):
            if m.sender != me or not pending:
                continue
            key = (target, m.text)
            if pending[0] == key:  # the usual case: they come back in order
                pending.popleft()
            elif key in pending:
                pending.remove(key)
            else:
                continue
            if not echo:
                if keep is None:
                    keep = [True] * len(messages.items)
                keep[i] = False
        return keep

    def _show_some(self, messages: ev.Messages, keep: list[bool]) -> None:
        """Some of a burst (a sender's own left out): from the burst's per-message bytes,
        rendered once for every sender, when it goes out live."""
        where = messages.where
        kept = ev.Messages(where, tuple(m for m, k in zip(messages.items, keep, strict=True) if k))
        if not self.registered or (self._early and self._context != "JOIN"):
            self._hold_early(kept)
            return
        if self._context == "JOIN" or self._capture is not None:
            self._show_now(kept, batch=self._context == "JOIN")
            return
        if not isinstance(where, ev.ChatConv):
            self._write(self._bytes(kept))
            return
        cached = _last_render[0] is messages and _last_render[1] is self.wants
        pieces = _last_render[3] if cached else None
        if pieces is None:
            pieces = [self._bytes(ev.Messages(where, (m,))) for m in messages.items]
            if not cached:
                _last_render[0], _last_render[1] = messages, self.wants
                _last_render[2] = b"".join(pieces)
            _last_render[3] = pieces
        self._write(b"".join(p for p, k in zip(pieces, keep, strict=True) if k))

    def _bytes(self, messages: ev.Messages) -> bytes:
        lines = irc.message_lines(messages.where, messages.items, self.nick, self.wants)
        return "".join(line + "\r\n" for line in lines).encode()

    def _show_now(self, messages: ev.Messages, batch: bool) -> None:
        """Write messages now; the bytes of a chat burst are kept for the next reader (the
        same object reaches every reader)."""
        where = messages.where
        if batch and "batch" in self.caps and "draft/chathistory" in self.caps:
            target = "#" + where.name if isinstance(where, ev.ChatConv) else where.name
            self._history_out(where, target, list(messages.items))
            return
        if self._capture is not None:
            for line in irc.message_lines(where, messages.items, self.nick, self.wants):
                self._line(line)
            return
        if _last_render[0] is messages and _last_render[1] is self.wants:
            data = _last_render[2]
        else:
            data = self._bytes(messages)
            if isinstance(where, ev.ChatConv):
                _last_render[:] = [messages, self.wants, data, None]
        self._write(data)

    def _render(self, event: ev.Event) -> None:
        nick = self.nick
        me = irc.source_of(nick)
        match event:
            case ev.Messages():
                self._show_now(event, batch=False)
            case ev.Joined(chat, already):
                if not already:
                    self._line(format_line("JOIN", "#" + chat, source=me))
            case ev.Left(chat):
                self._line(format_line("PART", "#" + chat, source=me))
            case ev.ChatList(chats, total):
                self._line(numeric("321", nick, "Channel", "Users  Name"))
                for c in chats:
                    self._line(
                        numeric("322", nick, "#" + c.name, str(c.members), f"{c.online} online")
                    )
                self._line(numeric("323", nick, "End of /LIST"))
            case ev.Online(chat, names, total):
                self._online_reply(chat, names, total)
            case ev.Error():
                self._error(event)
            case ev.Bye():
                self._line(format_line("ERROR", "Closing link: bye", source=""))
            case ev.Kicked():
                self._line(format_line("ERROR", "you were disconnected by a moderator", source=""))
            case ev.ShuttingDown():
                self._line(notice(nick, "server shutting down"))
            case ev.Banned():
                self._line(notice(nick, irc.banned_text(event)))
            case ev.BanLifted():
                self._line(notice(nick, "your ban was lifted: you can send again"))
            case ev.BacklogCut(where, shown):
                name = "#" + where.name if isinstance(where, ev.ChatConv) else where.name
                self._line(
                    notice(
                        nick,
                        f"older unread messages in {name} were not shown (a login shows the "
                        f"newest {shown}); CHATHISTORY has them",
                    )
                )
            case ev.Complained(target, count, threshold, until):
                text = f"complaint about {target} recorded ({count}/{threshold})"
                if until is not None:
                    text += f": {target} is banned until {ban_end(until)}"
                self._line(notice(nick, text))
            case ev.BanPlaced(target, until):
                self._line(notice(nick, f"{target} is banned until {ban_end(until)}"))
            case ev.Unbanned(target, was):
                self._line(notice(nick, f"{target} is {'no longer' if was else 'not'} banned"))
            case ev.KickSent(target):
                self._line(notice(nick, f"{target} was disconnected (every session)"))
            case ev.TokenIssued(token, seconds):
                self._line(
                    notice(
                        nick,
                        f"token: {token} (valid {seconds // 86400} days; use it as the SASL "
                        "or server password)",
                    )
                )
            case ev.PasswordChanged():
                self._line(notice(nick, "password changed"))
            case ev.StoreReset():
                self._line(notice(nick, "the chat store was reset; recent history may be missing"))
            case ev.WhereNow(chat, chats):
                self._line(notice(nick, "you are in " + ", ".join("#" + c for c in chats)))
            case ev.HelpWanted():
                for text in HELP:
                    self._line(notice(nick, text))
            case _:  # AskNick, AskPassword, Ready, CurrentChat, NoHistory: nothing on IRC
                pass

    def _online_reply(self, chat: str, names: tuple[str, ...], total: int) -> None:
        nick = self.nick
        if self._names_mode == "ison":
            if self._online is not None:
                self._online += names
            return
        if self._names_mode == "who":
            for n in names:
                self._line(numeric("352", nick, "#" + chat, n, SERVER, SERVER, n, "H", f"0 {n}"))
            self._line(numeric("315", nick, "#" + chat, "End of WHO list."))
            return
        line: list[str] = []
        for n in names:
            line.append(n)
            if len(line) == 20:
                self._line(numeric("353", nick, "=", "#" + chat, " ".join(line)))
                line = []
        if line:
            self._line(numeric("353", nick, "=", "#" + chat, " ".join(line)))
        if total > len(names):
            self._line(notice(nick, f"#{chat}: {total - len(names)} more online not listed"))
        self._line(numeric("366", nick, "#" + chat, "End of /NAMES list."))

    def _error(self, err: ev.Error) -> None:
        if err.code is ev.ErrorCode.RATE_LIMITED and "standard-replies" not in self.caps:
            self._line(notice(self.nick, err.text))
            return
        if err.code in (ev.ErrorCode.LOCKED_OUT, ev.ErrorCode.OVERFLOW, ev.ErrorCode.TIMEOUT):
            self._line(format_line("ERROR", err.text, source=""))
            return
        self._line(irc.error_numeric(err, self.nick, self._context, self._target))

    async def drain(self) -> None:
        self.flush()
        if self._write_paused and not self.closing:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    # -- output ----------------------------------------------------------------------------

    def _line(self, line: str) -> None:
        if self._capture is not None and not line.startswith("ERROR"):
            self._capture.append(line)
            return
        self._write(line.encode() + b"\r\n")

    def _write(self, data: bytes) -> None:
        if self.closing:
            return
        self._out.append(data)
        self._queued += len(data)
        if self._queued > self.door.max_output:
            self.overflow()
            return
        if not self._flush_soon:
            self._flush_soon = True
            self.door.mark(self)

    def flush(self) -> None:
        self._flush_soon = False
        if self.closing or not self._out or self.transport is None:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._queued = 0
        self.transport.write(data)
        if self.transport.get_write_buffer_size() > self.door.max_output:
            self.overflow()

    def overflow(self) -> None:
        if self.closing or self.transport is None:
            return
        METRICS.slow_readers.inc()
        log.warning("event=sendq_exceeded door=irc peer=%s", self.address)
        self._out.clear()
        self.closing = True
        self.transport.write(b"ERROR :SendQ exceeded (you are reading too slowly)\r\n")
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()

    def close(self) -> None:
        if self.closing or self.transport is None:
            return
        if self._capture:
            captured, self._capture = self._capture, None
            for line in captured:
                self._line(line)
        self.flush()
        self.closing = True
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.transport is not None and not self._lost:
            self.transport.abort()


def _markread_line(target: str, mid: Position | None) -> str:
    stamp = "timestamp=" + irc.iso_time(mid.ms) if mid else "*"
    return format_line("MARKREAD", target, stamp)


def _chat_text(text: str) -> str:
    """A PRIVMSG's text as a chat message: CTCP ACTION as `* text`, other CTCP dropped."""
    if text.startswith("\x01"):
        body = text.strip("\x01")
        if not body.upper().startswith("ACTION "):
            return ""  # other CTCP requests have no meaning here
        text = "* " + body[7:]
    return sanitize(text).strip()


def _with_tags(line: str, tags: dict[str, str]) -> str:
    add = ";".join(f"{k}={irc.escape_tag(v)}" for k, v in tags.items())
    if line.startswith("@"):
        return "@" + add + ";" + line[1:]
    return "@" + add + " " + line


def _ms_of(ref: str) -> int | None:
    if ref.startswith("timestamp="):
        return irc.parse_time(ref[len("timestamp=") :])
    return None


def _bound(ref: str, conv: Conv) -> Position | None:
    """A CHATHISTORY reference as a position in `conv` (a timestamp: its millisecond's
    first)."""
    if ref.startswith("msgid="):
        found = irc.parse_msgid(ref[len("msgid=") :])
        if found is None or found[0] != conv:
            return None
        return found[1]
    ms = _ms_of(ref)
    return Position(ms, 0) if ms is not None else None


_HANDLERS = {
    "CAP": IrcConnection._cap,
    "PASS": IrcConnection._pass,
    "NICK": IrcConnection._nick_cmd,
    "USER": IrcConnection._user_cmd,
    "AUTHENTICATE": IrcConnection._authenticate,
    "PING": IrcConnection._ping,
    "PONG": IrcConnection._ignore,
    "QUIT": IrcConnection._quit,
    "PRIVMSG": IrcConnection._privmsg,
    "NOTICE": IrcConnection._privmsg,
    "JOIN": IrcConnection._join,
    "PART": IrcConnection._part,
    "LIST": IrcConnection._list,
    "NAMES": IrcConnection._names,
    "WHO": IrcConnection._who,
    "WHOIS": IrcConnection._whois,
    "MOTD": IrcConnection._motd_cmd,
    "AWAY": IrcConnection._away,
    "ISON": IrcConnection._ison,
    "USERHOST": IrcConnection._userhost,
    "TOPIC": IrcConnection._topic,
    "MODE": IrcConnection._mode,
    "COMPLAIN": IrcConnection._complain,
    "TOKEN": IrcConnection._token,
    "UNBAN": IrcConnection._unban,
    "HELP": IrcConnection._help,
    "CHATHISTORY": IrcConnection._chathistory,
    "MARKREAD": IrcConnection._markread,
}
_BEFORE_REGISTRATION = frozenset(
    ("CAP", "PASS", "NICK", "USER", "AUTHENTICATE", "PING", "PONG", "QUIT")
)

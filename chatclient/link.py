"""The client's connection: tries the servers of its list, logs in by itself, reconnects.

Which server next, and how long to wait first, is `ServerRounds`: a try that fails before
login (refused, timed out, `! server busy` or unavailable, closed before `* ready`) moves on
to the next server of the list at once; only when every server of the list failed in this
round does the client wait (`Backoff`: 0.5 s doubling to 10 s, each wait drawn at random
from the upper half of that envelope so that clients turned away together do not come back
in lockstep) and start a new round. A full gateway is no reason to wait while another one
may have room. After losing a logged-in session the wait is drawn from all of [0,
DROP_SPREAD] instead: when a gateway dies, its thousands of clients arrive at the others
spread over 2 s, not within the same quarter second; a new round then starts at a random one
of the other servers, so they spread over those too. The backoff starts again from 0.5 s
only after a session that got as far as logging in: a list of servers that all accept and
drop (Redis down, busy) is retried ever more slowly. What the server replays (unread
messages, the rejoined chat's history) passes through `ReplayFilter`, so nothing is shown
twice.

After its first login it asks the server for a resume token (`/token`), keeps it in memory
only, and logs in again with `nick token`: a reconnect then costs the server no password
hash. A refused token (expired, revoked) falls back to the password.

What the client cannot decide alone it asks the user (`ask`, given by the terminal UI; a
script has nobody to ask, so there it stops with the reason): the nickname and password
when none was given, the password again after a wrong one, and whether to register the
nickname anew when an account it had logged in to is gone from the server (deleted by an
operator, or expired), rather than registering it silently. A moderator's kick is final:
the client says so and stops, it does not log in again behind the moderator's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable

from chatclient.lines import ChatState, Error, Message, Notice, ReplayFilter, ServerLine, classify

__all__ = [
    "DROP_SPREAD",
    "KICKED",
    "LINE_LIMIT",
    "Ask",
    "Backoff",
    "ChatLink",
    "LoginRefused",
    "ServerRounds",
    "read_line",
]

#: Longest server line the client takes (bytes). The server's longest are message lines
#: (4 KB of text plus a prefix) and bounded lists (/get_chats, /who: a few KB); anything
#: longer is skipped with a status line, never fatal to the link.
LINE_LIMIT = 256 * 1024
#: Seconds over which the first reconnect after losing a logged-in session is spread
#: (uniformly): a dead gateway's clients do not all arrive at the others at once.
DROP_SPREAD = 2.0


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line, with its newline; None for a line over the reader's limit, which is
    dropped to its end without being buffered whole. EOF raises IncompleteReadError."""
    skipped = False
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            skipped = True
            await reader.readexactly(max(exc.consumed, 1))  # drop what is buffered
            continue
        return None if skipped else line


class Backoff:
    """Reconnect waits: 0.5, 1, 2, 4, 8, 10, 10 ... s at most, each one uniformly random in
    the upper half of that (jitter), so never longer than the envelope and never 0."""

    __slots__ = ("attempt", "cap", "first", "rng")  # one per user in bench/swarm.py

    def __init__(
        self, first: float = 0.5, cap: float = 10.0, rng: Callable[[], float] = random.random
    ) -> None:
        self.first, self.cap, self.rng = first, cap, rng
        self.attempt = 0

    def ceiling(self) -> float:
        return float(min(self.first * 2**self.attempt, self.cap))

    def next(self) -> float:
        top = self.ceiling()
        self.attempt = min(self.attempt + 1, 32)
        return top * (0.5 + self.rng() / 2)

    def reset(self) -> None:
        self.attempt = 0

    def after_drop(self, spread: float = DROP_SPREAD) -> float:
        """The first wait after a logged-in session was lost: anywhere in [0, spread]
        (full jitter), then the envelope continues from its first step."""
        self.reset()
        self.attempt = 1
        return spread * self.rng()


class ServerRounds:
    """Which server of a list of `size` to try next, and how long to wait before it.

    A round tries the servers in turn with no wait between them; only when every server
    of the list failed in this round is there a wait (`Backoff.next`), and the next try
    starts a new round. With one server that is a backoff before every try. Shared by
    `ChatLink.run` and the load generator bench/swarm.py, which must behave alike.
    """

    __slots__ = ("backoff", "failures", "position", "size")

    def __init__(self, size: int, first: int = 0, backoff: Backoff | None = None) -> None:
        self.size = size
        self.position = first  # the next server to try (an index into the list, mod size)
        self.failures = 0  # failed tries in this round
        self.backoff = backoff if backoff is not None else Backoff()

    def next_server(self) -> int:
        """The index of the server to try now."""
        index = self.position % self.size
        self.position += 1
        return index

    def failed(self) -> float:
        """A try failed before login: 0 s while this round has servers left to try,
        else the backoff's next wait (and a new round begins)."""
        self.failures += 1
        if self.failures < self.size:
            return 0.0
        self.failures = 0
        return self.backoff.next()

    def dropped(self) -> float:
        """A logged-in session was lost: the wait before a new round (within
        DROP_SPREAD), and the backoff starts over. The new round begins at a random one of
        the other servers, so a dead gateway's clients spread over the others rather than
        all trying the next one of the list first (and filling it)."""
        self.failures = 0
        wait = self.backoff.after_drop()
        if self.size > 1:
            lost = (self.position - 1) % self.size
            skip = min(int(self.backoff.rng() * (self.size - 1)), self.size - 2)
            self.position = lost + 1 + skip
        return wait


class LoginRefused(Exception):
    """The server refused the nickname or password: retrying would not help."""


#: Ask the user: (question, secret) -> the answer, or None when there is no answer (the
#: user left, or nobody is there to ask).
Ask = Callable[[str, bool], Awaitable[str | None]]
#: The server's line to a session a moderator (or operator) disconnected.
KICKED = "you were disconnected by a moderator"


class ChatLink:
    def __init__(
        self,
        servers: list[tuple[str, int]],
        nick: str | None,
        password: str | None,
        show: Callable[[ServerLine], None],
        status: Callable[[str], None],
        tls: ssl.SSLContext | None = None,
        ask: Ask | None = None,
    ) -> None:
        self.servers = servers
        #: TLS for every server (certificate and host name checked), or None: plain TCP.
        self.tls = tls
        #: None: asked (`ask`) when the server wants it.
        self.nick = nick
        self.password = password
        self.ask = ask
        #: Why the server ended the session for good (a moderator's kick), or None.
        self.ended: str | None = None
        self.show = show
        self.status = status
        self.state = ChatState()
        self.replay = ReplayFilter()
        self.server: tuple[str, int] | None = None
        self.ready = asyncio.Event()
        self.closing = False
        self._writer: asyncio.StreamWriter | None = None
        self._queued: deque[str] = deque(maxlen=200)
        self.fatal: str | None = None
        #: The resume token of this device (never written anywhere, never shown).
        self.token: str | None = None
        #: How each login went, "token" or "password": for the status line and tests.
        self.logins: list[str] = []
        self._want_token = False  # we asked for a token: its line is ours, not the user's
        self._new_password: str | None = None  # a /password the server has not answered
        #: Asked after a round of servers failed: True stops retrying (plain mode, once
        #: its input has ended: a script must not wait forever for a server that is down).
        self.give_up: Callable[[], bool] | None = None

    async def send(self, line: str) -> None:
        self.state.typed(line)
        words = line.split()
        command = words[0].lower() if words else ""
        if command == "/password" and len(words) == 3:
            self._new_password = words[2]
        elif command == "/logout":  # the server revokes the token and closes: stay closed
            self.token = None
            self.closing = True
        if self._writer is None or not self.ready.is_set():
            self._queued.append(line)
            self.status("not connected: your line will be sent after reconnecting")
            return
        self._writer.write(line.encode() + b"\r\n")
        await self._writer.drain()

    async def quit(self) -> None:
        self.closing = True
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError):
                self._writer.write(b"/quit\r\n")
                await asyncio.wait_for(self._writer.drain(), 1)
            self._writer.close()

    async def run(self) -> None:
        rounds = ServerRounds(len(self.servers))
        first = True
        while not self.closing:
            host, port = self.servers[rounds.next_server()]
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port, ssl=self.tls, limit=LINE_LIMIT), 5
                )
            except (TimeoutError, OSError) as exc:
                wait = rounds.failed()
                if wait and self.give_up is not None and self.give_up():
                    self.ended = f"cannot reach {host}:{port} ({_why(exc)}) and the input has ended"
                    return
                self.status(f"cannot reach {host}:{port} ({_why(exc)}); {_next_try(wait)}")
                await asyncio.sleep(wait)
                continue
            self.server = (host, port)
            self._writer = writer
            self.replay.replaying = not first
            try:
                await self._session(reader, writer, rejoin=not first)
            except LoginRefused as exc:
                self.fatal = str(exc)
                self.closing = True
            except (ConnectionError, OSError, asyncio.IncompleteReadError):
                pass
            except Exception as exc:  # whatever went wrong, the link comes back
                self.status(f"link error ({exc.__class__.__name__}: {exc})")
            finally:
                logged_in = self.ready.is_set()
                self.ready.clear()
                self._writer = None
                writer.close()
            if self.closing:
                return
            if logged_in:  # it worked: come back quickly, but spread over DROP_SPREAD
                first = False
                wait = rounds.dropped()
                self.status(f"connection to {host}:{port} lost; reconnecting")
            else:
                wait = rounds.failed()
                self.status(f"connection to {host}:{port} closed before login; {_next_try(wait)}")
            await asyncio.sleep(wait)

    async def _session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rejoin: bool
    ) -> None:
        logged_in = False
        wrong = False
        method = "password"
        while True:
            try:
                raw = await read_line(reader)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise ConnectionError("closed by server") from None
                raw = exc.partial  # a last line without its newline
            if raw is None:
                self.status(f"skipped a server line longer than {LINE_LIMIT} bytes")
                continue
            text = raw.decode(errors="replace").rstrip("\r\n")
            line = classify(text)
            if not logged_in:
                if isinstance(line, Notice) and "password" in line.text.lower():
                    password = await self._password(line.text, wrong)
                    wrong = False
                    writer.write(password.encode() + b"\r\n")
                    continue
                if isinstance(line, Notice) and "nickname" in line.text:
                    nick = await self._nick()
                    method = "token" if self.token else "password"
                    login = f"{nick} {self.token}" if self.token else nick
                    writer.write(login.encode() + b"\r\n")
                    continue
                if isinstance(line, Error):
                    if "invalid or expired token" in line.text:
                        self.token = None  # the server asks for the nickname again
                        self.status("resume token refused; logging in with the password")
                        continue
                    if "wrong password" in line.text and "too many" not in line.text:
                        wrong = True
                        continue
                    if "unavailable" in line.text or "busy" in line.text:
                        self.status(line.text)
                        raise ConnectionError(line.text)
                    if self.ask is not None and line.text.startswith("bad nickname"):
                        self.show(line)  # said, and the nickname asked again
                        self.nick = None
                        continue
                    if self.ask is not None and line.text.startswith("bad password"):
                        self.show(line)
                        self.password = None
                        continue
                    raise LoginRefused(line.text)
                if isinstance(line, Notice) and line.text.startswith("ready"):
                    logged_in = True
                    self.logins.append(method)
                    if self.token is None:
                        self._ask_token(writer)
                    current = self.state.current
                    self.state.seen(line)
                    self.ready.set()
                    if rejoin and self.server is not None:
                        self.status(f"reconnected to {self.server[0]}:{self.server[1]}")
                    else:
                        self.show(line)
                    if rejoin and current.casefold() != "general":
                        self._rejoin(writer, current)
                    else:
                        self.replay.replaying = False
                    while self._queued:
                        queued = self._queued.popleft()
                        writer.write(queued.encode() + b"\r\n")
                    continue
            if isinstance(line, Notice) and self._token_line(line, writer):
                continue
            if isinstance(line, Error) and line.text == KICKED:
                self.ended = line.text  # final: not undone by logging in again
                self.closing = True
                self.show(line)
                return
            self.state.seen(line)
            if isinstance(line, Message) and not self.replay.show(line):
                continue
            if (
                isinstance(line, Notice)
                and self.replay.replaying
                and line.text.startswith("you are in #")
            ):
                continue
            self.show(line)

    async def _nick(self) -> str:
        """The nickname to log in with: given, or asked."""
        while not self.nick:
            answer = await self._ask("nickname: ", secret=False)
            self.nick = answer.strip()
        return self.nick

    async def _password(self, prompt: str, wrong: bool) -> str:
        """The password for the server's prompt: known, or asked; after a wrong one asked
        again (or refused where nobody can be asked). A new-nickname prompt after this
        client logged in before means the account is gone: asked, never silently."""
        nick = self.nick or ""
        if prompt.startswith("New nickname") and self.logins:
            gone = (
                f"the account {nick} no longer exists on the server (deleted by an operator, "
                "or expired)"
            )
            if self.ask is None:
                raise LoginRefused(f"{gone}; not registering it again")
            self.status(gone)
            answer = await self._ask(f"register {nick} again as a new account? [y/N] ", False)
            if answer.strip().lower() not in ("y", "yes"):
                raise LoginRefused(f"{gone}; not registered again")
            self.logins.clear()  # asked once: what follows is a first login again
        if wrong:
            if self.ask is None:
                raise LoginRefused("wrong password")
            self.status("wrong password")
            self.password = None
        if self.password is None:
            new = prompt.startswith("New nickname")
            question = f"new nickname {nick}: choose a password: " if new else ""
            self.password = await self._ask(question or f"password for {nick}: ", secret=True)
        elif prompt.startswith("New nickname"):
            self.status(f"registering the new nickname {nick}")
        return self.password

    async def _ask(self, question: str, secret: bool) -> str:
        """The user's answer; LoginRefused when there is none."""
        answer = await self.ask(question, secret) if self.ask is not None else None
        if answer is None:
            raise LoginRefused("no answer")
        return answer

    def _ask_token(self, writer: asyncio.StreamWriter) -> None:
        self._want_token = True
        writer.write(b"/token\r\n")

    def _token_line(self, line: Notice, writer: asyncio.StreamWriter) -> bool:
        """Take a token (and password change) notice; True if it is not for the user."""
        if line.text.startswith("token: "):
            words = line.text.split()
            if len(words) > 1:
                self.token = words[1]
            mine, self._want_token = self._want_token, False
            return mine
        if line.text == "password changed":  # the server revoked every token
            if self._new_password is not None:
                self.password, self._new_password = self._new_password, None
            self.token = None
            self._ask_token(writer)
        return False

    def _rejoin(self, writer: asyncio.StreamWriter, chat: str) -> None:
        """Make the chat current again on the new session; its history is filtered as replay."""
        self.state.typed(f"/chats {chat}")
        writer.write(f"/chats {chat}\r\n".encode())
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, self._end_replay)

    def _end_replay(self) -> None:
        self.replay.replaying = False


def _why(exc: BaseException) -> str:
    """Why a connection failed, in a user's words (the exception's name for the rest)."""
    if isinstance(exc, ConnectionRefusedError):
        return "ConnectionRefusedError: nothing listens there"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError):
        return "no answer in 5 s"
    return exc.__class__.__name__


def _next_try(wait: float) -> str:
    """The end of a status line after a failed try."""
    return "trying the next server" if wait == 0 else f"retrying in {wait:.1f} s"

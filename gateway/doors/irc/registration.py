"""IRC registration as a state machine: CAP negotiation, PASS, NICK, USER, SASL PLAIN.

`TRANSITIONS` is the whole of it, as data: which input moves registration from which
stage to which. What a stage does not list is refused (`Registration.on` raises), so a
handler asks `allows` first. NICK, USER and PASS only collect values; registration is
`COMPLETE` once NICK and USER are in and no CAP negotiation is open, and then logs in
through the core like the other doors (unless SASL logged in already), and only after
`001` does the client see anything of the chat: the backlog the core shows at login is
held until then and replayed after the JOINs.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.core import commands as cmd
from gateway.core import events as ev
from gateway.core.names import name_key, sanitize
from gateway.core.session import Phase
from gateway.core.tokens import looks_like_token
from gateway.doors.irc import numerics as n
from gateway.doors.irc.protocol import format_line
from gateway.kit.codec import CLOSE, LOGGED_IN, Step

if TYPE_CHECKING:
    from gateway.doors.irc.codec import IrcCodec

__all__ = ["TRANSITIONS", "Input", "Registration", "Stage", "login", "try_register"]


class Stage(enum.Enum):
    OPEN = "open"  # collecting NICK, USER, PASS
    NEGOTIATING = "negotiating"  # CAP LS or REQ seen: registration waits for CAP END
    SASL = "sasl"  # AUTHENTICATE PLAIN accepted: the credentials are awaited
    LOGGING_IN = "logging_in"  # the core checks the nickname and password
    WELCOME = "welcome"  # logged in: 001 to the NAMES are being sent, the chat is held
    REGISTERED = "registered"
    CLOSED = "closed"  # refused or quit: nothing more is read


class Input(enum.Enum):
    CAP = "cap"  # CAP LS or CAP REQ
    CAP_END = "cap_end"
    SASL_START = "sasl_start"  # AUTHENTICATE PLAIN
    SASL_DONE = "sasl_done"  # the credentials came (accepted or not), or `*` aborted
    COMPLETE = "complete"  # NICK and USER are in, no negotiation open
    LOGIN_OK = "login_ok"
    LOGIN_FAILED = "login_failed"
    WELCOMED = "welcomed"
    QUIT = "quit"


#: (stage, input) -> the next stage. Everything not here is refused.
TRANSITIONS: dict[tuple[Stage, Input], Stage] = {
    (Stage.OPEN, Input.CAP): Stage.NEGOTIATING,
    (Stage.OPEN, Input.CAP_END): Stage.OPEN,  # an END without a negotiation changes nothing
    (Stage.OPEN, Input.COMPLETE): Stage.LOGGING_IN,
    (Stage.NEGOTIATING, Input.CAP): Stage.NEGOTIATING,
    (Stage.NEGOTIATING, Input.CAP_END): Stage.OPEN,
    (Stage.NEGOTIATING, Input.SASL_START): Stage.SASL,
    (Stage.SASL, Input.SASL_DONE): Stage.NEGOTIATING,
    (Stage.SASL, Input.CAP): Stage.SASL,
    (Stage.LOGGING_IN, Input.LOGIN_OK): Stage.WELCOME,
    (Stage.LOGGING_IN, Input.LOGIN_FAILED): Stage.CLOSED,
    (Stage.WELCOME, Input.WELCOMED): Stage.REGISTERED,
    (Stage.REGISTERED, Input.CAP): Stage.REGISTERED,  # CAP REQ after registration: no waiting
    (Stage.REGISTERED, Input.CAP_END): Stage.REGISTERED,
    **{(stage, Input.QUIT): Stage.CLOSED for stage in Stage},
}


@dataclass(slots=True)
class Registration:
    stage: Stage = Stage.OPEN
    nick: str = ""  # as the client sent it
    username: str = ""  # USER's first parameter
    realname: str = ""
    user_given: bool = False
    password: str | None = None  # PASS, forgotten once used
    #: The account a login is under way for (a SASL retry must name the same one).
    login_key: str = ""
    #: The core's errors during the current login attempt (their text is the reason).
    errors: list[ev.Error] = field(default_factory=list)

    def allows(self, what: Input) -> bool:
        return (self.stage, what) in TRANSITIONS

    def on(self, what: Input) -> Stage:
        self.stage = TRANSITIONS[(self.stage, what)]
        return self.stage

    @property
    def registered(self) -> bool:
        return self.stage is Stage.REGISTERED

    @property
    def complete(self) -> bool:
        return self.stage is Stage.OPEN and bool(self.nick) and self.user_given

    def failure(self) -> str:
        return self.errors[-1].text if self.errors else "login failed"


def login(c: IrcCodec, nick: str, password: str) -> Iterator[Step]:
    """Log in through the core (a token, else the password); the core's phase says how
    it went (READY: logged in)."""
    reg = c.reg
    reg.errors.clear()
    nick = sanitize(nick).strip()
    key = name_key(nick)
    if c.at(Phase.PASSWORD) and key != reg.login_key:
        reg.errors.append(
            ev.Error(ev.ErrorCode.BAD_INPUT, "retry with the same account, or reconnect")
        )
        return
    reg.login_key = key
    if c.at(Phase.PASSWORD):  # a SASL retry for the same account
        yield cmd.Password(password)
        return
    if not c.at(Phase.NICK):
        return
    if looks_like_token(password):
        yield cmd.Nick(nick, token=password)
        if not c.at(Phase.NICK):
            return
        reg.errors.clear()  # not a token after all: a password of that shape
    yield cmd.Nick(nick)
    if c.at(Phase.PASSWORD):
        yield cmd.Password(password)


def try_register(c: IrcCodec) -> Iterator[Step]:
    """Register if NICK and USER are in and no negotiation is open: log in (unless SASL
    did), then the welcome; a login that fails says why and closes."""
    reg = c.reg
    if not reg.complete:
        return
    reg.on(Input.COMPLETE)
    if not c.at(Phase.READY):
        if reg.password is None:
            c.line(
                format_line(
                    "NOTICE",
                    reg.nick,
                    "this server needs your account's password: set it as the server "
                    "password (PASS), or use SASL PLAIN; a new nickname registers with it",
                )
            )
            yield from _refuse(c, n.ERR_PASSWDMISMATCH, "Password required")
            return
        password, reg.password = reg.password, None  # not kept once used
        yield from login(c, reg.nick, password)
        if not c.at(Phase.READY):
            code = n.ERR_PASSWDMISMATCH
            if any(e.code is ev.ErrorCode.BAD_NAME for e in reg.errors):
                code = n.ERR_ERRONEUSNICKNAME
            yield from _refuse(c, code, reg.failure())
            return
    reg.on(Input.LOGIN_OK)
    yield LOGGED_IN
    yield from c.welcome()
    reg.on(Input.WELCOMED)
    c.recache()


def _refuse(c: IrcCodec, code: str, why: str) -> Iterator[Step]:
    c.reg.on(Input.LOGIN_FAILED)
    c.line(format_line(code, c.reg.nick or "*", why))
    c.line(format_line("ERROR", why, source=""))
    yield CLOSE

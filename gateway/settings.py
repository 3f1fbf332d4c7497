"""One settings object: every option, its environment variable, its default and its help.

Each option's help says what it does and its unit, under a heading (`--help` groups them);
each limit says what it costs next to its default, so an operator can size a gateway. A
value that is not what the option takes (a port over 65535, a word where a number goes, a
Redis URL without a scheme) is refused with one line naming the option and what it takes,
exit status 2, whether it came from the command line or the environment.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

__all__ = [
    "DATA_OFF",
    "GROUPS",
    "MAX_WORKERS",
    "Settings",
    "SettingsError",
    "check_redis_url",
    "data_dir",
    "default_data_file",
    "env_var",
    "host_cores",
]

#: `--data` values that keep nothing (the embedded store as before: gone at exit).
DATA_OFF = frozenset({"none", "off", "no", "-"})
#: The --help headings, in order.
GROUPS = (
    "listeners",
    "store",
    "messages and chats",
    "connections and logins",
    "moderation",
    "performance",
    "logging",
)
#: Whole numbers beyond this are refused (they end up in Redis as milliseconds or counts).
_MAX_INT = 2**40
#: The longest time any duration option takes, in seconds: ten years.
_MAX_SECONDS = 10 * 365 * 86400
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """A setting's value is not one the option takes; the text says which and why."""


@dataclass(frozen=True, slots=True)
class _Opt:
    """How one option is given: its heading, its help, and how its text becomes a value
    (raising ValueError with what the option takes)."""

    group: str
    help: str
    parse: Callable[[str], Any]
    metavar: str
    default_text: str | None = None


def _opt(
    default: Any,
    group: str,
    help: str,
    parse: Callable[[str], Any],
    metavar: str = "N",
    default_text: str | None = None,
) -> Any:
    assert group in GROUPS, group
    return field(default=default, metadata={"opt": _Opt(group, help, parse, metavar, default_text)})


# -- what each option takes ------------------------------------------------------------------


def _int(low: int, high: int = _MAX_INT) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"not a whole number; {_span(low, high)}") from None
        if not low <= value <= high:
            raise ValueError(f"out of range; {_span(low, high)}")
        return value

    return parse


def _span(low: int | float, high: int | float) -> str:
    if high >= _MAX_INT:
        return f"give {low} or more"
    return f"give {low} to {high}"


def _float(
    low: float, high: float = float(_MAX_SECONDS), above: bool = False
) -> Callable[[str], float]:
    """A finite number in [low, high] ((low, high] with `above`)."""
    take = f"give a number above {low:g}" if above else f"give {low:g} or more"
    if high < _MAX_SECONDS:
        take += f", at most {high:g}"

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise ValueError(f"not a number; {take}") from None
        if not math.isfinite(value):
            raise ValueError(f"not a finite number; {take}")
        if value < low or value > high or (above and value == low):
            raise ValueError(f"out of range; {take}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("not a port number; give 0 to 65535") from None
    if not 0 <= value <= 65535:
        raise ValueError("not a port number; give 0 to 65535")
    return value


#: The most --workers takes: each worker is a whole gateway (its Redis connections,
#: its descriptors), so more than a few per core only costs memory.
MAX_WORKERS = 256


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _workers(text: str) -> int:
    """A number of worker processes, or `auto`: one per core of this host."""
    if text.strip().lower() == "auto":
        return min(host_cores(), MAX_WORKERS)
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"not a whole number; give 1 to {MAX_WORKERS}, or auto") from None
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"out of range; give 1 to {MAX_WORKERS}, or auto")
    return value


#: Units a time option takes after its number (`90`, `90s`, `30m`, `2h`, `7d`), as the
#: moderators' /ban does.
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(low: int) -> Callable[[str], int]:
    whole = _int(low, _MAX_SECONDS)

    def parse(text: str) -> int:
        t = text.strip().lower()
        unit = _TIME_UNITS.get(t[-1:], 1)
        digits = t[:-1] if t[-1:] in _TIME_UNITS else t
        if not digits.isascii() or not digits.isdigit():
            raise ValueError(
                f"not a time; give seconds (90) or 90s, 30m, 2h, 7d: {_span(low, _MAX_SECONDS)}"
            )
        return whole(str(int(digits) * unit))

    return parse


def _text(text: str) -> str:
    return text


def _host(text: str) -> str:
    if not text.strip() or any(c.isspace() for c in text):
        raise ValueError("not a host; give an address such as 127.0.0.1, 0.0.0.0 or ::")
    return text.strip()


def _file(text: str) -> str:
    """A file to read, or empty for none."""
    if not text:
        return ""
    path = Path(text)
    if not path.exists():
        raise ValueError("no such file")
    if not path.is_file():
        raise ValueError("not a file")
    if not os.access(path, os.R_OK):
        raise ValueError("cannot be read (permissions)")
    return text


def _origins(text: str) -> str:
    for origin in (o.strip() for o in text.split(",")):
        if not origin:
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(
                f"{origin!r} is not an origin; give scheme://host[:port] such as "
                "https://chat.example, comma-separated"
            )
    return text


def _level(text: str) -> str:
    if text.strip().upper() not in _LEVELS:
        raise ValueError(f"not a log level; give one of {', '.join(_LEVELS)}")
    return text.strip().upper()


def _data(text: str) -> str:
    if text.strip().lower() in DATA_OFF or not text:
        return text.strip().lower()
    if Path(text).is_dir():
        raise ValueError("is a directory; give a file in it (e.g. DIR/chat.data), or none")
    return text


def check_redis_url(url: str) -> str:
    """The URL if a Redis client can use it, else ValueError saying what is wrong.
    `redis://[user:password@]host[:port][/db]`, `rediss://` (TLS), `unix:///path`, or a
    list of cluster seeds `redis://h1:p1,h2:p2`."""
    example = "e.g. redis://127.0.0.1:6379/0"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"not a Redis URL: it must start with redis://, rediss:// or unix:// ({example})"
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL names the socket's path, e.g. unix:///run/redis.sock")
        return url
    _, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ValueError(f"no host in the URL ({example})")
    for item in (i.strip() for i in hosts.split(",")):
        if item.endswith("]") or ":" not in item:
            host, port = item, "6379"  # no port: Redis's
        else:
            host, _, port = item.rpartition(":")
        if not host.strip("[]"):
            raise ValueError(f"no host in {item!r} ({example})")
        if not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(f"bad port in {item!r}: give 1 to 65535 ({example})")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the database after the last / must be a number ({example})")
    return url


def _redis_url(text: str) -> str | None:
    if not text.strip():
        return None
    return check_redis_url(text.strip())


def env_var(name: str) -> str:
    """The environment variable of a settings field."""
    return "REDIS_URL" if name == "redis_url" else "CHAT_" + name.upper()


@dataclass(frozen=True)
class Settings:
    # -- listeners ---------------------------------------------------------------------------
    host: str = _opt(
        "127.0.0.1",
        "listeners",
        "address the chat ports listen on (the line, web and IRC doors); 0.0.0.0 or :: "
        "for every interface",
        _host,
        "HOST",
    )
    port: int = _opt(
        8000,
        "listeners",
        "TCP port of the line protocol (telnet, client.py); 0: any free port",
        _port,
        "PORT",
    )
    #: The web page and its WebSocket (`/ws`) on this port; 0 turns the web door off.
    web_port: int = _opt(
        8080,
        "listeners",
        "TCP port of the chat page and its WebSocket /ws (HTTPS/WSS when --tls-port is set); "
        "0: no web door",
        _port,
        "PORT",
    )
    #: Comma-separated origins allowed to open the WebSocket (e.g. https://chat.example);
    #: empty: only the page's own origin. Browsers send Origin; other clients may omit it.
    web_origins: str = _opt(
        "",
        "listeners",
        "comma-separated origins (https://chat.example) allowed to open the WebSocket; "
        "others get 403",
        _origins,
        "ORIGINS",
        "the page's own origin",
    )
    #: The IRC door (any IRC client: docs/IRC.md) on this port; 0 turns it off.
    irc_port: int = _opt(
        6667, "listeners", "TCP port of the IRC door (docs/IRC.md); 0: no IRC door", _port, "PORT"
    )
    #: The IRC door over TLS on this port (0: off; 6697 is usual), with the TLS options
    #: below (`--tls-cert`, `--tls-key`).
    irc_tls_port: int = _opt(
        0,
        "listeners",
        "TCP port of the IRC door over TLS (6697 is usual), with --tls-cert and --tls-key; 0: off",
        _port,
        "PORT",
    )
    #: A second port serving the same line protocol over TLS (0: none), with the PEM
    #: certificate chain and key files. TLS costs about 30 KiB of memory per connection
    #: and a handshake (a few ms of one core) per connect.
    tls_port: int = _opt(
        0,
        "listeners",
        "TCP port of the line protocol over TLS, with --tls-cert and --tls-key (about "
        "30 KiB per connection); 0: off",
        _port,
        "PORT",
    )
    tls_cert: str = _opt(
        "",
        "listeners",
        "PEM certificate chain file for --tls-port and --irc-tls-port (with --tls-port the "
        "web port serves HTTPS too)",
        _file,
        "FILE",
        "none",
    )
    tls_key: str = _opt(
        "", "listeners", "PEM private key file of --tls-cert", _file, "FILE", "none"
    )
    #: HTTP port for /metrics and /healthz; 0 turns it off.
    metrics_port: int = _opt(
        0,
        "listeners",
        "TCP port of Prometheus /metrics and /healthz (on --metrics-host); 0: off",
        _port,
        "PORT",
    )
    #: Address the metrics port binds: loopback by default, so /metrics is not public even
    #: when the chat listens on 0.0.0.0.
    metrics_host: str = _opt(
        "127.0.0.1",
        "listeners",
        "address the metrics port listens on (not --host: keep it private)",
        _host,
        "HOST",
    )
    # -- store -------------------------------------------------------------------------------
    #: None: an embedded in-process store (fakeredis behind a loopback RESP port).
    redis_url: str | None = _opt(
        None,
        "store",
        "the Redis every gateway of one chat shares: redis://[user:password@]host:port/db, "
        "rediss:// for TLS, or cluster seeds redis://h1:p1,h2:p2",
        _redis_url,
        "URL",
        "none: an embedded store in this process (one gateway), kept in --data",
    )
    #: The embedded store's data file ("" the default place, "none" nothing kept).
    data: str = _opt(
        "",
        "store",
        "without --redis-url: the file the embedded store keeps accounts, chats, history and "
        "read positions in (written at most once a second, and at exit); none: keep nothing",
        _data,
        "FILE",
        "$XDG_DATA_HOME/chat-gateway/HOST-PORT.chat (~/.local/share/chat-gateway/...)",
    )
    #: CA file trusted for a `rediss://` Redis (unless the URL has `ssl_ca_certs=`);
    #: empty: the system's trust store.
    redis_ca: str = _opt(
        "",
        "store",
        "CA file trusted for a rediss:// Redis (unless the URL has ssl_ca_certs=)",
        _file,
        "FILE",
        "the system's trust store",
    )
    #: Seconds to wait for any one reply from Redis. A post whose reply does not come in
    #: time may still have been stored: the sender is told so, not "not sent".
    store_timeout: float = _opt(
        10.0,
        "store",
        "seconds a gateway waits for any one Redis reply before telling the user",
        _float(0, 3600, above=True),
        "SECONDS",
    )
    #: Milliseconds a post waits for one replica to have it (`WAIT 1 <ms>`) before the
    #: sender's echo; 0: no wait. Redis replicates asynchronously, so without it a master
    #: that dies may take its last acknowledged messages with it; with it, an echoed
    #: message survives a failover, and one no attached replica took in time is reported
    #: to the sender as possibly not stored. A master with no replica at all is not waited
    #: for (store/replicas.py). Costs each post about a replica round trip.
    redis_wait_replica: int = _opt(
        0,
        "store",
        "milliseconds a post waits for one replica (WAIT 1) before the sender's echo, so an "
        "echoed message survives a failover; 0: no wait",
        _int(0, 60_000),
        "MS",
    )
    # -- messages and chats ------------------------------------------------------------------
    #: Messages shown to a newcomer, by /chats and by /history without n.
    history: int = _opt(
        20,
        "messages and chats",
        "messages shown on joining a chat and by /history without n",
        _int(1, 1000),
    )
    #: Stored messages one user may read per minute (core/budget.py): /history, a join's
    #: last messages, the page's and IRC's history requests; the login backlog never
    #: counts. A reader in a loop costs at most this (/history 1000 is 29,000 bytes out
    #: per byte in).
    history_per_minute: int = _opt(
        2000,
        "messages and chats",
        "stored messages one user may read per minute through /history, joins and the "
        "doors' history requests, this many at once (the login backlog never counts); "
        "0: no limit",
        _int(0),
    )
    #: Members a chat may have for its members to be told who comes online in it, parts
    #: and quits (IRC's JOIN, PART and QUIT of other users): a reconnect storm costs a
    #: chat's members squared deliveries, so larger chats are not told.
    presence_members: int = _opt(
        200,
        "messages and chats",
        "chats of at most this many members tell their members who comes, parts and quits "
        "(IRC's JOIN, PART, QUIT; a reconnect storm costs members x members lines); "
        "0: no chat",
        _int(0),
    )
    #: Client tags without a message (IRC's TAGMSG: typing notices, reactions) one user
    #: may send per minute: published to every reader, never stored, so this is their cost.
    tags_per_minute: int = _opt(
        120,
        "messages and chats",
        "typing notices and reactions (IRC's TAGMSG) one user may send per minute, this "
        "many at once; 0: no limit",
        _int(0),
    )
    #: Seconds a message lives; streams are trimmed exactly to this.
    message_ttl: int = _opt(
        3600, "messages and chats", "seconds a message is kept", _seconds(1), "SECONDS"
    )
    #: Messages kept per conversation (exact MAXLEN trim on every post). Redis holds at
    #: most (chats + private conversations) x this x (text + ~100 bytes).
    max_stored: int = _opt(
        10000,
        "messages and chats",
        "messages kept per conversation besides the lifetime (Redis holds at most "
        "conversations x this x (text + ~100 bytes))",
        _int(1),
    )
    #: Stored lines shown at login (the newest; the user is told what was left out). The
    #: login reads at most 8 conversations x (this + 1) messages at a time.
    max_backlog: int = _opt(
        500, "messages and chats", "unread messages shown at login, the newest", _int(1)
    )
    #: Longest input line in bytes; a longer one is dropped as it arrives, so this also
    #: bounds the input buffer of each connection.
    max_line: int = _opt(
        4096,
        "messages and chats",
        "bytes of the longest input line (also each connection's input buffer)",
        _int(64, 1 << 24),
        "BYTES",
    )
    #: Bytes queued for one slow reader before it is disconnected ("SendQ exceeded").
    #: The worst case memory of a gateway is about connections x this.
    max_output: int = _opt(
        1 << 20,
        "messages and chats",
        "bytes queued for one slow reader before it is disconnected (worst-case memory: "
        "connections x this)",
        _int(4096, 1 << 30),
        "BYTES",
    )
    #: Messages per second a user may send, summed over all their devices; 0 turns the
    #: limit off. `burst` messages may be sent at once after a quiet period.
    rate: float = _opt(
        5.0,
        "messages and chats",
        "messages per second one user may send over all devices and gateways; 0: no limit",
        _float(0, 1e6),
        "PER_S",
    )
    burst: int = _opt(
        20, "messages and chats", "messages one user may send at once after a pause", _int(1)
    )
    #: Chats one user may be in (#general included); bounds join/leave work per account.
    max_user_chats: int = _opt(
        100, "messages and chats", "chats one user may be in, #general included", _int(1)
    )
    #: Chats that may exist at once; a join that would create one more is refused.
    max_chats: int = _opt(10000, "messages and chats", "chats that may exist at once", _int(1))
    #: Chats one user may create per hour (0: none but existing ones can be joined).
    chat_creations: int = _opt(
        10,
        "messages and chats",
        "new chats one user may create per hour; 0: only existing chats can be joined",
        _int(0),
    )
    #: Chats /get_chats lists (the largest; "and N more"): bounds its reply and its cost.
    chats_listed: int = _opt(
        50, "messages and chats", "chats /get_chats lists (the largest)", _int(1, 10000)
    )
    # -- connections and logins --------------------------------------------------------------
    #: Seconds a connection may take to log in before it is closed.
    login_timeout: float = _opt(
        60.0,
        "connections and logins",
        "seconds a connection may take to log in before it is closed",
        _float(0, 86400, above=True),
        "SECONDS",
    )
    #: Connections from one IP address at once (0: no limit).
    max_per_ip: int = _opt(
        100,
        "connections and logins",
        "connections from one address over all gateways; 0: no limit",
        _int(0),
    )
    #: Connections open on this gateway at once (line and web); beyond it a connection is
    #: told `! server busy: this gateway is full ...` and closed, so its client tries
    #: another gateway instead of failing on a descriptor limit. -1: the process's
    #: descriptor limit minus FD_RESERVE (kept for Redis, listeners, files); 0: no limit.
    max_connections: int = _opt(
        -1,
        "connections and logins",
        "connections open on this gateway (line, web, IRC); beyond it `! server busy` so "
        "clients try another; -1: the descriptor limit less 256; 0: no limit",
        _int(-1),
    )
    #: Connections still logging in, on this gateway, at once (0: no limit).
    max_pending_logins: int = _opt(
        2000,
        "connections and logins",
        "connections still logging in on this gateway; 0: no limit",
        _int(0),
    )
    #: Connections still logging in from one IP address at once (0: no limit), so a few
    #: addresses cannot fill `max_pending_logins` for everyone; costs NAT users who all
    #: connect in the same second a retry.
    max_pending_per_ip: int = _opt(
        20,
        "connections and logins",
        "connections still logging in from one address; 0: no limit",
        _int(0),
    )
    #: Failed logins (wrong passwords or tokens) allowed per nickname from one address
    #: within `login_fail_window`; each attempt is counted before its hash is checked, so
    #: parallel connections get no more. Costs a user who mistypes this often a wait of up
    #: to the window at that address (a success there resets it). 0: no limit.
    max_login_failures: int = _opt(
        10,
        "connections and logins",
        "failed logins at one nickname from one address within --login-fail-window; 0: no limit",
        _int(0),
    )
    login_fail_window: int = _opt(
        900,
        "connections and logins",
        "seconds over which failed logins are counted",
        _seconds(1),
        "SECONDS",
    )
    #: Failed logins allowed per nickname from all the addresses it never logged in from,
    #: within the window: bounds guesses spread over many addresses (a botnet) at one
    #: account; never locks the owner out of an address they logged in from (30 days).
    max_login_failures_per_nick: int = _opt(
        100,
        "connections and logins",
        "failed logins at one nickname from addresses it never logged in from, within the "
        "window; 0: no limit",
        _int(0),
    )
    #: Distinct nicknames whose logins may fail from one address (IPv6: its /64) within the
    #: window, counting only nicknames that never logged in there: bounds one address
    #: spraying guesses over many accounts; one user's typos count once. Costs a NAT
    #: shared by this many mistyping newcomers a wait. 0: no limit.
    max_failed_nicks_per_ip: int = _opt(
        10,
        "connections and logins",
        "distinct nicknames whose logins may fail from one address within the window; 0: no limit",
        _int(0),
    )
    #: Accounts registered per address per hour (0: no limit).
    max_registrations: int = _opt(
        20,
        "connections and logins",
        "new accounts per address per hour; 0: no limit",
        _int(0),
    )
    #: Seconds an account lives without a login; then it, its keys and memberships go.
    account_ttl: int = _opt(
        180 * 86400,
        "connections and logins",
        "seconds an account is kept without a login (180 days), then forgotten",
        _seconds(60),
        "SECONDS",
    )
    #: Seconds a resume token (/token) is valid: its holder logs in without the password
    #: until then. Each costs one ~100-byte field in Redis (at most `credentials.MAX_TOKENS`
    #: per user).
    token_ttl: int = _opt(
        30 * 86400,
        "connections and logins",
        "seconds a resume token (/token) logs in without the password (30 days)",
        _seconds(1),
        "SECONDS",
    )
    #: TCP keepalive on every accepted socket: first probe after this many idle seconds,
    #: then `keepalive_count` probes `keepalive_interval` s apart; a vanished peer is
    #: dropped after about idle + count x interval (90 s); an idle peer that is there
    #: answers the probes and stays. 0 turns keepalive off.
    keepalive_idle: int = _opt(
        60,
        "connections and logins",
        "seconds a connection is idle before TCP keepalive probes it; 0: no keepalive",
        _int(0, 86400),
        "SECONDS",
    )
    keepalive_interval: int = _opt(
        10,
        "connections and logins",
        "seconds between keepalive probes",
        _int(1, 3600),
        "SECONDS",
    )
    keepalive_count: int = _opt(
        3,
        "connections and logins",
        "unanswered keepalive probes before the connection is dropped",
        _int(1, 100),
    )
    # -- moderation --------------------------------------------------------------------------
    ban_threshold: int = _opt(
        3, "moderation", "different users' complaints (/ban NICK) that ban a user", _int(1)
    )
    ban_duration: int = _opt(
        14400,
        "moderation",
        "seconds a ban lasts (after complaints, or a moderator's /ban without a time)",
        _seconds(1),
        "SECONDS",
    )
    #: Seconds an account must exist before its complaints count: fresh throwaway accounts
    #: cannot ban; costs a real newcomer this long before /ban works for them.
    complaint_min_age: int = _opt(
        3600,
        "moderation",
        "seconds an account must exist before its complaints count",
        _seconds(0),
        "SECONDS",
    )
    #: Complaints one user may make per hour (0: no limit): one account cannot sweep the
    #: whole user list; costs nothing to a user who complains about a few.
    complaints_per_hour: int = _opt(
        10, "moderation", "complaints one user may make per hour; 0: no limit", _int(0)
    )
    #: Complaints about one user counted from one address (an IPv6 /64) per ban period (0: no
    #: limit): sock puppets on one machine count once; costs users behind one NAT their
    #: second voice (raise it for a campus or an office).
    complaints_per_address: int = _opt(
        1,
        "moderation",
        "complaints about one user counted from one address per ban period; 0: no limit",
        _int(0),
    )
    #: A user banned for complaints: their last this-many login addresses may not register
    #: new accounts until the ban ends (0: off). Costs one small sorted set per user and
    #: newcomers who share such an address (existing accounts still log in).
    ban_address_memory: int = _opt(
        4,
        "moderation",
        "a user banned after complaints: their last this-many login addresses register no "
        "new accounts until the ban ends; 0: off",
        _int(0, 1000),
    )
    #: Entries kept in the audit stream (complaints, bans, kicks, admin actions), trimmed
    #: approximately; about 200 bytes each in Redis. Keep it above what one message
    #: lifetime produces so the trail covers at least that long.
    audit_keep: int = _opt(
        100000,
        "moderation",
        "entries kept in the audit trail (about 200 bytes each)",
        _int(100),
    )
    # -- performance -------------------------------------------------------------------------
    #: Password hashes waiting or running at once on this gateway; beyond it a login gets
    #: `! server busy` and may retry. Each waits about 80 ms x this / `hash_threads`.
    max_pending_hashes: int = _opt(
        64,
        "performance",
        "password hashes waiting or running at once; beyond it `! server busy`",
        _int(1),
    )
    #: Threads hashing passwords (each scrypt holds one core and 16 MiB while it runs).
    hash_threads: int = _opt(
        2, "performance", "threads hashing passwords (16 MiB each while hashing)", _int(1, 256)
    )
    #: scrypt cost as log2(N); 14 is 16 MiB and about 80 ms of one core per login.
    scrypt_log_n: int = _opt(
        14,
        "performance",
        "password hash cost as log2 of scrypt's N: 14 is 16 MiB and about 80 ms per login",
        _int(1, 20),
    )
    #: Seconds between cursor flushes to Redis (the most a crash can show twice).
    cursor_flush: float = _opt(
        1.0,
        "performance",
        "seconds between writes of what each user was shown (a crash shows at most this "
        "much again)",
        _float(0, 60, above=True),
        "SECONDS",
    )
    #: Readers of one chat written per event-loop turn (gateway/bigchat.py): a chat with
    #: more local readers is written in chunks, a message arriving meanwhile joins the
    #: pass, and logins and input run between chunks. 0: every chat at once (a big chat's
    #: pass then holds the gateway, and a message arriving during it waits for the next).
    fanout_chunk: int = _opt(
        1000,
        "performance",
        "readers of a big chat written per event-loop turn (each chunk a few ms); 0: all at once",
        _int(0, 1_000_000),
    )
    #: Listening sockets per port (SO_REUSEPORT), each with its own accept queue: Linux
    #: cuts one socket's queue to net.core.somaxconn (4096 by default), and the restarted
    #: gateway of a reconnect storm meets more clients than that at once; a handshake past
    #: the queue is dropped and its client waits a second to retry (docs/PERFORMANCE.md).
    listen_queues: int = _opt(
        4,
        "performance",
        "listening sockets per port, each with its own queue of pending connections "
        "(Linux caps one queue at net.core.somaxconn): more absorb a reconnect storm",
        _int(1, 64),
        "N",
    )
    #: Gateway processes sharing this gateway's ports (SO_REUSEPORT: the kernel spreads new
    #: connections over them), so one host's cores all serve; each is a whole gateway to
    #: Redis, restarted by the first process if it dies, from a warm spare
    #: (gateway/workers.py). More than 1 needs --redis-url: the embedded store lives in one
    #: process. 0, the default: this process is the gateway, and nothing restarts it.
    workers: int = _opt(
        0,
        "performance",
        "gateway processes sharing these ports, each on its own core, restarted at once if "
        "one dies (1: one gateway, supervised); more than 1 needs --redis-url; auto: one "
        "per core",
        _workers,
        "N",
        "none: this process is the gateway, unsupervised",
    )
    #: With --workers: gateway processes kept imported and waiting, each to take a dead
    #: worker's place at once (gateway/workers.py). 0: a dead worker is started anew.
    spares: int = _opt(
        1,
        "performance",
        "with --workers: gateway processes kept started and waiting (about 40 MB each), "
        "each to take a dead worker's place within milliseconds; 0: restart from nothing",
        _int(0, 16),
        "N",
    )
    # -- logging -----------------------------------------------------------------------------
    log_level: str = _opt("INFO", "logging", f"one of {', '.join(_LEVELS)}", _level, "LEVEL")

    @classmethod
    def from_args(
        cls, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Settings:
        """The settings of the command line over the environment over the defaults; a
        bad value exits with one line (status 2)."""
        return parse_settings(cls, argv, env)

    def validate(self) -> None:
        """Refuse combinations no single value shows (SettingsError)."""
        check_combinations(self)

    def data_file(self, env: dict[str, str] | None = None) -> Path | None:
        """The embedded store's data file: --data, else one per host and port in the data
        directory; None to keep nothing (`--data none`, or port 0: a throwaway gateway)."""
        if self.data in DATA_OFF:
            return None
        if self.data:
            return Path(self.data).expanduser()
        if self.port == 0:
            return None
        return default_data_file(self.host, self.port, env)


def parse_settings(
    cls: type[Settings], argv: list[str] | None, env: dict[str, str] | None
) -> Settings:
    """Settings.from_args: the option table (the class's fields) made into a parser, apart
    from the table so that the table reads as one."""
    env = dict(os.environ if env is None else env)
    parser = _Parser(
        prog="python3 server.py",
        description="A chat gateway: the line protocol (telnet, client.py), the web "
        "page and IRC over one chat. Every option can also be set by its environment "
        "variable (the command line wins); README's 'Options and limits' says what each "
        "one costs.",
    )
    groups = {g: parser.add_argument_group(g) for g in GROUPS}
    for f in fields(cls):
        opt: _Opt = f.metadata["opt"]
        shown = opt.default_text if opt.default_text is not None else f.default
        groups[opt.group].add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=opt.metavar,
            default=None,
            help=f"{opt.help} [env {env_var(f.name)}, default {shown}]".replace("%", "%%"),
        )
    ns = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in fields(cls):
        opt = f.metadata["opt"]
        given, var = getattr(ns, f.name), env_var(f.name)
        text = given if given is not None else env.get(var)
        if text is None:
            continue
        try:
            values[f.name] = opt.parse(text)
        except ValueError as exc:
            shown = text if text.strip() and text.isprintable() and " " not in text else repr(text)
            where = (
                f"--{f.name.replace('_', '-')} {shown}" if given is not None else f"{var}={shown}"
            )
            parser.error(f"{where}: {exc}")
    try:
        settings = cls(**values)
        settings.validate()
    except SettingsError as exc:
        parser.error(str(exc))
    return settings


def listeners(s: Settings) -> list[tuple[str, str, int]]:
    """The listeners on --host, each (what it serves, its option, its port; 0: off)."""
    return [
        ("chat", "--port", s.port),
        ("web", "--web-port", s.web_port),
        ("IRC", "--irc-port", s.irc_port),
        ("IRC over TLS", "--irc-tls-port", s.irc_tls_port),
        ("chat over TLS", "--tls-port", s.tls_port),
    ]


def check_combinations(s: Settings) -> None:
    """Settings.validate: refuse combinations no single value shows (SettingsError)."""
    if s.tls_port and not (s.tls_cert and s.tls_key):
        raise SettingsError("--tls-port needs --tls-cert and --tls-key")
    if s.irc_tls_port and not (s.tls_cert and s.tls_key):
        raise SettingsError("--irc-tls-port needs --tls-cert and --tls-key")
    if s.redis_url is not None and s.data and s.data not in DATA_OFF:
        raise SettingsError(
            "--data is the embedded store's file: with --redis-url, Redis keeps the data "
            "(leave out --data, or --redis-url for the embedded store)"
        )
    if s.workers > 1 and s.redis_url is None:
        raise SettingsError(
            f"--workers {s.workers} needs --redis-url: the embedded store lives in one "
            "process and cannot be shared by workers (start redis-server and give "
            "--redis-url, or use --workers 1)"
        )
    last_metrics = s.metrics_port + max(s.workers, 1) - 1
    if s.metrics_port and last_metrics > 65535:
        raise SettingsError(
            f"--metrics-port {s.metrics_port}: each worker serves its metrics on its "
            f"own port from this one up, and {s.workers} workers go past 65535; give "
            f"at most {65536 - s.workers}"
        )
    ports = [(option, port) for _, option, port in listeners(s)]
    if s.metrics_host == s.host and s.metrics_port:
        ports.append(("--metrics-port", s.metrics_port))
        ports += [  # worker i's
            (f"--metrics-port + {i} (worker {i + 1}'s)", s.metrics_port + i)
            for i in range(1, s.workers)
        ]
    seen: dict[int, str] = {}
    for name, port in ports:
        if port and port in seen:
            raise SettingsError(f"{seen[port]} and {name} are both {port}: give each its own")
        seen[port] = name


def data_dir(env: dict[str, str] | None = None) -> Path:
    """Where embedded gateways keep their data: `$XDG_DATA_HOME/chat-gateway`, by default
    `~/.local/share/chat-gateway`."""
    env = dict(os.environ if env is None else env)
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chat-gateway"


def default_data_file(host: str, port: int, env: dict[str, str] | None = None) -> Path:
    """One file per listening address, so two embedded gateways on one machine are two
    separate chats: `<data dir>/127.0.0.1-8000.chat`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host) or "_"
    return data_dir(env) / f"{safe}-{port}.chat"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`error: ...`) and status 2, without the usage
    block of some sixty options."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see python3 server.py --help)\n")
        raise SystemExit(2)

"""The operator's tool: `python3 -m gateway.admin [--redis-url URL] COMMAND ...`.

It works on the same Redis as the gateways, a single Redis or a Redis Cluster, or, without
a Redis URL, on a running gateway's embedded store (found by the gateway's data file, as
`python3 server.py` without --redis-url keeps one: `--port` or `--data` say which), through
the store contract only, and writes every action it takes to the audit trail, as the
gateways do.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path
from typing import NoReturn

from gateway.core.addresses import address_group
from gateway.core.audit import format_fields, record
from gateway.core.names import name_error, name_key, name_skeleton, password_error
from gateway.core.passwords import hash_password
from gateway.core.timefmt import MAX_BAN, ban_end, parse_duration
from gateway.policy import store_policy
from gateway.settings import DATA_OFF, Settings, check_redis_url, default_data_file
from store.contract import StoreUnavailable, StoreUnusable
from store.redis import RedisStore, open_store

__all__ = ["main"]

#: Accounts `users` lists by default (the most recently seen): one reply stays readable.
USERS_LISTED = 100
#: Audit entries `audit` shows by default (the newest of those since --since).
AUDIT_SHOWN = 1000


class AdminError(Exception):
    """A one-line error for the operator; exit status 1."""


class UsageError(AdminError):
    """An argument that cannot be read (a time, an address); exit status 2, as argparse's."""


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms // 1000)) if ms else "never"


def _since(text: str) -> int:
    """`--since`: a duration back from now (`2h`, `7d`), unix ms, or YYYY-MM-DD[THH:MM]."""
    seconds = parse_duration(text)
    if seconds is not None:
        return int(time.time() * 1000) - seconds * 1000
    if text.isdigit():
        return int(text)
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return int(time.mktime(time.strptime(text, fmt)) * 1000)
        except ValueError:
            continue
    raise UsageError(f"bad --since {text!r}: use 2h, 7d, unix ms or YYYY-MM-DD[THH:MM]")


def _address(text: str) -> str:
    """An address as holds name it: IPv4 itself, IPv6 as its /64 (an address in it or the
    /64 as `admin bans` prints it)."""
    try:
        if "/" in text:
            net = ipaddress.ip_network(text.strip(), strict=False)
            if net.version == 6 and net.prefixlen == 64:
                return str(net)
            raise ValueError("a network must be an IPv6 /64")
        return address_group(str(ipaddress.ip_address(text.strip())))
    except ValueError:
        raise UsageError(
            f"bad address {text!r}: give an IPv4 or IPv6 address, or an IPv6 /64 as "
            "`bans` prints it"
        ) from None


def _new_password() -> str:
    """From CHAT_NEW_PASSWORD, else the first line of stdin when it is not a terminal,
    else asked twice without echo."""
    password = os.environ.get("CHAT_NEW_PASSWORD")
    if password is None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    if password is None:
        password = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != password:
            raise AdminError("the two passwords differ; nothing changed")
    err = password_error(password)
    if err:
        raise AdminError(f"bad password: {err}")
    return password


class Admin:
    def __init__(self, store: RedisStore, settings: Settings, out: list[str]) -> None:
        self.store = store
        self.settings = settings
        self.out = out
        self.actor = f"admin:{getpass.getuser()}"
        self.via = f"tool:{socket.gethostname()}"

    async def _audit(self, action: str, target: str, **detail: str) -> None:
        await record(
            self.store, self.settings.audit_keep, action, self.actor, target, self.via, **detail
        )

    async def _account(self, nick: str) -> tuple[str, str]:
        err = name_error(nick)
        if err:
            raise AdminError(f"bad nickname {nick!r}: {err}")
        key = name_key(nick)
        account = await self.store.get_account(key)
        if account is None:
            raise AdminError(f"no such user {nick}")
        return key, account.name

    async def users(self, limit: int) -> int:
        """The accounts, most recently seen first; how many were listed."""
        found = await self.store.users(limit)
        for u in found:
            flags = []
            if u.moderator:
                flags.append("moderator")
            if u.banned_until_ms:
                flags.append(f"banned until {ban_end(u.banned_until_ms)}")
            extra = f"  ({', '.join(flags)})" if flags else ""
            self.out.append(f"{u.name}  last seen {_when(u.seen_ms)}{extra}")
        return len(found)

    async def reset_password(self, nick: str) -> None:
        key, name = await self._account(nick)
        hashed = hash_password(_new_password(), self.settings.scrypt_log_n)
        await self.store.set_password(key, hashed)
        await self._audit("reset_password", name)
        self.out.append(f"password of {name} reset; every resume token revoked")

    async def delete_user(self, nick: str) -> None:
        key, name = await self._account(nick)
        await self.store.kick(key)  # live sessions end with the account
        await self.store.delete_user(key, name_skeleton(name))
        await self._audit("delete_user", name)
        self.out.append(f"deleted {name}: account, private history and memberships")

    async def bans(self) -> None:
        """The bans, then every address held back from new accounts, with why."""
        for b in await self.store.bans():
            self.out.append(f"{b.name}  banned until {ban_end(b.until_ms)}")
        for h in await self.store.holds():
            why = ", ".join(f"{b.name} banned after complaints" for b in h.bans)
            self.out.append(
                f"{h.address}  no new accounts until {ban_end(h.until_ms)}"
                f" ({why or 'reason not recorded'})"
            )

    async def ban(self, nick: str, duration: int) -> None:
        key, _ = await self._account(nick)
        placed = await self.store.ban(key, duration)
        if placed is None:
            raise AdminError(f"no such user {nick}")
        await self._audit("ban", placed.name, until_ms=str(placed.until_ms), seconds=str(duration))
        self.out.append(f"{placed.name} banned until {ban_end(placed.until_ms)}")

    async def unban(self, nick: str) -> None:
        """Lift the ban and the address holds it made (said, so the operator knows)."""
        key, name = await self._account(nick)
        held = [h.address for h in await self.store.holds() if any(b.key == key for b in h.bans)]
        if not await self.store.unban(key):
            raise AdminError(f"{name} is not banned")
        await self._audit("unban", name)
        self.out.append(f"{name} is no longer banned")
        free = {h.address for h in await self.store.holds()}
        for address in held:
            if address not in free:
                self.out.append(f"{address} may register new accounts again")

    async def unhold(self, text: str) -> None:
        """Let one address register again, whatever ban holds it."""
        address = _address(text)
        if not await self.store.lift_hold(address):
            raise AdminError(f"{address} is not held")
        await self._audit("unhold", address)
        self.out.append(f"{address} may register new accounts again")

    async def complaints(self, nick: str | None, since_ms: int) -> None:
        if nick is not None:
            key, name = await self._account(nick)
            found = await self.store.complaints_about(key)
            for by, ms in found:
                self.out.append(f"{name}  complaint by {by} at {_when(ms)}")
            if not found:
                self.out.append(f"no pending complaints about {name}")
            return
        # all users: the complaints in the audit trail (pending ones live per user)
        before = len(self.out)
        for e in await self.store.audit_log(since_ms, AUDIT_SHOWN):
            if e.fields.get("action") == "complaint":
                f = e.fields
                count = f.get("count", "")
                self.out.append(
                    f"{f.get('target')}  complaint by {f.get('by')} at {_when(e.ms)} ({count})"
                )
        if len(self.out) == before:
            self.out.append("no complaints in that time")

    async def moderator(self, nick: str, on: bool) -> None:
        key, name = await self._account(nick)
        if await self.store.is_moderator(key) == on:  # said as it is; nothing to audit
            self.out.append(f"{name} is {'already' if on else 'not'} a moderator")
            return
        await self.store.set_moderator(key, on)
        await self._audit("mod" if on else "unmod", name)
        self.out.append(f"{name} is {'now' if on else 'no longer'} a moderator")

    async def kick(self, nick: str) -> None:
        key, name = await self._account(nick)
        await self.store.kick(key)
        await self._audit("kick", name)
        self.out.append(f"{name}: every session is being disconnected")

    async def audit(self, since_ms: int, limit: int) -> None:
        for e in await self.store.audit_log(since_ms, limit):
            self.out.append(f"{_when(e.ms)}  {format_fields(e.fields)}")
        if not self.out:
            self.out.append("no audit entries in that time")


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"admin: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more")
    return value


def _url(text: str) -> str:
    try:
        return check_redis_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text}: {exc}") from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python3 -m gateway.admin",
        description=__doc__,
        epilog="Exit status: 0 done, 1 refused (no such user, ...), 2 a usage error or no "
        "Redis. It reads the gateways' CHAT_* variables (ban duration, audit size, ...).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--redis-url",
        type=_url,
        default=os.environ.get("REDIS_URL"),
        metavar="URL",
        help="the gateways' Redis: redis://[user:password@]host:port/db, rediss:// for TLS, "
        "or Redis Cluster seeds redis://h1:p1,h2:p2 (env REDIS_URL, checked the same way)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="without a Redis URL: the embedded gateway on this chat port (default: "
        "CHAT_PORT, else 8000)",
    )
    p.add_argument(
        "--host",
        default=None,
        help="without a Redis URL: the embedded gateway's --host (default: CHAT_HOST, else "
        "the only gateway running on that port)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help="without a Redis URL: the embedded gateway keeping its data in FILE (as its "
        "--data; env CHAT_DATA)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    users = sub.add_parser("users", help="accounts, most recently seen first")
    users.add_argument(
        "--limit",
        type=_limit,
        default=USERS_LISTED,
        help=f"at most this many (default {USERS_LISTED})",
    )
    for name, what in (
        ("reset-password", "set a new password (CHAT_NEW_PASSWORD, stdin, or asked)"),
        ("delete-user", "delete the account, its private history and memberships"),
        ("unban", "lift a ban and the address holds it made"),
        ("mod", "make a moderator"),
        ("unmod", "no longer a moderator"),
        ("kick", "disconnect every session of the user on every gateway"),
    ):
        sub.add_parser(name, help=what).add_argument("nick")
    ban = sub.add_parser("ban", help="ban at once (default: the ban duration)")
    ban.add_argument("nick")
    ban.add_argument("time", nargs="?", help="90s, 30m, 2h, 7d")
    sub.add_parser("bans", help="users banned now, and the addresses held back from new accounts")
    sub.add_parser(
        "unhold", help="let an address (as `bans` lists it) register new accounts again"
    ).add_argument("address")
    complaints = sub.add_parser("complaints", help="pending complaints about NICK, or all")
    complaints.add_argument("nick", nargs="?")
    complaints.add_argument("--since", default="1d")
    audit = sub.add_parser("audit", help="the audit trail, oldest first")
    audit.add_argument("--since", default="1d", help="2h, 7d, unix ms, YYYY-MM-DD[THH:MM]")
    audit.add_argument(
        "--limit",
        type=_limit,
        default=AUDIT_SHOWN,
        help=f"the newest this many (default {AUDIT_SHOWN})",
    )
    return p


async def _run(ns: argparse.Namespace, settings: Settings, out: list[str]) -> None:
    store = await open_store(ns.redis_url, store_policy(settings, f"admin-{os.getpid()}"))
    admin = Admin(store, settings, out)
    try:
        c = ns.command
        if c == "users":
            shown = await admin.users(ns.limit)
            # on stderr, so the list stays a list: which store was read, and that an empty
            # one is empty (a wrong --redis-url or --port otherwise prints nothing at all)
            more = " (the most recently seen; --limit for more)" if shown == ns.limit else ""
            where = getattr(ns, "store_label", None) or _redacted(ns.redis_url)
            print(
                f"admin: {shown} user{'' if shown == 1 else 's'}{more} in {where}", file=sys.stderr
            )
        elif c == "reset-password":
            await admin.reset_password(ns.nick)
        elif c == "delete-user":
            await admin.delete_user(ns.nick)
        elif c == "bans":
            await admin.bans()
        elif c == "ban":
            seconds = parse_duration(ns.time) if ns.time else settings.ban_duration
            if seconds is None:
                raise UsageError(
                    f"bad time {ns.time!r}: use 90s, 30m, 2h or 7d, at most {MAX_BAN // 86400}d"
                )
            await admin.ban(ns.nick, seconds)
        elif c == "unban":
            await admin.unban(ns.nick)
        elif c == "unhold":
            await admin.unhold(ns.address)
        elif c == "complaints":
            await admin.complaints(ns.nick, _since(ns.since))
        elif c in ("mod", "unmod"):
            await admin.moderator(ns.nick, c == "mod")
        elif c == "kick":
            await admin.kick(ns.nick)
        elif c == "audit":
            await admin.audit(_since(ns.since), ns.limit)
    finally:
        await store.close()


def _redacted(url: str) -> str:
    """A Redis URL without its password (an embedded store's is a secret of its gateway)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


class _NoEmbedded(Exception):
    """No running embedded gateway to act on; the text is the one line to print."""


def _default_file(host: str | None, port: int, settings: Settings) -> Path:
    """The data file of the embedded gateway on `port`: the one --host names, else the
    CHAT_HOST one, else the only one running on that port whatever its host (a gateway
    started with `--host 0.0.0.0` is found by `--port` alone)."""
    if host is not None or "CHAT_HOST" in os.environ:
        return default_data_file(host if host is not None else settings.host, port)
    from store.embedded import admin_file

    mine = default_data_file(settings.host, port)
    running = sorted(mine.parent.glob(f"*-{port}.chat.admin")) if mine.parent.is_dir() else []
    if admin_file(mine) in running or len(running) != 1:
        return mine
    return running[0].with_name(running[0].name.removesuffix(".admin"))


def _embedded_url(ns: argparse.Namespace, settings: Settings) -> str:
    """The URL of a running embedded gateway's store (see store/embedded.py)."""
    from store.embedded import admin_file, admin_url  # fakeredis is heavy: only when asked

    choice = ns.data if ns.data is not None else settings.data  # --data, else CHAT_DATA
    data: Path | None
    if choice:
        data = None if choice.strip().lower() in DATA_OFF else Path(choice).expanduser()
    else:
        port = ns.port if ns.port is not None else settings.port
        data = _default_file(ns.host, port, settings) if port else None
    if data is None:
        raise _NoEmbedded(
            "admin: no --redis-url or REDIS_URL, and the gateway keeps no data file "
            "(--data none): its embedded store cannot be reached"
        )
    url = admin_url(data)
    ns.store_label = f"the embedded store of {data}"
    if url is None:
        raise _NoEmbedded(
            f"admin: no --redis-url or REDIS_URL, and no gateway with an embedded store runs "
            f"on {data} (looked for {admin_file(data)}): start it, give its --port "
            "(and --host) or --data, "
            "or give the gateways' Redis with --redis-url"
        )
    return url


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    settings = Settings.from_args([])  # the gateways' CHAT_* environment, if set
    if not ns.redis_url:
        try:
            ns.redis_url = _embedded_url(ns, settings)
        except _NoEmbedded as exc:
            print(exc, file=sys.stderr)
            return 2
    out: list[str] = []
    try:
        asyncio.run(_run(ns, settings, out))
    except UsageError as exc:
        print(f"admin: {exc} (see {parser.prog} --help)", file=sys.stderr)
        return 2
    except AdminError as exc:
        print("\n".join(out), end="\n" if out else "")
        print(f"admin: {exc}", file=sys.stderr)
        return 1
    except StoreUnusable as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"admin: cannot reach Redis at {_redacted(ns.redis_url)}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(out), end="\n" if out else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())

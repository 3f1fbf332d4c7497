"""Terminal chat client: `python3 client.py [--server HOST:PORT ...] [--nick NICK] [--tls]`.

Interactive on a terminal: it connects first, then asks the nickname (unless --nick) and
the password (hidden, unless CHAT_PASSWORD) when the server asks for them. With stdin not
a terminal (or --plain) it reads lines from stdin and prints server lines to stdout, for
scripts (CHAT_PASSWORD and --nick needed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import sys

from chatclient.lines import parse_servers
from chatclient.link import ChatLink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat client")
    parser.add_argument(
        "--server",
        action="append",
        help="HOST:PORT, repeatable or comma-separated (env CHAT_SERVERS); "
        "tried in turn, default 127.0.0.1:8000",
    )
    parser.add_argument(
        "--nick",
        default=os.environ.get("CHAT_NICK"),
        help="your nickname (env CHAT_NICK); asked on the prompt when not given",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no terminal UI: stdin lines to the server, server lines to stdout; needs "
        "--nick and the password in CHAT_PASSWORD (automatic when stdin is not a terminal)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS; the server's certificate and host name are verified",
    )
    parser.add_argument(
        "--ca", metavar="FILE", help="with --tls: trust this CA file (a private CA) instead"
    )
    args = parser.parse_args(argv)
    tls = None
    if args.tls or args.ca:
        try:
            tls = ssl.create_default_context(cafile=args.ca)
        except (OSError, ssl.SSLError) as exc:
            parser.error(f"cannot read CA file {args.ca}: {exc}")
    try:
        servers = parse_servers(args.server, os.environ.get("CHAT_SERVERS"))
    except ValueError as exc:
        parser.error(str(exc))
    plain = args.plain or not sys.stdin.isatty()
    nick = args.nick or None
    password = os.environ.get("CHAT_PASSWORD") or None
    if plain and (not nick or not password):
        parser.error("plain mode needs --nick (or CHAT_NICK) and CHAT_PASSWORD")
    # Interactive: connect first; the nickname and password are asked on the prompt when
    # a server asks for them (so nobody types a password for a server that is not there).
    link = ChatLink(servers, nick, password, show=lambda _: None, status=lambda _: None, tls=tls)
    with contextlib.suppress(KeyboardInterrupt):
        if plain:
            from chatclient.plain import run_plain

            return asyncio.run(run_plain(link))
        from chatclient.tui import run_tui

        return asyncio.run(run_tui(link))
    return 0


if __name__ == "__main__":
    sys.exit(main())

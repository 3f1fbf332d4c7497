"""irctest's account registration (`registerUser`) for this server, as a pytest plugin
for ../shared/irc/run_irctest.sh (`-p irctest_accounts`).

irctest's controllers register accounts the way each server does (NickServ REGISTER
for Ergo or Anope); its external-server controller cannot know how, so the tests that
need an account skip. On this server an account is registered by logging in with a
nickname nobody has and a password (docs/IRC.md, "Connecting"): this plugin does that,
on a connection of its own, and waits for the welcome. Nothing else of irctest changes.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

__all__ = ["pytest_configure", "register"]


def register(host: str, port: int, nick: str, password: str, timeout: float = 10) -> None:
    """Log in once as `nick` with `password` (which registers it), then quit."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"PASS {password}\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
        buf, end = b"", time.monotonic() + timeout
        while time.monotonic() < end:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            for raw in buf.split(b"\r\n"):
                words = raw.split(b" ")
                if len(words) > 1 and words[1] == b"001":
                    s.sendall(b"QUIT :registered\r\n")
                    return
                refused = len(words) > 1 and words[1] in (b"432", b"433", b"464")
                if refused or raw.startswith(b"ERROR"):
                    raise RuntimeError(f"could not register {nick}: {raw!r}")
        raise RuntimeError(f"could not register {nick}: no welcome")


def pytest_configure(config: Any) -> None:
    from irctest.controllers import external_server

    def register_user(self: Any, case: Any, username: str, password: str | None = None) -> None:
        host = os.environ["IRCTEST_SERVER_HOSTNAME"]
        port = int(os.environ["IRCTEST_SERVER_PORT"])
        register(host, port, username, password or "irctest-" + username)

    external_server.ExternalServerController.registerUser = register_user

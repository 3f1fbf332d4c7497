"""The embedded store: a fakeredis server (with Lua) on a loopback port in this process.

The gateway then runs exactly the code it runs against real Redis, pub/sub included.
Nothing is kept after exit.
"""

from __future__ import annotations

import threading

from fakeredis import TcpFakeServer

__all__ = ["start_embedded"]


def start_embedded() -> tuple[str, TcpFakeServer]:
    server = TcpFakeServer(("127.0.0.1", 0), server_version=(7, 0))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="embedded-redis", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return f"redis://{host!s}:{port}/0", server

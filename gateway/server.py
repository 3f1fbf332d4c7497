"""The gateway process: wires store, fan-out, core and doors; starts; stops cleanly.

On SIGTERM/SIGINT the gateway stops accepting, tells every connection
`* server shutting down`, writes every user's shown position to Redis and exits 0. A stop
signal is honoured at any point, including while it still waits for Redis at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid
import weakref
from collections.abc import Callable

from gateway.admission import Admission
from gateway.core.session import Core
from gateway.doors.line.connection import LineConnection, LineDoor, WriteCoalescer
from gateway.fanout import Fanout
from gateway.metrics import METRICS, serve_metrics
from gateway.settings import Settings
from store.contract import StoreUnavailable
from store.redis_store import RedisStore

__all__ = ["GatewayServer", "StartupError", "run"]

log = logging.getLogger("chat.server")

#: Pending TCP connections the kernel queues for accept (a reconnect storm arrives at once).
LISTEN_BACKLOG = 4096
#: Backoff while Redis is unreachable at start: first delay and cap, in seconds.
START_RETRY_FIRST, START_RETRY_MAX = 0.2, 5.0
#: Seconds the shutdown leaves for the kernel to send the last lines before closing.
SHUTDOWN_GRACE = 0.05


class StartupError(Exception):
    """Start-up failed for a reason an operator can act on; its text says which."""


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._embedded = None
        url = settings.redis_url
        if url is None:
            from store.embedded import start_embedded  # fakeredis is heavy: only when asked

            url, self._embedded = start_embedded()
        self.store = RedisStore(
            url,
            message_ttl=settings.message_ttl,
            ban_threshold=settings.ban_threshold,
            ban_duration=settings.ban_duration,
            rate=settings.rate,
            burst=settings.burst,
            gateway_id=self.gateway_id,
        )
        self.coalescer = WriteCoalescer()
        self.fanout = Fanout(self.store, settings.cursor_flush, self.coalescer.flush_now)
        self.core = Core(self.store, self.fanout, settings, self.gateway_id)
        self.admission = Admission(
            settings.max_per_ip,
            settings.max_pending_logins,
            settings.login_timeout,
            settings.max_pending_per_ip,
        )
        self.line_door = LineDoor(
            self.core,
            self.admission,
            self.coalescer,
            settings.max_line,
            settings.max_output,
            (settings.keepalive_idle, settings.keepalive_interval, settings.keepalive_count),
        )
        #: Open connections, for the shutdown notice; a closed one drops out by itself.
        self.connections: weakref.WeakSet[LineConnection] = weakref.WeakSet()
        self._server: asyncio.Server | None = None
        self._metrics: asyncio.Server | None = None

    async def start(self) -> None:
        delay = START_RETRY_FIRST
        while True:
            try:
                await self.store.start()
                break
            except StoreUnavailable as exc:
                log.warning("event=redis_unavailable error=%s retry_in=%.1f", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX)
        await self.fanout.start()
        self._server = await self._listen(self._line_connection, self.settings.port, "chat")
        METRICS.tasks.set_function(lambda: len(asyncio.all_tasks()))
        METRICS.channels.set_function(lambda: self.fanout.link.count)
        METRICS.local_users.set_function(lambda: len(self.fanout.users))
        if self.settings.metrics_port:
            try:
                self._metrics = await serve_metrics(
                    self.settings.metrics_host, self.settings.metrics_port, self._healthy
                )
            except OSError as exc:
                port = self.settings.metrics_port
                raise StartupError(
                    self._bind_error("metrics", port, exc, self.settings.metrics_host)
                ) from None
        log.info(
            "event=listening host=%s port=%d gateway=%s store=%s",
            self.settings.host,
            self.port,
            self.gateway_id,
            "embedded" if self._embedded else self.settings.redis_url,
        )

    def _healthy(self) -> bool:
        return self.fanout.redis_ok and self.fanout.presence.ok

    def _line_connection(self) -> LineConnection:
        conn = LineConnection(self.line_door)
        self.connections.add(conn)
        return conn

    async def _listen(
        self, factory: Callable[[], asyncio.BaseProtocol], port: int, what: str
    ) -> asyncio.Server:
        try:
            return await asyncio.get_running_loop().create_server(
                factory, self.settings.host, port, reuse_address=True, backlog=LISTEN_BACKLOG
            )
        except OSError as exc:
            raise StartupError(self._bind_error(what, port, exc)) from None

    def _bind_error(self, what: str, port: int, exc: OSError, host: str | None = None) -> str:
        return (
            f"cannot listen for {what} on {host or self.settings.host}:{port}: "
            f"{exc.strerror or exc}"
            " (is another gateway running there? choose another port)"
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        live = [c for c in self.connections if not c.closing]
        log.info("event=shutdown connections=%d", len(live))
        if self._server is not None:
            self._server.close()
        if self._metrics is not None:
            self._metrics.close()
        for conn in live:
            if conn.session is not None:
                conn.session.shutting_down()
            conn.flush()
        await self.fanout.stop()
        for conn in live:
            conn.close()
        await asyncio.sleep(SHUTDOWN_GRACE)
        await self.store.close()
        if self._embedded is not None:
            self._embedded.shutdown()


async def run(settings: Settings) -> int:
    """Run a gateway until SIGINT/SIGTERM; the process exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = GatewayServer(settings)
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while still waiting for Redis
        starting.cancel()
        log.info("event=stopped_before_start")
        await server.store.close()
        return 0
    stopping.cancel()
    try:
        starting.result()
    except StartupError as exc:
        log.error("event=startup_failed error=%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        await server.store.close()
        return 1
    await stop.wait()
    await server.shutdown()
    return 0

"""Listening, admission limits, the login timeout, and a clean shutdown.

On SIGTERM/SIGINT the gateway stops accepting, tells every connection
`* server shutting down`, writes every user's shown position to Redis and exits 0.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import uuid
from collections import Counter

from gateway.connection import Connection, WriteCoalescer
from gateway.hub import Hub
from gateway.metrics import METRICS, serve_metrics
from gateway.session import Session, State
from gateway.settings import Settings
from store.base import StoreUnavailable
from store.redis_store import RedisStore

__all__ = ["GatewayServer", "run"]

log = logging.getLogger("chat.server")


class GatewayServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.coalescer = WriteCoalescer()
        self.connections: set[Connection] = set()
        self.per_address: Counter[str] = Counter()
        self.pending_logins = 0
        self._numbers = itertools.count(1)
        self._embedded = None
        url = settings.redis_url
        if url is None:
            from store.embedded import start_embedded  # fakeredis is heavy: only when asked

            url, self._embedded = start_embedded()
        self.store = RedisStore(
            url,
            message_ttl=settings.message_ttl,
            history=settings.history,
            ban_threshold=settings.ban_threshold,
            ban_duration=settings.ban_duration,
            rate=settings.rate,
            burst=settings.burst,
            gateway_id=self.gateway_id,
        )
        self.hub = Hub(self.store, settings.cursor_flush, self.coalescer.flush_now)
        self._server: asyncio.Server | None = None
        self._metrics: asyncio.Server | None = None

    async def start(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.store.load_scripts()
                break
            except StoreUnavailable as exc:
                log.warning("event=redis_unavailable error=%s retry_in=%.1f", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        await self.hub.start()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Connection(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            backlog=4096,
        )
        METRICS.tasks.set_function(lambda: len(asyncio.all_tasks()))
        METRICS.channels.set_function(lambda: len(self.hub.link.channels))
        METRICS.local_users.set_function(lambda: len(self.hub.users))
        if self.settings.metrics_port:
            self._metrics = await serve_metrics(
                self.settings.host, self.settings.metrics_port, lambda: self.hub.redis_ok
            )
        log.info(
            "event=listening host=%s port=%d gateway=%s store=%s",
            self.settings.host,
            self.settings.port,
            self.gateway_id,
            "embedded" if self._embedded else self.settings.redis_url,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    # -- admission ---------------------------------------------------------------------------

    def admit(self, conn: Connection) -> None:
        s = self.settings
        self.connections.add(conn)
        self.per_address[conn.address] += 1
        METRICS.connections.inc()
        if s.max_per_ip and self.per_address[conn.address] > s.max_per_ip:
            log.warning("event=refused reason=per_ip peer=%s", conn.address)
            conn.write(b"! too many connections from your address\r\n")
            conn.close()
            return
        if s.max_pending_logins and self.pending_logins >= s.max_pending_logins:
            log.warning("event=refused reason=pending_logins peer=%s", conn.address)
            conn.write(b"! server busy: too many logins in progress, try again shortly\r\n")
            conn.close()
            return
        self.pending_logins += 1
        session = conn.session = Session(conn, self, next(self._numbers))
        session.login_timer = asyncio.get_running_loop().call_later(
            s.login_timeout, self._login_deadline, session
        )
        log.info("event=connect peer=%s session=%s", conn.address, session.session_id)
        session.start()

    def _login_deadline(self, session: Session) -> None:
        if session.state in (State.NICK, State.PASSWORD, State.LOADING):
            session.error(f"login timed out after {self.settings.login_timeout:g} s")
            session.conn.close()

    def logged_in(self, session: Session) -> None:
        if session.login_timer is not None:
            session.login_timer.cancel()
            session.login_timer = None
        if session.counted_pending:
            session.counted_pending = False
            self.pending_logins -= 1

    def forget(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        METRICS.connections.dec()
        self.per_address[conn.address] -= 1
        if self.per_address[conn.address] <= 0:
            del self.per_address[conn.address]
        if conn.session is not None:
            self.logged_in(conn.session)

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        log.info("event=shutdown connections=%d", len(self.connections))
        if self._server is not None:
            self._server.close()
        if self._metrics is not None:
            self._metrics.close()
        for conn in list(self.connections):
            if conn.session is not None:
                conn.session.shutdown_notice()
            conn.flush()
        await self.hub.stop()
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0.05)
        await self.store.close()
        if self._embedded is not None:
            self._embedded.shutdown()


async def run(settings: Settings) -> None:
    server = GatewayServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.shutdown()

"""The gateway process: wires store, fan-out, core and doors; starts; stops cleanly.

On SIGTERM/SIGINT the gateway stops accepting, tells every connection
`* server shutting down`, writes every user's shown position to Redis and exits 0. A stop
signal is honoured at any point, including while it still waits for Redis at start.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import resource
import signal
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.core.session import Core
from gateway.doors.line.codec import LineCodec
from gateway.fanout import Fanout
from gateway.kit.admission import Admission
from gateway.kit.codec import Codec
from gateway.kit.render_once import RenderOnce
from gateway.kit.shell import Coalescer, Connection, Door, TlsConnection, set_keepalive
from gateway.metrics import METRICS, serve_metrics, watch_loop_lag
from gateway.policy import store_policy
from gateway.settings import Settings, listeners
from gateway.workers import Busy, Worker, bind_error, probe
from store.cluster import Seeds
from store.contract import StoreUnavailable, StoreUnusable
from store.redis import RedisStore, open_store
from store.resp import with_ca

if TYPE_CHECKING:
    from store.embedded import Embedded

__all__ = ["GatewayServer", "StartupError", "run"]

log = logging.getLogger("chat.server")

#: Pending TCP connections the kernel queues for accept (a reconnect storm arrives at once).
#: Linux cuts it to net.core.somaxconn (4096 by default): docs/PERFORMANCE.md shows what
#: raising that does in a storm (no dropped handshakes; the others' worst delay 749 -> 199 ms).
LISTEN_BACKLOG = 65535
#: Backoff while Redis is unreachable at start: first delay and cap, in seconds.
START_RETRY_FIRST, START_RETRY_MAX = 0.2, 5.0
#: Seconds the shutdown leaves for the kernel to send the last lines before closing.
SHUTDOWN_GRACE = 0.05
#: Seconds a connection to the web port has to send its request (a file, or the
#: WebSocket upgrade); admission counts it from its accept.
WEB_REQUEST_TIMEOUT = 10.0


class Listener:
    """One port's listening sockets (--listen-queues), opened and closed as one."""

    __slots__ = ("servers",)

    def __init__(self, servers: list[asyncio.Server]) -> None:
        self.servers = servers

    @property
    def sockets(self) -> list[socket.socket]:
        return [sock for server in self.servers for sock in server.sockets]

    def close(self) -> None:
        for server in self.servers:
            server.close()


class StartupError(Exception):
    """Start-up failed for a reason an operator can act on; its text says which."""


class GatewayServer:
    #: Made by `_wire` once `start` opened the store (it is probed before it is built).
    store: RedisStore
    fanout: Fanout
    core: Core
    line_door: Door
    irc_door: Door | None = None  # only with an IRC port
    web_door: Door | None = None  # only with a web port

    def __init__(self, settings: Settings, worker: Worker | None = None) -> None:
        self.settings = settings
        #: Worker k of --workers serves its metrics on --metrics-port + k - 1.
        self.metrics_port = settings.metrics_port + (worker.index if worker else 0)
        if not settings.metrics_port:
            self.metrics_port = 0
        self.gateway_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._embedded: Embedded | None = None
        self.data_file = settings.data_file() if settings.redis_url is None else None
        self._worker = worker
        if worker is None:  # a worker's ports were had by its supervisor
            self._preflight()
        self._static: dict[str, tuple[bytes, str]] = {}
        if settings.web_port:
            from gateway.doors.web.page import static_files  # the doors a gateway serves

            try:  # read before Redis is waited for (or the embedded store starts)
                self._static = static_files()
            except RuntimeError as exc:  # a broken install: one line, at once
                raise StartupError(str(exc)) from None
        url = settings.redis_url
        if url is None:
            from store.embedded import DataFileError, start_embedded  # fakeredis is heavy

            try:
                url, self._embedded = start_embedded(self.data_file)
            except DataFileError as exc:
                if exc.busy and not settings.data:  # the default file: one per host:port
                    hint = (
                        f"is another gateway running on {settings.host}:{settings.port}? "
                        "choose another port with --port (each port keeps its own data)"
                    )
                elif exc.busy:
                    hint = "is another gateway running with it? choose another with --data"
                else:
                    hint = "--data FILE chooses another file, --data none keeps nothing"
                raise StartupError(f"{exc} ({hint})") from None
        #: Where Redis is (the embedded store's loopback URL without --redis-url).
        self.store_url = with_ca(url, settings.redis_ca)
        self.coalescer = Coalescer()
        self.admission = Admission(
            settings.max_per_ip,
            settings.max_pending_logins,
            settings.login_timeout,
            settings.max_pending_per_ip,
            count=self._count_address,
            max_connections=connection_limit(settings.max_connections),
        )
        #: (idle s, interval s, probes) of TCP keepalive; idle 0: off.
        self.keepalive = (
            settings.keepalive_idle,
            settings.keepalive_interval,
            settings.keepalive_count,
        )
        self._irc: Listener | None = None
        self._irc_tls: Listener | None = None
        self._web: Listener | None = None
        self._server: Listener | None = None
        self._tls_server: Listener | None = None
        self._metrics: asyncio.Server | None = None
        self._fanout_started = False
        self._wired = False

    def _wire(self, store: RedisStore) -> None:
        """Build what stands on the store: fan-out, the core, the doors."""
        settings = self.settings
        self.store, self._wired = store, True
        self.fanout = Fanout(
            store,
            settings.cursor_flush,
            self._after_batch,
            chunk=settings.fanout_chunk,
            presence_members=settings.presence_members,
            gateway_id=self.gateway_id,
            account_ttl=settings.account_ttl,
        )
        self.core = Core(store, self.fanout, settings, self.gateway_id)
        line_cache = RenderOnce()
        self.line_door = self._door("line", lambda: LineCodec(settings.max_line, line_cache))
        # the IRC and web doors only when they listen: a line-only gateway (most tests'
        # gateways) starts without importing them
        irc_codec: Callable[[], Codec] | None = None
        if settings.irc_port or settings.irc_tls_port:
            from gateway.doors.irc.codec import IrcCodec, IrcShared

            store_name = "Redis" if self._embedded is None else "its embedded store"
            irc = IrcShared(settings.max_output, store_name)
            irc_codec = lambda: IrcCodec(irc)  # noqa: E731 - one per connection
            self.irc_door = self._door("irc", irc_codec)
        if settings.web_port:
            request_timeout = min(WEB_REQUEST_TIMEOUT, settings.login_timeout)
            self.web_door = self._door("web", self._site(irc_codec), request_timeout)

    def _site(self, irc_codec: Callable[[], Codec] | None) -> Callable[[], Codec]:
        """The web door's codec: the page, its files, the JSON WebSocket and (with an IRC
        door) IRC over WebSocket."""
        from gateway.doors.web.codec import JsonCodec
        from gateway.doors.web.page import (
            JSON_ROUTE,
            PageCodec,
            Route,
            Site,
            local_names,
            max_message,
        )

        settings = self.settings
        json_once = RenderOnce()  # the burst's JSON, framed plain and compressed from it
        max_line = settings.max_line
        routes = {
            JSON_ROUTE: Route(
                lambda: JsonCodec(json_once, max_line),
                cache=RenderOnce(),
                deflate_cache=RenderOnce(),
            )
        }
        if irc_codec is not None:  # IRC over WebSocket too
            routes["text.ircv3.net"] = Route(irc_codec, lines=True)
            routes["binary.ircv3.net"] = Route(irc_codec, lines=True, binary=True)
        site = Site(
            self._static,
            routes,
            max_message(settings.max_line),
            tuple(o.strip() for o in settings.web_origins.split(",") if o.strip()),
            local_names(settings.host),
        )
        return lambda: PageCodec(site)

    def _door(self, name: str, codec: Callable[[], Codec], upgrade_timeout: float = 0.0) -> Door:
        s = self.settings
        return Door(
            name,
            self.core,
            self.admission,
            self.coalescer,
            s.max_output,
            codec,
            keepalive_idle=s.keepalive_idle,
            upgrade_timeout=upgrade_timeout,
        )

    def _after_batch(self) -> None:
        """Fan-out delivered a batch: send it now, not at the next loop turn."""
        self.coalescer.flush_now()

    async def start(self) -> None:
        tls = self._tls_context()  # a bad file is said before waiting for Redis
        web_tls = tls if self.settings.tls_port else None
        delay = START_RETRY_FIRST
        while True:
            try:
                store = await open_store(
                    self.store_url, store_policy(self.settings, self.gateway_id)
                )
                break
            except StoreUnusable as exc:  # waiting will not help: say what to change
                raise StartupError(str(exc)) from None
            except StoreUnavailable as exc:
                if delay == START_RETRY_FIRST:  # the first time: what to do about it
                    log.warning(
                        "event=redis_unavailable error=%s retry_in=%.1f hint=%r",
                        exc,
                        delay,
                        _redis_hint(self.settings.redis_url),
                    )
                else:
                    log.warning("event=redis_unavailable error=%s retry_in=%.1f", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX)
        self._wire(store)
        await self.fanout.start()
        self._fanout_started = True
        s = self.settings
        self._server = await self._listen(self.line_door, s.port, "chat", "--port")
        if tls is not None and s.tls_port:
            self._tls_server = await self._listen(
                self.line_door, s.tls_port, "chat over TLS", "--tls-port", tls
            )
        if self.irc_door is not None and s.irc_port:
            self._irc = await self._listen(self.irc_door, s.irc_port, "IRC", "--irc-port")
        if self.irc_door is not None and tls is not None and s.irc_tls_port:
            self._irc_tls = await self._listen(
                self.irc_door, s.irc_tls_port, "IRC over TLS", "--irc-tls-port", tls
            )
        if self.web_door is not None:
            self._web = await self._listen(self.web_door, s.web_port, "web", "--web-port", web_tls)
        METRICS.tasks.set_function(lambda: len(asyncio.all_tasks()))
        METRICS.channels.set_function(lambda: self.fanout.link.count)
        METRICS.local_users.set_function(lambda: len(self.fanout.users))
        METRICS.unprotected_shards = self.store.unprotected_shards
        if self.metrics_port:
            try:
                self._metrics = await serve_metrics(
                    self.settings.metrics_host,
                    self.metrics_port,
                    self._healthy,
                    {b"/debug/fanout": self.fanout.timing.report},
                )
            except OSError as exc:
                port = self.metrics_port
                raise StartupError(
                    self._bind_error(
                        "metrics", port, exc, "--metrics-port", self.settings.metrics_host
                    )
                ) from None
        log.info(
            "event=listening host=%s port=%d web=%s irc=%s gateway=%s store=%s",
            self.settings.host,
            self.port,
            f"{'https' if web_tls else 'http'}://{self.settings.host}:{self.web_port}/"
            if self._web
            else "off",
            self.irc_port if self._irc else "off",
            self.gateway_id,
            _redacted(self.settings.redis_url)
            if self._embedded is None
            else f"embedded data={self.data_file or 'none'}",
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server TLS context of --tls-cert/--tls-key, or None without a TLS port."""
        s = self.settings
        if not s.tls_port and not s.irc_tls_port:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(s.tls_cert, s.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(
                f"cannot use TLS certificate {s.tls_cert} with key {s.tls_key}: {exc}"
                " (both must be PEM files, the key matching the certificate)"
            ) from None
        return ctx

    def _preflight(self) -> None:
        """Every port tried, and an explicit data file's directory looked at, before the
        embedded store starts or writes anything: a failed start leaves no files behind,
        and names every listener in the way at once, not one failed start at a time."""
        s = self.settings
        wanted = [(s.host, port, what, option, "--host") for what, option, port in listeners(s)]
        wanted.append(
            (s.metrics_host, self.metrics_port, "metrics", "--metrics-port", "--metrics-host")
        )
        busy = []
        for host, port, what, option, host_option in wanted:
            if port:
                try:
                    probe(host, port, what, option, host_option)
                except Busy as exc:
                    busy.append(str(exc))
        if busy:
            raise StartupError("; ".join(busy))
        f = self.data_file
        if s.data and f is not None and not f.parent.is_dir():
            raise StartupError(
                f"cannot use the data file {f}: there is no directory {f.parent} "
                "(create it, or choose another file with --data)"
            )

    async def _count_address(self, address: str, change: int) -> int:
        return await self.store.count_address(address, change, self.fanout.presence.live_gateways)

    def _healthy(self) -> bool:
        return self.fanout.redis_ok and self.fanout.presence.ok

    async def _listen(
        self,
        door: Door,
        port: int,
        what: str,
        option: str,
        tls: ssl.SSLContext | None = None,
    ) -> Listener:
        def factory() -> asyncio.BaseProtocol:
            if tls is not None:  # the kit does TLS itself, after admission (TlsConnection)
                return TlsConnection(door, tls)
            return Connection(door)

        loop = asyncio.get_running_loop()
        queues = self.settings.listen_queues
        servers: list[asyncio.Server] = []
        if queues > 1 and self._worker is None and port:
            try:  # again, now: with SO_REUSEPORT a gateway started meanwhile would share
                probe(self.settings.host, port, what, option)  # the port, not fail to bind
            except Busy as exc:
                raise StartupError(str(exc)) from None
        try:
            for _ in range(queues):  # the first resolves port 0; the rest join its port
                servers.append(
                    await loop.create_server(
                        factory,
                        self.settings.host,
                        port,
                        reuse_address=True,
                        # each socket has its own accept queue, and with --workers every
                        # worker listens on the port: the kernel spreads connections
                        reuse_port=queues > 1 or self._worker is not None,
                        backlog=LISTEN_BACKLOG,
                    )
                )
                port = int(servers[0].sockets[0].getsockname()[1])
        except OSError as exc:
            for server in servers:
                server.close()
            raise StartupError(self._bind_error(what, port, exc, option)) from None
        listener = Listener(servers)
        idle, interval, count = self.keepalive
        if idle:  # accepted sockets inherit it (Linux): no per-connection system calls
            for sock in listener.sockets:
                try:
                    set_keepalive(sock, idle, interval, count)
                except OSError as exc:
                    log.warning("event=keepalive_failed port=%d error=%s", port, exc)
        return listener

    def _bind_error(
        self, what: str, port: int, exc: OSError, option: str, host: str | None = None
    ) -> str:
        """One line: what could not listen where, why, and which option to change."""
        host_option = "--metrics-host" if option == "--metrics-port" else "--host"
        return bind_error(what, host or self.settings.host, port, exc, option, host_option)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def irc_port(self) -> int:
        assert self._irc is not None
        return int(self._irc.sockets[0].getsockname()[1])

    @property
    def web_port(self) -> int:
        assert self._web is not None
        return int(self._web.sockets[0].getsockname()[1])

    # -- shutdown ----------------------------------------------------------------------------

    async def shutdown(self) -> None:
        doors = [d for d in (self.line_door, self.irc_door, self.web_door) if d is not None]
        live = [c for d in doors for c in d.connections if not c.closing]
        log.info("event=shutdown connections=%d", len(live))
        self.admission.stop_counting()  # nothing is counted in a store about to close
        for server in (self._server, self._tls_server, self._irc, self._irc_tls, self._web):
            if server is not None:
                server.close()
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
        await self.close_store()

    async def abort(self) -> None:
        """Start-up failed or was stopped: undo what it did (nothing listens yet)."""
        for server in (self._server, self._tls_server, self._irc, self._irc_tls, self._metrics):
            if server is not None:
                server.close()
        if self._web is not None:
            self._web.close()
        if self._fanout_started:
            await self.fanout.stop()
        await self.close_store()

    async def close_store(self) -> None:
        """Let go of Redis; the embedded store, last, writes its data file."""
        if self._wired:  # else start stopped before the store opened
            await self.store.close()
        if self._embedded is not None:
            embedded, self._embedded = self._embedded, None
            await asyncio.to_thread(embedded.shutdown)


#: Descriptors kept free of client connections by the automatic --max-connections: Redis
#: (the pool of 64, pub/sub, the post pipeline), listeners, the metrics port, log files.
FD_RESERVE = 256


def connection_limit(setting: int) -> int:
    """--max-connections as admission takes it: -1 becomes the descriptor limit less
    FD_RESERVE (accepting past the limit fails inside the event loop, and Redis
    connections opened then fail too); 0 stays "no limit"."""
    if setting >= 0:
        return setting
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(1, soft - FD_RESERVE)


def _redis_hint(url: str | None) -> str:
    """What to check when the Redis of `url` does not answer at start."""
    seeds = Seeds.parse(url or "")
    start = "redis-server"
    if not seeds.several and seeds.scheme != "unix":
        host, port = seeds.nodes[0]
        start = f"redis-server --port {port}" + (
            "" if host in ("127.0.0.1", "localhost", "::1") else f" on {host}"
        )
    return (
        f"is Redis running at {_redacted(url)}? start it with `{start}`, or leave out "
        "--redis-url for the embedded store; retrying until it answers"
    )


def _redacted(url: str | None) -> str:
    """The Redis URL without its password, for the log."""
    if not url or "@" not in url:
        return str(url)
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if user else f"{scheme}://***@{host}"


#: Young-generation threshold of the cyclic garbage collector (CPython's default: 700).
#: A gateway holds tens of thousands of sessions; with the default, a reconnect storm's
#: objects in flight (connections, futures, replies) were caught alive by the frequent
#: young collections and promoted, and full collections followed about once a second,
#: each scanning every session: 0.3-0.8 s pauses, 6 s of one gateway's CPU in one 50,000-
#: user storm. With 50,000 most of them die young, unscanned (a young collection then
#: takes a few ms); full collections still come when the old generation grew by a quarter.
GC_YOUNG = 50_000


def tune_gc() -> None:
    """Once serving: what start-up made (modules, settings, scripts) is never scanned
    again, and young collections are rarer (see GC_YOUNG); every pause is measured
    (`chat_gc_pause_seconds`)."""
    if METRICS.watch_gc not in gc.callbacks:
        gc.callbacks.append(METRICS.watch_gc)
    gc.collect()  # the first full collection, measured like the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, older, oldest)


#: A stopping gateway exits after its store timeout and this many seconds more, even if a
#: part of its shutdown never ends (see exit_when_stuck): room for a store that answers
#: late and the embedded store's last write of its data file, while a supervisor's
#: SIGKILL (15 s) usually comes first.
SHUTDOWN_SLACK = 20.0


def exit_when_stuck(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Exit (status 1) if this stopping gateway is still running after `seconds`: a task
    that never ends would otherwise keep it alive forever, serving nobody, after its
    supervisor gave up on it (orphans of a big crowd's shutdown were found so). What is
    still pending is logged, to find it. A timer thread: the stuck loop cannot run it."""

    def stuck() -> None:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        except RuntimeError:  # the loop changed its set of tasks while we read it
            pending = []
        log.error(
            "event=shutdown_stuck after=%.1f pending_tasks=%d where=%s",
            seconds,
            len(pending),
            " | ".join(_awaiting(t) for t in pending[:8]) or "?",
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, stuck)
    timer.daemon = True
    timer.start()


def _awaiting(task: asyncio.Task[object]) -> str:
    """A task and the chain of coroutines it waits in, outermost first."""
    chain: list[str] = []
    coro: object = task.get_coro()
    while coro is not None and len(chain) < 12:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None)
    return f"{task.get_name()}: {' > '.join(chain) or repr(task.get_coro())}"


async def run(settings: Settings, worker: Worker | None = None) -> int:
    """Run a gateway until SIGINT/SIGTERM; the process exit code. A `worker` of --workers
    tells its supervisor once it listens."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = GatewayServer(settings, worker)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, not a log line too
        return 1
    starting = asyncio.ensure_future(server.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while still waiting for Redis
        starting.cancel()
        await asyncio.wait({starting})  # its own clean-up first (a half-opened store)
        log.info("event=stopped_before_start")
        await server.abort()
        return 0
    stopping.cancel()
    try:
        starting.result()
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, not a log line too
        await server.abort()
        return 1
    except Exception:  # e.g. fan-out's first pub/sub connection timed out: clean up
        log.exception("event=startup_failed")
        await server.abort()
        return 1
    tune_gc()
    lag = asyncio.create_task(watch_loop_lag(), name="loop-lag")
    if worker is not None:
        worker.ready()
    await stop.wait()
    lag.cancel()
    exit_when_stuck(loop, settings.store_timeout + SHUTDOWN_SLACK)
    await server.shutdown()
    return 0

"""Prometheus metrics and the health check, served on `--metrics-port`.

The counters are process-wide (one gateway per process). The HTTP side is a few lines of
asyncio rather than prometheus_client's thread, so it shares the event loop's view of
whether Redis is reachable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

__all__ = ["METRICS", "serve_metrics", "watch_loop_lag"]


#: Seconds between the event-loop lag probe's wake-ups, and its histogram's buckets.
LAG_TICK = 0.05
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _Metrics:
    def __init__(self) -> None:
        self.connections = Gauge("chat_connections", "Open client connections")
        self.logins = Counter("chat_logins_total", "Successful logins")
        self.login_failures = Counter("chat_login_failures_total", "Failed logins")
        self.login_throttled = Counter(
            "chat_login_throttled_total", "Login attempts refused by a failed-login limit"
        )
        self.hash_busy = Counter(
            "chat_hash_busy_total", "Logins refused because too many password hashes waited"
        )
        # The two per-message counters are plain ints (a prometheus Counter takes a lock per
        # increment, measurable at 30k messages/s); `_HotCounters` exports them on scrape.
        self.messages_in = 0
        self.lines_out = 0
        self.redis_errors = Counter("chat_redis_errors_total", "Redis operations that failed")
        self.redis_reconnects = Counter("chat_redis_reconnects_total", "Pub/sub reconnects")
        self.store_resets = Counter(
            "chat_store_resets_total", "Times Redis was found to have lost its data (epoch)"
        )
        self.redis_up = Gauge("chat_redis_up", "1 while the pub/sub link is up")
        self.slow_readers = Counter(
            "chat_slow_reader_disconnects_total",
            "Connections closed because their output queue overflowed",
        )
        self.rate_limited = Counter("chat_rate_limited_total", "Messages refused by the rate limit")
        self.tasks = Gauge("chat_asyncio_tasks", "asyncio tasks alive in the gateway")
        self.channels = Gauge("chat_pubsub_channels", "Pub/sub channels subscribed")
        self.local_users = Gauge("chat_local_users", "Users with a session on this gateway")
        #: Observed by `watch_loop_lag`, a task of the loop (not a gc callback: the lock
        #: is never held by a scrape at that moment).
        self.loop_lag = Histogram(
            "chat_event_loop_lag_seconds",
            f"How late the event loop woke a {LAG_TICK:g} s timer: every user of this gateway "
            "waits this long for anything (a login burst, a big fan-out, a garbage collection)",
            buckets=LAG_BUCKETS,
        )
        self.latency = Histogram(
            "chat_delivery_latency_seconds",
            "From Redis accepting a message to the gateway queueing it",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )

        # Plain numbers, not a prometheus Histogram: a collection may start while this
        # thread holds that metric's lock (during a scrape), and its callback would then
        # wait for the lock forever. Exported on scrape by `_HotCounters`.
        self.gc_pauses: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
        #: With --redis-wait-replica: (master, slots) running without a replica -> since
        #: when (unix time); set by the server from its store.
        self.unprotected_shards: Callable[[], dict[tuple[str, str], float]] = dict
        self._gc_started = 0.0

    def watch_gc(self, info_phase: str, info: dict[str, int]) -> None:
        """A `gc.callbacks` entry: every collection's pause, by generation."""
        if info_phase == "start":
            self._gc_started = time.perf_counter()
        else:
            slot = self.gc_pauses[info["generation"]]
            slot[0] += 1
            slot[1] += time.perf_counter() - self._gc_started

    def observe_delivery(self, oldest_ms: int, messages: int, readers: int) -> None:
        """One burst delivered: latency of its oldest message (the worst in the burst)."""
        self.latency.observe(max(0.0, time.time() - oldest_ms / 1000))
        self.lines_out += messages * readers


METRICS = _Metrics()


class _HotCounters(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        pauses = SummaryMetricFamily(
            "chat_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation (2: a full collection)",
            labels=["generation"],
        )
        for generation, (count, seconds) in METRICS.gc_pauses.items():
            pauses.add_metric([str(generation)], count_value=int(count), sum_value=seconds)
        yield pauses
        unprotected = METRICS.unprotected_shards()
        yield GaugeMetricFamily(
            "chat_store_shards_unprotected",
            "Redis masters running without a replica (--redis-wait-replica stops waiting for them)",
            value=len(unprotected),
        )
        since = GaugeMetricFamily(
            "chat_store_shard_unprotected_since_seconds",
            "When each master without a replica was found so (unix time)",
            labels=["master", "slots"],
        )
        for (master, slots), when in unprotected.items():
            since.add_metric([master, slots], when)
        yield since
        yield CounterMetricFamily(
            "chat_messages_in", "Messages accepted from users", value=METRICS.messages_in
        )
        yield CounterMetricFamily(
            "chat_message_lines_out", "Message lines queued to sessions", value=METRICS.lines_out
        )


REGISTRY.register(_HotCounters())


async def watch_loop_lag() -> None:
    """Wake every LAG_TICK and record how late: the time a callback (or the CPU's absence)
    held the loop, which every user of this gateway felt (`chat_event_loop_lag_seconds`)."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(LAG_TICK)
        METRICS.loop_lag.observe(max(0.0, loop.time() - start - LAG_TICK))


async def serve_metrics(
    host: str,
    port: int,
    healthy: Callable[[], bool],
    debug: dict[bytes, Callable[[], object]] | None = None,
) -> asyncio.Server:
    """/metrics, /healthz, and each `debug` path (e.g. /debug/fanout) as JSON."""
    debug = debug or {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(5):  # not wait_for (store/resp.py)
                    request = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):  # a request line over 64 KiB
                request = None
            path = request.split(b" ")[1] if request and request.count(b" ") >= 2 else b""
            if request is None:
                status, body, ctype = b"431 Request Header Fields Too Large", b"", b"text/plain"
            elif path.startswith(b"/metrics"):
                status, body, ctype = b"200 OK", generate_latest(), CONTENT_TYPE_LATEST.encode()
            elif path in debug:
                body = json.dumps(debug[path]()).encode()
                status, ctype = b"200 OK", b"application/json"
            elif path.startswith(b"/healthz"):
                ok = healthy()
                status = b"200 OK" if ok else b"503 Service Unavailable"
                body, ctype = (b"ok\n" if ok else b"redis unavailable\n"), b"text/plain"
            else:
                status, body, ctype = b"404 Not Found", b"not found\n", b"text/plain"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: "
                + ctype
                + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)

"""Prometheus metrics and the health check, served on `--metrics-port`.

The counters are process-wide (one gateway per process). The HTTP side is a few lines of
asyncio rather than prometheus_client's thread, so it shares the event loop's view of
whether Redis is reachable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = ["METRICS", "serve_metrics"]


class _Metrics:
    def __init__(self) -> None:
        self.connections = Gauge("chat_connections", "Open client connections")
        self.logins = Counter("chat_logins_total", "Successful logins")
        self.login_failures = Counter("chat_login_failures_total", "Failed logins")
        self.messages_in = Counter("chat_messages_in_total", "Messages accepted from users")
        self.lines_out = Counter("chat_message_lines_out_total", "Message lines queued to sessions")
        self.redis_errors = Counter("chat_redis_errors_total", "Redis operations that failed")
        self.redis_reconnects = Counter("chat_redis_reconnects_total", "Pub/sub reconnects")
        self.redis_up = Gauge("chat_redis_up", "1 while the pub/sub link is up")
        self.slow_readers = Counter(
            "chat_slow_reader_disconnects_total",
            "Connections closed because their output queue overflowed",
        )
        self.rate_limited = Counter("chat_rate_limited_total", "Messages refused by the rate limit")
        self.tasks = Gauge("chat_asyncio_tasks", "asyncio tasks alive in the gateway")
        self.channels = Gauge("chat_pubsub_channels", "Pub/sub channels subscribed")
        self.local_users = Gauge("chat_local_users", "Users with a session on this gateway")
        self.latency = Histogram(
            "chat_delivery_latency_seconds",
            "From Redis accepting a message to the gateway queueing it",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
        )

    def observe_delivery(self, ms: int, readers: int) -> None:
        self.latency.observe(max(0.0, time.time() - ms / 1000))
        self.lines_out.inc(readers)


METRICS = _Metrics()


async def serve_metrics(host: str, port: int, healthy: Callable[[], bool]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            path = request.split(b" ")[1] if request.count(b" ") >= 2 else b"/"
            if path.startswith(b"/metrics"):
                status, body, ctype = b"200 OK", generate_latest(), CONTENT_TYPE_LATEST.encode()
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
        except (TimeoutError, OSError, IndexError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)

"""`--listen-queues`: a burst of connections larger than one accept queue is not dropped.

Linux caps a listening socket's queue of finished handshakes at net.core.somaxconn; a
handshake that finds it full is dropped, and its client's kernel retries only a second
later. The restarted gateway of a reconnect storm meets more clients than that at once, so
a gateway listens on several sockets per port (SO_REUSEPORT), each with its own queue.

The gateway is stopped (SIGSTOP) while the burst arrives, as a gateway busy with logins
does not accept: what the kernel completes for it in half a second (under the 1 s SYN
retry) is exactly what its queues hold.
"""

from __future__ import annotations

import resource
import select
import signal
import socket
import time

from tests.helpers import Gateway

#: Connections beyond one queue's capacity in the burst.
EXTRA = 1000


def _somaxconn() -> int:
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


def _established(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            s.getpeername()  # ENOTCONN while the SYN waits for a retry
            n += 1
        except OSError:
            pass
    return n


def _burst(gw: Gateway, count: int) -> tuple[int, int]:
    """(completed while the gateway was stopped, greeted within 20 s once it runs)."""
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGSTOP)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            s.connect_ex(("127.0.0.1", gw.port))
        time.sleep(0.5)
        queued = _established(socks)
        gw.proc.send_signal(signal.SIGCONT)
        poll = select.poll()
        waiting = {s.fileno(): s for s in socks}
        for fd in waiting:
            poll.register(fd, select.POLLIN)
        greeted = 0
        deadline = time.monotonic() + 20
        while waiting and time.monotonic() < deadline:
            for fd, _ in poll.poll(200):
                poll.unregister(fd)
                try:
                    if waiting.pop(fd).recv(64):
                        greeted += 1
                except OSError:
                    pass
        return queued, greeted
    finally:
        gw.proc.send_signal(signal.SIGCONT)
        for s in socks:
            s.close()


def test_a_burst_past_one_accept_queue_is_queued_and_served(redis_url, tmp_path) -> None:
    limit = _somaxconn()
    count = limit + EXTRA
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100 <= hard:  # as the gateway does for itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 100, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert count + 100 <= soft, f"{count} sockets need a higher descriptor limit than {soft}"
    env = {"CHAT_MAX_PER_IP": "0", "CHAT_MAX_PENDING_PER_IP": "0"}
    one = Gateway(redis_url, tmp_path, "--listen-queues", "1", **env).start()
    many = Gateway(redis_url, tmp_path, **env).start()  # the default: 4 queues
    try:
        queued, _ = _burst(one, count)
        # one queue: the handshakes past it wait for the client's retry (the control,
        # which shows what this test would catch)
        assert queued <= limit + 1, (queued, limit)
        queued, greeted = _burst(many, count)
        assert queued == count, f"{count - queued} of {count} handshakes dropped"
        assert greeted == count, f"{count - greeted} of {count} never heard from the gateway"
    finally:
        one.kill()
        many.kill()

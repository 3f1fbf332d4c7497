"""Starting local processes on free loopback ports: shared by the cluster script, the
benchmarks and the tests."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["bindable", "die_with_parent", "free_port", "stop_process", "wait_port"]


#: Where free_port draws from: below the kernel's ephemeral range (32768-60999 on Linux),
#: from which every outgoing connection takes its local port, so that no client socket of
#: a busy test run holds the port a server is about to listen on (binding port 0 would
#: hand out exactly such a port); below scripts/rediscluster.py's range (12000 and up,
#: bus ports +10000) and above the machine's services (PostgreSQL, RabbitMQ, Redis 6379).
PORT_RANGE = (7100, 11900)
_given: set[int] = set()


def _port_range() -> range:
    """This process's share of PORT_RANGE: each pytest-xdist worker ("gwN", inherited by
    what it starts) its own slice, so two workers never pick the same port."""
    low, high = PORT_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker.startswith("gw") and worker[2:].isdigit() and count > 0:
        size = (high - low) // count
        low += int(worker[2:]) % count * size
        high = low + size
    return range(low, high)


def free_port(count: int = 1) -> int:
    """A loopback port nothing listens on or is connected from, not given out before by
    this process; with `count`, the first of that many such ports in a row (a gateway's
    --workers put their metrics on port, port + 1, ...)."""
    ports = _port_range()
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    for attempt in range(4000):
        if attempt == 2000:  # the slice is used up: ports given long ago are free again
            _given.clear()
        first = rnd.choice(ports[: len(ports) - count + 1])
        run = range(first, first + count)
        if any(p in _given for p in run) or not all(bindable(p) for p in run):
            continue
        _given.update(run)
        return first
    raise RuntimeError(f"no {count} free port(s) in {ports.start}-{ports.stop - 1}")


def bindable(port: int) -> bool:
    """Whether a server could listen on loopback `port` now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    """Return once something accepts on `port`; RuntimeError if `proc` exits first,
    TimeoutError if nothing listens in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal a child and wait for it; SIGKILL it if it has not exited within `timeout`.
    Returns its exit code. The one "terminate, wait, kill" of scripts, bench and tests."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    return proc.returncode


try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the starting thread's process dies, even
    by SIGKILL (Linux PR_SET_PDEATHSIG). Looked up before forking: nothing here may take
    a lock."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that makes a child die with this process (None where Linux's
    PR_SET_PDEATHSIG is missing). Linux sends it when the forking *thread* ends: use it
    only from the main thread."""
    if _prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    return _die_with_parent

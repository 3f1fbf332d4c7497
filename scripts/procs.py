"""Starting local processes on free loopback ports: shared by the cluster script, the
benchmarks and the tests."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["die_with_parent", "free_port", "stop_process", "wait_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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

"""Starting local processes on free loopback ports: shared by the cluster script, the
benchmarks and the tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

__all__ = ["free_port", "stop_process", "wait_port"]


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

"""First-day bugs, end to end: plain client stdin kinds, the cluster script as a supervisor,
the redis-cli examples of docs/REDIS.md."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from tests.helpers import ROOT, messages


def _plain_client(port: int, nick: str, stdin, timeout: float = 30) -> tuple[int, str, str, float]:
    """client.py --plain with the given stdin (an open file); (exit code, out, err, seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "client.py"),
            "--plain",
            "--server",
            f"127.0.0.1:{port}",
            "--nick",
            nick,
        ],
        stdin=stdin,
        capture_output=True,
        env=dict(os.environ, CHAT_PASSWORD="secret123"),
        timeout=timeout,
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - started


async def test_plain_client_reads_a_regular_file_as_stdin(backend, gateways, tmp_path) -> None:
    gw = gateways(backend)
    script = tmp_path / "lines.txt"
    script.write_text("from a file\n\n/who\nsecond line\n")
    with open(script, "rb") as f:
        code, out, err, _ = await asyncio.to_thread(_plain_client, gw.port, "filebot", f)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    assert messages(out.splitlines()) == [
        ("#general", "filebot", "from a file"),
        ("#general", "filebot", "second line"),
    ]
    assert "* online in #general (1): filebot" in out


async def test_plain_client_with_dev_null_stdin_exits_promptly(backend, gateways) -> None:
    gw = gateways(backend)
    with open(os.devnull, "rb") as f:
        code, out, err, took = await asyncio.to_thread(_plain_client, gw.port, "nullbot", f, 20)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err, err
    assert "* ready: logged in as nullbot" in out
    assert took < 10

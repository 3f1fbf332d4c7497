"""The attack on the chat before launch ("Attacked before launch"): each finding, replayed
against real gateway processes, with what a user would notice measured.

Stalls are measured on real Redis (the embedded store shares the gateway's CPU with the
attack) and probe-style: a logged-in user does `/help` round trips during the
attack and the slowest must stay under 200 ms.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import Client

#: The slowest /help round trip a user may see during an attack (the machine is shared).
PROBE_BOUND = 0.2


async def _probe(client: Client, seconds: float) -> list[float]:
    """`/help` round trips for `seconds`; the time of each."""
    rtts = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        await client.send("/help")
        await client.expect("/quit", timeout=30)  # the last help line names /quit
        rtts.append(time.monotonic() - start)
        await asyncio.sleep(0.02)
    return rtts


_FLOODER = """
import selectors, socket, sys
port, count, source = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
chunk = bytes.fromhex(sys.argv[4]) * int(sys.argv[5])
sel = selectors.DefaultSelector()
for _ in range(count):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_WRITE)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            key.fileobj.send(chunk)
        except BlockingIOError:
            pass
        except OSError:
            sel.unregister(key.fileobj)
"""


@contextmanager
def _flood(
    port: int, connections: int, unit: bytes, repeat: int, source: str = "127.0.0.1"
) -> Iterator[None]:
    """`connections` sockets writing `unit` * `repeat` as fast as the gateway reads, from another
    process (so neither the flood nor the GIL delays the probe's timing here)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _FLOODER,
            str(port),
            str(connections),
            source,
            unit.hex(),
            str(repeat),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield
    finally:
        proc.kill()
        proc.wait()


async def _help_lines(client: Client) -> None:
    await client.send("/help")
    await client.expect("/quit")


async def _stall_under(port: int, client: Client, unit: bytes) -> float:
    await _help_lines(client)
    with _flood(port, 40, unit, 32768):
        await asyncio.sleep(0.5)
        rtts = await _probe(client, 3.0)
    print(f"/help round trips under flood: {len(rtts)}, slowest {max(rtts) * 1000:.0f} ms")
    return max(rtts)


async def test_iac_nop_flood_does_not_stall_other_users(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url)
    probe = await clients(gw.port)
    await probe.login("probe")
    worst = await _stall_under(gw.port, probe, b"\xff\xf1")
    assert worst < PROBE_BOUND, f"slowest /help round trip {worst * 1000:.0f} ms"


async def test_empty_line_flood_does_not_stall_other_users(redis_url, gateways, clients) -> None:
    gw = gateways(redis_url)
    probe = await clients(gw.port)
    await probe.login("probe")
    worst = await _stall_under(gw.port, probe, b"\r\n")
    assert worst < PROBE_BOUND, f"slowest /help round trip {worst * 1000:.0f} ms"

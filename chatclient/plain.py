"""Plain mode for scripts and pipes: stdin lines go to the server, server lines to stdout.

stdout carries only server lines (exactly as the contract writes them, minus replayed
duplicates); the client's own status goes to stderr. At end of input the client sends
/quit, waits for the server to close, and exits.
"""

from __future__ import annotations

import asyncio
import sys

from chatclient.lines import ServerLine
from chatclient.link import ChatLink

__all__ = ["run_plain"]


async def run_plain(link: ChatLink, linger: float = 1.0) -> int:
    def show(line: ServerLine) -> None:
        sys.stdout.write(line.raw + "\n")
        sys.stdout.flush()

    def status(text: str) -> None:
        sys.stderr.write(f"client: {text}\n")
        sys.stderr.flush()

    link.show, link.status = show, status
    runner = asyncio.create_task(link.run())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await asyncio.wait(
        [runner, asyncio.create_task(link.ready.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    while not runner.done():
        raw = await reader.readline()
        if not raw:
            break
        text = raw.decode(errors="replace").rstrip("\r\n")
        if text:
            await link.send(text)
    if not runner.done():
        await asyncio.sleep(linger)  # let the answers to the last lines arrive
        await link.quit()
        runner.cancel()
    if link.fatal:
        status(f"login refused: {link.fatal}")
        return 1
    return 0

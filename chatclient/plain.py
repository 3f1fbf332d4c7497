"""Plain mode for scripts and pipes: stdin lines go to the server, server lines to stdout.

stdout carries only server lines (exactly as the contract writes them, minus replayed
duplicates); the client's own status goes to stderr. At end of input the client sends
/quit, waits for the server to close, and exits.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
import threading

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
    reader = await open_stdin()
    # Lines that arrive before the login are read ahead (and sent once it is done), so that
    # the end of the input is seen: with it, a server that cannot be reached is given up.
    ahead: list[bytes] = []
    ended = False

    async def read_ahead() -> None:
        nonlocal ended
        while raw := await reader.readline():
            ahead.append(raw)
        ended = True

    link.give_up = lambda: ended
    runner = asyncio.create_task(link.run())
    early = asyncio.create_task(read_ahead())
    try:
        await asyncio.wait(
            [runner, asyncio.create_task(link.ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        early.cancel()  # a partly read line stays in the reader's buffer
        for raw in ahead:
            if runner.done():
                break
            text = raw.decode(errors="replace").rstrip("\r\n")
            if text:
                await link.send(text)
        while not runner.done() and not ended:
            reading = asyncio.ensure_future(reader.readline())
            await asyncio.wait([runner, reading], return_when=asyncio.FIRST_COMPLETED)
            if not reading.done():  # the link ended (a kick, a refusal): so does the client
                reading.cancel()
                break
            raw = reading.result()
            if not raw:
                break
            text = raw.decode(errors="replace").rstrip("\r\n")
            if text:
                await link.send(text)
        if not runner.done():
            await asyncio.sleep(linger)  # let the answers to the last lines arrive
            await link.quit()
    finally:
        runner.cancel()
    if link.ended:
        status(f"{link.ended}; not reconnecting")
        return 1
    if link.fatal:
        status(f"login refused: {link.fatal}")
        return 1
    return 0


async def open_stdin(fd: int | None = None) -> asyncio.StreamReader:
    """A StreamReader over stdin, whatever it is. Pipes and sockets go through the event
    loop; regular files, /dev/null and terminals (which epoll refuses, or which must not be
    switched to non-blocking under the user's shell) are read by a daemon thread."""
    fd = sys.stdin.fileno() if fd is None else fd
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        try:
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", closefd=False)
            )
            return reader
        except (ValueError, OSError):
            pass

    def pump() -> None:
        # os.read, not sys.stdin: a daemon thread still blocked at exit must hold no lock.
        try:
            while data := os.read(fd, 65536):
                loop.call_soon_threadsafe(reader.feed_data, data)
        except OSError:
            pass
        finally:
            try:
                loop.call_soon_threadsafe(reader.feed_eof)
            except RuntimeError:  # the loop is already closed
                pass

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    return reader

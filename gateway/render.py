"""The exact bytes of the contract: message, notice and error lines, CRLF-terminated.

Pure. A message line is formatted once and the same bytes go to every reader.
"""

from __future__ import annotations

import time

__all__ = ["ban_end", "clock", "error", "message", "notice"]

CRLF = b"\r\n"

_hms_cache: dict[int, str] = {}


def clock(ms: int) -> str:
    """`HH:MM:SS` in the gateway's local time zone (set TZ to change it)."""
    sec = ms // 1000
    hms = _hms_cache.get(sec)
    if hms is None:
        if len(_hms_cache) > 4096:
            _hms_cache.clear()
        hms = _hms_cache[sec] = time.strftime("%H:%M:%S", time.localtime(sec))
    return hms


def ban_end(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ms // 1000))


def message(ms: int, where: str, nick: str, text: str) -> bytes:
    return f"[{clock(ms)}] {where} <{nick}> {text}\r\n".encode()


def notice(text: str) -> bytes:
    return f"* {text}\r\n".encode()


def error(text: str) -> bytes:
    return f"! {text}\r\n".encode()

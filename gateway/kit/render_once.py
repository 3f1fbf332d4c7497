"""Render each burst once per kind of reader.

Fan-out hands the same `Messages` object to every reader of a chat. Readers whose bytes
would be the same (every line-protocol connection; every page; IRC clients with the same
capabilities) share one `RenderOnce`: the first reader's codec renders the burst, the
others find it here by identity. One slot, not a dictionary: a burst reaches all its
readers before the next burst is delivered.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RenderOnce"]


class RenderOnce:
    """The last burst rendered for one kind of reader, and its bytes."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event: Any = None
        self.data = b""

    def keep(self, event: Any, data: bytes) -> bytes:
        self.event = event
        self.data = data
        return data

"""The audit trail: every complaint, ban, unban, kick and admin action, once as a
structured `key=value` log line and once in the store's capped audit stream.

Both the gateways (for what users and moderators do) and the admin tool write through
`record`, so the two records never drift apart.
"""

from __future__ import annotations

import logging
import time

from store.contract import Store, StoreUnavailable

__all__ = ["format_fields", "record"]

log = logging.getLogger("chat.audit")


def _value(v: str) -> str:
    if v and not any(c in v for c in ' ="\\'):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_fields(fields: dict[str, str]) -> str:
    """`k=v k2="v with space"`: one line, parseable, nothing a value could break."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


async def record(
    store: Store, keep: int, action: str, by: str, target: str, via: str, **detail: str
) -> dict[str, str]:
    """Log and store one audit entry. A store that fails here does not undo the action
    (it was done): the log line still has it, and a warning says the stream missed it."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fields = {"action": action, "by": by, "target": target, "via": via, "at": at, **detail}
    log.info("event=audit %s", format_fields(fields))
    try:
        await store.audit(fields, keep)
    except StoreUnavailable as exc:
        log.warning("event=audit_not_stored action=%s target=%s error=%s", action, target, exc)
    return fields

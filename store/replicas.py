"""`--redis-wait-replica` on a master that has no replica: said once, not waited for.

`WAIT 1 <ms>` after each batch of posts lets the sender's echo mean "a replica has it,
it survives a failover". A master with no replica at all (a replica a failover promoted,
until an operator gives it one) makes every WAIT time out: each batch would wait the whole
time and every sender be told "may not have been stored" about messages that were stored
and delivered. So when a WAIT fails, the master is asked whether it has a replica (`INFO
replication`). If it has none, its shard is *unprotected*: that batch stands (stored on
the master, like every later one), posts there stop waiting, one warning names the shard
and since when, and it is asked again every PROBE_EVERY s; once a replica has caught up,
waits resume and the end is logged. A WAIT that fails while a replica is attached (a slow
or lagging one) is reported to the sender as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from store.contract import StoreUnavailable

__all__ = ["PROBE_EVERY", "ReplicaWatch", "replication"]

log = logging.getLogger("chat.store")

#: Seconds between looks at an unprotected master.
PROBE_EVERY = 1.0
INFO_REPLICATION = ("INFO", "replication")


def replication(reply: Any) -> tuple[str, int, list[int]]:
    """(role, master offset, offsets of the replicas online) from `INFO replication`."""
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    online = []
    for name, value in fields.items():
        if name.startswith("slave") and name[5:].isdigit():
            info = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            if info.get("state") == "online":
                online.append(int(info.get("offset", "0")))
    return fields.get("role", ""), int(fields.get("master_repl_offset", "0") or 0), online


class ReplicaWatch:
    """Which masters run without a replica, since when (unix time); shared by a store's
    post pipelines. `ask(node)` sends one command to a node and returns its reply;
    `describe(node)` names its shard for the log; `serving(node)` is False once the node
    serves no slots (then it is forgotten)."""

    def __init__(
        self,
        wait_ms: int,
        ask: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        describe: Callable[[str], str] = lambda node: "all",
        serving: Callable[[str], bool] = lambda node: True,
    ) -> None:
        self.wait_ms = wait_ms
        self._ask = ask
        self._describe = describe
        self._serving = serving
        self.since: dict[str, float] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}

    def waits(self, node: str) -> bool:
        """Should a batch of posts to `node` end with WAIT?"""
        return self.wait_ms > 0 and node not in self.since

    def unprotected(self) -> dict[tuple[str, str], float]:
        """(master, its slots) -> since when (unix time), for the metrics."""
        return {(node, self._describe(node)): since for node, since in self.since.items()}

    async def has_no_replica(self, node: str) -> bool:
        """A WAIT on `node` timed out: True when it has no replica at all (its shard is
        now unprotected: the batch stands), False when one is attached but slow."""
        if node in self.since:
            return True
        try:
            role, _, online = replication(await self._ask(node, INFO_REPLICATION))
        except (StoreUnavailable, ValueError) as exc:
            log.warning("event=replica_check_failed master=%s error=%s", node, exc)
            return False
        if role != "master" or online:
            return False
        if node not in self.since:  # another batch may have found it meanwhile
            self.since[node] = time.time()
            log.warning(
                "event=store_shard_unprotected master=%s slots=%s since=%s hint=%r",
                node,
                self._describe(node),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since[node])),
                "this master has no replica: posts to it are no longer waited for, and a "
                "message is on this master only until a replica is attached "
                "(CLUSTER REPLICATE, REPLICAOF)",
            )
            self._probes[node] = asyncio.create_task(self._probe(node))
        return True

    async def _probe(self, node: str) -> None:
        """Ask `node` every PROBE_EVERY s until a replica holds what the master held a
        probe earlier (caught up), or until it serves no slots any more."""
        behind: int | None = None
        reason = "a replica caught up"
        while True:
            await asyncio.sleep(PROBE_EVERY)
            if not self._serving(node):
                reason = "it serves no slots any more"
                break
            try:
                role, offset, online = replication(await self._ask(node, INFO_REPLICATION))
            except (StoreUnavailable, ValueError):
                continue  # down: still unprotected (and its slots unserved)
            if role != "master":
                reason = f"it is a {role} now"
                break
            if behind is not None and any(o >= behind for o in online):
                break
            behind = offset
        since = self.since.pop(node)
        self._probes.pop(node, None)
        log.info(
            "event=store_shard_protected master=%s slots=%s unprotected_for=%.1f reason=%r",
            node,
            self._describe(node),
            time.time() - since,
            reason,
        )

    def close(self) -> None:
        for task in self._probes.values():
            task.cancel()
        self._probes.clear()

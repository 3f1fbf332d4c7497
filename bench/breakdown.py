"""Where a broadcast's time goes: each message from its send to its last member's read.

Every gateway remembers its last arrivals from Redis (`/debug/fanout` on its metrics
port, gateway/bigchat.py `Timing`): when each read from Redis arrived and when the last
local reader's bytes for it were handed to the kernel (CLOCK_MONOTONIC, like the load
generator's timestamps), and running totals of the time spent queueing (rendering once,
appending to each reader's output) and writing (one send per reader). During a broadcast
only `bc<seq>` lines go to #general, in order, so the k-th message of the broadcast is in
the arrival where a gateway's running count of messages passes k. For each message, the
stages of the gateway that finished it last:

    to_gateway   send -> that gateway reads it from Redis (the sender's gateway, Redis,
                 pub/sub, and waiting for the gateway's event loop)
    redis_age    Redis accepted it -> that gateway reads it (Redis' millisecond clock)
    fanout       read from Redis -> its last local reader's bytes handed to the kernel
    to_reader    the last gateway's last write -> the last member's read (the kernel's
                 loopback delivery and the load generator's own reads)

and the machine's CPU over the broadcast from /proc/stat (user, system, softirq, idle, in
cores), beside each process's.
"""

from __future__ import annotations

import bisect
import json
import os
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["MachineCpu", "fanout_report", "stages"]


class MachineCpu:
    """Cores busy over a span by kind of work, from /proc/stat (1.0 = one core): of the
    cores this process may run on (bench/run.py --cpus), which its children inherit."""

    KINDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

    def __enter__(self) -> MachineCpu:
        self.cpus = sorted(os.sched_getaffinity(0))
        self.start = self._read()
        self.cores: dict[str, float] = {}
        return self

    def _read(self) -> list[int]:
        mine = {f"cpu{n}" for n in self.cpus}
        total = [0] * len(self.KINDS)
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] in mine:
                total = [t + int(v) for t, v in zip(total, fields[1:9], strict=True)]
        return total

    def __exit__(self, *_: object) -> None:
        end = self._read()
        delta = [b - a for a, b in zip(self.start, end, strict=True)]
        total = sum(delta) or 1
        self.cores = {
            k: round(d / total * len(self.cpus), 2)
            for k, d in zip(self.KINDS, delta, strict=True)
            if d
        }


def fanout_report(metrics_port: int) -> dict[str, Any]:
    """A gateway's /debug/fanout (empty if it has none)."""
    url = f"http://127.0.0.1:{metrics_port}/debug/fanout"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            report: dict[str, Any] = json.loads(r.read())
            return report
    except (OSError, ValueError):
        return {}


def _pct(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else None


def stages(
    sent: dict[int, int],
    lasts: dict[int, int],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
) -> dict[str, Any]:
    """The breakdown of the messages `sent` (seq -> send ns; `lasts`: seq -> the last
    member's read ns), from each gateway's reports before and after."""
    seqs = sorted(sent)
    start = sent[seqs[0]] if seqs else 0
    per_gw = []
    for report in after:
        mine = sorted(tuple(a) for a in report.get("arrivals", ()) if a[0] >= start)
        ends, total = [], 0
        for a in mine:
            total += a[2]
            ends.append(total)
        per_gw.append((mine, ends))
    parts: dict[str, list[float]] = {
        k: [] for k in ("to_gateway", "redis_age", "fanout", "to_reader")
    }
    for k, seq in enumerate(seqs):
        found = []
        for mine, ends in per_gw:
            at = bisect.bisect_right(ends, k)
            if at < len(mine):
                found.append(mine[at])
        if not found or seq not in lasts:
            continue
        arrived, written, _, _, age = max(found, key=lambda a: a[1])
        parts["to_gateway"].append((arrived - sent[seq]) / 1e6)
        parts["redis_age"].append(float(age))
        parts["fanout"].append((written - arrived) / 1e6)
        parts["to_reader"].append((lasts[seq] - written) / 1e6)
    out: dict[str, Any] = {
        f"{name}_ms_p50_p99": [_pct(v, 0.5), _pct(v, 0.99)] for name, v in parts.items()
    }
    out["arrivals_each_gateway"] = [len(mine) for mine, _ in per_gw]
    per_write = []
    for b, a in zip(before, after, strict=True):
        writes = a.get("writes", 0) - b.get("writes", 0)
        if writes:
            per_write.append(
                (
                    round((a["queue_ns"] - b["queue_ns"]) / writes / 1e3, 2),
                    round((a["write_ns"] - b["write_ns"]) / writes / 1e3, 2),
                    writes,
                )
            )
    out["queue_write_us_per_reader_write_and_writes"] = per_write
    return out

"""The benchmark script still runs (seconds, tiny numbers); no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_smoke_runs_and_loses_nothing(tmp_path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    scenarios = {(r["scenario"], r["server"]) for r in rows}
    for name in ("fanout 1 server", "fanout 2 gateways", "latency 1000/s", "ingest"):
        assert (name, "gateway") in scenarios
    for row in rows:
        if row["server"] == "gateway" and "lost" in row:
            assert row["lost"] == 0, row
    assert "| scenario | server | result |" in proc.stdout

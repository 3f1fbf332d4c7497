"""The attack bench still runs (seconds, small numbers): every attack of "Attacked before
launch" gives its row with figures, and none leaves a ghost session. No timing is asserted:
the figures are for people to read (docs/ATTACKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

ATTACKS = (
    "hitrun",
    "chatflood",
    "sybil",
    "halflogin",
    "regstorm",
    "guess",
    "emptyflood",
    "iacflood",
    "storm",
    "badinput",
)


@pytest.mark.timeout(240)
def test_attack_bench_smoke_gives_every_row_and_no_ghost(tmp_path) -> None:
    out = tmp_path / "attacks.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "attacks.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(ATTACKS), sorted(rows)
    for key, row in rows.items():
        assert "error" not in row["figures"], row
        assert len(row["figures"]) > 1, row  # the attack's own figures beside its duration
        assert row["rss_before_kb"] > 0 and row["rss_settled_kb"] > 0, row
        assert row["redis_before"] > 0 and row["redis_after"] > 0, row
        assert row["probe_rounds"] >= 1, row  # the probe measured during the attack
        assert row["ghosts"] == 0, (key, row)  # nobody counted online who is not there
        assert row["missing"] == 0, (key, row)  # and everybody who is there counted
        assert row["who_online"] == row["held_online"], (key, row)
    assert rows["hitrun"]["figures"]["pm_in_first_login_backlog"] in (
        "yes",
        "n/a (no account was created)",
    )
    for key in ATTACKS:
        assert f"| {ATTACKS.index(key) + 1} | " in proc.stdout, key

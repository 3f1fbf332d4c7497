"""Small things a new user meets: the virtualenv README recommends is ignored by git, and
stopping an embedded gateway with connections open logs no warning."""

from __future__ import annotations

import signal
import subprocess

from tests.helpers import ROOT


def test_the_recommended_virtualenv_is_ignored_by_git() -> None:
    assert "python3 -m venv .venv" in (ROOT / "README.md").read_text()
    done = subprocess.run(
        ["git", "check-ignore", "-q", ".venv/bin/python"], cwd=ROOT, capture_output=True
    )
    assert done.returncode == 0, "README's .venv would show up in git status"


async def test_stopping_an_embedded_gateway_with_open_connections_logs_no_warning(
    gateways, clients
) -> None:
    gw = gateways(None, "--max-pending-per-ip", "0")
    for _ in range(15):  # each one counted in the store, and uncounted as it closes
        c = await clients(gw.port)
        await c.expect("nickname")
    assert gw.stop(signal.SIGTERM) == 0
    out = gw.output()
    assert "event=shutdown connections=15" in out
    assert "WARNING" not in out, out

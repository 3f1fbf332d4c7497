"""The IRC door against irctest, the public IRC server test suite (Ergo, InspIRCd and
Solanum run it in their CI): the fixed selection of ../shared/irc/README.md, run by
../shared/irc/run_irctest.sh against a real gateway on a real redis-server, the store
emptied before each test, with irctest's account registration done as this server
registers accounts (irctest_accounts.py: a login with a new nickname and password). It
fails if fewer tests pass than `RECORDED` (docs/IRC.md lists every remaining failure and
why), and prints which tests fail either way.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Gateway, RedisProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
IRCTEST = SHARED / "irctest"
RUNNER = SHARED / "irc" / "run_irctest.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PASSWORD = "irctest-password-1"
#: Tests that pass today (docs/IRC.md, "irctest": 110), less the three whose timing varies
#: on a loaded machine (docs/IRC.md says which): fewer fails this test.
RECORDED = 106
#: The store emptied as irctest's own controllers start each test afresh, keeping the
#: store's epoch: a fresh server has no history, accounts or chats, and tells no client
#: that its store was reset (which the gateway would, finding the epoch gone).
#: One `redis-cli EVAL` before each of the 139 tests (a Python process took 0.2 s each).
RESET = (
    "local e = redis.call('GET', KEYS[1]) redis.call('FLUSHALL') "
    "if e then redis.call('SET', KEYS[1], e) end return 1"
)


def _missing() -> str | None:
    if not RUNNER.is_file() or not (IRCTEST / "irctest").is_dir():
        return f"irctest is not at {IRCTEST} (the project's ../shared)"
    probe = "import pytest, ecdsa, filelock, websockets"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode:
        return "irctest's requirements are missing: pip install -r requirements-dev.txt"
    return None


@pytest.mark.timeout(300)
def test_irctest_selection_passes_at_least_the_recorded_count(tmp_path: Path) -> None:
    why = _missing()
    if why is not None:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    irc_port = free_port()
    gateway = Gateway(
        redis.url,
        tmp_path,
        "--max-per-ip",
        "0",
        "--max-pending-logins",
        "0",
        "--max-pending-per-ip",
        "0",
        CHAT_IRC_PORT=str(irc_port),
    )
    try:
        gateway.start()
        env = dict(
            os.environ,
            IRCTEST_DIR=str(IRCTEST),
            IRCTEST_PY=sys.executable,
            IRCTEST_CONNECT_PASSWORD=PASSWORD,
            IRCTEST_TEST_TIMEOUT="15",
            IRCTEST_RESET_CMD=shlex.join(
                ["redis-cli", "-p", str(redis.port), "EVAL", RESET, "1", "chat:{g}:epoch"]
            ),
            PYTHONPATH=str(Path(__file__).resolve().parent),  # irctest_accounts
            PYTHONDONTWRITEBYTECODE="1",  # ../shared is read-only: no __pycache__ there
        )
        env.pop("PYTEST_XDIST_WORKER", None)
        env.pop("PYTEST_ADDOPTS", None)
        run = subprocess.run(
            [
                "bash",
                str(RUNNER),
                "127.0.0.1",
                str(irc_port),
                "-p",
                "irctest_accounts",
                "-p",
                "no:benchmark",  # pytest-benchmark, where installed, writes .benchmarks/ there
                "--tb=line",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        gateway.stop()
        redis.stop()
    out = run.stdout + run.stderr
    last = re.search(r"irctest: (\d+) passed, (\d+) failed, (\d+) skipped", out)
    assert last is not None, out[-3000:]
    passed, failed, skipped = map(int, last.groups())
    failures = sorted(set(re.findall(r"^FAILED (\S+)", out, re.M)))
    report = [f"irctest: {passed} passed, {failed} failed, {skipped} skipped"]
    report += [f"  failed: {name}" for name in failures]
    print("\n".join(report))
    assert passed >= RECORDED, "\n".join(report) + "\n" + out[-4000:]

"""README and docs/ say one thing, and what the code does: the Redis version the store
requires, what a valid resume token does while its nickname is locked out, how many tests
there are. (The behaviour itself is tested where it lives: tests/e2e/test_tokens.py.)"""

from __future__ import annotations

import re
import subprocess
import sys

from store.redis import MIN_REDIS
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOKEN_THROUGH_LOCKOUT = (
    "A valid token logs in even while its nickname is locked out from that address"
)


def _text(path) -> str:  # type: ignore[no-untyped-def]
    return re.sub(r"\s+", " ", path.read_text())


def test_the_redis_version_is_said_once_and_is_the_one_the_store_requires() -> None:
    wanted = ".".join(map(str, MIN_REDIS))
    said = []
    for path in DOCS:
        text = _text(path)
        said += [(path.name, v) for v in re.findall(r"Redis >= ?(\d+\.\d+)", text)]
        said += [(path.name, v) for v in re.findall(r"Redis (\d+\.\d+) or newer", text)]
    assert said, "README no longer says which Redis it needs"
    assert {v for _, v in said} == {wanted}, said


def test_readme_and_the_protocol_agree_on_tokens_during_a_lockout() -> None:
    readme, protocol = _text(ROOT / "README.md"), _text(ROOT / "docs" / "PROTOCOL.md")
    assert TOKEN_THROUGH_LOCKOUT in readme and TOKEN_THROUGH_LOCKOUT in protocol
    for text in (readme, protocol):
        assert "refused even with a valid token" not in text


def test_the_readme_counts_the_tests_about_right() -> None:
    said = re.search(r"about (\d+) tests", _text(ROOT / "README.md"))
    assert said, "README no longer says how many tests there are"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    collected = int(re.search(r"(\d+) tests? collected", out).group(1))  # type: ignore[union-attr]
    # "about": rounded, within 3 % (main said "about 530" with 555 collected: 4.5 % off)
    assert abs(int(said.group(1)) - collected) <= collected * 0.03, (said.group(0), collected)

"""A full gateway in a reconnect storm refuses thousands of connections a second: the
log says so once a second with the count it left out, not once per connection."""

from __future__ import annotations

import logging

import pytest

from gateway.kit import admission
from gateway.kit.admission import FULL, Admission


def test_refusals_are_logged_at_most_once_a_second(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    adm = Admission(max_per_ip=0, max_pending=0, login_timeout=30, max_connections=1)
    with caplog.at_level(logging.WARNING, logger="chat.admission"):
        for _ in range(500):
            adm.log_refused(FULL, "10.0.0.1")
        now[0] += admission.REFUSAL_LOG_EVERY
        adm.log_refused(FULL, "10.0.0.2", "irc")
    lines = [r.getMessage() for r in caplog.records if "event=refused" in r.getMessage()]
    assert lines == [
        f"event=refused door=line reason={FULL!r} peer=10.0.0.1 suppressed=0",
        f"event=refused door=irc reason={FULL!r} peer=10.0.0.2 suppressed=499",
    ]

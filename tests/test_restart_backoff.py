"""The crash-loop restart policy that --workers and scripts/cluster.py share
(gateway.workers.Backoff), on its own: the e2e tests see only its first two delays."""

from __future__ import annotations

from gateway.workers import RESTART_DELAY, RESTART_MAX_DELAY, STABLE_AFTER, Backoff


def _waits(backoff: Backoff, n: int) -> list[float]:
    return [backoff.next() for _ in range(n)]


def test_the_delay_doubles_up_to_the_cap_and_stays_there() -> None:
    waits = _waits(Backoff(), 12)
    expected = [min(RESTART_DELAY * 2**k, RESTART_MAX_DELAY) for k in range(12)]
    assert waits == expected
    assert waits[0] == RESTART_DELAY and waits[1] == 2 * RESTART_DELAY
    assert waits[-2:] == [RESTART_MAX_DELAY, RESTART_MAX_DELAY]  # reached, never passed


def test_a_process_that_ran_stable_after_starts_over() -> None:
    backoff = Backoff()
    _waits(backoff, 5)
    assert backoff.next(ran=STABLE_AFTER) == RESTART_DELAY
    assert backoff.next() == 2 * RESTART_DELAY  # and doubles again from there


def test_a_process_that_died_sooner_keeps_backing_off() -> None:
    backoff = Backoff()
    _waits(backoff, 3)
    assert backoff.next(ran=STABLE_AFTER - 0.01) == RESTART_DELAY * 2**3


def test_reset_starts_over() -> None:
    backoff = Backoff()
    _waits(backoff, 4)
    backoff.reset()
    assert _waits(backoff, 2) == [RESTART_DELAY, 2 * RESTART_DELAY]


def test_each_backoff_is_its_own() -> None:
    one, other = Backoff(), Backoff()
    _waits(one, 3)
    assert other.next() == RESTART_DELAY

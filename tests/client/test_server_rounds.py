"""Which server a client tries next and how long it waits first (`ServerRounds`): no wait
between the servers of one round, a backoff only after every server of the list failed."""

from __future__ import annotations

from chatclient.link import Backoff, ServerRounds


def _rounds(size: int, first: int = 0, jitter: float = 1.0) -> ServerRounds:
    """Rounds whose waits are the top of the envelope (jitter 1.0) or its bottom (0.0)."""
    return ServerRounds(size, first, Backoff(rng=lambda: jitter))


def test_a_failed_try_moves_on_at_once_until_the_round_has_tried_every_server() -> None:
    rounds = _rounds(3)
    tries = []
    for _ in range(9):
        server = rounds.next_server()
        tries.append((server, rounds.failed()))
    assert tries == [
        (0, 0.0), (1, 0.0), (2, 0.5),  # every server refused: the first backoff
        (0, 0.0), (1, 0.0), (2, 1.0),  # then the envelope doubles per round
        (0, 0.0), (1, 0.0), (2, 2.0),
    ]  # fmt: skip


def test_the_waits_between_rounds_are_the_backoffs_jittered_envelope() -> None:
    low = _rounds(2, jitter=0.0)
    waits = [low.failed() for _ in range(12)]
    assert waits == [0.0, 0.25, 0.0, 0.5, 0.0, 1.0, 0.0, 2.0, 0.0, 4.0, 0.0, 5.0]


def test_one_server_backs_off_before_every_try_as_before() -> None:
    rounds = _rounds(1)
    assert [rounds.next_server() for _ in range(3)] == [0, 0, 0]
    assert [rounds.failed() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_round_starts_at_the_given_server_and_wraps_around() -> None:
    rounds = _rounds(3, first=5)  # user 5 of bench/swarm.py starts on gateway 5 mod 3
    assert [rounds.next_server() for _ in range(4)] == [2, 0, 1, 2]


def test_a_lost_session_waits_within_the_drop_spread_then_starts_a_fresh_round() -> None:
    jitter = [0.9]
    rounds = ServerRounds(3, 0, Backoff(rng=lambda: jitter[0]))
    failed = [(rounds.next_server(), rounds.failed()) for _ in range(4)]
    assert failed == [(0, 0.0), (1, 0.0), (2, 0.475), (0, 0.0)]  # a round and a bit
    assert rounds.next_server() == 1  # logged in here, then the session is lost
    assert rounds.dropped() == 0.9 * 2.0  # anywhere in [0, DROP_SPREAD]
    jitter[0] = 1.0
    # the new round begins at one of the other servers (0.9 of the way: the second after
    # the lost one) and gets the whole list without a wait (the count of the round cut
    # short by the login is gone); the envelope continues from 1 s, as after any drop
    assert [(rounds.next_server(), rounds.failed()) for _ in range(3)] == [
        (0, 0.0),
        (1, 0.0),
        (2, 1.0),
    ]


def test_after_a_drop_the_clients_of_one_server_spread_over_the_others() -> None:
    """A dead gateway's clients do not all try the next one of the list first."""
    firsts = []
    for _ in range(3000):
        rounds = ServerRounds(4, 2)  # connected to server 2, which dies
        assert rounds.next_server() == 2
        rounds.dropped()
        firsts.append(rounds.next_server())
    counts = {s: firsts.count(s) for s in range(4)}
    assert counts[2] == 0
    assert all(800 < counts[s] < 1200 for s in (0, 1, 3)), counts
    one = ServerRounds(1)
    one.next_server()
    one.dropped()
    assert one.next_server() == 0

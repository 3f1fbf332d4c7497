"""The IRC door's costs bounded (docs/SECURITY.md, issue 22): CHATHISTORY TARGETS reads a
capped number of conversations in one round trip, whatever the user's peers; the door
advertises the case mapping it folds names with."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from gateway.core.history import MAX_TARGETS
from store import keys
from tests.e2e.test_irc import Irc
from tests.helpers import Gateway, RedisProcess, free_port

PEERS = 3000


def _xrevranges(r: redis.Redis) -> int:
    stats = r.info("commandstats")
    return int(stats.get("cmdstat_xrevrange", {}).get("calls", 0))


async def test_targets_reads_a_capped_set_of_conversations_in_one_round_trip(
    tmp_path: Path,
) -> None:
    store = RedisProcess(tmp_path / "redis")
    store.start()
    irc_port = free_port()
    gateway = Gateway(store.url, tmp_path, CHAT_IRC_PORT=str(irc_port)).start()
    r = redis.Redis(port=store.port, decode_responses=True)
    try:
        amy = await Irc.connect(irc_port)
        await amy.send("PASS secret123", "NICK amy", "USER a 0 * :a")
        await amy.expect(" 001 amy ")
        await amy.send("QUIT")
        await gateway.logged("event=disconnect")
        # thousands of private peers, as many private messages would leave
        r.sadd(keys.user_peers("amy"), *(f"peer{i}" for i in range(PEERS)))
        amy = await Irc.connect(irc_port)
        await amy.send("CAP REQ :batch", "PASS secret123", "NICK amy", "USER a 0 * :a", "CAP END")
        await amy.expect(" 001 amy ")
        await amy.lines()
        before = _xrevranges(r)
        clients_before = int(r.info("stats")["total_connections_received"])
        started = time.perf_counter()
        await amy.send(
            "CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z"
            " timestamp=2100-01-01T00:00:00.000Z 50"
        )
        await amy.expect("BATCH -")
        took = time.perf_counter() - started
        reads = _xrevranges(r) - before
        assert reads <= MAX_TARGETS, reads  # was one read per peer: 3,001
        assert int(r.info("stats")["total_connections_received"]) == clients_before
        assert took < 1.0, took
    finally:
        r.close()
        gateway.stop()
        store.stop()


async def test_casemapping_says_how_names_fold(tmp_path: Path) -> None:
    """Names fold with casefold + NFKC (PRECIS-like), not ASCII: CASEMAPPING=ascii made a
    client think `Ärger` and `ärger` were two nicknames."""
    store = RedisProcess(tmp_path / "redis")
    store.start()
    irc_port = free_port()
    gateway = Gateway(store.url, tmp_path, CHAT_IRC_PORT=str(irc_port)).start()
    try:
        amy = await Irc.connect(irc_port)
        await amy.send("PASS secret123", "NICK Ärger", "USER a 0 * :a")
        isupport = await amy.expect(" 005 ")
        assert "CASEMAPPING=rfc8265" in isupport.split() and "CASEMAPPING=ascii" not in isupport
        await amy.send("QUIT")
        other = await Irc.connect(irc_port)
        await other.send("PASS secret123", "NICK ärger", "USER a 0 * :a")
        await other.expect(" 001 Ärger ")  # the same account: the nickname folds
    finally:
        gateway.stop()
        store.stop()

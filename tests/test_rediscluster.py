"""scripts/rediscluster.py: a local Redis Cluster starts, serves every slot, moves a slot with
its keys and fails over to a replica. One cluster for the module; the failover test runs
last, and brings the killed node back as a replica."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from scripts.rediscluster import SLOTS, ClusterError, LocalRedisCluster
from store.pubsub import PubSubLink
from tests.conftest import IN_CI
from tests.helpers import eventually


@pytest.fixture(scope="module")
def rc(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("rediscluster"))
    started = time.monotonic()
    try:
        cluster.start()
    except (OSError, RuntimeError) as exc:
        if IN_CI:
            pytest.fail(f"cannot start a Redis Cluster in CI: {exc}")
        pytest.skip(f"Redis Cluster unavailable: {exc}")
    print(f"\ncluster of 6 nodes up in {time.monotonic() - started:.2f} s")
    yield cluster
    cluster.stop()


def _client(rc: LocalRedisCluster) -> RedisCluster:
    nodes = [ClusterNode(n.addr.split(":")[0], n.port) for n in rc.live()]
    return RedisCluster(startup_nodes=nodes, decode_responses=True, socket_timeout=3)


def test_starts_with_three_masters_one_replica_each_on_bus_safe_ports(
    rc: LocalRedisCluster,
) -> None:
    masters = rc.masters()
    assert len(masters) == 3 and len(rc.nodes) == 6
    for m in masters:
        assert len(rc.replicas_of(m)) == 1
    for node in rc.nodes:
        assert node.port + 10000 <= 65535 and abs(node.port - 6379) > 100
        assert node.alive() and node.role in ("master", "replica")
        assert Path(node.workdir, "nodes.conf").exists()
    assert rc.seeds == ",".join(f"127.0.0.1:{n.port}" for n in rc.nodes)
    config = masters[0].client()
    try:
        assert config.config_get("cluster-require-full-coverage") == {
            "cluster-require-full-coverage": "yes"
        }
    finally:
        config.close()
    assert rc.seed_url.startswith("redis://127.0.0.1:") and rc.url in {
        f"redis://{m.addr}" for m in masters
    }


def test_every_slot_is_served_and_every_node_agrees(rc: LocalRedisCluster) -> None:
    owners = {rc.owner_of_slot(s).port for s in (0, 5000, 10000, SLOTS - 1)}
    assert owners <= {m.port for m in rc.masters()}
    assert sum(len(rc.slots_of(m)) for m in rc.masters()) == SLOTS
    for addr, info in rc.info_all("cluster").items():
        assert info["cluster_enabled"] == 1, addr
    for node in rc.live():
        state = node.call("CLUSTER", "INFO")
        assert "cluster_state:ok" in state and "cluster_slots_ok:16384" in state


def test_key_written_through_redis_py_cluster_client_is_on_its_owner(
    rc: LocalRedisCluster,
) -> None:
    rc.flushall()
    client = _client(rc)
    try:
        for key in ("plain", "{c:general}:stream", "{c:general}:members", "{u:alice}:acct"):
            client.set(key, key.upper())
            assert client.get(key) == key.upper()
            assert rc.owner_of(key).call("GET", key) == key.upper()
        # A hash tag puts keys in one slot, so a multi-key command works.
        assert rc.slot_of("{c:general}:stream") == rc.slot_of("{c:general}:members")
        assert client.mget("{c:general}:stream", "{c:general}:members") == [
            "{C:GENERAL}:STREAM",
            "{C:GENERAL}:MEMBERS",
        ]
    finally:
        client.close()
    rc.flushall()
    assert all(m.call("DBSIZE") == 0 for m in rc.masters())


def test_move_slot_moves_the_slot_with_its_keys(rc: LocalRedisCluster) -> None:
    rc.flushall()
    tag = "{c:moving}"
    slot = rc.slot_of(tag)
    source = rc.owner_of_slot(slot)
    target = next(m for m in rc.masters() if m.port != source.port)
    keys = [f"{tag}:k{i}" for i in range(250)]  # more than one MIGRATE batch
    for k in keys:
        source.call("SET", k, k)
    assert rc.move_slot(slot, target) == 250
    assert rc.owner_of_slot(slot).port == target.port
    assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
    with pytest.raises(redis.exceptions.MovedError, match=f"^{slot} 127.0.0.1:{target.port}$"):
        source.call("GET", keys[0])
    client = _client(rc)
    try:
        assert client.get(keys[-1]) == keys[-1]
    finally:
        client.close()
    rc.move_slot(slot, source)  # back: the other tests expect the initial map
    assert rc.owner_of_slot(slot).port == source.port


def _resp(*args: str) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )


def _push(kind: str, channel: str, count: int) -> bytes:
    """A RESP2 pub/sub reply: [kind, channel, count]."""
    return (
        b"*3\r\n"
        + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in (kind.encode(), channel.encode()))
        + b":%d\r\n" % count
    )


def _read_until(sock: socket.socket, end: bytes, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(end) and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_a_shard_subscriber_is_told_sunsubscribe_when_its_slot_moves(
    rc: LocalRedisCluster,
) -> None:
    """What the gateway's sharded pub/sub relies on (Redis 7.0): SSUBSCRIBE elsewhere is
    -MOVED; when the slot moves away the owner sends `sunsubscribe <channel> <count>` on
    the RESP2 connection (count = shard channels left) and keeps the connection."""
    channel = "{c:sub}:ch"
    slot = rc.slot_of(channel)
    source = rc.owner_of_slot(slot)
    mine = set(rc.slots_of(source)) - {slot}
    other = next(c for i in range(1000) if rc.slot_of(c := f"{{c:sub{i}}}:ch") in mine)
    target = next(m for m in rc.masters() if m.port != source.port)
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as wrong:
        wrong.sendall(_resp("SSUBSCRIBE", channel))
        assert _read_until(wrong, b"\r\n") == f"-MOVED {slot} {source.addr}\r\n".encode()
    with socket.create_connection(("127.0.0.1", source.port), timeout=5) as sub:
        sub.sendall(_resp("SSUBSCRIBE", channel))
        assert _read_until(sub, b":1\r\n") == _push("ssubscribe", channel, 1)
        # A channel of another slot on the same connection: it stays subscribed.
        sub.sendall(_resp("SSUBSCRIBE", other))
        assert _read_until(sub, b":2\r\n") == _push("ssubscribe", other, 2)
        assert source.call("SPUBLISH", channel, "before") == 1
        assert _read_until(sub, b"before\r\n").endswith(b"$6\r\nbefore\r\n")
        rc.move_slot(slot, target)
        assert _read_until(sub, b":1\r\n") == _push("sunsubscribe", channel, 1)
        assert source.call("SPUBLISH", other, "kept") == 1
        assert _read_until(sub, b"kept\r\n").endswith(b"$4\r\nkept\r\n")
        with pytest.raises(redis.exceptions.MovedError):
            source.call("SPUBLISH", channel, "after")
        assert target.call("SPUBLISH", channel, "after") == 0  # nobody there yet
    rc.move_slot(slot, source)


async def test_a_leave_read_with_its_slots_move_leaves_no_count_that_hides_the_next_move(
    rc: LocalRedisCluster,
) -> None:
    """The gateway's shard link (store/pubsub.py) counts its own SUNSUBSCRIBEs so as to
    tell their replies from the server's push when a slot moves away. A user left in the
    same poll in which that push was read: the leave's SUNSUBSCRIBE, written at the end of
    the turn and counted only then, was answered -MOVED (no reply to count off), and the
    count left over took the push of the slot's next move for its reply: the channel,
    subscribed again meanwhile, was lost without a word until the link reconnected."""
    channel = b"{c:leave}:ch"
    slot = rc.slot_of(channel)
    source = rc.owner_of_slot(slot)
    target = next(m for m in rc.masters() if m.port != source.port)
    moved: list[list[bytes]] = []

    async def resubscribed(_: float) -> None:
        return None

    link = PubSubLink(
        f"redis://{source.addr}",
        lambda _: None,
        resubscribed,
        lambda _: None,
        sharded=True,
        on_moved=lambda _, chans: moved.append(chans),
    )
    await link.start()
    loop = asyncio.get_running_loop()
    wake, leave = socket.socketpair()
    try:
        await link.subscribe([channel])

        left = asyncio.Event()

        def user_left() -> None:
            loop.remove_reader(leave)
            leave.recv(1)
            link.unsubscribe([channel])
            left.set()

        loop.add_reader(leave, user_left)
        wake.send(b"x")  # ready first: its callback runs before the push is read
        rc.move_slot(slot, target)  # the push is on the link's socket now
        await asyncio.wait_for(left.wait(), 5)
        await asyncio.sleep(0.3)  # the push read, the SUNSUBSCRIBE written and answered
        assert link._unsubscribing == {}
        assert moved == []  # the user had left: nothing to follow
        rc.move_slot(slot, source)
        await link.subscribe([channel])  # the user is back
        rc.move_slot(slot, target)
        await eventually(lambda: moved == [[channel]], "the slot's move followed")
        assert channel not in link.channels
    finally:
        wake.close()
        leave.close()
        await link.close()
        if rc.owner_of_slot(slot).port != source.port:
            rc.move_slot(slot, source)


def test_script_load_does_not_reach_replicas(rc: LocalRedisCluster) -> None:
    """Scripts live per node: a replica promoted by a failover answers NOSCRIPT to an
    EVALSHA the old master knew, so callers must fall back to EVAL / SCRIPT LOAD."""
    master = rc.owner_of("{c:script}")
    replica = rc.replicas_of(master)[0]
    sha = master.call("SCRIPT", "LOAD", "return redis.call('INCR', KEYS[1])")
    assert master.call("EVALSHA", sha, 1, "{c:script}:n") == 1
    master.call("WAIT", 1, 2000)
    assert master.call("SCRIPT", "EXISTS", sha) == [1]
    assert replica.call("SCRIPT", "EXISTS", sha) == [0]  # its effects replicated, not it


def test_reshard_with_redis_cli_moves_slots(rc: LocalRedisCluster) -> None:
    target = rc.masters()[0]
    before = len(rc.slots_of(target))
    out = rc.reshard(10, target)
    assert "Moving slot" in out
    assert len(rc.slots_of(target)) == before + 10


def test_kill_a_master_and_a_replica_takes_over_within_seconds(
    rc: LocalRedisCluster,
) -> None:
    rc.flushall()
    master = rc.owner_of("{c:failover}")
    replica = rc.replicas_of(master)[0]
    master.call("SET", "{c:failover}:x", "kept")
    master.call("WAIT", 1, 2000)  # on the replica before the kill: not lost
    slots = rc.slots_of(master)
    rc.kill(master, signal.SIGKILL)
    took = rc.wait_failover(master, timeout=20)
    print(f"\nfailover after SIGKILL: {took:.2f} s (node timeout 2000 ms)")
    assert took < 10
    assert rc.owner_of("{c:failover}").port == replica.port
    assert rc.slots_of(replica) == slots
    assert replica.call("GET", "{c:failover}:x") == "kept"
    client = _client(rc)
    try:
        client.set("{c:failover}:y", "after")
        assert client.get("{c:failover}:y") == "after"
    finally:
        client.close()
    rc.restart(master)  # comes back as a replica of the promoted one
    assert master.role == "replica" and master.master_id == replica.node_id


def test_a_paused_master_is_failed_over_and_rejoins_as_a_replica(rc: LocalRedisCluster) -> None:
    master = rc.owner_of("{c:hung}")
    replica = rc.replicas_of(master)[0]
    rc.kill(master, signal.SIGSTOP)  # hung, not dead: its connections stay open
    try:
        took = rc.wait_failover(master, timeout=20)
    finally:
        rc.kill(master, signal.SIGCONT)
    print(f"\nfailover after SIGSTOP: {took:.2f} s")
    assert rc.owner_of("{c:hung}").port == replica.port
    rc.wait_stable(15)  # it wakes up, sees the newer epoch and follows the new master
    assert master.role == "replica" and master.master_id == replica.node_id


def test_cluster_url_fixture_gives_an_empty_cluster_as_seeds(
    redis_cluster: LocalRedisCluster, cluster_url: str
) -> None:
    assert cluster_url == redis_cluster.seed_url
    assert cluster_url.count(",") == 5
    assert all(m.call("DBSIZE") == 0 for m in redis_cluster.masters())
    client = RedisCluster.from_url(f"redis://{redis_cluster.nodes[0].addr}")
    try:
        assert client.set("{u:alice}:x", "1")
    finally:
        client.close()


def test_a_node_that_dies_at_start_is_named_with_its_last_lines(
    redis_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = LocalRedisCluster(tmp_path)
    argv = cluster._argv
    monkeypatch.setattr(cluster, "_argv", lambda *a: [*argv(*a), "--no-such-directive", "1"])
    with pytest.raises(ClusterError, match=r"died at start:(.|\n)*no-such-directive"):
        cluster.start()
    assert cluster.nodes and not any(n.alive() for n in cluster.nodes)

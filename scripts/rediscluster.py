"""A local Redis Cluster of `redis-server --cluster-enabled yes` processes on loopback.

For the tests, the benchmarks and `scripts/cluster.py --redis-cluster`: start N masters with
R replicas each in about two seconds, find which master owns a key, kill a node and wait for
its replica to take over, move a slot with its keys while clients run.

    with LocalRedisCluster(Path("/tmp/rc")) as rc:
        print(rc.seed_url)            # redis://127.0.0.1:p1,127.0.0.1:p2,...
        master = rc.owner_of("{c:general}:stream")
        rc.kill(master)
        print(rc.wait_failover(master), "s")

Every node listens on a port whose cluster bus (port + 10000) is free too, both below the
kernel's ephemeral range so that outgoing connections of other processes cannot take them,
and far from the machine's own Redis on 6379. Nodes run without persistence (--save ''
--appendonly no); each has its own directory (nodes.conf, log) under `workdir`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from scripts.procs import bindable, stop_process, wait_port
from scripts.redisserver import HOST, redis_server_argv, redis_server_exe

__all__ = [
    "BUS_OFFSET",
    "ClusterError",
    "LocalRedisCluster",
    "RedisNode",
    "free_cluster_port",
    "free_cluster_ports",
]

BUS_OFFSET = 10000  # Redis's fixed cluster bus offset (cluster-port 0)
SLOTS = 16384
#: Ports are drawn from here: bus ports (+10000) stay below the ephemeral range (32768).
PORT_RANGE = (12000, 22000)
#: Never near the machine's Redis (6379 and its bus 16379).
AVOID = range(6300, 6500)


try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the starting process dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG), so a crashed test run leaves no cluster behind. Linux sends
    it when the forking *thread* ends: only used from the main thread (a node restarted
    from asyncio.to_thread would otherwise die with that worker thread)."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))


class ClusterError(RuntimeError):
    """The cluster could not be started or did not reach the expected state in time."""


def free_cluster_port(taken: set[int] | None = None) -> int:
    """A loopback port that is free together with its cluster bus port (port + 10000)."""
    taken = taken or set()
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        port = rnd.randrange(*PORT_RANGE)
        bus = port + BUS_OFFSET
        if port in AVOID or bus in AVOID or {port, bus} & taken:
            continue
        if bindable(port) and bindable(bus):
            return port
    raise ClusterError("no free port pair (port, port + 10000) found")


def free_cluster_ports(n: int) -> int:
    """The first of `n` consecutive loopback ports free together with their bus ports
    (what `scripts/cluster.py --redis-cluster --redis-port P` takes)."""
    rnd = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(500):
        first = rnd.randrange(PORT_RANGE[0], PORT_RANGE[1] - n)
        ports = [p for q in range(first, first + n) for p in (q, q + BUS_OFFSET)]
        if not any(p in AVOID for p in ports) and all(bindable(p) for p in ports):
            return first
    raise ClusterError(f"no {n} consecutive free port pairs (port, port + 10000) found")


class RedisNode:
    """One cluster node process. `role` and `node_id` are as last read by refresh()."""

    def __init__(self, port: int, workdir: Path, argv: list[str]) -> None:
        self.port = port
        self.workdir = workdir
        self.argv = argv
        self.proc: subprocess.Popen[bytes] | None = None
        self.role = "unknown"  # "master" or "replica"
        self.node_id = ""
        self.master_id = ""  # for a replica: its master's node id
        self.killed_at: float | None = None
        self.paused = False  # SIGSTOPped through LocalRedisCluster.kill()

    def __repr__(self) -> str:
        state = "alive" if self.alive() else "dead"
        return f"<RedisNode {self.addr} {self.role} {state}>"

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.killed_at = None
        self.paused = False
        main_thread = threading.current_thread() is threading.main_thread()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Own session: a terminal's Ctrl+C reaches only the starting script, which
            # stops its gateways before the cluster.
            start_new_session=True,
            preexec_fn=_die_with_parent if _prctl is not None and main_thread else None,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A plain (non-cluster) connection to this node; close it after use."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def call(self, *args: Any, timeout: float = 5.0) -> Any:
        """One command, its raw reply (redis-py's reply parsing is off: INFO is text)."""
        r = self.client(timeout)
        r.response_callbacks.clear()  # this client's own copy
        try:
            return r.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            r.close()

    def tail(self, n: int = 10) -> str:
        """The last lines of the node's log and stderr: why it died."""
        lines: list[str] = []
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        if self.proc is not None and self.proc.stderr is not None and not self.alive():
            with contextlib.suppress(OSError, ValueError):
                lines += self.proc.stderr.read().decode(errors="replace").splitlines()[-n:]
        return "\n".join(lines) or "(no output)"


def _parse_info(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[key.strip()] = value.strip()
    return out


class LocalRedisCluster:
    """`masters` masters with `replicas` replicas each, started by start(), stopped by
    stop() (or as a context manager)."""

    def __init__(
        self,
        workdir: Path | str,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        start_timeout: float = 30.0,
        require_full_coverage: bool = True,
        ports: Sequence[int] | None = None,
        persist: bool = False,
    ) -> None:
        """`require_full_coverage` is Redis's default (yes): from the moment a dead master
        is flagged FAIL until its replica is promoted (about 1 s with a 2 s node timeout)
        every master answers -CLUSTERDOWN, for every slot; with False the other shards
        keep serving.

        `ports`: the nodes' ports (one each; their bus ports are port + 10000), instead of
        free ones drawn at random. `persist`: each node keeps its data (append-only file,
        fsync every second) and its nodes.conf in `workdir`, and start() resumes the
        cluster found there (same ports) instead of creating a new one."""
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        if ports is not None and len(ports) != masters * (1 + replicas):
            raise ValueError(f"{masters * (1 + replicas)} ports needed, {len(ports)} given")
        self.workdir = Path(workdir)
        self.ports = list(ports) if ports is not None else None
        self.persist = persist
        #: start() found a cluster in workdir and brought it back (persist only).
        self.resumed = False
        self.n_masters = masters
        self.n_replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.require_full_coverage = require_full_coverage
        self.start_timeout = start_timeout
        self.nodes: list[RedisNode] = []
        #: slot -> node id of its master, as last read by refresh()
        self._slot_owner: list[str] = []

    # --- start and stop ------------------------------------------------------------------

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _argv(self, exe: str, port: int, workdir: Path) -> list[str]:
        return redis_server_argv(
            port,
            workdir,
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / "nodes.conf"),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "yes" if self.require_full_coverage else "no",
            "--logfile", str(workdir / "redis.log"),
            "--loglevel", "notice",
            "--enable-debug-command", "local",
            # Replicas copy their master at once (the default waits 5 s for more replicas):
            # a failover right after start needs a replica that has the data.
            "--repl-diskless-sync-delay", "0",
            # CLUSTER SLOTS lists a replica only once its replication offset is not 0; on
            # an idle master that takes the first replication ping (default every 10 s).
            "--repl-ping-replica-period", "1",
            appendfsync="everysec" if self.persist else None,
            exe=exe,
        )  # fmt: skip

    def start(self) -> None:
        """Start the nodes, create the cluster and wait until every node serves the same
        slot map with every replica in sync. ClusterError (with the node's last log lines)
        when something does not come up."""
        if any(n.alive() for n in self.nodes):
            raise ClusterError("already started")
        self.nodes = []
        exe = redis_server_exe()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli is not on PATH: apt-get install redis-tools")
        self.workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.start_timeout
        taken: set[int] = set()
        total = self.n_masters * (1 + self.n_replicas)
        found = self.existing_ports(self.workdir) if self.persist else None
        if found is not None and self.ports is not None and found != self.ports:
            raise ClusterError(
                f"the Redis Cluster kept in {self.workdir} runs on ports "
                f"{found[0]}-{found[-1]}, not {self.ports[0]}-{self.ports[-1]}"
            )
        try:
            if found is not None:  # bring the kept cluster back: same nodes, same data
                self.ports = found
                for i in range(total):
                    self.nodes.append(self._spawn_node(exe, i, taken))
                for node in self.nodes:
                    assert node.proc is not None
                    try:
                        wait_port(node.port, node.proc, max(0.5, deadline - time.monotonic()))
                    except (RuntimeError, TimeoutError) as exc:
                        raise ClusterError(
                            f"redis node {node.addr} did not come back:\n{node.tail()}"
                        ) from exc
                self.wait_stable(max(1.0, deadline - time.monotonic()))
                self.resumed = True
                return
            for i in range(total):
                self.nodes.append(self._spawn_node(exe, i, taken))
            for node in self.nodes:
                self._wait_listening(node, exe, taken, deadline)
            self._create(cli, deadline)
            self._touch_masters()
            self.wait_stable(
                max(1.0, deadline - time.monotonic()),
                expect=(self.n_masters, self.n_replicas),
            )
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def existing_ports(workdir: Path | str) -> list[int] | None:
        """The ports of a cluster kept in `workdir` (every node's directory with its
        nodes.conf), in node order, or None if there is none."""
        found: dict[int, int] = {}
        root = Path(workdir)
        if not root.is_dir():
            return None
        for d in root.iterdir():
            index, sep, port = d.name.removeprefix("node").partition("-")
            named = d.name.startswith("node") and sep and index.isdigit() and port.isdigit()
            if named and (d / "nodes.conf").exists():
                found[int(index)] = int(port)
        if not found or sorted(found) != list(range(len(found))):
            return None
        return [found[i] for i in range(len(found))]

    def _spawn_node(self, exe: str, index: int, taken: set[int]) -> RedisNode:
        port = self.ports[index] if self.ports is not None else free_cluster_port(taken)
        taken.update((port, port + BUS_OFFSET))
        workdir = self.workdir / f"node{index}-{port}"
        node = RedisNode(port, workdir, self._argv(exe, port, workdir))
        node.spawn()
        return node

    def _wait_listening(self, node: RedisNode, exe: str, taken: set[int], deadline: float) -> None:
        """Wait for the node; if it died on a port that someone took meanwhile, try
        another port pair (up to 5 times)."""
        for attempt in range(5):
            assert node.proc is not None
            try:
                wait_port(node.port, node.proc, max(0.5, deadline - time.monotonic()))
                return
            except RuntimeError as exc:
                tail = node.tail()
                if "in use" not in tail or attempt == 4 or self.ports is not None:
                    raise ClusterError(f"redis node {node.addr} died at start:\n{tail}") from exc
            except TimeoutError as exc:
                raise ClusterError(
                    f"redis node {node.addr} does not listen:\n{node.tail()}"
                ) from exc
            port = free_cluster_port(taken)
            taken.update((port, port + BUS_OFFSET))
            node.port = port
            node.workdir = node.workdir.with_name(f"{node.workdir.name}-retry{attempt}-{port}")
            node.argv = self._argv(exe, port, node.workdir)
            node.spawn()

    def _create(self, cli: str, deadline: float) -> None:
        argv = [cli, "--cluster", "create", *[n.addr for n in self.nodes]]
        argv += ["--cluster-replicas", str(self.n_replicas), "--cluster-yes"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                timeout=max(5.0, deadline - time.monotonic()),
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"redis-cli --cluster create timed out: {exc.output!r}") from exc
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in out:
            dead = [f"{n.addr}:\n{n.tail()}" for n in self.nodes if not n.alive()]
            raise ClusterError(
                f"redis-cli --cluster create failed ({done.returncode}):\n{out[-2000:]}"
                + "".join(f"\ndead node {d}" for d in dead)
            )

    def _touch_masters(self) -> None:
        """One replicated write per master (SET and DEL of a key in its slots): its
        replicas' offsets leave 0 at once, so they show in CLUSTER SLOTS without waiting
        for the next replication ping."""
        for node in self.nodes:
            with contextlib.suppress(redis.RedisError, StopIteration, ValueError):
                me = next(x for x in node.call("CLUSTER", "NODES").splitlines() if "myself" in x)
                fields = me.split()
                if "master" not in fields[2] or len(fields) < 9:
                    continue
                first, _, last = fields[8].partition("-")
                lo, hi = int(first), int(last or first)
                key = next(
                    k for i in range(100000) if lo <= self.slot_of(k := f"rc:touch:{i}") <= hi
                )
                node.call("SET", key, "1")
                node.call("DEL", key)

    def stop(self) -> None:
        """SIGTERM every node (in parallel) and wait for them; SIGKILL after 10 s."""
        for node in self.nodes:
            if node.paused and node.alive():
                self.kill(node, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        procs = [n.proc for n in self.nodes if n.proc is not None]
        if procs:
            with concurrent.futures.ThreadPoolExecutor(len(procs)) as pool:
                list(pool.map(lambda p: stop_process(p, signal.SIGTERM, 10.0), procs))
        for p in procs:
            if p.stderr is not None:
                p.stderr.close()

    # --- addresses -----------------------------------------------------------------------

    @property
    def seeds(self) -> str:
        """Every node as `host:port,host:port,...`."""
        return ",".join(n.addr for n in self.nodes)

    @property
    def seed_url(self) -> str:
        """`redis://host:port,host:port,...`: every node as seeds."""
        return f"redis://{self.seeds}"

    @property
    def url(self) -> str:
        """A redis:// URL of one live master."""
        return f"redis://{self.masters()[0].addr}"

    # --- the cluster's view --------------------------------------------------------------

    def live(self) -> list[RedisNode]:
        """Nodes that run and are not paused (SIGSTOP through kill())."""
        return [n for n in self.nodes if n.alive() and not n.paused]

    def _by_id(self) -> dict[str, RedisNode]:
        return {n.node_id: n for n in self.nodes if n.node_id}

    def refresh(self) -> None:
        """Read roles and the slot map from the first live node that answers."""
        last: Exception | None = None
        for node in self.live():
            try:
                text = node.call("CLUSTER", "NODES")
                slots = node.call("CLUSTER", "SLOTS")
            except redis.RedisError as exc:
                last = exc
                continue
            by_port = {n.port: n for n in self.nodes}
            for line in str(text).splitlines():
                fields = line.split()
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                n = by_port.get(port)
                if n is None:
                    continue
                flags = fields[2].split(",")
                n.node_id = fields[0]
                n.role = "master" if "master" in flags else "replica"
                n.master_id = fields[3] if fields[3] != "-" else ""
            owner = [""] * SLOTS
            for first, last_slot, master, *_ in slots:
                for s in range(int(first), int(last_slot) + 1):
                    owner[s] = str(master[2])
            self._slot_owner = owner
            return
        raise ClusterError(f"no live node answers CLUSTER NODES: {last}")

    def masters(self) -> list[RedisNode]:
        """Live masters that serve slots, in slot order."""
        self.refresh()
        first: dict[str, int] = {}
        for slot, node_id in enumerate(self._slot_owner):
            first.setdefault(node_id, slot)
        masters = [n for n in self.live() if n.role == "master" and n.node_id in first]
        return sorted(masters, key=lambda n: first[n.node_id])

    def replicas_of(self, master: RedisNode) -> list[RedisNode]:
        self.refresh()
        return [n for n in self.live() if n.role == "replica" and n.master_id == master.node_id]

    @staticmethod
    def slot_of(key: str | bytes) -> int:
        """The key's hash slot (the part inside the first `{...}` if any, as Redis does)."""
        return int(key_slot(key.encode() if isinstance(key, str) else key))

    def owner_of(self, key: str | bytes) -> RedisNode:
        """The master serving the key's slot."""
        return self.owner_of_slot(self.slot_of(key))

    def owner_of_slot(self, slot: int) -> RedisNode:
        self.refresh()
        node = self._by_id().get(self._slot_owner[slot])
        if node is None:
            raise ClusterError(f"slot {slot} has no known master")
        return node

    def slots_of(self, master: RedisNode) -> list[int]:
        self.refresh()
        return [s for s, owner in enumerate(self._slot_owner) if owner == master.node_id]

    def _views(self) -> dict[int, tuple[str, list[tuple[int, int, int, tuple[int, ...]]]]]:
        """port -> (cluster_state, normalised CLUSTER SLOTS) of every live node."""
        out = {}
        for node in self.live():
            try:
                state = _parse_info(node.call("CLUSTER", "INFO", timeout=1.0))["cluster_state"]
                raw = node.call("CLUSTER", "SLOTS", timeout=1.0)
            except (redis.RedisError, KeyError):
                continue
            norm = sorted(
                (int(r[0]), int(r[1]), int(r[2][1]), tuple(sorted(int(x[1]) for x in r[3:])))
                for r in raw
            )
            out[node.port] = (state, norm)
        return out

    def _stable(self, replicas: bool = True, expect: tuple[int, int] | None = None) -> str | None:
        """Why the cluster is not yet stable, or None: every live node answers, says ok
        and serves the same complete slot map (with `replicas` in sync, if asked)."""
        views = self._views()
        live = self.live()
        if len(views) < len(live):
            return f"{len(live) - len(views)} live nodes do not answer"
        states = {p: v[0] for p, v in views.items()}
        if any(s != "ok" for s in states.values()):
            return f"cluster_state: {states}"
        maps = {repr(v[1]) for v in views.values()}
        if len(maps) != 1:
            return f"nodes disagree on the slot map ({len(maps)} versions)"
        ranges = next(iter(views.values()))[1]
        if sum(b - a + 1 for a, b, *_ in ranges) != SLOTS:
            return "not every slot is served"
        if expect is not None:  # (masters, replicas each): right after create
            masters = {port for _, _, port, _ in ranges}
            if len(masters) != expect[0] or any(len(r[3]) != expect[1] for r in ranges):
                return f"expected {expect[0]} masters with {expect[1]} replicas: {ranges}"
        if replicas:
            for node in live:
                info = _parse_info(node.call("INFO", "replication", timeout=1.0))
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    return f"replica {node.addr} not in sync with its master"
        return None

    def wait_stable(
        self, timeout: float = 10.0, replicas: bool = True, expect: tuple[int, int] | None = None
    ) -> float:
        """Wait until every live node says cluster_state:ok and serves the same complete
        slot map (and every live replica's link is up); the seconds it took."""
        start = time.monotonic()
        why: str | None = "not checked"
        while time.monotonic() - start < timeout:
            dead = [n for n in self.nodes if n.proc is not None and not n.alive()]
            dead = [n for n in dead if n.killed_at is None]
            if dead:
                raise ClusterError(f"redis node {dead[0].addr} died:\n{dead[0].tail()}")
            why = self._stable(replicas, expect)
            if why is None:
                self.refresh()
                return time.monotonic() - start
            time.sleep(0.05)
        raise ClusterError(f"cluster not stable after {timeout:.1f} s: {why}")

    # --- faults --------------------------------------------------------------------------

    def kill(self, node: RedisNode, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the node; for SIGKILL/SIGTERM wait until it has exited. SIGSTOP
        pauses it (a hung master: the others fail it over), SIGCONT resumes it."""
        assert node.proc is not None
        if sig != signal.SIGCONT:
            node.killed_at = time.monotonic()
        node.paused = sig == signal.SIGSTOP
        node.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            node.proc.wait(15)

    def wait_failover(self, old_master: RedisNode, timeout: float = 20.0) -> float:
        """Wait until a replica of `old_master` serves all its slots and every reachable
        node says cluster_state:ok and agrees; the seconds since the kill (or since this
        call, if the node was not killed through kill())."""
        start = old_master.killed_at or time.monotonic()
        old_id = old_master.node_id
        slots = {s for s, owner in enumerate(self._slot_owner) if owner == old_id}
        if not slots:
            raise ClusterError(f"{old_master.addr} served no slots")
        why: str | None = "not checked"
        while time.monotonic() - start < timeout:
            why = self._stable(replicas=False)
            if why is None:
                self.refresh()
                owners = {self._slot_owner[s] for s in slots}
                if old_id not in owners:
                    return time.monotonic() - start
                why = "the old master still owns its slots"
            time.sleep(0.05)
        raise ClusterError(f"no failover of {old_master.addr} after {timeout:.1f} s: {why}")

    def restart(self, node: RedisNode, timeout: float = 15.0) -> None:
        """Start a stopped node again on its port with its nodes.conf: it rejoins (a
        former master that lost its slots comes back as a replica)."""
        if node.alive():
            raise ClusterError(f"{node.addr} is running")
        node.spawn()
        assert node.proc is not None
        try:
            wait_port(node.port, node.proc, timeout)
        except (RuntimeError, TimeoutError) as exc:
            raise ClusterError(f"{node.addr} did not restart:\n{node.tail()}") from exc
        self.wait_stable(timeout)

    # --- slots ---------------------------------------------------------------------------

    def move_slot(
        self, slot: int, to_master: RedisNode, batch: int = 100, timeout_ms: int = 5000
    ) -> int:
        """Move one slot with its keys to `to_master` as `redis-cli --cluster reshard`
        does (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE on every master);
        the number of keys moved. Clients see -ASK meanwhile, -MOVED afterwards."""
        source = self.owner_of_slot(slot)
        if source.node_id == to_master.node_id:
            return 0
        masters = self.masters()
        to_master.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", to_master.node_id)
        moved = 0
        while True:
            keys = source.call("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            source.call(
                "MIGRATE", HOST, to_master.port, "", 0, timeout_ms, "KEYS", *keys,
                timeout=timeout_ms / 1000 + 5,
            )  # fmt: skip
            moved += len(keys)
        # The target first (so it never refuses its own slot), then the source, then the
        # others, as redis-cli does; the rest learn it by gossip.
        to_master.call("CLUSTER", "SETSLOT", slot, "NODE", to_master.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "NODE", to_master.node_id)
        for m in masters:
            if m.node_id not in (source.node_id, to_master.node_id):
                with contextlib.suppress(redis.RedisError):
                    m.call("CLUSTER", "SETSLOT", slot, "NODE", to_master.node_id)
        self.wait_stable(10.0, replicas=False)
        return moved

    def reshard(self, slots: int, to_master: RedisNode, source: RedisNode | None = None) -> str:
        """`redis-cli --cluster reshard`, non-interactive: move `slots` slots to
        `to_master` from `source` (default: from all other masters). Its output."""
        cli = shutil.which("redis-cli")
        if cli is None:
            raise FileNotFoundError("redis-cli not on PATH")
        self.refresh()
        argv = [
            cli, "--cluster", "reshard", to_master.addr,
            "--cluster-from", source.node_id if source is not None else "all",
            "--cluster-to", to_master.node_id,
            "--cluster-slots", str(slots),
            "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise ClusterError(f"redis-cli --cluster reshard failed:\n{out[-2000:]}")
        self.wait_stable(10.0, replicas=False)
        return out

    # --- bulk ----------------------------------------------------------------------------

    def flushall(self) -> None:
        """FLUSHALL on every live master (replicas follow), as the standalone fixture does."""
        for m in self.masters():
            m.call("FLUSHALL")

    def info_all(self, section: str = "default") -> dict[str, dict[str, Any]]:
        """INFO `section` of every live node, keyed by host:port."""
        out = {}
        for node in self.live():
            r = node.client()
            try:
                out[node.addr] = dict(r.info(section))
            finally:
                r.close()
        return out

    def iter_clients(self) -> Iterator[tuple[RedisNode, redis.Redis]]:
        """(node, plain connection) for every live node; each closed after its turn."""
        for node in self.live():
            r = node.client()
            try:
                yield node, r
            finally:
                r.close()

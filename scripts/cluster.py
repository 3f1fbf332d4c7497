"""Run the compose topology as local processes: redis-server plus N gateways, supervised.

    python3 scripts/cluster.py                 # redis on 6390, gateways on 8001-8003
    python3 scripts/cluster.py --gateways 2 --redis-port 6391 --first-port 9001
    python3 scripts/cluster.py --redis-cluster # a 3-master, 3-replica Redis Cluster instead

Redis runs with append-only persistence (appendfsync everysec) in ./run/redis. A gateway's
address is printed once it actually listens (seen in the kernel's table of listening
sockets: nothing connects to it to find out). Every child's output is shown prefixed with
its name (`[gateway 2] ...`). When a gateway dies, the script says which one, its exit code
and its last log line, keeps the others running and restarts it after a short delay
(doubling while it keeps crashing soon after start). When Redis dies, everything stops.
Ctrl+C, SIGTERM or SIGHUP (the terminal closed) stops the gateways (each says
`* server shutting down`), then Redis, and exits 0; a busy port fails the start clearly.

With --redis-cluster, Redis is a local Redis Cluster (scripts/rediscluster.py): six
`redis-server --cluster-enabled yes` nodes on --redis-port and the five ports after it
(6390-6395; their cluster bus ports are each + 10000), with append-only persistence, in
<data-dir>/cluster (a directory and a log per node). The next run with the same data dir
brings the same cluster back, data included (on the same ports). The gateways get every
node as seeds (`--redis-url redis://h:p,h:p,...`). A node that dies is reported and not
restarted: its replica takes over (kill a master to watch a failover); only when every
node is gone does everything stop.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Backoff: the same restart policy as --workers (a gateway that keeps crashing soon after
# its start waits longer each time)
from gateway.workers import Backoff, describe_exit  # noqa: E402
from scripts.procs import stop_process, wait_port  # noqa: E402
from scripts.rediscluster import (  # noqa: E402
    BUS_OFFSET,
    ClusterError,
    LocalRedisCluster,
    RedisNode,
)
from scripts.redisserver import redis_server_argv, redis_server_exe  # noqa: E402

LISTEN_TIMEOUT = 20.0
DEFAULT_REDIS_PORT = 6390
CLUSTER_NODES = 6  # 3 masters with one replica each


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        say(f"cluster: error: {message} (see python3 scripts/cluster.py --help)", err=True)
        raise SystemExit(2)


def _port(text: str) -> int:
    """argparse type: a TCP port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return value


def _count(low: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: give {low} or more")
        return value

    return parse


def say(text: str, err: bool = False) -> None:
    """Print, tolerating a terminal that has gone away (SIGHUP: writes fail with EIO)."""
    with contextlib.suppress(OSError, ValueError):
        stream = sys.stderr if err else sys.stdout
        stream.write(text + "\n")
        stream.flush()


def port_busy(port: int) -> str | None:
    """Why `port` cannot be listened on (as the gateway does, with SO_REUSEADDR), or None."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


#: The kernel's table of IPv4 TCP sockets (Linux), and its state column's LISTEN.
TCP_TABLE, TCP_LISTEN = "/proc/net/tcp", "0A"


def _table_address(ip: str) -> str:
    """An IPv4 address as TCP_TABLE shows it: its four bytes read as one number in this
    machine's byte order, in hex (127.0.0.1 is 0100007F on x86)."""
    return f"{int.from_bytes(socket.inet_aton(ip), sys.byteorder):08X}"


#: A listening socket's local addresses that a connection to 127.0.0.1 reaches.
_REACHED_FROM_LOOPBACK = frozenset(_table_address(ip) for ip in ("127.0.0.1", "0.0.0.0"))


def listening_ports() -> set[int] | None:
    """The ports on which a TCP socket listens that a connection to 127.0.0.1 would reach,
    from the kernel's table of sockets (state LISTEN); None where there is no such table
    (not Linux).

    A gateway is up once its ports are all in it. This script used to find that out by
    connecting to each port every 0.1 s: a real connection each time, which the gateway
    logged (`event=connect`, then `event=disconnect ... state=nick by=peer`), and which was
    then the "last log line" reported when that gateway died, in place of its own. Of the
    other ways, the gateway's `event=listening` line is a log line, not an interface (at
    `--log-level warning` it is never printed), and --workers' ready pipe
    (gateway/workers.py) would make the gateway a worker, which leaves the check of its
    ports to a supervisor and listens with SO_REUSEPORT. The table answers the question
    the connection asked, without the gateway taking part.

    IPv4 only (tcp, not tcp6): a connection to 127.0.0.1 reaches a socket on 127.0.0.1 or
    0.0.0.0, never a gateway's IPv6 socket (asyncio makes those IPv6-only), and 127.0.0.1
    is where the connection went and the address this script prints. A port bound but not
    listening (state CLOSE) is not in the set."""
    ports: set[int] = set()
    try:
        with open(TCP_TABLE, encoding="ascii") as table:
            next(table, None)  # the header
            for line in table:
                # "sl: local_address remote_address st ...", addresses as hex IP:port
                fields = line.split(None, 4)
                if len(fields) > 3 and fields[3] == TCP_LISTEN:
                    address, _, port = fields[1].partition(":")
                    if address in _REACHED_FROM_LOOPBACK:
                        ports.add(int(port, 16))
    except OSError:
        return None
    return ports


def listens(ports: list[int], table: set[int] | None) -> bool:
    """Whether every one of `ports` listens, by `table` (listening_ports, read once for
    all the gateways being waited for). Without a table (not Linux): by connecting to
    each, as before, which the gateway logs as a connection."""
    if table is not None:
        return all(port in table for port in ports)
    for port in ports:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
        except OSError:
            return False
    return True


try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if cluster.py itself dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG). Looked up before forking: nothing here may take a lock."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))


class Child:
    """A child process whose output is echoed with a prefix; the last lines are kept."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._echo: threading.Thread | None = None

    def start(self) -> None:
        self.tail.clear()
        # Own process group: Ctrl+C and the terminal's SIGHUP reach only this script, which
        # stops the gateways (they record cursors in Redis) before Redis itself. Not its
        # own session, which Linux's autogroup scheduler would give a CPU share of its own
        # (gateway/workers.py).
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
        self._echo = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._echo.start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self.tail.append(line)
                say(f"[{self.name}] {line}")
        proc.stdout.close()

    def last_line(self) -> str:
        if self._echo is not None:
            self._echo.join(1)  # the process has exited: let its last output arrive
        return self.tail[-1] if self.tail else "(no output)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, signal.SIGTERM, timeout)
        if self._echo is not None:
            self._echo.join(2)
        return code


class Gateway(Child):
    def __init__(
        self,
        index: int,
        port: int,
        metrics_port: int,
        web_port: int,
        argv: list[str],
        env: dict[str, str],
        irc_port: int = 0,
    ) -> None:
        super().__init__(f"gateway {index}", argv, env)
        self.index = index
        self.port = port
        self.metrics_port = metrics_port
        self.web_port = web_port
        self.irc_port = irc_port
        self.up = False
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.backoff = Backoff()
        self.launches = 0

    def ports(self) -> list[int]:
        return [port for port, _ in self._ports()]

    def _ports(self) -> list[tuple[int, str]]:
        """Each port this gateway listens on, with the option that chooses it."""
        named = [
            (self.port, "--first-port"),
            (self.metrics_port, "--metrics-first-port"),
            (self.web_port, "--web-first-port"),
            (self.irc_port, "--irc-first-port"),
        ]
        return [(port, option) for port, option in named if port]

    def busy(self) -> str | None:
        """Why this gateway cannot start, naming the option that moves the busy port."""
        for port, option in self._ports():
            why = port_busy(port)
            if why:
                return f"port {port} is busy ({why}); choose others with {option}"
        return None

    def launch(self) -> None:
        self.up = False
        self.restart_at = None
        self.started_at = time.monotonic()
        self.launches += 1
        self.start()


def _node_exit(node: RedisNode) -> str:
    assert node.proc is not None
    lines = node.tail(1).splitlines()
    return f"{describe_exit(node.proc.returncode)}; last log line: {lines[-1] if lines else ''}"


def _cluster_alive(rc: LocalRedisCluster, reported: set[int]) -> bool:
    """Say which cluster nodes died since the last call; False once none is left."""
    for node in rc.nodes:
        if node.proc is not None and node.proc.poll() is not None and node.port not in reported:
            reported.add(node.port)
            after = "its replica takes over" if node.role == "master" else "not restarted"
            say(
                f"cluster: redis node {node.addr} ({node.role}) exited ({_node_exit(node)}); "
                f"{after}",
                err=True,
            )
    if rc.live():
        return True
    say("cluster: every Redis Cluster node is gone; stopping everything", err=True)
    return False


def main() -> int:
    parser = _Parser(
        prog="python3 scripts/cluster.py",
        description=__doc__.split("\n\n")[0],
        epilog="Other options are passed to every gateway (see python3 server.py --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--gateways", type=_count(1), default=3, metavar="N", help="gateway processes to run"
    )
    parser.add_argument(
        "--first-port",
        type=_port,
        metavar="PORT",
        default=8001,
        help="the first gateway's telnet port; the others count up from it",
    )
    parser.add_argument(
        "--redis-port",
        type=_port,
        default=argparse.SUPPRESS,  # its default depends on the mode: said in the help
        metavar="PORT",
        help=f"redis-server's port (default: {DEFAULT_REDIS_PORT}); with --redis-cluster the "
        f"first of the six nodes' ports (default: {DEFAULT_REDIS_PORT}, or the kept "
        "cluster's)",
    )
    parser.add_argument(
        "--metrics-first-port",
        type=_port,
        metavar="PORT",
        default=9101,
        help="the first gateway's /metrics and /healthz port; 0: none",
    )
    parser.add_argument(
        "--web-first-port",
        type=_port,
        default=8081,
        metavar="PORT",
        help="the first web page's port; 0: none",
    )
    parser.add_argument(
        "--irc-first-port",
        type=_port,
        default=6667,
        metavar="PORT",
        help="the first IRC door's port; 0: none",
    )
    parser.add_argument(
        "--data-dir",
        default=str(ROOT / "run" / "redis"),
        metavar="DIR",
        help="where Redis keeps its data (append-only file; the cluster in DIR/cluster)",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a local 3-master, 3-replica Redis Cluster instead of one redis-server",
    )
    args, gateway_args = parser.parse_known_args()
    args.redis_port = getattr(args, "redis_port", None)

    try:
        redis_exe = redis_server_exe()
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    try:
        Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--data-dir {args.data_dir}: {exc.strerror or exc}")
    cluster_dir = Path(args.data_dir) / "cluster"
    cluster_ports: list[int] = []
    if args.redis_cluster:
        kept = LocalRedisCluster.existing_ports(cluster_dir)
        if args.redis_port is None:
            args.redis_port = kept[0] if kept else DEFAULT_REDIS_PORT
        cluster_ports = [args.redis_port + i for i in range(CLUSTER_NODES)]
        if cluster_ports[-1] + BUS_OFFSET > 65535:
            parser.error(
                f"--redis-port {args.redis_port}: the cluster's nodes use it and the "
                f"{CLUSTER_NODES - 1} ports after it, and their bus ports are each + "
                f"{BUS_OFFSET}: give at most {65535 - BUS_OFFSET - CLUSTER_NODES + 1}"
            )
        if kept and kept != cluster_ports:
            parser.error(
                f"--redis-port {args.redis_port}: the Redis Cluster kept in {cluster_dir} runs "
                f"on ports {kept[0]}-{kept[-1]}; give --redis-port {kept[0]} (or leave it "
                "out), or another --data-dir for a new cluster"
            )
    elif args.redis_port is None:
        args.redis_port = DEFAULT_REDIS_PORT

    # Handlers first, so a signal during start-up also stops cleanly.
    stopping: list[str] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    url = f"redis://127.0.0.1:{args.redis_port}/0"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    gateways = [
        Gateway(
            i + 1,
            args.first_port + i,
            args.metrics_first_port + i if args.metrics_first_port else 0,
            args.web_first_port + i if args.web_first_port else 0,
            [
                sys.executable,
                str(ROOT / "server.py"),
                "--port",
                str(args.first_port + i),
                "--redis-url",
                url,
                "--metrics-port",
                str(args.metrics_first_port + i if args.metrics_first_port else 0),
                "--web-port",
                str(args.web_first_port + i if args.web_first_port else 0),
                "--irc-port",
                str(args.irc_first_port + i if args.irc_first_port else 0),
                *gateway_args,
            ],
            env,
            args.irc_first_port + i if args.irc_first_port else 0,
        )
        for i in range(args.gateways)
    ]
    # A busy port fails the start: otherwise an old cluster's orphan would answer for it.
    redis_ports = [args.redis_port] if not args.redis_cluster else list(cluster_ports)
    redis_ports += [p + BUS_OFFSET for p in cluster_ports]
    busy = [
        f"redis: port {p} is busy ({why}); choose others with --redis-port"
        for p in redis_ports
        if (why := port_busy(p))
    ]
    busy += [f"{gw.name}: {why}" for gw in gateways if (why := gw.busy())]
    if busy:
        for line in busy:
            say(f"cluster: {line}", err=True)
        say("cluster: is another cluster.py (or something else) running? nothing started", True)
        return 1

    redis = Child(
        "redis",
        redis_server_argv(args.redis_port, args.data_dir, appendfsync="everysec", exe=redis_exe),
    )
    redis_cluster = (
        LocalRedisCluster(cluster_dir, ports=cluster_ports, persist=True)
        if args.redis_cluster
        else None
    )
    reported: set[int] = set()  # cluster nodes whose exit was said
    code = 0
    try:
        if redis_cluster is not None:
            resuming = LocalRedisCluster.existing_ports(cluster_dir) is not None
            say(
                f"redis: bringing back the Redis Cluster kept in {cluster_dir}"
                if resuming
                else "redis: starting a Redis Cluster of 3 masters with 1 replica each"
            )
            try:
                redis_cluster.start()
            except (ClusterError, OSError) as exc:
                again = f" (remove {cluster_dir} to start a new, empty one)" if resuming else ""
                say(f"cluster: the Redis Cluster did not start: {exc}{again}", err=True)
                return 1
            url = redis_cluster.seed_url
            for gw in gateways:
                gw.argv[gw.argv.index("--redis-url") + 1] = url
            for m in redis_cluster.masters():
                slots = redis_cluster.slots_of(m)
                replicas = ", ".join(r.addr for r in redis_cluster.replicas_of(m))
                say(f"redis: master {m.addr} slots {slots[0]}-{slots[-1]}, replica {replicas}")
            say(f"redis: {url} (node logs in {redis_cluster.workdir})")
        else:
            redis.start()
            assert redis.proc is not None
            try:
                wait_port(args.redis_port, redis.proc)
            except (RuntimeError, TimeoutError):
                say(f"cluster: redis-server did not start ({redis.last_line()})", err=True)
                return 1
            say(f"redis: {url}")
        for gw in gateways:
            gw.launch()
        announced = False
        while not stopping:
            now = time.monotonic()
            if redis_cluster is not None:
                if not _cluster_alive(redis_cluster, reported):
                    code = 1
                    break
            elif redis.proc is not None and redis.proc.poll() is not None:
                say(
                    f"cluster: redis-server exited ({describe_exit(redis.proc.returncode)}; "
                    f"last log line: {redis.last_line()}); stopping everything",
                    err=True,
                )
                code = 1
                break
            # the kernel's listening sockets, read once a tick while a gateway starts
            waiting = any(gw.running() and not gw.up for gw in gateways)
            table = listening_ports() if waiting else None
            for gw in gateways:
                if gw.proc is not None and gw.proc.poll() is not None and gw.restart_at is None:
                    delay = gw.backoff.next(now - gw.started_at if gw.up else 0.0)
                    say(
                        f"cluster: {gw.name} (port {gw.port}) exited "
                        f"({describe_exit(gw.proc.returncode)}; last log line: "
                        f"{gw.last_line()}); restarting in {delay:.1f} s",
                        err=True,
                    )
                    gw.up = False
                    gw.restart_at = now + delay
                elif gw.restart_at is not None and now >= gw.restart_at:
                    why = gw.busy()
                    if why:
                        delay = gw.backoff.next()
                        gw.restart_at = now + delay
                        say(f"cluster: {gw.name}: {why}; retrying in {delay:.1f} s", True)
                    else:
                        gw.launch()
                elif gw.running() and not gw.up:
                    if listens(gw.ports(), table):
                        gw.up = True
                        again = " (restarted)" if gw.launches > 1 else ""
                        web = f", web http://127.0.0.1:{gw.web_port}/" if gw.web_port else ""
                        web += f", irc 127.0.0.1:{gw.irc_port}" if gw.irc_port else ""
                        say(f"{gw.name}: telnet 127.0.0.1 {gw.port}{web}{again}")
                    elif now - gw.started_at > LISTEN_TIMEOUT:
                        say(
                            f"cluster: {gw.name} does not listen on {gw.port} after "
                            f"{LISTEN_TIMEOUT:.0f} s; stopping it",
                            err=True,
                        )
                        gw.stop()
            if not announced and all(gw.up for gw in gateways):
                announced = True
                say(f"all {len(gateways)} gateways up; Ctrl+C stops everything")
            time.sleep(0.1)
        if stopping:
            say(f"cluster: {stopping[0]}: stopping the gateways, then redis", err=True)
    finally:
        # All at once (one stop_process each, so each gets exactly one SIGTERM and up to
        # 15 s to tell its users and record cursors), then Redis.
        with concurrent.futures.ThreadPoolExecutor(max(1, len(gateways))) as pool:
            codes = list(pool.map(lambda gw: gw.stop(), gateways))
        for gw, rc in zip(gateways, codes, strict=True):
            if rc not in (None, 0) and gw.up and gw.restart_at is None:
                say(f"cluster: {gw.name} did not stop cleanly ({describe_exit(rc)})", err=True)
                code = code or 1
        if redis_cluster is not None:
            redis_cluster.stop()
        else:
            redis.stop()
    say("stopped")
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, TimeoutError) as exc:
        sys.exit(f"cluster: {exc}")

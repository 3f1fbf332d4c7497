"""`--workers N`: N gateway processes on the same ports, so one host's cores all serve.

A gateway is one asyncio process, so one core. With `--workers N` the process started by
the operator becomes a small supervisor: it checks that every port is free, then starts N
workers, each a whole gateway (`python3 server.py` with the same options) that listens with
SO_REUSEPORT, so the kernel spreads new connections over them; each is its own gateway to
Redis (its own id, presence and pub/sub), so users on different workers talk as users on
different gateways do. Worker k (1..N) serves its metrics on `--metrics-port` + k - 1.

Like scripts/cluster.py: a worker that dies is restarted (after 0.1 s, doubling while it
keeps dying soon after start, up to 30 s), from a spare when there is one (`--spares`, 1 by
default): a gateway process started ahead of need that has done Python's start and the
imports (most of a gateway's start: 0.3 s on an idle core, several times that on a busy
host) and waits for a worker's number, so that its users find the port served again sooner.
`--workers 1` is one supervised gateway. SIGINT/SIGTERM/SIGHUP stop every worker (each
tells its users `* server shutting down` and records their positions) and then the
supervisor, exit 0; a worker that fails at start (a bad certificate, say) stops them all
with its error, exit 1. Workers die with the supervisor even when it is SIGKILLed (Linux
PR_SET_PDEATHSIG), so no orphan keeps serving a port nobody supervises.

The supervisor also keeps one socket bound (not listening) on each chat port, with
SO_REUSEPORT: the port stays this gateway's while its workers restart, and `--port 0` is
resolved once for all of them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import Settings

__all__ = ["WORKER_ENV", "Backoff", "Worker", "bind_error", "describe_exit", "supervise"]

log = logging.getLogger("chat.workers")

#: Set by the supervisor in each worker's environment: "number,count,ready fd,supervisor
#: pid", and for a spare (number 0) ",go fd": the pipe its number comes on.
WORKER_ENV = "CHAT_GATEWAY_WORKER"
#: A spare is started once every worker has been up this long: not while a worker starts
#: (or logs in a storm of returning users), which a second start would slow down.
SPARE_AFTER = 2.0
#: First restart delay; doubles while a worker dies within STABLE_AFTER of its start. Short
#: (systemd's default): while a worker is down its users wait on the others or in backoff.
RESTART_DELAY, RESTART_MAX_DELAY, STABLE_AFTER = 0.1, 30.0, 10.0
#: Seconds the workers get to tell their users and record positions before SIGKILL.
STOP_TIMEOUT = 15.0
#: How often the supervisor looks at its workers, in seconds.
TICK = 0.05
ROOT = Path(__file__).resolve().parent.parent
#: (settings field, what listens there, option): the chat ports every worker shares.
LISTENERS = (
    ("port", "chat", "--port"),
    ("tls_port", "chat over TLS", "--tls-port"),
    ("irc_port", "IRC", "--irc-port"),
    ("irc_tls_port", "IRC over TLS", "--irc-tls-port"),
    ("web_port", "web", "--web-port"),
)


@dataclass(frozen=True, slots=True)
class Worker:
    """What a worker process knows of its place: its number (1..count), the pipe that tells
    the supervisor it listens, and the supervisor's pid."""

    number: int
    count: int
    ready_fd: int
    parent: int
    go_fd: int = -1

    @classmethod
    def take(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> Worker | None:
        """This process's role, taken out of the environment (a worker's own children, if
        any, are not workers); None when it was not started by a supervisor."""
        text = env.pop(WORKER_ENV, None)
        if text is None:
            return None
        return cls(*(int(part) for part in text.split(",")))

    @property
    def index(self) -> int:
        return self.number - 1

    @property
    def spare(self) -> bool:
        """Started ahead of need: no number yet (wait_for_number)."""
        return self.number == 0

    def wait_for_number(self) -> Worker | None:
        """A spare's wait, once imported: the worker it becomes when one dies; None when the
        supervisor closed the pipe instead (it stops)."""
        got = b""
        with open(self.go_fd, "rb", buffering=0, closefd=True) as pipe:
            while not got.endswith(b"\n"):
                chunk = pipe.read(16)
                if not chunk:
                    return None
                got += chunk
        return dataclasses.replace(self, number=int(got), go_fd=-1)

    def orphaned(self) -> bool:
        """The supervisor died before this process could ask to die with it."""
        return os.getppid() != self.parent

    def ready(self) -> None:
        """Tell the supervisor every port listens (it waits for this before it says the
        gateway is up, and a worker that exits before it failed to start)."""
        try:
            os.write(self.ready_fd, b"+")
            os.close(self.ready_fd)
        except OSError:  # the supervisor is gone: PR_SET_PDEATHSIG stops this process
            pass


def bind_error(
    what: str, host: str, port: int, exc: OSError, option: str, host_option: str = "--host"
) -> str:
    """One line: what could not listen where, why, and which option to change."""
    if exc.errno == errno.EADDRINUSE:
        hint = f"is another gateway running there? choose another port with {option}"
    elif exc.errno == errno.EACCES:
        hint = f"ports below 1024 need privileges; choose another port with {option}"
    elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        hint = f"is {host_option} an address of this machine?"
    else:
        hint = f"choose another port with {option} or another address with {host_option}"
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        why = os.strerror(exc.errno)  # asyncio's text repeats the address
    else:
        why = exc.strerror or str(exc)
    return f"cannot listen for {what} on {host}:{port}: {why} ({hint})"


class Busy(Exception):
    """A port cannot be had; the text is bind_error's line."""


def _addresses(host: str, port: int) -> list[tuple[int, tuple[object, ...]]]:
    """(family, address) of each socket asyncio's create_server binds for host:port."""
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )  # fmt: skip
    seen: list[tuple[int, tuple[object, ...]]] = []
    for family, _, _, _, address in infos:
        if (family, address) not in seen:
            seen.append((family, address))
    return seen


def _bind(family: int, address: tuple[object, ...], reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # as asyncio does
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def probe(host: str, port: int, what: str, option: str, host_option: str = "--host") -> int:
    """The port, once a socket without SO_REUSEPORT could bind it: anything listening there
    (another gateway, even one with --workers) makes that fail. Port 0: a free one."""
    try:
        for family, address in _addresses(host, port):
            with _bind(family, address, reuse_port=False) as sock:
                port = port or int(sock.getsockname()[1])
    except OSError as exc:
        raise Busy(bind_error(what, host, port, exc, option, host_option)) from None
    return port


def _reserve(host: str, port: int, what: str, option: str) -> list[socket.socket]:
    """Bound, never listening, with SO_REUSEPORT: only this user's SO_REUSEPORT sockets
    (the workers) can bind the port beside these, and connections go to listeners only."""
    socks: list[socket.socket] = []
    try:
        for family, address in _addresses(host, port):
            socks.append(_bind(family, address, reuse_port=True))
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise Busy(bind_error(what, host, port, exc, option)) from None
    return socks


try:
    _prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, even by SIGKILL
    (PR_SET_PDEATHSIG, sent when the forking *thread* ends: workers are started from the
    main thread). Looked up before forking: nothing here may take a lock."""
    if _prctl is not None:
        _prctl(1, int(signal.SIGTERM))


def describe_exit(code: int) -> str:
    """A child's exit as an operator reads it (the supervisor's and scripts/cluster.py's)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Backoff:
    """When to restart a supervised process that died: RESTART_DELAY, doubling with each
    restart up to RESTART_MAX_DELAY, and RESTART_DELAY again after one that had come up and
    run for STABLE_AFTER. A process that dies at every start (a bad option, a dependency
    down) is then not restarted in a tight loop that floods the log and takes a core, while
    one that served a while before it died is back at once. The one copy of that policy:
    each --workers worker has one, its spares share one, and each of scripts/cluster.py's
    gateways has one."""

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = RESTART_DELAY  #: the next wait, in seconds

    def next(self, ran: float = 0.0) -> float:
        """The seconds to wait before the next start; the wait after it doubles (up to the
        cap). `ran`: how long the process that died had run, if it had come up (0: it never
        did, or this is a retry of a start that did not happen); STABLE_AFTER or more means
        it had been fine, not a crash loop."""
        if ran >= STABLE_AFTER:
            self.reset()
        delay = self.delay
        self.delay = min(delay * 2, RESTART_MAX_DELAY)
        return delay

    def reset(self) -> None:
        """Start over at RESTART_DELAY."""
        self.delay = RESTART_DELAY


def _start(argv: list[str], number: int, count: int) -> tuple[subprocess.Popen[bytes], int, int]:
    """A gateway process: (the process, the read end of the pipe it says it listens on, the
    write end of the pipe a spare (number 0) waits for its number on, else -1)."""
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe() if number == 0 else (-1, -1)
    fields = [number, count, ready_write, os.getpid()] + ([go_read] if number == 0 else [])
    env = dict(os.environ)
    env[WORKER_ENV] = ",".join(str(f) for f in fields)
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=tuple(fd for fd in (ready_write, go_read) if fd >= 0),
            # its own process group: Ctrl+C reaches the supervisor only, which stops the
            # workers once each (they log out their users and record positions). Not its
            # own session: Linux's autogroup scheduler shares the CPU between sessions,
            # so N workers in N sessions would take N shares from everything else on the
            # host (a load generator beside them got 0.45 of a core instead of 0.78)
            process_group=0,
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
    except BaseException:
        for fd in (ready_read, go_write):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (ready_write, go_read):
            if fd >= 0:
                os.close(fd)
    os.set_blocking(ready_read, False)
    return proc, ready_read, go_write


@dataclass
class _Spare:
    """A gateway process that has imported everything and waits for a worker's number."""

    proc: subprocess.Popen[bytes]
    ready_fd: int
    go_fd: int

    @classmethod
    def start(cls, argv: list[str], count: int) -> _Spare:
        return cls(*_start(argv, 0, count))

    def give(self, number: int) -> bool:
        """Make it worker `number`; False if it is gone (its pipes are then closed)."""
        try:
            os.write(self.go_fd, f"{number}\n".encode())
        except OSError:  # it died: EPIPE
            self.close()
            return False
        os.close(self.go_fd)
        self.go_fd = -1
        return True

    def close(self) -> None:
        for fd in (self.ready_fd, self.go_fd):
            if fd >= 0:
                os.close(fd)
        self.ready_fd = self.go_fd = -1


@dataclass
class _Child:
    """One worker slot: the process in it now, and when to restart it."""

    number: int
    proc: subprocess.Popen[bytes] | None = None
    ready_fd: int = -1
    up: bool = False
    ever_up: bool = False
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    launches: int = 0

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def check_ready(self) -> bool:
        """True once, when the worker says it listens."""
        if self.up or self.ready_fd < 0:
            return False
        try:
            said = os.read(self.ready_fd, 1)
        except BlockingIOError:
            return False
        self._close_pipe()
        self.up = bool(said)
        self.ever_up = self.ever_up or self.up
        return self.up

    def _close_pipe(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1

    def launch(self, argv: list[str], count: int) -> None:
        self._close_pipe()
        self.proc, self.ready_fd, _ = _start(argv, self.number, count)
        self._launched()

    def adopt(self, spare: _Spare) -> bool:
        """Take `spare` as this worker; False if it was gone."""
        if not spare.give(self.number):
            return False
        self._close_pipe()
        self.proc, self.ready_fd = spare.proc, spare.ready_fd
        spare.ready_fd = -1
        self._launched()
        return True

    def _launched(self) -> None:
        self.up = False
        self.restart_at = None
        self.started_at = time.monotonic()
        self.launches += 1


class Supervisor:
    def __init__(self, argv: list[str], settings: Settings) -> None:
        self.settings = settings
        self.argv = argv
        self.children = [_Child(n + 1) for n in range(settings.workers)]
        self.held: list[socket.socket] = []
        self.stopping: str | None = None
        self.spares: list[_Spare] = []  # oldest first
        self.spare_at = 0.0  # no spare is started before (time.monotonic())
        self.spare_backoff = Backoff()  # a spare that died is replaced as a worker is

    def command(self, port: int) -> list[str]:
        """A worker's command line: this interpreter with its own options (-X, -O ...),
        server.py, the operator's options, and the port when --port 0 chose one."""
        interpreter = sys.orig_argv[: max(1, len(sys.orig_argv) - len(sys.argv))]
        argv = [sys.executable, *interpreter[1:], str(ROOT / "server.py"), *self.argv]
        if self.settings.port == 0:
            argv += ["--port", str(port)]  # the command line wins over CHAT_PORT
        return argv

    def claim_ports(self) -> int:
        """Check every port is free and hold the chat ports; the chat port (--port 0: the
        one chosen). Busy when one is taken."""
        s = self.settings
        port = 0
        for name, what, option in LISTENERS:
            wanted = int(getattr(s, name))
            if not wanted and name != "port":
                continue  # that door is off
            got = probe(s.host, wanted, what, option, "--host")
            self.held += _reserve(s.host, got, what, option)
            if name == "port":
                port = got
        if s.metrics_port:
            for i in range(s.workers):
                probe(
                    s.metrics_host, s.metrics_port + i, "metrics", "--metrics-port",
                    "--metrics-host",
                )  # fmt: skip
        return port

    def run(self) -> int:
        s = self.settings
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._stop)
        try:
            port = self.claim_ports()
        except Busy as exc:
            print(f"error: {exc}", file=sys.stderr)  # one line, not a log line too
            return 1
        argv = self.command(port)
        log.info(
            "event=workers_starting workers=%d host=%s port=%d metrics=%s",
            s.workers,
            s.host,
            port,
            f"{s.metrics_port}-{s.metrics_port + s.workers - 1}" if s.metrics_port else "off",
        )
        for child in self.children:
            child.launch(argv, s.workers)
        code = 0
        announced = False
        try:
            while self.stopping is None:
                failed = self._watch(argv)
                if failed is not None:
                    code = failed
                    break
                self._keep_spare(argv)
                if not announced and all(c.up for c in self.children):
                    announced = True
                    log.info(
                        "event=workers_ready workers=%d port=%d pids=%s",
                        s.workers,
                        port,
                        ",".join(str(c.proc.pid) for c in self.children if c.proc),
                    )
                time.sleep(TICK)
            if self.stopping is not None:
                log.info("event=workers_stopping signal=%s", self.stopping)
        finally:
            stopped = self._stop_all()
            for sock in self.held:
                sock.close()
        return code or stopped

    def _watch(self, argv: list[str]) -> int | None:
        """One look at every worker: note the ready, restart the dead; an exit code when a
        worker failed at start (everything stops)."""
        now = time.monotonic()
        for child in self.children:
            assert child.proc is not None
            if child.check_ready():
                if child.launches > 1:
                    log.info(
                        "event=worker_ready worker=%d pid=%d restarts=%d",
                        child.number,
                        child.proc.pid,
                        child.launches - 1,
                    )
            elif child.restart_at is None and child.exited():
                code = child.proc.returncode
                if not child.ever_up:  # it never listened: a fault no restart mends
                    log.error(
                        "event=worker_failed_start worker=%d pid=%d status=%r",
                        child.number,
                        child.proc.pid,
                        describe_exit(code),
                    )
                    return code if code > 0 else 1
                delay = child.backoff.next(now - child.started_at if child.up else 0.0)
                log.warning(
                    "event=worker_exited worker=%d pid=%d status=%r restart_in=%.1f",
                    child.number,
                    child.proc.pid,
                    describe_exit(code),
                    delay,
                )
                child.up = False
                child.restart_at = now + delay
            elif child.restart_at is not None and now >= child.restart_at:
                spare = self.spares.pop(0) if self.spares else None
                if spare is not None and child.adopt(spare):
                    how = "spare"
                    self.spare_backoff.reset()
                else:
                    if spare is not None:
                        self._end_spare(spare)
                    child.launch(argv, self.settings.workers)
                    how = "cold"
                log.info(
                    "event=worker_restarted worker=%d pid=%d from=%s",
                    child.number,
                    child.proc.pid,
                    how,
                )
        return None

    def _keep_spare(self, argv: list[str]) -> None:
        """Have `--spares` spares ready once every worker is up (SPARE_AFTER after the last
        start), one more a tick; one that dies waiting is replaced after a delay that
        doubles, as a worker's."""
        now = time.monotonic()
        for spare in [s for s in self.spares if s.proc.poll() is not None]:
            delay = self.spare_backoff.next()
            log.warning(
                "event=spare_exited pid=%d status=%r retry_in=%.1f",
                spare.proc.pid,
                describe_exit(spare.proc.returncode),
                delay,
            )
            spare.close()
            self.spares.remove(spare)
            self.spare_at = now + delay
        if len(self.spares) >= self.settings.spares or now < self.spare_at:
            return
        if not all(c.up for c in self.children):
            return
        if now - max(c.started_at for c in self.children) < SPARE_AFTER:
            return
        spare = _Spare.start(argv, self.settings.workers)
        self.spares.append(spare)
        log.info("event=spare_started pid=%d", spare.proc.pid)

    @staticmethod
    def _end_spare(spare: _Spare) -> None:
        """Stop a spare: with its pipe closed it exits once imported, or SIGTERM ends it."""
        spare.close()
        if spare.proc.poll() is None:
            spare.proc.send_signal(signal.SIGTERM)
        try:
            spare.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            spare.proc.kill()
            spare.proc.wait()

    def _stop(self, signum: int, _frame: object) -> None:
        if self.stopping is None:
            self.stopping = signal.Signals(signum).name

    def _stop_all(self) -> int:
        """SIGTERM to every live worker at once, SIGKILL to those still there after
        STOP_TIMEOUT; 1 if one did not stop cleanly (a worker still starting dies of the
        SIGTERM itself, which is clean)."""
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in live:
            assert child.proc is not None
            try:
                child.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        code = 0
        for child in live:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "event=worker_killed worker=%d pid=%d after=%.0f",
                    child.number,
                    child.proc.pid,
                    STOP_TIMEOUT,
                )
                child.proc.kill()
                child.proc.wait()
            # killed by the SIGTERM sent here: it was still starting, before it handles
            # signals (Python's import), so there was nothing yet to clean up
            if child.proc.returncode not in (0, -signal.SIGTERM):
                code = 1
        for child in self.children:
            child._close_pipe()
        while self.spares:
            self._end_spare(self.spares.pop())
        if live:
            log.info("event=workers_stopped workers=%d clean=%s", len(live), code == 0)
        return code


def supervise(argv: list[str], settings: Settings) -> int:
    """Run `settings.workers` gateways on the same ports until a stop signal; the exit code."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("the supervisor runs in the main thread (PR_SET_PDEATHSIG)")
    return Supervisor(argv, settings).run()

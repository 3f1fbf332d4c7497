"""A load-generator worker process for the crowd scenarios of bench/run.py.

One process may hold at most 20,000 descriptors, so bench/run.py splits tens of thousands
of users over several of these, each connecting from its own loopback source addresses
(127.0.0.2, 127.0.0.3, ...: each address has its own ephemeral ports). A worker speaks
JSON lines on stdin/stdout: one request in, one reply out (see `Swarm.handle`).

Each user is a bare `asyncio.Protocol`. It logs in as `client.py` does after its first
login, with `nick token` (the token is derived from the nickname and seeded into Redis by
bench/run.py), or with the password; a refused token falls back to the password. When its
connection drops it comes back like `client.py`, by the same `ServerRounds`: after losing
a logged-in session the first try is at a random moment within `DROP_SPREAD`, at a random
one of the other servers; a failed try (refused, `! server busy` from a full gateway or too many
logins, closed before `* ready`) moves on to the next server at once, and only after every
server of the list failed in a round comes a `Backoff` wait (0.5 s doubling to 10 s,
jittered) before the next round.

Broadcast messages (`bc<seq>`) are counted per sequence number with the time the last of
this worker's users got each (`time.monotonic_ns`, one clock for every process), so
bench/run.py can tell when the last of all members had each message.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import resource
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatclient.link import ServerRounds

__all__ = ["PASSWORD", "bench_token"]

PASSWORD = "bench-password"
#: Descriptors one process may hold (the machine's hard limit).
MAX_FDS = 20_000
_READY = b"* ready"
#: Linux's IP_BIND_ADDRESS_NO_PORT (Python names it from 3.12 on some builds only).
BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
_BROADCAST = re.compile(rb"> bc(\d+)\r?\n")
#: Each door's ready marker, broadcast pattern, and what a broadcast line contains.
_DOORS = {
    "line": (_READY, _BROADCAST, b"> bc"),
    "irc": (b" 001 ", re.compile(rb"PRIVMSG #general :?bc(\d+)\r?\n"), b"#general"),
    "web": (b'"type":"ready"', re.compile(rb'"text":"bc(\d+)"'), b'"bc'),
}
#: The doors users are spread over with `doors`: user i's is DOOR_ORDER[(i // gateways) % 3].
DOOR_ORDER = ("line", "web", "irc")


def _masked_text(payload: bytes) -> bytes:
    """A client's WebSocket text frame (masked with a zero key: the bytes stay as they are)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2)
    return head + b"\x00\x00\x00\x00" + payload


def bench_token(nick: str) -> str:
    """The resume token of a bench user: 64 hex characters derived from the nickname
    (bench/run.py stores its hash as the gateways' `/token` would)."""
    return hashlib.sha256(f"bench-token:{nick}".encode()).hexdigest()


class User(asyncio.Protocol):
    __slots__ = (
        "door",
        "gen",
        "head",
        "index",
        "nick",
        "ready",
        "rounds",
        "swarm",
        "tail",
        "transport",
        "upgraded",
    )

    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        self.index = index
        self.nick = f"{swarm.prefix}{index}"
        self.rounds = ServerRounds(len(swarm.ports), index)  # starts at its own gateway
        self.gen = 0  # bumped by park/unpark: a reconnect planned before is dropped
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.tail = b""
        self.ready = False
        #: This user's door: the line protocol, IRC, or the web page's WebSocket.
        self.door = swarm.door_of(index)
        self.upgraded = False

    # -- the connection --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.head = self.tail = b""
        self.ready = self.upgraded = False
        token = self.swarm.mode == "token"
        self.swarm.tried["token" if token else "password"] += 1
        secret = bench_token(self.nick) if token else PASSWORD
        if self.door == "irc":
            data = f"PASS {secret}\r\nNICK {self.nick}\r\nUSER {self.nick} 0 * :bench\r\n"
        elif self.door == "web":
            data = (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
        elif token:
            data = f"{self.nick} {secret}\r\n"
        else:
            data = f"{self.nick}\r\n{PASSWORD}\r\n"
        self.transport.write(data.encode())

    def _web_login(self, token: bool) -> None:
        assert self.transport is not None
        frame = (
            {"type": "resume", "nick": self.nick, "token": bench_token(self.nick)}
            if token
            else {"type": "login", "nick": self.nick, "password": PASSWORD}
        )
        self.transport.write(_masked_text(json.dumps(frame).encode()))

    def data_received(self, data: bytes) -> None:
        if not self.ready:
            head = self.head + data
            if self.door == "web" and not self.upgraded:
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    self.head = head[-4096:]
                    return
                if not head.startswith(b"HTTP/1.1 101"):
                    self.swarm.busy += 1
                    assert self.transport is not None
                    self.transport.abort()
                    return
                self.upgraded = True
                head = head[end + 4 :]
                self._web_login(self.swarm.mode == "token")
            ready_marker = _DOORS[self.door][0]
            at = head.find(ready_marker)
            end = head.find(b"\n", at) if at >= 0 and self.door != "web" else at
            if end < 0:
                if b"! " in head or b"ERROR :" in head or b'"type":"error"' in head:
                    self._login_error(head)
                self.head = head[-4096:]
                return
            self.ready = True
            self.head = b""
            self.swarm.became_ready(self)
            data = head[end + 1 :]
            if not data:
                return
        if self.tail:
            data, self.tail = self.tail + data, b""
        _, pattern, marker = _DOORS[self.door]
        if self.door == "web":  # frames: keep what follows the last match, which may be cut
            if marker not in data:
                self.tail = data[-64:]
                return
            seqs, end = [], 0
            for m in pattern.finditer(data):
                seqs.append(m.group(1))
                end = m.end()
            self.tail = data[end:][-64:]
            if seqs:
                self.swarm.arrived(seqs)
            return
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n")
            data, self.tail = data[: cut + 1], data[cut + 1 :]
        if marker in data:
            self.swarm.arrived(pattern.findall(data))

    def _login_error(self, head: bytes) -> None:
        if b"invalid or expired token" in head:
            self.head = b""
            assert self.transport is not None
            if self.door == "web":
                self._web_login(False)
            else:
                self.transport.write(f"{self.nick}\r\n{PASSWORD}\r\n".encode())
        elif (
            b"server busy" in head
            or b"unavailable" in head
            or b"timed out" in head
            or b"ERROR :" in head
        ):
            self.swarm.busy += 1
            assert self.transport is not None
            self.transport.abort()  # connection_lost retries elsewhere

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        was_ready, self.ready = self.ready, False
        if was_ready:
            self.swarm.lost(self)
        self.swarm.retry(self, was_ready)


class Swarm:
    def __init__(self) -> None:
        self.prefix = ""
        self.ports: list[int] = []
        #: Per door, each gateway's port for it (the line door's are `ports`).
        self.door_ports: dict[str, list[int]] = {}
        self.sources: list[str] = ["127.0.0.1"]
        self.mode = "token"
        self.users: dict[int, User] = {}
        self.parked: set[int] = set()
        self.ready_count = 0
        self.last_ready_ns = 0
        self.drops = 0
        self.busy = 0
        self.tried = {"token": 0, "password": 0}
        self.ready_by = {"token": 0, "password": 0}
        self.arrivals: dict[int, list[int]] = {}  # seq -> [count, last ns, first ns]
        self._source = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def door_of(self, index: int) -> str:
        """User `index`'s door: the line door, or with door ports a third on each door
        (every gateway gets each third)."""
        if not self.door_ports:
            return "line"
        return DOOR_ORDER[(index // len(self.ports)) % len(DOOR_ORDER)]

    # -- events from users -----------------------------------------------------------------

    def became_ready(self, user: User) -> None:
        self.ready_count += 1
        self.ready_by[self.mode] += 1
        self.last_ready_ns = time.monotonic_ns()

    def lost(self, user: User) -> None:
        self.ready_count -= 1
        self.drops += 1

    def arrived(self, seqs: list[bytes]) -> None:
        now = time.monotonic_ns()
        arrivals = self.arrivals
        for raw in seqs:
            seq = int(raw)
            slot = arrivals.get(seq)
            if slot is None:
                arrivals[seq] = [1, now, now]
            else:
                slot[0] += 1
                slot[1] = now

    def retry(self, user: User, after_session: bool) -> None:
        if user.index in self.parked:
            return
        wait = user.rounds.dropped() if after_session else user.rounds.failed()
        task = asyncio.get_running_loop().create_task(self._reconnect(user, wait, user.gen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconnect(self, user: User, wait: float, gen: int) -> None:
        await asyncio.sleep(wait)
        if user.index in self.parked or user.gen != gen or user.transport is not None:
            return
        try:
            await self._open(user)
        except OSError:
            self.retry(user, False)

    async def _open(self, user: User) -> None:
        server = user.rounds.next_server()
        ports = self.door_ports.get(user.door, self.ports)
        port = ports[server]
        source = self.sources[self._source % len(self.sources)]
        self._source += 1
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # The port is picked at connect, not at bind: a bind to port 0 searches the
            # source's ports for one no socket holds (tens of thousands in TIME_WAIT after
            # a storm), which cost this process more CPU than the logins themselves.
            sock.setsockopt(socket.IPPROTO_IP, BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        await loop.create_connection(lambda: user, sock=sock)

    # -- requests ----------------------------------------------------------------------------

    async def connect(self, first: int, count: int, parallel: int, timeout: float) -> dict:
        """Log in users first .. first+count-1, user i at ports[i % len(ports)]; wait until
        all are ready (or `timeout`)."""
        gate = asyncio.Semaphore(parallel)
        began = time.monotonic()
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            user = self.users[i] = User(self, i)
            self.parked.discard(i)
            async with gate:
                try:
                    await self._open(user)
                except OSError:
                    failed += 1
                    self.retry(user, False)
                    return
                for _ in range(int(timeout * 20)):
                    if user.ready:
                        return
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one(i) for i in range(first, first + count)))
        return {
            "ready": self.ready_count,
            "seconds": round(time.monotonic() - began, 3),
            "connect_failed": failed,
            "last_ready_ns": self.last_ready_ns,
        }

    def park(self, group: int) -> dict:
        """Close the users of `group` (index % len(ports)) and keep them closed."""
        closed = 0
        for i, user in self.users.items():
            if i % len(self.ports) == group:
                self.parked.add(i)
                user.gen += 1
                if user.transport is not None:
                    user.transport.abort()
                    closed += 1
        return {"closed": closed}

    async def unpark(self, group: int, parallel: int, timeout: float) -> dict:
        """Log the parked users of `group` in again at their own gateway."""
        ids = sorted(i for i in self.parked if i % len(self.ports) == group)
        for i in ids:
            self.parked.discard(i)
        gate = asyncio.Semaphore(parallel)
        began = time.monotonic()

        async def one(i: int) -> None:
            user = self.users[i]
            user.rounds = ServerRounds(len(self.ports), i)
            user.gen += 1
            async with gate:
                try:
                    await self._open(user)
                except OSError:
                    self.retry(user, False)
                    return
                for _ in range(int(timeout * 20)):
                    if user.ready:
                        return
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one(i) for i in ids))
        return {"ready": self.ready_count, "seconds": round(time.monotonic() - began, 3)}

    def stats(self) -> dict:
        return {
            "users": len(self.users),
            "ready": self.ready_count,
            "last_ready_ns": self.last_ready_ns,
            "drops": self.drops,
            "busy": self.busy,
            "tried": self.tried,
            "ready_by": self.ready_by,
            "arrivals": {str(k): v for k, v in self.arrivals.items()},
        }

    async def handle(self, req: dict) -> dict:
        op = req["op"]
        if op == "setup":
            self.prefix, self.ports = req["prefix"], req["ports"]
            self.door_ports = req.get("door_ports", {})
            self.sources = req["sources"]
            self.mode = req.get("mode", "token")
            return {"ok": True}
        if op == "connect":
            return await self.connect(
                req["first"], req["count"], req.get("parallel", 300), req.get("timeout", 600)
            )
        if op == "mode":
            self.mode = req["mode"]
            return {"ok": True}
        if op == "park":
            return self.park(req["group"])
        if op == "unpark":
            return await self.unpark(
                req["group"], req.get("parallel", 300), req.get("timeout", 600)
            )
        if op == "reset":
            self.arrivals.clear()
            self.drops = self.busy = 0
            self.tried = {"token": 0, "password": 0}
            self.ready_by = {"token": 0, "password": 0}
            return {"ok": True}
        if op == "stats":
            return self.stats()
        if op == "close":
            self.parked.update(self.users)
            for user in self.users.values():
                if user.transport is not None:
                    user.transport.abort()
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}


async def main() -> None:
    swarm = Swarm()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        req = json.loads(line)
        reply = await swarm.handle(req)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if req["op"] == "close":
            await asyncio.sleep(0.2)
            return


if __name__ == "__main__":
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, MAX_FDS), hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())

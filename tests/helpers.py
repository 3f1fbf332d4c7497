"""Test tools: real redis-server and gateway processes, and a line client over TCP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from scripts.procs import free_port, stop_process, wait_port
from scripts.redisserver import redis_server_argv

__all__ = [
    "ROOT",
    "Client",
    "Gateway",
    "RedisProcess",
    "WebClient",
    "assert_quiet",
    "eventually",
    "eventually_sync",
    "free_port",
    "messages",
    "metrics",
    "not_online",
    "shown_recorded",
    "wait_port",
    "web_texts",
]

ROOT = Path(__file__).resolve().parent.parent
MESSAGE_RE = re.compile(r"^\[[^\]]+\] ([#@]\S+) <([^>]+)> (.*)$")
#: How often `eventually` looks again: short next to any deadline, long next to a look.
POLL = 0.02

T = TypeVar("T")


async def eventually(check: Callable[[], T | Awaitable[T]], what: str, timeout: float = 5.0) -> T:
    """Look at `check()` (a function, or a coroutine function) until it returns something
    truthy, and return that. For a state another process reaches in its own time (a key
    written, a log line, a count, a file): the test goes on as soon as it holds, fails
    after `timeout` saying `what` it waited for, and never guesses a duration."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = check()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return got  # type: ignore[return-value]
        if loop.time() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {got!r})")
        await asyncio.sleep(POLL)


def eventually_sync(check: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    """`eventually` for a test without an event loop."""
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what} (last: {got!r})")
        time.sleep(POLL)
    return got


async def assert_quiet(source: Any, seconds: float, why: str) -> None:
    """Assert that nothing arrives from `source` for `seconds`: the one way this suite waits
    out a quiet period. Nothing shows that a line will never come but a time without it,
    so this must wait, and `seconds` must outlast whatever could still send it (a timer, a
    backoff, a reply in flight): `why` names that at the call, and a failure repeats it.

    `source`: a `Client` (no line), a `WebClient` (no frame), or a function (or coroutine
    function) whose value must not change meanwhile (a count, a log's length, a metric).
    A state that may take a moment to settle is waited for first (`eventually`), then
    held quiet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    if isinstance(source, Client | WebClient):
        got: list[Any] = []
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(
                    await (source.line(left) if isinstance(source, Client) else source.frame(left))
                )
            except TimeoutError:
                break
        assert not got, f"arrived within {seconds} s ({why}): {got!r}"
        return

    async def look() -> Any:
        got = source()
        return await got if isinstance(got, Awaitable) else got

    first = await look()
    while loop.time() < deadline:
        await asyncio.sleep(min(POLL * 5, seconds))
        now = await look()
        assert now == first, f"changed within {seconds} s ({why}): {first!r} -> {now!r}"


def redis_client(url: str) -> Any:
    """A synchronous redis-py client for a store URL: a RedisCluster client for a seed list
    (`redis://h:p,h:p`) or a cluster node, a plain one otherwise."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    from store.cluster import Seeds

    seeds = Seeds.parse(url)
    plain = redis.Redis.from_url(seeds.url(seeds.nodes[0]), decode_responses=True)
    try:
        enabled = plain.info("cluster").get("cluster_enabled", 0)
    finally:
        plain.close()
    if not enabled:
        return redis.Redis.from_url(url, decode_responses=True)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in seeds.nodes], decode_responses=True
    )


async def not_online(client: Client, nick: str) -> bool:
    """Whether /who, asked by `client` (logged in, on the line door), no longer lists `nick`
    in #general: the sign that all of `nick`'s sessions have ended."""
    await client.send("/who")
    line = await client.expect("online in #general")
    return nick not in line.split(":", 1)[1].replace(",", " ").split()


def metrics(port: int) -> dict[str, float]:
    """A gateway's metrics (--metrics-port), unlabelled and labelled lines alike."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }


async def shown_recorded(url: str, user: str, *convs: str, timeout: float = 5.0) -> None:
    """Wait until the store at `url` records that `user` was shown the newest message of
    each of `convs` (conversation ids: "c:general", "p:alice|bob"). A gateway writes shown
    positions every --cursor-flush seconds, when the user's last session there closes, and
    at shutdown: a test that kills a gateway waits for this, not for a flush period."""
    from store import keys

    r = redis_client(url)

    def caught_up() -> bool:
        cursor = r.hgetall(keys.cursors(user))
        for conv in convs:
            newest = r.xrevrange(keys.conv_stream(conv), count=1)
            if not newest or cursor.get(conv) != newest[0][0]:
                return False
        return True

    try:
        await eventually(caught_up, f"{user} shown the newest of {convs}, recorded", timeout)
    finally:
        r.close()


class RedisProcess:
    """A private redis-server on a free loopback port (never the shared 6379)."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = redis_server_argv(
            self.port,
            self.workdir,
            "--loglevel", "warning",
            "--enable-debug-command", "local",  # DEBUG SLEEP stalls Redis in fault tests
            appendfsync="always" if self.appendonly else None,
        )  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)

    def cli(self, *args: str) -> str:
        import redis

        r = redis.Redis(port=self.port, decode_responses=True)
        try:
            return str(r.execute_command(*args))
        finally:
            r.close()


class Gateway:
    """One `python3 server.py` process on a free port."""

    def __init__(self, redis_url: str | None, logdir: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.redis_url = redis_url
        self.args = list(args)
        self.env = env
        self.log = logdir / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gateway:
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env.update(
            {
                "CHAT_SCRYPT_LOG_N": "10",
                "CHAT_RATE": "0",
                "CHAT_WEB_PORT": "0",  # a test that wants the page gives it a free port
                "CHAT_IRC_PORT": "0",  # likewise the IRC door (6667 would collide)
                # tests register and complain at once; tests of the minimum age set it
                "CHAT_COMPLAINT_MIN_AGE": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("CHAT_MAX_REGISTRATIONS", "0")  # tests register many from 127.0.0.1
        # an embedded store keeps nothing unless the test gives it a file: no test sees
        # another's (or an earlier run's) accounts through the default data file
        env.setdefault("CHAT_DATA", "none")
        env.update(self.env)
        args = [sys.executable, str(ROOT / "server.py"), "--port", str(self.port)]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        args += self.args
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=logf, stderr=logf)
        wait_port(self.port, proc=self.proc)
        if self.web_port:
            wait_port(self.web_port, proc=self.proc)
        if self.irc_port:
            wait_port(self.irc_port, proc=self.proc)
        return self

    @property
    def web_port(self) -> int:
        """The web door's port, when the test gave one (CHAT_WEB_PORT); else 0."""
        return int(self.env.get("CHAT_WEB_PORT", "0"))

    @property
    def irc_port(self) -> int:
        """The IRC door's port, when the test gave one (CHAT_IRC_PORT); else 0."""
        return int(self.env.get("CHAT_IRC_PORT", "0"))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        return stop_process(self.proc, sig, timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def logged(self, text: str, count: int = 1, timeout: float = 5.0) -> str:
        """Wait until the gateway's log holds `text` (at least `count` times); the log."""
        return await eventually(
            lambda: (out := self.output()).count(text) >= count and out,
            f"{text!r} x{count} in the gateway's log",
            timeout,
        )


class Client:
    """Speaks the contract like a script would: lines in, lines out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[str] = []

    @classmethod
    async def connect(cls, port: int, source: str | None = None) -> Client:
        """`source`: a loopback address (127.0.0.2, ...) to connect from, so one machine
        can play users at different addresses."""
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=1 << 22, local_addr=local
        )
        return cls(reader, writer)

    async def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, timeout: float = 5.0) -> str:
        raw = await asyncio.wait_for(self.reader.readline(), timeout)
        if not raw:
            raise EOFError("connection closed")
        assert raw.endswith(b"\r\n"), f"line not ended by CRLF: {raw!r}"
        text = raw[:-2].decode()
        self.seen.append(text)
        return text

    async def expect(self, pattern: str, timeout: float = 5.0) -> str:
        """Read until a line matches `pattern` (a regex searched in the line)."""
        deadline = asyncio.get_running_loop().time() + timeout
        skipped = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; got {skipped!r}")
            try:
                text = await self.line(left)
            except TimeoutError:
                raise AssertionError(f"no line matching {pattern!r}; got {skipped!r}") from None
            if re.search(pattern, text):
                return text
            skipped.append(text)

    async def lines(self, quiet: float = 0.4, timeout: float = 10.0) -> list[str]:
        """Every line until nothing arrives for `quiet` seconds: for an answer whose length
        is not known (a /history, a backlog), which only a quiet moment ends. To show that
        nothing comes, use `assert_quiet`."""
        out: list[str] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                out.append(await self.line(quiet))
            except TimeoutError:
                break
        return out

    async def login(self, nick: str, password: str = "secret123") -> list[str]:
        """Log in; returns the backlog (the lines before `* ready`)."""
        await self.expect("nickname")
        await self.send(nick)
        await self.expect("(?i)password")
        await self.send(password)
        backlog = []
        while True:
            text = await self.line(10)
            if text.startswith("* ready"):
                return backlog
            backlog.append(text)

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            while True:
                raw = await asyncio.wait_for(self.reader.readline(), timeout)
                if not raw:
                    return True
                self.seen.append(raw.decode(errors="replace").rstrip("\r\n"))
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class WebClient:
    """Speaks the web door's JSON frames over a real WebSocket, as the page does."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int, origin: str | None = "default") -> WebClient:
        from websockets.asyncio.client import connect

        if origin == "default":
            origin = f"http://127.0.0.1:{port}"
        ws = await connect(
            f"ws://127.0.0.1:{port}/ws",
            origin=origin,  # type: ignore[arg-type]
            max_size=None,
            open_timeout=10,
        )
        return cls(ws)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"v": 1, **frame}))

    async def frame(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = json.loads(raw)
        assert frame.get("v") == 1, frame
        self.seen.append(frame)
        return frame  # type: ignore[no-any-return]

    async def expect(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """Read frames until one of type `kind` whose fields include `match`."""
        deadline = asyncio.get_running_loop().time() + timeout
        skipped = []
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"no {kind} frame matching {match}; got {skipped!r}")
            try:
                f = await self.frame(left)
            except TimeoutError:
                raise AssertionError(f"no {kind} frame matching {match}; got {skipped!r}") from None
            if f.get("type") == kind and all(f.get(k) == v for k, v in match.items()):
                return f
            skipped.append(f)

    async def login(self, nick: str, password: str = "secret123") -> list[dict[str, Any]]:
        """Log in; returns the frames before `ready` (the backlog)."""
        await self.expect("login_required")
        await self.send({"type": "login", "nick": nick, "password": password})
        before = []
        while True:
            f = await self.frame(10)
            if f["type"] == "ready":
                return before
            assert f["type"] != "error", f
            before.append(f)

    async def texts(self, quiet: float = 0.4) -> list[tuple[str, str, str]]:
        """(conversation, sender, text) of every message until quiet (as `Client.lines`)."""
        out = []
        while True:
            try:
                f = await self.frame(quiet)
            except TimeoutError:
                return out
            if f["type"] == "messages":
                out += [(f["conv"]["id"], i["from"], i["text"]) for i in f["items"]]

    async def close(self) -> None:
        await self.ws.close()


def web_texts(frames: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [
        (f["conv"]["id"], i["from"], i["text"])
        for f in frames
        if f["type"] == "messages"
        for i in f["items"]
    ]


def messages(lines: list[str]) -> list[tuple[str, str, str]]:
    """The (where, nick, text) of every message line, in order."""
    out = []
    for line in lines:
        m = MESSAGE_RE.match(line)
        if m:
            out.append((m.group(1), m.group(2), m.group(3)))
    return out

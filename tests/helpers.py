"""Test tools: real redis-server and gateway processes, and a line client over TCP."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from scripts.procs import free_port, wait_port

__all__ = ["ROOT", "Client", "Gateway", "RedisProcess", "free_port", "messages", "wait_port"]

ROOT = Path(__file__).resolve().parent.parent
MESSAGE_RE = re.compile(r"^\[[^\]]+\] ([#@]\S+) <([^>]+)> (.*)$")


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
        exe = shutil.which("redis-server")
        if exe is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--enable-debug-command",  # DEBUG SLEEP stalls Redis in fault tests
            "local",
        ]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

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
        env.update({"CHAT_SCRYPT_LOG_N": "10", "CHAT_RATE": "0", "PYTHONUNBUFFERED": "1"})
        env.setdefault("CHAT_MAX_REGISTRATIONS", "0")  # tests register many from 127.0.0.1
        env.update(self.env)
        args = [sys.executable, str(ROOT / "server.py"), "--port", str(self.port)]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        args += self.args
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=logf, stderr=logf)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Client:
    """Speaks the contract like a script would: lines in, lines out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.seen: list[str] = []

    @classmethod
    async def connect(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
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
        """Every line until nothing arrives for `quiet` seconds."""
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


def messages(lines: list[str]) -> list[tuple[str, str, str]]:
    """The (where, nick, text) of every message line, in order."""
    out = []
    for line in lines:
        m = MESSAGE_RE.match(line)
        if m:
            out.append((m.group(1), m.group(2), m.group(3)))
    return out

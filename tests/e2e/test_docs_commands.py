"""Every command README.md and docs/ show runs as written.

Each command of a ```sh block, and each inline `command` that starts with a program, is
either run here or on a checked list that says why not and checks what can be checked
(a `pip install -r FILE` names a file that exists, a `make` target is in the Makefile, an
`apt-get` package is one .ci/run installs). A command that is in neither fails the test,
so a new one in the docs is run or listed. Gateways and Redis are started as the block
shows them, side by side, with every port (written or a default) swapped for a free one,
the same free one wherever the docs use the same port: two commands that would collide
on a machine collide here too. Programs that run long (the cluster script, the client,
the benchmarks) are checked through their --help: every option a command writes must be
one the program takes.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.settings import Settings
from scripts.procs import stop_process, wait_port
from tests.helpers import ROOT, Client, free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Inline code spans starting with one of these are commands.
PROGRAMS = ("python3", "redis-server", "redis-cli", "telnet", "irssi", "docker", "make", "pip")
PROGRAMS += ("apt-get", "CHAT_PASSWORD=")
#: The listeners of a gateway and the options that set them.
LISTENERS = ("port", "web_port", "irc_port", "metrics_port", "tls_port", "irc_tls_port")
#: Client commands shown in docs/IRC.md's block (irssi, WeeChat): typed in those clients.
CLIENT_COMMANDS = ("/connect", "/server", "/set")


@dataclass
class Command:
    where: str  # file:line
    text: str  # as written, without its comment
    block: str | None  # file:line of its ```sh block; None for an inline span

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def program(self) -> list[str]:
        """The words from the program on: leading VAR=value assignments dropped, and a
        shell tail (`<`, `&&`, `|`) cut off."""
        words = self.argv
        while words and re.match(r"^[A-Z_]+=", words[0]):
            words = words[1:]
        for i, w in enumerate(words):
            if w in ("<", ">", "&&", "|", ";") or w.startswith(("<", ">")):
                return words[:i]
        return words


def _without_comment(line: str) -> str:
    """The line up to an unquoted `#` that starts a word (a shell comment)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=False)
    lex.whitespace_split = True
    lex.commenters = ""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def documented() -> list[Command]:
    found: list[Command] = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        block: str | None = None
        for n, line in enumerate(lines, 1):
            where = f"{path.name}:{n}"
            if line.startswith("```"):
                block = where if line.strip() == "```sh" and block is None else None
                continue
            if block is not None:
                text = _without_comment(line)
                if text:
                    found.append(Command(where, text, block))
                continue
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(PROGRAMS) and " " in span:
                    found.append(Command(where, span.strip(), None))
    return found


COMMANDS = documented()


def kind(c: Command) -> str:
    """What this test does with the command: start, help, redis-cli, or checked:<why>."""
    p = c.program
    if not p:
        return "unknown"
    if p[0] == "python3" and len(p) > 1 and p[1] == "server.py":
        return "start" if c.block and "--help" not in p else "help"
    if p[0] == "python3" and len(p) > 1 and p[1].endswith(".py"):
        return "help"
    if p[:3] == ["python3", "-m", "gateway.admin"]:
        return "help"
    if p[:3] == ["python3", "-m", "pytest"]:
        return "checked:the test suite itself, which runs this test"
    if p[:3] == ["python3", "-m", "venv"]:
        return "checked:the standard library's venv"
    if p[0] == "redis-server":
        return "start"
    if p[0] == "redis-cli":
        if "-p" not in p:  # prose naming a redis-cli mode (`redis-cli -c`): no server given
            return "checked:a redis-cli mode named in the text; its commands are run"
        return "redis-cli"
    if p[0] == "pip" and "-r" in p:
        return "checked:pip install of a requirements file"
    if p[:3] == ["npm", "ci", "--prefix"]:
        return "checked:npm ci of a pinned lock file (.ci/run runs it; the a11y test needs it)"
    if p[0] == "apt-get":
        return "checked:system packages (.ci/run installs them)"
    if p[0] == "make":
        return "checked:a Makefile target"
    if p[0] == "docker":
        return "checked:Docker (tests/e2e/test_deploy.py checks the compose file and image)"
    if p[0] in ("irssi", *CLIENT_COMMANDS):
        return "checked:typed in an IRC client (tests/e2e/test_irc.py drives irssi)"
    if p[0] == "telnet":
        return "checked:telnet to a gateway's line port (probed where the gateway starts)"
    return "unknown"


def test_every_documented_command_is_run_or_checked() -> None:
    unknown = [f"{c.where}: {c.text}" for c in COMMANDS if kind(c) == "unknown"]
    assert not unknown, "commands in the docs that this test neither runs nor checks:\n" + (
        "\n".join(unknown)
    )
    assert len(COMMANDS) > 40  # the extraction found the blocks
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for c in COMMANDS:
        p = c.program
        if kind(c) == "checked:pip install of a requirements file":
            assert (ROOT / p[p.index("-r") + 1]).is_file(), c
        elif kind(c).startswith("checked:system"):
            for package in [w for w in p[1:] if not w.startswith("-") and w != "install"]:
                assert package in ci, f"{c.where}: {package} is not installed by .ci/run"
        elif kind(c) == "checked:a Makefile target":
            for target in p[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, re.M), c
        elif kind(c).startswith("checked:the test suite") and "-n" in p:
            assert "pytest-xdist" in (ROOT / "requirements-dev.txt").read_text()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.pop("REDIS_URL", None)
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), PYTHONUNBUFFERED="1")
    return env


@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if kind(c) == "help"],
    ids=lambda c: f"{c.where}",
)
def test_programs_take_the_options_the_docs_give_them(command: Command, tmp_path) -> None:
    words = command.program
    program = words[1:3] if words[1] == "-m" else words[1:2]
    done = subprocess.run(
        [sys.executable, *program, "--help"], cwd=ROOT, env=_env(tmp_path),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, f"{command.where}: {command.text}\n{done.stderr}"
    helped = done.stdout
    if "cluster.py" in words[1]:  # other options go to every gateway
        gateway = subprocess.run(
            [sys.executable, "server.py", "--help"], cwd=ROOT, capture_output=True, text=True
        )
        helped += gateway.stdout
    for option in [w.split("=")[0] for w in words if w.startswith("--") and w != "--help"]:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", helped), (
            f"{command.where}: {command.text}: {option} is not an option of {words[1]}"
        )


# -- gateways and Redis, started as the blocks show them ----------------------------------


class Ports:
    """A free port for each port the docs name, the same one each time it is named."""

    def __init__(self) -> None:
        self.map: dict[int, int] = {}

    def __call__(self, port: int) -> int:
        if port == 0:
            return 0
        if port not in self.map:
            self.map[port] = free_port()
        return self.map[port]

    def swap(self, words: list[str]) -> list[str]:
        """The words with every port (after a port option or -p, or in host:port) swapped."""
        out = []
        after_port = False
        for w in words:
            if after_port and w.isdigit():
                w = str(self(int(w)))
            else:
                w = re.sub(r"(?<=:)(\d{2,5})\b", lambda m: str(self(int(m.group(1)))), w)
                w = re.sub(
                    r"^(--[a-z-]*port=)(\d+)$", lambda m: m.group(1) + str(self(int(m.group(2)))), w
                )
            after_port = w == "-p" or (w.startswith("--") and w.endswith("port"))
            out.append(w)
        return out


def _gateway_argv(words: list[str], ports: Ports) -> tuple[list[str], Settings]:
    """server.py's argv with its ports swapped, and every listener it leaves at its
    default given that default's swapped port (so two commands left at one default
    collide here as they would on a machine)."""
    written = Settings.from_args(words[2:], env={})
    argv = ports.swap(words[2:])
    for name in LISTENERS:
        option = "--" + name.replace("_", "-")
        port = getattr(written, name)
        if port and option not in words and not any(w.startswith(option + "=") for w in words):
            argv += [option, str(ports(port))]
    return [sys.executable, "server.py", *argv], written


async def _probe(port: int) -> None:
    c = await Client.connect(port)
    try:
        await c.expect("nickname")
    finally:
        await c.close()


BLOCKS = sorted({c.block for c in COMMANDS if c.block and kind(c) == "start"})


@pytest.mark.parametrize("block", BLOCKS)
async def test_a_block_of_servers_starts_as_written(block: str, tmp_path) -> None:
    """The block's redis-server and gateways, started together in its order; each one
    listens where it says (nothing collides), users on them talk; the inline redis-cli
    of the same section stops that Redis."""
    ports = Ports()
    started: list[tuple[Command, subprocess.Popen[bytes], list[int]]] = []
    log = open(tmp_path / "out.log", "wb")  # noqa: SIM115 - closed below
    try:
        for c in [c for c in COMMANDS if c.block == block and kind(c) == "start"]:
            words = c.program
            if words[0] == "redis-server":
                argv = [words[0], *ports.swap(words[1:]), "--dir", str(tmp_path)]
                listens = [ports(int(words[words.index("--port") + 1]))]
            else:
                argv, settings = _gateway_argv(words, ports)
                listens = [ports(getattr(settings, n)) for n in LISTENERS if getattr(settings, n)]
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=_env(tmp_path), stdout=log, stderr=subprocess.STDOUT
            )
            started.append((c, proc, listens))
            for port in listens:
                try:
                    await asyncio.to_thread(wait_port, port, proc, 30)
                except (RuntimeError, TimeoutError):
                    log.flush()
                    out = (tmp_path / "out.log").read_text()
                    raise AssertionError(f"{c.where}: `{c.text}` did not start:\n{out}") from None
        gateways = [(c, ls) for c, _, ls in started if c.program[0] == "python3"]
        for c, listens in gateways:
            await _probe(listens[0])  # the line port greets
            settings = Settings.from_args(c.program[2:], env={})
            if settings.web_port:  # the page is served
                url = f"http://127.0.0.1:{ports(settings.web_port)}/"
                page = await asyncio.to_thread(lambda u=url: urllib.request.urlopen(u, timeout=5))
                assert page.status == 200
        if len(gateways) > 1:  # "A user on 8001 and a user on 8002 talk"
            a, b = await Client.connect(gateways[0][1][0]), await Client.connect(gateways[1][1][0])
            await a.login("alice")
            await b.login("bob")
            await a.send("across the gateways")
            await b.expect("<alice> across the gateways")
            await a.close()
            await b.close()
        for c, proc, _ in reversed(started):
            if c.program[0] == "python3":
                assert stop_process(proc, signal.SIGTERM, 15) == 0, c.text
        # the section's inline command that stops its Redis, as written
        redis = [(c, p) for c, p, _ in started if c.program[0] == "redis-server"]
        if redis:
            path, line = block.split(":")
            stop = [
                c for c in COMMANDS
                if c.block is None and c.where.startswith(path + ":")
                and "shutdown" in c.text and c.program[0] == "redis-cli"
                and 0 < int(c.where.split(":")[1]) - int(line) < 20
            ]  # fmt: skip
            assert stop, f"{block}: no redis-cli command stops its Redis"
            done = subprocess.run(ports.swap(stop[0].program), capture_output=True, timeout=30)
            assert done.returncode == 0, done
            assert redis[0][1].wait(10) is not None
    finally:
        for _, proc, _ in started:
            stop_process(proc, signal.SIGKILL, 5)
        log.close()


# -- the redis-cli lines of docs/REDIS.md ---------------------------------------------------


async def test_the_redis_cli_lines_run_against_a_gateways_redis(
    private_redis, gateways, clients, redis_cluster
) -> None:
    """On a Redis a gateway wrote (bob in #random, a private message, a token, a ban):
    every redis-cli line of the docs answers without an error; the lines for a cluster
    run against a node of the test cluster."""
    redis = private_redis()
    gw = gateways(redis.url, "--ban-threshold", "1")
    alice, bob = await clients(gw.port), await clients(gw.port, "127.0.0.2")
    await alice.login("alice")
    await bob.login("bob")
    await bob.send("/chats random")
    await bob.expect("joined #random")
    await bob.send("/token")
    await bob.expect("token: ")
    await alice.send("/send bob hello")
    await bob.expect("hello")
    await alice.send("/ban bob")
    await alice.expect("complaint about bob")
    # the docs' ports: 6390 the Redis of scripts/cluster.py, 7001 a Redis Cluster node
    ports = {6390: redis.port, 7001: redis_cluster.masters()[0].port}
    lines = [c for c in COMMANDS if kind(c) == "redis-cli" and "shutdown" not in c.text]
    assert len(lines) > 10
    for c in lines:
        written = int(c.argv[c.argv.index("-p") + 1])
        text = c.text.replace(f"-p {written}", f"-p {ports[written]}")
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", text], capture_output=True, text=True, timeout=30
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0 and not re.search(r"ERR|WRONGTYPE|\(error\)", out), (
            f"{c.where}: {c.text}\n{out}"
        )

"""Options a new user meets: `--help` says what each one does and its unit, grouped; every
option refuses a wrong value of each kind with one line and status 2, from the command
line or the environment; a listener that cannot listen names the option to change; a Redis
that does not answer at start gets a hint once."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.settings import GROUPS, Settings, env_var
from tests.helpers import ROOT, eventually_sync, free_port

FIELDS = dataclasses.fields(Settings)
#: Wrong values of each kind, by what the option takes (its metavar).
BAD = {
    "PORT": ["-1", "70000", "abc", "8.5"],
    "N": ["abc", "-5", "1e99", "9" * 30],
    "SECONDS": ["abc", "-5", "1e99", "nan"],
    "MS": ["abc", "-5", "1e99"],
    "BYTES": ["abc", "-5", "1e99"],
    "PER_S": ["abc", "-5", "inf", "nan"],
    "HOST": ["", "two words"],
    "URL": ["localhost:6379", "http://h:1", "redis://h:99999", "redis://h:1/x", "redis://"],
    "ORIGINS": ["chat.example", "https://chat.example/path"],
    "LEVEL": ["loud"],
}


def _env() -> dict[str, str]:
    """The environment without any CHAT_* or REDIS_URL of the machine running the tests."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CHAT_") and k != "REDIS_URL"}


def _bad_values(f: dataclasses.Field[object], tmp_path: Path) -> list[str]:
    metavar = f.metadata["opt"].metavar
    if metavar == "FILE":
        if f.name == "data":
            return [str(tmp_path)]  # a directory
        return [str(tmp_path / "missing.pem"), str(tmp_path)]
    return BAD[metavar]


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], env: dict[str, str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        Settings.from_args(argv, env=env)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (argv, env, err)
    assert len(err.splitlines()) == 1, err
    return err


def test_every_option_refuses_each_kind_of_wrong_value_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    checked = 0
    for f in FIELDS:
        option = "--" + f.name.replace("_", "-")
        for bad in _bad_values(f, tmp_path):
            err = _refused(capsys, [option, bad], {})
            shown = bad if bad and " " not in bad else repr(bad)
            assert err.startswith(f"error: {option} {shown}: "), err
            err = _refused(capsys, [], {env_var(f.name): bad})
            assert err.startswith(f"error: {env_var(f.name)}={shown}: "), err
            checked += 1
    assert checked > 150
    # what a single value does not show: combinations
    for argv, said in [
        (["--tls-port", "9443"], "--tls-port needs --tls-cert and --tls-key"),
        (["--irc-tls-port", "6697"], "--irc-tls-port needs --tls-cert and --tls-key"),
        (["--port", "9000", "--irc-port", "9000"], "--port and --irc-port are both 9000"),
        (["--redis-url", "redis://h:1", "--data", "x.chat"], "--data is the embedded store"),
    ]:
        assert said in _refused(capsys, argv, {})
    # and good values of each kind still pass
    s = Settings.from_args(
        ["--port", "0", "--rate", "0.5", "--redis-url", "redis://u:p@h1:7001,[::1]:7002/0"],
        env={"CHAT_LOG_LEVEL": "debug", "CHAT_WEB_ORIGINS": "https://a.example, http://b:81"},
    )
    assert (s.port, s.rate, s.log_level) == (0, 0.5, "DEBUG")


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env or _env(), capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip


def test_the_programs_refuse_bad_values_with_one_line_not_a_traceback() -> None:
    for argv, said in [
        (("server.py", "--port", "70000"), "error: --port 70000: not a port number; give 0 to"),
        (("server.py", "--redis-url", "localhost:6379"), "not a Redis URL: it must start with"),
        (("-m", "gateway.admin", "--redis-url", "localhost:6379", "users"), "not a Redis URL"),
        (("-m", "gateway.admin", "--redis-url", "redis://h", "users", "--limit", "0"), "give 1"),
        (("server.py", "--bogus"), "unrecognized arguments: --bogus"),
    ]:
        done = _run(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and said in done.stderr, (argv, done.stderr)
        assert done.stdout == ""
    done = _run("server.py", env={**_env(), "CHAT_MAX_LINE": "lots"})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("error: CHAT_MAX_LINE=lots: not a whole number")


def test_help_says_what_each_option_does_and_its_unit_grouped() -> None:
    done = _run("server.py", "--help")
    assert done.returncode == 0
    text = re.sub(r"\s+", " ", done.stdout)
    headings = [line[:-1] for line in done.stdout.splitlines() if line and line[-1] == ":"]
    assert [h for h in headings if h in GROUPS] == list(GROUPS)
    for f in FIELDS:
        option, opt = "--" + f.name.replace("_", "-"), f.metadata["opt"]
        m = re.search(rf" {option} {opt.metavar} (.*?) \[env {env_var(f.name)}, default ", text)
        assert m, f"{option} has no help of its own"
        said = m.group(1)
        assert len(said.split()) >= 4, f"{option}: {said!r}"
        unit = {"SECONDS": "second", "MS": "millisecond", "BYTES": "bytes", "PORT": "port"}
        if opt.metavar in unit:
            assert unit[opt.metavar] in said, f"{option} does not say its unit: {said!r}"
    assert "env CHAT_PORT, default 8000" in text

    done = _run("scripts/cluster.py", "--help")
    text = re.sub(r"\s+", " ", done.stdout)
    for default in ("(default: 3)", "(default: 8001)", "(default: 6390)", "(default: 9101)"):
        assert default in text, text
    done = _run("-m", "gateway.admin", "--help")
    assert "standalone" not in done.stdout and "Redis Cluster" in done.stdout


def _certs(d: Path) -> tuple[Path, Path]:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=localhost", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return d / "c.pem", d / "k.pem"


def test_a_busy_listener_names_the_option_to_change(tmp_path: Path) -> None:
    cert, key = _certs(tmp_path)

    def start_on_a_busy(
        option: str,
    ) -> tuple[str, dict[str, int], subprocess.CompletedProcess[str]]:
        ports = {o: free_port() for o in ("--port", "--web-port", "--irc-port")}
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            ports[option] = busy.getsockname()[1]
            argv = [f"{o}={p}" for o, p in ports.items()]
            done = _run(
                "server.py", *argv, "--data", "none", "--tls-cert", str(cert), "--tls-key",
                str(key),
            )  # fmt: skip
        return option, ports, done

    options = ("--port", "--web-port", "--irc-port", "--tls-port", "--irc-tls-port",
               "--metrics-port")  # fmt: skip
    with ThreadPoolExecutor(len(options)) as pool:  # six start-ups at once: independent
        results = list(pool.map(start_on_a_busy, options))
    for option, ports, done in results:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 1 and len(errors) == 1, done.stderr
        assert f":{ports[option]}: Address already in use" in errors[0], errors
        assert errors[0].endswith(f"choose another port with {option})"), errors
        assert "Traceback" not in done.stderr and "WARNING" not in done.stderr, done.stderr
        assert "ERROR" not in done.stderr, done.stderr  # one line, not a log line as well


def test_a_failed_start_names_every_busy_port_at_once_and_leaves_no_files(
    tmp_path: Path,
) -> None:
    """A second embedded gateway on the default ports failed on IRC, then (after changing
    that) on the web port, each time leaving a data file for a gateway that never ran."""
    home = tmp_path / "xdg"
    env = {**_env(), "XDG_DATA_HOME": str(home)}
    with socket.socket() as a, socket.socket() as b:
        for s in (a, b):
            s.bind(("127.0.0.1", 0))
            s.listen()
        irc, web = a.getsockname()[1], b.getsockname()[1]
        done = _run(
            "server.py", "--port", str(free_port()), "--irc-port", str(irc), "--web-port",
            str(web), env=env,
        )  # fmt: skip
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"IRC on 127.0.0.1:{irc}" in done.stderr and "--irc-port" in done.stderr
    assert f"web on 127.0.0.1:{web}" in done.stderr and "--web-port" in done.stderr
    assert not home.exists(), sorted(home.rglob("*"))
    typo = tmp_path / "no" / "such" / "x.chat"
    done = _run("server.py", "--port", str(free_port()), "--data", str(typo), env=env)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"there is no directory {typo.parent}" in done.stderr, done.stderr
    assert not (tmp_path / "no").exists()


def test_a_redis_that_does_not_answer_gets_a_hint_once(tmp_path: Path) -> None:
    dead = free_port()
    log = tmp_path / "gw.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--port", str(free_port()),
             "--redis-url", f"redis://127.0.0.1:{dead}/0"],
            cwd=ROOT, env={**_env(), "CHAT_WEB_PORT": "0", "CHAT_IRC_PORT": "0"},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            eventually_sync(
                lambda: log.read_text().count("event=redis_unavailable") >= 3,
                "three tries said in the log",
                timeout=15,
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    hint = (
        f"is Redis running at redis://127.0.0.1:{dead}/0? start it with "
        f"`redis-server --port {dead}`"
    )
    assert text.count(hint) == 1, text
    assert "Traceback" not in text


def test_time_options_take_units_as_ban_does() -> None:
    """`--ban-duration 2h` was refused as 'not a whole number' while a moderator's
    `/ban bob 2h` takes it."""
    from gateway.settings import Settings

    s = Settings.from_args(["--ban-duration", "2h", "--message-ttl", "90m", "--token-ttl", "7d"])
    assert (s.ban_duration, s.message_ttl, s.token_ttl) == (7200, 5400, 604800)
    done = _run("server.py", "--ban-duration", "2x")
    assert done.returncode == 2 and "not a time; give seconds (90) or 90s, 30m" in done.stderr

"""TLS to the gateway, TLS to Redis, and a least-privilege Redis ACL user, for real."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py

from scripts.redisserver import redis_server_argv, redis_server_exe
from tests.helpers import ROOT, Client, free_port, wait_port


#: The ACL rule docs/REDIS.md documents for a gateway: keys and channels under chat:, and
#: only the commands the gateway and its scripts send.
def _documented_acl() -> str:
    """The rule exactly as docs/REDIS.md gives it, so the doc and this test cannot drift."""
    prefix = "ACL SETUSER gateway on >CHANGE-ME "
    for line in (ROOT / "docs" / "REDIS.md").read_text().splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :]
    raise AssertionError("docs/REDIS.md no longer gives the gateway's ACL rule")


GATEWAY_ACL = _documented_acl()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not on PATH")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
             cwd=d)  # fmt: skip
    return d


def _start_redis(workdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    try:
        exe = redis_server_exe()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls = "--tls-cert-file" in extra  # then TLS only: the plain port is 0 (none)
    args = redis_server_argv(
        0 if tls else port,
        workdir,
        "--loglevel", "warning",
        *(("--tls-port", str(port)) if tls else ()),
        *extra,
        exe=exe,
    )  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc=proc)
    return proc, port


@pytest.fixture
def redis_procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
        p.wait(10)


async def _everything(port: int, tls: ssl.SSLContext | None = None) -> None:
    """Login, chat, join, private, complain, who: each must work through this gateway."""

    async def connect() -> Client:
        reader, writer = await asyncio.open_connection(
            "localhost" if tls else "127.0.0.1", port, ssl=tls, limit=1 << 20
        )
        return Client(reader, writer)

    a, b = await connect(), await connect()
    try:
        await a.login("alice")
        await b.login("bob")
        await a.send("hello over the wire")
        await b.expect("hello over the wire")
        await b.send("/chats room")
        await b.expect("joined #room")
        await a.send("/chats room")
        await a.expect("joined #room")
        await b.send("in the room")
        await a.expect(r"#room <bob> in the room")
        await a.send("/send bob psst")
        await b.expect("psst")
        await a.send("/who")
        assert "(2)" in await a.expect("online in #room")
        await a.send("/ban bob")
        assert "complaint about bob recorded" in await a.expect("complaint")
        await a.send("/get_chats")
        assert "#room" in await a.expect("chats:")
        await a.send("/history 1")
        await a.expect("in the room")
        await a.send("/leave #room")
        await a.expect("left #room")
        await a.send("/token")  # the token scripts run under the same rule
        token = (await a.expect("token: ")).split()[2]
        assert len(token) >= 32
        assert not [line for line in a.seen + b.seen if line.startswith("! ")]
    finally:
        await a.close()
        await b.close()
    # And a returning user logs in again (account read back, backlog, cursors).
    c = await connect()
    try:
        await c.login("alice")
    finally:
        await c.close()


async def test_a_tls_gateway_serves_the_same_chat(certs, redis_url, gateways, clients) -> None:
    tls_port = free_port()
    gw = gateways(redis_url, "--tls-port", str(tls_port), "--tls-cert",
                  str(certs / "server.pem"), "--tls-key", str(certs / "server.key"))  # fmt: skip
    wait_port(tls_port)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    await _everything(tls_port, ctx)
    # Plain and TLS users share one chat.
    plain = await clients(gw.port)
    await plain.login("carol")
    reader, writer = await asyncio.open_connection("localhost", tls_port, ssl=ctx)
    secure = Client(reader, writer)
    await secure.login("dave")
    await plain.send("from plain")
    await secure.expect("<carol> from plain")
    await secure.close()
    # client.py --tls --ca verifies the certificate and chats.
    env = dict(os.environ, CHAT_PASSWORD="secret123")
    run = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "client.py"), "--plain", "--nick", "erin", "--tls",
        "--ca", str(certs / "ca.pem"), "--server", f"localhost:{tls_port}",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert run.stdin is not None and run.stdout is not None
    run.stdin.write(b"hello from client.py\n")
    await run.stdin.drain()
    assert "<erin> hello from client.py" in await plain.expect("client.py", timeout=10)
    run.stdin.close()
    await asyncio.wait_for(run.wait(), 10)
    # Without the CA the certificate is refused: no chat over an unverified link.
    unknown = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("localhost", tls_port, ssl=unknown)


def test_bad_certificate_files_are_a_clear_startup_error(certs, redis_url, tmp_path) -> None:
    def start(key: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "server.py"), "--redis-url", redis_url, "--port",
             str(free_port()), "--tls-port", str(free_port()), "--tls-cert",
             str(certs / "server.pem"), "--tls-key", str(key)],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    out = start(tmp_path / "missing.key")  # a usage error: said before anything starts
    assert out.returncode == 2
    missing = tmp_path / "missing.key"
    assert (
        out.stderr == f"error: --tls-key {missing}: no such file (see python3 server.py --help)\n"
    )
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    out = start(garbage)
    assert out.returncode == 1
    assert "cannot use TLS certificate" in out.stderr and "garbage.key" in out.stderr


async def test_a_gateway_on_rediss(certs, redis_procs, gateways, tmp_path) -> None:
    proc, port = _start_redis(
        tmp_path / "redis-tls",
        "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file",
        str(certs / "server.key"), "--tls-ca-cert-file", str(certs / "ca.pem"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    redis_procs.append(proc)
    gw = gateways(f"rediss://localhost:{port}/0", "--redis-ca", str(certs / "ca.pem"))
    await _everything(gw.port)
    # The pub/sub link and the post pipeline are TLS too: the server has no plain port, and
    # messages went both ways above. Restart-free check of the CA query parameter form:
    gw2 = gateways(f"rediss://localhost:{port}/0?ssl_ca_certs={certs / 'ca.pem'}")
    c = Client(*await asyncio.open_connection("127.0.0.1", gw2.port))
    await c.login("alice")
    await c.send("via the url's CA")
    await c.expect("via the url's CA")
    await c.close()


async def test_a_gateway_as_a_least_privilege_acl_user(redis_procs, gateways, tmp_path) -> None:
    proc, port = _start_redis(tmp_path / "redis-acl")
    redis_procs.append(proc)
    admin = redis_py.Redis(port=port, decode_responses=True)
    admin.execute_command("ACL", "SETUSER", "gateway", "on", ">gw-pass", *GATEWAY_ACL.split())
    admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-pass", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    admin.close()
    gw = gateways(f"redis://gateway:gw-pass@127.0.0.1:{port}/0")
    await _everything(gw.port)
    admin = redis_py.Redis(
        port=port, username="admin", password="admin-pass", decode_responses=True
    )
    try:
        denied = [e for e in admin.acl_log() if e.get("username") == "gateway"]
        assert denied == [], denied
        # The rule really is narrow: no FLUSHALL, no key outside chat:.
        gwr = redis_py.Redis(port=port, username="gateway", password="gw-pass")
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            gwr.flushall()
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            gwr.get("other:key")
        gwr.close()
    finally:
        admin.close()


async def test_the_web_door_serves_https_and_wss_with_the_tls_certificate(
    certs, redis_url, gateways, clients
) -> None:
    import urllib.request

    from websockets.asyncio.client import connect

    web_port = free_port()
    gw = gateways(redis_url, "--tls-port", str(free_port()), "--tls-cert",
                  str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
                  CHAT_WEB_PORT=str(web_port))  # fmt: skip
    wait_port(web_port)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))

    def page() -> bytes:
        with urllib.request.urlopen(f"https://localhost:{web_port}/", context=ctx) as r:
            return r.read()  # type: ignore[no-any-return]

    assert b"Nickname" in await asyncio.to_thread(page)
    ws = await connect(
        f"wss://localhost:{web_port}/ws", ssl=ctx, origin=f"https://localhost:{web_port}"
    )  # type: ignore[arg-type]
    try:
        await ws.recv()
        await ws.send('{"v": 1, "type": "login", "nick": "sec", "password": "secret123"}')
        while '"ready"' not in await ws.recv():
            pass
        plain = await clients(gw.port)
        await plain.login("plainy")
        await plain.send("over plain telnet")
        while "over plain telnet" not in await ws.recv():
            pass
    finally:
        await ws.close()
    import urllib.error

    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await asyncio.to_thread(  # a browser without the CA refuses the page
            urllib.request.urlopen, f"https://localhost:{web_port}/", timeout=5,
            context=ssl.create_default_context(),
        )  # fmt: skip

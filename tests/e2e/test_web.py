"""The web door over a real WebSocket (the `websockets` client) against real gateways."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import WebClient, free_port, messages, shown_recorded, web_texts


def web_gateway(gateways, backend, **env):  # type: ignore[no-untyped-def]
    return gateways(backend, CHAT_WEB_PORT=str(free_port()), **env)


async def test_page_is_served_with_a_strict_content_security_policy(backend, gateways) -> None:
    gw = web_gateway(gateways, backend)

    def get(path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{gw.web_port}{path}", timeout=5) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    status, headers, body = await asyncio.to_thread(get, "/")
    assert status == 200 and b'<label for="nick">Nickname</label>' in body
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert b"<script>" not in body and b"onclick" not in body  # no inline script at all
    status, headers, _ = await asyncio.to_thread(get, "/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, _, _ = await asyncio.to_thread(get, "/../server.py")
    assert status == 404


async def test_login_chat_and_markup_stays_plain_data(backend, gateways, clients) -> None:
    gw = web_gateway(gateways, backend)
    web = await WebClient.connect(gw.web_port)
    await web.login("wendy")
    telnet = await clients(gw.port)
    await telnet.login("tom")
    markup = "<img src=x onerror=alert(1)>"
    await web.send({"type": "say", "text": markup})
    line = await telnet.expect("wendy")
    assert messages([line]) == [("#general", "wendy", markup)]
    frame = await web.expect("messages")
    assert frame["items"][0]["text"] == markup and frame["conv"]["id"] == "#general"
    assert frame["items"][0]["id"] and isinstance(frame["items"][0]["ts"], int)
    await telnet.send("hi wendy")
    frame = await web.expect("messages")
    assert (frame["items"][0]["from"], frame["items"][0]["text"]) == ("tom", "hi wendy")
    await web.send({"type": "send", "to": "tom", "text": "psst"})
    assert messages([await telnet.expect("psst")]) == [("@wendy", "wendy", "psst")]
    frame = await web.expect("messages")
    assert frame["conv"] == {"kind": "private", "id": "@tom", "name": "tom"}
    await web.send({"type": "command", "line": "/chats rust"})
    await web.expect("joined", chat="#rust")
    await web.send({"type": "who"})
    online = await web.expect("online")
    assert online["chat"] == "#rust" and online["names"] == ["wendy"]
    await web.close()


async def test_bad_frames_get_error_frames_and_change_nothing(backend, gateways) -> None:
    gw = web_gateway(gateways, backend)
    web = await WebClient.connect(gw.web_port)
    await web.expect("login_required")
    await web.send({"type": "say", "text": "too early"})
    assert (await web.expect("error"))["text"] == "log in first"
    await web.ws.send("not json")
    assert (await web.expect("error"))["code"] == "bad_input"
    await web.send({"type": "dance"})
    assert "unknown frame type" in (await web.expect("error"))["text"]
    await web.send({"type": "login", "nick": "bad nick!", "password": "secret123"})
    err = await web.expect("error")
    assert err["code"] == "bad_name"


async def test_a_lone_surrogate_is_refused_and_stalls_nobody(backend, gateways, clients) -> None:
    """JSON's `\\ud800` escape decodes to text with no UTF-8 form. It used to reach the
    store's encoder, which failed after queueing the batch: every later login on that
    gateway then waited 10 s for replies that went to the wrong callers."""
    gw = web_gateway(gateways, backend)
    web = await WebClient.connect(gw.web_port)
    await web.login("wendy")
    for frame in (
        {"type": "say", "text": "hi \ud800"},
        {"type": "send", "to": "tom", "text": "\udfff"},
        {"type": "command", "line": "/chats \ud800x"},
    ):
        await web.send(frame)
        err = await web.expect("error")
        assert err["code"] == "bad_input" and "valid Unicode" in err["text"]
    tom = await clients(gw.port)
    started = asyncio.get_running_loop().time()
    await tom.login("tom")
    assert asyncio.get_running_loop().time() - started < 3
    await web.send({"type": "say", "text": "still here"})
    assert messages([await tom.expect("still here")]) == [("#general", "wendy", "still here")]
    await web.close()


async def test_foreign_origin_is_refused(backend, gateways) -> None:
    gw = web_gateway(gateways, backend)
    with pytest.raises(InvalidStatus) as refused:
        await WebClient.connect(gw.web_port, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    web = await WebClient.connect(gw.web_port, origin=None)  # not a browser: no Origin
    await web.expect("login_required")
    allowed = web_gateway(gateways, backend, CHAT_WEB_ORIGINS="https://chat.example")
    web2 = await WebClient.connect(allowed.web_port, origin="https://chat.example")
    await web2.expect("login_required")


async def test_oversized_frame_closes_with_1009(backend, gateways) -> None:
    gw = web_gateway(gateways, backend, CHAT_MAX_LINE="1024")
    web = await WebClient.connect(gw.web_port)
    await web.login("olga")
    await web.send({"type": "say", "text": "x" * 8000})  # over 6 x 1024 + 1024
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(20):
            await web.frame()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_text_of_the_longest_line_arrives_whatever_json_makes_of_it(
    backend, gateways, clients
) -> None:
    """--max-line counts the text, as on telnet: quotes and backslashes double as JSON, so
    a frame of them is twice the text (it was closed with 1009 and the text lost); a longer
    text gets an error frame and the connection goes on."""
    gw = web_gateway(gateways, backend, CHAT_MAX_LINE="1024")
    tel = await clients(gw.port)
    await tel.login("tina")
    web = await WebClient.connect(gw.web_port)
    await web.login("quoter")
    text = 'he said "' + "\\" * 1008 + '" okend'  # 1,024 bytes; 2,041 as JSON
    assert len(text.encode()) == 1024 and len(json.dumps(text)) > 2000
    await web.send({"type": "say", "text": text})
    got = await tel.expect("end")
    assert messages([got]) == [("#general", "quoter", text)]
    await web.send({"type": "say", "text": "y" * 1025})
    error = await web.expect("error")
    assert error["code"] == "bad_input" and "at most 1024 bytes" in error["text"], error
    await web.send({"type": "say", "text": "still connected"})
    await tel.expect("still connected")


async def test_web_and_telnet_across_gateways_and_replay_after_a_kill(
    redis_url, gateways, clients
) -> None:
    g1 = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    g2 = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    web = await WebClient.connect(g1.web_port)
    await web.login("wanda")
    telnet = await clients(g2.port)
    await telnet.login("theo")
    await telnet.send("across gateways")
    frame = await web.expect("messages")
    assert (frame["items"][0]["from"], frame["items"][0]["text"]) == ("theo", "across gateways")
    await shown_recorded(redis_url, "wanda", "c:general")
    g1.kill()
    for i in range(3):
        await telnet.send(f"while you were away {i}")
    await telnet.expect("while you were away 2")  # stored
    web2 = await WebClient.connect(g2.web_port)
    backlog = web_texts(await web2.login("wanda"))
    assert backlog == [("#general", "theo", f"while you were away {i}") for i in range(3)]


async def test_resume_token_logs_in_without_the_password_on_any_gateway(
    redis_url, gateways
) -> None:
    g1 = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    g2 = gateways(redis_url, CHAT_WEB_PORT=str(free_port()))
    web = await WebClient.connect(g1.web_port)
    await web.login("rhea")
    await web.send({"type": "token"})
    token = (await web.expect("token"))["token"]
    assert len(token) >= 32
    await web.close()
    again = await WebClient.connect(g2.web_port)
    await again.expect("login_required")
    await again.send({"type": "resume", "nick": "RHEA", "token": token})
    ready = await again.expect("ready")
    assert ready["nick"] == "rhea"
    assert token not in g1.output() + g2.output()  # never logged
    wrong = await WebClient.connect(g2.web_port)
    await wrong.expect("login_required")
    await wrong.send({"type": "resume", "nick": "rhea", "token": "0" * 64})
    assert (await wrong.expect("error"))["code"] == "bad_token"
    await again.send({"type": "logout"})
    await again.expect("bye")
    revoked = await WebClient.connect(g1.web_port)
    await revoked.expect("login_required")
    await revoked.send({"type": "resume", "nick": "rhea", "token": token})
    assert (await revoked.expect("error"))["code"] == "bad_token"


async def test_rate_limit_applies_to_the_web_door(backend, gateways) -> None:
    gw = web_gateway(gateways, backend, CHAT_RATE="1", CHAT_BURST="2")
    web = await WebClient.connect(gw.web_port)
    await web.login("ray")
    for i in range(4):
        await web.send({"type": "say", "text": f"quick {i}"})
    error = await web.expect("error")
    assert error["code"] == "rate_limited" and error["text"].startswith("slow down")


async def test_a_web_reader_that_does_not_read_is_dropped_and_others_are_not(
    redis_url, gateways, clients
) -> None:
    from websockets.asyncio.client import connect

    # Loopback's kernel buffers take megabytes (send buffers autotune up to 4 MB): send
    # 8 MB so that what the slow reader leaves behind passes the cap in the gateway.
    gw = web_gateway(gateways, redis_url, CHAT_MAX_OUTPUT="262144")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up fast
    sock.connect(("127.0.0.1", gw.web_port))
    slow = await connect(
        f"ws://127.0.0.1:{gw.web_port}/ws",
        sock=sock,
        max_queue=1,
        max_size=None,
        origin=f"http://127.0.0.1:{gw.web_port}",  # type: ignore[arg-type]
    )
    await slow.recv()
    await slow.send('{"v": 1, "type": "login", "nick": "sloth", "password": "secret123"}')
    while '"ready"' not in await slow.recv():
        pass
    slow.transport.pause_reading()  # from now on it reads nothing
    fast = await WebClient.connect(gw.web_port)
    await fast.login("hare")
    got = 0

    async def read_fast() -> None:
        nonlocal got
        while got < 8000:
            frame = await fast.frame(10)
            if frame["type"] == "messages":
                got += len(frame["items"])

    reader = asyncio.ensure_future(read_fast())
    tel = await clients(gw.port)
    await tel.login("fox")
    # random text: the page's frames are compressed (permessage-deflate), and a run of
    # one letter would shrink to nothing
    for burst in range(800):  # 8 MB to every reader (6 MB compressed)
        await tel.send("\r\n".join(f"{burst}-{i} " + secrets.token_urlsafe(750) for i in range(10)))
        await asyncio.sleep(0.002)
    await asyncio.wait_for(reader, 60)
    assert got == 8000  # the reader that reads gets everything
    await gw.logged("event=sendq_exceeded door=web", timeout=10)
    slow.transport.abort()


async def test_private_conversations_are_listed_at_login_and_their_history_fetched(
    backend, gateways, clients
) -> None:
    gw = web_gateway(gateways, backend)
    laptop = await WebClient.connect(gw.web_port)
    await laptop.login("pam")
    frank = await clients(gw.port)
    await frank.login("Frank")
    gus = await clients(gw.port)
    await gus.login("gus")
    for word in ("one", "two", "three"):
        await frank.send(f"/send pam {word}")
    assert [t for _, _, t in await laptop.texts()] == ["one", "two", "three"]
    phone = await WebClient.connect(gw.web_port)  # another device: nothing unread
    assert web_texts(await phone.login("pam")) == []
    assert phone.seen[-1]["privates"] == [{"kind": "private", "id": "@frank", "name": "Frank"}]
    await phone.send({"type": "history", "conv": "@frank", "count": 2})
    assert await phone.texts() == [("@frank", "Frank", "two"), ("@frank", "Frank", "three")]
    await phone.send({"type": "history", "conv": "@FRANK"})
    assert [t for _, _, t in await phone.texts()] == ["one", "two", "three"]
    await phone.send({"type": "history", "conv": "@gus"})
    assert await phone.expect("no_history") == {
        "v": 1,
        "type": "no_history",
        "conv": {"kind": "private", "id": "@gus", "name": "gus"},
        "seconds": 3600,
    }
    await phone.send({"type": "history", "conv": "#general"})
    quiet = await phone.expect("no_history")
    assert quiet["chat"] == "#general" and quiet["conv"]["id"] == "#general"
    await phone.send({"type": "history", "conv": "@nobody"})
    assert (await phone.expect("error"))["code"] == "no_such_user"
    await phone.send({"type": "history", "conv": "#den"})
    assert (await phone.expect("error"))["code"] == "not_member"
    for bad in (
        {},
        {"conv": "frank"},
        {"conv": "@frank", "count": 0},
        {"conv": "@x", "count": "5"},
    ):
        await phone.send({"type": "history", **bad})
        assert (await phone.expect("error"))["code"] == "bad_input", bad
    await phone.send({"type": "say", "text": "still fine"})
    assert messages([await frank.expect("still fine")]) == [("#general", "pam", "still fine")]

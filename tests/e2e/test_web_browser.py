"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

With CI=true a missing browser fails the run; elsewhere these tests skip with one reason.
Screenshots of each run go to the test's temporary folder (`screenshots` below).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import IN_CI
from tests.helpers import assert_quiet, eventually, free_port, messages, shown_recorded

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:  # pragma: no cover - playwright is in requirements-dev.txt
        if IN_CI:
            pytest.fail(f"playwright is not installed: {exc}")
        pytest.skip(f"playwright is not installed: {exc}")
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium")
        pytest.skip("chromium not found: apt-get install chromium")
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def page_of(browser, port: int, width: int = 1000, height: int = 700):  # type: ignore[no-untyped-def]
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
    page.problems = problems
    await page.goto(f"http://127.0.0.1:{port}/")
    return page


async def log_in(page, nick: str, password: str = "secret123") -> None:  # type: ignore[no-untyped-def]
    await page.get_by_label("Nickname").fill(nick)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_role("textbox", name="Message").wait_for()


async def say(page, text: str) -> None:  # type: ignore[no-untyped-def]
    box = page.get_by_role("textbox", name="Message")
    await box.fill(text)
    await box.press("Enter")


async def texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.strip() for t in await page.locator("#messages li .text").all_inner_texts()]


async def wait_text(page, text: str, timeout: float = 10_000) -> None:  # type: ignore[no-untyped-def]
    await page.locator("#messages li .text", has_text=text).first.wait_for(timeout=timeout)


def web_gw(gateways, redis_url):  # type: ignore[no-untyped-def]
    return gateways(redis_url, CHAT_WEB_PORT=str(free_port()))


async def test_two_browsers_and_telnet_chat_across_two_gateways(
    browser, redis_url, gateways, clients, tmp_path
) -> None:
    g1, g2 = web_gw(gateways, redis_url), web_gw(gateways, redis_url)
    ann = await page_of(browser, g1.web_port)
    ben = await page_of(browser, g2.web_port)
    await log_in(ann, "ann")
    await log_in(ben, "ben")
    tel = await clients(g2.port)
    await tel.login("tess")
    await say(ann, "hello from ann")
    await wait_text(ben, "hello from ann")
    assert messages([await tel.expect("hello from ann")]) == [("#general", "ann", "hello from ann")]
    await tel.send("hello from telnet")
    await wait_text(ann, "hello from telnet")
    await wait_text(ben, "hello from telnet")
    markup = "<img src=x onerror=alert(1)>"
    await say(ben, markup)
    await wait_text(ann, markup)
    assert await ann.locator("#messages img").count() == 0  # shown as text, not markup
    own = ann.locator("#messages li.own .text", has_text="hello from ann")
    assert await own.count() == 1  # own messages are marked
    await ann.screenshot(path=str(tmp_path / "two-gateways.png"))
    assert ann.problems == [] and ben.problems == []


async def test_page_and_telnet_of_one_user_see_the_same_conversation(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "uma")
    tel = await clients(gw.port)
    await tel.login("uma")
    other = await clients(gw.port)
    await other.login("vic")
    await say(page, "typed in the page")
    assert messages([await tel.expect("typed in the page")]) == [
        ("#general", "uma", "typed in the page")
    ]
    await tel.send("typed on telnet")
    await wait_text(page, "typed on telnet")
    await other.send("/send uma private hello")
    await tel.expect("private hello")
    await page.get_by_role("button", name="vic").first.wait_for()
    await page.locator("#privates button", has_text="vic").click()
    await wait_text(page, "private hello")
    await tel.send("/chats Garden")
    await page.locator("#chats button", has_text="#Garden").wait_for()
    assert await texts(page) == ["private hello"]
    await say(page, "/chats lounge")  # a command typed in the page moves the page too
    await page.locator("#title", has_text="#lounge").wait_for()
    await say(page, "in the lounge")
    assert messages([await tel.expect("in the lounge")]) == [("#lounge", "uma", "in the lounge")]
    await say(page, "é" * 3000)  # 6,000 bytes: refused in the page, the connection stays
    await page.locator("#banner", has_text="Too long").wait_for()
    await say(page, "still here")
    await tel.expect("still here")
    assert page.problems == []


async def test_page_recovers_after_its_gateway_is_killed_and_restarted(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    other = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "rita")
    tel = await clients(other.port)
    await tel.login("sam")
    await tel.send("before the crash")
    await wait_text(page, "before the crash")
    gw.kill()
    await page.locator("#banner", has_text="reconnecting").wait_for(timeout=10_000)
    for i in range(3):
        await tel.send(f"missed {i}")
    await say(page, "typed while it was down")  # kept, and sent after reconnecting
    gw.start()
    await page.locator("#banner", has_text="Reconnected").wait_for(timeout=20_000)
    await wait_text(page, "missed 2")
    shown = await texts(page)
    assert shown.count("before the crash") == 1
    assert [t for t in shown if t.startswith("missed")] == ["missed 0", "missed 1", "missed 2"]
    assert messages([await tel.expect("typed while it was down", timeout=10)]) == [
        ("#general", "rita", "typed while it was down")
    ]


async def test_reload_keeps_the_user_logged_in_and_shows_nothing_twice(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "rosa")
    tel = await clients(gw.port)
    await tel.login("tim")
    await tel.send("one")
    await wait_text(page, "one")
    await page.wait_for_function("localStorage.getItem('chat.resume') !== null")
    stored = await page.evaluate("localStorage.getItem('chat.resume')")
    assert "secret123" not in stored  # a token is kept, never the password
    await page.reload()
    await page.get_by_role("textbox", name="Message").wait_for()
    assert await page.locator("#login-view").is_hidden()  # no password asked
    await tel.send("two")
    await wait_text(page, "two")
    await page.reload()
    await page.get_by_role("textbox", name="Message").wait_for()
    await tel.send("three")
    await wait_text(page, "three")
    shown = await texts(page)
    for text in ("two", "three"):
        assert shown.count(text) == 1, shown
    assert "method=token" in gw.output()
    await page.get_by_role("button", name="Log out").click()
    await page.get_by_label("Nickname").wait_for()
    assert await page.locator("#chat-view").is_hidden()  # nothing of rosa stays on screen
    assert await page.locator("#messages li").count() == 0
    await page.reload()
    await page.get_by_label("Nickname").wait_for()  # logged out stays logged out
    assert page.problems == []


async def test_phone_width_layout_and_labels(browser, redis_url, gateways, tmp_path) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port, width=390, height=844)
    await log_in(page, "phil")
    await say(page, "a long message " + "without-any-breaks-" * 20)
    await wait_text(page, "a long message")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width: {width}px"
    assert await page.get_by_role("log", name="Messages").get_attribute("aria-live") == "polite"
    await page.keyboard.press("Tab")  # the keyboard reaches the controls
    focused = await page.evaluate("document.activeElement && document.activeElement.tagName")
    assert focused in ("BUTTON", "INPUT")
    await page.screenshot(path=str(tmp_path / "phone.png"))  # docs/web-phone.png is one
    assert page.problems == []


# -- history in order, private conversations on every device ---------------------------------


async def shown(page, count: int, timeout: float = 10_000) -> list[str]:  # type: ignore[no-untyped-def]
    """The message texts of the open conversation once at least `count` are there (and
    nothing more arrives for a moment: a late, misplaced history would show up)."""
    await page.wait_for_function(
        "n => document.querySelectorAll('#messages li .text').length >= n",
        arg=count,
        timeout=timeout,
    )
    await assert_quiet(lambda: texts(page), 0.4, "a late, misplaced history would show up")
    return await texts(page)


async def gone(gw, nick: str, *convs: str) -> None:  # type: ignore[no-untyped-def]
    """Wait until the gateway saw `nick`'s last connection close, then until the store
    records that they were shown the newest message of each of `convs`."""
    await eventually(
        lambda: re.search(rf"event=disconnect .*user={nick} ", gw.output()),
        f"{nick}'s disconnect logged",
        timeout=10,
    )
    await shown_recorded(gw.redis_url, nick, *convs)


async def open_conv(page, list_id: str, label: str) -> None:  # type: ignore[no-untyped-def]
    await page.locator(f"#{list_id} button", has_text=label).click()
    await page.locator("#title", has_text=label).wait_for()


async def test_missed_messages_follow_the_older_ones_in_every_chat_after_coming_back(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "nora")
    await page.get_by_label("Join or create a chat").fill("den")
    await page.get_by_label("Join or create a chat").press("Enter")
    await page.locator("#title", has_text="#den").wait_for()
    otto = await clients(gw.port)
    await otto.login("otto")
    await otto.send("/chats den")
    for i in (1, 2, 3):
        await otto.send(f"old den {i}")
        await otto.send(f"/send #general old general {i}")
    assert await shown(page, 3) == ["old den 1", "old den 2", "old den 3"]
    await open_conv(page, "chats", "#general")
    assert await shown(page, 3) == [f"old general {i}" for i in (1, 2, 3)]
    url = page.url
    await page.goto("about:blank")  # away: the gateway writes what nora was shown
    await gone(gw, "nora", "c:den", "c:general")
    for i in (1, 2):
        await otto.send(f"new den {i}")
        await otto.send(f"/send #general new general {i}")
    await otto.send("/where")
    await otto.expect("current chat")
    await page.goto(url)  # back, with unread messages in two chats
    general = [f"old general {i}" for i in (1, 2, 3)] + ["new general 1", "new general 2"]
    den = [f"old den {i}" for i in (1, 2, 3)] + ["new den 1", "new den 2"]
    assert await shown(page, 5) == general  # the new ones after the old, once each
    unread = page.locator("#chats button", has_text="#den").locator(".unread")
    assert await unread.inner_text() == "2"
    await open_conv(page, "chats", "#den")
    assert await shown(page, 5) == den
    await page.reload()
    await page.get_by_role("textbox", name="Message").wait_for()
    assert await shown(page, 5) == den
    await open_conv(page, "chats", "#general")
    assert await shown(page, 5) == general
    assert page.problems == []


async def test_a_private_conversation_is_listed_and_shown_on_a_second_device(
    browser, redis_url, gateways, clients
) -> None:
    gw = gateways(redis_url, CHAT_WEB_PORT=str(free_port()), CHAT_HISTORY="2")
    first = await page_of(browser, gw.web_port)
    await log_in(first, "pia")
    fred = await clients(gw.port)
    await fred.login("Fred")
    for word in ("one", "two", "three"):
        await fred.send(f"/send pia {word}")
    await open_conv(first, "privates", "Fred")
    assert await shown(first, 3) == ["one", "two", "three"]
    await say(first, "four")
    await fred.expect("four")
    await first.context.close()  # the first device goes; what it showed is read
    await gone(gw, "pia", "p:fred|pia")
    await fred.send("/send pia five while away")
    await fred.send("/where")
    await fred.expect("current chat")

    second = await page_of(browser, gw.web_port)  # a second device: another browser context
    await log_in(second, "pia")
    listed = second.locator("#privates button", has_text="Fred")
    await listed.wait_for()
    assert await listed.locator(".unread").inner_text() == "1"
    await open_conv(second, "privates", "Fred")
    assert await shown(second, 2) == ["four", "five while away"]  # the last 2 (--history)
    await say(second, "/history 10")
    assert await shown(second, 5) == ["one", "two", "three", "four", "five while away"]
    await second.reload()  # after a reload: still listed, its history shown
    await second.get_by_role("textbox", name="Message").wait_for()
    await listed.wait_for()
    await open_conv(second, "privates", "Fred")
    assert await shown(second, 2) == ["four", "five while away"]
    assert second.problems == []


# -- the clock, the phone layout, accessibility -------------------------------------------------


async def test_times_are_24_hour_in_the_readers_time_zone(browser, redis_url, gateways) -> None:
    gw = web_gw(gateways, redis_url)
    context = await browser.new_context(locale="en-US", timezone_id="America/New_York")
    page = await context.new_page()
    await page.goto(f"http://127.0.0.1:{gw.web_port}/")
    await log_in(page, "tina")
    await say(page, "what time is it")
    await wait_text(page, "what time is it")
    stamp = page.locator("#messages li time").last
    shown_as = await stamp.inner_text()
    sent = datetime.fromisoformat((await stamp.get_attribute("datetime")).replace("Z", "+00:00"))
    assert shown_as == sent.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M")
    await context.close()


async def test_the_sidebar_collapses_at_phone_width(browser, redis_url, gateways, clients) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port, width=390, height=844)
    await log_in(page, "phoebe")
    toggle = page.get_by_role("button", name="Conversations")
    assert await toggle.get_attribute("aria-expanded") == "false"
    assert await page.locator("#sidebar").is_hidden()
    log = await page.get_by_role("log", name="Messages").bounding_box()
    assert log is not None and log["height"] > 0.6 * 844, log  # the messages get the screen
    other = await clients(gw.port)
    await other.login("quinn")
    await other.send("/send phoebe psst")
    await page.locator("#menu-unread", has_text="1").wait_for()  # unread, though collapsed
    await toggle.focus()
    await page.keyboard.press("Enter")  # keyboard alone: open, walk the list, pick one
    assert await toggle.get_attribute("aria-expanded") == "true"
    await page.locator("#privates button", has_text="quinn").wait_for()
    await page.keyboard.press("Escape")
    assert await toggle.get_attribute("aria-expanded") == "false"
    assert await page.evaluate("document.activeElement.id") == "menu-toggle"
    await page.keyboard.press("Enter")
    for _ in range(12):
        if await page.evaluate("document.activeElement.textContent.trim().startsWith('quinn')"):
            break
        await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.locator("#title", has_text="@quinn").wait_for()
    await wait_text(page, "psst")
    assert await toggle.get_attribute("aria-expanded") == "false"
    assert await page.locator("#sidebar").is_hidden()
    assert await page.evaluate("document.activeElement.id") == "message"
    assert page.problems == []


AXE = Path(__file__).parents[1] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"


async def serious_violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    """axe-core's serious and critical findings on the page as it is now (injected through
    the debugging protocol: the page's CSP stays on)."""
    if not AXE.exists():
        message = f"axe-core is missing at {AXE}: npm ci --prefix tests/a11y"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    await page.evaluate(AXE.read_text())
    found = await page.evaluate(
        """async () => (await axe.run(document)).violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical')
            .map(v => `${v.id} (${v.impact}): ` +
                v.nodes.map(n => n.target.join(' ')).join(', '))"""
    )
    return list(found)


async def test_login_and_chat_views_have_no_serious_accessibility_violation(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    assert await serious_violations(page) == [], "login view"
    await log_in(page, "ada")
    other = await clients(gw.port)
    await other.login("bert")
    await other.send("hello ada, see https://example.org/x")
    await other.send("/send ada a private word")
    await wait_text(page, "hello ada")
    await page.locator("#privates button", has_text="bert").wait_for()
    await page.get_by_role("button", name="List active chats").click()
    await page.locator("#chat-list li").first.wait_for()
    await page.get_by_role("button", name="Who is online").click()
    await page.locator("#online", has_text="Online in").wait_for()
    assert await serious_violations(page) == [], "chat view"
    await page.locator("#messages .from", has_text="bert").first.click()
    await page.get_by_role("dialog", name="bert").wait_for()
    assert await serious_violations(page) == [], "chat view with the person menu"
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("button", name="Conversations").click()
    assert await serious_violations(page) == [], "chat view at phone width"
    assert page.problems == []


async def test_a_chat_named_with_capitals_is_one_conversation(
    browser, redis_url, gateways, clients
) -> None:
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "gil")
    await page.get_by_label("Join or create a chat").fill("Garden")
    await page.get_by_label("Join or create a chat").press("Enter")
    await page.locator("#title", has_text="#Garden").wait_for()
    other = await clients(gw.port)
    await other.login("hal")
    await other.send("/chats garden")
    await other.send("in the garden")
    await wait_text(page, "in the garden")  # shown in the open chat
    assert await page.locator("#chats button").all_inner_texts() == ["#general", "#Garden"]
    assert page.problems == []


async def test_a_chat_joined_by_the_form_or_by_chats_is_the_one_a_reload_shows(
    browser, redis_url, gateways
) -> None:
    """Joining with the form or a typed `/chats` opens the chat like a click does: the
    "Online in #general" line of the chat left behind goes, and a reload comes back to the
    joined chat (it came back to #general: only clicks were remembered)."""
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "joy")
    await page.get_by_role("button", name="Who is online").click()
    await page.locator("#online", has_text="Online in #general").wait_for()
    await page.get_by_label("Join or create a chat").fill("den")
    await page.get_by_label("Join or create a chat").press("Enter")
    await page.locator("#title", has_text="#den").wait_for()
    assert await page.text_content("#online") == ""
    await page.reload()
    await page.get_by_role("textbox", name="Message").wait_for()
    await page.locator("#title", has_text="#den").wait_for()
    await page.get_by_role("button", name="Who is online").click()
    await page.locator("#online", has_text="Online in #den").wait_for()
    await say(page, "/chats yard")
    await page.locator("#title", has_text="#yard").wait_for()
    assert await page.text_content("#online") == ""
    await page.reload()
    await page.get_by_role("textbox", name="Message").wait_for()
    await page.locator("#title", has_text="#yard").wait_for()
    assert page.problems == []


async def test_token_typed_in_the_composer_is_shown_as_on_telnet(
    browser, redis_url, gateways, clients
) -> None:
    """`/help` offers `/token` ("log in later with '<nick> <token>'"); typed in the page
    it showed nothing (the page stored the token silently). It is shown now, and it is
    the token the page itself keeps, and it logs in over telnet."""
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "tia")
    await page.wait_for_function("localStorage.getItem('chat.resume') !== null")
    await say(page, "/token")
    shown = page.locator("#messages li", has_text="token: ")
    await shown.wait_for()
    token = re.search(r"token: ([0-9a-f]{64}) \(valid for 30 days", await shown.inner_text())
    assert token, await shown.inner_text()
    stored = await page.evaluate("JSON.parse(localStorage.getItem('chat.resume')).token")
    assert stored == token.group(1)
    tel = await clients(gw.port)
    await tel.expect("nickname")
    await tel.send(f"tia {token.group(1)}")
    await tel.expect("^\\* ready: logged in as tia")
    assert await page.locator("#messages li", has_text="token: ").count() == 1  # once
    assert page.problems == []


async def test_the_no_messages_note_goes_when_the_first_message_comes(
    browser, redis_url, gateways, clients
) -> None:
    """A new private conversation said 'no messages with bob in the last 3600 s' and kept
    saying it above the first message."""
    gw = web_gw(gateways, redis_url)
    bob = await clients(gw.port)
    await bob.login("bob")
    page = await page_of(browser, gw.web_port)
    await log_in(page, "dora")
    await bob.send("hi all")
    await page.locator("#messages li button.from", has_text="bob").click()
    await page.locator("#person-private").click()
    note = page.locator("#messages li.notice", has_text="no messages with bob")
    await note.wait_for()
    assert "in the last hour" in await note.inner_text()
    await say(page, "hello bob from dora")
    await bob.expect("hello bob from dora")
    assert await shown(page, 1) == ["hello bob from dora"]
    await note.wait_for(state="detached")
    assert page.problems == []


async def test_chromium_agrees_compression_and_long_messages_pass_both_ways(
    browser, redis_url, gateways, clients
) -> None:
    """Chromium offers permessage-deflate; the gateway agrees it, so the page's frames
    travel compressed both ways, and a long message (compressed by the browser, inflated
    by the gateway, and the reverse) arrives whole."""
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    agreed = await page.evaluate(
        """port => new Promise((ok, fail) => {
            const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
            ws.onopen = () => { ok(ws.extensions); ws.close(); };
            ws.onerror = () => fail(new Error("no WebSocket"));
        })""",
        gw.web_port,
    )
    assert agreed.startswith("permessage-deflate"), agreed
    await log_in(page, "zed")
    tel = await clients(gw.port)
    await tel.login("tom")
    outgoing = "from the page " + "abc " * 300
    await say(page, outgoing)
    assert messages([await tel.expect("from the page")]) == [("#general", "zed", outgoing.strip())]
    incoming = "from telnet " + "xyz " * 300
    await tel.send(incoming)
    await wait_text(page, "from telnet")
    assert incoming.strip() in await texts(page)
    assert page.problems == []


async def test_a_text_of_quotes_and_backslashes_is_sent_whole(
    browser, redis_url, gateways, clients
) -> None:
    """2,813 bytes of text, 5,600 as JSON: the server took the frame's size for the text's
    and closed with 1009; the text was gone from the composer."""
    gw = web_gw(gateways, redis_url)
    page = await page_of(browser, gw.web_port)
    await log_in(page, "quincy")
    tel = await clients(gw.port)
    await tel.login("tess")
    text = 'He said "' + "\\" * 2800 + '" ok'
    await say(page, text)
    assert messages([await tel.expect('" ok')]) == [("#general", "quincy", text)]
    await wait_text(page, '" ok')
    assert page.problems == []

"""The chat page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

With CI=true a missing browser fails the run; elsewhere these tests skip with one reason.
Screenshots of each run go to the test's temporary folder (`screenshots` below).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.helpers import free_port, messages

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

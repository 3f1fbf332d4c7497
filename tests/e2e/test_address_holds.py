"""Which bans hold an address back from new accounts, and how an operator sees and lifts
those holds. README's rule: only "a user banned for complaints" holds their last login
addresses; a moderator's or operator's ban holds nothing. Loopback addresses 127.0.0.x
play different people."""

from __future__ import annotations

from tests.e2e.test_admin import admin
from tests.helpers import Client


async def _new_nick(c: Client, nick: str) -> str:
    """Offer a new nickname; the line that answers it (the password prompt or a refusal)."""
    await c.expect("nickname")
    await c.send(nick)
    return await c.line()


async def test_a_moderators_ban_holds_no_address(shared_url, gateways, clients) -> None:
    gw = gateways(shared_url)
    mod, bob = await clients(gw.port, "127.0.0.2"), await clients(gw.port, "127.0.0.9")
    await mod.login("mod")
    await bob.login("bob")
    code, _, err = await admin(shared_url, "mod", "mod")
    assert code == 0, err
    await mod.send("/ban bob")
    assert (await mod.line()).startswith("* bob is banned until ")
    await bob.expect("^\\* you are banned until")
    housemate = await clients(gw.port, "127.0.0.9")  # a newcomer at bob's address
    assert (await _new_nick(housemate, "housemate")).startswith("* New nickname housemate")
    code, _, err = await admin(shared_url, "ban", "bob", "1h")  # nor does the operator's
    assert code == 0, err
    again = await clients(gw.port, "127.0.0.9")
    assert (await _new_nick(again, "another")).startswith("* New nickname another")
    code, out, _ = await admin(shared_url, "bans")
    assert out.startswith("bob  banned until ") and "held" not in out


async def test_a_ban_after_complaints_holds_and_the_operator_sees_and_lifts_it(
    shared_url, gateways, clients
) -> None:
    gw = gateways(shared_url, "--ban-threshold", "2")
    bob = await clients(gw.port, "127.0.0.9")
    await bob.login("bob")
    for n, nick in enumerate(("alice", "carol")):
        c = await clients(gw.port, f"127.0.0.{n + 2}")
        await c.login(nick)
        await c.send("/ban bob")
        await c.expect("complaint about bob")
    await bob.expect("^\\* you are banned until")
    newcomer = await clients(gw.port, "127.0.0.9")
    assert (await _new_nick(newcomer, "newcomer")).startswith("! no new accounts from your")

    # admin bans: the ban and the address it holds, with why and until when
    code, out, _ = await admin(shared_url, "bans")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("bob  banned until ")
    until = lines[0].split("banned until ")[1]
    assert lines[1] == (
        f"127.0.0.9  no new accounts until {until} (bob banned after complaints)"
    ), lines

    # admin unban lifts the ban and the holds it made
    code, out, _ = await admin(shared_url, "unban", "bob")
    assert (code, out.splitlines()) == (
        0,
        ["bob is no longer banned", "127.0.0.9 may register new accounts again"],
    )
    code, out, _ = await admin(shared_url, "bans")
    assert (code, out) == (0, "")
    later = await clients(gw.port, "127.0.0.9")
    assert (await _new_nick(later, "newcomer")).startswith("* New nickname newcomer")


async def test_an_operator_lifts_one_addresss_hold_and_a_moderator_unban_lifts_all(
    shared_url, gateways, clients
) -> None:
    gw = gateways(shared_url, "--ban-threshold", "2")
    mod = await clients(gw.port, "127.0.0.5")
    await mod.login("mod")
    code, _, err = await admin(shared_url, "mod", "mod")
    assert code == 0, err
    bob = await clients(gw.port, "127.0.0.9")
    await bob.login("bob")
    bob_elsewhere = await clients(gw.port, "127.0.0.8")
    await bob_elsewhere.login("bob")
    for n, nick in enumerate(("alice", "carol")):
        c = await clients(gw.port, f"127.0.0.{n + 2}")
        await c.login(nick)
        await c.send("/ban bob")
        await c.expect("complaint about bob")
    await bob.expect("^\\* you are banned until")
    code, out, _ = await admin(shared_url, "bans")
    assert sorted(line.split()[0] for line in out.splitlines()[1:]) == ["127.0.0.8", "127.0.0.9"]

    code, out, _ = await admin(shared_url, "unhold", "127.0.0.9")
    assert (code, out.strip()) == (0, "127.0.0.9 may register new accounts again")
    code, _, err = await admin(shared_url, "unhold", "127.0.0.9")
    assert (code, err.strip()) == (1, "admin: 127.0.0.9 is not held")
    code, _, err = await admin(shared_url, "unhold", "not an address")
    assert code == 2 and err.startswith("admin: bad address 'not an address'")
    freed = await clients(gw.port, "127.0.0.9")
    assert (await _new_nick(freed, "housemate")).startswith("* New nickname housemate")
    still = await clients(gw.port, "127.0.0.8")  # bob is still banned: .8 is still held
    assert (await _new_nick(still, "other")).startswith("! no new accounts from your")

    await mod.send("/unban bob")  # a moderator's unban lifts what the ban held, too
    assert await mod.line() == "* bob is no longer banned"
    after = await clients(gw.port, "127.0.0.8")
    assert (await _new_nick(after, "other")).startswith("* New nickname other")
    code, out, _ = await admin(shared_url, "bans")
    assert (code, out) == (0, "")

"""Redis URLs as the gateway reads them (one node or cluster seeds), IPv6 included."""

from __future__ import annotations

from store.cluster import Seeds


def test_seeds_of_every_url_form() -> None:
    """`redis://[::1]/0` is a URL `--redis-url` accepts; reading it raised ValueError (a
    traceback at start)."""
    assert Seeds.parse("redis://[::1]/0").nodes == (("::1", 6379),)
    assert Seeds.parse("redis://[::1]:6380/0").nodes == (("::1", 6380),)
    assert Seeds.parse("redis://u:p@h1:7001,[::1]:7002,h3").nodes == (
        ("h1", 7001),
        ("::1", 7002),
        ("h3", 6379),
    )
    assert Seeds.parse("redis://localhost/0").nodes == (("localhost", 6379),)
    assert Seeds.parse("redis://[::1]:6380/0").url(("::1", 6380)) == "redis://[::1]:6380"

"""scripts/cluster.py's check that a gateway listens, on its own: the kernel's table of
listening sockets says what a connection to 127.0.0.1 would, without making one (the
e2e tests in tests/e2e/test_first_day.py run it against real gateways)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts.cluster import TCP_TABLE, listening_ports, listens

pytestmark = pytest.mark.skipif(not Path(TCP_TABLE).exists(), reason="Linux's /proc/net/tcp")


def _ports() -> set[int]:
    table = listening_ports()
    assert table is not None
    return table


def test_a_port_is_listening_from_listen_to_close_and_not_while_only_bound() -> None:
    with socket.socket() as server, socket.socket() as bound:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        bound.bind(("127.0.0.1", 0))
        assert port not in _ports()  # bound, not listening: a connection is refused
        server.listen()
        table = _ports()
        assert port in table and bound.getsockname()[1] not in table
        assert listens([port], table)
        assert not listens([port, bound.getsockname()[1]], table)  # every port, not one
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:  # a connection's ports are not listening ones
                assert client.getsockname()[1] not in _ports()
    assert port not in _ports()


def test_a_listener_on_every_address_counts() -> None:
    with socket.socket() as server:
        server.bind(("0.0.0.0", 0))
        server.listen()
        assert server.getsockname()[1] in _ports()


def test_a_listener_127_0_0_1_does_not_reach_is_not_counted() -> None:
    """What a connection to 127.0.0.1 would not reach does not make a gateway up: IPv6
    sockets (a gateway's are IPv6-only, as asyncio makes them) and other IPv4 addresses."""
    try:
        v6 = socket.socket(socket.AF_INET6)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::1", 0))
    except OSError as exc:
        v6.close()
        pytest.skip(f"no IPv6 loopback: {exc}")
    with v6, socket.socket() as other:
        v6.listen()
        other.bind(("127.0.0.2", 0))
        other.listen()
        table = _ports()
        assert v6.getsockname()[1] not in table
        assert other.getsockname()[1] not in table

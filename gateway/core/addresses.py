"""Which connections count as one place, for limits that count places rather than users."""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["address_group"]

#: IPv6 prefix length one subscriber typically gets: every address in it is one place.
IPV6_GROUP = 64


@functools.lru_cache(maxsize=4096)
def address_group(address: str) -> str:
    """The place an address stands for: an IPv4 address itself, an IPv6 address's /64
    (one host can use all of it), IPv4-mapped IPv6 as IPv4; anything else as it is.
    Cached: a login asks up to three times, and a reconnect storm comes from the same
    addresses again (ipaddress parses one in several microseconds)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_GROUP), strict=False))
    return str(ip)

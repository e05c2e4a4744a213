"""Host names and addresses: shared by the emulator (who may open its console) and the gateway (whether pages are
told a loopback address)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_dual_stack(host: str) -> bool:
    """Whether ``host`` is IPv6's every address, ``::``, which the emulator binds for IPv4 too (IPV6_V6ONLY off), as
    Linux binds it by default and its docs promise: asyncio binds it for IPv6 alone, and IPv4 clients were refused."""
    try:
        return ipaddress.ip_address(host) == ipaddress.IPv6Address("::")
    except ValueError:
        return False

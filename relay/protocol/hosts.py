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

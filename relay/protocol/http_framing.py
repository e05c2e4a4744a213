"""A request's HTTP/1.1 framing read as every Relay server reads it: the size of its head, its body's coding."""

from __future__ import annotations

from collections.abc import Iterable

# The longest request line and headers the emulator and the gateway read: a longer head is refused (431), not buffered
MAX_HEAD_BYTES = 64 * 1024


def chunked_alone(transfer_encodings: Iterable[bytes]) -> bool:
    """Whether a request's Transfer-Encoding values (each such header's, in order) name chunked alone, the one coding
    the servers decode: a body sent ``gzip, chunked`` would be read still gzipped, and a second ``chunked`` is a
    framing senders and proxies read differently (RFC 9112 §6.1)."""
    return [coding.strip().lower() for value in transfer_encodings for coding in value.split(b",")] == [b"chunked"]

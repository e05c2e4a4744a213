"""A request body's HTTP/1.1 framing read as every Relay server reads it."""

from __future__ import annotations

from collections.abc import Iterable


def chunked_alone(transfer_encodings: Iterable[bytes]) -> bool:
    """Whether a request's Transfer-Encoding values (each such header's, in order) name chunked alone, the one coding
    the servers decode: a body sent ``gzip, chunked`` would be read still gzipped, and a second ``chunked`` is a
    framing senders and proxies read differently (RFC 9112 §6.1)."""
    return [coding.strip().lower() for value in transfer_encodings for coding in value.split(b",")] == [b"chunked"]

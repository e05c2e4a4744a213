"""Checks of the requests a client sent to hosted Pusher, as respx recorded them.

Signatures are recomputed independently with the official ``pusher`` package (``pusher.signature.sign`` over its own
``make_query_string``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence

import httpx
import respx
from pusher.http import make_query_string  # type: ignore[import-untyped]
from pusher.signature import sign  # type: ignore[import-untyped]


def check_signed(
    request: httpx.Request, key: str, secret: str, *, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The query is exactly the auth parameters (+ ``extra``), the timestamp is now, the signature is Pusher's."""
    query = dict(request.url.params.multi_items())
    assert len(query) == len(request.url.params.multi_items()), "no repeated parameters"
    expected_keys = {"auth_key", "auth_timestamp", "auth_version", "auth_signature", *(extra or {})}
    if request.content:
        expected_keys.add("body_md5")
        assert query["body_md5"] == hashlib.md5(request.content).hexdigest()
    assert set(query) == expected_keys
    assert (query["auth_key"], query["auth_version"]) == (key, "1.0")
    assert abs(int(query["auth_timestamp"]) - time.time()) <= 5
    for name, value in (extra or {}).items():
        assert query[name] == value
    unsigned = {name: value for name, value in query.items() if name != "auth_signature"}
    string_to_sign = "\n".join([request.method, request.url.path, make_query_string(unsigned)])
    assert query["auth_signature"] == sign(secret, string_to_sign)
    return query


def check_sent(
    route: respx.Route, key: str, secret: str, bodies: Sequence[bytes], *, extra: Mapping[str, str] | None = None
) -> None:
    """``route`` got exactly one request per body, in order (retries included), each signed for its own body."""
    assert [call.request.content for call in route.calls] == list(bodies)
    for call in route.calls:
        check_signed(call.request, key, secret, extra=extra)

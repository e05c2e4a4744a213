"""Assertions for applications' own tests, over the in-memory provider (``RELAY_URL=memory://…``)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from relay.adapters.memory import MemoryAdapter, MemoryStore, Published, memory_store
from relay.client import AsyncRelay, Relay
from relay.protocol.frames import dumps

ANY = object()


def _memory_adapter(client: Relay | AsyncRelay | None) -> MemoryAdapter:
    """The memory provider behind ``client`` (by default the module-level client)."""
    if client is None:
        from relay import default_client

        client = default_client()
    adapter = client.adapter
    if not isinstance(adapter, MemoryAdapter):
        raise AssertionError(f"relay.testing needs the memory provider (RELAY_URL=memory://), not {adapter.name}")
    return adapter


def store_of(client: Relay | AsyncRelay | None = None) -> MemoryStore:
    """The memory store behind ``client`` (by default the module-level client)."""
    return _memory_adapter(client).store


class SignedWebhook(NamedTuple):
    headers: dict[str, str]
    body: bytes


def signed_webhook(
    events: Sequence[Mapping[str, Any]], *, client: Relay | AsyncRelay | None = None, time_ms: int | None = None
) -> SignedWebhook:
    """A webhook as Pusher delivers it, signed for the memory provider of ``client`` (by default the module-level
    client): the headers and body a test sends to the application's webhook endpoint, which ``verify_webhook``
    accepts. ``events`` are in Pusher's form, such as ``{"name": "member_added", "channel": …, "user_id": …}``;
    ``time_ms`` is now unless given (more than 300 s from now, the webhook is refused as a replay)."""
    adapter = _memory_adapter(client)
    sent_at = int(time.time() * 1000) if time_ms is None else time_ms
    body = dumps({"time_ms": sent_at, "events": [dict(event) for event in events]}).encode()
    return SignedWebhook({"Content-Type": "application/json", **adapter.webhook_signature_headers(body)}, body)


def published(
    channel: str | None = None, event: str | None = None, *, client: Relay | AsyncRelay | None = None
) -> list[Published]:
    return [
        entry
        for entry in store_of(client).published
        if (channel is None or entry.channel == channel) and (event is None or entry.event == event)
    ]


def assert_published(
    channel: str, event: str, data: Any = ANY, *, client: Relay | AsyncRelay | None = None, times: int | None = None
) -> None:
    """Assert that ``event`` was published on ``channel``: at least once, or exactly ``times`` times (``times=0``:
    never). With ``data``, only the publishes of that data count: a str matches the same str published, any other
    value an equal value published as JSON (``"42"`` and ``42`` are different publishes, as are ``1`` and ``True``).
    """
    if times is not None and times < 0:
        raise ValueError(f"times must be 0 or more, not {times}")
    matches = [entry for entry in published(channel, event, client=client) if data is ANY or _same(entry.value, data)]
    if (len(matches) == times) if times is not None else matches:
        return
    expected = {None: "at least once", 0: "never", 1: "once"}.get(times, f"{times} times")
    with_data = "" if data is ANY else f" with data {data!r}"
    found = "" if times is None else f", found {len(matches)}"
    seen = [(e.channel, e.event, e.value) for e in store_of(client).published]
    raise AssertionError(f"expected {event!r} on {channel!r} {expected}{with_data}{found}; published: {seen}")


def assert_nothing_published(*, client: Relay | AsyncRelay | None = None) -> None:
    seen = store_of(client).published
    if seen:
        raise AssertionError(f"expected no publishes, got {[(e.channel, e.event) for e in seen]}")


def _same(value: Any, expected: Any) -> bool:
    """``value`` (as published) equals ``expected`` as JSON tells them apart: ``True`` is not ``1``, a tuple matches
    the list it was encoded as; anything else by ``==`` (so ``unittest.mock.ANY`` matches, nested too)."""
    numbers = isinstance(value, int | float) and isinstance(expected, int | float)
    if numbers and isinstance(value, bool) is not isinstance(expected, bool):
        return False
    if isinstance(value, dict) and isinstance(expected, Mapping):
        expected = {_json_key(key): item for key, item in expected.items()}  # {1: …} was published as {"1": …}
        return value.keys() == expected.keys() and all(_same(value[key], expected[key]) for key in value)
    if isinstance(value, list) and isinstance(expected, list | tuple):
        return len(value) == len(expected) and all(map(_same, value, expected))
    return bool(value == expected)


def _json_key(key: object) -> object:
    """A key as JSON writes it: ``1`` as ``"1"``, ``True`` as ``"true"`` (one JSON cannot write stays, and differs)."""
    if isinstance(key, str) or not isinstance(key, int | float | None):
        return key
    return dumps(key)


__all__ = [
    "ANY",
    "SignedWebhook",
    "assert_nothing_published",
    "assert_published",
    "memory_store",
    "published",
    "signed_webhook",
    "store_of",
]

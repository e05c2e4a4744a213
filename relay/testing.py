"""Assertions for applications' own tests, over the in-memory provider (``RELAY_URL=memory://…``)."""

from __future__ import annotations

import json
from typing import Any

from relay.adapters.memory import MemoryAdapter, MemoryStore, Published, memory_store
from relay.client import AsyncRelay, Relay

ANY = object()


def store_of(client: Relay | AsyncRelay | None = None) -> MemoryStore:
    """The memory store behind ``client`` (by default the module-level client)."""
    if client is None:
        from relay import default_client

        client = default_client()
    adapter = client.adapter
    if not isinstance(adapter, MemoryAdapter):
        raise AssertionError(f"relay.testing needs the memory provider (RELAY_URL=memory://), not {adapter.name}")
    return adapter.store


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
    """Assert that ``event`` was published on ``channel`` (with ``data``, compared after JSON decoding)."""
    matches = [
        entry for entry in published(channel, event, client=client) if data is ANY or _decoded(entry.data) == data
    ]
    if not matches or (times is not None and len(matches) != times):
        seen = [(e.channel, e.event, e.data) for e in store_of(client).published]
        expected = "at least once" if times is None else f"{times} time(s)"
        raise AssertionError(f"expected {event!r} on {channel!r} {expected} with data {data!r}; published: {seen}")


def assert_nothing_published(*, client: Relay | AsyncRelay | None = None) -> None:
    seen = store_of(client).published
    if seen:
        raise AssertionError(f"expected no publishes, got {[(e.channel, e.event) for e in seen]}")


def _decoded(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = ["ANY", "assert_nothing_published", "assert_published", "memory_store", "published", "store_of"]

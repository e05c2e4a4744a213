"""Assertions for applications' own tests, over the in-memory provider (``RELAY_URL=memory://…``)."""

from __future__ import annotations

from collections.abc import Mapping
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
        return value.keys() == expected.keys() and all(_same(value[key], expected[key]) for key in value)
    if isinstance(value, list) and isinstance(expected, list | tuple):
        return len(value) == len(expected) and all(map(_same, value, expected))
    return bool(value == expected)


__all__ = ["ANY", "assert_nothing_published", "assert_published", "memory_store", "published", "store_of"]

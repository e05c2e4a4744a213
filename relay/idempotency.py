"""Idempotency keys of publishes: what a client remembers of the keys it published (the rule a key follows is
:mod:`relay.protocol.idempotency_keys`).

A publish given a key is sent once per key: a repeat within :data:`IDEMPOTENCY_WINDOW_SECONDS` (a route handler that
timed out and resends) gets the first publish's result, marked ``replayed``, without reaching the provider. Ably also
dedupes server-side, by the message ids the Ably adapter makes of the key, so two processes sending one key deliver
once there, and so does the emulator for ``emulator://`` URLs (the Pusher adapter sends it the key); Pusher's HTTP API
has no such thing, and this memory is one client's (one process's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from relay.errors import ClientClosed, IdempotencyKeyReused, RelayError
from relay.models import PublishResult
from relay.protocol.idempotency_keys import IDEMPOTENCY_WINDOW_SECONDS, key_reused

# Answered keys one client remembers at most, the oldest forgotten first past it (a resend that late would be sent
# again; a publish still in flight is not counted, nor forgotten). Each holds its key, a digest of its request and its
# result (the channels and message ids: a few hundred bytes for a publish to one channel, so about 5 MB for 10,000; a
# batch's result lists one channel per event).
MAX_REMEMBERED_KEYS = 10_000
# The channels and message ids the remembered results hold at most, the oldest key forgotten first past it: a batch's
# result lists one of each per event (a 1,000-event batch on Ably, about 160 KB), so 10,000 keys of batches held
# gigabytes. About 30 MB: 10,000 publishes to a few channels, or the latest 100 batches of 1,000 events on Ably.
MAX_REMEMBERED_ITEMS = 200_000

W = TypeVar("W")  # what a repeat waits on while the first attempt is in flight (the clients': Outcome)
# What each provider of a mirror delivered in an attempt that failed on another (MirrorError.results), by its label
Delivered = Mapping[str, PublishResult]
NOTHING_DELIVERED: Delivered = {}
# What the clients' repeats wait on: thread-safe, for a sync client is shared by a web server's threads, and an
# AsyncRelay serves several event loops (successive or concurrent ``asyncio.run()``), a resend awaiting in another
# loop than the first's.
Outcome = concurrent.futures.Future[None]


def fingerprint(request: Hashable) -> bytes:
    """A digest of what a publish sends (its channels, event, data and socket ids), to tell a resend from another
    publish under the same key without keeping its data (up to 1 MiB a batch) for 2 minutes."""
    return hashlib.sha256(repr(request).encode()).digest()


@dataclass(slots=True, eq=False)
class Attempt(Generic[W]):
    """One key's publish: in flight until ``settled``; then its ``result``, or the ``error`` its waiters get.
    ``delivered``: what a mirror's providers delivered in the key's earlier attempts, which this one does not send
    them again."""

    request: bytes  # the fingerprint of what the publish sends
    waiter: W
    delivered: Delivered = field(default_factory=dict)
    settled: bool = False
    result: PublishResult | None = None
    error: RelayError | None = None
    expires: float = 0.0
    items: int = 0  # the channels and message ids its result, or what was delivered, holds (see MAX_REMEMBERED_ITEMS)


class IdempotencyMemory(Generic[W]):
    """The keys one client is publishing, and those it published in the last :data:`IDEMPOTENCY_WINDOW_SECONDS`, at
    most ``capacity`` of these, holding at most ``max_items`` channels and message ids (the oldest forgotten first).
    Thread-safe: a sync client is shared by a web server's threads."""

    def __init__(
        self,
        new_waiter: Callable[[], W],
        *,
        window: float = IDEMPOTENCY_WINDOW_SECONDS,
        capacity: int = MAX_REMEMBERED_KEYS,
        max_items: int = MAX_REMEMBERED_ITEMS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_waiter = new_waiter
        self._window = window
        self._capacity = capacity
        self._max_items = max_items
        self._items = 0  # held by the settled attempts
        self._clock = clock
        self._lock = threading.Lock()
        # Apart from those settled, which the cap and the window forget: a caller waits on each attempt in flight (so
        # the caller's concurrency bounds them), and a resend of one forgotten would be sent a second time
        self._in_flight: dict[str, Attempt[W]] = {}
        # Oldest first, by when each settled (so by when each expires)
        self._settled: OrderedDict[str, Attempt[W]] = OrderedDict()
        _made_in_this_process.add(self)

    def forked(self) -> None:
        """In the child of a fork(): the parent's other threads are not in it, so the lock one held at the fork would
        never be released (every publish with a key then hung), and the attempts they were making never settle (a
        resend waited for ever). What the parent published stays remembered: a resend in the child is replayed."""
        self._lock = threading.Lock()
        self._in_flight = {}

    def claim(self, key: str, request: bytes) -> tuple[Attempt[W], bool]:
        """The attempt ``key`` names and whether it is the caller's to make (True: none in flight or remembered, or
        one a mirror's provider failed, so publish, to the providers it did not reach, and :meth:`settle` it; False:
        wait on it, or read its result). Raises IdempotencyKeyReused when the key's attempt sends another request."""
        with self._lock:
            self._forget_expired()
            attempt = self._in_flight.get(key) or self._settled.get(key)
            if attempt is None or (attempt.settled and attempt.result is None and attempt.request == request):
                delivered = NOTHING_DELIVERED if attempt is None else attempt.delivered
                if attempt is not None:  # a failure on some of a mirror's providers, retried
                    self._forget(key)
                attempt = self._in_flight[key] = Attempt(request, self._new_waiter(), delivered)
                return attempt, True
            if attempt.request != request:
                raise IdempotencyKeyReused(key_reused(key, "channels, event, data and socket_id", self._window))
            return attempt, False

    def settle(
        self,
        key: str,
        attempt: Attempt[W],
        result: PublishResult | None,
        error: RelayError | None,
        delivered: Delivered = NOTHING_DELIVERED,
    ) -> None:
        """The end of ``attempt``: a result is remembered for the window; a failure forgets the key, so a retry with
        it is sent (``error`` is what its waiters get; None, the first was interrupted, and they try again), but for
        what a mirror's providers ``delivered``, kept for the window so that the retry is not sent them again."""
        with self._lock:
            # Its outcome before ``settled``: a resend that sees it settled reads it without waiting (see _Keys._settle)
            attempt.result, attempt.error = result, error
            attempt.settled = True
            del self._in_flight[key]
            if result is None and not delivered:
                return
            attempt.delivered = delivered
            attempt.expires = self._clock() + self._window
            held = [result] if result is not None else delivered.values()
            attempt.items = sum(len(kept.channels) + len(kept.message_ids) for kept in held)
            self._settled[key] = attempt
            self._items += attempt.items
            # Past a cap the oldest go, but never the one just settled: its resend, the likeliest, is replayed
            while len(self._settled) > 1 and (len(self._settled) > self._capacity or self._items > self._max_items):
                self._forget(next(iter(self._settled)))

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._settled and next(iter(self._settled.values())).expires <= now:
            self._forget(next(iter(self._settled)))

    def _forget(self, key: str) -> None:
        self._items -= self._settled.pop(key).items


# Each memory of this process, made anew in a child of fork(): a client made before it (gunicorn --preload, uWSGI
# without lazy-apps, multiprocessing) serves the child, whatever the parent's threads were doing at the fork
_made_in_this_process: weakref.WeakSet[IdempotencyMemory[Any]] = weakref.WeakSet()


def _forked() -> None:
    for memory in _made_in_this_process:
        memory.forked()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_forked)


class _Keys:
    """What the sync and async keys share: the memory, the replay of a settled attempt, and the settling of one."""

    def __init__(self, closed: Callable[[], bool], delivered: Callable[[RelayError], Delivered]) -> None:
        self._closed = closed
        self._delivered = delivered  # what the providers that did not fail delivered (MirrorError's results)
        self.memory: IdempotencyMemory[Outcome] = IdempotencyMemory(Outcome)

    @staticmethod
    def _replayed(attempt: Attempt[Outcome]) -> PublishResult | None:
        """The settled ``attempt``'s result, replayed, or its error raised; None: it was interrupted (not a
        RelayError), and the waiter is sent instead."""
        if attempt.result is not None:
            return replace(attempt.result, replayed=True)
        if attempt.error is not None:
            raise attempt.error
        return None

    def _settle(
        self, key: str, attempt: Attempt[Outcome], result: PublishResult | None, failure: BaseException | None
    ) -> None:
        """Remember the attempt's end and wake its waiters. What the key's earlier attempts delivered stays delivered,
        whether this one failed on a provider or was interrupted (a caller's timeout cancelling a mirror's retry)."""
        if isinstance(failure, RelayError):
            self.memory.settle(key, attempt, None, failure, {**attempt.delivered, **self._delivered(failure)})
        elif failure is not None:
            self.memory.settle(key, attempt, None, None, attempt.delivered)
        else:
            self.memory.settle(key, attempt, result, None)
        # Woken once settled, outside the memory's lock: a process forked in between has the attempt settled and its
        # waiter never set (no thread of the child's sets it), so a resend reads a settled attempt without waiting
        attempt.waiter.set_result(None)


class PublishedKeys(_Keys):
    """A sync client's keys: a thread's resend while the first is in flight in another waits for its outcome."""

    def once(self, key: str, sent: bytes, send: Callable[[Delivered], PublishResult]) -> PublishResult:
        """``send(delivered)`` (to the providers that have not delivered it), unless ``key`` sent ``sent`` already
        (its result, replayed) or is sending it (waited for: its result, or its error)."""
        if self._closed():
            raise ClientClosed()
        while True:
            attempt, mine = self.memory.claim(key, sent)
            if mine:
                break
            if not attempt.settled:  # see _Keys._settle
                attempt.waiter.result()
            if (replayed := self._replayed(attempt)) is not None:
                return replayed
        try:
            result = send(attempt.delivered)
        except BaseException as failure:
            self._settle(key, attempt, None, failure)
            raise
        self._settle(key, attempt, result, None)
        return result


class AsyncPublishedKeys(_Keys):
    """An async client's keys, as :class:`PublishedKeys`: a resend awaits the first's outcome (shielded, so that a
    resend cancelled does not cancel the first)."""

    async def once(self, key: str, sent: bytes, send: Callable[[Delivered], Awaitable[PublishResult]]) -> PublishResult:
        if self._closed():
            raise ClientClosed()
        while True:
            attempt, mine = self.memory.claim(key, sent)
            if mine:
                break
            if not attempt.settled:  # see _Keys._settle
                await asyncio.shield(asyncio.wrap_future(attempt.waiter))
            if (replayed := self._replayed(attempt)) is not None:
                return replayed
        try:
            result = await send(attempt.delivered)
        except BaseException as failure:
            self._settle(key, attempt, None, failure)
            raise
        self._settle(key, attempt, result, None)
        return result

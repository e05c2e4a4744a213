"""Idempotency keys of publishes: the rule a key follows, and what a client remembers of the keys it published.

A publish given a key is sent once per key: a repeat within :data:`IDEMPOTENCY_WINDOW_SECONDS` (a route handler that
timed out and resends) gets the first publish's result, marked ``replayed``, without reaching the provider. Ably also
dedupes server-side, by the message ids the Ably adapter makes of the key, so two processes sending one key deliver
once there; Pusher's HTTP API has no such thing, and this memory is one client's (one process's).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from relay.errors import ClientClosed, IdempotencyKeyReused, InvalidIdempotencyKey, RelayError
from relay.models import PublishResult

# Ably de-duplicates a message id for 2 minutes (ably-and-pricing.md, "Idempotent publishing"); the client's own
# memory keeps a key as long, so every provider answers a resend alike.
IDEMPOTENCY_WINDOW_SECONDS = 120.0
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# Keys one client remembers at most, the oldest forgotten first past it (a resend that late would be sent again). Each
# holds its key, a digest of its request and its result (the channels and message ids: a few hundred bytes for a
# publish to one channel, so about 5 MB for 10,000; a batch's result lists one channel per event).
MAX_REMEMBERED_KEYS = 10_000
# Printable ASCII but the space: UUIDs, ULIDs and base64url fit, and the key goes into an HTTP header and Ably's ids
_KEY_CHARACTERS = re.compile(r"[!-~]+")
KEY_RULE = (
    f"an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters without spaces "
    "(a UUID or a ULID fits)"
)

W = TypeVar("W")  # what a repeat waits on while the first attempt is in flight (threading.Event, asyncio.Future)
# What each provider of a mirror delivered in an attempt that failed on another (MirrorError.results), by its label
Delivered = Mapping[str, PublishResult]
NOTHING_DELIVERED: Delivered = {}


def check_idempotency_key(key: object) -> str:
    """``key`` if it follows :data:`KEY_RULE`, else an InvalidIdempotencyKey (400) saying which part it breaks."""
    if not isinstance(key, str):
        raise InvalidIdempotencyKey(f"{KEY_RULE}: got {type(key).__name__}, not a str")
    if not key:
        raise InvalidIdempotencyKey(f"{KEY_RULE}: got an empty one")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidIdempotencyKey(f"{KEY_RULE}: got {len(key)} characters")
    if not _KEY_CHARACTERS.fullmatch(key):
        bad = next(character for character in key if not _KEY_CHARACTERS.fullmatch(character))
        raise InvalidIdempotencyKey(f"{KEY_RULE}: got one holding {bad!r}")
    return key


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


class IdempotencyMemory(Generic[W]):
    """The keys one client published in the last :data:`IDEMPOTENCY_WINDOW_SECONDS`, at most ``capacity`` of them
    (the oldest forgotten first). Thread-safe: a sync client is shared by a web server's threads."""

    def __init__(
        self,
        new_waiter: Callable[[], W],
        *,
        window: float = IDEMPOTENCY_WINDOW_SECONDS,
        capacity: int = MAX_REMEMBERED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_waiter = new_waiter
        self._window = window
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        # Oldest first: by when each attempt began, then (moved to the end) settled
        self._attempts: OrderedDict[str, Attempt[W]] = OrderedDict()

    def claim(self, key: str, request: bytes) -> tuple[Attempt[W], bool]:
        """The attempt ``key`` names and whether it is the caller's to make (True: none in flight or remembered, or
        one a mirror's provider failed, so publish, to the providers it did not reach, and :meth:`settle` it; False:
        wait on it, or read its result). Raises IdempotencyKeyReused when the key's attempt sends another request."""
        with self._lock:
            self._forget_expired()
            attempt = self._attempts.get(key)
            if attempt is None or (attempt.settled and attempt.result is None and attempt.request == request):
                delivered = NOTHING_DELIVERED if attempt is None else attempt.delivered
                attempt = self._attempts[key] = Attempt(request, self._new_waiter(), delivered)
                self._attempts.move_to_end(key)
                if len(self._attempts) > self._capacity:
                    self._attempts.popitem(last=False)  # an attempt in flight forgotten still settles its waiters
                return attempt, True
            if attempt.request != request:
                raise IdempotencyKeyReused(
                    f"the idempotency key {key!r} was used for another publish in the last "
                    f"{self._window:g} seconds: a resend must repeat the same channels, event, data and socket_id; "
                    "give a new publish a new key"
                )
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
            attempt.settled, attempt.result, attempt.error = True, result, error
            if self._attempts.get(key) is not attempt:
                return
            if result is None and not delivered:
                del self._attempts[key]
                return
            attempt.delivered = delivered
            attempt.expires = self._clock() + self._window
            self._attempts.move_to_end(key)

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._attempts:
            oldest = next(iter(self._attempts.values()))
            if not oldest.settled or oldest.expires > now:
                return
            self._attempts.popitem(last=False)


class _Keys(Generic[W]):
    """What the sync and async keys share: the memory, the replay of a settled attempt, and the settling of one."""

    def __init__(
        self, closed: Callable[[], bool], delivered: Callable[[RelayError], Delivered], new_waiter: Callable[[], W]
    ) -> None:
        self._closed = closed
        self._delivered = delivered  # what the providers that did not fail delivered (MirrorError's results)
        self.memory: IdempotencyMemory[W] = IdempotencyMemory(new_waiter)

    @staticmethod
    def _replayed(attempt: Attempt[W]) -> PublishResult | None:
        """The settled ``attempt``'s result, replayed, or its error raised; None: it was interrupted (not a
        RelayError), and the waiter is sent instead."""
        if attempt.result is not None:
            return replace(attempt.result, replayed=True)
        if attempt.error is not None:
            raise attempt.error
        return None

    def _settle(
        self, key: str, attempt: Attempt[W], result: PublishResult | None, failure: BaseException | None
    ) -> None:
        if isinstance(failure, RelayError):
            self.memory.settle(key, attempt, None, failure, self._delivered(failure))
        else:
            self.memory.settle(key, attempt, result, None)
        self._wake(attempt.waiter)

    def _wake(self, waiter: W) -> None:
        raise NotImplementedError


class PublishedKeys(_Keys[threading.Event]):
    """A sync client's keys: a thread's resend while the first is in flight in another waits for its outcome."""

    def __init__(self, closed: Callable[[], bool], delivered: Callable[[RelayError], Delivered]) -> None:
        super().__init__(closed, delivered, threading.Event)

    def once(self, key: str, sent: bytes, send: Callable[[Delivered], PublishResult]) -> PublishResult:
        """``send(delivered)`` (to the providers that have not delivered it), unless ``key`` sent ``sent`` already
        (its result, replayed) or is sending it (waited for: its result, or its error)."""
        if self._closed():
            raise ClientClosed()
        while True:
            attempt, mine = self.memory.claim(key, sent)
            if mine:
                break
            attempt.waiter.wait()
            if (replayed := self._replayed(attempt)) is not None:
                return replayed
        try:
            result = send(attempt.delivered)
        except BaseException as failure:
            self._settle(key, attempt, None, failure)
            raise
        self._settle(key, attempt, result, None)
        return result

    def _wake(self, waiter: threading.Event) -> None:
        waiter.set()


class AsyncPublishedKeys(_Keys["asyncio.Future[None]"]):
    """An async client's keys, as :class:`PublishedKeys`: a resend awaits the first's outcome (shielded, so that a
    resend cancelled does not cancel the first)."""

    def __init__(self, closed: Callable[[], bool], delivered: Callable[[RelayError], Delivered]) -> None:
        super().__init__(closed, delivered, _new_future)

    async def once(self, key: str, sent: bytes, send: Callable[[Delivered], Awaitable[PublishResult]]) -> PublishResult:
        if self._closed():
            raise ClientClosed()
        while True:
            attempt, mine = self.memory.claim(key, sent)
            if mine:
                break
            await asyncio.shield(attempt.waiter)
            if (replayed := self._replayed(attempt)) is not None:
                return replayed
        try:
            result = await send(attempt.delivered)
        except BaseException as failure:
            self._settle(key, attempt, None, failure)
            raise
        self._settle(key, attempt, result, None)
        return result

    def _wake(self, waiter: asyncio.Future[None]) -> None:
        waiter.set_result(None)


def _new_future() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()

"""Idempotent publishes of the HTTP API: the answers to the publishes that carried an ``idempotency_key`` parameter
(an extension of Pusher's API, which the Pusher adapter sends to ``emulator://`` URLs), so that a resend from another
process within :data:`IDEMPOTENCY_WINDOW_SECONDS` gets the first answer and is not published again.

As Ably dedupes a message id per channel, a publish to ``/events`` is named by its key and its channels (a publish
over several calls sends one key with other channels), a ``/batch_events`` part by its key alone (the adapter sends
``<key>:<index of its first event>``). In a ``--redis`` cluster each node tells the others what it remembers (as it
tells them its publishes, over Redis), so a resend that a load balancer sends to another node is answered as the
first was; one sent there within the milliseconds that news takes to cross Redis is published again.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from relay.errors import IdempotencyKeyReused
from relay.protocol.idempotency_keys import IDEMPOTENCY_WINDOW_SECONDS, key_reused

# The publishes one app remembers at most, the oldest forgotten first past it (a resend that late is published again).
# Each holds two 32-byte digests and its answer, which is the shared empty one unless the publish asked for ``info``:
# about 300 bytes, so 3 MB an app.
MAX_REMEMBERED_PUBLISHES = 10_000

# What a resend repeats, as the library's refusal says it (the body's name, channels, data and socket_id)
RESENT = "channels, event, data and socket_id"

A = TypeVar("A")  # the answer (the HTTP API's Response)


class _Published(NamedTuple, Generic[A]):
    expires: float
    body: bytes  # a digest of the request's body: the signature's auth_timestamp, which differs, is in its query
    answer: A


def events_identity(key: str, channels: Sequence[str]) -> bytes:
    """What names a publish to ``/events``: its key and its channels (a digest: 100 names need not be kept)."""
    return hashlib.sha256(repr(("events", key, *channels)).encode()).digest()


def batch_identity(key: str) -> bytes:
    return hashlib.sha256(repr(("batch_events", key)).encode()).digest()


class PublishedKeys(Generic[A]):
    """One app's keyed publishes of the last ``window`` seconds, at most ``capacity`` of them. The event loop's alone
    (a publish is handled in one go), so no lock, and a resend cannot arrive while the first is being published."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        window: float = IDEMPOTENCY_WINDOW_SECONDS,
        capacity: int = MAX_REMEMBERED_PUBLISHES,
        share: Callable[[bytes, bytes, A], None] | None = None,
    ) -> None:
        self._clock = clock
        self._window = window
        self._capacity = capacity
        self._share = share  # told (identity, body digest, answer) of each publish remembered: the other nodes
        self._published: OrderedDict[bytes, _Published[A]] = OrderedDict()  # oldest first, so by when each expires

    def once(self, key: str, identity: bytes, body: bytes, publish: Callable[[], A], replayed: Callable[[A], A]) -> A:
        """``publish()``'s answer, remembered, unless ``identity`` published ``body`` within the window: that
        publish's answer, as ``replayed`` marks it, not published again. Raises IdempotencyKeyReused (422) when it
        published another body. An error ``publish`` raises is not remembered: a resend is published."""
        now = self._clock()
        self._forget_expired(now)
        digest = hashlib.sha256(body).digest()
        earlier = self._unexpired(identity, now)
        if earlier is not None:
            if earlier.body != digest:
                raise IdempotencyKeyReused(key_reused(key, RESENT, self._window))
            return replayed(earlier.answer)
        answer = publish()
        self._keep(identity, _Published(now + self._window, digest, answer))
        if self._share is not None:
            self._share(identity, digest, answer)
        return answer

    def remember(self, identity: bytes, digest: bytes, answer: A, *, seconds_left: float | None = None) -> None:
        """Another node's publish (``digest``: its body's), for its resends here within the window, or for
        ``seconds_left`` (one read from Redis later). One this node published or heard of first is kept: the two
        answered the same request (a resend crossing the news of the first)."""
        now = self._clock()
        self._forget_expired(now)
        if self._unexpired(identity, now) is None:
            self._keep(
                identity, _Published(now + (self._window if seconds_left is None else seconds_left), digest, answer)
            )

    def __contains__(self, identity: bytes) -> bool:
        """Whether a publish named ``identity`` is remembered and not expired."""
        return self._unexpired(identity, self._clock()) is not None

    def _unexpired(self, identity: bytes, now: float) -> _Published[A] | None:
        # Expired ones behind a later one are not dropped yet: a node that read another's from Redis has some out
        # of order
        earlier = self._published.get(identity)
        return earlier if earlier is not None and earlier.expires > now else None

    def _forget_expired(self, now: float) -> None:
        published = self._published
        while published and next(iter(published.values())).expires <= now:
            published.popitem(last=False)

    def _keep(self, identity: bytes, entry: _Published[A]) -> None:
        published = self._published
        published.pop(identity, None)  # an expired one not dropped yet: the new one goes last
        published[identity] = entry
        if len(published) > self._capacity:
            published.popitem(last=False)

"""Webhooks: signed, batched within a short window, held for vacate/remove events, retried with back-off."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Protocol

import httpx

from relay.emulator.config import App, Webhook
from relay.emulator.logs import redact_urls
from relay.errors import first_cause
from relay.protocol.ably import split_api_key
from relay.protocol.ably import webhook_signature as ably_webhook_signature
from relay.protocol.frames import dumps, utf8_length
from relay.protocol.signing import webhook_signature

log = logging.getLogger("relay.emulator.webhooks")

WebhookEvent = Mapping[str, object]
# The headers the emulator signs, which a webhook's custom headers cannot replace.
SIGNED_HEADERS = frozenset(
    {"content-type", "x-pusher-key", "x-pusher-signature", "x-ably-key", "x-ably-signature", "x-ably-version"}
)
_LIFECYCLE = {"channel_occupied": "channel.opened", "channel_vacated": "channel.closed"}
ABLY_SITE = "local"
# A channel's ChannelStatus in an Ably lifecycle item ({isActive, occupancy: {metrics}}), given the channel and whether
# the item is its opening.
LifecycleStatus = Callable[[str, bool], dict[str, object]]


class LifecycleListener(Protocol):
    """Who hears of channels opening and closing besides webhooks (the app's Ably side, ``AblyApp``)."""

    def watching(self) -> bool:
        """Whether anyone, on any node, is subscribed to the lifecycle events now."""

    def channel_lifecycle(self, event: WebhookEvent) -> None:
        """A channel_occupied or channel_vacated event, as it is sent."""


# Per webhook format: the most events one request carries (what waits behind a slow receiver goes in several), and the
# seconds a whole request may take, from connecting to the response's headers (the HTTP client's timeout bounds each
# read alone, so a receiver sending a byte every few seconds would hold its URL's queue for as long as it liked).
# Hosted Pusher closes a batch at 20 events and counts an answer later than 4 s as a failure, to be retried (Pusher
# support: "What is the batch size and batch window for Channels webhooks", "Channels webhook timeouts and
# retries"); Ably bundles up to 1,000 events in a request.
EVENTS_PER_REQUEST = {"pusher": 20, "ably": 1000}
# And the bytes of a request's events, under the 1 MiB body a receiver commonly takes (relay serve's /v1/webhooks,
# Next.js's route handlers): 1,000 Ably messages of 60 KB made one 60 MB request, refused whole, every event lost.
# Counted per event as its JSON; an Ably item carries its channel twice more (channelId, a lifecycle's name) and at
# most ITEM_ENVELOPE_BYTES besides (webhookId, source, serial, name, site, a lifecycle's ChannelStatus). A request
# has one event at least.
REQUEST_EVENT_BYTES = 1_000_000
ITEM_ENVELOPE_BYTES = 512
REQUEST_TIMEOUT = {"pusher": 4.0, "ably": 10.0}
# A short answer's body is read, so that its connection carries the next request (a TLS handshake saved per webhook);
# one longer than this, or still arriving after this long, is left unread and its connection closed. Its status stands.
ANSWER_BODY_BYTES = 64 * 1024
ANSWER_BODY_SECONDS = 1.0


class WebhookDispatcher:
    """One per app: collects events, posts them to every webhook whose filters match, and retries failures."""

    def __init__(
        self,
        app: App,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        on_delivery: Callable[[Webhook, int | None, Sequence[WebhookEvent], int], None] | None = None,
    ) -> None:
        self._app = app
        self._wanted = frozenset().union(*(hook.event_types for hook in app.webhooks))  # every webhook's event types
        self._wanted_as_ably = frozenset().union(*(hook.event_types for hook in app.webhooks if hook.format == "ably"))
        self._client = client
        self._clock = clock
        self._on_delivery = on_delivery
        self._batch: list[WebhookEvent] = []
        # Hosted Pusher sends a batch when it holds a request's worth of events, before its window closes: a burst
        # reaches the receiver a window sooner.
        self._full_batch = min((EVENTS_PER_REQUEST[hook.format] for hook in app.webhooks), default=0)
        self._flush_handle: asyncio.TimerHandle | None = None
        self._delayed: dict[Hashable, tuple[asyncio.TimerHandle, WebhookEvent]] = {}
        # Per webhook (by index): events waiting for it, in order, and the task sending them one request at a time,
        # so a batch being retried is not overtaken by a later one and a dead receiver holds up only itself.
        self._outboxes: list[collections.deque[WebhookEvent]] = [collections.deque() for _ in app.webhooks]
        # And when each of those events was queued (by the clock): its webhook_retry_for runs from then, not from when
        # its request starts, after those before it (a receiver down for an hour got events an hour old, restamped).
        self._queued_at: list[collections.deque[float]] = [collections.deque() for _ in app.webhooks]
        self._senders: dict[int, asyncio.Task[None]] = {}
        self._in_flight = [0 for _ in app.webhooks]  # events of each webhook's request being sent or retried
        self._dropped_logged_at = float("-inf")
        # Set by close: a request waiting out its back-off is tried again at once, within the shutdown's grace.
        self._closing = asyncio.Event()
        # Set by the app's Ably side (AblyApp), which an app with an Ably-format webhook has from the start.
        self.lifecycle_status: LifecycleStatus | None = None
        # Set by the app's Ably side too, for the [meta]channel.lifecycle metachannel: told each channel_occupied and
        # channel_vacated as it is sent (a vacated one after the hold; once per cluster), webhooks or none.
        self.lifecycle_listener: LifecycleListener | None = None
        # The serials of Ably-format items: this process's own sequence, unlike any other node's or an earlier run's.
        origin = secrets.token_hex(4)
        self._ably_serials = (f"{origin}{number:012x}" for number in itertools.count(1))
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self._app.webhooks)

    def wants(self, event_name: str, *, ably: bool = False) -> bool:
        """Whether any of the app's webhooks (with ``ably``, of its Ably-format ones) sends events of this name (what
        is not wanted need not be built)."""
        return event_name in (self._wanted_as_ably if ably else self._wanted)

    @property
    def pending(self) -> int:
        """Events batched (once: they are not yet sorted to the webhooks), and those waiting for a webhook or being
        delivered to it, retries included (once for each webhook that takes them)."""
        return len(self._batch) + sum(map(len, self._outboxes)) + sum(self._in_flight)

    def emit(self, event: WebhookEvent) -> None:
        if self.lifecycle_listener is not None and event["name"] in _LIFECYCLE:
            self.lifecycle_listener.channel_lifecycle(event)
        if not self.enabled:
            return
        self._batch.append(event)
        if len(self._batch) >= self._full_batch:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._app.webhook_batch_ms / 1000, self._flush)

    def emit_delayed(self, key: Hashable, event: WebhookEvent) -> None:
        """Hold ``event`` for the app's webhook delay; :meth:`cancel_delayed` drops it if the client returns."""
        if not self.enabled and not self._held_for_lifecycle(event):
            return
        self.cancel_delayed(key)
        loop = asyncio.get_running_loop()
        self._delayed[key] = (loop.call_later(self._app.webhook_delay, self._release, key), event)

    def _held_for_lifecycle(self, event: WebhookEvent) -> bool:
        """Whether ``event`` is a lifecycle event the listener wants held (a vacated channel coming back within the
        hold is no closing): on a single node, while the metachannel has a subscriber."""
        listener = self.lifecycle_listener
        return listener is not None and event["name"] in _LIFECYCLE and listener.watching()

    def cancel_delayed(self, key: Hashable) -> bool:
        held = self._delayed.pop(key, None)
        if held is None:
            return False
        held[0].cancel()
        return True

    def _release(self, key: Hashable) -> None:
        _, event = self._delayed.pop(key)
        self.emit(event)

    def _flush(self) -> None:
        self._flush_handle = None
        events, self._batch = self._batch, []
        now = self._clock()
        for index, hook in enumerate(self._app.webhooks):
            outbox = self._outboxes[index]
            selected = [e for e in events if hook.wants(str(e["name"]), _channel_of(e))]
            room = max(self._app.webhook_max_pending - len(outbox) - self._in_flight[index], 0)
            if len(selected) > room:  # a receiver that stays down must not grow memory without bound
                self._drop(hook, len(selected) - room)
                selected = selected[:room]
            outbox.extend(selected)
            self._queued_at[index].extend([now] * len(selected))
            if outbox and index not in self._senders:
                self._senders[index] = asyncio.create_task(self._send(index, hook))

    def _drop(self, hook: Webhook, count: int) -> None:
        self.dropped += count
        now = self._clock()
        if now - self._dropped_logged_at >= 10:
            self._dropped_logged_at = now
            log.error(
                "webhook queue for %s full (%d events pending): dropped %d event(s) so far",
                redact_urls(hook.url),
                self._app.webhook_max_pending,
                self.dropped,
            )

    async def _send(self, index: int, hook: Webhook) -> None:
        """Deliver a webhook's events in order: what waits when a request starts goes in it (up to a batch's worth)."""
        outbox, queued_at = self._outboxes[index], self._queued_at[index]
        try:
            while outbox:
                events = _next_request(outbox, hook.format)
                first_queued_at = queued_at[0]
                for _ in events:
                    queued_at.popleft()
                self._in_flight[index] = len(events)
                try:
                    await self._deliver(hook, events, first_queued_at + self._app.webhook_retry_for)
                finally:
                    self._in_flight[index] = 0
        finally:
            # Here, with no await after the last look at the outbox: a done-callback would run later, and a flush in
            # between would find this sender still registered and leave its events waiting for the next flush.
            del self._senders[index]

    async def _deliver(self, hook: Webhook, events: list[WebhookEvent], deadline: float) -> None:
        """Send ``events`` in one request, retried until ``deadline`` (``webhook_retry_for`` after the first of them
        was queued, as hosted Pusher retries each webhook for 5 minutes from its creation): tried once at least, so
        events that waited behind a request being retried past it are offered once to a receiver back by then."""
        # A custom header named like a signed one (in any case) would go out twice; the signed ones win.
        custom = {name: value for name, value in hook.headers.items() if name.lower() not in SIGNED_HEADERS}
        items: list[dict[str, object]] = []
        if hook.format == "ably":
            assert self.lifecycle_status is not None  # EmulatorNode.start builds the Ably side of such an app
            items = ably_items(events, self._ably_serials, self.lifecycle_status)
        timeout = REQUEST_TIMEOUT[hook.format]
        # The URL as logged: its credentials hidden even where the log's own redaction is not set up (an embedder's)
        shown = redact_urls(hook.url)
        delay = 1.0
        attempt = 0
        hurried = last_try = False
        while True:
            attempt += 1
            # Stamped and signed at each attempt: receivers (the Pusher SDKs, relay's verify_webhook) refuse a
            # time_ms (an Ably item's timestamp) older than five minutes, which a retry of the first attempt's body
            # would soon carry.
            body, signed = self._signed(hook, events, items)
            headers = {**custom, **signed}
            status: int | None = None
            try:
                async with (
                    asyncio.timeout(timeout),
                    self._client.stream("POST", hook.url, content=body, headers=headers) as response,
                ):
                    status = response.status_code
                    await _read_short_answer(response)
            except TimeoutError:
                if status is None:  # past the headers, the answer is in: only reading its body was cut short
                    log.warning("webhook to %s failed: no response within %g s", shown, timeout)
            except httpx.HTTPError as exc:
                log.warning("webhook to %s failed: %s: %.300s", shown, exc.__class__.__name__, first_cause(exc))
            except Exception as exc:  # httpx refusing the request itself: one failed attempt, not a dead sender
                log.error("webhook to %s could not be sent: %s: %.200s", shown, exc.__class__.__name__, exc)
            if self._on_delivery is not None:
                self._on_delivery(hook, status, events, attempt)
            if status is not None and 200 <= status < 300:
                return
            if status is not None:  # a 401 (a secret being rotated) or a redirect is seen at once, not in 5 minutes
                log.warning("webhook to %s failed: answered %d", shown, status)
            remaining = deadline - self._clock()
            if last_try or remaining <= 0:
                self.dropped += len(events)
                # The last answer tells a receiver refusing the signature (401, a secret being rotated) from one down
                last = "no answer" if status is None else f"status {status}"
                log.error(
                    "webhook to %s dropped %d event(s) after retrying for %.0f s (%d attempts, the last: %s)",
                    shown,
                    len(events),
                    self._app.webhook_retry_for,
                    attempt,
                    last,
                    extra={"app_id": self._app.app_id, "events": len(events), "status": status},
                )
                return
            # The last try at the deadline, not a back-off before it: giving up when the next back-off would pass it
            # gave up to a minute early, on a receiver that was back by the deadline
            wait = delay * random.uniform(0.5, 1.0)
            last_try = wait >= remaining
            hurried = await self._back_off(min(wait, remaining), hurried=hurried)
            delay = min(delay * 2, 60.0)

    async def _back_off(self, seconds: float, *, hurried: bool) -> bool:
        """Wait ``seconds`` before a retry, unless a shutdown has begun or begins meanwhile: its grace is seconds and
        a back-off up to a minute, so a receiver back by then would lose every event still waiting for it. Each
        request is ``hurried`` once: a receiver still failing is not sent it again and again for the whole grace.
        Returns whether the request has been hurried."""
        if hurried:
            await asyncio.sleep(seconds)
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        return self._closing.is_set()

    def _signed(
        self, hook: Webhook, events: list[WebhookEvent], items: list[dict[str, object]]
    ) -> tuple[bytes, dict[str, str]]:
        """A request's body, stamped now, and its signed headers, in the webhook's format."""
        now_ms = int(self._clock() * 1000)
        if hook.format == "ably":
            body = dumps({"items": [{**item, "timestamp": now_ms} for item in items]}).encode()
            key_name, key_secret = split_api_key(self._app.ably_api_key)
            return body, {
                "Content-Type": "application/json",
                "X-Ably-Version": "1.2",
                "X-Ably-Key": key_name,
                "X-Ably-Signature": ably_webhook_signature(key_secret, body),
            }
        body = dumps({"time_ms": now_ms, "events": [_as_pusher(event) for event in events]}).encode()
        return body, {
            "Content-Type": "application/json",
            "X-Pusher-Key": self._app.key,
            "X-Pusher-Signature": webhook_signature(self._app.secret, body),
        }

    async def close(self, grace: float) -> None:
        """Send what is batched or held now, retry at once what waits to be retried, and wait up to ``grace`` seconds
        for deliveries in flight."""
        self._closing.set()
        for key, (handle, _) in list(self._delayed.items()):
            handle.cancel()
            self._release(key)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        if self._senders:
            _, pending = await asyncio.wait(self._senders.values(), timeout=grace)
            for index, task in list(self._senders.items()):
                if task in pending:
                    self._abandon(index, grace)
                    task.cancel()

    def _abandon(self, index: int, grace: float) -> None:
        """The grace ran out with events still waiting for webhook ``index`` or being delivered to it (a request sent
        and not answered, or waiting to be retried): they are dropped, so say how many and count them."""
        outbox, in_flight = self._outboxes[index], self._in_flight[index]
        events = len(outbox) + in_flight
        if not events:
            return
        hook = self._app.webhooks[index]
        requests = 1 if in_flight else 0
        while outbox:
            _next_request(outbox, hook.format)
            requests += 1
        self._queued_at[index].clear()
        self.dropped += events
        log.warning(
            "shutdown: dropped %d webhook event(s) in %d request(s) for %s: not delivered within the %g s grace",
            events,
            requests,
            redact_urls(hook.url),
            grace,
            extra={"app_id": self._app.app_id, "events": events, "requests": requests},
        )


def _next_request(outbox: collections.deque[WebhookEvent], webhook_format: str) -> list[WebhookEvent]:
    """The events waiting first in ``outbox`` that one request of the format carries, taken from it."""
    events: list[WebhookEvent] = []
    size = 0
    while outbox and len(events) < EVENTS_PER_REQUEST[webhook_format]:
        event = outbox[0]
        if webhook_format == "pusher":
            size += utf8_length(dumps(_as_pusher(event))) + 1
        else:  # the event whole: an Ably item carries only one of its forms, a client event's data and messages
            channel = _channel_of(event) or ""
            size += utf8_length(dumps(event)) + 2 * utf8_length(channel) + ITEM_ENVELOPE_BYTES
        if events and size > REQUEST_EVENT_BYTES:
            break
        events.append(outbox.popleft())
    return events


async def _read_short_answer(response: httpx.Response) -> None:
    read = 0
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(ANSWER_BODY_SECONDS):
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > ANSWER_BODY_BYTES:
                    return


def ably_items(
    events: Sequence[WebhookEvent], serials: Iterator[str], lifecycle_status: LifecycleStatus
) -> list[dict[str, object]]:
    """Events as the items of an Ably batched webhook (reference §D.9): channel.opened and channel.closed
    (channel.lifecycle, whose data is a ChannelDetails, occupancy included), presence enter and leave
    (channel.presence), client events and the messages published through Ably's protocol (channel.message). Each
    item is stamped again at each attempt; its serial and the events' own timestamps stay."""
    items: list[dict[str, object]] = []
    for event in events:
        name, channel = event["name"], event["channel"]
        data: dict[str, object]
        if name in ("channel_occupied", "channel_vacated"):
            source, item_name = "channel.lifecycle", _LIFECYCLE[str(name)]
            data = {
                "channelId": channel,
                "name": channel,
                "status": lifecycle_status(str(channel), name == "channel_occupied"),
            }
        elif name == "presence":  # AblyApp.broadcast_presence's: every member of either protocol, per connection
            source, item_name = "channel.presence", "presence.message"
            data = {"channelId": channel, "site": ABLY_SITE, "presence": event["presence"]}
        elif name in ("client_event", "message"):  # AblyApp.client_event's and AblyApp.publish's, in Ably's JSON
            source, item_name = "channel.message", "channel.message"
            data = {"channelId": channel, "site": ABLY_SITE, "messages": event["messages"]}
        else:  # no such Ably webhook: Webhook refuses these event types for format = "ably"
            continue
        serial = next(serials)
        items.append(
            {"webhookId": "relay-emulator", "source": source, "serial": serial, "name": item_name, "data": data}
        )
    return items


def _as_pusher(event: WebhookEvent) -> WebhookEvent:
    """An event as Pusher-format webhooks carry it: a client event's Ably messages (of the events Pusher's have, the
    only ones with any) are for the Ably-format webhooks."""
    if "messages" not in event:
        return event
    return {name: value for name, value in event.items() if name != "messages"}


def _channel_of(event: WebhookEvent) -> str | None:
    channel = event.get("channel")
    return channel if isinstance(channel, str) else None

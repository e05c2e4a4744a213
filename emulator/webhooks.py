"""Webhooks: signed, batched within a short window, held for vacate/remove events, retried with back-off."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Hashable, Mapping

import httpx

from relay.emulator.config import App, Webhook
from relay.protocol.frames import dumps
from relay.protocol.signing import webhook_signature

log = logging.getLogger("relay.emulator.webhooks")

WebhookEvent = Mapping[str, object]


class WebhookDispatcher:
    """One per app: collects events, posts them to every webhook whose filters match, and retries failures."""

    def __init__(
        self,
        app: App,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        on_delivery: Callable[[Webhook, int | None], None] | None = None,
    ) -> None:
        self._app = app
        self._client = client
        self._clock = clock
        self._on_delivery = on_delivery
        self._batch: list[WebhookEvent] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self._delayed: dict[Hashable, tuple[asyncio.TimerHandle, WebhookEvent]] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._dropped_logged_at = float("-inf")
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return bool(self._app.webhooks)

    @property
    def pending(self) -> int:
        """Events batched or still being delivered (retries included)."""
        return len(self._batch) + self._in_flight

    def emit(self, event: WebhookEvent) -> None:
        if not self.enabled:
            return
        if self.pending >= self._app.webhook_max_pending:
            # A receiver that stays down must not grow memory without bound: drop, count and say so.
            self.dropped += 1
            now = self._clock()
            if now - self._dropped_logged_at >= 10:
                self._dropped_logged_at = now
                log.error(
                    "webhook queue full (%d events pending): dropped %d event(s) so far",
                    self.pending,
                    self.dropped,
                )
            return
        self._batch.append(event)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._app.webhook_batch_ms / 1000, self._flush)

    def emit_delayed(self, key: Hashable, event: WebhookEvent) -> None:
        """Hold ``event`` for the app's webhook delay; :meth:`cancel_delayed` drops it if the client returns."""
        if not self.enabled:
            return
        self.cancel_delayed(key)
        loop = asyncio.get_running_loop()
        self._delayed[key] = (loop.call_later(self._app.webhook_delay, self._release, key), event)

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
        time_ms = int(self._clock() * 1000)
        for hook in self._app.webhooks:
            selected = [e for e in events if hook.wants(str(e["name"]), _channel_of(e))]
            if selected:
                task = asyncio.create_task(self._deliver(hook, {"time_ms": time_ms, "events": selected}))
                self._deliveries.add(task)
                self._in_flight += len(selected)
                task.add_done_callback(functools.partial(self._delivered, events=len(selected)))

    def _delivered(self, task: asyncio.Task[None], events: int) -> None:
        self._deliveries.discard(task)
        self._in_flight -= events

    async def _deliver(self, hook: Webhook, payload: dict[str, object]) -> None:
        body = dumps(payload).encode()
        signed = ("content-type", "x-pusher-key", "x-pusher-signature")
        headers = {
            # A custom header named like one of these (in any case) would go out twice; the signed ones win.
            **{name: value for name, value in hook.headers.items() if name.lower() not in signed},
            "Content-Type": "application/json",
            "X-Pusher-Key": self._app.key,
            "X-Pusher-Signature": webhook_signature(self._app.secret, body),
        }
        deadline = self._clock() + self._app.webhook_retry_for
        delay = 1.0
        while True:
            status: int | None = None
            try:
                response = await self._client.post(hook.url, content=body, headers=headers)
                status = response.status_code
            except httpx.HTTPError as exc:
                log.warning("webhook to %s failed: %s", hook.url, exc.__class__.__name__)
            if self._on_delivery is not None:
                self._on_delivery(hook, status)
            if status is not None and 200 <= status < 300:
                return
            if self._clock() + delay > deadline:
                log.error("webhook to %s dropped after retrying for %.0f s", hook.url, self._app.webhook_retry_for)
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 60.0)

    async def close(self, grace: float) -> None:
        """Send what is batched or held now, and wait up to ``grace`` seconds for deliveries in flight."""
        for key, (handle, _) in list(self._delayed.items()):
            handle.cancel()
            self._release(key)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()
        if self._deliveries:
            _, pending = await asyncio.wait(self._deliveries, timeout=grace)
            for task in pending:
                task.cancel()


def _channel_of(event: WebhookEvent) -> str | None:
    channel = event.get("channel")
    return channel if isinstance(channel, str) else None

"""The usage meter: what one app did, per UTC day, counted the way hosted providers bill it.

The hub and the sessions call an :class:`AppMeter` at each event (one call per publish, subscribe or connection, never
one per Pusher recipient: a fan-out is counted as ``len(frame) * recipients``, less what permessage-deflate took off
the frames of the recipients that compress, counted once per deflate window; an Ably connection, written frames of its
own protocol, counts each frame it writes). The meter keeps

- lifetime totals, exported by ``/metrics``;
- one :class:`DayUsage` per UTC day, exported by ``/usage`` and ``relay emulator --usage-file`` in the usage-file
  format ``relay cost --usage`` reads (``relay/cost/usage.py``, version 2), with the seconds of each day the meter
  was measuring (from its start to the snapshot), so that part of a day is not taken for a whole one;
- an optional observer (the debug console) that is told about each event while someone watches.

Counting rules (the providers' own, as ``docs/cost.md`` "How each provider counts" gives them with sources):

- Pusher messages: every HTTP API publish (one per channel), every delivery of it, every client event and its
  deliveries, every ``member_added``/``member_removed`` delivery, every webhook request and every other HTTP API call
  that succeeded. Pings, pongs, subscribes and the protocol's own replies are not counted.
- Ably messages: each publish or client event is 1 inbound plus 1 outbound per recipient, each counted in 5 KiB
  chunks of its size (its name, data, client id and extras); a presence enter, update or leave is 1 inbound plus 1
  per presence subscriber; a webhook is 1; each message read from history (a REST history or presence query's
  answer, a rewind's backlog) is 1. An Ably connection sent its own publish back (echo, on unless it connected with
  echo=false) is 1 outbound more, counted apart (``echo_deliveries``, not ``deliveries``): Ably bills it, Pusher
  (whose clients never receive their own client events) and the others would not. A message of Ably's own on a
  metachannel (a ``[meta]channel.lifecycle`` event) is 1 sent plus 1 per subscriber, in 5 KiB chunks, counted apart
  (``metachannel_messages``, not among the publishes and deliveries): only Ably has them.
- HTTP publishes: the publishes that came in an HTTP request (the Pusher HTTP API's, the console's, Ably REST's),
  counted apart (``http_publishes``) from those an Ably realtime connection sent: Ably limits its HTTP API's requests
  a second and an hour, and a realtime publish is none. The requests that published them are counted too
  (``http_publish_requests``): a trigger to several channels, a batch of events or an Ably REST publish of several
  messages is one request, as the Ably adapter sends it to Ably.
- Ably API requests: the Ably REST requests other than publishes (history, presence, channel status and enumeration,
  batch presence) that authenticated and were admitted, whatever their answer (a capability refusal or a bad
  parameter too), counted apart (``ably_api_requests``) from Pusher's ``api_requests``, which Pusher bills as
  messages: they count against Ably's HTTP API request limits only. Not a token request (Ably limits those apart), nor
  ``GET /time`` or a request that did not authenticate (no app's), nor one refused over the app's rate limit.
- Ably token requests (``ably_token_requests``): each ``requestToken`` that authenticated and was admitted, whatever
  its answer: with the key (Basic auth), or as a signed TokenRequest whose token was issued (one refused is not told
  apart from a forged one). Each Ably client that authenticates with ``authUrl`` or ``authCallback`` makes one when it
  connects and one each time its token expires; Ably limits them an hour and a second, apart from its API requests.
- Presence: the most members one presence channel held at once (``peak_presence_members``: a ``presence-`` channel's
  users, another channel's Ably members), on every node of a cluster, as Pusher (100) and Ably (200) limit them.
- Connection and channel minutes are rounded up per connection (or channel) and per UTC day. A channel is active as
  Ably counts one: from its first subscriber or publish until it has no subscriber and CHANNEL_LINGER_SECONDS have
  passed since its last subscriber left and since its last publish. Peak channels count the active ones. Events sent
  to a user (``#server-to-user-…``) make no channel active.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import math
import operator
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from relay.emulator.config import Webhook
from relay.emulator.limits import TokenBucket
from relay.emulator.logs import redact_urls
from relay.emulator.user_sketch import UserSketch
from relay.errors import clipped
from relay.protocol.ably import is_metachannel
from relay.protocol.channels import SERVER_TO_USER_PREFIX
from relay.protocol.frames import utf8_length

if TYPE_CHECKING:
    from relay.emulator.hub import AppState

USAGE_VERSION = 2  # version 2 added each day's "measured"; the files version 1 wrote are still added to
_READABLE_VERSIONS = (1, USAGE_VERSION)
SECONDS_PER_DAY = 86_400
# Users counted exactly (their ids kept, ~80 bytes each); past that many the sketch estimates them (within ~1 %).
MAX_TRACKED_USERS = 50_000
# Ably keeps a channel active "about a minute" after its last detach and its last publish, and bills those minutes.
CHANNEL_LINGER_SECONDS = 60.0
# Channels kept lingering at most: publishes to this many channels nobody watches within a minute (a backend that makes
# up a name per request), or clients subscribing to as many and leaving, would hold that many names. Past it, such a
# publish counts its channel's minute at once, and so does the last unsubscribe of a channel.
MAX_LINGERING_CHANNELS = 100_000
_EPOCH = dt.date(1970, 1, 1)

Observer = Callable[[dict[str, object]], None]
# Spans of seconds after a day's 00:00 UTC, [from, to): when the runs that wrote a day were measuring.
Spans = tuple[tuple[int, int], ...]
# app id → UTC day → peak field → value: the summed peaks of runs that were serving at the same time.
Peaks = dict[str, dict[str, dict[str, int]]]


def units_5kib(size: int) -> int:
    """Whole 5 KiB units of a message of ``size`` bytes, at least one (an empty message counts)."""
    return -(-size // 5120) or 1


def message_size(event: str, data_bytes: int, user_id: str | None = None) -> int:
    """A Pusher event's size as Ably sizes the message it would be: the bytes of its name, its data (``data_bytes``,
    which its sender measured already) and client id (the user id a client event carries); an Ably message measures
    its own (``ably_hub.Message.size``)."""
    event_bytes = len(event) if event.isascii() else len(event.encode())  # utf8_length(event), without its call
    return event_bytes + data_bytes + (0 if user_id is None else utf8_length(user_id))


def recipients(subscribers: Collection[str], exclude: str | None = None) -> int:
    """How many of ``subscribers`` (socket ids) a fan-out reaches when ``exclude`` is left out; O(1)."""
    count = len(subscribers)
    return count - 1 if exclude is not None and exclude in subscribers else count


def local_reach(state: AppState, channel: str, exclude: str | None) -> int:
    """How many of this node's connections a publish to ``channel`` reaches."""
    if channel.startswith(SERVER_TO_USER_PREFIX):
        return recipients(state.users.get(channel[len(SERVER_TO_USER_PREFIX) :], {}), exclude)
    found = state.channels.get(channel)
    return 0 if found is None else recipients(found.subscribers, exclude)


@dataclass(slots=True)
class DayUsage:
    """One app's usage on one UTC day; every field but ``ably_messages`` is the usage file's."""

    peak_connections: int = 0
    peak_channels: int = 0
    connection_minutes: int = 0
    channel_minutes: int = 0
    publishes: int = 0
    http_publishes: int = 0
    http_publish_requests: int = 0
    deliveries: int = 0
    client_events: int = 0
    client_event_deliveries: int = 0
    presence_events: int = 0
    presence_deliveries: int = 0
    webhooks: int = 0
    api_requests: int = 0
    ably_api_requests: int = 0
    ably_token_requests: int = 0
    payload_bytes: int = 0
    bytes_out: int = 0
    peak_publishes_per_second: int = 0
    peak_presence_members: int = 0
    units_5kib: int = 0
    units_2kib: int = 0
    delivered_units_5kib: int = 0
    history_messages: int = 0
    echo_deliveries: int = 0
    metachannel_messages: int = 0
    ably_messages: int = 0
    measured: Spans = ()  # set on the snapshots of :meth:`AppMeter.days`, where "now" is known

    @property
    def pusher_messages(self) -> int:
        return (
            self.publishes
            + self.deliveries
            + self.client_events
            + self.client_event_deliveries
            + self.presence_deliveries
            + self.webhooks
            + self.api_requests
        )

    def to_dict(self) -> dict[str, Any]:
        """The usage file's fields (``ably_messages`` is derived there from the others, so it is left out)."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name in _COUNTS}
        if self.measured:
            values["measured"] = [list(span) for span in self.measured]
        return values

    def summary(self) -> dict[str, int]:
        return {
            "pusher_messages": self.pusher_messages,
            "ably_messages": self.ably_messages,
            "peak_connections": self.peak_connections,
            "connection_minutes": self.connection_minutes,
            "bytes_out": self.bytes_out,
        }


# The usage file's counts and peaks: every field but the derived ``ably_messages`` and the spans measured.
_COUNTS = frozenset(f.name for f in fields(DayUsage) if f.name not in ("ably_messages", "measured"))

LOGGED_DATA = 500  # characters of an event's data (or of an error's message) a console row shows
LOGGED_CHANNEL = 200  # characters of a refused channel name (any length a frame holds) a console row shows
LOGGED_REFUSALS_PER_SECOND = 20  # refusals a second the console is told of, per app (bursts of as many)
LOGGED_WEBHOOK_EVENTS = 10  # a console row names a webhook request's first events, and says how many it carried


def day_name(index: int) -> str:
    return (_EPOCH + dt.timedelta(days=index)).isoformat()


def measured_spans(start: float, now: float) -> dict[int, tuple[int, int]]:
    """The whole seconds from ``start`` to ``now`` by UTC day (day index → its span), the second in progress
    included: a meter started and read within one second measured during that second."""
    # A wall clock stepped back before ``start`` leaves the second of the start: with nothing measured, the day would
    # lose, as it is added to the file, the spans that earlier runs measured (a span missing from either is unknown).
    first, stop = math.floor(start), math.floor(max(now, start)) + 1
    spans: dict[int, tuple[int, int]] = {}
    while first < stop:
        index = first // SECONDS_PER_DAY
        midnight = index * SECONDS_PER_DAY
        until = min(stop, midnight + SECONDS_PER_DAY)
        spans[index] = (first - midnight, until - midnight)
        first = until
    return spans


class AppMeter:
    """Counts one app's traffic. Every method is O(1) except the snapshots."""

    def __init__(self, app_id: str, clock: Callable[[], float] = time.time) -> None:
        self.app_id = app_id
        self._clock = clock
        self._days: dict[int, DayUsage] = {}
        self._day_index = -1
        self._today = DayUsage()
        self._connections: dict[str, float] = {}
        self._channels: dict[str, float] = {}  # occupied channels → when each became active
        # Channels active with no subscriber (for CHANNEL_LINGER_SECONDS after their last one left or their last
        # publish) → (active since, active until), in the order they expire: each entry is put last when it is set.
        self._lingering: dict[str, tuple[float, float]] = {}
        self._second = -1
        self._in_second = 0
        self.users: set[str] = set()  # exact, up to MAX_TRACKED_USERS
        self.user_sketch = UserSketch()  # every user, for the usage file's runs to merge
        self.observer: Observer | None = None
        self._refusals = TokenBucket(LOGGED_REFUSALS_PER_SECOND, clock())  # those the console is told of
        self._refusals_unshown = 0
        self.started_at = clock()  # the time measured starts here; runs whose lifetimes overlap add their peaks
        # Lifetime totals for /metrics.
        self.connections_opened = 0
        self.messages_received = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.publishes = 0
        self.client_events = 0
        self.presence_events = 0
        self.api_requests = 0
        self.ably_api_requests = 0
        self.ably_token_requests = 0
        self.webhook_statuses: dict[str, int] = {}
        self.webhook_failures = 0
        self._day(clock())

    # -- days -------------------------------------------------------------------------------------------------

    def _day(self, now: float) -> DayUsage:
        index = int(now // SECONDS_PER_DAY)
        if index != self._day_index:
            # The day starts with the channels active at its midnight, those whose linger ended since included.
            self._expire_lingering(min(now, index * SECONDS_PER_DAY))
            # The day may exist already: minutes of a connection or channel that ended since midnight made it.
            day = self._days.get(index)
            if day is None:
                day = self._days[index] = DayUsage()
            day.peak_connections = max(day.peak_connections, len(self._connections))
            day.peak_channels = max(day.peak_channels, len(self._channels) + len(self._lingering))
            self._today, self._day_index = day, index
            self._expire_lingering(now)
        return self._today

    def _expire_lingering(self, now: float) -> None:
        """Count the minutes of the channels whose linger ended by ``now``; they are no longer active."""
        lingering = self._lingering
        while lingering:
            channel, (since, until) = next(iter(lingering.items()))
            if until > now + CHANNEL_LINGER_SECONDS:
                # Set before the wall clock stepped back: ending in what is now the future, it would hold every
                # linger set after it active. Its end is taken from the clock as it is, and it goes last, in order.
                del lingering[channel]
                lingering[channel] = (min(since, now), now + CHANNEL_LINGER_SECONDS)
                continue
            if until > now:
                return
            del lingering[channel]
            self._add_minutes(self._days, since, until, "channel_minutes", "peak_channels")

    def _still_lingering(self, channel: str, now: float) -> float | None:
        """When ``channel`` became active, if it lingers still; it no longer lingers either way. (One whose linger
        ended behind a later one, out of order after a small step back of the clock, is counted here.)"""
        lingering = self._lingering.pop(channel, None)
        if lingering is None:
            return None
        since, until = lingering
        if until > now:
            return since
        self._add_minutes(self._days, since, until, "channel_minutes", "peak_channels")
        return None

    def _channel_activated(self, day: DayUsage) -> None:
        active = len(self._channels) + len(self._lingering)
        if active > day.peak_channels:
            day.peak_channels = active

    @staticmethod
    def _add_minutes(days: dict[int, DayUsage], start: float, end: float, attr: str, peak: str) -> None:
        """Add the minutes from ``start`` to ``end`` to each UTC day they cover, rounded up per day."""
        while True:
            index = int(start // SECONDS_PER_DAY)
            boundary = (index + 1) * SECONDS_PER_DAY
            stop = min(end, boundary)
            day = days.get(index)
            if day is None:
                day = days[index] = DayUsage()
            setattr(day, attr, getattr(day, attr) + max(1, math.ceil((stop - start) / 60)))
            setattr(day, peak, max(getattr(day, peak), 1))
            if end <= boundary:
                return
            start = boundary

    def _count_publish(self, now: float, day: DayUsage, size: int, reached: int) -> int:
        units_5 = -(-size // 5120) or 1  # units_5kib(size), without its call
        day.payload_bytes += size
        day.units_5kib += units_5
        day.units_2kib += -(-size // 2048) or 1
        day.delivered_units_5kib += units_5 * reached
        day.ably_messages += units_5 * (1 + reached)
        second = int(now)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        if self._in_second > day.peak_publishes_per_second:
            day.peak_publishes_per_second = self._in_second
        return units_5

    # -- hooks ------------------------------------------------------------------------------------------------

    def connected(self, socket_id: str) -> None:
        now = self._clock()
        day = self._day(now)
        self._connections[socket_id] = now
        self.connections_opened += 1
        if len(self._connections) > day.peak_connections:
            day.peak_connections = len(self._connections)
        if self.observer is not None:
            self.observer({"type": "connected", "socket_id": socket_id})

    def disconnected(self, socket_id: str) -> None:
        now = self._clock()
        self._day(now)  # a day that starts now starts with this connection among its open ones
        start = self._connections.pop(socket_id, None)
        if start is None:
            return
        self._add_minutes(self._days, start, now, "connection_minutes", "peak_connections")
        if self.observer is not None:
            self.observer({"type": "disconnected", "socket_id": socket_id, "seconds": round(now - start, 1)})

    def subscribed(self, channel: str, socket_id: str, subscribers: int, user_id: str | None) -> None:
        if subscribers == 1:
            now = self._clock()
            day = self._day(now)
            self._expire_lingering(now)
            since = self._still_lingering(channel, now)
            self._channels[channel] = now if since is None else since
            self._channel_activated(day)
        if self.observer is not None:
            self.observer({"type": "subscribed", "channel": channel, "socket_id": socket_id, "user_id": user_id})

    def unsubscribed(self, channel: str, socket_id: str, subscribers: int) -> None:
        if subscribers == 0:
            now = self._clock()
            self._day(now)
            start = self._channels.pop(channel, None)
            if start is not None:
                self._expire_lingering(now)
                if len(self._lingering) < MAX_LINGERING_CHANNELS:
                    self._lingering[channel] = (start, now + CHANNEL_LINGER_SECONDS)
                else:  # as a publish's past the cap: its minutes, linger included, counted at once
                    end = now + CHANNEL_LINGER_SECONDS
                    self._add_minutes(self._days, start, end, "channel_minutes", "peak_channels")
        if self.observer is not None:
            self.observer({"type": "unsubscribed", "channel": channel, "socket_id": socket_id})

    def published(
        self, channel: str, event: str, data: str, reached: int, size: int, echoes: int = 0, *, http: bool = True
    ) -> int:
        """An HTTP API (or console, or Ably) publish to one channel of a message of ``size`` bytes as Ably sizes it,
        that reached ``reached`` of this node's connections besides its publisher's, and was sent back to that
        connection ``echoes`` times (0 or 1: Ably's echo); returns its 5 KiB units (the other nodes of a cluster
        meter their deliveries of it). ``http`` False: it did not come in an HTTP request (an Ably realtime
        connection's publish, or a metachannel message), which Ably's HTTP API request limits do not count."""
        now = self._clock()
        # _day(now), without its call when the day is the current one (once per publish)
        day = self._today if int(now // SECONDS_PER_DAY) == self._day_index else self._day(now)
        if channel not in self._channels and not channel.startswith(SERVER_TO_USER_PREFIX):  # a user is no channel
            self._expire_lingering(now)
            since = self._still_lingering(channel, now)
            if since is None and len(self._lingering) >= MAX_LINGERING_CHANNELS:
                self._add_minutes(self._days, now, now + CHANNEL_LINGER_SECONDS, "channel_minutes", "peak_channels")
            else:
                self._lingering[channel] = (now if since is None else since, now + CHANNEL_LINGER_SECONDS)
                self._channel_activated(day)
        if is_metachannel(channel):
            # Ably's own message (a channel lifecycle event): only Ably has it, so it is no publish, nor its deliveries
            # (the console's live feed shows it all the same)
            units = units_5kib(size)
            day.metachannel_messages += units * (1 + reached)
            day.ably_messages += units * (1 + reached)
        else:
            day.publishes += 1
            day.http_publishes += http
            day.deliveries += reached
            units = self._count_publish(now, day, size, reached)
            if echoes:
                day.echo_deliveries += echoes
                day.ably_messages += units * echoes
            self.publishes += 1
        if self.observer is not None:
            shown = clipped(data, LOGGED_DATA)
            self.observer({"type": "publish", "channel": channel, "event": event, "data": shown, "recipients": reached})
        return units

    def client_event(
        self, channel: str, event: str, data: str, socket_id: str, user_id: str | None, reached: int, size: int
    ) -> None:
        """A client event of ``size`` bytes as Ably sizes it (:func:`message_size`), relayed to ``reached``."""
        now = self._clock()
        day = self._day(now)
        day.client_events += 1
        day.client_event_deliveries += reached
        self._count_publish(now, day, size, reached)
        self.client_events += 1
        if self.observer is not None:
            self.observer(
                {
                    "type": "client_event",
                    "channel": channel,
                    "event": event,
                    "data": clipped(data, LOGGED_DATA),
                    "socket_id": socket_id,
                    "user_id": user_id,
                    "recipients": reached,
                }
            )

    def refused(self, kind: str, socket_id: str, channel: str | None, code: int | None, message: str) -> None:
        """A ``pusher:error`` (``kind`` "error") or ``pusher:subscription_error`` (``kind`` "subscription_error", the
        HTTP-like status as ``code``) sent to a connection: not usage, but what the console shows of it. At most
        LOGGED_REFUSALS_PER_SECOND a second are shown, in bursts of as many (a client in a loop would push everything
        else out of the log), the next one shown saying how many were not."""
        if self.observer is None:
            return
        if not self._refusals.take_if_available(self._clock()):
            self._refusals_unshown += 1
            return
        event: dict[str, object] = {
            "type": kind,
            "socket_id": socket_id,
            "channel": None if channel is None else clipped(channel, LOGGED_CHANNEL),
            "code": code,
            "message": clipped(message, LOGGED_DATA),
        }
        if self._refusals_unshown:
            event["unshown"], self._refusals_unshown = self._refusals_unshown, 0
        self.observer(event)

    def member_event(self, channel: str, user_id: str, *, added: bool, reached: int) -> None:
        self.presence_changed(1, reached)
        if added:
            self.user_seen(user_id)
        if self.observer is not None:
            kind = "member_added" if added else "member_removed"
            self.observer({"type": kind, "channel": channel, "user_id": user_id, "recipients": reached})

    def presence_held(self, members: int) -> None:
        """A presence channel holds ``members`` members now, on every node (a Pusher channel's users, an Ably channel's
        members), the most of which providers limit."""
        day = self._day(self._clock())
        day.peak_presence_members = max(day.peak_presence_members, members)

    def presence_changed(self, changes: int, reached: int) -> None:
        """``changes`` presence events (an enter, update or leave each) that reached ``reached`` connections here each:
        1 and 1 per connection reached, as Ably bills a presence message."""
        day = self._day(self._clock())
        day.presence_events += changes
        day.presence_deliveries += changes * reached
        day.ably_messages += changes * (1 + reached)
        self.presence_events += changes

    def history_read(self, messages: int) -> None:
        """``messages`` messages read from what Ably keeps (a REST history or presence query's answer, a rewind's
        backlog): Ably bills each as 1 message."""
        day = self._day(self._clock())
        day.history_messages += messages
        day.ably_messages += messages

    def relayed(
        self, units: int, reached: int, *, client_event: bool, echoes: int = 0, metachannel: bool = False
    ) -> None:
        """Another node's publish (or client event) of ``units`` 5 KiB units reached ``reached`` of this node's
        connections besides its publisher's, and was sent back to the publisher's ``echoes`` times (0 or 1: an Ably
        publish "as" a connection here): these deliveries are this node's to count; the publish itself is counted
        where it was made. ``metachannel``: a message of Ably's own, counted apart as :meth:`published` counts it."""
        day = self._day(self._clock())
        if metachannel:
            day.metachannel_messages += units * reached
            day.ably_messages += units * reached
            return
        if client_event:
            day.client_event_deliveries += reached
        else:
            day.deliveries += reached
        day.delivered_units_5kib += units * reached
        day.echo_deliveries += echoes
        day.ably_messages += units * (reached + echoes)

    def presence_relayed(self, reached: int) -> None:
        """Another node's presence events (a Pusher member joined or left, an Ably member's enter, update or leave)
        made ``reached`` deliveries to this node's connections (the events themselves are counted on that node)."""
        day = self._day(self._clock())
        day.presence_deliveries += reached
        day.ably_messages += reached

    def user_seen(self, user_id: str) -> None:
        if user_id in self.users:
            return
        self.user_sketch.add(user_id)
        if len(self.users) < MAX_TRACKED_USERS:
            self.users.add(user_id)

    @property
    def unique_users(self) -> int:
        """The users seen: counted exactly up to MAX_TRACKED_USERS, estimated past it."""
        if len(self.users) < MAX_TRACKED_USERS:
            return len(self.users)
        return max(len(self.users), self.user_sketch.estimate())

    def fanout(self, frame_bytes: int, reached: int, deflate_saved: int = 0) -> None:
        """``reached`` connections were written the same frame (any frame: bytes count, whatever it carries), less
        ``deflate_saved`` bytes in all where permessage-deflate sent it compressed: what was written is counted."""
        self.written(reached, frame_bytes * reached - deflate_saved)

    def written(self, frames: int, written: int) -> None:
        """``frames`` frames written, ``written`` bytes in all (as sent: compressed where they were)."""
        self.messages_sent += frames
        self.bytes_sent += written
        now = self._clock()  # _day(now), without its call when the day is the current one (once per fan-out)
        (self._today if int(now // SECONDS_PER_DAY) == self._day_index else self._day(now)).bytes_out += written

    def received(self, size: int) -> None:
        self.messages_received += 1
        self.bytes_received += size

    def publish_request(self) -> None:
        """An HTTP publish request: a Pusher one once it published (:meth:`published` counts each message), an Ably
        REST one once admitted, whatever its answer, as Ably counts its requests (docs/cost.md)."""
        now = self._clock()
        day = self._today if int(now // SECONDS_PER_DAY) == self._day_index else self._day(now)
        day.http_publish_requests += 1

    def api_request(self) -> None:
        """A successful HTTP API call other than a publish (channel info, users, terminate)."""
        self._day(self._clock()).api_requests += 1
        self.api_requests += 1

    def ably_api_request(self) -> None:
        """An Ably REST request other than a publish or a token request, authenticated and admitted."""
        self._day(self._clock()).ably_api_requests += 1
        self.ably_api_requests += 1

    def ably_token_request(self) -> None:
        """An Ably token request, authenticated and admitted."""
        self._day(self._clock()).ably_token_requests += 1
        self.ably_token_requests += 1

    def webhook_sent(
        self, hook: Webhook, status: int | None, events: Sequence[Mapping[str, object]], attempt: int
    ) -> None:
        """One webhook request (each retry is another request, ``attempt`` counting from 1) carrying ``events``;
        ``status`` None when no response came back."""
        day = self._day(self._clock())
        day.webhooks += 1
        day.ably_messages += 1
        label = "error" if status is None else str(status)
        self.webhook_statuses[label] = self.webhook_statuses.get(label, 0) + 1
        if status is None or not 200 <= status < 300:
            self.webhook_failures += 1
        if self.observer is not None:
            channels = {str(event.get("channel", "")) for event in events}
            self.observer(
                {
                    "type": "webhook",
                    "url": redact_urls(hook.url),
                    "status": status,
                    "attempt": attempt,
                    "events": [str(event["name"]) for event in events[:LOGGED_WEBHOOK_EVENTS]],
                    "events_total": len(events),
                    "channel": channels.pop() if len(channels) == 1 else None,
                }
            )

    # -- snapshots --------------------------------------------------------------------------------------------

    def today(self) -> DayUsage:
        """Today's live counts (minutes of connections and channels still open are not in them yet)."""
        return self._day(self._clock())

    def days(self) -> dict[str, DayUsage]:
        """Every day so far, with the connections and channels still open counted up to now, and the seconds of
        each day measured so far."""
        now = self._clock()
        self._day(now)
        self._expire_lingering(now)
        days = {index: copy.copy(day) for index, day in self._days.items()}
        today = int(now // SECONDS_PER_DAY)
        today_start = today * SECONDS_PER_DAY
        for starts, attr, peak in (
            (self._connections.values(), "connection_minutes", "peak_connections"),
            (
                itertools.chain(self._channels.values(), (since for since, _ in self._lingering.values())),
                "channel_minutes",
                "peak_channels",
            ),
        ):
            # Most started today: summed in one tight loop (a checkpoint runs this on the event loop, for every
            # connection open), the rest split over the days they cover.
            minutes = 0
            for start in starts:
                if start >= today_start:
                    minutes += max(1, math.ceil((now - start) / 60))
                else:
                    self._add_minutes(days, start, now, attr, peak)
            if minutes:
                day = days[today]
                setattr(day, attr, getattr(day, attr) + minutes)
                setattr(day, peak, max(getattr(day, peak), 1))
        # Every day the run spanned, a quiet one too: its time measured is time nothing happened in, not time unknown.
        for index, span in measured_spans(self.started_at, now).items():
            days.setdefault(index, DayUsage()).measured = (span,)
        return {day_name(index): day for index, day in sorted(days.items())}


def usage_document(meters: Iterable[AppMeter], generated_by: str) -> dict[str, Any]:
    """The usage file (version 2) for these apps, as ``relay cost --usage`` reads it."""
    apps: dict[str, Any] = {}
    for meter in meters:
        apps[meter.app_id] = {
            "unique_users": meter.unique_users,
            "users_sketch": meter.user_sketch.encode(),
            "days": {name: day.to_dict() for name, day in meter.days().items()},
        }
    return {"version": USAGE_VERSION, "generated_by": generated_by, "apps": apps}


def usage_summary(meters: Iterable[AppMeter]) -> dict[str, Any]:
    """Per app and day: messages as Pusher and as Ably count them, peak connections, minutes and bytes out."""
    return {meter.app_id: {name: day.summary() for name, day in meter.days().items()} for meter in meters}


_PEAKS = frozenset({"peak_connections", "peak_channels", "peak_publishes_per_second"})
# Peaks every run sees whole (a presence channel's members on every node of a cluster): runs serving together saw
# the same members, so the larger counts, not their sum.
_LARGEST = frozenset({"peak_presence_members"})
# Fields a day may lack: counts an earlier version did not keep, and the time measured, which version 1 did not.
_OPTIONAL = frozenset(
    {
        "peak_publishes_per_second",
        "peak_presence_members",
        "units_5kib",
        "units_2kib",
        "delivered_units_5kib",
        "history_messages",
        "echo_deliveries",
        "metachannel_messages",
        "http_publishes",
        "http_publish_requests",
        "ably_api_requests",
        "ably_token_requests",
        "measured",
    }
)
_FIELDS = _COUNTS | {"measured"}
_REQUIRED = _FIELDS - _OPTIONAL
_DAY_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")


# The most a usage file counts, as relay cost reads it (relay/cost/usage.py, MAX_QUANTITY): a file holding more is not
# one it reads, so not one to add usage to.
MAX_USAGE_COUNT = 10**18


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_COUNT


def _is_day_name(name: str) -> bool:
    if _DAY_NAME.fullmatch(name) is None:
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def _spans_problem(value: object) -> str | None:
    """What is wrong with ``value`` as a day's ``measured`` (spans [from, to) of seconds after 00:00 UTC, in order
    and apart), or None."""
    if not isinstance(value, list) or not value:
        return "is not a list of [from, to] spans of seconds"
    end = 0
    for span in value:
        if not (isinstance(span, list) and len(span) == 2 and all(_is_count(second) for second in span)):
            return f"has {span!r}, not a [from, to] span of whole seconds"
        if not end <= span[0] < span[1] <= SECONDS_PER_DAY:
            return f"has {span!r}: not in the day, in order and apart from the spans before it"
        end = span[1]
    return None


def check_usage_document(value: object) -> dict[str, Any]:
    """``value`` when it is a usage file (version 1 or 2) that usage can be added to; else ValueError saying what is
    not.

    The shape only (objects, field names, dates, whole numbers, spans): the counts of one node of a cluster need not
    agree with each other (its deliveries may be of publishes made on another node).
    """
    if not isinstance(value, dict):
        kind = "null" if value is None else "an array" if isinstance(value, list) else repr(value)[:40]
        raise ValueError(f"JSON {kind}, not an object")
    if type(value.get("version")) is not int or value["version"] not in _READABLE_VERSIONS:  # not true, nor 2.0
        raise ValueError(f"not a version {' or '.join(map(str, _READABLE_VERSIONS))} usage file")
    known = _FIELDS if value["version"] == USAGE_VERSION else _COUNTS
    unknown = sorted(set(value) - {"version", "generated_by", "apps"})
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    apps = value.get("apps")
    if not isinstance(apps, dict):
        raise ValueError("apps is not an object")
    for app_id, entry in apps.items():
        where = f"apps.{app_id}"
        if not isinstance(entry, dict) or not isinstance(entry.get("days"), dict) or not entry["days"]:
            raise ValueError(f"{where} is not an object with days")
        unknown = sorted(set(entry) - {"days", "unique_users", "users_sketch"})
        if unknown:
            raise ValueError(f"{where} has an unknown field {unknown[0]!r}")
        if "unique_users" in entry and not _is_count(entry["unique_users"]):
            raise ValueError(f"{where}.unique_users is not a whole number from 0 to 10**18")
        if "users_sketch" in entry:
            if "unique_users" not in entry:
                raise ValueError(f"{where} has users_sketch without unique_users")
            try:
                UserSketch.decode(entry["users_sketch"])
            except ValueError as exc:
                raise ValueError(f"{where}.users_sketch {exc}") from None
        for name, day in entry["days"].items():
            if not _is_day_name(name):
                raise ValueError(f"{where}.days has {name!r}, not a UTC date YYYY-MM-DD")
            if not isinstance(day, dict):
                raise ValueError(f"{where}.days.{name} is not an object")
            missing = sorted(_REQUIRED - set(day))
            if missing:
                raise ValueError(f"{where}.days.{name} has no {missing[0]}")
            for key, count in day.items():
                if key not in known:
                    raise ValueError(f"{where}.days.{name}.{key} is not a usage field of version {value['version']}")
                problem = _spans_problem(count) if key == "measured" else None
                if problem is not None:
                    raise ValueError(f"{where}.days.{name}.measured {problem}")
                if key != "measured" and not _is_count(count):
                    raise ValueError(f"{where}.days.{name}.{key} is not a whole number from 0 to 10**18")
    return value


def _union(spans: Sequence[Sequence[int]], more: Sequence[Sequence[int]]) -> list[list[int]]:
    """The seconds in either ``spans`` or ``more``, as spans in order and apart (touching ones joined)."""
    joined: list[list[int]] = []
    for start, end in sorted((span[0], span[1]) for span in (*spans, *more)):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return joined


def merge_documents(old: Mapping[str, Any], new: Mapping[str, Any], concurrent: Peaks | None = None) -> dict[str, Any]:
    """Add ``new``, this run's usage, to ``old``, a usage file: counts add up and each peak is the larger of the
    file's and this run's, where this run's is its own plus ``concurrent``: the summed peaks of the earlier runs that
    were serving while this one was (workers or nodes of one deployment: their connections were open together).

    The seconds measured are the union of the two: runs serving together measured the same seconds, runs in turn
    add theirs, and nothing needs to know which of the two it was (a crashed run's checkpoint, recovered with no
    word of what it overlapped, is measured once too). A day either lacks (its counts then came from runs whose
    time nobody recorded, such as a version 1 file's) is left without.

    ``unique_users`` counts the users either saw, from the union of their ``users_sketch``; where one lacks its
    sketch (a file written before sketches), it is the larger of the two counts, a lower bound, and the file keeps no
    sketch from then on. Raises ValueError when ``old`` is not a usage file (:func:`check_usage_document`).
    """
    check_usage_document(old)
    concurrent = concurrent or {}
    apps: dict[str, Any] = copy.deepcopy(dict(old["apps"]))
    for app_id, entry in new["apps"].items():
        target = apps.setdefault(app_id, {"days": {}})
        if "unique_users" in entry:
            _merge_users(target, entry)
        others = concurrent.get(app_id, {})
        for name, counts in entry["days"].items():
            day = target["days"].setdefault(name, {})
            lacking = {key for key in _OPTIONAL if day and (key not in day or key not in counts)}
            together = others.get(name, {})
            for key, value in counts.items():
                if key == "measured":
                    day[key] = _union(day.get(key, []), value)
                elif key in _PEAKS:
                    day[key] = max(day.get(key, 0), value + together.get(key, 0))
                elif key in _LARGEST:
                    day[key] = max(day.get(key, 0), value)
                else:
                    day[key] = day.get(key, 0) + value
            for key in lacking:  # one of the runs did not measure it: a sum would be wrong
                day.pop(key, None)
    return {"version": USAGE_VERSION, "generated_by": new.get("generated_by", ""), "apps": apps}


def _merge_users(target: dict[str, Any], entry: Mapping[str, Any]) -> None:
    if "unique_users" not in target:
        target.update({key: entry[key] for key in ("unique_users", "users_sketch") if key in entry})
        return
    counted = max(target["unique_users"], entry["unique_users"])
    if "users_sketch" in target and "users_sketch" in entry:
        union = UserSketch.decode(target["users_sketch"]).merged(UserSketch.decode(entry["users_sketch"]))
        target["users_sketch"] = union.encode()
        counted = max(counted, union.estimate())
    else:
        target.pop("users_sketch", None)
    target["unique_users"] = counted


def add_peaks(concurrent: Peaks, new: Mapping[str, Any]) -> Peaks:
    """``concurrent`` with the peaks of ``new`` (a usage document) added: what a later run that was serving at the
    same time adds its own peaks to."""
    total = copy.deepcopy(concurrent)
    for app_id, entry in new["apps"].items():
        for name, counts in entry["days"].items():
            day = total.setdefault(app_id, {}).setdefault(name, {})
            for key in _PEAKS & counts.keys():
                day[key] = day.get(key, 0) + counts[key]
    return total


def concurrent_peaks(runs: Iterable[tuple[float, float, Peaks]], started: float, now: float) -> Peaks:
    """The peaks that ``runs`` (each: started, stopped, its own peaks) serving while a run did, from ``started`` to
    ``now``, add to that run's: at each moment, the sum of the peaks of the runs serving then, and per app, day and
    peak the most of those sums (each run's peak taken as held for all its time: an upper bound). Runs that served one
    after another, such as the restarts of one node beside another node, do not add up."""
    serving = [(start, stop, peaks) for start, stop, peaks in runs if stop > started and start < now]
    most: Peaks = {}
    for moment in sorted({max(start, started) for start, _, _ in serving}):
        total: Peaks = {}
        for start, stop, peaks in serving:
            if start <= moment < stop:
                _fold_peaks(total, peaks, operator.add)
        _fold_peaks(most, total, max)
    return most


def _fold_peaks(into: Peaks, peaks: Peaks, combine: Callable[[int, int], int]) -> None:
    """``peaks`` folded into ``into``, per app, day and peak, by ``combine`` (their sum, or the larger)."""
    for app_id, days in peaks.items():
        for name, counts in days.items():
            day = into.setdefault(app_id, {}).setdefault(name, {})
            for key, value in counts.items():
                day[key] = combine(day.get(key, 0), value)


def read_peaks(value: object) -> Peaks:
    """Peaks as :func:`add_peaks` made them, read back from JSON; anything else is no peaks."""
    if not isinstance(value, dict):
        return {}
    peaks: Peaks = {}
    for app_id, days in value.items():
        if not isinstance(days, dict):
            return {}
        for name, counts in days.items():
            if not isinstance(counts, dict) or not all(k in _PEAKS and _is_count(v) for k, v in counts.items()):
                return {}
            peaks.setdefault(str(app_id), {})[str(name)] = dict(counts)
    return peaks

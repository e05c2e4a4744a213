"""The usage file: what the emulator's usage meter measured, per app and per UTC day, as `relay cost --usage` reads it.

Format (JSON, version 2)::

    {
      "version": 2,
      "generated_by": "relay emulator 0.1.0",          # optional
      "apps": {
        "<app_id>": {
          "unique_users": 120,                         # optional: distinct user ids over the whole file (MAU)
          "users_sketch": "eNrtwTEB…",                # optional: those users, as a sketch the emulator merges
          "days": {
            "2026-11-29": {                            # a UTC date
              "peak_connections": 50,                  # most connections open at once that day
              "peak_channels": 12,                     # most channels active at once (as Ably counts them)
              "connection_minutes": 61200,             # Σ minutes each connection was open, rounded up per connection
              "channel_minutes": 14400,                # Σ minutes each channel was active, rounded up per channel
              "publishes": 1000,                       # events published through the HTTP API, one per channel
              "http_publishes": 900,                   # optional: those of them that came in an HTTP request (not
                                                       # over an Ably realtime connection)
              "http_publish_requests": 300,            # optional: the HTTP requests that published them (a trigger
                                                       # to several channels, a batch: one request)
              "deliveries": 49000,                     # those events written to subscribers
              "client_events": 20,                     # client events received from connections
              "client_event_deliveries": 380,          # client events written to the other subscribers
              "presence_events": 30,                   # members added + removed (user-level transitions)
              "presence_deliveries": 600,              # pusher_internal:member_added/removed frames written
              "webhooks": 12,                          # webhook requests sent
              "api_requests": 5,                       # other HTTP API calls (channel info, users, terminate)
              "ably_api_requests": 8,                  # optional: Ably REST requests but publishes and token
                                                       # requests (history, presence, channel status)
              "ably_token_requests": 40,               # optional: Ably token requests (requestToken)
              "payload_bytes": 250000,                 # Σ bytes of publishes + client events (name, data,
                                                       # client id, extras: as Ably sizes a message)
              "bytes_out": 9800000,                    # Σ bytes written to WebSocket connections (frames and
                                                       # echoes included)
              "peak_publishes_per_second": 40,         # optional: most publishes + client events in one second
              "peak_presence_members": 25,             # optional: most members one presence channel held at once
              "units_5kib": 1020,                      # optional: Σ ceil(message bytes / 5 KiB) over those messages
              "units_2kib": 1020,                      # optional: Σ ceil(message bytes / 2 KiB)
              "delivered_units_5kib": 50000,           # optional: Σ ceil(message bytes / 5 KiB) × recipients
              "history_messages": 300,                 # optional: messages read from Ably's history, presence
                                                       # queries' members and rewinds' backlogs
              "echo_deliveries": 40,                   # optional: Ably publishes sent back to the connection that
                                                       # published them (echo), not among the deliveries
              "metachannel_messages": 8,               # optional: Ably's own messages ([meta]channel.lifecycle
                                                       # events), each sent and each delivered, in 5 KiB units;
                                                       # not among the publishes and deliveries
              "measured": [[0, 86400]]                 # optional: when the meter was measuring, [from, to) in
                                                       # seconds after 00:00 UTC (absent: not recorded)
            }
          }
        }
      }
    }

Version 1 is the same without ``measured`` (the meter did not record the time it measured): its days are taken as
measured in full. A day of a version 2 file may lack it too, where its counts were added to a version 1 file's.

The file is UTF-8 (a byte order mark is allowed). Every count is a whole number from 0 to 10**18. The loader is
strict: an unknown or missing field, a wrong type, a bad date, a key given twice (JSON would keep only the last) or
counts that contradict each other (minutes without a peak; more 5 KiB units than the bytes allow, or fewer than the
messages or deliveries; a busiest second with more messages than the day, or with none on a day with some) are errors
naming the app, the day and the field. Deliveries without publishes are checked over each app's days summed, not
day by day: a cluster's nodes count a publish where it was received and its deliveries where they were made, so a
day can hold deliveries of publishes a killed node never wrote.

`relay cost` reads a day measured in part as a whole day at the rate measured: the average day is each app's counts
÷ the days (in seconds ÷ 86,400) it measured, its peaks as measured. ``history_messages`` is each app's over the days
that have it (older emulators served history reads without counting them), and 0 for an app with none;
``ably_api_requests`` and ``ably_token_requests`` likewise (older emulators served those requests without counting
them).
``echo_deliveries`` is 0 on a day without it (older emulators counted the echoes among the deliveries), and not
measured at all (none billed apart) when no day has it. ``metachannel_messages`` is 0 on a day without it (older
emulators counted them among the publishes and deliveries, as every provider's). ``http_publishes`` is the day's
``publishes`` on a day without it (older emulators did not tell an Ably realtime publish from an HTTP one): each
publish an HTTP API request, the upper bound of Ably's request count. ``http_publish_requests`` is the day's
``http_publishes`` (or ``publishes``) on a day without it (older emulators did not count the requests): each HTTP
publish a request of its own, an upper bound again.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from relay.errors import ConfigError, DuplicateKey, parser_limits, unique_keys
from relay.files import read_text

from .models import (
    MAX_PEAK_FACTOR,
    MAX_QUANTITY,
    MINUTES_PER_DAY,
    SECONDS_PER_DAY,
    Workload,
    duration_text,
    field_bound,
    shown_number,
)

__all__ = [
    "USAGE_VERSION",
    "Usage",
    "UsageApp",
    "UsageDay",
    "load_usage",
    "parse_usage",
    "short_measurement",
    "workload_from_usage",
]

USAGE_VERSION = 2  # version 2 added "measured"; version 1 files are still read
_READABLE_VERSIONS = (1, USAGE_VERSION)
# Less than this measured in all, the daily figures are extrapolated from too little to be more than a guess.
SHORT_MEASUREMENT = 3600


@dataclass(frozen=True)
class UsageDay:
    """One app's usage on one UTC day (see the module docstring for each field)."""

    peak_connections: int
    peak_channels: int
    connection_minutes: int
    channel_minutes: int
    publishes: int
    deliveries: int
    client_events: int
    client_event_deliveries: int
    presence_events: int
    presence_deliveries: int
    webhooks: int
    api_requests: int
    payload_bytes: int
    bytes_out: int
    http_publishes: int | None = None
    http_publish_requests: int | None = None
    ably_api_requests: int | None = None
    ably_token_requests: int | None = None
    peak_publishes_per_second: int | None = None
    peak_presence_members: int | None = None
    units_5kib: int | None = None
    units_2kib: int | None = None
    delivered_units_5kib: int | None = None
    history_messages: int | None = None
    echo_deliveries: int | None = None
    metachannel_messages: int | None = None
    measured: tuple[tuple[int, int], ...] | None = None  # None: not recorded (version 1), taken as the whole day

    @property
    def measured_seconds(self) -> int:
        """Seconds of the day measured: the whole day when the file does not say."""
        if self.measured is None:
            return SECONDS_PER_DAY
        return sum(end - start for start, end in self.measured)

    @property
    def messages(self) -> int:
        """Messages with a payload: publishes and client events."""
        return self.publishes + self.client_events

    @property
    def pusher_messages(self) -> int:
        """What Pusher would count for this day (every API call and every delivery)."""
        return sum(getattr(self, name) for name in _PUSHER_COUNTS)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {key: value for key, value in asdict(self).items() if value is not None}
        if self.measured is not None:
            values["measured"] = [list(span) for span in self.measured]
        return values


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPTIONAL = (
    "http_publishes",
    "http_publish_requests",
    "ably_api_requests",
    "ably_token_requests",
    "peak_publishes_per_second",
    "peak_presence_members",
    "units_5kib",
    "units_2kib",
    "delivered_units_5kib",
    "history_messages",
    "echo_deliveries",
    "metachannel_messages",
)
_REQUIRED = tuple(f.name for f in fields(UsageDay) if f.name not in (*_OPTIONAL, "measured"))
# The fields a day counts in: summed, and extrapolated from a day measured in part (the peaks are neither).
_COUNTED = tuple(
    f.name
    for f in fields(UsageDay)
    if f.name
    not in ("peak_connections", "peak_channels", "peak_publishes_per_second", "peak_presence_members", "measured")
)
# What Pusher counts (`UsageDay.pusher_messages`): every API call and every delivery.
_PUSHER_COUNTS = (
    "publishes",
    "deliveries",
    "client_events",
    "client_event_deliveries",
    "presence_deliveries",
    "webhooks",
    "api_requests",
)
# Minutes, and the peak that bounds what a whole day of them can be (rounding aside).
_MINUTE_PEAKS = {"connection_minutes": "peak_connections", "channel_minutes": "peak_channels"}
# (count, what it counts deliveries of): deliveries need something delivered.
_PAIRS = (
    ("deliveries", "publishes"),
    ("echo_deliveries", "publishes"),
    ("client_event_deliveries", "client_events"),
    ("presence_deliveries", "presence_events"),
)


@dataclass(frozen=True)
class UsageApp:
    days: Mapping[str, UsageDay]
    unique_users: int | None = None
    # The users as the emulator's usage files merge them (its emulator/user_sketch.py); carried, not read here.
    users_sketch: str | None = None


@dataclass(frozen=True)
class Usage:
    apps: Mapping[str, UsageApp]
    version: int = USAGE_VERSION
    generated_by: str = ""
    origin: str = "usage file"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document for this usage (what the meter writes)."""
        apps: dict[str, Any] = {}
        for app_id, app in self.apps.items():
            entry: dict[str, Any] = {"days": {day: usage.to_dict() for day, usage in sorted(app.days.items())}}
            if app.unique_users is not None:
                entry["unique_users"] = app.unique_users
            if app.users_sketch is not None:
                entry["users_sketch"] = app.users_sketch
            apps[app_id] = entry
        document: dict[str, Any] = {"version": self.version}
        if self.generated_by:
            document["generated_by"] = self.generated_by
        document["apps"] = apps
        return document


def load_usage(path: str | Path) -> Usage:
    path = Path(path)
    text = read_text(path, "usage file")
    with parser_limits("usage file", str(path)):
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            raise ConfigError(
                f"usage file {path}: {exc}; JSON would silently keep only the last one, so merge them"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"usage file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
    return parse_usage(data, origin=str(path))


def parse_usage(data: object, *, origin: str = "usage file") -> Usage:
    """Check a parsed usage document and build `Usage`; raise `ConfigError` naming the first bad field."""

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"usage file {origin}: {where}: {message}" if where else f"usage file {origin}: {message}")

    if not isinstance(data, dict):
        raise fail("", f"must be a JSON object, got {type(data).__name__}")
    if _is_summary(data):
        raise fail(
            "",
            "this is the summary GET /usage?summary=1 returns, not a usage file: use GET /usage (without summary=1) "
            "or the file relay emulator --usage-file writes",
        )
    if set(data) == {"error"} and isinstance(data["error"], str):  # GET /usage refused (no console token), saved
        raise fail("", f"this is an error answer, not a usage file: {data['error']!r}")
    _no_unknown(data, {"version", "generated_by", "apps"}, "", fail)
    version = data.get("version")
    if type(version) is not int or version not in _READABLE_VERSIONS:  # not true, nor 2.0
        raise fail("", f"field 'version' must be {' or '.join(map(str, _READABLE_VERSIONS))}, got {version!r}")
    generated_by = data.get("generated_by", "")
    if not isinstance(generated_by, str):
        raise fail("", f"field 'generated_by' must be a string, got {generated_by!r}")
    apps_raw = data.get("apps")
    if not isinstance(apps_raw, dict) or not apps_raw:
        raise fail("", "field 'apps' must be an object with at least one app")
    apps: dict[str, UsageApp] = {}
    for app_id, app_raw in apps_raw.items():
        where = f"apps.{app_id}"
        if not app_id.strip():  # the emulator writes an app's id, which is never blank: "app , 2 days" otherwise
            raise fail("apps", f"an app's id must not be blank, got {app_id!r}")
        if not isinstance(app_raw, dict):
            raise fail(where, f"must be an object, got {type(app_raw).__name__}")
        _no_unknown(app_raw, {"days", "unique_users", "users_sketch"}, where, fail)
        unique = app_raw.get("unique_users")
        if unique is not None:
            _check_count(unique, "unique_users", where, fail)
        sketch = app_raw.get("users_sketch")
        if sketch is not None and (not isinstance(sketch, str) or unique is None):
            raise fail(where, "field 'users_sketch' must be a string, beside unique_users, as the emulator writes it")
        days_raw = app_raw.get("days")
        if not isinstance(days_raw, dict) or not days_raw:
            raise fail(where, "field 'days' must be an object with at least one UTC date (YYYY-MM-DD)")
        days: dict[str, UsageDay] = {}
        for day, day_raw in days_raw.items():
            day_where = f"{where}.days.{day}"
            if not _DAY.fullmatch(day):  # fromisoformat alone also takes week dates such as 2026-W48-1
                raise fail(day_where, "a day is a UTC date YYYY-MM-DD")
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                raise fail(day_where, "a day is a UTC date YYYY-MM-DD") from None
            days[day] = _day(day_raw, day_where, version, fail)
        _check_deliveries_have_what_they_deliver(days, where, fail)
        apps[str(app_id)] = UsageApp(days=days, unique_users=unique, users_sketch=sketch)
    return Usage(apps=apps, version=version, generated_by=generated_by, origin=origin)


def _is_summary(data: Mapping[str, Any]) -> bool:
    """Whether ``data`` has the shape of ``GET /usage?summary=1``: app id → UTC date → counts, and nothing else."""
    return bool(data) and all(
        isinstance(days, dict)
        and days
        and all(isinstance(day, dict) and _DAY.fullmatch(name) for name, day in days.items())
        for days in data.values()
    )


def _check_count(value: object, name: str, where: str, fail: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(where, f"field {name!r} must be a whole number ≥ 0, got {value!r}")
    if value > MAX_QUANTITY:
        raise fail(where, f"field {name!r} is {shown_number(value)}, more than the most a usage file counts (10**18)")


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str, fail: Any) -> None:
    for key in raw:
        if key not in allowed:
            raise fail(where, f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")


def _day(raw: object, where: str, version: int, fail: Any) -> UsageDay:
    if not isinstance(raw, dict):
        raise fail(where, f"must be an object, got {type(raw).__name__}")
    if "measured" in raw and version < USAGE_VERSION:
        raise fail(where, f"field 'measured' is new in version {USAGE_VERSION}, but the file says version {version}")
    _no_unknown(raw, {*_REQUIRED, *_OPTIONAL, "measured"}, where, fail)
    values: dict[str, int | None] = {}
    for name in _REQUIRED:
        if name not in raw:
            raise fail(where, f"missing required field {name!r}")
    for name in (*_REQUIRED, *_OPTIONAL):
        if name not in raw:
            continue
        value = raw[name]
        _check_count(value, name, where, fail)
        values[name] = value
    measured = _measured(raw["measured"], where, fail) if "measured" in raw else None
    day = UsageDay(**values, measured=measured)  # type: ignore[arg-type]
    for minutes, peak in _MINUTE_PEAKS.items():
        # A minute is counted for a connection (or channel) that was open, which makes the day's peak at least 1.
        # No upper bound holds: minutes are rounded up per connection, so short ones, one after another, may add up
        # to more than the peak held all day.
        if getattr(day, minutes) and not getattr(day, peak):
            raise fail(
                where,
                f"field {minutes!r} is {getattr(day, minutes)} but {peak!r} is 0: a minute counted is a minute "
                "something was open",
            )
    if day.payload_bytes and not day.messages:
        raise fail(where, "field 'payload_bytes' is not 0 but there are no publishes or client events")
    if day.http_publishes is not None and day.http_publishes > day.publishes:
        raise fail(
            where,
            f"field 'http_publishes' is {day.http_publishes}, more than the day's {day.publishes} publishes (it "
            "counts those of them that came in an HTTP request)",
        )
    for name, kib in (("units_5kib", 5), ("units_2kib", 2)):
        units = getattr(day, name)
        if units is None:
            continue
        # Σ ceil(size/K) over the messages lies between max(messages, ceil(Σ size/K)) and messages + floor(Σ size/K).
        unit = kib * 1024
        smallest = max(day.messages, -(-day.payload_bytes // unit))
        largest = day.messages + day.payload_bytes // unit
        if not smallest <= units <= largest:
            raise fail(
                where,
                f"field {name!r} is {units}, but {day.messages} messages of {day.payload_bytes} bytes in all make "
                f"between {smallest} and {largest} units of {kib} KiB",
            )
    _check_delivered_units(day, where, fail)
    _check_peak_second(day, where, fail)
    return day


def _measured(raw: object, where: str, fail: Any) -> tuple[tuple[int, int], ...]:
    """A day's ``measured``: spans [from, to) of whole seconds after 00:00 UTC, in order and apart."""
    if not isinstance(raw, list) or not raw:
        raise fail(
            where, f"field 'measured' must be a list of [from, to] pairs of seconds after 00:00 UTC, got {raw!r}"
        )
    spans: list[tuple[int, int]] = []
    for span in raw:
        whole = isinstance(span, list) and len(span) == 2 and all(type(second) is int for second in span)
        if not whole or not 0 <= span[0] < span[1] <= SECONDS_PER_DAY:
            raise fail(where, f"field 'measured' has {span!r}: from and to must be 0 ≤ from < to ≤ {SECONDS_PER_DAY}")
        if spans and span[0] < spans[-1][1]:
            raise fail(
                where, f"field 'measured' has {span!r} after {list(spans[-1])!r}: the spans must be in order, apart"
            )
        spans.append((span[0], span[1]))
    return tuple(spans)


def _check_delivered_units(day: UsageDay, where: str, fail: Any) -> None:
    """``delivered_units_5kib`` against the deliveries it counts: the meter adds ceil(size ÷ 5 KiB), at least 1, times
    the connections reached, so each delivery is at least one unit.

    No upper bound from the bytes published holds: a cluster's nodes count a message's bytes where it was received and
    its delivered units where they were written, so a node killed between checkpoints leaves deliveries of large
    messages whose bytes no node wrote.
    """
    delivered = day.delivered_units_5kib
    if delivered is None:
        return
    deliveries = day.deliveries + day.client_event_deliveries
    if not deliveries and delivered:
        raise fail(
            where,
            f"field 'delivered_units_5kib' is {delivered} but there are no deliveries ('deliveries' and "
            "'client_event_deliveries' are 0)",
        )
    if delivered < deliveries:
        raise fail(
            where,
            f"field 'delivered_units_5kib' is {delivered}, fewer than the {deliveries} deliveries and client event "
            "deliveries (each delivery is at least one unit of 5 KiB)",
        )


def _check_deliveries_have_what_they_deliver(days: Mapping[str, UsageDay], where: str, fail: Any) -> None:
    """Deliveries (of client events, of presence changes) need publishes (client events, presence changes) to
    deliver, over the app's days summed.

    Not day by day: a cluster's nodes count a message where it was received and its deliveries where they were
    written, so a node killed between checkpoints loses its publishes since the last one while the other nodes keep
    their deliveries of them, and a publish seconds before midnight can be delivered by a node whose clock has passed
    it. A day of the shared file can so hold deliveries of publishes no node counted; the days summed cannot, unless
    every one was lost. With one day the error names it.
    """
    where = f"{where}.days.{next(iter(days))}" if len(days) == 1 else f"{where}, its {len(days)} days summed"
    for deliveries, sent in _PAIRS:
        delivered = sum(getattr(day, deliveries) or 0 for day in days.values())  # echo_deliveries may be absent
        if delivered and not any(getattr(day, sent) for day in days.values()):
            raise fail(where, f"field {deliveries!r} is {delivered} but {sent!r} is 0")


def _check_peak_second(day: UsageDay, where: str, fail: Any) -> None:
    """``peak_publishes_per_second`` is the most publishes and client events in one second: at most the day's, and
    at least 1 on a day with any. (Not at least the day's ÷ 86,400: a run that started after the file's last writer
    stopped keeps the larger of the two peaks, not their sum.)"""
    peak = day.peak_publishes_per_second
    if peak is None:
        return
    if peak > day.messages:
        raise fail(
            where,
            f"field 'peak_publishes_per_second' is {peak}, more than the day's {day.messages} publishes and client "
            "events",
        )
    if peak == 0 and day.messages:
        raise fail(
            where,
            f"field 'peak_publishes_per_second' is 0, but the day has {day.messages} publishes and client events: "
            "its busiest second has at least 1",
        )


def workload_from_usage(
    usage: Usage,
    *,
    app: str | None = None,
    days_per_month: float = 30.0,
    echo: bool = True,
    mau: int | None = None,
) -> Workload:
    """The average measured day as a `Workload` (all apps summed, as Pusher counts per account, unless ``app``).

    Each app's average day is its counts over the time it measured: Σ counts × 86,400 ÷ Σ seconds measured (a day
    the file does not say of counts as a whole day), so a day measured in part weighs for the part it was measured,
    at the rate it was. Peaks are as measured; the busiest day is the busiest measured for 23 h or more (a part of a
    day says nothing of a whole one). Peak connections and channels of several apps are summed per day: an upper
    bound of their true combined peak. The users the file saw (``unique_users``) are the MAU when it measured a
    month (``days_per_month`` days of 23 h or more); over less, ``users_seen``, a lower bound of the MAU.
    """
    apps = _selected(usage, app)
    average, capped = _average_day(apps)
    dates = sorted({name for entry in apps.values() for name in entry.days})
    n = len(dates)

    def ratio(numerator: str, denominator: str) -> float:
        below = average[denominator] or 0.0
        return (average[numerator] or 0.0) / below if below else 0.0

    messages = (average["publishes"] or 0.0) + (average["client_events"] or 0.0)
    mean_pusher = sum(average[name] or 0.0 for name in _PUSHER_COUNTS)
    days_standing_for_whole = _days_standing_for_whole(apps)
    busiest_day = max(days_standing_for_whole.values(), default=None)
    peak_day_factor = max(1.0, busiest_day / mean_pusher) if busiest_day is not None and mean_pusher else 1.0
    peak_factor = 1.0
    busiest, peak_note = _busiest_second(apps)
    if messages and busiest is not None:
        peak_factor = max(1.0, busiest * SECONDS_PER_DAY / (messages * peak_day_factor))
        if peak_factor > MAX_PEAK_FACTOR:
            # A day holds at least its busiest second: a burst on a day measured in part (no candidate for the
            # busiest day) can carry more than the busiest whole day, which is then taken as at least that burst.
            peak_day_factor *= peak_factor / MAX_PEAK_FACTOR
            peak_factor = MAX_PEAK_FACTOR

    def units(name: str) -> float | None:
        value = average[name]
        if not messages or value is None:
            return None
        return max(1.0, value / messages)

    def delivery_units() -> float | None:
        """Average 5 KiB units per delivery, weighted by each message's recipients (Ably bills each delivery)."""
        delivered = (average["deliveries"] or 0.0) + (average["client_event_deliveries"] or 0.0)
        value = average["delivered_units_5kib"]
        if not delivered or value is None:
            return None
        return max(1.0, value / delivered)

    def summed_peak(name: str) -> int:
        per_day: list[int] = [
            sum(getattr(entry.days[day], name) for entry in apps.values() if day in entry.days) for day in dates
        ]
        return max(per_day)

    users = [entry.unique_users for entry in apps.values()]
    connected = any(d.peak_connections > 0 for entry in apps.values() for d in entry.days.values())
    # The meter learns user ids from sign-ins and presence only: none seen while clients connected means unknown
    # (the estimate's fallback applies), not zero monthly active users.
    seen = sum(u or 0 for u in users)
    users_seen: int | None = None
    seconds = sum(_measured_by_day(apps).values())
    if mau is None and all(u is not None for u in users) and (seen > 0 or not connected):
        users_seen = seen
        # Users seen over a month are its MAU; over less, a month has more users than were seen: a lower bound.
        if seconds >= days_per_month * MOSTLY_MEASURED:
            mau = seen
    span = dates[0] if n == 1 else f"{dates[0]} to {dates[-1]}"
    names = ", ".join(apps)
    coverage_note = _coverage_note(apps, capped, no_day_standing_for_whole=n > 1 and not days_standing_for_whole)
    values: dict[str, Any] = dict(
        connections=summed_peak("peak_connections"),
        publishes_per_day=average["publishes"] or 0.0,
        http_publishes_per_day=average["http_publishes"] or 0.0,
        # None without a day that counted them: one request per HTTP publish, as for a described workload
        http_publish_requests_per_day=(
            average["http_publish_requests"] if _recorded(apps, "http_publish_requests") else None
        ),
        subscribers_per_publish=ratio("deliveries", "publishes"),
        client_events_per_day=average["client_events"] or 0.0,
        client_event_recipients=ratio("client_event_deliveries", "client_events"),
        presence_events_per_day=average["presence_events"] or 0.0,
        presence_subscribers=ratio("presence_deliveries", "presence_events"),
        presence_members=_largest(apps, "peak_presence_members"),
        webhooks_per_day=average["webhooks"] or 0.0,
        history_messages_per_day=average["history_messages"] or 0.0,
        echo_deliveries_per_day=average["echo_deliveries"],
        metachannel_messages_per_day=average["metachannel_messages"] or 0.0,
        api_requests_per_day=average["api_requests"] or 0.0,
        ably_api_requests_per_day=average["ably_api_requests"] or 0.0,
        ably_token_requests_per_day=average["ably_token_requests"] or 0.0,
        message_bytes=(average["payload_bytes"] or 0.0) / messages if messages else 0.0,
        days_per_month=days_per_month,
        peak_day_factor=peak_day_factor,
        peak_factor=peak_factor,
        channels=summed_peak("peak_channels"),
        connection_minutes_per_day=average["connection_minutes"] or 0.0,
        channel_minutes_per_day=average["channel_minutes"] or 0.0,
        bytes_out_per_day=average["bytes_out"] or 0.0,
        size_units_5kib=units("units_5kib"),
        delivery_units_5kib=delivery_units(),
        size_units_2kib=units("units_2kib"),
        mau=mau,
        users_seen=users_seen,
        users_seen_seconds=None if users_seen is None else seconds,
    )
    # A count the file makes too large is refused naming the file's field (Workload would name a flag never given).
    _check_within_bounds(values, usage.origin, seconds, len(apps), mau_measured=users_seen is not None)
    return Workload(
        **values,
        echo=echo,
        origin=f"measured: {usage.origin}, app{'s' if len(apps) > 1 else ''} {names}, {n} day{'s' if n > 1 else ''} "
        f"({span}){coverage_note}{peak_note}{_unrecorded_note(apps)}",
    )


# The usage file's fields each workload field comes from: one, a count (per day, extrapolated from the time measured)
# or a peak; or two, the first over the second (a fan-out or an average per message).
_MESSAGES = "'publishes' + 'client_events'"
_SOURCES: Mapping[str, tuple[str, ...]] = {
    "connections": ("peak_connections",),
    "channels": ("peak_channels",),
    "publishes_per_day": ("publishes",),
    "http_publishes_per_day": ("http_publishes",),
    "http_publish_requests_per_day": ("http_publish_requests",),
    "subscribers_per_publish": ("deliveries", "'publishes'"),
    "client_events_per_day": ("client_events",),
    "client_event_recipients": ("client_event_deliveries", "'client_events'"),
    "presence_events_per_day": ("presence_events",),
    "presence_subscribers": ("presence_deliveries", "'presence_events'"),
    "presence_members": ("peak_presence_members",),
    "webhooks_per_day": ("webhooks",),
    "history_messages_per_day": ("history_messages",),
    "echo_deliveries_per_day": ("echo_deliveries",),
    "metachannel_messages_per_day": ("metachannel_messages",),
    "api_requests_per_day": ("api_requests",),
    "ably_api_requests_per_day": ("ably_api_requests",),
    "ably_token_requests_per_day": ("ably_token_requests",),
    "message_bytes": ("payload_bytes", _MESSAGES),
    "connection_minutes_per_day": ("connection_minutes",),
    "channel_minutes_per_day": ("channel_minutes",),
    "bytes_out_per_day": ("bytes_out",),
    "size_units_5kib": ("units_5kib", _MESSAGES),
    "size_units_2kib": ("units_2kib", _MESSAGES),
    "delivery_units_5kib": ("delivered_units_5kib", "'deliveries' + 'client_event_deliveries'"),
    "mau": ("unique_users",),
    "users_seen": ("unique_users",),
}


def _check_within_bounds(
    values: Mapping[str, Any], origin: str, seconds: int, apps: int, *, mau_measured: bool
) -> None:
    """Refuse a workload value of the usage file beyond what the cost model takes (`field_bound`), naming the file's
    field and how the value came from it: extrapolated from a few seconds measured, or several apps summed, a count
    within the bound makes one beyond it. (A --mau given is the flag's, refused by `Workload` naming it.)"""
    summed = ", the apps summed" if apps > 1 else ""
    for name, value in values.items():
        if value is None or value <= field_bound(name) or (name == "mau" and not mau_measured):
            continue
        field, *over = _SOURCES.get(name, (name,))
        if over:
            what = f"field {field!r} over {over[0]} comes to {value:.3g}"
        elif name in ("connections", "channels"):
            what = f"field {field!r} comes to {value:.3g} (the apps' peaks summed on a day)"
        elif name in ("mau", "users_seen"):
            what = f"field {field!r} comes to {value:.3g} (the apps' users summed)"
        else:
            measured = duration_text(seconds)
            what = f"field {field!r} comes to {value:.3g} a day (extrapolated from the {measured} measured{summed})"
        raise ConfigError(
            f"usage file {origin}: {what}, more than {field_bound(name):.3g}, the largest number the cost model takes"
        )


def short_measurement(usage: Usage, app: str | None = None) -> str | None:
    """A warning when the file (``app`` of it) measured less than an hour in all: its daily figures are a guess.
    None otherwise."""
    seconds = sum(_measured_by_day(_selected(usage, app)).values())
    if seconds >= SHORT_MEASUREMENT:
        return None
    return (
        f"less than an hour measured ({duration_text(seconds)}): every daily figure is extrapolated from it and is a "
        "guess; measure for an hour or more (a whole day is best)"
    )


def _selected(usage: Usage, app: str | None) -> dict[str, UsageApp]:
    if app is None:
        return dict(usage.apps)
    if app not in usage.apps:
        known = ", ".join(sorted(usage.apps))
        raise ConfigError(f"usage file {usage.origin}: no app {app!r} (--app); it has: {known}")
    return {app: usage.apps[app]}


CAP_WORTH_SAYING = 1.01  # the minutes' cap is said when it takes off more than 1 % (a few seconds out of a day do not)


# Counts an older emulator did not meter, though it served what they count (REST presence and history queries, and
# Ably's other REST requests and token requests): an app-day without one (written by such an emulator, or a day such
# a run shared with a newer one, which merging leaves without) recorded nothing, which is not 0. The app's days that
# have the count give its rate, for all of them.
_AT_THE_RATE_RECORDED = frozenset({"history_messages", "ably_api_requests", "ably_token_requests"})
# Counts an older emulator kept among another count: an app-day without one holds them there (an older emulator wrote
# its Ably echoes among its deliveries), so it adds none apart, while the days that have it keep theirs. (A day a
# newer run shared with an older one, which merging leaves without, loses the newer run's: a lower bound.) None when
# no app-day has it: the file is an older emulator's, all its echoes among the deliveries.
_NONE_APART_WHEN_ABSENT = frozenset({"echo_deliveries", "metachannel_messages"})
# Counts an older emulator did not keep, with the counts that stand for them on an app-day without one (an older
# emulator's, or a day merged with one of theirs): the first such a day has, each an upper bound. Every publish of
# such a day is taken as an HTTP API request, though some may have come over an Ably realtime connection, and each
# HTTP publish as a request of its own, though a trigger to several channels, or a batch, is one.
_WHOLE_WHEN_ABSENT: Mapping[str, tuple[str, ...]] = {
    "http_publishes": ("publishes",),
    "http_publish_requests": ("http_publishes", "publishes"),
}


def _average_day(apps: Mapping[str, UsageApp]) -> tuple[dict[str, float | None], bool]:
    """The apps' average day, summed: each app's counts × 86,400 ÷ the seconds it measured (None for a field some
    app-day lacks; for those of _AT_THE_RATE_RECORDED, the days that have it over the seconds they measured, and 0
    for an app none of whose days has it; for those of _NONE_APART_WHEN_ABSENT, a day without it as 0, and None when
    no app-day has it; for those of _WHOLE_WHEN_ABSENT, a day without it as the whole it is part of), and whether the
    minutes were held down to the peaks held all day.

    Minutes are rounded up per connection (and channel), so a few seconds measured would extrapolate to more minutes
    than the peak open all day makes: the minutes are taken at most as that, unless the days as measured already have
    more (many short connections, each rounded up, which a provider bills so).
    """
    average: dict[str, float | None] = dict.fromkeys(_COUNTED, 0.0)
    capped = False
    for entry in apps.values():
        days = entry.days.values()
        measured_days = sum(day.measured_seconds for day in days) / SECONDS_PER_DAY
        for name in _COUNTED:
            so_far = average[name]
            if so_far is None:
                continue
            if name in _AT_THE_RATE_RECORDED:
                average[name] = so_far + _rate_recorded(days, name)
                continue
            values = [getattr(day, name) for day in days]
            if name in _NONE_APART_WHEN_ABSENT:
                values = [value or 0 for value in values]
            standing_for = _WHOLE_WHEN_ABSENT.get(name)
            if standing_for is not None:
                values = [
                    _first_recorded(day, standing_for) if value is None else value
                    for value, day in zip(values, days, strict=True)
                ]
            if any(value is None for value in values):
                average[name] = None
                continue
            per_day = sum(values) / measured_days
            if name in _MINUTE_PEAKS:
                peak = max(getattr(day, _MINUTE_PEAKS[name]) for day in days)
                ceiling = max(peak * MINUTES_PER_DAY, sum(values) / len(days))
                capped = capped or per_day > ceiling * CAP_WORTH_SAYING
                per_day = min(per_day, ceiling)
            average[name] = so_far + per_day
    for name in _NONE_APART_WHEN_ABSENT:
        if not _recorded(apps, name):
            average[name] = None
    return average, capped


def _first_recorded(day: UsageDay, names: Sequence[str]) -> int | None:
    return next((value for value in (getattr(day, name) for name in names) if value is not None), None)


def _largest(apps: Mapping[str, UsageApp], name: str) -> int | None:
    """The largest ``name`` of any app-day (a limit per channel: apps are not summed), None where none has it."""
    values = (getattr(day, name) for entry in apps.values() for day in entry.days.values())
    return max((value for value in values if value is not None), default=None)


def _recorded(apps: Mapping[str, UsageApp], name: str) -> bool:
    """Whether any app-day has the count ``name``."""
    return any(getattr(day, name) is not None for entry in apps.values() for day in entry.days.values())


def _rate_recorded(days: Collection[UsageDay], name: str) -> float:
    """``name`` per day over the days that record it: their count × 86,400 ÷ the seconds they measured (0 if none)."""
    recorded = [day for day in days if getattr(day, name) is not None]
    seconds = sum(day.measured_seconds for day in recorded)
    return sum(getattr(day, name) for day in recorded) * SECONDS_PER_DAY / seconds if seconds else 0.0


# What the workload's origin says of the app-days without a count that some have (a file with none says nothing).
_UNRECORDED_TEXT: Mapping[str, str] = {
    **dict.fromkeys(
        _AT_THE_RATE_RECORDED,
        "(older emulators do not count it): the others are taken at their app's rate on the days that record it",
    ),
    **dict.fromkeys(
        _NONE_APART_WHEN_ABSENT,
        "(older emulators count the echoes among the deliveries): the others add none apart",
    ),
    "http_publishes": "(older emulators do not tell an Ably realtime publish from an HTTP one): the others' "
    "publishes are all taken as HTTP API requests, an upper bound",
    "http_publish_requests": "(older emulators do not count the requests that published): the others' HTTP "
    "publishes are each taken as a request of its own, an upper bound",
}


def _unrecorded_note(apps: Mapping[str, UsageApp]) -> str:
    """Which app-days lack a count some have: one taken at the rate recorded, or one none apart stands for."""
    days = [day for entry in apps.values() for day in entry.days.values()]
    note = ""
    for name, text in sorted(_UNRECORDED_TEXT.items()):
        recorded = sum(getattr(day, name) is not None for day in days)
        if 0 < recorded < len(days):
            note += f"; {name} recorded on {recorded} of the {len(days)} app-days {text}"
    return note


# A day measured this long stands for a whole one as a candidate for the busiest day (extrapolated to 24 h): a restart
# or a crash recovered from its checkpoint leaves seconds to a minute out, every day of a deployment that has them.
MOSTLY_MEASURED = 23 * 3600


def _days_standing_for_whole(apps: Mapping[str, UsageApp]) -> dict[str, float]:
    """Pusher's count of the apps on each day every one of them measured for MOSTLY_MEASURED seconds or more (or
    does not say), each app's extrapolated to a whole day."""
    counts: dict[str, float] = {}
    partial: set[str] = set()
    for entry in apps.values():
        for name, day in entry.days.items():
            seconds = day.measured_seconds
            counts[name] = counts.get(name, 0.0) + day.pusher_messages * SECONDS_PER_DAY / seconds
            if seconds < MOSTLY_MEASURED:
                partial.add(name)
    return {name: count for name, count in counts.items() if name not in partial}


def _measured_by_day(apps: Mapping[str, UsageApp]) -> dict[str, int]:
    """Seconds of each day that any of the apps measured (a day one of them does not say of: the whole day)."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for entry in apps.values():
        for name, day in entry.days.items():
            spans.setdefault(name, []).extend(day.measured or ((0, SECONDS_PER_DAY),))
    measured: dict[str, int] = {}
    for name, found in spans.items():
        seconds = end = 0
        for start, stop in sorted(found):
            seconds += max(0, stop - max(start, end))
            end = max(end, stop)
        measured[name] = seconds
    return measured


_LISTED = 5  # days measured in part the workload names, of many


def _coverage_note(apps: Mapping[str, UsageApp], capped: bool, *, no_day_standing_for_whole: bool) -> str:
    """What the workload says of the time the file measured: in all, which days in part, and what was assumed."""
    days = [day for entry in apps.values() for day in entry.days.values()]
    unrecorded = sum(day.measured is None for day in days)
    if unrecorded == len(days):
        return (
            "; the time measured is not recorded (a version 1 file, or days added to one): each day is taken as "
            "measured in full, so a day measured in part is priced low"
        )
    by_day = _measured_by_day(apps)
    partial = {name: seconds for name, seconds in by_day.items() if seconds < SECONDS_PER_DAY}
    note = f"; {duration_text(sum(by_day.values()))} measured"
    if partial:
        shown = ", ".join(f"{name}: {duration_text(seconds)}" for name, seconds in sorted(partial.items())[:_LISTED])
        more = f" and {len(partial) - _LISTED} more" if len(partial) > _LISTED else ""
        which = "the day" if len(by_day) == 1 else f"{len(partial)} of the {len(by_day)} days"
        whole = "a whole day" if len(partial) == 1 else "whole days"
        note += (
            f", {which} in part ({shown}{more}), extrapolated to {whole} at the rate measured (counts × 86,400 ÷ "
            "seconds measured; peaks as measured)"
        )
    if unrecorded:
        note += (
            f"; {unrecorded} app-day{'s' if unrecorded > 1 else ''} without a record of the time measured (added to "
            "a version 1 file) taken as measured in full"
        )
    if capped:
        note += "; connection- or channel-minutes extrapolated to at most the peak held all day"
    if no_day_standing_for_whole:
        note += "; no day measured for 23 h or more, so no busiest day: --peak-day-factor 1"
    if sum(by_day.values()) < SHORT_MEASUREMENT:
        note += "; less than an hour measured: every daily figure is a guess"
    return note


def _busiest_second(apps: Mapping[str, UsageApp]) -> tuple[float | None, str]:
    """The most publishes and client events in one second on any day (the apps' peaks summed per day, an upper bound
    like their peak connections), and what was assumed for it; None when no peak second is measured.

    An app-day with messages but no ``peak_publishes_per_second`` is assumed as bursty as the measured ones: its
    busiest second carries the share of its messages that the measured busiest seconds carry of theirs, in all.
    """
    peaks = messages = missing = busy_days = 0
    for entry in apps.values():
        for day in entry.days.values():
            if not day.messages:
                continue
            busy_days += 1
            if day.peak_publishes_per_second is None:
                missing += 1
            else:
                peaks += day.peak_publishes_per_second
                messages += day.messages
    if not messages:
        return None, ""
    share = peaks / messages
    per_day: dict[str, float] = {}
    for entry in apps.values():
        for name, day in entry.days.items():
            peak = day.peak_publishes_per_second
            per_day[name] = per_day.get(name, 0.0) + (day.messages * share if peak is None else float(peak))
    note = ""
    if missing:
        note = (
            f"; the busiest second is measured on {busy_days - missing} of the {busy_days} app-days with publishes or "
            f"client events: on the other {missing}, assumed to carry {share:.3g} of the day's messages, as the "
            "measured busiest seconds do in all"
        )
    return max(per_day.values()), note

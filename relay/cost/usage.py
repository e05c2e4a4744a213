"""The usage file: what the emulator's usage meter measured, per app and per UTC day, as `relay cost --usage` reads it.

Format (JSON, version 1)::

    {
      "version": 1,
      "generated_by": "relay emulator 0.1.0",          # optional
      "apps": {
        "<app_id>": {
          "unique_users": 120,                         # optional: distinct user ids over the whole file (MAU)
          "days": {
            "2026-11-29": {                            # a UTC date
              "peak_connections": 50,                  # most connections open at once that day
              "peak_channels": 12,                     # most channels occupied at once
              "connection_minutes": 61200,             # Σ minutes each connection was open, rounded up per connection
              "channel_minutes": 14400,                # Σ minutes each channel was occupied
              "publishes": 1000,                       # events published through the HTTP API, one per channel
              "deliveries": 49000,                     # those events written to subscribers
              "client_events": 20,                     # client events received from connections
              "client_event_deliveries": 380,          # client events written to the other subscribers
              "presence_events": 30,                   # members added + removed (user-level transitions)
              "presence_deliveries": 600,              # pusher_internal:member_added/removed frames written
              "webhooks": 12,                          # webhook requests sent
              "api_requests": 5,                       # other HTTP API calls (channel info, users, terminate)
              "payload_bytes": 250000,                 # Σ data bytes of publishes + client events
              "bytes_out": 9800000,                    # Σ bytes written to WebSocket connections (frames included)
              "peak_publishes_per_second": 40,         # optional: most publishes + client events in one second
              "units_5kib": 1020,                      # optional: Σ ceil(data bytes / 5 KiB) over those messages
              "units_2kib": 1020,                      # optional: Σ ceil(data bytes / 2 KiB)
              "delivered_units_5kib": 50000            # optional: Σ ceil(data bytes / 5 KiB) × recipients
            }
          }
        }
      }
    }

The file is UTF-8. Every count is a whole number from 0 to 10**18. The loader is strict: an unknown or missing field, a
wrong type, a bad date, a key given twice (JSON would keep only the last) or counts that contradict each other
(deliveries without publishes; more 5 KiB units than the bytes allow, or fewer than the messages or deliveries; a
busiest second with more messages than the day, or with none on a day with some) are errors naming the app, the day and
the field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from relay.errors import ConfigError

from .files import parser_limits, read_text
from .models import MAX_QUANTITY, SECONDS_PER_DAY, Workload, shown_number

__all__ = ["USAGE_VERSION", "Usage", "UsageApp", "UsageDay", "load_usage", "parse_usage", "workload_from_usage"]

USAGE_VERSION = 1


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
    peak_publishes_per_second: int | None = None
    units_5kib: int | None = None
    units_2kib: int | None = None
    delivered_units_5kib: int | None = None

    @property
    def messages(self) -> int:
        """Messages with a payload: publishes and client events."""
        return self.publishes + self.client_events

    @property
    def pusher_messages(self) -> int:
        """What Pusher would count for this day (every API call and every delivery)."""
        return (
            self.publishes
            + self.deliveries
            + self.client_events
            + self.client_event_deliveries
            + self.presence_deliveries
            + self.webhooks
            + self.api_requests
        )

    def to_dict(self) -> dict[str, int]:
        return {key: value for key, value in asdict(self).items() if value is not None}


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPTIONAL = ("peak_publishes_per_second", "units_5kib", "units_2kib", "delivered_units_5kib")
_REQUIRED = tuple(f.name for f in fields(UsageDay) if f.name not in _OPTIONAL)
# (count, what it counts deliveries of): deliveries need something delivered.
_PAIRS = (
    ("deliveries", "publishes"),
    ("client_event_deliveries", "client_events"),
    ("presence_deliveries", "presence_events"),
)


@dataclass(frozen=True)
class UsageApp:
    days: Mapping[str, UsageDay]
    unique_users: int | None = None


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
            data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKeyError as exc:
            raise ConfigError(
                f"usage file {path}: {exc.key!r} is given twice in the same object; JSON would silently keep only the "
                "last one, so merge them"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"usage file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
    return parse_usage(data, origin=str(path))


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a day (or an app, or a field) given twice is an error, not the last one winning."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKeyError(key)
        obj[key] = value
    return obj


def parse_usage(data: object, *, origin: str = "usage file") -> Usage:
    """Check a parsed usage document and build `Usage`; raise `ConfigError` naming the first bad field."""

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"usage file {origin}: {where}: {message}" if where else f"usage file {origin}: {message}")

    if not isinstance(data, dict):
        raise fail("", f"must be a JSON object, got {type(data).__name__}")
    _no_unknown(data, {"version", "generated_by", "apps"}, "", fail)
    if data.get("version") != USAGE_VERSION:
        raise fail("", f"field 'version' must be {USAGE_VERSION}, got {data.get('version')!r}")
    generated_by = data.get("generated_by", "")
    if not isinstance(generated_by, str):
        raise fail("", f"field 'generated_by' must be a string, got {generated_by!r}")
    apps_raw = data.get("apps")
    if not isinstance(apps_raw, dict) or not apps_raw:
        raise fail("", "field 'apps' must be an object with at least one app")
    apps: dict[str, UsageApp] = {}
    for app_id, app_raw in apps_raw.items():
        where = f"apps.{app_id}"
        if not isinstance(app_raw, dict):
            raise fail(where, f"must be an object, got {type(app_raw).__name__}")
        _no_unknown(app_raw, {"days", "unique_users"}, where, fail)
        unique = app_raw.get("unique_users")
        if unique is not None:
            _check_count(unique, "unique_users", where, fail)
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
            days[day] = _day(day_raw, day_where, fail)
        apps[str(app_id)] = UsageApp(days=days, unique_users=unique)
    return Usage(apps=apps, version=USAGE_VERSION, generated_by=generated_by, origin=origin)


def _check_count(value: object, name: str, where: str, fail: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise fail(where, f"field {name!r} must be a whole number ≥ 0, got {value!r}")
    if value > MAX_QUANTITY:
        raise fail(where, f"field {name!r} is {shown_number(value)}, more than the most a usage file counts (10**18)")


def _no_unknown(raw: Mapping[str, Any], allowed: set[str], where: str, fail: Any) -> None:
    for key in raw:
        if key not in allowed:
            raise fail(where, f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})")


def _day(raw: object, where: str, fail: Any) -> UsageDay:
    if not isinstance(raw, dict):
        raise fail(where, f"must be an object, got {type(raw).__name__}")
    _no_unknown(raw, set(_REQUIRED) | set(_OPTIONAL), where, fail)
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
    day = UsageDay(**values)  # type: ignore[arg-type]
    for deliveries, sent in _PAIRS:
        if getattr(day, deliveries) and not getattr(day, sent):
            raise fail(where, f"field {deliveries!r} is {getattr(day, deliveries)} but {sent!r} is 0")
    if day.payload_bytes and not day.messages:
        raise fail(where, "field 'payload_bytes' is not 0 but there are no publishes or client events")
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


def _check_delivered_units(day: UsageDay, where: str, fail: Any) -> None:
    """``delivered_units_5kib`` against the deliveries and bytes it counts.

    The meter adds ceil(size ÷ 5 KiB), at least 1, times the connections reached, for every publish and client event.
    Each delivery is so at least one unit, and at most as many as the largest message can make: one message holding
    every byte of the day, max(1, ceil(payload_bytes ÷ 5 KiB)) units; with ``units_5kib`` also known, the largest
    message makes at most units_5kib − (messages − 1), every other message taking at least one.
    """
    delivered = day.delivered_units_5kib
    if delivered is None:
        return
    deliveries = day.deliveries + day.client_event_deliveries
    if not deliveries:
        if delivered:
            raise fail(
                where,
                f"field 'delivered_units_5kib' is {delivered} but there are no deliveries ('deliveries' and "
                "'client_event_deliveries' are 0)",
            )
        return
    if delivered < deliveries:
        raise fail(
            where,
            f"field 'delivered_units_5kib' is {delivered}, fewer than the {deliveries} deliveries and client event "
            "deliveries (each delivery is at least one unit of 5 KiB)",
        )
    largest_message = max(1, -(-day.payload_bytes // 5120))
    if day.units_5kib is not None:
        largest_message = min(largest_message, day.units_5kib - day.messages + 1)
    if delivered > largest_message * deliveries:
        raise fail(
            where,
            f"field 'delivered_units_5kib' is {delivered}, but {deliveries} deliveries and client event deliveries "
            f"make at most {largest_message * deliveries}: the largest message {day.payload_bytes} bytes in all allow "
            f"is {largest_message} × 5 KiB"
            + (f" ({day.units_5kib} units in {day.messages} messages)" if day.units_5kib is not None else ""),
        )


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

    Peak connections and channels of several apps are summed per day: an upper bound of their true combined peak.
    """
    if app is not None:
        if app not in usage.apps:
            known = ", ".join(sorted(usage.apps))
            raise ConfigError(f"usage file {usage.origin}: no app {app!r} (--app); it has: {known}")
        apps = {app: usage.apps[app]}
    else:
        apps = dict(usage.apps)
    days = _merged_days(apps)
    n = len(days)

    def total(name: str) -> int:
        return sum(getattr(d, name) for d in days.values())

    def ratio(numerator: str, denominator: str) -> float:
        below = total(denominator)
        return total(numerator) / below if below else 0.0

    messages = total("publishes") + total("client_events")
    pusher_days = [d.pusher_messages for d in days.values()]
    mean_pusher = sum(pusher_days) / n
    peak_day_factor = max(1.0, max(pusher_days) / mean_pusher) if mean_pusher else 1.0
    peak_factor = 1.0
    busiest, peak_note = _busiest_second(apps)
    if messages and busiest is not None:
        peak_factor = max(1.0, busiest * SECONDS_PER_DAY / (messages / n * peak_day_factor))

    def units(name: str) -> float | None:
        values = [getattr(d, name) for d in days.values()]
        if not messages or any(v is None for v in values):
            return None
        return max(1.0, sum(v or 0 for v in values) / messages)

    def delivery_units() -> float | None:
        """Average 5 KiB units per delivery, weighted by each message's recipients (Ably bills each delivery)."""
        values = [d.delivered_units_5kib for d in days.values()]
        delivered = total("deliveries") + total("client_event_deliveries")
        if not delivered or any(v is None for v in values):
            return None
        return max(1.0, sum(v or 0 for v in values) / delivered)

    users = [entry.unique_users for entry in apps.values()]
    connected = any(d.peak_connections > 0 for d in days.values())
    # The meter learns user ids from sign-ins and presence only: none seen while clients connected means unknown
    # (the estimate's fallback applies), not zero monthly active users.
    seen = sum(u or 0 for u in users)
    if mau is None and all(u is not None for u in users) and (seen > 0 or not connected):
        mau = seen
    first, last = next(iter(days)), next(reversed(days))
    span = first if first == last else f"{first} to {last}"
    names = ", ".join(apps)
    return Workload(
        connections=max(d.peak_connections for d in days.values()),
        publishes_per_day=total("publishes") / n,
        subscribers_per_publish=ratio("deliveries", "publishes"),
        client_events_per_day=total("client_events") / n,
        client_event_recipients=ratio("client_event_deliveries", "client_events"),
        presence_events_per_day=total("presence_events") / n,
        presence_subscribers=ratio("presence_deliveries", "presence_events"),
        webhooks_per_day=total("webhooks") / n,
        api_requests_per_day=total("api_requests") / n,
        message_bytes=total("payload_bytes") / messages if messages else 0.0,
        days_per_month=days_per_month,
        peak_day_factor=peak_day_factor,
        peak_factor=peak_factor,
        channels=max(d.peak_channels for d in days.values()),
        connection_minutes_per_day=total("connection_minutes") / n,
        channel_minutes_per_day=total("channel_minutes") / n,
        bytes_out_per_day=total("bytes_out") / n,
        size_units_5kib=units("units_5kib"),
        delivery_units_5kib=delivery_units(),
        size_units_2kib=units("units_2kib"),
        mau=mau,
        echo=echo,
        origin=f"measured: {usage.origin}, app{'s' if len(apps) > 1 else ''} {names}, {n} day{'s' if n > 1 else ''} "
        f"({span}){peak_note}",
    )


def _merged_days(apps: Mapping[str, UsageApp]) -> dict[str, UsageDay]:
    """The apps' days summed field by field, in date order; a field unknown for one app is unknown in the sum."""
    merged: dict[str, dict[str, int | None]] = {}
    for entry in apps.values():
        for day, values in entry.days.items():
            row = merged.setdefault(day, {})
            for f in fields(UsageDay):
                value = getattr(values, f.name)
                if f.name in row and (row[f.name] is None or value is None):
                    row[f.name] = None
                else:
                    row[f.name] = (row.get(f.name) or 0) + value if value is not None else None
    return {day: UsageDay(**row) for day, row in sorted(merged.items())}  # type: ignore[arg-type]


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

"""The cost model's values: a workload, the pricing data, and what an estimate returns.

Every value is a frozen dataclass. A `Workload` checks itself when it is built, so an invalid one never reaches
`relay.cost.estimate`; the pricing loader (`relay.cost.pricing`) checks the data file the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from relay.errors import ConfigError

__all__ = [
    "Capacity",
    "Crossover",
    "Estimate",
    "LimitCheck",
    "Model",
    "Plan",
    "PlanFit",
    "PlanStatus",
    "Prices",
    "Provider",
    "ProviderEstimate",
    "ProviderKind",
    "ProviderStatus",
    "Workload",
    "duration_text",
]

MINUTES_PER_DAY = 1_440
SECONDS_PER_DAY = 86_400
# The peak second runs at the busiest day's average rate × the peak factor, and holds at most that whole day.
MAX_PEAK_FACTOR = SECONDS_PER_DAY
# The largest count or amount the model takes: far beyond any real workload or price, and far enough inside a float's
# range that no product the rules form can overflow (10**400 from a JSON file cannot even become a float).
MAX_QUANTITY = 10**18
# Connection- and channel-minutes per day: up to MAX_QUANTITY connections (or channels) held all day.
_MINUTE_FIELDS = frozenset({"connection_minutes_per_day", "channel_minutes_per_day"})


def field_bound(name: str) -> int:
    """The largest value the workload field ``name`` takes."""
    return MAX_QUANTITY * MINUTES_PER_DAY if name in _MINUTE_FIELDS else MAX_QUANTITY


def shown_number(value: object) -> str:
    """``value`` for an error message; a huge whole number as its order of magnitude (it may not fit a float)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"about 10**{round(math.log10(value))}"
    return repr(value)


def duration_text(seconds: int) -> str:
    """``seconds`` as people read a span, in its two largest units: "5 s", "12 min 5 s", "36 h", "3 days 4 h" (hours
    up to two days: "24 h" over two half days reads better than "1 day")."""
    days, rest = divmod(seconds, SECONDS_PER_DAY) if seconds >= 2 * SECONDS_PER_DAY else (0, seconds)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    parts = [f"{days} days" if days else "", f"{hours} h" if hours else ""]
    parts += [f"{minutes} min" if minutes else "", f"{rest} s" if rest else ""]
    return " ".join([part for part in parts if part][:2]) or "0 s"


ProviderKind = Literal["managed", "selfhosted"]
PlanStatus = Literal["fits", "does_not_fit", "custom", "unknown", "unsuitable"]
ProviderStatus = Literal["fits", "does_not_fit", "unknown"]


def _flag(name: str, help_text: str) -> dict[str, str]:
    return {"flag": name, "help": help_text}


@dataclass(frozen=True)
class Workload:
    """What a realtime app does, per average day of the month, plus its peaks.

    All per-day counts are for an average day. ``peak_day_factor`` says how much busier the busiest UTC day is (Pusher's
    daily message cap is checked against that day); ``peak_factor`` says how much faster than the day's average rate
    traffic runs in its busiest second (per-second and per-hour limits, and self-hosted CPU, are checked at that rate;
    at most 86,400, as a second holds at most its day).

    A "publish" is one event published through the server API to one channel (a trigger to three channels is three
    publishes). A "client event" is one event a connected client sends to a channel; it is delivered to the channel's
    other subscribers (``client_event_recipients``). Presence events are members joining and leaving.
    """

    connections: int = field(metadata=_flag("--connections", "peak concurrent connections"))
    publishes_per_day: float = field(default=0.0, metadata=_flag("--publishes-per-day", "server publishes per day"))
    http_publishes_per_day: float | None = field(
        default=None,
        metadata=_flag("--usage", "measured publishes that came in an HTTP API request (None: every publish)"),
    )
    http_publish_requests_per_day: float | None = field(
        default=None,
        metadata=_flag("--usage", "measured HTTP requests that published (None: one per HTTP publish)"),
    )
    subscribers_per_publish: float = field(
        default=0.0, metadata=_flag("--subscribers-per-publish", "average subscribers receiving each publish")
    )
    client_events_per_day: float = field(
        default=0.0, metadata=_flag("--client-events-per-day", "client events per day")
    )
    client_event_recipients: float | None = field(
        default=None, metadata=_flag("--client-event-recipients", "average recipients of a client event")
    )
    presence_events_per_day: float = field(
        default=0.0, metadata=_flag("--presence-events-per-day", "presence joins + leaves per day")
    )
    presence_subscribers: float | None = field(
        default=None, metadata=_flag("--presence-subscribers", "average members told of each join or leave")
    )
    presence_members: float | None = field(
        default=None, metadata=_flag("--presence-members", "most members one presence channel holds at once")
    )
    webhooks_per_day: float = field(default=0.0, metadata=_flag("--webhooks-per-day", "webhook requests per day"))
    history_messages_per_day: float = field(
        default=0.0,
        metadata=_flag("--history-messages-per-day", "messages read from Ably's history per day (Ably bills each)"),
    )
    api_requests_per_day: float = field(
        default=0.0, metadata=_flag("--api-requests-per-day", "HTTP API calls other than publishes per day")
    )
    ably_api_requests_per_day: float = field(
        default=0.0,
        metadata=_flag("--usage", "measured Ably REST requests other than publishes and token requests (Ably only)"),
    )
    ably_token_requests_per_day: float = field(
        default=0.0, metadata=_flag("--usage", "measured Ably token requests (Ably only; limited apart)")
    )
    echo_deliveries_per_day: float | None = field(
        default=None,
        metadata=_flag("--usage", "measured publishes sent back to the Ably connection that published them (echo)"),
    )
    metachannel_messages_per_day: float = field(
        default=0.0,
        metadata=_flag("--usage", "measured messages of Ably's lifecycle metachannel, sent and delivered (Ably only)"),
    )
    message_bytes: float = field(default=1024.0, metadata=_flag("--message-size", "average message size in bytes"))
    days_per_month: float = field(default=30.0, metadata=_flag("--days-per-month", "days in the billed month"))
    peak_day_factor: float = field(default=1.0, metadata=_flag("--peak-day-factor", "busiest day / average day"))
    peak_factor: float = field(default=1.0, metadata=_flag("--peak-factor", "peak-second rate / average rate"))
    channels: int | None = field(default=None, metadata=_flag("--channels", "peak concurrently active channels"))
    connection_minutes_per_day: float | None = field(
        default=None, metadata=_flag("--average-connections", "connection-minutes per day")
    )
    channel_minutes_per_day: float | None = field(
        default=None, metadata=_flag("--average-channels", "channel-minutes per day")
    )
    bytes_out_per_day: float | None = field(default=None, metadata=_flag("--usage", "bytes sent to clients per day"))
    size_units_5kib: float | None = field(default=None, metadata=_flag("--usage", "average 5 KiB units per message"))
    size_units_2kib: float | None = field(default=None, metadata=_flag("--usage", "average 2 KiB units per message"))
    delivery_units_5kib: float | None = field(
        default=None, metadata=_flag("--usage", "average 5 KiB units per delivery, weighted by recipients")
    )
    mau: int | None = field(default=None, metadata=_flag("--mau", "monthly active users"))
    users_seen: int | None = field(
        default=None, metadata=_flag("--usage", "distinct users a usage file saw (signed in or joined presence)")
    )
    users_seen_seconds: float | None = field(
        default=None, metadata=_flag("--usage", "seconds the usage file measured those users over")
    )
    min_nodes: int = field(default=1, metadata=_flag("--min-nodes", "self-hosted nodes at least (2+: failover)"))
    echo: bool = field(default=True, metadata=_flag("--no-echo", "Ably echoes client publishes to the sender"))
    origin: str = field(default="described", metadata=_flag("--usage", "where the workload came from"))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("echo", "origin"):
                continue
            if value is None and f.default is None:
                continue
            flag = f.metadata.get("flag", "")
            where = f"workload field {f.name}" + (f" ({flag})" if flag and flag != "--usage" else "")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            bound = field_bound(f.name)
            if value > bound and not value == math.inf:
                raise ConfigError(f"{where} must be at most {bound:.3g}, got {shown_number(value)}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where} must be a finite number ≥ {_LEAST.get(f.name, 0)}, got {value!r}")
            if f.name in _WHOLE_NUMBERS and value != int(value):
                raise ConfigError(f"{where} must be a whole number, got {value!r}")
        if not 1 <= self.days_per_month <= 31:
            raise ConfigError(
                f"workload field days_per_month (--days-per-month) must be 1–31, got {self.days_per_month}"
            )
        for name in ("peak_day_factor", "peak_factor"):
            check_peak(name, getattr(self, name))
        if not self.origin.startswith("measured") and self.peak_day_factor > self.days_per_month:
            # A measured one may be: its busiest day is against the average of its days, which may be more than a month
            raise ConfigError(
                f"workload field peak_day_factor (--peak-day-factor) must be at most days_per_month "
                f"({self.days_per_month:g}): the busiest day holds at most the whole month, "
                f"got {self.peak_day_factor:g}"
            )
        if not isinstance(self.echo, bool):  # "no" is truthy: Ably's echo would be counted on
            raise ConfigError(f"workload field echo (--no-echo) must be True or False, got {self.echo!r}")
        for name in ("size_units_5kib", "size_units_2kib", "delivery_units_5kib"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(
                    f"workload field {name} must be ≥ 1 (every message is at least one unit), got {value}"
                )
        if self.min_nodes < 1:
            raise ConfigError(f"workload field min_nodes (--min-nodes) must be at least 1, got {self.min_nodes}")
        if self.http_publishes_per_day is not None and self.http_publishes_per_day > self.publishes_per_day:
            raise ConfigError(
                f"workload field http_publishes_per_day must be at most publishes_per_day ({self.publishes_per_day:g}):"
                f" it counts those of them that came in an HTTP API request, got {self.http_publishes_per_day:g}"
            )

    def impossible_fan_out(self) -> str | None:
        """Why a fan-out is more than the connections allow (a publish reaches at most every connection), naming the
        flags; None when none is. `relay cost` refuses such a described workload. A measured one is taken as the
        meter counted it, and `scaled` caps what scaling down makes impossible."""
        if self.connections == 0:
            # Server publishes need no connection; a client event or a presence change is a connection's (and Ably would
            # bill the client event's echo to it).
            for name, why in (
                ("client_events_per_day", "a client event is sent by a connection"),
                ("presence_events_per_day", "a presence join or leave is a connection's"),
            ):
                value = getattr(self, name)
                if value:
                    return f"{_FIELD_FLAGS[name]} {value:g} with --connections 0: {why}"
        for name, excluded, reason in _FAN_OUTS:
            value = getattr(self, name)
            most = _reachable(self.connections, excluded)
            if value is not None and _beyond(value, most):
                return (
                    f"{_FIELD_FLAGS[name]} {value:g} is more than the {most:,} that --connections {self.connections} "
                    f"allows: {reason}"
                )
        return None

    # Defaults that depend on other fields: one place, so every rule and every assumption line agrees.

    @property
    def ce_recipients(self) -> float:
        """Recipients of a client event: as many as a publish reaches unless given, but never the sender."""
        if self.client_event_recipients is None:
            return min(self.subscribers_per_publish, _reachable(self.connections, 1))
        return self.client_event_recipients

    @property
    def presence_audience(self) -> float:
        """Members told of a join or leave: as many as a publish reaches unless given, but never the member itself."""
        if self.presence_subscribers is None:
            return min(self.subscribers_per_publish, _reachable(self.connections, 1))
        return self.presence_subscribers

    @property
    def presence_room(self) -> float:
        """The most members one presence channel holds at once, which providers limit: as given, else one more than
        a join is told to (a room that fills from empty holds more at its fullest than its members' average), and 0
        without presence."""
        if self.presence_members is not None:
            return self.presence_members
        return self.presence_audience + 1 if self.presence_events_per_day > 0 else 0.0

    @property
    def peak_channels(self) -> int:
        """Channels active at the peak: ``channels``, else one per connection, and at least one when anything is
        published, sent or joined (each is on a channel, which it makes active, connections or not)."""
        if self.channels is not None:
            return self.channels
        on_a_channel = self.messages_sent + self.presence_events_per_day
        return max(self.connections, 1) if on_a_channel else self.connections

    @property
    def connection_minutes(self) -> float:
        """Connection-minutes per average day (default: the peak held all day)."""
        if self.connection_minutes_per_day is None:
            return float(self.connections * MINUTES_PER_DAY)
        return self.connection_minutes_per_day

    @property
    def channel_minutes(self) -> float:
        """Channel-minutes per average day (default: the peak channel count held all day)."""
        if self.channel_minutes_per_day is None:
            return float(self.peak_channels * MINUTES_PER_DAY)
        return self.channel_minutes_per_day

    @property
    def http_publishes(self) -> float:
        """Publishes per day that came in an HTTP API request (REST): all of them, unless a usage file measured some
        over Ably realtime connections."""
        return self.publishes_per_day if self.http_publishes_per_day is None else self.http_publishes_per_day

    @property
    def http_publish_requests(self) -> float:
        """HTTP API requests per day that published: one per HTTP publish, unless a usage file measured them (a
        trigger to several channels, or a batch, is one request, as the Ably adapter sends it)."""
        if self.http_publish_requests_per_day is None:
            return self.http_publishes
        return self.http_publish_requests_per_day

    @property
    def messages_sent(self) -> float:
        """Messages with a payload per day: publishes and client events."""
        return self.publishes_per_day + self.client_events_per_day

    def units_of(self, kib: int) -> float:
        """Average billing units of ``kib`` KiB per message (a message is at least one unit)."""
        measured = {5: self.size_units_5kib, 2: self.size_units_2kib}.get(kib)
        if measured is not None:
            return measured
        return float(max(1, math.ceil(self.message_bytes / (kib * 1024))))

    def delivery_units_of_5kib(self) -> float:
        """Average 5 KiB units per delivery: measured (a large message to many weighs more than a small one to few),
        else the average per message."""
        return self.delivery_units_5kib if self.delivery_units_5kib is not None else self.units_of(5)

    def per_second_at_peak(self, per_day: float) -> float:
        return per_day * self.peak_day_factor * self.peak_factor / SECONDS_PER_DAY

    def scaled(self, factor: float) -> Workload:
        """``factor`` times the users: connections, channels, users and every per-day count grow by ``factor``.

        Fan-out (subscribers per publish), message size, peaks and days stay the same: that is ``factor`` times as
        many rooms of the same size, except that no room holds more than every connection: scaled down below its
        fan-out, the workload reaches every connection (and its origin says the fan-out was capped).
        """
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 0:
            raise ConfigError(f"scale (--scale) must be a number > 0, got {factor!r}")

        def times(name: str, value: float) -> float:
            product = value * factor
            if not product <= field_bound(name):  # infinity included: rounding it up to a whole number would not stop
                raise ConfigError(
                    f"scale ×{factor:g} (--scale) makes {name} {product:.3g}, more than {field_bound(name):.3g}, "
                    "the largest number the cost model takes"
                )
            return product

        changes: dict[str, Any] = {}  # float, or int for the whole fields
        for name in _SCALED_FIELDS:
            value = getattr(self, name)
            if value is not None:
                product = times(name, value)
                changes[name] = _scaled_whole(product) if name in _WHOLE_FIELDS else product
        connections: int = changes["connections"]
        for name, excluded, _ in _FAN_OUTS:
            value = getattr(self, name)
            most = _reachable(connections, excluded)
            # Only what scaling down makes impossible: a measured fan-out beyond the peak stays as the meter saw it.
            if (
                value is not None
                and _beyond(value, most)
                and not _beyond(value, _reachable(self.connections, excluded))
            ):
                changes[name] = float(most)
        origin = self.origin
        if factor != 1:
            origin += f", scaled ×{factor:g}"
        if any(name in changes for name, _, _ in _FAN_OUTS):
            origin += f" (fan-out capped at the {connections:,} connections)"
        return replace(self, **changes, origin=origin)

    def largest_scale(self) -> float:
        """The largest factor `scaled` takes: beyond it a count would pass what the model takes (`MAX_QUANTITY`;
        1,440 times that for connection- and channel-minutes). Infinite when nothing scales (every count is 0)."""
        ratios: list[float] = [
            field_bound(name) / value
            for name in _SCALED_FIELDS
            if (value := getattr(self, name)) is not None and value > 0
        ]
        if not ratios:
            return math.inf
        factor: float = min(ratios)
        # The ratio rounds, and `scaled` checks each product as it rounds: settle on the largest factor it accepts.
        while factor > 0:
            try:
                self.scaled(factor)
            except ConfigError:
                factor = math.nextafter(factor, 0.0)
                continue
            bigger = math.nextafter(factor, math.inf)
            try:
                self.scaled(bigger)
            except ConfigError:
                return factor
            factor = bigger
        return factor


def _scaled_whole(product: float) -> int:
    """A whole count (connections, channels, users) scaled: rounded up, as part of a connection is one, but not for a
    float's noise above a whole number (100.00000000000001 is 100), and never to 0 from a count above 0 (500
    connections × 1e-12 is 1 connection, not none)."""
    return math.ceil(round(product, 6)) or math.ceil(product)


def check_peak(name: str, value: float) -> None:
    """Refuse a peak factor (``peak_factor`` or ``peak_day_factor``) below 1 or not finite (a peak is at least the
    average), or a ``peak_factor`` above MAX_PEAK_FACTOR, naming its flag: before anything is derived from it too."""
    where = f"workload field {name} ({_FIELD_FLAGS[name]})"
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number ≥ 1, got {value!r}")
    if value < 1:
        raise ConfigError(f"{where} must be ≥ 1 (a peak is at least the average), got {value:g}")
    if name == "peak_factor" and value > MAX_PEAK_FACTOR:
        raise ConfigError(
            f"{where} must be at most {MAX_PEAK_FACTOR:,} (the busiest second holds at most the whole busiest day: "
            f"{MAX_PEAK_FACTOR:,} times that day's average second), got {value:g}"
        )


def _reachable(connections: int, excluded: int) -> int:
    """The connections a message can reach: all of them, less the ``excluded`` ones (the sender's)."""
    return max(connections - excluded, 0)


def _beyond(fan_out: float, most: float) -> bool:
    """Whether ``fan_out`` is more than ``most``: by more than a rounding error, since a measured fan-out is the ratio
    of two averages, each rounded."""
    return fan_out > most * (1 + 1e-9)


# Fan-out fields, the connections each cannot reach (the sender's), and why.
_FAN_OUTS = (
    ("subscribers_per_publish", 0, "a publish reaches at most every connection"),
    ("client_event_recipients", 1, "a client event reaches at most every connection but the sender's"),
    ("presence_subscribers", 1, "a join or leave is told at most to every connection but the member's"),
    ("presence_members", 0, "each member holds a connection"),
)
_FIELD_FLAGS = {f.name: f.metadata["flag"] for f in fields(Workload)}
# The fields `Workload.scaled` multiplies (fan-out, sizes, peaks and days are kept); the whole ones round up.
_WHOLE_FIELDS = frozenset({"connections", "channels", "mau", "users_seen"})
_WHOLE_NUMBERS = _WHOLE_FIELDS | {"min_nodes"}
# The least value of the fields that may not be 0 (the rest: 0), for the message refusing a value that is no number.
_LEAST = dict.fromkeys(
    (
        "days_per_month",
        "peak_day_factor",
        "peak_factor",
        "size_units_5kib",
        "size_units_2kib",
        "delivery_units_5kib",
        "min_nodes",
    ),
    1,
)
_SCALED_FIELDS = (
    "connections",
    "channels",
    "mau",
    "users_seen",
    "publishes_per_day",
    "http_publishes_per_day",
    "http_publish_requests_per_day",
    "client_events_per_day",
    "presence_events_per_day",
    "webhooks_per_day",
    "history_messages_per_day",
    "api_requests_per_day",
    "ably_api_requests_per_day",
    "ably_token_requests_per_day",
    "echo_deliveries_per_day",
    "metachannel_messages_per_day",
    "connection_minutes_per_day",
    "channel_minutes_per_day",
    "bytes_out_per_day",
)


@dataclass(frozen=True)
class Plan:
    """One plan (or machine size) of one provider, as the pricing file states it.

    ``price_usd_month`` is None when the price is custom (contact sales) or unknown (``price_status`` says which).
    A limit of ``math.inf`` is unlimited; a limit the file marks "unknown" is None and named in ``unknown``.
    Which fields a plan needs depends on its provider's ``unit_rules`` (see `relay.cost.pricing`).
    """

    id: str
    name: str
    price_usd_month: float | None
    price_status: Literal["listed", "custom", "unknown"] = "listed"
    as_of: str = ""
    source: str = ""
    confidence: str = ""
    notes: tuple[str, ...] = ()
    unknown: frozenset[str] = frozenset()
    # limits
    connections: float | None = None
    channels: float | None = None
    messages_per_day: float | None = None
    messages_per_month: float | None = None
    messages_per_hour: float | None = None
    messages_per_second: float | None = None
    # HTTP API requests (Ably's REST: a server publish is one, as the adapter sends them), an hour and a second
    api_requests_per_hour: float | None = None
    api_requests_per_second: float | None = None
    # Ably's token requests (requestToken: one per client connection that authenticates with authUrl, and per renewal)
    token_requests_per_hour: float | None = None
    token_requests_per_second: float | None = None
    transactions_per_month: float | None = None
    max_message_bytes: float | None = None
    presence_members: float | None = None
    mau: float | None = None
    # what the base fee includes, and usage prices beyond it
    included_messages_per_month: float | None = None
    included_connections: float | None = None
    included_usage_usd: float | None = None
    usage_hard_cap: bool = False
    minimum_usd_month: float | None = None
    usd_per_million_messages: float | None = None
    usd_per_million_connection_minutes: float | None = None
    usd_per_million_channel_minutes: float | None = None
    usd_per_gib_bandwidth: float | None = None
    usd_per_1000_connections: float | None = None
    usd_per_mau: float | None = None
    fair_use_messages_per_mau: float | None = None
    fair_use_connection_minutes_per_mau: float | None = None
    usd_per_replicated_transaction: float | None = None
    usd_per_edge_transaction: float | None = None
    # self-hosting: one emulator process per machine (or per replica)
    memory_mb: float | None = None
    vcpus: float | None = None
    cpu_cores: float | None = None
    included_egress_gib: float | None = None
    # Who the allowance is for: each node (machine) has its own, or the account (workspace) has one for all of them.
    included_egress_per: Literal["node", "account"] = "node"
    usd_per_gib_egress: float | None = None
    usd_per_vcpu_month: float | None = None
    usd_per_gb_ram_month: float | None = None
    suitable: bool = True
    unsuitable_reason: str = ""


@dataclass(frozen=True)
class Provider:
    id: str
    name: str
    kind: ProviderKind
    unit_rules: str
    plans: tuple[Plan, ...]
    as_of: str
    source: str
    confidence: str
    notes: tuple[str, ...] = ()
    redis_usd_month: float = 0.0
    redis_note: str = ""
    # The Redis machine's own transfer allowance, where a provider pools its machines' allowances (DigitalOcean)
    redis_included_egress_gib: float = 0.0
    # The days a listed price covers, for a provider billing by the second or minute: a machine's (Fly.io: 30), or a
    # usage rate's per month (Railway's $20 per vCPU-month is $0.000463 a vCPU-minute × 43,200: 30); 0: a calendar month
    price_days: float = 0.0

    def listed_months(self, days_per_month: float) -> float:
        """How many of its listed prices (a machine's, or a month's usage rate) a month of ``days_per_month`` days
        costs: 1, or 31/30 for a 31-day month of a price listed per 30 days."""
        return days_per_month / self.price_days if self.price_days else 1.0

    def fee_months(self, days_per_month: float) -> float:
        """How many of a plan's ``price_usd_month`` a month costs: a machine's price scales with the month as its other
        listed prices (`listed_months`); a usage-billed platform's plan fee (H_PAAS_USAGE) is a monthly subscription,
        the same in a month of any length."""
        return self.listed_months(days_per_month) if self.unit_rules == "H_VM" else 1.0

    # False for a pricing model new customers cannot sign up for (kept for the accounts that have it).
    new_accounts: bool = True


@dataclass(frozen=True)
class Capacity:
    """What one emulator process holds and does, per core of the benchmark machine (see ``hardware``)."""

    hardware: str
    source: str
    confidence: str
    as_of: str
    base_rss_mb: float
    kb_per_connection: float
    cpu_us_per_delivery: float
    cpu_us_per_request: float
    cpu_us_per_forwarded_publish: float
    memory_usable: float
    cpu_usable: float
    idle_cpu_cores: float


@dataclass(frozen=True)
class Model:
    """Modelling constants that are not any provider's price."""

    frame_overhead_bytes: float
    presence_frame_bytes: float
    mau_per_peak_connection: float
    source: str


@dataclass(frozen=True)
class Prices:
    """A whole pricing file: its version and date, the modelling constants, and every provider."""

    schema: int
    version: str
    as_of: str
    origin: str
    model: Model
    capacity: Capacity
    providers: tuple[Provider, ...]

    def provider(self, provider_id: str) -> Provider:
        for provider in self.providers:
            if provider.id == provider_id:
                return provider
        known = ", ".join(p.id for p in self.providers)
        raise ConfigError(f"unknown provider {provider_id!r}; the pricing data has: {known}")


@dataclass(frozen=True)
class LimitCheck:
    """One limit of one plan against the workload: ``used`` must not exceed ``limit`` (None: the limit is unknown).

    ``field`` is the pricing-file field the limit comes from (or is computed from), to name it when it is unknown.
    """

    name: str
    used: float
    limit: float | None
    field: str = ""

    @property
    def ok(self) -> bool:
        # Within a rounding error, as a fan-out is (`_beyond`): a measured count is a count times a ratio of averages
        # (deliveries ÷ publishes, the busiest day ÷ the average day), so a day measured at exactly a cap (Pusher
        # Startup's 1,000,000 messages) may come back a float's last digit above it (1,000,000.0000000001).
        return self.limit is not None and not _beyond(self.used, self.limit)

    @property
    def ratio(self) -> float | None:
        if self.limit is None:
            return None
        if math.isinf(self.limit):
            return 0.0
        if self.limit == 0:
            return math.inf if self.used > 0 else 0.0
        return self.used / self.limit

    def describe(self) -> str:
        if self.limit is None:
            return f"{self.name} {_num(self.used)} (limit unknown)"
        return f"{self.name} {_num(self.used)} {'≤' if self.ok else '>'} {_num(self.limit)}"


# Above this, a float's digits beyond the first few are noise (10**36 prints as 1,000,000,000,000,000,042,…).
LARGEST_SHOWN_IN_FULL = 1e15


def _num(value: float) -> str:
    if math.isinf(value):
        return "unlimited"
    if abs(value) >= LARGEST_SHOWN_IN_FULL:
        return f"{value:.2e}"
    if abs(value - round(value)) <= abs(value) * 1e-9:  # whole within the rounding error `LimitCheck.ok` allows
        return f"{round(value):,}"
    return f"{value:,.2f}" if value >= 1 else f"{value:.3g}"


@dataclass(frozen=True)
class PlanFit:
    """One plan evaluated against the workload."""

    provider: str
    plan: str
    name: str
    status: PlanStatus
    monthly_usd: float | None
    checks: tuple[LimitCheck, ...]
    units: tuple[tuple[str, float], ...]
    cost_lines: tuple[tuple[str, float], ...]
    reason: str = ""
    nodes: int | None = None
    confidence: str = ""
    as_of: str = ""
    source: str = ""
    unknown_fields: tuple[str, ...] = ()
    """The pricing-file fields marked "unknown" that this answer needed (the reason it is unknown)."""

    @property
    def breaks(self) -> tuple[LimitCheck, ...]:
        return tuple(c for c in self.checks if c.limit is not None and not c.ok)

    @property
    def tightest(self) -> LimitCheck | None:
        known = [c for c in self.checks if c.ratio is not None and c.limit is not None and not math.isinf(c.limit)]
        return max(known, key=lambda c: c.ratio or 0.0, default=None)

    @property
    def headroom(self) -> float | None:
        """1 − the highest used/limit ratio among this plan's finite limits (None if it has none)."""
        tightest = self.tightest
        if tightest is None or tightest.ratio is None:
            return None
        # A limit met within a rounding error (`LimitCheck.ok`) leaves none, not a sliver less than none.
        return max(0.0, 1.0 - tightest.ratio) if tightest.ok else 1.0 - tightest.ratio


@dataclass(frozen=True)
class ProviderEstimate:
    """A provider's answer: the cheapest plan that fits (or why none does), what it bills and on what assumptions."""

    provider: str
    name: str
    kind: ProviderKind
    unit_rules: str
    status: ProviderStatus
    plan: str | None
    monthly_usd: float | None
    limit: str
    headroom: float | None
    units: tuple[tuple[str, float], ...]
    cost_lines: tuple[tuple[str, float], ...]
    plans: tuple[PlanFit, ...]
    assumptions: tuple[str, ...]
    confidence: str
    as_of: str
    source: str
    nodes: int | None = None
    # A managed provider no listed plan fits: its largest listed plan's cost for the workload at list rates, the
    # limits it breaks ignored. A floor of what the workload costs there: it needs more than that plan.
    list_rate_usd: float | None = None
    new_accounts: bool = True

    def unit(self, name: str) -> float:
        for key, value in self.units:
            if key == name:
                return value
        raise KeyError(name)


@dataclass(frozen=True)
class Estimate:
    workload: Workload
    pricing_version: str
    pricing_as_of: str
    pricing_origin: str
    providers: tuple[ProviderEstimate, ...]
    assumptions: tuple[str, ...]

    def provider(self, provider_id: str) -> ProviderEstimate:
        for result in self.providers:
            if result.provider == provider_id:
                return result
        known = ", ".join(result.provider for result in self.providers)
        raise KeyError(f"no estimate for provider {provider_id!r}; this estimate has: {known}")

    def cheapest(self, kind: ProviderKind | None = None, *, new_accounts_only: bool = False) -> ProviderEstimate | None:
        """The cheapest option that fits (of ``kind``; with ``new_accounts_only``, of those a new customer can buy)."""
        priced = [
            p
            for p in self.providers
            if p.monthly_usd is not None
            and p.status == "fits"
            and kind in (None, p.kind)
            and (p.new_accounts or not new_accounts_only)
        ]
        return min(priced, key=lambda p: p.monthly_usd or 0.0, default=None)


@dataclass(frozen=True)
class Crossover:
    """Where self-hosting starts (``direction="above"``) or stops (``"below"``) being cheaper than ``managed``.

    ``connections`` is the last peak-connection count on the managed side of the change: self-hosting is cheaper
    above it (or, for "below", up to it). ``selfhosted`` and its plan and cost are the self-hosted option that is the
    cheaper one: just after the change for "above", just before it for "below"; ``managed_usd`` is just after it.
    ``selfhosted_nodes`` is its node count there: the comparison is of machines only, and one node has no failover.
    """

    managed: str
    managed_name: str
    direction: Literal["above", "below"]
    connections: int
    scale: float
    selfhosted: str
    selfhosted_plan: str
    managed_usd: float | None
    selfhosted_usd: float | None
    selfhosted_nodes: int | None = None

    def describe(self) -> str:
        cost = "cost less" if self.direction == "above" else "no longer cost less"
        nodes = ""
        if self.selfhosted_nodes is not None:
            plural = "s" if self.selfhosted_nodes > 1 else ""
            nodes = f", {self.selfhosted_nodes} node{plural}" + (": no failover" if self.selfhosted_nodes == 1 else "")
        # "Machines": the time to run them is in no figure, and a managed price includes it.
        return (
            f"self-hosting's machines ({self.selfhosted} {self.selfhosted_plan}{nodes}) {cost} than "
            f"{self.managed_name} above {self.connections:,} connections"
        )

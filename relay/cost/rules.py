"""Counting rules: how each provider turns a workload into billed units, and one plan's limits and prices into a fit.

One function per unit-rule code of the pricing file (ably-and-pricing §F.6). Symbols, per average day:
P publishes, S subscribers per publish, CE client events, Sce their recipients, E echo (1 or 0), EP publishes echoed
back to the Ably connection that published them (measured only), Pr presence joins + leaves, Ps members told of each,
W webhooks, H messages read from Ably's history, M messages of Ably's channel lifecycle metachannel (measured only),
Q other HTTP API calls, C peak connections, D days per month.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .models import (
    MAX_QUANTITY,
    SECONDS_PER_DAY,
    Capacity,
    LimitCheck,
    Plan,
    PlanFit,
    PlanStatus,
    Prices,
    Provider,
    Workload,
    duration_text,
)

__all__ = ["assumptions_for", "evaluate"]

GIB = 2**30
KIB = 1024


def evaluate(workload: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    """Evaluate one plan of one provider against ``workload`` by the provider's counting rule."""
    return _RULES[provider.unit_rules](workload, provider, plan, prices)


# --- helpers --------------------------------------------------------------------------------------------------------


def _limit(plan: Plan, field: str, name: str, used: float) -> list[LimitCheck]:
    """A check for ``field`` if the plan has that limit (unknown limits give a check with ``limit=None``)."""
    if field in plan.unknown:
        return [LimitCheck(name, used, None, field)]
    limit = getattr(plan, field)
    return [] if limit is None else [LimitCheck(name, used, limit, field)]


def _message_checks(w: Workload, plan: Plan) -> list[LimitCheck]:
    checks: list[LimitCheck] = []
    if w.messages_sent > 0:
        checks += _limit(plan, "max_message_bytes", "message size (bytes)", w.message_bytes)
    if w.presence_room > 0:
        checks += _limit(plan, "presence_members", "presence members per channel", w.presence_room)
    return checks


def _rate(plan: Plan, field: str) -> float:
    """A rate or allowance of the plan, 0 when absent. A field marked "unknown" is None here too: every rule names
    the fields it reads in ``rates=`` of `_fit`, so that an unknown one makes the answer unknown, not 0."""
    value = getattr(plan, field)
    return 0.0 if value is None else float(value)


def _fit(
    provider: Provider,
    plan: Plan,
    checks: list[LimitCheck],
    units: list[tuple[str, float]],
    cost_lines: list[tuple[str, float]],
    *,
    rates: tuple[str, ...] = (),
    nodes: int | None = None,
    reason: str = "",
) -> PlanFit:
    status: PlanStatus
    # Every input marked "unknown" that the answer needs: the price, a limit checked, a rate or allowance used.
    unknown = sorted(
        ({"price_usd_month"} if plan.price_status == "unknown" else set())
        | {c.field or c.name for c in checks if c.limit is None}
        | (plan.unknown & set(rates))
    )
    if not plan.suitable:
        status, reason = "unsuitable", plan.unsuitable_reason
    elif any(c.limit is not None and not c.ok for c in checks):
        status = "does_not_fit"
    elif plan.price_status == "custom":
        status = "custom"
    elif unknown:
        status = "unknown"
        reason = reason or "unknown in the pricing data: " + ", ".join(unknown)
    else:
        status = "fits"
    priced = status in ("fits", "does_not_fit") and plan.price_usd_month is not None
    return PlanFit(
        provider=provider.id,
        plan=plan.id,
        name=plan.name,
        status=status,
        monthly_usd=round(sum(v for _, v in cost_lines), 2) if priced else None,
        checks=tuple(checks),
        units=tuple(units),
        cost_lines=_in_cents(cost_lines) if priced else (),
        reason=reason,
        nodes=nodes,
        confidence=plan.confidence,
        as_of=plan.as_of,
        source=plan.source,
        unknown_fields=tuple(unknown) if status == "unknown" else (),
    )


def _in_cents(cost_lines: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    """The cost lines in whole cents that add up to the total rounded to the cent (the plan's ``monthly_usd``).

    Each line rounded on its own may not: $29 + $0.0146 + $21.6432 + $21.6432 is $72.30, but its lines, each rounded,
    add up to $72.29. Largest remainder: every line is rounded down to the cent, and the cents still missing from the
    total go, one each, to the lines whose rounding took off the most (so each line is still within a cent of its
    amount, and a whole amount such as a plan's fee is never changed)."""
    # In cents, rounded first to a millionth of a cent: 4.77 × 100 is 476.99999999999994, 477 cents, not 476.
    cents = [round(value * 100, 6) for _, value in cost_lines]
    total = round(sum(value for _, value in cost_lines), 2) * 100
    floors = [math.floor(c) for c in cents] if all(map(math.isfinite, [*cents, total])) else []
    # The total is within half a cent of the lines' sum, so at most one cent is missing per line taken down; not so
    # for amounts far beyond any price, whose floats have no whole cents: those lines are each rounded.
    missing = round(total) - sum(floors) if floors else -1
    if not 0 <= missing <= len(floors):
        return tuple((label, round(value, 2)) for label, value in cost_lines)
    for index in sorted(range(len(cents)), key=lambda i: floors[i] - cents[i])[:missing]:
        floors[index] += 1
    return tuple((label, cents_ / 100) for (label, _), cents_ in zip(cost_lines, floors, strict=True))


def _base(plan: Plan) -> list[tuple[str, float]]:
    return [("base fee", plan.price_usd_month or 0.0)]


def _bytes_out_per_day(w: Workload, prices: Prices, *, echo: bool = False) -> float:
    """Bytes written to clients per day: measured (less its echoes with echo off), or deliveries × (message size +
    Pusher framing), with a client event's echo when ``echo``."""
    if w.bytes_out_per_day is not None:
        return w.bytes_out_per_day - _echo_bytes_per_day(w, prices)
    deliveries = w.publishes_per_day * w.subscribers_per_publish + w.client_events_per_day * (
        w.ce_recipients + (1 if echo else 0)
    )
    presence = w.presence_events_per_day * w.presence_audience * prices.model.presence_frame_bytes
    return deliveries * (w.message_bytes + prices.model.frame_overhead_bytes) + presence


def _echo_bytes_per_day(w: Workload, prices: Prices) -> float:
    """The bytes of a usage file's ``bytes_out`` that wrote its echo deliveries, left out with echo off: EP × (the
    average message measured + the framing of a delivery), at most ``bytes_out``.

    The meter counts ``bytes_out`` as one total, echoes included, and does not tell an echo's frame from another's. An
    echo is the message its publisher sent, so it weighs what a message measured does; not what the average frame
    written per delivery does, which counts the frames that deliver nothing (pings, attach replies) too: a few echoes
    on a day of mostly idle connections would be taken for most of what was written."""
    if w.echo or not w.echo_deliveries_per_day or not w.bytes_out_per_day:
        return 0.0
    echoed = w.echo_deliveries_per_day * (w.message_bytes + prices.model.frame_overhead_bytes)
    return min(w.bytes_out_per_day, echoed)


def _mau(w: Workload, prices: Prices) -> float:
    """The MAU given or measured over a month; else the default per peak connection, or the users a usage file saw
    in less than a month if more (they are a lower bound)."""
    if w.mau is not None:
        return float(w.mau)
    return float(max(_default_mau(w, prices), w.users_seen or 0))


def _default_mau(w: Workload, prices: Prices) -> int:
    return math.ceil(w.connections * prices.model.mau_per_peak_connection)


# --- Pusher ---------------------------------------------------------------------------------------------------------


def pusher_messages_per_day(w: Workload) -> float:
    """P_COUNT: P + P·S + CE + CE·Sce + Pr·Ps + W + Q (every API call and every delivery)."""
    return (
        w.publishes_per_day * (1 + w.subscribers_per_publish)
        + w.client_events_per_day * (1 + w.ce_recipients)
        + w.presence_events_per_day * w.presence_audience
        + w.webhooks_per_day
        + w.api_requests_per_day
    )


def _pusher(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    per_day = pusher_messages_per_day(w)
    busiest = per_day * w.peak_day_factor
    checks = [
        *_limit(plan, "connections", "connections", w.connections),
        *_limit(plan, "messages_per_day", "messages/day (busiest UTC day)", busiest),
        *_message_checks(w, plan),
    ]
    units = [
        ("messages_per_day", per_day),
        ("messages_busiest_day", busiest),
        ("messages_per_month", per_day * w.days_per_month),
        ("connections", float(w.connections)),
    ]
    return _fit(provider, plan, checks, units, _base(plan))


# --- Ably -----------------------------------------------------------------------------------------------------------


def ably_messages_per_day(w: Workload) -> float:
    """A_COUNT: ceil(size/5 KiB)·(P + CE·(1 + E) + EP·E) + D·(P·S + CE·Sce) + W + Pr·(1 + Ps) + H + M, where D is the
    5 KiB units of a delivery: measured per recipient in a usage file, else the same as a message's, H the messages read
    from history (each 1 message: "History = 1 per retrieved message", ably-and-pricing §F.2; a REST presence query's
    members and a rewind's backlog too) and M the messages of the channel lifecycle metachannel a usage file measured
    ("Lifecycle metachannel events = 1 each"), which only Ably has.

    Server publishes go over REST and are not echoed; client publishes (client events) are echoed to the sender
    when echo is on (Ably's default), and so are the Ably realtime publishes a usage file measured echoed (EP: the
    meter counts them apart from the deliveries, as no other provider sends a publisher its own message). A webhook
    is 1 message: the reference's counting list says "integration or webhook delivery = 1 per target"
    (ably-and-pricing §F.2), the rule for webhooks in particular, where its summary formula (§F.6) puts W inside the
    5 KiB chunks of the published messages, whose size is not a webhook's anyway. The usage meter counts a webhook as
    1 too.
    """
    echo = 1 if w.echo else 0
    chunks, delivered = w.units_of(5), w.delivery_units_of_5kib()
    echoed = w.client_events_per_day + (w.echo_deliveries_per_day or 0.0)
    inbound = chunks * (w.publishes_per_day + w.client_events_per_day + echoed * echo)
    outbound = delivered * (w.publishes_per_day * w.subscribers_per_publish + w.client_events_per_day * w.ce_recipients)
    presence = w.presence_events_per_day * (1 + w.presence_audience)
    lifecycle = w.metachannel_messages_per_day
    return inbound + outbound + w.webhooks_per_day + presence + w.history_messages_per_day + lifecycle


def _ably_common(w: Workload, plan: Plan, per_day: float) -> list[LimitCheck]:
    # The busiest hour: the peak rate, but never more than the whole busiest day.
    busiest_hour = w.peak_day_factor * min(w.peak_factor, 24) / 24
    # Over REST: each request that published (a usage file measures them; a described workload, one per server
    # publish, an upper bound: the Ably adapter sends a publish to several channels, and a batch of up to 100 events,
    # as one request) and every other API call. A publish a usage file measured over an Ably realtime connection is no
    # request; the Ably REST requests it measured (history, presence, channel status) are, and on Ably only: Pusher
    # has no such call to bill.
    requests = w.http_publish_requests + w.api_requests_per_day + w.ably_api_requests_per_day
    tokens = w.ably_token_requests_per_day
    return [
        *_limit(plan, "connections", "connections", w.connections),
        *_limit(plan, "channels", "channels", w.peak_channels),
        *_limit(plan, "messages_per_month", "messages/month", per_day * w.days_per_month),
        *_limit(plan, "messages_per_hour", "messages/hour at peak", per_day * busiest_hour),
        *_limit(plan, "api_requests_per_hour", "HTTP API requests/hour at peak", requests * busiest_hour),
        # A.13 limits the rate too: a burst within the hour's allowance is still refused (429) above it.
        *_limit(plan, "api_requests_per_second", "HTTP API requests/s at peak", w.per_second_at_peak(requests)),
        # Token requests (clients that authenticate with authUrl, as they connect and renew) have limits of their own
        *_limit(plan, "token_requests_per_hour", "token requests/hour at peak", tokens * busiest_hour),
        *_limit(plan, "token_requests_per_second", "token requests/s at peak", w.per_second_at_peak(tokens)),
        *_limit(plan, "messages_per_second", "messages/s at peak", w.per_second_at_peak(per_day)),
        *_message_checks(w, plan),
    ]


def _ably_resource(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    per_day = ably_messages_per_day(w)
    month = per_day * w.days_per_month
    connection_minutes = w.connection_minutes * w.days_per_month
    channel_minutes = w.channel_minutes * w.days_per_month
    transferred = _bytes_out_per_day(w, prices, echo=w.echo) * w.days_per_month / GIB
    allowance = month * 5 * KIB / GIB
    excess = max(0.0, transferred - allowance)
    units = [
        ("messages_per_day", per_day),
        ("messages_per_month", month),
        ("connection_minutes_per_month", connection_minutes),
        ("channel_minutes_per_month", channel_minutes),
        ("bandwidth_gib_per_month", transferred),
    ]
    cost = _base(plan)
    if plan.usd_per_million_messages is not None:
        cost.append(("messages", month / 1e6 * plan.usd_per_million_messages))
    if plan.usd_per_million_connection_minutes is not None:
        cost.append(("connection-minutes", connection_minutes / 1e6 * plan.usd_per_million_connection_minutes))
    if plan.usd_per_million_channel_minutes is not None:
        cost.append(("channel-minutes", channel_minutes / 1e6 * plan.usd_per_million_channel_minutes))
    if plan.usd_per_gib_bandwidth is not None and excess > 0:
        cost.append(("bandwidth beyond 5 KiB per message", excess * plan.usd_per_gib_bandwidth))
    rates = (
        "usd_per_million_messages",
        "usd_per_million_connection_minutes",
        "usd_per_million_channel_minutes",
        "usd_per_gib_bandwidth",
    )
    return _fit(provider, plan, _ably_common(w, plan, per_day), units, cost, rates=rates)


def _ably_mau_2025(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    per_day = ably_messages_per_day(w)
    month = per_day * w.days_per_month
    connection_minutes = w.connection_minutes * w.days_per_month
    mau = _mau(w, prices)
    extra_messages = max(0.0, month - _rate(plan, "fair_use_messages_per_mau") * mau)
    extra_minutes = max(0.0, connection_minutes - _rate(plan, "fair_use_connection_minutes_per_mau") * mau)
    units = [
        ("mau", mau),
        ("messages_per_day", per_day),
        ("messages_per_month", month),
        ("connection_minutes_per_month", connection_minutes),
        ("messages_beyond_fair_use", extra_messages),
        ("connection_minutes_beyond_fair_use", extra_minutes),
    ]
    cost = [
        *_base(plan),
        ("MAU", mau * _rate(plan, "usd_per_mau")),
        ("messages beyond fair use", extra_messages / 1e6 * _rate(plan, "usd_per_million_messages")),
        (
            "connection-minutes beyond fair use",
            extra_minutes / 1e6 * _rate(plan, "usd_per_million_connection_minutes"),
        ),
    ]
    rates = (
        "usd_per_mau",
        "usd_per_million_messages",
        "usd_per_million_connection_minutes",
        "fair_use_messages_per_mau",
        "fair_use_connection_minutes_per_mau",
    )
    return _fit(provider, plan, _ably_common(w, plan, per_day), units, cost, rates=rates)


def _ably_mau_2026(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    mau = _mau(w, prices)
    checks = [*_limit(plan, "mau", "MAU", mau), *_limit(plan, "connections", "connections", w.connections)]
    cost = [*_base(plan), ("MAU", mau * _rate(plan, "usd_per_mau"))]
    return _fit(provider, plan, checks, [("mau", mau)], cost, rates=("usd_per_mau",))


# --- Supabase -------------------------------------------------------------------------------------------------------


def supabase_messages_per_day(w: Workload) -> float:
    """S_COUNT: a broadcast to N listeners is 1 sent + N received: P·(1 + S) + CE·(1 + Sce) + Pr·(1 + Ps)."""
    return (
        w.publishes_per_day * (1 + w.subscribers_per_publish)
        + w.client_events_per_day * (1 + w.ce_recipients)
        + w.presence_events_per_day * (1 + w.presence_audience)
    )


def _supabase(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    per_day = supabase_messages_per_day(w)
    month = per_day * w.days_per_month
    checks = [
        *_limit(plan, "connections", "connections", w.connections),
        *_limit(plan, "messages_per_month", "messages/month", month),
        *_limit(plan, "messages_per_second", "messages/s at peak", w.per_second_at_peak(per_day)),
        *_message_checks(w, plan),
    ]
    units = [("messages_per_day", per_day), ("messages_per_month", month), ("connections", float(w.connections))]
    cost = _base(plan)
    rates = ["usd_per_1000_connections", "usd_per_million_messages"]
    if plan.usd_per_1000_connections is not None:
        rates.append("included_connections")
        packages = math.ceil(max(0.0, w.connections - _rate(plan, "included_connections")) / 1000)
        cost.append((f"{packages} × 1,000 extra peak connections", packages * plan.usd_per_1000_connections))
    if plan.usd_per_million_messages is not None:
        rates.append("included_messages_per_month")
        extra = max(0.0, month - _rate(plan, "included_messages_per_month"))
        cost.append(("messages beyond the quota", extra / 1e6 * plan.usd_per_million_messages))
    return _fit(provider, plan, checks, units, cost, rates=tuple(rates))


# --- PubNub ---------------------------------------------------------------------------------------------------------


def _pubnub_transactions(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    units_2k = w.units_of(2)
    replicated = ((w.publishes_per_day + w.client_events_per_day) * units_2k + w.presence_events_per_day) * (
        w.days_per_month
    )
    edge = (
        w.publishes_per_day * w.subscribers_per_publish
        + w.client_events_per_day * w.ce_recipients
        + w.presence_events_per_day * w.presence_audience
    ) * w.days_per_month
    checks = [
        *_limit(plan, "connections", "connections", w.connections),
        *_limit(plan, "transactions_per_month", "transactions/month", replicated + edge),
        *_message_checks(w, plan),
    ]
    units = [
        ("replicated_transactions_per_month", replicated),
        ("edge_transactions_per_month", edge),
        ("transactions_per_month", replicated + edge),
    ]
    cost = _base(plan)
    if plan.usd_per_replicated_transaction is not None:
        usage = replicated * plan.usd_per_replicated_transaction + edge * _rate(plan, "usd_per_edge_transaction")
        cost += [
            ("replicated transactions", replicated * plan.usd_per_replicated_transaction),
            ("edge transactions", edge * _rate(plan, "usd_per_edge_transaction")),
        ]
        minimum = _rate(plan, "minimum_usd_month")
        if usage < minimum:
            cost.append(("monthly minimum top-up", minimum - usage))
    rates = ("usd_per_replicated_transaction", "usd_per_edge_transaction", "minimum_usd_month")
    return _fit(provider, plan, checks, units, cost, rates=rates)


def _pubnub_mau(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    mau = _mau(w, prices)
    checks = [*_limit(plan, "mau", "MAU", mau), *_message_checks(w, plan)]
    return _fit(provider, plan, checks, [("mau", mau)], _base(plan))


# --- self-hosting ---------------------------------------------------------------------------------------------------


# Beyond one node, every node receives every publish through Redis. A node that would spend more than this share of
# its usable CPU on them mostly relays the other nodes' publishes: its count would hinge on the forwarding cost (an
# estimate) more than on the work, and near the whole CPU it runs away (hundreds of nodes, each all but full of
# forwarding). Relay plans no such cluster: the plan does not fit (sharding channels over clusters is not modelled).
MAX_FORWARDING_SHARE = 0.5


class _Nodes:
    """How many emulator nodes a plan needs at peak (at least the workload's ``min_nodes``), and how loaded each is."""

    def __init__(self, w: Workload, plan: Plan, prices: Prices) -> None:
        cap = prices.capacity
        memory_mb = (plan.memory_mb or 0.0) * cap.memory_usable - cap.base_rss_mb
        # No workload has more connections than MAX_QUANTITY: a node holding that many holds any (and a pricing
        # file's 1e18 MB at 1e-300 KB a connection would hold an infinite number, which no whole number is).
        per_node = min(memory_mb * 1024 / cap.kb_per_connection, MAX_QUANTITY)
        self.connections_per_node = max(0, math.floor(per_node))
        self.cpu_usable = (plan.cpu_cores or 0.0) * cap.cpu_usable
        self.requests_per_day = (
            w.publishes_per_day
            + w.client_events_per_day
            + w.presence_events_per_day
            + w.webhooks_per_day
            + w.api_requests_per_day
            # An emulator serving Ably's clients answers their REST reads and token requests too
            + w.ably_api_requests_per_day
            + w.ably_token_requests_per_day
        )
        # The emulator echoes an Ably client's publish back to it as Ably does (unless its clients connect with echo
        # off): measured echoes are deliveries a node writes too.
        echoed = (w.echo_deliveries_per_day or 0.0) if w.echo else 0.0
        self.deliveries_per_day = (
            w.publishes_per_day * w.subscribers_per_publish
            + w.client_events_per_day * w.ce_recipients
            + w.presence_events_per_day * w.presence_audience
            + echoed
        )
        self.fanouts_per_day = w.publishes_per_day + w.client_events_per_day + w.presence_events_per_day
        self.peak_deliveries = w.per_second_at_peak(self.deliveries_per_day)
        # CPU cores the whole workload needs at its peak second, and what every node pays per forwarded publish.
        self.work = self.cores(w.per_second_at_peak(self.requests_per_day), self.peak_deliveries, cap)
        self.forwarding = w.per_second_at_peak(self.fanouts_per_day) * cap.cpu_us_per_forwarded_publish / 1e6
        self.min_nodes = w.min_nodes
        # The least count memory allows, and --min-nodes.
        self.at_least = max(
            self.min_nodes,
            math.ceil(w.connections / self.connections_per_node) if self.connections_per_node else 1,
        )
        self.one_node_fits = self.at_least == 1 and self.work <= self.cpu_usable
        self.forwarding_most = self.cpu_usable * MAX_FORWARDING_SHARE
        self.needed = self.least_nodes()
        self.count = self.needed

    def per_node_checks(self, w: Workload, n: int, memory: float | None, cpu: float | None) -> list[LimitCheck]:
        """The connections and the peak CPU on each of ``n`` nodes (the work ÷ n, and the forwarding when n > 1)."""
        return [
            LimitCheck("connections per node", w.connections / n, memory, "memory_mb"),
            LimitCheck(
                "CPU cores per node at peak", self.work / n + (self.forwarding if n > 1 else 0.0), cpu, "cpu_cores"
            ),
        ]

    def holds(self, w: Workload, n: int) -> bool:
        """Whether ``n`` nodes hold the connections and the peak CPU, forwarding included."""
        if n > 1 and self.forwarding > self.forwarding_most:
            return False
        return all(check.ok for check in self.per_node_checks(w, n, float(self.connections_per_node), self.cpu_usable))

    def least_nodes(self) -> int:
        """The least n (at least ``min_nodes``) whose nodes hold both the connections (C ÷ n per node) and the CPU at
        the peak (the work on one node, or work ÷ n + forwarding on each of n > 1: forwarding applies only when there
        are several, and may take at most MAX_FORWARDING_SHARE of a node's usable CPU).

        When no node count is enough (too little memory, forwarded publishes would take more than that share, or
        more than MAX_QUANTITY nodes would be needed),
        the count memory alone needs is reported (at least ``min_nodes``) and the limit checks show what breaks:
        when the forwarding rules out several nodes, what one node lacks and the forwarding each of several pays.
        """
        if self.one_node_fits:
            return 1
        # Several nodes: each pays the forwarding, so n ≥ work ÷ (usable − forwarding), as well as n ≥ 2 and memory's.
        spare = self.cpu_usable - self.forwarding
        # More than MAX_QUANTITY nodes is no plan (and a tiny spare, from a pricing file's tiny cpu_cores, makes the
        # quotient infinite, which no count is).
        if self.forwarding > self.forwarding_most or spare <= 0 or self.work / spare > MAX_QUANTITY:
            return self.at_least
        least = max(2, self.at_least)
        n = max(least, math.ceil(self.work / spare))
        # The division rounds: settle on the count the CPU check itself (work ÷ n + forwarding ≤ usable) accepts.
        if n > least and self.work / (n - 1) + self.forwarding <= self.cpu_usable:
            n -= 1
        elif self.work / n + self.forwarding > self.cpu_usable:
            n += 1
        return n

    @staticmethod
    def cores(requests_per_s: float, deliveries_per_s: float, cap: Capacity) -> float:
        return (requests_per_s * cap.cpu_us_per_request + deliveries_per_s * cap.cpu_us_per_delivery) / 1e6

    def checks(self, w: Workload, plan: Plan) -> list[LimitCheck]:
        memory = None if "memory_mb" in plan.unknown else float(self.connections_per_node)
        cpu = None if "cpu_cores" in plan.unknown else self.cpu_usable
        if cpu is None or self.one_node_fits or self.forwarding <= self.forwarding_most:
            return self.per_node_checks(w, self.count, memory, cpu)
        # No node count fits: one node is not enough (or fewer than --min-nodes), and with several, forwarded
        # publishes would take more than their share of every node's CPU (more nodes do not help). Say both, with what
        # one node lacks.
        one_node = [
            LimitCheck("connections on one node", float(w.connections), memory, "memory_mb"),
            LimitCheck("CPU cores at peak on one node", self.work, cpu, "cpu_cores"),
        ]
        forwarding = LimitCheck(
            f"CPU cores per node at peak for forwarded publishes (with 2+ nodes; at most {MAX_FORWARDING_SHARE:.0%} of "
            "a node's usable CPU)",
            self.forwarding,
            self.forwarding_most,
            "cpu_cores",
        )
        return [*(one_node if self.min_nodes == 1 else []), forwarding]

    def units(self, egress_gib: float) -> list[tuple[str, float]]:
        return [
            ("nodes", float(self.count)),
            ("connections_per_node_capacity", float(self.connections_per_node)),
            ("peak_deliveries_per_second", self.peak_deliveries),
            ("cpu_cores_at_peak", self.work),
            ("egress_gib_per_month", egress_gib),
        ]


def _vm_cost(provider: Provider, plan: Plan, n: int, egress: float, month: float) -> list[tuple[str, float]]:
    """The cost lines of ``n`` machines of ``plan`` writing ``egress`` GiB a month."""
    cost = [(f"{n} × {plan.name}", n * (plan.price_usd_month or 0.0) * month)]
    allowance = _rate(plan, "included_egress_gib") * (n if plan.included_egress_per == "node" else 1)
    if n > 1:
        cost.append(("Redis between nodes", provider.redis_usd_month * month))
        allowance += provider.redis_included_egress_gib
    excess = max(0.0, egress - allowance)
    if excess > 0:
        cost.append((f"egress beyond the allowance ({excess:,.0f} GiB)", excess * _rate(plan, "usd_per_gib_egress")))
    return cost


def _cheapest_vm_count(
    w: Workload, provider: Provider, plan: Plan, nodes: _Nodes, egress: float, month: float
) -> tuple[int, str]:
    """The node count to price: the cheapest (machines, Redis and egress beyond the allowance) from the count the load
    needs up to the count whose allowances cover the whole egress (beyond it a node adds its price and nothing else),
    fewest on a tie; and, when that is more than the load needs, why.

    Each node brings its own transfer allowance where the plan has one per node: when it is worth more than the
    node's price at the egress rate, more nodes are the cheaper way to pay for heavy egress. Past one node the cost is
    the machines' (linear in n) plus the egress beyond n allowances (falling linearly to 0, then 0): convex, so its
    least is at the first count or where the allowances meet the egress, rounded down or up."""
    needed = nodes.needed
    per_node = _rate(plan, "included_egress_gib")
    if (
        plan.included_egress_per != "node"
        or per_node <= 0
        or plan.price_usd_month is None
        or any(not check.ok for check in nodes.checks(w, plan))
    ):
        return needed, ""
    covered = (egress - provider.redis_included_egress_gib) / per_node
    if not covered < MAX_QUANTITY:
        return needed, ""
    candidates = {needed, max(needed, 2), max(needed, math.floor(covered)), max(needed, math.ceil(covered))}

    def total(n: int) -> float:
        return round(sum(value for _, value in _vm_cost(provider, plan, n, egress, month)), 2)

    best = min((n for n in candidates if nodes.holds(w, n) or n == needed), key=lambda n: (total(n), n))
    if best == needed:
        return needed, ""
    fewer = f"{needed} node" + ("" if needed == 1 else "s")
    return best, (
        f"{best} nodes where {needed} carr{'ies' if needed == 1 else 'y'} the load: each more node brings "
        f"{per_node:,.0f} GiB of included egress, worth ${per_node * _rate(plan, 'usd_per_gib_egress'):,.2f} of egress "
        f"beyond the allowance, for its ${plan.price_usd_month * month:,.2f}: {best} nodes cost ${total(best):,.2f} a "
        f"month, {fewer} ${total(needed):,.2f}"
    )


def _selfhosted_vm(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    nodes = _Nodes(w, plan, prices)
    egress = _bytes_out_per_day(w, prices) * w.days_per_month / GIB
    month = provider.listed_months(w.days_per_month)
    n, why = _cheapest_vm_count(w, provider, plan, nodes, egress, month)
    nodes.count = n  # more than the load needs where their transfer allowances make more nodes cheaper
    cost = _vm_cost(provider, plan, n, egress, month)
    # The allowance matters only when there is egress.
    rates = ("usd_per_gib_egress", "included_egress_gib") if egress > 0 else ("usd_per_gib_egress",)
    return _fit(provider, plan, nodes.checks(w, plan), nodes.units(egress), cost, rates=rates, nodes=n, reason=why)


def _selfhosted_usage(w: Workload, provider: Provider, plan: Plan, prices: Prices) -> PlanFit:
    cap = prices.capacity
    nodes = _Nodes(w, plan, prices)
    n = nodes.count
    egress = _bytes_out_per_day(w, prices) * w.days_per_month / GIB
    ram_gb = (n * cap.base_rss_mb + w.connections * cap.kb_per_connection / 1024) / 1024
    # The platform bills its own vCPUs, each worth `cpu_cores` of a benchmark core, on average over the month.
    work = nodes.cores(nodes.requests_per_day / SECONDS_PER_DAY, nodes.deliveries_per_day / SECONDS_PER_DAY, cap)
    if n > 1:
        work += n * nodes.fanouts_per_day / SECONDS_PER_DAY * cap.cpu_us_per_forwarded_publish / 1e6
    average = work / (plan.cpu_cores or 1.0) + n * cap.idle_cpu_cores
    # Memory and CPU are billed by the second at rates quoted per month of `price_days` (Railway's: 30 days), so a
    # 31-day month uses 31/30 of them, and so does the Redis service billed the same way; egress is per GiB (counted
    # over the month's days already), and the plan fee and the usage it includes are the month's, whatever its length.
    month = provider.listed_months(w.days_per_month)
    lines = [
        (f"memory ({ram_gb:.2f} GB)", ram_gb * _rate(plan, "usd_per_gb_ram_month") * month),
        (f"CPU ({average:.3f} vCPU on average)", average * _rate(plan, "usd_per_vcpu_month") * month),
        (f"egress ({egress:,.1f} GiB)", egress * _rate(plan, "usd_per_gib_egress")),
    ]
    if n > 1:
        lines.append(("Redis between nodes", provider.redis_usd_month * month))
    usage = sum(value for _, value in lines)
    included = _rate(plan, "included_usage_usd")
    checks = nodes.checks(w, plan)
    if plan.usage_hard_cap:
        credit = None if "included_usage_usd" in plan.unknown else included
        checks.append(LimitCheck("usage $ within the plan's credit", round(usage, 2), credit, "included_usage_usd"))
    cost = [*_base(plan), *((f"usage: {label}", value) for label, value in lines)]
    if usage > 0:
        cost.append(("usage included in the plan", -min(usage, included)))
    units = [*nodes.units(egress), ("usage_usd", usage)]
    rates = ("usd_per_vcpu_month", "usd_per_gb_ram_month", "usd_per_gib_egress", "included_usage_usd", "cpu_cores")
    return _fit(provider, plan, checks, units, cost, rates=rates, nodes=n)


_RULES: dict[str, Callable[[Workload, Provider, Plan, Prices], PlanFit]] = {
    "P_COUNT": _pusher,
    "A_USAGE": _ably_resource,
    "A_MAU25": _ably_mau_2025,
    "A_MAU26": _ably_mau_2026,
    "S_COUNT": _supabase,
    "N_TXN": _pubnub_transactions,
    "N_MAU": _pubnub_mau,
    "H_VM": _selfhosted_vm,
    "H_PAAS_USAGE": _selfhosted_usage,
}


# --- assumptions ----------------------------------------------------------------------------------------------------

_RULE_TEXT = {
    "P_COUNT": "messages/day = P·(1+S) + CE·(1+Sce) + Pr·Ps + W + Q, checked on the busiest UTC day; hard caps",
    "A_USAGE": "messages = ceil(size/5 KiB)·(P·(1+S) + CE·(1+Sce+E) + EP·E) + W + Pr·(1+Ps) + H + M; "
    "plus connection- and channel-minutes",
    "A_MAU25": "base + $/MAU; messages and connection-minutes beyond fair use at resource-based rates",
    "A_MAU26": "priced per monthly active user; package prices unknown",
    "S_COUNT": "messages = P·(1+S) + CE·(1+Sce) + Pr·(1+Ps); Pro bills peak connections in packages of 1,000",
    "N_TXN": "replicated = (P+CE)·ceil(size/2 KiB) + Pr; edge = one per delivery (upper bound)",
    "N_MAU": "priced per monthly active user tier",
    "H_VM": "nodes = the least n (at least --min-nodes) holding the connections and the peak CPU (CPU ÷ n + "
    f"forwarded publishes per node when n > 1, those at most {MAX_FORWARDING_SHARE:.0%} of a node's CPU), or more "
    "where each node's egress allowance makes more nodes cheaper; + Redis beyond one node; + egress beyond the "
    "allowance (each node's, or one for the account, as the plan says)",
    "H_PAAS_USAGE": "plan fee + memory, CPU and egress actually used beyond the included usage; "
    "+ Redis beyond one node",
}


def _mau_assumption(w: Workload, prices: Prices) -> str:
    """Where the MAU comes from: --mau, a usage file (a month of it, or less: a lower bound) or the default."""
    default = f"{prices.model.mau_per_peak_connection:g} × peak connections = {_default_mau(w, prices):,}"
    seen_by_meter = "the meter sees only users who sign in or join presence"
    if w.users_seen is None or w.users_seen_seconds is None:
        if w.mau is not None:
            return f"MAU {w.mau:,} from --mau"
        return f"MAU not given: assumed {default} (pass --mau)"
    measured = duration_text(round(w.users_seen_seconds))
    if w.mau is not None:
        # Users come and go: those of a longer span are more than one month's.
        longer = w.users_seen_seconds > w.days_per_month * SECONDS_PER_DAY
        span = ", more than a month: an upper bound of a month's users" if longer else ""
        return (
            f"MAU {w.mau:,}: the users seen over the {measured} the usage file measured{span} ({seen_by_meter}); "
            "pass --mau if others connect"
        )
    return (
        f"MAU {_mau(w, prices):,.0f}: the larger of {default} and the {w.users_seen:,} users seen, a lower bound (the "
        f"usage file measured {measured}, less than a month, and {seen_by_meter}); pass --mau"
    )


def _measured_echo(w: Workload, prices: Prices, *, bandwidth: bool) -> str:
    """What the usage file says of the realtime publishes Ably echoed, for the echo assumption (and of their bytes,
    where ``bandwidth`` is billed)."""
    if not w.echo_deliveries_per_day:
        return ""
    billed = "billed as deliveries" if w.echo else "not billed (--no-echo)"
    if bandwidth and _echo_bytes_per_day(w, prices):
        billed += f", nor their bytes, {_echo_bytes_text(w, prices)}"
    return f"; {w.echo_deliveries_per_day:,.0f} realtime publishes a day measured echoed to their publisher: {billed}"


def _echo_bytes_text(w: Workload, prices: Prices) -> str:
    """How much of the measured bytes written the echoes are taken to be, with echo off."""
    per_day = _echo_bytes_per_day(w, prices)
    share = per_day / (w.bytes_out_per_day or 1.0)
    return (
        f"{per_day:,.0f} bytes a day, {share:.1%} of the bytes_out measured (each echo weighs the average message "
        f"measured, {w.message_bytes:,.0f} bytes, and {prices.model.frame_overhead_bytes:g} bytes of framing)"
    )


def assumptions_for(workload: Workload, provider: Provider, prices: Prices) -> tuple[str, ...]:
    """The assumptions behind one provider's figures: its counting rule, the defaults used and its notes."""
    lines = [f"counting rule {provider.unit_rules}: {_RULE_TEXT[provider.unit_rules]}"]
    if provider.unit_rules in ("A_USAGE", "A_MAU25"):
        lines.append(
            f"echo {'on' if workload.echo else 'off'}: client events "
            f"{'count' if workload.echo else 'do not count'} a delivery back to the sender; server publishes are REST "
            "(never echoed)" + _measured_echo(workload, prices, bandwidth=provider.unit_rules == "A_USAGE")
        )
        realtime = workload.publishes_per_day - workload.http_publishes
        if realtime:
            lines.append(
                f"HTTP API requests: the {workload.http_publishes:,.0f} publishes a day measured in HTTP requests "
                f"(REST) and the other API calls; the {realtime:,.0f} published over realtime connections are none"
            )
        if workload.http_publish_requests_per_day is not None:
            lines.append(
                f"HTTP API requests: {workload.http_publish_requests:,.0f} a day measured published (a trigger to "
                "several channels, or a batch, is one request, as the Ably adapter sends it)"
            )
        if workload.size_units_5kib is None:
            lines.append(f"every message billed as {workload.units_of(5):g} × 5 KiB from the average size")
        if workload.metachannel_messages_per_day:
            lines.append(
                f"{workload.metachannel_messages_per_day:,.0f} channel lifecycle metachannel messages a day measured "
                "(M: [meta]channel.lifecycle events, each sent and each delivered): Ably's own, billed on Ably only"
            )
    if provider.unit_rules in ("A_USAGE", "A_MAU25") and workload.connection_minutes_per_day is None:
        lines.append("connection-minutes: the peak connection count held all day (pass --average-connections)")
    if provider.unit_rules == "A_USAGE" and workload.channel_minutes_per_day is None:
        lines.append("channel-minutes: the peak channel count held all day (pass --average-channels)")
    if provider.unit_rules in ("A_MAU25", "A_MAU26", "N_MAU"):
        lines.append(_mau_assumption(workload, prices))
    if provider.kind == "selfhosted":
        cap = prices.capacity
        lines.append(
            f"one emulator process per machine; capacity per core of the {cap.hardware}: "
            f"{cap.kb_per_connection:g} KB per connection + {cap.base_rss_mb:g} MB base, "
            f"{cap.cpu_us_per_delivery:g} µs CPU per delivery, {cap.cpu_us_per_request:g} µs per request, "
            f"{cap.cpu_us_per_forwarded_publish:g} µs per publish on each node when there are several "
            f"(confidence {cap.confidence}, as of {cap.as_of})"
        )
        lines.append(
            f"plans for {cap.memory_usable:.0%} of memory and {cap.cpu_usable:.0%} of CPU; "
            "a load balancer, TLS termination and monitoring are not priced"
        )
        if provider.redis_note:
            lines.append(f"Redis beyond one node: ${provider.redis_usd_month:g}/month, {provider.redis_note}")
        if workload.bytes_out_per_day is None:
            lines.append(
                f"egress = deliveries × (message size + {prices.model.frame_overhead_bytes:g} bytes of framing)"
            )
        elif _echo_bytes_per_day(workload, prices):
            lines.append(
                f"egress = the bytes_out measured, less the echoes (--no-echo): {_echo_bytes_text(workload, prices)}"
            )
    lines.extend(provider.notes)
    lines.append(f"prices as of {provider.as_of}, confidence {provider.confidence}; source: {provider.source}")
    return tuple(lines)

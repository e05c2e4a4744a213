"""Estimates out: a Rich table for the terminal, JSON and CSV for machines."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .engine import CheapestSide
from .models import LARGEST_SHOWN_IN_FULL, Crossover, Estimate, ProviderEstimate, ProviderKind, Workload

__all__ = ["print_table", "range_sentence", "to_csv", "to_dict", "to_json", "workload_summary"]

# The billed units worth a table cell, per counting rule: (unit name, label).
_SHOWN: dict[str, tuple[tuple[str, str], ...]] = {
    "P_COUNT": (("messages_per_day", "msg/average day"), ("messages_busiest_day", "msg/busiest day")),
    "A_USAGE": (
        ("messages_per_month", "msg/month"),
        ("connection_minutes_per_month", "conn-min"),
        ("channel_minutes_per_month", "channel-min"),
    ),
    "A_MAU25": (("mau", "MAU"), ("messages_per_month", "msg/month")),
    "A_MAU26": (("mau", "MAU"),),
    "S_COUNT": (("messages_per_month", "msg/month"),),
    "N_TXN": (("transactions_per_month", "transactions/month"),),
    "N_MAU": (("mau", "MAU"),),
    "H_VM": (("nodes", "node(s)"), ("egress_gib_per_month", "GiB out")),
    "H_PAAS_USAGE": (("nodes", "replica(s)"), ("usage_usd", "$ usage"), ("egress_gib_per_month", "GiB out")),
}
_STATUS_STYLE = {"fits": "green", "does_not_fit": "red", "unknown": "yellow"}
_STATUS_TEXT = {"fits": "fits", "does_not_fit": "does not fit", "unknown": "unknown"}


def number(value: float) -> str:
    """A count as people read it: 1,000,000; 32.1; 0.54; 1.00e+36 (beyond 10**15 a float's further digits are noise)."""
    if math.isinf(value):
        return "unlimited"
    if abs(value) >= LARGEST_SHOWN_IN_FULL:
        return f"{value:.2e}"
    if abs(value - round(value)) < 1e-9 or abs(value) >= 1000:
        return f"{round(value):,}"
    return f"{value:,.2f}" if abs(value) >= 10 else f"{value:.3g}"


def money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:.2e}" if abs(value) >= LARGEST_SHOWN_IN_FULL else f"${value:,.2f}"


def _cost_cell(result: ProviderEstimate) -> str:
    """The monthly cost; for a managed provider that does not fit, the floor its largest listed plan sets."""
    if result.list_rate_usd is not None:
        return f"≥ {money(result.list_rate_usd)}\nat list rates"
    return money(result.monthly_usd)


def workload_summary(w: Workload) -> str:
    parts = [f"{w.connections:,} peak connections"]
    if w.publishes_per_day:
        parts.append(f"{number(w.publishes_per_day)} publishes/day × {number(w.subscribers_per_publish)} subscribers")
    if w.client_events_per_day:
        parts.append(f"{number(w.client_events_per_day)} client events/day × {number(w.ce_recipients)} recipients")
    if w.presence_events_per_day:
        parts.append(f"{number(w.presence_events_per_day)} presence events/day × {number(w.presence_audience)}")
    if w.webhooks_per_day:
        parts.append(f"{number(w.webhooks_per_day)} webhooks/day")
    if w.history_messages_per_day:
        parts.append(f"{number(w.history_messages_per_day)} history messages/day")
    if w.api_requests_per_day:
        parts.append(f"{number(w.api_requests_per_day)} other API calls/day")
    if w.ably_api_requests_per_day:
        parts.append(f"{number(w.ably_api_requests_per_day)} other Ably REST calls/day")
    if w.ably_token_requests_per_day:
        parts.append(f"{number(w.ably_token_requests_per_day)} Ably token requests/day")
    parts.append(f"{number(w.message_bytes)}-byte messages")
    return ", ".join(parts)


def _units_cell(result: ProviderEstimate) -> str:
    shown = _SHOWN.get(result.unit_rules, ())
    values = dict(result.units)
    if result.unit_rules == "P_COUNT" and values.get("messages_busiest_day") == values.get("messages_per_day"):
        # No --peak-day-factor: the busiest day is the average one, shown once.
        shown = (("messages_per_day", "msg/day"),)
    cells = []
    for name, label in shown:
        if name in values:
            value = values[name]
            cells.append(f"${value:,.2f} usage" if name == "usage_usd" else f"{number(value)} {label}")
    return "\n".join(cells)


def _limit_cell(result: ProviderEstimate) -> str:
    if result.status == "fits" and result.headroom is not None:
        return f"{result.limit} ({math.floor(result.headroom * 100 + 1e-9):.0f}% headroom)"
    return result.limit


def _plan_name(result: ProviderEstimate) -> str:
    if result.plan is None:
        return "—"
    plan = next(p for p in result.plans if p.plan == result.plan)
    return plan.name


def print_table(
    estimate: Estimate,
    console: Console,
    crossings: Sequence[Crossover] = (),
    scale_range: tuple[float, float] | None = None,
    sides: Sequence[tuple[float, CheapestSide]] = (),
) -> None:
    """The estimate as a table, followed by the crossovers and every assumption behind the figures.

    ``scale_range`` is the range the crossovers were searched over and ``sides`` says, at each scale of that range's
    grid, which kind of option is the cheapest (`relay.cost.engine.cheapest_side`); when there is no crossover against
    every managed option at once, a line says which side is the cheapest across the range.
    """
    console.print(Text(f"Monthly cost of: {workload_summary(estimate.workload)}", style="bold"))
    table = Table(show_lines=False, header_style="bold")
    for column, justify in (
        ("Provider", "left"),
        ("Plan", "left"),
        ("$/month", "right"),
        ("Fit", "left"),
        ("Billed units", "right"),
        ("Tightest or breaking limit", "left"),
        ("Confidence", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    kinds_seen: set[str] = set()
    for result in estimate.providers:
        if kinds_seen and result.kind not in kinds_seen:
            table.add_section()
        kinds_seen.add(result.kind)
        table.add_row(
            result.name,
            _plan_name(result),
            _cost_cell(result),
            Text(_STATUS_TEXT[result.status], style=_STATUS_STYLE[result.status]),
            _units_cell(result),
            _limit_cell(result),
            result.confidence,
        )
    console.print(table)
    labels: tuple[tuple[ProviderKind, str], ...] = (("managed", "managed"), ("selfhosted", "self-hosted"))
    for kind, label in labels:
        best = estimate.cheapest(kind, new_accounts_only=True)
        if best is not None:
            console.print(f"Cheapest {label}: {best.name} {_plan_name(best)}, {money(best.monthly_usd)}/month")
        # A pricing model closed to new accounts is no answer for a new customer, but is one for those who have it.
        closed = estimate.cheapest(kind)
        if closed is None or closed is best:
            continue
        if best is None:  # no open option fits (or none was asked for): nothing open to be cheaper than
            lead = f"Cheapest {label}, closed to new accounts"
        elif (closed.monthly_usd or 0.0) < (best.monthly_usd or 0.0):
            lead = "Cheaper, but closed to new accounts"
        else:
            continue
        console.print(f"{lead}: {closed.name} {_plan_name(closed)}, {money(closed.monthly_usd)}/month")
    for crossing in crossings:
        console.print(f"Crossover: {crossing.describe()}")
    kinds = {result.kind for result in estimate.providers}
    if scale_range and sides and kinds == {"managed", "selfhosted"} and not any(c.managed == "*" for c in crossings):
        console.print(range_sentence(scale_range, sides))
    console.print(Text("Assumptions", style="bold"))
    for line in estimate.assumptions:
        console.print(f"  • {line}", highlight=False)
    for result in estimate.providers:
        console.print(Text(f"{result.name}", style="bold"))
        for line in result.assumptions:
            console.print(f"  • {line}", highlight=False)


_SIDE_TEXT: dict[str, str] = {
    "self-hosting": "self-hosting is the cheapest",
    "managed": "a managed option is the cheapest",
    "same": "self-hosting and the cheapest managed option cost the same",
    "none": "no listed plan fits, managed or self-hosted",
}


def range_sentence(scale_range: tuple[float, float], sides: Sequence[tuple[float, CheapestSide]]) -> str:
    """What is the cheapest across the range when there is no crossover: judged at every scale of the grid, so a
    side cheaper only at ×1 is not said to be cheaper throughout."""
    low, high = scale_range
    runs: list[tuple[CheapestSide, float, float]] = []
    for scale, side in sides:
        if runs and runs[-1][0] == side:
            runs[-1] = (side, runs[-1][1], scale)
        else:
            runs.append((side, scale, scale))
    if len(runs) == 1:
        verdict = f"{_SIDE_TEXT[runs[0][0]]} throughout"
    else:
        verdict = "; ".join(
            f"{_SIDE_TEXT[side]} " + (f"at {first:.3g}×" if first == last else f"from {first:.3g}× to {last:.3g}×")
            for side, first, last in runs
        )
    return (
        f"No crossover from {low:g}× to {high:g}× this workload: {verdict} "
        "(scale the workload with --scale, or widen --plot-range)"
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        if math.isinf(value):
            return "unlimited"
        if math.isnan(value):
            return None
        return round(value, 4)
    return value


def _csv_number(value: Any) -> Any:
    """A unit's count as the table shows it: a whole one without ``.0`` (``connections=20``)."""
    cleaned = _clean(value)
    return int(cleaned) if isinstance(cleaned, float) and cleaned.is_integer() else cleaned


def _workload_dict(w: Workload) -> dict[str, Any]:
    return {f.name: _clean(getattr(w, f.name)) for f in fields(w)}


def to_dict(estimate: Estimate, crossings: Sequence[Crossover] = ()) -> dict[str, Any]:
    """The estimate as plain JSON-ready data (unlimited limits are the string "unlimited")."""
    providers = []
    for result in estimate.providers:
        providers.append(
            {
                "provider": result.provider,
                "name": result.name,
                "kind": result.kind,
                "new_accounts": result.new_accounts,
                "unit_rules": result.unit_rules,
                "status": result.status,
                "plan": result.plan,
                "monthly_usd": result.monthly_usd,
                "list_rate_usd": result.list_rate_usd,
                "nodes": result.nodes,
                "limit": result.limit,
                "headroom": _clean(result.headroom),
                "units": {name: _clean(value) for name, value in result.units},
                "cost_breakdown": [{"item": label, "usd": value} for label, value in result.cost_lines],
                "confidence": result.confidence,
                "as_of": result.as_of,
                "source": result.source,
                "assumptions": list(result.assumptions),
                "plans": [
                    {
                        "plan": fit.plan,
                        "name": fit.name,
                        "status": fit.status,
                        "monthly_usd": fit.monthly_usd,
                        "nodes": fit.nodes,
                        "checks": [
                            {"limit": c.name, "used": _clean(c.used), "max": _clean(c.limit), "ok": c.ok}
                            for c in fit.checks
                        ],
                        "reason": fit.reason,
                        "confidence": fit.confidence,
                        "as_of": fit.as_of,
                    }
                    for fit in result.plans
                ],
            }
        )
    return {
        "pricing": {
            "version": estimate.pricing_version,
            "as_of": estimate.pricing_as_of,
            "origin": estimate.pricing_origin,
        },
        "workload": _workload_dict(estimate.workload),
        "assumptions": list(estimate.assumptions),
        "providers": providers,
        "crossovers": [
            {
                "managed": c.managed,
                "direction": c.direction,
                "connections": c.connections,
                "scale": round(c.scale, 6),
                "selfhosted": c.selfhosted,
                "selfhosted_plan": c.selfhosted_plan,
                "selfhosted_nodes": c.selfhosted_nodes,
                "managed_usd": c.managed_usd,
                "selfhosted_usd": c.selfhosted_usd,
                "text": c.describe(),
            }
            for c in crossings
        ],
    }


def to_json(estimate: Estimate, crossings: Sequence[Crossover] = (), *, ascii_only: bool = False) -> str:
    """``ascii_only``: every character past ASCII escaped (``\\u2264``), for an output whose encoding has no "≤"."""
    return json.dumps(to_dict(estimate, crossings), indent=2, ensure_ascii=ascii_only) + "\n"


CSV_COLUMNS = (
    "provider",
    "name",
    "kind",
    "status",
    "new_accounts",
    "plan",
    "monthly_usd",
    "list_rate_usd",
    "nodes",
    "limit",
    "headroom_pct",
    "billed_units",
    "confidence",
    "as_of",
    "assumptions",
)


def to_csv(estimate: Estimate) -> str:
    """One row per provider; billed units as ``name=value`` pairs and assumptions joined by `` | ``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in estimate.providers:
        writer.writerow(
            (
                result.provider,
                result.name,
                result.kind,
                result.status,
                "true" if result.new_accounts else "false",
                result.plan or "",
                "" if result.monthly_usd is None else f"{result.monthly_usd:.2f}",
                "" if result.list_rate_usd is None else f"{result.list_rate_usd:.2f}",
                "" if result.nodes is None else result.nodes,
                result.limit,
                "" if result.headroom is None else f"{result.headroom * 100:.1f}",
                "; ".join(f"{name}={_csv_number(value)}" for name, value in result.units),
                result.confidence,
                result.as_of,
                " | ".join((*estimate.assumptions, *result.assumptions)),
            )
        )
    return out.getvalue()

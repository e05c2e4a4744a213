"""`estimate`: the workload against every provider; `sweep` and `crossovers`: the same across scales. All pure."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from typing import Literal, Protocol, TypeVar

from .models import (
    Crossover,
    Estimate,
    PlanFit,
    Prices,
    Provider,
    ProviderEstimate,
    ProviderKind,
    ProviderStatus,
    Workload,
)
from .rules import assumptions_for, evaluate

__all__ = ["CheapestSide", "cheapest_side", "crossovers", "estimate", "geometric_scales", "nodes_caveat", "sweep"]

#: Which kind of option is the cheapest at one scale: "same" when the cheapest of each kind cost the same, "none" when
#: no option of either kind fits (or has a known price).
CheapestSide = Literal["self-hosting", "managed", "same", "none"]


def estimate(workload: Workload, prices: Prices, *, providers: Collection[str] | None = None) -> Estimate:
    """Every provider's cheapest fitting plan (or why none fits) for ``workload``, by the data in ``prices``.

    Pure: no clock, files or environment. ``providers`` limits the answer to those provider ids.
    """
    results = tuple(
        _summarise(workload, provider, prices)
        for provider in prices.providers
        if providers is None or provider.id in providers
    )
    return Estimate(
        workload=workload,
        pricing_version=prices.version,
        pricing_as_of=prices.as_of,
        pricing_origin=prices.origin,
        providers=results,
        assumptions=_workload_assumptions(workload, prices, results),
    )


def _summarise(workload: Workload, provider: Provider, prices: Prices) -> ProviderEstimate:
    fits = tuple(evaluate(workload, provider, plan, prices) for plan in provider.plans)
    fitting = [fit for fit in fits if fit.status == "fits" and fit.monthly_usd is not None]
    chosen = min(fitting, key=lambda fit: fit.monthly_usd or 0.0, default=None)
    fallback = ""
    unknown = [fit for fit in fits if fit.status == "unknown"]
    custom = [fit for fit in fits if fit.status == "custom"]
    if chosen is not None:
        # A plan whose answer is unknown may still be the cheapest: unless its listed price (every plan costs at least
        # that) is already above the chosen plan's cost, the cheapest plan that fits is unknown, not guessed.
        cheapest = chosen.monthly_usd or 0.0
        month = provider.fee_months(workload.days_per_month)
        base = {
            plan.id: math.inf if plan.price_usd_month is None else plan.price_usd_month * month
            for plan in provider.plans
        }
        unknown = [fit for fit in unknown if math.isinf(base[fit.plan]) or base[fit.plan] < cheapest]
        if unknown:
            fallback = (
                f"; it could be cheaper than {chosen.name} (${chosen.monthly_usd:,.2f}), the cheapest known to fit"
            )
            chosen = None
    status: ProviderStatus
    if chosen is not None:
        # The cheapest plan that fits; its tightest limit and headroom. Self-hosted figures are only as sure as the
        # capacity data.
        status, reference = "fits", chosen
        tightest = chosen.tightest
        limit = tightest.describe() if tightest is not None else "no finite limit"
        capacity = prices.capacity.confidence if provider.kind == "selfhosted" else "high"
        confidence = _weakest(chosen.confidence, provider.confidence, capacity)
    elif unknown:
        status, reference = "unknown", unknown[0]
        limit, confidence = _unknown_reason(unknown, custom) + fallback, "unknown"
    else:
        # Why nothing fits: the limits that break on the largest listed plan.
        broken = [fit for fit in fits if fit.status == "does_not_fit"]
        status, reference = "does_not_fit", broken[-1] if broken else fits[-1]
        limit, confidence = _break_reason(reference, custom, fits), provider.confidence
    # A managed provider that does not fit still has a figure: its largest plan with a list price, at list rates, a
    # floor (the largest plan may have none: Ably's Enterprise breaks a limit too, at a custom price).
    priced = [fit for fit in fits if fit.status == "does_not_fit" and fit.monthly_usd is not None]
    floor = priced[-1].monthly_usd if status == "does_not_fit" and provider.kind == "managed" and priced else None
    return ProviderEstimate(
        provider=provider.id,
        name=provider.name,
        kind=provider.kind,
        unit_rules=provider.unit_rules,
        status=status,
        plan=chosen.plan if chosen else None,
        monthly_usd=chosen.monthly_usd if chosen else None,
        limit=limit,
        headroom=chosen.headroom if chosen else None,
        units=reference.units,
        cost_lines=chosen.cost_lines if chosen else (),
        plans=fits,
        # Why the plan chosen differs from what the load alone would take (more self-hosted nodes for their allowance)
        assumptions=assumptions_for(workload, provider, prices)
        + ((f"{chosen.name}: {chosen.reason}",) if chosen is not None and chosen.reason else ()),
        confidence=confidence,
        as_of=provider.as_of,
        source=provider.source,
        nodes=reference.nodes if status != "unknown" else None,
        list_rate_usd=floor,
        new_accounts=provider.new_accounts,
    )


def _break_reason(reference: PlanFit, custom: list[PlanFit], fits: Sequence[PlanFit]) -> str:
    if reference.status == "does_not_fit":
        broken = "; ".join(check.describe() for check in reference.breaks)
        reason = f"{broken} on {reference.name}, the largest listed plan"
        if reference.monthly_usd is None:
            reason += " (custom price, contact sales)"
    else:
        reason = reference.reason or "no plan is usable"
    unsuitable = [fit for fit in fits if fit.status == "unsuitable" and fit is not reference]
    if unsuitable:
        reason += "; " + "; ".join(f"{fit.name}: {fit.reason}" for fit in unsuitable)
    if custom:
        reason += "; " + ", ".join(fit.name for fit in custom) + ": custom price (contact sales)"
    return reason


def _unknown_reason(unknown: list[PlanFit], custom: list[PlanFit]) -> str:
    names = ", ".join(fit.name for fit in unknown)
    reason = f"prices or limits unknown for {names}"
    fields = sorted({field for fit in unknown for field in fit.unknown_fields})
    if fields:
        reason += f" (unknown in the pricing data: {', '.join(fields)})"
    if custom:
        reason += "; " + ", ".join(fit.name for fit in custom) + ": custom price"
    return reason


_CONFIDENCE_ORDER = ("unknown", "low", "medium", "high")


def _weakest(*levels: str) -> str:
    known = [level for level in levels if level in _CONFIDENCE_ORDER]
    return min(known, key=_CONFIDENCE_ORDER.index, default="unknown")


def _workload_assumptions(w: Workload, prices: Prices, results: Sequence[ProviderEstimate]) -> tuple[str, ...]:
    lines = [
        f"workload: {w.origin}",
        f"{w.days_per_month:g} days a month, every day like the average day"
        + (f"; the busiest UTC day is {w.peak_day_factor:g}× the average" if w.peak_day_factor != 1 else ""),
        f"peak second = {w.peak_factor:g}× the day's average rate"
        + (" (traffic spread evenly; pass --peak-factor for bursts)" if w.peak_factor == 1 else ""),
        f"average message size {w.message_bytes:,.0f} bytes",
    ]
    if w.channels is None and w.peak_channels == w.connections:
        lines.append("active channels at peak = peak connections (pass --channels)")
    elif w.channels is None:
        lines.append(
            "active channels at peak = 1: no connections, but what is published is on a channel (pass --channels)"
        )
    if w.client_events_per_day and w.client_event_recipients is None:
        lines.append("client events reach as many subscribers as publishes (pass --client-event-recipients)")
    if w.presence_events_per_day and w.presence_subscribers is None:
        lines.append("each presence join or leave is told to as many members as publishes reach")
    if w.presence_events_per_day and w.presence_members is None:
        lines.append(
            "a presence channel holds at most one more member than a join is told to; a room that fills from empty "
            "holds more at its fullest (pass --presence-members)"
        )
    if any(result.kind == "selfhosted" for result in results):
        cap = prices.capacity
        lines.append(_selfhosted_caveat(w, results))
        lines.append(f"self-hosted capacity ({cap.confidence} confidence, as of {cap.as_of}): {cap.source}")
    closed = [result.name for result in results if result.kind == "managed" and not result.new_accounts]
    if closed:
        lines.append(
            f"closed to new accounts: {', '.join(closed)}; the cheapest managed option and the crossovers against "
            "every managed option leave them out"
        )
    lines.append(f"pricing data {prices.version} (as of {prices.as_of}, {prices.origin})")
    return tuple(lines)


def _selfhosted_caveat(w: Workload, results: Sequence[ProviderEstimate]) -> str:
    """What a self-hosted figure leaves out that a managed price includes, for the node counts priced."""
    priced = [result.nodes for result in results if result.kind == "selfhosted" and result.status == "fits"]
    nodes = nodes_caveat(w.min_nodes, [count for count in priced if count is not None])
    return (
        f"self-hosted figures are machines only, {nodes}; the time to run, patch and watch them (on call) is not "
        "priced, while a managed price includes it"
    )


def nodes_caveat(min_nodes: int, priced: Collection[int]) -> str:
    """What the self-hosted node counts ``priced`` lack (``min_nodes``: --min-nodes): one node has no failover, and
    several share one Redis, itself not redundant. Said of the counts priced, which may be more than the load needs
    (their transfer allowances make more nodes cheaper)."""
    redis = "behind one Redis, itself not redundant"
    if min_nodes > 1:
        return f"at least {min_nodes} nodes (--min-nodes), {redis}"
    single = "one node, with no failover: pass --min-nodes 2 for a standby"
    several = sorted({count for count in priced if count > 1})
    if not several:
        return single
    counts = str(several[0]) if len(several) == 1 else f"{several[0]} to {several[-1]}"
    more = f"{counts} nodes where the load or their transfer allowances take more, {redis}"
    if 1 in priced:
        return f"one node where one is priced, with no failover (pass --min-nodes 2 for a standby); {more}"
    return more


# --- across scales --------------------------------------------------------------------------------------------------


def geometric_scales(low: float, high: float, points: int) -> tuple[float, ...]:
    """``points`` scales from ``low`` to ``high``, evenly spaced on a log scale; the ends are exactly ``low`` and
    ``high`` (a product of powers would overshoot ``high`` by a rounding error), and no step overflows, however wide
    the range (``high ÷ low`` may be beyond a float: the steps are taken between logarithms)."""
    if not 0 < low < high < math.inf or points < 2:
        raise ValueError(f"need 0 < low < high < inf and points ≥ 2, got {low}, {high}, {points}")
    first, last = math.log(low), math.log(high)
    inner = (math.exp(first + (last - first) * i / (points - 1)) for i in range(1, points - 1))
    return (low, *(min(max(k, low), high) for k in inner), high)


def sweep(workload: Workload, prices: Prices, scales: Sequence[float]) -> tuple[Estimate, ...]:
    """`estimate` of ``workload.scaled(k)`` for every k in ``scales``."""
    return tuple(estimate(workload.scaled(k), prices) for k in scales)


def _costs(est: Estimate) -> dict[str, float]:
    return {p.provider: math.inf if p.monthly_usd is None else p.monthly_usd for p in est.providers}


class _Offer(Protocol):
    """A provider, or a provider's estimate: what kind it is and whether new customers can buy it."""

    @property
    def kind(self) -> ProviderKind: ...

    @property
    def new_accounts(self) -> bool: ...


_OfferT = TypeVar("_OfferT", bound=_Offer)


def _compared_managed(offers: Iterable[_OfferT]) -> list[_OfferT]:
    """The managed options self-hosting is compared with at once: those open to new accounts (every managed one if
    none is, as when only closed ones were asked for)."""
    managed = [offer for offer in offers if offer.kind == "managed"]
    return [offer for offer in managed if offer.new_accounts] or managed


def cheapest_side(est: Estimate) -> CheapestSide:
    """Whether self-hosting or a managed option (one open to new accounts, see `_compared_managed`) is the cheapest
    fitting option in ``est`` (see `CheapestSide`)."""
    costs = _costs(est)
    hosted = min((costs[p.provider] for p in est.providers if p.kind == "selfhosted"), default=math.inf)
    managed = min((costs[p.provider] for p in _compared_managed(est.providers)), default=math.inf)
    if math.isinf(hosted) and math.isinf(managed):
        return "none"
    if hosted < managed:
        return "self-hosting"
    return "managed" if managed < hosted else "same"


def crossovers(
    workload: Workload,
    prices: Prices,
    *,
    low: float = 0.01,
    high: float = 100.0,
    points: int = 61,
    estimates: Sequence[Estimate] | None = None,
) -> tuple[Crossover, ...]:
    """Where, between ``low``× and ``high``× the workload, self-hosting starts or stops being cheaper.

    Compares the cheapest self-hosted option with each managed provider and with the cheapest managed option open to
    new accounts (``managed="*"``; see `_compared_managed`). A plan that does not fit counts as infinitely expensive;
    providers whose prices are unknown at every scale are skipped. Each change between two grid points is narrowed
    down by bisection. A change is a crossover only between options that fit: where the cheaper side fits on both
    sides of it (self-hosting that stops fitting where the managed side does not fit either is no crossover, only
    the end of both).
    """
    managed = [p for p in prices.providers if p.kind == "managed"]
    hosted = [p for p in prices.providers if p.kind == "selfhosted"]
    if not managed or not hosted or workload.connections == 0:
        return ()
    scales = geometric_scales(low, high, points)
    grid = list(estimates) if estimates is not None else list(sweep(workload, prices, scales))
    if len(grid) != len(scales):
        raise ValueError("estimates must match the scale grid")
    hosted_ids = {p.id for p in hosted}
    targets: list[tuple[str, str, set[str]]] = [
        (p.id, p.name if p.new_accounts else f"{p.name} (existing accounts only)", {p.id}) for p in managed
    ]
    compared = _compared_managed(managed)
    every = "every managed option" + ("" if len(compared) == len(managed) else " open to new accounts")
    targets.append(("*", every, {p.id for p in compared}))
    found: list[Crossover] = []
    for target, target_name, ids in targets:
        if all(math.isinf(min(_costs(est)[i] for i in ids)) for est in grid):
            continue

        def sides(est: Estimate, ids: set[str] = ids) -> tuple[float, float]:
            """(cheapest self-hosted, cheapest of ``ids``), infinite where nothing fits."""
            costs = _costs(est)
            return min(costs[i] for i in hosted_ids), min(costs[i] for i in ids)

        def cheaper(est: Estimate) -> bool:
            best_hosted, best_managed = sides(est)
            return best_hosted < best_managed

        states = [cheaper(est) for est in grid]
        for i in range(len(grid) - 1):
            if states[i] == states[i + 1]:
                continue
            lo, hi = scales[i], scales[i + 1]
            subset = ids | hosted_ids
            for _ in range(30):
                # The geometric mean, taken so that tiny or huge scales neither underflow nor overflow.
                mid = min(max(math.sqrt(lo) * math.sqrt(hi), lo), hi)
                if cheaper(estimate(workload.scaled(mid), prices, providers=subset)) == states[i]:
                    lo = mid
                else:
                    hi = mid
            before = estimate(workload.scaled(lo), prices, providers=subset)
            after = estimate(workload.scaled(hi), prices, providers=subset)
            if math.isinf(min(sides(before))) or math.isinf(min(sides(after))):
                continue  # nothing fits on one side of the change: no option takes over from another
            # The self-hosted option named is the one that is cheaper: after the change ("above"), or before it.
            hosted_side = after if states[i + 1] else before
            hosted_costs = _costs(hosted_side)
            best = min(
                (p for p in hosted_side.providers if p.kind == "selfhosted"), key=lambda p: hosted_costs[p.provider]
            )
            managed_cost = sides(after)[1]
            found.append(
                Crossover(
                    managed=target,
                    managed_name=target_name,
                    direction="above" if states[i + 1] else "below",
                    connections=workload.scaled(lo).connections,
                    scale=hi,
                    selfhosted=best.provider,
                    selfhosted_plan=best.plan or "",
                    managed_usd=None if math.isinf(managed_cost) else managed_cost,
                    selfhosted_usd=best.monthly_usd,
                    selfhosted_nodes=best.nodes,
                )
            )
    return tuple(found)

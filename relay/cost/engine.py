"""`estimate`: the workload against every provider; `sweep` and `crossovers`: the same across scales. All pure."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from .models import Crossover, Estimate, PlanFit, Prices, Provider, ProviderEstimate, ProviderStatus, Workload
from .rules import assumptions_for, evaluate

__all__ = ["crossovers", "estimate", "geometric_scales", "sweep"]


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
    unknown = [fit for fit in fits if fit.status == "unknown"]
    custom = [fit for fit in fits if fit.status == "custom"]
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
        limit, confidence = _unknown_reason(unknown, custom), "unknown"
    else:
        # Why nothing fits: the limits that break on the largest listed plan.
        broken = [fit for fit in fits if fit.status == "does_not_fit"]
        status, reference = "does_not_fit", broken[-1] if broken else fits[-1]
        limit, confidence = _break_reason(reference, custom, fits), provider.confidence
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
        assumptions=assumptions_for(workload, provider, prices),
        confidence=confidence,
        as_of=provider.as_of,
        source=provider.source,
        nodes=reference.nodes if status != "unknown" else None,
    )


def _break_reason(reference: PlanFit, custom: list[PlanFit], fits: Sequence[PlanFit]) -> str:
    if reference.status == "does_not_fit":
        broken = "; ".join(check.describe() for check in reference.breaks)
        reason = f"{broken} on {reference.name}, the largest listed plan"
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
    if w.channels is None:
        lines.append("active channels at peak = peak connections (pass --channels)")
    if w.client_events_per_day and w.client_event_recipients is None:
        lines.append("client events reach as many subscribers as publishes (pass --client-event-recipients)")
    if w.presence_events_per_day and w.presence_subscribers is None:
        lines.append("each presence join or leave is told to as many members as publishes reach")
    if any(result.kind == "selfhosted" for result in results):
        cap = prices.capacity
        lines.append(f"self-hosted capacity ({cap.confidence} confidence, as of {cap.as_of}): {cap.source}")
    lines.append(f"pricing data {prices.version} (as of {prices.as_of}, {prices.origin})")
    return tuple(lines)


# --- across scales --------------------------------------------------------------------------------------------------


def geometric_scales(low: float, high: float, points: int) -> tuple[float, ...]:
    if not 0 < low < high or points < 2:
        raise ValueError(f"need 0 < low < high and points ≥ 2, got {low}, {high}, {points}")
    ratio = (high / low) ** (1 / (points - 1))
    return tuple(low * ratio**i for i in range(points))


def sweep(workload: Workload, prices: Prices, scales: Sequence[float]) -> tuple[Estimate, ...]:
    """`estimate` of ``workload.scaled(k)`` for every k in ``scales``."""
    return tuple(estimate(workload.scaled(k), prices) for k in scales)


def _costs(est: Estimate) -> dict[str, float]:
    return {p.provider: math.inf if p.monthly_usd is None else p.monthly_usd for p in est.providers}


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

    Compares the cheapest self-hosted option with each managed provider and with the cheapest managed option
    (``managed="*"``). A plan that does not fit counts as infinitely expensive; providers whose prices are unknown
    at every scale are skipped. Each change between two grid points is narrowed down by bisection.
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
    targets: list[tuple[str, str, set[str]]] = [(p.id, p.name, {p.id}) for p in managed]
    targets.append(("*", "every managed option", {p.id for p in managed}))
    found: list[Crossover] = []
    for target, target_name, ids in targets:
        if all(math.isinf(min(_costs(est)[i] for i in ids)) for est in grid):
            continue

        def cheaper(est: Estimate, ids: set[str] = ids) -> bool:
            costs = _costs(est)
            best_hosted = min(costs[i] for i in hosted_ids)
            return best_hosted < min(costs[i] for i in ids)

        states = [cheaper(est) for est in grid]
        for i in range(len(grid) - 1):
            if states[i] == states[i + 1]:
                continue
            lo, hi = scales[i], scales[i + 1]
            subset = ids | hosted_ids
            for _ in range(30):
                mid = math.sqrt(lo * hi)
                if cheaper(estimate(workload.scaled(mid), prices, providers=subset)) == states[i]:
                    lo = mid
                else:
                    hi = mid
            after = estimate(workload.scaled(hi), prices, providers=subset)
            best = min((p for p in after.providers if p.kind == "selfhosted"), key=lambda p: _costs(after)[p.provider])
            managed_cost = min(_costs(after)[i] for i in ids)
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
                )
            )
    return tuple(found)

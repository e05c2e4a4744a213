"""`relay cost`: what a realtime workload costs on each provider, and when self-hosting pays off.

    from relay.cost import Workload, default_prices, estimate

    result = estimate(Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49), default_prices())
    result.provider("pusher").plan        # "startup"

`estimate` is pure: the pricing data and the workload are its only inputs. docs/cost.md explains the model.
"""

from __future__ import annotations

from .engine import crossovers, estimate, geometric_scales, sweep
from .models import (
    Capacity,
    Crossover,
    Estimate,
    LimitCheck,
    Model,
    Plan,
    PlanFit,
    Prices,
    Provider,
    ProviderEstimate,
    Workload,
)
from .pricing import default_prices, load_prices, parse_prices
from .usage import Usage, UsageDay, load_usage, parse_usage, workload_from_usage

__all__ = [
    "Capacity",
    "Crossover",
    "Estimate",
    "LimitCheck",
    "Model",
    "Plan",
    "PlanFit",
    "Prices",
    "Provider",
    "ProviderEstimate",
    "Usage",
    "UsageDay",
    "Workload",
    "crossovers",
    "default_prices",
    "estimate",
    "geometric_scales",
    "load_prices",
    "load_usage",
    "parse_prices",
    "parse_usage",
    "sweep",
    "workload_from_usage",
]

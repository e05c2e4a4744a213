"""Monthly cost against scale for every provider, with the self-hosting crossovers marked (matplotlib, extra `plot`).

matplotlib is imported only when a plot is asked for, and only through its object API (no pyplot, no global backend).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

from relay.errors import ConfigError

from .engine import crossovers, estimate, geometric_scales, nodes_caveat
from .models import Crossover, Estimate, Prices, Workload
from .render import workload_summary

__all__ = ["PlotResult", "check_plot", "footer", "plot_costs"]

FORMATS = ("png", "svg")
_WIDTH_INCHES = 12
_FOOTER_POINTS = 7
# Characters of a footer line: the figure's width over a wide character's (0.7 em, beyond the average letter's, so
# that a line of digits and capitals fits too), less a margin.
_FOOTER_LINE = int(_WIDTH_INCHES * 72 * 0.95 / (_FOOTER_POINTS * 0.7))
# Distinct colours for up to 16 providers (managed lines are solid, self-hosted dashed).
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#e6550d", "#31a354", "#843c39", "#636363", "#ce6dbd",
)  # fmt: skip


@dataclass(frozen=True)
class PlotResult:
    path: Path
    format: str
    legend: tuple[str, ...]
    """The legend's entries, one per provider, in drawing order."""
    drawn: tuple[str, ...]
    """Provider ids drawn with at least one priced point."""
    crossovers: tuple[Crossover, ...]


def plot_costs(
    workload: Workload,
    prices: Prices,
    path: str | Path,
    *,
    low: float = 0.01,
    high: float = 100.0,
    points: int = 61,
    providers: Collection[str] | None = None,
) -> PlotResult:
    """Draw every provider's monthly cost from ``low``× to ``high``× the workload into ``path`` (.png or .svg)."""
    path = Path(path)
    fmt = check_plot(workload, path)
    from matplotlib.figure import Figure
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.lines import Line2D

    chosen = prices
    if providers is not None:
        chosen = replace(prices, providers=tuple(p for p in prices.providers if p.id in providers))
    scales = geometric_scales(low, high, points)
    grid = [estimate(workload.scaled(k), chosen) for k in scales]
    crossings = crossovers(workload, chosen, low=low, high=high, points=points, estimates=grid)
    xs = [est.workload.connections for est in grid]

    figure = Figure(figsize=(_WIDTH_INCHES, 6.5), dpi=100, layout=ConstrainedLayoutEngine(rect=(0, 0, 1, 0.97)))
    axes = figure.add_subplot()
    legend_handles: list[Line2D] = []
    drawn: list[str] = []
    colors: dict[str, str] = {}
    for index, provider in enumerate(chosen.providers):
        colors[provider.id] = _PALETTE[index % len(_PALETTE)]
        ys = [_cost(est, provider.id) for est in grid]
        style = "-" if provider.kind == "managed" else "--"
        label = provider.name if provider.kind == "managed" else f"{provider.name} (self-hosted)"
        if not provider.new_accounts:
            label += " (existing accounts only)"
        if all(math.isnan(y) for y in ys):
            label += ": prices unknown, not drawn"
        else:
            drawn.append(provider.id)
        (line,) = axes.plot(
            xs, ys, style, drawstyle="steps-post", color=colors[provider.id], linewidth=1.6, label=label
        )
        legend_handles.append(line)
    for crossing in crossings:
        if crossing.selfhosted_usd is None:
            continue
        x = workload.scaled(crossing.scale).connections
        if crossing.managed == "*":
            axes.axvline(x, color="black", linestyle=":", linewidth=1)
            axes.annotate(
                f"self-hosting's machines cost less\nabove {crossing.connections:,} connections"
                if crossing.direction == "above"
                else f"self-hosting's machines stop costing less\nabove {crossing.connections:,} connections",
                xy=(x, crossing.selfhosted_usd),
                xytext=(8, 40),
                textcoords="offset points",
                fontsize=9,
                arrowprops={"arrowstyle": "->", "linewidth": 0.8},
            )
        else:
            color = colors.get(crossing.managed, "black")
            axes.plot([x], [crossing.selfhosted_usd], marker="o", markersize=6, color=color, linestyle="none")
    axes.set_xscale("log")
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("peak concurrent connections (the workload scaled; fan-out and message size fixed)")
    axes.set_ylabel("USD per month (cheapest plan that fits)")
    axes.set_title(f"Monthly cost against scale; ×1 = {workload_summary(workload)}", fontsize=9)
    axes.grid(True, which="both", linewidth=0.3, alpha=0.6)
    legend = figure.legend(handles=legend_handles, fontsize=8, loc="outside right upper")
    # Wrapped here, in lines the figure holds, so that the layout makes room for all of them (matplotlib's own wrap
    # happens when drawing, after the layout, in the versions the extra allows).
    figure.supxlabel(
        textwrap.fill(footer(workload, prices, grid), _FOOTER_LINE), x=0.01, ha="left", fontsize=_FOOTER_POINTS
    )
    try:
        figure.savefig(path, format=fmt)
    except OSError as exc:
        raise ConfigError(f"--plot {path}: cannot write it ({exc.strerror or exc})") from exc
    return PlotResult(
        path=path,
        format=fmt,
        legend=tuple(text.get_text() for text in legend.get_texts()),
        drawn=tuple(drawn),
        crossovers=crossings,
    )


def check_plot(workload: Workload, path: Path) -> str:
    """The plot's format from ``path``; `ConfigError` if it cannot be drawn (checked before any output)."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"--plot {path}: the file name must end in .png or .svg")
    if workload.connections == 0:
        raise ConfigError("--plot draws cost against connections: the workload needs --connections > 0")
    # Where it goes: a file in an existing directory (what else cannot be written is only known when writing).
    folder = path.parent
    if not folder.is_dir():
        problem = "is a file, not a directory" if folder.exists() else "does not exist"
        raise ConfigError(f"--plot {path}: cannot write it: {folder} {problem}")
    if path.is_dir():
        raise ConfigError(f"--plot {path}: cannot write it: it is a directory")
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--plot needs matplotlib, the optional extra plot: .venv/bin/pip install -e '.[plot]' in the checkout"
        ) from exc
    return fmt


def footer(workload: Workload, prices: Prices, grid: Collection[Estimate]) -> str:
    """The plot's footnote: what its lines leave out, the self-hosted ones for the node counts priced along ``grid``."""
    priced = [
        result.nodes
        for est in grid
        for result in est.providers
        if result.kind == "selfhosted" and result.status == "fits" and result.nodes is not None
    ]
    capacity = prices.capacity
    return (
        f"Gaps: no listed plan fits. Dots (in a provider's colour): self-hosting becomes cheaper than it. Self-hosted: "
        f"machines only, {nodes_caveat(workload.min_nodes, priced)}; no staff time. Pricing data {prices.version} "
        f"(as of {prices.as_of}); self-hosted capacity {capacity.confidence} confidence (as of {capacity.as_of}). "
        f"{workload.days_per_month:g} days/month."
    )


def _cost(est: Estimate, provider_id: str) -> float:
    result = est.provider(provider_id)
    return math.nan if result.monthly_usd is None else result.monthly_usd

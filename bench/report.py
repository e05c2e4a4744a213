"""Turn the harness's JSON lines into the tables of docs/performance.md: medians, ratios against the peers, targets.

Only the part of the report between the ``bench:begin`` and ``bench:end`` markers is generated; the prose around it
(what changed, profiles, what is not met) is kept as it is.
"""

from __future__ import annotations

import operator
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PEERS = ("nchan", "socketio-node", "python-socketio", "websockets")
COLUMNS = ("relay", *PEERS)
TITLES = {
    "relay": "relay emulator",
    "nchan": "nchan (C)",
    "socketio-node": "Socket.IO (Node)",
    "python-socketio": "python-socketio",
    "websockets": "websockets floor",
}

Row = Mapping[str, Any]


def get(row: Row, path: str) -> Any:
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class Results:
    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows = [row for row in rows if not row.get("error") and row.get("bench_target")]
        self.errors = [row for row in rows if row.get("error")]

    def cell(self, target: str, scenario: str) -> list[Row]:
        return [r for r in self.rows if r["bench_target"] == target and r["bench_scenario"] == scenario]

    def median(self, target: str, scenario: str, path: str) -> float | None:
        values = [get(r, path) for r in self.cell(target, scenario)]
        numbers = [v for v in values if isinstance(v, int | float)]
        return statistics.median(numbers) if numbers else None

    def spread(self, target: str, scenario: str, path: str) -> str:
        values = sorted(v for r in self.cell(target, scenario) if isinstance(v := get(r, path), int | float))
        return f"{num(values[0])}–{num(values[-1])}" if len(values) > 1 else ""

    def runs(self, target: str, scenario: str) -> int:
        return len(self.cell(target, scenario))

    def bottleneck(self, target: str, scenario: str) -> str:
        """The harness's verdict on most runs of a cell (server, generator or neither), "mixed" without a majority."""
        verdicts = [str(r["bottleneck"]) for r in self.cell(target, scenario) if r.get("bottleneck")]
        if not verdicts:
            return "—"
        majority = max(sorted(set(verdicts)), key=verdicts.count)
        return majority if verdicts.count(majority) * 2 > len(verdicts) else "mixed"

    def generator_bound(self, target: str, scenario: str) -> bool:
        """Whether most runs of a cell ran out of load generator before the server (its figure is a lower bound)."""
        return self.bottleneck(target, scenario) == "generator"

    def total(self, target: str, scenario: str, path: str) -> int:
        return sum(int(v) for r in self.cell(target, scenario) if isinstance(v := get(r, path), int | float))


def num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


# (figure, scenario, path, unit, lower is better)
FIGURES = (
    ("server CPU µs per delivery, fan-out 1000 subscribers × 1000", "fanout1000", "server_cpu_us_per_delivery", True),
    ("server CPU µs per delivery, fan-out 5000 subscribers × 200", "fanout5000", "server_cpu_us_per_delivery", True),
    ("deliveries / s, fan-out 1000", "fanout1000", "deliveries_per_s", False),
    ("deliveries / s, fan-out 5000", "fanout5000", "deliveries_per_s", False),
    ("idle memory per subscribed connection, KB (10k)", "idle10k", "server_rss_per_conn_kb", True),
    ("connect + subscribe / s (10k)", "idle10k", "connect_rate", False),
    ("latency p50 ms, 100 subs at 100 publishes/s", "latency", "latency_ms.p50", True),
    ("latency p99 ms, 100 subs at 100 publishes/s", "latency", "latency_ms.p99", True),
    ("server CPU µs per HTTP publish (2000 channels)", "channels", "server_cpu_us_per_publish", True),
    ("HTTP publishes / s (2000 channels)", "channels", "publish_req_per_s", False),
)


def headline(results: Results) -> list[str]:
    lines = [
        "| figure | " + " | ".join(TITLES[c] for c in COLUMNS) + " | relay ÷ nchan | relay ÷ websockets | "
        "relay ÷ Socket.IO |",
        "|---" * (len(COLUMNS) + 4) + "|",
    ]
    for title, scenario, path, _lower in FIGURES:
        values = {c: results.median(c, scenario, path) for c in COLUMNS}
        if all(v is None for v in values.values()):
            continue
        ratios = [ratio(values["relay"], values[peer]) for peer in ("nchan", "websockets", "socketio-node")]
        cells = [num(values[c]) for c in COLUMNS] + [f"{num(r)}×" if r is not None else "n/a" for r in ratios]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "≤": operator.le,
    "≥": operator.ge,
    ">": operator.gt,
}


def met(value: float, goal: str) -> bool:
    """Whether ``value`` meets a goal written as in the issue: ``"≤ 2"``, ``"> 3"``, ``"≥ 1.5 (about)"``."""
    comparison, bound, *_ = goal.split()
    return _COMPARISONS[comparison](value, float(bound))


Cell = tuple[str, str, str]  # (target, scenario, figure path)


def run_ratios(results: Results, numerator: Cell, denominator: Cell) -> list[float]:
    """The ratio within each round that measured both cells (rounds are interleaved: the same minutes of the VM)."""

    def by_run(cell: Cell) -> dict[int, float]:
        target, scenario, path = cell
        found = ((row.get("bench_run"), get(row, path)) for row in results.cell(target, scenario))
        return {run: value for run, value in found if isinstance(run, int) and isinstance(value, int | float)}

    tops, bottoms = by_run(numerator), by_run(denominator)
    return [tops[run] / bottoms[run] for run in sorted(tops.keys() & bottoms.keys()) if bottoms[run]]


def targets(results: Results) -> list[str]:
    """The issue's targets: each the ratio of two cells' medians, with the same ratio round by round beside it."""
    checks: list[tuple[str, Cell, Cell, str]] = []
    for scenario, subs in (("fanout1000", "1000"), ("fanout5000", "5000")):
        relay = ("relay", scenario, "server_cpu_us_per_delivery")
        checks += [
            (f"fan-out CPU per delivery ÷ nchan's ({subs} subscribers)", relay,
             ("nchan", scenario, "server_cpu_us_per_delivery"), "≤ 2"),
            (f"websockets floor's CPU per delivery ÷ relay's ({subs})",
             ("websockets", scenario, "server_cpu_us_per_delivery"), relay, "≥ 1.5 (about)"),
            (f"Socket.IO's CPU per delivery ÷ relay's ({subs})",
             ("socketio-node", scenario, "server_cpu_us_per_delivery"), relay, "> 3"),
        ]  # fmt: skip
    publish = ("relay", "channels", "server_cpu_us_per_publish")
    deflated = ("relay-deflate", "deflate", "server_cpu_us_per_delivery")
    workers = "deliveries/s with --workers 2 ÷ one worker"
    checks += [
        ("idle memory per connection ÷ websockets floor's (10k)", ("relay", "idle10k", "server_rss_per_conn_kb"),
         ("websockets", "idle10k", "server_rss_per_conn_kb"), "≤ 1"),
        ("p99 publish→delivery ÷ nchan's (100 subs, 100/s)", ("relay", "latency", "latency_ms.p99"),
         ("nchan", "latency", "latency_ms.p99"), "≤ 1.2"),
        ("CPU per HTTP publish ÷ nchan's", publish, ("nchan", "channels", "server_cpu_us_per_publish"), "≤ 3"),
        ("Socket.IO's CPU per HTTP publish ÷ relay's", ("socketio-node", "channels", "server_cpu_us_per_publish"),
         publish, "> 4"),
        ("connect + subscribe rate ÷ websockets floor's (10k)", ("relay", "idle10k", "connect_rate"),
         ("websockets", "idle10k", "connect_rate"), "≥ 1"),
        ("CPU per delivery with permessage-deflate ÷ uncompressed (fan-out 1000)", deflated,
         ("relay", "deflate", "server_cpu_us_per_delivery"), "≤ 1.5"),
        ("the same, against uncompressed with the same client (`ws`)", deflated,
         ("relay-ws", "deflate", "server_cpu_us_per_delivery"), "≤ 1.5"),
        (workers, ("relay-w2", "workers", "deliveries_per_s"), ("relay-w1", "workers", "deliveries_per_s"), "≥ 1.6"),
    ]  # fmt: skip
    # A ratio whose cells both ran out of load generator compares the generator with itself.
    generator_bound = results.generator_bound("relay-w1", "workers") and results.generator_bound("relay-w2", "workers")
    lines = ["| target | measured | single rounds | goal | met |", "|---|---|---|---|---|"]
    for label, numerator, denominator, goal in checks:
        value = ratio(results.median(*numerator), results.median(*denominator))
        if value is None:
            continue
        verdict = "yes" if met(value, goal) else "**no**"
        if label == workers and verdict != "yes" and generator_bound:
            verdict += ": both cells generator-bound, not measurable on this machine"
        elif label == workers and verdict != "yes" and results.bottleneck("relay-w2", "workers") == "server":
            verdict += ": the machine's cores are full (two workers and the generator; see the --workers table)"
        rounds = run_ratios(results, numerator, denominator)
        within = sum(met(each, goal) for each in rounds)
        single = f"{', '.join(num(each) for each in rounds)} (met in {within} of {len(rounds)})" if rounds else "—"
        lines.append(f"| {label} | {num(value)} | {single} | {goal} | {verdict} |")
    return lines


def details(results: Results) -> list[str]:
    """Every cell: medians (range), the bottleneck verdict and losses."""
    lines = [
        "| scenario | target | runs | main figure (median, range) | server CPU µs / delivery or publish | "
        "server / generator CPU util | bottleneck | lost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    main = {
        "idle10k": ("server_rss_per_conn_kb", "KB / conn"),
        "connect": ("connect_rate", "connect / s"),
        "fanout1000": ("deliveries_per_s", "deliveries / s"),
        "fanout5000": ("deliveries_per_s", "deliveries / s"),
        "workers": ("deliveries_per_s", "deliveries / s"),
        "deflate": ("deliveries_per_s", "deliveries / s"),
        "latency": ("latency_ms.p99", "p99 ms"),
        "channels": ("publish_req_per_s", "publishes / s"),
    }
    seen: dict[tuple[str, str], None] = {}
    for row in results.rows:
        seen[(row["bench_scenario"], row["bench_target"])] = None
    order = list(main)
    for scenario, target in sorted(seen, key=lambda k: (order.index(k[0]) if k[0] in order else 99, k[1])):
        path, unit = main.get(scenario, ("deliveries_per_s", ""))
        value = results.median(target, scenario, path)
        spread = results.spread(target, scenario, path)
        cpu = results.median(target, scenario, "server_cpu_us_per_delivery") or results.median(
            target, scenario, "server_cpu_us_per_publish"
        )
        if scenario in ("idle10k", "connect"):
            utils = (
                results.median(target, scenario, "connect_phase.server_cpu_util"),
                results.median(target, scenario, "connect_phase.gen_cpu_util"),
            )
            extra = f"{num(results.median(target, scenario, 'connect_rate'))} connect/s"
            figure = f"{num(value)} {unit} ({spread}); {extra}"
        else:
            utils = (
                results.median(target, scenario, "server_cpu_util"),
                results.median(target, scenario, "gen_cpu_util"),
            )
            figure = f"{num(value)} {unit}" + (f" ({spread})" if spread else "")
        verdict = results.bottleneck(target, scenario)
        lost = results.total(target, scenario, "lost")
        lines.append(
            f"| {scenario} | {target} | {results.runs(target, scenario)} | {figure} | {num(cpu)} | "
            f"{num(utils[0])} / {num(utils[1])} | {verdict} | {lost} |"
        )
    return lines


def machine() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo") as stream:
        for line in stream:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as stream:
        memory = next((line.split()[1] for line in stream if line.startswith("MemTotal")), "0")

    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip() or "?"
        except OSError:
            return "?"

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(int(memory) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": version(["node", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def render(rows: Iterable[Row], *, machine: Mapping[str, Any], command: str, results: Path | None = None) -> str:
    data = Results(rows)
    out = [
        BEGIN,
        "<!-- generated by bench/report.py from the run's JSON lines; edit the prose outside these markers -->",
        "",
        f"Measured {machine['date']} on {machine['nproc']} × {machine['cpu']}, {machine['memory_gb']} GB RAM, "
        f"Linux {machine['kernel']}, Python {machine['python']}, Node {machine['node']}"
        + (f"; the run took {machine['duration_s'] / 60:.1f} min" if "duration_s" in machine else "")
        + ".",
        "",
        "```",
        command,
        "```",
        "",
        "Servers pinned to CPU 1, the load generator to CPU 0 (the `--workers` cells: neither is pinned). Medians of "
        f"{max((data.runs('relay', s) for s in ('fanout1000', 'idle10k')), default=0)} runs"
        + (f"; raw data `{results}`" if results else "")
        + ".",
        "",
        "### Side by side",
        "",
        *headline(data),
        "",
        "### Targets (issue 9), each a ratio within this run",
        "",
        *targets(data),
        "",
        "### Every cell",
        "",
        *details(data),
    ]
    deflate = [
        (label, *(data.median(t, "deflate", path) for path in ("server_cpu_us_per_delivery", "deliveries_per_s")))
        for label, t in (
            ("relay, uncompressed (raw client)", "relay"),
            ("relay, uncompressed (`ws` client)", "relay-ws"),
            ("relay, permessage-deflate (`ws` client)", "relay-deflate"),
            ("websockets floor, uncompressed (raw client)", "websockets"),
            ("websockets floor, permessage-deflate (`ws` client)", "websockets-deflate"),
        )
    ]
    if any(cpu is not None for _, cpu, _ in deflate):
        out += ["", "### permessage-deflate (fan-out 1000 subscribers × 300)", ""]
        out += ["| server and client | server CPU µs / delivery | deliveries / s |", "|---|---|---|"]
        out += [f"| {label} | {num(cpu)} | {num(rate)} |" for label, cpu, rate in deflate if cpu is not None]
    workers = [(t, data.cell(t, "workers")) for t in ("relay-w1", "relay-w2")]
    if all(cells for _, cells in workers):
        title = "### --workers 2 against one worker (fan-out 4000 × 1500, 32 in flight, unpinned, bench/sink.c)"
        out += ["", title, ""]
        out += [
            "| emulator | deliveries / s | server CPU µs / delivery | server CPU (cores) | generator CPU (cores) "
            "| generator CPU µs / delivery | bottleneck |",
            "|---|---|---|---|---|---|---|",
        ]
        for target, _ in workers:
            figures = (
                data.median(target, "workers", path)
                for path in (
                    "deliveries_per_s",
                    "server_cpu_us_per_delivery",
                    "server_cpu_util",
                    "gen_cpu_util",
                    "gen_cpu_us_per_delivery",
                )
            )
            cells = [num(value) for value in figures] + [data.bottleneck(target, "workers")]
            out.append(f"| {target} | " + " | ".join(cells) + " |")
    before = [
        (title, scenario, path)
        for title, scenario, path, _ in FIGURES
        if data.median("relay-before", scenario, path) is not None
    ]
    if before:
        out += ["", "### Before and after (relay-before: the source tree given with --before-src)", ""]
        out += ["| figure | before | after | after ÷ before |", "|---|---|---|---|"]
        for title, scenario, path in before:
            old, new = data.median("relay-before", scenario, path), data.median("relay", scenario, path)
            out.append(f"| {title} | {num(old)} | {num(new)} | {num(ratio(new, old))}× |")
        old = data.median("relay-before-deflate", "deflate", "server_cpu_us_per_delivery")
        new = data.median("relay-deflate", "deflate", "server_cpu_us_per_delivery")
        if old is not None and new is not None:
            out.append(
                f"| server CPU µs per delivery, client offering permessage-deflate | {num(old)} "
                f"(not negotiated) | {num(new)} (negotiated) | {num(ratio(new, old))}× |"
            )
    if data.errors:
        out += ["", f"{len(data.errors)} cell(s) failed or were skipped:", ""]
        out += [f"- {r.get('bench_scenario')} / {r.get('bench_target')} run {r.get('bench_run')}: {r['error']}"
                for r in data.errors]  # fmt: skip
    out.append(END)
    return "\n".join(out)


TEMPLATE = """# Performance

{generated}
"""


def write(
    path: Path, rows: Iterable[Row], *, machine: Mapping[str, Any], command: str, results: Path | None = None
) -> None:
    generated = render(rows, machine=machine, command=command, results=results)
    text = path.read_text() if path.exists() else TEMPLATE.format(generated=BEGIN + "\n" + END)
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        text = text.rstrip() + "\n\n" + BEGIN + "\n" + END + "\n"
    path.write_text(pattern.sub(lambda _: generated, text, count=1))

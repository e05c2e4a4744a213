"""``relay cost``: the command line over `relay.cost.estimate`.

`add_cost_command` registers the subcommand on the ``relay`` parser; ``args.run(args)`` prints the answer and
returns the exit code. Bad input raises `ConfigError` (``relay`` prints it and exits with 2).
"""

from __future__ import annotations

import argparse
import codecs
import math
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from relay.errors import ConfigError

from .models import MAX_QUANTITY, MINUTES_PER_DAY, SECONDS_PER_DAY, Crossover, Prices, Workload, check_peak

__all__ = ["add_cost_command", "parse_size", "run_cost"]

# Scales the crossovers (and the no-crossover sentence) are judged at, evenly spread over --plot-range on a log scale.
_POINTS = 61
# The scale range of the crossovers and the plot without --plot-range.
_DEFAULT_RANGE = (0.01, 100.0)

_DESCRIPTION = """\
What a realtime workload costs on Pusher Channels, Ably, Supabase Realtime and PubNub, and on self-hosted
emulator nodes (DigitalOcean, Hetzner, Fly.io, Render, Railway): for each provider the billed units by its own
counting rules, the cheapest plan that fits (or the limit that breaks), the monthly cost and the headroom.

Describe the workload with the flags below (per average day), or pass a usage file measured by the emulator.
Prices come from the bundled, dated pricing data (or --pricing FILE). docs/cost.md explains the model."""

_EPILOG = """\
examples:
  relay cost --connections 500 --publishes-per-day 20000 --subscribers-per-publish 49
  relay cost --connections 2000 --publishes-per-second 50 --subscribers-per-publish 20 --peak-factor 4
  relay cost --usage usage.json --scale 10 --format json
  relay cost --connections 500 --publishes-per-day 20000 --subscribers-per-publish 49 --plot cost.png"""

# Flags that describe a workload; with --usage the file describes it instead.
_DESCRIBING = (
    "connections",
    "publishes_per_day",
    "publishes_per_second",
    "subscribers_per_publish",
    "client_events_per_day",
    "client_event_recipients",
    "presence_events_per_day",
    "presence_subscribers",
    "presence_members",
    "webhooks_per_day",
    "history_messages_per_day",
    "api_requests_per_day",
    "message_size",
    "peak_factor",
    "peak_day_factor",
    "channels",
    "average_connections",
    "average_channels",
)


def _number(text: str) -> float:
    """A number as written: ``20000``, ``20,000`` (commas between groups of three), ``20_000``, ``2e4``."""
    cleaned = text.strip()
    if "," in cleaned:
        if not _GROUPED.fullmatch(cleaned):  # "1,,0" was 10: a comma dropped wherever it stood
            raise argparse.ArgumentTypeError(f"not a number: {text!r} (commas group thousands, as in 1,000,000)")
        cleaned = cleaned.replace(",", "")
    try:
        return float(cleaned)  # which takes 1_000 as Python does, between digits
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")
_SIZE = re.compile(
    r"\A\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*(B|KB|KIB|K|MB|MIB|M)?\s*\Z", re.IGNORECASE
)
_SIZE_UNITS = {"B": 1, "KB": 1000, "K": 1024, "KIB": 1024, "MB": 1_000_000, "M": 1024**2, "MIB": 1024**2}


def parse_size(text: str) -> float:
    """A size in bytes: ``512``, ``16KiB`` (16,384), ``10KB`` (10,000), ``1MiB``."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use bytes, or a unit: B, KB, KiB, MB, MiB)")
    try:
        value = _number(match.group(1))
    except argparse.ArgumentTypeError:
        hint = " (commas group thousands, as in 1,000)" if "," in text else ""  # else misplaced underscores: 1__0
        raise argparse.ArgumentTypeError(f"not a size: {text!r}{hint}") from None
    return value * _SIZE_UNITS[(match.group(2) or "B").upper()]


def _scale_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a range LOW:HIGH of scale factors: {text!r}") from None
    if not 0 < low < high < math.inf:
        raise argparse.ArgumentTypeError(f"need 0 < LOW < HIGH, both finite, got {text!r}")
    return low, high


def _path(text: str) -> Path:
    """A file's name. An empty one (``--usage "$FILE"`` with the variable unset) is refused: as ``Path("")`` it was the
    current directory, said as "usage file . cannot be read: Is a directory"."""
    if not text:
        raise argparse.ArgumentTypeError("must be a file name, got ''")
    return Path(text)


def add_cost_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``relay cost`` on the ``relay`` command's subparsers; ``args.run(args)`` runs it."""
    parser = subparsers.add_parser(
        "cost",
        help="what a workload costs on each provider, and when self-hosting pays off",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    work = parser.add_argument_group("workload (per average day; omit with --usage)")
    num: dict[str, Any] = {"type": _number, "default": None}
    work.add_argument("--connections", metavar="N", help="peak concurrent connections, all apps of the account", **num)
    work.add_argument(
        "--publishes-per-day",
        metavar="N",
        help="events published through the server API per day, one per channel (default 0)",
        **num,
    )
    work.add_argument(
        "--publishes-per-second",
        metavar="N",
        help="publishes per second at the peak; with --publishes-per-day it sets the peak factor, alone it gives "
        "publishes per day = N × 86,400 ÷ (--peak-factor × --peak-day-factor)",
        **num,
    )
    work.add_argument(
        "--subscribers-per-publish", metavar="S", help="average subscribers receiving each publish (default 0)", **num
    )
    work.add_argument(
        "--client-events-per-day", metavar="N", help="client events sent by connections per day (default 0)", **num
    )
    work.add_argument(
        "--client-event-recipients",
        metavar="N",
        help="average subscribers receiving a client event, sender excluded (default: --subscribers-per-publish)",
        **num,
    )
    work.add_argument(
        "--presence-events-per-day", metavar="N", help="presence members joining + leaving per day (default 0)", **num
    )
    work.add_argument(
        "--presence-subscribers",
        metavar="N",
        help="average members told of each join or leave (default: --subscribers-per-publish)",
        **num,
    )
    work.add_argument(
        "--presence-members",
        metavar="N",
        help="most members one presence channel holds at once, which providers limit (default: "
        "--presence-subscribers + 1)",
        **num,
    )
    work.add_argument("--webhooks-per-day", metavar="N", help="webhook requests per day (default 0)", **num)
    work.add_argument(
        "--history-messages-per-day",
        metavar="N",
        help="messages read from Ably's history per day: history and presence queries' answers, rewinds (default 0)",
        **num,
    )
    work.add_argument(
        "--api-requests-per-day",
        metavar="N",
        help="HTTP API calls other than publishes (channel info, users) per day (default 0)",
        **num,
    )
    work.add_argument(
        "--message-size",
        metavar="SIZE",
        type=parse_size,
        default=None,
        help="average message data size: bytes or with a unit, e.g. 800, 16KiB, 10KB (default 1KiB)",
    )
    work.add_argument(
        "--peak-factor",
        metavar="F",
        help="busiest second's rate ÷ the day's average rate, for per-second limits and CPU (default 1; at most "
        "86,400: the second holds at most the whole day)",
        **num,
    )
    work.add_argument(
        "--peak-day-factor",
        metavar="F",
        help="busiest UTC day ÷ the average day, for daily caps such as Pusher's (default 1)",
        **num,
    )
    work.add_argument(
        "--channels", metavar="N", help="channels active at once at the peak (default: --connections)", **num
    )
    work.add_argument(
        "--average-connections",
        metavar="N",
        help="connections open on average over the day, for connection-minutes (default: the peak, all day)",
        **num,
    )
    work.add_argument(
        "--average-channels",
        metavar="N",
        help="channels active on average, for channel-minutes (default: the peak channel count, all day)",
        **num,
    )
    both = parser.add_argument_group("either way")
    both.add_argument(
        "--mau", metavar="N", help="monthly active users, for MAU pricing (default: 10 × peak connections)", **num
    )
    both.add_argument(
        "--no-echo",
        dest="echo",
        action="store_false",
        help="Ably: client publishes are not echoed back to the sender (echo is on by default and billed)",
    )
    both.add_argument("--days-per-month", metavar="D", type=_number, default=30.0, help="days billed (default 30)")
    both.add_argument(
        "--min-nodes",
        metavar="N",
        type=_number,
        default=1.0,
        help="self-hosted nodes at least, behind Redis: 2 or more for failover (default 1: one node, no failover)",
    )
    both.add_argument(
        "--scale",
        metavar="K",
        type=_number,
        default=1.0,
        help="K times the users: connections, channels, users and per-day counts × K; fan-out and sizes kept",
    )
    measured = parser.add_argument_group("measured workload")
    measured.add_argument(
        "--usage", metavar="FILE", type=_path, help="usage file written by the emulator's usage meter (JSON)"
    )
    measured.add_argument("--app", metavar="APP_ID", help="only this app of the usage file (default: all apps summed)")
    data = parser.add_argument_group("pricing and output")
    data.add_argument(
        "--pricing", metavar="FILE", type=_path, help="your own pricing data (TOML, same format as the built-in)"
    )
    data.add_argument(
        "--provider",
        metavar="ID",
        action="append",
        help="only this provider (repeatable), e.g. pusher, ably_rb, supabase, pubnub, digitalocean, hetzner",
    )
    data.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output (default table)")
    data.add_argument("--plot", metavar="FILE", type=_path, help="also draw cost against scale into FILE.png or .svg")
    data.add_argument(
        "--plot-range",
        metavar="LOW:HIGH",
        type=_scale_range,
        default=None,
        help="scale factors the plot and the crossovers span (default 0.01:100; without --plot, the crossovers stop "
        "where the workload's counts would pass 1e18)",
    )
    parser.set_defaults(run=run_cost)
    return parser


def _whole(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value.is_integer() else value


def workload_from_args(args: argparse.Namespace) -> Workload:
    """The workload the flags (or the usage file) describe, scaled by ``--scale``."""
    if args.usage is not None:
        given = [name for name in _DESCRIBING if getattr(args, name) is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(f"--usage describes the workload; it cannot be combined with {flags}")
        from .usage import load_usage, short_measurement, workload_from_usage

        usage = load_usage(args.usage)
        workload = workload_from_usage(
            usage,
            app=args.app,
            days_per_month=args.days_per_month,
            echo=args.echo,
            mau=_whole(args.mau),  # type: ignore[arg-type]
        )
        warning = short_measurement(usage, args.app)
        if warning is not None:  # also among the assumptions, but those come last, under the table
            print(f"relay cost: warning: {usage.origin}: {warning}", file=sys.stderr)
    else:
        if args.app is not None:
            raise ConfigError("--app selects an app of a usage file: pass --usage FILE too")
        if args.connections is None:
            raise ConfigError(
                "describe the workload (at least --connections; see relay cost --help) or pass --usage FILE"
            )
        workload = Workload(**_described(args))
        impossible = workload.impossible_fan_out()
        if impossible is not None:
            raise ConfigError(impossible)
    return replace(workload, min_nodes=_whole(args.min_nodes)).scaled(args.scale)  # type: ignore[arg-type]


def _described(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"connections": _whole(args.connections), "echo": args.echo}
    for name in (
        "subscribers_per_publish",
        "client_events_per_day",
        "client_event_recipients",
        "presence_events_per_day",
        "presence_subscribers",
        "presence_members",
        "webhooks_per_day",
        "history_messages_per_day",
        "api_requests_per_day",
        "peak_day_factor",
    ):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name in ("channels", "mau"):
        if getattr(args, name) is not None:
            fields[name] = _whole(getattr(args, name))
    if args.message_size is not None:
        fields["message_bytes"] = args.message_size
    fields["days_per_month"] = args.days_per_month
    if args.average_connections is not None:
        if args.connections is not None and args.average_connections > args.connections:
            raise ConfigError(
                f"--average-connections {args.average_connections:g} is above --connections {args.connections:g}, "
                "the peak: an average is at most the peak"
            )
        fields["connection_minutes_per_day"] = _non_negative(args.average_connections, "--average-connections") * (
            MINUTES_PER_DAY
        )
    if args.average_channels is not None:
        peak_channels, named = _peak_channels(args)
        if args.average_channels > peak_channels:
            raise ConfigError(
                f"--average-channels {args.average_channels:g} is above {named}, the peak: an average is at most the "
                "peak"
            )
        fields["channel_minutes_per_day"] = _non_negative(args.average_channels, "--average-channels") * (
            MINUTES_PER_DAY
        )
    per_day, per_second, peak = args.publishes_per_day, args.publishes_per_second, args.peak_factor
    if per_second is not None:
        _non_negative(per_second, "--publishes-per-second")
        for name in ("peak_factor", "peak_day_factor"):  # checked before publishes per day are derived from them
            if getattr(args, name) is not None:
                check_peak(name, getattr(args, name))
        if per_day is not None and peak is not None:
            raise ConfigError(
                "--publishes-per-day, --publishes-per-second and --peak-factor: give at most two (the third follows)"
            )
        if per_day is None:  # the peak second is on the busiest day: the average day is that much quieter
            per_day = per_second * SECONDS_PER_DAY / ((peak or 1.0) * (args.peak_day_factor or 1.0))
            if per_day > MAX_QUANTITY:
                raise ConfigError(
                    f"--publishes-per-second {per_second:g} makes {per_day:.3g} publishes a day (× 86,400 ÷ the peak "
                    f"factors), more than {MAX_QUANTITY:.0e}, the largest number the cost model takes"
                )
        elif per_day == 0 and per_second > 0:
            raise ConfigError(
                f"--publishes-per-second {per_second:g} with --publishes-per-day 0: a day without publishes has no "
                "peak; give one of them"
            )
        elif per_day > 0:
            peak = _peak_factor(per_second, per_day, args.peak_day_factor)
    if per_day is not None:
        fields["publishes_per_day"] = per_day
    if peak is not None:
        fields["peak_factor"] = peak
    _check_channels(args)
    fields["origin"] = "described by flags"
    return fields


def _peak_factor(per_second: float, per_day: float, peak_day_factor: float | None) -> float:
    """The peak factor ``--publishes-per-second`` and ``--publishes-per-day`` give: the peak second is on the busiest
    day, so it is compared with that day's average rate, and it holds at least that rate and at most the whole day."""
    day_factor = peak_day_factor or 1.0
    busiest = (
        f"--publishes-per-day {per_day:g}"
        if peak_day_factor is None
        else f"--publishes-per-day {per_day:g} × --peak-day-factor {day_factor:g}"
    )
    if per_second > per_day * day_factor:
        raise ConfigError(
            f"--publishes-per-second {per_second:g} is more than the busiest day holds, {busiest} = "
            f"{per_day * day_factor:g} publishes: its busiest second has at most all of them"
        )
    peak = per_second * SECONDS_PER_DAY / (per_day * day_factor)
    if peak < 1:
        raise ConfigError(
            f"--publishes-per-second {per_second:g} is below the busiest day's average rate, {busiest} ÷ "
            f"86,400 = {per_day * day_factor / SECONDS_PER_DAY:.3g}/s: a peak is at least the average"
        )
    return peak


def _on_a_channel(args: argparse.Namespace) -> tuple[str, float] | None:
    """The first flag (and its value) of traffic on a channel: publishes, client events or presence changes."""
    traffic = (
        ("--publishes-per-day", args.publishes_per_day),
        ("--publishes-per-second", args.publishes_per_second),
        ("--client-events-per-day", args.client_events_per_day),
        ("--presence-events-per-day", args.presence_events_per_day),
    )
    return next(((flag, value) for flag, value in traffic if value), None)


def _peak_channels(args: argparse.Namespace) -> tuple[float, str]:
    """The peak channel count, as `Workload.peak_channels` takes it, and how to name it in a message."""
    if args.channels is not None:
        return args.channels, f"--channels {args.channels:g}"
    traffic = _on_a_channel(args)
    if args.connections == 0 and traffic is not None:
        return 1, (
            f"1 (the peak channel count without --channels: --connections 0, but {traffic[0]} {traffic[1]:g} makes a "
            "channel active)"
        )
    return args.connections, f"--connections {args.connections:g} (the peak channel count without --channels)"


def _check_channels(args: argparse.Namespace) -> None:
    """--channels 0 with traffic is impossible: every publish, client event and presence change is on a channel, which
    it makes active. (Described workloads only: a usage file counts the channels it measured active.)"""
    traffic = _on_a_channel(args)
    if args.channels == 0 and traffic is not None:
        raise ConfigError(
            f"--channels 0 with {traffic[0]} {traffic[1]:g}: every publish, client event and presence change is on a "
            "channel, so at least one is active at the peak"
        )


def _non_negative(value: float, flag: str) -> float:
    if not math.isfinite(value):  # argparse takes "nan" and "inf" as numbers
        raise ConfigError(f"{flag} must be a finite number, got {value:g}")
    if value < 0:
        raise ConfigError(f"{flag} must be ≥ 0, got {value:g}")
    return value


def _prices(args: argparse.Namespace) -> Prices:
    from .pricing import default_prices, load_prices

    prices = load_prices(args.pricing) if args.pricing is not None else default_prices()
    if args.provider:
        known = {p.id for p in prices.providers}
        unknown = [p for p in args.provider if p not in known]
        if unknown:
            raise ConfigError(
                f"--provider {', '.join(unknown)}: not in the pricing data; it has: {', '.join(sorted(known))}"
            )
        prices = replace(prices, providers=tuple(p for p in prices.providers if p.id in args.provider))
    return prices


def _at_most(factor: float) -> str:
    """``factor`` for a message saying "at most": short, but never above it."""
    text = f"{factor:g}"
    return text if float(text) <= factor else repr(factor)


def _check_plot_range(workload: Workload, low: float, high: float, plot: Path | None) -> None:
    """The plot (and the crossovers) scale the workload up to ``high``: refuse a range beyond the model, naming the
    flag given (``plot`` is the --plot file when the range is the default one)."""
    largest = workload.largest_scale()
    if high <= largest:
        return
    beyond = f"at ×{high:g} the workload's counts pass {MAX_QUANTITY:.0e}, the largest number the cost model takes"
    if plot is not None:
        raise ConfigError(
            f"--plot {plot} draws the default --plot-range {low:g}:{high:g}: {beyond}; pass --plot-range with HIGH "
            f"at most {_at_most(largest)}"
        )
    raise ConfigError(f"--plot-range {low:g}:{high:g}: {beyond}; lower HIGH to at most {_at_most(largest)}")


def _crossover_range(workload: Workload, args: argparse.Namespace) -> tuple[tuple[float, float], str]:
    """The scale range of the crossovers and the plot, and a note when it is cut short.

    A --plot-range given, or the default one for a plot, must stay within the model (else `ConfigError`). Without
    either, the crossovers are searched over the default range up to the largest scale the workload can take.
    """
    given = args.plot_range is not None
    low, high = args.plot_range if given else _DEFAULT_RANGE
    if given or args.plot is not None:
        _check_plot_range(workload, low, high, None if given else args.plot)
        return (low, high), ""
    largest = workload.largest_scale()
    if high <= largest:  # the workload is within the model, so ×1 (above LOW) always is
        return (low, high), ""
    note = (
        f"crossovers searched from {low:g}× to {largest:g}× (not the default {high:g}×): beyond ×{largest:g} the "
        f"workload's counts would pass {MAX_QUANTITY:.0e}, the largest number the cost model takes"
    )
    return (low, largest), note


def _encodes_unicode(stream: TextIO) -> bool:
    """Whether ``stream`` can write any character (a UTF encoding, or text kept as text), not only a legacy code
    page's (cp1252)."""
    encoding = stream.encoding
    return encoding is None or codecs.lookup(encoding).name.startswith("utf-")


def run_cost(args: argparse.Namespace) -> int:
    """Print the estimate in ``args.format``; draw the plot if asked. Returns the exit code: 0, or 1 when the answer
    cannot be written."""
    from .engine import CheapestSide, cheapest_side, crossovers, estimate, geometric_scales, sweep

    prices = _prices(args)
    workload = workload_from_args(args)
    (low, high), range_note = _crossover_range(workload, args)
    if args.plot is not None:
        from .plot import check_plot

        check_plot(workload, args.plot)
    result = estimate(workload, prices)
    if range_note and workload.connections:
        result = replace(result, assumptions=(*result.assumptions, range_note))
    crossings: tuple[Crossover, ...] = ()
    sides: tuple[tuple[float, CheapestSide], ...] = ()
    if workload.connections:
        scales = geometric_scales(low, high, _POINTS)
        grid = sweep(workload, prices, scales)
        crossings = crossovers(workload, prices, low=low, high=high, points=_POINTS, estimates=grid)
        sides = tuple((scale, cheapest_side(est)) for scale, est in zip(scales, grid, strict=True))
    out = sys.stdout
    try:
        if args.format == "json":
            from .render import to_json

            out.write(to_json(result, crossings, ascii_only=not _encodes_unicode(out)))
        elif args.format == "csv":
            from .render import to_csv

            out.write(to_csv(result))
        else:
            from rich.console import Console

            from .render import print_table

            console = Console(file=out, width=None if out.isatty() else 160, soft_wrap=False)
            print_table(result, console, crossings, (low, high) if workload.connections else None, sides)
        out.flush()  # a full disk or a closed pipe shows here, not in Python's flush at exit, which only complains
    except UnicodeEncodeError as exc:
        unwritable = exc.object[exc.start : exc.end]
        print(
            f"relay cost: standard output's encoding ({out.encoding}) cannot write {unwritable!r} of the answer: "
            "set PYTHONIOENCODING=utf-8, or use --format json",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        # What could not be written stays buffered: without this, Python's flush at exit fails again (status 120), as
        # relay publish says too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        # Whoever closed the pipe (`| head`) wanted no more: nothing to say, as Rich says nothing for the table.
        if not isinstance(exc, BrokenPipeError):
            print(f"relay cost: cannot write the answer to standard output: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.plot is not None:
        from .plot import plot_costs

        drawn = plot_costs(workload, prices, args.plot, low=low, high=high)
        print(f"relay cost: plot written to {drawn.path}", file=sys.stderr)
    return 0

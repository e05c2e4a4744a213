"""`relay cost` on the command line: formats, --scale, --usage, the plot, and clear errors for bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from cost_helpers import cost_parser, provider, run_cost, run_cost_json, usage_day

from relay.cost import Prices, Workload
from relay.cost.cli import parse_size
from relay.cost.plot import plot_costs
from relay.errors import ConfigError
from tests.cli_support import RELAY

EDGE = ["--connections", "500", "--publishes-per-day", "20000", "--subscribers-per-publish", "49"]


def test_table_output_names_plan_price_units_assumptions_and_crossover(prices: Prices) -> None:
    out = run_cost([*EDGE, "--provider", "pusher", "--provider", "hetzner"])
    assert "Monthly cost of: 500 peak connections, 20,000 publishes/day × 49 subscribers" in out
    row = next(line for line in out.splitlines() if "Pusher Channels" in line and "Startup" in line)
    assert "$49.00" in row and "1,000,000 msg/day" in row and "fits" in row
    assert "connections 500 ≤ 500 (0% headroom)" in row
    assert "Cheapest managed: Pusher Channels Startup, $49.00/month" in out
    crossover = "self-hosting's machines (hetzner cx23, 1 node: no failover) cost less than Pusher Channels above 100"
    assert f"Crossover: {crossover} connections" in out
    assert "counting rule P_COUNT" in out
    capacity = prices.capacity
    flat = " ".join(out.split())  # the assumptions wrap at the console's width
    assert f"self-hosted capacity (medium confidence, as of {capacity.as_of}): {capacity.source}" in flat
    assert "capacity per core of the 2-vCPU AMD EPYC VM" in flat and "(confidence medium, as of 2026-11-29)" in flat
    assert "\x1b[" not in out  # no colour codes when not writing to a terminal


def test_pushers_table_cell_says_which_day_its_messages_are_with_a_peak_day_factor() -> None:
    """With --peak-day-factor 2 the cell showed the busiest day's 2,000,000 messages as "msg/day", which every other
    per-day figure (the workload's, the JSON's messages_per_day) uses for the average day: it now says which is which,
    and shows both. Without a peak-day factor the two are the same day, shown once."""
    out = run_cost([*EDGE, "--provider", "pusher", "--peak-day-factor", "2"])
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if "Pusher Channels" in line)
    assert "Pro" in lines[first] and "1,000,000 msg/average day" in lines[first]
    assert "2,000,000 msg/busiest day" in lines[first + 1]
    assert "2,000,000 msg/day" not in out
    plain = run_cost([*EDGE, "--provider", "pusher"])
    assert "1,000,000 msg/day" in plain and "msg/busiest day" not in plain


def test_table_says_when_there_is_no_crossover_in_range() -> None:
    big = ["--connections", "40000", "--publishes-per-day", "2000000", "--subscribers-per-publish", "20"]
    out = run_cost([*big, "--provider", "pusher", "--provider", "ably_rb", "--provider", "hetzner"])
    assert "does not fit" in out and "connections 40,000 > 30,000 on Growth" in out  # the cell wraps where it may
    assert provider(run_cost_json([*big, "--provider", "pusher"]), "pusher")["limit"].startswith(
        "connections 40,000 > 30,000 on Growth Plus"
    )
    assert "Crossover:" not in out
    # Hetzner stops fitting at ×75.6: 2,000,000 × 75.6 publishes a day are 1,750 a second, whose forwarding (100 µs
    # each) is half of a node's 0.35 planned cores; one node lacks the CPU by then. Between the grid's ×73.6 and ×85.8.
    assert (
        "No crossover from 0.01× to 100× this workload: self-hosting is the cheapest from 0.01× to 73.6×; no listed "
        "plan fits, managed or self-hosted from 85.8× to 100×"
    ) in " ".join(out.split())


def test_json_output_has_every_provider_plans_and_crossovers() -> None:
    result = run_cost_json(EDGE)
    assert result["pricing"]["origin"] == "built-in pricing.toml"
    assert result["workload"]["connections"] == 500
    pusher = provider(result, "pusher")
    assert (pusher["plan"], pusher["monthly_usd"], pusher["status"]) == ("startup", 49.0, "fits")
    assert pusher["units"]["messages_busiest_day"] == 1_000_000
    startup = next(p for p in pusher["plans"] if p["plan"] == "startup")
    assert {"limit": "connections", "used": 500, "max": 500, "ok": True} in startup["checks"]
    enterprise = provider(result, "ably_rb")["plans"][-1]
    assert enterprise["checks"][0]["max"] == "unlimited"
    assert provider(result, "ably_mau_2026")["status"] == "unknown"
    assert provider(result, "digitalocean")["nodes"] == 1
    assert any(c["managed"] == "pusher" and c["connections"] == 100 for c in result["crossovers"])


def test_csv_output_is_one_row_per_provider() -> None:
    rows = list(csv.DictReader(io.StringIO(run_cost([*EDGE, "--format", "csv"]))))
    assert [r["provider"] for r in rows][:2] == ["pusher", "ably_rb"]
    pusher = rows[0]
    assert (pusher["plan"], pusher["monthly_usd"], pusher["headroom_pct"]) == ("startup", "49.00", "0.0")
    assert "messages_busiest_day=1000000;" in pusher["billed_units"] + ";"  # whole, as the table shows it
    assert "counting rule P_COUNT" in pusher["assumptions"]
    unknown = next(r for r in rows if r["provider"] == "ably_mau_2026")
    assert (unknown["status"], unknown["monthly_usd"]) == ("unknown", "")
    assert {r["provider"]: r["new_accounts"] for r in rows if r["provider"] in ("pusher", "ably_rb")} == {
        "pusher": "true",
        "ably_rb": "false",
    }


def test_scale_multiplies_the_described_workload() -> None:
    result = run_cost_json([*EDGE, "--scale", "10", "--provider", "pusher"])
    pusher = provider(result, "pusher")
    assert pusher["units"]["connections"] == 5_000
    assert pusher["units"]["messages_busiest_day"] == 10_000_000
    assert (pusher["plan"], pusher["monthly_usd"]) == ("business", 299.0)
    assert result["workload"]["origin"] == "described by flags, scaled ×10"


def test_usage_file_with_scale(tmp_path: Path) -> None:
    path = tmp_path / "usage.json"
    path.write_text(json.dumps({"version": 1, "apps": {"1": {"days": {"2026-11-29": usage_day()}}}}))
    measured = provider(run_cost_json(["--usage", str(path), "--provider", "pusher"]), "pusher")
    assert measured["units"]["messages_per_day"] == 86
    scaled = run_cost_json(["--usage", str(path), "--scale", "10", "--provider", "pusher"])
    assert provider(scaled, "pusher")["units"]["messages_per_day"] == 860
    assert provider(scaled, "pusher")["units"]["connections"] == 60
    assert scaled["workload"]["origin"].endswith("scaled ×10")


def test_publishes_per_second_sets_the_day_or_the_peak() -> None:
    alone = run_cost_json(["--connections", "10", "--publishes-per-second", "2", "--peak-factor", "4"])
    assert alone["workload"]["publishes_per_day"] == 2 * 86_400 / 4
    both = run_cost_json(["--connections", "10", "--publishes-per-second", "10", "--publishes-per-day", "86400"])
    assert both["workload"]["peak_factor"] == 10
    with pytest.raises(ConfigError, match="a peak is at least the average"):
        run_cost(["--connections", "10", "--publishes-per-second", "0.5", "--publishes-per-day", "86400"])
    with pytest.raises(ConfigError, match="give at most two"):
        run_cost(
            ["--connections", "1", "--publishes-per-second", "1", "--publishes-per-day", "1", "--peak-factor", "2"]
        )


def test_sizes_and_averages_are_parsed() -> None:
    assert (parse_size("16KiB"), parse_size("10KB"), parse_size("512"), parse_size("1 MiB")) == (
        16_384,
        10_000,
        512,
        1_048_576,
    )
    result = run_cost_json(["--connections", "100", "--average-connections", "25", "--message-size", "2k"])
    assert result["workload"]["connection_minutes_per_day"] == 25 * 1440
    assert result["workload"]["message_bytes"] == 2048


def test_help_documents_every_workload_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cost_parser().parse_args(["cost", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for field in Workload.__dataclass_fields__.values():
        assert field.metadata["flag"] in text, field.name
    for flag in ("--publishes-per-second", "--scale", "--usage", "--app", "--pricing", "--format", "--plot"):
        assert flag in text
    assert "relay cost --usage usage.json --scale 10" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], r"describe the workload \(at least --connections"),
        (["--connections", "-5"], r"workload field connections \(--connections\) must be a finite number ≥ 0, got -5"),
        (["--connections", "2.5"], r"connections \(--connections\) must be a whole number"),
        (["--connections", "5", "--days-per-month", "45"], r"days_per_month \(--days-per-month\) must be 1–31"),
        (["--connections", "5", "--peak-factor", "0.5"], r"peak_factor \(--peak-factor\) must be ≥ 1"),
        (["--connections", "5", "--average-connections", "-1"], r"--average-connections must be ≥ 0"),
        (["--connections", "5", "--scale", "0"], r"scale \(--scale\) must be a number > 0"),
        (["--connections", "5", "--provider", "heroku"], r"--provider heroku: not in the pricing data; it has: "),
        (["--connections", "5", "--app", "1"], r"--app selects an app of a usage file"),
        (["--usage", "u.json", "--connections", "5"], r"cannot be combined with --connections"),
        (["--connections", "5", "--plot", "cost.pdf"], r"--plot cost.pdf: the file name must end in .png or .svg"),
        (["--connections", "0", "--plot", "cost.png"], r"needs --connections > 0"),
    ],
)
def test_invalid_workloads_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_cost(argv)


@pytest.mark.parametrize(
    ("flag", "text", "value"),
    [("--connections", "20,000", 20_000), ("--connections", "20_000", 20_000), ("--connections", "2e4", 20_000),
     ("--message-size", "1,024", 1024), ("--message-size", "1e3KB", 1_000_000), ("--message-size", "16KiB", 16_384)],
)  # fmt: skip
def test_numbers_are_read_as_written(flag: str, text: str, value: float) -> None:
    args = cost_parser().parse_args(["cost", flag, text])
    assert getattr(args, flag[2:].replace("-", "_")) == value


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        # A comma was dropped wherever it stood: "1,,0" was 10
        ("--connections", "1,,0", "not a number: '1,,0' (commas group thousands, as in 1,000,000)"),
        ("--connections", "1,00", "not a number: '1,00' (commas group thousands, as in 1,000,000)"),
        ("--connections", "1__0", "not a number: '1__0'"),
        ("--message-size", "1,,0KB", "not a size: '1,,0KB' (commas group thousands, as in 1,000)"),
        # no comma in it, so no word of commas
        ("--message-size", "1__0", "not a size: '1__0'"),
    ],
)
def test_a_number_written_wrongly_is_refused(
    flag: str, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cost_parser().parse_args(["cost", flag, text])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(f"argument {flag}: {message}")


def test_unparseable_numbers_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cost_parser().parse_args(["cost", "--connections", "lots"])
    assert exit_.value.code == 2
    assert "argument --connections: not a number: 'lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cost_parser().parse_args(["cost", "--connections", "1", "--message-size", "16 parsecs"])
    assert "not a size: '16 parsecs'" in capsys.readouterr().err


def test_a_bad_pricing_file_names_the_entry_and_field(tmp_path: Path, prices: Prices) -> None:
    from importlib import resources

    text = resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")
    path = tmp_path / "mine.toml"
    path.write_text(text.replace("price_usd_month = 49\n", 'price_usd_month = "cheap"\n', 1))
    with pytest.raises(ConfigError) as error:
        run_cost(["--connections", "5", "--pricing", str(path)])
    assert f"pricing file {path} is invalid" in error.value.message
    assert "providers.pusher.plans[1] (startup): field 'price_usd_month' must be a number ≥ 0" in error.value.message


@pytest.mark.parametrize(("suffix", "header"), [("png", b"\x89PNG\r\n\x1a\n"), ("svg", b"<?xml")])
def test_plot_draws_every_provider_and_marks_crossovers(
    tmp_path: Path, prices: Prices, suffix: str, header: bytes
) -> None:
    path = tmp_path / f"cost.{suffix}"
    workload = Workload(connections=500, publishes_per_day=20_000, subscribers_per_publish=49)
    result = plot_costs(workload, prices, path, points=31)
    data = path.read_bytes()
    assert data.startswith(header) and len(data) > 10_000
    if suffix == "svg":
        assert b"<svg" in data[:1000]
    assert len(result.legend) == len(prices.providers)
    for entry, provider_data in zip(result.legend, prices.providers, strict=True):
        assert entry.startswith(provider_data.name)
    assert "Ably (MAU, 2026): prices unknown, not drawn" in result.legend
    assert set(result.drawn) == {p.id for p in prices.providers} - {"ably_mau_2026"}
    assert any(c.managed == "*" and c.direction == "above" for c in result.crossovers)


def test_plot_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cost.png"
    args = cost_parser().parse_args(["cost", *EDGE, "--format", "csv", "--plot", str(path), "--plot-range", "0.1:10"])
    assert args.run(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("provider,name,kind")
    assert f"plot written to {path}" in captured.err
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device every write to fails")
@pytest.mark.parametrize("output", ["csv", "json", "table"])
def test_an_answer_that_cannot_be_written_is_a_failure_said_plainly(output: str) -> None:
    """A full disk: the answer is lost, so relay cost says so and exits 1, with no traceback (it printed an OSError's,
    or only Python's complaint at exit)."""
    with open("/dev/full", "w") as full:
        outcome = subprocess.run(
            [*RELAY, "cost", "--connections", "500", "--format", output],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert (outcome.returncode, outcome.stderr) == (
        1,
        "relay cost: cannot write the answer to standard output: No space left on device\n",
    )


@pytest.mark.parametrize("output", ["csv", "json", "table"])
def test_a_closed_pipe_ends_the_answer_silently_with_status_1(output: str) -> None:
    """``relay cost … | head``: the reader wanted no more, so nothing is said, in every format (Rich exits 1 silently
    for the table; CSV and JSON printed an OSError's traceback)."""
    relay = " ".join(shlex.quote(part) for part in RELAY)
    outcome = subprocess.run(
        ["bash", "-c", f"{relay} cost --connections 500 --format {output} | true; echo ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (outcome.stdout, outcome.stderr) == ("1\n", "")


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
@pytest.mark.long
def test_an_output_in_a_legacy_code_page_gets_json_escaped_and_a_plain_error_for_the_rest(encoding: str) -> None:
    """A Windows console, or a redirect in a cp1252 or latin-1 locale, has no "≤": the table and CSV printed a
    UnicodeEncodeError's traceback. Now they say which character and what to do, and exit 1; JSON, which can say any
    character in ASCII, is written with it escaped, and reads back the same as the UTF-8 answer."""
    command = [*RELAY, "cost", "--connections", "500", "--publishes-per-day", "20000", "--subscribers-per-publish"]
    command.append("49")

    def run(output: str, io_encoding: str) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "PYTHONIOENCODING": io_encoding}
        return subprocess.run(
            [*command, "--format", output], capture_output=True, env=environment, errors="replace", check=False
        )

    shown = {"cp1252": "cp1252", "latin-1": "iso8859-1"}[encoding]
    for output in ("table", "csv"):
        outcome = run(output, encoding)
        assert (outcome.returncode, outcome.stderr) == (
            1,
            f"relay cost: standard output's encoding ({shown}) cannot write '\\u2264' of the answer: "
            "set PYTHONIOENCODING=utf-8, or use --format json\n",
        )
    escaped, plain = run("json", encoding), run("json", "utf-8")
    assert (escaped.returncode, escaped.stderr) == (0, "")
    assert "\\u2264" in escaped.stdout and "≤" in plain.stdout
    assert json.loads(escaped.stdout) == json.loads(plain.stdout)


def test_a_closed_option_alone_of_its_kind_is_named_the_cheapest_not_cheaper_than_nothing() -> None:
    """Only closed managed options asked for: the answer said "Cheaper, but closed to new accounts" with no open
    option above it to be cheaper than (docs/cost.md: it follows the cheapest open one)."""
    lines = run_cost(["--connections", "100", "--provider", "ably_rb", "--provider", "hetzner"]).splitlines()
    summary = [line for line in lines if line.startswith(("Cheapest", "Cheaper"))]
    assert summary == [
        "Cheapest managed, closed to new accounts: Ably (resource-based) Free, $0.00/month",
        "Cheapest self-hosted: Hetzner Cloud CX23 2 vCPU / 4 GB, $4.77/month",
    ]
    both = run_cost(["--connections", "150", "--provider", "ably_rb", "--provider", "pusher"]).splitlines()
    assert [line.split(":")[0] for line in both if line.startswith(("Cheapest", "Cheaper"))] == [
        "Cheapest managed",
        "Cheaper, but closed to new accounts",
    ]

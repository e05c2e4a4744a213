"""Messages read from Ably's history: "History = 1 per retrieved message" (ably-and-pricing §F.2), and a REST presence
query's members and a rewind's backlog likewise. The usage meter counts them (``history_messages``) and `relay cost`
bills them on Ably, from a usage file or ``--history-messages-per-day``; Pusher has no history to bill."""

from __future__ import annotations

from pathlib import Path

from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import usage_file

from relay.cost.usage import load_usage, workload_from_usage


def test_history_messages_of_a_usage_file_are_billed_on_ably_only(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    plain = usage_file(tmp_path / "plain", {"2026-11-29": usage_day()})
    read = usage_file(tmp_path, {"2026-11-29": usage_day(history_messages=40_000)})
    assert workload_from_usage(load_usage(read)).history_messages_per_day == 40_000
    assert workload_from_usage(load_usage(plain)).history_messages_per_day == 0  # a file without the field
    without, withit = (run_cost_json(["--usage", str(path)]) for path in (plain, read))
    for name in ("ably_rb", "ably_mau_2025"):
        assert (
            provider(withit, name)["units"]["messages_per_day"] - provider(without, name)["units"]["messages_per_day"]
            == 40_000
        )
    assert provider(withit, "pusher")["units"] == provider(without, "pusher")["units"]


def test_the_flag_describes_them(tmp_path: Path) -> None:
    base = ["--connections", "10", "--publishes-per-day", "100"]
    described = run_cost_json([*base, "--history-messages-per-day", "100000"])
    ably = provider(described, "ably_rb")
    assert ably["units"]["messages_per_month"] == (100 + 100_000) * 30
    assert provider(described, "pusher")["units"]["messages_per_day"] == 100
    assert described["workload"]["history_messages_per_day"] == 100_000
    scaled = run_cost_json([*base, "--history-messages-per-day", "100000", "--scale", "10"])
    assert provider(scaled, "ably_rb")["units"]["messages_per_month"] == (1000 + 1_000_000) * 30

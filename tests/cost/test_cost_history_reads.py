"""Messages read from Ably's history: "History = 1 per retrieved message" (ably-and-pricing §F.2), and a REST presence
query's members and a rewind's backlog likewise. The usage meter counts them (``history_messages``) and `relay cost`
bills them on Ably, from a usage file or ``--history-messages-per-day``; Pusher has no history to bill."""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import AFTERNOON, WHOLE_DAY, measured, usage_file

from relay.cost.rules import ably_messages_per_day
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


def test_days_that_did_not_record_them_are_taken_at_the_rate_of_those_that_did(tmp_path: Path) -> None:
    """An older emulator served REST history and presence queries but did not count them, and merging its run into a
    newer one's file (emulator/usage.py merge_documents) leaves the days they shared without ``history_messages``. Such
    a day recorded nothing, not none: the 40,000 reads recorded in the 12 h measured on 2026-11-29 are 80,000 a day,
    the other day included. (Every history read vanished: one day without the field made the whole file's 0.)"""
    days = {
        "2026-11-28": measured(usage_day(), WHOLE_DAY),
        "2026-11-29": measured(usage_day(history_messages=40_000), AFTERNOON),
    }
    workload = workload_from_usage(load_usage(usage_file(tmp_path, days)))
    assert workload.history_messages_per_day == 80_000
    assert (
        "history_messages recorded on 1 of the 2 app-days (older emulators do not count it): the others are taken at "
        "their app's rate on the days that record it"
    ) in workload.origin
    ably = provider(run_cost_json(["--usage", str(tmp_path / "usage.json"), "--provider", "ably_rb"]), "ably_rb")
    assert ably["units"]["messages_per_day"] == pytest.approx(ably_messages_per_day(workload))
    assert ably["units"]["messages_per_day"] > 80_000

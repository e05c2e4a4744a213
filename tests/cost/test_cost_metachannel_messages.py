"""Ably's channel lifecycle metachannel messages, which only Ably has and bills, are priced on Ably only.

The usage meter counted each ``[meta]channel.lifecycle`` event as a publish and each delivery of it as a delivery, so
`relay cost` priced them on every provider, Pusher included (docs/ably.md said so). It counts them apart now
(``metachannel_messages``), and they are Ably messages alone (ably-and-pricing §F.2: "Lifecycle metachannel events
= 1 each").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cost_helpers import provider, run_cost_json, usage_day
from test_cost_usage_audit_fixes import WHOLE_DAY, measured, usage_file

from relay.cost import Prices, estimate
from relay.cost.usage import load_usage, workload_from_usage

ABLY = ("ably_rb", "ably_mau_2025")
OTHERS = ("pusher", "supabase", "pubnub", "pubnub_mau")


def test_metachannel_messages_are_ably_messages_only(tmp_path: Path, prices: Prices) -> None:
    """12 metachannel messages a day (3 openings or closings of 2 events, each sent and delivered once): 12 Ably
    messages more a day, nothing more anywhere else."""
    (tmp_path / "plain").mkdir()
    plain = usage_file(tmp_path / "plain", {"2026-11-29": measured(usage_day(), WHOLE_DAY)})
    watched = usage_file(tmp_path, {"2026-11-29": measured(usage_day(metachannel_messages=12), WHOLE_DAY)})
    assert workload_from_usage(load_usage(watched)).metachannel_messages_per_day == 12
    assert workload_from_usage(load_usage(plain)).metachannel_messages_per_day == 0
    without, withit = (run_cost_json(["--usage", str(path)]) for path in (plain, watched))
    for name in ABLY:
        added = (
            provider(withit, name)["units"]["messages_per_day"] - provider(without, name)["units"]["messages_per_day"]
        )
        assert added == pytest.approx(12), name
    for name in OTHERS:
        assert provider(withit, name)["units"] == provider(without, name)["units"], name
    assert any(
        line.startswith("12 channel lifecycle metachannel messages a day measured")
        for line in provider(withit, "ably_rb")["assumptions"]
    )


def test_metachannel_messages_scale_with_the_users(tmp_path: Path, prices: Prices) -> None:
    watched = usage_file(tmp_path, {"2026-11-29": measured(usage_day(metachannel_messages=12), WHOLE_DAY)})
    workload = workload_from_usage(load_usage(watched))
    assert workload.scaled(10).metachannel_messages_per_day == 120
    base = estimate(workload, prices, providers={"ably_rb"}).provider("ably_rb").unit("messages_per_day")
    more = estimate(workload.scaled(10), prices, providers={"ably_rb"}).provider("ably_rb").unit("messages_per_day")
    assert more == pytest.approx(10 * base)

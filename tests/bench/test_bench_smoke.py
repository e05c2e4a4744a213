"""CI smoke check of the benchmark (issue 9): a small fan-out through bench/driver.py against a real emulator.

It asserts that every delivery arrives, in order when published in order, with and without permessage-deflate, and
that the report renders; it never asserts speed (bench/run.py measures, on a quiet machine).
"""

from __future__ import annotations

import asyncio

import pytest

from bench import channel_list, gc_pause, http_path, report
from bench.driver import fanout
from relay.emulator.wire import encode_text
from relay.protocol.frames import channel_event
from tests.conftest import StartEmulator


async def test_every_delivery_of_a_concurrent_fanout_arrives(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator()
    app = emulator.app
    result = await fanout(emulator.port, app.app_id, app.key, app.secret, subs=60, msgs=40, concurrency=8)
    assert result.errors == []
    assert result.published == 40
    assert (result.delivered, result.lost, result.duplicates) == (60 * 40, 0, 0)


async def test_events_published_in_order_arrive_in_order(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator()
    app = emulator.app
    result = await fanout(emulator.port, app.app_id, app.key, app.secret, subs=20, msgs=30, concurrency=1)
    assert result.errors == []
    assert (result.lost, result.duplicates, result.out_of_order) == (0, 0, 0)


async def test_permessage_deflate_is_negotiated_and_every_delivery_arrives(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator()
    app = emulator.app
    compressed, plain = await asyncio.gather(
        fanout(emulator.port, app.app_id, app.key, app.secret, subs=25, msgs=30, deflate=True, channel="zipped"),
        fanout(emulator.port, app.app_id, app.key, app.secret, subs=25, msgs=30, deflate=False, channel="plain"),
    )
    assert compressed.errors == [] and plain.errors == []
    assert (compressed.lost, compressed.duplicates) == (0, 0)
    assert (plain.lost, plain.duplicates) == (0, 0)
    (answer,) = compressed.extensions
    assert answer.startswith("permessage-deflate")
    assert "server_no_context_takeover" in answer  # one compressed frame serves every subscriber
    assert plain.extensions == set()


def test_the_report_computes_ratios_and_marks_targets() -> None:
    def row(target: str, scenario: str, **figures: object) -> dict[str, object]:
        return {"bench_target": target, "bench_scenario": scenario, "bench_run": 1, **figures}

    rows = [
        row("relay", "fanout1000", server_cpu_us_per_delivery=2.0, deliveries_per_s=400_000, lost=0),
        row("nchan", "fanout1000", server_cpu_us_per_delivery=1.5, deliveries_per_s=600_000, lost=0),
        row("websockets", "fanout1000", server_cpu_us_per_delivery=6.0, deliveries_per_s=150_000, lost=0),
        row("relay", "latency", latency_ms={"p50": 1.0, "p99": 3.0}),
        row("nchan", "latency", latency_ms={"p50": 0.5, "p99": 2.0}),
        {"bench_target": "relay", "bench_scenario": "channels", "bench_run": 1, "error": "skipped: budget"},
    ]
    machine = {"date": "2026-11-29 00:00 UTC", "nproc": 2, "cpu": "test CPU", "memory_gb": 1.0, "kernel": "k",
               "python": "3.11", "node": "v20"}  # fmt: skip
    text = report.render(rows, machine=machine, command="python bench/run.py --runs 1")
    assert text.startswith(report.BEGIN) and text.endswith(report.END)
    assert "python bench/run.py --runs 1" in text
    assert "| fan-out CPU per delivery ÷ nchan's (1000 subscribers) | 1.33 | 1.33 (met in 1 of 1) | ≤ 2 | yes |" in text
    floor = "| websockets floor's CPU per delivery ÷ relay's (1000) |"
    assert f"{floor} 3.00 | 3.00 (met in 1 of 1) | ≥ 1.5 (about) | yes |" in text
    assert "| p99 publish→delivery ÷ nchan's (100 subs, 100/s) | 1.50 | 1.50 (met in 0 of 1) | ≤ 1.2 | **no** |" in text
    assert "channels / relay run 1: skipped: budget" in text


def test_a_target_is_also_shown_round_by_round_from_the_rounds_that_measured_both_cells() -> None:
    def latency(target: str, run: int, p99: float) -> dict[str, object]:
        return {"bench_target": target, "bench_scenario": "latency", "bench_run": run, "latency_ms": {"p99": p99}}

    rows = [latency("relay", 1, 2.4), latency("nchan", 1, 2.0), latency("relay", 2, 2.0), latency("nchan", 2, 2.0),
            latency("relay", 3, 9.9)]  # fmt: skip
    # The medians are 2.4 (of 2.4, 2.0, 9.9) and 2.0: 1.20, met. Round 3 measured no nchan cell, so two rounds show.
    assert report.run_ratios(report.Results(rows), ("relay", "latency", "latency_ms.p99"),
                             ("nchan", "latency", "latency_ms.p99")) == [1.2, 1.0]  # fmt: skip
    (line,) = [line for line in report.targets(report.Results(rows)) if line.startswith("| p99")]
    assert line == (
        "| p99 publish→delivery ÷ nchan's (100 subs, 100/s) | 1.20 | 1.20, 1.00 (met in 2 of 2) | ≤ 1.2 | yes |"
    )


def test_a_goal_is_met_by_its_comparison_and_bound_only() -> None:
    assert report.met(2.0, "≤ 2") and not report.met(2.01, "≤ 2")
    assert report.met(1.5, "≥ 1.5 (about)") and not report.met(1.49, "≥ 1.5 (about)")
    assert report.met(3.01, "> 3") and not report.met(3.0, "> 3")


async def test_the_in_process_http_path_answers_every_publish_and_delivers_it() -> None:
    """bench/http_path.py (the profiling harness of docs/performance.md) publishes through the real request path."""
    result = await http_path.measure(channels=20, requests=100)
    assert result["statuses"] == {"200": 20 + 100}  # the warm-up round, then the measured requests
    frames = [encode_text(channel_event("bench-msg", f"ch-{i % 20}", "")) for i in range(100)]
    assert result["subscriber_bytes"] > sum(len(frame) for frame in frames)  # each carried its data too


async def test_an_idle_websocket_keeps_few_objects_for_the_garbage_collector_to_walk() -> None:
    """bench/gc_pause.py's count: a subscribed connection keeps its session, socket and frame parser, and not the
    HTTP parser (with its bound callbacks) or the handshake's headers, which every full collection would walk."""
    result = await gc_pause.measure(connections=200, rounds=1)
    assert result["connections"] == 200
    # 19 here (the stand-in transport counts 2), 25 when the HTTP parser stayed: room for a library's extra object.
    assert 0 < result["tracked_objects_per_connection"] <= 22
    assert result["full_collection_ms"] > 0


async def test_the_channel_list_bench_lists_what_each_api_can_describe() -> None:
    """bench/channel_list.py (the listing figures of docs/emulator.md) times real answers: Pusher's leaves out the
    tenth of names only Ably can hold (``room:1``), counting this node's channels and another node's."""
    result = await channel_list.measure(channels=50, remote=10, rounds=1)
    listed = {label: figures["listed"] for label, figures in result.items() if isinstance(figures, dict)}
    assert listed == {
        "pusher": 54,
        "pusher info=subscription_count": 54,
        "pusher presence- info=user_count": 6,
        "ably by=id limit=1000": 60,
        "ably by=value limit=100": 60,
    }


async def test_the_http_path_stages_each_run_the_real_code() -> None:
    """``python -m bench.http_path --parts`` (the table in docs/performance.md) times every stage it names."""
    stages = await http_path.parts(repeat=5)
    assert "whole request (HttpConnection.data_received)" in stages
    assert len(stages) == 10
    assert all(micros > 0 for micros in stages.values())
    cold = await http_path.parts(repeat=3, cold=True)  # ``--parts --cold``: the same stages, caches evicted first
    assert cold.keys() == stages.keys()
    assert all(micros > 0 for micros in cold.values())


def test_cold_timing_is_refused_without_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        http_path.main(["--cold"])
    assert exit_info.value.code == 2
    assert "--cold times the stages of --parts" in capsys.readouterr().err


def test_a_ratio_of_two_generator_bound_cells_is_reported_as_not_measurable() -> None:
    def row(target: str, run: int, rate: int, bottleneck: str) -> dict[str, object]:
        return {"bench_target": target, "bench_scenario": "workers", "bench_run": run, "deliveries_per_s": rate,
                "server_cpu_us_per_delivery": 1.0, "bottleneck": bottleneck}  # fmt: skip

    limited = report.targets(
        report.Results([row("relay-w1", 1, 800_000, "generator"), row("relay-w2", 1, 850_000, "generator")])
    )
    verdict = "**no**: both cells generator-bound, not measurable on this machine"
    workers = "| deliveries/s with --workers 2 ÷ one worker |"
    assert f"{workers} 1.06 | 1.06 (met in 0 of 1) | ≥ 1.6 | {verdict} |" in limited
    short = report.targets(
        report.Results([row("relay-w1", 1, 500_000, "server"), row("relay-w2", 1, 600_000, "generator")])
    )
    assert "| deliveries/s with --workers 2 ÷ one worker | 1.20 | 1.20 (met in 0 of 1) | ≥ 1.6 | **no** |" in short
    full = report.targets(
        report.Results([row("relay-w1", 1, 2_000_000, "server"), row("relay-w2", 1, 2_500_000, "server")])
    )
    cores_full = "**no**: the machine's cores are full (two workers and the generator; see the --workers table)"
    assert f"{workers} 1.25 | 1.25 (met in 0 of 1) | ≥ 1.6 | {cores_full} |" in full


def test_a_cells_bottleneck_is_its_runs_majority_or_mixed() -> None:
    def cell(*verdicts: str) -> report.Results:
        return report.Results(
            [
                {"bench_target": "t", "bench_scenario": "s", "bench_run": i, "bottleneck": v}
                for i, v in enumerate(verdicts)
            ]
        )

    assert cell("server", "generator", "server").bottleneck("t", "s") == "server"
    assert cell("generator", "neither", "server").bottleneck("t", "s") == "mixed"
    assert cell().bottleneck("t", "s") == "—"

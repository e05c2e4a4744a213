"""bench/sink.c, the C load generator of the ``workers`` scenario, against a real emulator: it counts every delivery
and says what went wrong when a publish is refused. It never asserts speed."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench import sink
from tests.conftest import StartEmulator


@pytest.fixture(scope="module")
def sink_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sink.build(tmp_path_factory.mktemp("sink"))


async def fan_out(binary: Path, port: int, key: str, secret: str, *, subs: int, msgs: int) -> dict[str, object]:
    return await asyncio.to_thread(
        sink.run,
        binary,
        port,
        [os.getpid()],
        app_id="1",
        key=key,
        secret=secret,
        subs=subs,
        msgs=msgs,
        pub_conc=4,
        server_cores=1,
        timeout=30,
    )


async def test_every_subscriber_receives_every_publish(sink_binary: Path, start_emulator: StartEmulator) -> None:
    emulator = await start_emulator()
    app = emulator.app
    row = await fan_out(sink_binary, emulator.port, app.key, app.secret, subs=50, msgs=40)
    assert row["error"] is None
    assert (row["ready"], row["publish_ok"], row["publish_err"]) == (50, 40, 0)
    assert (row["expected"], row["delivered"], row["lost"], row["duplicates"], row["foreign_frames"]) == (
        2000,
        2000,
        0,
        0,
        0,
    )
    assert row["bottleneck"] in {"server", "generator", "neither"}


async def test_a_refused_publish_is_reported_and_the_emulator_keeps_serving(
    sink_binary: Path, start_emulator: StartEmulator
) -> None:
    emulator = await start_emulator()
    app = emulator.app
    refused = await fan_out(sink_binary, emulator.port, app.key, "not-the-secret", subs=5, msgs=3)
    assert str(refused["error"]).startswith("a publish was refused: HTTP/1.1 401")
    assert (refused["delivered"], refused["lost"], refused["publish_ok"]) == (0, 15, 0)
    assert 1 <= int(str(refused["publish_err"])) <= 3  # the sink stops at the first; others may be answered with it
    served = await fan_out(sink_binary, emulator.port, app.key, app.secret, subs=5, msgs=3)
    assert (served["error"], served["delivered"], served["lost"]) == (None, 15, 0)


async def test_an_unknown_key_is_reported_with_the_pusher_error(
    sink_binary: Path, start_emulator: StartEmulator
) -> None:
    emulator = await start_emulator()
    row = await fan_out(sink_binary, emulator.port, "no-such-key", "s", subs=2, msgs=1)
    assert str(row["error"]).startswith("pusher:error: ")
    assert "4001" in str(row["error"])
    assert (row["ready"], row["delivered"]) == (0, 0)


@pytest.mark.parametrize(
    ("server", "generator", "cores", "verdict"),
    [
        (0.95, 0.3, 1, "server"),
        (0.6, 0.9, 1, "generator"),
        (0.5, 0.3, 1, "neither"),
        (1.5, 0.35, 2, "server"),  # two workers and the sink fill both cores
        (1.2, 0.3, 2, "neither"),
    ],
)
def test_the_verdict_names_what_filled_its_cores(server: float, generator: float, cores: int, verdict: str) -> None:
    assert sink.bottleneck({"server_cpu_util": server, "gen_cpu_util": generator}, cores) == verdict

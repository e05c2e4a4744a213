"""The usage file survives a crash (docs/emulator.md "Usage meter"): a run writes its usage so far to a checkpoint of
its own beside the usage file every ``usage_checkpoint`` seconds, holding a lock on it while it lives; the next start,
or the next graceful write, adds a dead run's checkpoint to the file, once, and never touches a live run's. Real
``relay emulator`` processes, killed with SIGKILL where it matters."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.cost.usage import parse_usage
from relay.emulator.config import EmulatorConfig, load_config
from relay.emulator.usage_file import RunCheckpoint, node_usage, recover_usage, write_usage_file
from relay.errors import ConfigError
from tests.cli_support import assert_refused, run_relay, write
from tests.cluster.conftest import RedisServer
from tests.conftest import StartEmulator
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, CREDENTIALS, children, eventually, publish


def publishes_in(document: dict[str, Any]) -> int:
    return sum(day.publishes for day in parse_usage(document).apps[APP.app_id].days.values())


def read_json(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def run_files(usage_file: Path) -> list[str]:
    """The files the runs left beside the usage file: checkpoints, their lock files and temporary files."""
    runs = [*usage_file.parent.glob(usage_file.name + ".run.*"), *usage_file.parent.glob(f".{usage_file.name}.*.tmp")]
    return sorted(path.name for path in runs)


def checkpoint_of(usage_file: Path, pid: int) -> Path | None:
    name = re.compile(rf"{re.escape(usage_file.name)}\.run\.{pid}-[0-9a-f]{{8}}")
    return next((path for path in usage_file.parent.iterdir() if name.fullmatch(path.name)), None)


async def checkpointed(usage_file: Path, pid: int, publishes: int) -> dict[str, Any]:
    """The checkpoint of the run with ``pid``, once it holds ``publishes`` publishes."""

    def holds() -> bool:
        path = checkpoint_of(usage_file, pid)
        return path is not None and publishes_in(read_json(path)) == publishes

    await eventually(holds, what=f"a checkpoint of {pid} with {publishes} publishes")
    path = checkpoint_of(usage_file, pid)
    assert path is not None
    return read_json(path)


async def serving(usage_file: Path, *args: str) -> EmulatorProcess:
    return await EmulatorProcess.start(
        *CREDENTIALS, "--usage-file", str(usage_file), "--usage-checkpoint", "0.2", "--shutdown-spread", "0", *args
    )


async def publishes_to(relay: EmulatorProcess, count: int) -> None:
    for _ in range(count):
        await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "e", "x")


@pytest.fixture
async def relays() -> AsyncIterator[list[EmulatorProcess]]:
    """The emulators a test starts, killed at its end whatever happened."""
    started: list[EmulatorProcess] = []
    yield started
    for relay in started:
        await relay.kill()


async def test_a_killed_run_s_usage_is_added_once_by_the_next_start(
    tmp_path: Path, relays: list[EmulatorProcess]
) -> None:
    """SIGKILL (the OOM killer's) lost the whole run's usage: the file was written only at a graceful stop."""
    usage_file = tmp_path / "usage.json"
    relays.append(killed := await serving(usage_file))
    await publishes_to(killed, 3)
    checkpoint = await checkpointed(usage_file, killed.process.pid, 3)
    await killed.kill()
    assert not usage_file.exists()

    relays.append(next_run := await serving(usage_file))
    assert read_json(usage_file)["apps"] == checkpoint["apps"]  # the killed run's counts, every field
    assert not [name for name in run_files(usage_file) if f".run.{killed.process.pid}-" in name]
    logged = await next_run.wait_for_output("usage of a run that did not stop")
    assert re.search(rf"usage\.json\.run\.{killed.process.pid}-[0-9a-f]{{8}}, last written \d{{4}}-\d\d-\d\dT", logged)
    assert f"added to {usage_file}" in logged

    await publishes_to(next_run, 2)
    await checkpointed(usage_file, next_run.process.pid, 2)
    assert await next_run.stop() == 0
    assert publishes_in(read_json(usage_file)) == 3 + 2  # its checkpoint was not added besides
    assert run_files(usage_file) == []  # nothing is left that a later run could add again


async def test_a_live_run_s_checkpoint_is_left_to_it(tmp_path: Path, relays: list[EmulatorProcess]) -> None:
    """Two runs sharing one file: the first to stop, and a third starting meanwhile, leave the live run's checkpoint
    alone (its lock is held); each run's usage is in the file once."""
    usage_file = tmp_path / "usage.json"
    relays.extend(await asyncio.gather(serving(usage_file), serving(usage_file)))
    first, second = relays
    await publishes_to(first, 2)
    await publishes_to(second, 3)
    await checkpointed(usage_file, first.process.pid, 2)
    await checkpointed(usage_file, second.process.pid, 3)
    stopped, third = await asyncio.gather(first.stop(), serving(usage_file))
    relays.append(third)
    assert stopped == 0
    assert publishes_in(read_json(usage_file)) == 2
    assert checkpoint_of(usage_file, second.process.pid) is not None
    assert await second.stop() == 0
    assert await third.stop() == 0
    assert publishes_in(read_json(usage_file)) == 2 + 3
    assert run_files(usage_file) == []
    assert not any("did not stop" in line for relay in relays for line in relay.stderr)


async def test_a_checkpoint_that_is_not_a_usage_document_is_left_alone_and_logged(
    tmp_path: Path, relays: list[EmulatorProcess]
) -> None:
    """Like a usage file of the wrong shape: never overwritten, never counted. A run that died before its first
    checkpoint left only its lock file, which goes."""
    usage_file = tmp_path / "usage.json"
    corrupt = write(tmp_path, '{"version": 1, "apps": []}', "usage.json.run.41-0123abcd")
    orphan = write(tmp_path, "", "usage.json.run.42-4567cdef.lock")
    relays.append(relay := await serving(usage_file))
    logged = await relay.wait_for_output("is not a usage document")
    assert f"usage checkpoint {corrupt} is not a usage document (apps is not an object); left alone" in logged
    assert not orphan.exists()
    await publishes_to(relay, 1)
    assert await relay.stop() == 0
    assert publishes_in(read_json(usage_file)) == 1
    assert corrupt.read_text() == '{"version": 1, "apps": []}'
    assert run_files(usage_file) == [corrupt.name, corrupt.name + ".lock"]


async def test_a_usage_file_that_cannot_be_written_at_the_stop_keeps_the_checkpoint(
    tmp_path: Path, start_emulator: StartEmulator
) -> None:
    """The new file is written in full before the checkpoint goes: when that fails, the checkpoint stays for the
    next run (removed first, a failure would lose it; removed after the file is in place, a crash in between would
    count it twice)."""
    emulator = await start_emulator(app=APP)
    await publish(emulator.http_url, APP, "news", "e", "x")
    usage_file = tmp_path / "usage.json"
    checkpoint = RunCheckpoint(usage_file)
    checkpoint.write(node_usage(emulator.node))
    blocked = tmp_path / f".usage.json.{os.getpid()}.tmp"  # where the new file is written first
    blocked.mkdir()
    with pytest.raises(IsADirectoryError):
        write_usage_file(emulator.node, usage_file, checkpoint)
    assert checkpoint.path.exists() and not usage_file.exists()
    assert "which the next run adds to the file" in checkpoint.lost()
    recover_usage(usage_file)  # the run still holds its lock: it is alive
    assert not usage_file.exists()
    checkpoint.close()  # the run ends without stopping
    blocked.rmdir()
    recover_usage(usage_file)
    assert publishes_in(read_json(usage_file)) == 1
    assert run_files(usage_file) == []


async def test_a_usage_file_whose_writing_fails_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A write that fails part way (a full disk; here a file-size limit) left the new file's temporary copy, named
    by the process id, so no later run removed it: one more at each failed start under a restarting service."""
    usage_file = tmp_path / "usage.json"
    relay = await EmulatorProcess.start(*CREDENTIALS, "--usage-file", str(usage_file), largest_file=300)
    try:
        await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "e", "x")
        await relay.stop()
    finally:
        await relay.kill()
    assert any("could not be written: [Errno 27] File too large" in line for line in relay.stderr), relay.stderr
    assert not [name for name in run_files(usage_file) if name.endswith(".tmp")]


async def test_every_worker_has_its_own_checkpoint_and_a_killed_worker_s_is_added_at_the_stop(
    tmp_path: Path, redis: RedisServer, relays: list[EmulatorProcess]
) -> None:
    """--workers: a worker killed and replaced leaves its checkpoint; its siblings' graceful writes add it."""
    usage_file = tmp_path / "usage.json"
    relays.append(supervisor := await serving(usage_file, "--workers", "2", "--redis-url", redis.url))
    await publishes_to(supervisor, 6)
    workers = children(supervisor.process.pid)

    def written() -> int:
        paths = [checkpoint_of(usage_file, pid) for pid in workers]
        return sum(publishes_in(read_json(path)) for path in paths if path is not None)

    await eventually(lambda: written() == 6, what="the workers' checkpoints of 6 publishes")
    os.kill(workers[0], signal.SIGKILL)
    await supervisor.wait_for_output(f"worker {workers[0]} killed by SIGKILL")
    assert await supervisor.stop() == 0
    assert publishes_in(read_json(usage_file)) == 6
    assert run_files(usage_file) == []
    assert sum("usage of a run that did not stop" in line for line in supervisor.stderr) == 1


# -- the setting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "shown"), [("0", "0"), ("-1.5", "-1.5"), ('"60"', "'60'"), ("nan", "nan")])
def test_usage_checkpoint_must_be_a_number_of_seconds_above_0(tmp_path: Path, value: str, shown: str) -> None:
    config = write(tmp_path, f"[server]\nusage_checkpoint = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, defaults=EmulatorConfig(apps=(APP,)))
    assert caught.value.message == f"{config} [server]: usage_checkpoint must be a number of seconds > 0, got {shown}"


def test_usage_checkpoint_is_read_from_server_and_defaults_to_a_minute(tmp_path: Path) -> None:
    assert EmulatorConfig(apps=(APP,)).usage_checkpoint == 60
    config = write(tmp_path, "[server]\nusage_file = 'u.json'\nusage_checkpoint = 0.5\n")
    assert load_config(config, defaults=EmulatorConfig(apps=(APP,))).usage_checkpoint == 0.5


async def test_the_usage_checkpoint_flag_is_checked_and_needs_a_usage_file(tmp_path: Path) -> None:
    usage = ["--usage-file", str(tmp_path / "usage.json")]
    outcomes = await asyncio.gather(
        run_relay("emulator", "--port", "0", *usage, "--usage-checkpoint", "0"),
        run_relay("emulator", "--port", "0", *usage, "--usage-checkpoint", "inf"),
        run_relay("emulator", "--port", "0", "--usage-checkpoint", "30"),
    )
    errors = [
        "must be a number of seconds > 0, got 0.0",
        "must be a number of seconds > 0, got inf",
        "needs --usage-file (or usage_file in the config's [server])",
    ]
    for outcome, error in zip(outcomes, errors, strict=True):
        assert_refused(outcome)
        assert outcome.stderr == f"relay: configuration error: --usage-checkpoint {error}\n"


@pytest.mark.parametrize(
    "damage", [b"\xff\xfe garbage", b"[" * 100_000, b'{"files": {"usage.json": [{"until": 1e400}]}}']
)
async def test_a_damaged_lock_file_is_taken_for_no_remembered_runs(
    start_emulator: StartEmulator, tmp_path: Path, damage: bytes
) -> None:
    """A damaged lock file (bytes that are not UTF-8) made every write of the usage file raise UnicodeDecodeError: the
    run's usage was lost at each stop; so would JSON nested past what the parser takes (RecursionError). It holds no
    runs to remember: the usage is written, and the lock file after."""
    usage_file = tmp_path / "usage.json"
    lock = tmp_path / "usage.json.lock"
    lock.write_bytes(damage)
    emulator = await start_emulator(app=APP)
    await publish(emulator.http_url, APP, "orders", "e", "x")
    assert write_usage_file(emulator.node, usage_file) == usage_file
    assert publishes_in(read_json(usage_file)) == 1
    assert json.loads(lock.read_text())["files"]["usage.json"][0]["until"] > 0

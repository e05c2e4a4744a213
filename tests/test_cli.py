"""The ``relay`` command, run as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from relay import __version__
from relay.cli import main
from tests.emulator_process import EmulatorProcess

RELAY = [sys.executable, "-m", "relay.cli"]


def test_version(capsys: object) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert f"relay {__version__}" in capsys.readouterr().out  # type: ignore[attr-defined]


async def test_emulator_prints_client_settings_serves_and_stops_on_sigterm() -> None:
    emulator = await EmulatorProcess.start("--app-id", "7")
    port = emulator.port
    assert f'new Pusher("app-key", {{ wsHost: "127.0.0.1", wsPort: {port}' in emulator.banner
    assert f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/7" in emulator.banner
    async with connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7") as ws:
        established = json.loads(await ws.recv())
        assert established["event"] == "pusher:connection_established"
        assert await emulator.stop(grace=10) == 0


async def test_a_bad_config_file_exits_2_naming_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[apps]]\napp_id = '1'\n")
    process = await asyncio.create_subprocess_exec(
        *RELAY, "emulator", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert "apps[0]: key is required" in stderr.decode()


@pytest.mark.parametrize(
    ("flags", "listening"), [(["--host", "127.0.0.1"], "http://127.0.0.1:"), ([], "http://[::1]:")]
)
async def test_a_given_host_wins_over_the_config_file_even_the_default_one(
    tmp_path: Path, flags: list[str], listening: str
) -> None:
    """docs/configuration.md: "--host (when given) wins over the file", 127.0.0.1 included (it used to be taken for
    the flag's default and lose); without it the file's host is used."""
    config = tmp_path / "relay.toml"
    config.write_text('[server]\nhost = "::1"\nport = 0\n\n[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n')
    process = await EmulatorProcess.start("--config", str(config), *flags)
    try:
        assert f"listening on {listening}{process.port} " in process.banner
    finally:
        await process.stop()

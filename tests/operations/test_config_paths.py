"""Relative paths in the emulator's config file (``tls_cert``, ``tls_key``, ``usage_file``) were taken relative to the
working directory, which under systemd is /: ``tls_cert = "cert.pem"`` beside the file failed (``TLS file cert.pem
does not exist``) and ``usage_file = "usage.json"`` wrote /usage.json. They are relative to the file's folder now;
the same settings given as flags stay relative to the working directory, as a shell has them, and the log names the
usage file by its absolute path."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from relay.emulator.config import EmulatorConfig, load_config
from tests.cli_support import assert_refused, run_relay, write
from tests.emulator_process import EmulatorProcess
from tests.operations.support import make_certificate, trusting

FILES = '[server]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\nusage_file = "usage.json"\n'


def usage_written(relay: EmulatorProcess) -> str:
    [record] = [json.loads(line) for line in relay.stderr if '"usage written"' in line]
    path = record["path"]
    assert isinstance(path, str)
    return path


def test_a_relative_path_in_the_file_is_beside_it_and_an_absolute_one_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "relay"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the file named relative to the working directory too, as --config etc/… is
    text = FILES.replace('"key.pem"', '"/srv/tls/key.pem"').replace('"usage.json"', '"../usage/usage.json"')
    config = load_config(Path("etc/relay") / write(folder, text).name, defaults=EmulatorConfig(apps=()))
    assert (config.tls_cert, config.tls_key, config.usage_file) == (
        str(folder / "cert.pem"),
        "/srv/tls/key.pem",
        str(folder / "../usage/usage.json"),
    )


async def test_a_service_started_in_another_directory_finds_the_files_beside_its_config(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"  # elsewhere: / under systemd
    folder.mkdir()
    elsewhere.mkdir()
    cert, _ = make_certificate(folder)
    config = write(folder, FILES, name="emulator.toml")
    relay = await EmulatorProcess.start("--config", str(config), "--log-json", cwd=elsewhere)
    try:
        async with httpx.AsyncClient(verify=trusting(cert)) as http:
            assert (await http.get(f"https://127.0.0.1:{relay.port}/health")).json() == {"status": "ok"}
    finally:
        assert await relay.stop() == 0
    assert usage_written(relay) == str(folder / "usage.json")
    assert (folder / "usage.json").is_file() and not (elsewhere / "usage.json").exists()


async def test_paths_given_as_flags_stay_relative_to_the_working_directory(tmp_path: Path) -> None:
    folder, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    config = write(folder, '[server]\nusage_file = "from-the-file.json"\n', name="emulator.toml")
    relay = await EmulatorProcess.start(
        "--config", str(config), "--usage-file", "usage.json", "--log-json", cwd=elsewhere
    )
    assert await relay.stop() == 0
    assert usage_written(relay) == str(elsewhere / "usage.json")  # the flag wins, and the log shows where it is
    assert (elsewhere / "usage.json").is_file() and not (folder / "from-the-file.json").exists()


async def test_an_unknown_capability_operation_stops_the_start_naming_app_resource_and_operation(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path,
        "[[apps]]\napp_id = 'shop'\nkey = 'k'\nsecret = 's'\nably_capability = '{\"*\":[\"subscribe\",\"publsh\"]}'\n",
    )
    outcome = await run_relay("emulator", "--config", str(config), "--port", "0")
    assert_refused(outcome, f"{config} apps[0]: ably_capability", "resource '*'", "'publsh' (did you mean 'publish'?)")

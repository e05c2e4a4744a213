"""docs/deploy.md: its systemd units pass ``systemd-analyze verify`` (or at least parse) and their command lines
parse with relay's own argument parser; its config file loads; its environment files configure what they say; the
stop timeout outlasts the emulator's drain. Every block of the page is one of these, or listed below as not run."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from relay.cli import build_parser
from relay.config import ProviderConfig, parse_url
from relay.emulator.config import EmulatorConfig, load_config
from relay.gateway import GatewaySettings, create_app

DOC = Path(__file__).parents[2] / "docs" / "deploy.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
RELAY_BIN = "/opt/relay/.venv/bin/relay"
# Blocks that need a real host (root, systemd as PID 1, a checkout to install): shown, not run.
NOT_RUN = ("useradd --system", "systemctl daemon-reload")
DRAIN_WAIT_S = 3.0  # docs/emulator.md "Graceful shutdown": the close handshakes take at most 3 s


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


def units() -> dict[str, str]:
    found = {}
    for body in blocks("ini"):
        match = re.search(r"^ExecStart=\S+ (\w+)", body, re.MULTILINE)
        assert match is not None, body
        found[match.group(1)] = body
    return found


def env_file(body: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in body.splitlines() if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def test_every_block_is_checked() -> None:
    kinds = [lang for lang, _ in BLOCKS]
    assert kinds.count("ini") == 2 and kinds.count("toml") == 1 and kinds.count("text") == 1
    for body in blocks("bash"):
        is_env_file = all(re.fullmatch(r"[A-Z_]+=\S+", line) for line in body.strip().splitlines())
        assert is_env_file or body.startswith(NOT_RUN), f"a bash block that no test runs:\n{body}"
    assert set(units()) == {"emulator", "serve"}


def test_the_config_file_loads(tmp_path: Path) -> None:
    (body,) = blocks("toml")
    path = tmp_path / "emulator.toml"
    path.write_text(body)
    config = load_config(path, defaults=EmulatorConfig(apps=()))
    (app,) = config.apps
    assert (app.app_id, app.key, app.allowed_origins) == ("1", "shop-key", ("https://shop.example.com",))
    assert app.webhooks[0].channel_prefix == "presence-"


def test_the_environment_files_configure_the_emulator_and_the_gateway() -> None:
    emulator_env, gateway_env = (env_file(body) for body in blocks("bash") if not body.startswith(NOT_RUN))
    assert set(emulator_env) == {"RELAY_CONSOLE_TOKEN"}
    settings = GatewaySettings.from_env(gateway_env)
    relay_url = settings.relay_url
    assert (relay_url if isinstance(relay_url, ProviderConfig) else parse_url(relay_url)).port == 6001
    assert settings.api_token and settings.jwt_secret
    assert settings.cors_origins == ("https://shop.example.com",)
    assert settings.public_url == "https://relay.example.com"


async def test_the_gateway_gives_pages_the_websocket_address_the_page_documents() -> None:
    """Its /v1/client-config sends browsers through nginx, as "TLS and nginx" says they connect, not to the emulator's
    127.0.0.1 in RELAY_URL (each browser's own machine)."""
    _, gateway_env = (env_file(body) for body in blocks("bash") if not body.startswith(NOT_RUN))
    documented = re.findall(
        r'wsHost: "([^"]+)", wssPort: (\d+), forceTLS: (true|false)', " ".join(DOC.read_text().split())
    )
    assert len(documented) == 2  # in "TLS and nginx" and "The gateway"
    transport = httpx.ASGITransport(app=create_app(GatewaySettings.from_env(gateway_env)))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        config = (await http.get("/v1/client-config")).json()
    for host, port, tls in documented:
        assert (config["wsHost"], config["wssPort"], config["forceTLS"]) == (host, int(port), tls == "true")


@pytest.mark.parametrize("command", ["emulator", "serve"])
def test_the_units_command_lines_parse(command: str) -> None:
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", units()[command], re.MULTILINE)
    binary, *args = shlex.split(exec_start)
    assert binary == RELAY_BIN
    parsed = build_parser().parse_args(args)
    assert parsed.host == "127.0.0.1"
    install = next(body for body in blocks("bash") if body.startswith("useradd"))
    assert "python3 -m venv /opt/relay/.venv" in install  # the venv the units run from


def test_the_stop_timeout_outlasts_the_drain(tmp_path: Path) -> None:
    (body,) = blocks("toml")
    path = tmp_path / "emulator.toml"
    path.write_text(body)
    config = load_config(path, defaults=EmulatorConfig(apps=()))
    drain = config.shutdown_delay + config.shutdown_spread + DRAIN_WAIT_S + config.shutdown_webhook_grace
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(units()["emulator"])
    assert float(unit["Service"]["TimeoutStopSec"]) > drain
    assert unit["Service"]["KillSignal"] == "SIGTERM"


@pytest.mark.parametrize("command", ["emulator", "serve"])
def test_the_units_verify(command: str, tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts the unit with no warning (the ExecStart binary pointed at this machine's
    relay); without systemd-analyze, the unit at least parses with its three sections."""
    body = units()[command]
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(body)
    assert unit.sections() == ["Unit", "Service", "Install"]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit was only parsed")
    relay = shutil.which("relay") or str(Path(sys.executable).with_name("relay"))
    path = tmp_path / f"relay-{command}.service"
    path.write_text(body.replace(RELAY_BIN, relay))
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

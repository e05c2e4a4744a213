"""Windows editors (Notepad) save UTF-8 with a byte order mark. Every file a user writes for relay reads the same
with or without one: the emulator's config, the gateway's rules and a pricing file (the usage file did already).
TOML has no BOM, so tomllib met it as "Invalid statement (at line 1, column 1)", a mistake the user cannot see."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from relay.cost.pricing import load_prices
from relay.emulator.config import EmulatorConfig, load_config
from relay.gateway.rules_file import RuleSpec, load_rules

BOM = b"\xef\xbb\xbf"


def saved_with_bom(path: Path, text: str) -> Path:
    path.write_bytes(BOM + text.encode())
    return path


def test_an_emulator_config_with_a_bom_loads(tmp_path: Path) -> None:
    path = saved_with_bom(tmp_path / "relay.toml", "[[apps]]\napp_id = 'café'\nkey = 'k'\nsecret = 's'\n")
    config = load_config(path, defaults=EmulatorConfig(apps=()))
    assert [(app.app_id, app.key) for app in config.apps] == [("café", "k")]


def test_gateway_rules_with_a_bom_load(tmp_path: Path) -> None:
    path = saved_with_bom(tmp_path / "rules.toml", "[[channels]]\npattern = 'private-user-{sub}'\n")
    assert load_rules(path) == (RuleSpec(pattern="private-user-{sub}"),)


def test_a_pricing_file_with_a_bom_loads(tmp_path: Path) -> None:
    bundled = importlib.resources.files("relay.cost").joinpath("pricing.toml").read_text(encoding="utf-8")
    plain = tmp_path / "plain.toml"
    plain.write_text(bundled, encoding="utf-8")
    with_bom, without = load_prices(saved_with_bom(tmp_path / "pricing.toml", bundled)), load_prices(plain)
    assert with_bom.providers == without.providers and with_bom.version == without.version

"""docs/configuration.md against the code, both ways: flags (argparse), environment variables (read in the source),
config-file keys (the dataclasses and the loaders' allowed keys), rules-file keys; its examples are run."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from examples.order_tracking.__main__ import build_parser as order_tracking_parser
from relay.cli import build_parser
from relay.emulator.config import App, EmulatorConfig, Webhook, load_config
from relay.protocol.channels import Limits

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "configuration.md"
TEXT = DOC.read_text()
ENV_READ = re.compile(r"""(?:\benv|environ|os\.environ)(?:\.get)?[(\[]\s*['"]([A-Z][A-Z0-9_]+)['"]""")
PROCESS_ENV = re.compile(r"process\.env\.([A-Z][A-Z0-9_]+)")


def section(heading: str) -> str:
    """The text under ``heading`` (a whole line, hashes included) up to the next heading of its level or higher."""
    match = re.search(rf"^{re.escape(heading)}\n", TEXT, re.MULTILINE)
    assert match is not None, f"no heading {heading!r} in {DOC.name}"
    level = len(heading) - len(heading.lstrip("#"))
    rest = TEXT[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start() if end else len(rest)]


def first_column(text: str) -> list[str]:
    """The first cells of a section's table rows (header and separator left out)."""
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [row.split("|")[1].strip() for row in rows[2:]]


def documented_keys(heading: str) -> set[str]:
    return {key for cell in first_column(section(heading)) for key in re.findall(r"`([a-z_]+)`", cell)}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def long_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")} - {
        "--help"
    }


@pytest.mark.parametrize("command", ["emulator", "serve", "publish", "cost"])
def test_every_flag_of_every_command_is_documented(command: str) -> None:
    documented = {cell.split()[0].strip("`") for cell in first_column(section(f"### `relay {command}`"))}
    assert documented == long_flags(subcommands()[command])


def test_the_order_tracking_flags_are_documented() -> None:
    documented = {
        cell.split()[0].strip("`")
        for cell in first_column(section("### `.venv/bin/python -m examples.order_tracking`"))
    }
    assert documented == long_flags(order_tracking_parser())


def test_every_documented_default_is_the_parsers() -> None:
    """The default column of the emulator, serve and publish tables says what argparse defaults to."""
    for command in ("emulator", "serve", "publish"):
        parser = subcommands()[command]
        defaults = {option: action.default for action in parser._actions for option in action.option_strings}
        for line in section(f"### `relay {command}`").splitlines()[2:]:
            if not line.startswith("| `--"):
                continue
            flag_cell, default_cell = (cell.strip() for cell in line.split("|")[1:3])
            flag = flag_cell.split()[0].strip("`")
            default = defaults[flag]
            if default is None and command == "emulator":  # the flag leaves the config's own default in force
                default = getattr(EmulatorConfig(apps=()), flag[2:].replace("-", "_"), None)
            if default_cell.startswith("`") and not default_cell.startswith("`$"):
                documented = default_cell.strip("`")
                if isinstance(default, float):
                    assert float(documented) == default, flag
                else:
                    assert documented == str(default), flag
            elif default_cell in ("", "off"):
                assert default in (None, False, []) or flag == "--console-token", flag


def sources(folder: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """The folder's files with those suffixes, outside installed and built folders: a parallel test process may be
    rebuilding examples/nextjs/.next, and a folder removed under rglob's walk raises FileNotFoundError."""
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if name not in ("node_modules", ".next", "__pycache__")]
        yield from (Path(directory, name) for name in files if name.endswith(suffixes))


def environment_variables_in_code() -> set[str]:
    names: set[str] = set()
    for folder in ("relay", "emulator", "adapters", "examples"):
        for path in sources(ROOT / folder, (".py",)):
            names.update(ENV_READ.findall(path.read_text()))
    for path in sources(ROOT / "examples" / "nextjs", (".ts", ".tsx")):
        names.update(PROCESS_ENV.findall(path.read_text()))
    return names


def test_every_environment_variable_is_documented_and_exists() -> None:
    """Every variable the code reads has a row; every row but Next's own telemetry switch is read somewhere."""
    in_code = environment_variables_in_code()
    assert {"RELAY_URL", "PUSHER_CLUSTER", "RELAY_JWKS_FILE", "RELAY_CONSOLE_TOKEN", "ORDER_TRACKING_SECRET"} <= in_code
    documented = {cell.strip("`") for cell in first_column(section("## Environment variables"))}
    assert in_code - documented == set(), "read by the code but not documented"
    assert documented - in_code == {"NEXT_TELEMETRY_DISABLED"}, "documented but read nowhere"


def test_config_file_keys_match_the_dataclasses() -> None:
    server = {f.name for f in fields(EmulatorConfig)} - {"apps", "node_id"}
    assert documented_keys("### `[server]`") == server
    assert documented_keys("### `[[apps]]`") == {f.name for f in fields(App) if f.init}
    assert documented_keys("### `[apps.limits]`") == {f.name for f in fields(Limits)}
    assert documented_keys("### `[[apps.webhooks]]`") == {f.name for f in fields(Webhook)}


def test_the_config_file_example_loads_and_sets_every_key(tmp_path: Path) -> None:
    (example,) = re.findall(r"^```toml\n(.*?)^```$", section("## The emulator's config file"), re.MULTILINE | re.DOTALL)
    path = tmp_path / "emulator.toml"
    path.write_text(example)
    config = load_config(path, defaults=EmulatorConfig(apps=()))
    (app,) = config.apps
    assert (app.app_id, app.key, app.max_connections, app.api_rate_limit) == ("1", "shop-key", 1000, 50)
    assert app.allowed_origins == ("https://shop.example.com", "*.shop.example.com")
    assert app.webhooks[0].headers == {"X-Source": "relay"}
    assert app.keys == ["shop-key", "shop-key-2026"]
    assert (config.redis_url, config.shutdown_webhook_grace) == ("redis://127.0.0.1:6379/0", 5)
    keys = set(re.findall(r"^([a-z_]+) =", example, re.MULTILINE))
    every = {f.name for f in (*fields(EmulatorConfig), *fields(App), *fields(Limits), *fields(Webhook)) if f.init}
    assert every - keys == {"apps", "node_id", "limits", "webhooks"}


def test_rules_file_keys_match_the_loader() -> None:
    from relay.gateway.rules_file import RuleSpec

    assert documented_keys("## The gateway's rules file") == {f.name for f in fields(RuleSpec)}


def test_the_url_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
    exec(compile(block, str(DOC), "exec"), {"__name__": "docs"})
    assert capsys.readouterr().out == "Relay('mirror:memory://old|memory://new')\n"


def test_every_url_form_is_documented() -> None:
    forms = first_column(section("## Provider URLs"))
    for scheme in ("pusher://", "emulator://", "ably://", "memory://", "mirror:", "failover:"):
        assert any(form.startswith(f"`{scheme}") for form in forms), scheme


def test_emulator_help_says_config_replaces_the_flags_app() -> None:
    """docs/configuration.md ("--config replaces it with the file's [[apps]]") and `relay emulator --help` agree."""
    help_text = subprocess.run(
        [sys.executable, "-m", "relay.cli", "emulator", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--config replaces it with the TOML file's [[apps]]" in " ".join(help_text.split())
    assert "replaces it with the file's `[[apps]]`" in (ROOT / "docs" / "configuration.md").read_text()

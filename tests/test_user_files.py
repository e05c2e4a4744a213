"""Every file a user writes for relay (the emulator's config, the gateway's rules, a pricing or usage file) is read by
one reader: what cannot be read says so alike, naming the file and what is wrong with it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from relay.cost.pricing import load_prices
from relay.cost.usage import load_usage
from relay.emulator.config import EmulatorConfig, load_config
from relay.errors import ConfigError
from relay.gateway.rules_file import load_rules

LOADERS: list[tuple[str, Callable[[Path], object]]] = [
    ("config file", lambda path: load_config(path, defaults=EmulatorConfig(apps=()))),
    ("rules file", load_rules),
    ("pricing file", load_prices),
    ("usage file", load_usage),
]
TOML_LOADERS = LOADERS[:3]


def refusal(load: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value.message


@pytest.mark.parametrize(("what", "load"), LOADERS)
def test_a_missing_file_is_named(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    assert refusal(load, tmp_path / "absent") == f"{what} {tmp_path / 'absent'} does not exist"


@pytest.mark.parametrize(("what", "load"), LOADERS)
def test_a_directory_is_a_file_that_cannot_be_read(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    assert refusal(load, tmp_path) == f"{what} {tmp_path} cannot be read: Is a directory"


@pytest.mark.parametrize(("what", "load"), LOADERS)
def test_a_file_not_in_utf8_names_the_byte(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    path = tmp_path / "latin1"
    path.write_bytes(b"# caf\xe9\n")
    assert refusal(load, path) == f"{what} {path} is not UTF-8 text: byte 5 cannot be decoded"


@pytest.mark.parametrize(("what", "load"), TOML_LOADERS)
def test_a_toml_mistake_names_its_line(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[[channels]\n")
    assert (
        refusal(load, path) == f"{what} {path} is not valid TOML: Expected ']]' at the end of an array declaration"
        " (at line 1, column 11)"
    )


@pytest.mark.parametrize(("what", "load"), TOML_LOADERS)
def test_python_s_own_limits_are_the_file_s_errors(tmp_path: Path, what: str, load: Callable[[Path], object]) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 600 + "]" * 600)
    assert refusal(load, path) == f"{what} {path} is nested too deeply to be a {what}"

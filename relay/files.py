"""Reading a user's file (a config, rules, pricing or usage file): what cannot be read or parsed is a ConfigError
naming the file and what to fix."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from relay.errors import ConfigError, parser_limits


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of the ``what`` (e.g. "usage file") at ``path``, without the byte order mark Windows editors
    save UTF-8 with (no part of the text)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: byte {exc.start} cannot be decoded") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document of the ``what`` at ``path``."""
    return parse_toml(read_text(path, what), what, str(path))


def parse_toml(text: str, what: str, origin: str) -> dict[str, Any]:
    """``text``, the TOML of the ``what`` read from ``origin``, parsed within Python's limits."""
    with parser_limits(what, origin):
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{what} {origin} is not valid TOML: {exc}") from None

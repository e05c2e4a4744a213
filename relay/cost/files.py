"""Reading a user's pricing or usage file: what cannot be read or parsed is a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

from relay.errors import ConfigError


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of the ``what`` (e.g. "usage file") at ``path``, without the byte order mark Windows editors
    save UTF-8 with (no part of the text)."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: byte {exc.start} cannot be decoded") from exc

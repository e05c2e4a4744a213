"""Reading a user's pricing or usage file: what cannot be read or parsed is a ConfigError naming the file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def parser_limits(what: str, origin: str) -> Iterator[None]:
    """Python's own limits met while parsing a ``what``, as its errors; the parser's syntax errors are the caller's."""
    try:
        yield
    except RecursionError as exc:
        raise ConfigError(f"{what} {origin} is nested too deeply to be a {what}") from exc
    except ValueError as exc:  # Python refuses to read an integer of over 4,300 digits (its advice is not the user's)
        raise ConfigError(f"{what} {origin}: a number is too long: {str(exc).split(';')[0]}") from exc

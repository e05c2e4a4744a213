"""Logging for ``relay emulator``: structured records (text or one JSON object a line) with secrets redacted.

Records carry their fields as ``extra={...}``; the text format appends them as ``key=value``, the JSON format as
keys. Every line (in JSON, every string of it) passes through the redactor last, whatever logged it: the app secrets
and the console token are replaced by ``***`` (as written, JSON-escaped or percent-encoded), and so are credentials in
URLs (user-info and secret-looking query values: :func:`redact_urls`, also what the console and configuration errors
show of a URL) and ``auth_signature``/``token``/``secret``/``password`` values anywhere. What a client sent (an
``Origin`` header, a path: the HTTP parser lets bytes 0x80-0xFF through, read as C1 controls such as U+009B, CSI) is
written with its unprintable characters escaped, so that it can neither end a line nor drive the terminal showing it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import TextIO
from urllib.parse import quote, quote_plus

from relay.errors import printable

REDACTED = "***"
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_QUERY_SECRETS = re.compile(r"(?i)((?:auth_signature|token|secret|password)=)[^&#\s\"']+")
# In a URL, only query parameters are values to hide (a path segment or a password holding "token=" is not one).
_URL_QUERY_SECRETS = re.compile(r"(?i)([?&;](?:[\w.-]*?(?:token|secret|password|signature|sig)|api_?key)=)[^&#\s\"']+")
# A URL's authority runs to the first '/', '?' or '#' (here also to whitespace, as URLs sit in text) and its user-info
# to the authority's last '@', as urlsplit and httpx read it: a password may hold quotes or an unencoded '@'.
_URL_USERINFO = re.compile(r"://[^/?#\s]*@")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
# What each way of percent-encoding leaves as it is, beyond letters, digits and "_.-~": urllib's quote (path and
# component), and JavaScript's encodeURIComponent.
_URL_SAFE = ("", "/", "!'()*")


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every URL in it hidden: user-info (``http://user:pass@host`` →
    ``http://***@host``) and the values of secret-looking query parameters (``?token=abc``, ``&api_key=…``,
    ``&sig=…`` → ``***``)."""
    return _URL_QUERY_SECRETS.sub(rf"\1{REDACTED}", _URL_USERINFO.sub(f"://{REDACTED}@", text))


def secret_forms(secret: str) -> set[str]:
    """How ``secret`` may appear in a line: as it is, JSON-escaped, or percent-encoded (a client that put it in a
    URL), with upper- or lower-case hex digits."""
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    for safe in _URL_SAFE:
        for encoded in (quote(secret, safe=safe), quote_plus(secret, safe=safe)):
            forms.add(encoded)
            forms.add(_PERCENT_ESCAPE.sub(lambda escape: escape.group().lower(), encoded))
    return forms


def _json_escaped(line: str) -> str:
    """A JSON line with the unprintable characters its strings hold (json.dumps escapes U+0000-U+001F only) as
    ``\\uXXXX`` escapes: the same values, and a line a terminal shows as it is."""
    if line.isprintable():
        return line
    # json.dumps escapes a character as ensure_ascii does: \\uXXXX, a surrogate pair past U+FFFF
    return "".join(character if character.isprintable() else json.dumps(character)[1:-1] for character in line)


class Redactor:
    """Replaces known secrets (in the forms :func:`secret_forms` lists) and credential-looking URL parts in a line."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= 3:
                forms.update(secret_forms(secret))
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _QUERY_SECRETS.sub(rf"\1{REDACTED}", redact_urls(text))  # also outside URLs: a logged query string


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


def _redacted(value: object, redact: Redactor) -> object:
    """``value`` as JSON encodes it, with every string in it (keys too) redacted; what JSON has no form for, as its
    ``str``."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {redact(str(key)): _redacted(item, redact) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item, redact) for item in value]
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        document.update(_fields(record))
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        # Each string before encoding, not the encoded line: there a value's redaction (token=… up to a quote) could
        # swallow the backslash escaping a quote a client sent, and end the JSON string early
        return _json_escaped(json.dumps(_redacted(document, self._redact), ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = redact

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(self._redact(super().formatMessage(record)), backslashes=False)

    def format(self, record: logging.LogRecord) -> str:
        # The message's line (escaped: no line break left in it), then any traceback, whose lines are its own
        message, newline, traceback = super().format(record).partition("\n")
        extra = printable(
            self._redact(" ".join(f"{key}={value}" for key, value in _fields(record).items())), backslashes=False
        )
        return (f"{message} {extra}" if extra else message) + newline + self._redact(traceback)


def configure_logging(
    level: str, *, json_format: bool, secrets: Iterable[str | None] = (), stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in the chosen format; replaces the root logger's handlers."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if json_format else TextFormatter(redact))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx writes an INFO line for every request, one per webhook sent: noise beside the emulator's own lines, which
    # say when a webhook fails or is dropped. Shown with --log-level debug.
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    return handler

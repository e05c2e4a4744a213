"""Every error Relay raises, in one hierarchy.

Each error carries what a caller needs to react without parsing the message: the HTTP status to answer or that was
answered, the provider's own error code, the Pusher WebSocket close code, and how long to wait before retrying.
Messages say what went wrong and what to do about it, and never contain a secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any


class RelayError(Exception):
    """Base of every Relay error."""

    http_status: int | None = None
    code: int | None = None
    close_code: int | None = None
    # The provider whose HTTP answer this is ("Pusher", "Ably", "the Relay emulator"), None when Relay itself refused
    # or failed: a provider's 401 is about Relay's own key, a 401 Relay raises is about what it was given.
    answered_by: str | None = None
    # A publish that failed after part of it was delivered: how many events (or channels) were published, so that
    # they are not sent again. An operation sent as several calls (a batch over the provider's events per call, a
    # publish over its channels per call) that failed after the first: the earlier calls' events, the first ones.
    # A call the provider refused in part (Ably answers channel by channel): those it published, which the message
    # names, not necessarily the first ones.
    published: int | None = None
    # The request went out and no answer came (a timeout, a connection lost, the client closed meanwhile), or an answer
    # that leaves it open (a gateway's 502 or 504, Ably's 50003): the provider may or may not have processed it, so a
    # publish may have been delivered.
    outcome_unknown: bool = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        close_code: int | None = None,
        retry_after: float | None = None,
        answered_by: str | None = None,
    ) -> None:
        super().__init__(message)
        self._message = message
        if http_status is not None:
            self.http_status = http_status
        if code is not None:
            self.code = code
        if close_code is not None:
            self.close_code = close_code
        self.retry_after = retry_after
        self.answered_by = answered_by

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the error it is, attributes and all: the default calls the class with the message alone, which
        the errors whose ``__init__`` takes other arguments (``ClientClosed``, ``UnsupportedCapability``,
        ``MirrorError``) refuse. A ``multiprocessing`` pool's worker (or a ``ProcessPoolExecutor``'s) that raised one
        sent what the parent could not unpickle: the pool's result thread died and ``Pool.map`` waited for ever, or
        every task of the executor failed with ``BrokenProcessPool``."""
        return (_unpickled, (type(self), self.args), self.__dict__)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, message: str) -> None:
        """A message added to (which items of a list it is about, what an earlier attempt did) is what ``str()``
        gives too."""
        self._message = message
        self.args = (message,)


def _unpickled(kind: type[RelayError], args: tuple[Any, ...]) -> RelayError:
    """A pickled error made again without its ``__init__``: its attributes are then set from the pickled state."""
    return kind.__new__(kind, *args)


class ConfigError(RelayError):
    """The configuration (URL, environment, file or flags) is invalid; the message names the fix."""


class NoProviderConfigured(ConfigError):
    """No ``RELAY_URL``, ``PUSHER_*`` or ``ABLY_API_KEY`` variable is set at all: a tool may then fall back to a
    provider of its own (the order-tracking example runs an emulator), which it must not do for a mistake in one."""


class ProtocolError(RelayError):
    """A request or frame breaks a protocol rule (name, size, shape). Answered with 400."""

    http_status = 400


class InvalidFrame(ProtocolError):
    """A WebSocket frame is not a well-formed Pusher event."""


class InvalidChannelName(ProtocolError):
    """A channel name is too long, uses a reserved prefix or a character outside the allowed set."""


class InvalidEventName(ProtocolError):
    """An event name is empty, too long, or in the ``pusher`` namespace Pusher reserves for its own events."""


class InvalidSocketId(ProtocolError):
    """A socket id does not match the ``^\\d+\\.\\d+$`` format."""


class InvalidIdempotencyKey(ProtocolError):
    """An idempotency key is empty, too long, or holds a space or a character outside printable ASCII."""


class IdempotencyKeyReused(ProtocolError):
    """An idempotency key already published, within its 2 minutes, a different request (other channels, event,
    data or socket_id): a resend must repeat the request, and a new publish needs a new key. Nothing was published:
    the client refused it without sending it, or the emulator, which remembers keys from every client, refused it.
    Answered with 422."""

    http_status = 422


class PayloadTooLarge(ProtocolError):
    """A payload is over its size limit. Answered with 413."""

    http_status = 413


class InvalidData(ProtocolError, TypeError):
    """Event data or a user's info that JSON cannot encode (a datetime, bytes, a set); a TypeError too, as the json
    module's own refusal is."""


class LimitExceeded(ProtocolError):
    """A count limit (channels per event, events per batch, presence members, watchlist) is exceeded."""


class AuthenticationError(RelayError):
    """A signature, key, token or timestamp did not verify. Answered with 401."""

    http_status = 401


class InvalidSignature(AuthenticationError):
    """A signature does not match the one computed with the shared secret."""


class StaleTimestamp(AuthenticationError):
    """A signed request's timestamp is outside the accepted window; check the sender's clock."""


class UnknownKey(AuthenticationError):
    """The key that signed a request is not the application's key."""


class PermissionDenied(RelayError):
    """The caller is known but not allowed to do this (app disabled, channel refused). Answered with 403."""

    http_status = 403


class NotFound(RelayError):
    """The application, channel or route does not exist. Answered with 404."""

    http_status = 404


class RateLimited(RelayError):
    """Too many requests; ``retry_after`` says how long to wait when known. Answered with 429."""

    http_status = 429


class ProviderError(RelayError):
    """A provider answered with an error; ``http_status`` and ``code`` are the provider's."""


class TransportError(RelayError):
    """The provider could not be reached (connection refused, timeout, TLS failure)."""


class ClientClosed(RelayError):
    """The client was closed (``close()``, the end of its ``with`` block, ``reset_default_client()``) while, or
    before, it was used. Closed during a request (being sent, or between its retries), the error names the request's
    host and says whether the provider may have processed it: ``sent`` is true once any of the request's bytes went
    to the network (false: the provider got none of it, and it may be sent again with another client), and
    ``outcome_unknown`` when what went out got no answer and changes something (not a ``query``): a publish may have
    been delivered."""

    # Whether any byte of the request went to the network before the client was closed
    sent: bool = False

    def __init__(
        self,
        *,
        in_flight_to: str | None = None,
        sent: bool = False,
        unanswered: bool = False,
        query: bool = False,
        publishes: bool = False,
    ) -> None:
        closed_during = f"this Relay client was closed during a request to {in_flight_to}"
        if in_flight_to is None:
            super().__init__("this Relay client is closed: create another one")
        elif not sent:
            super().__init__(
                f"{closed_during}, before any of it was sent: the provider got nothing; create another client to "
                "send it again"
            )
        elif not unanswered:  # closed while it waited to be retried, every attempt refused
            super().__init__(
                f"{closed_during}, while it waited to be sent again: the provider had answered each attempt with "
                "an error; create another client to send it again"
            )
        elif query:  # a query changes nothing, whether or not the provider got it
            super().__init__(
                f"this Relay client was closed during a query to {in_flight_to}: create another client to ask again"
            )
        else:
            # The request may have been processed: a publish sent again could be delivered twice
            delivered = " (a publish may have been delivered)" if publishes else ""
            super().__init__(
                f"{closed_during}: the request may or may not have reached the provider{delivered}; "
                "create another client, and check before sending it again"
            )
            self.outcome_unknown = True
        self.sent = sent


class UnsupportedCapability(RelayError):
    """The configured provider cannot perform this operation."""

    http_status = 501  # Not Implemented: what the gateway answers; nothing failed

    def __init__(self, provider: str, operation: str, *, hint: str = "") -> None:
        message = f"{provider} does not support {operation}"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.provider = provider
        self.operation = operation


def about_item(error: RelayError, where: str) -> RelayError:
    """``error``, its message now starting with ``where`` (``events[3]``, ``channels[0]``): which item of a list it is
    about, in a list of hundreds. Its class, status and code are unchanged; raise it again."""
    error.message = f"{where}: {error.message}"
    return error


@contextmanager
def parser_limits(what: str, origin: str) -> Iterator[None]:
    """Python's own limits met while parsing a ``what``, as its errors; the parser's syntax errors are the caller's."""
    try:
        yield
    except RecursionError as exc:
        raise ConfigError(f"{what} {origin} is nested too deeply to be a {what}") from exc
    except ValueError as exc:  # Python refuses to read an integer of over 4,300 digits (its advice is not the user's)
        raise ConfigError(f"{what} {origin}: a number is too long: {str(exc).split(';')[0]}") from exc


def first_cause(error: BaseException) -> str:
    """What first went wrong under an HTTP client's error, which tells a refused port from a name that does not
    resolve or a failed TLS handshake (httpx says "All connection attempts failed" for the first)."""
    while (under := error.__cause__ or error.__context__) is not None:
        error = under
    if isinstance(error, ConnectionError) and error.errno:  # "Connect call failed ('127.0.0.1', 1)" names no cause
        return os.strerror(error.errno)
    return str(error) or error.__class__.__name__


_JSON_KINDS: Mapping[type, str] = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
    list: "a list",
    type(None): "null",
}


# The most of a duplicated key's characters its message shows
KEY_SHOWN = 100


class DuplicateKey(ValueError):
    """A JSON object names a key twice. Parsers keep one of the values (Python's the last), so the one dropped may be
    the one meant, or the one a proxy in front checked."""

    def __init__(self, key: str) -> None:
        super().__init__(f"{clipped(key, KEY_SHOWN)!r} is given twice in one object")
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        """Made again from its key when unpickled: by default its message would be taken for the key, and quoted
        again."""
        return (DuplicateKey, (self.key,))


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook`` where a key given twice is an error: :class:`DuplicateKey`."""
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return members


def json_kind(value: object) -> str:
    """What a decoded JSON value is, in words ("a list", "null"), for an error that must not show it."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def clipped(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and an ellipsis: what a client sent, kept short where it is shown (and a
    cut text is not shown as if whole)."""
    return text if len(text) <= limit else text[:limit] + "…"


def printable(text: str, *, backslashes: bool = True) -> str:
    """``text`` for a log line, its unprintable characters escaped as Python writes them (``\\n``, ``\\x1b``,
    ``\\x9b``): a line break or a terminal's control sequence a client sent (a percent-decoded ``%0a`` in a path, a
    byte 0x9b read as the C1 control CSI) would otherwise write a line of theirs into the log, or drive the terminal
    showing it. Backslashes are escaped too (so that a path's ``%5Cn`` does not read as ``%0a``), unless
    ``backslashes`` is False: in text already holding reprs, whose escapes would be doubled."""
    if text.isprintable() and (not backslashes or "\\" not in text):
        return text
    return "".join(
        character if character.isprintable() and (not backslashes or character != "\\") else ascii(character)[1:-1]
        for character in text
    )

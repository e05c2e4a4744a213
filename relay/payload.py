"""Event data, encoded once per publish whatever the number of channels or providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.errors import InvalidData
from relay.protocol.frames import dumps


@dataclass(frozen=True, slots=True)
class Payload:
    """``text`` is what Pusher carries; ``is_json`` says whether it is JSON Relay encoded (Ably marks it so)."""

    text: str
    is_json: bool

    @classmethod
    def of(cls, data: Any) -> Payload:
        if isinstance(data, str):
            return cls(data, False)
        return cls(json_text(data, "event data", "a str or JSON-serialisable"), True)


def json_text(value: object, what: str, must_be: str = "JSON-serialisable") -> str:
    """``value`` as the JSON text every provider is sent; what JSON cannot encode is :class:`InvalidData` naming
    ``what``, before anything is sent."""
    try:
        return dumps(value)
    except (TypeError, ValueError) as exc:
        raise InvalidData(f"{what} must be {must_be}: {exc}") from None
    except RecursionError:  # the encoder goes one call deeper per level: about a thousand levels at most
        raise InvalidData(
            f"{what} is nested too deeply to encode as JSON (past Python's recursion limit): flatten it"
        ) from None

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
        try:
            return cls(dumps(data), True)
        except (TypeError, ValueError) as exc:
            raise InvalidData(f"event data must be a str or JSON-serialisable: {exc}") from None
        except RecursionError:  # the encoder goes one call deeper per level: about a thousand levels at most
            raise InvalidData(
                "event data is nested too deeply to encode as JSON (past Python's recursion limit): flatten it"
            ) from None

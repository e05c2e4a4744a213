"""The rule an idempotency key follows, shared by the library (the keys callers give) and the emulator (the
``idempotency_key`` parameter of its HTTP API, which the Pusher adapter sends to ``emulator://`` URLs)."""

from __future__ import annotations

import re

from relay.errors import InvalidIdempotencyKey

# Ably de-duplicates a message id for 2 minutes (ably-and-pricing.md, "Idempotent publishing"); the client's memory
# and the emulator keep a key as long, so every provider answers a resend alike.
IDEMPOTENCY_WINDOW_SECONDS = 120.0
MAX_IDEMPOTENCY_KEY_LENGTH = 200
# What the Pusher adapter sends for a batch's part: the caller's key, ':' and the index of the part's first event (as
# the Ably adapter's message ids), an index of up to 20 digits
MAX_SENT_KEY_LENGTH = MAX_IDEMPOTENCY_KEY_LENGTH + 1 + 20
# Says an answer is the one given to an earlier publish with the same key (relay serve's, the emulator's HTTP API's)
REPLAYED_HEADER = "Idempotency-Replayed"
# Printable ASCII but the space: UUIDs, ULIDs and base64url fit, and the key goes into an HTTP header and Ably's ids
_KEY_CHARACTERS = re.compile(r"[!-~]+")


def key_rule(max_length: int) -> str:
    return f"an idempotency key is 1 to {max_length} printable ASCII characters without spaces (a UUID or a ULID fits)"


KEY_RULE = key_rule(MAX_IDEMPOTENCY_KEY_LENGTH)


def check_idempotency_key(key: object, max_length: int = MAX_IDEMPOTENCY_KEY_LENGTH) -> str:
    """``key`` if it follows :func:`key_rule` for ``max_length``, else an InvalidIdempotencyKey (400) saying which
    part it breaks."""
    rule = KEY_RULE if max_length == MAX_IDEMPOTENCY_KEY_LENGTH else key_rule(max_length)
    if not isinstance(key, str):
        raise InvalidIdempotencyKey(f"{rule}: got {type(key).__name__}, not a str")
    if not key:
        raise InvalidIdempotencyKey(f"{rule}: got an empty one")
    if len(key) > max_length:
        raise InvalidIdempotencyKey(f"{rule}: got {len(key)} characters")
    if not _KEY_CHARACTERS.fullmatch(key):
        bad = next(character for character in key if not _KEY_CHARACTERS.fullmatch(character))
        raise InvalidIdempotencyKey(f"{rule}: got one holding {bad!r}")
    return key


def key_reused(key: str, resent: str, window: float = IDEMPOTENCY_WINDOW_SECONDS) -> str:
    """The refusal of a publish whose ``key`` named another publish within the ``window`` (the library's, the
    gateway's and the emulator's words); ``resent``: what a resend must repeat."""
    return (
        f"the idempotency key {key!r} was used for another publish in the last {window:g} "
        f"seconds: a resend must repeat the same {resent}; give a new publish a new key"
    )

"""Pusher signatures: HTTP API requests, channel authorization, user sign-in, webhooks, encrypted-channel keys.

Every function takes the secret and the time as arguments; verification compares signatures in constant time and
raises a typed error whose message never contains the secret or the expected signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping

from relay.errors import (
    AuthenticationError,
    InvalidChannelName,
    InvalidSignature,
    StaleTimestamp,
    UnknownKey,
    clipped,
)
from relay.protocol.channels import ChannelKind, classify, validate_channel_name
from relay.protocol.socket_ids import validate_socket_id

AUTH_VERSION = "1.0"
TIMESTAMP_WINDOW_SECONDS = 600
EMPTY_BODY_MD5 = hashlib.md5(b"").hexdigest()
_AUTH_PARAMS = ("auth_key", "auth_timestamp", "auth_version", "auth_signature")
_AUTH_PARAM_SET = frozenset(_AUTH_PARAMS)


_BLOCK = 64  # SHA-256's block size in bytes
_XOR_INNER = bytes(byte ^ 0x36 for byte in range(256))
_XOR_OUTER = bytes(byte ^ 0x5C for byte in range(256))


@functools.lru_cache(maxsize=64)
def _keyed_sha256(secret: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC's inner and outer SHA-256 states with the key already absorbed (RFC 2104). Copying them makes an HMAC
    a handful of calls into C: the hmac module's Python wrapper around each step cost twice the hashing itself."""
    key = secret.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_XOR_INNER)), hashlib.sha256(key.translate(_XOR_OUTER))


def hmac_sha256_hex(secret: str, message: str | bytes) -> str:
    keyed_inner, keyed_outer = _keyed_sha256(secret)
    inner = keyed_inner.copy()
    inner.update(message.encode("utf-8", "surrogatepass") if isinstance(message, str) else message)
    outer = keyed_outer.copy()
    outer.update(inner.digest())
    return outer.hexdigest()


def same_secret_text(supplied: str, expected: str) -> bool:
    """Constant-time equality of two strings, any of which may hold unencodable characters from untrusted JSON."""
    return hmac.compare_digest(supplied.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


try:  # CPython's own MD5: half the time of OpenSSL 3's for a request body (its set-up per hash is most of it)
    from _md5 import md5 as _cpython_md5  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # a Python built without it
    _cpython_md5 = hashlib.md5
_md5: Callable[[bytes], hashlib._Hash] = _cpython_md5


def body_md5(body: bytes) -> str:
    return _md5(body).hexdigest()


# -- HTTP API requests ------------------------------------------------------------------------------------------


def rest_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nPATH\\nk=v&…`` over every parameter but ``auth_signature``: keys lowercased and sorted, values raw."""
    return _string_to_sign(method, path, {key.lower(): value for key, value in params.items()})


def _string_to_sign(method: str, path: str, lowered: Mapping[str, str]) -> str:
    """:func:`rest_string_to_sign` of parameters whose keys are lower-case already (as the verifier holds them)."""
    query = "&".join([f"{key}={value}" for key, value in sorted(lowered.items()) if key != "auth_signature"])
    return f"{method.upper()}\n{path}\n{query}"


def rest_signature(secret: str, method: str, path: str, params: Mapping[str, str]) -> str:
    return hmac_sha256_hex(secret, rest_string_to_sign(method, path, params))


def sign_rest_request(
    key: str,
    secret: str,
    method: str,
    path: str,
    *,
    timestamp: int,
    body: bytes = b"",
    params: Mapping[str, str] | None = None,
    include_empty_body_md5: bool = False,
) -> dict[str, str]:
    """The query parameters of a signed request: ``params`` plus the auth parameters (and ``body_md5``)."""
    signed = dict(params or {})
    signed.update(auth_key=key, auth_timestamp=str(timestamp), auth_version=AUTH_VERSION)
    if body or include_empty_body_md5:
        signed["body_md5"] = body_md5(body)
    signed["auth_signature"] = rest_signature(secret, method, path, signed)
    return signed


SHOWN_STRING_TO_SIGN = 300  # characters: a presence channel's channel_data or a REST query may be kilobytes


def shown_string_to_sign(signed: str) -> str:
    """A refused signature's string to sign as an error shows it (hosted Pusher names it; it holds no secret), cut at
    ``SHOWN_STRING_TO_SIGN`` characters."""
    return clipped(signed, SHOWN_STRING_TO_SIGN)


def unique_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Query pairs as a mapping; a repeated parameter is refused, since a signature could not cover both."""
    params: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in params:
            raise AuthenticationError(f"query parameter {name!r} is given more than once")
        params[key] = value
    return params


def verify_rest_request(
    *,
    key: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes,
    now: float,
    window: int = TIMESTAMP_WINDOW_SECONDS,
) -> None:
    """Raise unless ``params`` (lower-cased keys) carry a valid signature of this request by ``key``."""
    if not params.keys() >= _AUTH_PARAM_SET:
        missing = [name for name in _AUTH_PARAMS if name not in params]
        raise AuthenticationError(f"missing authentication parameters: {', '.join(missing)}")
    # The key and the body's MD5 are not secrets (the client has both), so only the signature needs a constant-time
    # comparison.
    if params["auth_key"] != key:
        raise UnknownKey("auth_key is not this application's key")
    if params["auth_version"] != AUTH_VERSION:
        raise AuthenticationError(f"auth_version must be {AUTH_VERSION}")
    timestamp = params["auth_timestamp"]
    # ASCII digits only: int() also takes "1_796566307", " 1796566307" and other scripts' digits (and refuses more
    # than 4,300 digits)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 4300):
        raise AuthenticationError("auth_timestamp must be whole seconds since the epoch")
    skew = int(now) - int(timestamp)  # whole seconds, in integers: a timestamp too big for a float is only stale
    if abs(skew) > window:
        raise StaleTimestamp(
            f"auth_timestamp is {_offset(skew) if abs(skew) < 10**12 else 'far from'} the server's time; "
            f"the window is {window} s, so check the sender's clock"
        )
    supplied_md5 = params.get("body_md5")
    if body and supplied_md5 is None:
        raise AuthenticationError("body_md5 is required when the request has a body")
    if supplied_md5 is not None and supplied_md5 != _md5(body).hexdigest():  # body_md5, without its call
        raise InvalidSignature("body_md5 does not match the MD5 of the request body")
    signed = _string_to_sign(method, path, params)
    if not same_secret_text(params["auth_signature"], hmac_sha256_hex(secret, signed)):
        # The string to sign, as hosted Pusher shows it (it holds no secret): what the sender signed differs from it
        # where a query value was encoded differently ('+' for a space, '&' not percent-encoded)
        raise InvalidSignature(
            f"invalid auth_signature: sign 'METHOD\\nPATH\\nsorted query' with the app secret of auth_key {key!r}:"
            f" here {shown_string_to_sign(signed)!r}"
        )


# -- Channel authorization ------------------------------------------------------------------------------------


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """``key:hex(HMAC(secret, socket_id:channel[:channel_data]))`` as sent in ``pusher:subscribe``."""
    message = f"{socket_id}:{channel}" if channel_data is None else f"{socket_id}:{channel}:{channel_data}"
    return f"{key}:{hmac_sha256_hex(secret, message)}"


def token_key(token: object) -> str | None:
    """The key a ``key:signature`` token names (which of an app's keys signed it), or None for no such token."""
    return token.partition(":")[0] if isinstance(token, str) and ":" in token else None


def verify_signed_token(key: str, secret: str, token: object, message: str, what: str) -> None:
    """Check a ``key:signature`` token over ``message``; ``what`` names the operation in the error."""
    if not isinstance(token, str) or ":" not in token:
        raise InvalidSignature(f"{what}: auth must be a string 'key:signature'")
    token_key, _, signature = token.partition(":")
    if not same_secret_text(token_key, key):
        raise UnknownKey(f"{what}: the auth token was signed for another application key")
    if not same_secret_text(signature, hmac_sha256_hex(secret, message)):
        # The string that was to be signed, as hosted Pusher shows it (it holds no secret): a stale socket id, another
        # channel or channel_data encoded again after signing shows there
        raise InvalidSignature(
            f"{what}: invalid signature: the string to sign is {shown_string_to_sign(message)!r} (HMAC-SHA256 in hex, "
            f"with the secret of key {key!r})"
        )


def verify_channel_auth(
    key: str, secret: str, socket_id: str, channel: str, auth: object, channel_data: str | None = None
) -> None:
    message = f"{socket_id}:{channel}" if channel_data is None else f"{socket_id}:{channel}:{channel_data}"
    verify_signed_token(key, secret, auth, message, f"subscription to {channel!r}")


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """``key:hex(HMAC(secret, socket_id::user::user_data))`` as sent in ``pusher:signin``."""
    return f"{key}:{hmac_sha256_hex(secret, f'{socket_id}::user::{user_data}')}"


def verify_user_auth(key: str, secret: str, socket_id: str, user_data: str, auth: object) -> None:
    verify_signed_token(key, secret, auth, f"{socket_id}::user::{user_data}", "signin")


def encrypted_shared_secret(channel: str, master_key: bytes) -> str:
    """base64(SHA256(channel ‖ master_key)): the per-channel key pusher-js decrypts with."""
    if len(master_key) != 32:
        raise ValueError(f"the encryption master key must be 32 bytes, got {len(master_key)}")
    return base64.b64encode(hashlib.sha256(channel.encode() + master_key).digest()).decode()


def authorize_channel(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    *,
    channel_data: str | None = None,
    encryption_master_key: bytes | None = None,
) -> dict[str, str]:
    """The JSON body a channel-auth endpoint returns for pusher-js."""
    validate_socket_id(socket_id)
    validate_channel_name(channel)
    kind = classify(channel)
    if not kind.needs_auth:
        raise InvalidChannelName(f"{channel!r} is a {kind.value} channel; only private and presence need auth")
    if (kind is ChannelKind.PRESENCE) != (channel_data is not None):
        raise ValueError("channel_data is required for presence channels and only for them")
    body = {"auth": channel_auth(key, secret, socket_id, channel, channel_data)}
    if channel_data is not None:
        body["channel_data"] = channel_data
    if kind is ChannelKind.ENCRYPTED:
        if encryption_master_key is None:
            raise ValueError(f"{channel!r} is encrypted: an encryption master key is required")
        body["shared_secret"] = encrypted_shared_secret(channel, encryption_master_key)
    return body


# -- Webhooks --------------------------------------------------------------------------------------------------


def webhook_signature(secret: str, body: bytes) -> str:
    return hmac_sha256_hex(secret, body)


def verify_webhook_signature(
    key: str, secret: str, *, supplied_key: str | None, signature: str | None, body: bytes
) -> None:
    if supplied_key is None or not same_secret_text(supplied_key, key):
        raise UnknownKey("webhook X-Pusher-Key is missing or not this application's key")
    if signature is None or not same_secret_text(signature, webhook_signature(secret, body)):
        raise InvalidSignature("webhook X-Pusher-Signature does not match HMAC-SHA256(secret, body)")


def _offset(skew: int) -> str:
    """Where a timestamp ``skew`` seconds before the server's time (negative: after it) stands."""
    return f"{skew} s behind" if skew > 0 else f"{-skew} s ahead of"

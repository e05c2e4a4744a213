"""Ably credentials on the emulator: the app's API key, Basic auth, TokenRequests, issued tokens and Ably JWTs.

Every app has one Ably key (``App.ably_api_key``, by default ``{app_id}.{key}:{secret}``) with every operation on every
channel. Tokens the emulator issues are Ably JWTs signed with that key's secret, so they verify without server-side
state (and on every node of a cluster); JWTs signed by the app's own backend verify the same way. The pure rules
(MACs, capability matching and intersection, JWT claims) are ``relay.protocol.ably``.
"""

from __future__ import annotations

import base64
import hmac
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from relay.emulator.config import App
from relay.errors import ConfigError, RelayError
from relay.protocol.ably import (
    DEFAULT_TOKEN_TTL_MS,
    MAX_TOKEN_TTL_MS,
    TIMESTAMP_WINDOW_MS,
    Capability,
    canonical_capability,
    intersect_capability,
    jwt_claims,
    parse_capability,
    split_api_key,
    verify_token_request,
)

FULL_CAPABILITY: Capability = {"*": ["*"]}
HELP_URL = "https://help.ably.io/error/{code}"


class AblyError(Exception):
    """An error answered in Ably's format: ``{"code", "statusCode", "message", "href"}`` (ably-common errors.json)."""

    def __init__(self, code: int, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Ably's codes start with their HTTP status (40160 → 401); the 8xxxx/9xxxx realtime codes are 400s.
        self.status = status if status is not None else (code // 100 if code < 60000 else 400)

    def body(self) -> dict[str, object]:
        return {
            "code": self.code,
            "statusCode": self.status,
            "message": self.message,
            "href": HELP_URL.format(code=self.code),
        }

    @classmethod
    def of(cls, exc: RelayError, default_code: int = 40101) -> AblyError:
        """An error from ``relay.protocol.ably`` (which carries Ably's code) as an Ably error."""
        return cls(exc.code or default_code, exc.message, 401 if (exc.code or default_code) // 100 == 401 else None)


@dataclass(frozen=True, slots=True)
class AblyKey:
    """An app's Ably API key: ``key_name`` is ``appId.keyId``, the part before the colon."""

    key_name: str
    secret: str
    capability: Capability

    @classmethod
    def of(cls, app: App) -> AblyKey:
        return cls.parse(app.ably_api_key, key_capability(app))

    @classmethod
    def every_of(cls, app: App) -> list[AblyKey]:
        """The app's Ably key and those of its extra key pairs."""
        capability = key_capability(app)
        return [cls.parse(api_key, capability) for api_key in app.ably_api_keys]

    @classmethod
    def parse(cls, api_key: str, capability: Capability = FULL_CAPABILITY) -> AblyKey:
        key_name, secret = split_api_key(api_key)  # App checked it
        return cls(key_name, secret, capability)


def key_capability(app: App) -> Capability:
    """The capability of the app's keys: its ``ably_capability`` (App checked it), else every channel's everything."""
    return FULL_CAPABILITY if app.ably_capability is None else parse_capability(app.ably_capability)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who is calling and what they may do. ``client_id`` is ``None`` for an anonymous client, ``"*"`` for a wildcard;
    ``basic`` is API-key auth (which may publish as any client id); ``expires_ms`` is the token's expiry."""

    key: AblyKey
    capability: Capability
    client_id: str | None
    basic: bool
    expires_ms: int | None = None

    def may_use_client_id(self, client_id: str) -> bool:
        return (self.basic and self.client_id is None) or self.client_id in ("*", client_id)

    def identified(self) -> str | None:
        """The client id every message of this client carries (none for anonymous and wildcard clients)."""
        return None if self.client_id in (None, "*") else self.client_id


@dataclass(frozen=True, slots=True)
class TokenDetails:
    token: str
    key_name: str
    issued: int
    expires: int
    capability: str
    client_id: str | None

    def to_dict(self) -> dict[str, object]:
        details: dict[str, object] = {
            "token": self.token,
            "keyName": self.key_name,
            "issued": self.issued,
            "expires": self.expires,
            "capability": self.capability,
        }
        if self.client_id is not None:
            details["clientId"] = self.client_id
        return details


# How long a signed TokenRequest's nonce is kept after it came: its timestamp may be a window before or after then,
# and it is refused a window after its timestamp
NONCE_KEPT_MS = 2 * TIMESTAMP_WINDOW_MS


class AblyAuth:
    """The Ably keys of a node's apps, and the nonces of the signed TokenRequests seen recently (in a cluster, on any
    node: ``share`` tells the others of each one this node accepts)."""

    def __init__(self, keys: Mapping[str, AblyKey]) -> None:
        self.keys = keys  # by key name
        self.share: Callable[[str, str, int], None] | None = None  # (key name, nonce, timestamp)
        self._nonces: set[tuple[str, str, int]] = set()
        self._nonce_arrivals: deque[tuple[int, tuple[str, str, int]]] = deque()

    def key(self, key_name: str) -> AblyKey:
        key = self.keys.get(key_name)
        if key is None:
            raise AblyError(40101, f"Invalid credentials: no app has the Ably key name {key_name[:100]!r}")
        return key

    # -- the forms credentials arrive in ----------------------------------------------------------------------

    def api_key(self, api_key: str, client_id: str | None = None) -> Credentials:
        """``keyName:secret`` (Basic auth, or ``key=`` on a realtime connection)."""
        try:
            key_name, secret = split_api_key(api_key)
        except ConfigError:
            raise AblyError(40101, "Invalid credentials: an Ably API key looks like APPID.KEYID:SECRET") from None
        key = self.key(key_name)
        if not hmac.compare_digest(secret.encode(), key.secret.encode()):
            raise AblyError(40101, "Invalid credentials: wrong key secret")
        if client_id == "*":
            raise AblyError(40012, "Invalid clientId: '*' is not a client id")
        return Credentials(key, key.capability, client_id, basic=True)

    def authorization(self, header: str | None, client_id_header: str | None, *, now_ms: int) -> Credentials:
        """An ``Authorization: Basic …`` or ``Bearer …`` header, and the optional ``X-Ably-ClientId`` (base64)."""
        if not header:
            raise AblyError(40101, "Authentication required: send Basic auth with the app's Ably key, or a token")
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:  # binascii.Error, UnicodeDecodeError, and the plain one non-ASCII text raises
                raise AblyError(40101, "Invalid credentials: Basic auth is base64(keyName:keySecret)") from None
            client_id = None
            if client_id_header:
                client_id = _b64_text(client_id_header, "X-Ably-ClientId")
            return self.api_key(decoded, client_id)
        if scheme.lower() == "bearer":
            return self.token(value.strip(), now_ms=now_ms)
        raise AblyError(40101, f"Unsupported Authorization scheme {scheme[:20]!r}: use Basic or Bearer")

    def token(self, token: str, *, now_ms: int) -> Credentials:
        """An Ably token or JWT, raw (realtime query) or base64-encoded (REST ``Bearer``)."""
        if token.count(".") != 2:
            try:
                token = base64.b64decode(token, validate=True).decode()
            except ValueError:  # binascii.Error, UnicodeDecodeError, and the plain one non-ASCII text raises
                raise AblyError(40144, "Invalid token: not an Ably JWT (or its base64)") from None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AblyError(40144, "Invalid JWT format") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AblyError(40144, "Invalid JWT format: the header needs kid (the Ably key name)")
        if header.get("alg") != "HS256":
            raise AblyError(40144, "Invalid JWT format: Ably JWTs are signed HS256 with the key secret")
        key = self.key(kid)
        try:
            with warnings.catch_warnings():  # app secrets like "app-secret" are shorter than PyJWT recommends
                warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
                claims = jwt.decode(
                    token,
                    key.secret,
                    algorithms=["HS256"],
                    options={"require": ["iat", "exp"], "verify_iat": False},
                    leeway=0,
                )
        except jwt.ExpiredSignatureError:
            raise AblyError(40142, "Token expired") from None
        except jwt.InvalidSignatureError:
            raise AblyError(
                40101, "Invalid credentials: the JWT signature does not verify with the key secret"
            ) from None
        except jwt.PyJWTError as exc:
            raise AblyError(40144, f"Invalid JWT format: {exc}") from None
        capability_text = claims.get("x-ably-capability")
        if not isinstance(capability_text, str):
            raise AblyError(40144, "Invalid JWT format: x-ably-capability (a JSON string) is required")
        capability = self._capability(capability_text, key.capability)
        client_id = claims.get("x-ably-clientId")
        if client_id is not None and not isinstance(client_id, str):
            raise AblyError(40144, "Invalid JWT format: x-ably-clientId must be a string")
        if client_id == "":
            raise AblyError(40012, "Invalid clientId: x-ably-clientId can't be an empty string; omit it for anonymous")
        expires_ms = int(claims["exp"]) * 1000
        if expires_ms <= now_ms:
            raise AblyError(40142, "Token expired")
        return Credentials(key, capability, client_id, basic=False, expires_ms=expires_ms)

    @staticmethod
    def _capability(text: str, granted: Capability) -> Capability:
        try:
            requested = parse_capability(text)
        except RelayError as exc:
            raise AblyError(40000, f"Invalid capability: {exc.message}") from None
        capability = intersect_capability(requested, granted)
        if not capability:
            raise AblyError(40160, "Invalid capability: the requested capability permits nothing this key may do")
        return capability

    # -- issuing ----------------------------------------------------------------------------------------------

    def request_token(
        self, key_name: str, request: Mapping[str, Any], caller: Credentials | None, *, now_ms: int
    ) -> TokenDetails:
        """``POST /keys/{keyName}/requestToken``: a signed TokenRequest (no caller needed), or an unsigned one from a
        caller authenticated with the key (Basic auth)."""
        key = self.key(key_name)
        if request.get("keyName", key_name) != key_name:
            raise AblyError(40101, "Invalid credentials: the TokenRequest keyName is not the key in the URL")
        granted = key.capability
        if request.get("mac") is not None:
            try:
                verify_token_request({**request, "keyName": key_name}, key_name, key.secret, now_ms=now_ms)
            except RelayError as exc:
                raise AblyError.of(exc) from None
            self._check_nonce(key_name, request, now_ms)
        else:
            if caller is None:
                raise AblyError(40101, "Authentication required: an unsigned TokenRequest needs Basic auth")
            if not caller.basic:
                # Ably's TokenRequest spec (ably.com/docs/api/token-request-spec): "Basic authentication must be
                # used in order to request an Ably Token with an unsigned Ably TokenRequest". Else a token could mint
                # itself successors for ever (24 h each, without its clientId). Ably's error for "an authentication
                # request is made using a token to request another token, instead of an API key" is 40106
                # (ably.com/docs/platform/errors/codes#40106), status 401.
                raise AblyError(
                    40106,
                    "Unable to obtain credentials from given parameters: an unsigned TokenRequest needs Basic auth "
                    "with the API key, not a token",
                    401,
                )
            if caller.key.key_name != key_name:
                raise AblyError(40101, "Invalid credentials: the caller's key is not the key in the URL")
            granted = caller.capability
        ttl = _ttl(request.get("ttl"))
        capability_text = request.get("capability")
        if capability_text is not None and not isinstance(capability_text, str):
            raise AblyError(40000, "TokenRequest capability must be a JSON string")
        capability = self._capability(capability_text, granted) if capability_text else granted
        client_id = request.get("clientId")
        if client_id is not None and not isinstance(client_id, str):
            raise AblyError(40012, "Invalid clientId: it must be a string")
        if client_id == "":
            # A client id is "any non-empty string" (Ably's TokenParams); ably-js refuses "" before sending (40012,
            # 400). A signed TokenRequest's MAC cannot tell "" from no clientId, so "" would otherwise make a token
            # whose client id is empty: neither anonymous nor a usable identity.
            raise AblyError(40012, "Invalid clientId: it can't be an empty string; omit it for an anonymous token")
        if caller is not None and client_id is not None and not caller.may_use_client_id(client_id):
            raise AblyError(40012, f"Invalid clientId {client_id!r}: incompatible with the caller's client id")
        return self.issue(key, capability, client_id, issued_ms=now_ms, ttl_ms=ttl)

    def issue(
        self, key: AblyKey, capability: Capability, client_id: str | None, *, issued_ms: int, ttl_ms: int
    ) -> TokenDetails:
        expires_ms = issued_ms + ttl_ms
        # JWT times are seconds: round the expiry up so the token never dies before the TokenDetails says.
        issued_at = issued_ms // 1000
        ttl_seconds = min(max(1, -(-expires_ms // 1000) - issued_at), MAX_TOKEN_TTL_MS // 1000)
        header, claims = jwt_claims(
            key.key_name, capability, issued_at=issued_at, ttl_seconds=ttl_seconds, client_id=client_id
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
            token = jwt.encode(claims, key.secret, algorithm="HS256", headers=header)
        return TokenDetails(token, key.key_name, issued_ms, expires_ms, canonical_capability(capability), client_id)

    def _check_nonce(self, key_name: str, request: Mapping[str, Any], now_ms: int) -> None:
        nonce, timestamp = str(request.get("nonce")), int(request["timestamp"])
        if len(nonce) < 16:
            raise AblyError(40000, "TokenRequest nonce must be at least 16 characters")
        # A nonce is kept until its TokenRequest's timestamp, within the window of when it came, is out of the window
        # of now: dropped in the order they came (rebuilding the set past a size cost every request O(nonces held))
        seen = (key_name, nonce, timestamp)
        if seen in self._unexpired_nonces(now_ms):
            raise AblyError(40105, "Nonce value replayed: this TokenRequest was already used")
        self._nonces.add(seen)
        self._nonce_arrivals.append((now_ms, seen))
        if self.share is not None:
            self.share(key_name, nonce, timestamp)

    def used_elsewhere(self, key_name: str, nonce: str, timestamp: int, ms_left: int, now_ms: int) -> None:
        """A nonce another node accepted, to be kept ``ms_left`` more (NONCE_KEPT_MS when just heard of): refused
        here too until then."""
        seen = (key_name, nonce, timestamp)
        arrived_ms = now_ms - NONCE_KEPT_MS + ms_left
        if ms_left < 0 or seen in self._unexpired_nonces(now_ms):
            return
        arrivals = self._nonce_arrivals
        # Kept in the order they came, which the sweep relies on: one read from Redis may have come before those kept
        # here, and is then kept as long as the last of them
        self._nonces.add(seen)
        arrivals.append((max(arrived_ms, arrivals[-1][0]) if arrivals else arrived_ms, seen))

    def _unexpired_nonces(self, now_ms: int) -> set[tuple[str, str, int]]:
        nonces, arrivals = self._nonces, self._nonce_arrivals
        while arrivals and arrivals[0][0] < now_ms - NONCE_KEPT_MS:
            nonces.discard(arrivals.popleft()[1])
        return nonces


def _ttl(value: object) -> int:
    if value is None or value == 0:
        return DEFAULT_TOKEN_TTL_MS
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AblyError(40003, "Invalid ttl: milliseconds, a positive integer")
    if value > MAX_TOKEN_TTL_MS:
        raise AblyError(40003, f"Invalid ttl: {value} ms is over the maximum of 24 hours")
    return value


def _b64_text(value: str, what: str) -> str:
    try:
        return base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:  # binascii.Error, UnicodeDecodeError, and the plain one non-ASCII text raises
        raise AblyError(40012, f"Invalid {what}: it is base64 of the client id") from None

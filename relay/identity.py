"""Who the user is: the verification of the JWT that names a browser's user (:class:`JwtVerifier`), read from an
``Authorization: Bearer`` header or RELAY_JWT_COOKIE's cookie and checked with a shared secret (HS256), a public key
or a JWKS (RS256, ES256), its claims read strictly (NumericDates, unreadable numbers, lone surrogates).

Separate from :mod:`relay.gateway` because it is a concept of its own: how a token becomes a :class:`User`, or why it
is refused, needs nothing of the routes, the guards or the channel rules that use the user. The gateway imports it
(and the token and credential helpers its API-token check and refusals share) and imports nothing of it: what the
verifier reads of the gateway's settings is :class:`JwtSettings`, which :class:`~relay.gateway.settings.GatewaySettings`
satisfies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Request
from starlette.requests import cookie_parser

from relay.errors import AuthenticationError, ConfigError, json_kind, parser_limits
from relay.files import read_text
from relay.models import User

# The gateway's logger, as relay.serve's: a JWKS key skipped, or a JWKS file that no longer reads, is the gateway's word
log = logging.getLogger("relay.gateway")

JWT_ALGORITHMS = ("RS256", "ES256")
# The shortest RSA key that verifies users' JWTs (NIST SP 800-131A; PyJWT's own minimum, of which it only warned, on
# stderr, at the first JWT): a shorter one can be factored, and whoever factors it signs a JWT for any user, as with a
# short HS256 secret.
MIN_RSA_KEY_BITS = 2048
_AUDIENCE_UNSET = (
    "the JWT has an audience (aud) but RELAY_JWT_AUDIENCE is not set: set RELAY_JWT_AUDIENCE to accept tokens with an "
    "audience"
)


def read_jwks(path: Path) -> Mapping[str, Any]:
    """The JWKS document in ``path``, the file RELAY_JWKS_FILE names."""
    name = "RELAY_JWKS_FILE"
    text = read_text(path, name)
    with parser_limits("JWKS file", f"{path} ({name})"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: cannot read JSON from {path}: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ConfigError(f'{name}: {path} is not a JWKS document ({{"keys": [...]}})')
    return value


def joined_cookies(request: Request) -> str:
    """The request's cookies as one Cookie header: an HTTP/2 request's cookie crumbs, which a proxy may forward as
    several headers (RFC 9113 §8.2.3 has it join them), read as one, not only the first."""
    return "; ".join(request.headers.getlist("cookie"))


def cookie_token(cookie_header: str, name: str) -> str | None:
    """The token in the cookie ``name`` of a Cookie header, None without one. An empty cookie (``session=``, as a
    sign-out leaves it) is no token: a visitor, not a malformed JWT (401). Two cookies of that name with different
    tokens (one set for another path or domain, left from an earlier sign-in) are refused: a browser sends both, in
    an order that does not say which is current, and Starlette's cookie reading took the last, signing the request
    in as whoever the stale one named."""
    tokens = {
        value.strip()
        for chunk in cookie_header.split(";")
        for key, value in cookie_parser(chunk).items()
        if key == name and value.strip()
    }
    if len(tokens) > 1:
        raise AuthenticationError(
            f"the request has {len(tokens)} {name!r} cookies with different tokens (one set for another path or "
            "domain, left from an earlier sign-in): the gateway cannot tell which is current; sign out, or clear "
            "the site's cookies"
        )
    return tokens.pop() if tokens else None


class JwtSettings(Protocol):
    """What :class:`JwtVerifier` reads of the gateway's settings (RELAY_JWT_… and RELAY_JWKS_FILE)."""

    @property
    def jwt_secret(self) -> str | None: ...
    @property
    def jwt_public_key(self) -> str | None: ...
    @property
    def jwks(self) -> Mapping[str, Any] | None: ...
    @property
    def jwks_file(self) -> Path | None: ...
    @property
    def jwt_audience(self) -> str | None: ...
    @property
    def jwt_issuer(self) -> str | None: ...
    @property
    def jwt_cookie(self) -> str | None: ...
    @property
    def jwt_user_claim(self) -> str: ...
    @property
    def jwt_leeway(self) -> float: ...


class JwtVerifier:
    """Verifies end users' JWTs: HS256 with a shared secret, or RS256/ES256 with a public key or JWKS."""

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._jwks: list[jwt.PyJWK] | None = None
        # kid → why the JWKS's key of that kid verifies no JWT here (an ES384 key, an encryption key)
        self._skipped: dict[str, str] = {}
        if settings.jwks is not None:
            self._use_keys(settings.jwks)
        # The jwks_file's identity when its keys were last read; None before any check, so the first JWT reads the
        # file again, whatever changed between the settings reading it and this verifier.
        self._jwks_stamp: _FileStamp | None = None
        # RELAY_JWT_PUBLIC_KEY read once (PyJWT read the PEM again for every JWT), with the one algorithm it signs
        self._public_key: tuple[Any, tuple[str]] | None = None
        if settings.jwt_public_key is not None:
            self._public_key = _public_key(settings.jwt_public_key)
        # The user's id is its claim alone: a JWT naming its user by RELAY_JWT_USER_CLAIM need not have a subject too
        # (a provider's own tokens do, an application's hand-made ones may not); a missing one is refused in user().
        self._required_claims = ["exp", "sub"] if settings.jwt_user_claim == "sub" else ["exp"]
        if not (settings.jwt_secret or settings.jwt_public_key or self._jwks):
            self._mode = "none"
        else:
            self._mode = "hs" if settings.jwt_secret else "public"

    def token_of(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        token = bearer_token(header)
        if token:
            return token
        problem = _authorization_problem(header)
        if problem is not None:  # a credential sent but malformed, not an anonymous request
            raise AuthenticationError(f"the Authorization header is not 'Bearer <JWT>': {problem}")
        if self._settings.jwt_cookie:
            return cookie_token(joined_cookies(request), self._settings.jwt_cookie)
        return None

    def no_user_reason(self, request: Request) -> str:
        """Why :meth:`user` found no user for ``request``, for the refusal of a channel that needs one: a cookie
        the browser kept to itself (pusher-js's requests to another origin carry none) read as a missing sign-in."""
        if self._mode == "none":
            return "this gateway verifies no JWTs (no RELAY_JWT_SECRET, RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE)"
        missing = "the request had no Authorization: Bearer header"
        cookie = self._settings.jwt_cookie
        if cookie is None:
            return missing
        if cookie in cookie_parser(joined_cookies(request)):
            return f"{missing}, and its {cookie!r} cookie was empty (signed out)"
        return (
            f"{missing} and no {cookie!r} cookie (a browser sends the cookie to another origin only with "
            "credentials, which pusher-js's own requests never ask for)"
        )

    def user(self, request: Request) -> User | None:
        if self._mode == "none":
            return None
        token = self.token_of(request)
        if token is None:
            return None
        claims = self.claims(token)
        name = self._settings.jwt_user_claim
        identity = claims.get(name)  # sub: PyJWT has checked that it is there, and a string (not another claim)
        if identity is None:
            raise AuthenticationError(
                f"the JWT has no {name!r} claim, which RELAY_JWT_USER_CLAIM names as the user's id"
            )
        if isinstance(identity, bool) or not isinstance(identity, str | int):
            raise AuthenticationError(
                f"the JWT's {name} claim is {json_kind(identity)}: the user's id (RELAY_JWT_USER_CLAIM) is a "
                "string or an integer"
            )
        if identity == "":
            raise AuthenticationError(f"the JWT's {name} claim is empty: the gateway identifies the user by it")
        return User(str(identity), claims, signed_in_until=claims["exp"])

    def claims(self, token: str) -> dict[str, Any]:
        if token.count(".") != 2:
            # PyJWT said "Not enough segments" for "Bearer undefined", the token of a page whose JWT was not loaded.
            raise AuthenticationError(
                f"invalid JWT: the token is not a JWT, three parts separated by dots (got {shown_token(token)})"
            )
        accepted: list[str] = []  # the algorithms of the keys the token is checked with, for the refusal's words
        try:
            keys: list[tuple[Any, Sequence[str]]]
            if self._mode == "hs":
                keys = [(self._settings.jwt_secret, ("HS256",))]
            elif self._jwks is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                jwks = self._current_jwks()
                if kid is None and len(jwks) > 1:
                    # Checked with the first key, a token of another would fail as forged, whichever key signed it.
                    raise AuthenticationError(
                        f"the JWT has no kid header, and the JWKS holds {len(jwks)} keys: the kid says which "
                        "one signed it"
                    )
                # Only each key's own algorithm: an ES256 token naming an RSA key's kid must not reach PyJWT's
                # key preparation, which raises TypeError (a 500) for a mismatched key object. Every key with the
                # token's kid: kids SHOULD differ (RFC 7517 §4.5), but a set may give one kid to a key per algorithm,
                # or keep it across a rotation, and only the first of them verified.
                keys = [
                    (jwk.key, tuple(a for a in JWT_ALGORITHMS if a == jwk.algorithm_name))
                    for jwk in jwks
                    if jwk.key_id == kid or kid is None
                ]
                if not keys:
                    skipped = self._skipped.get(kid) if isinstance(kid, str) else None
                    if skipped is not None:
                        raise AuthenticationError(
                            f"the JWT's kid {kid!r} names a key of RELAY_JWKS_FILE that verifies no JWT here: {skipped}"
                        )
                    raise AuthenticationError("the JWT's kid is not in the JWKS")
            else:
                assert self._public_key is not None  # public mode with no JWKS
                keys = [self._public_key]
            accepted = sorted({algorithm for _, algorithms in keys for algorithm in algorithms})
            claims = self._verified(token, keys)
            # The leeway is for iat and nbf only: PyJWT applied it to exp too, so exp is checked again without it.
            # Honoured past its exp, a token would outlive a sign-out or a revocation by the leeway; a gateway clock
            # ahead of the issuer's only ends tokens a little early, and clients renew them before exp anyway.
            # _claims_of has checked that exp is a number (PyJWT that it is present); a NumericDate may have a
            # fraction (RFC 7519 §2), which int() cut off, ending such a token up to a second early.
            if claims["exp"] <= time.time():
                raise AuthenticationError("the JWT has expired")
            if "aud" in claims and self._settings.jwt_audience is None:  # PyJWT passes an empty one ([], "", null)
                raise AuthenticationError(_AUDIENCE_UNSET)
            return claims
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("the JWT has expired") from None
        except jwt.InvalidAudienceError:
            if self._settings.jwt_audience is None:
                raise AuthenticationError(_AUDIENCE_UNSET) from None
            raise AuthenticationError("the JWT's audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise AuthenticationError("the JWT's issuer is not accepted") from None
        except jwt.exceptions.InvalidSubjectError:  # PyJWT said "Subject must be a string", naming no claim
            raise AuthenticationError(
                "invalid JWT: its sub claim must be a string (RFC 7519 §4.1.2); put a numeric id in quotes"
            ) from None
        except jwt.InvalidSignatureError:  # PyJWT's words said nothing of which key was tried
            raise AuthenticationError(f"invalid JWT: Signature verification failed {self._verifying()}") from None
        except jwt.InvalidAlgorithmError:  # PyJWT said "The specified alg value is not allowed", naming neither
            raise AuthenticationError(self._algorithm_refused(self._alg_of(token), accepted)) from None
        except jwt.InvalidTokenError as exc:
            if str(exc).startswith("Invalid header string"):  # PyJWT's words went on with the parser's own
                raise AuthenticationError("invalid JWT: its header is not a JSON object") from None
            raise AuthenticationError(f"invalid JWT: {exc}") from None

    @staticmethod
    def _alg_of(token: str) -> str:
        alg = jwt.get_unverified_header(token).get("alg")
        return alg if isinstance(alg, str) else repr(alg)

    def _algorithm_refused(self, alg: str, accepted: Sequence[str]) -> str:
        """Why a token's ``alg`` is refused: which setting verifies which algorithms, and the one that would verify
        it."""
        verifies = f"verifies {' and '.join(accepted)} only"  # a JWKS keeps only keys of JWT_ALGORITHMS
        if self._mode == "hs":
            message = f"invalid JWT: its alg is {alg!r}, and RELAY_JWT_SECRET {verifies}"
            if alg in JWT_ALGORITHMS:
                message += " (set RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE instead, for RS256 and ES256 tokens)"
            return message
        setting = "RELAY_JWT_PUBLIC_KEY" if self._jwks is None else "the key of RELAY_JWKS_FILE with the JWT's kid"
        message = f"invalid JWT: its alg is {alg!r}, and {setting} {verifies}"
        return message + (" (set RELAY_JWT_SECRET instead, for HS256 tokens)" if alg == "HS256" else "")

    def _verifying(self) -> str:
        """Which setting verified a signature that failed (never its value), and what that means."""
        if self._mode == "hs":
            return (
                "with RELAY_JWT_SECRET (HS256): the token was signed with another secret, or altered (the gateway's "
                "RELAY_JWT_SECRET must be the secret your auth provider signs with)"
            )
        setting = "RELAY_JWT_PUBLIC_KEY" if self._jwks is None else "the key of RELAY_JWKS_FILE with the JWT's kid"
        return f"with {setting}: the token was signed with another key, or altered"

    def _verified(self, token: str, keys: Sequence[tuple[Any, Sequence[str]]]) -> dict[str, Any]:
        """``token``'s claims, its signature verified by one of ``keys`` (each with the algorithms it may sign with):
        the last key's error when none verifies it, a key of the token's alg tried last: with two keys of one kid (an
        RSA and an EC one), a forged RS256 token's refusal is its failed signature, not the EC key's algorithm."""
        alg = self._alg_of(token)
        *others, last = sorted(keys, key=lambda entry: alg in entry[1])
        for key, algorithms in others:
            with contextlib.suppress(jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
                return self._decoded(token, key, algorithms)
        return self._decoded(token, *last)

    def _decoded(self, token: str, key: Any, algorithms: Sequence[str]) -> dict[str, Any]:
        return dict(
            _STRICT_JWT.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": self._required_claims},
                leeway=self._settings.jwt_leeway,
            )
        )

    def _use_keys(self, jwks: Mapping[str, Any]) -> None:
        """Verify with ``jwks``'s signing keys; say at once which keys it skips, rather than at a user's refusal (once:
        the first JWT reads the file again)."""
        self._jwks, skipped = _signing_keys(jwks)
        for kid, reason in skipped.items():
            if self._skipped.get(kid) != reason:
                log.warning("RELAY_JWKS_FILE: key %r verifies no JWT here: %s", kid, reason)
        self._skipped = skipped

    def _current_jwks(self) -> list[jwt.PyJWK]:
        """The JWKS's signing keys, read again when RELAY_JWKS_FILE has changed (one stat per JWT): an identity
        provider that rotates its keys publishes the next one before signing with it, and drops the last one, which
        must then stop verifying. A file that no longer reads, or holds no usable key, keeps the keys last read: a
        warning rather than every user refused."""
        assert self._jwks is not None  # called in JWKS mode only
        path = self._settings.jwks_file
        if path is None:
            return self._jwks
        stamp = _file_stamp(path)
        if stamp != self._jwks_stamp:
            self._jwks_stamp = stamp
            try:
                self._use_keys(read_jwks(path))
            except ConfigError as error:
                log.warning(
                    "%s; the gateway keeps verifying with the %d key(s) it last read", error.message, len(self._jwks)
                )
        return self._jwks


# A file's identity: a rename over it changes the inode, an edit in place its modification time or size.
_FileStamp = tuple[int, ...]


def _file_stamp(path: Path) -> _FileStamp:
    """Empty for a file that cannot be stat'ed: reading it again says why."""
    try:
        status = path.stat()
    except OSError:
        return ()
    return (status.st_ino, status.st_mtime_ns, status.st_size)


# RFC 7519 §2: a NumericDate is a JSON number of seconds since 1970. The latest one read is the end of the year 9999
# (the last second with a four-digit year, and the last Python's datetime can represent): a later exp is no expiry at
# all, a mistake rather than a lifetime.
NUMERIC_DATE_CLAIMS = ("exp", "nbf", "iat")
MAX_NUMERIC_DATE = 253_402_300_799
# The most digits a JSON integer in a JWT may have: Python's default limit on converting digits to an int. Read with
# Python's own limit, a longer one answered the client with a message naming sys.set_int_max_str_digits().
MAX_JSON_INTEGER_DIGITS = 4300


class _Unreadable:
    """A number a JWT's payload holds that no claim can: NaN or Infinity (not JSON), a float beyond a double, or an
    integer of more than MAX_JSON_INTEGER_DIGITS digits; kept as what it is, for the message."""

    __slots__ = ("described",)

    def __init__(self, described: str) -> None:
        self.described = described


def _json_integer(text: str) -> int | _Unreadable:
    digits = len(text) - text.startswith("-")
    if digits > MAX_JSON_INTEGER_DIGITS:
        return _Unreadable(f"an integer of {digits} digits")
    return int(text)


def _json_float(text: str) -> float | _Unreadable:
    value = float(text)
    return value if math.isfinite(value) else _Unreadable(f"a number too large for a double ({text[:24]})")


def _json_constant(name: str) -> _Unreadable:
    return _Unreadable(f"{name}, which is not a JSON number")


# Where a JSON text may hold half a UTF-16 pair ("\ud83c"): only then are the claims checked for one
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _claims_of(payload: bytes) -> dict[str, Any]:
    """A JWT's verified payload as claims: a JSON object in UTF-8, whose ``exp``, ``nbf`` and ``iat`` are NumericDates
    (RFC 7519 §2). PyJWT took ``"exp": "1700000000"`` (a string), read ``"exp": true`` as 1 ("the JWT has expired"),
    and answered a 5,000-digit ``exp`` with Python's own error, naming ``sys.set_int_max_str_digits()``."""
    try:
        claims = json.loads(payload, parse_int=_json_integer, parse_float=_json_float, parse_constant=_json_constant)
    except RecursionError:
        raise jwt.DecodeError("its payload nests arrays and objects too deeply") from None
    except UnicodeDecodeError:
        raise jwt.DecodeError("its payload is not UTF-8 text") from None
    except ValueError:
        raise jwt.DecodeError("its payload is not JSON") from None
    if not isinstance(claims, dict):
        raise jwt.DecodeError(f"its payload must be a JSON object, not {json_kind(claims)}")
    for name in NUMERIC_DATE_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, _Unreadable):
            got = value.described
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise jwt.DecodeError(f"the {name} claim must be a number of seconds, got {json_kind(value)}")
        elif value > MAX_NUMERIC_DATE:
            # An integer past a double's range made the float formatting an OverflowError (a 500)
            got = f"{value:.6g}" if isinstance(value, float) else f"{Decimal(value).normalize():.6g}"
            if value <= MAX_NUMERIC_DATE * 1000:  # JavaScript's Date.now(), as a token made by hand often has it
                got += ", which looks like milliseconds: a NumericDate is seconds (Math.floor(Date.now() / 1000))"
        else:
            continue
        raise jwt.DecodeError(
            f"the {name} claim must be a number of seconds up to {MAX_NUMERIC_DATE} (the end of the year 9999), "
            f"got {got}"
        )
    for name, value in claims.items():
        unreadable = _first_unreadable(value)
        if unreadable is not None:
            raise jwt.DecodeError(f"its {shown_credential(name)} claim holds {unreadable.described}")
    if _SURROGATE_ESCAPE.search(payload):
        # JavaScript's slice() of a name can cut an emoji in two: valid JSON, but text no provider can carry
        for name, value in claims.items():
            if _holds_lone_surrogate([name, value]):
                raise jwt.DecodeError(
                    f"its {shown_credential(name)} claim holds a lone UTF-16 surrogate, which UTF-8 cannot encode: "
                    "a string cut in the middle of a character"
                )
    return claims


def _first_unreadable(value: object) -> _Unreadable | None:
    """The first unreadable number inside ``value``, looked for without recursion (the parser allows ~1,000 levels)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Unreadable):
            return item
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


def _holds_lone_surrogate(value: object) -> bool:
    """Whether a string inside ``value`` (a key too) holds half a UTF-16 pair; looked for without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode()
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class _StrictJWT(jwt.PyJWT):
    """PyJWT, reading the payload with :func:`_claims_of` (``_decode_payload`` is PyJWT's hook for subclasses to read
    the payload their way). The signature is verified before it is called, so the claims of a forged token are never
    described."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        return _claims_of(decoded["payload"])


_STRICT_JWT = _StrictJWT()


PRIVATE_KEY_HINT = "is a private key: the gateway only verifies JWTs, and a private key does not belong on it"


def _signing_keys(jwks: Mapping[str, Any]) -> tuple[list[jwt.PyJWK], dict[str, str]]:
    """The JWKS keys that can verify a user's JWT, and why each other key with a kid cannot. Keys PyJWT cannot read
    are skipped, as identity providers publish encryption keys and key types beside their signing keys; a set with
    none left would refuse every JWT."""
    keys = jwks.get("keys")
    usable = []
    skipped: dict[str, str] = {}
    for key in keys if isinstance(keys, list) else []:
        if not isinstance(key, dict):
            continue
        if "d" in key:  # RFC 7518 §6.2.2, §6.3.2: the private part of an EC or RSA key
            raise ConfigError(
                f"RELAY_JWKS_FILE: key {key.get('kid')!r} {PRIVATE_KEY_HINT} "
                "(give it the public keys: without d, p, q, dp, dq and qi)"
            )
        kid = key.get("kid")
        # RFC 7517 §4.2: a key for "enc" is not for signatures (and PyJWK cannot read one of alg RSA-OAEP anyway).
        if key.get("use") == "enc":
            if isinstance(kid, str):
                skipped[kid] = "it is an encryption key (use: enc)"
            continue
        try:
            jwk = jwt.PyJWK(key)
        except jwt.PyJWTError:  # its words hold the whole key: not for a refusal nor the log
            if isinstance(kid, str):
                alg = key.get("alg")
                skipped[kid] = f"the gateway cannot read it as an RS256 or ES256 key (kty {key.get('kty')!r}" + (
                    f", alg {alg!r})" if alg is not None else ")"
                )
            continue
        if jwk.algorithm_name not in JWT_ALGORITHMS:
            if isinstance(kid, str):
                skipped[kid] = f"its algorithm is {jwk.algorithm_name}; the gateway verifies RS256 and ES256 only"
        elif isinstance(jwk.key, rsa.RSAPublicKey) and jwk.key.key_size < MIN_RSA_KEY_BITS:
            if isinstance(kid, str):
                skipped[kid] = _short_rsa_key(jwk.key.key_size)
        elif isinstance(jwk.key, ec.EllipticCurvePublicKey) and not isinstance(jwk.key.curve, ec.SECP256R1):
            # Its "alg" says ES256 (PyJWK takes the label as it is), but ES256 is signed with P-256 keys only: kept, it
            # verified no JWT, and each was refused as of another algorithm
            if isinstance(kid, str):
                skipped[kid] = (
                    f"its alg is ES256, but it is an EC key on the curve {jwk.key.curve.name}, and ES256 is signed "
                    "with P-256 (secp256r1) keys only"
                )
        else:
            usable.append(jwk)
    if not usable:
        why = "".join(f"; key {kid!r} verifies no JWT here: {reason}" for kid, reason in skipped.items())
        raise ConfigError(
            f"RELAY_JWKS_FILE: the JWKS has no usable signing key (an RSA key of {MIN_RSA_KEY_BITS} bits or more for "
            f"RS256 or an EC P-256 key for ES256, with its kid); it has "
            f"{len(keys) if isinstance(keys, list) else 'no'} key(s){why}"
        )
    return usable, skipped


def _short_rsa_key(bits: int) -> str:
    return (
        f"it is a {bits}-bit RSA key, and the gateway verifies with RSA keys of {MIN_RSA_KEY_BITS} bits or more "
        "(NIST SP 800-131A): a shorter one can be factored, and whoever factors it signs a JWT for any user"
    )


def _public_key(pem: str) -> tuple[Any, tuple[str]]:
    """The key of RELAY_JWT_PUBLIC_KEY and the algorithm it verifies. Accepted unread, a key that is not one made
    every valid JWT a 401 about the algorithm, and a private key (which PyJWT loads, then cannot verify with) a 500;
    both are refused at start."""
    for algorithm in JWT_ALGORITHMS:
        try:
            key = jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
        except (jwt.InvalidKeyError, ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise ConfigError(
                f"RELAY_JWT_PUBLIC_KEY {PRIVATE_KEY_HINT} (give it the public half: openssl pkey -in KEY -pubout)"
            )
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_KEY_BITS:
            raise ConfigError(f"RELAY_JWT_PUBLIC_KEY is no key to verify with: {_short_rsa_key(key.key_size)}")
        return key, (algorithm,)
    raise ConfigError(
        "RELAY_JWT_PUBLIC_KEY is not an RS256 or ES256 public key in PEM (-----BEGIN PUBLIC KEY-----) or a "
        "certificate holding one (-----BEGIN CERTIFICATE-----)"
    )


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, ``""`` if it has none, None for no header or another
    scheme. The scheme is case-insensitive (RFC 9110 §11.1); servers drop the space after a bare ``Bearer ``."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


# Schemes a browser sends by itself, for a protection space it was asked to sign in to (a staging site behind a
# proxy's Basic auth, an intranet's Negotiate): another layer's credential, not a mistyped JWT, so a request carrying
# one is judged without it (by RELAY_JWT_COOKIE's cookie, or as anonymous).
BROWSER_AUTH_SCHEMES = frozenset({"basic", "digest", "negotiate", "ntlm"})


def _authorization_problem(header: str) -> str | None:
    """Why an ``Authorization`` header that is not ``Bearer <token>`` cannot be the user's JWT, or None for no header
    and the browser's own schemes. Sent as ``<jwt>``, ``JWT <jwt>`` or ``Bearer: <jwt>``, the JWT was ignored and the
    request was anonymous: a 403 "needs an authenticated user" that sent whoever read it to the rules."""
    scheme, _, value = header.strip().partition(" ")
    if not scheme or scheme.lower() in BROWSER_AUTH_SCHEMES:
        return None
    if scheme.lower() == "bearer":
        return "it has no token after Bearer"
    if not value.strip():
        return "it has no scheme: send 'Bearer ' before the JWT"
    return f"its scheme is {shown_credential(scheme)}: send 'Bearer ' before the JWT"


SHOWN_CREDENTIAL_CHARACTERS = 16


def shown_credential(value: str) -> str:
    """``value`` quoted for an error message: whole when short (a claim's name, an Authorization scheme such as
    'Token'), else its first characters and its length, so that a long value (a credential sent in the wrong place)
    is never repeated whole (the message is logged too)."""
    if len(value) <= SHOWN_CREDENTIAL_CHARACTERS:
        return repr(value)
    return f"{value[:6] + '…'!r} ({len(value)} characters)"


# What a page sends in place of a token it has not loaded yet, shown whole: they are no one's credential
TOKEN_PLACEHOLDERS = frozenset({"undefined", "null", "[object Object]", "NaN", "None", "true", "false"})


def shown_token(token: str) -> str:
    """A token that is not a JWT, for an error message: a page's placeholder whole; a short one by its length alone
    (an opaque token of 16 characters was repeated whole), a long one as :func:`shown_credential` shows it."""
    if token in TOKEN_PLACEHOLDERS:
        return repr(token)
    if len(token) <= SHOWN_CREDENTIAL_CHARACTERS:
        return f"a token of {len(token)} characters"
    return shown_credential(token)

"""The gateway's settings (GatewaySettings): read from the environment, checked at start, summed up for the log."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx
import idna
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from relay.client import Configuration, configuration_from_env, describe_configuration, parse_configuration
from relay.config import (
    ProviderConfig,
    is_hosted_ably,
    is_hosted_pusher,
    is_http_url,
    is_origin,
    is_url,
    refuse_quoted,
    refuse_undecoded,
    trimmed_environment,
    url_host,
)
from relay.errors import ConfigError
from relay.files import read_text
from relay.gateway.rules_file import DEFAULT_RULES, RuleSpec, load_rules
from relay.identity import read_jwks
from relay.protocol.hosts import is_loopback
from relay.senders import DEFAULT_RETRY, MAX_POLICY_SECONDS, RetryPolicy

# How far a JWT's iat and nbf may be ahead of the gateway's clock: an identity provider's clock a second or two ahead
# made every fresh token a 401 ("not yet valid") until the gateway's clock caught up. Not applied to exp (see
# JwtVerifier.claims). At most five minutes, Kerberos's customary skew: more is a clock to fix, not to allow for.
DEFAULT_JWT_LEEWAY_S = 30.0
MAX_JWT_LEEWAY_S = 300.0
MIN_HS256_SECRET_BYTES = 32  # the size of the hash's output (RFC 7518 §3.2)


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    relay_url: Configuration
    api_token: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = None
    jwks: Mapping[str, Any] | None = None
    # Where jwks was read from (RELAY_JWKS_FILE): read again when it changes, as identity providers rotate keys.
    jwks_file: Path | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_cookie: str | None = None
    # The claim that is the user's id (RELAY_JWT_USER_CLAIM): the signed-in user's and a presence member's. A subject
    # such as Auth0's "auth0|42" cannot be in the #server-to-user-{id} channel that events to the user go through.
    jwt_user_claim: str = "sub"
    rules: tuple[RuleSpec, ...] = DEFAULT_RULES
    rules_file: Path | None = None  # where rules were read from (RELAY_RULES_FILE), for the start-up log
    cors_origins: tuple[str, ...] = ()
    webhook_forward_url: str | None = None
    jwt_leeway: float = DEFAULT_JWT_LEEWAY_S
    public_url: str | None = None
    # Where browsers open their WebSocket (RELAY_PUBLIC_WS_URL) when it is not the provider's address in relay_url:
    # the gateway reaches an emulator at 127.0.0.1, the browsers through nginx at wss://relay.example.com
    public_ws_url: str | None = None
    # How long the gateway waits for the provider, and how often it tries: a serverless route handler calling it
    # may have 10 s in all, where the library's default waits up to 3 attempts of 10 s each
    provider_retry: RetryPolicy = DEFAULT_RETRY

    def __post_init__(self) -> None:
        self._normalise_addresses()
        self._refuse_jwt_mistakes()
        self._refuse_token_mistakes()

    def _normalise_addresses(self) -> None:
        """The origins, the public key and the pages' addresses as the gateway compares and gives them."""
        object.__setattr__(self, "cors_origins", tuple(browser_origin(origin) for origin in self.cors_origins))
        if self.jwt_public_key is not None:
            object.__setattr__(self, "jwt_public_key", certificate_public_key(self.jwt_public_key))
        if self.public_url is not None:
            object.__setattr__(self, "public_url", public_base_url(self.public_url))
        if self.public_ws_url is not None:
            _, (primary, *_) = parse_configuration(self.relay_url)
            socket = browser_socket(self.public_ws_url)
            _refuse_browser_socket_for(primary, socket)
            object.__setattr__(self, "public_ws_url", self.public_ws_url.rstrip("/"))

    def _refuse_jwt_mistakes(self) -> None:
        """Users' JWTs: settings that would refuse every JWT, or accept forged ones, stop the gateway at start."""
        leeway = self.jwt_leeway
        if isinstance(leeway, bool) or not isinstance(leeway, int | float) or not 0 <= leeway <= MAX_JWT_LEEWAY_S:
            raise ConfigError(
                f"RELAY_JWT_LEEWAY: {leeway!r} is not a number of seconds from 0 to {MAX_JWT_LEEWAY_S:g} (how far "
                f"a JWT's iat and nbf may be ahead of the gateway's clock; default {DEFAULT_JWT_LEEWAY_S:g})"
            )
        if self.jwt_secret and (self.jwt_public_key or self.jwks):
            # With both, the secret won and every RS256/ES256 token was refused: the docs say "instead of".
            other = "RELAY_JWT_PUBLIC_KEY" if self.jwt_public_key else "RELAY_JWKS_FILE"
            raise ConfigError(f"RELAY_JWT_SECRET and {other} are both set: verify users' JWTs with one of them")
        if self.jwt_public_key and self.jwks:
            raise ConfigError("RELAY_JWT_PUBLIC_KEY and RELAY_JWKS_FILE are both set: verify users' JWTs with one")
        if self.jwt_secret and len(self.jwt_secret.encode()) < MIN_HS256_SECRET_BYTES:
            # A short secret can be found by trying: whoever finds it signs a JWT for any user.
            raise ConfigError(
                f"RELAY_JWT_SECRET is {len(self.jwt_secret.encode())} bytes; an HS256 secret has at least "
                f"{MIN_HS256_SECRET_BYTES} (RFC 7518 §3.2): give the one your auth provider signs with, or make one "
                "with `openssl rand -hex 32`"
            )
        if self.jwt_secret:
            try:
                jwt.get_algorithm_by_name("HS256").prepare_key(self.jwt_secret)
            except jwt.InvalidKeyError:  # PyJWT refuses it at every JWT: each one was a 500
                raise ConfigError(
                    "RELAY_JWT_SECRET holds a PEM key or certificate, which is no HS256 secret: for RS256 or ES256 "
                    "tokens set RELAY_JWT_PUBLIC_KEY to the public key instead"
                ) from None
        if self.jwt_cookie is not None and UNSENDABLE_COOKIE_NAME.search(self.jwt_cookie):
            # A browser never sends a cookie of such a name: every JWT would be missing
            raise ConfigError(
                f"RELAY_JWT_COOKIE: {self.jwt_cookie!r} is not a cookie name a browser sends: one has no spaces, "
                'nothing beyond ASCII, no control characters and none of =;,"'
            )
        if not self.jwt_user_claim:
            raise ConfigError("RELAY_JWT_USER_CLAIM is empty: name the JWT claim that is the user's id (default sub)")

    def _refuse_token_mistakes(self) -> None:
        """RELAY_API_TOKEN, and the webhook forward that carries it."""
        token = self.api_token
        if token is not None and (token != token.strip(" ") or not all(" " <= c < "\x7f" for c in token)):
            # fetch() refuses such a header value outright, and the webhook forward, which carries it, failed
            raise ConfigError(
                "RELAY_API_TOKEN has a control character, a character beyond ASCII, or a space at an end, which an "
                "HTTP header does not carry as written: make one with `openssl rand -hex 32`"
            )
        if self.webhook_forward_url is not None and not is_http_url(self.webhook_forward_url):
            raise ConfigError(
                f"RELAY_WEBHOOK_FORWARD_URL: {self.webhook_forward_url!r} is not an http(s) URL "
                "such as https://app.example.com/relay-webhooks"
            )
        if self.webhook_forward_url is not None and token is not None and httpx.URL(self.webhook_forward_url).userinfo:
            # httpx sends a URL's user:password as Authorization: Basic, in place of the forward's Bearer token: the
            # receiver checking the token refused every forward, and the 502 blamed the token it was never sent
            raise ConfigError(
                "RELAY_WEBHOOK_FORWARD_URL has a user name or password before its host (user:password@), which "
                "would be sent as Authorization: Basic in place of the Authorization: Bearer RELAY_API_TOKEN the "
                "receiver checks: remove them from the URL"
            )

    def summary(self) -> list[str]:
        """What the gateway will do, for the log at start (no secret in it): where it publishes, whether the server
        API is on, how users are identified. A setting left out otherwise showed only at the first request."""
        if self.jwt_secret:
            users = "users: JWTs verified with RELAY_JWT_SECRET (HS256)"
        elif self.jwt_public_key:
            users = "users: JWTs verified with RELAY_JWT_PUBLIC_KEY"
        elif self.jwks is not None:
            users = "users: JWTs verified with the keys of RELAY_JWKS_FILE"
        else:
            users = ""
        if users and self.jwt_user_claim != "sub":
            users += f", the user's id from the {self.jwt_user_claim!r} claim (RELAY_JWT_USER_CLAIM)"
        if not users:
            users = (
                "users: none (no RELAY_JWT_SECRET, RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE): every visitor is "
                "anonymous, so private and presence channels and sign-in are refused"
            )
        api = (
            "on, for requests with Authorization: Bearer RELAY_API_TOKEN"
            if self.api_token
            else "off: set RELAY_API_TOKEN to publish through the gateway"
        )
        verified = bool(self.jwt_secret or self.jwt_public_key or self.jwks is not None)
        if self.jwt_cookie is None:
            cookie = "JWTs read from: Authorization: Bearer only (no RELAY_JWT_COOKIE)" if verified else None
        elif verified:
            cookie = f"JWTs read from: Authorization: Bearer, or the {self.jwt_cookie!r} cookie (RELAY_JWT_COOKIE)"
        else:
            cookie = f"JWTs read from: nowhere: RELAY_JWT_COOKIE names {self.jwt_cookie!r}, but no key verifies JWTs"
        rules = f"channel rules: {len(self.rules)}"
        if self.rules_file is not None:
            rules += f", from {self.rules_file} (RELAY_RULES_FILE)"
        elif self.rules == DEFAULT_RULES:
            rules += f", the defaults (no RELAY_RULES_FILE): {', '.join(spec.pattern for spec in DEFAULT_RULES)}"
        if self.cors_origins:
            cors = f"pages of {', '.join(self.cors_origins)} may call the gateway (RELAY_CORS_ORIGINS)"
        else:
            cors = (
                "no origin allowed (no RELAY_CORS_ORIGINS): browsers refuse a page on another origin than the "
                "gateway's; only same-origin pages (behind a proxy) can call it"
            )
        lines = [
            f"provider: {describe_configuration(self.relay_url)}",
            f"server API (/v1/publish, /v1/channels, /v1/users): {api}",
            users,
            *([] if cookie is None else [cookie]),
            rules,
            f"CORS: {cors}",
        ]
        if self.public_url is not None:
            lines.append(f"pages are given whole URLs under RELAY_PUBLIC_URL: {self.public_url}")
        if self.public_ws_url is not None:
            lines.append(f"pages open their WebSocket at RELAY_PUBLIC_WS_URL: {self.public_ws_url}")
        return lines

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = trimmed_environment(environ)
        for name in _TEXT_VARIABLES:
            refuse_undecoded(env.get(name, ""), name)
            # RELAY_API_TOKEN="…" from docker's --env-file: the quotes were the token's, and every caller was a 401
            refuse_quoted(env.get(name, ""), name)
        jwks_file = env.get("RELAY_JWKS_FILE")
        rules_file = env.get("RELAY_RULES_FILE")
        return cls(
            relay_url=configuration_from_env(env),
            api_token=env.get("RELAY_API_TOKEN") or None,
            jwt_secret=env.get("RELAY_JWT_SECRET") or None,
            jwt_public_key=_read_key(env.get("RELAY_JWT_PUBLIC_KEY")),
            jwks=read_jwks(Path(jwks_file)) if jwks_file else None,
            jwks_file=Path(jwks_file) if jwks_file else None,
            jwt_audience=env.get("RELAY_JWT_AUDIENCE") or None,
            jwt_issuer=env.get("RELAY_JWT_ISSUER") or None,
            jwt_cookie=env.get("RELAY_JWT_COOKIE") or None,
            jwt_user_claim=env.get("RELAY_JWT_USER_CLAIM", "sub"),
            rules=load_rules(Path(rules_file)) if rules_file else DEFAULT_RULES,
            rules_file=Path(rules_file) if rules_file else None,
            cors_origins=tuple(o.strip() for o in env.get("RELAY_CORS_ORIGINS", "").split(",") if o.strip()),
            webhook_forward_url=env.get("RELAY_WEBHOOK_FORWARD_URL") or None,
            jwt_leeway=_seconds(env.get("RELAY_JWT_LEEWAY"), "RELAY_JWT_LEEWAY", DEFAULT_JWT_LEEWAY_S),
            public_url=env.get("RELAY_PUBLIC_URL") or None,
            public_ws_url=env.get("RELAY_PUBLIC_WS_URL") or None,
            provider_retry=_provider_retry(env),
        )


# The gateway's variables that hold text, rather than a file's path (which may be any bytes): one holding a byte that
# is not UTF-8 (kept as a lone surrogate) made RELAY_JWT_SECRET a traceback, and RELAY_JWT_AUDIENCE, RELAY_JWT_ISSUER
# or RELAY_JWT_USER_CLAIM a gateway that refused every JWT.
_TEXT_VARIABLES = (
    "RELAY_API_TOKEN", "RELAY_JWT_SECRET", "RELAY_JWT_AUDIENCE", "RELAY_JWT_ISSUER", "RELAY_JWT_COOKIE",
    "RELAY_JWT_USER_CLAIM", "RELAY_CORS_ORIGINS", "RELAY_PUBLIC_URL", "RELAY_PUBLIC_WS_URL",
    "RELAY_WEBHOOK_FORWARD_URL",
)  # fmt: skip


def _provider_retry(env: Mapping[str, str]) -> RetryPolicy:
    """RELAY_PROVIDER_TIMEOUT (seconds to connect, then for each read or write), RELAY_PROVIDER_ATTEMPTS (tries in
    all) and RELAY_PROVIDER_DEADLINE (seconds a request to the provider takes at most) over the library's defaults."""
    timeout, attempts = env.get("RELAY_PROVIDER_TIMEOUT", ""), env.get("RELAY_PROVIDER_ATTEMPTS", "")
    seconds = _provider_seconds(
        "RELAY_PROVIDER_TIMEOUT",
        timeout,
        f"how long the gateway waits to connect to the provider, then for each read or write; default "
        f"{DEFAULT_RETRY.timeout:g}",
    )
    deadline = _provider_seconds(
        "RELAY_PROVIDER_DEADLINE",
        env.get("RELAY_PROVIDER_DEADLINE", ""),
        "how long a request to the provider takes at most, its waits, tries and backoffs included; default none",
    )
    if attempts and not (attempts.isascii() and attempts.isdigit() and int(attempts) >= 1):
        raise ConfigError(
            f"RELAY_PROVIDER_ATTEMPTS: {attempts!r} is not a whole number, 1 or more (how many times the gateway "
            f"tries a request the provider fails or does not answer; default {DEFAULT_RETRY.attempts})"
        )
    return replace(
        DEFAULT_RETRY,
        timeout=DEFAULT_RETRY.timeout if seconds is None else seconds,
        attempts=int(attempts) if attempts else DEFAULT_RETRY.attempts,
        deadline=deadline,
    )


def _provider_seconds(name: str, value: str, meaning: str) -> float | None:
    """``value`` of the variable ``name``, a number of seconds over 0 (None when unset)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_POLICY_SECONDS:
        raise ConfigError(
            f"{name}: {value!r} is not a number of seconds over 0 and at most {MAX_POLICY_SECONDS:,} ({meaning})"
        )
    return seconds


def _seconds(value: str | None, name: str, default: float) -> float:
    if value is None or not value.strip():
        return default
    try:
        return float(value)  # NaN and infinity are refused with the range (GatewaySettings)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a number of seconds, such as 30") from None


def public_base_url(url: str) -> str:
    """``url``, the gateway's address as browsers reach it (RELAY_PUBLIC_URL), without a final ``/``: the routes'
    paths are appended to it in /v1/client-config, so it is a base alone (no query, no fragment) and never holds
    credentials, which every page would be given."""
    _page_url(
        url,
        setting="RELAY_PUBLIC_URL",
        schemes=("http", "https"),
        kind="an http(s) URL",
        base="the base URL the routes' paths are appended to",
        noun="URL",
        example="such as https://rt.example.com or https://example.com/relay",
    )
    return url.rstrip("/")


def _page_url(
    url: str, *, setting: str, schemes: tuple[str, ...], kind: str, base: str, noun: str, example: str
) -> SplitResult:
    """``url``'s parts, checked as /v1/client-config gives it to every page: one of ``schemes`` with a host, a base
    that paths are appended to (no query, no fragment), and no credentials."""
    if not is_url(url, schemes):
        raise ConfigError(f"{setting}: {url!r} is not {kind} with a host, {example}")
    if "?" in url or "#" in url:
        raise ConfigError(f"{setting}: {url!r} has a query or a fragment; give {base}, {example}")
    parts = urlsplit(url)
    if parts.username is not None:
        shown = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
        raise ConfigError(
            f"{setting}: {shown!r} has credentials before its host: /v1/client-config gives this {noun} to every "
            "page, so leave them out"
        )
    return parts


@dataclass(frozen=True, slots=True)
class BrowserSocket:
    """Where a page opens its WebSocket, as pusher-js's and ably-js's options take it: ``host`` as a URL writes it
    (both clients put it in URLs as it is, so an IPv6 address in brackets), the port always given (443 with TLS, else
    80, when a URL names none), TLS or not, and the path before ``/app/{key}`` (pusher-js's ``wsPath``), empty or
    ``/`` and segments."""

    host: str
    port: int
    tls: bool
    path: str = ""

    @classmethod
    def of(cls, config: ProviderConfig) -> BrowserSocket:
        """The provider's own address: where pages connect without RELAY_PUBLIC_WS_URL."""
        return cls(config.url_host, config.port or (443 if config.tls else 80), config.tls, config.path_prefix)


def browser_socket(url: str) -> BrowserSocket:
    """``url`` (RELAY_PUBLIC_WS_URL), where browsers open their WebSocket: given to every page by /v1/client-config,
    so ws or wss, a host, a path at most (pusher-js appends /app/{key} to it), and no credentials."""
    parts = _page_url(
        url,
        setting="RELAY_PUBLIC_WS_URL",
        schemes=("ws", "wss"),
        kind="a ws:// or wss:// URL",
        base="the address pages append /app/KEY to",
        noun="address",
        example="such as wss://relay.example.com or wss://example.com:8443/realtime",
    )
    tls = parts.scheme == "wss"
    assert parts.hostname is not None  # is_url checked it
    return BrowserSocket(url_host(parts.hostname), parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))


def _refuse_browser_socket_for(config: ProviderConfig, socket: BrowserSocket) -> None:
    """RELAY_PUBLIC_WS_URL with a provider whose pages it cannot address: refused rather than ignored, since a
    setting that changes nothing looks like it does (the very thing it was added for: pages told an address that
    none of them reaches, and no word of it)."""
    if config.scheme == "memory":
        why = "memory:// has no WebSocket for pages to open"
    elif config.scheme == "pusher" and is_hosted_pusher(config.host):
        why = f"pages of hosted Pusher ({config.host}) connect where pusher-js's cluster sends them"
    elif config.scheme == "ably" and is_hosted_ably(config.host):
        why = f"pages of Ably's cloud ({config.host}) connect to Ably's own endpoints"
    elif config.scheme == "ably" and socket.path:
        why = f"ably-js connects at the root of its endpoint and takes no path ({socket.path})"
    else:
        return
    raise ConfigError(f"RELAY_PUBLIC_WS_URL cannot be used: {why}; leave it out")


def loopback_socket_warning(settings: GatewaySettings, config: ProviderConfig) -> str | None:
    """What to warn of when pages are told to connect to the provider's loopback address (RELAY_URL names the emulator
    at 127.0.0.1, as behind nginx) while RELAY_PUBLIC_URL says browsers come from elsewhere: each would open its
    WebSocket to its own machine. None when RELAY_PUBLIC_WS_URL is set or pages are given no host."""
    if settings.public_ws_url is not None or settings.public_url is None or config.scheme == "memory":
        return None
    if (config.scheme == "pusher" and is_hosted_pusher(config.host)) or is_hosted_ably(config.host):
        return None
    public_host = urlsplit(settings.public_url).hostname or ""
    if not is_loopback(config.host) or is_loopback(public_host):
        return None
    socket = BrowserSocket.of(config)
    scheme = "wss" if urlsplit(settings.public_url).scheme == "https" else "ws"
    return (
        f"/v1/client-config tells pages to open their WebSocket at {socket.host}:{socket.port}, RELAY_URL's loopback "
        f"address, while RELAY_PUBLIC_URL says browsers reach the gateway at {public_host}: each browser would "
        f"connect to its own machine. Set RELAY_PUBLIC_WS_URL to the address browsers reach the provider at, such as "
        f"{scheme}://{url_host(public_host)}"
    )


# What no cookie name a browser sends holds (it splits the Cookie header at ';' and each pair at the first '='; a
# ',' or a '"' reads as another cookie or a quoted value to some servers). RFC 6265's token is stricter, but browsers
# set and send names such as PHP's auth[token].
UNSENDABLE_COOKIE_NAME = re.compile(r'[\x00-\x20\x7f=;,"]|[^\x00-\x7f]')


def _origin_meant(written: str) -> str:
    """The origin ``written`` was most likely meant to be, as the end of its refusal: one copied from the address bar
    ends with a '/' (or goes on with a page's path), and one written as a host lacks its scheme."""
    if "://" not in written:
        return f"; with its scheme: https://{written} (or http://{written})" if is_origin(f"https://{written}") else ""
    parts = urlsplit(written) if is_http_url(written) else None
    if parts is None or parts.username is not None or "*" in parts.netloc:
        return ""
    meant = f"{parts.scheme}://{parts.netloc}"
    return f"; without the path: {meant}" if is_origin(meant) else ""


def browser_origin(origin: str) -> str:
    """``origin`` as a browser sends it in ``Origin``: scheme and host in lowercase, no default port (RFC 6454
    §6.1). CORS compares the strings, so written any other way an allowed origin would never match."""
    scheme, separator, rest = origin.partition("://")
    candidate = f"{scheme.lower()}{separator}{rest}"
    parts = urlsplit(candidate) if is_origin(candidate) else None
    if parts is None or parts.username is not None or parts.hostname is None:
        # Credentials are allowed, so a wildcard would let any site call /v1/auth/* as its visitors.
        raise ConfigError(
            f"RELAY_CORS_ORIGINS: {origin!r} is not an origin such as https://app.example.com "
            f"(scheme and host, no path, no wildcard){_origin_meant(candidate)}: list the sites whose pages call the "
            "gateway"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default_port = 443 if parts.scheme == "https" else 80
    port = "" if parts.port in (None, default_port) else f":{parts.port}"
    if not host.isascii():
        # A browser's Origin header carries the host in its ASCII form (UTS #46, as browsers map it): as written, the
        # origin never matched
        try:
            ascii_form = f" ({parts.scheme}://{idna.encode(host, uts46=True).decode()}{port})"
        except idna.IDNAError:
            ascii_form = ""
        raise ConfigError(
            f"RELAY_CORS_ORIGINS: {origin!r} has a host beyond ASCII, which browsers send in its punycode form in "
            f"Origin{ascii_form}: list the origin that way, as the browser's devtools show it"
        )
    return f"{parts.scheme}://{host}{port}"


CERTIFICATE_PEM = "-----BEGIN CERTIFICATE-----"


def certificate_public_key(pem: str) -> str:
    """``pem``'s public key in PEM when it is an X.509 certificate, what Auth0 (``https://TENANT/pem``), Azure AD and
    Firebase publish for their signing keys; any other PEM unchanged (PyJWT reads keys, not certificates). Only the
    key is taken: the certificate's dates and issuer are not checked, as identity providers' are self-signed."""
    if CERTIFICATE_PEM not in pem:
        return pem
    count = pem.count(CERTIFICATE_PEM)
    if count > 1:  # the first of a chain is the usual guess, and a wrong one would refuse every JWT as forged
        raise ConfigError(
            f"RELAY_JWT_PUBLIC_KEY holds {count} certificates: give the one whose key signs your users' JWTs (or all "
            "of the identity provider's keys, as a JWKS, in RELAY_JWKS_FILE)"
        )
    try:
        key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    except ValueError:
        raise ConfigError(
            "RELAY_JWT_PUBLIC_KEY holds a certificate (-----BEGIN CERTIFICATE-----) that cannot be read, cut short "
            "or altered: copy it whole as your identity provider publishes it, from -----BEGIN to -----END"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ConfigError(
            f"RELAY_JWT_PUBLIC_KEY holds a certificate whose key is {type(key).__name__.removesuffix('PublicKey')}: "
            "the gateway verifies RS256 (an RSA key) and ES256 (an EC P-256 key) JWTs"
        )
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def _read_key(value: str | None) -> str | None:
    """RELAY_JWT_PUBLIC_KEY: PEM text, or a PEM file's path. PEM text on one line with its line breaks written as
    ``\\n``, as .env files and hosts' settings pages hold it, has them restored (it was refused as no key)."""
    if value and value.startswith("-----BEGIN") and "\n" not in value:
        return value.replace("\\n", "\n")
    if not value or value.startswith("-----BEGIN"):
        return value or None
    try:
        return read_text(Path(value), "the file")
    except ConfigError as error:  # the reason the file did not read, named after what the value could be
        raise ConfigError(f"RELAY_JWT_PUBLIC_KEY is neither a PEM key nor a readable PEM file: {error}") from None

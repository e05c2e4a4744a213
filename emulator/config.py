"""Emulator configuration: apps (with their limits, switches and webhooks) from flags or a TOML file."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.config import is_http_url, is_origin, is_url, undecoded, url_problem
from relay.emulator.limits import origin_allowed
from relay.emulator.logs import redact_urls
from relay.errors import AuthenticationError, ConfigError
from relay.files import read_toml
from relay.protocol.ably import parse_capability, split_api_key
from relay.protocol.channels import DEFAULT_LIMITS, Limits
from relay.protocol.hosts import is_loopback

WEBHOOK_EVENT_TYPES = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)
# The events an Ably-format webhook sends: channel.opened and channel.closed (channel.lifecycle), every presence
# member's enter, update and leave, per connection as Ably has them ("presence") as channel.presence, client events and
# the messages published through Ably's protocol ("message") as channel.message.
ABLY_WEBHOOK_EVENT_TYPES = frozenset({"channel_occupied", "channel_vacated", "presence", "client_event", "message"})
WEBHOOK_FORMATS = ("pusher", "ably")
EVERY_EVENT_TYPE: frozenset[str] = frozenset({"*"})  # a webhook's default: every event type of its format


def _has_port(host: str) -> bool:
    """``host`` is a name, an IPv4 address or a bracketed IPv6 address followed by ``:PORT`` (a bare IPv6 address
    has two colons or more, and ends with no port)."""
    address, colon, port = host.rpartition(":")
    if not (colon and port.isascii() and port.isdigit()):
        return False
    return ":" not in address or (address.startswith("[") and address.endswith("]"))


class InvalidSetting(ConfigError):
    """One setting's value is wrong; ``setting`` names it, so the command line can name its flag."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting} {message}")
        self.setting = setting


def _flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise InvalidSetting(name, f"must be true or false, got {_as_written(value)}")


def _whole(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum and value > maximum):
        bounds = f"{minimum}–{maximum}" if maximum else f"{minimum} or more"
        raise InvalidSetting(name, f"must be a whole number, {bounds}, got {_as_written(value)}")


def _seconds(name: str, value: object, *, zero: bool, unit: str = "seconds") -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not number or value < 0 or (value == 0 and not zero):  # type: ignore[operator]
        raise InvalidSetting(name, f"must be a number of {unit}{' ≥ 0' if zero else ' > 0'}, got {_as_written(value)}")


# Settings whose value is a secret: an error about one says what kind of value it got, never the value (an unquoted
# secret = 12345678 is an integer, a secret = ["…"] an array).
_SECRET_SETTINGS = frozenset({"secret", "console_token", "ably_key"})


def _text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        shown = _toml_kind(value) if name in _SECRET_SETTINGS and value != "" else repr(value)
        raise InvalidSetting(name, f"must be a non-empty string, got {shown}")
    problem = undecoded(value)
    if problem is not None:
        raise InvalidSetting(name, f"{problem}; set it again")


def _optional(check: Any, name: str, value: object, *args: Any, **kwargs: Any) -> None:
    if value is not None:
        check(name, value, *args, **kwargs)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110 §5.6.2)
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # visible ASCII, spaces and tabs: no line breaks to inject headers
_URL_PATH_UNSAFE = re.compile(r"[/?#%\s]")
_REDIS_DATABASE = re.compile(r"(/[0-9]*)?")  # a redis:// or rediss:// URL's path
# What a browser percent-encodes in a path (a quote, < > ` { }, a space, anything outside ASCII), or what ends one
_BROWSER_ENCODED = r'[?#"<>`{}\\]|[^\x21-\x7e]'
_PREFIX_UNSAFE = re.compile(_BROWSER_ENCODED)  # a prefix may hold escapes: /v1/%7Eteam
# A key is in the WebSocket path (/app/{key}), before the ':' of auth signatures and before the ':' of an Ably key
_KEY_UNSAFE = re.compile(f"[/%:]|{_BROWSER_ENCODED}")


def _key(name: str, value: object) -> None:
    _text(name, value)
    assert isinstance(value, str)
    if _KEY_UNSAFE.search(value):
        raise InvalidSetting(
            name,
            f"goes in /app/{{key}} and before the ':' of signatures: {value!r} has one of / ? # % : \" < > ` {{ }} \\, "
            "a space or a character outside ASCII (a browser sends those percent-encoded)",
        )


# Headers that frame the request or the connection: httpx sets them, and one given twice breaks the request (a
# Content-Length that is not the body's is refused by httpx at every attempt).
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "keep-alive", "proxy-connection", "te", "trailer",
     "upgrade"}
)  # fmt: skip


def shown_url(url: object) -> str:
    """A URL as an error message may show it: without its user-info (a password), or not at all when an '@' is left
    where the user-info could not be told apart (a password holding an unencoded '/', '?' or '#')."""
    if not isinstance(url, str):
        return _toml_kind(url)  # an array of URLs, say: its text could hold a password
    if _user_info_unclear(url):
        return "(a URL with user-info, not shown)"
    return repr(redact_urls(url))


def _user_info_unclear(url: str) -> bool:
    """Whether an '@' is left in ``url`` once its user-info is redacted: a password holding an unencoded '/', '?' or
    '#' ends the host part early, so that the password is read as a host, a port or a path."""
    shown = redact_urls(url)
    return "@" in shown.partition("://")[2] and "://***@" not in shown


def _header_problem(name: object, value: object) -> str | None:
    """What is wrong with the webhook header ``name: value``, in words that show neither the value (it may be a
    credential, such as an Authorization header's) nor a name past a ':' (one like 'Authorization: Bearer …' holds a
    credential too); None when it is a header."""
    if not isinstance(name, str):
        return f"have a name that is not a string: {_toml_kind(name)}"
    if not _HEADER_NAME.fullmatch(name):
        # Up to a ':': a name like 'Authorization: Bearer …' is a whole header line, its value a credential.
        shown = name.partition(":")[0] + ("…" if ":" in name else "")
        token = "letters, digits and !#$%&'*+-.^_`|~, no spaces or ':'"
        return f"have a name that is not an HTTP token ({token}): {shown!r}"
    if not isinstance(value, str):
        return f"{name!r}: its value must be a string, got {_toml_kind(value)}"
    if not _HEADER_VALUE.fullmatch(value):
        if "\r" in value or "\n" in value:
            what = "a line break"
        elif value.isascii():
            what = "a control character"
        else:
            what = "a character that is not ASCII"
        return f"{name!r}: its value (not shown) has {what}; a header's value is ASCII on one line"
    return None


def _why_not_http_url(url: object) -> str:
    """Why ``url``, refused as an http(s) URL with a host, is not one, as the end of the error ("" where the URL is
    not shown: not a string, or a password that may be read as its parts): 'http://localhost:99999/hooks' is refused
    for its port alone."""
    if not isinstance(url, str) or _user_info_unclear(url):
        return ""
    return f": {url_problem(url, ('http', 'https'))}"


def _sendable(url: str) -> str | None:
    """Why httpx could not send to ``url`` (a host IDNA refuses, such as xn--a.com), or None."""
    # Here, not with the module: every relay command imports it to build its parser, and httpx (with the click and
    # rich of its own command line) was a quarter of the time `relay --help` took.
    import httpx

    try:
        httpx.URL(url).host  # noqa: B018 (decoding the host is the check)
    except UnicodeError as exc:  # idna's errors
        return f"its host is not a valid internationalized domain name ({exc})"
    except (httpx.InvalidURL, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    event_types: frozenset[str] = EVERY_EVENT_TYPE  # the format's every event type
    channel_prefix: str = ""
    channel_suffix: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    # "pusher": Pusher's webhooks ({time_ms, events}, X-Pusher-Signature); "ably": Ably's batched integration
    # webhooks ({items}, X-Ably-Key and X-Ably-Signature with the app's Ably key), of the events Ably has.
    format: str = "pusher"

    def __post_init__(self) -> None:
        if self.format not in WEBHOOK_FORMATS:
            raise InvalidSetting("format", f"must be one of {', '.join(WEBHOOK_FORMATS)}, got {self.format!r}")
        known = ABLY_WEBHOOK_EVENT_TYPES if self.format == "ably" else WEBHOOK_EVENT_TYPES
        if self.event_types is EVERY_EVENT_TYPE:
            object.__setattr__(self, "event_types", known)
        elif not self.event_types <= known:
            unknown = sorted(self.event_types - known)
            raise InvalidSetting(
                "event_types", f"has types {self.format} webhooks do not send: {unknown}; known: {sorted(known)}"
            )
        if isinstance(self.url, str) and self.url.strip() != self.url:
            raise InvalidSetting("url", f"{shown_url(self.url)} has whitespace around it: a URL has none")
        if not is_http_url(self.url):
            why = _why_not_http_url(self.url)
            raise InvalidSetting("url", f"must be an http:// or https:// URL, got {shown_url(self.url)}{why}")
        problem = _sendable(self.url)
        if problem is not None:
            raise InvalidSetting("url", f"{shown_url(self.url)} cannot be sent to: {problem}")
        for name, value in self.headers.items():
            # A header's value is not shown: it may be a credential (Authorization).
            problem = _header_problem(name, value)
            if problem is not None:
                raise InvalidSetting("headers", problem)
            if name.lower() in _FRAMING_HEADERS:
                raise InvalidSetting(
                    "headers", f"{name!r} frames the request, which the emulator does itself: it cannot be set"
                )

    def wants(self, event_name: str, channel: str | None) -> bool:
        if event_name not in self.event_types:
            return False
        if channel is None:
            return True
        return channel.startswith(self.channel_prefix) and channel.endswith(self.channel_suffix)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """Another key and secret of an app, accepted as its own are: rotating them without a moment when old or new
    credentials fail (docs/emulator.md "Rotating an app's key")."""

    key: str
    secret: str

    def __post_init__(self) -> None:
        _key("key", self.key)
        _text("secret", self.secret)

    def __repr__(self) -> str:
        return f"KeyPair(key={self.key!r}, secret='***')"


def _check_limits(limits: Limits) -> None:
    for limit in fields(Limits):
        _whole(limit.name, getattr(limits, limit.name), 1)


def _limits(table: Mapping[str, Any]) -> Limits:
    """The limits of an [apps.limits] table (whose keys were checked), each value checked."""
    limits = replace(DEFAULT_LIMITS, **table)
    _check_limits(limits)
    return limits


@dataclass(frozen=True, slots=True)
class App:
    app_id: str
    key: str
    secret: str
    enabled: bool = True
    client_events: bool = True
    subscription_count: bool = False
    max_connections: int | None = None
    activity_timeout: int = 120
    pong_timeout: float = 30.0
    user_authentication_timeout: float | None = None
    cache_ttl: float = 1800.0
    limits: Limits = DEFAULT_LIMITS
    webhooks: tuple[Webhook, ...] = ()
    webhook_batch_ms: int = 50
    webhook_delay: float = 3.0
    webhook_retry_for: float = 300.0
    webhook_max_pending: int = 10_000
    # Operations (docs/emulator.md "Limits and protection"): browser Origins allowed to open WebSockets (empty: any;
    # entries are "*", an origin like "https://shop.example.com" or a host pattern like "*.example.com"), the largest
    # WebSocket message accepted (None: the server's max_frame_bytes) and HTTP API requests per second (None: no limit).
    allowed_origins: tuple[str, ...] = ()
    max_message_bytes: int | None = None
    api_rate_limit: float | None = None
    # Ably compatibility (docs/ably.md): the app's Ably API key "APPID.KEYID:SECRET"; None derives it from the app.
    ably_key: str | None = None
    # How long messages published through Ably's protocol are kept for history and rewind (0: none are kept).
    ably_history_seconds: float = 120.0
    # Ably's "persist last message" channel rule: channel names and namespaces (the part of a name before its first
    # ':') whose channels keep their last Ably message past ably_history_seconds, for the rewind channel param.
    ably_persist_last_message: tuple[str, ...] = ()
    # The capability of the app's Ably keys, as JSON text (Ably's key setting); None: {"*":["*"]}, every channel but
    # no metachannel (Ably's "*" does not cover "[meta]" names), so '{"[*]*":["*"]}' lets the keys, and the tokens
    # they sign, subscribe to [meta]channel.lifecycle too.
    ably_capability: str | None = None
    # More key pairs, each accepted wherever the app's own is (connections, signed requests, auth signatures); the
    # app's own `key` and `secret` sign its webhooks.
    extra_keys: tuple[KeyPair, ...] = ()
    _secrets: dict[str, str] = field(init=False, repr=False, compare=False)  # every key → its secret

    def __post_init__(self) -> None:
        for name in ("app_id", "secret"):
            _text(name, getattr(self, name))
        _key("key", self.key)
        if _URL_PATH_UNSAFE.search(self.app_id):
            raise InvalidSetting(
                "app_id", f"is part of the URL path /apps/{{app_id}}/…: {self.app_id!r} has / ? # % or a space"
            )
        for name in ("enabled", "client_events", "subscription_count"):
            _flag(name, getattr(self, name))
        _optional(_whole, "max_connections", self.max_connections, 1)
        _whole("activity_timeout", self.activity_timeout, 1)  # clients read whole seconds from connection_established
        _seconds("pong_timeout", self.pong_timeout, zero=False)
        _optional(_seconds, "user_authentication_timeout", self.user_authentication_timeout, zero=False)
        _seconds("cache_ttl", self.cache_ttl, zero=False)
        _check_limits(self.limits)
        for i, webhook in enumerate(self.webhooks):
            if webhook in self.webhooks[:i]:
                raise InvalidSetting(
                    "url",
                    f"{shown_url(webhook.url)} is given twice with the same settings: each event would be sent to it "
                    "twice; give it once",
                )
        _whole("webhook_batch_ms", self.webhook_batch_ms, 0)
        _seconds("webhook_delay", self.webhook_delay, zero=True)
        _seconds("webhook_retry_for", self.webhook_retry_for, zero=True)
        _whole("webhook_max_pending", self.webhook_max_pending, 1)
        for origin in self.allowed_origins:
            if not isinstance(origin, str) or not origin or ("://" in origin and not is_origin(origin)):
                raise InvalidSetting(
                    "allowed_origins", f"entries are '*', 'https://host[:port]' or '*.host', got {origin!r}"
                )
            if "://" not in origin and ":" in origin:  # matched against the host alone, it would match nothing
                raise InvalidSetting(
                    "allowed_origins",
                    f"entry {origin!r} has a port but no scheme: a host entry matches the host whatever the port; "
                    f"write 'http://{origin}' for that origin alone",
                )
            if not origin.isascii():  # a browser's Origin carries the host in its ASCII (punycode) form
                raise InvalidSetting(
                    "allowed_origins",
                    f"entry {origin!r} has a host beyond ASCII, which browsers send in its punycode form (xn--…) in "
                    "Origin: write it that way, as the browser's devtools show it",
                )
            parts = urlsplit(origin) if "://" in origin else None
            if parts is not None and parts.port == {"http": 80, "https": 443}[parts.scheme]:
                # RFC 6454: a browser leaves the scheme's default port out of Origin, so the entry matched nothing
                shown = parts._replace(netloc=parts.netloc.rpartition(":")[0]).geturl()
                raise InvalidSetting(
                    "allowed_origins",
                    f"entry {origin!r} names its scheme's default port, which browsers leave out of Origin: write "
                    f"{shown!r}",
                )
        _optional(_whole, "max_message_bytes", self.max_message_bytes, 1)
        _optional(_seconds, "api_rate_limit", self.api_rate_limit, zero=False, unit="requests per second")
        _optional(_text, "ably_key", self.ably_key)
        _seconds("ably_history_seconds", self.ably_history_seconds, zero=True)
        for rule in self.ably_persist_last_message:
            if (
                not isinstance(rule, str)
                or not rule
                or rule.startswith((":", "["))
                or rule.endswith(":")
                or "*" in rule
            ):
                raise InvalidSetting(
                    "ably_persist_last_message",
                    f"holds exact channel names and namespaces (such as 'orders' for 'orders:42'; no wildcards), "
                    f"got {rule!r}",
                )
        if self.ably_capability is not None:
            _text("ably_capability", self.ably_capability)
            try:
                parse_capability(self.ably_capability)
            except AuthenticationError as exc:
                example = '{"[*]*":["*"]}'
                raise InvalidSetting(
                    "ably_capability", f"is a JSON capability such as {example}: {exc.message}"
                ) from None
        try:
            split_api_key(self.ably_api_key)
        except ConfigError:
            # Not shown: what follows the colon is a secret.
            raise InvalidSetting("ably_key", "looks like 'APPID.KEYID:SECRET'") from None
        secret_of = {self.key: self.secret}
        for pair in self.extra_keys:
            if not isinstance(pair, KeyPair):
                raise InvalidSetting("extra_keys", f"holds KeyPair(key, secret) entries, got a {type(pair).__name__}")
            if pair.key in secret_of:
                raise InvalidSetting("extra_keys", f"names the key {pair.key!r} twice (the app's own key included)")
            secret_of[pair.key] = pair.secret
        object.__setattr__(self, "_secrets", secret_of)

    def __repr__(self) -> str:
        return f"App(app_id={self.app_id!r}, key={self.key!r}, secret='***')"

    @property
    def ably_api_key(self) -> str:
        """The Ably key clients use: ``ably_key``, or ``{app_id}.{key}:{secret}``."""
        return self.ably_key if self.ably_key is not None else f"{self.app_id}.{self.key}:{self.secret}"

    @property
    def ably_api_keys(self) -> list[str]:
        """Every Ably key of the app: its own, then, unless ``ably_key`` sets it apart, ``{app_id}.{key}:{secret}`` of
        each extra key pair."""
        if self.ably_key is not None:
            return [self.ably_key]
        return [self.ably_api_key, *(f"{self.app_id}.{pair.key}:{pair.secret}" for pair in self.extra_keys)]

    @property
    def secrets(self) -> list[str]:
        """Every secret the app holds (its own, its extra pairs', its Ably key's), for the logs to redact."""
        return [*self._secrets.values(), *(split_api_key(api_key)[1] for api_key in self.ably_api_keys)]

    @property
    def keys(self) -> list[str]:
        """The app's key, then its extra keys."""
        return list(self._secrets)

    def key_pair(self, key: object) -> tuple[str, str]:
        """(key, secret) of the app's key pair named ``key``; its own pair for a key that is none of its (checking a
        signature with it then says the key is not the app's)."""
        if isinstance(key, str) and (secret := self._secrets.get(key)) is not None:
            return key, secret
        return self.key, self.secret

    def origin_refusal(self, headers: Sequence[tuple[str, str]]) -> str | None:
        """Why a WebSocket handshake with ``headers`` may not connect to this app (its ``Origin`` is not in
        ``allowed_origins``), or None; the same rule and words for Pusher and Ably connections."""
        origin = next((value for name, value in headers if name.lower() == "origin"), None)
        if origin is None or origin_allowed(self.allowed_origins, origin):
            return None
        return f"Origin not allowed: {origin[:100]}"


# The shortest node_ttl (EmulatorConfig's check says why).
MIN_NODE_TTL = 1.0
# The largest max_frame_bytes (EmulatorConfig's check says why): 16 times the default.
MAX_FRAME_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    apps: tuple[App, ...]
    host: str = "127.0.0.1"
    port: int = 6001
    path_prefix: str = ""
    max_request_bytes: int = 1_048_576
    max_frame_bytes: int = 262_144
    max_send_buffer: int = 4 * 1024 * 1024
    # TCP connections one client address may hold at once (None: no cap); more are closed as they arrive. Behind a
    # proxy every connection has the proxy's address: cap there instead (docs/nginx.conf).
    max_connections_per_address: int | None = None
    node_id: int | None = None
    # Operations: the token that opens /console, /metrics and /usage (required unless bound to a loopback host),
    # TLS for wss/https on the same port, and graceful shutdown (for shutdown_delay seconds answer /ready and new
    # Pusher WebSocket handshakes with an HTTP 503, and new Ably connections with DISCONNECTED, then stop accepting,
    # close connections over shutdown_spread seconds, then wait up to shutdown_webhook_grace seconds for webhooks to
    # be delivered).
    console_token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    shutdown_delay: float = 0.0
    shutdown_spread: float = 2.0
    shutdown_webhook_grace: float = 5.0
    usage_file: str | None = None  # where the usage meter is written (merged into what is there) at shutdown
    usage_checkpoint: float = 60.0  # seconds between writes of the run's usage beside it, which a crash leaves behind
    redis_url: str | None = None
    redis_prefix: str = "relay"
    node_ttl: float = 10.0
    # Bind the port with SO_REUSEPORT (Linux), so that a replacement started with it too listens beside this process
    # before it is stopped: a restart on one host with no moment when nothing listens. Off by default: a second
    # emulator started on the port by mistake would then share it rather than be refused.
    reuse_port: bool = False

    def __post_init__(self) -> None:
        _text("host", self.host)
        if "://" in self.host:  # --host http://0.0.0.0 was looked up as a name: "Name or service not known"
            address = self.host.partition("://")[2].split("/")[0].rpartition("@")[2]
            address = address.rpartition(":")[0] if _has_port(address) else address
            raise InvalidSetting(
                "host",
                f"must be an address, not a URL ({address.strip('[]') or '127.0.0.1'}, not {self.host}): the port is "
                "set apart (--port)",
            )
        if _has_port(self.host):  # --host localhost:6001 was looked up as a name too, and was "not a loopback address"
            address = self.host.rpartition(":")[0].strip("[]")
            raise InvalidSetting(
                "host",
                f"must be an address without a port ({address}, not {self.host}): the port is set apart (--port)",
            )
        if "[" in self.host or "]" in self.host:  # a URL's IPv6 address ([::1]): as a host name, nothing resolves it
            address = self.host.strip("[]")
            raise InvalidSetting(
                "host", f"must be an address without brackets ({address}, not {self.host}): only a URL writes them"
            )
        _whole("port", self.port, 0, 65535)
        if not isinstance(self.path_prefix, str) or (self.path_prefix and not self.path_prefix.startswith("/")):
            raise InvalidSetting("path_prefix", f"must be empty or start with '/', got {self.path_prefix!r}")
        if _PREFIX_UNSAFE.search(self.path_prefix):  # no client could send it as it is, and no URL could name it
            raise InvalidSetting(
                "path_prefix",
                f'has one of ? # " < > ` {{ }} \\, a space or a character outside ASCII, which end a path or which '
                f"a client sends percent-encoded: {self.path_prefix!r}",
            )
        # "/ws/" means "/ws" (and "/" no prefix): kept without its trailing "/", which every route begins with.
        object.__setattr__(self, "path_prefix", self.path_prefix.rstrip("/"))
        if any(segment in ("", ".", "..") for segment in self.path_prefix.split("/")[1:]):
            # A proxy merges "//" and resolves "." and "..", and a provider URL reads the prefix so too: the banner's
            # RELAY_URL for "//x" was sent to /x/apps/… (404), and the library refused one with "." or ".."
            raise InvalidSetting(
                "path_prefix",
                f"has an empty, '.' or '..' segment, which proxies and provider URLs read as another path: "
                f"{self.path_prefix!r} (write it as /a/b)",
            )
        for name in ("max_request_bytes", "max_frame_bytes", "max_send_buffer"):
            _whole(name, getattr(self, name), 1)
        if self.max_frame_bytes > MAX_FRAME_BYTES:
            raise InvalidSetting(
                "max_frame_bytes",
                f"must be at most {MAX_FRAME_BYTES} (4 MiB), got {self.max_frame_bytes}: a WebSocket message is held "
                "in memory whole until it is handled, so this is what each connection can make the server hold; no "
                "Pusher message the default limits allow is over 320 KiB, nor an Ably frame over 512 KiB",
            )
        _optional(_whole, "max_connections_per_address", self.max_connections_per_address, 1)
        _optional(_whole, "node_id", self.node_id, 0)
        for name in ("console_token", "tls_cert", "tls_key", "usage_file"):
            _optional(_text, name, getattr(self, name))
        if self.console_token is not None and self.console_token != self.console_token.strip():
            # `Authorization: Bearer …` is read without it, so only ?token= could open the console (and a token of
            # whitespace alone, anyone's ?token=%20).
            raise InvalidSetting(
                "console_token",
                "has whitespace around it (the token is not shown), which an Authorization: Bearer header cannot "
                "carry: remove it",
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidSetting("tls_cert", "and tls_key go together (a certificate chain and its private key)")
        for name in ("shutdown_delay", "shutdown_spread", "shutdown_webhook_grace"):
            _seconds(name, getattr(self, name), zero=True)
        _seconds("usage_checkpoint", self.usage_checkpoint, zero=False)
        if self.redis_url is not None:
            if isinstance(self.redis_url, str) and self.redis_url.strip() != self.redis_url:
                shown = shown_url(self.redis_url)
                raise InvalidSetting("redis_url", f"{shown} has whitespace around it: a URL has none")
            if not is_url(self.redis_url, ("redis", "rediss", "unix"), host=False):
                raise InvalidSetting(
                    "redis_url", f"must be a redis://, rediss:// or unix:// URL, got {shown_url(self.redis_url)}"
                )
            try:
                port = urlsplit(self.redis_url).port
            except ValueError:  # not a number, or over 65535
                port = 0
            if port == 0:
                raise InvalidSetting(
                    "redis_url",
                    f"has a port that is not one from 1 to 65535 (Redis listens on 6379 by default): "
                    f"{shown_url(self.redis_url)}",
                )
            parts = urlsplit(self.redis_url)
            if parts.scheme != "unix" and not _REDIS_DATABASE.fullmatch(parts.path):
                # redis-py reads /abc as no database at all (0: perhaps another deployment's), and /1/2 as 12
                raise InvalidSetting(
                    "redis_url",
                    f"has the path {parts.path!r}: a Redis URL's path is the database number, such as "
                    "redis://127.0.0.1:6379/0, or nothing (database 0)",
                )
        _text("redis_prefix", self.redis_prefix)
        _seconds("node_ttl", self.node_ttl, zero=False)
        if self.node_ttl < MIN_NODE_TTL:
            # Each node beats every node_ttl / 3 seconds: a shorter pause of its event loop (a collection, a busy
            # moment) would have the others bury it; under 1 ms Redis refuses the expiry itself.
            raise InvalidSetting(
                "node_ttl", f"must be at least {MIN_NODE_TTL:g} second (the default is 10), got {self.node_ttl!r}"
            )
        _flag("reuse_port", self.reuse_port)
        _check_identities(self.apps)

    def frame_limit(self, app: App) -> int:
        """The largest WebSocket message a connection to ``app`` takes: ``max_frame_bytes``, or the app's smaller
        ``max_message_bytes``."""
        limit = app.max_message_bytes
        return self.max_frame_bytes if limit is None else min(limit, self.max_frame_bytes)

    @property
    def secrets(self) -> list[str | None]:
        """Every secret the configuration holds, for the logs to redact: the apps', the console token, the Redis URL
        (its password)."""
        return [self.console_token, *(secret for app in self.apps for secret in app.secrets), self.redis_url]


def _check_identities(apps: Sequence[App]) -> None:
    """Requests and connections find their app by id, key or Ably key name: two apps sharing one would leave one of
    them unreachable (the node's maps keep the last)."""
    identities = {
        "app_id": [(app.app_id, app) for app in apps],
        "key": [(key, app) for app in apps for key in app.keys],
        "Ably key name": [(split_api_key(api_key)[0], app) for app in apps for api_key in app.ably_api_keys],
    }
    for what, values in identities.items():
        owner: dict[str, App] = {}
        for value, app in values:
            first = owner.setdefault(value, app)
            if first is not app:
                hint = ": give one an ably_key" if what == "Ably key name" else ""
                which = "" if what == "app_id" else f" (app_id {first.app_id!r} and app_id {app.app_id!r}{hint})"
                raise ConfigError(f"two apps share the {what} {value!r}{which}")


def unprefixed(path: str, prefix: str) -> str | None:
    """``path`` without ``prefix`` (an ``EmulatorConfig.path_prefix``: empty, or without a trailing "/"), or None when
    ``path`` is not under it. One rule for the Pusher HTTP API, the WebSocket endpoint and the operations endpoints."""
    if not prefix:
        return path
    return path[len(prefix) :] if path.startswith(prefix) and path.startswith("/", len(prefix)) else None


_APP_FIELDS = {f.name for f in fields(App) if f.init} - {"limits", "webhooks", "extra_keys"}
_LIMIT_FIELDS = {f.name for f in fields(Limits)}
_WEBHOOK_FIELDS = {"url", "event_types", "channel_prefix", "channel_suffix", "headers", "format"}
_SERVER_FIELDS = {
    "host",
    "port",
    "path_prefix",
    "max_request_bytes",
    "max_frame_bytes",
    "max_send_buffer",
    "max_connections_per_address",
    "redis_url",
    "redis_prefix",
    "node_ttl",
    "console_token",
    "tls_cert",
    "tls_key",
    "shutdown_delay",
    "shutdown_spread",
    "shutdown_webhook_grace",
    "usage_file",
    "usage_checkpoint",
    "reuse_port",
}

# Settings of `relay emulator` that have a flag and no [server] key, by the key an operator would write.
_FLAG_ONLY_SETTINGS = {"workers": "--workers", "log_level": "--log-level", "log_json": "--log-json"}

# The [server] settings that name a file.
_PATH_SETTINGS = ("tls_cert", "tls_key", "usage_file")


def _beside(config_file: Path, server: Mapping[str, Any]) -> dict[str, Any]:
    """``server`` with its relative file paths made absolute against the config file's folder, where they were written
    beside it: a service's working directory (/ under systemd) is no place to look for them. The command line's
    paths, typed in a shell, stay relative to the working directory."""
    folder = config_file.absolute().parent
    return {
        name: str(folder / value) if name in _PATH_SETTINGS and isinstance(value, str) and value else value
        for name, value in server.items()
    }


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _webhook(table: Mapping[str, Any], where: str) -> Webhook:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: each webhook is a table like {{ url = 'http://…' }}")
    _check_keys(table, _WEBHOOK_FIELDS, where)
    if "url" not in table:
        raise ConfigError(f"{where}: url is required")
    event_types = table.get("event_types")
    if event_types is not None and (
        not isinstance(event_types, list) or not all(isinstance(name, str) for name in event_types)
    ):
        raise ConfigError(f"{where}: event_types must be a list like ['member_added'], got {event_types!r}")
    headers = table.get("headers", {})
    if not isinstance(headers, Mapping):
        raise ConfigError(
            f"{where}: headers must be a table like {{ 'X-Source' = 'relay' }}, got {_toml_kind(headers)}"
        )
    for name in ("channel_prefix", "channel_suffix"):
        if not isinstance(table.get(name, ""), str):
            raise ConfigError(f"{where}: {name} must be a string, got {_as_written(table[name])}")
    webhook: Webhook = _built(
        where,
        Webhook,
        url=table.get("url"),
        event_types=EVERY_EVENT_TYPE if event_types is None else frozenset(event_types),
        channel_prefix=table.get("channel_prefix", ""),
        channel_suffix=table.get("channel_suffix", ""),
        headers=dict(headers),
        format=table.get("format", "pusher"),
    )
    return webhook


def _built(where: str, kind: Any, *args: Any, **values: Any) -> Any:
    """``kind(*args, **values)``, its setting errors prefixed with where the values came from."""
    try:
        return kind(*args, **values)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _app(table: Mapping[str, Any], where: str) -> App:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: each app is a table")
    _check_keys(table, _APP_FIELDS | {"limits", "webhooks", "extra_keys"}, where)
    for required in ("app_id", "key", "secret"):
        if required not in table:
            raise ConfigError(f"{where}: {required} is required")
    limits_table = table.get("limits", {})
    if not isinstance(limits_table, Mapping):
        raise ConfigError(f"{where}: limits must be a table ([apps.limits]), got {_toml_kind(limits_table)}")
    _check_keys(limits_table, _LIMIT_FIELDS, f"{where}.limits")
    hooks = table.get("webhooks", [])
    if not isinstance(hooks, list):
        # Not shown: a table written [apps.webhooks] holds a URL and headers, which may carry credentials.
        hint = " (written [apps.webhooks]: write [[apps.webhooks]])" if isinstance(hooks, Mapping) else ""
        raise ConfigError(f"{where}: webhooks must be [[apps.webhooks]] tables, got {_toml_kind(hooks)}{hint}")
    webhooks = tuple(_webhook(hook, f"{where}.webhooks[{i}]") for i, hook in enumerate(hooks))
    pairs = table.get("extra_keys", [])
    if not isinstance(pairs, list):
        raise ConfigError(
            f"{where}: extra_keys must be an array like [{{ key = '…', secret = '…' }}] (or [[apps.extra_keys]] "
            f"tables), got {_toml_kind(pairs)}"
        )
    extra_keys = tuple(_key_pair(pair, f"{where}.extra_keys[{i}]") for i, pair in enumerate(pairs))
    values = {name: table[name] for name in _APP_FIELDS if name in table}
    origins = values.get("allowed_origins", ())
    if not isinstance(origins, list | tuple):
        raise ConfigError(f"{where}: allowed_origins must be a list of origins like 'https://app.example.com'")
    values["allowed_origins"] = tuple(origins)
    rules = values.get("ably_persist_last_message", ())
    if not isinstance(rules, list | tuple):
        raise ConfigError(
            f'{where}: ably_persist_last_message must be an array of channel names and namespaces, like ["orders"]'
        )
    values["ably_persist_last_message"] = tuple(rules)
    limits: Limits = _built(f"{where}.limits", _limits, limits_table)  # named as [apps.webhooks] errors are
    app: App = _built(where, App, **values, limits=limits, webhooks=webhooks, extra_keys=extra_keys)
    return app


def _as_written(value: object) -> str:
    """A value as the config file writes it (``true``, not Python's ``True``), for an error about it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return f"[{', '.join(map(_as_written, value))}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key} = {_as_written(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _toml_kind(value: object) -> str:
    """What a TOML value is, in TOML's words (its text may be a secret)."""
    kinds: dict[type | tuple[type, ...], str] = {
        Mapping: "a table",
        (list, tuple): "an array",
        str: "a string",
        bool: "a boolean",  # before int, of which bool is a subclass
        int: "an integer",
        float: "a float",
        (dt.date, dt.time): "a date or time",
    }
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), type(value).__name__)


def _key_pair(table: object, where: str) -> KeyPair:
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{where}: each extra key is a table like {{ key = '…', secret = '…' }}, got {_toml_kind(table)}"
        )
    _check_keys(table, {"key", "secret"}, where)
    for required in ("key", "secret"):
        if required not in table:
            raise ConfigError(f"{where}: {required} is required")
    pair: KeyPair = _built(where, KeyPair, table["key"], table["secret"])
    return pair


def load_config(path: Path, *, defaults: EmulatorConfig) -> EmulatorConfig:
    """Read a TOML file: optional ``[server]`` settings and one ``[[apps]]`` table per app."""
    document = read_toml(path, "config file")
    _check_keys(document, {"server", "apps"}, str(path))
    server = document.get("server", {})
    if not isinstance(server, Mapping):
        raise ConfigError(f"{path}: server must be a table ([server]), got {_toml_kind(server)}")
    for name, flag in _FLAG_ONLY_SETTINGS.items():
        if name in server:  # the docs name them as flags; the list of allowed keys below would not say where they go
            raise ConfigError(
                f"{path} [server]: {name} is a command-line flag only: give {flag} to relay emulator (in a systemd "
                "unit, on its ExecStart line)"
            )
    _check_keys(server, _SERVER_FIELDS, f"{path} [server]")
    server = _beside(path, server)
    if "apps" not in document:
        apps = defaults.apps
    else:
        tables = document["apps"]
        if not isinstance(tables, list):
            # Not shown: a table written [apps] holds a secret.
            hint = " (written [apps]: write [[apps]])" if isinstance(tables, Mapping) else ""
            raise ConfigError(f"{path}: apps must be [[apps]] tables, got {_toml_kind(tables)}{hint}")
        if not tables:
            # A generated file that found no apps: the default app, whose secret is public, would serve in its place.
            raise ConfigError(
                f"{path}: apps is empty: give at least one [[apps]] table, or leave apps out for the default app"
            )
        apps = tuple(_app(table, f"{path} apps[{i}]") for i, table in enumerate(tables))
    with_apps: EmulatorConfig = _built(str(path), replace, defaults, apps=apps)  # apps sharing an id or a key
    config: EmulatorConfig = _built(f"{path} [server]", replace, with_apps, **server)
    return config


# The default app's secret (`relay emulator` without --secret): printed in every doc and banner, so anyone has it.
PUBLIC_SECRET = "app-secret"


def public_secret_warning(config: EmulatorConfig, config_file: str | None = None) -> str | None:
    """What to warn of when an app keeps the public default secret on an address other machines reach, or None;
    with ``config_file`` (``--config``) on a loopback address too: a file is a deployment's, whose proxy in front
    (docs/deploy.md) passes the HTTP API on, and one without ``[[apps]]`` keeps the default app.

    A warning, not a refusal: the emulator run for local development in a container must listen on 0.0.0.0."""
    if is_loopback(config.host) and config_file is None:
        return None
    apps = [app.app_id for app in config.apps if app.secret == PUBLIC_SECRET]
    if not apps:
        return None
    named = f"app {apps[0]}" if len(apps) == 1 else f"apps {', '.join(apps)}"
    reached = (
        f"it is served with --config {config_file}, a deployment's (a proxy in front reaches this loopback port)"
        if is_loopback(config.host)
        else f"{config.host} is not a loopback address"
    )
    return (
        f"{named} keep{'s' if len(apps) == 1 else ''} the default secret (--secret's default, in every doc), and "
        f"{reached}: anyone who reaches this port can publish and sign subscriptions to private and presence "
        "channels; give your own secret (--secret, or [[apps]] in --config)"
    )

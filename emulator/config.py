"""Emulator configuration: apps (with their limits, switches and webhooks) from flags or a TOML file."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from relay.errors import ConfigError
from relay.protocol.channels import DEFAULT_LIMITS, Limits

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


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    event_types: frozenset[str] = WEBHOOK_EVENT_TYPES
    channel_prefix: str = ""
    channel_suffix: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)

    def wants(self, event_name: str, channel: str | None) -> bool:
        if event_name not in self.event_types:
            return False
        if channel is None:
            return True
        return channel.startswith(self.channel_prefix) and channel.endswith(self.channel_suffix)


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

    def __repr__(self) -> str:
        return f"App(app_id={self.app_id!r}, key={self.key!r}, secret='***')"

    @property
    def ably_api_key(self) -> str:
        """The Ably key clients use: ``ably_key``, or ``{app_id}.{key}:{secret}``."""
        return self.ably_key if self.ably_key is not None else f"{self.app_id}.{self.key}:{self.secret}"


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    apps: tuple[App, ...]
    host: str = "127.0.0.1"
    port: int = 6001
    path_prefix: str = ""
    max_request_bytes: int = 1_048_576
    max_frame_bytes: int = 262_144
    max_send_buffer: int = 4 * 1024 * 1024
    node_id: int | None = None
    # Operations: the token that opens /console, /metrics and /usage (required unless bound to a loopback host),
    # TLS for wss/https on the same port, and graceful shutdown (stop accepting and answer /ready with 503, wait
    # shutdown_delay seconds, close connections over shutdown_spread seconds, then wait up to shutdown_webhook_grace
    # seconds for webhooks to be delivered).
    console_token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    shutdown_delay: float = 0.0
    shutdown_spread: float = 2.0
    shutdown_webhook_grace: float = 5.0
    usage_file: str | None = None  # where the usage meter is written (merged into what is there) at shutdown
    redis_url: str | None = None
    redis_prefix: str = "relay"
    node_ttl: float = 10.0

    def app_by_id(self, app_id: str) -> App | None:
        return next((app for app in self.apps if app.app_id == app_id), None)

    def app_by_key(self, key: str) -> App | None:
        return next((app for app in self.apps if app.key == key), None)


def default_app(app_id: str = "app-id", key: str = "app-key", secret: str = "app-secret") -> App:
    return App(app_id=app_id, key=key, secret=secret)


_APP_FIELDS = {f.name for f in fields(App)} - {"limits", "webhooks"}
_LIMIT_FIELDS = {f.name for f in fields(Limits)}
_WEBHOOK_FIELDS = {"url", "event_types", "channel_prefix", "channel_suffix", "headers"}
_SERVER_FIELDS = {
    "host",
    "port",
    "path_prefix",
    "max_request_bytes",
    "max_frame_bytes",
    "max_send_buffer",
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
}


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _webhook(table: Mapping[str, Any], where: str) -> Webhook:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: each webhook is a table like {{ url = 'http://…' }}")
    _check_keys(table, _WEBHOOK_FIELDS, where)
    if not isinstance(table.get("url"), str):
        raise ConfigError(f"{where}: url is required")
    event_types = frozenset(table.get("event_types", WEBHOOK_EVENT_TYPES))
    unknown = sorted(event_types - WEBHOOK_EVENT_TYPES)
    if unknown:
        raise ConfigError(f"{where}: unknown event_types {unknown}; known: {sorted(WEBHOOK_EVENT_TYPES)}")
    return Webhook(
        url=table["url"],
        event_types=event_types,
        channel_prefix=str(table.get("channel_prefix", "")),
        channel_suffix=str(table.get("channel_suffix", "")),
        headers={str(k): str(v) for k, v in table.get("headers", {}).items()},
    )


def _app(table: Mapping[str, Any], where: str) -> App:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: each app is a table")
    _check_keys(table, _APP_FIELDS | {"limits", "webhooks"}, where)
    for required in ("app_id", "key", "secret"):
        if not isinstance(table.get(required), str) or not table[required]:
            raise ConfigError(f"{where}: {required} is required and must be a non-empty string")
    limits_table = table.get("limits", {})
    _check_keys(limits_table, _LIMIT_FIELDS, f"{where}.limits")
    webhooks = tuple(_webhook(hook, f"{where}.webhooks[{i}]") for i, hook in enumerate(table.get("webhooks", [])))
    values = {name: table[name] for name in _APP_FIELDS if name in table}
    origins = values.get("allowed_origins", ())
    if not isinstance(origins, list | tuple) or not all(isinstance(o, str) and o for o in origins):
        raise ConfigError(f"{where}: allowed_origins must be a list of origins like 'https://app.example.com'")
    values["allowed_origins"] = tuple(origins)
    try:
        app = App(**values, limits=replace(Limits(), **limits_table), webhooks=webhooks)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if isinstance(app.activity_timeout, bool) or not isinstance(app.activity_timeout, int) or app.activity_timeout <= 0:
        # clients read it from connection_established, where the protocol has whole seconds
        raise ConfigError(
            f"{where}: activity_timeout must be a positive whole number of seconds, got {app.activity_timeout!r}"
        )
    for name in ("pong_timeout", "cache_ttl"):
        value = getattr(app, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
    for name in ("max_message_bytes", "api_rate_limit"):
        value = getattr(app, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise ConfigError(f"{where}: {name} must be a positive number, got {value!r}")
    key_name, _, key_secret = app.ably_api_key.partition(":")
    if "." not in key_name or not key_secret:
        raise ConfigError(f"{where}: ably_key looks like 'APPID.KEYID:SECRET'")
    return app


def _check_server(server: Mapping[str, Any], where: str) -> None:
    for name in ("console_token", "tls_cert", "tls_key", "usage_file"):
        if name in server and (not isinstance(server[name], str) or not server[name]):
            raise ConfigError(f"{where}: {name} must be a non-empty string")
    if ("tls_cert" in server) != ("tls_key" in server):
        raise ConfigError(f"{where}: tls_cert and tls_key go together (a certificate chain and its private key)")
    for name in ("max_request_bytes", "max_frame_bytes", "max_send_buffer"):
        value = server.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{where}: {name} must be a positive number of bytes, got {value!r}")
    for name in ("shutdown_delay", "shutdown_spread", "shutdown_webhook_grace"):
        value = server.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: {name} must be a number of seconds ≥ 0, got {value!r}")


def load_config(path: Path, *, defaults: EmulatorConfig) -> EmulatorConfig:
    """Read a TOML file: optional ``[server]`` settings and one ``[[apps]]`` table per app."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _check_keys(document, {"server", "apps"}, str(path))
    server = document.get("server", {})
    _check_keys(server, _SERVER_FIELDS, f"{path} [server]")
    _check_server(server, f"{path} [server]")
    apps = tuple(_app(table, f"{path} apps[{i}]") for i, table in enumerate(document.get("apps", [])))
    if not apps:
        apps = defaults.apps
    identities = {
        "app_id": [app.app_id for app in apps],
        "key": [app.key for app in apps],
        "Ably key name": [app.ably_api_key.partition(":")[0] for app in apps],
    }
    for what, seen in identities.items():
        duplicated = {value for value in seen if seen.count(value) > 1}
        if duplicated:
            raise ConfigError(f"{path}: two apps share the {what} {sorted(duplicated)[0]!r}")
    return replace(defaults, apps=apps, **server)

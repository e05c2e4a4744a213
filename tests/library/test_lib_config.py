"""Provider configuration: every URL form, the environment, and bad configurations (issue 6, "Configuration").

A bad configuration raises :class:`ConfigError` whose message names the fix; no secret (API secret, Ably key secret,
encryption master key) ever appears in an error, a repr or a log record.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from urllib.parse import quote

import pytest

from relay import AsyncRelay, Relay
from relay.client import parse_configuration
from relay.config import ProviderConfig, from_env, parse_url
from relay.emulator.config import App, KeyPair
from relay.errors import ConfigError, NoProviderConfigured
from relay.gateway import GatewaySettings

SECRET = "s3cr3t-Sauce-42"
MASTER_KEY = bytes(range(32))
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()


def assert_no_secret(*texts: str, secrets: tuple[str, ...] = (SECRET, MASTER_KEY_B64)) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {text!r}"


# -- URL forms ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "tls", "base_url", "app_id"),
    [
        (
            f"pusher://app-key:{SECRET}@api-eu.pusher.com/apps/123",
            "pusher",
            "api-eu.pusher.com",
            None,
            True,
            "https://api-eu.pusher.com",
            "123",
        ),
        (
            f"pusher://app-key:{SECRET}@eu/apps/123",
            "pusher",
            "api-eu.pusher.com",
            None,
            True,
            "https://api-eu.pusher.com",
            "123",
        ),
        (
            f"pusher://app-key:{SECRET}@mt1/apps/7",
            "pusher",
            "api-mt1.pusher.com",
            None,
            True,
            "https://api-mt1.pusher.com",
            "7",
        ),
        (
            f"pusher://app-key:{SECRET}@localhost:6001/apps/1?tls=false",
            "pusher",
            "localhost",
            6001,
            False,
            "http://localhost:6001",
            "1",
        ),
        (
            f"emulator://app-key:{SECRET}@127.0.0.1:6001/apps/1",
            "emulator",
            "127.0.0.1",
            6001,
            False,
            "http://127.0.0.1:6001",
            "1",
        ),
        (
            f"emulator://app-key:{SECRET}@relay.example.com/apps/app-id?tls=true",
            "emulator",
            "relay.example.com",
            None,
            True,
            "https://relay.example.com",
            "app-id",
        ),
        (
            f"ably://appid.keyid:{SECRET}@rest.ably.io",
            "ably",
            "rest.ably.io",
            None,
            True,
            "https://rest.ably.io",
            "appid",
        ),
        (
            f"ably://appid.keyid:{SECRET}@main.realtime.ably.net:8443",
            "ably",
            "main.realtime.ably.net",
            8443,
            True,
            "https://main.realtime.ably.net:8443",
            "appid",
        ),
        (f"ably://appid.keyid:{SECRET}@", "ably", "rest.ably.io", None, True, "https://rest.ably.io", "appid"),
        (f"ably://appid.keyid:{SECRET}", "ably", "rest.ably.io", None, True, "https://rest.ably.io", "appid"),
        (
            f"ably://appid.keyid:{SECRET}@127.0.0.1:6001?client_events=true",
            "ably",
            "127.0.0.1",
            6001,
            True,
            "https://127.0.0.1:6001",
            "appid",
        ),
    ],
)
def test_url_forms(url: str, scheme: str, host: str, port: int | None, tls: bool, base_url: str, app_id: str) -> None:
    config = parse_url(url)
    assert (config.scheme, config.host, config.port, config.tls, config.base_url) == (scheme, host, port, tls, base_url)
    assert config.app_id == app_id
    assert config.secret == SECRET
    assert_no_secret(repr(config), str(config), config.url())
    assert "***" in repr(config)
    # The private URL is complete: parsing it again gives the same configuration.
    assert parse_url(config.url(privacy=False)) == config


@pytest.mark.parametrize("app_id", ["@1", "a:b", "a&b", "a+b", "[x]", "é"])
def test_app_id_round_trips_through_the_url(app_id: str) -> None:
    # An app id from PUSHER_APP_ID is written into the URL percent-encoded: "/apps/@1" would be read as credentials.
    config = from_env(
        {"PUSHER_APP_ID": app_id, "PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET, "PUSHER_HOST": "h.test"}
    )
    assert parse_url(config.url(privacy=False)) == config
    assert parse_url(config.url(privacy=False)).app_id == app_id


def test_pusher_and_ably_credentials() -> None:
    pusher = parse_url(f"pusher://app-key:{SECRET}@eu/apps/123")
    assert (pusher.key, pusher.secret) == ("app-key", SECRET)
    assert repr(pusher) == "ProviderConfig('pusher://app-key:***@api-eu.pusher.com/apps/123')"
    ably = parse_url(f"ably://appid.keyid:{SECRET}")
    assert (ably.key, ably.secret, ably.app_id) == ("appid.keyid", SECRET, "appid")
    assert repr(ably) == "ProviderConfig('ably://appid.keyid:***@rest.ably.io')"
    assert parse_url("ably://appid.keyid:sec%3Aret").secret == "sec:ret"


def test_percent_encoded_secret_round_trips() -> None:
    secret = "pa/ss+w=rd@x"
    config = parse_url("pusher://app-key:pa%2Fss%2Bw%3Drd%40x@eu/apps/1")
    assert config.secret == secret
    assert parse_url(config.url(privacy=False)).secret == secret
    assert secret not in repr(config) and "pa%2F" not in repr(config)


@pytest.mark.parametrize(("url", "name"), [("memory://x", "x"), ("memory://orders", "orders"), ("memory://", "")])
def test_memory_urls(url: str, name: str) -> None:
    config = parse_url(url)
    assert (config.scheme, config.host, config.key, config.secret) == ("memory", name, "", "")
    assert config.url() == url


def test_encryption_master_key_in_the_url() -> None:
    config = parse_url(f"emulator://app-key:{SECRET}@127.0.0.1:6001/apps/1?encryption_master_key={MASTER_KEY_B64}")
    assert config.encryption_master_key == MASTER_KEY
    assert_no_secret(repr(config), repr(Relay(config)))


@pytest.mark.parametrize("encode", [False, True])
def test_base64_master_key_with_plus_and_slash(encode: bool) -> None:
    """``openssl rand -base64 32`` output is pasted as is: a '+' in the query is not a space."""
    key = bytes([0xFB, 0xEF, 0xFF] * 10 + [0xFB, 0xEF])
    text = base64.b64encode(key).decode()
    assert "+" in text and "/" in text
    value = text.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D") if encode else text
    config = parse_url(f"pusher://app-key:{SECRET}@eu/apps/1?encryption_master_key={value}")
    assert config.encryption_master_key == key
    assert text not in repr(config)


@pytest.mark.parametrize("scheme_and_host", ["pusher://app-key:{}@eu", "emulator://app-key:{}@127.0.0.1:6001"])
def test_unknown_query_options_are_refused_by_name(scheme_and_host: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) timeout; the options are tls, encryption_master_key"):
        parse_url(f"{scheme_and_host.format(SECRET)}/apps/1?tls=true&timeout=3")


@pytest.mark.parametrize(
    ("query", "client_events", "written"),
    [
        ("", False, ""),
        ("?client_events=", False, ""),  # empty is unset, as for every option (a template's unset variable)
        ("?client_events=true", True, "?client_events=true"),
        ("?client_events=on", True, "?client_events=true"),
        ("?tls=false&client_events=0", False, "?tls=false"),
    ],
)
def test_ably_client_events_option(query: str, client_events: bool, written: str) -> None:
    """``ably://…?client_events=true`` lets channel tokens publish (adapters/ably.py ``capability_for``); it is off by
    default, like a Pusher app's client events, and the private URL keeps it."""
    config = parse_url(f"ably://appid.keyid:{SECRET}@ably.internal.test{query}")
    assert config.client_events is client_events
    assert config.url().endswith(f"@ably.internal.test{written}")
    assert parse_url(config.url(privacy=False)).client_events is client_events
    assert not hasattr(config, "options"), "no untyped options mapping: every option is a typed field"


@pytest.mark.parametrize(
    ("query", "history", "written"),
    [
        ("", False, ""),
        ("?history=true", True, "?history=true"),
        ("?client_events=true&history=1", True, "?client_events=true&history=true"),
        ("?tls=false&history=false", False, "?tls=false"),
        ("?history=true&occupancy=true", True, "?history=true&occupancy=true"),
    ],
)
def test_ably_history_option(query: str, history: bool, written: str) -> None:
    """``ably://…?history=true`` lets channel tokens read the channel's history (adapters/ably.py
    ``capability_for``); off by default, and the private URL keeps it."""
    config = parse_url(f"ably://appid.keyid:{SECRET}@ably.internal.test{query}")
    assert config.history is history
    assert config.url().endswith(f"@ably.internal.test{written}")
    assert parse_url(config.url(privacy=False)).history is history
    assert parse_url(config.url(privacy=False)).occupancy is ("occupancy" in query)


@pytest.mark.parametrize(
    ("url", "mode", "schemes"),
    [
        (f"pusher://app-key:{SECRET}@eu/apps/1", "single", ["pusher"]),
        (f"mirror:pusher://app-key:{SECRET}@eu/apps/1|ably://appid.keyid:{SECRET}", "mirror", ["pusher", "ably"]),
        (
            f"failover:emulator://k:{SECRET}@127.0.0.1:1/apps/1 | emulator://k:{SECRET}@127.0.0.1:2/apps/1",
            "failover",
            ["emulator", "emulator"],
        ),
    ],
)
def test_multi_provider_configuration(url: str, mode: str, schemes: list[str]) -> None:
    parsed_mode, configs = parse_configuration(url)
    assert parsed_mode.value == mode
    assert [config.scheme for config in configs] == schemes
    client = Relay(url)
    try:
        text = repr(client)
        assert_no_secret(text)
        assert text.startswith("Relay('" + ("" if mode == "single" else f"{mode}:"))
        assert text.count("***") == len(schemes)
    finally:
        client.close()


async def test_relay_reprs_hide_the_secret() -> None:
    url = f"pusher://app-key:{SECRET}@eu/apps/123?encryption_master_key={MASTER_KEY_B64}"
    sync_client = Relay.from_url(url)
    async_client = AsyncRelay.from_url(url)
    try:
        assert repr(sync_client) == "Relay('pusher://app-key:***@api-eu.pusher.com/apps/123')"
        assert repr(async_client) == "AsyncRelay('pusher://app-key:***@api-eu.pusher.com/apps/123')"
        assert_no_secret(repr(sync_client), str(sync_client), repr(async_client), repr(sync_client.adapter))
    finally:
        sync_client.close()
        await async_client.aclose()


def test_app_and_gateway_settings_reprs_hide_their_secrets() -> None:
    """docs/security.md's Secrets row: the emulator's App prints its secret as ***, and GatewaySettings prints its
    provider URL's as *** and leaves out its API token and JWT secret."""
    app = App(
        app_id="1",
        key="app-key",
        secret=SECRET,
        extra_keys=(KeyPair("app-key-2", f"extra-{SECRET}"),),
        ably_key=f"1.app-key:ably-{SECRET}",
    )
    assert repr(app) == "App(app_id='1', key='app-key', secret='***')"
    settings = GatewaySettings(
        relay_url=parse_configuration(f"pusher://app-key:{SECRET}@eu/apps/123"),
        api_token=f"token-{SECRET}",
        jwt_secret=f"jwt-secret-of-32-bytes-{SECRET}",
    )
    assert "ProviderConfig('pusher://app-key:***@api-eu.pusher.com/apps/123')" in repr(settings)
    assert_no_secret(repr(app), repr(settings))


# -- bad URLs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("", "scheme://"),
        (f"app-key:{SECRET}@127.0.0.1", "scheme://"),
        (f"redis://app-key:{SECRET}@localhost/apps/1", "use one of pusher, emulator, ably, memory"),
        ("pusher://api-eu.pusher.com/apps/1", "pusher://KEY:SECRET@host"),
        (f"pusher://:{SECRET}@api-eu.pusher.com/apps/1", "pusher://KEY:SECRET@host"),
        ("emulator://app-key@127.0.0.1:6001/apps/1", "emulator://KEY:SECRET@host"),
        ("ably://appid.keyid@rest.ably.io", "ably://KEYNAME:KEYSECRET@host"),
        (f"pusher://app-key:{SECRET}@api-eu.pusher.com", "must end with /apps/APP_ID"),
        (f"pusher://app-key:{SECRET}@api-eu.pusher.com/apps/1/events", "must end with /apps/APP_ID"),
        (f"emulator://app-key:{SECRET}@127.0.0.1:6001/app/1", "must end with /apps/APP_ID"),
        (f"emulator://app-key:{SECRET}@:6001/apps/1", "needs a host, for example emulator://KEY:SECRET@127.0.0.1"),
        (f"emulator://app-key:{SECRET}@127.0.0.1:port/apps/1", "invalid port"),
        (f"emulator://app-key:{SECRET}@127.0.0.1:99999/apps/1", "invalid port"),
        (f"emulator://app-key:{SECRET}@127.0.0.1:6001/apps/1?tls=maybe", "tls must be true or false"),
        (f"pusher://app-key:{SECRET}@eu/apps/1?encryption_master_key=not*base64", "openssl rand -base64 32"),
        (f"pusher://app-key:{SECRET}@eu/apps/1?encryption_master_key=c2hvcnQ=", "must decode to 32 bytes"),
        (f"ably://nodot:{SECRET}@rest.ably.io", "full key name APPID.KEYID"),
        (f"ably://appid.key%3Aid:{SECRET}@rest.ably.io", "full key name APPID.KEYID"),  # sent, the ':' ends the name
        (f"mirror:pusher://app-key:{SECRET}@eu/apps/1", "two or more provider URLs separated by '|'"),
        (f"failover:pusher://app-key:{SECRET}@eu/apps/1|", "two or more provider URLs"),
        (f"mirror:pusher://app-key:{SECRET}@eu/apps/1|redis://x:{SECRET}@y", "use one of"),
    ],
)
def test_bad_urls_name_the_fix(url: str, fix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as raised:
        Relay(url)
    assert fix in str(raised.value)
    assert raised.value.http_status is None
    assert_no_secret(str(raised.value), repr(raised.value), raised.value.message, caplog.text)


def test_a_non_string_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme://"):
        parse_url(42)  # type: ignore[arg-type]


# -- environment --------------------------------------------------------------------------------------------------


def pusher_env(**extra: str) -> dict[str, str]:
    return {"PUSHER_APP_ID": "123", "PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET, **extra}


def test_relay_url_wins_over_everything() -> None:
    env = pusher_env(RELAY_URL=f"emulator://other-key:{SECRET}@127.0.0.1:6001/apps/9", ABLY_API_KEY=f"a.b:{SECRET}")
    config = from_env(env)
    assert (config.scheme, config.key, config.app_id, config.port) == ("emulator", "other-key", "9", 6001)


def test_relay_url_may_name_several_providers() -> None:
    env = {"RELAY_URL": f"mirror:pusher://app-key:{SECRET}@eu/apps/1|ably://appid.keyid:{SECRET}"}
    client = Relay.from_env(env)
    try:
        assert (
            repr(client)
            == "Relay('mirror:pusher://app-key:***@api-eu.pusher.com/apps/1|ably://appid.keyid:***@rest.ably.io')"
        )
    finally:
        client.close()


@pytest.mark.parametrize(
    ("extra", "base_url"),
    [
        ({}, "https://api-mt1.pusher.com"),
        ({"PUSHER_CLUSTER": "eu"}, "https://api-eu.pusher.com"),
        ({"PUSHER_CLUSTER": "ap3", "PUSHER_SCHEME": "http"}, "http://api-ap3.pusher.com"),
        ({"PUSHER_HOST": "127.0.0.1", "PUSHER_PORT": "6001", "PUSHER_SCHEME": "http"}, "http://127.0.0.1:6001"),
        ({"PUSHER_HOST": "soketi.internal", "PUSHER_PORT": "443", "PUSHER_CLUSTER": "eu"}, "https://soketi.internal"),
        (
            {"PUSHER_HOST": "soketi.internal", "PUSHER_SCHEME": "HTTPS", "PUSHER_PORT": "8443"},
            "https://soketi.internal:8443",
        ),
        (  # docker-compose's unset variables: empty strings, taken as unset
            {"PUSHER_HOST": "", "PUSHER_PORT": "", "PUSHER_SCHEME": "", "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": ""},
            "https://api-mt1.pusher.com",
        ),
    ],
)
def test_pusher_environment(extra: Mapping[str, str], base_url: str) -> None:
    config = from_env(pusher_env(**extra))
    assert (config.scheme, config.key, config.secret, config.app_id) == ("pusher", "app-key", SECRET, "123")
    assert config.base_url == base_url
    assert config.encryption_master_key is None
    assert_no_secret(repr(config))


@pytest.mark.parametrize(
    ("url", "base_url"),
    [
        (f"https://app-key:{SECRET}@api-eu.pusher.com/apps/123", "https://api-eu.pusher.com"),
        (f"http://app-key:{SECRET}@api-eu.pusher.com/apps/123", "http://api-eu.pusher.com"),
        (f"https://app-key:{SECRET}@api.pusherapp.com/apps/123", "https://api.pusherapp.com"),
        (f"http://app-key:{SECRET}@127.0.0.1:6001/apps/123", "http://127.0.0.1:6001"),
        # A host name without a dot (a docker-compose service) is that host, as the SDKs read it: no cluster name
        (f"http://app-key:{SECRET}@soketi/apps/123", "http://soketi"),
        (f"https://app-key:{SECRET}@soketi/apps/123", "https://soketi"),
        (f"http://app-key:{SECRET}@soketi/apps/123?encryption_master_key={'A' * 43}=", "http://soketi"),
    ],
)
def test_pusher_url_as_the_pusher_sdks_read_it(url: str, base_url: str) -> None:
    """PUSHER_URL, which pusher-http-python's (and -ruby's) from_env read and Heroku's Pusher add-on sets, configures
    the same app; it comes after RELAY_URL and before the PUSHER_* variables."""
    config = from_env({"PUSHER_URL": url, "PUSHER_APP_ID": "9", "PUSHER_KEY": "other", "PUSHER_SECRET": SECRET})
    assert (config.scheme, config.key, config.secret, config.app_id) == ("pusher", "app-key", SECRET, "123")
    assert config.base_url == base_url
    assert from_env({"PUSHER_URL": url, "RELAY_URL": "memory://wins"}).scheme == "memory"
    assert_no_secret(repr(config))


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("ftp://app-key:s@host/apps/1", "PUSHER_URL looks like https://KEY:SECRET@api-CLUSTER.pusher.com/apps/APP_ID"),
        ("api-eu.pusher.com/apps/1", "PUSHER_URL looks like https://KEY:SECRET@api-CLUSTER.pusher.com/apps/APP_ID"),
        (f"https://app-key:{SECRET}@api-eu.pusher.com", "PUSHER_URL (https://KEY:SECRET@HOST/apps/APP_ID): "),
        ("https://app-key@api-eu.pusher.com/apps/1", "needs credentials"),
        # tls=false went after the fragment, into it: an http:// server was spoken to with TLS
        ("http://app-key:s@127.0.0.1:6001/apps/1#x", "pusher:// URL has a fragment (#…)"),
    ],
)
def test_a_bad_pusher_url_names_the_fix(url: str, fix: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env({"PUSHER_URL": url})
    assert fix in str(raised.value)
    assert_no_secret(str(raised.value))


def test_pusher_encryption_master_key_from_the_environment() -> None:
    config = from_env(pusher_env(PUSHER_ENCRYPTION_MASTER_KEY_BASE64=MASTER_KEY_B64))
    assert config.encryption_master_key == MASTER_KEY
    assert_no_secret(repr(config))


def test_ably_api_key_from_the_environment() -> None:
    config = from_env({"ABLY_API_KEY": f"appid.keyid:{SECRET}"})
    assert (config.scheme, config.key, config.secret, config.app_id) == ("ably", "appid.keyid", SECRET, "appid")
    assert config.base_url == "https://rest.ably.io"
    assert repr(config) == "ProviderConfig('ably://appid.keyid:***@rest.ably.io')"
    assert config.client_events is False  # only RELAY_URL=ably://…?client_events=true lets channel tokens publish


def test_pusher_variables_win_over_ably() -> None:
    assert from_env(pusher_env(ABLY_API_KEY=f"appid.keyid:{SECRET}")).scheme == "pusher"


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RELAY_URL", "PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "ABLY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABLY_API_KEY", f"appid.keyid:{SECRET}")
    client = Relay.from_env()
    try:
        assert repr(client) == "Relay('ably://appid.keyid:***@rest.ably.io')"
    finally:
        client.close()
    monkeypatch.setenv("RELAY_URL", "memory://env")
    assert from_env().scheme == "memory"


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({}, "set RELAY_URL (e.g. emulator://"),
        ({"RELAY_URL": ""}, "set RELAY_URL"),
        ({"PUSHER_KEY": "app-key", "PUSHER_SECRET": SECRET}, "set PUSHER_APP_ID too"),
        ({"PUSHER_APP_ID": "1", "PUSHER_SECRET": SECRET}, "set PUSHER_KEY too"),
        ({"PUSHER_APP_ID": "1", "PUSHER_KEY": "app-key"}, "set PUSHER_SECRET too"),
        ({"PUSHER_SECRET": SECRET}, "set PUSHER_APP_ID, PUSHER_KEY too"),
        (pusher_env(PUSHER_SCHEME="ftp"), "PUSHER_SCHEME must be http or https"),
        (pusher_env(PUSHER_PORT="eighty"), "PUSHER_PORT must be a number"),
        (pusher_env(PUSHER_ENCRYPTION_MASTER_KEY_BASE64="%%%"), "openssl rand -base64 32"),
        (pusher_env(PUSHER_ENCRYPTION_MASTER_KEY_BASE64="c2hvcnQ="), "must decode to 32 bytes"),
        ({"ABLY_API_KEY": SECRET}, "APPID.KEYID:SECRET"),
        ({"ABLY_API_KEY": f"nodot:{SECRET}"}, "APPID.KEYID:SECRET"),
        ({"ABLY_API_KEY": "appid.keyid:"}, "APPID.KEYID:SECRET"),
        ({"RELAY_URL": f"pusher://app-key:{SECRET}@eu"}, "/apps/APP_ID"),
    ],
)
def test_bad_environment_names_the_fix(env: dict[str, str], fix: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as raised:
        Relay.from_env(env)
    assert fix in str(raised.value)
    assert_no_secret(str(raised.value), repr(raised.value), caplog.text)


def test_provider_config_is_a_value() -> None:
    first = parse_url(f"pusher://app-key:{SECRET}@eu/apps/1")
    assert first == ProviderConfig("pusher", "app-key", SECRET, "1", "api-eu.pusher.com")
    with pytest.raises(AttributeError):
        first.secret = "other"  # type: ignore[misc]


def test_no_provider_configured_names_every_way_to_configure_one() -> None:
    with pytest.raises(NoProviderConfigured) as caught:
        from_env({"PUSHER_APP_ID": "", "RELAY_URL": ""})  # empty is unset, as docker-compose passes them
    message = caught.value.message
    assert message.startswith("no provider configured: set RELAY_URL")
    assert all(name in message for name in ("PUSHER_APP_ID", "PUSHER_KEY", "PUSHER_SECRET", "ABLY_API_KEY"))


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("RELAY_URI", "RELAY_URL"),
        ("relay_url", "RELAY_URL"),
        ("ABLY_KEY", "ABLY_API_KEY"),
        ("PUSHER_APPID", "PUSHER_APP_ID"),
    ],
)
def test_no_provider_configured_names_a_variable_that_looks_misspelt(name: str, meant: str) -> None:
    """A typo in the variable's name (or its case) was only "no provider configured": the value set was not named."""
    with pytest.raises(NoProviderConfigured) as caught:
        from_env({name: "emulator://app-key:s3cret-value@127.0.0.1:6001/apps/1", "HOME": "/root"})
    assert caught.value.message.endswith(f"ABLY_API_KEY ({name} is set: did you mean {meant}?)")
    assert "s3cret-value" not in caught.value.message


def test_no_provider_configured_names_no_variable_of_the_gateway_as_misspelt() -> None:
    gateway = {"RELAY_PUBLIC_URL": "https://x.example", "RELAY_API_TOKEN": "t", "RELAY_GATEWAY_URL": "http://g"}
    with pytest.raises(NoProviderConfigured) as caught:
        from_env(gateway)
    assert caught.value.message.endswith("or ABLY_API_KEY")


def test_pusher_settings_without_credentials_are_a_mistake_not_no_provider() -> None:
    """A tool that falls back when nothing is configured (NoProviderConfigured) must not do so for these."""
    with pytest.raises(ConfigError) as caught:
        from_env({"PUSHER_CLUSTER": "eu", "PUSHER_SCHEME": "http"})
    assert not isinstance(caught.value, NoProviderConfigured)
    assert caught.value.message == (
        "PUSHER_CLUSTER, PUSHER_SCHEME set: set PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET too"
    )


@pytest.mark.parametrize(
    "url",
    [
        "pusher://key:{secret}@eu/apps/1?encryption_master_key={key}",
        "emulator://key:{secret}@127.0.0.1:6001/apps/1?tls=true&encryption_master_key={key}",
        "memory://tests?encryption_master_key={key}",
    ],
)
def test_the_private_url_keeps_the_encryption_master_key(url: str) -> None:
    """``url(privacy=False)`` left the key out, so the configuration it gave back encrypted nothing; the private
    form keeps it, escaped (base64's ``+`` and ``/``), and the public form still shows none of it."""
    key = base64.b64encode(bytes(range(200, 232))).decode()
    assert "+" in key and "/" in key
    config = parse_url(url.format(secret=SECRET, key=quote(key, safe="")))
    assert config.encryption_master_key == base64.b64decode(key)
    assert parse_url(config.url(privacy=False)) == config
    assert parse_url(config.url(privacy=False)).encryption_master_key == config.encryption_master_key
    assert "encryption_master_key" not in config.url()

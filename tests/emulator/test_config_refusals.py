"""Malformed emulator configuration, in its file and on its command line: refused at once with a ConfigError naming
the field and the bad value, or exit code 2 with ``relay: configuration error: …`` and no traceback; never accepted to
crash or misbehave at runtime."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from relay.emulator.config import App, EmulatorConfig, load_config
from relay.errors import ConfigError
from tests.cli_support import NOT_UTF8, assert_refused, run_relay, write

APP = "[[apps]]\napp_id = '1'\nkey = 'k'\nsecret = 's'\n"
DEFAULTS = EmulatorConfig(apps=())


# -- the emulator's config file -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        # [server]: nothing checked the types or ranges of port, host, path_prefix, Redis and node_ttl
        ("[server]\nport = 'x'\n", ["port", "'x'"]),
        ("[server]\nport = 70000\n", ["port", "70000"]),  # was served on 70000 % 65536 = 4464
        ("[server]\nport = -1\n", ["port", "-1"]),
        ("[server]\nhost = 5\n", ["host", "5"]),
        ("[server]\npath_prefix = 5\n", ["path_prefix", "5"]),
        ("[server]\npath_prefix = 'api'\n", ["path_prefix", "'api'"]),  # routes never match without a leading /
        ("[server]\nredis_url = 5\n", ["redis_url"]),
        ("[server]\nredis_url = 'http://cache:6379'\n", ["redis_url"]),
        ("[server]\nnode_ttl = 'x'\n", ["node_ttl", "'x'"]),
        ("[server]\nnode_ttl = -1\n", ["node_ttl", "-1"]),
        ("[server]\nnode_ttl = nan\n", ["node_ttl", "nan"]),
        ("[server]\nshutdown_spread = inf\n", ["shutdown_spread", "inf"]),  # shutdown crashed: OverflowError
        ("[server]\nshutdown_delay = nan\n", ["shutdown_delay", "nan"]),
        ("server = [1]\n", ["server"]),  # TypeError
        # [[apps]]: booleans and counts were taken as they came ("false" is truthy: the app stayed enabled)
        (APP + "enabled = 'false'\n", ["enabled", "'false'"]),
        (APP + "client_events = 'false'\n", ["client_events", "'false'"]),
        (APP + "subscription_count = 'false'\n", ["subscription_count", "'false'"]),
        (APP + "max_connections = '10'\n", ["max_connections", "'10'"]),  # every connection crashed: TypeError
        (APP + "max_connections = -1\n", ["max_connections", "-1"]),  # every connection refused, "quota (-1)"
        (APP + "max_connections = 1.5\n", ["max_connections", "1.5"]),
        # a value shown as the file writes it: "got true", not Python's "got True"
        (APP + "max_connections = true\n", ["max_connections", "got true"]),
        (APP + "pong_timeout = [false, 2]\n", ["pong_timeout", "got [false, 2]"]),
        (
            APP + "[[apps.webhooks]]\nurl = 'http://127.0.0.1:9/h'\nchannel_prefix = false\n",
            ["channel_prefix", "got false"],
        ),
        (APP + "pong_timeout = nan\n", ["pong_timeout", "nan"]),
        (APP + "cache_ttl = nan\n", ["cache_ttl", "nan"]),
        (APP + "api_rate_limit = nan\n", ["api_rate_limit", "nan"]),
        (APP + "user_authentication_timeout = 'x'\n", ["user_authentication_timeout", "'x'"]),
        (APP + "user_authentication_timeout = -1\n", ["user_authentication_timeout", "-1"]),
        (APP + "webhook_batch_ms = 'x'\n", ["webhook_batch_ms", "'x'"]),
        (APP + "webhook_delay = -5\n", ["webhook_delay", "-5"]),
        (APP + "webhook_retry_for = 'x'\n", ["webhook_retry_for", "'x'"]),
        (APP + "webhook_max_pending = 0\n", ["webhook_max_pending", "0"]),  # every webhook silently dropped
        (APP + "webhook_max_pending = -1\n", ["webhook_max_pending", "-1"]),
        (APP + "ably_key = 5\n", ["ably_key"]),  # AttributeError
        (APP + "ably_history_seconds = -1\n", ["ably_history_seconds", "-1"]),
        (APP + 'ably_capability = \'{"*":"*"}\'\n', ["ably_capability", "lists of operations"]),
        (APP + "ably_capability = '[meta]*'\n", ["ably_capability", "not valid JSON"]),
        (APP + "ably_capability = 7\n", ["ably_capability", "7"]),
        # an operation Ably does not have: granted silently, then every publish was 40160
        (
            APP + 'ably_capability = \'{"*":["subscribe"],"orders:*":["subscribe","publsh"]}\'\n',
            ["apps[0]: ably_capability", "resource 'orders:*'", "unknown operation 'publsh'", "did you mean 'publish'"],
        ),
        (APP + "ably_history_seconds = '2m'\n", ["ably_history_seconds", "'2m'"]),
        (APP + "allowed_origins = ['https://a.example/path']\n", ["allowed_origins", "https://a.example/path"]),
        ("[[apps]]\napp_id = 'a/b'\nkey = 'k'\nsecret = 's'\n", ["app_id", "a/b"]),  # /apps/a/b/events: 404
        # [apps.limits]
        (APP + "limits = 5\n", ["limits"]),  # TypeError
        (APP + "[apps.limits]\nmax_channel_name = '200'\n", ["max_channel_name", "'200'"]),  # subscribe crashed
        (APP + "[apps.limits]\nmax_presence_members = -1\n", ["max_presence_members", "-1"]),
        (APP + "[apps.limits]\nmax_event_bytes = 1.5\n", ["max_event_bytes", "1.5"]),
        # named as the table it is in, as [[apps.webhooks]] errors are (it was "apps[0]: max_event_bytes …")
        (APP + "[apps.limits]\nmax_event_bytes = '10KB'\n", ["apps[0].limits: max_event_bytes", "got '10KB'"]),
        # [[apps.webhooks]]
        (APP + "[[apps.webhooks]]\nurl = ''\n", ["url"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://127.0.0.1:9/h'\nformat = 'xml'\n", ["format", "'xml'"]),
        (
            APP + "[[apps.webhooks]]\nurl = 'http://127.0.0.1:9/h'\nformat = 'ably'\nevent_types = ['cache_miss']\n",
            [
                "event_types",
                "cache_miss",
                "known: ['channel_occupied', 'channel_vacated', 'client_event', 'message', 'presence']",
            ],
        ),
        (APP + "[[apps.webhooks]]\nurl = 'not a url'\n", ["url", "not a url"]),
        (APP + "[[apps.webhooks]]\nurl = 'ftp://hooks.example'\n", ["url", "ftp://hooks.example"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://[hooks'\n", ["url", "http://[hooks"]),  # ValueError escaped
        (APP + "allowed_origins = ['https://[shop']\n", ["allowed_origins", "https://[shop"]),
        ("[server]\nredis_url = 'redis://[cache'\n", ["redis_url", "redis://[cache"]),
        # Accepted, then no browser could reach them: pusher-js sends /app/a%22b, and the origin matched no host
        ("[[apps]]\napp_id = '1'\nkey = 'a\"b'\nsecret = 's'\n", ["key", "a browser sends those percent-encoded"]),
        ("[[apps]]\napp_id = '1'\nkey = 'é'\nsecret = 's'\n", ["key", "outside ASCII"]),
        (APP + "allowed_origins = ['localhost:3000']\n", ["allowed_origins", "write 'http://localhost:3000'"]),
        # Accepted, and then no browser matched them: its Origin has no default port, and the host in punycode
        (
            APP + "allowed_origins = ['https://shop.example.com:443']\n",
            ["allowed_origins", "default port", "write 'https://shop.example.com'"],
        ),
        (APP + "allowed_origins = ['http://[::1]:80']\n", ["allowed_origins", "write 'http://[::1]'"]),
        (APP + "allowed_origins = ['https://bücher.de']\n", ["allowed_origins", "'https://bücher.de'", "punycode"]),
        (APP + "allowed_origins = ['*.bücher.de']\n", ["allowed_origins", "'*.bücher.de'", "punycode"]),
        ("[server]\npath_prefix = '/a?b'\n", ["path_prefix", "'/a?b'"]),
        ("[server]\npath_prefix = '/a b'\n", ["path_prefix", "'/a b'"]),
        # Accepted, and the banner's RELAY_URL then named /x (every publish 404) or was refused by the library
        ("[server]\npath_prefix = '//x'\n", ["path_prefix", "empty, '.' or '..' segment", "'//x'"]),
        ("[server]\npath_prefix = '/a//b/'\n", ["path_prefix", "'/a//b'"]),
        ("[server]\npath_prefix = '/a/./b'\n", ["path_prefix", "'/a/./b'"]),
        ("[server]\npath_prefix = '/a/..'\n", ["path_prefix", "'/a/..'"]),
        # urlsplit's port raised ValueError: a traceback, exit 1
        ("[server]\nredis_url = 'redis://127.0.0.1:abc/0'\n", ["redis_url", "not one from 1 to 65535", ":abc/0"]),
        ("[server]\nredis_url = 'redis://127.0.0.1:99999/0'\n", ["redis_url", "not one from 1 to 65535"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://x'\nevent_types = 'member_added'\n", ["event_types", "list"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://x'\nheaders = ['X-Source']\n", ["headers"]),  # AttributeError
        (APP + "[[apps.webhooks]]\nurl = 'http://x'\nheaders = { 'X-Source' = 'café' }\n", ["X-Source"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://x'\nheaders = { 'X-Source' = \"a\\nb\" }\n", ["X-Source"]),
        (APP + "[[apps.webhooks]]\nurl = 'http://x'\nheaders = { 'X Source' = 'v' }\n", ["X Source"]),
    ],
)
def test_emulator_config_file_refuses_nonsense_naming_field_and_value(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    """Each value is refused when the file is loaded, not accepted to crash (or silently misbehave) at runtime."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), defaults=DEFAULTS)
    for fragment in fragments:
        assert fragment in caught.value.message, caught.value.message


@pytest.mark.parametrize(
    ("key", "flag"),
    [("workers = 4", "--workers"), ("log_level = 'debug'", "--log-level"), ("log_json = true", "--log-json")],
)
def test_a_server_key_that_is_a_flag_only_says_which_flag(tmp_path: Path, key: str, flag: str) -> None:
    """It was only "unknown key(s) workers; allowed: …", a list without it, which left an operator who read
    --workers in the docs guessing whether the file has another name for it."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"[server]\n{key}\n"), defaults=DEFAULTS)
    name = key.split(" ")[0]
    assert f"{name} is a command-line flag only: give {flag} to relay emulator" in caught.value.message


async def test_a_redis_url_with_whitespace_around_it_says_so(tmp_path: Path) -> None:
    """It was "must be a redis://, rediss:// or unix:// URL, got 'redis://…/0 '", of a URL that is one but for the
    space (a value pasted with it), as webhook URLs already said."""
    url = "redis://:wsPW-9@127.0.0.1:6380/0 "
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"[server]\nredis_url = '{url}'\n"), defaults=DEFAULTS)
    assert "redis_url 'redis://***@127.0.0.1:6380/0 ' has whitespace around it: a URL has none" in caught.value.message
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    assert_refused(outcome, "--redis-url 'redis://***@127.0.0.1:6380/0 ' has whitespace around it: a URL has none")
    assert "wsPW-9" not in caught.value.message + outcome.stderr


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "directory"), (NOT_UTF8, "UTF-8")],  # IsADirectoryError and UnicodeDecodeError escaped
    ids=["directory", "not UTF-8"],
)
def test_an_unreadable_emulator_config_file_is_a_config_error(
    tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path if content is None else write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_config(path, defaults=DEFAULTS)
    assert str(path) in caught.value.message and fragment.lower() in caught.value.message.lower()


# -- `relay emulator` flags -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--port", "70000"], ["--port", "70000"]),  # listened on 4464
        (["--port", "-5"], ["--port", "-5"]),  # socket.gaierror traceback
        (["--app-id", ""], ["--app-id"]),  # the banner then printed a RELAY_URL that does not parse
        (["--key", ""], ["--key"]),
        (["--secret", ""], ["--secret"]),
        (["--webhook-url", "not a url"], ["--webhook-url", "not a url"]),
        (["--node-ttl", "-1"], ["--node-ttl"]),
        (["--shutdown-spread", "inf"], ["--shutdown-spread"]),  # SIGTERM then crashed: no usage file, no webhooks
        (["--shutdown-delay", "nan"], ["--shutdown-delay"]),
        (["--host", "not a host"], ["not a host"]),  # socket.gaierror traceback
        (["--redis-url", "http://cache:6379"], ["--redis-url"]),  # redis ValueError traceback
        (["--redis-url", ""], ["--redis-url"]),
    ],
)
async def test_emulator_flags_refuse_nonsense_with_exit_2(flags: list[str], fragments: list[str]) -> None:
    port = [] if "--port" in flags else ["--port", "0"]
    assert_refused(await run_relay("emulator", *flags, *port), *fragments)


async def test_a_tls_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    """An existing file that is not PEM escaped as ssl.SSLError "[SSL] PEM lib" with a traceback."""
    not_pem = write(tmp_path, "not a certificate\n", "cert.pem")
    assert_refused(
        await run_relay("emulator", "--port", "0", "--tls-cert", str(not_pem), "--tls-key", str(not_pem)),
        str(not_pem),
    )


@pytest.mark.parametrize("content", [None, NOT_UTF8], ids=["directory", "not UTF-8"])
async def test_emulator_config_that_cannot_be_read_exits_2(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path if content is None else write(tmp_path, content)
    assert_refused(await run_relay("emulator", "--port", "0", "--config", str(path)), str(path))


async def test_a_port_already_in_use_is_one_clear_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        outcome = await run_relay("emulator", "--port", str(port))
    assert_refused(outcome, f"cannot listen on 127.0.0.1:{port}: Address already in use")


async def test_an_empty_apps_list_is_refused_not_replaced_by_the_default_app(tmp_path: Path) -> None:
    """``apps = []`` (a generated file that found no apps) served the default app, whose secret ``app-secret`` is in
    every doc, with no word that it was a stand-in; a file that leaves ``apps`` out still means the default app."""
    outcome = await run_relay("emulator", "--port", "0", "--config", str(write(tmp_path, "apps = []\n")))
    assert_refused(outcome, "apps is empty: give at least one [[apps]] table, or leave apps out for the default app")
    default = EmulatorConfig(apps=(App(app_id="1", key="app-key", secret="app-secret"),))
    assert load_config(write(tmp_path, "[server]\nport = 7001\n"), defaults=default).apps == default.apps

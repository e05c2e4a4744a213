"""The ``relay`` command, run as a user runs it: a real process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pusher
import pytest
from websockets.asyncio.client import connect

from relay import AsyncRelay, __version__
from relay.cli import _client_settings, _run, main
from relay.config import parse_url
from relay.emulator.config import App, EmulatorConfig, public_secret_warning
from relay.errors import RelayError
from tests.cli_support import assert_refused, not_installed, run_relay, write
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.conftest import free_port
from tests.emulator_process import EmulatorProcess

EMULATOR_DOC = " ".join((Path(__file__).parents[1] / "docs" / "emulator.md").read_text().split())

RELAY = [sys.executable, "-m", "relay.cli"]


def test_version(capsys: object) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert f"relay {__version__}" in capsys.readouterr().out  # type: ignore[attr-defined]


async def test_emulator_prints_client_settings_serves_and_stops_on_sigterm() -> None:
    emulator = await EmulatorProcess.start("--app-id", "7")
    port = emulator.port
    [console] = re.findall(r"Console: +(\S+)", emulator.banner)
    assert console == f"http://127.0.0.1:{port}/console"
    async with httpx.AsyncClient() as http:
        assert (await http.get(console)).status_code == 200
    assert f'new Pusher("app-key", {{ wsHost: "127.0.0.1", wsPort: {port}' in emulator.banner
    assert f"emulator://app-key:app-secret@127.0.0.1:{port}/apps/7" in emulator.banner
    async with connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7") as ws:
        established = json.loads(await ws.recv())
        assert established["event"] == "pusher:connection_established"
        assert await emulator.stop(grace=10) == 0


async def test_a_bad_config_file_exits_2_naming_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[[apps]]\napp_id = '1'\n")
    process = await asyncio.create_subprocess_exec(
        *RELAY, "emulator", "--config", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert "apps[0]: key is required" in stderr.decode()


@pytest.mark.parametrize(
    ("flags", "listening"), [(["--host", "127.0.0.1"], "http://127.0.0.1:"), ([], "http://[::1]:")]
)
async def test_a_given_host_wins_over_the_config_file_even_the_default_one(
    tmp_path: Path, flags: list[str], listening: str
) -> None:
    """docs/configuration.md: "--host (when given) wins over the file", 127.0.0.1 included (it used to be taken for
    the flag's default and lose); without it the file's host is used."""
    config = tmp_path / "relay.toml"
    config.write_text('[server]\nhost = "::1"\nport = 0\n\n[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n')
    process = await EmulatorProcess.start("--config", str(config), *flags)
    try:
        assert f"listening on {listening}{process.port} " in process.banner
    finally:
        await process.stop()


PUBLIC_SECRET_WARNING = (
    "keeps the default secret (--secret's default, in every doc), and 0.0.0.0 is not a loopback address: anyone who "
    "reaches this port can publish and sign subscriptions to private and presence channels; give your own secret "
    "(--secret, or [[apps]] in --config)"
)


@pytest.mark.parametrize(
    ("flags", "warned"),
    [
        (["--host", "0.0.0.0"], True),
        (["--host", "0.0.0.0", "--log-json"], True),
        (["--host", "0.0.0.0", "--secret", "ours-9f2c"], False),
        (["--host", "127.0.0.1"], False),
        (["--host", "localhost"], False),
    ],
)
async def test_the_public_default_secret_on_an_address_others_reach_is_warned_of_and_served(
    flags: list[str], warned: bool
) -> None:
    """The default app's secret is in every doc: served beyond the loopback, anyone can publish and sign with it. The
    emulator says so (a warning, not a refusal: a container for local development listens on 0.0.0.0)."""
    outcome = await run_relay("emulator", "--port", "0", *flags)
    assert outcome.returncode is None, outcome.stderr  # it served
    assert (f"app app-id {PUBLIC_SECRET_WARNING}" in outcome.stderr) is warned, outcome.stderr


@pytest.mark.parametrize(
    ("contents", "warned"),
    [
        ("", True),
        ("[server]\nmax_connections_per_address = 100\n", True),
        ('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "ours-9f2c"\n', False),
    ],
    ids=["empty", "server-only", "own-apps"],
)
async def test_a_config_file_keeping_the_public_secret_is_warned_of_on_loopback_too(
    tmp_path: Path, contents: str, warned: bool
) -> None:
    """docs/deploy.md runs the emulator on 127.0.0.1 behind nginx with --config: a file without [[apps]] kept the
    default app, whose secret every doc prints, and the warning stayed silent on a loopback address."""
    config = tmp_path / "emulator.toml"
    config.write_text(contents)
    outcome = await run_relay("emulator", "--port", "0", "--host", "127.0.0.1", "--config", str(config))
    assert outcome.returncode is None, outcome.stderr  # it served
    warning = (
        f"app app-id keeps the default secret (--secret's default, in every doc), and it is served with --config "
        f"{config}, a deployment's (a proxy in front reaches this loopback port): anyone who reaches this port can "
        "publish and sign subscriptions to private and presence channels; give your own secret (--secret, or "
        "[[apps]] in --config)"
    )
    assert (warning in outcome.stderr) is warned, outcome.stderr
    assert ("default secret" in outcome.stderr) is warned


def test_every_app_keeping_the_public_secret_is_named() -> None:
    apps = (App("1", "k1", "app-secret"), App("2", "k2", "theirs-77"), App("3", "k3", "app-secret"))
    warning = public_secret_warning(EmulatorConfig(apps=apps, host="0.0.0.0"))
    assert warning == f"apps 1, 3 {PUBLIC_SECRET_WARNING.replace('keeps', 'keep', 1)}"
    assert public_secret_warning(EmulatorConfig(apps=apps, host="127.0.0.2")) is None


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_a_given_port_wins_over_the_config_file(tmp_path: Path, taken_port: int) -> None:
    """The documented example config sets port = 6001, and `--config emulator.toml --port 7001` still tried 6001.
    The file's port is one already in use: listening proves which one was used."""
    config = write(tmp_path, f"[server]\nport = {taken_port}\n")
    assert_refused(await run_relay("emulator", "--config", str(config)), f"cannot listen on 127.0.0.1:{taken_port}")
    process = await EmulatorProcess.start("--config", str(config))  # with --port 0
    try:
        assert process.port not in (0, taken_port)
    finally:
        await process.stop()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (
            ["--app-id", "9", "--key", "kk", "--webhook-url", "http://127.0.0.1:9/hook"],
            "--app-id, --key, --webhook-url",
        ),
        (["--secret", "app-secret"], "--secret"),  # typed out, even with the default value
    ],
    ids=["several", "the default value"],
)
async def test_default_app_flags_with_a_config_files_apps_are_refused(
    tmp_path: Path, flags: list[str], named: str
) -> None:
    """The file's [[apps]] replace the default app: its flags were dropped without a word (webhooks lost)."""
    config = write(tmp_path, '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n')
    outcome = await run_relay("emulator", "--port", "0", "--config", str(config), *flags)
    assert_refused(
        outcome, f"{named} set the default app, which the [[apps]] of {config} replace", "set them in the file"
    )


async def test_default_app_flags_apply_with_a_config_file_without_apps(tmp_path: Path) -> None:
    config = write(tmp_path, "[server]\nport = 0\n")
    process = await EmulatorProcess.start("--config", str(config), "--app-id", "9", "--key", "kk")
    try:
        assert f"emulator://kk:app-secret@127.0.0.1:{process.port}/apps/9" in process.banner
    finally:
        await process.stop()


async def test_the_banner_s_settings_reach_an_emulator_behind_a_path_prefix(tmp_path: Path) -> None:
    """With ``path_prefix``, the banner's WebSocket path, pusher-js's ``wsPath`` and ``RELAY_URL`` carry the prefix
    (they were printed without it, and every one was refused); the Pusher server SDKs, which cannot add one, are
    told so; a disabled app is marked. The printed RELAY_URL publishes to a subscriber on the printed path."""
    config = write(
        tmp_path,
        '[server]\npath_prefix = "/pusher"\n'
        '[[apps]]\napp_id = "1"\nkey = "k1"\nsecret = "s1"\n'
        '[[apps]]\napp_id = "2"\nkey = "k2"\nsecret = "s2"\nenabled = false\n',
    )
    process = await EmulatorProcess.start("--config", str(config))
    port = process.port
    try:
        banner = process.banner
        assert f"(WebSocket ws://127.0.0.1:{port}/pusher/app/{{key}})" in banner
        assert f'new Pusher("k1", {{ wsHost: "127.0.0.1", wsPort: {port}, wsPath: "/pusher", ' in banner
        assert "ssl=false (not with path_prefix /pusher: they send /apps/… without it; use RELAY_URL)" in banner
        assert "app 1:\n" in banner and "app 2 (disabled: connections get 4003, the API 403):\n" in banner
        [relay_url] = re.findall(r"RELAY_URL: +(emulator://k1\S*)", banner)
        assert relay_url == f"emulator://k1:s1@127.0.0.1:{port}/pusher/apps/1"
        async with connect(f"ws://127.0.0.1:{port}/pusher/app/k1?protocol=7") as ws:
            assert json.loads(await ws.recv())["event"] == "pusher:connection_established"
            await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "orders"}}))
            assert json.loads(await ws.recv())["event"] == "pusher_internal:subscription_succeeded"
            async with AsyncRelay.from_url(relay_url) as relay:
                await relay.publish("orders", "order-ready", {"id": 7})
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert (frame["event"], json.loads(frame["data"])) == ("order-ready", {"id": 7})
        async with AsyncRelay.from_url(relay_url.replace("k1:s1", "k2:s2").replace("/apps/1", "/apps/2")) as disabled:
            with pytest.raises(RelayError) as refused:
                await disabled.publish("orders", "e", {})
            assert refused.value.http_status == 403
    finally:
        await process.stop()


@pytest.mark.long
async def test_the_console_token_is_the_flag_then_the_file_then_the_environment(tmp_path: Path) -> None:
    """RELAY_CONSOLE_TOKEN was --console-token's default, so it beat the file's console_token: the token written for
    this server was refused (401) and the environment's, perhaps meant for another, opened /metrics."""
    config = write(tmp_path, '[server]\nport = 0\nconsole_token = "file-token"\n')
    for flags, opens in (([], "file-token"), (["--console-token", "flag-token"], "flag-token")):
        process = await EmulatorProcess.start("--config", str(config), *flags, env={"RELAY_CONSOLE_TOKEN": "env-token"})
        try:
            assert f"Console:     http://127.0.0.1:{process.port}/console?token={opens}\n" in process.banner
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}") as http:
                statuses = {
                    token: (await http.get("/metrics", params={"token": token})).status_code
                    for token in ("file-token", "flag-token", "env-token")
                }
        finally:
            await process.stop()
        assert statuses == {token: 200 if token == opens else 401 for token in statuses}, flags
    without_file_token = write(tmp_path, "[server]\nport = 0\n")
    # The environment's value without the whitespace around it (a .env line ending in a space locked the operator out)
    spaced = {"RELAY_CONSOLE_TOKEN": "env-token "}
    process = await EmulatorProcess.start("--config", str(without_file_token), env=spaced)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}") as http:
            assert (await http.get("/metrics", params={"token": "env-token"})).status_code == 200
    finally:
        await process.stop()
    # ... and one of whitespace only is no token: off the loopback the console stays off, not open to "   "
    process = await EmulatorProcess.start(
        "--config", str(without_file_token), "--host", "0.0.0.0", env={"RELAY_CONSOLE_TOKEN": "   "}
    )
    try:
        assert "Console:     off (not bound to a loopback address" in process.banner
    finally:
        await process.stop()


def test_emulator_help_says_given_flags_win_over_the_config_file_and_webhook_url_repeats() -> None:
    help_text = " ".join(
        subprocess.run([*RELAY, "emulator", "--help"], capture_output=True, text=True, check=True).stdout.split()
    )
    assert "A flag that is given wins over the file's [server] setting of the same name." in help_text
    assert "send the default app's webhooks here; repeat for several" in help_text


def test_serve_help_names_every_variable_the_provider_is_read_from() -> None:
    """It named RELAY_URL alone, though the gateway reads the provider as relay publish does."""
    help_text = " ".join(subprocess.run([*RELAY, "serve", "--help"], capture_output=True, text=True).stdout.split())
    for variable in ("RELAY_URL", "PUSHER_URL", "PUSHER_APP_ID", "PUSHER_CLUSTER", "ABLY_API_KEY"):
        assert variable in help_text


@pytest.mark.parametrize(
    ("flags", "config", "named"),
    [
        ([], "", "--redis-url"),
        (["--workers", "2"], "", "--redis-url"),
        ([], "[server]\nredis_url = 'redis://127.0.0.1:6379/0'\n", "redis_url in {config}"),
    ],
    ids=["one process", "workers", "config file"],
)
async def test_redis_without_the_redis_extra_is_a_configuration_error(
    tmp_path: Path, flags: list[str], config: str, named: str
) -> None:
    """It was ModuleNotFoundError, then "RuntimeError: cannot reuse already awaited coroutine", exit 1."""
    if config:
        path = write(tmp_path, config)
        flags = [*flags, "--config", str(path)]
        named = named.format(config=path)
    else:
        flags = [*flags, "--redis-url", "redis://127.0.0.1:6379/0"]
    outcome = await run_relay("emulator", "--port", "0", *flags, env=not_installed(tmp_path, "redis"))
    checkout = "(in a checkout: pip install -e '.[redis]')"
    assert_refused(outcome, f"{named} needs the redis package: pip install 'relay-realtime[redis]' {checkout}")


def test_an_import_error_inside_the_server_is_not_taken_for_a_missing_uvloop() -> None:
    """_run fell back to asyncio.run on any ImportError, running the coroutine a second time: the server's own
    error was replaced by "RuntimeError: cannot reuse already awaited coroutine"."""

    async def server() -> None:
        raise ImportError("the server's own")

    with pytest.raises(ImportError, match="the server's own"):
        _run(server())


async def test_cost_plot_without_matplotlib_prints_nothing_but_the_error(tmp_path: Path) -> None:
    """It printed the whole table, and only then refused."""
    plot = tmp_path / "cost.png"
    outcome = await run_relay(
        "cost", "--connections", "500", "--publishes-per-day", "20000", "--plot", str(plot),
        env=not_installed(tmp_path, "matplotlib"),
    )  # fmt: skip
    assert_refused(
        outcome, "--plot needs matplotlib, the optional extra plot: .venv/bin/pip install -e '.[plot]' in the checkout"
    )
    assert outcome.stdout == ""
    assert not plot.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port must be a whole number, 0–65535, got 70000"),  # listened on 70000 % 65536
        (["--port", "-5"], "--port must be a whole number, 0–65535, got -5"),  # uvicorn's error, exit 3
        (["--port", "0", "--host", "not a host"], "cannot listen on not a host:0: "),  # uvicorn's error, exit 3
    ],
)
async def test_relay_serve_refuses_a_port_or_host_it_cannot_listen_on(flags: list[str], message: str) -> None:
    assert_refused(await run_relay("serve", *flags, env={"RELAY_URL": "memory://audit"}), message)


@pytest.mark.parametrize(("command", "holder"), [("serve", "relay serve"), ("emulator", "an emulator")])
async def test_a_port_in_use_says_what_may_hold_it_and_how_to_pick_another(
    taken_port: int, command: str, holder: str, redis_server: RedisServer
) -> None:
    """A new user's first port clash (a second emulator started in another terminal) says what to do, as the
    order-tracking example does, not only the errno's text; so does the --workers supervisor's."""
    hint = (
        f"another server is listening there ({holder} already running?): stop it, or pick another port with --port "
        "(0 picks a free one)"
    )
    outcome = await run_relay(command, "--port", str(taken_port), env={"RELAY_URL": "memory://audit"})
    assert_refused(outcome, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use; {hint}")
    if command == "emulator":
        workers = await run_relay(command, "--port", str(taken_port), "--workers", "2", "--redis-url", redis_server.url)
        assert_refused(workers, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use; {hint}")


async def test_relay_serve_logs_the_gateway_s_warnings_with_their_level_and_logger() -> None:
    """The warning for a webhook forward without RELAY_API_TOKEN is a log line in uvicorn's format, with its level
    and logger (it was a bare line from Python's last-resort handler, which a log pipeline filtering on level
    dropped)."""
    port = free_port()
    env = {"RELAY_URL": "memory://audit", "RELAY_WEBHOOK_FORWARD_URL": "http://127.0.0.1:9/hook"}
    served = await run_relay("serve", "--port", str(port), env=env)
    assert served.returncode is None, served.stderr
    [warning] = [line for line in served.stderr.splitlines() if "RELAY_WEBHOOK_FORWARD_URL" in line]
    assert warning.startswith("WARNING:  relay.gateway: RELAY_WEBHOOK_FORWARD_URL is set but RELAY_API_TOKEN is not")
    assert "INFO:     Uvicorn running on" in served.stderr


@pytest.mark.parametrize("configured", [False, True], ids=["bare", "configured"])
async def test_relay_serve_says_at_start_where_it_publishes_and_what_is_on(configured: bool, tmp_path: Path) -> None:
    """A gateway started without RELAY_API_TOKEN or JWT settings said nothing of it until the first request was
    refused; it now logs the provider (secret hidden), the server API, how users are identified, where their JWTs
    are read (RELAY_JWT_COOKIE), the rules file and the CORS origins (none of which it logged: a page refused by its
    browser for a forgotten RELAY_CORS_ORIGINS showed nothing in the log at start)."""
    port = free_port()
    env = {"RELAY_URL": "emulator://app-key:top-secret-1@127.0.0.1:6001/apps/1"}
    rules = write(tmp_path, '[[channels]]\npattern = "private-user-{sub}"\n', "rules.toml")
    if configured:
        env |= {
            "RELAY_API_TOKEN": "token-of-the-backend",
            "RELAY_JWT_SECRET": "s" * 32,
            "RELAY_PUBLIC_URL": "https://rt.example.com/relay/",
            "RELAY_JWT_COOKIE": "session",
            "RELAY_RULES_FILE": str(rules),
            "RELAY_CORS_ORIGINS": "http://LocalHost:3000,https://app.example.com",
        }
    served = await run_relay("serve", "--port", str(port), env=env)
    assert served.returncode is None, served.stderr
    logged = [line for line in served.stderr.splitlines() if line.startswith("INFO:     relay.gateway: ")]
    assert logged[0] == "INFO:     relay.gateway: provider: emulator://app-key:***@127.0.0.1:6001/apps/1"
    if configured:
        assert "server API (/v1/publish, /v1/channels, /v1/users): on" in logged[1]
        assert [line.removeprefix("INFO:     relay.gateway: ") for line in logged[2:]] == [
            "users: JWTs verified with RELAY_JWT_SECRET (HS256)",
            "JWTs read from: Authorization: Bearer, or the 'session' cookie (RELAY_JWT_COOKIE)",
            f"channel rules: 1, from {rules} (RELAY_RULES_FILE)",
            "CORS: pages of http://localhost:3000, https://app.example.com may call the gateway (RELAY_CORS_ORIGINS)",
            "pages are given whole URLs under RELAY_PUBLIC_URL: https://rt.example.com/relay",
        ]
    else:  # as docs/gateway.md shows it
        guide = (Path(__file__).parent.parent / "docs" / "gateway.md").read_text()
        shown = guide.split("rather than at the first refused request:\n\n```\n", 1)[1].split("```", 1)[0]
        assert logged == shown.splitlines()
        assert logged[1].endswith("off: set RELAY_API_TOKEN to publish through the gateway")
        assert logged[-1].endswith(
            "CORS: no origin allowed (no RELAY_CORS_ORIGINS): browsers refuse a page on another "
            "origin than the gateway's; only same-origin pages (behind a proxy) can call it"
        )
    for secret in ("top-secret-1", "token-of-the-backend", "s" * 32):
        assert secret not in served.stderr


async def test_relay_serve_with_a_mirror_starts_and_logs_both_providers() -> None:
    """The start-up summary parsed RELAY_URL as one provider URL: a mirror: or failover: gateway stopped at start
    with "unknown provider scheme 'mirror'"."""
    port = free_port()
    mirror = "mirror:memory://a|emulator://app-key:top-secret-1@127.0.0.1:6001/apps/1"
    served = await run_relay("serve", "--port", str(port), env={"RELAY_URL": mirror})
    assert served.returncode is None, served.stderr
    provider = "provider: mirror:memory://a|emulator://app-key:***@127.0.0.1:6001/apps/1"
    assert f"INFO:     relay.gateway: {provider}" in served.stderr.splitlines()
    assert "top-secret-1" not in served.stderr


def test_the_banner_says_the_console_is_off_where_it_is_and_hides_the_token_in_logged_output() -> None:
    """Off loopback and without a token the console answers 404 (docs/emulator.md): the banner says so rather than
    print an address that does not open; with --log-json (show_secrets off) the token is ***."""
    app = App(app_id="1", key="k", secret="s")
    public = _client_settings(EmulatorConfig(apps=(app,), host="0.0.0.0"), 6001)
    assert "Console:     off (not bound to a loopback address: start with --console-token to open it)\n" in public
    tokened = EmulatorConfig(apps=(app,), console_token="t&k n")
    assert "Console:     http://127.0.0.1:6001/console?token=t%26k%20n\n" in _client_settings(tokened, 6001)
    hidden = _client_settings(tokened, 6001, show_secrets=False)
    assert "Console:     http://127.0.0.1:6001/console?token=***\n" in hidden


def test_the_banner_s_settings_are_literals_whatever_the_app_id_holds() -> None:
    """An app id may hold a quote or a backslash (only / ? # % and whitespace are refused): written between quotes
    as it was, the printed settings were neither JavaScript nor Python. Each string is a JSON string: both read it."""
    app = App(app_id='we"ird\\id', key="k2", secret="s")
    banner = _client_settings(EmulatorConfig(apps=(app,)), 6001)
    [server_sdks] = [line for line in banner.splitlines() if "server SDKs:" in line]
    assert server_sdks.startswith('  server SDKs: app_id="we\\"ird\\\\id" key="k2" secret="s" host="127.0.0.1"')
    [ably_js] = [line for line in banner.splitlines() if "new Ably.Realtime(" in line]
    options = ably_js.split("new Ably.Realtime(", 1)[1].rsplit(")", 1)[0]
    key = options.split("key: ", 1)[1].split(", endpoint", 1)[0]
    assert json.loads(key) == app.ably_api_key


@pytest.mark.parametrize("app_id", ["shop", "１２"])
def test_the_banner_says_pusher_http_python_refuses_an_app_id_that_is_not_numeric(app_id: str) -> None:
    """pusher-http-python's Pusher(app_id="shop") raises ValueError("Invalid app id") (its check: ASCII digits only),
    so the banner's server SDK settings, pasted, failed with no hint; the banner now says where they do not work."""
    with pytest.raises(ValueError, match="Invalid app id"):
        pusher.Pusher(app_id=app_id, key="k", secret="s")
    banner = _client_settings(EmulatorConfig(apps=(App(app_id=app_id, key="k", secret="s"),)), 6001)
    # What works: a numeric id (docs/emulator.md says the same), or the Relay library's RELAY_URL with this one.
    note = (
        'ssl=false (pusher-http-python takes only a numeric app_id: give the app one, as --app-id 1 or app_id = "1" '
        "in the config; the Relay library's RELAY_URL takes any)\n"
    )
    assert note in banner
    assert "pusher-http-python accepts only numeric app ids" in EMULATOR_DOC and "`--app-id 1`" in EMULATOR_DOC
    assert '`app_id = "1"` in the config file' in EMULATOR_DOC and "`RELAY_URL`, takes any id" in EMULATOR_DOC
    [relay_url] = [line.split("RELAY_URL:")[1].strip() for line in banner.splitlines() if "RELAY_URL:   emu" in line]
    assert parse_url(relay_url).app_id == app_id
    numeric = _client_settings(EmulatorConfig(apps=(App(app_id="12", key="k", secret="s"),)), 6001)
    pusher.Pusher(app_id="12", key="k", secret="s")
    assert "pusher-http-python" not in numeric and 'app_id="12" key="k"' in numeric


@pytest.mark.parametrize(("host", "own"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")])
def test_bound_to_every_address_the_banner_says_other_machines_use_this_one_s_address(host: str, own: str) -> None:
    """Bound to 0.0.0.0 the settings name 127.0.0.1, which a container or another machine cannot use: a line says
    so; bound to one address, the settings name it and need no such line."""
    app = App(app_id="1", key="k", secret="s")
    banner = _client_settings(EmulatorConfig(apps=(app,), host=host), 6001)
    assert (
        f"Elsewhere:   bound to every address ({host}); the settings here use {own}, which reaches it from this "
        f"machine alone: from another machine or a container, use this machine's address or host name in place of "
        f"{own}\n"
    ) in banner
    assert f'wsHost: "{own}"' in banner and f"@{own}:6001/apps/1" in banner
    for bound in ("127.0.0.1", "10.0.0.6", "localhost"):
        assert "Elsewhere:" not in _client_settings(EmulatorConfig(apps=(app,), host=bound), 6001)


def test_the_banner_s_relay_urls_work_whatever_the_secret_holds() -> None:
    """A secret with '@', '/' or ':' was printed as is in RELAY_URL: pasted, the URL sent the request to a host made
    of the secret. Percent-encoded, each URL configures the app as it is."""
    app = App(app_id="1", key="app-key", secret="p@ss/w:rd")
    banner = _client_settings(EmulatorConfig(apps=(app,)), 6001)
    urls = [line.split("RELAY_URL:", 1)[1].strip() for line in banner.splitlines() if "RELAY_URL:" in line]
    assert [parse_url(url).url(privacy=False) for url in urls] == [
        "emulator://app-key:p%40ss%2Fw%3Ard@127.0.0.1:6001/apps/1",
        "ably://1.app-key:p%40ss%2Fw%3Ard@127.0.0.1:6001?tls=false",
    ]
    assert [parse_url(url).secret for url in urls] == ["p@ss/w:rd"] * 2


@pytest.mark.parametrize("flag", ["--secret", "--app-id"])
async def test_an_app_setting_holding_bytes_that_are_not_utf8_is_refused_at_start(flag: str) -> None:
    """`--secret $'s\\xff'`: Python keeps the byte as a lone surrogate (os.fsencode gives the byte back here), and the
    emulator served with it, every signed request then raising UnicodeEncodeError (a 500)."""
    outcome = await run_relay("emulator", "--port", "0", flag, "s\udcff")
    assert_refused(outcome, f"{flag} is not UTF-8 text: its character 2 is a byte that could not be decoded")


async def test_a_console_token_variable_holding_a_byte_that_is_not_utf8_is_refused_by_its_name() -> None:
    """`RELAY_CONSOLE_TOKEN=$'tok\\xff'` was refused as "--console-token is not UTF-8 text", a flag not given."""
    outcome = await run_relay("emulator", "--port", "0", env={"RELAY_CONSOLE_TOKEN": "tok\udcff"})
    assert_refused(outcome, "RELAY_CONSOLE_TOKEN is not UTF-8 text: its character 4 is a byte that could not be")
    assert "--console-token" not in outcome.stderr


@pytest.mark.parametrize("quote", ['"', "'"])
async def test_a_console_token_variable_in_quotes_is_refused_as_relay_serves_token_is(quote: str) -> None:
    """RELAY_CONSOLE_TOKEN="tok" from docker's --env-file kept its quotes: the token was '"tok"', and Prometheus and
    curl, sending tok, got 401 from /metrics and /usage. relay serve refuses its RELAY_API_TOKEN so already."""
    outcome = await run_relay("emulator", "--port", "0", env={"RELAY_CONSOLE_TOKEN": f"{quote}tok{quote}"})
    assert_refused(outcome, "RELAY_CONSOLE_TOKEN is written in quotes", "remove them")
    assert "tok" not in outcome.stderr.replace("RELAY_CONSOLE_TOKEN", "")


def _banner_value(banner: str, pattern: str) -> str:
    """The literal the banner prints for ``pattern`` (a regex with one group), read as JavaScript or Python would."""
    match = re.search(pattern, banner)
    assert match is not None, f"/{pattern}/ not in the banner:\n{banner}"
    value: str = json.loads(match.group(1))
    return value


async def test_on_every_ipv6_address_the_banner_s_client_settings_reach_the_emulator() -> None:
    """`--host ::`: asyncio binds it for IPv6 alone, so the banner's 127.0.0.1 was refused; and an IPv6 host was
    printed bare where each client puts it in a URL (pusher-js ws://::1:port, pusher-http-python InvalidURL, Ably).
    Each printed setting, used as the client uses it, reaches the emulator."""
    from ably import AblyRest

    emulator = await EmulatorProcess.start("--host", "::", "--app-id", "1")
    port, banner = emulator.port, emulator.banner
    try:
        assert f"listening on http://[::1]:{port} (WebSocket ws://[::1]:{port}/app/{{key}})" in banner
        ws_host = _banner_value(banner, r"wsHost: (\"[^\"]*\")")
        async with connect(f"ws://{ws_host}:{port}/app/app-key?protocol=7") as ws:  # as pusher-js builds it
            assert json.loads(await ws.recv())["event"] == "pusher:connection_established"
        sdk_host = _banner_value(banner, r" host=(\"[^\"]*\")")
        sdk = pusher.Pusher(app_id="1", key="app-key", secret="app-secret", host=sdk_host, port=port, ssl=False)
        assert await asyncio.to_thread(sdk.trigger, "orders", "e", {}) == {}
        for url in re.findall(r"RELAY_URL: +(\S+)", banner):
            async with AsyncRelay.from_url(url) as relay:
                await relay.publish("orders", "e", {})
        ably_endpoint = _banner_value(banner, r"AblyRest\(key=\"[^\"]*\", endpoint=(\"[^\"]*\")")
        ably = AblyRest(key="1.app-key:app-secret", endpoint=ably_endpoint, port=port, tls=False, use_token_auth=True)
        try:
            await ably.channels.get("orders").publish("e", "d")
        finally:
            await ably.close()
        assert _banner_value(banner, r"endpoint=(\"[^\"]*\"), tls=False\)") == f"[::1]:{port}"  # ably-python realtime
        assert _banner_value(banner, r"ably-js: .* endpoint: (\"[^\"]*\")") == "[::1]"
    finally:
        await emulator.stop()


@pytest.mark.parametrize("flags", [(), ("--reuse-port",)], ids=["one-socket", "reuse-port"])
async def test_every_ipv6_address_serves_ipv4_clients_too(flags: tuple[str, ...]) -> None:
    """docs/emulator.md: `--host ::` is bound to every address; asyncio bound it for IPv6 alone, so a container or a
    machine reaching it over IPv4 was refused (and so was this machine's 127.0.0.1)."""
    emulator = await EmulatorProcess.start("--host", "::", *flags)
    try:
        async with httpx.AsyncClient() as http:
            for host in ("127.0.0.1", "[::1]"):
                assert (await http.get(f"http://{host}:{emulator.port}/health")).json() == {"status": "ok"}
    finally:
        await emulator.stop()


@pytest.mark.parametrize("command", ["emulator", "serve"])
async def test_a_host_written_in_brackets_is_refused_saying_how_to_write_it(command: str) -> None:
    """`--host [::1]`, as a URL writes it, was looked up as a name: "cannot listen on [[::1]]:6001: Name or service
    not known", after a warning that it was not a loopback address."""
    outcome = await run_relay(command, "--host", "[::1]", "--port", "0", env={"RELAY_URL": "memory://audit"})
    assert_refused(outcome, "--host must be an address without brackets (::1, not [::1])")
    assert "loopback" not in outcome.stderr


@pytest.mark.parametrize("command", ["emulator", "serve"])
@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("localhost:6001", "--host must be an address without a port (localhost, not localhost:6001)"),
        ("[::1]:6001", "--host must be an address without a port (::1, not [::1]:6001)"),
        ("http://0.0.0.0", "--host must be an address, not a URL (0.0.0.0, not http://0.0.0.0)"),
        ("https://127.0.0.1:8000/", "--host must be an address, not a URL (127.0.0.1, not https://127.0.0.1:8000/)"),
    ],
)
async def test_a_host_with_a_port_or_a_scheme_is_refused_saying_how_to_write_it(
    command: str, host: str, said: str
) -> None:
    """`--host localhost:6001` or `--host http://0.0.0.0` was looked up as a name: "cannot listen on
    [localhost:6001]:6001: Name or service not known", after a warning that it was not a loopback address."""
    outcome = await run_relay(command, "--host", host, "--port", "0", env={"RELAY_URL": "memory://audit"})
    assert_refused(outcome, said, "the port is set apart (--port)")
    assert "loopback" not in outcome.stderr
    assert "Name or service not known" not in outcome.stderr


@pytest.mark.parametrize("host", ["::1", "::", "fe80::1:6001"])
def test_an_ipv6_address_is_no_host_with_a_port(host: str) -> None:
    assert EmulatorConfig(apps=(), host=host).host == host


@pytest.mark.parametrize("token", ["", "   "])
async def test_an_empty_console_token_flag_is_refused_not_replaced_by_another_token(token: str) -> None:
    """`--console-token ""` fell back to RELAY_CONSOLE_TOKEN (or the file's token): a token someone else chose opened
    the console. Read as the variable is, whitespace only is as empty."""
    outcome = await run_relay(
        "emulator", "--port", "0", "--console-token", token, env={"RELAY_CONSOLE_TOKEN": "someone-else-s"}
    )
    assert_refused(outcome, "--console-token must be a non-empty string")


async def test_an_empty_config_path_is_refused_naming_the_flag() -> None:
    """`--config ""` was the current directory: "config file . cannot be read: Is a directory"."""
    assert_refused(await run_relay("emulator", "--port", "0", "--config", ""), "--config must be a non-empty string")


async def _interrupted_once_connected(*args: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Run ``relay ARGS`` (``{port}`` in them and in ``env``: a server that accepts connections and never answers,
    a Redis or a provider that hangs) and send it SIGINT, as Ctrl-C does, once it has connected: its exit status
    and standard error."""
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clean = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}
    async with server:
        process = await asyncio.create_subprocess_exec(
            *RELAY,
            *(arg.replace("{port}", str(port)) for arg in args),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**clean, **{name: value.replace("{port}", str(port)) for name, value in env.items()}},
        )
        try:
            await asyncio.wait_for(connected.wait(), 20)
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(process.communicate(), 20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            for writer in held:
                writer.close()
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["emulator", "--port", "0", "--redis-url", "redis://127.0.0.1:{port}/0"], {}, "relay emulator: interrupted"),
        (
            ["emulator", "--port", "0", "--workers", "2", "--redis-url", "redis://127.0.0.1:{port}/0"],
            {},
            "relay emulator: interrupted",
        ),
        (
            ["publish", "orders", "shipped", "{}"],
            {"RELAY_URL": "emulator://k:s@127.0.0.1:{port}/apps/1"},
            "relay publish: interrupted before the provider answered: the event may have been published",
        ),
    ],
    ids=["emulator connecting to redis", "workers supervisor checking redis", "publish awaiting the provider"],
)
async def test_ctrl_c_before_the_command_handles_it_is_one_line_and_status_130(
    args: list[str], env: dict[str, str], said: str
) -> None:
    """Ctrl-C while the emulator connects to a Redis that does not answer (up to 10 s), or while relay publish waits
    on a provider that does not, was a KeyboardInterrupt traceback and status -2 (killed by SIGINT). And the
    emulator's, as it comes just as the connection is made (here: at once), was sometimes lost, on Python 3.11, inside
    redis-py (tests/cluster/test_cluster_start_cancel.py): 5 s later, "cannot reach Redis …: Timeout reading" and
    status 2."""
    status, stderr = await _interrupted_once_connected(*args, env=env)
    assert "Traceback" not in stderr, stderr[-1500:]
    assert (status, stderr.splitlines()[-1]) == (130, said)


async def test_a_node_that_cannot_listen_leaves_the_cluster_it_joined(
    taken_port: int, redis_server: RedisServer
) -> None:
    """The node joins the cluster in Redis before it binds: refused the port, it stayed in the node set until its
    heartbeat expired, a node that never served counted by the others."""
    import redis.asyncio as redis

    outcome = await run_relay("emulator", "--port", str(taken_port), "--redis-url", redis_server.url)
    assert_refused(outcome, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use")
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert await client.smembers("relay:nodes") == set()
    finally:
        await client.aclose()

"""Examples of the manual that no test ran, run as written (ports a test can use put in for the fixed ones), their
shown output held to what really happens: docs/gateway.md's first commands and its idempotent curl, with the
refusals its log block shows; docs/emulator.md's first command, TLS commands, log lines, usage document and command
lines; docs/ably.md's ably-python realtime options and ably-js blocks; examples/README.md's provider URLs;
docs/performance.md's bench commands."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from relay.cli import build_parser
from tests.conftest import free_port
from tests.docs.test_manual_docs import DOCS, ROOT, blocks
from tests.emulator_process import EmulatorProcess
from tests.operations.support import ws_client

BIN = str(Path(sys.executable).parent)
CLEAN_ENV = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}


def block(page: str, language: str, containing: str) -> str:
    (found,) = [body for lang, body in blocks(DOCS / page) if lang == language and containing in body]
    return found


async def bash(script: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=cwd, env={**CLEAN_ENV, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# -- docs/gateway.md -------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_first_block(tmp_path: Path) -> AsyncIterator[tuple[str, int, dict[str, str], Path]]:
    """docs/gateway.md's first block run by bash as written: the venv's bin on PATH for its `. .venv/bin/activate`,
    free ports for 6001 and 8000, and the RELAY_ variables it exported written to a file before its last line, so the
    test can call the gateway with the token the block made. Yields the gateway's URL, the emulator's port, those
    variables and the file the processes' output goes to."""
    script = block("gateway.md", "bash", "relay serve --host 127.0.0.1 --port 8000")
    lines = script.splitlines()
    assert lines[0].startswith(". .venv/bin/activate") and lines[1].startswith("relay emulator --app-id 1 &")
    assert lines[-1].startswith("relay serve --host 127.0.0.1 --port 8000")
    emulator_port, gateway_port = free_port(), free_port()
    lines[0] = f'export PATH="{BIN}:$PATH"'
    lines[1] = lines[1].replace("relay emulator --app-id 1", f"relay emulator --app-id 1 --port {emulator_port}")
    lines.insert(-1, "env | grep ^RELAY_ > relay.env")
    script = "\n".join(lines).replace("127.0.0.1:6001", f"127.0.0.1:{emulator_port}")
    script = script.replace("--port 8000", f"--port {gateway_port}")
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", script, cwd=tmp_path, env=CLEAN_ENV, stdout=sink, stderr=sink, start_new_session=True
        )
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = time.monotonic() + 20
            while True:
                assert process.returncode is None, output.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/health")).status_code == 200:
                        break
                assert time.monotonic() < deadline, output.read_text()
                await asyncio.sleep(0.1)
        env = dict(line.split("=", 1) for line in (tmp_path / "relay.env").read_text().splitlines())
        yield url, emulator_port, env, output
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 20)


async def test_the_gateway_page_s_first_block_serves_and_its_curl_publishes_once(tmp_path: Path) -> None:
    """docs/gateway.md's first commands start the emulator and a gateway with the OpenAPI UI its comment names and the
    CORS origin it sets; the page's `Idempotency-Key` curl, run twice with that block's token, prints the publish's
    answer both times and delivers the event once; and the refusals of "Refusals in the log" are logged as that
    block shows them, for the block's CORS origin and a page on https://elsewhere.example."""
    curl = block("gateway.md", "bash", "Idempotency-Key: ")
    async with gateway_first_block(tmp_path) as (url, emulator_port, env, output):
        assert len(env["RELAY_API_TOKEN"]) == len(env["RELAY_JWT_SECRET"]) == 64
        subscriber = await ws_client(f"ws://127.0.0.1:{emulator_port}/app/app-key?protocol=7")
        await subscriber.send("pusher:subscribe", {"channel": "orders"})
        await subscriber.expect("pusher_internal:subscription_succeeded")
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/docs")).status_code == 200  # "OpenAPI UI at http://127.0.0.1:8000/docs"
            answers = [
                await bash(curl.replace("127.0.0.1:8000", url.removeprefix("http://")), tmp_path, env) for _ in range(2)
            ]
            assert answers == [(0, '{"channels":["orders"],"message_ids":[]}', "")] * 2
            paid = await subscriber.expect("paid")
            assert (paid["channel"], json.loads(paid["data"])) == ("orders", {"id": 42})
            with pytest.raises(TimeoutError):
                await subscriber.expect("paid", within=0.5)  # the second was a replay
            await subscriber.ws.close()

            # "Refusals in the log": what the block shows, asked of this gateway
            alice = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, env["RELAY_JWT_SECRET"], "HS256")
            form = {"socket_id": "1.1", "channel_name": "private-user-bob"}
            headers = {"authorization": f"Bearer {alice}"}
            assert (await http.post("/v1/auth/channel", data=form, headers=headers)).status_code == 403
            body = {"channel": "orders", "event": "paid", "data": {}}
            assert (await http.post("/v1/publish", json=body)).status_code == 401
            preflight = {"origin": "https://elsewhere.example", "access-control-request-method": "POST"}
            assert (await http.options("/v1/auth/channel", headers=preflight)).status_code == 400
            allowed = {**preflight, "origin": env["RELAY_CORS_ORIGINS"]}
            assert (await http.options("/v1/auth/channel", headers=allowed)).status_code == 200
        await asyncio.sleep(0.3)  # the log lines cross a pipe
    logged = [
        line
        for line in output.read_text().splitlines()
        if re.search(r"relay\.gateway: (?:\S+ /\S+ answered|CORS: refused)", line)
    ]
    shown = block("gateway.md", "text", "relay.gateway: POST /v1/auth/channel answered 403").splitlines()
    assert len(logged) == len(shown) == 4, output.read_text()
    for line, expected in zip(logged, shown, strict=True):
        if expected.endswith("(…)"):
            assert line.startswith(expected.removesuffix("(…)") + "("), line
        else:
            assert line == expected


# -- docs/emulator.md ------------------------------------------------------------------------------------------------

PAGE = (DOCS / "emulator.md").read_text()


async def test_the_emulator_page_s_first_command_and_its_json_log_line() -> None:
    """The page's first command, `relay emulator` (here with `--log-json`, on a free port), serves the app its comment
    names (`127.0.0.1:6001, app id "app-id", key "app-key", secret "app-secret"`: 6001 is the port it takes when not
    given one); a connection with key x is refused with the line "Logs" shows, field for field (its time aside)."""
    from relay.emulator.config import App, EmulatorConfig
    from tests.operations.support import api

    first = block("emulator.md", "bash", "relay emulator --config emulator.toml").splitlines()[0]
    comment = re.search(r'^relay emulator +# (\S+):(\d+), app id "(.+)", key "(.+)", secret "(.+)"$', first)
    assert comment is not None, first
    host, port, app_id, key, secret = comment.groups()
    assert (EmulatorConfig(apps=()).host, EmulatorConfig(apps=()).port) == (host, int(port))
    shown = json.loads(block("emulator.md", "json", '"msg": "connection refused"'))
    emulator = await EmulatorProcess.start("--log-json", env=CLEAN_ENV)
    try:
        assert f"RELAY_URL:   emulator://{key}:***@{host}:{emulator.port}/apps/{app_id}\n" in emulator.banner
        answer = await api(
            f"http://{host}:{emulator.port}", App(app_id, key, secret), "GET", f"/apps/{app_id}/channels"
        )
        assert answer.status_code == 200, answer.text  # signed with that secret
        with pytest.raises(Exception, match="4001"):
            await ws_client(f"ws://127.0.0.1:{emulator.port}{shown['path']}")
        line = await emulator.wait_for_output('"connection refused"')
    finally:
        await emulator.stop()
    logged = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", logged.pop("ts"))
    shown.pop("ts")
    assert logged == shown
    assert list(logged) == list(shown)  # in the order shown


def test_the_usage_document_the_emulator_page_shows_is_one_relay_cost_prices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The usage meter's document, saved as usage.json, is priced by the page's `relay cost --usage usage.json`, with
    the warning that its 31 seconds are a guess of a day (the page says relay cost reads them as 31 seconds)."""
    from relay.cli import main

    (document,) = [body for lang, body in blocks(DOCS / "emulator.md") if lang == "json" and '"version": 2' in body]
    (tmp_path / "usage.json").write_text(document)
    monkeypatch.chdir(tmp_path)
    (words,) = shell_commands(PAGE, "relay cost")
    assert words == ["--usage", "usage.json"]
    assert main(["cost", *words]) == 0
    printed = capsys.readouterr()
    assert "Pusher Channels" in printed.out and "Ably" in printed.out
    assert "less than an hour measured (31 s)" in printed.err


async def test_the_emulator_page_s_tls_commands_make_a_certificate_the_library_trusts_with_ssl_cert_file(
    tmp_path: Path,
) -> None:
    """For a local certificate, the page's openssl command makes the pair `--tls-cert`/`--tls-key` serve; without
    SSL_CERT_FILE a publish fails as the page says, and with the bundle its next command makes, it is published."""
    make_pair = block("emulator.md", "bash", "openssl req -x509")
    bundle = block("emulator.md", "bash", "export SSL_CERT_FILE=").replace(".venv/bin/python", sys.executable)
    status, _, stderr = await bash(make_pair, tmp_path)
    assert status == 0, stderr
    emulator = await EmulatorProcess.start(
        "--app-id", "1", "--tls-cert", "cert.pem", "--tls-key", "key.pem", cwd=tmp_path, env=CLEAN_ENV
    )
    try:
        env = {"RELAY_URL": f"emulator://app-key:app-secret@127.0.0.1:{emulator.port}/apps/1?tls=true"}
        publish = f"{shlex.quote(BIN)}/relay publish orders order-ready '{{\"id\": 42}}'"
        untrusted = await bash(publish, tmp_path, env)
        assert untrusted[0] == 1
        assert "the server's TLS certificate did not verify (self-signed certificate)" in untrusted[2], untrusted
        assert await bash(f"{bundle}\n{publish}", tmp_path, env) == (0, "published order-ready to orders\n", "")
        assert (tmp_path / "trusted.pem").read_text().count("BEGIN CERTIFICATE") > 1  # the public ones and this one
    finally:
        await emulator.stop()


async def test_the_emulator_page_s_pusher_js_options_behind_nginx_are_the_ones_the_gateway_gives() -> None:
    """The page's `new Pusher(…)` for the emulator behind nginx at relay.example.com: the options are those
    /v1/client-config gives pages for that set-up (RELAY_PUBLIC_WS_URL=wss://relay.example.com, docs/deploy.md's)."""
    from relay.gateway import GatewaySettings, create_app

    snippet = block("emulator.md", "js", 'wsHost: "relay.example.com"')
    match = re.fullmatch(r'new Pusher\("([^"]+)", (\{.*\})\);\n', snippet, re.DOTALL)
    assert match is not None, snippet
    options = json.loads(re.sub(r"(\w+):", r'"\1":', match[2]))
    settings = GatewaySettings.from_env(
        {
            "RELAY_URL": f"emulator://{match[1]}:secret@127.0.0.1:6001/apps/1",
            "RELAY_PUBLIC_WS_URL": "wss://relay.example.com",
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        config = (await http.get("/v1/client-config")).json()
    assert config["key"] == match[1]
    assert options == {name: config[name] for name in options}


async def test_the_emulator_page_s_warning_near_the_open_file_limit_is_the_one_logged() -> None:
    """Under an open-file limit of 100, the 68th connection brings the warning the page shows (after the line's time;
    the text format appends the record's fields)."""
    from tests.operations.test_open_files import raw_connection

    (shown,) = re.findall(r"^WARNING relay\.emulator: 68 connections open, .*$", PAGE, re.MULTILINE)
    emulator = await EmulatorProcess.start(open_files=(100, 100), env=CLEAN_ENV)
    flood = []
    try:
        for _ in range(70):
            flood.append(raw_connection(emulator.port))
        logged = await emulator.wait_for_output("near the open-file limit")
    finally:
        for connection in flood:
            connection.close()
        await emulator.stop()
    assert logged.endswith(f" {shown}"), logged


async def test_the_emulator_page_s_start_warning_and_lost_listener_lines_are_the_ones_logged(tmp_path: Path) -> None:
    """An app whose max_connections (5000) is past what an open-file limit of 1024 holds is warned of at start in the
    words the page shows; when the listening socket stops listening, the two lines the page shows are logged. Each
    after the line's time; the text format appends the record's fields (host and port, to the first of the two)."""
    from tests.operations.test_listener_lost import stop_listening_in

    (warning,) = re.findall(r"^WARNING relay\.emulator: app 1's max_connections \(5000\).*$", PAGE, re.MULTILINE)
    (lost,) = re.findall(r"^```\n(ERROR relay\.emulator: the listening socket.*?)^```$", PAGE, re.MULTILINE | re.DOTALL)
    config = tmp_path / "emulator.toml"
    config.write_text('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nmax_connections = 5000\n')
    emulator = await EmulatorProcess.start("--config", str(config), open_files=(1024, 1024), env=CLEAN_ENV)
    try:
        stop_listening_in(emulator.process.pid, emulator.port)
        async with asyncio.timeout(15):
            assert await emulator.process.wait() == 1
    finally:
        await emulator.stop(grace=5.0)
    (logged,) = [line for line in emulator.stderr if "max_connections" in line]
    assert logged.endswith(f" {warning}"), logged
    errors = [line for line in emulator.stderr if " ERROR " in line]
    expected = lost.replace("6001", str(emulator.port)).splitlines()
    assert len(errors) == len(expected) == 2, emulator.stderr
    for line, end in zip(errors, expected, strict=True):
        assert line.endswith(f" {end}"), line


def shell_commands(text: str, program: str) -> list[list[str]]:
    """The words after ``program`` of the bash blocks' lines that start with it (continuation lines joined, comments
    and a final ``&`` left out)."""
    commands = []
    for body in [body for lang, body in BLOCK_WITH_INDENT.findall(text) if lang in ("bash", "sh")]:
        for line in body.replace("\\\n", " ").splitlines():
            if line.startswith(f"{program} "):
                words = shlex.split(line, comments=True)
                commands.append(words[len(program.split()) : -1 if words[-1] == "&" else None])
    return commands


BLOCK_WITH_INDENT = re.compile(r"^ *```(\w+)\n(.*?)^ *```$", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", ["emulator.md", "deploy.md", "configuration.md", "gateway.md", "quickstart.md"])
def test_every_relay_command_line_of_the_page_parses(page: str) -> None:
    """Each `relay …` line of the page's bash blocks is one `relay` takes: its flags exist and their values parse."""
    text = (DOCS / page).read_text()
    commands = shell_commands(text, "relay") + shell_commands(text, ".venv/bin/relay")
    assert commands or page == "deploy.md", page  # its relay commands are ExecStart= lines, test_deploy_docs.py's
    for words in commands:
        try:
            build_parser().parse_args(words)
        except SystemExit:
            pytest.fail(f"{page}: `relay {' '.join(words)}` does not parse")


# -- docs/ably.md ----------------------------------------------------------------------------------------------------


async def test_the_ably_python_realtime_options_connect_to_the_readme_emulator() -> None:
    """The page's ably-python block, both clients: the realtime client, given the port in `endpoint`, connects and
    receives what the REST client publishes (test_ably_docs.py runs the REST options alone)."""
    body = block("ably.md", "python", "AblyRealtime(")
    readme = re.search(r"\.venv/bin/relay emulator (.*)\n", (ROOT / "README.md").read_text())
    assert readme is not None
    emulator = await EmulatorProcess.start(*readme.group(1).split(), env=CLEAN_ENV)
    namespace: dict[str, Any] = {}
    try:
        exec(compile(body.replace("6001", str(emulator.port)), str(DOCS / "ably.md"), "exec"), namespace)
        realtime, rest = namespace["realtime"], namespace["rest"]
        try:
            await asyncio.wait_for(realtime.connection.once_async("connected"), 10)
            received: asyncio.Queue[Any] = asyncio.Queue()
            channel = realtime.channels.get("orders")
            await channel.subscribe("placed", received.put_nowait)
            await rest.channels.get("orders").publish("placed", {"id": 1})
            message = await asyncio.wait_for(received.get(), 10)
            assert (message.name, message.data) == ("placed", {"id": 1})
        finally:
            await realtime.close()
            await rest.close()
    finally:
        await emulator.stop()


ABLY_JS_BLOCKS = """
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const Ably = createRequire(process.argv[2])('ably');
const blocks = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
const seen = { rendered: [], viewers: [], logged: [], refetched: 0 };
const until = async (done, what) => {
  for (let waited = 0; !done(); waited += 50) {
    if (waited > 10000) throw new Error(`no ${what}: ${JSON.stringify(seen)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
};

const realtime = await new AsyncFunction('Ably', `${blocks.options}\nreturn realtime;`)(Ably);
await realtime.connection.whenState('connected');
await new AsyncFunction('realtime', 'refetchOrders', blocks.resume)(realtime, () => seen.refetched++);
await realtime.channels.get('orders').attach();
await new AsyncFunction('realtime', 'render', blocks.rewind)(realtime, (data) => seen.rendered.push(data));
await new AsyncFunction('realtime', 'showViewers', blocks.occupancy)(realtime, (count) => seen.viewers.push(count));
const console = { log: (...args) => seen.logged.push(args) };
const server = await new AsyncFunction('Ably', 'console', `${blocks.lifecycle}\nreturn realtime;`)(Ably, console);
const viewed = realtime.channels.get('orders-7');
await viewed.attach();
await until(() => seen.logged.length === 1, 'channel.opened');
await viewed.detach();
await until(() => seen.logged.length === 2 && seen.rendered.length && seen.viewers.length, 'more');
server.close();
realtime.close();
process.stdout.write(JSON.stringify(seen));
"""


async def test_the_ably_js_blocks_do_what_their_comments_say(tmp_path: Path) -> None:
    """docs/ably.md's ably-js blocks run in Node, one after another, as written (their port put in): the client
    options connect; the resume listener refetches at a first attach; `rewind: '1'` renders an order's current status
    at once; the viewer count shows the one viewer; and the server's lifecycle listener, on an app with the
    capability its comment names, logs a channel's first viewer and its last leaving."""
    from tests.node_scenarios import NODE, NODE_DIR, node_modules

    node_modules("ably")
    assert NODE is not None
    js = [body for lang, body in blocks(DOCS / "ably.md") if lang == "js"]
    options, resume, rewind, occupancy, lifecycle = js
    assert "new Ably.Realtime" in options and "rewind: '1'" in rewind and "occupancy:" in occupancy
    capability = re.search(r"the app has (ably_capability = '[^']+')", lifecycle)
    assert capability is not None
    config = tmp_path / "emulator.toml"
    config.write_text(
        f'[[apps]]\napp_id = "1"\nkey = "app-key"\nsecret = "app-secret"\nwebhook_delay = 0.2\n{capability[1]}\n'
    )
    emulator = await EmulatorProcess.start("--config", str(config), env=CLEAN_ENV)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{emulator.port}", auth=("1.app-key", "app-secret")
        ) as http:
            for status in ("cooking", "ready"):
                answer = await http.post("/channels/order-42/messages", json={"name": "status", "data": status})
                assert answer.status_code == 201, answer.text
        runs = {"options": options, "resume": resume, "rewind": rewind, "occupancy": occupancy, "lifecycle": lifecycle}
        (tmp_path / "blocks.json").write_text(
            json.dumps({name: body.replace("6001", str(emulator.port)) for name, body in runs.items()})
        )
        (tmp_path / "run.mjs").write_text(ABLY_JS_BLOCKS)
        process = await asyncio.create_subprocess_exec(
            NODE, str(tmp_path / "run.mjs"), str(NODE_DIR / "package.json"), str(tmp_path / "blocks.json"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()
    finally:
        await emulator.stop()
    seen = json.loads(stdout)
    assert (seen["refetched"], seen["rendered"], seen["viewers"][0]) == (1, ["ready"], 1), seen
    assert seen["logged"] == [["opened", "orders-7", 1], ["closed", "orders-7"]]


# -- docs/performance.md ---------------------------------------------------------------------------------------------


class Parsed(Exception):
    """Raised once a bench command's arguments have parsed, before it runs anything."""


def test_the_bench_commands_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command of "Running it" parses: flags its program has, scenarios and targets bench/run.py has."""
    import importlib

    from bench import run

    text = (DOCS / "performance.md").read_text().split("<!-- bench:begin -->", 1)[0]
    commands = shell_commands(text, ".venv/bin/python")
    assert len(commands) == 10
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> Any:
        parsed = parse(self, args, namespace)
        if getattr(parsed, "scenarios", None):
            assert set(parsed.scenarios.split(",")) <= set(run.SCENARIOS), parsed.scenarios
        if getattr(parsed, "targets", None):
            assert set(parsed.targets.split(",")) <= set(run.TARGETS), parsed.targets
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for words in commands:
        words = [word.strip("[]") for word in words]
        module = words[1] if words[0] == "-m" else words[0].removesuffix(".py").replace("/", ".")
        argv = words[2:] if words[0] == "-m" else words[1:]
        monkeypatch.setattr(sys, "argv", [module, *argv])
        with pytest.raises(Parsed):
            importlib.import_module(module).main()


# -- examples/README.md ----------------------------------------------------------------------------------------------

SWITCHING = re.findall(
    r"^RELAY_URL=(\S+) \.venv/bin/python -m examples\.order_tracking *(?:# (.*))?$",
    block("../examples/README.md", "bash", "RELAY_URL=pusher://"),
    re.MULTILINE,
)


@pytest.mark.parametrize(("relay_url", "comment"), SWITCHING, ids=[url for url, _ in SWITCHING])
def test_each_relay_url_of_the_examples_readme_gives_the_pages_its_provider(relay_url: str, comment: str) -> None:
    """Switching provider "is a change of RELAY_URL only": each command's URL (as the shell reads it) configures the
    order-tracking app, whose /api/config sends the pages to that provider, pusher-js or ably-js as the comment says."""
    from examples.order_tracking.app import create_app
    from tests.examples.test_order_tracking_backend import browser

    (url,) = shlex.split(relay_url)
    with browser(create_app(url, session_secret=b"docs")) as page:
        config = page.get("/api/config").json()
    scheme = url.split("://", 1)[0]
    assert config["provider"] == scheme
    if scheme == "ably":
        assert config["library"] == "/vendor/ably.min.js", comment
    else:
        assert config["library"] == "/vendor/pusher.min.js"
        assert config["key"] == url.split("://", 1)[1].split(":", 1)[0]
    if "@relay.example.com:443" in url:
        assert (config["wsHost"], config["wssPort"], config["forceTLS"]) == ("relay.example.com", 443, True)
    if comment == "hosted Pusher":
        assert (config["cluster"], "wsHost" in config) == ("eu", False)

"""The manual's prose pages: docs/concepts.md and docs/migration.md run their Python; blocks marked
``from <file>`` are that file's text (the examples, tested end to end); every relative link and anchor of the pages
of the manual resolves, and every table is whole."""

from __future__ import annotations

import ast
import json
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.cost import parse_usage
from relay.emulator.config import App, EmulatorConfig, load_config
from relay.emulator.user_sketch import UserSketch
from tests.conftest import StartEmulator
from tests.emulator_process import EmulatorProcess
from tests.gateway.conftest import serve_asgi_in_thread
from tests.library.libsupport import SilentServer
from tests.operations.support import ws_client

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXCERPT = re.compile(r"^(?:#|//) from (\S+)\n")
LINKED_PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "examples" / "README.md", ROOT / "README.md"]


def blocks(path: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize("page", ["concepts.md", "migration.md"])
def test_python_blocks_run(page: str) -> None:
    runnable = [body for lang, body in blocks(DOCS / page) if lang == "python" and not EXCERPT.match(body)]
    assert runnable, page
    for body in runnable:
        exec(compile(body, str(DOCS / page), "exec"), {"__name__": "docs"})


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_excerpts_are_the_files_text() -> None:
    excerpts = [(match, body) for _, body in blocks(DOCS / "migration.md") if (match := EXCERPT.match(body))]
    assert len(excerpts) == 3
    for match, body in excerpts:
        source = (ROOT / match.group(1)).read_text()
        wanted, have = stripped_lines(body[match.end() :]), stripped_lines(source)
        assert any(have[i : i + len(wanted)] == wanted for i in range(len(have))), (
            f"the excerpt from {match.group(1)} is not in that file any more:\n{body}"
        )


def test_every_block_of_concepts_and_migration_is_run_or_checked() -> None:
    for page in ("concepts.md", "migration.md"):
        for lang, body in blocks(DOCS / page):
            assert lang == "python" or lang == "text" or EXCERPT.match(body), f"{page}: an unchecked {lang} block"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = BLOCK.sub("", path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    text = BLOCK.sub("", page.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no #{anchor} in {resolved.name}"


TABLE_ROW = re.compile(r"^\|.*\|$")
TABLE_SEPARATOR = re.compile(r"^\|(?: *:?-+:? *\|)+$")


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_are_whole(page: Path) -> None:
    """Every run of table rows starts with a header and its separator: a code block or a paragraph between two rows
    (an example put inside the routes table) leaves the rows after it shown as text."""
    lines = BLOCK.sub("", page.read_text()).splitlines()
    starts = [
        i for i, line in enumerate(lines) if TABLE_ROW.match(line) and (i == 0 or not TABLE_ROW.match(lines[i - 1]))
    ]
    for start in starts:
        assert start + 1 < len(lines) and TABLE_SEPARATOR.match(lines[start + 1]), (
            f"{page.name}: the table rows from {lines[start][:60]!r} have no header and separator above them"
        )


def test_the_gateway_embedding_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/gateway.md's FastAPI embedding example, with the settings it reads from the environment."""
    monkeypatch.setenv("RELAY_URL", "memory://gateway-docs")
    monkeypatch.setenv("RELAY_API_TOKEN", "token")
    (body,) = [body for lang, body in blocks(DOCS / "gateway.md") if lang == "python"]
    namespace: dict[str, object] = {"__name__": "docs"}
    exec(compile(body, str(DOCS / "gateway.md"), "exec"), namespace)
    paths = set(namespace["app"].openapi()["paths"])  # type: ignore[attr-defined]
    assert {"/v1/publish", "/v1/auth/channel", "/v1/webhooks"} <= paths
    assert set(namespace["whole"].openapi()["paths"]) >= paths  # type: ignore[attr-defined]


def test_the_gateway_embedding_example_waits_for_its_provider_as_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/gateway.md's embedded router reads GatewaySettings.from_env(): RELAY_PROVIDER_DEADLINE=1 ends a publish to
    a provider that never answers within about a second. Its AsyncRelay was made without the settings' retry, so the
    router waited the library's 10 s timeout instead."""
    provider = SilentServer()
    try:
        monkeypatch.setenv("RELAY_URL", f"emulator://key:secret@127.0.0.1:{provider.port}/apps/1")
        monkeypatch.setenv("RELAY_API_TOKEN", "token")
        monkeypatch.setenv("RELAY_PROVIDER_DEADLINE", "1")
        (body,) = [body for lang, body in blocks(DOCS / "gateway.md") if lang == "python"]
        namespace: dict[str, object] = {"__name__": "docs"}
        exec(compile(body, str(DOCS / "gateway.md"), "exec"), namespace)
        with serve_asgi_in_thread(namespace["app"]) as url:  # type: ignore[arg-type]
            started = time.monotonic()
            answer = httpx.post(
                f"{url}/v1/publish",
                json={"channel": "orders", "event": "ready", "data": {}},
                headers={"Authorization": "Bearer token"},
                timeout=20,
            )
            waited = time.monotonic() - started
        assert answer.status_code == 502, answer.text
        assert "deadline of 1s reached" in answer.text
        assert waited < 3, waited
    finally:
        provider.close()


def test_the_emulator_page_s_config_files_load(tmp_path: Path) -> None:
    """docs/emulator.md's TOML blocks (the several-apps file, the key rotation's first step, the operations settings)
    are files `relay emulator --config` takes as they are written."""
    fenced = re.compile(r"^ *```toml\n(.*?)^ *```$", re.MULTILINE | re.DOTALL)
    toml_blocks = [textwrap.dedent(block) for block in fenced.findall((DOCS / "emulator.md").read_text())]
    assert len(toml_blocks) == 3
    path = tmp_path / "emulator.toml"
    loaded = []
    for block in toml_blocks:
        path.write_text(block)
        loaded.append(load_config(path, defaults=EmulatorConfig(apps=(App("9", "k", "s"),))))
    assert [app.app_id for app in loaded[0].apps] == ["1", "2"]
    assert loaded[1].apps[0].keys == ["shop-key", "shop-key-2026"]


async def test_the_emulator_page_shows_health_and_ready_bodies_as_served(start_emulator: StartEmulator) -> None:
    """docs/emulator.md showed `{"status": "ready"}`, a body the emulator never sends (a check comparing the text
    failed): each body is shown as it comes."""
    page = (DOCS / "emulator.md").read_text()
    running = await start_emulator()
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        for path in ("/health", "/ready"):
            response = await http.get(path)
            assert f"`GET {path}`: 200 `{response.text}`" in page, response.text


def test_the_emulator_page_s_usage_example_is_a_file_relay_cost_reads_as_it_says() -> None:
    """Its users_sketch held no users beside "unique_users": 2, a pair the emulator never writes."""
    page = (DOCS / "emulator.md").read_text()
    (example,) = [body for lang, body in blocks(DOCS / "emulator.md") if lang == "json" and '"users_sketch"' in body]
    app = json.loads(example)["apps"]["1"]
    assert UserSketch.decode(app["users_sketch"]).estimate() == app["unique_users"] == 2
    assert "`GET /usage`" in page


# docs/migration.md "From soketi": its converter, run as the page defines it.
def soketi_converter() -> dict[str, Any]:
    (body,) = [
        body for lang, body in blocks(DOCS / "migration.md") if lang == "python" and "def soketi_to_toml" in body
    ]
    namespace: dict[str, Any] = {"__name__": "docs"}
    exec(compile(body, str(DOCS / "migration.md"), "exec"), namespace)
    return namespace


def converted(soketi_config: dict[str, Any], tmp_path: Path) -> tuple[EmulatorConfig, list[str], Path]:
    """soketi's config through the page's converter, loaded as `relay emulator --config` loads the file."""
    text, dropped = soketi_converter()["soketi_to_toml"](soketi_config)
    path = tmp_path / "emulator.toml"
    path.write_text(text)
    return load_config(path, defaults=EmulatorConfig(apps=(App("default", "app-key", "app-secret"),))), dropped, path


SHOP = {"id": "shop", "key": "shop-key", "secret": "shop-secret"}


async def test_a_converted_soketi_app_without_enable_client_messages_refuses_client_events(tmp_path: Path) -> None:
    """soketi's enableClientMessages defaults to false, the emulator's client_events to true: the converter wrote no
    line for an app that left it out, and the emulator it fed relayed client-* events soketi had refused."""
    config, dropped, path = converted({"appManager.array.apps": [SHOP]}, tmp_path)
    (app,) = config.apps
    assert app.client_events is False
    assert dropped == ["app shop: maxClientEventsPerSecond (no limit)"]  # soketi's default: the emulator has one
    emulator = await EmulatorProcess.start("--config", str(path))
    try:
        client = await ws_client(f"ws://127.0.0.1:{emulator.port}/app/shop-key?protocol=7")
        await client.subscribe("private-orders", app)
        await client.send("client-typing", {"who": "meera"}, channel="private-orders")
        error = await client.expect("pusher:error")
        assert "Client events are not enabled" in error["data"]["message"]
        await client.close()
    finally:
        await emulator.stop()


def test_soketis_other_defaults_are_written_out(tmp_path: Path) -> None:
    """Every soketi default that is not the emulator's is written: 100 KB events (the emulator's 10 KiB refused
    client events soketi took), 2 KB of presence member info (1 KiB), and the rest as soketi has them; soketi's
    "no limit" for connections and the HTTP API is the emulator's default too, so nothing is reported for those."""
    config, dropped, _ = converted({"appManager.array.apps": [SHOP]}, tmp_path)
    (app,) = config.apps
    assert (app.enabled, app.max_connections, app.api_rate_limit) == (True, None, None)
    limits = app.limits
    assert (limits.max_event_bytes, limits.max_user_info_bytes) == (100 * 1024, 2 * 1024)
    assert (limits.max_presence_members, limits.max_channel_name, limits.max_event_name) == (100, 200, 200)
    assert (limits.max_channels_per_event, limits.max_batch_events) == (100, 10)
    assert dropped == ["app shop: maxClientEventsPerSecond (no limit)"]


@pytest.mark.parametrize(
    "server_wide",
    [
        {"presence.maxMembersPerChannel": 50, "eventLimits.maxPayloadInKb": 20},
        {"presence": {"maxMembersPerChannel": 50}, "eventLimits": {"maxPayloadInKb": 20}},
    ],
    ids=["dotted", "nested"],
)
def test_soketis_server_wide_limits_are_the_apps_defaults(server_wide: dict[str, Any], tmp_path: Path) -> None:
    """soketi takes an app's limit from the server-wide option when the app does not set it."""
    apps = [SHOP, {"id": "2", "key": "k2", "secret": "s2", "maxPresenceMembersPerChannel": 7}]
    config, _, _ = converted({**server_wide, "appManager.array.apps": apps}, tmp_path)
    assert [(app.limits.max_presence_members, app.limits.max_event_bytes) for app in config.apps] == [
        (50, 20 * 1024),
        (7, 20 * 1024),
    ]


@pytest.mark.parametrize(
    "soketi_config",
    [
        {"appManager": {"array": {"apps": [{**SHOP, "enableClientMessages": True, "maxConnections": 500}]}}},
        {
            "appManager": {
                "driver": "array",
                "array": {"apps": [{**SHOP, "enableClientMessages": True, "maxConnections": 500}]},
            }
        },
    ],
    ids=["nested", "nested with the driver"],
)
def test_soketis_nested_config_is_converted(soketi_config: dict[str, Any], tmp_path: Path) -> None:
    """A config.json written nested gave an empty file and reported nothing dropped."""
    dotted = {"appManager.array.apps": soketi_config["appManager"]["array"]["apps"]}
    config, dropped, _ = converted(soketi_config, tmp_path)
    (app,) = config.apps
    assert (app.app_id, app.key, app.secret, app.client_events, app.max_connections) == (
        "shop", "shop-key", "shop-secret", True, 500,
    )  # fmt: skip
    assert soketi_converter()["soketi_to_toml"](soketi_config) == soketi_converter()["soketi_to_toml"](dotted)
    assert dropped == ["app shop: maxClientEventsPerSecond (no limit)"]


@pytest.mark.parametrize(
    "soketi_config",
    [
        {},
        {"port": 6001},
        {"appManager.array.apps": []},
        {"appManager": {"driver": "mysql"}},
        {"appManager.apps": [SHOP]},
    ],
    ids=["empty", "no apps key", "empty list", "another driver", "misspelt key"],
)
def test_a_soketi_config_without_apps_is_an_error_not_an_empty_file(soketi_config: dict[str, Any]) -> None:
    """An empty emulator.toml runs the emulator's default app, whose secret (app-secret) is public."""
    with pytest.raises(ValueError, match=r'no apps found under "appManager\.array\.apps" or \{"appManager"'):
        soketi_converter()["soketi_to_toml"](soketi_config)


def test_a_soketi_app_without_a_secret_or_with_a_lambda_webhook(tmp_path: Path) -> None:
    """soketi fills a missing secret with its public default, app-secret: the converter refuses the app rather than
    write one; a webhook to an AWS Lambda function (no url) is reported dropped, not a KeyError."""
    convert = soketi_converter()["soketi_to_toml"]
    with pytest.raises(ValueError, match=r"app #1 has no secret"):
        convert({"appManager.array.apps": [{"id": "shop", "key": "shop-key"}]})
    lambda_hook = {"lambda_function": "on-occupied", "event_types": ["channel_occupied"]}
    config, dropped, _ = converted({"appManager.array.apps": [{**SHOP, "webhooks": [lambda_hook]}]}, tmp_path)
    assert config.apps[0].webhooks == ()
    assert "app shop: a webhook without a url (on-occupied)" in dropped


async def test_a_soketi_app_with_user_authentication_closes_sockets_that_do_not_sign_in(tmp_path: Path) -> None:
    """soketi's enableUserAuthentication (with the server-wide userAuthenticationTimeout, in ms) closes a socket that
    has not signed in by then with 4009; the emulator's user_authentication_timeout does the same. The converter
    reported it dropped ("app shop: enableUserAuthentication"), and the emulator it fed kept such sockets open."""
    soketi_config = {
        "userAuthenticationTimeout": 1000,
        "appManager.array.apps": [{**SHOP, "enableUserAuthentication": True}],
    }
    config, dropped, path = converted(soketi_config, tmp_path)
    (app,) = config.apps
    assert app.user_authentication_timeout == 1.0
    assert dropped == ["app shop: maxClientEventsPerSecond (no limit)"]
    emulator = await EmulatorProcess.start("--config", str(path))
    try:
        url = f"ws://127.0.0.1:{emulator.port}/app/shop-key?protocol=7"
        anonymous, authorized = await ws_client(url), await ws_client(url)
        await authorized.subscribe("private-orders", app)
        error = await anonymous.expect("pusher:error", within=5)
        assert error["data"]["code"] == 4009
        await anonymous.ws.wait_closed()
        assert anonymous.ws.close_code == 4009
        await authorized.send("pusher:ping", {})
        assert (await authorized.expect("pusher:pong"))["event"] == "pusher:pong"  # still open
        await authorized.close()
    finally:
        await emulator.stop()
    without, _, _ = converted({"appManager.array.apps": [{**SHOP, "enableUserAuthentication": False}]}, tmp_path)
    assert without.apps[0].user_authentication_timeout is None  # soketi's default: no timeout, as the emulator's


def test_the_cost_api_example_gives_what_its_comments_say() -> None:
    """docs/cost.md's Python block: each line commented with a value evaluates to that value."""
    (body,) = [body for lang, body in blocks(DOCS / "cost.md") if lang == "python"]
    namespace: dict[str, Any] = {}
    checked = 0
    for line in body.splitlines():
        code, _, comment = line.partition("  # ")
        if comment and not code.startswith(("from", "import")):
            assert eval(code, namespace) == ast.literal_eval(comment), line
            checked += 1
        else:
            exec(line, namespace)
    assert checked == 2


def test_the_usage_document_shown_is_one_relay_cost_reads_with_the_summary_s_counts() -> None:
    """docs/emulator.md's usage document parses as a usage file, and its day counts the Pusher messages the
    summary beside it gives (18)."""
    (document,) = [body for lang, body in blocks(DOCS / "emulator.md") if lang == "json" and '"version": 2' in body]
    usage = parse_usage(json.loads(document))
    (day,) = usage.apps["1"].days.values()
    assert day.pusher_messages == 18
    assert day.measured_seconds == 31
    assert '{"1": {"2026-11-29": {"pusher_messages": 18,' in (DOCS / "emulator.md").read_text()

"""examples/order_tracking's backend without a browser: what it publishes (memory provider, relay.testing), who its
channel rules let in, the order state machine, the settings each provider gives the pages, and the one command."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import websockets

from examples.order_tracking import app as order_tracking_app
from examples.order_tracking import create_app
from examples.order_tracking.app import COOKIE, PUSHER_JS_CDN, Sessions
from relay import User
from relay.protocol.signing import channel_auth
from relay.testing import assert_published, published, store_of
from tests.examples.conftest import SITES
from tests.test_cli import taken_port as taken_port

MEMORY = "memory://order-tracking-tests"


@pytest.fixture
def app() -> Iterator[object]:
    application = create_app(MEMORY, session_secret=b"tests")
    store_of(application.state.relay).clear()
    yield application
    store_of(application.state.relay).clear()


def browser(app: object) -> httpx.Client:
    """One visitor of ``app``: a client with its own cookies."""
    return SITES.visitor(app)  # type: ignore[arg-type]


def staff(app: object, role: str, name: str) -> httpx.Client:
    client = browser(app)
    assert client.post("/api/session", json={"role": role, "name": name}).status_code == 200
    return client


def auth(client: httpx.Client, channel: str) -> httpx.Response:
    return client.post("/pusher/auth", data={"socket_id": "123.456", "channel_name": channel})


def test_an_order_is_published_to_the_kitchen_and_its_status_to_the_order_channel(app: object) -> None:
    """order-placed on private-kitchen; each status change on the order's private channel, the kitchen's and the
    delivery board's, in one publish; a 409 for a skipped step and a 403 for the wrong role publish nothing."""
    customer, kitchen, delivery = browser(app), staff(app, "kitchen", "Asha"), staff(app, "delivery", "Ravi")
    placed = customer.post("/api/orders", json={"name": "Meera", "items": ["appam-stew", "payasam"]})
    assert placed.status_code == 201
    order = placed.json()
    assert (order["id"], order["status"], order["total"], order["live"]) == (1, "placed", 300, True)
    relay_client = app.state.relay  # type: ignore[attr-defined]
    assert_published("private-kitchen", "order-placed", client=relay_client)
    assert [p.channel for p in published(client=relay_client)] == ["private-kitchen"]

    assert delivery.post("/api/orders/1/status", json={"status": "preparing"}).status_code == 403
    assert kitchen.post("/api/orders/1/status", json={"status": "ready"}).status_code == 409
    assert customer.post("/api/orders/1/status", json={"status": "preparing"}).status_code == 403
    assert len(published(client=relay_client)) == 1

    for who, status in ((kitchen, "preparing"), (kitchen, "ready"), (delivery, "picked_up"), (delivery, "delivered")):
        answer = who.post("/api/orders/1/status", json={"status": status})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == status
    changes = published(order["channel"], "status-changed", client=relay_client)
    assert [json.loads(p.data)["status"] for p in changes] == ["preparing", "ready", "picked_up", "delivered"]
    for channel in ("private-kitchen", "private-delivery"):
        assert len(published(channel, "status-changed", client=relay_client)) == 4
    assert [step["by"] for step in customer.get("/api/orders/1").json()["history"]] == [
        "Meera",
        "Asha",
        "Asha",
        "Ravi",
        "Ravi",
    ]


def test_channel_rules(app: object) -> None:
    """The customer gets their own order's channel only; kitchen staff the kitchen channels (presence as their
    name); delivery staff the delivery board and every order; anonymous visitors nothing private."""
    customer, other = browser(app), browser(app)
    kitchen, delivery = staff(app, "kitchen", "Asha"), staff(app, "delivery", "Ravi")
    mine = customer.post("/api/orders", json={"name": "Meera", "items": ["karimeen"]}).json()["channel"]
    theirs = other.post("/api/orders", json={"name": "Anil", "items": ["payasam"]}).json()["channel"]
    run = mine.removesuffix("-1")
    assert re.fullmatch(r"private-order-[0-9a-f]{8}", run) and theirs == f"{run}-2"

    assert auth(customer, mine).status_code == 200
    assert auth(customer, theirs).json() == {"error": f"access to {theirs!r} denied"}
    assert auth(customer, theirs).status_code == 403
    assert auth(customer, f"{run}-99").status_code == 403
    assert auth(customer, "private-kitchen").status_code == 403
    assert auth(customer, "presence-kitchen").status_code == 403

    joined = auth(kitchen, "presence-kitchen").json()
    member = json.loads(joined["channel_data"])
    assert member["user_info"] == {"name": "Asha"} and member["user_id"].startswith("kitchen-")
    assert joined["auth"].startswith(f"{'memory-key'}:")
    assert auth(kitchen, "private-kitchen").status_code == 200
    assert auth(kitchen, "private-delivery").status_code == 403
    assert auth(delivery, "private-delivery").status_code == 200
    assert auth(delivery, "presence-kitchen").status_code == 403
    assert auth(delivery, theirs).status_code == 200
    assert auth(browser(app), mine).status_code == 403
    assert auth(browser(app), "private-unknown").json() == {"error": "no rule allows 'private-unknown'"}

    assert customer.get("/api/orders/2").status_code == 404  # not theirs
    assert [o["id"] for o in customer.get("/api/orders").json()] == [1]
    assert [o["id"] for o in delivery.get("/api/orders").json()] == [1, 2]
    assert browser(app).get("/api/orders").status_code == 401
    assert customer.post("/api/orders", json={"name": "Meera", "items": ["pizza"]}).status_code == 422


def test_an_order_number_used_again_after_a_restart_is_another_channel() -> None:
    """The orders live in memory, so after a restart #1 is someone else's: a page still subscribed to the last run's
    #1 (the emulator kept it) is not sent it, and its customer cannot subscribe to it."""
    before = create_app(MEMORY, session_secret=b"tests")
    meera = browser(before)
    earlier = meera.post("/api/orders", json={"name": "Meera", "items": ["karimeen"]}).json()
    after = create_app(MEMORY, session_secret=b"tests")  # the same cookie key: Meera is still signed in
    placed = browser(after).post("/api/orders", json={"name": "Anil", "items": ["payasam"]}).json()
    assert (earlier["id"], placed["id"]) == (1, 1)
    assert earlier["channel"] != placed["channel"]
    meera_now = browser(after)
    meera_now.cookies = meera.cookies
    assert auth(meera_now, earlier["channel"]).json() == {"error": f"access to {earlier['channel']!r} denied"}
    assert auth(meera_now, placed["channel"]).status_code == 403


def test_a_provider_outage_keeps_the_order() -> None:
    """With the provider unreachable the order is still taken (``live: false``); the pages re-read it when they
    reconnect."""
    app = create_app("emulator://app-key:app-secret@127.0.0.1:9/apps/1", session_secret=b"tests")
    with browser(app) as customer:
        answer = customer.post("/api/orders", json={"name": "Meera", "items": ["payasam"]})
    assert answer.status_code == 201
    assert (answer.json()["status"], answer.json()["live"]) == ("placed", False)


def test_browser_libraries_are_served_from_a_local_build_else_from_their_cdn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build named by ``ABLY_JS_PATH``/``PUSHER_JS_PATH`` (or found in an npm install) is served as is; without one
    the page is sent to the library's CDN."""
    monkeypatch.setattr(order_tracking_app, "ROOT", tmp_path)  # no npm installs there
    local_ably = tmp_path / "ably.min.js"
    local_ably.write_text("window.Ably = {};")
    monkeypatch.setenv("ABLY_JS_PATH", str(local_ably))
    monkeypatch.delenv("PUSHER_JS_PATH", raising=False)
    with browser(create_app("memory://", session_secret=b"tests")) as page:
        ably = page.get("/vendor/ably.min.js", follow_redirects=False)
        pusher = page.get("/vendor/pusher.min.js", follow_redirects=False)
        unknown = page.get("/vendor/socket.io.min.js", follow_redirects=False)
    assert (ably.status_code, ably.text) == (200, "window.Ably = {};")
    assert ably.headers["content-type"].startswith("application/javascript")
    assert (pusher.status_code, pusher.headers["location"]) == (307, PUSHER_JS_CDN)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("relay_url", "expected"),
    [
        (
            "emulator://app-key:app-secret@127.0.0.1:6001/apps/1",
            {"provider": "emulator", "key": "app-key", "wsHost": "127.0.0.1", "wsPort": 6001, "forceTLS": False},
        ),
        ("pusher://key:secret@eu/apps/1", {"provider": "pusher", "key": "key", "cluster": "eu", "forceTLS": True}),
        (
            "ably://app.key:secret@rest.ably.io",
            {"provider": "ably", "authUrl": "/ably/token", "authMethod": "POST", "clientOptions": None},
        ),
        (
            "ably://app.key:secret@127.0.0.1:6001?tls=false",
            {
                "provider": "ably",
                "authUrl": "/ably/token",
                "library": "/vendor/ably.min.js",
                "clientOptions": {"endpoint": "127.0.0.1", "port": 6001, "tls": False, "fallbackHosts": []},
            },
        ),
    ],
)
def test_switching_providers_is_a_change_of_relay_url(relay_url: str, expected: dict[str, object]) -> None:
    """/api/config gives the pages what the configured provider needs (Pusher: the cluster, no host; the emulator:
    its host and port; Ably: relay's token URL, and the endpoint's ably-js options unless it is Ably's cloud), and the
    auth endpoint signs for that provider."""
    app = create_app(relay_url, session_secret=b"tests")
    settings = browser(app).get("/api/config").json()
    assert {name: settings.get(name) for name in expected} == expected
    if expected["provider"] == "pusher":
        assert "wsHost" not in settings
        assert settings["channelAuthEndpoint"] == "/pusher/auth"
    # An order placed without publishing (these providers' hosts are not reachable from the tests).
    meera = User("customer-meera", {"name": "Meera", "role": "customer"})
    channel = app.state.orders.create(meera, ["payasam"]).channel  # type: ignore[attr-defined]
    customer = browser(app)
    customer.cookies.set(COOKIE, Sessions(b"tests").cookie_for(meera))
    if expected["provider"] == "ably":
        token = customer.post("/ably/token", data={"channel": channel}).json()
        assert token["keyName"] == "app.key"
        assert json.loads(token["capability"]) == {channel: ["subscribe"]}  # the page only listens
        assert token["clientId"] == "customer-meera"
        assert customer.post("/ably/token", data={"channel": "private-kitchen"}).status_code == 403
    else:
        body = auth(customer, channel).json()
        assert body["auth"].startswith(f"{expected['key']}:")


@asynccontextmanager
async def one_command(*args: str, env: dict[str, str]) -> AsyncIterator[tuple[str, int, str]]:
    """``python -m examples.order_tracking ARGS`` with an emulator in it, on free ports: the site it prints, its
    emulator's port and its banner, while it runs; SIGTERM must then stop it with status 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.order_tracking", "--port", "0", "--emulator-port", "0", *args,
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        banner = ""
        while "realtime:" not in banner:
            banner += (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        site = re.search(r"Order tracking on (http://\S+)", banner).group(1)  # type: ignore[union-attr]
        relay_url = re.search(r"emulator://app-key:\*\*\*@(?:127\.0\.0\.1|\[::1\]):(\d+)/apps/1", banner)
        assert relay_url is not None, banner
        emulator_port = int(relay_url.group(1))
        yield site, emulator_port, banner
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_the_one_command_runs_the_app_and_an_emulator(tmp_path: Path) -> None:
    """``python -m examples.order_tracking`` without RELAY_URL: an emulator in the same process, the pages and the
    API on the printed address; an order is published live; SIGTERM stops it with status 0. PUSHER_JS_PATH is the
    example's own setting, not a provider's: it does not stop the emulator from starting."""
    local_copy = tmp_path / "pusher.min.js"
    local_copy.write_text("/* a local pusher-js */")
    async with one_command(env=without_provider(PUSHER_JS_PATH=str(local_copy))) as (site, emulator_port, banner):
        assert f"kitchen:    {site}/kitchen" in banner
        async with httpx.AsyncClient(base_url=site) as http:
            assert (await http.get("/api/config")).json()["wsPort"] == emulator_port
            page = await http.get("/kitchen")
            assert page.status_code == 200 and "Kitchen display" in page.text
            assert (await http.get("/vendor/pusher.min.js")).status_code in (200, 307)
            order = await http.post("/api/orders", json={"name": "Meera", "items": ["payasam"]})
            assert order.json()["live"] is True


async def test_on_every_address_the_pages_reach_the_emulator_where_they_reached_the_app() -> None:
    """``--host 0.0.0.0`` (to try the pages on a phone): the banner links to 127.0.0.1 and tells where else to go
    (it printed http://0.0.0.0:8000/, which browsers refuse); the emulator listens there too, and the pages are told to
    connect to it at the address they were loaded from. It listened on loopback only, and the pages were sent there:
    another machine's own. 127.0.0.2 stands for the machine's network address (every 127.x is this machine, but only
    a server on every address answers there). The emulator's secret is the process's own: the documented default
    one would let anyone there sign for any order's channel."""
    async with one_command("--host", "0.0.0.0", env=without_provider()) as (site, emulator_port, banner):
        # the banner's links open on this machine (a browser refuses http://0.0.0.0), and it says where else to go
        port = site.rpartition(":")[2]
        assert site == f"http://127.0.0.1:{port}" and f"elsewhere:  http://<this machine's address>:{port}/" in banner
        page_address = site.replace("127.0.0.1", "127.0.0.2")
        async with httpx.AsyncClient(base_url=page_address) as http:
            config = (await http.get("/api/config")).json()
            assert (config["wsHost"], config["wsPort"]) == ("127.0.0.2", emulator_port)
            order = await http.post("/api/orders", json={"name": "Meera", "items": ["payasam"]})
            assert order.json()["live"] is True  # the app publishes over loopback
        async with websockets.connect(f"ws://127.0.0.2:{emulator_port}/app/app-key?protocol=7") as socket:
            established = json.loads(await socket.recv())
            assert established["event"] == "pusher:connection_established"
            # Someone else on the network, signing with the documented default secret: the emulator's is its own
            socket_id = json.loads(established["data"])["socket_id"]
            forged = channel_auth("app-key", "app-secret", socket_id, order.json()["channel"])
            await socket.send(
                json.dumps({"event": "pusher:subscribe", "data": {"channel": order.json()["channel"], "auth": forged}})
            )
            refusal = json.loads(await socket.recv())
            assert (refusal["event"], refusal["data"]["status"]) == ("pusher:subscription_error", 401)


def without_provider(**variables: str) -> dict[str, str]:
    """This environment without any provider configuration, plus ``variables``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))}
    return {**env, **variables}


async def refused(*args: str, env: dict[str, str]) -> str:
    """Run ``python -m examples.order_tracking ARGS``, which must exit 2 with one configuration error and serve
    nothing: its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.order_tracking", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert b"realtime:" not in stdout, f"it served instead of refusing: {stdout.decode()}"
    assert b"Traceback" not in stderr, stderr.decode()
    assert process.returncode == 2, (process.returncode, stderr.decode())
    assert stderr.startswith(b"order-tracking: configuration error: "), stderr.decode()
    return stderr.decode()


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"PUSHER_APP_ID": "1", "PUSHER_KEY": "k"}, "set PUSHER_SECRET too"),
        (
            {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s", "PUSHER_CLUSTER": "api-eu.pusher.com"},
            "PUSHER_CLUSTER must be a cluster's short name",
        ),
        ({"PUSHER_CLUSTER": "eu"}, "PUSHER_CLUSTER set: set PUSHER_APP_ID, PUSHER_KEY and PUSHER_SECRET too"),
        ({"ABLY_API_KEY": "not-a-key"}, "ABLY_API_KEY looks like APPID.KEYID:SECRET"),
        ({"RELAY_URL": "pusher://k@eu/apps/1"}, "pusher:// URL needs credentials"),
    ],
    ids=["pusher without secret", "pusher cluster as host", "pusher cluster alone", "ably key", "relay url"],
)
async def test_a_provider_configured_wrongly_is_refused_not_replaced_by_an_emulator(
    variables: dict[str, str], named: str
) -> None:
    """Every configuration error used to start the in-process emulator, printing "an emulator in this process" to a
    user who had set the PUSHER_* variables: only no provider configuration at all means the emulator."""
    stderr = await refused("--port", "0", "--emulator-port", "0", env=without_provider(**variables))
    assert named in stderr


async def test_an_emulator_port_in_use_names_the_flag_and_relay_url(taken_port: int) -> None:
    """Following the README, `relay emulator` already holds 6001: that was OSError [Errno 98] as a traceback."""
    stderr = await refused("--port", "0", "--emulator-port", str(taken_port), env=without_provider())
    assert f"cannot listen on 127.0.0.1:{taken_port}: Address already in use; it is the emulator's port" in stderr
    assert "--emulator-port" in stderr and "RELAY_URL" in stderr


async def test_a_web_port_in_use_names_the_flag(taken_port: int) -> None:
    stderr = await refused("--port", str(taken_port), "--emulator-port", "0", env=without_provider())
    assert f"cannot listen on 127.0.0.1:{taken_port}: Address already in use; it is the web app's port" in stderr
    assert "--port" in stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--port", "70000"], "--port must be a whole number, 0–65535, got 70000"),  # an OverflowError traceback
        (["--port", "-1"], "--port must be a whole number, 0–65535, got -1"),
        (["--emulator-port", "70000"], "--emulator-port must be a whole number, 0–65535, got 70000"),  # "port …"
        (["--host", "[::1]"], "--host must be an address without brackets (::1, not [::1])"),
    ],
    ids=["port over 65535", "negative port", "emulator port", "host in brackets"],
)
async def test_a_flag_out_of_range_is_refused_naming_it(flags: list[str], named: str) -> None:
    stderr = await refused(*flags, env=without_provider())
    assert named in stderr


async def test_on_ipv6_loopback_the_printed_site_is_a_url() -> None:
    """`--host ::1` printed http://::1:PORT, which no browser opens."""
    async with one_command("--host", "::1", env=without_provider()) as (site, _, _):
        assert site.startswith("http://[::1]:")
        async with httpx.AsyncClient(base_url=site) as http:
            assert (await http.get("/kitchen")).status_code == 200

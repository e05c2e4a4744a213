"""An app's extra key pairs (``extra_keys``), for rotating its key and secret: each is accepted wherever the app's
own is (the WebSocket path, signed HTTP API requests, channel and sign-in auth, Ably keys) by the official clients,
webhooks stay signed with the app's own pair, and a config that would make a key ambiguous is refused."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import httpx
import pusher  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import connect

from relay import cli
from relay.emulator.config import App, EmulatorConfig, InvalidSetting, KeyPair, Webhook, load_config
from relay.errors import ConfigError
from relay.protocol.signing import channel_auth, user_auth
from tests.ably.ablysupport import ACK, AUTH, CONNECTED, ERROR, HAS_PRESENCE, SYNC, ably_wire, jwt_token, open_wire
from tests.conftest import TEST_APP, StartEmulator
from tests.operations.support import Client, ws_client
from tests.webhook_receiver import Receiver

ENTER = 2  # an Ably PresenceMessage's action
NEW = KeyPair(key="new-key", secret="new-secret")
ROTATING = replace(TEST_APP, extra_keys=(NEW,))


def sdk(port: int, key: str, secret: str) -> pusher.Pusher:
    return pusher.Pusher(app_id="1", key=key, secret=secret, host="127.0.0.1", port=port, ssl=False)


async def test_both_key_pairs_publish_with_pusher_http_python_and_others_are_refused(
    start_emulator: StartEmulator,
) -> None:
    emulator = await start_emulator(app=ROTATING)
    subscriber = await ws_client(emulator.ws_url())
    await subscriber.subscribe("orders", ROTATING)
    for key, secret in ((TEST_APP.key, TEST_APP.secret), (NEW.key, NEW.secret)):
        await asyncio.to_thread(sdk(emulator.port, key, secret).trigger, "orders", "created", key)
        assert (await subscriber.expect("created"))["data"] == key

    with pytest.raises(pusher.errors.PusherBadAuth, match="auth_key is not this application's key"):
        await asyncio.to_thread(sdk(emulator.port, "gone-key", NEW.secret).trigger, "orders", "created", "x")
    with pytest.raises(pusher.errors.PusherBadAuth, match="invalid auth_signature"):  # the new key, the old secret
        await asyncio.to_thread(sdk(emulator.port, NEW.key, TEST_APP.secret).trigger, "orders", "created", "x")
    await asyncio.to_thread(sdk(emulator.port, NEW.key, NEW.secret).trigger, "orders", "created", "still")
    assert (await subscriber.expect("created"))["data"] == "still"


async def subscribed_with(client: Client, channel: str, auth: str, channel_data: str | None = None) -> dict[str, str]:
    data = {"channel": channel, "auth": auth}
    if channel_data is not None:
        data["channel_data"] = channel_data
    await client.send("pusher:subscribe", data)
    while True:
        frame = await client.next()
        if frame["event"] in ("pusher_internal:subscription_succeeded", "pusher:subscription_error"):
            return {"event": frame["event"], "data": frame["data"]}


async def test_connections_and_auth_signatures_take_either_key_pair(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=ROTATING)
    old_path = await ws_client(emulator.ws_url())
    new_path = await ws_client(emulator.ws_url(key=NEW.key))
    for client in (old_path, new_path):  # a backend signs with either pair, whichever key the page connected with
        for key, secret in ((TEST_APP.key, TEST_APP.secret), (NEW.key, NEW.secret)):
            channel = f"private-{key}"
            answer = await subscribed_with(client, channel, channel_auth(key, secret, client.socket_id, channel))
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        member = json.dumps({"user_id": "ann", "user_info": {}})
        auth = channel_auth(NEW.key, NEW.secret, client.socket_id, "presence-room", member)
        answer = await subscribed_with(client, "presence-room", auth, member)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer

    mixed = channel_auth(NEW.key, TEST_APP.secret, old_path.socket_id, "private-mixed")
    refused = await subscribed_with(old_path, "private-mixed", mixed)
    assert refused == {
        "event": "pusher:subscription_error",
        "data": {
            "type": "AuthError",
            "error": f"subscription to 'private-mixed': invalid signature: the string to sign is "
            f"'{old_path.socket_id}:private-mixed' (HMAC-SHA256 in hex, with the secret of key {NEW.key!r})",
            "status": 401,
        },
    }
    unknown = channel_auth("gone-key", NEW.secret, old_path.socket_id, "private-gone")
    refused = await subscribed_with(old_path, "private-gone", unknown)
    assert (
        refused["data"]["error"]
        == "subscription to 'private-gone': the auth token was signed for another application key"
    )

    user_data = json.dumps({"id": "ann"})
    await new_path.send(
        "pusher:signin", {"user_data": user_data, "auth": user_auth(NEW.key, NEW.secret, new_path.socket_id, user_data)}
    )
    assert (await new_path.expect("pusher:signin_success"))["data"]["user_data"] == user_data


async def test_a_connection_with_a_key_no_app_has_is_refused_with_4001(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=ROTATING)
    async with connect(emulator.ws_url(key="gone-key")) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert error["data"] == {"code": 4001, "message": "Application does not exist: no app has key 'gone-key'"}
        await asyncio.wait_for(ws.wait_closed(), 3)
        assert ws.close_code == 4001
    assert (await ws_client(emulator.ws_url(key=NEW.key))).socket_id


async def test_each_key_pair_is_an_ably_key(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=ROTATING)
    for api_key in (f"1.{TEST_APP.key}:{TEST_APP.secret}", f"1.{NEW.key}:{NEW.secret}"):
        ws, first = await open_wire(emulator, f"key={api_key}")
        assert first["action"] == CONNECTED, first
        await ws.close()
    ws, first = await open_wire(emulator, f"key=1.{NEW.key}:{TEST_APP.secret}")
    assert first["action"] == ERROR and first["error"]["code"] == 40101, first
    await ws.close()


async def test_webhooks_stay_signed_with_the_app_s_own_pair(start_emulator: StartEmulator, receiver: Receiver) -> None:
    app = replace(ROTATING, webhooks=(Webhook(url=receiver.url),), webhook_batch_ms=0)
    emulator = await start_emulator(app=app)
    client = await ws_client(emulator.ws_url(key=NEW.key))
    await client.subscribe("orders", app)
    [delivery] = await receiver.wait_for(1)
    assert delivery.headers["x-pusher-key"] == TEST_APP.key
    assert receiver.signed_by(TEST_APP.secret)
    assert receiver.events() == [{"name": "channel_occupied", "channel": "orders"}]


def test_extra_keys_come_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(
        '[[apps]]\napp_id = "1"\nkey = "old-key"\nsecret = "old-secret"\n'
        'extra_keys = [{ key = "new-key", secret = "new-secret" }]\n'
    )
    [app] = load_config(path, defaults=EmulatorConfig(apps=(TEST_APP,))).apps
    assert app.extra_keys == (NEW,)
    assert app.keys == ["old-key", "new-key"]
    assert app.key_pair("new-key") == ("new-key", "new-secret")
    assert app.key_pair("gone-key") == ("old-key", "old-secret")
    assert app.ably_api_keys == ["1.old-key:old-secret", "1.new-key:new-secret"]
    assert "new-secret" not in repr(app.extra_keys)
    path.write_text(
        '[[apps]]\napp_id = "1"\nkey = "old-key"\nsecret = "old-secret"\n'
        '[[apps.extra_keys]]\nkey = "new-key"\nsecret = "new-secret"\n'
    )
    [tables] = load_config(path, defaults=EmulatorConfig(apps=(TEST_APP,))).apps
    assert tables.extra_keys == (NEW,)  # the [[apps.extra_keys]] form docs/emulator.md gives too


BAD_FILES = {
    "not a list": (
        'extra_keys = { key = "k", secret = "s" }',
        "extra_keys must be an array like [{ key = '…', secret = '…' }] (or [[apps.extra_keys]] tables), got a table",
    ),
    "not a table": (
        'extra_keys = ["new-key:new-secret"]',
        "apps[0].extra_keys[0]: each extra key is a table like { key = '…', secret = '…' }, got a string",
    ),
    "no secret": ('extra_keys = [{ key = "new-key" }]', "apps[0].extra_keys[0]: secret is required"),
    "an unknown field": (
        'extra_keys = [{ key = "k", secret = "s", app_id = "2" }]',
        "apps[0].extra_keys[0]: unknown key(s) app_id; allowed: key, secret",
    ),
    "an empty secret": ('extra_keys = [{ key = "k", secret = "" }]', "apps[0].extra_keys[0]: secret"),
    "the app's own key": (
        'extra_keys = [{ key = "old-key", secret = "s" }]',
        "apps[0]: extra_keys names the key 'old-key' twice (the app's own key included)",
    ),
}


@pytest.mark.parametrize("problem", list(BAD_FILES))
def test_a_malformed_extra_key_is_refused_with_where_it_is(tmp_path: Path, problem: str) -> None:
    line, message = BAD_FILES[problem]
    path = tmp_path / "emulator.toml"
    path.write_text(f'[[apps]]\napp_id = "1"\nkey = "old-key"\nsecret = "old-secret"\n{line}\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, defaults=EmulatorConfig(apps=(TEST_APP,)))
    assert message in str(refused.value)


def test_a_key_two_apps_would_share_is_refused() -> None:
    other = App(app_id="2", key="new-key", secret="s2")
    with pytest.raises(ConfigError, match=r"two apps share the key 'new-key' \(app_id '1' and app_id '2'\)"):
        EmulatorConfig(apps=(ROTATING, other))
    with pytest.raises(InvalidSetting, match="extra_keys holds KeyPair"):
        App(app_id="3", key="k", secret="s", extra_keys=(("k2", "s2"),))  # type: ignore[arg-type]


async def test_an_ably_member_is_seen_whichever_key_each_client_uses(start_emulator: StartEmulator) -> None:
    """One Ably side per app: presence entered with one key is in the REST answer, the SYNC and the occupancy of
    clients using the other."""
    emulator = await start_emulator(app=ROTATING)
    old_key, new_key = f"1.{TEST_APP.key}:{TEST_APP.secret}", f"1.{NEW.key}:{NEW.secret}"
    ann = await ably_wire(emulator, f"key={old_key}&clientId=ann")
    await ann.attach("room")
    await ann.presence("room", {"action": ENTER, "clientId": "ann", "data": "here"})
    while (await ann.recv())["action"] != ACK:  # its own PRESENCE comes back first
        pass
    bob = await ably_wire(emulator, f"key={new_key}&clientId=bob")
    attached = await bob.attach("room")
    assert attached["flags"] & HAS_PRESENCE
    sync = await bob.expect(SYNC)
    assert [item["clientId"] for item in sync["presence"]] == ["ann"]
    async with httpx.AsyncClient(base_url=emulator.http_url, auth=tuple(new_key.split(":"))) as http:  # type: ignore[arg-type]
        members = (await http.get("/channels/room/presence")).json()
        assert [member["clientId"] for member in members] == ["ann"]
        occupancy = (await http.get("/channels/room")).json()["status"]["occupancy"]["metrics"]
    assert (occupancy["subscribers"], occupancy["presenceMembers"]) == (2, 1)


async def test_an_ably_connection_reauthorizing_with_another_key_s_token_is_told_why(
    start_emulator: StartEmulator,
) -> None:
    emulator = await start_emulator(app=ROTATING)
    ann = await ably_wire(emulator, f"accessToken={jwt_token(client_id='ann')}")
    other = jwt_token(client_id="ann", key_name=f"1.{NEW.key}", secret=NEW.secret)
    await ann.send({"action": AUTH, "auth": {"accessToken": other}})
    refused = await ann.expect(ERROR)
    assert refused["error"]["code"] == 40102
    assert refused["error"]["message"] == (
        "Incompatible credentials: the new token is signed with another key than the connection's"
    )


def test_an_explicit_ably_key_stands_apart_from_the_extra_pairs() -> None:
    """With ``ably_key`` set, the extra pairs are not Ably keys, so swapping the pairs (rotation's step 3) keeps the
    Ably key name and is not refused as a clash."""
    app = replace(ROTATING, ably_key="1.shop:ably-secret")
    assert app.ably_api_keys == ["1.shop:ably-secret"]
    swapped = replace(app, key=NEW.key, secret=NEW.secret, extra_keys=(KeyPair(TEST_APP.key, TEST_APP.secret),))
    assert EmulatorConfig(apps=(swapped,)).apps[0].ably_api_keys == ["1.shop:ably-secret"]


@pytest.mark.parametrize("key", ["new:key", "new/key", "new key", "new%20"])
def test_a_key_that_cannot_be_in_a_path_or_a_signature_is_refused(key: str) -> None:
    with pytest.raises(InvalidSetting, match=r"goes in /app/\{key\} and before the ':' of signatures"):
        KeyPair(key=key, secret="s")
    with pytest.raises(InvalidSetting, match=r"goes in /app/\{key\} and before the ':' of signatures"):
        App(app_id="1", key=key, secret="s")


def test_every_secret_of_an_app_is_redacted_from_the_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(
        '[[apps]]\napp_id = "1"\nkey = "own-key"\nsecret = "own-secret-1"\n'
        'extra_keys = [{ key = "old-key", secret = "old-secret-2" }]\n'
        '[[apps]]\napp_id = "2"\nkey = "k2"\nsecret = "s2-secret-3"\nably_key = "2.ably:ably-secret-4"\n'
    )
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        cli._emulator_config(cli.build_parser().parse_args(["emulator", "--config", str(path)]))
        logging.getLogger("relay.emulator").warning(
            "%s %s %s %s", "own-secret-1", "old-secret-2", "s2-secret-3", "ably-secret-4"
        )
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    logged = capsys.readouterr().err
    assert "*** *** *** ***" in logged
    assert "secret-" not in logged


def test_config_errors_do_not_echo_an_extra_key_s_secret(tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nextra_keys = ["k2:TOPSECRET"]\n')
    with pytest.raises(ConfigError) as refused:
        load_config(path, defaults=EmulatorConfig(apps=(TEST_APP,)))
    assert "TOPSECRET" not in str(refused.value)
    with pytest.raises(InvalidSetting) as refused_in_code:
        App(app_id="1", key="k", secret="s", ably_key="no-colon-TOPSECRET")
    assert "TOPSECRET" not in str(refused_in_code.value)

"""One Ably token for several channels (``channels``, a JSON array, as ably-js sends ``authParams: {channels:
JSON.stringify(names)}``): the gateway's ``/v1/auth/channel`` and relay.web's ``/ably/token`` sign one TokenRequest for
the channels the rules allow, so a page needs one ably-js client, one connection (which Ably counts and bills), rather
than one per channel."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from ablysupport import APP, KEY_NAME, KEY_SECRET, run_node
from fastapi import FastAPI

from relay import AsyncRelay
from relay.errors import ProtocolError
from relay.gateway import GatewaySettings
from relay.models import User
from relay.protocol.ably import parse_capability, verify_token_request
from relay.rules import ChannelRules
from relay.web import auth_router
from tests.conftest import StartEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, hs_jwt
from tests.gateway.conftest import start_gateway as start_gateway

ABLY_URL = f"ably://{KEY_NAME}:{KEY_SECRET}@127.0.0.1:9?tls=false"  # signing only: nothing is sent to it


def ably_url(port: int) -> str:
    return f"ably://{KEY_NAME}:{KEY_SECRET}@127.0.0.1:{port}?tls=false"


async def test_one_ably_js_client_serves_several_channels_and_widens_its_token_in_place(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    emulator = await start_emulator(app=APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    run = await run_node(
        "gateway_channels_token.mjs",
        emulator,
        env={"RELAY_GATEWAY_URL": gateway.url, "RELAY_JWT_ALICE": hs_jwt("alice")},
    )
    assert run.summary["checks"] == [
        "allowed-channel-receives",
        "presence-on-the-same-token",
        "refused-channel-fails-alone",
        "authorize-widens-in-place",
    ]
    assert run.summary["refused"] == {"code": 40160, "statusCode": 401}


class Recorder:
    """Channel rules that note each channel they were asked about: ``private-user-{user_id}`` for its user only."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.rules = ChannelRules()
        self.rules.add("private-user-{user_id}", self.own)
        self.rules.add("presence-team-{team}", lambda user, team: user is not None and team == "core")

    def own(self, user: User | None, user_id: str) -> bool:
        self.asked.append(f"private-user-{user_id}")
        return user is not None and user.id == user_id


def app_with(recorder: Recorder, url: str, user: User | None) -> FastAPI:
    app = FastAPI()
    app.include_router(auth_router(AsyncRelay(url), recorder.rules, lambda request: user))
    return app


async def token_answer(app: FastAPI, fields: dict[str, str], path: str = "/ably/token") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        return await client.post(path, data=fields)


def capability_of(answer: httpx.Response) -> dict[str, list[str]]:
    body: dict[str, Any] = answer.json()
    verify_token_request(body, KEY_NAME, KEY_SECRET, now_ms=int(time.time() * 1000))
    return parse_capability(body["capability"])


async def test_the_token_covers_the_allowed_channels_and_leaves_the_refused_ones_out() -> None:
    recorder = Recorder()
    app = app_with(recorder, ABLY_URL, User("alice"))
    names = ["private-user-alice", "presence-team-core", "private-user-bob", "news", "presence-team-other"]
    answer = await token_answer(app, {"channels": json.dumps(names)})
    assert answer.status_code == 200, answer.text
    assert capability_of(answer) == {
        "private-user-alice": ["subscribe"],
        "presence-team-core": ["presence", "subscribe"],
        "news": ["subscribe"],
    }
    assert answer.json()["clientId"] == "alice"
    assert recorder.asked == ["private-user-alice", "private-user-bob"]


@pytest.mark.parametrize(
    ("user", "status", "code", "message"),
    [
        (User("alice"), 403, 40300, "'private-user-bob'"),
        (None, 403, 40300, "'private-user-bob'"),
    ],
    ids=["other-user", "no-user"],
)
async def test_all_channels_refused_is_the_first_refusal(
    user: User | None, status: int, code: int, message: str
) -> None:
    app = app_with(Recorder(), ABLY_URL, user)
    answer = await token_answer(app, {"channels": json.dumps(["private-user-bob", "private-user-carol"])})
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
    assert message in answer.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channels": "private-user-alice"}, "channels must be a JSON array of channel names, as ably-js sends"),
        ({"channels": '{"a": 1}'}, "channels must be a JSON array of channel names"),
        ({"channels": '["news", 7]'}, "channels must be a JSON array of channel names"),
        ({"channels": "[]"}, "a token is asked for 1 to 100 channels, not 0"),
        ({"channels": json.dumps([f"private-user-u{n}" for n in range(101)])}, "1 to 100 channels, not 101"),
        ({"channels": '["news", ":bad"]'}, "invalid Ably channel name ':bad': must not start with ':'"),
        ({"channels": '["news"]', "channel": "news"}, "channels and channel_name (or channel) are both given"),
    ],
    ids=["not-json", "object", "not-strings", "empty", "over-100", "bad-name", "with-channel"],
)
async def test_a_malformed_channel_list_is_refused_for_good_before_any_rule_runs(
    fields: dict[str, str], message: str
) -> None:
    """A 403, not a 400: ably-js asks again for ever for a token refused with any other status (RSA4d)."""
    recorder = Recorder()
    answer = await token_answer(app_with(recorder, ABLY_URL, User("alice")), fields)
    assert (answer.status_code, answer.json()["error"]["code"]) == (403, 40300), answer.text
    assert message in answer.json()["error"]["message"]
    assert recorder.asked == []


async def test_two_presence_members_cannot_share_a_token() -> None:
    """A rule may name the member itself (a User returned); a token has one clientId, so two are refused, and so is
    one beside the user's own (a public channel's token is the user's)."""
    rules = ChannelRules()
    rules.add("presence-as-{name}", lambda user, name: User(name))
    app = FastAPI()
    app.include_router(auth_router(AsyncRelay(ABLY_URL), rules, lambda request: User("alice")))
    answer = await token_answer(app, {"channels": json.dumps(["presence-as-ann", "presence-as-bo", "news"])})
    assert answer.status_code == 403
    assert answer.json()["error"]["message"].startswith(
        "the rules made different users ('alice', 'ann', 'bo') of these channels, and a token has one clientId"
    )
    alone = await token_answer(app, {"channels": json.dumps(["presence-as-ann"])})
    assert alone.json()["clientId"] == "ann"


async def test_every_token_of_a_signed_in_user_carries_its_id_whatever_its_channels() -> None:
    """A public channel no rule names made an anonymous token for a signed-in user, a presence channel one with the
    user's id: a page widening its token (``auth.authorize``, as docs/ably.md says) changed the connection's client
    id, and Ably (the emulator too) fails such a connection for good (40102). Every token of a user carries its id,
    for one channel or several; a request without one gets an anonymous token."""
    app = app_with(Recorder(), ABLY_URL, User("alice"))
    asked: list[dict[str, str]] = [{"channel": "misc"}]
    asked += [{"channels": json.dumps(channels)} for channels in (["misc"], ["news", "misc"], ["presence-team-core"])]
    for fields in asked:
        answer = await token_answer(app, fields)
        assert answer.json()["clientId"] == "alice", (fields, answer.text)
    anonymous = await token_answer(app_with(Recorder(), ABLY_URL, None), {"channels": json.dumps(["misc"])})
    assert "clientId" not in anonymous.json()


async def test_a_pusher_provider_answers_501_and_names_the_one_channel_way(start_emulator: StartEmulator) -> None:
    emulator = await start_emulator(app=APP)
    recorder = Recorder()
    pusher_url = f"emulator://{APP.key}:{APP.secret}@127.0.0.1:{emulator.port}/apps/{APP.app_id}"
    answer = await token_answer(
        app_with(recorder, pusher_url, User("alice")), {"channels": '["private-user-alice"]'}, "/ably/token"
    )
    assert answer.status_code == 501
    assert answer.json()["error"] == (
        "the Relay emulator does not support authorize_channels: pusher-js authorizes each channel on its own: "
        "use authorize_channel (channel_name)"
    )
    assert recorder.asked == []


async def test_the_gateway_reads_channels_with_the_jwt_s_user(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    emulator = await start_emulator(app=APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        allowed = await client.post(
            "/v1/auth/channel",
            data={"channels": json.dumps(["private-user-alice", "presence-lobby", "private-user-bob"])},
            headers={"Authorization": f"Bearer {hs_jwt('alice')}"},
        )
        anonymous = await client.post("/v1/auth/channel", data={"channels": json.dumps(["private-user-alice"])})
        anonymous_one = await client.post("/v1/auth/channel", data={"channel": "private-user-alice"})
    assert allowed.status_code == 200, allowed.text
    assert capability_of(allowed) == {"private-user-alice": ["subscribe"], "presence-lobby": ["presence", "subscribe"]}
    assert allowed.json()["clientId"] == "alice"
    # Refused as the one-channel request is, with the same reason (here: no credential arrived)
    assert (anonymous.status_code, anonymous.json()) == (anonymous_one.status_code, anonymous_one.json())
    assert anonymous.status_code == 403 and "no Authorization: Bearer header" in anonymous.json()["error"]["message"]


async def test_a_token_for_a_signed_in_user_ends_when_the_jwt_does(
    start_emulator: StartEmulator, start_gateway: StartGateway
) -> None:
    """A token lasted Ably's default hour whatever the JWT's exp: a user signed out (or whose JWT was revoked by not
    renewing it) went on receiving for up to an hour. A JWT ending sooner ends its token then; one ending later keeps
    the hour, and an anonymous token is the hour too."""
    emulator = await start_emulator(app=APP)
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator.port), jwt_secret=JWT_SECRET))
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        answers = [
            await client.post("/v1/auth/channel", data={"channel": "private-user-alice"}, headers=headers)
            for headers in (
                {"Authorization": f"Bearer {hs_jwt('alice', ttl=120)}"},
                {"Authorization": f"Bearer {hs_jwt('alice', ttl=3 * 3600)}"},
            )
        ]
        answers.append(await client.post("/v1/auth/channel", data={"channel": "orders"}))
    soon, later, anonymous = (answer.json() for answer in answers)
    assert 118_000 <= soon["ttl"] <= 120_000, soon
    assert "ttl" not in later and "ttl" not in anonymous
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{emulator.port}") as http:
        lifetimes = []
        for token_request in (soon, later, anonymous):
            details = (await http.post(f"/keys/{KEY_NAME}/requestToken", json=token_request)).json()
            lifetimes.append((details["expires"] - details["issued"]) / 1000)
    assert 118 <= lifetimes[0] <= 121 and lifetimes[1:] == [3600, 3600], lifetimes


def test_a_member_a_rule_names_is_authorized_no_longer_than_the_user_who_asked() -> None:
    rules = ChannelRules()
    rules.add("presence-as-{name}", lambda user, name: User(name, signed_in_until=None if name == "ann" else 9e9))
    rules.add("presence-room", lambda user: {"role": "guest"})
    asking = User("alice", signed_in_until=1_800_000_000.0)
    assert rules.authorize(asking, "presence-as-ann").member == User("ann", signed_in_until=1_800_000_000.0)
    assert rules.authorize(asking, "presence-as-bo").member == User("bo", signed_in_until=1_800_000_000.0)
    assert rules.authorize(User("alice"), "presence-as-bo").member == User("bo", signed_in_until=9e9)
    earlier = User("alice", signed_in_until=1e9)
    assert rules.authorize(earlier, "presence-as-bo").member == User("bo", signed_in_until=1e9)
    assert rules.authorize(asking, "presence-room").member == User("alice", {"role": "guest"}, signed_in_until=1.8e9)


@pytest.mark.parametrize("until", ["1800000000", True, float("nan"), float("inf")])
def test_a_user_s_sign_in_end_is_seconds_since_the_epoch(until: object) -> None:
    with pytest.raises(ProtocolError) as refused:
        User("alice", signed_in_until=until)  # type: ignore[arg-type]
    assert str(refused.value) == f"a user's signed_in_until is seconds since the epoch (a JWT's exp), not {until!r}"

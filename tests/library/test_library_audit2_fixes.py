"""Fixes from a second fresh-eyes audit of the library, through ``Relay`` and ``AsyncRelay`` alike. Respx stands in
for hosted Pusher only (its requests checked with the official ``pusher`` package's signatures)."""

from __future__ import annotations

import json

import pytest
import respx
from libsupport import MakeRelay
from respx_checks import check_signed

from relay import ChannelInfo, PresenceMember
from relay.errors import ProtocolError

KEY, SECRET, APP_ID = "hosted-key", "hosted-Secret-9f8e7d", "123"
URL = f"pusher://{KEY}:{SECRET}@eu/apps/{APP_ID}"
BASE = f"https://api-eu.pusher.com/apps/{APP_ID}"


def assert_refused_as_not_pushers(error: ProtocolError, what: str, body: object) -> None:
    """A 502 saying Pusher answered 200 with ``what``, and the answer as it came."""
    assert error.http_status == 502
    assert str(error) == f"Pusher answered 200 with {what}: {json.dumps(body, separators=(',', ':')).encode()!r}"


@pytest.mark.parametrize("user_count", ["7", -1, True, 2.5, {"n": 1}])
async def test_a_channel_list_whose_user_count_is_no_count_is_a_502_as_a_channel_s_is(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, user_count: object
) -> None:
    """channel() refused {"user_count": "7"} as an answer that is not Pusher's (502), while channels() passed the
    string on as the channel's user_count (and the gateway's answer model then failed on it, a 500)."""
    body = {"channels": {"presence-room": {"user_count": user_count}}}
    route = respx_mock.get(f"{BASE}/channels").respond(200, json=body)
    with pytest.raises(ProtocolError) as raised:
        await make_relay(URL).channels("presence-")
    assert_refused_as_not_pushers(raised.value, 'what is not {"channels": {name: {attributes}}}', body)
    [call] = route.calls
    check_signed(call.request, KEY, SECRET, extra={"filter_by_prefix": "presence-", "info": "user_count"})


async def test_a_channel_list_with_counts_or_none_is_read(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/channels").respond(
        200, json={"channels": {"presence-room": {"user_count": 0}, "presence-hall": {}}}
    )
    assert await make_relay(URL).channels("presence-") == {
        "presence-room": ChannelInfo("presence-room", True, None, 0),
        "presence-hall": ChannelInfo("presence-hall", True, None, None),
    }


@pytest.mark.parametrize("user_id", [None, "", True, ["alice"], {"id": "alice"}, 1.5])
async def test_a_member_list_whose_id_is_no_user_id_is_a_502_not_a_member_named_after_it(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, user_id: object
) -> None:
    """str() made a member of any id: {"id": null} was the user 'None', {"id": ["alice"]} the user "['alice']"."""
    body = {"users": [{"id": "bob"}, {"id": user_id}]}
    route = respx_mock.get(f"{BASE}/channels/presence-room/users").respond(200, json=body)
    with pytest.raises(ProtocolError) as raised:
        await make_relay(URL).presence_members("presence-room")
    assert_refused_as_not_pushers(raised.value, 'what is not {"users": [{"id": …}]}', body)
    [call] = route.calls
    check_signed(call.request, KEY, SECRET)


async def test_a_member_s_integer_id_is_its_digits(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(f"{BASE}/channels/presence-room/users").respond(200, json={"users": [{"id": "bob"}, {"id": 42}]})
    assert await make_relay(URL).presence_members("presence-room") == [PresenceMember("bob"), PresenceMember("42")]

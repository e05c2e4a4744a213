"""Answers of hosted Ably read as Ably sends them (respx: rest.ably.io is unreachable from here).

- A connectionKey Ably refuses is named in its 40006 text by the connectionId the key holds ("Malformed message;
  invalid connectionId", ably.com/docs/platform/errors/codes/40006-message-contains-invalid-connection-id): the
  publish goes again without the key, as for the emulator's "invalid connectionKey".
- An error answered at Ably's edge has no ErrorInfo body: its code and message are in ``X-Ably-ErrorCode`` and
  ``X-Ably-ErrorMessage`` (42922, ably.com/docs/platform/errors/codes/42922-rate-limit-exceeded-too-many-requests),
  where ably-js reads them (``Http._handler``).

Every test runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from libsupport import MakeRelay
from test_lib_ably import BASE, URL, check_headers, message_id_base

from relay import ChannelInfo, PublishResult
from relay.errors import PermissionDenied, RateLimited


@pytest.mark.parametrize(
    "reason",
    [
        "Malformed message; invalid connectionId (See https://help.ably.io/error/40006 for help.)",
        "Malformed message; mismatched connectionId",
    ],
)
async def test_ably_s_40006_naming_the_connection_id_drops_the_key_not_the_publish(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, reason: str
) -> None:
    refused = {"error": {"code": 40006, "statusCode": 400, "message": reason}}
    route = respx_mock.post(f"{BASE}/channels/orders/messages").mock(
        side_effect=[httpx.Response(400, json=refused), httpx.Response(201, json={"channel": "orders"})]
    )
    result = await make_relay(URL).publish("orders", "e", "x", socket_id="123.456")
    assert route.call_count == 2
    keyed, unkeyed = (json.loads(call.request.content) for call in route.calls)
    message_id = keyed[0]["id"]
    message_id_base(message_id)
    assert keyed == [{"name": "e", "data": "x", "id": message_id, "connectionKey": "123.456"}]
    assert unkeyed == [{"name": "e", "data": "x", "id": message_id}], "the same message, same id, without the key"
    for call in route.calls:
        check_headers(call.request)
        assert call.request.url.raw_path == b"/channels/orders/messages"
    assert result == PublishResult(("orders",), (message_id,))


EDGE_REFUSAL = {"X-Ably-ErrorCode": "42922", "X-Ably-ErrorMessage": "rate limit exceeded; too many requests"}


async def test_an_edge_refusal_is_read_from_ably_s_error_headers(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    """Ably's flood protection answers 429 at its edge, the error in headers alone (the body is no ErrorInfo): the
    code and message are Ably's, not the body's; a later request is answered as usual."""
    status = {"channelId": "lobby", "status": {"isActive": True, "occupancy": {"metrics": {"subscribers": 2}}}}
    route = respx_mock.get(f"{BASE}/channels/lobby").mock(
        side_effect=[httpx.Response(429, headers=EDGE_REFUSAL, text="<html>429 Too Many Requests</html>")] * 3
        + [httpx.Response(200, json=status)]
    )
    relay = make_relay(URL)
    with pytest.raises(RateLimited) as raised:
        await relay.channel("lobby")
    error = raised.value
    assert (error.http_status, error.code, error.answered_by) == (429, 42922, "Ably")
    assert str(error).startswith("Ably answered 429: rate limit exceeded; too many requests (slow down")
    assert route.call_count == 3, "a 429 is retried"
    assert await relay.channel("lobby") == ChannelInfo("lobby", True, 2, None)
    for call in route.calls:
        check_headers(call.request, body=False)
        assert (call.request.method, call.request.url.raw_path) == ("GET", b"/channels/lobby")


async def test_a_capability_refusal_in_the_headers_alone_is_permission_denied(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    headers = {"X-Ably-ErrorCode": "40160", "X-Ably-ErrorMessage": "action not permitted"}
    route = respx_mock.post(f"{BASE}/channels/orders/messages").respond(401, headers=headers)
    with pytest.raises(PermissionDenied) as raised:
        await make_relay(URL).publish("orders", "e", "x")
    assert (raised.value.http_status, raised.value.code) == (401, 40160)
    assert str(raised.value) == (
        "Ably answered 401: action not permitted (the API key's capabilities do not allow it there: "
        "Ably dashboard → API Keys)"
    )
    assert route.call_count == 1

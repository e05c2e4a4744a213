"""/v1/auth/channel's body limit is its largest valid request's: an Ably token request for 100 channels of 200
characters (the most a token and a name take) was a form body of 21 KB, refused with 413 at the 16 KiB of the other
auth routes. And the guard's refusals on that route are in Ably's shape when the provider is Ably, as the route's own
are (ably-js reads the status from the body's ``error`` object). Real gateways (uvicorn) in front of a real emulator,
its Ably side and its Pusher side."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx

from relay.client import MAX_TOKEN_CHANNELS
from relay.gateway import GatewaySettings
from relay.gateway.guards import MAX_CHANNEL_AUTH_BODY_BYTES
from relay.protocol.channels import DEFAULT_LIMITS
from tests.conftest import RunningEmulator
from tests.gateway.conftest import StartGateway, emulator_url
from tests.gateway.test_gateway_hardening import ably_url, exchange

FORM = {"content-type": "application/x-www-form-urlencoded"}
TOO_LARGE = f"the request body is over {MAX_CHANNEL_AUTH_BODY_BYTES} bytes"


def widest_channels() -> list[str]:
    """MAX_TOKEN_CHANNELS public channels of the longest name, in characters a form encoder percent-encodes."""
    longest = DEFAULT_LIMITS.max_channel_name
    return [f"room-{index:03d}-".ljust(longest, "@") for index in range(MAX_TOKEN_CHANNELS)]


def padded_to(size: int) -> bytes:
    """The widest token request's form body, with a parameter an app adds padding it to ``size`` bytes."""
    body = urlencode({"channels": json.dumps(widest_channels(), separators=(",", ":")), "pad": ""}).encode()
    assert len(body) <= size
    return body + b"x" * (size - len(body))


async def streamed_once(body: bytes) -> AsyncIterator[bytes]:
    """``body`` as a stream, which httpx sends chunked: no Content-Length for the guard to refuse up front."""
    yield body


async def test_a_token_request_for_the_most_channels_of_the_longest_names_is_answered(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator)))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        widest = await http.post("/v1/auth/channel", data={"channels": json.dumps(widest_channels())})
        at_limit = await http.post("/v1/auth/channel", content=padded_to(MAX_CHANNEL_AUTH_BODY_BYTES), headers=FORM)
    assert len(widest.request.content) > 20_000
    assert widest.status_code == 200, widest.text[:300]
    token = await exchange(emulator, widest.json())
    assert sorted(json.loads(token["capability"])) == sorted(widest_channels())
    assert at_limit.status_code == 200, at_limit.text[:300]


async def test_one_byte_over_the_limit_is_refused_for_good_in_ably_s_shape_on_ably(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(GatewaySettings(relay_url=ably_url(emulator)))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        over = padded_to(MAX_CHANNEL_AUTH_BODY_BYTES + 1)
        declared = await http.post("/v1/auth/channel", content=over, headers=FORM)
        streamed = await http.post("/v1/auth/channel", content=streamed_once(over), headers=FORM)
    # A 403, which fails ably-js's connection: a 413 was asked for again, for ever (RSA4d)
    ably_error = {"error": {"message": TOO_LARGE, "code": 40300, "statusCode": 403}}
    assert "content-length" not in streamed.request.headers
    assert (declared.status_code, declared.json()) == (403, ably_error)
    assert (streamed.status_code, streamed.json()) == (403, ably_error)


async def test_one_byte_over_the_limit_is_a_413_with_a_plain_error_on_pusher(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator)))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        over = await http.post("/v1/auth/channel", content=padded_to(MAX_CHANNEL_AUTH_BODY_BYTES + 1), headers=FORM)
    assert (over.status_code, over.json()) == (413, {"error": TOO_LARGE})

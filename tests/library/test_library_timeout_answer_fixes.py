"""A provider's error answer that leaves open whether it processed the request (a gateway's 502 or 504, Ably's
50003 "Timeout exceeded while waiting for publish to be processed") makes a publish's error ``outcome_unknown``, as no
answer at all does: sent again, it could be delivered twice. 500 and 503 answers, and queries, are not. Hosted
endpoints with respx; every test runs through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import respx
from libsupport import MakeRelay
from respx_checks import check_sent

from relay.errors import ProviderError, TransportError

PUSHER_KEY, PUSHER_SECRET, APP_ID = "hosted-key", "hosted-Secret-9f8e7d", "123"
PUSHER_URL = f"pusher://{PUSHER_KEY}:{PUSHER_SECRET}@eu/apps/{APP_ID}"
PUSHER = "https://api-eu.pusher.com"
ORDERS_X = b'{"name":"e","channels":["orders"],"data":"x"}'  # publish("orders", "e", "x")

ABLY_KEY_NAME, ABLY_KEY_SECRET = "appid.keyid", "ably-Secret-5a4b3c"
ABLY_URL = f"ably://{ABLY_KEY_NAME}:{ABLY_KEY_SECRET}"
ABLY = "https://rest.ably.io"
ABLY_BASIC = "Basic " + base64.b64encode(f"{ABLY_KEY_NAME}:{ABLY_KEY_SECRET}".encode()).decode()

DELIVERED = (
    "the request was sent and may have been processed: a publish may have been delivered, check before sending it again"
)


@pytest.mark.parametrize(
    ("status", "attempts", "unknown"),
    [
        (504, 1, True),  # the gateway waited for Pusher in vain: Pusher may have published it
        (502, 1, True),  # the gateway's exchange with Pusher broke, maybe once Pusher had it
        (500, 1, False),  # Pusher's own answer that it failed
        (503, 3, False),  # Pusher took nothing on: retried
    ],
)
async def test_a_pusher_publish_answered_504_or_502_may_have_been_delivered(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, status: int, attempts: int, unknown: bool
) -> None:
    route = respx_mock.post(f"{PUSHER}/apps/{APP_ID}/events").respond(status, text="upstream trouble")
    relay = make_relay(PUSHER_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.publish("orders", "e", "x")
    error = raised.value
    assert (error.http_status, error.answered_by, error.outcome_unknown) == (status, "Pusher", unknown)
    said = f"Pusher answered {status}: upstream trouble"
    assert str(error) == (f"{said}; {DELIVERED}" if unknown else said)
    check_sent(route, PUSHER_KEY, PUSHER_SECRET, [ORDERS_X] * attempts)  # a 504 is not sent again either


async def test_a_pusher_query_answered_504_changes_nothing(make_relay: MakeRelay, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{PUSHER}/apps/{APP_ID}/channels/lobby").respond(504, text="gateway timeout")
    relay = make_relay(PUSHER_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.channel("lobby")
    assert (raised.value.http_status, raised.value.outcome_unknown) == (504, False)
    assert str(raised.value) == "Pusher answered 504: gateway timeout"
    check_sent(route, PUSHER_KEY, PUSHER_SECRET, [b""] * 3, extra={"info": "subscription_count"})  # a query is retried


async def test_a_pusher_batch_whose_second_call_is_answered_504_may_have_been_delivered_in_part(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(f"{PUSHER}/apps/{APP_ID}/batch_events").mock(
        side_effect=[httpx.Response(200, json={}), httpx.Response(504, text="gateway timeout")]
    )
    relay = make_relay(PUSHER_URL)
    events = [{"channel": "orders", "name": "e", "data": str(index)} for index in range(11)]  # Pusher takes 10 a call
    with pytest.raises(ProviderError) as raised:
        await relay.publish_batch(events)
    error = raised.value
    assert (error.outcome_unknown, error.published) == (True, 10)
    assert str(error) == (
        f"Pusher answered 504: gateway timeout; {DELIVERED}; events 0-9 were already published by the calls before "
        "this one (its first call took 10): those from 10 on may have been delivered in part, check before sending "
        "them again"
    )
    sent = [[event["data"] for event in json.loads(call.request.content)["batch"]] for call in route.calls]
    assert sent == [[str(index) for index in range(10)], ["10"]]


@pytest.mark.parametrize(
    ("status", "code", "unknown"),
    [
        (500, 50003, True),  # Ably timed out processing the publish: it may have been published
        (504, 50003, True),
        (504, None, True),  # a gateway before Ably timed out, its body no ErrorInfo
        (500, 50000, False),
        (503, 50001, False),
    ],
)
async def test_an_ably_publish_answered_50003_or_504_may_have_been_delivered(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, status: int, code: int | None, unknown: bool
) -> None:
    message = {50003: "Timeout exceeded while waiting for publish to be processed", None: "gateway timeout"}.get(
        code, "trouble"
    )
    route = respx_mock.post(f"{ABLY}/channels/orders/messages")
    if code is None:
        route.respond(status, text=message)
    else:
        route.respond(status, json={"error": {"code": code, "statusCode": status, "message": message}})
    relay = make_relay(ABLY_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.publish("orders", "e", "x")
    error = raised.value
    assert (error.http_status, error.code, error.answered_by, error.outcome_unknown) == (status, code, "Ably", unknown)
    said = f"Ably answered {status}: {message}"
    assert str(error) == (f"{said}; {DELIVERED}" if unknown else said)
    # An Ably publish carries its message id, so it is retried, as the same message each time
    assert route.call_count == 3
    assert len({call.request.content for call in route.calls}) == 1
    for call in route.calls:
        assert call.request.headers["authorization"] == ABLY_BASIC
        (sent,) = json.loads(call.request.content)
        assert (sent["name"], sent["data"]) == ("e", "x")


async def test_an_ably_query_answered_50003_changes_nothing(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    body = {"error": {"code": 50003, "statusCode": 504, "message": "Timeout exceeded"}}
    route = respx_mock.get(f"{ABLY}/channels/lobby").respond(504, json=body)
    relay = make_relay(ABLY_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.channel("lobby")
    assert (raised.value.code, raised.value.outcome_unknown) == (50003, False)
    assert str(raised.value) == "Ably answered 504: Timeout exceeded"
    assert [call.request.method for call in route.calls] == ["GET"] * 3


async def test_an_ably_publish_timed_out_on_one_of_its_channels_may_have_been_delivered_there(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    timed_out = {
        "code": 50003,
        "statusCode": 504,
        "message": "Timeout exceeded while waiting for publish to be processed",
    }
    results = [{"channel": "ok", "messageId": "srv:0", "serials": ["s"]}, {"channel": "slow", "error": timed_out}]
    answer = {"successCount": 1, "failureCount": 1, "results": results}
    route = respx_mock.post(f"{ABLY}/messages").respond(201, json=[answer])
    relay = make_relay(ABLY_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.publish(["ok", "slow"], "e", "x")
    error = raised.value
    assert (error.http_status, error.code, error.published, error.outcome_unknown) == (504, 50003, 1, True)
    assert str(error) == (
        "Ably answered 504: refused the publish on 1 of 2 channels: slow (Timeout exceeded while waiting for publish "
        "to be processed, code 50003); the rest (1) was published: do not send it again; where it timed out, it may "
        "have been published: check before sending it again"
    )
    (spec,) = json.loads(route.calls.last.request.content)
    assert spec["channels"] == ["ok", "slow"] and route.call_count == 1


EARLIER = (
    "an earlier attempt was sent and may have been processed: a publish may have been delivered, check before sending "
    "it again"
)


@pytest.mark.parametrize(
    "first",
    [
        httpx.Response(504, json={"error": {"code": 50003, "statusCode": 504, "message": "Timeout exceeded"}}),
        httpx.ReadTimeout("timed out"),
    ],
    ids=["answered-504", "no-answer"],
)
async def test_an_ably_publish_left_undecided_by_one_attempt_stays_so_whatever_the_last_attempt_answers(
    make_relay: MakeRelay, respx_mock: respx.MockRouter, first: httpx.Response | Exception
) -> None:
    """The first attempt may have published (a 504, or no answer); the retries were refused without processing (503,
    then a connection refused). The last error alone said resending was safe."""
    refused = {"error": {"code": 50001, "statusCode": 503, "message": "Service unavailable"}}
    route = respx_mock.post(f"{ABLY}/channels/orders/messages").mock(
        side_effect=[first, httpx.Response(503, json=refused), httpx.ConnectError("connection refused")]
    )
    relay = make_relay(ABLY_URL)
    with pytest.raises(TransportError) as raised:
        await relay.publish("orders", "e", "x")
    error = raised.value
    assert error.outcome_unknown is True
    assert str(error) == (
        "could not reach rest.ably.io:443: ConnectError; check the host, port and network; " + EARLIER
    )
    assert route.call_count == 3
    assert len({call.request.content for call in route.calls}) == 1  # one message id: Ably dedupes the resends


async def test_a_publish_whose_attempts_were_all_refused_unprocessed_is_not_undecided(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    refused = {"error": {"code": 50001, "statusCode": 503, "message": "Service unavailable"}}
    route = respx_mock.post(f"{ABLY}/channels/orders/messages").mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(503, json=refused),
            httpx.Response(503, json=refused),
        ]
    )
    relay = make_relay(ABLY_URL)
    with pytest.raises(ProviderError) as raised:
        await relay.publish("orders", "e", "x")
    assert (raised.value.http_status, raised.value.outcome_unknown) == (503, False)
    assert str(raised.value) == "Ably answered 503: Service unavailable"
    assert route.call_count == 3


async def test_a_query_left_undecided_by_one_attempt_is_never_outcome_unknown(
    make_relay: MakeRelay, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{ABLY}/channels/lobby").mock(
        side_effect=[
            httpx.ReadTimeout("timed out"),
            httpx.Response(504, text="gateway timeout"),
            httpx.ConnectError("no"),
        ]
    )
    relay = make_relay(ABLY_URL)
    with pytest.raises(TransportError) as raised:
        await relay.channel("lobby")
    assert raised.value.outcome_unknown is False
    assert "processed" not in str(raised.value)
    assert route.call_count == 3

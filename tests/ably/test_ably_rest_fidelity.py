"""Ably REST answers checked against what Ably documents, with ably-python (which has no batch methods: its
``request()`` sends them, as Ably's docs show): error codes and statuses a user's code branches on."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import httpx
import pusher  # type: ignore[import-untyped]
import pytest
from ably import AblyException, AblyRealtime, AblyRest, MessageAction  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ablysupport import API_KEY, APP, connected, page_links, run_node

from tests.conftest import RunningEmulator

MANY = [f"many-{index}" for index in range(101)]
BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}


@pytest.fixture
async def rest(ably_emulator: RunningEmulator) -> AsyncIterator[AblyRest]:
    client = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=ably_emulator.port, tls=False, use_token_auth=True)
    yield client
    await client.close()


async def test_batch_requests_over_100_channels_are_refused_with_90010(rest: AblyRest) -> None:
    """Ably takes at most 100 channels in a BatchSpec and in a batch presence request, and refuses more with 90010,
    status 400, "Max number of channels permitted in a single bulk publish request (100) exceeded" (ably-common
    errors/codes/90010.md). The emulator answered 40000 to the publish and served batch presence for any number."""
    published = await rest.request("POST", "/messages", "2", body={"channels": MANY, "messages": {"name": "n"}})
    assert (published.status_code, int(published.error_code)) == (400, 90010)
    assert "Max number of channels permitted in a single bulk publish request (100) exceeded" in published.error_message
    present = await rest.request("GET", "/presence", "2", params={"channels": ",".join(MANY)})
    assert (present.status_code, int(present.error_code)) == (400, 90010)
    assert "single batch presence request (100) exceeded" in present.error_message
    within = await rest.request("GET", "/presence", "2", params={"channels": ",".join(MANY[:100])})
    assert within.status_code == 200 and within.items[0]["successCount"] == 100


async def test_envelope_json_wraps_the_answer_as_ably_does(rest: AblyRest, ably_emulator: RunningEmulator) -> None:
    """``?envelope=json`` (Ably's "envelope response format", for clients that cannot read statuses or headers, and
    what ably-js sends in browsers on every paginated GET) answers 200 with ``{statusCode, response, rel}`` (``rel``
    only when paginated) and the headers, ``link`` where ably-js reads the next page from. The emulator ignored it:
    the bare answer, with the real status (401, 400) a JSONP-style client cannot see."""
    channel = rest.channels.get("enveloped")
    for index in range(3):
        await channel.publish(f"m{index}", str(index))
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers=BASIC) as http:
        page = await http.get("/channels/enveloped/messages", params={"limit": 2, "envelope": "json"})
        refused = await http.get("/channels/enveloped/messages", params={"limit": 5000, "envelope": "json"})
        anonymous = await http.get("/channels/enveloped/messages?envelope=json", headers={"Authorization": ""})
        plain = await http.get("/channels/enveloped/messages", params={"limit": 2})
    assert page.status_code == 200
    answer = page.json()
    assert answer["statusCode"] == 200
    assert [message["name"] for message in answer["response"]] == ["m2", "m1"]
    assert set(answer["rel"]) == {"first", "current", "next"}
    assert page_links(answer["headers"]["link"]) == answer["rel"]
    assert page_links(page.headers["link"]) == answer["rel"]
    for response, status, code in ((refused, 400, 40003), (anonymous, 401, 40101)):
        assert response.status_code == 200, response.text
        wrapped = response.json()
        assert (wrapped["statusCode"], wrapped["response"]["error"]["code"]) == (status, code)
        assert wrapped["headers"]["x-ably-errorcode"] == str(code)
        assert "rel" not in wrapped
    assert plain.status_code == 200 and isinstance(plain.json(), list)  # no envelope asked: the bare answer


async def test_too_many_messages_in_one_publish_is_ablys_40034(rest: AblyRest, ably_emulator: RunningEmulator) -> None:
    """Over 1,000 messages in one publish, Ably's code is 40034 (400), "Too many messages in one publish" (ably-common
    errors/codes/40034.md; its 40009 page: a publish "rejected for containing too many messages, rather than too
    large a payload, is reported as 40034"). The emulator answered 40000, Ably's "bad request", which an app cannot
    tell from a malformed publish. ably-python (REST) and ably-js (REST and realtime) get it as it is."""
    with pytest.raises(AblyException) as refused:
        await rest.channels.get("room").publish(messages=[Message("n", str(index)) for index in range(1001)])
    assert (refused.value.code, refused.value.status_code) == (40034, 400)
    assert refused.value.message == "messages: Too many messages in one publish (1001; the maximum is 1000)"
    run = await run_node("ably_js_message_count.mjs", ably_emulator)
    assert run.summary["checks"] == ["rest-40034", "realtime-40034"]


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
async def test_messages_carry_their_action_message_create(ably_emulator: RunningEmulator, binary: bool) -> None:
    """Ably sends each message's own ``action`` (TM2j; 0, message.create, for a publish) in history and on delivery,
    beside its ``serial``. The emulator sent none: ably-js reads a missing one as message.create, but ably-python's
    ``Message.action`` was None, in ``history()`` and on a realtime subscriber, so code telling new messages from
    updates (``action == MessageAction.MESSAGE_CREATE``) saw neither. A Pusher publish reaching an Ably subscriber
    (and kept in history) is a created message too."""
    port = ably_emulator.port
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=port, tls=False, use_token_auth=True,
                    use_binary_protocol=binary)  # fmt: skip
    realtime = AblyRealtime(key=API_KEY, endpoint=f"127.0.0.1:{port}", tls=False, use_binary_protocol=binary)
    received: asyncio.Queue[Message] = asyncio.Queue()
    try:
        await connected(realtime)
        await realtime.channels.get("orders").subscribe(received.put_nowait)
        channel = rest.channels.get("orders")
        await channel.publish(messages=[Message("created", {"id": 7}), Message("blob", b"\x00\xff")])
        backend = pusher.Pusher(APP.app_id, APP.key, APP.secret, host="127.0.0.1", port=port, ssl=False)
        await asyncio.to_thread(backend.trigger, "orders", "via-pusher", {"id": 8})
        delivered = [await asyncio.wait_for(received.get(), 5) for _ in range(3)]
        page = await channel.history(direction="forwards")
    finally:
        await rest.close()
        await realtime.close()
    assert [(m.name, m.action) for m in delivered] == [
        ("created", MessageAction.MESSAGE_CREATE),
        ("blob", MessageAction.MESSAGE_CREATE),
        ("via-pusher", MessageAction.MESSAGE_CREATE),
    ]
    assert [(m.name, m.action) for m in page.items] == [
        ("created", MessageAction.MESSAGE_CREATE),
        ("blob", MessageAction.MESSAGE_CREATE),
        ("via-pusher", MessageAction.MESSAGE_CREATE),
    ]

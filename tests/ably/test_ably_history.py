"""Ably history and rewind on the emulator (docs/ably.md#history-and-rewind): what is published through Ably's
protocol is kept for the app's ``ably_history_seconds`` (2 minutes, Ably's default without persistence) within a
memory budget, and served by ``GET /channels/{ch}/messages`` (ably-python and ably-js ``history()``, ``untilAttach``)
and by the ``rewind`` channel param; bad parameters are refused with Ably's codes while everything else is served."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from ably import AblyException, AblyRealtime, AblyRest  # type: ignore[import-untyped]
from ably.types.channeloptions import ChannelOptions  # type: ignore[import-untyped]
from ably.types.message import Message  # type: ignore[import-untyped]
from ably.types.presence import PresenceAction  # type: ignore[import-untyped]
from ablysupport import (
    ACK,
    API_KEY,
    APP,
    ERROR,
    MESSAGE,
    AblyWire,
    ably_wire,
    connected,
    jwt_token,
    page_links,
    run_node,
)

from relay.emulator import ably_history
from relay.emulator.ably_history import (
    CHANNEL_OVERHEAD,
    EXPIRY_STEP,
    MESSAGE_OVERHEAD,
    MessageHistory,
    cursor_text,
    kept_size,
    parse_cursor,
)
from relay.emulator.config import App, EmulatorConfig, load_config
from relay.emulator.usage import usage_document
from relay.errors import ConfigError
from relay.protocol.ably import Rewind
from relay.protocol.signing import sign_rest_request
from tests.conftest import RunningEmulator, whole_run

BASIC = {"Authorization": "Basic " + base64.b64encode(b"1.app-key:app-secret").decode()}
HAS_BACKLOG = 2
StartEmulator = Callable[..., Any]
ROOT = Path(__file__).parents[2]


@pytest.fixture
async def http(ably_emulator: RunningEmulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ably_emulator.http_url, headers={"X-Ably-Version": "6"}) as client:
        yield client


async def publish(http: httpx.AsyncClient, channel: str, *messages: dict[str, Any]) -> None:
    response = await http.post(f"/channels/{channel}/messages", json=list(messages), headers=BASIC)
    assert response.status_code == 201, response.text


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


async def pusher_publish(http: httpx.AsyncClient, channel: str, event: str) -> None:
    """A publish through the Pusher HTTP API, signed as pusher-http-python signs it."""
    body = f'{{"name":"{event}","channel":"{channel}","data":"{{}}"}}'.encode()
    path = f"/apps/{APP.app_id}/events"
    params = sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=int(time.time()), body=body)
    published = await http.post(path, params=params, content=body, headers={"Content-Type": "application/json"})
    assert published.status_code == 200, published.text


# -- the store, in process -----------------------------------------------------------------------------------------


def protocol_message(serial: int, timestamp: int, *names: str) -> dict[str, Any]:
    messages = [{"name": name, "data": "x"} for name in names]
    return {"id": f"rest:{serial}", "timestamp": timestamp, "channelSerial": f"{serial:016x}", "messages": messages}


def one_message(serial: int, timestamp: int, item: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"rest:{serial}", "timestamp": timestamp, "channelSerial": f"{serial:016x}", "messages": [item]}


def test_pages_follow_the_order_kept_across_messages_of_one_publish() -> None:
    """History's order is timestamp, publisher and serial, index: the same on every node. A cursor is the last
    message's place in it, so a page may end inside a multi-message publish and the next goes on from there,
    backwards and forwards, and a cursor naming a message this node does not hold goes on from where it would be.
    ``until`` leaves out what was kept after a position, ``start``/``end`` filter by time."""
    history = MessageHistory(retention_ms=60_000)
    history.keep("room", protocol_message(1, 1_000, "a", "b", "c"), 1, 1_000)
    history.keep("room", protocol_message(2, 2_000, "d"), 2, 2_000)
    history.keep("other", protocol_message(3, 2_500, "elsewhere"), 3, 2_500)
    history.keep("room", protocol_message(4, 3_000, "e", "f"), 4, 3_000)

    def walk(backwards: bool, limit: int, **bounds: Any) -> list[list[str]]:
        pages: list[list[str]] = []
        after = None
        while True:
            found, more = history.page(
                "room", 3_000, start=bounds.get("start", 0), end=bounds.get("end", 3_000), backwards=backwards,
                limit=limit, until=bounds.get("until"), after=after,
            )  # fmt: skip
            pages.append([kept.item()["name"] for kept in found])
            if not more:
                return pages
            after = found[-1].order

    assert walk(True, 2) == [["f", "e"], ["d", "c"], ["b", "a"]]
    assert walk(False, 4) == [["a", "b", "c", "d"], ["e", "f"]]
    assert walk(True, 10, until=2) == [["d", "c", "b", "a"]]
    assert walk(False, 10, start=2_000, end=2_999) == [["d"]]
    [first] = history.page("room", 3_000, start=0, end=3_000, backwards=True, limit=1)[0]
    assert first.item() == {"name": "f", "data": "x", "id": "rest:4:1", "timestamp": 3_000}
    elsewhere = (2_000, f"{7:016x}", "rest-other-node:7", 0)  # a message this node does not hold, where it would be
    backwards = history.page("room", 3_000, start=0, end=3_000, backwards=True, limit=10, after=elsewhere)
    assert [kept.item()["name"] for kept in backwards[0]] == ["d", "c", "b", "a"]
    forwards = history.page("room", 3_000, start=0, end=3_000, backwards=False, limit=10, after=elsewhere)
    assert [kept.item()["name"] for kept in forwards[0]] == ["e", "f"]
    assert parse_cursor(cursor_text(first)) == first.order == (3_000, f"{4:016x}", "rest:4", 1)


def test_publishes_in_the_same_millisecond_keep_their_order() -> None:
    """Within a millisecond a node's publishes are in the order of its serials, whoever published them (a REST
    publish, then a realtime connection's: the ids alone would put the connection's first)."""
    history = MessageHistory(retention_ms=60_000)
    for serial, protocol_id in ((10, "rest-ab12cd:10"), (11, "4821.93817:11")):
        fields = {**one_message(serial, 5_000, {"name": protocol_id}), "id": protocol_id}
        history.keep("room", fields, serial, 5_000)
    found, _ = history.page("room", 5_000, start=0, end=5_000, backwards=False, limit=10)
    assert [kept.item()["name"] for kept in found] == ["rest-ab12cd:10", "4821.93817:11"]


def test_retention_and_the_budget_drop_the_oldest_first() -> None:
    """Past the budget the app's oldest messages go first, whatever their channel, each counted with its overhead
    and a channel's own (given back when the channel is left with nothing); past the retention period a message is
    no longer read, and is dropped EXPIRY_STEP at a time as messages are kept."""
    big = {"name": "a", "data": "é" * 500}  # 1000 bytes in UTF-8
    cost = kept_size(big)
    assert cost == MESSAGE_OVERHEAD + 1 + 1000
    history = MessageHistory(retention_ms=10_000, max_bytes=3 * cost + 2 * CHANNEL_OVERHEAD)
    for position, channel in enumerate(["one", "two", "two", "three"], 1):
        history.keep(channel, one_message(position, position, big), position, position)

    kept_ids = [ids_of(history, channel, 4) for channel in ("one", "two", "three")]
    assert kept_ids == [[], ["rest:3:0", "rest:2:0"], ["rest:4:0"]]
    assert history.size == 3 * cost + 2 * CHANNEL_OVERHEAD
    assert ids_of(history, "three", 10_004) == ["rest:4:0"] and ids_of(history, "three", 10_005) == []

    quiet = MessageHistory(retention_ms=10_000)
    small = {"name": "s", "data": "x"}
    for position in range(1, 2 * EXPIRY_STEP + 1):
        quiet.keep("room", one_message(position, position, small), position, position)
    assert quiet.size == 2 * EXPIRY_STEP * kept_size(small) + CHANNEL_OVERHEAD
    later = 2 * EXPIRY_STEP + 20_000
    quiet.keep("other", one_message(later, later, small), later, later)
    assert quiet.size == (EXPIRY_STEP + 1) * kept_size(small) + 2 * CHANNEL_OVERHEAD  # one step, not all at once
    assert ids_of(quiet, "room", later) == []
    quiet.keep("other", one_message(later + 1, later, small), later + 1, later)
    assert quiet.size == 2 * kept_size(small) + CHANNEL_OVERHEAD  # the rest, and the emptied channel's overhead


def ids_of(history: MessageHistory, channel: str, now: int) -> list[str]:
    """The ids of ``channel``'s messages as history answers at ``now``, newest first."""
    found, _ = history.page(channel, now, start=0, end=now, backwards=True, limit=1000)
    return [kept.item()["id"] for kept in found]


def test_rewind_takes_the_last_messages_or_a_time_window() -> None:
    history = MessageHistory(retention_ms=120_000)
    for position in range(1, 6):
        history.keep("room", protocol_message(position, position * 1_000, f"m{position}"), position, position * 1_000)

    def rewound(rewind: Rewind) -> list[str]:
        return [kept.item()["name"] for kept in history.last("room", 5_000, rewind)[0]]

    assert rewound(Rewind(2)) == ["m4", "m5"]
    assert rewound(Rewind(100)) == ["m1", "m2", "m3", "m4", "m5"]
    assert rewound(Rewind(100, 2_000)) == ["m3", "m4", "m5"]
    assert rewound(Rewind(1, 2_000)) == ["m5"]
    assert rewound(Rewind(0)) == []


def test_a_capped_rewind_tells_whether_its_cap_left_messages_out() -> None:
    """Ably sends at most 100 and reports the cut of a longer backlog; fewer than asked for is no cut."""
    history = MessageHistory(retention_ms=120_000)
    for position in range(1, 4):
        history.keep("room", protocol_message(position, position * 1_000, f"m{position}"), position, position * 1_000)

    def rewound(rewind: Rewind) -> tuple[list[str], bool]:
        kept, truncated = history.last("room", 5_000, rewind)
        return [message.item()["name"] for message in kept], truncated

    assert rewound(Rewind(2, capped=True)) == (["m2", "m3"], True)
    assert rewound(Rewind(3, capped=True)) == (["m1", "m2", "m3"], False)
    assert rewound(Rewind(2, 2_500, capped=True)) == (["m3"], False)  # what the window holds fits
    assert rewound(Rewind(2)) == (["m2", "m3"], False)  # the client's own limit is no cut


def test_a_persisted_last_message_outlives_the_retention_for_a_count_rewind() -> None:
    """Ably's "persist last message" rule, by channel name or namespace: a rewind by count gets the channel's last
    message past the retention period (a rewind by time does not, nor does history); other channels get nothing."""
    history = MessageHistory(retention_ms=10_000, persist_last=("orders", "lobby:main"))
    for position, channel in enumerate(["orders:42", "orders:42", "orders", "lobby:main", "ordersx:1", "chat:1"], 1):
        history.keep(channel, protocol_message(position, 1_000, f"m{position}", f"n{position}"), position, 1_000)
    later = 60_000

    def rewound(channel: str, rewind: Rewind) -> list[str]:
        return [kept.item()["name"] for kept in history.last(channel, later, rewind)[0]]

    assert rewound("orders:42", Rewind(1)) == ["n2"] and rewound("orders:42", Rewind(5)) == ["n2"]
    [persisted], _ = history.last("orders:42", later, Rewind(1))
    assert persisted.item()["id"] == "rest:2:1"  # its own id, though kept without the publish's other messages
    assert len(persisted.fields["messages"]) == 1  # what the budget counts is all it holds
    assert rewound("orders", Rewind(1)) == ["n3"] and rewound("lobby:main", Rewind(1)) == ["n4"]
    assert rewound("ordersx:1", Rewind(1)) == [] and rewound("chat:1", Rewind(1)) == []
    assert rewound("orders:42", Rewind(1, 30_000)) == [] and rewound("orders:42", Rewind(0)) == []
    assert ids_of(history, "orders:42", later) == []
    assert [kept.item()["name"] for kept in history.last("orders:42", 1_500, Rewind(3))[0]] == ["n1", "m2", "n2"]

    nothing_kept = MessageHistory(retention_ms=0, persist_last=("orders",))
    nothing_kept.keep("orders:1", protocol_message(1, 1_000, "only"), 1, 1_000)
    assert [kept.item()["name"] for kept in nothing_kept.last("orders:1", 1_000, Rewind(1))[0]] == ["only"]


def test_persisted_last_messages_have_a_budget_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past it, the channels published to longest ago lose their last message first."""
    big = {"name": "a", "data": "x" * 1000}
    monkeypatch.setattr(ably_history, "PERSISTED_LAST_BYTES", 2 * kept_size(big))
    history = MessageHistory(retention_ms=0, persist_last=("orders",))
    for position, channel in enumerate(["orders:1", "orders:2", "orders:1", "orders:3"], 1):
        history.keep(channel, one_message(position, position, big), position, position)
    persisted = {channel: history.last(channel, 10, Rewind(1))[0] for channel in ("orders:1", "orders:2", "orders:3")}
    assert {channel: [kept.position for kept in found] for channel, found in persisted.items()} == {
        "orders:1": [3],
        "orders:2": [],
        "orders:3": [4],
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('ably_persist_last_message = [":orders"]', "holds exact channel names and namespaces .*got ':orders'"),
        ('ably_persist_last_message = [""]', "holds exact channel names and namespaces .*got ''"),
        ('ably_persist_last_message = ["[meta]x"]', "holds exact channel names and namespaces .*got '\\[meta\\]x'"),
        ("ably_persist_last_message = [7]", "holds exact channel names and namespaces .*got 7"),
        ('ably_persist_last_message = ["*"]', "holds exact channel names and namespaces .*no wildcards.*got '\\*'"),
        ('ably_persist_last_message = ["orders:"]', "holds exact channel names and namespaces .*got 'orders:'"),
        (
            'ably_persist_last_message = "orders"',
            'must be an array of channel names and namespaces, like \\["orders"\\]',
        ),
    ],
)
def test_a_persist_last_message_rule_must_name_channels(tmp_path: Path, line: str, message: str) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(f'[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n{line}\n')
    with pytest.raises(ConfigError, match=f"apps\\[0\\]: ably_persist_last_message {message}"):
        load_config(config, defaults=EmulatorConfig(apps=()))
    config.write_text('[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\nably_persist_last_message = ["orders"]\n')
    assert load_config(config, defaults=EmulatorConfig(apps=())).apps[0].ably_persist_last_message == ("orders",)


# -- REST, with the SDKs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
async def test_ably_python_reads_history_in_both_directions_and_pages(
    ably_emulator: RunningEmulator, binary: bool
) -> None:
    """ably-python's ``history()``: newest first, ``direction="forwards"``, ``limit`` with ``next()`` through the
    ``Link`` header; binary data, JSON data, extras and clientId come back as published; a realtime publish carries
    its connectionId; a Pusher-protocol publish is Ably history too, in its place."""
    rest = AblyRest(key=APP.ably_api_key, endpoint="127.0.0.1", port=ably_emulator.port, tls=False,
                    use_token_auth=True, use_binary_protocol=binary, client_id="ann")  # fmt: skip
    realtime = AblyRealtime(key=APP.ably_api_key, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        channel = rest.channels.get("orders")
        await channel.publish(Message(name="created", data={"id": 7}, extras={"headers": {"k": "v"}}))
        await channel.publish("blob", b"\x00\xffbinary")
        await connected(realtime)
        await realtime.channels.get("orders").publish("shipped", "by van")
        async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
            await pusher_publish(http, "orders", "via-pusher-api")
        for number in range(3):
            await channel.publish(f"n{number}", str(number))

        page = await channel.history()
        assert [m.name for m in page.items] == ["n2", "n1", "n0", "via-pusher-api", "shipped", "blob", "created"]
        shipped, blob, created = page.items[4:]
        assert created.data == {"id": 7} and created.extras == {"headers": {"k": "v"}} and created.client_id == "ann"
        assert blob.data == b"\x00\xffbinary" and blob.client_id == "ann"
        assert (
            shipped.data == "by van" and shipped.connection_id == realtime.connection.connection_manager.connection_id
        )
        assert created.connection_id is None and all(m.id and m.timestamp for m in page.items)
        assert page.items[0].timestamp >= created.timestamp

        forwards = await channel.history(direction="forwards", limit=4)
        assert [m.name for m in forwards.items] == ["created", "blob", "shipped", "via-pusher-api"]
        assert forwards.has_next()
        rest_of_it = await forwards.next()
        assert [m.name for m in rest_of_it.items] == ["n0", "n1", "n2"] and not rest_of_it.has_next()
        assert [m.id for m in (await channel.history(limit=1)).items] == [page.items[0].id]
    finally:
        await rest.close()
        await realtime.close()


async def test_ably_js_history_pages_and_rewind(ably_emulator: RunningEmulator) -> None:
    """ably-js: ``history()`` pages with ``hasNext()``/``next()``, ``rewind: '2'`` delivers the last two messages
    after the attach (``channel.params`` shows it, the state change has ``hasBacklog``), ``rewind: '1m'`` with
    ``rewindLimit``, ``[?rewind=1]order-7`` beside ``order-7``, a rewind past 100 attached with the cut as the state
    change's reason (90004), and a reconnection's re-attach (with its channelSerial) is not rewound again."""
    run = await run_node("ably_js_history.mjs", ably_emulator)
    assert run.summary["checks"] == [
        "pages",
        "rewind-count",
        "rewind-time",
        "rewind-qualifier",
        "rewind-cut",
        "no-rewind-on-reattach",
    ]


# -- REST, on the wire ---------------------------------------------------------------------------------------------


async def test_the_link_header_carries_the_query_and_the_next_page_is_stable(
    http: httpx.AsyncClient, ably_emulator: RunningEmulator, wires: list[AblyWire]
) -> None:
    """A next link is relative, keeps the bounds (``end`` pinned to the first request's time, so what is published
    meanwhile stays out of a backwards walk) and the untilAttach serial, under the name the client sent."""
    for number in range(3):
        await publish(http, "room", {"name": f"m{number}", "data": "x"})
    wires.append(attached := await ably_wire(ably_emulator))
    serial = (await attached.attach("room"))["channelSerial"]
    first = await http.get(f"/channels/room/messages?limit=2&fromSerial={serial}", headers=BASIC)
    assert first.status_code == 200 and names(first.json()) == ["m2", "m1"]
    links = page_links(first.headers["link"])
    link = links["next"]
    assert link.startswith("./messages?start=0&end=")
    assert f"&direction=backwards&limit=2&fromSerial={serial}&cursor=" in link
    assert links["first"] == links["current"] == link[: link.index("&cursor=")]
    await publish(http, "room", {"name": "later", "data": "x"})
    following = await http.get(f"/channels/room/{link.removeprefix('./')}", headers=BASIC)
    assert names(following.json()) == ["m0"]
    last_links = page_links(following.headers["link"])  # the last page: no next, and first() walks back to the top
    assert "next" not in last_links and last_links["first"] == links["first"] and last_links["current"] == link
    again = await http.get(f"/channels/room/{last_links['first'].removeprefix('./')}", headers=BASIC)
    assert names(again.json()) == ["m2", "m1"]


async def test_a_start_ahead_of_the_emulators_clock_is_an_empty_answer(http: httpx.AsyncClient) -> None:
    """A client whose clock runs ahead asks for messages since a time the emulator has not reached: none, not a
    40003 for ``start`` later than the default ``end`` (now)."""
    await publish(http, "room", {"name": "kept", "data": "x"})
    ahead = int(time.time() * 1000) + 60_000
    response = await http.get(f"/channels/room/messages?start={ahead}", headers=BASIC)
    assert response.status_code == 200 and response.json() == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("direction=sideways", "direction must be backwards or forwards, got 'sideways'"),
        ("limit=0", "limit must be between 1 and 1000"),
        ("limit=1001", "limit must be between 1 and 1000"),
        ("start=soon", "start must be a time in milliseconds since the epoch, got 'soon'"),
        ("end=-1", "end must be a time in milliseconds since the epoch, got '-1'"),
        ("start=20&end=10", "start must not be later than end"),
        ("from_serial=s0", "from_serial 's0' is not a channelSerial this emulator sent"),
        ("from_serial=00000000000000ff&direction=forwards", "untilAttach (from_serial) needs direction=backwards"),
        *(  # another node's (each counts from a random start), or a restarted one's: it cut nothing or everything
            (
                f"from_serial={serial}",
                f"from_serial '{serial}' is not a channelSerial this node sent: untilAttach is answered by the node "
                "the channel was attached on (in a cluster, another node's, or a restarted node's, cuts nothing here)",
            )
            for serial in ("0000000000000001", "ffffffffffffffff")
        ),
        ("cursor=1-2", "cursor '1-2' is not one this emulator sent"),
        ("cursor=" + "9" * 5000 + ":x", "cursor '" + "9" * 40 + "' is not one this emulator sent"),
        ("limit=" + "9" * 5000, "limit must be between 1 and 1000"),  # int() refuses over 4,300 digits: was a 500
    ],
)
async def test_bad_history_parameters_are_40003(http: httpx.AsyncClient, query: str, message: str) -> None:
    await publish(http, "room", {"name": "kept", "data": "x"})
    response = await http.get(f"/channels/room/messages?{query}", headers=BASIC)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == 40003 and response.json()["error"]["message"] == message
    assert response.headers["x-ably-errorcode"] == "40003"
    assert names((await http.get("/channels/room/messages", headers=BASIC)).json()) == ["kept"]


async def test_history_needs_the_history_capability(http: httpx.AsyncClient) -> None:
    """A token without ``history`` on the channel is refused with 40160 (401); the key's own ``*`` allows it."""
    await publish(http, "room", {"name": "kept", "data": "x"})
    token = jwt_token(capability={"room": ["subscribe", "publish"], "open": ["history"]})
    bearer = {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode()}
    refused = await http.get("/channels/room/messages", headers=bearer)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 40160
    assert refused.json()["error"]["message"] == (
        "Action not permitted: 'history' on channel 'room' by this capability"
    )
    assert (await http.get("/channels/open/messages", headers=bearer)).json() == []
    assert names((await http.get("/channels/room/messages", headers=BASIC)).json()) == ["kept"]


async def test_retention_is_the_apps_and_zero_keeps_nothing(start_emulator: StartEmulator) -> None:
    """``ably_history_seconds`` per app: a message is gone once it is older (1 s here), and 0 keeps none, with no
    effect on delivery."""
    short = replace(APP, ably_history_seconds=1.0)
    none = replace(APP, app_id="2", key="other-key", ably_history_seconds=0)
    running = await start_emulator(app=short, apps=(none,))
    other = {"Authorization": "Basic " + base64.b64encode(none.ably_api_key.encode()).decode()}
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        await publish(http, "room", {"name": "brief", "data": "x"})
        assert names((await http.get("/channels/room/messages", headers=BASIC)).json()) == ["brief"]
        await asyncio.sleep(1.2)
        assert (await http.get("/channels/room/messages", headers=BASIC)).json() == []
        response = await http.post("/channels/room/messages", json={"name": "unkept"}, headers=other)
        assert response.status_code == 201
        assert (await http.get("/channels/room/messages", headers=other)).json() == []


async def test_pusher_publishes_are_not_ably_history(http: httpx.AsyncClient) -> None:
    """A publish through the Pusher HTTP API reaches Ably subscribers but is not kept: history is what was published
    through Ably's protocol (docs/ably.md#history-and-rewind)."""
    await pusher_publish(http, "room", "via-pusher-api")
    await publish(http, "room", {"name": "ably-side", "data": "x"})
    assert names((await http.get("/channels/room/messages", headers=BASIC)).json()) == ["ably-side"]


# -- rewind, on the wire -------------------------------------------------------------------------------------------


async def test_rewind_on_the_wire(ably_emulator: RunningEmulator, http: httpx.AsyncClient, wires: list[Any]) -> None:
    """``params: {rewind}`` on a first ATTACH: ATTACHED echoes it with HAS_BACKLOG, then the rewound messages come
    as MESSAGEs, the messages of one publish together, each with its id, timestamp and connectionId, before any
    later message. No messages kept: no HAS_BACKLOG, nothing sent. An ATTACH of an attached channel, or one carrying
    a channelSerial (a resume), is not rewound, though its ATTACHED shows the param (ably-js's ``channel.params``)."""
    await publish(http, "room", {"name": "a", "data": "1"}, {"name": "b", "data": "2"})
    await publish(http, "room", {"name": "c", "data": "3"})
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    attached = await wire.attach("room", params={"rewind": "2", "delta": "vcdiff"})
    assert attached["params"] == {"rewind": "2"} and attached["flags"] & HAS_BACKLOG
    first, second = await wire.expect(MESSAGE), await wire.expect(MESSAGE)
    assert [names(m["messages"]) for m in (first, second)] == [["b"], ["c"]]
    assert first["messages"][0]["id"] == f"{first['id']}:1" and first["messages"][0]["timestamp"] == first["timestamp"]
    await publish(http, "room", {"name": "live", "data": "4"})
    assert names((await wire.expect(MESSAGE))["messages"]) == ["live"]

    again = await wire.attach("room", params={"rewind": "2"})
    assert again["params"] == {"rewind": "2"} and not again["flags"] & HAS_BACKLOG
    empty = await wire.attach("quiet", params={"rewind": "5"})
    assert empty["params"] == {"rewind": "5"} and not empty["flags"] & HAS_BACKLOG
    await publish(http, "room2", {"name": "earlier", "data": "x"})
    resumed = await wire.attach("room2", params={"rewind": "1"}, channelSerial="0000000000000001")
    assert resumed["params"] == {"rewind": "1"} and not resumed["flags"] & HAS_BACKLOG
    await publish(http, "room", {"name": "after", "data": "5"})
    assert names((await wire.expect(MESSAGE))["messages"]) == ["after"]  # nothing rewound was queued before it


async def test_a_persisted_last_message_is_rewound_after_the_retention(
    start_emulator: StartEmulator, wires: list[Any], tmp_path: Path
) -> None:
    """docs/ably.md's app, keeping no other history: a page opening later gets the order's current status with
    ``rewind: '1'``."""
    section = (ROOT / "docs" / "ably.md").read_text().split('"persist last message"', 1)[1]
    (tmp_path / "app.toml").write_text(section.split("```toml\n", 1)[1].split("```", 1)[0])
    [documented] = load_config(tmp_path / "app.toml", defaults=EmulatorConfig(apps=())).apps
    running = await start_emulator(app=replace(documented, ably_history_seconds=0))
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        await publish(http, "orders:42", {"name": "status", "data": "cooking"}, {"name": "status", "data": "ready"})
        await publish(http, "chat:42", {"name": "line", "data": "hi"})
        assert (await http.get("/channels/orders:42/messages", headers=BASIC)).json() == []
    page = await ably_wire(running)
    wires.append(page)
    attached = await page.attach("orders:42", params={"rewind": "1"})
    assert attached["flags"] & HAS_BACKLOG
    rewound = (await page.expect(MESSAGE))["messages"]
    assert [(item["name"], item["data"]) for item in rewound] == [("status", "ready")]
    assert not (await page.attach("chat:42", params={"rewind": "1"}))["flags"] & HAS_BACKLOG


async def test_a_name_qualified_with_rewind(
    ably_emulator: RunningEmulator, http: httpx.AsyncClient, wires: list[Any]
) -> None:
    """``[?rewind=1]orders`` is the channel ``orders`` rewound by one, every frame of it named as the client attached
    it (the SDK routes by that name), beside a plain ``orders`` attachment of the same connection; a DETACH of the
    qualified name leaves the plain one; a qualifier that does not end fails that channel only (40010)."""
    await publish(http, "orders", {"name": "status", "data": "placed"}, {"name": "status", "data": "packed"})
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    assert (await wire.attach("orders"))["channel"] == "orders"
    qualified = await wire.attach("[?rewind=1]orders")
    assert (qualified["channel"], qualified["params"]) == ("[?rewind=1]orders", {"rewind": "1"})
    assert qualified["flags"] & HAS_BACKLOG
    rewound = await wire.expect(MESSAGE)
    assert rewound["channel"] == "[?rewind=1]orders" and [m["data"] for m in rewound["messages"]] == ["packed"]
    await publish(http, "orders", {"name": "status", "data": "shipped"})
    live = [await wire.expect(MESSAGE) for _ in range(2)]
    assert sorted(message["channel"] for message in live) == ["[?rewind=1]orders", "orders"]

    await wire.send({"action": 12, "channel": "[?rewind=1]orders"})
    assert (await wire.expect(13))["channel"] == "[?rewind=1]orders"  # DETACHED
    await wire.publish("[?rewind=1]orders", {"name": "status", "data": "delivered"})  # publishes to orders
    echoed = await wire.expect(MESSAGE)
    assert (echoed["channel"], echoed["messages"][0]["data"]) == ("orders", "delivered")
    assert (await wire.expect(ACK))["msgSerial"] == 0

    await wire.send({"action": 10, "channel": "[?rewind=1orders"})
    error = await wire.expect(ERROR)
    assert (error["channel"], error["error"]["code"]) == ("[?rewind=1orders", 40010)
    assert error["error"]["message"] == "Invalid channel name '[?rewind=1orders': a qualifier '[?…' ends with ']'"
    await publish(http, "orders", {"name": "status", "data": "signed"})
    assert (await wire.expect(MESSAGE))["channel"] == "orders"

    # The SDK's REST calls on the same channel object use the qualified name in the path: history() (with
    # untilAttach, as docs/ably.md advises), presence, presence.history() and status() were refused with 40010
    qualified_path = "/channels/%5B%3Frewind%3D1%5Dorders"
    history = await http.get(f"{qualified_path}/messages", headers=BASIC)
    assert history.status_code == 200, history.text
    assert [item["data"] for item in history.json()][:2] == ["signed", "delivered"]
    for route in ("/presence", "/presence/history", ""):
        answer = await http.get(f"{qualified_path}{route}", headers=BASIC)
        assert answer.status_code == 200, (route, answer.text)
    assert (await http.get(qualified_path, headers=BASIC)).json()["channelId"] == "orders"
    refused = await http.get("/channels/%5B%3Frewind%3D1orders/messages", headers=BASIC)
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, 40010)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rewind": "ten"}, "rewind must be a number of messages or a time such as '30s' or '2m', got 'ten'"),
        ({"rewind": "5h"}, "rewind must be a number of messages or a time such as '30s' or '2m', got '5h'"),
        ({"rewind": 1}, "rewind must be a number of messages or a time such as '30s' or '2m', got 1"),
        ({"rewind": "1m", "rewindLimit": "0"}, "rewindLimit must be a positive number of messages, got '0'"),
        ("rewind=1", None),
    ],
    ids=["word", "hours", "number", "limit-zero", "params-not-object"],
)
async def test_a_bad_rewind_fails_that_channel_only(
    ably_emulator: RunningEmulator, http: httpx.AsyncClient, wires: list[Any], params: object, message: str | None
) -> None:
    """The channel's attach fails with 40003, an attached one too (nothing more is delivered to it, as to any channel
    whose attach failed); the connection and its other channels stay."""
    wire = await ably_wire(ably_emulator)
    wires.append(wire)
    await wire.attach("other")
    expected = f"Invalid channel params: {message}" if message else "ATTACH params must be an object of channel params"
    for attached_before in (False, True):
        if attached_before:
            await wire.attach("room")
        await wire.send({"action": 10, "channel": "room", "params": params})
        error = await wire.expect(ERROR)
        assert (error["channel"], error["error"]["code"], error["error"]["message"]) == ("room", 40003, expected)
    await publish(http, "room", {"name": "not-delivered", "data": "x"})
    await publish(http, "other", {"name": "delivered", "data": "x"})
    assert (await wire.expect(MESSAGE))["channel"] == "other"


async def test_rewind_by_time_and_limit(ably_emulator: RunningEmulator, http: httpx.AsyncClient) -> None:
    for number in range(5):
        await publish(http, "room", {"name": f"m{number}", "data": "x"})
    wire: AblyWire = await ably_wire(ably_emulator)
    try:
        attached = await wire.attach("room", params={"rewind": "1m", "rewindLimit": "3"})
        assert attached["params"] == {"rewind": "1m", "rewindLimit": "3"}
        assert [names((await wire.expect(MESSAGE))["messages"]) for _ in range(3)] == [["m2"], ["m3"], ["m4"]]
    finally:
        await wire.ws.close()


async def test_a_rewind_past_100_messages_attaches_with_the_cut_reported(
    ably_emulator: RunningEmulator, http: httpx.AsyncClient
) -> None:
    """Ably: "At most 100 messages will be sent… The attachment succeeds, but truncation of the message backlog is
    indicated as a non-fatal error in the attachment response" (90004, 404); the last 100 come, oldest first."""
    batch = [{"name": f"m{number}", "data": "x"} for number in range(150)]
    await publish(http, "room", *batch)
    wire: AblyWire = await ably_wire(ably_emulator)
    try:
        attached = await wire.attach("room", params={"rewind": "500"})
        assert attached["params"] == {"rewind": "500"}
        assert attached["error"]["code"] == 90004 and attached["error"]["statusCode"] == 404
        assert attached["error"]["message"].startswith("Unable to recover channel (message limit exceeded)")
        [rewound] = [await wire.expect(MESSAGE)]
        assert names(rewound["messages"]) == [f"m{number}" for number in range(50, 150)]
        exact = await wire.attach("fits", params={"rewind": "500"})  # fewer than asked for: no error
        assert "error" not in exact and "error" not in await wire.attach("other", params={"rewind": "100"})
        await publish(http, "room", {"name": "live", "data": "x"})
        assert names((await wire.expect(MESSAGE))["messages"]) == ["live"]
    finally:
        await wire.ws.close()


async def test_ably_python_refuses_a_bad_rewind_with_the_channel_error(ably_emulator: RunningEmulator) -> None:
    realtime = AblyRealtime(key=APP.ably_api_key, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False)
    try:
        with pytest.raises(AblyException) as refused:
            await realtime.channels.get("room", ChannelOptions(params={"rewind": "soon"})).attach()
        assert refused.value.code == 40003
        await realtime.channels.get("fine").attach()
    finally:
        await realtime.close()


# -- the docs ------------------------------------------------------------------------------------------------------


async def test_the_docs_python_example_reads_an_orders_statuses(start_emulator: StartEmulator) -> None:
    """docs/ably.md's ably-python block, run as printed against an emulator serving the README's app (its port put
    in for 6001)."""
    section = (ROOT / "docs" / "ably.md").read_text().split("## History and rewind", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    default_app = App(app_id="1", key="app-key", secret="app-secret")  # relay emulator --app-id 1
    running = await start_emulator(app=default_app)
    namespace: dict[str, Any] = {}
    exec(compile(code.replace("port=6001", f"port={running.port}"), "docs/ably.md", "exec"), namespace)
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        basic = {"Authorization": "Basic " + base64.b64encode(default_app.ably_api_key.encode()).decode()}
        for status in ("placed", "packed", "shipped"):
            response = await http.post(
                "/channels/order-42/messages", json={"name": "status", "data": status}, headers=basic
            )
            assert response.status_code == 201
    assert await namespace["recent_statuses"]("42") == ["shipped", "packed", "placed"]


# -- presence history ----------------------------------------------------------------------------------------------


async def test_presence_history_lists_members_changes(ably_emulator: RunningEmulator) -> None:
    """``channel.presence.history()`` (ably-python, REST): a member's enter, update and leave, newest first, each as
    it was sent (action, clientId, connectionId, id, data); ``direction="forwards"`` and paging as for messages."""
    member = AblyRealtime(key=APP.ably_api_key, endpoint=f"127.0.0.1:{ably_emulator.port}", tls=False, client_id="ann")
    rest = AblyRest(key=APP.ably_api_key, endpoint="127.0.0.1", port=ably_emulator.port, tls=False,
                    use_token_auth=True)  # fmt: skip
    try:
        await connected(member)
        room = member.channels.get("room")
        await room.attach()
        await room.presence.enter("hello")
        await room.presence.update("busy")
        await room.presence.leave()
        for _ in range(50):  # the leave's ACK may come before its PRESENCE is kept
            page = await rest.channels.get("room").presence.history()
            if len(page.items) == 3:
                break
            await asyncio.sleep(0.05)
        assert [(p.action, p.client_id, p.data) for p in page.items] == [
            (PresenceAction.LEAVE, "ann", "busy"),
            (PresenceAction.UPDATE, "ann", "busy"),
            (PresenceAction.ENTER, "ann", "hello"),
        ]
        assert len({p.id for p in page.items}) == 3 and all(p.connection_id for p in page.items)
        first = await rest.channels.get("room").presence.history(direction="forwards", limit=2)
        assert [p.action for p in first.items] == [PresenceAction.ENTER, PresenceAction.UPDATE] and first.has_next()
        assert [p.action for p in (await first.next()).items] == [PresenceAction.LEAVE]
    finally:
        await member.close()
        await rest.close()


async def test_presence_history_is_refused_without_the_history_operation(http: httpx.AsyncClient) -> None:
    token = jwt_token(capability={"room": ["subscribe", "presence"]})
    bearer = {"Authorization": "Bearer " + base64.b64encode(token.encode()).decode()}
    refused = await http.get("/channels/room/presence/history", headers=bearer)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == 40160
    assert (await http.get("/channels/room/presence/history", headers=BASIC)).json() == []


def test_presence_changes_in_one_millisecond_keep_the_order_they_were_made() -> None:
    """By the serial each change's PRESENCE message was sent with, not by the ids' text (``:10:`` before ``:9:``),
    and a member's leave and return in one millisecond (a Pusher member's ids are fixed) are two changes."""
    history = MessageHistory(retention_ms=60_000, presence=True)
    changes = [(2, "1.1:0:0")] + [(4, f"1.1:{n}:0") for n in range(1, 11)] + [(3, "1.2:1:0"), (2, "1.2:0:0")]
    for serial, (action, change_id) in enumerate(changes, 1):
        fields = {
            "timestamp": 5_000,
            "channelSerial": f"{serial:016x}",
            "presence": [{"action": action, "id": change_id}],
        }
        history.keep("room", fields, serial, 5_000)
    found, _ = history.page("room", 5_000, start=0, end=5_000, backwards=False, limit=100)
    assert [(kept.item()["action"], kept.item()["id"]) for kept in found] == changes
    first, more = history.page("room", 5_000, start=0, end=5_000, backwards=True, limit=1)
    rest, _ = history.page("room", 5_000, start=0, end=5_000, backwards=True, limit=100, after=first[0].order)
    assert more and [kept.item()["id"] for kept in [*first, *rest]] == [change_id for _, change_id in reversed(changes)]


async def test_messages_read_from_history_are_in_the_usage_as_ably_bills_them(
    ably_emulator: RunningEmulator, http: httpx.AsyncClient
) -> None:
    """Ably bills "1 per retrieved message" of history, and a REST presence query's members and a rewind's backlog
    likewise (reference §F.2): none was metered, so relay cost --usage left out what a chat loading its history pays."""
    await publish(http, "room", *({"name": f"m{number}", "data": "x"} for number in range(3)))
    members = [await ably_wire(ably_emulator, f"key={API_KEY}&clientId={client_id}") for client_id in "ab"]
    try:
        for member in members:
            await member.attach("lobby")
            serial = await member.presence("lobby", {"action": 2, "data": "in"})
            while not ((answer := await member.recv(5))["action"] == ACK and answer["msgSerial"] == serial):
                pass
        present = await http.get("/channels/lobby/presence", headers=BASIC)  # 2 members
        history = await http.get("/channels/room/messages?limit=2", headers=BASIC)  # 2 of the 3 messages
        reader = await ably_wire(ably_emulator)
        members.append(reader)
        await reader.attach("room", params={"rewind": "3"})  # the 3
        assert len((await reader.expect(MESSAGE))["messages"]) == 3
        assert (len(present.json()), len(history.json())) == (2, 2)
        meter = ably_emulator.node.states[APP.app_id].meter
        assert whole_run(meter.days()).history_messages == 2 + 2 + 3
        day = whole_run(usage_document([meter], generated_by="test")["apps"][APP.app_id]["days"])
        assert day["history_messages"] == 7
    finally:
        for member in members:
            await member.ws.close()

"""Ably realtime fixes: a reauth keeps the connection's client id, a connection-level ERROR ends the connection, and
the ``modes`` channel param. § numbers are the reference's (shared/reference/ably-and-pricing.md); Ably's own SDK
integration tests are cited where they are the source."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from ablysupport import (
    ACK,
    API_KEY,
    ATTACH,
    AUTH,
    DETACH,
    ERROR,
    MESSAGE,
    PRESENCE,
    ably_wire,
    jwt_token,
    run_node,
)
from test_ably_realtime_edges import (
    PRESENCE_MODE,
    PRESENCE_SUBSCRIBE_MODE,
    PUBLISH_MODE,
    SUBSCRIBE_MODE,
    Wires,
    next_non_heartbeat,
)

from tests.conftest import RunningEmulator

LEAVE = 3


async def test_an_anonymous_connection_cannot_take_a_client_id_by_reauth(
    ably_emulator: RunningEmulator, wires: Wires
) -> None:
    """RSA15c and Ably's 40102 page: a reauth's credentials must keep the connection's client id. An anonymous
    connection's AUTH with a token for "bob" fails the connection with ERROR 40102 (ably-js
    ``auth.authorize({clientId: 'bob'})`` on it used to succeed, its messages then published as bob); a publish sent
    right after it is not delivered, so the connection never published as anyone."""
    watcher = await ably_wire(ably_emulator)
    anonymous = await ably_wire(ably_emulator, f"access_token={jwt_token()}")
    wires.extend((watcher, anonymous))
    await watcher.attach("who")
    await anonymous.attach("who")
    await anonymous.publish("who", {"name": "before", "data": "d"})
    before = await watcher.expect(MESSAGE)
    assert [(m["name"], m.get("clientId")) for m in before["messages"]] == [("before", None)], before
    await anonymous.send({"action": AUTH, "auth": {"accessToken": jwt_token(client_id="bob")}})
    await anonymous.publish("who", {"name": "after", "data": "d"})
    delivered = await next_non_heartbeat(watcher, 1.0)
    assert delivered is None, f"the publish after the AUTH was delivered: {delivered}"
    seen = await anonymous.closed()
    errors = [message for message in seen if message["action"] == ERROR]
    assert [(error.get("channel"), error["error"]["code"]) for error in errors] == [(None, 40102)], seen


@pytest.mark.parametrize(
    "request_without_channel",
    [{"action": DETACH}, {"action": ATTACH, "channel": 5}],
    ids=["detach-without-channel", "attach-with-a-number"],
)
async def test_a_connection_level_error_ends_the_connection(
    ably_emulator: RunningEmulator, wires: Wires, request_without_channel: dict[str, Any]
) -> None:
    """§D.4: an ERROR without ``channel`` fails the whole connection in the SDKs, which then drop the socket. The
    server ends it too, so its member leaves at once (the connection used to be held for a resume, its member
    leaving some 16 s later), and other connections are served on."""
    watcher = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=watcher")
    victim = await ably_wire(ably_emulator, f"key={API_KEY}&clientId=victim")
    wires.extend((watcher, victim))
    await watcher.attach("room")
    await victim.attach("room", flags=PRESENCE_MODE | PUBLISH_MODE)  # no PRESENCE_SUBSCRIBE: no echo of its enter
    await victim.presence("room", {"action": 2})
    assert (await victim.expect(ACK))["action"] == ACK
    assert (await watcher.expect(PRESENCE))["presence"][0]["clientId"] == "victim"
    await victim.send(request_without_channel)
    error = await victim.expect(ERROR)
    assert "channel" not in error and error["error"]["code"] == 40010, error
    started = time.monotonic()
    await victim.ws.close()  # as ably-js does once its connection has failed
    left = await next_non_heartbeat(watcher, 3.0)
    assert left is not None, "the member did not leave within 3 s: the connection was held for a resume"
    assert [(item["action"], item["clientId"]) for item in left["presence"]] == [(LEAVE, "victim")], left
    assert time.monotonic() - started < 3.0
    await watcher.attach("other", flags=PUBLISH_MODE)  # no SUBSCRIBE: the ACK comes without the echo
    await watcher.publish("other", {"name": "still", "data": "served"})
    assert (await watcher.expect(ACK))["action"] == ACK


async def test_the_modes_param_sets_the_channel_modes(ably_emulator: RunningEmulator, wires: Wires) -> None:
    """The ``modes`` channel param (comma-separated mode names) wins over the ATTACH's mode flags, within the
    capability, and ATTACHED shows it among the params; an unknown mode name fails that channel with 40000 and the
    connection stays."""
    token = jwt_token({"*": ["subscribe", "presence"]})
    wire = await ably_wire(ably_emulator, f"access_token={token}")
    wires.append(wire)
    attached = await wire.attach("room", params={"modes": "publish,presence, subscribe"}, flags=PRESENCE_SUBSCRIBE_MODE)
    assert attached["flags"] == PRESENCE_MODE | SUBSCRIBE_MODE, attached  # publish: not in the capability
    assert attached["params"] == {"modes": "publish,presence, subscribe"}, attached
    await wire.send({"action": ATTACH, "channel": "other", "params": {"modes": "subscribe,susribe"}})
    refused = await wire.expect(ERROR)
    assert (refused["channel"], refused["error"]["code"]) == ("other", 40000), refused
    await wire.attach("room", params={"modes": "subscribe"})


async def test_ably_js_attaches_with_the_modes_param(node_modules: Path, ably_emulator: RunningEmulator) -> None:
    """ably-js's channel.test.js attachWithChannelParamsBasicChannelsGet and
    attachWithChannelParamsModesAndChannelModes: ``params: {modes: 'subscribe'}`` gives ``channel.modes ==
    ['subscribe']`` and ``channel.params`` with the param, and a publish and a presence enter are refused; the param
    wins over the ``modes`` option. Those sandbox tests expect 40160, from Ably before 40165 ("Channel mode not
    requested when attaching", ably.com/docs/platform/errors/codes/40165) existed: the key allows both, so 40165."""
    run = await run_node("ably_js_params_modes.mjs", ably_emulator)
    assert run.summary["checks"] == ["params-modes-applied", "params-modes-win-over-modes"]

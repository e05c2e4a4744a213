"""The Pusher HTTP API after a hunt with the official server libraries (pusher-http-node through Node, and
pusher-http-python), each against a real emulator on an ephemeral port: ``info=cache``, an attribute only
``GET /channels/{name}`` has, is refused by a publish, a batch and the channel list (they answered 200 without it)."""

from __future__ import annotations

import asyncio

import pytest
from pusher.errors import PusherBadRequest  # type: ignore[import-untyped]

from tests.conformance.wsclient import official_client
from tests.conftest import RunningEmulator
from tests.node_scenarios import NODE_DIR, app_env, node_modules, run_scenario

ONE_CHANNEL_ONLY = "info=cache is answered for one channel only: ask GET /apps/1/channels/{name}?info=cache"


async def test_a_publish_asking_for_info_cache_is_refused_and_publishes_nothing(emulator: RunningEmulator) -> None:
    """pusher-http-node's ``trigger`` and ``triggerBatch`` with ``info: 'cache'`` get a 400 naming where the cache is
    read (a publish's answer has user_count and subscription_count only); nothing is published, so the cache channel
    stays empty, and the same calls asking for user_count are answered."""
    node_modules("pusher")
    env = app_env(emulator.host, emulator.port, emulator.app)
    run = await run_scenario(NODE_DIR / "pusher_http_node_info.mjs", env)
    assert run.summary["checks"] == ["refused-unpublished", "still-serving"]


@pytest.mark.parametrize("prefix", [None, "cache-"])
async def test_the_channel_list_refuses_info_cache(emulator: RunningEmulator, prefix: str | None) -> None:
    """pusher-http-python's ``channels_info(attributes=["cache"])`` is a 400 naming the one-channel query, whatever
    the prefix; the list with user_count on presence channels, and the cache of one channel, are still answered."""
    client = official_client(emulator)
    await asyncio.to_thread(client.trigger, "cache-prices", "price", {"p": 1})
    with pytest.raises(PusherBadRequest) as refused:
        await asyncio.to_thread(client.channels_info, prefix, ["cache"])
    assert str(refused.value) == f'{{"error":"{ONE_CHANNEL_ONLY}"}}'
    assert await asyncio.to_thread(client.channels_info, "presence-", ["user_count"]) == {"channels": {}}
    cached = await asyncio.to_thread(client.channel_info, "cache-prices", ["cache"])
    assert cached["cache"]["data"] == '{"p": 1}'

"""Ably REST answers checked against what Ably documents, with ably-python (which has no batch methods: its
``request()`` sends them, as Ably's docs show): error codes and statuses a user's code branches on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from ably import AblyRest  # type: ignore[import-untyped]
from ablysupport import API_KEY

from tests.conftest import RunningEmulator

MANY = [f"many-{index}" for index in range(101)]


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

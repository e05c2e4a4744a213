"""The channel listings in process: how long ``GET /apps/{id}/channels`` (Pusher) and ``GET /channels`` (Ably REST)
hold the event loop over many occupied channels.

Each answer is computed on the event loop, so every connection waits for it. This subscribes a stand-in connection to
N channels on this node and announces M more as held by another node of a cluster (as its Redis snapshot would), a
tenth of them presence channels and a tenth with names only Ably clients can hold (``room:1``), then times the signed
requests through the emulator's own handlers (medians of the rounds, after one warm-up):

    python -m bench.channel_list --channels 100000 [--remote 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from relay.emulator.config import App, EmulatorConfig
from relay.emulator.http_api import Response
from relay.emulator.server import EmulatorNode
from relay.protocol.signing import sign_rest_request

APP = App(app_id="1", key="bench-key", secret="bench-secret", subscription_count=True)
REMOTE_NODE = 2


class StandIn:
    """A subscriber that is never written to: the listings only count subscribers."""

    socket_id = "1.1"

    def send_frame(self, frame: bytes) -> None:
        pass

    def send_text(self, text: str) -> None:
        pass

    def terminate(self, code: int, message: str) -> None:
        pass


def channel_name(index: int) -> str:
    if index % 10 == 0:
        return f"presence-room-{index}"
    if index % 10 == 1:
        return f"room:{index}"  # an Ably client's: not a name Pusher's API can ask about
    return f"ch-{index}"


def pusher_listing(node: EmulatorNode, params: dict[str, str]) -> Callable[[], Response]:
    path = f"/apps/{APP.app_id}/channels"
    signed = sign_rest_request(APP.key, APP.secret, "GET", path, params=params, timestamp=int(time.time()))
    query = list(signed.items())
    return lambda: node.api.handle("GET", path, query, b"")


def ably_listing(node: EmulatorNode, params: dict[str, str]) -> Callable[[], Response | None]:
    token = base64.b64encode(APP.ably_api_key.encode()).decode()
    headers = [("authorization", f"Basic {token}")]
    return lambda: node.ably.handle("GET", "/channels", list(params.items()), headers, b"")


async def measure(channels: int, remote: int, rounds: int = 7) -> dict[str, Any]:
    node = EmulatorNode(EmulatorConfig(apps=(APP,)))
    await node.start()
    try:
        state = node.states[APP.app_id]
        peer = StandIn()
        for index in range(channels):
            state.subscribe(peer, channel_name(index), None)
        for index in range(channels, channels + remote):
            state.remote_subscriptions(REMOTE_NODE, channel_name(index), 1)
        requests: dict[str, Callable[[], Response | None]] = {
            "pusher": pusher_listing(node, {}),
            "pusher info=subscription_count": pusher_listing(node, {"info": "subscription_count"}),
            "pusher presence- info=user_count": pusher_listing(
                node, {"filter_by_prefix": "presence-", "info": "user_count"}
            ),
            "ably by=id limit=1000": ably_listing(node, {"by": "id", "limit": "1000"}),
            "ably by=value limit=100": ably_listing(node, {"by": "value", "limit": "100"}),
        }
        results: dict[str, Any] = {"channels": channels, "remote": remote}
        for label, request in requests.items():
            answer = request()  # warm-up, and the answer's size
            assert answer is not None and answer.status == 200, answer
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                request()
                times.append(time.perf_counter() - started)
            listed = json.loads(answer.body)  # Pusher's {"channels": {...}}, Ably's list
            results[label] = {
                "ms": round(statistics.median(times) * 1000, 1),
                "bytes": len(answer.body),
                "listed": len(listed["channels"] if isinstance(listed, dict) else listed),
            }
        return results
    finally:
        await node.close(webhook_grace=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=100_000, help="occupied channels on this node")
    parser.add_argument("--remote", type=int, default=0, help="occupied channels only another node holds")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.channels, args.remote)), indent=2))


if __name__ == "__main__":
    main()

"""A small fan-out driver in Python: subscribers on one channel, signed HTTP publishes, every delivery accounted for.

    python -m bench.driver --port 6001 --app-id app-id --key app-key --secret app-secret --subs 100 --msgs 50

It is the client of the CI smoke check (``tests/bench``), which asserts that everything arrives and never how fast;
the measuring is ``bench/run.py``'s, with the shared harness's Node load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx
from websockets.asyncio.client import ClientConnection, connect

from relay.protocol.signing import sign_rest_request

EVENT = "bench-msg"


@dataclass
class FanoutResult:
    subscribers: int
    published: int
    delivered: int  # distinct (subscriber, seq) pairs received
    duplicates: int = 0
    out_of_order: int = 0  # a seq received after a higher one on the same socket (only counted when sequential)
    errors: list[str] = field(default_factory=list)
    extensions: set[str] = field(default_factory=set)  # Sec-WebSocket-Extensions answers the server gave

    @property
    def expected(self) -> int:
        return self.subscribers * self.published

    @property
    def lost(self) -> int:
        return self.expected - self.delivered


async def subscribe(ws_url: str, channel: str, *, deflate: bool) -> ClientConnection:
    ws = await connect(ws_url, compression="deflate" if deflate else None, max_queue=None)
    established = json.loads(await ws.recv())
    if established.get("event") != "pusher:connection_established":
        raise RuntimeError(f"expected connection_established, got {established}")
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    while True:
        frame = json.loads(await ws.recv())
        if frame.get("event") == "pusher_internal:subscription_succeeded" and frame.get("channel") == channel:
            return ws
        if frame.get("event") == "pusher:error":
            raise RuntimeError(f"subscription refused: {frame}")


async def publish(
    client: httpx.AsyncClient, app_id: str, key: str, secret: str, channel: str, seq: int, pad: int = 80
) -> None:
    data = json.dumps({"seq": seq, "ts": time.monotonic_ns() // 1000, "pad": "x" * pad})
    body = json.dumps({"name": EVENT, "channels": [channel], "data": data}).encode()
    path = f"/apps/{app_id}/events"
    params = sign_rest_request(key, secret, "POST", path, timestamp=int(time.time()), body=body)
    response = await client.post(path, params=params, content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"publish {seq} answered {response.status_code}: {response.text[:200]}")


async def fanout(
    port: int,
    app_id: str,
    key: str,
    secret: str,
    *,
    subs: int,
    msgs: int,
    concurrency: int = 8,
    deflate: bool = False,
    channel: str = "bench",
    host: str = "127.0.0.1",
    wait_s: float = 30.0,
) -> FanoutResult:
    """Connect ``subs`` subscribers, publish ``msgs`` events (``concurrency`` in flight; 1 means in order) and wait
    until every subscriber has every event or ``wait_s`` seconds pass."""
    ws_url = f"ws://{host}:{port}/app/{key}?protocol=7&client=bench&version=1"
    sockets = await asyncio.gather(*(subscribe(ws_url, channel, deflate=deflate) for _ in range(subs)))
    result = FanoutResult(subscribers=subs, published=0, delivered=0)
    for ws in sockets:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response is not None else None
        if answer:
            result.extensions.add(answer)

    async def receive(ws: ClientConnection) -> None:
        seen: set[int] = set()
        highest = -1
        while len(seen) < msgs:
            frame = json.loads(await ws.recv())
            if frame.get("event") != EVENT or frame.get("channel") != channel:
                continue
            seq = json.loads(frame["data"])["seq"]
            if seq in seen:
                result.duplicates += 1
                continue
            if seq < highest and concurrency == 1:
                result.out_of_order += 1
            highest = max(highest, seq)
            seen.add(seq)
            result.delivered += 1

    receivers = [asyncio.create_task(receive(ws)) for ws in sockets]
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10.0) as client:
            queue = iter(range(msgs))

            async def publisher() -> None:
                for seq in queue:
                    await publish(client, app_id, key, secret, channel, seq)
                    result.published += 1

            await asyncio.gather(*(publisher() for _ in range(max(1, concurrency))))
        done, pending = await asyncio.wait(receivers, timeout=wait_s)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is not None:
                result.errors.append(repr(task.exception()))
    finally:
        for task in receivers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6001)
    parser.add_argument("--app-id", default="app-id")
    parser.add_argument("--key", default="app-key")
    parser.add_argument("--secret", default="app-secret")
    parser.add_argument("--subs", type=int, default=100)
    parser.add_argument("--msgs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(
        fanout(
            args.port,
            args.app_id,
            args.key,
            args.secret,
            subs=args.subs,
            msgs=args.msgs,
            concurrency=args.concurrency,
            deflate=args.deflate,
            host=args.host,
        )
    )
    print(
        json.dumps(
            {
                "subscribers": result.subscribers,
                "published": result.published,
                "delivered": result.delivered,
                "lost": result.lost,
                "duplicates": result.duplicates,
                "out_of_order": result.out_of_order,
                "extensions": sorted(result.extensions),
                "errors": result.errors,
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

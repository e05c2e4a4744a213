"""The garbage collector's view of idle connections: objects it tracks per connection and the pause of a full
collection, in process.

A full collection walks every tracked object and stops the event loop while it does, so every connection waits for
it: its pause grows with the number of connections. This opens N subscribed WebSocket connections through the real
handshake (``bench.http_path.subscriber``), freezes what existed before them as the emulator's CLI does at start-up
(unless ``--no-freeze``), and times ``gc.collect()``:

    python -m bench.gc_pause --connections 10000 [--no-freeze]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

from bench.http_path import APP, subscriber
from relay.emulator.config import EmulatorConfig
from relay.emulator.server import EmulatorNode


async def measure(connections: int, *, freeze: bool = True, rounds: int = 5) -> dict[str, Any]:
    node = EmulatorNode(EmulatorConfig(apps=(APP,)))
    await node.start()
    try:
        gc.collect()
        if freeze:
            gc.freeze()
        before = len(gc.get_objects())
        transports = [subscriber(node, f"ch-{index % 100}") for index in range(connections)]
        gc.collect()
        tracked = len(gc.get_objects()) - before
        pauses = []
        for _ in range(rounds):
            started = time.perf_counter()
            gc.collect()
            pauses.append(time.perf_counter() - started)
        assert len(node.connections) == len(transports)
        return {
            "connections": connections,
            "start_up_frozen": freeze,
            "tracked_objects_per_connection": round(tracked / connections, 1),
            "full_collection_ms": round(sorted(pauses)[len(pauses) // 2] * 1000, 1),
        }
    finally:
        gc.unfreeze()
        await node.close(webhook_grace=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--no-freeze", action="store_true", help="leave the start-up objects to every collection")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.connections, freeze=not args.no_freeze))))


if __name__ == "__main__":
    main()

"""Cross-node fan-out: what Redis adds between emulator nodes, measured against a single node in the same run.

    python bench/cluster.py                  # prints a markdown table and one JSON line

Two `relay emulator` processes share a private redis-server. Subscribers connect to node B; events are published
through the HTTP API of node A (cross-node) or of node B itself (single node), alternately, so drift hits both alike.
Latency is publish-to-receipt on loopback, measured by the subscribers' process; throughput is deliveries per second
for a burst of publishes to many subscribers, until every subscriber has every event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relay.protocol.signing import sign_rest_request
from tests.emulator_process import EmulatorProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def subscribe(port: int, channel: str, count: int) -> list[ClientConnection]:
    clients = []
    for _ in range(count):
        ws = await connect(f"ws://127.0.0.1:{port}/app/app-key?protocol=7", max_queue=None, compression=None)
        await ws.recv()
        await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        await ws.recv()
        clients.append(ws)
    return clients


async def publish(http: httpx.AsyncClient, port: int, channel: str, data: str) -> None:
    body = json.dumps({"name": "bench", "channel": channel, "data": data}).encode()
    params = sign_rest_request("app-key", "app-secret", "POST", "/apps/1/events", timestamp=int(time.time()), body=body)
    response = await http.post(f"http://127.0.0.1:{port}/apps/1/events", params=params, content=body)
    response.raise_for_status()


async def latencies(http: httpx.AsyncClient, port: int, clients: list[ClientConnection], rounds: int) -> list[float]:
    samples: list[float] = []
    for _ in range(rounds):
        sent = time.perf_counter()
        await publish(http, port, "latency", "x")
        for ws in clients:
            await ws.recv()
            samples.append((time.perf_counter() - sent) * 1000)
        await asyncio.sleep(0.01)
    return samples


async def throughput(http: httpx.AsyncClient, port: int, clients: list[ClientConnection], events: int) -> float:
    async def drain(ws: ClientConnection) -> None:
        for _ in range(events):
            await ws.recv()

    readers = [asyncio.create_task(drain(ws)) for ws in clients]
    started = time.perf_counter()
    for _ in range(events):
        await publish(http, port, "fanout", "y" * 100)
    await asyncio.gather(*readers)
    return events * len(clients) / (time.perf_counter() - started)


async def run(subscribers: int, rounds: int, events: int) -> dict[str, object]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    redis_port = free_port()
    workdir = tempfile.mkdtemp()
    redis = await asyncio.create_subprocess_exec(
        binary, "--port", str(redis_port), "--save", "", "--appendonly", "no", cwd=workdir, stdout=subprocess.DEVNULL
    )
    await asyncio.sleep(0.3)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    nodes = [
        await EmulatorProcess.start("--app-id", "1", "--log-level", "warning", "--redis-url", redis_url)
        for _ in range(2)
    ]
    port_a, port_b = (node.port for node in nodes)
    try:
        latency_clients = await subscribe(port_b, "latency", 100)
        fanout_clients = await subscribe(port_b, "fanout", subscribers)
        await asyncio.sleep(0.5)
        results: dict[str, dict[str, list[float]]] = {"single node": {}, "cross-node": {}}
        async with httpx.AsyncClient() as http:
            for _ in range(3):
                for label, port in (("single node", port_b), ("cross-node", port_a)):
                    samples = await latencies(http, port, latency_clients, rounds)
                    results[label].setdefault("p50", []).append(statistics.median(samples))
                    results[label].setdefault("p99", []).append(statistics.quantiles(samples, n=100)[98])
                    rate = await throughput(http, port, fanout_clients, events)
                    results[label].setdefault("deliveries_per_s", []).append(rate)
    finally:
        for node in nodes:
            await node.stop()
        redis.terminate()
        await redis.wait()
    return {
        label: {name: round(statistics.median(values), 3) for name, values in figures.items()}
        for label, figures in results.items()
    } | {"subscribers": subscribers, "machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    result = asyncio.run(run(args.subscribers, args.rounds, args.events))
    single, cross = result["single node"], result["cross-node"]
    assert isinstance(single, dict) and isinstance(cross, dict)
    print("| figure (medians of 3) | single node | cross-node | ratio |")
    print("|---|---|---|---|")
    for name in ("p50", "p99", "deliveries_per_s"):
        unit = " ms" if name.startswith("p") else ""
        print(f"| {name} | {single[name]}{unit} | {cross[name]}{unit} | {cross[name] / single[name]:.2f} |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

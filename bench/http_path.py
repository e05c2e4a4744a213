"""The HTTP publish path in process: signed publishes fed to one ``HttpConnection``, no sockets and no kernel.

What the ``channels`` scenario measures minus the network: N channels with one subscriber each (WebSocket
connections opened through the real handshake and ``pusher:subscribe``), then signed ``POST /apps/{id}/events``
requests, each to the next channel, written into the publisher's protocol object. Transports are stand-ins that
count bytes. Useful under a profiler, where the real scenario's kernel time and load generator would blur the picture:

    python -m bench.http_path --requests 100000
    python -m bench.http_path --parts            # µs per stage of one publish (timeit, best of 5, warm)
    python -m bench.http_path --parts --cold     # the same stages with the caches evicted before each call (median)
    py-spy record -r 1000 -o profile.svg -- python -m bench.http_path --requests 100000
    valgrind --tool=callgrind python -m bench.http_path --requests 2000   # instructions do not vary run to run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import time
import timeit
from collections import Counter
from collections.abc import Callable
from typing import Any

import httptools

from relay.emulator import http_api
from relay.emulator.config import App, EmulatorConfig
from relay.emulator.server import EmulatorNode, HttpConnection, parse_query, response_head, split_target
from relay.protocol.signing import sign_rest_request, unique_params, verify_rest_request

APP = App(app_id="1", key="bench-key", secret="bench-secret")
# More than the last-level cache of the machines this runs on: writing a byte in each of its cache lines leaves
# nothing of the request path cached, as after the idle spells of the latency scenario.
EVICTION_BYTES = 64 * 1024 * 1024
CACHE_LINE = 64


class CountingTransport:
    """What ``HttpConnection`` writes to, counting the bytes and the status of every HTTP response."""

    def __init__(self) -> None:
        self.written = 0
        self.statuses: Counter[bytes] = Counter()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if data.startswith(b"HTTP/1.1 "):
            self.statuses[data[9:12]] += 1

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 0) if name == "peername" else default


def masked_text_frame(payload: bytes) -> bytes:
    """A client's (masked) WebSocket text frame, as a browser would send ``pusher:subscribe``."""
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def subscriber(node: EmulatorNode, channel: str) -> CountingTransport:
    connection, transport = HttpConnection(node), CountingTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    key = base64.b64encode(os.urandom(16)).decode()
    connection.data_received(
        f"GET /app/{APP.key}?protocol=7 HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    connection.data_received(
        masked_text_frame(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}).encode())
    )
    return transport


def signed_publish(channel: str, seq: int, now: int) -> bytes:
    path = f"/apps/{APP.app_id}/events"
    data = json.dumps({"seq": seq, "sent_ms": now * 1000, "pad": "x" * 40})
    body = json.dumps({"name": "bench-msg", "channels": [channel], "data": data}).encode()
    query = "&".join(
        f"{k}={v}" for k, v in sign_rest_request(APP.key, APP.secret, "POST", path, timestamp=now, body=body).items()
    )
    head = (
        f"POST {path}?{query} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def measure(channels: int, requests: int) -> dict[str, Any]:
    """CPU µs per publish over ``requests`` publishes (after one warm-up round), and what was answered."""
    node = EmulatorNode(EmulatorConfig(apps=(APP,)))
    await node.start()
    # The liveness and HTTP timeout sweeps run once a second of wall-clock time over every connection: under
    # callgrind, which runs the code fifty times slower, they would add instructions in proportion to the slowdown.
    for sweeper in (node._sweeper, node._http_sweeper):
        if sweeper is not None:
            sweeper.cancel()
    try:
        subscribers = [subscriber(node, f"ch-{i}") for i in range(channels)]
        publisher, transport = HttpConnection(node), CountingTransport()
        publisher.connection_made(transport)  # type: ignore[arg-type]
        now = int(time.time())
        prepared = [signed_publish(f"ch-{i}", i, now) for i in range(channels)]
        for request in prepared:  # warm up: every code path and cache touched once
            publisher.data_received(request)
        await asyncio.sleep(0)
        delivered_before = sum(s.written for s in subscribers)
        started = time.process_time()
        for index in range(requests):
            publisher.data_received(prepared[index % channels])
            if index % 64 == 0:
                await asyncio.sleep(0)  # let the end-of-iteration flush run, as the event loop would
        elapsed = time.process_time() - started
        await asyncio.sleep(0)
        return {
            "channels": channels,
            "requests": requests,
            "cpu_us_per_publish": round(elapsed / requests * 1e6, 2),
            "statuses": {status.decode(): count for status, count in transport.statuses.items()},
            "subscriber_bytes": sum(s.written for s in subscribers) - delivered_before,
        }
    finally:
        await node.close(webhook_grace=0)


def warm_micros(stage: Callable[[], object], repeat: int) -> float:
    """µs per call, the best of 5 rounds of ``repeat`` calls back to back."""
    return min(timeit.repeat(stage, number=repeat, repeat=5)) / repeat * 1e6


def cold_micros(stage: Callable[[], object], repeat: int) -> float:
    """µs per call, the median of ``repeat`` calls each made after evicting the CPU caches."""
    scratch, fill = bytearray(EVICTION_BYTES), b"\x01" * (EVICTION_BYTES // CACHE_LINE)
    samples = []
    for _ in range(repeat):
        scratch[::CACHE_LINE] = fill
        started = time.perf_counter_ns()
        stage()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


async def parts(repeat: int = 20_000, *, cold: bool = False) -> dict[str, float]:
    """µs per stage of one signed publish to a one-subscriber channel, each stage timed on its own: warm (best of
    5 rounds of ``repeat`` calls) or ``cold`` (the median of ``repeat`` calls, each after evicting the caches)."""
    node = EmulatorNode(EmulatorConfig(apps=(APP,)))
    await node.start()
    try:
        subscriber(node, "ch-1")
        request = signed_publish("ch-1", 1, int(time.time()))
        head, _, body = request.partition(b"\r\n\r\n")
        path, query_string = split_target(head.split(b" ")[1].decode())
        query = parse_query(query_string)
        params = unique_params(query)
        state, api, ops = node.states[APP.app_id], node.api, node.ops
        assert api is not None
        event = http_api._checked_event(state, http_api._json_object(body))
        response = api.handle("POST", path, query, body)
        publisher = HttpConnection(node)
        publisher.connection_made(CountingTransport())  # type: ignore[arg-type]

        class Ignore:
            def on_url(self, url: bytes) -> None: ...
            def on_header(self, name: bytes, value: bytes) -> None: ...

        stages: dict[str, Callable[[], object]] = {
            "whole request (HttpConnection.data_received)": lambda: publisher.data_received(request),
            "httptools parse alone": lambda: httptools.HttpRequestParser(Ignore()).feed_data(request),
            "query string (split_target, parse_query, unique_params)": lambda: unique_params(
                parse_query(split_target(path + "?" + query_string)[1])
            ),
            "app lookup and rate limit": lambda: ops.rate_limited("POST", api.app_for(path, query)),
            "HttpApi.handle, all of it": lambda: api.handle("POST", path, query, body),
            "  signature check (verify_rest_request)": lambda: verify_rest_request(
                key=APP.key, secret=APP.secret, method="POST", path=path, params=params, body=body, now=time.time()
            ),
            "  JSON body and event validation": lambda: http_api._checked_event(state, http_api._json_object(body)),
            "  AppState.publish (frame, meter, the subscriber's write)": lambda: state.publish(
                event.channels[0], event.name, event.data, None
            ),
            "accounting (Operations.api_answered)": lambda: ops.api_answered("POST", path, state, response, 0.0),
            "response head": lambda: response_head(response, True),
        }
        timed = cold_micros if cold else warm_micros
        return {name: round(timed(stage, repeat), 2) for name, stage in stages.items()}
    finally:
        await node.close(webhook_grace=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--parts", action="store_true", help="time each stage of one publish instead")
    parser.add_argument("--cold", action="store_true", help="with --parts: evict the CPU caches before each call")
    args = parser.parse_args(argv)
    if args.cold and not args.parts:
        parser.error("--cold times the stages of --parts")
    work = (parts(300, cold=True) if args.cold else parts()) if args.parts else measure(args.channels, args.requests)
    try:
        import uvloop

        result = uvloop.run(work)
    except ImportError:
        result = asyncio.run(work)
    if args.parts:
        for name, micros in result.items():
            print(f"{micros:8.2f} µs  {name}")
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Shared fixtures: a real emulator on an ephemeral port, in the test's own event loop."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar

import httpx
import pytest

from relay.cost.usage import UsageDay
from relay.emulator.config import App, EmulatorConfig
from relay.emulator.server import EmulatorNode, start_server
from relay.emulator.usage import SECONDS_PER_DAY, DayUsage
from relay.protocol.signing import sign_rest_request
from tests.leftovers import kill_descendants
from tests.webhook_receiver import receiver as receiver
from tests.webhook_receiver import start_receiver as start_receiver

# pusher-http-python insists on a numeric app id.
TEST_APP = App(app_id="1", key="app-key", secret="app-secret", activity_timeout=120)


@dataclass
class RunningEmulator:
    node: EmulatorNode
    port: int
    app: App

    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, key: str | None = None, query: str = "protocol=7") -> str:
        return f"ws://{self.host}:{self.port}/app/{key or self.app.key}?{query}"


StartEmulator = Callable[..., Awaitable[RunningEmulator]]


def free_port() -> int:
    """A port nothing listens on now, for a server that must be told its port before it starts (a subprocess
    without ``--port 0``). Another process may take it before that server binds it: prefer ``--port 0`` and the
    banner where the server has them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServesAnApp(Protocol):
    """An emulator a test started: RunningEmulator, or one of the library tests' stoppable ones."""

    app: App
    host: str
    port: int


def emulator_url(running: ServesAnApp, *, secret: str | None = None, app_id: str | None = None, query: str = "") -> str:
    """The ``RELAY_URL`` of a running emulator's app (``secret``, ``app_id``: another one, to be refused)."""
    app = running.app
    url = f"emulator://{app.key}:{secret or app.secret}@{running.host}:{running.port}/apps/{app_id or app.app_id}"
    return url + (f"?{query}" if query else "")


def signed_publish(running: RunningEmulator, path: str, body: bytes, key: str | None) -> httpx.Request:
    """A publish signed as the Pusher libraries sign one, ``idempotency_key`` among the signed parameters."""
    app = running.app
    full_path = f"/apps/{app.app_id}{path}"
    params = None if key is None else {"idempotency_key": key}
    query = sign_rest_request(
        app.key, app.secret, "POST", full_path, timestamp=int(time.time()), body=body, params=params
    )
    return httpx.Request("POST", f"{running.http_url}{full_path}", params=query, content=body)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with a test marked ``long`` first, then the others by their number of tests, most first (what
    pytest-xdist's ``--dist loadfile`` does unless told ``--no-loadscope-reorder``, as tests/run.sh tells it): a
    process takes whole files in this order, so a file of one or two long tests no longer starts last and keeps the
    run going minutes after the other processes are done. A file's own tests keep their order."""
    by_file: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.nodeid.partition("::")[0], []).append(item)

    def first_the_long_then_the_many(tests: list[pytest.Item]) -> tuple[bool, int]:
        return (not any(test.get_closest_marker("long") for test in tests), -len(tests))

    items[:] = [item for tests in sorted(by_file.values(), key=first_the_long_then_the_many) for item in tests]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A test that failed before stopping the processes it started (an emulator, a gateway, Node, redis-server)
    leaves them running: they end with the test process. Not in pytest-xdist's controller, whose children are the
    test processes themselves."""
    if session.config.getoption("dist", "no") != "no" and not hasattr(session.config, "workerinput"):
        return
    kill_descendants(os.getpid())


@pytest.fixture
async def start_emulator() -> AsyncIterator[StartEmulator]:
    """Start emulators with any config: ``await start_emulator(app=replace(TEST_APP, …), apps=(…), **server)``
    (``wall_clock=``: the clock the node meters usage, stamps messages and checks signatures by)."""
    running: list[tuple[EmulatorNode, object]] = []

    async def start(
        app: App = TEST_APP, apps: tuple[App, ...] = (), wall_clock: Callable[[], float] = time.time, **server: object
    ) -> RunningEmulator:
        config = replace(EmulatorConfig(apps=(app, *apps)), **server)  # type: ignore[arg-type]
        node = EmulatorNode(config, wall_clock=wall_clock)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server_handle = await start_server(node, sock=sock)
        running.append((node, server_handle))
        return RunningEmulator(node=node, port=sock.getsockname()[1], app=app)

    yield start
    # The test is over: nothing waits for the webhooks a close sends (the receiver fixture may be stopped already, and
    # each node then waited out the 5 s grace, one after another: 10 s after a two-node cluster test), so no grace,
    # and every node closes at once.
    for _, server_handle in running:
        server_handle.close()  # type: ignore[attr-defined]
    await asyncio.gather(*(node.close(webhook_grace=0) for node, _ in running))


@pytest.fixture
async def emulator(start_emulator: StartEmulator) -> RunningEmulator:
    """The emulator with the default test app."""
    return await start_emulator()


# -- usage over the UTC days a run spanned ----------------------------------------------------------------------------

PEAKS = frozenset({"peak_connections", "peak_channels", "peak_publishes_per_second", "peak_presence_members"})
Day = TypeVar("Day", DayUsage, UsageDay, dict[str, Any])


def _over_days(name: str, values: list[Any]) -> Any:
    if any(value is None for value in values):
        return None
    if name in PEAKS:
        return max(values)
    if name == "measured":  # the spans measured, each day's
        spans = [span for value in values for span in value]
        return spans if isinstance(values[0], list) else tuple(spans)
    return sum(values)


def whole_run(days: Mapping[str, Day]) -> Day:
    """A run's usage over every UTC day it spanned (two for a run across midnight UTC, and a test can be one): its
    counts added, its peaks the largest of a day's (a day starts with what is open at its midnight as its peak).
    Minutes are rounded up per day: a test that checks them runs on :func:`clock_clear_of_midnight`."""
    found = list(days.values())
    assert found, "no day in the usage"
    first = found[0]
    if isinstance(first, dict):
        return {name: _over_days(name, [day[name] for day in found]) for name in first}
    combined = {f.name: _over_days(f.name, [getattr(day, f.name) for day in found]) for f in fields(first)}
    return replace(first, **combined)


def clock_clear_of_midnight(margin: float = 300.0) -> Callable[[], float]:
    """The wall clock, set on past the next midnight UTC if that is less than ``margin`` seconds away: an emulator on
    it, in a test that ends within ``margin`` seconds, meters one UTC day, whenever the test runs. Set on by less than
    the 600 s a signed request's timestamp may be off, it still takes the requests a test signs by the real clock."""
    ahead = SECONDS_PER_DAY - time.time() % SECONDS_PER_DAY
    offset = ahead + 1.0 if ahead < margin else 0.0
    return lambda: time.time() + offset

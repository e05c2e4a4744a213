"""Prometheus metrics, written in the text exposition format (version 0.0.4) by hand: no dependency needed.

Per-app gauges (connections, channels, subscriptions, presence members) are read from the apps' state when scraped;
counters come from each app's :class:`~relay.emulator.usage.AppMeter` and from :class:`NodeMetrics` (HTTP API
responses by status, refused connections by code, the publish-to-write latency histogram).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from relay.protocol.channels import ChannelKind

if TYPE_CHECKING:
    from relay.emulator.hub import AppState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Publish-to-write is the time from a complete HTTP publish request to its frames handed to every subscriber's socket.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Labels = Mapping[str, str]
Sample = tuple[Labels, float]


class Histogram:
    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        total, result = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            result.append((_number(bound), total))
        return result


class NodeMetrics:
    """Counters that belong to the node rather than to one app."""

    def __init__(self) -> None:
        self.http_responses: dict[str, int] = {}
        self.refused: dict[int, int] = {}
        # Connections closed as they arrived: their address held max_connections_per_address.
        self.address_refused = 0
        self.publish_latency = Histogram(LATENCY_BUCKETS)

    def http_response(self, status: int) -> None:
        key = str(status)
        self.http_responses[key] = self.http_responses.get(key, 0) + 1

    def connection_refused(self, code: int) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


class _Writer:
    def __init__(self, node: str | None) -> None:
        self.lines: list[str] = []
        self._node: Labels = {} if node is None else {"node": node}

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        # Text format 0.0.4: a counter's samples and its HELP/TYPE lines carry one name, `_total` included, as the
        # official clients write them (strict parsers read samples named otherwise as untyped).
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels({**self._node, **labels})} {_number(value)}")

    def histogram(self, name: str, help_text: str, histogram: Histogram) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        for bound, count in histogram.cumulative():
            self.lines.append(f"{name}_bucket{_labels({**self._node, 'le': bound})} {count}")
        self.lines.append(f"{name}_sum{_labels(self._node)} {_number(histogram.sum)}")
        self.lines.append(f"{name}_count{_labels(self._node)} {histogram.count}")


def render(
    states: Iterable[AppState],
    node: NodeMetrics,
    *,
    ready: bool,
    cluster_lost: int = 0,
    cluster_missed: int = 0,
    tcp_connections: int = 0,
    open_files_limit: int | None = None,
    node_id: int | None = None,
) -> str:
    """The exposition text for every app and the node (``cluster_lost``: Redis operations this node lost;
    ``cluster_missed``: other nodes' publishes that never reached it over the bus;
    ``tcp_connections``: the node's, HTTP and WebSocket, each holding a descriptor; ``open_files_limit``: the process's
    limit, left out where unknown or unlimited). A cluster node's samples carry its ``node_id`` as a ``node`` label:
    the workers of ``--workers`` share one port, so successive scrapes reach different ones, and without the label
    their counters would read as one counter reset at every scrape."""
    apps = list(states)
    out = _Writer(None if node_id is None else str(node_id))

    def per_app(values: Iterable[tuple[AppState, float]]) -> list[Sample]:
        return [({"app_id": state.app.app_id}, value) for state, value in values]

    out.family("relay_ready", "gauge", "1 while the emulator accepts connections, 0 while it drains", [({}, ready)])
    connections = "Open WebSocket connections, and Ably connections held for a resume"
    out.family("relay_connections", "gauge", connections, per_app((s, len(s.peers)) for s in apps))
    out.family("relay_channels", "gauge", "Occupied channels", per_app((s, len(s.channels)) for s in apps))
    out.family(
        "relay_subscriptions",
        "gauge",
        "Channel subscriptions (one per connection and channel)",
        per_app((s, sum(len(c.subscribers) for c in s.channels.values())) for s in apps),
    )
    out.family(
        "relay_presence_members",
        "gauge",
        "Distinct users in presence channels, summed over channels",
        per_app((s, sum(len(c.members) for c in s.channels.values() if c.kind is ChannelKind.PRESENCE)) for s in apps),
    )
    counters = (
        ("relay_connections_opened", "WebSocket connections accepted", "connections_opened"),
        ("relay_messages_received", "WebSocket messages received from clients", "messages_received"),
        ("relay_bytes_received", "Bytes of WebSocket messages received from clients", "bytes_received"),
        ("relay_messages_sent", "WebSocket messages written to clients", "messages_sent"),
        ("relay_bytes_sent", "Bytes written to WebSocket clients, frame headers included", "bytes_sent"),
        (
            "relay_publishes",
            "Events published through the Pusher HTTP API or the console (one per channel), and Ably messages "
            "published over REST or a realtime connection (one per message)",
            "publishes",
        ),
        ("relay_client_events", "Client events relayed", "client_events"),
        ("relay_presence_events", "Presence changes: members added or removed, Ably updates", "presence_events"),
        ("relay_api_requests", "Successful HTTP API calls other than publishes", "api_requests"),
        (
            "relay_ably_api_requests",
            "Ably REST requests other than publishes and token requests, authenticated and admitted",
            "ably_api_requests",
        ),
        ("relay_ably_token_requests", "Ably token requests, authenticated and admitted", "ably_token_requests"),
        ("relay_webhook_failures", "Webhook requests that failed or were not answered with 2xx", "webhook_failures"),
    )
    for name, help_text, attr in counters:
        out.family(f"{name}_total", "counter", help_text, per_app((s, getattr(s.meter, attr)) for s in apps))
    out.family(
        "relay_webhook_requests_total",
        "counter",
        "Webhook requests sent (retries included), by response status ('error' when no response came back)",
        [
            ({"app_id": s.app.app_id, "status": status}, count)
            for s in apps
            for status, count in sorted(s.meter.webhook_statuses.items())
        ],
    )
    out.family(
        "relay_webhook_dropped_total",
        "counter",
        "Webhook events dropped: the app's queue of pending events was full, the receiver still failed after "
        "webhook_retry_for, or the shutdown's grace ran out",
        per_app((s, s.webhooks.dropped) for s in apps),
    )
    out.family(
        "relay_http_requests_total",
        "counter",
        "HTTP API responses (Pusher's and Ably's REST) by status",
        [({"status": status}, count) for status, count in sorted(node.http_responses.items())],
    )
    out.family(
        "relay_connections_refused_total",
        "counter",
        "WebSocket connections refused after the upgrade, by Pusher error code",
        [({"code": str(code)}, count) for code, count in sorted(node.refused.items())],
    )
    out.family(
        "relay_address_cap_refusals_total",
        "counter",
        "TCP connections closed as they arrived: their address held max_connections_per_address",
        [({}, node.address_refused)],
    )
    out.family(
        "relay_cluster_lost_operations_total",
        "counter",
        "Cluster operations lost to a Redis error, then reconciled (always 0 without --redis-url)",
        [({}, cluster_lost)],
    )
    out.family(
        "relay_cluster_missed_messages_total",
        "counter",
        "Other nodes' publishes and client events that never reached this node over the Redis bus, found by a gap "
        "in their sequence numbers (always 0 without --redis-url)",
        [({}, cluster_missed)],
    )
    out.family(
        "relay_tcp_connections",
        "gauge",
        "TCP connections open, HTTP and WebSocket, of every app: one file descriptor each (see process_max_fds)",
        [({}, tcp_connections)],
    )
    if open_files_limit is not None:  # the name Prometheus' client libraries give it, which dashboards expect
        out.family("process_max_fds", "gauge", "Maximum number of open file descriptors", [({}, open_files_limit)])
    out.histogram(
        "relay_publish_to_write_seconds",
        "Time from a complete HTTP publish request to its frames written to every subscriber's socket",
        node.publish_latency,
    )
    return "\n".join(out.lines) + "\n"

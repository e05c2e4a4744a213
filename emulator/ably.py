"""The Ably side of an emulator node: its apps' Ably keys, the REST subset and realtime connections (docs/ably.md).

The server hands it the HTTP requests whose path is Ably's (``/time``, ``/keys/…``, ``/channels…``, ``/messages``,
``/presence``) and the WebSocket upgrades on ``/``, where ably-js and ably-python connect.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from relay.config import ProviderConfig, url_host
from relay.emulator.ably_auth import AblyAuth, AblyError, AblyKey, Credentials
from relay.emulator.ably_hub import AblyApp, ws_frame
from relay.emulator.ably_realtime import (
    AblySession,
    ResumableLink,
    authenticate,
    connection_refusal,
)
from relay.emulator.ably_rest import AblyRest
from relay.emulator.config import EmulatorConfig
from relay.emulator.http_api import Response
from relay.errors import ProtocolError
from relay.protocol.ably import ERROR, connect_query, remain_present_for, split_api_key
from relay.protocol.frames import dumps as literal  # a JSON string is a JS and a Python literal alike

if TYPE_CHECKING:
    from relay.emulator.server import EmulatorNode


class AblyNode:
    def __init__(self, node: EmulatorNode, wall_clock: Callable[[], float] = time.time) -> None:
        self._node = node
        self._wall_clock = wall_clock
        # Each node counts from a random start, so that two nodes' serials (every message's channelSerial) do not
        # meet: a resume finds the last message a client took in by its channelSerial (DeliveryLog).
        self._serials = itertools.count(secrets.randbits(52) + 1)
        self._tag = secrets.token_hex(3)  # this node's, in the ids of ProtocolMessages it makes without a connection
        self._apps: dict[str, AblyApp] = {}  # by key name; built once the node's app states exist (start())
        self.auth = AblyAuth({})
        self.rest = AblyRest(self.auth, self._apps.get, self.wall_ms, node.ops)

    def wall_ms(self) -> int:
        return int(self._wall_clock() * 1000)

    def ready(self) -> None:
        """Build the apps' Ably side once the node's app states exist (a cluster node does so before joining, so the
        other nodes' Ably members have somewhere to go)."""
        if self._apps or not self._node.states:
            return
        keys: dict[str, AblyKey] = {}
        for state in self._node.states.values():
            # One Ably side per app, whichever of its keys a client uses: presence, attachments and idempotency are
            # the app's.
            app = AblyApp(state, AblyKey.of(state.app), self.wall_ms, self._serials, self._tag)
            for key in AblyKey.every_of(state.app):
                keys[key.key_name] = key  # one app a key name: EmulatorConfig refuses two sharing one
                self._apps[key.key_name] = app
        self.auth.keys = keys
        cluster = self._node.cluster
        if cluster is not None:  # a signed TokenRequest is used once in the cluster, not once on each node
            self.auth.share = cluster.nonce_used
            cluster.nonce_heard = self._nonce_heard

    def _nonce_heard(self, key_name: str, nonce: str, timestamp: int, ms_left: int) -> None:
        self.auth.used_elsewhere(key_name, nonce, timestamp, ms_left, self.wall_ms())

    def _app_for(self, credentials: Credentials) -> AblyApp:
        return self._apps[credentials.key.key_name]

    def handle(
        self, method: str, path: str, query: Sequence[tuple[str, str]], headers: Sequence[tuple[str, str]], body: bytes
    ) -> Response | None:
        """Answer an Ably REST request; ``None`` when the path is not Ably's."""
        if not AblyRest.owns(path):
            return None
        self.ready()
        return self.rest.handle(method, path, query, headers, body)

    def open_session(
        self, link: ResumableLink, target: str, headers: Sequence[tuple[str, str]], deflate_window: int | None
    ) -> AblySession | None:
        """Authenticate a realtime connection and open its session (or resume the one it names), or send ERROR (or
        DISCONNECTED) and close. ``deflate_window``: the connection negotiated permessage-deflate, so its frames are
        metered as written."""
        self.ready()
        query = connect_query(target)
        binary = query.get("format") == "msgpack"
        resume_key = query.get("resume") or query.get("recover")  # recover: a page reloaded with its recovery key
        resumed: AblySession | None = None
        try:
            credentials = authenticate(self.auth, query, self.wall_ms())
            app = self._app_for(credentials)
            try:
                presence_hold = remain_present_for(query)
            except ProtocolError as exc:
                raise AblyError.of(exc) from None
            if resume_key:
                resumed = app.connections.get(resume_key)
                if resumed is not None and not resumed.resumable_by(credentials, binary):
                    resumed = None
            # A resumed connection is counted already: the quota does not refuse it.
            refusal = connection_refusal(app, headers, draining=self._node.draining, counted=resumed is not None)
        except AblyError as exc:
            refusal = ERROR, exc
        if refusal is not None:
            action, error = refusal
            self._node.ops.metrics.connection_refused(error.code)
            self._node.log_refusal(error.code, error.message, "/")  # at most once a second, cut short
            link.write(ws_frame({"action": action, "error": error.body()}, binary))
            link.close(1000, error.message)
            return None
        echo = query.get("echo") != "false"
        if resumed is not None:
            self._compressing(app, resumed.socket_id, deflate_window)
            resumed.resume(link, credentials, echo=echo, presence_hold=presence_hold)
            return resumed
        session = AblySession(
            app,
            self.auth,
            self._node.new_socket_id(),
            link,
            asyncio.get_running_loop().time,
            credentials,
            binary=binary,
            echo=echo,
            max_frame_size=self._node.config.frame_limit(app.state.app),  # the server sets its socket's limit to this
            presence_hold=presence_hold,
            log_refusal=self._node.log_refusal,
        )
        self._compressing(app, session.socket_id, deflate_window)
        session.open(resuming=bool(resume_key))
        return session

    @staticmethod
    def _compressing(app: AblyApp, socket_id: str, deflate_window: int | None) -> None:
        if deflate_window is None:
            app.state.compressing.pop(socket_id, None)
        else:
            app.state.compressing[socket_id] = deflate_window

    def release_held(self) -> None:
        """Let go of the connections waiting to be resumed (the node is stopping): their members leave now."""
        for app in set(self._apps.values()):
            for session in list(app.connections.values()):
                if session.held:
                    session.release()


def ably_client_settings(config: EmulatorConfig, host: str, port: int, *, show_secrets: bool = True) -> str:
    """The ably-js and ably-python options (and the library's URL) for each app, as ``relay emulator`` prints them;
    without ``show_secrets``, each key's secret is ``***``."""
    tls = config.tls_cert is not None
    port_option, python_port = ("tlsPort", "tls_port") if tls else ("port", "port")
    endpoint = url_host(host)  # the SDKs put it in URLs as it is: an IPv6 address needs its brackets
    lines: list[str] = []
    for app in config.apps:
        key_name = split_api_key(app.ably_api_key)[0]
        key = app.ably_api_key if show_secrets else f"{key_name}:***"
        ably_url = ProviderConfig("ably", key_name, split_api_key(app.ably_api_key)[1], host=host, port=port, tls=tls)
        lines += [
            f"app {app.app_id} (Ably key {key_name}):",
            f"  ably-js:     new Ably.Realtime({{ key: {literal(key)}, endpoint: {literal(endpoint)}, "
            f"{port_option}: {port}, tls: {str(tls).lower()}, fallbackHosts: [] }})",
            # ably-python's realtime ignores port (ably-python#567): the port goes into endpoint. Its REST refuses
            # Basic auth without TLS, so it exchanges the key for a token first.
            f"  ably-python: AblyRealtime(key={literal(key)}, endpoint={literal(f'{endpoint}:{port}')}, tls={tls})",
            f"               AblyRest(key={literal(key)}, endpoint={literal(endpoint)}, {python_port}={port}, tls={tls}"
            + ("" if tls else ", use_token_auth=True")
            + ")",
            f"  RELAY_URL:   {ably_url.url(privacy=not show_secrets)}",
        ]
    return "\n".join(lines)

"""``python -m examples.order_tracking``: the app, and an emulator for it unless a provider is configured.

Without ``RELAY_URL`` (or the ``PUSHER_*`` variables or ``ABLY_API_KEY``) an emulator runs in this process on
``--emulator-port``; with one, the same app and pages use that provider instead (and a mistake in it is an error,
exit status 2: never the emulator in its place).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from examples.order_tracking.app import BROWSER_LIBRARIES, browser_library_of, create_app, local_browser_builds
from relay.cli import cannot_listen, reachable_host
from relay.client import Configuration, configuration_from_env, describe_configuration, parse_configuration
from relay.config import url_host
from relay.emulator.config import App, EmulatorConfig, InvalidSetting
from relay.emulator.server import EmulatorNode, start_server
from relay.errors import ConfigError, NoProviderConfigured


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.order_tracking",
        description="The restaurant order-tracking example. Provider from RELAY_URL; without one, an emulator "
        "runs in this process.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address of the web app (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port of the web app (default 8000; 0 picks one)")
    parser.add_argument(
        "--emulator-port", type=int, default=6001, help="port of the emulator started without RELAY_URL (default 6001)"
    )
    return parser


def check_flags(host: str, port: int, emulator_port: int) -> None:
    """The flags checked as the emulator checks its own settings, named as typed: --port 70000 was an OverflowError
    from the bind, and a wrong --emulator-port or --host was named "port" or "host"."""
    for flag, value in (("--port", port), ("--emulator-port", emulator_port)):
        try:
            EmulatorConfig(apps=(), host=host, port=value)
        except InvalidSetting as error:
            name = "--host" if error.setting == "host" else flag
            raise ConfigError(f"{name} {error.message.removeprefix(error.setting + ' ')}") from None


def listen(host: str, port: int, fix: str) -> socket.socket:
    """A bound socket for uvicorn; a port in use is a configuration error naming ``fix``, not a traceback."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise cannot_listen(host, port, error, fix) from None
    return sock


@asynccontextmanager
async def emulator_in_process(host: str, port: int) -> AsyncIterator[str]:
    """An emulator of one app on ``host`` and ``port`` (the web app's address, so a phone that reaches the pages
    reaches it too): its URL, while it runs. Only this process publishes and signs, so the secret is its own, new at
    each start: the documented default secret would let anyone on the network sign for any order's channel."""
    app = App(app_id="1", key="app-key", secret=secrets.token_urlsafe(24))
    node = EmulatorNode(EmulatorConfig(apps=(app,), host=host, port=port))
    try:
        server = await start_server(node)
    except OSError as error:
        fix = (
            "it is the emulator's port: choose another with --emulator-port (0 picks a free one), or set RELAY_URL "
            "to use an emulator that is already running (the RELAY_URL it printed)"
        )
        raise cannot_listen(host, port, error, fix) from None
    try:
        bound = server.sockets[0].getsockname()[1]
        reached = url_host(reachable_host(host))  # the app publishes from this machine
        yield f"emulator://{app.key}:{app.secret}@{reached}:{bound}/apps/{app.app_id}"
    finally:
        server.close()
        await node.close(webhook_grace=0)


async def serve(host: str, port: int, emulator_port: int) -> None:
    # The provider first: a mistake in its configuration is reported before anything listens, and only none at all
    # means the emulator. Then the pages' browser libraries: a PUSHER_JS_PATH/ABLY_JS_PATH naming no file is one too.
    try:
        configured: Configuration | None = configuration_from_env(None)
    except NoProviderConfigured:
        configured = None
    if configured is not None:
        refuse_without_browser_side(configured)
    local_browser_builds()
    with listen(host, port, "it is the web app's port: choose another with --port (0 picks a free one)") as sock:
        if configured is not None:
            await run(host, sock, configured, "from the environment")
            return
        async with emulator_in_process(host, emulator_port) as relay_url:
            where = "an emulator in this process (set RELAY_URL to use Pusher, Ably or another server)"
            await run(host, sock, relay_url, where, emulator_on_page_host=True)


def refuse_without_browser_side(configured: Configuration) -> None:
    """A ConfigError for a provider the pages cannot connect to: memory:// lives inside this process, with no
    websocket for a browser (it is for tests), so the pages would say *Connecting…* for ever."""
    _, providers = parse_configuration(configured)
    if providers[0].scheme == "memory":  # the pages connect to the primary provider
        raise ConfigError(
            "RELAY_URL names a memory:// provider: it lives inside this process and no browser can connect to it, "
            "so the pages would never be live; unset RELAY_URL to run an emulator here, or name a pusher://, "
            "emulator:// or ably:// provider"
        )


def library_notice(app: FastAPI) -> str:
    """The banner's line for a browser library the pages will load from its CDN (no local copy): which, from where,
    and how to give the app a copy; "" when the app serves its own."""
    name = browser_library_of(app.state.relay)
    if app.state.local_builds[name] is not None:
        return ""
    library = BROWSER_LIBRARIES[name]
    label = f"{library.package}:"
    return f"\n  {label:<12}the pages load it from its CDN, {library.cdn} (a local copy: {library.local_copy_advice()})"


async def run(
    host: str, sock: socket.socket, relay_url: Configuration, where: str, *, emulator_on_page_host: bool = False
) -> None:
    port = sock.getsockname()[1]
    site = f"http://{url_host(reachable_host(host))}:{port}"  # a browser here opens it (http://0.0.0.0 is refused)
    everywhere = "" if reachable_host(host) == host else f"  elsewhere:  http://<this machine's address>:{port}/\n"
    app = create_app(relay_url, emulator_on_page_host=emulator_on_page_host)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    # uvicorn handles SIGINT/SIGTERM while it serves and raises them again afterwards, for the previous handlers:
    # these let the emulator close too, and the process exit with status 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # bound is not yet listening
            if serving.done():
                break
            await asyncio.sleep(0.02)
        print(
            f"Order tracking on {site}\n"
            f"  customers:  {site}/\n  kitchen:    {site}/kitchen\n  delivery:   {site}/delivery\n{everywhere}"
            f"  realtime:   {describe_configuration(relay_url)}, {where}{library_notice(app)}",
            flush=True,
        )
        await serving
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_flags(args.host, args.port, args.emulator_port)
        asyncio.run(serve(args.host, args.port, args.emulator_port))
    except ConfigError as error:
        print(f"order-tracking: configuration error: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``relay`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from relay import __version__
from relay.errors import ConfigError


def _emulator_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "emulator",
        help="run the self-hosted Pusher-protocol server",
        description="Run a Pusher-protocol server (WebSocket protocol 7 and the HTTP API) on one port. "
        "The flags define the default app; --config adds apps, limits and webhooks from a TOML file.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=6001, help="port for WebSocket and HTTP API (default 6001)")
    parser.add_argument("--app-id", default="app-id", help="default app's id (default app-id)")
    parser.add_argument("--key", default="app-key", help="default app's key (default app-key)")
    parser.add_argument("--secret", default="app-secret", help="default app's secret (default app-secret)")
    parser.add_argument("--config", type=Path, help="TOML file with [server] settings and [[apps]] tables")
    parser.add_argument("--webhook-url", action="append", default=[], help="send the default app's webhooks here")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(run=_run_emulator)


def _run_emulator(args: argparse.Namespace) -> int:
    from relay.emulator.config import App, EmulatorConfig, Webhook, load_config
    from relay.emulator.server import EmulatorNode, start_server

    app = App(
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        webhooks=tuple(Webhook(url=url) for url in args.webhook_url),
    )
    config = EmulatorConfig(apps=(app,), host=args.host, port=args.port)
    if args.config is not None:
        config = load_config(args.config, defaults=config)
        config = replace(config, host=args.host if args.host != "127.0.0.1" else config.host)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        node = EmulatorNode(config)
        server = await start_server(node)
        port = server.sockets[0].getsockname()[1]
        print(_client_settings(config, port), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        server.close()
        await node.close()
        await server.wait_closed()

    _run(serve())
    return 0


def _serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP gateway: publish with one fetch, channel auth for browsers",
        description="Run the gateway configured by RELAY_URL, RELAY_API_TOKEN, RELAY_JWT_SECRET or "
        "RELAY_JWT_PUBLIC_KEY or RELAY_JWKS_FILE, RELAY_JWT_AUDIENCE, RELAY_JWT_ISSUER, RELAY_JWT_COOKIE, "
        "RELAY_RULES_FILE, RELAY_CORS_ORIGINS and RELAY_WEBHOOK_FORWARD_URL. OpenAPI docs at /docs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from relay.gateway import GatewaySettings, create_app

    settings = GatewaySettings.from_env()
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _client_settings(config: object, port: int) -> str:
    from relay.emulator.config import EmulatorConfig

    assert isinstance(config, EmulatorConfig)
    host = config.host if config.host not in ("0.0.0.0", "::") else "127.0.0.1"
    lines = [f"Relay emulator listening on http://{host}:{port} (WebSocket ws://{host}:{port}/app/{{key}})", ""]
    for app in config.apps:
        lines += [
            f"app {app.app_id}:",
            "  pusher-js:   new Pusher("
            f'"{app.key}", {{ wsHost: "{host}", wsPort: {port}, forceTLS: false, '
            'enabledTransports: ["ws"], cluster: "mt1" })',
            f'  server SDKs: app_id="{app.app_id}" key="{app.key}" secret="{app.secret}" '
            f'host="{host}" port={port} ssl=false',
            f"  RELAY_URL:   emulator://{app.key}:{app.secret}@{host}:{port}/apps/{app.app_id}",
        ]
    return "\n".join(lines)


def _run(coroutine: object) -> None:
    try:
        import uvloop

        uvloop.run(coroutine)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description="Relay: one realtime API over Pusher, Ably and a self-hosted Pusher-protocol server."
    )
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _emulator_parser(subparsers)
    _serve_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as exc:
        print(f"relay: configuration error: {exc.message}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())

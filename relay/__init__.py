"""Relay: one publish/auth API over Pusher, Ably and a self-hosted Pusher-protocol server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("relay-realtime")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

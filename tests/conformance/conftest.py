"""The raw WebSocket client fixture (``connect``) for every conformance test module."""

from tests.conformance.wsclient import connect as connect

"""The default client is closed at exit after the exit handlers an application registered once it had imported relay,
as when the package itself held the client: since the client moved to relay/default.py, loaded at the first
``relay.publish``, its exit handler was registered after theirs and so ran first (atexit runs the last registered
first). A handler publishing a last event found no client, built another from the environment, and left it open."""

from __future__ import annotations

import os
import subprocess
import sys

# The handler is registered after `import relay`, before the first publish loads relay/default.py
LAST_WORDS = """
import atexit
import relay

atexit.register(lambda: print("the same client at exit:", relay.default_client() is first))
first = relay.default_client()
relay.publish("orders", "order-ready", {"id": 42})
"""


def test_an_exit_handler_registered_after_import_relay_still_finds_the_default_client_open() -> None:
    process = subprocess.run(
        [sys.executable, "-c", LAST_WORDS],
        env={**os.environ, "RELAY_URL": "memory://last-words"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (process.returncode, process.stdout, process.stderr) == (0, "the same client at exit: True\n", "")

"""What the ``relay`` command loads before it runs a command: its help, as the installed console script prints it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RELAY_SCRIPT = Path(sys.executable).with_name("relay")
# The servers' and the client's libraries, each tens of milliseconds to import: a command loads those it runs with.
SERVING_LIBRARIES = frozenset({"httpx", "fastapi", "pydantic", "starlette", "uvicorn", "websockets", "rich", "click"})


def imported_modules(*args: str) -> set[str]:
    """The modules ``relay ARGS`` imports, from Python's own report of each (PYTHONPROFILEIMPORTTIME)."""
    done = subprocess.run(
        [RELAY_SCRIPT, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        timeout=60,
        check=True,
    )
    return {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["cost", "--help"], ["emulator", "--help"], ["serve", "--help"]])
def test_help_loads_no_server_or_client_library(args: list[str]) -> None:
    """Every command's parser is built from emulator/config.py, which imported httpx at its top (and httpx its own
    command line's click and rich): a quarter of the time `relay --help` took."""
    modules = imported_modules(*args)
    assert "relay.cli" in modules
    assert {module.partition(".")[0] for module in modules} & SERVING_LIBRARIES == set()

"""Node scenarios: official JavaScript clients (pusher-js, laravel-echo, pusher-http-node, ably-js) driven by scripts.

A script prints JSON lines: ``{"step": …}`` asks the test for something (the answer goes back as one line on its
stdin), any other object is a result, and the last one is the summary, which must say ``"ok": true``
(``tests/node/lib.mjs``). The packages come from ``tests/node/node_modules`` (``npm ci --prefix tests/node``).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from relay.emulator.config import App

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE = shutil.which("node")

StepHandler = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass
class NodeRun:
    summary: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""


def node_modules(*packages: str) -> Path:
    """``tests/node/node_modules``, holding ``packages``: a missing one is a setup error, not a reason to skip."""
    if NODE is None:
        pytest.fail("node is not on PATH: the Node client tests need it (bash tests/run.sh checks for it)")
    modules = NODE_DIR / "node_modules"
    for package in packages:
        if not (modules / package / "package.json").is_file():
            pytest.fail(f"{modules / package} is missing: run `npm ci --prefix tests/node` first")
    return modules


def app_env(host: str, port: int, app: App) -> dict[str, str]:
    """Where a script finds the emulator and the app it signs for."""
    return {
        "RELAY_HOST": host,
        "RELAY_PORT": str(port),
        "RELAY_APP_ID": app.app_id,
        "RELAY_KEY": app.key,
        "RELAY_SECRET": app.secret,
    }


async def run_scenario(
    script: Path, env: Mapping[str, str], *, on_step: StepHandler | None = None, limit_s: float = 20.0
) -> NodeRun:
    """Run ``script`` (from ``tests/node``, so it resolves the pinned packages) and assert an ``ok`` summary."""
    assert NODE is not None, "node is not on PATH"
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(script),
        cwd=NODE_DIR,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.create_task(process.stderr.read())
    results: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    other_output: list[str] = []

    async def drive() -> None:
        assert process.stdin is not None and process.stdout is not None
        async for raw in process.stdout:
            text = raw.decode(errors="replace").strip()
            if not text.startswith("{"):
                other_output.append(text)
                continue
            message = json.loads(text)
            if "step" in message:
                steps.append(message)
                assert on_step is not None, f"{script.name} asked for step {message['step']!r}; the test has no handler"
                process.stdin.write((await on_step(message)).encode() + b"\n")
                await process.stdin.drain()
            else:
                results.append(message)
        await process.wait()

    try:
        await asyncio.wait_for(drive(), limit_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        stderr = (await stderr_task).decode(errors="replace")
        pytest.fail(f"{script.name} did not finish within {limit_s} s; output {results + steps}; stderr:\n{stderr}")
    finally:
        if process.returncode is None:  # a step handler failed: don't leave the script waiting on its stdin
            process.kill()
            await process.wait()
    stderr = (await stderr_task).decode(errors="replace")
    assert results, (
        f"{script.name} printed no summary (exit {process.returncode}); stdout {other_output}; stderr:\n{stderr}"
    )
    summary = results[-1]
    assert process.returncode == 0 and summary.get("ok") is True, (
        f"{script.name} failed (exit {process.returncode}): {summary}\nstderr:\n{stderr}"
    )
    return NodeRun(summary, steps, stderr)

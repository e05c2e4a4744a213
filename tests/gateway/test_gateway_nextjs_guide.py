"""The Next.js guide in docs/gateway.md is executed, not just read.

Every fenced ``ts``/``tsx`` block of the guide that starts with ``// file: <path>`` is written to that path,
type-checked (``strict``, real pusher-js and Node typings) and compiled by ``tests/node/gateway_build_guide.mjs``;
then ``tests/node/gateway_nextjs_guide.mjs`` runs the route handler and the realtime module against a real gateway
and emulator. The React component is type-checked and compiled but not rendered.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from relay.gateway.rules_file import RuleSpec, load_rules
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, ROOT, TOKEN, RunningGateway, hs_jwt, run_node
from tests.node_scenarios import NODE, NODE_DIR

GUIDE = ROOT / "docs" / "gateway.md"
BLOCK = re.compile(r"^```(?:ts|tsx)\n(// file: (?P<path>\S+)\n.*?)^```$", re.MULTILINE | re.DOTALL)
EXPECTED_FILES = {
    "lib/relay-server.ts",
    "lib/session.ts",
    "app/api/orders/[orderId]/ready/route.ts",
    "lib/realtime.ts",
    "components/OrderUpdates.tsx",
}


def extract_guide(target: Path) -> set[str]:
    """Write the guide's ``// file:`` blocks under ``target``; returns their paths."""
    written: set[str] = set()
    for match in BLOCK.finditer(GUIDE.read_text()):
        relative = match.group("path")
        assert relative not in written, f"{relative} appears twice in {GUIDE.name}"
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(match.group(1))
        written.add(relative)
    return written


async def build_guide(tmp_path: Path) -> Path:
    source, out = tmp_path / "src", tmp_path / "out"
    assert extract_guide(source) == EXPECTED_FILES
    for directory in (source, out):
        directory.mkdir(exist_ok=True)
        (directory / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / "gateway_build_guide.mjs"),
        str(source),
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert stdout, stderr.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["diagnostics"] == [], "the guide's TypeScript does not type-check:\n" + "\n".join(
        result["diagnostics"]
    )
    assert process.returncode == 0 and result["ok"], stderr.decode()
    assert sorted(result["files"]) == sorted(re.sub(r"\.tsx?$", ".mjs", f) for f in EXPECTED_FILES)
    return out


def test_rules_example_loads(tmp_path: Path) -> None:
    """The rules file shown in docs/gateway.md is valid: load_rules reads its four patterns and claims."""
    (example,) = re.findall(r"^```toml\n(.*?)^```$", GUIDE.read_text(), flags=re.MULTILINE | re.DOTALL)
    path = tmp_path / "rules.toml"
    path.write_text(example)
    assert load_rules(path) == (
        RuleSpec("private-user-{sub}"),
        RuleSpec("private-team-{team}.{sub}"),
        RuleSpec("presence-team-{team}", user_info_claims=("name", "role")),
        RuleSpec("presence-*"),
    )


def test_guide_blocks_are_found() -> None:
    """The extraction pattern sees every snippet the guide names (a renamed block would silently go untested)."""
    marked = re.findall(r"^// file: (\S+)$", GUIDE.read_text(), flags=re.MULTILINE)
    assert sorted(marked) == sorted(EXPECTED_FILES)


async def test_nextjs_guide_runs_against_the_gateway(
    node_modules: Path, tmp_path: Path, emulator: RunningEmulator, gateway: RunningGateway
) -> None:
    """Issue 7 docs: the guide's route handler publishes through /v1/publish with fetch (X-Socket-ID excludes the
    sender, a malformed one is the gateway's 400 passed on; a wrong token becomes the handler's 502) to its caller's
    channel only (the JWT's sub: a customerId in the body is ignored, a request without a valid JWT is 401 and
    publishes nothing; a gateway it cannot reach is a 502 with fetch's cause, an https:// URL to the plain-HTTP
    gateway saying to use http://); its realtime module connects pusher-js with the gateway's client config and the
    user's JWT (a gateway it cannot reach is named, with RELAY_CORS_ORIGINS to check), reports connecting →
    connected → reconnecting (after a server 4200) → connected → offline, subscribes the user's channel, gets 403
    for another user's and 401 for an expired JWT, and lists presence members with their JWT names; its server
    helper reads a presence channel's users, and its publish helper's retry with an idempotency key is answered as
    the first and delivered once."""
    out = await build_guide(tmp_path)
    closed: list[int] = []

    async def close_all(step: dict[str, Any]) -> str:
        assert step["step"] == "close-all-4200"
        closed.append(len(emulator.node.connections))
        for connection in list(emulator.node.connections):
            connection.shutdown()
        return "ok"

    env = {
        "RELAY_GUIDE_DIR": str(out),
        "RELAY_GATEWAY_URL": gateway.url,
        "RELAY_API_TOKEN_FOR_APP": TOKEN,
        "RELAY_JWT_ALICE": hs_jwt("alice", name="Alice Liddell"),
        "RELAY_JWT_BOB": hs_jwt("bob"),
        "RELAY_JWT_EXPIRED": hs_jwt("alice", ttl=-30),
        "RELAY_JWT_SECRET_FOR_APP": JWT_SECRET,
    }
    run = await run_node("gateway_nextjs_guide.mjs", emulator, env, on_step=close_all, limit_s=25)
    assert closed and closed[0] >= 2  # alice and bob were connected
    assert run.summary["checks"] == [
        "client-config-unreachable",
        "status-connected",
        "subscribe",
        "expired-jwt-401",
        "presence",
        "server-presence-query",
        "route-handler-publishes",
        "route-handler-caller",
        "route-handler-socket-id",
        "route-handler-400",
        "route-handler-401",
        "route-handler-not-json",
        "route-handler-unreachable",
        "reconnecting",
        "route-handler-idempotent",
        "offline",
    ]


@pytest.mark.parametrize("broken", ["missing-import", "type-error"])
async def test_build_rejects_a_broken_snippet(node_modules: Path, tmp_path: Path, broken: str) -> None:
    """The build step is a real gate: a snippet that does not type-check fails it with the file and line."""
    source = tmp_path / "src"
    extract_guide(source)
    (source / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    route = source / "app/api/orders/[orderId]/ready/route.ts"
    text = route.read_text()
    if broken == "missing-import":
        route.write_text(text.replace("import { publish, RelayPublishError }", "import { publish }"))
    else:
        route.write_text(text.replace("{ orderId }, {", "{ orderId }, { socketId: 42 }, {"))
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(NODE_DIR / "gateway_build_guide.mjs"),
        str(source),
        str(tmp_path / "out"),
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    result = json.loads(stdout)
    assert process.returncode == 1
    assert result["ok"] is False
    assert any(d.startswith("app/api/orders/[orderId]/ready/route.ts:") for d in result["diagnostics"])

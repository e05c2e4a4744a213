"""schemathesis against the live gateway's own OpenAPI schema (/openapi.json): no generated request gets a 5xx."""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from pathlib import Path

import httpx
import pytest

from relay.gateway import GatewaySettings, create_app
from tests.gateway.conftest import TOKEN, RunningGateway

pytest.importorskip("schemathesis", reason="schemathesis is a test dependency (pyproject [test] extra)")

MAX_EXAMPLES = 50
LIMIT_S = 240.0  # a bound on a hang, not a speed: ~40 s alone, over 60 s on a loaded 2-core machine


@pytest.mark.timeout(LIMIT_S + 30)
@pytest.mark.long
async def test_schemathesis_finds_no_server_errors(gateway: RunningGateway, tmp_path: Path) -> None:
    """Issue 7: coverage and fuzzing phases (at most 50 cases per operation, fixed seed) over every operation of the
    schema the gateway serves, sending the backend token so /v1/publish and /v1/publish/batch reach the real
    emulator; the only check is ``not_a_server_error``. The CLI runs as a subprocess so the gateway and emulator
    keep serving in this event loop; its JSON report must show generated cases and no failures or errors."""
    report = tmp_path / "schemathesis.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from schemathesis.cli import schemathesis; schemathesis()",
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--phases",
        "coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        "7",
        "--workers",
        "1",  # schemathesis 4.32 hit an internal KeyError with several workers
        "--request-timeout",
        "5",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        cwd=tmp_path,  # keeps .hypothesis/ and reports out of the repository
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), LIMIT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"schemathesis did not finish within {LIMIT_S} s")
    text = output.decode(errors="replace")
    result = json.loads(report.read_text())
    assert result["failures"] == [], text
    assert result["errors"] == [], text
    assert result["operations"]["tested"] == result["operations"]["total"] >= 7, text
    assert result["test_cases"]["generated"] >= 100, text
    assert process.returncode == 0, text


async def test_auth_endpoints_document_the_fields_pusher_js_posts(gateway: RunningGateway) -> None:
    """The auth handlers read their bodies themselves, so the schema states them: the form pusher-js posts (or the
    same fields as JSON), and the field each endpoint cannot do without."""
    async with httpx.AsyncClient() as http:
        schema = (await http.get(f"{gateway.url}/openapi.json")).json()
    for path, fields, required in (
        ("/v1/auth/channel", {"socket_id", "channel_name"}, ["channel_name"]),
        ("/v1/auth/user", {"socket_id"}, ["socket_id"]),
    ):
        body = schema["paths"][path]["post"]["requestBody"]
        assert set(body["content"]) == {"application/x-www-form-urlencoded", "application/json"}, path
        for media in body["content"].values():
            assert set(media["schema"]["properties"]) == fields, path
            assert media["schema"]["required"] == required, path
    # What the schema promises is what the endpoint does: a form without channel_name is refused with a reason.
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gateway.url}/v1/auth/channel", data={"socket_id": "123.456"})
    assert refused.status_code == 400 and refused.json() == {"error": "channel_name is required (channel is read too)"}


def test_every_operation_of_the_schema_has_its_own_id() -> None:
    """OpenAPI requires unique operation ids (client generators name functions by them); FastAPI gave GET and HEAD
    /health one id, with a warning."""
    app = create_app(GatewaySettings(relay_url="memory://schema"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        schema = app.openapi()
    ids = [operation["operationId"] for item in schema["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids)), ids
    assert set(schema["paths"]["/health"]) == {"get"}

"""The client settings `relay emulator --tls-cert … --tls-key …` prints at startup work as printed: its RELAY_URL,
read by the library, publishes over https://, and its `new Pusher(…)` connects pusher-js over wss://. Before, the
RELAY_URL lacked ?tls=true (the library spoke plain HTTP to a TLS port) and pusher-js was given
enabledTransports: ["wss"], which leaves it no transport: initialized -> failed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay import AsyncRelay
from relay.senders import AsyncSender
from tests.emulator_process import EmulatorProcess
from tests.node_scenarios import app_env, node_modules, run_scenario
from tests.operations.support import APP, NODE_SCRIPTS, ROOT, make_certificate, publish, trusting, ws_client


@dataclass
class TlsEmulator:
    process: EmulatorProcess
    cert: Path

    def printed(self, label: str) -> str:
        """The default app's setting the banner prints after ``label``, exactly as printed."""
        match = re.search(rf"^  {re.escape(label)}:\s+(.+)$", self.process.banner, re.MULTILINE)
        assert match is not None, f"no {label} line in the banner:\n{self.process.banner}"
        return match.group(1)


@pytest.fixture
async def tls_emulator(tmp_path: Path) -> AsyncIterator[TlsEmulator]:
    cert, key = make_certificate(tmp_path)
    process = await EmulatorProcess.start(
        "--app-id", APP.app_id, "--key", APP.key, "--secret", APP.secret,
        "--tls-cert", str(cert), "--tls-key", str(key),
    )  # fmt: skip
    try:
        yield TlsEmulator(process, cert)
    finally:
        await process.stop()


async def test_the_banners_relay_url_publishes_to_the_tls_emulator(tls_emulator: TlsEmulator) -> None:
    url = tls_emulator.printed("RELAY_URL")
    assert url.startswith("emulator://")
    port = tls_emulator.process.port
    client = await ws_client(f"wss://127.0.0.1:{port}/app/{APP.key}?protocol=7", ssl=trusting(tls_emulator.cert))
    await client.subscribe("news", APP)
    # The banner's URL as the library reads it; only the certificate's trust is added, as a deployment adds it.
    sender = AsyncSender(client=httpx.AsyncClient(verify=trusting(tls_emulator.cert)))
    async with AsyncRelay(url, sender=sender) as relay:
        await relay.publish("news", "headline", {"title": "over https"})
    assert (await client.expect("headline"))["data"] == '{"title":"over https"}'
    await client.close()


async def test_pusher_js_connects_over_wss_with_the_banners_options(tls_emulator: TlsEmulator) -> None:
    node_modules("pusher-js")
    snippet = tls_emulator.printed("pusher-js")
    documented = re.search(
        r"### TLS\n.*?(enabledTransports: \[[^\]]*\])", (ROOT / "docs/emulator.md").read_text(), re.S
    )
    assert documented is not None, "docs/emulator.md's TLS section no longer shows enabledTransports"
    assert documented.group(1) in snippet, "the banner's pusher-js transports are not the ones docs/emulator.md shows"
    base = f"https://127.0.0.1:{tls_emulator.process.port}"

    async def on_step(request: dict[str, Any]) -> str:
        assert request["step"] == "publish"
        await publish(base, APP, request["channel"], request["event"], '{"id":7}', verify=trusting(tls_emulator.cert))
        return "ok"

    run = await run_scenario(
        NODE_SCRIPTS / "banner_pusher_js.mjs",
        {
            **app_env("127.0.0.1", tls_emulator.process.port, APP),
            "RELAY_PUSHER_SNIPPET": snippet,
            "NODE_EXTRA_CA_CERTS": str(tls_emulator.cert),
        },
        on_step=on_step,
        limit_s=30,
    )
    assert run.summary["states"][-1] == "connected" and run.summary["tls"] is True
    assert run.summary["received"] == {"id": 7}

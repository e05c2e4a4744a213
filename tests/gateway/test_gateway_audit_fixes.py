"""An audit of ``relay serve``, held to its fixes: a JWT issued a little ahead of the gateway's clock, webhooks
forwarded with the gateway's credential (and docs/gateway.md's Next.js receiver, compiled and run), an encrypted
channel without a master key, bodies sent with the wrong Content-Type or as multipart, JSON auth fields that are not
strings, an empty JWT cookie, the ``{placeholder}-*`` trap of the channel rules, and hosted Pusher's legacy API host
in /v1/client-config. A real gateway (uvicorn, configured like ``relay serve``) in front of a real emulator."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from relay.errors import ConfigError
from relay.gateway import GatewaySettings
from relay.gateway.rules_file import RuleSpec
from relay.protocol.signing import webhook_signature
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, ROOT, TOKEN, RunningGateway, StartGateway, emulator_url, hs_jwt
from tests.gateway.test_gateway_identity import auth_status, join
from tests.node_scenarios import NODE, NODE_DIR
from tests.node_scenarios import node_modules as installed_modules
from tests.webhook_receiver import Receiver

GUIDE = (ROOT / "docs" / "gateway.md").read_text()
BEARER = {"authorization": f"Bearer {TOKEN}"}


def env_for(emulator: RunningEmulator, **extra: str) -> dict[str, str]:
    return {"RELAY_URL": emulator_url(emulator), "RELAY_API_TOKEN": TOKEN, "RELAY_JWT_SECRET": JWT_SECRET, **extra}


def jwt_at(now: int, **claims: object) -> str:
    """An HS256 JWT for alice whose time claims are given outright (``exp`` an hour from ``now`` unless given)."""
    payload: dict[str, object] = {"sub": "alice", "name": "Alice", "exp": now + 3600, **claims}
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def signed_webhook(emulator: RunningEmulator, events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"time_ms": int(time.time() * 1000), "events": events}).encode()
    headers = {"x-pusher-key": emulator.app.key, "x-pusher-signature": webhook_signature(emulator.app.secret, body)}
    return body, headers


# -- 1. clock skew -------------------------------------------------------------------------------------------------


async def test_a_jwt_issued_seconds_ahead_of_the_gateway_s_clock_is_accepted_within_the_leeway(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """An identity provider's clock 2 s ahead made every fresh token a 401 "not yet valid (iat)". Within the default
    30 s leeway it subscribes (iat and nbf); past it, or with RELAY_JWT_LEEWAY=0, it is refused. exp gets no leeway:
    a token 5 s past its exp is still refused as expired."""
    gateway = await start_gateway(env=env_for(emulator))
    assert gateway.settings.jwt_leeway == 30
    now = int(time.time())
    ahead = {"authorization": f"Bearer {jwt_at(now, iat=now + 2, nbf=now + 2)}"}
    assert await join(emulator, gateway, "private-user-alice", headers=ahead) == {}
    assert await auth_status(gateway, "private-user-alice", jwt_at(now, iat=now + 120)) == (
        401,
        "invalid JWT: The token is not yet valid (iat)",
    )
    assert await auth_status(gateway, "private-user-alice", jwt_at(now, nbf=now + 120)) == (
        401,
        "invalid JWT: The token is not yet valid (nbf)",
    )
    expired = (401, "the JWT has expired")
    assert await auth_status(gateway, "private-user-alice", jwt_at(now, iat=now - 65, exp=now - 5)) == expired
    assert await auth_status(gateway, "private-user-alice", jwt_at(now, exp=now - 60)) == expired

    strict = await start_gateway(env=env_for(emulator, RELAY_JWT_LEEWAY="0"))
    # Ahead of the clock when it arrives, however long the steps above took on a loaded machine
    ahead_now = int(time.time()) + 5
    assert await auth_status(strict, "private-user-alice", jwt_at(now, iat=ahead_now)) == (
        401,
        "invalid JWT: The token is not yet valid (iat)",
    )
    assert await join(emulator, strict, "private-user-alice", headers={"authorization": f"Bearer {hs_jwt()}"}) == {}


@pytest.mark.parametrize("value", ["soon", "-1", "301", "nan", "inf"])
def test_a_leeway_that_is_not_0_to_300_seconds_stops_the_gateway(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^RELAY_JWT_LEEWAY: "):
        GatewaySettings.from_env({"RELAY_URL": "memory://leeway", "RELAY_JWT_LEEWAY": value})
    assert GatewaySettings.from_env({"RELAY_URL": "memory://leeway", "RELAY_JWT_LEEWAY": "7.5"}).jwt_leeway == 7.5


# -- 2. webhooks forwarded with the gateway's credential -----------------------------------------------------------


async def test_forwarded_webhooks_carry_the_api_token_and_without_it_a_warning_at_start(
    emulator: RunningEmulator, start_gateway: StartGateway, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Verified webhooks were forwarded with nothing the receiver could tell from a forgery: now with
    ``Authorization: Bearer RELAY_API_TOKEN``. Without the token the forward is unauthenticated, and the gateway says
    so once, at start."""
    body, headers = signed_webhook(emulator, [{"name": "channel_occupied", "channel": "orders"}])
    gateway = await start_gateway(env=env_for(emulator, RELAY_WEBHOOK_FORWARD_URL=receiver.url))
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        forwarded = await http.post("/v1/webhooks", content=body, headers=headers)
    assert (forwarded.status_code, forwarded.json()) == (200, {"events": 1})
    [delivery] = await receiver.wait_for(1)
    assert delivery.header_values("authorization") == [f"Bearer {TOKEN}"]
    assert [(event["kind"], event["channel"]) for event in delivery.events] == [("channel_occupied", "orders")]
    assert not [record for record in caplog.records if record.name == "relay.gateway"]

    open_env = {"RELAY_URL": emulator_url(emulator), "RELAY_WEBHOOK_FORWARD_URL": receiver.url}
    unauthenticated = await start_gateway(env=open_env)
    [warning] = [record for record in caplog.records if record.name == "relay.gateway"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        "RELAY_WEBHOOK_FORWARD_URL is set but RELAY_API_TOKEN is not: webhooks are forwarded without authentication"
    )
    async with httpx.AsyncClient(base_url=unauthenticated.url) as http:
        assert (await http.post("/v1/webhooks", content=body, headers=headers)).status_code == 200
    second = (await receiver.wait_for(2))[1]
    assert second.header_values("authorization") == []


def receiver_block() -> str:
    """The route handler of docs/gateway.md's "Receiving forwarded webhooks"."""
    section = GUIDE.split("\n### Receiving forwarded webhooks\n", 1)[1].split("\n### ", 1)[0]
    (block,) = re.findall(r"^```ts\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert block.startswith("// app/api/relay-webhooks/route.ts\n")
    return str(block)


SERVE_ROUTE = """
import http from 'node:http';
const { POST } = await import(process.argv[2]);
const server = http.createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) if (typeof value === 'string') headers.set(name, value);
  const body = Buffer.concat(chunks);
  const request = new Request(`http://127.0.0.1${req.url}`, { method: req.method, headers, body });
  const response = await POST(request);
  res.writeHead(response.status, { 'content-type': response.headers.get('content-type') ?? 'text/plain' });
  res.end(Buffer.from(await response.arrayBuffer()));
});
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
"""


@pytest.fixture
async def guide_receiver(tmp_path: Path) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """docs/gateway.md's webhook route handler, type-checked and compiled as the guide's other snippets are
    (tests/node/gateway_build_guide.mjs), served by Node with RELAY_API_TOKEN set: its URL and process."""
    installed_modules("typescript")
    assert NODE is not None
    source, out = tmp_path / "src", tmp_path / "out"
    route = source / "app" / "api" / "relay-webhooks" / "route.ts"
    route.parent.mkdir(parents=True)
    route.write_text(receiver_block())
    out.mkdir()
    (source / "node_modules").symlink_to(NODE_DIR / "node_modules", target_is_directory=True)
    build = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / "gateway_build_guide.mjs"), str(source), str(out), stdout=asyncio.subprocess.PIPE
    )
    built, _ = await asyncio.wait_for(build.communicate(), 60)
    result = json.loads(built.decode().strip().splitlines()[-1])
    assert result["ok"] and result["diagnostics"] == [], result
    (tmp_path / "serve.mjs").write_text(SERVE_ROUTE)
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(tmp_path / "serve.mjs"),
        str(out / "app" / "api" / "relay-webhooks" / "route.mjs"),
        env={"PATH": "/usr/bin:/bin", "RELAY_API_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        port = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))["port"]
        yield f"http://127.0.0.1:{port}/api/relay-webhooks", process
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


async def test_the_guide_s_next_js_webhook_receiver_takes_the_gateway_s_forwards_and_refuses_forgeries(
    emulator: RunningEmulator,
    start_gateway: StartGateway,
    guide_receiver: tuple[str, asyncio.subprocess.Process],
) -> None:
    """docs/gateway.md's route handler, run: an event posted to it without the token, or with another, is 401; the
    gateway's forward of a verified webhook (the member_added of a presence channel) passes its check, so the
    gateway answers the provider 200 (it was 502: the forward had no Authorization header), and the handler saw the
    event."""
    url, process = guide_receiver
    forged = {"events": [{"kind": "member_added", "channel": "presence-room", "time_ms": 1, "user_id": "mallory"}]}
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json=forged)).status_code == 401
        wrong = {"authorization": "Bearer another-token-0123456789"}
        assert (await http.post(url, json=forged, headers=wrong)).status_code == 401
    gateway = await start_gateway(env=env_for(emulator, RELAY_WEBHOOK_FORWARD_URL=url))
    event = {"name": "member_added", "channel": "presence-room", "user_id": "alice"}
    body, headers = signed_webhook(emulator, [event])
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        answer = await http.post("/v1/webhooks", content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"events": 1})
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), 5)).decode().strip() == "alice joined presence-room"


# -- 3. an encrypted channel without a master key ---------------------------------------------------------------


async def test_an_encrypted_channel_without_a_master_key_is_a_logged_500_naming_the_setting(
    emulator: RunningEmulator, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A rule allowing private-* (which starts: the rule is valid) and RELAY_URL without encryption_master_key: the
    channel auth and a publish to an encrypted channel are 500s naming the setting, and each is logged (nothing was,
    and the docs' 500 promises a log). Other channels are served."""
    settings = GatewaySettings(
        relay_url=emulator_url(emulator), api_token=TOKEN, jwt_secret=JWT_SECRET, rules=(RuleSpec("private-*"),)
    )
    gateway = await start_gateway(settings)
    cause = "is end-to-end encrypted: add ?encryption_master_key=BASE64 (32 bytes) to the URL"
    prefix = "this server's configuration cannot serve this request: "
    assert await auth_status(gateway, "private-encrypted-alice", hs_jwt()) == (
        500,
        f"{prefix}'private-encrypted-alice' {cause}",
    )
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        published = await http.post(
            "/v1/publish", json={"channel": "private-encrypted-x", "event": "e", "data": 1}, headers=BEARER
        )
    assert (published.status_code, published.json()) == (500, {"error": f"{prefix}'private-encrypted-x' {cause}"})
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "relay.web"]
    assert logged == [
        (logging.ERROR, f"POST /v1/auth/channel answered 500: {prefix}'private-encrypted-alice' {cause}"),
        (logging.ERROR, f"POST /v1/publish answered 500: {prefix}'private-encrypted-x' {cause}"),
    ]
    assert await join(emulator, gateway, "private-alice", headers={"authorization": f"Bearer {hs_jwt()}"}) == {}


# -- 4. a publish body without Content-Type: application/json ----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "named"),
    [("text/plain;charset=UTF-8", "this request's is 'text/plain;charset=UTF-8'"), (None, "this request has none")],
    ids=["fetch-string-body", "no-content-type"],
)
async def test_a_json_body_without_its_content_type_is_a_415_that_says_so(
    gateway: RunningGateway, content_type: str | None, named: str
) -> None:
    """fetch() with a string body sends text/plain: the 422 "Input should be a valid dictionary or object to extract
    fields from" never named the header. The body is still not read as JSON (a text/plain POST needs no CORS
    preflight); sent as JSON, the same body publishes. An empty body is still the 422 naming the missing body."""
    payload = json.dumps({"channel": "orders", "event": "created", "data": {"id": 1}}).encode()
    headers = {**BEARER, **({"content-type": content_type} if content_type else {})}
    expected = {"error": f"the body must be JSON: send Content-Type: application/json ({named})"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for path in ("/v1/publish", "/v1/users/alice/events"):
            refused = await http.post(path, content=payload, headers=headers)
            assert (refused.status_code, refused.json()) == (415, expected), path
        empty = await http.post("/v1/publish", headers=BEARER)
        sent_as_json = await http.post(
            "/v1/publish", content=payload, headers={**BEARER, "content-type": "application/json"}
        )
    assert empty.status_code == 422 and empty.json()["detail"][0]["type"] == "missing"
    assert sent_as_json.status_code == 200, sent_as_json.text


# -- 5. auth request parsing -----------------------------------------------------------------------------------------


async def test_auth_bodies_a_form_cannot_send_are_refused_by_name(
    emulator: RunningEmulator, gateway: RunningGateway
) -> None:
    """A FormData body (multipart) was "400 channel_name is required" although channel_name was sent: now a 415
    naming the encodings read. A JSON list or boolean was str()'d into the channel "['x']": now a 400 naming the field
    and its type. The same fields sent as a form or as JSON strings subscribe."""
    auth = {"authorization": f"Bearer {hs_jwt()}"}
    multipart = {"socket_id": (None, "1.1"), "channel_name": (None, "private-user-alice")}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        as_form_data = await http.post("/v1/auth/channel", files=multipart, headers=auth)
        signin_form_data = await http.post("/v1/auth/user", files={"socket_id": (None, "1.1")}, headers=auth)
        listed = await http.post(
            "/v1/auth/channel", json={"socket_id": "1.1", "channel_name": ["private-user-alice"]}, headers=auth
        )
        boolean = await http.post("/v1/auth/user", json={"socket_id": True}, headers=auth)
        number = await http.post("/v1/auth/channel", json={"socket_id": 1.1, "channel_name": "x"}, headers=auth)
    assert as_form_data.request.headers["content-type"].startswith("multipart/form-data")
    refusal = (
        "a multipart body (fetch with a FormData) is not read here: send the fields as "
        "application/x-www-form-urlencoded (a URLSearchParams body) or as JSON (Content-Type: application/json)"
    )
    assert (as_form_data.status_code, as_form_data.json()) == (415, {"error": refusal})
    assert (signin_form_data.status_code, signin_form_data.json()) == (415, {"error": refusal})
    assert (listed.status_code, listed.json()) == (
        400,
        {"error": "the JSON body's 'channel_name' must be a string, not a list"},
    )
    assert (boolean.status_code, boolean.json()) == (
        400,
        {"error": "the JSON body's 'socket_id' must be a string, not a boolean"},
    )
    assert (number.status_code, number.json()) == (
        400,
        {"error": "the JSON body's 'socket_id' must be a string, not a number"},
    )

    async with httpx.AsyncClient(base_url=gateway.url) as http:
        as_json = await http.post(
            "/v1/auth/channel", json={"socket_id": "1.1", "channel_name": "private-user-alice"}, headers=auth
        )
        with_extras = await http.post(  # members no endpoint reads may be anything, as a custom authorizer sends them
            "/v1/auth/channel",
            json={"socket_id": "1.1", "channel_name": "private-user-alice", "params": {"tab": 2}, "retry": True},
            headers=auth,
        )
    assert as_json.status_code == 200, as_json.text
    assert (with_extras.status_code, with_extras.json()) == (200, as_json.json())
    assert await join(emulator, gateway, "private-user-alice", headers=auth) == {}


@pytest.mark.parametrize(
    ("content_type", "sent"),
    [("text/plain;charset=UTF-8", "sent as 'text/plain;charset=UTF-8'"), (None, "sent with no Content-Type")],
    ids=["text-plain", "no-content-type"],
)
async def test_a_json_auth_body_without_the_json_content_type_is_a_415_that_says_so(
    emulator: RunningEmulator, gateway: RunningGateway, content_type: str | None, sent: str
) -> None:
    """fetch() with a JSON.stringify body and no Content-Type header sends text/plain: read as a form, it had no
    fields, and the answer was "channel_name is required" although it was sent. The same body as JSON subscribes."""
    auth = {"authorization": f"Bearer {hs_jwt()}"}
    body = json.dumps({"socket_id": "1.1", "channel_name": "private-user-alice"}).encode()
    headers = {**auth, "content-type": content_type} if content_type else auth
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        refused = await http.post("/v1/auth/channel", content=body, headers=headers)
        signin = await http.post("/v1/auth/user", content=b' {"socket_id": "1.1"}', headers=headers)
    message = f"the body is JSON {sent}: send Content-Type: application/json (or the fields form-encoded)"
    assert (refused.status_code, refused.json()) == (415, {"error": message})
    assert (signin.status_code, signin.json()) == (415, {"error": message})
    assert await join(emulator, gateway, "private-user-alice", headers=auth) == {}


async def test_an_auth_body_in_a_json_media_type_of_its_own_is_read_as_json(
    emulator: RunningEmulator, gateway: RunningGateway
) -> None:
    """``application/vnd.api+json`` (a JSON:API client's type) was taken by /v1/publish but a 415 "the body is JSON
    sent as …" on /v1/auth/*: every application/*+json type is JSON on both, as FastAPI reads it."""
    auth = {"authorization": f"Bearer {hs_jwt()}"}
    body = json.dumps({"socket_id": "1.1", "channel_name": "private-user-alice"}).encode()
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for content_type in ("application/vnd.api+json", "Application/Problem+JSON; charset=utf-8"):
            headers = {**auth, "content-type": content_type}
            as_json = await http.post("/v1/auth/channel", content=body, headers=headers)
            assert as_json.status_code == 200, (content_type, as_json.text)
            assert set(as_json.json()) == {"auth"}
            signin = await http.post("/v1/auth/user", content=b'{"socket_id": "1.1"}', headers=headers)
            assert signin.status_code == 200, (content_type, signin.text)
    assert await join(emulator, gateway, "private-user-alice", headers=auth) == {}


async def test_an_empty_jwt_cookie_is_an_anonymous_request(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """``session=`` (a signed-out browser's cookie) was "401 invalid JWT: Not enough segments": it is no token, so a
    private channel is the anonymous 403 and sign-in the "sign in first" 401; a JWT in the cookie still works."""
    gateway = await start_gateway(env=env_for(emulator, RELAY_JWT_COOKIE="session"))
    assert await auth_status(gateway, "private-user-alice", cookies={"session": ""}) == (
        403,
        "'private-user-alice' needs an authenticated user: the request had no Authorization: Bearer header, and its "
        "'session' cookie was empty (signed out)",
    )
    async with httpx.AsyncClient(base_url=gateway.url, cookies={"session": ""}) as http:
        signin = await http.post("/v1/auth/user", data={"socket_id": "1.1"})
    refusal = (
        "sign in first: no user for this request: the request had no Authorization: Bearer header, and its 'session' "
        "cookie was empty (signed out)"
    )
    assert (signin.status_code, signin.json()) == (401, {"error": refusal})
    assert await join(emulator, gateway, "private-user-alice", cookies={"session": hs_jwt()}) == {}


# -- 6. the {placeholder}-* trap, as docs/gateway.md words it -------------------------------------------------------


async def test_the_documented_placeholder_star_trap_and_its_fix(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """docs/gateway.md's ``private-org-{org}-*``: org acme is allowed org acme-eu's private-org-acme-eu-payroll, as
    the docs warn; its ``private-org-{org}.*``: each org gets its own channels (the ones the docs name) and not the
    other's."""
    (trap,) = re.findall(r'`(pattern = "private-org-\{org\}-\*")`', GUIDE)
    (fix,) = re.findall(r'`(pattern = "private-org-\{org\}\.\*")`', GUIDE)
    assert "`private-org-acme-eu-payroll`" in GUIDE
    assert "`private-org-acme.payroll`" in GUIDE and "`private-org-acme-eu.payroll`" in GUIDE

    async def gateway_for(rule: str) -> RunningGateway:
        rules = tmp_path / f"rules-{'trap' if rule == trap else 'fix'}.toml"
        rules.write_text(f"[[channels]]\n{rule}\n")
        return await start_gateway(env=env_for(emulator, RELAY_RULES_FILE=str(rules)))

    def member_of(org: str) -> dict[str, str]:
        return {"authorization": f"Bearer {hs_jwt('m', org=org)}"}

    trapped = await gateway_for(trap)
    assert await join(emulator, trapped, "private-org-acme-eu-payroll", headers=member_of("acme")) == {}

    fixed = await gateway_for(fix)
    assert await join(emulator, fixed, "private-org-acme.payroll", headers=member_of("acme")) == {}
    assert await join(emulator, fixed, "private-org-acme-eu.payroll", headers=member_of("acme-eu")) == {}
    mismatch = "denied by rule 'private-org-{org}.*': the name's {org} is not the JWT's org claim"
    assert await auth_status(fixed, "private-org-acme-eu.payroll", hs_jwt("m", org="acme")) == (
        403,
        f"access to 'private-org-acme-eu.payroll' {mismatch}",
    )
    assert await auth_status(fixed, "private-org-acme.payroll", hs_jwt("m", org="acme-eu")) == (
        403,
        f"access to 'private-org-acme.payroll' {mismatch}",
    )


# -- 7. hosted Pusher's legacy API host ----------------------------------------------------------------------------


async def test_client_config_for_the_legacy_api_pusherapp_com_host_is_cluster_mt1(start_gateway: StartGateway) -> None:
    """pusher://…@api.pusherapp.com (pusher-http-node's default host, cluster mt1) gave wsHost api.pusherapp.com and
    wsPort 443, where pusher-js cannot connect: now the same page settings as api-mt1.pusher.com, the cluster alone."""
    configs = []
    for host in ("api.pusherapp.com", "api-mt1.pusher.com"):
        gateway = await start_gateway(env={"RELAY_URL": f"pusher://app-key:app-secret@{host}/apps/1"})
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            configs.append((await http.get("/v1/client-config")).json())
    legacy, current = configs
    assert (
        legacy
        == current
        == {
            "provider": "pusher",
            "key": "app-key",
            "cluster": "mt1",
            "forceTLS": True,
            "channelAuthEndpoint": "/v1/auth/channel",
            "userAuthEndpoint": "/v1/auth/user",
        }
    )


def test_the_gateway_s_environment_is_read_without_the_whitespace_around_values() -> None:
    """docs/configuration.md: whitespace around a value is no part of it, and whitespace only is unset (a token read
    from a secret file ends with its newline; docker-compose passes unset variables as empty strings)."""
    settings = GatewaySettings.from_env(
        {"RELAY_URL": " memory://trim\n", "RELAY_API_TOKEN": "api-token\n", "RELAY_JWT_SECRET": "   "}
    )
    assert (settings.api_token, settings.jwt_secret) == ("api-token", None)

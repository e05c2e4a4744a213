"""What the gateway makes of a user's JWT claims, end to end: rules-file placeholders are compared by putting the
caller's claims into the pattern (a claim may hold "-", so a name can be read more than one way), and the
``watchlist`` claim becomes the signed-in user's watchlist. A real gateway (uvicorn, configured like ``relay serve``)
in front of a real emulator, real HS256 JWTs, and the examples of docs/gateway.md as written."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection

import relay.rules
from relay.errors import PermissionDenied
from relay.models import User
from relay.rules import ChannelRules, pattern_admits
from tests.conftest import RunningEmulator
from tests.docs.test_manual_docs import BLOCK
from tests.gateway.conftest import JWT_SECRET, RunningGateway, StartGateway, emulator_url, hs_jwt
from tests.gateway.test_gateway_identity import auth_status, join, open_socket

ROOT = Path(__file__).resolve().parent.parent.parent
GUIDE = (ROOT / "docs" / "gateway.md").read_text()

# A star before a placeholder: private-room-lobby.red.blue fits it (team "blue"), so only the claim check refuses
# the team claim "red.blue", which the star could cover the rest for but a placeholder never matches (a dot).
DOTTED_RULE = """
[[channels]]
pattern = "private-room-*.{team}"
"""


def doc_block(language: str, section: str) -> str:
    """The one ``language`` block in ``section`` (a heading) of docs/gateway.md."""
    text = GUIDE.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    (body,) = [body for lang, body in BLOCK.findall(text) if lang == language]
    return str(body)


async def test_a_rules_file_placeholder_grants_each_user_a_reading_of_the_name_binds(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """docs/gateway.md's ``pattern = "private-{org}-{sub}"``: ``private-acme-eu-u1`` is org acme-eu with sub u1 and
    org acme with sub eu-u1, and both users subscribe to it on the emulator (the second was refused: the regex bound
    org acme-eu, sub u1 and compared the claims with that); a user no reading binds is refused. A claim holding a dot
    still matches nothing, even where a ``*`` lets the name fit; an integer claim still matches its decimal."""
    rules = tmp_path / "rules.toml"
    (pattern,) = re.findall(r'`(pattern = "private-\{org\}-\{sub\}")`', GUIDE)
    rules.write_text(f"[[channels]]\n{pattern}\n{DOTTED_RULE}")
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_RULES_FILE": str(rules)}
    )

    def bearer(sub: str, **claims: object) -> dict[str, str]:
        return {"authorization": f"Bearer {hs_jwt(sub, **claims)}"}

    assert await join(emulator, gateway, "private-acme-eu-u1", headers=bearer("eu-u1", org="acme")) == {}
    assert await join(emulator, gateway, "private-acme-eu-u1", headers=bearer("u1", org="acme-eu")) == {}
    denied = "access to 'private-acme-eu-u1' denied by rule 'private-{org}-{sub}': "
    assert await auth_status(gateway, "private-acme-eu-u1", hs_jwt("eu-u2", org="acme")) == (
        403,
        denied + "the name's {sub} is not the JWT's sub claim",
    )
    assert await auth_status(gateway, "private-acme-eu-u1", hs_jwt("u1", org="acme")) == (
        403,
        denied + "each of the JWT's org, sub claims fits some reading of the name, but no reading fits them all",
    )
    assert await auth_status(gateway, "private-acme-eu-u1", hs_jwt("acme-eu-u1")) == (
        403,
        denied + "the JWT has no org claim; the name's {sub} is not the JWT's sub claim",
    )
    assert await auth_status(gateway, "private-acme.eu-u1", hs_jwt("u1", org="acme.eu")) == (
        403,
        "no rule allows 'private-acme.eu-u1': the name is rule 'private-{org}-{sub}' filled in with the user's org "
        "claim, which holds '.': a placeholder's value holds only A-Z a-z 0-9 _ - = @ , ; (a channel name's "
        "characters but the dot), so such a user needs channels named after another claim, such as a custom claim "
        "that holds only these",
    )
    assert await join(emulator, gateway, "private-42-u1", headers=bearer("u1", org=42)) == {}

    assert await auth_status(gateway, "private-room-lobby.red.blue", hs_jwt("ann", team="red.blue")) == (
        403,
        "access to 'private-room-lobby.red.blue' denied by rule 'private-room-*.{team}': "
        "the name's {team} is not the JWT's team claim",
    )
    assert await join(emulator, gateway, "private-room-lobby.red.blue", headers=bearer("ann", team="blue")) == {}
    assert await join(emulator, gateway, "private-acme-eu-u1", headers=bearer("eu-u1", org="acme")) == {}


def test_library_rules_bind_one_reading_unless_registered_for_the_whole_name() -> None:
    """relay.rules' docstring: a Python rule gets the one reading compile_pattern binds (org acme-eu, sub u1), and
    its ``whole_name=True`` example, run as written, allows every user some reading binds, and no other."""
    one_reading = ChannelRules()
    readings: list[tuple[str, str]] = []

    @one_reading.channel("private-{org}-{sub}")
    def record(user: User | None, org: str, sub: str) -> bool:
        readings.append((org, sub))
        return True

    one_reading.authorize(User("u1"), "private-acme-eu-u1")
    assert readings == [("acme-eu", "u1")]

    assert relay.rules.__doc__ is not None
    blocks = relay.rules.__doc__.split("\n\n")
    (example,) = [block for block in blocks if block.startswith("    ") and "whole_name=True" in block]
    rules = ChannelRules()
    exec(textwrap.dedent(example), {"rules": rules, "User": User, "pattern_admits": pattern_admits})
    for user in (User("eu-u1", {"org": "acme"}), User("u1", {"org": "acme-eu"})):
        assert rules.authorize(user, "private-acme-eu-u1").member == user
    for user in (User("eu-u2", {"org": "acme"}), User("u1"), None):
        try:
            rules.authorize(user, "private-acme-eu-u1")
        except PermissionDenied:
            continue
        raise AssertionError(f"{user} was granted private-acme-eu-u1")
    assert not pattern_admits("private-{org}-{sub}", "private-acme.eu-u1", {"org": "acme.eu", "sub": "u1"})


def signed_by_app(emulator: RunningEmulator, socket_id: str, user_data: str) -> str:
    """Pusher's sign-in signature, computed here: ``key:hex(HMAC-SHA256(secret, socket_id::user::user_data))``."""
    message = f"{socket_id}::user::{user_data}".encode()
    return f"{emulator.app.key}:{hmac.new(emulator.app.secret.encode(), message, hashlib.sha256).hexdigest()}"


async def sign_in(
    gateway: RunningGateway, emulator: RunningEmulator, token: str
) -> tuple[ClientConnection, dict[str, Any]]:
    """A fresh emulator socket signed in with the gateway's answer for ``token``: the socket and that answer."""
    ws, socket_id = await open_socket(emulator)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        response = await http.post(
            "/v1/auth/user", data={"socket_id": socket_id}, headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["auth"] == signed_by_app(emulator, socket_id, body["user_data"])
    await ws.send(json.dumps({"event": "pusher:signin", "data": body}))
    return ws, body


async def next_frame(ws: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 2))
    return frame


async def test_the_watchlist_claim_is_the_signed_in_users_watchlist(
    gateway: RunningGateway, emulator: RunningEmulator
) -> None:
    """docs/gateway.md's sign-in example: a JWT with those claims gets that ``user_data``, signed with the app's
    secret; the emulator accepts the sign-in and reports the watched users' status (bob signed in: online; carol:
    offline), then bob going offline. The claim was ignored: the user_data had no watchlist."""
    claims = json.loads(doc_block("json", "Sign-in and watchlists"))
    user_data = doc_block("text", "Sign-in and watchlists").strip()
    bob, _ = await sign_in(gateway, emulator, hs_jwt("bob"))
    del claims["exp"]  # hs_jwt gives one a minute ahead
    alice, body = await sign_in(gateway, emulator, hs_jwt(**claims))
    try:
        assert body["user_data"] == user_data
        assert json.loads(body["user_data"])["watchlist"] == ["bob", "carol"]
        assert await next_frame(alice) == {"event": "pusher:signin_success", "data": {"user_data": user_data}}
        assert await next_frame(alice) == {
            "event": "pusher_internal:watchlist_events",
            "data": {"events": [{"name": "online", "user_ids": ["bob"]}, {"name": "offline", "user_ids": ["carol"]}]},
        }
        await bob.close()
        assert await next_frame(alice) == {
            "event": "pusher_internal:watchlist_events",
            "data": {"events": [{"name": "offline", "user_ids": ["bob"]}]},
        }
    finally:
        await alice.close()
        await bob.close()


async def test_a_malformed_watchlist_claim_is_a_400_naming_the_claim(gateway: RunningGateway) -> None:
    """Not a list of strings, or over Pusher's 100 ids: 400 with the reason and the claim's name, not a sign-in
    without a watchlist (the claim was ignored: 200). Exactly 100 ids (one of them listed twice too), or none, sign
    in; the gateway keeps serving."""
    wanted = "the JWT's watchlist claim must be a list of user id strings"
    refused = {
        "a string": ("bob", f"{wanted}, not a string"),
        "null": (None, f"{wanted}, not null"),
        "an object": ({"bob": True}, f"{wanted}, not an object"),
        "a number inside": (["bob", 7], f"{wanted}: item 1 is a number"),
        "a list inside": ([["bob"]], f"{wanted}: item 0 is a list"),
        "an empty id": (
            ["bob", ""],
            "the JWT's watchlist claim: item 1 is empty: a user id has at least one character",
        ),
        "an id past the longest": (
            ["b" * 129],
            "the JWT's watchlist claim: item 0 is 129 characters long; a user id is at most 128",
        ),
        "101 ids": (
            [f"user-{n}" for n in range(101)],
            "the JWT's watchlist claim has 101 user ids; Pusher watches at most 100",
        ),
    }
    async with httpx.AsyncClient(base_url=gateway.url) as http:

        async def signin(watchlist: object) -> httpx.Response:
            token = hs_jwt("alice", watchlist=watchlist)
            return await http.post(
                "/v1/auth/user", data={"socket_id": "1.1"}, headers={"authorization": f"Bearer {token}"}
            )

        for label, (watchlist, message) in refused.items():
            response = await signin(watchlist)
            assert (response.status_code, response.json()) == (400, {"error": message}), label

        # An id listed twice is one id watched: 101 entries of 100 ids sign in, each id signed once
        hundred = [f"user-{n}" for n in range(100)]
        for watchlist, expected in ((hundred, hundred), ([*hundred, "user-7"], hundred), ([], None)):
            response = await signin(watchlist)
            assert response.status_code == 200, response.text
            assert json.loads(response.json()["user_data"]).get("watchlist") == expected

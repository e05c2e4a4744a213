"""Identity providers' subjects against channel names (docs/gateway.md, "Claims that cannot be in a channel name"),
through a real gateway and emulator with real HS256 JWTs.

An Auth0 subject (``auth0|123``) was a bare 400 on the channel's characters, an email subject a 403 "no rule allows"
although ``private-user-{sub}`` is a rule: each refusal now names the rule that would match and the placeholder whose
value it cannot hold. The documented way out, a custom claim in the pattern, subscribes; a numeric ``sub`` is the 401
the docs name. And an anonymous request's refusal can say why the request has no user.
"""

from __future__ import annotations

import re
from pathlib import Path

import jwt
import pytest

from relay.errors import InvalidChannelName, PermissionDenied
from relay.gateway import GatewaySettings
from relay.gateway.rules_file import DEFAULT_RULES, RuleSpec, build_rules
from relay.models import User
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, emulator_url, hs_jwt
from tests.gateway.test_gateway_identity import auth_status, join
from tests.gateway.test_gateway_nextjs_guide import GUIDE

NAME_CHARACTERS = "has characters outside A-Z a-z 0-9 _ - = @ , . ; ('#' is reserved for #server-to-user-{id})"
VALUE_CHARACTERS = (
    "a placeholder's value holds only A-Z a-z 0-9 _ - = @ , ; (a channel name's characters but the dot), so such a "
    "user needs channels named after another claim, such as a custom claim that holds only these"
)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_subject_no_placeholder_can_hold_is_refused_naming_the_rule_and_the_claim(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """With the default rules, a user asking for the channel of their own ``sub``: Auth0's ``auth0|123`` cannot be
    in a channel name (400), an email address's dot cannot be in a placeholder (403); both refusals say the name is
    ``private-user-{sub}`` (or ``private-user.{sub}``) with the sub claim, and which character it cannot hold. Another
    user asking for that name, or a name no rule comes near, is refused as before."""
    gateway = await start_gateway(GatewaySettings(relay_url=emulator_url(emulator), jwt_secret=JWT_SECRET))

    assert await auth_status(gateway, "private-user-auth0|123", hs_jwt("auth0|123")) == (
        400,
        f"channel name 'private-user-auth0|123' {NAME_CHARACTERS}; the name is rule 'private-user-{{sub}}' filled in "
        f"with the user's sub claim, which holds '|': {VALUE_CHARACTERS}",
    )
    email = hs_jwt("ann@example.com")
    assert await auth_status(gateway, "private-user-ann@example.com", email) == (
        403,
        "no rule allows 'private-user-ann@example.com': the name is rule 'private-user-{sub}' filled in with the "
        f"user's sub claim, which holds '.': {VALUE_CHARACTERS}",
    )
    assert await auth_status(gateway, "private-user.ann@example.com", email) == (
        403,
        "no rule allows 'private-user.ann@example.com': the name is rule 'private-user.{sub}' filled in with the "
        f"user's sub claim, which holds '.': {VALUE_CHARACTERS}",
    )
    assert await auth_status(gateway, "private-user-ann@example.com", hs_jwt("bob")) == (
        403,
        "no rule allows 'private-user-ann@example.com'",
    )
    assert await auth_status(gateway, "private-user-auth0|123", hs_jwt("bob")) == (
        400,
        f"channel name 'private-user-auth0|123' {NAME_CHARACTERS}",
    )
    assert await auth_status(gateway, "private-user-auth0|123") == (
        400,
        f"channel name 'private-user-auth0|123' {NAME_CHARACTERS}",
    )
    assert await auth_status(gateway, "private-orders", email) == (403, "no rule allows 'private-orders'")
    assert await auth_status(gateway, "chat:*", email) == (400, f"channel name 'chat:*' {NAME_CHARACTERS}")


def test_the_refusal_names_every_claim_a_placeholder_cannot_hold() -> None:
    """Two claims in one pattern, each with a character no placeholder matches: both are named, with the
    characters; a claim that fits is not. An integer claim fills its placeholder as its decimal."""
    rules = build_rules([RuleSpec("private-{org}-team-{team}.{n}")])
    user = User("u1", {"sub": "u1", "org": "ac/me", "team": "red blue|", "n": 7})
    with pytest.raises(InvalidChannelName) as refused:
        rules.authorize(user, "private-ac/me-team-red blue|.7")
    assert refused.value.message.endswith(
        "; the name is rule 'private-{org}-team-{team}.{n}' filled in with the user's org claim, which holds '/', "
        f"and team claim, which holds ' ', '|': {VALUE_CHARACTERS}"
    )


async def test_the_documented_custom_claim_subscribes_an_auth0_user(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """docs/gateway.md's ``pattern = "private-user-{uid}"``: the user whose JWT has ``"sub": "auth0|123", "uid":
    "auth0-123"`` subscribes ``private-user-auth0-123`` on the emulator, another user is refused; an integer claim
    matches its decimal (``"team": 7`` and ``presence-team-7``), and a numeric ``sub`` is the documented 401."""
    (pattern,) = re.findall(r'`(pattern = "private-user-\{uid\}")`', GUIDE.read_text())
    (team_pattern,) = re.findall(r'`(pattern = "presence-team-\{team\}")`', GUIDE.read_text())
    rules = tmp_path / "rules.toml"
    rules.write_text(f"[[channels]]\n{pattern}\n\n[[channels]]\n{team_pattern}\n")
    gateway = await start_gateway(
        env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_RULES_FILE": str(rules)}
    )

    auth0_user = hs_jwt("auth0|123", uid="auth0-123")
    assert await join(emulator, gateway, "private-user-auth0-123", headers=bearer(auth0_user)) == {}
    assert await auth_status(gateway, "private-user-auth0-123", hs_jwt("auth0|456", uid="auth0-456")) == (
        403,
        "access to 'private-user-auth0-123' denied by rule 'private-user-{uid}': the name's {uid} is not the JWT's "
        "uid claim",
    )
    member = await join(emulator, gateway, "presence-team-7", headers=bearer(hs_jwt("auth0|123", team=7)))
    assert member["presence"]["ids"] == ["auth0|123"]

    numeric = jwt.encode({"sub": 42, "exp": 2_000_000_000}, JWT_SECRET, algorithm="HS256")
    assert await auth_status(gateway, "private-user-42", numeric) == (
        401,
        "invalid JWT: its sub claim must be a string (RFC 7519 §4.1.2); put a numeric id in quotes",
    )


def test_an_anonymous_refusal_says_why_the_request_has_no_user() -> None:
    """``no_user_reason``, what the caller knows of the missing credential, ends the "needs an authenticated user"
    refusal; without it the refusal is as before."""
    rules = build_rules(DEFAULT_RULES)
    reason = "the request had no Authorization: Bearer header and no 'session' cookie"
    with pytest.raises(PermissionDenied) as refused:
        rules.authorize(None, "private-user-alice", no_user_reason=reason)
    assert refused.value.message == f"'private-user-alice' needs an authenticated user: {reason}"
    with pytest.raises(PermissionDenied) as plain:
        rules.authorize(None, "private-user-alice")
    assert plain.value.message == "'private-user-alice' needs an authenticated user"

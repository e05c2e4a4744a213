"""Rules-file and identity mistakes that used to pass silently: a pattern holding a character no channel name has, a
rule an earlier one always decides before it, an empty ``sub`` described as missing, and a JWKS file whose rotated
keys the gateway never saw until restarted."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from relay.errors import ConfigError
from relay.gateway import GatewaySettings, create_app
from relay.rules import ChannelRules, compile_pattern, pattern_covers
from tests.cli_support import assert_refused, run_relay, write
from tests.conftest import RunningEmulator
from tests.gateway.conftest import JWT_SECRET, StartGateway, emulator_url, gateway_with_jwks_file, hs_jwt
from tests.gateway.test_gateway_identity import auth_status, join


def gateway_with_rules(tmp_path: Path, rules: str) -> None:
    path = write(tmp_path, rules, "rules.toml")
    create_app(GatewaySettings.from_env({"RELAY_URL": "memory://hunt", "RELAY_RULES_FILE": str(path)}))


def rules_file(*patterns: str) -> str:
    return "".join(f"[[channels]]\npattern = '{pattern}'\n\n" for pattern in patterns)


# -- a pattern no channel name can match ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "shown"),
    [
        ("chat:*", "':'"),  # Ably's namespace separator: never in a Pusher-style name
        ("private-user-{sub} ", "' '"),  # a space pasted after the pattern
        ("private-user|{sub}", "'|'"),
        ("#server-to-user-*", "'#'"),  # the user's own channel, which no channel rule decides
    ],
)
def test_a_pattern_with_a_character_no_channel_name_holds_is_a_config_error(
    tmp_path: Path, pattern: str, shown: str
) -> None:
    """Such a rule never matched (names are checked for these characters before any rule), so it decided nothing
    and the gateway started as if it were there."""
    with pytest.raises(ConfigError) as caught:
        gateway_with_rules(tmp_path, rules_file(pattern))
    message = caught.value.message
    assert f"channels[0]: channel pattern {pattern!r} has {shown}" in message, message
    assert "no channel name holds" in message, message
    with pytest.raises(ValueError, match="no channel name holds"):
        ChannelRules().add(pattern, lambda user: True)


def test_an_unknown_key_in_a_rule_is_named_with_the_keys_a_rule_has(tmp_path: Path) -> None:
    rules = rules_file("private-user-{sub}", "presence-x") + "user_info_claim = ['a']\n"
    with pytest.raises(ConfigError) as caught:
        gateway_with_rules(tmp_path, rules)
    assert caught.value.message.endswith(
        "rules.toml channels[1]: unknown key(s) user_info_claim; allowed: pattern, users, user_info_claims"
    ), caught.value.message


# -- a rule that never decides --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "later", "earlier"),
    [
        (("private-user-{sub}", "private-user-{sub}"), 1, 0),  # the same pattern twice
        (("private-user-{sub}", "private-user-{id}"), 1, 0),  # the same, its placeholder renamed
        (("presence-*", "presence-team-{team}"), 1, 0),  # the docs' example, in the wrong order
        (("private-{org}-*", "private-{org}-{sub}"), 1, 0),  # a dash in org or sub: the * takes the rest
        (("private-user.{sub}", "*", "private-a.b"), 2, 1),
    ],
)
def test_a_rule_an_earlier_rule_always_decides_first_is_a_config_error(
    tmp_path: Path, patterns: tuple[str, ...], later: int, earlier: int
) -> None:
    """The first pattern that matches decides: a later rule whose names the earlier one all matches never decided,
    and its user_info_claims (or users) were silently not the ones applied."""
    with pytest.raises(ConfigError) as caught:
        gateway_with_rules(tmp_path, rules_file(*patterns))
    message = caught.value.message
    assert f"channels[{later}]: pattern {patterns[later]!r} never decides" in message, message
    assert f"channels[{earlier}] ({patterns[earlier]!r}) comes first and matches every name it matches" in message


@pytest.mark.parametrize(
    "patterns",
    [
        ("presence-team-{team}", "presence-*"),  # the docs' order: narrow first
        ("private-user-{sub}", "private-user.{sub}", "presence-*"),  # the default rules
        ("private-{org}.{sub}", "private-{org}-{sub}"),  # overlap, but each has names of its own
        ("private-{org}-a", "private-x-{b}"),
        ("private-{a}-*", "private-*"),  # private-x, which has no dash, is the later rule's alone
    ],
)
def test_rules_that_each_decide_some_name_are_accepted(tmp_path: Path, patterns: tuple[str, ...]) -> None:
    gateway_with_rules(tmp_path, rules_file(*patterns))


def test_pattern_covers_reads_placeholders_stars_and_dots() -> None:
    assert pattern_covers("private-{a}", "private-x")
    assert not pattern_covers("private-{a}", "private-x.y")  # a value holds no dot
    assert pattern_covers("private-*", "private-x.y")
    assert pattern_covers("private-{a}-{b}", "private-{c}-{d}-{e}")  # {a} or {b} takes the extra dash
    assert not pattern_covers("private-{a}-{b}", "private-{c}")
    assert not pattern_covers("private-{a}", "private-*")  # the empty rest, and rests with a dot


def test_pattern_covers_agrees_with_every_short_name() -> None:
    """Every pattern of up to three parts over a, b, '-', '.', a placeholder and '*', against every other: a pattern
    covers another exactly when each name of up to 6 characters the one matches, the other matches too (and where
    it does not, such a name shows it). Most pairs are told apart by their ends before the automata are run."""
    parts = ["a", "b", "-", ".", "{x}", "*"]
    patterns = []
    for count in range(1, 4):
        for combination in itertools.product(parts, repeat=count):
            pattern = "".join(combination)
            if pattern.count("{x}") < 2 and "**" not in pattern and "{x}*" not in pattern and "*{x}" not in pattern:
                patterns.append(pattern)
    names = ["".join(letters) for length in range(1, 7) for letters in itertools.product("ab-.", repeat=length)]
    matched = {pattern: {name for name in names if compile_pattern(pattern).fullmatch(name)} for pattern in patterns}
    for wider, narrower in itertools.product(patterns, repeat=2):
        assert pattern_covers(wider, narrower) == (matched[narrower] <= matched[wider]), (wider, narrower)


async def test_relay_serve_refuses_a_rule_that_never_decides(tmp_path: Path) -> None:
    path = write(tmp_path, rules_file("presence-*", "presence-team-{team}"), "rules.toml")
    env = {"RELAY_URL": "memory://hunt", "RELAY_JWT_SECRET": JWT_SECRET, "RELAY_RULES_FILE": str(path)}
    assert_refused(
        await run_relay("serve", "--port", "0", env=env),
        "channels[1]: pattern 'presence-team-{team}' never decides",
        "put the narrower rule first",
    )


# -- identity -------------------------------------------------------------------------------------------------------


async def test_an_empty_sub_is_named_as_empty_not_missing(
    emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """Said to be missing ("the JWT has no sub claim"), the claim was looked for where it already was."""
    gateway = await start_gateway(env={"RELAY_URL": emulator_url(emulator), "RELAY_JWT_SECRET": JWT_SECRET})
    assert await auth_status(gateway, "presence-room", hs_jwt("")) == (
        401,
        "the JWT's sub claim is empty: the gateway identifies the user by it",
    )
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    assert (await auth_status(gateway, "presence-room", no_sub))[1] == 'invalid JWT: Token is missing the "sub" claim'
    data = await join(emulator, gateway, "presence-room", headers={"authorization": f"Bearer {hs_jwt('ann')}"})
    assert data["presence"]["hash"] == {"ann": {"name": "Ann"}}


def signing_key(kid: str) -> tuple[rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "alg": "RS256", "use": "sig"}


def rs256(key: rsa.RSAPrivateKey, kid: str, sub: str) -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, key, algorithm="RS256", headers={"kid": kid})
    return {"authorization": f"Bearer {token}"}


def replace(path: Path, text: str) -> None:
    """As the docs say to update the file: a new file renamed over the old one, never read half written."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    os.replace(staged, path)


async def test_a_rotated_jwks_file_is_read_again_without_a_restart(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The docs send identity providers that rotate their keys to RELAY_JWKS_FILE; read once at start, the file's
    new key was 'the JWT's kid is not in the JWKS' (and a key taken out of it still verified) until a restart."""
    old_key, old_jwk = signing_key("2024-01")
    new_key, new_jwk = signing_key("2024-02")
    jwks = tmp_path / "jwks.json"
    gateway = await gateway_with_jwks_file(start_gateway, emulator, jwks, old_jwk)
    assert await join(emulator, gateway, "private-user-ann", headers=rs256(old_key, "2024-01", "ann")) == {}

    replace(jwks, json.dumps({"keys": [old_jwk, new_jwk]}))  # the provider publishes its next key
    assert await join(emulator, gateway, "private-user-bob", headers=rs256(new_key, "2024-02", "bob")) == {}
    assert await join(emulator, gateway, "private-user-ann", headers=rs256(old_key, "2024-01", "ann")) == {}

    replace(jwks, json.dumps({"keys": [new_jwk]}))  # and retires the old one
    old = rs256(old_key, "2024-01", "ann")["authorization"].removeprefix("Bearer ")
    assert await auth_status(gateway, "private-user-ann", old) == (401, "the JWT's kid is not in the JWKS")

    with caplog.at_level(logging.WARNING, logger="relay.gateway"):
        replace(jwks, '{"keys": [')  # a broken update keeps the keys the gateway has
        assert await join(emulator, gateway, "private-user-bob", headers=rs256(new_key, "2024-02", "bob")) == {}
        assert await join(emulator, gateway, "private-user-bob", headers=rs256(new_key, "2024-02", "bob")) == {}
    warnings = [record.getMessage() for record in caplog.records if record.name == "relay.gateway"]
    assert len(warnings) == 1, warnings  # once per change of the file, not once per request
    assert f"RELAY_JWKS_FILE: cannot read JSON from {jwks}" in warnings[0], warnings
    assert "the gateway keeps verifying with the 1 key(s) it last read" in warnings[0], warnings


async def test_every_key_with_the_token_s_kid_is_tried(
    tmp_path: Path, emulator: RunningEmulator, start_gateway: StartGateway
) -> None:
    """Kids SHOULD differ within a JWKS (RFC 7517 §4.5), but a provider that keeps a kid across a rotation, or gives one
    kid to a key per algorithm, publishes two keys with it: only the first was tried, and the other's tokens were
    refused as forged. A token no key with its kid verifies still is."""
    old_key, old_jwk = signing_key("main")
    new_key, new_jwk = signing_key("main")
    stranger, _ = signing_key("main")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "main", "alg": "ES256", "use": "sig"}
    gateway = await gateway_with_jwks_file(start_gateway, emulator, tmp_path / "jwks.json", old_jwk, ec_jwk, new_jwk)
    assert await join(emulator, gateway, "private-user-ann", headers=rs256(old_key, "main", "ann")) == {}
    assert await join(emulator, gateway, "private-user-bob", headers=rs256(new_key, "main", "bob")) == {}
    es256 = jwt.encode({"sub": "cy", "exp": int(time.time()) + 60}, ec_key, algorithm="ES256", headers={"kid": "main"})
    assert await join(emulator, gateway, "private-user-cy", headers={"authorization": f"Bearer {es256}"}) == {}
    forged = rs256(stranger, "main", "eve")["authorization"].removeprefix("Bearer ")
    assert await auth_status(gateway, "private-user-eve", forged) == (
        401,
        "invalid JWT: Signature verification failed with the key of RELAY_JWKS_FILE with the JWT's kid: the token was "
        "signed with another key, or altered",
    )

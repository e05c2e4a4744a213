"""Ably TokenRequest MACs, verification, capability matching and JWT claims (reference §A.10–A.12)."""

from __future__ import annotations

import json
import re
import time

import jwt
import pytest
from ably.types.tokenrequest import TokenRequest  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import AuthenticationError, InvalidSignature, PermissionDenied, StaleTimestamp
from relay.protocol import ably

PROPERTY = settings(max_examples=150, deadline=None)
KEY_NAME = "app.key1"
KEY_SECRET = "a-key-secret-that-is-long-enough-for-hs256!"
NOW_MS = 1_795_906_905_419

operations = st.sampled_from(["publish", "subscribe", "presence", "history", "*", "channel-metadata", "stats"])
capabilities = st.dictionaries(st.text(min_size=1, max_size=15), st.lists(operations, min_size=1, max_size=4))


# -- TokenRequest MAC ------------------------------------------------------------------------------------------


@PROPERTY
@given(
    key_name=st.text(min_size=1, max_size=30),
    key_secret=st.text(min_size=1, max_size=40),
    ttl=st.none() | st.integers(1, ably.MAX_TOKEN_TTL_MS),
    capability=st.none() | st.text(max_size=60),
    client_id=st.none() | st.text(max_size=20),
    timestamp=st.integers(1, 2**53),
    nonce=st.text(min_size=16, max_size=32),
)
def test_token_request_mac_matches_ably_sdk(
    key_name: str,
    key_secret: str,
    ttl: int | None,
    capability: str | None,
    client_id: str | None,
    timestamp: int,
    nonce: str,
) -> None:
    reference = TokenRequest(
        key_name=key_name, client_id=client_id, nonce=nonce, capability=capability, ttl=ttl, timestamp=timestamp
    )
    reference.sign_request(key_secret)
    ours = ably.token_request_mac(
        key_secret, key_name, ttl=ttl, capability=capability, client_id=client_id, timestamp=timestamp, nonce=nonce
    )
    assert ours == reference.mac
    # ably-python sends absent fields as JSON null; the request must verify exactly as sent.
    ably.verify_token_request(reference.to_dict(), key_name, key_secret, now_ms=timestamp)


def test_token_request_mac_ttl_zero_matches_ably_sdk() -> None:
    reference = TokenRequest(key_name=KEY_NAME, nonce="0123456789abcdef", ttl=0, timestamp=NOW_MS)
    reference.sign_request(KEY_SECRET)
    ours = ably.token_request_mac(
        KEY_SECRET, KEY_NAME, ttl=0, capability=None, client_id=None, timestamp=NOW_MS, nonce="0123456789abcdef"
    )
    assert ours == reference.mac


def test_token_request_text_layout() -> None:
    text = ably.token_request_text("a.b", None, None, None, 5, "nonce")
    assert text == "a.b\n\n\n\n5\nnonce\n"
    assert ably.token_request_text("a.b", 60000, '{"*":["*"]}', "alice", 5, "n") == (
        'a.b\n60000\n{"*":["*"]}\nalice\n5\nn\n'
    )


def test_python_sdk_capability_with_spaces_verifies_as_sent() -> None:
    capability = json.dumps({"*": ["*"]}, sort_keys=True)
    assert capability == '{"*": ["*"]}'
    reference = TokenRequest(
        key_name=KEY_NAME, nonce="3b40245d3db818a3", capability=capability, timestamp=NOW_MS, client_id="alice"
    )
    reference.sign_request(KEY_SECRET)
    ably.verify_token_request(reference.to_dict(), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)


# -- verify_token_request ---------------------------------------------------------------------------------------


def _request(**overrides: object) -> dict[str, object]:
    request = ably.build_token_request(
        KEY_NAME,
        KEY_SECRET,
        timestamp=NOW_MS,
        nonce="3b40245d3db818a3",
        capability={"chat:*": ["subscribe", "publish"], "notifications": ["subscribe"]},
        client_id="alice",
        ttl=60_000,
    )
    request.update(overrides)
    return request


def test_build_token_request_shape() -> None:
    request = _request()
    assert request["capability"] == '{"chat:*":["publish","subscribe"],"notifications":["subscribe"]}'
    assert set(request) == {"keyName", "timestamp", "nonce", "capability", "clientId", "ttl", "mac"}
    minimal = ably.build_token_request(KEY_NAME, KEY_SECRET, timestamp=NOW_MS, nonce="n" * 16)
    assert set(minimal) == {"keyName", "timestamp", "nonce", "mac"}
    ably.verify_token_request(minimal, KEY_NAME, KEY_SECRET, now_ms=NOW_MS)


def test_verify_token_request_accepts_built_request() -> None:
    ably.verify_token_request(_request(), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)


def test_verify_token_request_accepts_ttl_as_string() -> None:
    ably.verify_token_request(_request(ttl="60000"), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)


@pytest.mark.parametrize(
    "tampered",
    [
        {"ttl": 60_001},
        {"capability": '{"*":["*"]}'},
        {"clientId": "mallory"},
        {"nonce": "3b40245d3db818a4"},
        {"timestamp": NOW_MS + 1},
        {"mac": "AAAA"},
    ],
)
def test_verify_token_request_rejects_tampered_field(tampered: dict[str, object]) -> None:
    with pytest.raises(InvalidSignature, match="mac does not verify") as info:
        ably.verify_token_request(_request(**tampered), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)
    assert info.value.code == 40101
    assert info.value.http_status == 401
    assert KEY_SECRET not in str(info.value)


def test_verify_token_request_rejects_other_secret() -> None:
    with pytest.raises(InvalidSignature):
        ably.verify_token_request(_request(), KEY_NAME, "another-secret", now_ms=NOW_MS)


def test_verify_token_request_rejects_other_key_name() -> None:
    with pytest.raises(AuthenticationError, match="keyName") as info:
        ably.verify_token_request(_request(keyName="app.key2"), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)
    assert info.value.code == 40101


@pytest.mark.parametrize("offset_ms", [120_001, -120_001, 3_600_000])
def test_verify_token_request_rejects_stale_timestamp(offset_ms: int) -> None:
    with pytest.raises(StaleTimestamp, match="not current") as info:
        ably.verify_token_request(_request(), KEY_NAME, KEY_SECRET, now_ms=NOW_MS + offset_ms)
    assert info.value.code == 40104


@pytest.mark.parametrize("offset_ms", [120_000, -120_000, 0])
def test_verify_token_request_accepts_timestamp_within_two_minutes(offset_ms: int) -> None:
    ably.verify_token_request(_request(), KEY_NAME, KEY_SECRET, now_ms=NOW_MS + offset_ms)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"timestamp": str(NOW_MS)}, 40100),
        ({"nonce": None}, 40100),
        ({"mac": None}, 40100),
        ({"ttl": 1.5}, 40003),
        ({"ttl": "soon"}, 40003),
        ({"capability": {"*": ["*"]}}, 40000),
        ({"clientId": 7}, 40000),
    ],
)
def test_verify_token_request_rejects_malformed(overrides: dict[str, object], code: int) -> None:
    with pytest.raises(AuthenticationError) as info:
        ably.verify_token_request(_request(**overrides), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)
    assert info.value.code == code


def test_verify_token_request_superscript_ttl_is_an_authentication_error() -> None:
    with pytest.raises(AuthenticationError):
        ably.verify_token_request(_request(ttl="²"), KEY_NAME, KEY_SECRET, now_ms=NOW_MS)


# -- capabilities -----------------------------------------------------------------------------------------------


def test_canonical_capability_and_parse() -> None:
    capability = {"notifications": ["subscribe", "history"], "chat:*": ["subscribe", "publish", "presence"]}
    text = ably.canonical_capability(capability)
    assert text == '{"chat:*":["presence","publish","subscribe"],"notifications":["history","subscribe"]}'
    assert ably.parse_capability(text) == {key: sorted(ops) for key, ops in capability.items()}
    for bad in ["not json", "[]", '{"a":"publish"}', '{"a":[1]}']:
        with pytest.raises(AuthenticationError) as info:
            ably.parse_capability(bad)
        assert info.value.code == 40000


@pytest.mark.parametrize(
    ("pattern", "channel", "expected"),
    [
        ("*", "foo", True),
        ("*", "foo:bar", True),
        ("*", "foo:bar:baz", True),
        ("*", "[meta]channel.lifecycle", False),
        ("*", "[queue]tasks", False),
        ("ns:*", "ns:x", True),
        ("ns:*", "ns:x:y", True),
        ("ns:*", "ns", False),
        ("ns:*", "other:x", False),
        ("ns:*", "nsx:y", False),
        ("foo:*:baz", "foo:bar:baz", True),
        ("foo:*:baz", "foo:a:b:baz", False),
        ("foo:*:baz", "foo:bar:qux", False),
        ("foo:*:baz", "foo:bar", False),
        ("foo*", "foo*", True),
        ("foo*", "foo", False),
        ("foo*", "foobar", False),
        ("foo", "foo", True),
        ("foo", "foo:bar", False),
        ("[meta]*", "foo", False),
        ("[queue]*", "foo", False),
        ("[*]*", "foo", True),
        ("[*]*", "foo:bar", True),
        ("[*]*", "[meta]channel.lifecycle", True),
        ("[*]*", "[queue]tasks", True),
        ("[meta]channel.lifecycle", "[meta]channel.lifecycle", True),
    ],
)
def test_resource_matches_table(pattern: str, channel: str, expected: bool) -> None:
    assert ably.resource_matches(pattern, channel) is expected


@pytest.mark.parametrize(
    ("pattern", "channel"),
    [
        ("[meta]*", "[meta]channel.lifecycle"),
        ("[meta]*", "[meta]connection.lifecycle"),
        ("[queue]*", "[queue]tasks"),
    ],
)
def test_resource_matches_meta_and_queue_wildcards(pattern: str, channel: str) -> None:
    assert ably.resource_matches(pattern, channel)


def test_allows_and_require() -> None:
    capability = {"chat:*": ["publish", "subscribe"], "notifications": ["*"]}
    assert ably.allows(capability, "chat:room1", "publish")
    assert not ably.allows(capability, "chat:room1", "history")
    assert ably.allows(capability, "notifications", "history")
    assert not ably.allows(capability, "other", "subscribe")
    ably.require(capability, "chat:room1", "subscribe")
    with pytest.raises(PermissionDenied) as info:
        ably.require(capability, "chat", "subscribe")
    assert info.value.code == 40160
    assert info.value.http_status == 403


# -- JWT --------------------------------------------------------------------------------------------------------


@PROPERTY
@given(capability=capabilities, client_id=st.none() | st.text(min_size=1, max_size=20), ttl=st.integers(60, 86_400))
def test_jwt_claims_decode_with_pyjwt(capability: dict[str, list[str]], client_id: str | None, ttl: int) -> None:
    issued_at = int(time.time())
    header, claims = ably.jwt_claims(KEY_NAME, capability, issued_at=issued_at, ttl_seconds=ttl, client_id=client_id)
    token = jwt.encode(claims, KEY_SECRET, algorithm="HS256", headers=header)
    assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "HS256", "kid": KEY_NAME}
    decoded = jwt.decode(token, KEY_SECRET, algorithms=["HS256"])
    assert decoded["iat"] == issued_at
    assert decoded["exp"] == issued_at + ttl
    text = decoded["x-ably-capability"]
    assert isinstance(text, str)
    assert text == ably.canonical_capability(capability)
    parsed = json.loads(text)
    assert list(parsed) == sorted(capability)
    assert all(parsed[resource] == sorted(ops) for resource, ops in capability.items())
    assert json.dumps(parsed, separators=(",", ":")) == text
    if client_id is None:
        assert "x-ably-clientId" not in decoded
    else:
        assert decoded["x-ably-clientId"] == client_id
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, KEY_SECRET + "x", algorithms=["HS256"])


@pytest.mark.parametrize("ttl", [0, -1, 86_401])
def test_jwt_claims_ttl_bounds(ttl: int) -> None:
    with pytest.raises(ValueError, match="24 hours"):
        ably.jwt_claims(KEY_NAME, {"*": ["*"]}, issued_at=0, ttl_seconds=ttl)


def test_jwt_claims_ttl_limits_inclusive() -> None:
    _, claims = ably.jwt_claims(KEY_NAME, {"*": ["*"]}, issued_at=10, ttl_seconds=86_400)
    assert claims["exp"] == 86_410
    _, claims = ably.jwt_claims(KEY_NAME, {"*": ["*"]}, issued_at=10, ttl_seconds=1)
    assert claims["exp"] == 11


# -- webhook signature --------------------------------------------------------------------------------------------


def test_webhook_signature_is_base64_hmac_sha256_of_the_raw_body() -> None:
    """Reference §A webhooks: base64(HMAC-SHA256(key secret, raw body)); the figure is OpenSSL's
    (`printf body | openssl dgst -sha256 -hmac secret -binary | base64`)."""
    assert ably.webhook_signature("secret", b"body") == "3EaYNVf+oSe0OvchRn65s/3iM4/j4U9RlSqoR4wT01U="
    assert ably.webhook_signature("secret", b"body ") != ably.webhook_signature("secret", b"body")


@pytest.mark.parametrize(
    ("params", "rewind"),
    [
        ({}, None),
        ({"delta": "vcdiff"}, None),
        ({"rewind": "1"}, ably.Rewind(1)),
        ({"rewind": "0"}, ably.Rewind(0)),
        ({"rewind": "100"}, ably.Rewind(100)),
        ({"rewind": "250"}, ably.Rewind(100, capped=True)),  # never more than the last 100
        ({"rewind": "250", "rewindLimit": "100"}, ably.Rewind(100)),  # the client's own limit: no cap of Ably's
        ({"rewind": "5", "rewindLimit": "2"}, ably.Rewind(2)),
        ({"rewind": "30s"}, ably.Rewind(100, 30_000, capped=True)),  # all of the last 30 s, 100 at most
        ({"rewind": "2m", "rewindLimit": "10"}, ably.Rewind(10, 120_000)),
        ({"rewind": "1m", "rewindLimit": "1000"}, ably.Rewind(100, 60_000, capped=True)),
    ],
)
def test_rewind_params(params: dict[str, object], rewind: ably.Rewind | None) -> None:
    """The rewind channel param: a number of messages, or seconds or minutes, with rewindLimit; at most 100."""
    assert ably.parse_rewind(params) == rewind


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"rewind": ""}, "rewind must be a number of messages or a time such as '30s' or '2m', got ''"),
        ({"rewind": "1h"}, "rewind must be a number of messages or a time such as '30s' or '2m', got '1h'"),
        ({"rewind": "-1"}, "rewind must be a number of messages or a time such as '30s' or '2m', got '-1'"),
        ({"rewind": " 1"}, "rewind must be a number of messages or a time such as '30s' or '2m', got ' 1'"),
        (
            {"rewind": "1234567890"},
            "rewind must be a number of messages or a time such as '30s' or '2m', got '1234567890'",
        ),
        ({"rewind": True}, "rewind must be a number of messages or a time such as '30s' or '2m', got True"),
        ({"rewind": "1", "rewindLimit": "0"}, "rewindLimit must be a positive number of messages, got '0'"),
        ({"rewind": "1", "rewindLimit": 5}, "rewindLimit must be a positive number of messages, got 5"),
        ({"rewind": "1", "rewindLimit": "²"}, "rewindLimit must be a positive number of messages, got '²'"),
    ],
)
def test_rewind_params_ably_refuses(params: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        ably.parse_rewind(params)


@pytest.mark.parametrize(
    ("name", "qualified"),
    [
        ("orders", None),
        ("[meta]log", None),  # a metachannel, not params
        ("[?rewind=1]orders", ("orders", {"rewind": "1"})),
        ("[?rewind=2m&rewindLimit=5]orders:42", ("orders:42", {"rewind": "2m", "rewindLimit": "5"})),
        ("[?occupancy=metrics]match-7", ("match-7", {"occupancy": "metrics"})),
        ("[?rewind=1]", ("", {"rewind": "1"})),  # the name is then checked, and refused, as any other
    ],
)
def test_a_name_qualified_with_params(name: str, qualified: tuple[str, dict[str, str]] | None) -> None:
    """Ably's other way of passing channel params: ``[?rewind=1]orders``."""
    assert ably.qualified_params(name) == qualified


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("[?rewind=1orders", "a qualifier '[?…' ends with ']'"),
        ("[?rewind]orders", "the qualifier's params are key=value pairs joined by '&', got 'rewind'"),
        ("[?=1]orders", "the qualifier's params are key=value pairs joined by '&', got '=1'"),
        ("[?rewind=1&]orders", "the qualifier's params are key=value pairs joined by '&', got ''"),
    ],
)
def test_a_bad_qualifier_says_why(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(reason) + "$"):
        ably.qualified_params(name)


@pytest.mark.parametrize(
    ("signed_in_until", "ttl"),
    [
        (None, None),
        (1_000_120.0, 120_000),
        (1_000_000.0015, 1),
        (1_003_599.5, 3_599_500),
        (1_003_600.0, None),  # the default hour ends first
        (1_086_400.0, None),
    ],
)
def test_a_token_ends_by_the_user_s_sign_in_or_after_ably_s_default_hour(
    signed_in_until: float | None, ttl: int | None
) -> None:
    assert ably.token_ttl_within(signed_in_until, 1_000_000.0) == ttl


@pytest.mark.parametrize("signed_in_until", [1_000_000.0, 999_999.0, 1_000_000.0009])
def test_a_sign_in_already_ended_gets_no_token(signed_in_until: float) -> None:
    with pytest.raises(AuthenticationError) as refused:
        ably.token_ttl_within(signed_in_until, 1_000_000.0)
    assert str(refused.value) == ("the user's sign-in has ended (signed_in_until is past): a token would outlive it")

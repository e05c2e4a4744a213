"""Verification of REST requests, channel and user auth, webhooks: what is accepted and the typed errors."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import (
    AuthenticationError,
    InvalidChannelName,
    InvalidSignature,
    InvalidSocketId,
    RelayError,
    StaleTimestamp,
    UnknownKey,
)
from relay.protocol import signing

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET_ID = "1234.1234"
NOW = 1353088179
PATH = "/apps/3/events"
BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
DOC_PARAMS = {
    "auth_key": KEY,
    "auth_timestamp": str(NOW),
    "auth_version": "1.0",
    "body_md5": "ec365a775a4cd0599faeb73354201b6f",
    "auth_signature": "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
}


def _verify(params: dict[str, str], *, body: bytes = BODY, now: float = NOW, key: str = KEY) -> None:
    signing.verify_rest_request(key=key, secret=SECRET, method="POST", path=PATH, params=params, body=body, now=now)


def _signed(timestamp: int = NOW, body: bytes = BODY) -> dict[str, str]:
    return signing.sign_rest_request(KEY, SECRET, "POST", PATH, timestamp=timestamp, body=body)


def _assert_no_secret(error: RelayError) -> None:
    assert SECRET not in str(error)
    assert SECRET not in error.message


# -- verify_rest_request -------------------------------------------------------------------------------------


def test_rest_doc_example_is_accepted() -> None:
    _verify(dict(DOC_PARAMS))


def test_rest_accepts_get_with_empty_body_md5() -> None:
    params = signing.sign_rest_request(
        KEY,
        SECRET,
        "GET",
        "/apps/3/channels",
        timestamp=NOW,
        params={"info": "user_count"},
        include_empty_body_md5=True,
    )
    signing.verify_rest_request(
        key=KEY, secret=SECRET, method="GET", path="/apps/3/channels", params=params, body=b"", now=NOW
    )


def test_rest_accepts_lowercase_method_as_uppercase() -> None:
    signing.verify_rest_request(
        key=KEY, secret=SECRET, method="post", path=PATH, params=dict(DOC_PARAMS), body=BODY, now=NOW
    )


def test_rest_rejects_wrong_signature() -> None:
    params = dict(DOC_PARAMS, auth_signature="0" * 64)
    with pytest.raises(InvalidSignature, match="invalid auth_signature") as info:
        _verify(params)
    assert info.value.http_status == 401
    _assert_no_secret(info.value)
    assert DOC_PARAMS["auth_signature"] not in str(info.value)
    # The string the server signed, as hosted Pusher shows it: a sender can diff it against its own
    string_to_sign = signing.rest_string_to_sign("POST", PATH, {k: v for k, v in params.items()})
    assert str(info.value).endswith(f": here {string_to_sign!r}")


def test_rest_and_channel_refusals_cut_the_string_to_sign_alike() -> None:
    """A GET with a long query (``filter_by_prefix`` of kilobytes) is refused with its string to sign cut where a
    channel auth refusal cuts a long channel_data: one limit for every shown string to sign."""
    path = "/apps/3/channels"
    params = dict(
        signing.sign_rest_request(KEY, SECRET, "GET", path, timestamp=NOW, params={"filter_by_prefix": "p" * 2000})
    )
    params["auth_signature"] = "0" * 64
    with pytest.raises(InvalidSignature) as info:
        signing.verify_rest_request(key=KEY, secret=SECRET, method="GET", path=path, params=params, body=b"", now=NOW)
    string_to_sign = signing.rest_string_to_sign("GET", path, params)
    assert len(string_to_sign) > signing.SHOWN_STRING_TO_SIGN
    assert str(info.value).endswith(f": here {string_to_sign[: signing.SHOWN_STRING_TO_SIGN] + '…'!r}")


def test_rest_rejects_signature_over_other_path() -> None:
    with pytest.raises(InvalidSignature):
        signing.verify_rest_request(
            key=KEY, secret=SECRET, method="POST", path="/apps/4/events", params=dict(DOC_PARAMS), body=BODY, now=NOW
        )


def test_rest_rejects_tampered_parameter() -> None:
    params = dict(DOC_PARAMS, socket_id="1.1")
    with pytest.raises(InvalidSignature, match="invalid auth_signature"):
        _verify(params)


def test_rest_rejects_wrong_key() -> None:
    with pytest.raises(UnknownKey, match="not this application's key") as info:
        _verify(dict(DOC_PARAMS), key="another-key")
    assert isinstance(info.value, AuthenticationError)
    _assert_no_secret(info.value)


@pytest.mark.parametrize(
    ("offset", "where"), [(601, "601 s ahead of"), (-601, "601 s behind"), (10_000, "10000 s ahead of")]
)
def test_rest_rejects_stale_timestamp(offset: int, where: str) -> None:
    with pytest.raises(StaleTimestamp, match="check the sender's clock") as info:
        _verify(_signed(NOW + offset))
    assert info.value.http_status == 401
    assert str(info.value) == (
        f"auth_timestamp is {where} the server's time; the window is 600 s, so check the sender's clock"
    )
    _assert_no_secret(info.value)


def test_rest_a_timestamp_beyond_any_clock_is_far_not_its_digits() -> None:
    with pytest.raises(StaleTimestamp) as info:
        _verify(_signed(10**30))
    assert str(info.value) == (
        "auth_timestamp is far from the server's time; the window is 600 s, so check the sender's clock"
    )


@pytest.mark.parametrize("offset", [600, -600, 0, 599])
def test_rest_accepts_timestamp_inside_window(offset: int) -> None:
    _verify(_signed(NOW + offset))


def test_rest_custom_window() -> None:
    signing.verify_rest_request(
        key=KEY, secret=SECRET, method="POST", path=PATH, params=_signed(NOW - 30), body=BODY, now=NOW, window=30
    )
    with pytest.raises(StaleTimestamp):
        signing.verify_rest_request(
            key=KEY, secret=SECRET, method="POST", path=PATH, params=_signed(NOW - 31), body=BODY, now=NOW, window=30
        )


def test_rest_rejects_body_md5_mismatch() -> None:
    with pytest.raises(InvalidSignature, match="body_md5 does not match") as info:
        _verify(dict(DOC_PARAMS), body=BODY + b" ")
    _assert_no_secret(info.value)


def test_rest_rejects_body_without_body_md5() -> None:
    params = signing.sign_rest_request(KEY, SECRET, "POST", PATH, timestamp=NOW)
    assert "body_md5" not in params
    with pytest.raises(AuthenticationError, match="body_md5 is required"):
        _verify(params, body=b"{}")


def test_rest_rejects_empty_body_with_nonempty_md5() -> None:
    with pytest.raises(InvalidSignature, match="body_md5 does not match"):
        _verify(dict(DOC_PARAMS), body=b"")


@pytest.mark.parametrize("missing", ["auth_key", "auth_timestamp", "auth_version", "auth_signature"])
def test_rest_rejects_missing_auth_param(missing: str) -> None:
    params = dict(DOC_PARAMS)
    del params[missing]
    with pytest.raises(AuthenticationError, match="missing authentication parameters") as info:
        _verify(params)
    assert missing in str(info.value)
    assert type(info.value) is AuthenticationError
    _assert_no_secret(info.value)


def test_rest_missing_params_lists_all() -> None:
    with pytest.raises(AuthenticationError) as info:
        _verify({})
    assert str(info.value) == (
        "missing authentication parameters: auth_key, auth_timestamp, auth_version, auth_signature"
    )


@pytest.mark.parametrize(
    "timestamp",
    [
        "abc",
        "1353088179.5",
        "",
        "1e9",
        "0x50a6c6b3",
        "1_353088179",
        " 1353088179",
        "+1353088179",
        "١٣٥٣٠٨٨١٧٩",
        "9" * 4301,
    ],
)
def test_rest_rejects_non_integer_timestamp(timestamp: str) -> None:
    params = dict(DOC_PARAMS, auth_timestamp=timestamp)
    with pytest.raises(AuthenticationError, match="whole seconds") as info:
        _verify(params)
    assert type(info.value) is AuthenticationError


def test_rest_rejects_wrong_auth_version() -> None:
    params = dict(DOC_PARAMS, auth_version="2.0")
    with pytest.raises(AuthenticationError, match=r"auth_version must be 1\.0"):
        _verify(params)


def test_unique_params_lowercases_keys() -> None:
    assert signing.unique_params([("Auth_Key", "k"), ("info", "user_count")]) == {
        "auth_key": "k",
        "info": "user_count",
    }


@pytest.mark.parametrize(
    "pairs",
    [
        [("auth_key", "a"), ("auth_key", "b")],
        [("info", "x"), ("INFO", "x")],
        [("auth_signature", "s"), ("a", "1"), ("Auth_Signature", "s")],
    ],
)
def test_unique_params_rejects_duplicates(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(AuthenticationError, match="more than once"):
        signing.unique_params(pairs)


# -- channel auth ---------------------------------------------------------------------------------------------


def test_verify_channel_auth_accepts_private_and_presence() -> None:
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar")
    signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar", auth)
    data = '{"user_id":"1","user_info":{}}'
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-foobar", data)
    signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-foobar", auth, data)


@pytest.mark.parametrize(
    ("socket_id", "channel", "channel_data"),
    [
        ("1234.1235", "private-foobar", None),
        (SOCKET_ID, "private-foobaz", None),
        (SOCKET_ID, "private-foobar", "{}"),
    ],
)
def test_verify_channel_auth_rejects_other_message(socket_id: str, channel: str, channel_data: str | None) -> None:
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar")
    with pytest.raises(InvalidSignature, match="invalid signature") as info:
        signing.verify_channel_auth(KEY, SECRET, socket_id, channel, auth, channel_data)
    _assert_no_secret(info.value)
    assert auth.partition(":")[2] not in str(info.value)


def test_verify_channel_auth_rejects_reencoded_channel_data() -> None:
    sent = '{"user_id":"1","user_info":{}}'
    auth = signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-x", sent)
    with pytest.raises(InvalidSignature):
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-x", auth, '{"user_id": "1", "user_info": {}}')


def test_verify_channel_auth_rejects_wrong_key_prefix() -> None:
    auth = signing.channel_auth("other-key", SECRET, SOCKET_ID, "private-foobar")
    with pytest.raises(UnknownKey, match="another application key") as info:
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar", auth)
    _assert_no_secret(info.value)


def test_verify_channel_auth_rejects_other_secret() -> None:
    auth = signing.channel_auth(KEY, "another-secret", SOCKET_ID, "private-foobar")
    with pytest.raises(InvalidSignature):
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar", auth)


@pytest.mark.parametrize("auth", [None, 42, "", "no-colon-here", ["k:s"]])
def test_verify_channel_auth_rejects_malformed_token(auth: object) -> None:
    with pytest.raises(InvalidSignature, match="'key:signature'") as info:
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar", auth)
    assert "private-foobar" in str(info.value)


def test_verify_channel_auth_rejects_empty_signature() -> None:
    with pytest.raises(InvalidSignature):
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar", f"{KEY}:")


def test_authorize_channel_rejects_bad_inputs() -> None:
    with pytest.raises(InvalidSocketId):
        signing.authorize_channel(KEY, SECRET, "1234", "private-foobar")
    with pytest.raises(InvalidChannelName, match="public"):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, "foobar")
    with pytest.raises(InvalidChannelName):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, "#server-to-user-1")
    with pytest.raises(ValueError, match="channel_data is required"):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, "presence-foobar")
    with pytest.raises(ValueError, match="channel_data is required"):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, "private-foobar", channel_data="{}")
    with pytest.raises(ValueError, match="master key is required"):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, "private-encrypted-foo")


def test_encrypted_shared_secret_requires_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        signing.encrypted_shared_secret("private-encrypted-foo", bytes(31))


def refused_signature(what: str, string_to_sign: str) -> str:
    return (
        f"{what}: invalid signature: the string to sign is {string_to_sign!r} (HMAC-SHA256 in hex, with the secret of "
        f"key {KEY!r})"
    )


def test_a_refused_signature_names_the_string_to_sign_as_hosted_pusher_does() -> None:
    """ "invalid signature" alone left a stale socket id, a wrong secret and channel_data encoded again after signing
    looking alike; hosted Pusher names what it expected signed. No secret is in it; a long channel_data is cut."""
    with pytest.raises(InvalidSignature) as stale:
        signing.verify_channel_auth(
            KEY, SECRET, "9.9", "private-x", signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-x")
        )
    assert str(stale.value) == refused_signature("subscription to 'private-x'", "9.9:private-x")
    _assert_no_secret(stale.value)
    channel_data = json.dumps({"user_id": "1", "user_info": {"bio": "b" * 2000}})
    with pytest.raises(InvalidSignature) as long:
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-x", f"{KEY}:" + "0" * 64, channel_data)
    shown = f"{SOCKET_ID}:presence-x:{channel_data}"[:300] + "…"
    assert str(long.value) == refused_signature("subscription to 'presence-x'", shown)


@pytest.mark.parametrize(
    ("auth", "channel_data", "error", "message"),
    [
        (
            f"{KEY}:" + "0" * 64,
            '{"user_id":"\ud800"}',
            InvalidSignature,
            refused_signature("subscription to 'presence-x'", f'{SOCKET_ID}:presence-x:{{"user_id":"\ud800"}}'),
        ),
        (
            f"{KEY}\ud800:" + "0" * 64,
            '{"user_id":"1"}',
            UnknownKey,
            "subscription to 'presence-x': the auth token was signed for another application key",
        ),
        (
            f"{KEY}:\udfff",
            '{"user_id":"1"}',
            InvalidSignature,
            refused_signature("subscription to 'presence-x'", f'{SOCKET_ID}:presence-x:{{"user_id":"1"}}'),
        ),
    ],
)
def test_verify_channel_auth_lone_surrogate_is_refused(
    auth: str, channel_data: str, error: type[AuthenticationError], message: str
) -> None:
    with pytest.raises(error) as info:
        signing.verify_channel_auth(KEY, SECRET, SOCKET_ID, "presence-x", auth, channel_data)
    assert type(info.value) is error
    assert str(info.value) == message


# -- user auth ------------------------------------------------------------------------------------------------


def test_verify_user_auth() -> None:
    user_data = '{"id":"12345"}'
    auth = signing.user_auth(KEY, SECRET, SOCKET_ID, user_data)
    signing.verify_user_auth(KEY, SECRET, SOCKET_ID, user_data, auth)
    with pytest.raises(InvalidSignature, match="signin: invalid signature") as info:
        signing.verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12346"}', auth)
    _assert_no_secret(info.value)
    with pytest.raises(InvalidSignature):
        signing.verify_user_auth(KEY, SECRET, "1.1", user_data, auth)
    with pytest.raises(UnknownKey, match="signin"):
        signing.verify_user_auth("other", SECRET, SOCKET_ID, user_data, auth)
    with pytest.raises(InvalidSignature):
        signing.verify_user_auth(KEY, SECRET, SOCKET_ID, user_data, None)


def test_channel_auth_cannot_forge_user_auth() -> None:
    # "socket:" + ":user::{}" is the user-auth message: only a channel name starting with ":" could collide, and
    # authorize_channel refuses to sign one (it is not a private or presence name, and ':' is not allowed).
    assert signing.channel_auth(KEY, SECRET, SOCKET_ID, ":user::{}") == signing.user_auth(KEY, SECRET, SOCKET_ID, "{}")
    with pytest.raises(InvalidChannelName):
        signing.authorize_channel(KEY, SECRET, SOCKET_ID, ":user::{}")


def test_verify_user_auth_lone_surrogate_is_invalid_signature() -> None:
    with pytest.raises(InvalidSignature) as info:
        signing.verify_user_auth(KEY, SECRET, SOCKET_ID, '{"id":"\ud800"}', f"{KEY}:" + "0" * 64)
    assert str(info.value) == refused_signature("signin", f'{SOCKET_ID}::user::{{"id":"\ud800"}}')


# -- webhooks -------------------------------------------------------------------------------------------------


def test_verify_webhook_signature() -> None:
    body = b'{"time_ms":1,"events":[]}'
    signature = signing.webhook_signature(SECRET, body)
    signing.verify_webhook_signature(KEY, SECRET, supplied_key=KEY, signature=signature, body=body)
    with pytest.raises(InvalidSignature, match="X-Pusher-Signature") as info:
        signing.verify_webhook_signature(KEY, SECRET, supplied_key=KEY, signature=signature, body=body + b" ")
    _assert_no_secret(info.value)
    with pytest.raises(InvalidSignature):
        signing.verify_webhook_signature(KEY, SECRET, supplied_key=KEY, signature=None, body=body)
    with pytest.raises(UnknownKey, match="X-Pusher-Key") as key_info:
        signing.verify_webhook_signature(KEY, SECRET, supplied_key="other", signature=signature, body=body)
    _assert_no_secret(key_info.value)
    with pytest.raises(UnknownKey):
        signing.verify_webhook_signature(KEY, SECRET, supplied_key=None, signature=signature, body=body)


def test_hmac_helpers_accept_str_and_bytes() -> None:
    assert signing.hmac_sha256_hex(SECRET, "abc") == signing.hmac_sha256_hex(SECRET, b"abc")
    assert signing.body_md5(b"") == "d41d8cd98f00b204e9800998ecf8427e"


@settings(max_examples=300, deadline=None)  # microseconds of work: a loaded machine must not fail it
@given(secret=st.text(max_size=100), message=st.binary(max_size=300))
def test_hmac_is_the_standard_hmac_sha256(secret: str, message: bytes) -> None:
    """The pre-keyed construction equals hmac.new for any secret, including those longer than SHA-256's block."""
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert signing.hmac_sha256_hex(secret, message) == expected


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 200])
def test_hmac_keys_at_the_block_size_boundary(length: int) -> None:
    secret = "k" * length
    expected = hmac.new(secret.encode(), b"POST\n/apps/1/events\nauth_key=x", hashlib.sha256).hexdigest()
    assert signing.hmac_sha256_hex(secret, "POST\n/apps/1/events\nauth_key=x") == expected

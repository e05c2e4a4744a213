"""Property tests: relay.protocol.signing agrees with the official ``pusher`` package (pusher-http-python 3.3.4).

pusher 3.3.4 has ``authenticate`` (no ``authorize_channel``), ``authenticate_user`` and ``validate_webhook``; REST
signing lives in ``pusher.http.Request._generate_auth`` (run by its constructor) over ``make_query_string`` and
``pusher.signature.sign``.
"""

from __future__ import annotations

import base64
import json
import string
import time
from typing import Any

import pusher  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pusher.http import GET, POST, Request, make_query_string  # type: ignore[import-untyped]
from pusher.pusher_client import PusherClient  # type: ignore[import-untyped]
from pusher.signature import sign  # type: ignore[import-untyped]

from relay.errors import InvalidSignature
from relay.protocol import members, signing
from relay.protocol.channels import validate_channel_name

PROPERTY = settings(max_examples=150, deadline=None)
CHANNEL_CHARS = string.ascii_letters + string.digits + "_-=@,.;"
MASTER_KEY = bytes(range(32))

digits = st.text(alphabet=string.digits, min_size=1, max_size=20)
socket_ids = st.builds(lambda node, counter: f"{node}.{counter}", digits, digits)
keys = st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=40)
secrets = st.text(min_size=1, max_size=60)
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
user_ids = st.text(alphabet=CHANNEL_CHARS, min_size=1, max_size=200)


def channel_names(prefix: str) -> st.SearchStrategy[str]:
    return st.text(alphabet=CHANNEL_CHARS, max_size=200 - len(prefix)).map(lambda rest: prefix + rest)


private_channels = channel_names("private-").filter(lambda name: not name.startswith("private-encrypted-"))
presence_channels = channel_names("presence-")
encrypted_channels = channel_names("private-encrypted-")


def _pusher(key: str, secret: str) -> Any:
    return pusher.Pusher(
        app_id="3",
        key=key,
        secret=secret,
        encryption_master_key_base64=base64.b64encode(MASTER_KEY).decode(),
    )


@PROPERTY
@given(key=keys, secret=secrets, socket_id=socket_ids, channel=private_channels)
def test_private_channel_auth_matches_pusher(key: str, secret: str, socket_id: str, channel: str) -> None:
    expected = _pusher(key, secret).authenticate(channel, socket_id)
    assert validate_channel_name(channel) == channel
    assert signing.authorize_channel(key, secret, socket_id, channel) == expected
    signing.verify_channel_auth(key, secret, socket_id, channel, expected["auth"])


@PROPERTY
@given(key=keys, secret=secrets, socket_id=socket_ids, channel=encrypted_channels)
def test_encrypted_channel_auth_matches_pusher(key: str, secret: str, socket_id: str, channel: str) -> None:
    expected = _pusher(key, secret).authenticate(channel, socket_id)
    ours = signing.authorize_channel(key, secret, socket_id, channel, encryption_master_key=MASTER_KEY)
    assert ours["auth"] == expected["auth"]
    assert ours["shared_secret"] == expected["shared_secret"].decode()
    assert set(ours) == {"auth", "shared_secret"} == set(expected)


@PROPERTY
@given(
    key=keys,
    secret=secrets,
    socket_id=socket_ids,
    channel=presence_channels,
    user_id=st.integers(-(10**12), 10**12) | st.text(min_size=1, max_size=40),
    user_info=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
def test_presence_channel_auth_matches_pusher(
    key: str, secret: str, socket_id: str, channel: str, user_id: int | str, user_info: dict[str, Any]
) -> None:
    custom_data = {"user_id": user_id, "user_info": user_info}
    expected = _pusher(key, secret).authenticate(channel, socket_id, custom_data)
    channel_data = expected["channel_data"]
    assert channel_data == json.dumps(custom_data)
    assert signing.authorize_channel(key, secret, socket_id, channel, channel_data=channel_data) == expected
    assert signing.channel_auth(key, secret, socket_id, channel, channel_data) == expected["auth"]
    signing.verify_channel_auth(key, secret, socket_id, channel, expected["auth"], channel_data)
    member = members.parse_channel_data(channel_data)
    assert member.user_id == str(user_id)
    assert json.loads(member.user_info_json) == user_info


@PROPERTY
@given(
    key=keys,
    secret=secrets,
    socket_id=socket_ids,
    user_id=user_ids,
    extra=st.dictionaries(st.sampled_from(["user_info", "watchlist", "name"]), json_values, max_size=2),
)
def test_user_auth_matches_pusher(key: str, secret: str, socket_id: str, user_id: str, extra: dict[str, Any]) -> None:
    user_data = {"id": user_id, **extra}
    expected = _pusher(key, secret).authenticate_user(socket_id, user_data)
    assert expected["user_data"] == json.dumps(user_data)
    assert signing.user_auth(key, secret, socket_id, expected["user_data"]) == expected["auth"]
    signing.verify_user_auth(key, secret, socket_id, expected["user_data"], expected["auth"])


# -- REST ------------------------------------------------------------------------------------------------------

param_names = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12).filter(
    lambda name: not name.startswith("auth_") and name != "body_md5"
)
query_params = st.dictionaries(param_names, st.text(max_size=30), max_size=5)
paths = st.sampled_from(["/apps/3/events", "/apps/3/channels", "/apps/3/batch_events", "/users/1/x"]) | st.text(
    min_size=1, max_size=40
).map(lambda rest: "/" + rest)


@PROPERTY
@given(method=st.sampled_from(["GET", "POST", "PUT"]), path=paths, params=query_params)
def test_rest_string_to_sign_matches_pusher(method: str, path: str, params: dict[str, str]) -> None:
    assert signing.rest_string_to_sign(method, path, params) == "\n".join([method, path, make_query_string(params)])


@PROPERTY
@given(key=keys, secret=secrets, path=paths, params=query_params)
def test_rest_get_signing_matches_pusher(key: str, secret: str, path: str, params: dict[str, str]) -> None:
    request = Request(PusherClient("3", key, secret), GET, path, dict(params))
    signed = request.query_params
    timestamp = int(signed["auth_timestamp"])
    ours = signing.sign_rest_request(
        key, secret, "GET", path, timestamp=timestamp, params=params, include_empty_body_md5=True
    )
    assert ours == signed
    signing.verify_rest_request(
        key=key, secret=secret, method="GET", path=path, params=signed, body=request.body, now=time.time()
    )


@PROPERTY
@given(
    key=keys,
    secret=secrets,
    path=paths,
    payload=st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=5),
)
def test_rest_post_signing_matches_pusher(key: str, secret: str, path: str, payload: dict[str, Any]) -> None:
    request = Request(PusherClient("3", key, secret), POST, path, payload)
    signed = request.query_params
    ours = signing.sign_rest_request(
        key, secret, "POST", path, timestamp=int(signed["auth_timestamp"]), body=request.body
    )
    assert ours == signed
    signing.verify_rest_request(
        key=key, secret=secret, method="POST", path=path, params=signed, body=request.body, now=time.time()
    )


# -- Webhooks --------------------------------------------------------------------------------------------------

webhook_events = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["channel_occupied", "channel_vacated", "member_added", "client_event"])},
        optional={"channel": st.text(max_size=30), "user_id": st.text(max_size=10), "data": st.text(max_size=30)},
    ),
    max_size=5,
)


@PROPERTY
@given(key=keys, secret=secrets, events=webhook_events, skew_ms=st.integers(-250_000, 250_000))
def test_pusher_validate_webhook_accepts_relay_signature(
    key: str, secret: str, events: list[dict[str, str]], skew_ms: int
) -> None:
    body = json.dumps({"time_ms": int(time.time() * 1000) + skew_ms, "events": events}, ensure_ascii=False).encode()
    signature = signing.webhook_signature(secret, body)
    client = _pusher(key, secret)
    assert client.validate_webhook(key, signature, body) == json.loads(body)
    # Both sides agree on what a signature is, in both directions.
    assert sign(secret, body.decode()) == signature
    signing.verify_webhook_signature(key, secret, supplied_key=key, signature=signature, body=body)
    # A body changed after signing is refused by both.
    tampered = body + b" "
    assert client.validate_webhook(key, signature, tampered) is None
    with pytest.raises(InvalidSignature):
        signing.verify_webhook_signature(key, secret, supplied_key=key, signature=signature, body=tampered)

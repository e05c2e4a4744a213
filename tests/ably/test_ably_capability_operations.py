"""A capability operation that is not one of Ably's ("publsh") was granted silently: a token request or JWT with one
got a token, and an app's ``ably_capability`` with one started, each failing later with a 40160 on the operation
meant. A token request with one is now 40000 "Invalid capability" naming it (with the closest operation), as Ably
refuses it, and the emulator goes on serving; the config is refused at start
(tests/emulator/test_config_refusals.py, tests/operations/test_config_paths.py)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from ably import AblyException, AblyRest  # type: ignore[import-untyped]
from ablysupport import API_KEY, KEY_NAME, KEY_SECRET, jwt_token

from relay.errors import AuthenticationError
from relay.protocol.ably import build_token_request, parse_capability
from tests.conftest import RunningEmulator

BASIC = {"Authorization": "Basic " + base64.b64encode(API_KEY.encode()).decode()}
TYPO = '{"*":["subscribe","publsh"]}'
# Ably's operations (ably.com/docs/auth/capabilities; reference §A.12): each is granted as it is.
ABLY_OPERATIONS = [
    "subscribe", "publish", "presence", "history", "channel-metadata", "stats", "push-subscribe", "push-admin",
    "privileged-headers", "object-subscribe", "object-publish", "annotation-subscribe", "annotation-publish",
    "message-update-own", "message-update-any", "message-delete-own", "message-delete-any", "*",
]  # fmt: skip


def test_every_operation_of_ably_s_is_known_and_a_typo_is_named_with_the_closest() -> None:
    everything = {"*": ABLY_OPERATIONS, "[meta]*": ["subscribe"]}
    assert parse_capability(json.dumps(everything)) == everything
    with pytest.raises(
        AuthenticationError, match=r"resource '\*' has the unknown operation 'publsh' \(did you mean 'publish'\?\)"
    ):
        parse_capability(TYPO)
    with pytest.raises(
        AuthenticationError, match=r"unknown operation 'zzzz'; the operations are \*, annotation-publish"
    ):
        parse_capability('{"orders:*":["zzzz"]}')


async def test_a_token_request_with_an_unknown_operation_is_40000_and_others_are_served(
    ably_emulator: RunningEmulator,
) -> None:
    message = (
        "Invalid capability: resource '*' has the unknown operation 'publsh' (did you mean 'publish'?); the "
        "operations are "
    )
    signed = build_token_request(
        KEY_NAME,
        KEY_SECRET,
        capability={"*": ["subscribe", "publsh"]},
        timestamp=int(time.time() * 1000),
        nonce=f"n-{time.time_ns()}",
    )
    async with httpx.AsyncClient(base_url=ably_emulator.http_url) as http:
        for body, headers in (({"keyName": KEY_NAME, "capability": TYPO}, BASIC), (signed, {})):
            refused = await http.post(f"/keys/{KEY_NAME}/requestToken", json=body, headers=headers)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert (error["code"], error["statusCode"]) == (40000, 400)
            assert error["message"].startswith(message), error["message"]
        # A JWT's x-ably-capability is read the same way, when it is used.
        jwt = jwt_token({"*": ["subscribe", "publsh"]})
        used = await http.get("/channels/orders/messages", headers={"Authorization": f"Bearer {jwt}"})
        assert used.status_code == 400 and used.json()["error"]["code"] == 40000, used.text
        issued = await http.post(
            f"/keys/{KEY_NAME}/requestToken",
            json={"keyName": KEY_NAME, "capability": '{"*":["subscribe","publish"]}'},
            headers=BASIC,
        )
        assert issued.status_code == 200 and issued.json()["capability"] == '{"*":["publish","subscribe"]}'
    # ably-python, as a backend asks for a token for a browser: the SDK raises Ably's error.
    rest = AblyRest(key=API_KEY, endpoint="127.0.0.1", port=ably_emulator.port, tls=False)
    try:
        with pytest.raises(AblyException) as caught:
            await rest.auth.request_token({"capability": {"*": ["subscribe", "publsh"]}})
        assert caught.value.code == 40000 and "'publsh'" in caught.value.message
        token = await rest.auth.request_token({"capability": {"*": ["subscribe"]}})
        assert token.token
    finally:
        await rest.close()

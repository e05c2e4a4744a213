"""The published Pusher test vectors (reference §3, §4, §5), computed with relay.protocol.signing."""

from __future__ import annotations

import json

from relay.protocol import signing

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
SOCKET_ID = "1234.1234"
REST_TIMESTAMP = 1353088179
REST_BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'


def test_private_channel_vector() -> None:
    expected = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    assert signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-foobar") == f"{KEY}:{expected}"
    assert signing.authorize_channel(KEY, SECRET, SOCKET_ID, "private-foobar") == {"auth": f"{KEY}:{expected}"}


def test_presence_channel_vector() -> None:
    channel_data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    expected = "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    assert signing.channel_auth(KEY, SECRET, SOCKET_ID, "presence-foobar", channel_data) == f"{KEY}:{expected}"
    body = signing.authorize_channel(KEY, SECRET, SOCKET_ID, "presence-foobar", channel_data=channel_data)
    assert body == {"auth": f"{KEY}:{expected}", "channel_data": channel_data}


def test_user_auth_vector() -> None:
    expected = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    assert signing.user_auth(KEY, SECRET, SOCKET_ID, '{"id":"12345"}') == f"{KEY}:{expected}"


def test_rest_post_vector() -> None:
    assert REST_BODY.decode() == json.dumps(
        {"name": "foo", "channels": ["project-3"], "data": '{"some":"data"}'}, separators=(",", ":")
    )
    assert signing.body_md5(REST_BODY) == "ec365a775a4cd0599faeb73354201b6f"
    params = signing.sign_rest_request(KEY, SECRET, "POST", "/apps/3/events", timestamp=REST_TIMESTAMP, body=REST_BODY)
    assert params == {
        "auth_key": KEY,
        "auth_timestamp": str(REST_TIMESTAMP),
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
        "auth_signature": "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
    }


def test_rest_string_to_sign_shape() -> None:
    params = {"auth_key": KEY, "Name": "Something else", "auth_signature": "ignored", "auth_timestamp": "1"}
    assert signing.rest_string_to_sign("post", "/apps/3/events", params) == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1&name=Something else"
    )


def test_rest_get_vector_with_empty_body_md5() -> None:
    query = {"filter_by_prefix": "presence-", "info": "user_count"}
    params = signing.sign_rest_request(
        KEY,
        SECRET,
        "GET",
        "/apps/3/channels",
        timestamp=REST_TIMESTAMP,
        params=query,
        include_empty_body_md5=True,
    )
    assert params["body_md5"] == signing.EMPTY_BODY_MD5 == "d41d8cd98f00b204e9800998ecf8427e"
    assert params["auth_signature"] == "f3f17c61ae491cc9085db68b22076e9b772e3bcb301659d655153ee3f9782aba"


def test_rest_get_vector_without_body_md5() -> None:
    query = {"filter_by_prefix": "presence-", "info": "user_count"}
    params = signing.sign_rest_request(KEY, SECRET, "GET", "/apps/3/channels", timestamp=REST_TIMESTAMP, params=query)
    assert "body_md5" not in params
    signature = params["auth_signature"]
    assert signature.startswith("16819168")
    assert signature.endswith("0291")
    assert len(signature) == 64


def test_webhook_vector() -> None:
    body = b'{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}'
    expected = "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"
    assert signing.webhook_signature(SECRET, body) == expected
    signing.verify_webhook_signature(KEY, SECRET, supplied_key=KEY, signature=expected, body=body)


def test_encrypted_shared_secret_vector() -> None:
    expected = "Vj09QBnxvq5Edw6uFvYE4Yi4ZdcpUYC8mx/fcgpzQro="
    assert signing.encrypted_shared_secret("private-encrypted-foo", bytes(32)) == expected
    body = signing.authorize_channel(KEY, SECRET, SOCKET_ID, "private-encrypted-foo", encryption_master_key=bytes(32))
    assert body["shared_secret"] == expected
    # The shared secret is not part of the signature: it is the plain private-channel signature.
    assert body["auth"] == signing.channel_auth(KEY, SECRET, SOCKET_ID, "private-encrypted-foo")

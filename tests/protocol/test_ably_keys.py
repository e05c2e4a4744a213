"""Ably API keys, ``APPID.KEYID:SECRET`` (https://ably.com/docs/auth, "API key format"): the one split every caller
uses (the library's ably:// URL and ABLY_API_KEY, the emulator's ably_key and the credentials clients send)."""

from __future__ import annotations

import pytest
from ably.types.authoptions import AuthOptions  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import ConfigError
from relay.protocol.ably import split_api_key

# The characters of the dashboard's keys, as in Ably's example (test_ablys_example_key)
PART = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=50)


def test_ablys_example_key() -> None:
    key_name, secret = split_api_key("I2E_JQ.OqUdfg:EVKVTCBlzLBPYJiCZTsIW_pqylJ9WVRB5K9P19Ap1y0")
    assert (key_name, secret) == ("I2E_JQ.OqUdfg", "EVKVTCBlzLBPYJiCZTsIW_pqylJ9WVRB5K9P19Ap1y0")


@settings(max_examples=150, deadline=None)
@given(app_id=PART, key_id=PART, secret=PART)
def test_splits_as_ably_python_does(app_id: str, key_id: str, secret: str) -> None:
    """ably-python's AuthOptions takes the key name and secret apart the same way."""
    api_key = f"{app_id}.{key_id}:{secret}"
    official = AuthOptions(key=api_key)
    assert split_api_key(api_key) == (official.key_name, official.key_secret) == (f"{app_id}.{key_id}", secret)


def test_the_secret_is_everything_after_the_first_colon() -> None:
    """As every copy of this split did before it was one; ably-js and ably-python refuse such a key outright."""
    assert split_api_key("app.key1:s3cr:et") == ("app.key1", "s3cr:et")
    assert split_api_key("app.key.1:s") == ("app.key.1", "s")


@pytest.mark.parametrize(
    "api_key",
    [
        "",
        "app.key1",  # no secret
        "app.key1:",  # an empty secret
        "appkey1:hunter2",  # no key id
        ".key1:hunter2",  # an empty app id
        "app.:hunter2",  # an empty key id
        ":hunter2",
    ],
)
def test_not_an_api_key(api_key: str) -> None:
    with pytest.raises(ConfigError, match=r"^an Ably API key looks like 'APPID\.KEYID:SECRET'") as info:
        split_api_key(api_key)
    assert "hunter2" not in str(info.value)

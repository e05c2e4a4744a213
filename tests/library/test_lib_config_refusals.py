"""Malformed provider URLs and environment variables are ConfigErrors naming what is wrong (never the secret)."""

from __future__ import annotations

import pytest

from relay.client import Relay, parse_configuration
from relay.config import from_env
from relay.errors import ConfigError

# -- provider URLs and the environment ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("emulator://k:s@[::1/apps/1", "[::1"),  # ValueError: Invalid IPv6 URL
        ("ably://appid.keyid:s@[::1", "[::1"),
        ("memory://[::1", "[::1"),
        ("emulator://k:s@127.0.0.1:0/apps/1", "port"),  # nothing can be reached on port 0
        ("emulator://k:s@127.0.0.1:6001/apps/%E9", "%E9"),  # app id became '\ufffd'
        ("emulator://k%E9:s@127.0.0.1:6001/apps/1", "%E9"),
        ("emulator://k:s@ho st:6001/apps/1", "ho st"),
        # An '@' in the secret before a bare '/': urlsplit read the host as "ss", and requests went there
        ("emulator://k:p@ss/w:rd@127.0.0.1:6001/apps/1", "URL's credentials end at a '/': a secret containing / is"),
        ("ably://.keyid:s@rest.ably.io", "APPID.KEYID"),  # empty app id
        ("ably://appid.:s@rest.ably.io", "APPID.KEYID"),  # empty key id
        ("mirror:emulator://k:s@127.0.0.1:6001/apps/1|emulator://k:s@127.0.0.1:6001/apps/1", "127.0.0.1:6001"),
        # urlsplit drops what follows an IPv6 address's ']': the URL read as [::1] on port 80
        ("pusher://k:s@[::1]x:80/apps/1", "URL's host '[::1]x:80' is not a host name or an IP address"),
        ("emulator://k:s@[::1]emulator:/:80/apps/%401", "URL's host '[::1]emulator:' is not a host name"),
        # an xn-- label that is no name's punycode: httpx's IDNA decoding raised idna's error at the first request
        (
            "pusher://k:s@xn--abc.example.com/apps/1",
            "pusher:// URL's host 'xn--abc.example.com' is not a host name: an xn-- label in it is not the punycode",
        ),
        ("ably://appid.keyid:s@xn--a-ecp.ru", "ably:// URL's host 'xn--a-ecp.ru' is not a host name: an xn-- label"),
        # a byte os.environ could not decode, kept as a lone surrogate: it failed at the first request
        ("pusher://k:s\udcff@eu/apps/1", "the provider URL is not UTF-8 text: its character 13 is a byte"),
    ],
)
def test_malformed_provider_urls_are_config_errors(url: str, fragment: str) -> None:
    """A mirror naming one provider twice would publish every event twice to the same subscribers."""
    with pytest.raises(ConfigError) as caught:
        parse_configuration(url)
    assert fragment in caught.value.message, caught.value.message


PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({**PUSHER, "PUSHER_PORT": "99999"}, "PUSHER_PORT"),  # the URL form refuses it; the variable did not
        ({**PUSHER, "PUSHER_PORT": "0"}, "PUSHER_PORT"),
        ({**PUSHER, "PUSHER_PORT": "²"}, "PUSHER_PORT"),  # str.isdigit() is true, int() raised ValueError
        ({**PUSHER, "PUSHER_HOST": "https://soketi.example"}, "PUSHER_HOST"),  # base_url https://[https://…]
        ({**PUSHER, "PUSHER_HOST": "soketi.example:6001"}, "PUSHER_HOST"),  # taken for IPv6: https://[…:6001]
        ({"ABLY_API_KEY": ".keyid:secret"}, "APPID.KEYID"),
        ({**PUSHER, "PUSHER_SECRET": "s\udcff"}, "PUSHER_SECRET is not UTF-8 text: its character 2 is a byte"),
        ({"ABLY_API_KEY": "a.b:s\udcff"}, "ABLY_API_KEY is not UTF-8 text: its character 6 is a byte"),
        ({**PUSHER, "PUSHER_CLUSTER": "\udcffeu"}, "PUSHER_CLUSTER is not UTF-8 text: its character 1 is a byte"),
    ],
)
def test_malformed_environment_is_a_config_error(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_env(env)
    assert fragment in caught.value.message, caught.value.message


# -- client events: an Ably URL option, a setting of the app elsewhere -----------------------------------------------

ABLY = "ably://appid.keyid:s@rest.ably.io"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # A misspelt option was kept in an options mapping nothing read: client events silently stayed off.
        (
            f"{ABLY}?client_event=true",
            "ably:// URL has unknown option(s) client_event; the options are tls, client_events, history, occupancy",
        ),
        (
            f"{ABLY}?timeout=3&tls=true",
            "ably:// URL has unknown option(s) timeout; the options are tls, client_events, history, occupancy",
        ),
        (f"{ABLY}?client_events=maybe", "client_events must be true or false, got 'maybe'"),
        (
            f"{ABLY}?encryption_master_key={'A' * 43}=",
            "ably:// URL cannot take encryption_master_key: Ably has no end-to-end encrypted channels here",
        ),
        (
            "pusher://k:s@eu/apps/1?client_events=true",
            "pusher:// URL cannot set client_events: whether clients may send client-* events is the Pusher app's "
            "setting (dashboard → App Settings → Enable client events)",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1?client_events=false",
            "emulator:// URL cannot set client_events: whether clients may send client-* events is the emulator app's "
            "setting: client_events = true|false in its [[apps]] entry of the config file",
        ),
        (
            f"mirror:pusher://k:s@eu/apps/1|{ABLY}?client_events=yes&tls=yes&timeout=3",
            "ably:// URL has unknown option(s) timeout",
        ),
        (f"{ABLY}?history=sometimes", "history must be true or false, got 'sometimes'"),
        (
            "pusher://k:s@eu/apps/1?history=true",
            "pusher:// URL cannot set history: Pusher channels keep no history (the option is for ably:// URLs)",
        ),
        (
            "pusher://k:s@eu/apps/1?occupancy=true",
            "pusher:// URL cannot set occupancy: Pusher's subscription counts are the app's subscription_count setting",
        ),
        (
            "emulator://k:s@127.0.0.1:6001/apps/1?history=true",
            "emulator:// URL cannot set history: Pusher channels keep no history (the option is for ably:// URLs)",
        ),
        # Blank options were dropped: ?client_events alone (meant as on) left client events off, with no word, and
        # an unknown name with no value went unnoticed
        (f"{ABLY}?client_events", "ably:// URL has the option client_events without a value: write client_events="),
        ("pusher://k:s@eu/apps/1?bogus", "pusher:// URL has the option bogus without a value: write bogus=VALUE"),
        ("pusher://k:s@eu/apps/1?bogus=", "pusher:// URL has unknown option(s) bogus; the options are tls, "),
        # Given twice, the last silently won
        ("pusher://k:s@eu/apps/1?tls=false&tls=true", "pusher:// URL gives the option tls twice: give it once"),
        # A fragment no provider reads: dropped, it may have been a secret's unencoded '#'
        ("pusher://k:s@host.example/apps/1#x", "pusher:// URL has a fragment (#…), which no provider reads: drop it"),
        (f"{ABLY}#", "ably:// URL has a fragment (#…)"),
        # memory:// dropped every option but the key: a test's misspelt option changed nothing, silently.
        (
            "memory://tests?encryption_masterkey=x&tls=false",
            "memory:// URL has unknown option(s) encryption_masterkey, tls; the options are encryption_master_key",
        ),
    ],
)
def test_client_events_and_unknown_options_are_refused_where_they_do_not_belong(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_configuration(url)
    assert message in caught.value.message, caught.value.message


def test_a_variable_from_env_does_not_read_is_not_checked() -> None:
    """Only the variables that configure a provider: a LANG holding a byte that is not UTF-8 is none of its business."""
    assert from_env({"LANG": "\udcff", "ABLY_API_KEY": "a.b:s"}).key == "a.b"


def test_a_pusher_host_in_no_name_s_punycode_is_refused_when_the_client_is_made() -> None:
    with pytest.raises(ConfigError) as caught:
        Relay.from_env({**PUSHER, "PUSHER_HOST": "xn--abc.example.com"})
    assert caught.value.message == (
        "pusher:// URL's host 'xn--abc.example.com' is not a host name: an xn-- label in it is not the punycode of a "
        "name"
    )


def test_a_host_in_punycode_is_a_host() -> None:
    """The check that refuses an xn-- label that is no name's punycode keeps one that is (mañana.com)."""
    config = parse_configuration("emulator://k:s@xn--maana-pta.com:6001/apps/1")
    assert "xn--maana-pta.com:6001" in repr(config)

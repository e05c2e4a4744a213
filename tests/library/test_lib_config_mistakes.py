"""Configuration mistakes a bad-input hunt found named wrongly or let through to the first request (2026-12-05)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.client import AsyncRelay, Mode, Providers, Relay, parse_configuration
from relay.config import from_env
from relay.cost import Workload, default_prices, estimate
from relay.errors import ConfigError
from relay.senders import AsyncSender, RetryPolicy, SyncSender
from tests.cost.cost_helpers import run_cost

IPV4_HINT = "(an IPv4 address is four numbers from 0 to 255, without leading zeros)"
PUSHER = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "k", "PUSHER_SECRET": "s"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # httpx refused these hosts only at the first publish, with its own InvalidURL (no RelayError); in a mirror,
        # after the providers before had delivered
        (
            "pusher://k:s@999.1.1.1/apps/1",
            f"pusher:// URL's host '999.1.1.1' is not a host name or an IP address {IPV4_HINT}",
        ),
        (
            "emulator://k:s@127.0.0.01:6001/apps/1",
            f"emulator:// URL's host '127.0.0.01' is not a host name or an IP address {IPV4_HINT}",
        ),
        ("mirror:memory://a|pusher://k:s@256.0.0.1/apps/1", "pusher:// URL's host '256.0.0.1' is not a host name"),
        # Several URLs without mirror: or failover: were told "memory:// URL has a port (':' after the name)"
        (
            "memory://a|memory://b",
            "several provider URLs joined by '|' need mirror: (every publish to each) or failover: (each operation "
            "to the first that works) before them: mirror:URL|URL",
        ),
        ("mirror:mirror:memory://a|memory://b", "mirror: URL 1 is another mirror: list; they do not nest"),
        ("failover:memory://a|MIRROR:memory://b", "failover: URL 2 is another mirror: list; they do not nest"),
        # A '|' in a secret cut the URL: the part before it was refused as "needs credentials"
        (
            "mirror:pusher://k:s|zq9@eu/apps/1|memory://b",
            "mirror: URL 2 is not a provider URL (scheme://…): a '|' separates the providers, so one inside a key or "
            "secret is written %7C",
        ),
        # A bare cluster was not checked as PUSHER_CLUSTER is: api--bad-.pusher.com failed at the first publish
        (
            "pusher://k:s@-bad-/apps/1",
            "pusher:// URL's host '-bad-' is taken for a cluster's short name, such as eu, mt1, us2 or ap3 (a name "
            "without a dot), and is not one",
        ),
        ("pusher://k:s@_/apps/1", "pusher:// URL's host '_' is taken for a cluster's short name"),
        # Both read as if the URL had said something else: the host v1.x, no port
        (
            "pusher://k:s@[v1.x]:6001/apps/1",
            "pusher:// URL's host [v1.x] is in brackets, which hold an IPv6 address only",
        ),
        (
            "pusher://k:s@eu:/apps/1",
            "pusher:// URL has a ':' after its host and no port: give the port, or drop the ':'",
        ),
        (
            "pusher://k:s@::1/apps/1",
            "pusher:// URL's host looks like an IPv6 address: write it in brackets, [::1]:6001",
        ),
        ("pusher://k:s@eu/apps/1?=x", "pusher:// URL has unknown option(s) '' (an empty name); the options are tls"),
        # Trying one provider twice is not failing over to another
        ("failover:memory://a|memory://a", "failover: names memory://a twice; each provider goes in once"),
    ],
)
def test_a_configuration_mistake_is_named_when_the_client_is_made(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Relay.from_url(url)
    assert caught.value.message.startswith(message), caught.value.message
    assert "zq9" not in caught.value.message


@pytest.mark.parametrize(
    "url",
    [
        "emulator://k:s@127.0.0.1:6001/apps/1",
        "pusher://k:s@10.0.0.255/apps/1",
        "pusher://k:s@1.2.3.4.nip.io/apps/1",  # four numbers and a name: a host name
        "pusher://k:s@[::1]:6001/apps/1",
        "mirror:memory://a|pusher://k:s%7Czq9@eu/apps/1",
    ],
)
def test_the_hosts_and_lists_next_to_those_mistakes_are_taken(url: str) -> None:
    Relay.from_url(url).close()


def test_mirror_and_failover_are_read_in_any_case_as_the_schemes_are() -> None:
    assert parse_configuration("MIRROR:memory://a|memory://b")[0] is Mode.MIRROR
    assert parse_configuration("Failover:memory://a|memory://b")[0] is Mode.FAILOVER
    with Relay.from_env({"RELAY_URL": "MIRROR:memory://a|memory://b"}) as client:
        assert repr(client) == "Relay('mirror:memory://a|memory://b')"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        # from_env("pusher://…") for from_url: AttributeError 'str' object has no attribute 'get'
        (
            "memory://a",
            "the environment is a mapping of variable names to values, not str: for a provider URL, use from_url",
        ),
        ({"RELAY_URL": 5}, "RELAY_URL is int, not str: an environment holds text"),
        (
            {**PUSHER, "PUSHER_HOST": "192.168.1.300"},
            f"PUSHER_HOST must be a host name or an IP address, got '192.168.1.300' {IPV4_HINT}",
        ),
        ({"RELAY_URL": "memory://a|memory://b"}, "RELAY_URL: several provider URLs joined by '|' need mirror:"),
        # which variable is wrong: a service is started with many
        ({"RELAY_URL": "bogus"}, "RELAY_URL: a provider URL looks like scheme://…, with scheme one of pusher, "),
        ({"RELAY_URL": "mirror:memory://a|bogus"}, "RELAY_URL: mirror: URL 2 is not a provider URL (scheme://…)"),
        ({"PUSHER_URL": "bogus"}, "PUSHER_URL looks like https://KEY:SECRET@api-CLUSTER.pusher.com/apps/APP_ID"),
        # Laravel's .env exported as it is: "set PUSHER_KEY, PUSHER_SECRET too" did not say why they were not found
        (
            {"PUSHER_APP_ID": "1", "PUSHER_APP_KEY": "k", "PUSHER_APP_SECRET": "s", "PUSHER_APP_CLUSTER": "eu"},
            "set PUSHER_KEY, PUSHER_SECRET too (Relay reads PUSHER_KEY and PUSHER_SECRET, which Laravel's .env names "
            "PUSHER_APP_KEY and PUSHER_APP_SECRET: set the values under Relay's names too)",
        ),
        ({"PUSHER_APP_ID": "1"}, "set PUSHER_KEY, PUSHER_SECRET too (or RELAY_URL instead of the PUSHER_* variables)"),
    ],
)
def test_an_environment_mistake_is_a_config_error(environ: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Relay.from_env(environ)  # type: ignore[arg-type]
    assert caught.value.message == message or caught.value.message.startswith(message), caught.value.message
    if isinstance(environ, dict) and "RELAY_URL" not in environ:
        with pytest.raises(ConfigError):
            from_env(environ)


# -- relay cost ---------------------------------------------------------------------------------------------------

BUSY = Workload(connections=10, publishes_per_day=10_000, subscribers_per_publish=5)


def test_a_busiest_day_above_the_whole_month_is_refused() -> None:
    """--peak-day-factor 100 made the busiest day 6,000,000 messages of a 1,800,000-message month, and chose the plan
    by it."""
    with pytest.raises(ConfigError) as caught:
        run_cost(["--connections", "10", "--publishes-per-day", "10000", "--subscribers-per-publish", "5",
                  "--peak-day-factor", "100"])  # fmt: skip
    assert caught.value.message == (
        "workload field peak_day_factor (--peak-day-factor) must be at most days_per_month (30): the busiest day "
        "holds at most the whole month, got 100"
    )
    assert replace(BUSY, peak_day_factor=30).peak_day_factor == 30
    # A measured workload's busiest day is against the average of the days it measured, which may be more
    assert replace(BUSY, peak_day_factor=45, origin="measured: usage.json").peak_day_factor == 45


def test_echo_is_a_bool() -> None:
    """ "no" is truthy: Ably's echo was counted as on."""
    with pytest.raises(ConfigError) as caught:
        replace(BUSY, echo="no")  # type: ignore[arg-type]
    assert caught.value.message == "workload field echo (--no-echo) must be True or False, got 'no'"


def test_an_estimate_asked_for_a_provider_it_has_not_names_those_it_has() -> None:
    result = estimate(BUSY, default_prices())
    with pytest.raises(KeyError) as caught:
        result.provider("nosuch")
    message = caught.value.args[0]
    assert message.startswith("no estimate for provider 'nosuch'; this estimate has: ")
    assert "pusher" in message.split(": ", 1)[1].split(", ")


@pytest.mark.parametrize(
    ("providers", "message"),
    [
        # Accepted as Relay('mirror:'), then StopIteration at the first publish
        (Providers(Mode.MIRROR, ()), "Providers(mirror) takes two or more providers, got 0"),
        (
            Providers(Mode.FAILOVER, (parse_configuration("memory://a")[1][0],)),
            "Providers(failover) takes two or more providers, got 1",
        ),
        (Providers(Mode.SINGLE, ()), "Providers(single) takes one provider, got 0"),
        # As the URL's list is: a mirror of one provider twice stored each publish twice
        (
            Providers(Mode.MIRROR, (parse_configuration("memory://a")[1][0],) * 2),
            "mirror: names memory://a twice; each provider goes in once",
        ),
    ],
)
def test_a_parsed_configuration_has_its_providers(providers: Providers, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Relay(providers)
    assert caught.value.message == message


@pytest.mark.parametrize("kind", [Relay, AsyncRelay])
def test_a_retry_policy_beside_a_sender_of_ones_own_is_refused(kind: type[Relay] | type[AsyncRelay]) -> None:
    """The sender given retries by its own policy: ``retry=`` beside it was ignored without a word (7 attempts asked,
    the default 3 made). The default policy, which asks for nothing, may still be written beside it."""
    sender = SyncSender() if kind is Relay else AsyncSender()
    with pytest.raises(ConfigError) as caught:
        kind("memory://a", retry=RetryPolicy(attempts=7), sender=sender)  # type: ignore[arg-type]
    name = type(sender).__name__
    assert caught.value.message == (
        "retry= and sender= together: a sender given retries by its own policy, so give the policy to it, "
        f"{name}(RetryPolicy(...))"
    )
    kind("memory://a", retry=RetryPolicy(), sender=sender)  # type: ignore[arg-type]


EMULATOR_URL = "emulator://app-key:s3cret-value@127.0.0.1:6001/apps/1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # docker's --env-file keeps a .env file's quotes: "unknown provider scheme ''"
        (
            f'"{EMULATOR_URL}"',
            'RELAY_URL: the URL is written in quotes ("…"), which are part of the value here (docker'
            "'s --env-file and some .env readers keep them): remove them",
        ),
        (f"'{EMULATOR_URL}'", "RELAY_URL: the URL is written in quotes ('…')"),
        # the whole assignment, or the emulator banner's line, pasted as the value: "unknown provider scheme ''"
        (
            f"RELAY_URL={EMULATOR_URL}",
            "RELAY_URL: the value begins with 'RELAY_URL' before the URL: give the URL alone, emulator://…",
        ),
        (f"RELAY_URL:   {EMULATOR_URL}", "RELAY_URL: the value begins with 'RELAY_URL' before the URL"),
        # the address the emulator's banner prints first, and where browsers connect
        (
            "http://127.0.0.1:6001",
            "RELAY_URL: unknown provider scheme 'http'; use one of pusher, emulator, ably, memory: the emulator (or "
            "soketi, Reverb) at http://HOST:PORT is emulator://KEY:SECRET@HOST:PORT/apps/APP_ID, and "
            "http://KEY:SECRET@HOST/apps/APP_ID is PUSHER_URL's form",
        ),
        ("wss://relay.example.com", "wss:// is where browsers connect; publishing goes to the server's HTTP API, "),
        (
            "emulatr://app-key:s3cret-value@127.0.0.1:6001/apps/1",
            "RELAY_URL: unknown provider scheme 'emulatr'; use one of pusher, emulator, ably, memory (did you mean "
            "emulator?)",
        ),
    ],
)
def test_a_relay_url_that_is_not_one_says_what_to_write(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_env({"RELAY_URL": value})
    assert message in caught.value.message, caught.value.message
    assert caught.value.message.startswith("RELAY_URL: ")
    assert "s3cret-value" not in caught.value.message


def test_a_provider_url_s_scheme_is_still_read_in_any_case() -> None:
    assert from_env({"RELAY_URL": EMULATOR_URL.replace("emulator", "Emulator", 1)}).scheme == "emulator"


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"PUSHER_URL": '"http://app-key:s3cret-value@127.0.0.1:6001/apps/1"'}, "PUSHER_URL"),
        ({"ABLY_API_KEY": "'1.app-key:s3cret-value'"}, "ABLY_API_KEY"),
        ({**PUSHER, "PUSHER_KEY": '"app-key"'}, "PUSHER_KEY"),
        ({**PUSHER, "PUSHER_SECRET": '"s3cret-value"'}, "PUSHER_SECRET"),
        ({**PUSHER, "PUSHER_CLUSTER": '"eu"'}, "PUSHER_CLUSTER"),
    ],
)
def test_a_provider_variable_in_quotes_is_refused_naming_it(environ: dict[str, str], name: str) -> None:
    """docker's --env-file keeps a .env file's quotes: PUSHER_KEY="app-key" was the key '"app-key"', refused at the
    first publish as a 401 "auth_key is not this application's key" (a quoted secret: a wrong signature)."""
    with pytest.raises(ConfigError) as caught:
        from_env(environ)
    assert caught.value.message.startswith(f"{name} is written in quotes ("), caught.value.message
    assert caught.value.message.endswith("(docker's --env-file and some .env readers keep them): remove them")
    assert "s3cret-value" not in caught.value.message

"""RELAY_PROVIDER_TIMEOUT, RELAY_PROVIDER_ATTEMPTS and RELAY_PROVIDER_DEADLINE: how long `relay serve` waits for
its provider. With the library's defaults a provider that never answers held a publish for three attempts of 10 s,
past what a serverless route handler calling the gateway may run."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from relay.errors import ConfigError
from relay.gateway import GatewaySettings, create_app
from relay.senders import DEFAULT_RETRY, RetryPolicy
from tests.gateway.conftest import TOKEN, relay_serve, serve_asgi
from tests.library.libsupport import SilentServer


def test_the_provider_settings_are_read_from_the_environment() -> None:
    env = {"RELAY_URL": "memory://retry", "RELAY_PROVIDER_TIMEOUT": "2.5", "RELAY_PROVIDER_ATTEMPTS": "1"}
    assert GatewaySettings.from_env(env).provider_retry == RetryPolicy(
        attempts=1, backoff=DEFAULT_RETRY.backoff, max_delay=DEFAULT_RETRY.max_delay, timeout=2.5
    )
    assert GatewaySettings.from_env({"RELAY_URL": "memory://retry"}).provider_retry == DEFAULT_RETRY
    deadline = {"RELAY_URL": "memory://retry", "RELAY_PROVIDER_DEADLINE": "8.5"}
    assert GatewaySettings.from_env(deadline).provider_retry == RetryPolicy(deadline=8.5)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RELAY_PROVIDER_TIMEOUT", "0", "RELAY_PROVIDER_TIMEOUT: '0' is not a number of seconds over 0"),
        ("RELAY_PROVIDER_TIMEOUT", "-1", "RELAY_PROVIDER_TIMEOUT: '-1' is not a number of seconds over 0"),
        ("RELAY_PROVIDER_TIMEOUT", "nan", "RELAY_PROVIDER_TIMEOUT: 'nan' is not a number of seconds over 0"),
        ("RELAY_PROVIDER_TIMEOUT", "10s", "RELAY_PROVIDER_TIMEOUT: '10s' is not a number of seconds over 0"),
        (
            "RELAY_PROVIDER_TIMEOUT",
            "1e10",
            "RELAY_PROVIDER_TIMEOUT: '1e10' is not a number of seconds over 0 and at most 86,400 (how long",
        ),
        ("RELAY_PROVIDER_DEADLINE", "0", "RELAY_PROVIDER_DEADLINE: '0' is not a number of seconds over 0"),
        ("RELAY_PROVIDER_DEADLINE", "-2", "RELAY_PROVIDER_DEADLINE: '-2' is not a number of seconds over 0"),
        ("RELAY_PROVIDER_DEADLINE", "inf", "RELAY_PROVIDER_DEADLINE: 'inf' is not a number of seconds over 0"),
        (
            "RELAY_PROVIDER_DEADLINE",
            "9s",
            "RELAY_PROVIDER_DEADLINE: '9s' is not a number of seconds over 0 and at most 86,400 (how long a request",
        ),
        ("RELAY_PROVIDER_ATTEMPTS", "0", "RELAY_PROVIDER_ATTEMPTS: '0' is not a whole number, 1 or more"),
        ("RELAY_PROVIDER_ATTEMPTS", "2.5", "RELAY_PROVIDER_ATTEMPTS: '2.5' is not a whole number, 1 or more"),
        ("RELAY_PROVIDER_ATTEMPTS", "three", "RELAY_PROVIDER_ATTEMPTS: 'three' is not a whole number, 1 or more"),
    ],
)
def test_a_bad_provider_setting_names_the_variable_and_the_value(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env({"RELAY_URL": "memory://retry", name: value})
    assert str(refused.value).startswith(message)


async def test_a_provider_that_never_answers_is_given_up_after_the_settings_and_the_gateway_serves_on() -> None:
    """One attempt of 0.5 s: the publish is a 502 saying the provider may have got it (outcome_unknown), well
    before the default's 30 s, and the gateway answers the next request."""
    provider = SilentServer()
    try:
        settings = GatewaySettings(
            relay_url=f"emulator://key:secret@127.0.0.1:{provider.port}/apps/1",
            api_token=TOKEN,
            provider_retry=RetryPolicy(attempts=1, timeout=0.5),
        )
        async with serve_asgi(create_app(settings)) as url, httpx.AsyncClient(timeout=20) as http:
            started = time.monotonic()
            answer = await http.post(
                f"{url}/v1/publish",
                json={"channel": "orders", "event": "ready", "data": {}},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            waited = time.monotonic() - started
            assert answer.status_code == 502, answer.text
            assert answer.json()["outcome_unknown"] is True
            assert len(provider.accepted) == 1  # one attempt, not three
            assert waited < 10  # the default would have waited 3 × 10 s
            assert (await http.get(f"{url}/health")).json() == {"status": "ok"}
    finally:
        provider.close()


def test_relay_serve_answers_502_by_relay_provider_deadline_when_the_provider_never_answers() -> None:
    """A 10 s timeout, 3 attempts, a 2 s deadline: the gateway answers a publish to a silent provider with a 502
    within the deadline, where the timeout alone held it 10 s."""
    provider = SilentServer()
    try:
        with relay_serve(
            RELAY_URL=f"emulator://key:secret@127.0.0.1:{provider.port}/apps/1",
            RELAY_PROVIDER_TIMEOUT="10",
            RELAY_PROVIDER_ATTEMPTS="3",
            RELAY_PROVIDER_DEADLINE="2",
        ) as gateway:
            started = time.monotonic()
            answer = httpx.post(
                f"http://127.0.0.1:{gateway.port}/v1/publish",
                json={"channel": "orders", "event": "ready", "data": {}},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=20,
            )
            waited = time.monotonic() - started
            assert answer.status_code == 502, answer.text
            assert 1.9 < waited < 2.5, waited
            assert answer.json()["outcome_unknown"] is True
            assert "deadline of 2s reached" in answer.text
    finally:
        provider.close()


def test_relay_serve_stops_at_start_naming_a_bad_relay_provider_deadline() -> None:
    command = [sys.executable, "-m", "relay.cli", "serve", "--port", "0"]
    env = {**os.environ, "RELAY_URL": "memory://deadline", "RELAY_API_TOKEN": TOKEN, "RELAY_PROVIDER_DEADLINE": "ten"}
    ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert ran.returncode != 0
    assert "RELAY_PROVIDER_DEADLINE: 'ten' is not a number of seconds over 0" in ran.stderr

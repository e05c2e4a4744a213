"""Fixes from a hunt with misbehaving local servers (Relay's HTTP side):

- a thousand publishes at once on one ``AsyncRelay`` all failed as PoolTimeout against a healthy server (httpcore's
  pool does work proportional to its queue on every request that ends, which starved the event loop);
- an answer's body was read whole whatever its size, and an endless one for ever;
- an Ably listing whose answers kept linking the same next page was followed for ever;
- an answer cut short, or a malformed header, on plain HTTP advised switching to HTTPS;
- a client closed during a query said that a publish may have been delivered; an Ably error code sent as a string
  gave the advice for a 401; a redirect was "answered 307: (empty body)".

Against the real emulator, or the plain-HTTP server of ``libsupport``; every test that takes ``make_relay`` runs
through ``Relay`` and ``AsyncRelay``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from libsupport import KEY, SECRET, MakeRelay, SilentServer, emulator_url, server
from libsupport import silent as silent

from relay import AsyncRelay, PublishResult, senders
from relay.errors import ClientClosed, PermissionDenied, ProtocolError, ProviderError, TransportError
from relay.senders import RetryPolicy
from tests.conftest import RunningEmulator

ONE_ATTEMPT = RetryPolicy(attempts=1, timeout=5.0)


def answer(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = "".join(f"{header}\r\n" for header in (*headers, f"Content-Length: {len(body)}"))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def address(url: str) -> str:
    """HOST:PORT of the server an emulator:// ``url`` of ``libsupport.server`` names."""
    return url.split("@")[1].removesuffix("/apps/1")


def ably(url: str) -> str:
    """The ably:// URL of the server an emulator:// ``url`` of ``libsupport.server`` names."""
    return f"ably://1.{KEY}:{SECRET}@{address(url)}?tls=false"


def ably_server(url: str) -> str:
    """What errors call that server: an Ably-protocol server outside Ably's cloud is named by its address."""
    return f"the Ably-protocol server at {address(url)}"


POOL_FULL = (
    "could not send to 127.0.0.1:{port}: PoolTimeout; the client's connection pool was full: its 100 connections were "
    "all busy with earlier requests throughout the 1s timeout (more requests at once than the server answers in time: "
    "find why it is slow, or make fewer requests at once); the request was not sent"
)


# -- 1. many requests at once on one AsyncRelay -----------------------------------------------------------------------


@pytest.mark.long
async def test_a_thousand_publishes_at_once_on_one_async_relay_all_succeed(emulator: RunningEmulator) -> None:
    """All 1,000 failed after 90 s ("PoolTimeout … its 100 connections were all busy"): the library now queues what
    is over the pool's connections itself, where waiting costs nothing."""
    # A request waits for a connection up to the timeout: on a busy machine the last of 1,000 may wait some seconds
    async with AsyncRelay(emulator_url(emulator), retry=RetryPolicy(timeout=30.0)) as relay:
        results = await asyncio.wait_for(
            asyncio.gather(*(relay.publish("orders", "e", n) for n in range(1000)), return_exceptions=True), 30
        )
    assert [type(result) for result in results] == [PublishResult] * 1000


async def test_a_request_waiting_for_a_connection_longer_than_the_timeout_fails_unsent_and_is_not_retried(
    silent: SilentServer,
) -> None:
    """docs/library.md: a request that waits for a free connection longer than the timeout fails, and is not sent;
    it was also retried (attempts × the timeout), adding to what kept the pool busy."""
    policy = RetryPolicy(attempts=3, backoff=0.01, timeout=1.0)
    async with AsyncRelay(f"emulator://{KEY}:{SECRET}@127.0.0.1:{silent.port}/apps/1", retry=policy) as relay:
        outcomes = await asyncio.gather(*(relay.channel(f"c{n}") for n in range(110)), return_exceptions=True)
    full = [str(outcome) for outcome in outcomes if "PoolTimeout" in str(outcome)]
    assert full == [POOL_FULL.format(port=silent.port)] * 10
    assert all(isinstance(outcome, TransportError) for outcome in outcomes)
    assert len(silent.accepted) == 300  # 100 sent, each tried three times (a query that timed out is retried)


# -- 2. the size of an answer -----------------------------------------------------------------------------------------


def endless(status: str) -> Iterator[bytes]:
    yield f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    yield b"1\r\n[\r\n"
    while True:
        yield b"10000\r\n" + b'"x",' * (1 << 14) + b"\r\n"


@pytest.mark.parametrize("publishes", [False, True], ids=["query", "publish"])
async def test_an_endless_success_answer_is_a_protocol_error_naming_the_provider_and_the_limit(
    make_relay: MakeRelay, monkeypatch: pytest.MonkeyPatch, publishes: bool
) -> None:
    """It was read for ever, its memory growing: now up to MAX_ANSWER_BYTES (here made 1 MiB, to be quick). A publish
    so answered may have been published: its outcome is unknown."""
    monkeypatch.setattr(senders, "MAX_ANSWER_BYTES", 1 << 20)
    async with server(lambda _: endless("200 OK")) as (url, _got):
        relay = make_relay(url, ONE_ATTEMPT)
        with pytest.raises(ProtocolError) as raised:
            await asyncio.wait_for(relay.publish("orders", "e", 1) if publishes else relay.channels(), 10)
    assert str(raised.value) == (
        "the Relay emulator answered 200 with a body of over 1 MiB, larger than any answer of its API, and it was not "
        "read on: check that the provider URL points at the provider itself, not at a proxy or another server"
    )
    assert (raised.value.http_status, raised.value.answered_by) == (502, "the Relay emulator")
    assert raised.value.outcome_unknown is publishes


async def test_an_error_answer_is_read_only_as_far_as_it_is_shown(make_relay: MakeRelay) -> None:
    """A 500 with a 400 MB body took 1.2 GB, of which 500 characters were shown; an endless one never ended."""
    async with server(lambda _: endless("500 Internal Server Error")) as (url, _got):
        relay = make_relay(url, ONE_ATTEMPT)
        with pytest.raises(ProviderError) as raised:
            await asyncio.wait_for(relay.publish("orders", "e", 1), 10)
    assert str(raised.value) == "the Relay emulator answered 500: " + ('["x",' + '"x",' * 124)[:500]


# -- 3. Ably pages that never end -------------------------------------------------------------------------------------


def linked(next_page: str, body: bytes = b'["orders"]') -> bytes:
    return answer("200 OK", body, "Content-Type: application/json", f'Link: <{next_page}>; rel="next"')


@pytest.mark.parametrize(
    ("query", "page"),
    [
        (lambda relay: relay.channels(), "./channels?cursor=same"),
        (lambda relay: relay.presence_members("presence-room"), "./presence?cursor=same"),
    ],
    ids=["channels", "presence_members"],
)
async def test_a_next_page_already_requested_is_a_protocol_error_naming_ably(
    make_relay: MakeRelay, query: object, page: str
) -> None:
    """541 requests in 15 s for the same page, for ever."""
    body = b'[{"clientId": "alice"}]' if "presence" in page else b'["orders"]'
    async with server(lambda _: linked(page, body)) as (url, got):
        relay = make_relay(ably(url), ONE_ATTEMPT)
        with pytest.raises(ProtocolError) as raised:
            await asyncio.wait_for(query(relay), 10)  # type: ignore[operator]
    assert len(got) == 2  # the first page and the one it links, which links itself again
    assert str(raised.value).startswith(f"{ably_server(url)} linked as the next page http://{address(url)}/")
    assert str(raised.value).endswith(
        ", which this listing already requested: its pages would never end (check that the provider URL points at the "
        "provider itself, not at a proxy or another server)"
    )
    assert raised.value.http_status == 502 and raised.value.answered_by == ably_server(url)


async def test_a_listing_over_max_pages_is_a_protocol_error(
    make_relay: MakeRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server giving a new cursor on every page is followed up to MAX_PAGES (here made 3)."""
    monkeypatch.setattr("relay.client.MAX_PAGES", 3)
    async with server(lambda n: linked(f"./channels?cursor={n}")) as (url, got):
        relay = make_relay(ably(url), ONE_ATTEMPT)
        with pytest.raises(ProtocolError) as raised:
            await asyncio.wait_for(relay.channels(), 10)
    assert len(got) == 3
    assert str(raised.value).startswith(f"{ably_server(url)} linked a next page after 3 pages, more than any listing")


# -- 4. the TLS hint --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"ok":',
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nNo colon here\r\n\r\n{}",
    ],
    ids=["cut-short", "malformed-header"],
)
async def test_an_answer_cut_short_or_malformed_does_not_suggest_https(make_relay: MakeRelay, reply: bytes) -> None:
    """Both said "the server closed the connection without an HTTP answer: if it serves HTTPS, set
    PUSHER_SCHEME=https": the server spoke HTTP, badly."""
    async with server(lambda _: [reply, b""]) as (url, _got):
        relay = make_relay(url, ONE_ATTEMPT)
        with pytest.raises(TransportError) as raised:
            await relay.publish("orders", "e", 1)
    assert str(raised.value).endswith(
        "failed during the request: RemoteProtocolError; the request was sent and may have been processed: a publish "
        "may have been delivered, check before sending it again"
    ), str(raised.value)


# -- 5. ClientClosed during a query, Ably error codes, redirects ------------------------------------------------------


async def test_a_client_closed_during_a_query_does_not_say_a_publish_may_have_been_delivered(
    make_relay: MakeRelay, silent: SilentServer
) -> None:
    relay = make_relay(f"emulator://{KEY}:{SECRET}@127.0.0.1:{silent.port}/apps/1", ONE_ATTEMPT)
    query = asyncio.ensure_future(relay.channel("orders"))
    await asyncio.to_thread(silent.wait_for_request)  # the request sent, waiting for the answer
    await relay.close()
    with pytest.raises(ClientClosed) as raised:
        await asyncio.wait_for(query, 10)
    assert str(raised.value) == (
        f"this Relay client was closed during a query to 127.0.0.1:{silent.port}: create another client to ask again"
    )
    assert not raised.value.outcome_unknown


@pytest.mark.parametrize("code", [40160, "40160"], ids=["int", "digits"])
async def test_an_ably_error_code_given_as_digits_is_that_code(make_relay: MakeRelay, code: object) -> None:
    """A string "40160" was taken as no known code: AuthenticationError, "check the key and secret"."""
    error = json.dumps({"error": {"message": "denied", "code": code, "statusCode": 401}}).encode()
    async with server(lambda _: answer("401 Unauthorized", error, "Content-Type: application/json")) as (url, _):
        relay = make_relay(ably(url), ONE_ATTEMPT)
        with pytest.raises(PermissionDenied) as raised:
            await relay.publish("orders", "e", 1)
    assert raised.value.code == 40160
    assert "the API key's capabilities do not allow it there" in str(raised.value)


async def test_an_ably_error_code_that_is_not_a_number_is_no_code(make_relay: MakeRelay) -> None:
    error = json.dumps({"error": {"message": "nope", "code": [40160]}}).encode()
    async with server(lambda _: answer("400 Bad Request", error, "Content-Type: application/json")) as (url, _):
        relay = make_relay(ably(url), ONE_ATTEMPT)
        with pytest.raises(ProtocolError) as raised:
            await relay.publish("orders", "e", 1)
    assert raised.value.code is None and str(raised.value) == f"{ably_server(url)} answered 400: nope"


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        (("Location: https://127.0.0.1/apps/1/events",), "to https://127.0.0.1/apps/1/events"),
        (("Location: /v2/apps/1/events",), "to http://127.0.0.1:{port}/v2/apps/1/events"),
        ((), "without a Location"),
    ],
    ids=["absolute", "relative", "none"],
)
async def test_a_redirect_names_where_it_leads_and_that_it_is_not_followed(
    make_relay: MakeRelay, headers: tuple[str, ...], where: str
) -> None:
    """It was "ProviderError: the Relay emulator answered 307: (empty body)"."""
    async with server(lambda _: answer("307 Temporary Redirect", b"", *headers)) as (url, got):
        relay = make_relay(url, ONE_ATTEMPT)
        with pytest.raises(ProviderError) as raised:
            await relay.publish("orders", "e", 1)
    port = url.split(":")[-1].split("/")[0]
    assert str(raised.value) == (
        f"the Relay emulator answered 307, a redirect {where.format(port=port)}: redirects are not followed; fix the "
        "host or scheme of the provider URL to the address the provider answers at"
    )
    assert raised.value.http_status == 307 and len(got) == 1

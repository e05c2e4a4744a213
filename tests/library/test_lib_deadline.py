"""RetryPolicy(deadline=…): one bound on a whole operation, for a serverless route handler with 10 s in all. Without
it, each wait of each attempt had its own timeout: a provider that did not answer held a request up to
2 × attempts × timeout plus the backoffs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from libsupport import KEY, SECRET, Answer, SilentServer, server
from libsupport import silent as silent

from relay import AsyncRelay, Relay
from relay.errors import ConfigError, ProviderError, RelayError, TransportError
from relay.models import PublishResult
from relay.senders import AsyncSender, RetryPolicy, SyncSender

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}"
MAY_HAVE_BEEN_DELIVERED = (
    "; the request was sent and may have been processed: a publish may have been delivered, check before sending it "
    "again"
)


def silent_url(server: SilentServer) -> str:
    return f"emulator://{KEY}:{SECRET}@127.0.0.1:{server.port}/apps/1"


async def publish_once(kind: str, url: str, policy: RetryPolicy, key: str | None = None) -> None:
    """One publish by a client made for it, a ``Relay`` (in a thread) or an ``AsyncRelay``; its backoffs the
    shortest the jitter gives, so that the time a retry has left does not depend on chance."""
    if kind == "sync":
        with Relay(url, sender=SyncSender(policy, jitter=lambda: 0.0)) as relay:
            await asyncio.to_thread(relay.publish, "orders", "ready", {}, idempotency_key=key)
        return
    async with AsyncRelay(url, sender=AsyncSender(policy, jitter=lambda: 0.0)) as arelay:
        await arelay.publish("orders", "ready", {}, idempotency_key=key)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_provider_that_never_answers_holds_an_operation_until_the_deadline_only(
    silent: SilentServer, kind: str
) -> None:
    """attempts=3, timeout=2: a keyed (so retried) publish to a silent server took 3 × 2 s plus the backoffs. With
    deadline=3.5 it ends at 3.5 s: the first try's 2 s, a backoff of 0.125 s, then a retry cut to the time left
    (1.375 s, well over the 0.875 s a request needs left to be sent, whatever the machine's load)."""
    policy = RetryPolicy(attempts=3, timeout=2, deadline=3.5)
    url = silent_url(silent)
    started = time.monotonic()
    with pytest.raises(TransportError) as raised:
        await publish_once(kind, url, policy, "k-1")
    took = time.monotonic() - started
    assert 2 < took < 4.0, took  # the old bound: 6 s plus the backoffs
    assert raised.value.outcome_unknown is True
    if len(silent.accepted) == 2:  # the retry was sent, with the time left as its timeout
        assert took > 3.4, took
        assert str(raised.value) == (
            f"no answer from 127.0.0.1:{silent.port}: ReadTimeout, deadline of 3.5s reached" + MAY_HAVE_BEEN_DELIVERED
        )
    else:  # a machine so loaded that the first try's timeout fired late: no time was left for a retry
        assert str(raised.value) == (
            f"no answer from 127.0.0.1:{silent.port} within the 2s timeout: ReadTimeout"
            + MAY_HAVE_BEEN_DELIVERED
            + "; not retried: deadline of 3.5s reached (too little time left for a retry)"
        )


async def test_a_burst_over_a_full_pool_ends_by_the_deadline_and_says_the_waiting_requests_were_not_sent(
    silent: SilentServer,
) -> None:
    """110 queries at once on 100 connections, timeout 10, deadline 3: the 10 waiting for a connection waited the
    whole timeout before."""
    where = f"127.0.0.1:{silent.port}"
    async with AsyncRelay(silent_url(silent), retry=RetryPolicy(attempts=1, timeout=10, deadline=3)) as client:
        started = time.monotonic()
        outcomes = await asyncio.gather(*(client.channel(f"c{n}") for n in range(110)), return_exceptions=True)
        # The old bound: 10 s waiting for a connection, then 10 s for the answer (a loaded machine's event loop may
        # run the timers late: the margin is generous)
        assert time.monotonic() - started < 5
    assert all(isinstance(outcome, TransportError) for outcome in outcomes), outcomes
    # The 10 waiting for a connection get one as the others time out, at the deadline, or give up waiting then
    waited = [
        outcome for outcome in outcomes if isinstance(outcome, TransportError) and "ReadTimeout" not in str(outcome)
    ]
    assert len(waited) == 10
    assert {str(error) for error in waited} <= {
        f"could not send to {where}: PoolTimeout, deadline of 3s reached; the client's connection pool was full: its "
        "100 connections were all busy with earlier requests throughout the time left (more requests at once than "
        "the server answers in time: find why it is slow, or make fewer requests at once); the request was not sent",
        f"could not send to {where}: deadline of 3s reached: less than the 0.75s a request is given to be sent and "
        "answered in was left; the request was not sent",
    }
    assert not any(error.outcome_unknown for error in waited)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_request_that_gets_its_connection_too_late_is_not_sent_and_its_key_can_be_sent_again(
    kind: str,
) -> None:
    """A client of one connection, deadline 2 (so a request needs 0.5 s left to be sent): the first publish holds
    the connection 1.7 s, the second gets it with 0.3 s left. It was sent anyway, with 0.3 s to be answered in: from
    a provider slower than this one, the answer would come too late, and its outcome be unknown. Now it is not sent,
    says so, and the caller's resend with the key is delivered once."""
    held: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    first_came = asyncio.Event()

    def answer(n: int) -> Answer:
        if n > 1:
            return OK
        first_came.set()
        return held

    async with server(answer) as (url, got):
        policy = RetryPolicy(attempts=1, timeout=10, deadline=2)
        one_connection = httpx.Limits(max_connections=1)
        publish: Callable[[str], Awaitable[PublishResult]]
        if kind == "sync":
            sender = SyncSender(policy, client=httpx.Client(limits=one_connection))
            relay = Relay(url, sender=sender)

            async def publish(key: str) -> PublishResult:
                return await asyncio.to_thread(relay.publish, "orders", "ready", {}, idempotency_key=key)

            close: Callable[[], Awaitable[None]] = lambda: asyncio.to_thread(relay.close)  # noqa: E731
        else:
            arelay = AsyncRelay(url, sender=AsyncSender(policy, client=httpx.AsyncClient(limits=one_connection)))

            async def publish(key: str) -> PublishResult:
                return await arelay.publish("orders", "ready", {}, idempotency_key=key)

            close = arelay.aclose
        try:
            first = asyncio.ensure_future(publish("first"))
            await first_came.wait()
            started = time.monotonic()
            late = asyncio.ensure_future(publish("late"))
            await asyncio.sleep(1.7)  # the late publish waits for the connection meanwhile
            held.set_result(OK)
            await first
            with pytest.raises(TransportError) as raised:
                await late
            assert time.monotonic() - started < 2.3
            assert str(raised.value) == (
                f"could not send to {url.split('@')[1].split('/')[0]}: deadline of 2s reached: less than the 0.5s a "
                "request is given to be sent and answered in was left; the request was not sent"
            )
            assert raised.value.outcome_unknown is False
            assert len(got) == 1  # not one byte of the late publish went out
            await publish("late")
            await publish("late")  # replayed: delivered once
            assert len(got) == 2
        finally:
            await close()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_retry_whose_wait_would_cross_the_deadline_is_not_taken(kind: str) -> None:
    """A 503 asking to retry after 3 s, deadline 3: the client slept 3 s and retried past the deadline. Now the
    503's error comes at once, saying the deadline left no time for a retry."""
    async with server(lambda n: UNAVAILABLE) as (url, got):
        policy = RetryPolicy(attempts=3, timeout=10, deadline=3)
        started = time.monotonic()
        with pytest.raises(ProviderError) as raised:
            await publish_once(kind, url, policy)
        assert time.monotonic() - started < 2.5  # not the 3 s wait (at once, with room for a loaded machine)
        assert len(got) == 1
        assert str(raised.value).endswith("; not retried: deadline of 3s reached (too little time left for a retry)")
        assert raised.value.outcome_unknown is False  # a 503: the provider took nothing on


def test_without_a_deadline_each_wait_has_its_timeout_as_before(silent: SilentServer) -> None:
    """deadline=None, the default: a request is cut by its timeout alone, and its error names it."""
    with Relay(silent_url(silent), retry=RetryPolicy(attempts=1, timeout=0.5)) as relay:
        started = time.monotonic()
        with pytest.raises(RelayError) as raised:
            relay.channel("orders")
    assert 0.45 < time.monotonic() - started < 1.5
    assert str(raised.value) == f"no answer from 127.0.0.1:{silent.port} within the 0.5s timeout: ReadTimeout"


@pytest.mark.parametrize("deadline", [0, -1, float("nan"), float("inf"), 86_401, "3", True])
def test_a_deadline_that_is_not_seconds_over_0_is_refused_when_the_policy_is_made(deadline: object) -> None:
    with pytest.raises(ConfigError) as refused:
        RetryPolicy(deadline=deadline)  # type: ignore[arg-type]
    assert str(refused.value) == (
        "RetryPolicy deadline must be a number of seconds over 0 and at most 86,400, or None for none, got "
        f"{deadline!r}"
    )


def test_the_send_window_is_at_most_1s_the_timeout_and_a_quarter_of_the_deadline() -> None:
    assert RetryPolicy(deadline=10).send_window == 1.0
    assert RetryPolicy(timeout=0.3, deadline=10).send_window == 0.3
    assert RetryPolicy(timeout=None, deadline=2).send_window == 0.5
    assert RetryPolicy().send_window == 0.0


async def test_a_retry_that_finds_no_free_connection_after_an_unanswered_attempt_leaves_the_outcome_unknown(
    silent: SilentServer,
) -> None:
    """AsyncSender queues a request for one of its connections before httpx sees it. A keyed publish's first attempt
    went out and got no answer; its retry then waited for a connection in vain, and the error said only "the request
    was not sent", as if nothing had been: the first attempt may have delivered the publish. Here every connection
    is taken (in the order requests queue for them) while the first attempt waits for its answer."""
    policy = RetryPolicy(attempts=2, timeout=1)
    sender = AsyncSender(policy, jitter=lambda: 0.0)
    async with AsyncRelay(silent_url(silent), sender=sender) as arelay:
        publishing = asyncio.ensure_future(arelay.publish("orders", "ready", {}, idempotency_key="k-1"))
        await asyncio.to_thread(silent.wait_for_connections, 1)
        _, slots = await sender._client()
        taken = 0

        async def take_every_connection() -> None:
            nonlocal taken
            while taken < 100:  # the publish holds one until its first attempt times out: then this takes it
                await slots.acquire()
                taken += 1

        taking = asyncio.ensure_future(take_every_connection())
        with pytest.raises(TransportError) as raised:
            await publishing
        await taking
        for _ in range(taken):
            slots.release()
    assert len(silent.accepted) == 1  # the retry was not sent
    assert raised.value.outcome_unknown is True
    assert str(raised.value) == (
        f"could not send to 127.0.0.1:{silent.port}: PoolTimeout; the client's connection pool was full: its 100 "
        "connections were all busy with earlier requests throughout the 1s timeout (more requests at once than the "
        "server answers in time: find why it is slow, or make fewer requests at once); the request was not sent; an "
        "earlier attempt was sent and may have been processed: a publish may have been delivered, check before "
        "sending it again"
    )


TRICKLED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
TRICKLED_BODY = b"{" + b" " * 198 + b"}"


@contextlib.asynccontextmanager
async def trickling(at_once: bytes, byte_by_byte: bytes, heads: list[bytes]) -> AsyncIterator[int]:
    """A server on a free port (yielded) that answers each request with ``at_once`` and then ``byte_by_byte``, one
    byte every 0.2 s; the head of each request it got is added to ``heads``."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(at_once)
            for byte in byte_by_byte:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.2)
        except ConnectionError:
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(trickle, "127.0.0.1", 0)
    try:
        yield listening.sockets[0].getsockname()[1]
    finally:
        listening.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("trickled", ["head", "body"])
async def test_an_answer_trickled_a_byte_at_a_time_is_cut_at_the_deadline(trickled: str, kind: str) -> None:
    """httpcore cuts each wait to the time left as the wait begins, and a read of the answer waits the whole timeout
    for each few bytes: a server sending one byte every 0.2 s held a publish (timeout 1, deadline 1.5) for as long as
    it kept sending (16 s for this head, 40 s for this body), past the deadline. The whole exchange is now bounded by
    it, a Relay's (each read cut to the time left) as an AsyncRelay's: the publish fails at 1.5 s, its outcome unknown
    (its answer had not come whole)."""
    head, body = TRICKLED_HEAD, TRICKLED_BODY
    at_once, byte_by_byte = (b"", head + body) if trickled == "head" else (head, body)
    policy = RetryPolicy(attempts=1, timeout=1, deadline=1.5)
    async with trickling(at_once, byte_by_byte, []) as port:
        started = time.monotonic()
        with pytest.raises(TransportError) as raised:
            await publish_once(kind, f"emulator://{KEY}:{SECRET}@127.0.0.1:{port}/apps/1", policy)
    assert 1.4 < time.monotonic() - started < 3, time.monotonic() - started  # the old bound: 0.2 s × its length
    assert raised.value.outcome_unknown is True
    late = "no answer from" if trickled == "head" else "the answer from"
    whole = "" if trickled == "head" else " did not come whole"
    assert str(raised.value) == (
        f"{late} 127.0.0.1:{port}{whole}: ReadTimeout, deadline of 1.5s reached" + MAY_HAVE_BEEN_DELIVERED
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_proxy_from_the_environment_is_used_and_its_trickled_answer_cut_at_the_deadline(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync client bounds each read by wrapping the connections of httpx's pools, which must not cost it the
    proxies the environment sets (httpx drops them for a client given a transport of its own): the request goes to
    the proxy, in the absolute form a proxy is sent, and the proxy's answer, trickled, is cut at the deadline too."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    heads: list[bytes] = []
    policy = RetryPolicy(attempts=1, timeout=1, deadline=1.5)
    async with trickling(b"", TRICKLED_HEAD + TRICKLED_BODY, heads) as proxy_port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        started = time.monotonic()
        with pytest.raises(TransportError) as raised:
            await publish_once(kind, f"emulator://{KEY}:{SECRET}@relay.invalid:6001/apps/1", policy)
    assert 1.4 < time.monotonic() - started < 3, time.monotonic() - started
    assert [head.split(b"\r\n")[0].split(b"?")[0] for head in heads] == [
        b"POST http://relay.invalid:6001/apps/1/events"
    ]
    assert str(raised.value) == (
        "no answer from relay.invalid:6001: ReadTimeout, deadline of 1.5s reached" + MAY_HAVE_BEEN_DELIVERED
    )


async def test_a_client_passed_in_whose_transport_reports_nothing_is_cut_at_the_deadline_as_sent() -> None:
    """A client passed in may have a transport that reports no progress (an ASGI app's, a mock's): the deadline's
    cut of its exchange cannot tell whether the request went out, and must not say it did not. This one had it and
    never answered: the publish may have been delivered (outcome_unknown), as a closed client's would be."""
    received: list[httpx.Request] = []

    class NeverAnswers(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            received.append(request)
            await asyncio.sleep(30)
            return httpx.Response(200, json={})

    policy = RetryPolicy(attempts=1, timeout=5, deadline=1)
    sender = AsyncSender(policy, client=httpx.AsyncClient(transport=NeverAnswers()))
    started = time.monotonic()
    async with AsyncRelay(f"emulator://{KEY}:{SECRET}@127.0.0.1:9/apps/1", sender=sender) as arelay:
        with pytest.raises(TransportError) as raised:
            await arelay.publish("orders", "ready", {})
    assert time.monotonic() - started < 3
    assert len(received) == 1
    assert raised.value.outcome_unknown is True
    assert (
        str(raised.value) == "no answer from 127.0.0.1:9: ReadTimeout, deadline of 1s reached" + MAY_HAVE_BEEN_DELIVERED
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_answer_whose_body_stops_says_it_did_not_come_whole(kind: str) -> None:
    """The head of a 200 came, then a byte of its body, then nothing: the error said "no answer from", though an
    answer had begun (the provider processed the request; its outcome is still unknown to the caller)."""
    stalled = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{")
        await stalled.wait()
        writer.close()

    listening = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransportError) as raised:
            await publish_once(
                kind, f"emulator://{KEY}:{SECRET}@127.0.0.1:{port}/apps/1", RetryPolicy(attempts=1, timeout=0.5)
            )
    finally:
        stalled.set()
        listening.close()
    assert raised.value.outcome_unknown is True
    assert str(raised.value) == (
        f"the answer from 127.0.0.1:{port} did not come whole within the 0.5s timeout: ReadTimeout"
        + MAY_HAVE_BEEN_DELIVERED
    )

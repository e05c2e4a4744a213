"""The only I/O the library does: send an adapter's request with httpx, retrying what is safe to retry.

Retried: 429 and 503 (the provider did not process the request), connection failures (nothing was sent), and for
idempotent requests also other 5xx answers and timeouts. The delay doubles from ``backoff``, each wait a random 50 to
100 % of it (equal jitter), and a ``Retry-After`` header wins. Whatever is not retried, or still fails after
``attempts``, becomes a typed error.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

import httpcore
import httpx

from relay.adapters.base import HttpRequest, HttpResponse
from relay.config import ProviderConfig, url_host
from relay.errors import ClientClosed, ConfigError, ProtocolError, ProviderError, RelayError, TransportError
from relay.http_errors import leaves_outcome_unknown, parse_retry_after

ErrorFor = Callable[[HttpResponse], Exception]
T = TypeVar("T")

# httpx's default pool, named so that the error of a full one can say how many connections it holds
_POOL_SIZE = 100
_LIMITS = httpx.Limits(max_connections=_POOL_SIZE, max_keepalive_connections=20)
# A sync client keeps every connection alive between requests (for httpx's 5 s), not 20: past 20 threads publishing at
# once, httpcore 1.0's pool closed a connection it had just handed to a waiting request as a surplus idle one
# (encode/httpcore#1110), under the request if it had been sent. 64 threads publishing at once then saw publishes the
# provider had taken fail after 10 s (ReadTimeout) or at once (ReadError), outcome unknown, a few per 6,400. (An
# AsyncRelay keeps httpx's 20: its requests take turns for the connections before they reach the pool (_LoopClient),
# no such failure was seen with it, and with 100 kept alive its publishes gathered by the thousand were slower.)
_SYNC_LIMITS = httpx.Limits(max_connections=_POOL_SIZE, max_keepalive_connections=_POOL_SIZE)

# The largest success answer read. The largest legitimate ones are a hosted Pusher app's whole channel list (one
# answer, unpaginated: a million channels at the longest names, 164 characters, with their user counts, is about
# 200 MB) and a page of 1,000 Ably presence members (each member's data within Ably's default 64 KiB message size,
# 64 MiB, twice that were every byte escaped in the JSON). A larger one is a misbehaving server or proxy, whose
# body would otherwise be held whole (three times over, decoded and parsed), or read for ever if it never ends.
MAX_ANSWER_BYTES = 256 << 20
# An error answer's body is only shown, its first 500 characters; the providers' errors are a few hundred bytes of
# JSON. What comes after this many is not read.
MAX_ERROR_ANSWER_BYTES = 64 << 10
# httpcore's words for a connection closed before any byte of an answer came: what a TLS server does with a plain
# HTTP request (or it resets the connection). A malformed or cut-short answer is another RemoteProtocolError.
_NO_ANSWER = "Server disconnected without sending a response"


@dataclass(frozen=True, slots=True)
class Sending:
    """What a request's errors say besides where it went: ``error_for`` makes the provider's refusals typed errors;
    ``provider`` is the provider URL's scheme, whose setting switches TLS; ``publishes``: a publish sent without an
    answer may have been delivered; ``answered_by`` names the provider in the errors of its answers."""

    error_for: ErrorFor
    provider: str
    publishes: bool
    # Who answers, as errors name it ("Pusher", "Ably", "the Relay emulator", …): the adapter's name
    answered_by: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` in all (1: no retry); the first retry waits about ``backoff`` seconds, each next one twice as
    long, up to ``max_delay``; ``timeout`` is the seconds httpx waits to connect, and then for each read or write
    (None: no limit); ``deadline``, the seconds an operation takes at most, all its waits, attempts and backoffs
    included (None: only ``timeout`` bounds each wait)."""

    attempts: int = 3
    backoff: float = 0.25
    max_delay: float = 10.0
    timeout: float | None = 10.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        # Checked when the policy is made, as a URL is: httpx refuses a negative timeout only at the first request,
        # and a backoff that is not a number fails only when a request is first retried, in production
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"RetryPolicy attempts must be a whole number, 1 or more, got {self.attempts!r}")
        for name, value in (("backoff", self.backoff), ("max_delay", self.max_delay)):
            if not _is_seconds(value):
                raise ConfigError(
                    f"RetryPolicy {name} must be a number of seconds from 0 to {MAX_POLICY_SECONDS:,}, got {value!r}"
                )
        if self.timeout is not None and (not _is_seconds(self.timeout) or self.timeout == 0):
            raise ConfigError(
                f"RetryPolicy timeout must be a number of seconds over 0 and at most {MAX_POLICY_SECONDS:,}, or None "
                f"for no limit, got {self.timeout!r}"
            )
        if self.deadline is not None and (not _is_seconds(self.deadline) or self.deadline == 0):
            raise ConfigError(
                f"RetryPolicy deadline must be a number of seconds over 0 and at most {MAX_POLICY_SECONDS:,}, or None "
                f"for none, got {self.deadline!r}"
            )

    @property
    def send_window(self) -> float:
        """The least time a request must have left before the deadline to be sent at all. Sent with less, it would
        most likely be cut before its answer came, leaving its outcome unknown (a publish may or may not have been
        delivered), which is worse for the caller than a request known not to be sent, that it can send again. 1 s
        is several times a provider's usual answer time; never more than ``timeout``, the answer time the caller
        expects, nor than a quarter of the deadline, so that a short deadline leaves most of itself to send in."""
        if self.deadline is None:
            return 0.0
        return min(1.0, self.deadline / 4, math.inf if self.timeout is None else self.timeout)


# The longest wait a policy sets: a day. Past some 9.2e9 s (the clock's deadline then overflows a time_t), a timeout
# raised OverflowError from the sync client's first request instead of waiting.
MAX_POLICY_SECONDS = 86_400


def _is_seconds(value: object) -> bool:
    """A finite number from 0 to MAX_POLICY_SECONDS (a bool is an int to Python, but no number of seconds)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0 <= value <= MAX_POLICY_SECONDS


def refuse_undecodable_host(config: ProviderConfig) -> None:
    """httpx decodes each ``xn--`` label of a host (IDNA 2008): one that is no name's punycode raised idna's error
    from inside the first request, so a client is not made with it."""
    if "xn--" not in config.host.lower():
        return
    try:
        httpx.URL(config.base_url).host  # noqa: B018 (decoding it is the check)
    except (UnicodeError, httpx.InvalidURL):
        raise ConfigError(
            f"{config.scheme}:// URL's host {config.host!r} is not a host name: an xn-- label in it is not the "
            "punycode of a name"
        ) from None


def checked_retry_policy(retry: object) -> RetryPolicy:
    """``retry`` as a client takes it (``Relay(url, retry=…)``): a RetryPolicy, not a number of attempts."""
    if not isinstance(retry, RetryPolicy):
        raise ConfigError(f"retry must be a RetryPolicy such as RetryPolicy(attempts=5), got {retry!r}")
    return retry


DEFAULT_RETRY = RetryPolicy()


class Deadline:
    """An operation's deadline (``RetryPolicy.deadline``), counted from when it is made: a client makes one per
    operation, for all its requests. Each wait of an attempt (for a free connection, to connect, for a write or a
    read) is the shorter of its timeout and the time left; a request is not sent with less than the policy's
    ``send_window`` left, nor retried after a backoff that would leave less."""

    __slots__ = ("_at", "seconds", "window")

    def __init__(self, policy: RetryPolicy) -> None:
        self.seconds = policy.deadline
        self._at = math.inf if policy.deadline is None else time.monotonic() + policy.deadline
        self.window = policy.send_window

    def left(self) -> float:
        return self._at - time.monotonic()

    def reached(self) -> bool:
        # A timer may wake a hair before its time (asyncio rounds to its clock's resolution)
        return self.seconds is not None and self.left() <= 0.01

    def too_late(self) -> bool:
        """Whether a request begun now would have less than the send window to be sent and answered in."""
        return self.seconds is not None and self.left() < self.window

    def allows(self, delay: float) -> bool:
        """Whether a retry after ``delay`` seconds would still have the send window left."""
        return self.seconds is None or self.left() - delay >= self.window

    def wait(self, timeout: float | None) -> float | None:
        """``timeout`` cut to the time left; never 0 or less, which httpcore takes as no wait at all or refuses."""
        if self.seconds is None:
            return timeout
        left = max(self.left(), 0.001)
        return left if timeout is None else min(timeout, left)

    def timeouts(self, given: httpx.Timeout) -> _Timeouts | None:
        """The ``timeout`` request extension of an attempt: None without a deadline (the client's own apply)."""
        return None if self.seconds is None else _Timeouts(given, self)

    def reached_text(self) -> str:
        return f"deadline of {self.seconds:g}s reached"


class _Timeouts(Mapping[str, float | None]):
    """httpcore reads each timeout of a request as its phase begins (``pool`` when it queues for a connection,
    ``connect``, ``write``, then ``read``): each is then the client's, cut to the time left before the deadline.
    ``given`` keeps what each phase got, for its error to say."""

    def __init__(self, timeout: httpx.Timeout, deadline: Deadline) -> None:
        self._base = timeout.as_dict()
        self._deadline = deadline
        self.given: dict[str, float | None] = {}

    def __getitem__(self, kind: str) -> float | None:
        self.given[kind] = self._deadline.wait(self._base[kind])
        return self.given[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


class _TooLate(httpx.TimeoutException):
    """Raised from httpcore's trace as the request's head is about to be written, when less than the send window is
    left: the request is dropped before any byte of it goes out."""


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    request: HttpRequest,
    response: HttpResponse | None,
    *,
    request_was_sent: bool,
    jitter: Callable[[], float],
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the failure is final."""
    if attempt >= policy.attempts:
        return None
    if response is None:
        retryable = not request_was_sent or request.idempotent
    else:
        retryable = response.status in (429, 503) or (response.status >= 500 and request.idempotent)
    if not retryable:
        return None
    retry_after = None if response is None else parse_retry_after(response.headers.get("retry-after"))
    if retry_after is not None:
        # Retrying sooner than asked would only be refused again: a longer wait is the caller's to make
        # (RateLimited carries retry_after).
        return retry_after if retry_after <= policy.max_delay else None
    exponential: float = policy.backoff * 2.0 ** (attempt - 1)
    return min(exponential, policy.max_delay) * (0.5 + jitter() / 2)


@dataclass(frozen=True, slots=True)
class _Failed:
    """A request that got no whole answer: ``exc`` says why; ``answered``: the answer's status and headers had come
    (the body failed), so the server speaks HTTP."""

    exc: httpx.HTTPError
    answered: bool


class _Body:
    """An answer's body as it comes, kept up to its limit (``MAX_ANSWER_BYTES``, or ``MAX_ERROR_ANSWER_BYTES`` for an
    error answer): a server that sends more is not read on, so an endless body ends too."""

    def __init__(self, status: int) -> None:
        self.limit = MAX_ANSWER_BYTES if 200 <= status < 300 else MAX_ERROR_ANSWER_BYTES
        self._parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> bool:
        """Keeps ``chunk``; False once the body is over its limit: read no more."""
        self._parts.append(chunk)
        self.size += len(chunk)
        return self.size <= self.limit

    def content(self) -> bytes:
        return b"".join(self._parts)[: self.limit]


def _response(response: httpx.Response, body: _Body, sending: Sending) -> HttpResponse:
    """The answer as adapters read it; an error answer's body cut at its limit (only its start is shown)."""
    if body.size > body.limit and 200 <= response.status_code < 300:
        error = ProtocolError(
            f"{sending.answered_by} answered {response.status_code} with a body of over {body.limit >> 20} MiB, "
            "larger than any answer of its API, and it was not read on: check that the provider URL points at the "
            "provider itself, not at a proxy or another server",
            http_status=502,  # the provider broke the protocol, not the request
            answered_by=sending.answered_by,
        )
        error.outcome_unknown = response.request.method != "GET"  # as an unreadable answer (unreadable_answer)
        raise error
    headers = {k.lower(): v for k, v in response.headers.items()}
    return HttpResponse(response.status_code, headers, body.content(), str(response.url))


def _redirect_error(response: HttpResponse, sending: Sending) -> ProviderError:
    """A 3xx answer: httpx follows no redirect, and should not (a signed request, or the key it carries, would go to
    another URL); the URL to configure is most likely the one it names."""
    location = response.headers.get("location")
    where = "without a Location" if location is None else f"to {urljoin(response.url, location)[:300]}"
    return ProviderError(
        f"{sending.answered_by} answered {response.status}, a redirect {where}: redirects are not followed; fix the "
        "host or scheme of the provider URL to the address the provider answers at",
        http_status=response.status,
        answered_by=sending.answered_by,
    )


def _where(request: HttpRequest) -> str:
    url = httpx.URL(request.url)
    port = url.port or (443 if url.scheme == "https" else 80)  # the port is the usual mistake: always name it
    return f"{url_host(url.host)}:{port}"


def _pool_full(
    request: HttpRequest, pool_size: int | None, timeout: float | None, deadline: Deadline
) -> TransportError:
    """The host is not in question: no connection was free to reach it with, throughout ``timeout`` (or until the
    deadline)."""
    connections = "its connections" if pool_size is None else f"its {pool_size} connections"
    name, throughout = "PoolTimeout", _seconds(timeout)
    if deadline.reached():
        name, throughout = f"PoolTimeout, {deadline.reached_text()}", "the time left"
    return TransportError(
        f"could not send to {_where(request)}: {name}; the client's connection pool was full: {connections} were "
        f"all busy with earlier requests throughout {throughout} (more requests at once than the server "
        "answers in time: find why it is slow, or make fewer requests at once); the request was not sent"
    )


def _transport_error(
    request: HttpRequest, sending: Sending, failed: _Failed, pool_size: int | None, deadline: Deadline
) -> TransportError:
    exc = failed.exc
    if isinstance(exc, httpx.PoolTimeout):
        return _pool_full(request, pool_size, _timeout(exc, "pool"), deadline)
    where, name = _where(request), exc.__class__.__name__
    if isinstance(exc, _TooLate):
        return TransportError(
            f"could not send to {where}: {deadline.reached_text()}: less than the {deadline.window:g}s a request is "
            "given to be sent and answered in was left; the request was not sent"
        )
    if isinstance(exc, httpx.TimeoutException) and deadline.reached():
        name += f", {deadline.reached_text()}"
    scheme = httpx.URL(request.url).scheme
    hint = _tls_hint(scheme, sending.provider, exc, answered=failed.answered)
    if not _was_sent(exc):
        return TransportError(f"could not reach {where}: {name}; {hint or 'check the host, port and network'}")
    # The answer's head came and its body stopped (or came too slowly): the provider got the request and began to
    # answer, but what it answered cannot be read
    late = f"the answer from {where} did not come whole" if failed.answered else f"no answer from {where}"
    if isinstance(exc, httpx.ReadTimeout) and deadline.reached():
        message = f"{late}: {name}"
    elif isinstance(exc, httpx.ReadTimeout):
        message = f"{late} within {_seconds(_timeout(exc, 'read'))}: {name}"
    else:
        message = f"the connection to {where} failed during the request: {name}"
    unknown = request.method != "GET"  # a query changes nothing, whether or not the provider got it
    if unknown:
        # The request went out: the provider may have processed it (a hang-up that suggests a TLS server may be a
        # reset after the answer was on its way), and a publish sent again may be delivered twice
        message += _may_have_been_processed(sending)
    error = TransportError(message if hint is None else f"{message}; {hint}")
    error.outcome_unknown = unknown
    return error


def _may_have_been_processed(sending: Sending, *, earlier: bool = False) -> str:
    """What an error whose request was sent and may have been processed adds to its message; ``earlier``: not by the
    attempt whose error it is, but by one before it."""
    said = (
        "; an earlier attempt was sent and may have been processed"
        if earlier
        else "; the request was sent and may have been processed"
    )
    return said + (": a publish may have been delivered, check before sending it again" if sending.publishes else "")


def _timeout(exc: httpx.HTTPError, kind: str) -> float | None:
    """The ``kind`` timeout (connect, read, write or pool) the request had."""
    try:
        timeouts = exc.request.extensions.get("timeout") or {}
    except RuntimeError:  # raised without its request
        return None
    if isinstance(timeouts, _Timeouts):  # cut to a deadline: what the phase got, not what is left now
        timeouts = timeouts.given
    seconds = timeouts.get(kind)
    return seconds if isinstance(seconds, int | float) else None


def _seconds(timeout: float | None) -> str:
    return "the timeout" if timeout is None else f"the {timeout:g}s timeout"


def _tls_hint(scheme: str, provider: str, exc: httpx.HTTPError, *, answered: bool) -> str | None:
    """TLS spoken to a plain-HTTP server, plain HTTP to a TLS one, or a refused certificate fails like a network
    fault; what to change instead of the host, port or network, in the ``provider``'s settings. ``answered``: the
    answer's head had come, so the server speaks plain HTTP."""
    tls_error = next((cause for cause in _causes(exc) if isinstance(cause, ssl.SSLError)), None)
    if isinstance(tls_error, ssl.SSLCertVerificationError):  # TLS was spoken on both sides: the scheme is right
        return f"the server's TLS certificate did not verify ({tls_error.verify_message or tls_error.reason})"
    if scheme == "https" and tls_error is not None:
        to_plain = (
            "add ?tls=false to the ably:// URL (it is HTTPS unless ?tls=false)"
            if provider == "ably"
            else "set PUSHER_SCHEME=http, an http:// PUSHER_URL or ?tls=false "
            "(emulator:// URLs are plain HTTP unless ?tls=true)"
        )
        failed = tls_error.reason or tls_error
        return f"the TLS handshake failed ({failed}): if the server speaks plain HTTP, {to_plain}"
    # A TLS server reads the plain request as a broken handshake and hangs up (or resets) before any byte of an
    # answer; an answer malformed or cut short came from an HTTP server
    hung_up = isinstance(exc, httpx.ReadError) or (
        isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(_NO_ANSWER)
    )
    if scheme == "http" and hung_up and not answered:
        to_tls = (
            "remove ?tls=false from the ably:// URL"
            if provider == "ably"
            else "set PUSHER_SCHEME=https, an https:// PUSHER_URL or ?tls=true on the URL"
        )
        return f"the server closed the connection without an HTTP answer: if it serves HTTPS, {to_tls}"
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: httpx keeps the ssl error two causes down."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _was_sent(exc: httpx.HTTPError) -> bool:
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | _TooLate)


def _after_attempt(
    policy: RetryPolicy,
    so_far: _SoFar,
    request: HttpRequest,
    sending: Sending,
    outcome: HttpResponse | _Failed,
    jitter: Callable[[], float],
    pool_size: int | None,
    deadline: Deadline,
) -> HttpResponse | float:
    """What the sync and async senders share: the response on success, else the delay before the next attempt;
    raises the typed error when the failure is final. ``so_far``: the attempts made, this one included;
    ``pool_size``: the connections the client holds, if known."""
    error: Exception
    if isinstance(outcome, _Failed):
        failed = outcome.exc
        response, sent = None, _was_sent(failed)
        error = _transport_error(request, sending, outcome, pool_size, deadline)
        _note_undecided(error, so_far, request, sending)
        # Waiting again would only add to the requests the pool is busy with (docs/library.md: it fails); and once
        # the deadline is reached, there is no time to try again
        if isinstance(failed, httpx.PoolTimeout | _TooLate) or (
            isinstance(failed, httpx.TimeoutException) and deadline.reached()
        ):
            raise error
    else:
        response = outcome
        if 200 <= response.status < 300:
            return response
        error, sent = _answer_error(request, response, sending), True
        _note_undecided(error, so_far, request, sending)
    delay = retry_delay(policy, so_far.attempts, request, response, request_was_sent=sent, jitter=jitter)
    if delay is None:
        raise error
    if not deadline.allows(delay):
        _add_to_message(error, f"; not retried: {deadline.reached_text()} (too little time left for a retry)")
        raise error
    return delay


def _add_to_message(error: Exception, said: str) -> None:
    if isinstance(error, RelayError):
        error.message += said


def _for_retry(request: HttpRequest) -> HttpRequest:
    """What a retry of ``request`` sends: the request signed anew where its signature ages."""
    return request if request.signed_again is None else request.signed_again()


def _note_undecided(error: Exception, so_far: _SoFar, request: HttpRequest, sending: Sending) -> None:
    """An attempt that may have been processed leaves every later one's error so: a publish answered 504 and then,
    retried, 503 (or refused a connection) may have been delivered by the first attempt."""
    if not isinstance(error, RelayError) or request.method == "GET":
        return
    if error.outcome_unknown:
        so_far.undecided = True
    elif so_far.undecided:
        _add_to_message(error, _may_have_been_processed(sending, earlier=True))
        error.outcome_unknown = True


def _answer_error(request: HttpRequest, response: HttpResponse, sending: Sending) -> Exception:
    if 300 <= response.status < 400:
        return _redirect_error(response, sending)
    error = sending.error_for(response)
    # A query changes nothing, whatever became of it
    if (
        isinstance(error, RelayError)
        and request.method != "GET"
        and leaves_outcome_unknown(response.status, error.code)
    ):
        _add_to_message(error, _may_have_been_processed(sending))
        error.outcome_unknown = True
    return error


def _exchange(
    client: httpx.Client,
    request: HttpRequest,
    sending: Sending,
    attempt: _Attempt,
    trace: Callable[[str, dict[str, Any]], None],
) -> HttpResponse | _Failed:
    """``request`` sent and its answer read, the body up to its limit; a RuntimeError if ``client`` is closed."""
    reading = _EXCHANGE_DEADLINE.set(attempt.deadline)
    try:
        try:
            response = client.send(_built(client, request, attempt, trace), stream=True)
        except httpx.HTTPError as exc:
            return _Failed(exc, answered=False)
        try:
            body = _Body(response.status_code)
            for chunk in response.iter_bytes():
                if not body.add(chunk):
                    break
        except httpx.HTTPError as exc:
            return _Failed(exc, answered=True)
        finally:
            response.close()  # one not read to its end closes its connection: the rest is never read
    finally:
        _EXCHANGE_DEADLINE.reset(reading)
    return _response(response, body, sending)


async def _exchange_async(
    client: httpx.AsyncClient, request: HttpRequest, sending: Sending, attempt: _Attempt, *, traced: bool
) -> HttpResponse | _Failed:
    """``_exchange`` with an ``httpx.AsyncClient``, its progress traced into ``attempt``. The deadline bounds the
    whole exchange: httpcore cuts each wait to the time left as the wait begins, and a server that sends its answer a
    few bytes at a time would hold a read past it. ``traced``: whether the client's transport reports its progress (a
    client passed in may not): if not, a request cut by the deadline may have gone out."""
    answered = False
    try:
        built = _built(client, request, attempt, attempt.trace_async)
        async with asyncio.timeout(attempt.deadline.wait(None)):
            response = await client.send(built, stream=True)
            answered = True
            try:
                body = _Body(response.status_code)
                async for chunk in response.aiter_bytes():
                    if not body.add(chunk):
                        break
            finally:
                await response.aclose()
    except httpx.HTTPError as exc:
        return _Failed(exc, answered=answered)
    except TimeoutError:
        cut: httpx.TimeoutException
        if attempt.sent or not traced:
            cut = httpx.ReadTimeout("the answer had not come whole by the deadline", request=built)
        else:
            cut = httpx.ConnectTimeout("no connection by the deadline", request=built)
        return _Failed(cut, answered=answered)
    return _response(response, body, sending)


class _Attempt:
    """One exchange as httpcore reports it through httpx's ``trace`` request extension: whether the request may have
    gone out, and the connection it is opening."""

    __slots__ = ("connecting", "deadline", "handshaking", "sent")

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        # From the moment its head is being written: bytes handed to a connection may still reach the server after
        # the request is cancelled (a closing transport flushes what it holds), so a request cut short while being
        # written counts as sent. Before, it waited for a connection, or was opening one: the provider got nothing.
        self.sent = False
        # The network stream of the connection the exchange opened, while its TLS handshake may be under way
        self.connecting: Any = None
        # A sync exchange's duplicate of that connection's socket during its TLS handshake (see _ProcessClient)
        self.handshaking: socket.socket | None = None

    def check_time_left(self) -> None:
        """Before the request is begun, and again at the last moment before its head is written (after it may have
        waited for a connection, and opened one): raises _TooLate rather than send it with less than the deadline's
        send window left. Raised from the trace, it ends the exchange with nothing written."""
        if self.deadline.too_late():
            raise _TooLate(self.deadline.reached_text())

    async def trace_async(self, event: str, info: dict[str, Any]) -> None:
        if event.endswith(".send_request_headers.started"):
            self.check_time_left()
            self.sent = True
        elif event.endswith(".connect_tcp.complete"):
            self.connecting = info["return_value"]
        elif event.endswith(".start_tls.failed") and not isinstance(info["exception"], Exception):
            # httpcore closes the connection of a failed handshake, not of a cancelled one (aclose(), the caller's
            # timeout, the end of the loop): its socket would be left open for the garbage collector to warn about
            await self.connecting.aclose()


@dataclass(slots=True)
class _SoFar:
    """What a request's attempts did so far: how many were made, whether any went out, and whether one that went
    out may have been processed (it got no answer, or one that leaves it open, such as a gateway's 504)."""

    attempts: int = 0
    sent: bool = False
    undecided: bool = False

    def add(self, *, sent: bool, answered: bool) -> None:
        self.attempts += 1
        self.sent = self.sent or sent
        self.undecided = self.undecided or (sent and not answered)

    def closed(self, request: HttpRequest, sending: Sending, *, in_flight: bool = False) -> ClientClosed:
        """The error of a client closed during an attempt (``in_flight``, once it was added) or before one; closed
        before the first, the request is not named: nothing was sent."""
        if not in_flight and not self.attempts:
            return ClientClosed()
        return ClientClosed(
            in_flight_to=_host(request),
            sent=self.sent,
            unanswered=self.undecided,
            query=request.method == "GET",
            publishes=sending.publishes,
        )


def _outcome_sent(outcome: HttpResponse | _Failed, attempt: _Attempt, traced: bool) -> bool:
    """Whether an attempt that ended went out: as traced, or when its client's transport may not trace (a client
    passed in), as its error says."""
    if isinstance(outcome, HttpResponse):
        return True
    return attempt.sent if traced else _was_sent(outcome.exc)


def _built(
    client: httpx.Client | httpx.AsyncClient, request: HttpRequest, attempt: _Attempt, trace: Callable[..., Any]
) -> httpx.Request:
    attempt.check_time_left()
    extensions: dict[str, Any] = {"trace": trace}
    timeouts = attempt.deadline.timeouts(client.timeout)
    if timeouts is not None:
        extensions["timeout"] = timeouts
    return client.build_request(
        request.method, request.url, headers=request.headers, content=request.body, extensions=extensions
    )


# The deadline of the sync exchange under way in this thread, which every read of its answer is cut to
_EXCHANGE_DEADLINE: ContextVar[Deadline | None] = ContextVar("relay_exchange_deadline", default=None)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection of a sync client whose every read waits no longer than the exchange's deadline. httpcore reads
    the read timeout once for the answer's head and once for its body, each cut to the time left then (``_Timeouts``),
    and gives every read of the phase that much: a server sending its answer a few bytes at a time renewed it at each
    read, and held the request past the deadline for as long as it went on sending."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = _EXCHANGE_DEADLINE.get()
        return self._stream.read(max_bytes, timeout if deadline is None else deadline.wait(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's own sync backend, its connections made ``_DeadlineStream``s."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _bound_reads_by_the_deadline(client: httpx.Client) -> None:
    """Makes the connections of ``client``'s transports, its own and those of the proxies the environment sets,
    ``_DeadlineStream``s. httpx has no parameter for the network backend of the httpcore pools it makes, and giving it
    a transport would drop the proxies, so each pool's backend is wrapped in place (a test fails if httpx or httpcore
    stop using it)."""
    for transport in (client._transport, *client._mounts.values()):
        if isinstance(transport, httpx.HTTPTransport):
            transport._pool._network_backend = _DeadlineBackend(transport._pool._network_backend)


class SyncSender:
    """Sends with one ``httpx.Client`` per process. A process forked once the sender was made (gunicorn --preload,
    uWSGI without lazy-apps, multiprocessing) has a copy of its parent's client, keep-alive connections included:
    requests that both sent on one connection would interleave their bytes, and fail as whatever the server made of
    them (a wrong signature, a malformed request). So a process makes a client of its own at its first request; the
    copy is dropped unclosed (a parent's thread may have held its pool's lock at the fork), which closes its sockets
    in that process alone. A ``client`` passed in is used as is, in every process.

    ``close()`` from another thread ends a request waiting for its answer at once: closing a socket does not wake a
    thread reading from it, shutting it down does."""

    def __init__(
        self,
        policy: RetryPolicy = DEFAULT_RETRY,
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], object] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._given = client
        self._clients = {os.getpid(): _ProcessClient(client or self._new_client())}
        self._closing = threading.Event()
        # The wait between attempts: on the closing event by default, so that close() ends it at once
        self._sleep = sleep or self._closing.wait
        self._jitter = jitter
        self._closed = False

    def _new_client(self) -> httpx.Client:
        client = httpx.Client(timeout=self.policy.timeout, limits=_SYNC_LIMITS)
        _bound_reads_by_the_deadline(client)
        return client

    def _here(self) -> _ProcessClient:
        """This process's client (a dict lookup per request: os.getpid() is a cheap system call)."""
        pid = os.getpid()
        here = self._clients.get(pid)
        if here is not None:
            return here
        fresh = _ProcessClient(self._given or self._new_client())
        here = self._clients.setdefault(pid, fresh)  # atomic: the threads of a new process share the first stored
        if here is not fresh and self._given is None:
            fresh.client.close()
        for other in list(self._clients):  # the process forked from
            if other != pid:
                self._clients.pop(other, None)
        return here

    def send(self, request: HttpRequest, sending: Sending, deadline: Deadline | None = None) -> HttpResponse:
        """``deadline``: the operation's, which ``request`` is part of (by default one of its own)."""
        deadline = deadline or Deadline(self.policy)
        so_far = _SoFar()
        traced = self._given is None  # a client passed in may have a transport that reports no progress
        while True:
            here = self._here()
            if self._closed or here.client.is_closed:  # httpx would raise a bare RuntimeError
                raise so_far.closed(request, sending)
            attempt = _Attempt(deadline)
            try:
                outcome = _exchange(here.client, request, sending, attempt, here.tracer(attempt))
            except RuntimeError:
                if here.client.is_closed:  # closed from another thread since the check above
                    raise so_far.closed(request, sending) from None
                raise
            if isinstance(outcome, _Failed) and self._closed:
                # close() from another thread cut the connection: no network fault
                so_far.add(sent=attempt.sent or not traced, answered=False)
                raise so_far.closed(request, sending, in_flight=True)
            so_far.add(sent=_outcome_sent(outcome, attempt, traced), answered=isinstance(outcome, HttpResponse))
            pool_size = None if self._given is not None else _POOL_SIZE
            result = _after_attempt(self.policy, so_far, request, sending, outcome, self._jitter, pool_size, deadline)
            if isinstance(result, HttpResponse):
                return result
            self._sleep(result)
            request = _for_retry(request)

    def close(self) -> None:
        self._closed = True
        self._closing.set()
        here = self._here()
        here.cut()
        here.client.close()


class _ProcessClient:
    """One process's ``httpx.Client``, and the sockets it opened, to shut down when it is closed."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()  # close() runs in another thread than the requests
        self._cut = False

    def tracer(self, attempt: _Attempt) -> Callable[[str, dict[str, Any]], None]:
        """httpx's ``trace`` request extension for one exchange: httpcore reports each connection it opens, and its
        TLS layer, with the network stream as ``return_value``, and when it starts writing the request."""

        def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith(".send_request_headers.started"):
                attempt.check_time_left()
                with self._lock:
                    # Once cut, every socket of the client was shut down: the request's refuses its first byte
                    attempt.sent = not self._cut
            elif event.endswith((".connect_tcp.complete", ".start_tls.complete")):
                opened = info["return_value"].get_extra_info("socket")
                attempt.connecting = opened
                if opened is not None:  # a stream with no socket (httpcore's mock backends): nothing to shut down
                    self._add(opened)
            elif event.endswith(".start_tls.started") and attempt.connecting is not None:
                # ssl's handshake moves the descriptor to a socket object of its own, out of reach until it is
                # done: a duplicate of it lets cut() end a handshake that waits for the server (a close() would
                # otherwise wait for the timeout, or for ever). Held during the handshake only, as it keeps the
                # connection open.
                attempt.handshaking = attempt.connecting.dup()
                self._add(attempt.handshaking)
            if event.endswith((".start_tls.complete", ".start_tls.failed")) and attempt.handshaking is not None:
                attempt.handshaking.close()
                attempt.handshaking = None

        return trace

    def _add(self, opened: socket.socket) -> None:
        with self._lock:
            self._sockets.add(opened)
            cut = self._cut
        if cut:  # opened while close() ran: no request waits on it
            _shut_down(opened)

    def cut(self) -> None:
        """Ends every request in flight: a thread waiting for an answer reads the end of the connection."""
        with self._lock:
            self._cut = True
            # Under the lock, so that a request that starts writing after sees its socket shut down already
            for sock in list(self._sockets):
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # A socket closed already raises OSError: it has no descriptor left, so none reused by another socket is touched
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class AsyncSender:
    """Sends with one ``httpx.AsyncClient`` per event loop (:class:`LoopClients`), so that an ``AsyncRelay`` shared
    by several ``asyncio.run()`` calls works in each. A ``client`` passed in is used as is, in every loop.

    ``aclose()``, from any loop or thread, ends the requests under way at once: each exchange and each wait between
    attempts runs as a task of its own, which it cancels. Closing the clients alone missed a request whose connection
    was still being opened (it went on once it opened, on a connection no longer in the pool), and cannot be done
    from another thread than the loop's."""

    def __init__(
        self,
        policy: RetryPolicy = DEFAULT_RETRY,
        *,
        client: httpx.AsyncClient | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._given = client
        self._loops = LoopClients(lambda: httpx.AsyncClient(timeout=self.policy.timeout, limits=_LIMITS))
        self._jitter = jitter
        self._closed = False
        # The exchanges and waits between attempts under way, each with its loop: aclose() cancels them
        self._under_way: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = set()

    async def _client(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore | None]:
        """This loop's client, and the slots its requests take (None for a ``client`` passed in, whose pool is its
        own)."""
        if self._given is not None:
            return self._given, None
        return await self._loops.here()

    async def send(self, request: HttpRequest, sending: Sending, deadline: Deadline | None = None) -> HttpResponse:
        """``deadline``: the operation's, which ``request`` is part of (by default one of its own)."""
        deadline = deadline or Deadline(self.policy)
        so_far = _SoFar()
        traced = self._given is None  # a client passed in may have a transport that reports no progress
        while True:
            if self._closed:
                raise so_far.closed(request, sending)
            client, slots = await self._client()
            async with _slot(slots, deadline.wait(self.policy.timeout), deadline, request, so_far, sending):
                if self._closed or client.is_closed:  # closed before, or while the request waited for a slot
                    raise so_far.closed(request, sending)
                attempt = _Attempt(deadline)
                outcome = await self._until_closed(_exchange_async(client, request, sending, attempt, traced=traced))
            if outcome is None or (isinstance(outcome, _Failed) and self._closed):
                # aclose() during the request ended it, or cut its connection: no network fault
                so_far.add(sent=attempt.sent or not traced, answered=False)
                raise so_far.closed(request, sending, in_flight=True)
            so_far.add(sent=_outcome_sent(outcome, attempt, traced), answered=isinstance(outcome, HttpResponse))
            pool_size = None if self._given is not None else _POOL_SIZE
            result = _after_attempt(self.policy, so_far, request, sending, outcome, self._jitter, pool_size, deadline)
            if isinstance(result, HttpResponse):
                return result
            # aclose() ends the wait, and the next attempt then raises ClientClosed
            await self._until_closed(asyncio.sleep(result))
            request = _for_retry(request)

    async def _until_closed(self, work: Coroutine[Any, Any, T]) -> T | None:
        """``work``'s result, or None once aclose() (from any loop or thread) ended it: it runs as a task of its own,
        which aclose() cancels, so that a cancellation of the caller's task is still the caller's."""
        loop = asyncio.get_running_loop()
        entry = (loop, asyncio.ensure_future(work))
        self._under_way.add(entry)
        try:
            if self._closed:  # closed from another thread after send() checked, before aclose() could see it here
                entry[1].cancel()
            return await entry[1]
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._closed or (task is not None and task.cancelling()):  # the caller's own cancellation
                raise
            return None
        finally:
            self._under_way.discard(entry)

    async def aclose(self) -> None:
        self._closed = True
        for loop, work in list(self._under_way):
            if not loop.is_closed():
                loop.call_soon_threadsafe(work.cancel)
        if self._given is not None:
            await self._given.aclose()
        else:
            await self._loops.aclose()


class LoopClients:
    """One ``httpx.AsyncClient`` per event loop, made by ``make`` at the loop's first use: httpx's connections belong
    to the loop that opened them, so a client shared by several ``asyncio.run()`` calls (scripts, CLI commands,
    per-test loops, an app served by one test client after another) would otherwise reuse a dead loop's connections.

    A loop's client is closed when that loop shuts down (``asyncio.run()`` and ``asyncio.Runner`` finalise async
    generators while the loop still runs: a generator started in the loop closes it), since once the loop is closed
    its connections can no longer be closed, only left to the garbage collector."""

    def __init__(self, make: Callable[[], httpx.AsyncClient]) -> None:
        self._make = make
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    async def here(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """This loop's client, and the slots its requests take (for :class:`AsyncSender`)."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None or entry.client.is_closed:  # closed by its loop's shutdown, which still uses the clients
            for other, finished in list(self._clients.items()):
                # A finished loop closed its client when it shut down; one closed without shutting down no longer
                # can: its connections are left to the garbage collector
                if other.is_closed():
                    self._clients.pop(other, None)
                    _finish_here(finished.closer)
            client = self._make()
            slots = asyncio.Semaphore(_POOL_SIZE)
            entry = self._clients[loop] = _LoopClient(client, _close_with_loop(client, loop), slots)
            await anext(entry.closer)  # registered with the loop: its shutdown closes the client
        return entry.client, entry.slots

    async def aclose(self) -> None:
        """Closes every loop's client: this loop's here, a running loop's in its own thread."""
        running = asyncio.get_running_loop()
        entries, self._clients = self._clients, {}
        for loop, entry in entries.items():
            if loop is running:
                await entry.client.aclose()
            elif loop.is_running():  # another thread's loop: closed there
                asyncio.run_coroutine_threadsafe(entry.client.aclose(), loop)
            # A loop that no longer runs closed its client when it shut down; one closed without shutting down
            # cannot close its connections any more: the garbage collector will
            _finish_here(entry.closer)


@dataclass(frozen=True, slots=True)
class _LoopClient:
    client: httpx.AsyncClient
    closer: AsyncGenerator[None, None]
    # One per connection of the pool: a request takes one before it goes to httpx. httpcore 1.0's pool, on every
    # request that ends, goes through every queued request for each connection: a thousand requests queued at once
    # starved the event loop, and all failed as PoolTimeout against a healthy server. Queued here, they cost nothing.
    slots: asyncio.Semaphore


@contextlib.asynccontextmanager
async def _slot(
    slots: asyncio.Semaphore | None,
    wait: float | None,
    deadline: Deadline,
    request: HttpRequest,
    so_far: _SoFar,
    sending: Sending,
) -> AsyncIterator[None]:
    """Holds one of ``slots`` while the request is sent and answered; waiting for one longer than ``wait`` (the
    policy's timeout, which bounded the wait in httpx's pool, cut to the time left before the deadline) fails as a
    full pool does there: after an attempt that may have been processed, with its outcome unknown."""
    if slots is None:
        yield
        return
    try:
        async with asyncio.timeout(wait):
            await slots.acquire()
    except TimeoutError:
        error = _pool_full(request, _POOL_SIZE, wait, deadline)
        _note_undecided(error, so_far, request, sending)
        raise error from None
    try:
        yield
    finally:
        slots.release()


async def _close_with_loop(client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
    """Started in ``loop``, which then finalises it when it shuts down, or when it is dropped: ``client`` is closed
    in ``loop`` while it still runs. Finished from anywhere else, it only ends (there is no loop to close in)."""
    try:
        yield
    finally:
        if _running_loop() is loop and not client.is_closed:
            await client.aclose()


def _finish_here(closer: AsyncGenerator[None, None]) -> None:
    """Ends ``closer`` without awaiting, once its client is closed or out of its loop: it then has nothing to await."""
    step = closer.aclose()
    try:
        step.send(None)
    except (StopIteration, RuntimeError):  # ended; or being ended by its loop's shutdown right now
        return
    step.close()  # it awaited, which it does only in its loop with its client open: not reached


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _host(request: HttpRequest) -> str:
    url = httpx.URL(request.url)
    return url_host(url.host) + (f":{url.port}" if url.port else "")

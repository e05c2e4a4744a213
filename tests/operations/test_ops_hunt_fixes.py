"""The operations surface against bad inputs and configurations: the usage file (wrong shapes, its fallback, its
directory, peaks of runs serving together), credentials in logs and configuration errors, webhooks the HTTP client
cannot send, the console's publish body, an unreachable Redis and CORS on refusals. Each bad input gets its specific
error, and the emulator keeps serving."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis as SyncRedis
from websockets.exceptions import ConnectionClosed

from relay.cost.usage import parse_usage
from relay.emulator.config import App, Webhook
from relay.emulator.logs import Redactor, redact_urls
from relay.emulator.usage import AppMeter, add_peaks, concurrent_peaks, merge_documents, usage_document
from relay.emulator.webhooks import WebhookDispatcher
from tests.cli_support import assert_refused, run_relay, write
from tests.cluster.conftest import RedisServer
from tests.conftest import StartEmulator, free_port, whole_run
from tests.emulator_process import EmulatorProcess
from tests.operations.support import APP, CREDENTIALS, api, make_certificate, publish, ws_client
from tests.webhook_receiver import Receiver


async def read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


async def usage_run(usage_file: Path, publishes: int, *args: str) -> EmulatorProcess:
    """An emulator writing ``usage_file``, ``publishes`` publishes made to it, stopped: exit 0, no traceback."""
    relay = await EmulatorProcess.start(*CREDENTIALS, "--usage-file", str(usage_file), *args)
    try:
        for _ in range(publishes):
            await publish(f"http://127.0.0.1:{relay.port}", APP, "news", "e", "x")
        assert await relay.stop() == 0
    finally:
        await relay.kill()
    assert not any("Traceback" in line for line in relay.stderr), relay.stderr
    return relay


def publishes_in(text: str) -> int:
    return sum(day.publishes for day in parse_usage(json.loads(text)).apps[APP.app_id].days.values())


# -- the usage file -----------------------------------------------------------------------------------------------

ZERO_DAY = dict.fromkeys(AppMeter("1").today().to_dict(), 0)
WRONG_SHAPES = {
    "an array": ("[]", "JSON an array, not an object"),
    "null": ("null", "JSON null, not an object"),
    "a number": ("5", "JSON 5, not an object"),
    "unique_users null": (
        json.dumps({"version": 1, "apps": {"1": {"unique_users": None, "days": {"2026-11-29": ZERO_DAY}}}}),
        "apps.1.unique_users is not a whole number from 0 to 10**18",
    ),
    # Three files relay cost refuses, which the emulator added to (the third losing the first copy's counts):
    "an app without days": (
        json.dumps({"version": 2, "apps": {"other": {"days": {}}}}),
        "apps.other is not an object with days",
    ),
    "a count over 10**18": (
        json.dumps({"version": 1, "apps": {"1": {"days": {"2026-11-29": {**ZERO_DAY, "bytes_out": 10**18 + 1}}}}}),
        "apps.1.days.2026-11-29.bytes_out is not a whole number from 0 to 10**18",
    ),
    "a day given twice": (
        '{"version": 1, "apps": {"1": {"days": {"2026-11-29": '
        + json.dumps(ZERO_DAY)
        + ', "2026-11-29": '
        + json.dumps(ZERO_DAY)
        + "}}}}",
        "'2026-11-29' is given twice in one object",
    ),
    "a day given as an array": (
        json.dumps({"version": 1, "apps": {"1": {"days": {"2026-11-29": []}}}}),
        "apps.1.days.2026-11-29 is not an object",
    ),
    "a count given as a string": (
        json.dumps({"version": 1, "apps": {"1": {"days": {"2026-11-29": {**ZERO_DAY, "publishes": "3"}}}}}),
        "apps.1.days.2026-11-29.publishes is not a whole number from 0 to 10**18",
    ),
}


@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
async def test_a_usage_file_of_the_wrong_shape_is_left_alone_and_the_usage_goes_to_new(
    tmp_path: Path, shape: str
) -> None:
    """docs/emulator.md: "a file that is not a usage file … is left alone … and the usage is added to usage.json.new"
    (valid JSON of another shape crashed the shutdown with a traceback, and the run's usage was lost)."""
    content, reason = WRONG_SHAPES[shape]
    usage_file = write(tmp_path, content, "usage.json")
    relay = await usage_run(usage_file, 2)
    assert await read(usage_file) == content
    assert publishes_in(await read(tmp_path / "usage.json.new")) == 2
    logged = await relay.wait_for_output("is not a usage file")
    assert reason in logged and "usage.json.new instead" in logged


async def test_usage_new_accumulates_across_runs_and_a_bad_new_gets_a_file_of_its_own(tmp_path: Path) -> None:
    """usage.json.new is added to like usage.json (it was overwritten: run 1's usage lost); when it is not a usage
    file either, it is left alone too and the usage goes to usage.json.new.<UTC time>-<pid>."""
    usage_file = write(tmp_path, '{"version": 2}', "usage.json")
    await usage_run(usage_file, 1)
    await usage_run(usage_file, 2)
    new = tmp_path / "usage.json.new"
    assert publishes_in(await read(new)) == 1 + 2
    new.write_text("not json")
    relay = await usage_run(usage_file, 3)
    assert await read(new) == "not json" and await read(usage_file) == '{"version": 2}'
    (stamped,) = await asyncio.to_thread(lambda: list(tmp_path.glob("usage.json.new.*-*")))
    assert publishes_in(await read(stamped)) == 3
    logged = await relay.wait_for_output(r"usage\.json\.new is not a usage file")
    assert "not valid JSON" in logged and stamped.name in logged


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("a-file/usage.json", "is not a directory"),
        ("missing/usage.json", "directory {tmp}/missing does not exist"),
        ("a-directory", "it is a directory"),
        ("a-fifo", "it is not a regular file"),  # read at shutdown, it held the stop forever
        ("/sys/usage.json", "/sys/usage.json.lock cannot be created: Permission denied"),  # even for root
    ],
)
async def test_a_usage_file_that_cannot_be_written_is_refused_at_start(tmp_path: Path, where: str, reason: str) -> None:
    """It started, then failed at shutdown (FileExistsError, exit 1, the usage lost)."""
    write(tmp_path, "x", "a-file")
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "a-fifo")
    outcome = await run_relay("emulator", "--port", "0", "--usage-file", str(tmp_path / where))
    assert_refused(outcome, "usage file", "cannot be written", reason.format(tmp=tmp_path))
    config = write(tmp_path, f"[server]\nusage_file = '{tmp_path / where}'\n")
    assert_refused(await run_relay("emulator", "--port", "0", "--config", str(config)), reason.format(tmp=tmp_path))
    served = await run_relay("emulator", "--port", "0", "--usage-file", str(tmp_path / "usage.json"))
    assert served.returncode is None, served.stderr


def day_of(document: dict[str, Any]) -> dict[str, int]:
    result: dict[str, int] = whole_run(document["apps"]["1"]["days"])
    return result


def test_runs_serving_together_add_their_peaks_and_later_runs_keep_the_larger() -> None:
    """Merge rule (docs/emulator.md "Usage meter"): workers of one run each saw their share of the connections, so
    the file's peak is their sum (an upper bound); a run after them keeps the larger peak."""
    clock = 1_800_000_000.0

    def run(connections: int) -> dict[str, Any]:
        meter = AppMeter("1", clock=lambda: clock)
        for index in range(connections):
            meter.connected(f"1.{index}")
        return usage_document([meter], "test")

    file = run(30)  # a busy run, earlier that day
    first, second = run(10), run(12)  # two workers, started after it stopped
    file = merge_documents(file, first)  # the first worker to stop: its run did not overlap the busy one
    assert day_of(file)["peak_connections"] == 30
    group = add_peaks({}, first)
    file = merge_documents(file, second, group)  # the second overlapped the first: 10 + 12 were open together
    assert day_of(file)["peak_connections"] == 30  # still below the busy run's
    group = add_peaks(group, second)
    file = merge_documents(file, run(15), group)  # a third worker: 10 + 12 + 15 were open together
    assert day_of(file)["peak_connections"] == 37
    assert day_of(merge_documents(file, run(20)))["peak_connections"] == 37  # a later run, alone: the larger


async def test_workers_in_turn_add_their_peaks_and_a_restart_keeps_the_larger(tmp_path: Path) -> None:
    """Through the file and its lock, as the emulator writes them: two emulators serving at once (as --workers does)
    add their peaks of connections; the same run again, after they stopped, keeps the larger."""
    usage_file = tmp_path / "usage.json"

    async def together() -> None:
        relays = [await EmulatorProcess.start(*CREDENTIALS, "--usage-file", str(usage_file)) for _ in range(2)]
        try:
            clients = [await ws_client(f"ws://127.0.0.1:{relay.port}/app/{APP.key}") for relay in relays]
            clients.append(await ws_client(f"ws://127.0.0.1:{relays[0].port}/app/{APP.key}"))
            for client in clients:
                await client.close()
            assert [await relay.stop() for relay in relays] == [0, 0]
        finally:
            for relay in relays:
                await relay.kill()

    await together()
    file = json.loads(await read(usage_file))
    assert day_of(file)["peak_connections"] == 2 + 1
    await together()  # a restart: the same peaks again, not added to the first run's
    assert day_of(json.loads(await read(usage_file)))["peak_connections"] == 3
    parse_usage(json.loads(await read(usage_file)))


def test_runs_that_served_one_after_another_beside_others_do_not_add_up() -> None:
    """A node B serving all along while A is restarted three times: at any moment two runs served, so the peaks that
    serving alongside adds are B's and one of A's, not every A's (each A overlapped B, not the other A's)."""
    peaks = {"1": {"2026-12-03": {"peak_connections": 1}}}
    b = (0.0, 400.0, {"1": {"2026-12-03": {"peak_connections": 5}}})
    restarts = [(float(start), start + 100.0, peaks) for start in (0, 100, 200)]
    assert concurrent_peaks([b, *restarts], 300.0, 400.0) == {"1": {"2026-12-03": {"peak_connections": 5}}}
    assert concurrent_peaks([b, *restarts], 250.0, 400.0) == {"1": {"2026-12-03": {"peak_connections": 5 + 1}}}
    overlapping = [(0.0, 300.0, peaks), (50.0, 350.0, peaks), (500.0, 600.0, peaks)]  # two together, one later
    assert concurrent_peaks(overlapping, 100.0, 400.0) == {"1": {"2026-12-03": {"peak_connections": 2}}}
    assert concurrent_peaks(overlapping, 400.0, 450.0) == {}


async def test_a_chain_of_overlapping_restarts_keeps_the_peak_of_two_runs_at_once(tmp_path: Path) -> None:
    """Each run starts before the previous one stops (a restart beside the old process, as --reuse-port does), with
    one connection each: never more than two were open, and the file said one more with each restart."""
    usage_file = tmp_path / "usage.json"
    relays: list[EmulatorProcess] = []
    try:
        previous = None
        for _ in range(4):
            relays.append(relay := await EmulatorProcess.start(*CREDENTIALS, "--usage-file", str(usage_file)))
            client = await ws_client(f"ws://127.0.0.1:{relay.port}/app/{APP.key}")
            if previous is not None:
                old_relay, old_client = previous
                await old_client.close()
                assert await old_relay.stop() == 0
            previous = relay, client
        assert previous is not None
        await previous[1].close()
        assert await previous[0].stop() == 0
    finally:
        for relay in relays:
            await relay.kill()
    file = json.loads(await read(usage_file))
    assert day_of(file)["peak_connections"] == 2
    parse_usage(file)


# -- credentials in logs and configuration errors ---------------------------------------------------------------


def test_url_credentials_are_hidden_up_to_the_last_at_of_the_authority() -> None:
    """urlsplit and httpx take the user-info up to the authority's last '@', and a password may hold quotes: the
    redactor stopped at the first '@' and at quotes. One function for the logs, the console and config errors."""
    cases = {
        "webhook to http://bob:it'sSECRET2@127.0.0.1:1/x failed": "webhook to http://***@127.0.0.1:1/x failed",
        "http://alice:pa@ssSECRET5@127.0.0.1:1/x": "http://***@127.0.0.1:1/x",
        'HTTP Request: POST http://u:p"w@h/x "HTTP/1.1 500"': 'HTTP Request: POST http://***@h/x "HTTP/1.1 500"',
        '{"url": "http://h:1/a", "mail": "a@b"}': '{"url": "http://h:1/a", "mail": "a@b"}',
        "redis://:pw@cache:6379/0?x=a@b": "redis://***@cache:6379/0?x=a@b",
    }
    for text, redacted in cases.items():
        assert redact_urls(text) == redacted
        assert Redactor()(text) == redacted


def test_a_secret_is_hidden_percent_encoded_too() -> None:
    """Percent-encoded (a client that put it in a URL: the 4001 line logs the path), and JSON-escaped either way."""
    redact = Redactor(['gehéim"42 x'])
    forms = (
        "geh%C3%A9im%2242%20x",
        "geh%c3%a9im%2242%20x",
        "geh%C3%A9im%2242+x",
        'geh\\u00e9im\\"42 x',
        'gehéim\\"42 x',
    )
    for form in forms:
        assert redact(f"key '{form}'") == "key '***'", form


async def test_webhook_credentials_never_reach_the_logs(tmp_path: Path, receiver: Receiver) -> None:
    """Real process, real receiver answering 500: httpx's own "HTTP Request" line (shown with --log-level debug) and
    the emulator's failure lines showed passwords holding a quote or an unencoded '@'; so did the refusal of a
    percent-encoded secret."""
    receiver.status = 500
    port = receiver.url.rsplit(":", 1)[1]
    secret = 'gehéim"42'
    config = write(
        tmp_path,
        f"""[server]
shutdown_webhook_grace = 0.2
[[apps]]
app_id = "1"
key = "k"
secret = '{secret}'
webhook_batch_ms = 10
webhook_retry_for = 0
[[apps.webhooks]]
url = "http://bob:it'sSECRET2@127.0.0.1:{port}/x"
[[apps.webhooks]]
url = "http://alice:pa@ssSECRET5@127.0.0.1:{port}/y"
""",
    )
    for log_format in (["--log-level", "debug"], ["--log-json"]):
        relay = await EmulatorProcess.start("--config", str(config), *log_format)
        try:
            client = await ws_client(f"ws://127.0.0.1:{relay.port}/app/k")
            await client.subscribe("news", APP)
            await relay.wait_for_output("webhook to http://\\*\\*\\*@127.0.0.1:.*/y dropped 1 event")
            await relay.wait_for_output("webhook to http://\\*\\*\\*@127.0.0.1:.*/x dropped 1 event")
            if "debug" in log_format:
                await relay.wait_for_output("HTTP Request: POST http://\\*\\*\\*@127.0.0.1:.*/y")
            else:  # at the info level, a line per webhook request is noise: the emulator's own lines say what failed
                assert not [line for line in relay.stderr if "HTTP Request" in line]
            with pytest.raises(ConnectionClosed):  # a client taking the secret for the key: 4001, its path logged
                await ws_client(f"ws://127.0.0.1:{relay.port}/app/geh%C3%A9im%2242")
            await relay.wait_for_output("connection refused")
            await client.close()
            assert await relay.stop() == 0
        finally:
            await relay.kill()
        logged = "\n".join(relay.stderr)
        for leak in ("SECRET2", "SECRET5", "it's", "geh%C3%A9im", "gehéim"):
            assert leak not in logged, leak


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--webhook-url", "http://user:SECRETPW@h:0/x"], ["--webhook-url", "http://***@h:0/x"]),
        (["--webhook-url", "http://user:SECRET/PW@h/x"], ["--webhook-url", "user-info, not shown"]),
        (
            ["--redis-url", "redis://:SECRETPW@127.0.0.1:0"],
            ["--redis-url", "not one from 1 to 65535", "redis://***@127.0.0.1:0"],
        ),
        (["--redis-url", "http://:SECRETPW@cache:6379"], ["--redis-url", "http://***@cache:6379"]),
    ],
)
async def test_configuration_errors_hide_url_passwords(flags: list[str], fragments: list[str]) -> None:
    outcome = await run_relay("emulator", "--port", "0", *flags)
    assert_refused(outcome, *fragments)
    assert "SECRET" not in outcome.stderr


# -- webhooks the HTTP client cannot send -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("webhook", "fragments"),
    [
        ("url = 'http://xn--a.com/hooks'", ["webhooks[0]", "xn--a.com", "internationalized domain name"]),
        ("url = 'http://127.0.0.1:9/x'\nheaders = { 'Content-Length' = '3' }", ["'Content-Length' frames"]),
        ("url = 'http://127.0.0.1:9/x'\nheaders = { 'transfer-encoding' = 'chunked' }", ["'transfer-encoding'"]),
        ("url = 'http://127.0.0.1:9/x'\nheaders = { 'Host' = 'elsewhere' }", ["'Host' frames"]),
        ("url = 'http://127.0.0.1:9/x'\nheaders = { 'Connection' = 'close' }", ["'Connection' frames"]),
    ],
)
async def test_webhooks_httpx_cannot_send_are_configuration_errors(
    tmp_path: Path, webhook: str, fragments: list[str]
) -> None:
    """They were accepted, then killed the webhook's sender at its first event ("Task exception was never
    retrieved"): no retry, nothing counted, every later event lost."""
    config = write(tmp_path, f"[[apps]]\napp_id = '1'\nkey = 'k'\nsecret = 's'\n[[apps.webhooks]]\n{webhook}\n")
    assert_refused(await run_relay("emulator", "--port", "0", "--config", str(config)), *fragments)
    flag = await run_relay("emulator", "--port", "0", "--webhook-url", "http://xn--a.com/hooks")
    assert_refused(flag, "--webhook-url 'http://xn--a.com/hooks'")


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (" http://127.0.0.1:9/hooks", "' http://127.0.0.1:9/hooks' has whitespace around it: a URL has none"),
        ("http://127.0.0.1:9/hooks\n", "'http://127.0.0.1:9/hooks\\n' has whitespace around it: a URL has none"),
        ("http://exa mple.com/hooks", "must be an http:// or https:// URL, got 'http://exa mple.com/hooks'"),
    ],
)
async def test_a_webhook_url_with_whitespace_is_a_configuration_error(url: str, fragment: str) -> None:
    """urlsplit strips spaces from a URL's ends and reads on, so ' http://…' passed the check at start; httpx then
    read it as a URL with no scheme, and every delivery failed (UnsupportedProtocol) until its events were dropped. A
    trailing space posted to '/hooks%20', a 404 retried for five minutes."""
    outcome = await run_relay("emulator", "--port", "0", "--webhook-url", url)
    assert_refused(outcome, "--webhook-url", fragment)


class FailingOnce(httpx.AsyncHTTPTransport):
    """The first request fails with an error that is not an httpx one (as IDNA's and h11's were)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.failed:
            self.failed = True
            raise UnicodeError("a host the HTTP client refuses")
        return await super().handle_async_request(request)


async def test_a_webhook_sender_survives_any_error_counts_it_and_retries(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    app = App(app_id="1", key="k", secret="s", webhooks=(Webhook(url=receiver.url + "/hooks"),), webhook_batch_ms=0)
    statuses: list[int | None] = []
    async with httpx.AsyncClient(transport=FailingOnce()) as client:
        dispatcher = WebhookDispatcher(
            app, client, on_delivery=lambda hook, status, events, attempt: statuses.append(status)
        )
        with caplog.at_level(logging.WARNING, logger="relay.emulator.webhooks"):
            dispatcher.emit({"name": "channel_occupied", "channel": "news"})
            await receiver.wait_for(1, within=3.0)  # retried after about a second
            dispatcher.emit({"name": "channel_vacated", "channel": "news"})  # the sender still sends
            await receiver.wait_for(2)
        await dispatcher.close(grace=1.0)
    assert statuses == [None, 200, 200]  # the failure counted (relay_webhook_failures_total), then delivered
    assert receiver.event_names() == ["channel_occupied", "channel_vacated"]
    assert "could not be sent: UnicodeError: a host the HTTP client refuses" in caplog.text


# -- the console's publish body ---------------------------------------------------------------------------------


async def test_a_deeply_nested_console_publish_is_a_400_and_the_console_still_publishes() -> None:
    """It was a 500, with a RecursionError logged: the body is read by the project's reader of untrusted JSON."""
    relay = await EmulatorProcess.start(*CREDENTIALS)
    try:
        url = f"http://127.0.0.1:{relay.port}/console/publish"
        async with httpx.AsyncClient() as http:
            deep = await http.post(
                url,
                content=b'{"app_id": "1", "channel": "c", "event": "e", "data": ' + b"[" * 100_000,
                headers={"Content-Type": "application/json"},
            )
            assert deep.status_code == 400 and deep.json() == {"error": "the body nests arrays and objects too deeply"}
            fine = await http.post(url, json={"app_id": "1", "channel": "c", "event": "e", "data": [[1]]})
            assert fine.status_code == 200, fine.text
        assert await relay.stop() == 0
    finally:
        await relay.kill()
    assert not any("Traceback" in line or "RecursionError" in line for line in relay.stderr), relay.stderr


# -- Redis unreachable at start-up ------------------------------------------------------------------------------


@pytest.mark.parametrize("log_json", [[], ["--log-json"]])
async def test_a_redis_that_is_down_is_one_configuration_error_line(log_json: list[str]) -> None:
    """It was a multi-line traceback (not JSON with --log-json) and exit 1."""
    port = free_port()  # nothing listens there
    outcome = await run_relay(
        "emulator", "--port", "0", "--redis-url", f"redis://:downPW-7@127.0.0.1:{port}/0", *log_json
    )
    assert_refused(outcome, f"cannot reach Redis at redis://***@127.0.0.1:{port}/0: ", "Connection refused")
    assert "downPW-7" not in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["--workers", "0"],  # a flag's
        ["--config", "missing.toml"],  # the config file's, found before the log format is set up
        ["--redis-url", "redis://127.0.0.1:1/0"],  # Redis's, found after
    ],
)
async def test_a_configuration_error_under_log_json_is_a_json_line(arguments: list[str]) -> None:
    """It was the plain-text line, the one line of a --log-json run that a JSON log pipeline could not read. Now it
    is a JSON log line whose message is that line's text, and the exit status is still 2."""
    plain = await run_relay("emulator", "--port", "0", *arguments)
    assert_refused(plain)
    outcome = await run_relay("emulator", "--port", "0", *arguments, "--log-json")
    assert outcome.returncode == 2 and len(outcome.stderr.splitlines()) == 1, outcome.stderr
    line = json.loads(outcome.stderr)
    assert line.keys() == {"ts", "level", "logger", "msg"} and line["level"] == "error", line
    assert line["msg"] == plain.stderr.strip()


async def test_a_redis_that_asks_for_a_password_the_url_lacks_says_so(redis: RedisServer) -> None:
    """It was redis-py's "HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user>
    <pass> option can be used …", which names no password and no URL to put it in."""
    with SyncRedis(port=redis.port) as client:
        client.config_set("requirepass", "needed-PW")
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", redis.url)
    assert_refused(
        outcome,
        f"cannot reach Redis at {redis.url}: it asks for a password and the URL has none: ",
        "redis://:PASSWORD@HOST:PORT/DB",
        "redis_url",
    )
    assert "HELLO" not in outcome.stderr


async def test_a_rediss_url_at_a_plain_port_says_the_port_may_not_serve_tls(redis: RedisServer) -> None:
    """The TLS handshake gets no answer from a plain Redis port: it was only "Timeout connecting to server", after
    5 s (here the URL's own socket_connect_timeout makes it quick)."""
    url = f"rediss://127.0.0.1:{redis.port}/0?socket_connect_timeout=0.5"
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    assert_refused(outcome, f"cannot reach Redis at {url}: Timeout connecting to server", "not serve TLS", "redis://")


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server serving TLS only, on a free port (the one yielded); skipped where it is built without TLS."""
    binary = shutil.which("redis-server")
    assert binary is not None
    cert, key = make_certificate(tmp_path)
    port = free_port()
    tls = ["--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    server = subprocess.Popen(
        [binary, "--port", "0", "--bind", "127.0.0.1", "--save", "", *tls, "--tls-auth-clients", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"redis-server did not listen on {port}"
                time.sleep(0.05)
        else:
            pytest.skip("this redis-server does not serve TLS")
        yield port
    finally:
        server.terminate()
        server.wait()


async def test_a_rediss_url_at_a_port_answering_no_handshake_says_the_port_may_not_serve_tls() -> None:
    """It was only "[SSL: WRONG_VERSION_NUMBER] wrong version number"."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"-ERR not TLS\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"rediss://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    async with server:
        outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    assert_refused(outcome, f"cannot reach Redis at {url}: ", "WRONG_VERSION_NUMBER", "may not serve TLS")


async def test_a_redis_url_at_a_tls_only_port_says_the_port_may_serve_tls(tls_redis: int) -> None:
    """A TLS port resets a connection that does not start with a TLS handshake: it was only "Connection reset by
    peer"."""
    url = f"redis://127.0.0.1:{tls_redis}/0"
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    assert_refused(outcome, f"cannot reach Redis at {url}: ", "Connection reset by peer", "serves TLS", "rediss://")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        # rediss://'s option on redis://
        ("ssl_ca_certs=/etc/relay/redis-ca.pem", "option 'ssl_ca_certs' is not one redis-py reads from a redis:// URL"),
        ("sockettimeout=5", "option 'sockettimeout' is not one redis-py reads from a redis:// URL"),
        ("socket_timeout=5s", "Invalid value for 'socket_timeout'"),
    ],
)
@pytest.mark.parametrize("where", ["--redis-url", "redis_url"])
async def test_a_redis_url_option_redis_py_cannot_take_is_a_configuration_error(
    tmp_path: Path, query: str, named: str, where: str
) -> None:
    """redis-py takes the URL's options as its connections' keyword arguments: one it has not (or one of rediss://'s on
    redis://) was a TypeError traceback from inside the first connection, and exit 1."""
    url = f"redis://:optPW-3@127.0.0.1:{free_port()}/0?{query}"
    if where == "--redis-url":
        outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    else:
        config = write(tmp_path, f"[server]\nredis_url = '{url}'\n")
        outcome = await run_relay("emulator", "--port", "0", "--config", str(config))
    assert_refused(outcome, where, named)
    assert "optPW-3" not in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1


# -- CORS on the operations endpoints' refusals -----------------------------------------------------------------


async def test_refusals_of_the_operations_endpoints_allow_no_other_origin(start_emulator: StartEmulator) -> None:
    """docs/emulator.md: their responses never allow another origin to read them; the 401, 403 and 404 answers
    carried the Pusher HTTP API's "Access-Control-Allow-Origin: *"."""
    tokened = await start_emulator(app=APP, console_token="t0ken-for-cors")
    public = await start_emulator(app=APP, host="0.0.0.0")  # no token on a public host: the endpoints answer 404
    loopback = await start_emulator(app=APP)
    answers = {
        "401": (tokened.http_url, "/metrics", {}),
        "401 /usage": (tokened.http_url, "/usage", {}),
        "401 /console/events": (tokened.http_url, "/console/events?app=1", {}),
        "404": (public.http_url, "/console", {}),
        "403": (loopback.http_url, "/usage", {"X-Forwarded-For": "203.0.113.9"}),
        "404 unknown app": (loopback.http_url, "/console/events?app=nope", {}),
    }
    async with httpx.AsyncClient() as http:
        for label, (base, path, headers) in answers.items():
            response = await http.get(base + path, headers={"Origin": "https://evil.example", **headers})
            assert response.status_code == int(label[:3]), (label, response.status_code)
            assert response.headers["access-control-allow-origin"] == base, label
            assert "access-control-allow-methods" not in response.headers, label
        post = await http.post(
            loopback.http_url + "/console/publish", content=b"[", headers={"Content-Type": "application/json"}
        )
        assert post.status_code == 400 and post.headers["access-control-allow-origin"] == loopback.http_url
        # The Pusher HTTP API keeps "*", refusals included; and the console still serves.
        assert (await api(loopback.http_url, APP, "GET", "/apps/1/channels", secret="wrong")).headers[
            "access-control-allow-origin"
        ] == "*"
        assert (await http.get(loopback.http_url + "/usage")).status_code == 200

"""``relay publish``: one event from a shell, through the provider RELAY_URL names, to real subscribers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shlex
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from tests.cli_support import RELAY, assert_refused, run_relay
from tests.conformance.wsclient import Connect
from tests.conformance.wsclient import connect as connect
from tests.conftest import RunningEmulator, emulator_url


async def test_publishes_json_data_to_every_channel_named(emulator: RunningEmulator, connect: Connect) -> None:
    orders, audit = await connect(emulator), await connect(emulator)
    await orders.subscribed("orders")
    await audit.subscribed("private-audit")

    outcome = await run_relay(
        "publish", "orders", "private-audit", "order-ready", '{"id": 42}', env={"RELAY_URL": emulator_url(emulator)}
    )

    assert (outcome.returncode, outcome.stderr) == (0, "")
    assert outcome.stdout == "published order-ready to orders, private-audit\n"
    for client, channel in ((orders, "orders"), (audit, "private-audit")):
        frame = await client.expect("order-ready", channel)
        assert json.loads(frame["data"]) == {"id": 42}


async def test_data_from_standard_input_a_string_and_the_publisher_left_out(
    emulator: RunningEmulator, connect: Connect
) -> None:
    publisher, other = await connect(emulator), await connect(emulator)
    for client in (publisher, other):
        await client.subscribed("chat")
    env = {"RELAY_URL": emulator_url(emulator)}

    piped = await run_relay("publish", "chat", "message", "-", env=env, stdin='{"text": "from a pipe"}\n')
    text = await run_relay("publish", "chat", "message", "-", "--string", env=env, stdin="plain words\n")
    excluded = await run_relay("publish", "--socket-id", publisher.socket_id, "chat", "message", '"not to me"', env=env)

    assert [o.returncode for o in (piped, text, excluded)] == [0, 0, 0], [o.stderr for o in (piped, text, excluded)]
    assert json.loads((await other.expect("message", "chat"))["data"]) == {"text": "from a pipe"}
    assert (await other.expect("message", "chat"))["data"] == "plain words"
    assert (await other.expect("message", "chat"))["data"] == "not to me"  # a JSON string is sent as a string
    assert json.loads((await publisher.expect("message", "chat"))["data"]) == {"text": "from a pipe"}
    assert (await publisher.expect("message", "chat"))["data"] == "plain words"
    await publisher.sync()  # the third, its own socket id's, never came


async def test_the_url_flag_wins_over_the_environment(emulator: RunningEmulator, connect: Connect) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")

    outcome = await run_relay(
        "publish", "--url", emulator_url(emulator), "orders", "shipped", "1", env={"RELAY_URL": "memory://elsewhere"}
    )

    assert outcome.returncode == 0, outcome.stderr
    assert (await client.expect("shipped", "orders"))["data"] == "1"


async def test_data_that_is_not_json_is_refused_before_anything_is_sent(
    emulator: RunningEmulator, connect: Connect
) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")

    outcome = await run_relay("publish", "orders", "shipped", "hello", env={"RELAY_URL": emulator_url(emulator)})

    assert outcome.returncode == 2
    assert outcome.stderr == (
        "relay publish: DATA is not JSON (Expecting value: line 1 column 1 (char 0)): "
        "write a string in quotes, or pass --string\n"
    )
    await client.sync()  # nothing was published


async def test_data_nested_too_deeply_is_refused_without_a_traceback(
    emulator: RunningEmulator, connect: Connect
) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")
    deep = "[" * 5000 + "]" * 5000
    outcome = await run_relay("publish", "orders", "shipped", deep, env={"RELAY_URL": emulator_url(emulator)})
    assert outcome.returncode == 2
    assert outcome.stderr == "relay publish: DATA is JSON nested too deeply to be read (or sent)\n"
    await client.sync()  # nothing was published


async def test_no_provider_configured_is_a_configuration_error() -> None:
    assert_refused(await run_relay("publish", "orders", "shipped", "1"), "no provider configured: set RELAY_URL")
    assert_refused(await run_relay("publish", "--url", "pusher://nope", "orders", "shipped", "1"), "pusher://")


async def test_a_refusal_says_who_refused_and_why_and_the_emulator_serves_on(
    emulator: RunningEmulator, connect: Connect
) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")

    wrong_secret = await run_relay(
        "publish", "orders", "shipped", "1", env={"RELAY_URL": emulator_url(emulator, secret="wrong")}
    )
    after = await run_relay("publish", "orders", "shipped", "2", env={"RELAY_URL": emulator_url(emulator)})

    assert wrong_secret.returncode == 1
    assert wrong_secret.stderr.startswith(
        "relay: publish failed: the Relay emulator answered 401: invalid auth_signature"
    )
    assert wrong_secret.stderr.count("answered 401") == 1
    assert after.returncode == 0
    assert (await client.expect("shipped", "orders"))["data"] == "2"


async def test_an_unreachable_provider_exits_1_saying_so() -> None:
    url = "emulator://app-key:app-secret@127.0.0.1:1/apps/1"
    outcome = await run_relay("publish", "orders", "shipped", "1", env={"RELAY_URL": url})
    assert outcome.returncode == 1
    assert outcome.stderr.startswith("relay: publish failed: could not reach 127.0.0.1:1: ConnectError"), outcome


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("orders!", "shipped", "1"), None, "relay publish: channel name 'orders!' has characters outside"),
        (("orders", "pusher:shipped", "1"), None, "relay publish: The 'pusher' namespace is reserved"),
        (("orders", "shipped", "NaN"), None, "relay publish: event data holds NaN or Infinity"),
        (("--socket-id", "bogus", "orders", "shipped", "1"), None, "relay publish: invalid socket_id 'bogus'"),
        (("orders", "shipped", "-"), "", "relay publish: DATA is not JSON (Expecting value"),
    ],
    ids=["channel", "event", "nan", "socket-id", "empty-stdin"],
)
async def test_input_the_provider_would_refuse_exits_2_and_sends_nothing(
    emulator: RunningEmulator, connect: Connect, args: tuple[str, ...], stdin: str | None, message: str
) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")

    outcome = await run_relay("publish", *args, env={"RELAY_URL": emulator_url(emulator)}, stdin=stdin)

    assert outcome.returncode == 2, outcome
    assert outcome.stderr.startswith(message), outcome.stderr
    assert "Traceback" not in outcome.stderr
    await client.sync()  # nothing was published


async def test_a_memory_url_is_refused_as_nobody_could_hear_it() -> None:
    assert_refused(
        await run_relay("publish", "--url", "memory://", "orders", "shipped", "1"),
        "memory:// keeps events inside one process",
    )


async def test_the_url_flag_is_read_as_relay_url_with_the_master_key_variable(
    emulator: RunningEmulator, connect: Connect
) -> None:
    key = base64.b64encode(bytes(range(32))).decode()
    env = {"PUSHER_ENCRYPTION_MASTER_KEY_BASE64": key}
    outcome = await run_relay("publish", "--url", emulator_url(emulator), "private-encrypted-x", "e", "1", env=env)
    without = await run_relay("publish", "--url", emulator_url(emulator), "private-encrypted-x", "e", "1")

    assert (outcome.returncode, outcome.stdout) == (0, "published e to private-encrypted-x\n"), outcome.stderr
    assert_refused(without, "'private-encrypted-x' is end-to-end encrypted: add ?encryption_master_key=")


async def test_a_closed_stdout_after_publishing_is_still_success(emulator: RunningEmulator, connect: Connect) -> None:
    """A retrying script must not publish twice because nobody read the confirmation."""
    client = await connect(emulator)
    await client.subscribed("orders")
    relay = " ".join(shlex.quote(part) for part in RELAY)
    script = f"{relay} publish orders shipped 7 | true; echo ${{PIPESTATUS[0]}}"

    process = await asyncio.create_subprocess_exec(
        "bash", "-c", script, stdout=PIPE, stderr=PIPE, env={**os.environ, "RELAY_URL": emulator_url(emulator)}
    )
    stdout, stderr = await process.communicate()

    assert (stdout, stderr) == (b"0\n", b"")
    assert (await client.expect("shipped", "orders"))["data"] == "7"


async def test_no_standard_input_to_read_is_said_plainly(emulator: RunningEmulator) -> None:
    relay = " ".join(shlex.quote(part) for part in RELAY)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f"{relay} publish orders shipped - <&-",
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, "RELAY_URL": emulator_url(emulator)},
    )
    _, stderr = await process.communicate()

    assert process.returncode == 2
    assert stderr == b"relay publish: DATA is -, but there is no standard input to read it from\n"


async def test_the_documented_commands_run(emulator: RunningEmulator, connect: Connect) -> None:
    """docs/configuration.md's `relay publish` block, run by bash as written, with the emulator's port."""
    text = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    (block,) = re.findall(r"### `relay publish`\n.*?```bash\n(.*?)```", text, re.DOTALL)
    orders, kitchen = await connect(emulator), await connect(emulator)
    await orders.subscribed("orders")
    await kitchen.subscribed("kitchen")
    script = block.replace("127.0.0.1:6001", f"127.0.0.1:{emulator.port}")
    bin_dir = str(Path(sys.executable).parent)

    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    stdout, stderr = await process.communicate()

    assert (process.returncode, stderr) == (0, b""), stderr
    assert stdout.decode().splitlines() == [
        "published order-ready to orders",  # what the block's comment says it prints
        "published order-ready to orders, kitchen",
    ]
    assert "# prints: published order-ready to orders" in block
    assert json.loads((await orders.expect("order-ready", "orders"))["data"]) == {"id": 42, "dish": "Appam with stew"}
    assert json.loads((await orders.expect("order-ready", "orders"))["data"]) == {"id": 43}
    assert json.loads((await kitchen.expect("order-ready", "kitchen"))["data"]) == {"id": 43}


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({b"RELAY_URL": b"emulator://k:s\xff@127.0.0.1:6001/apps/1"}, "RELAY_URL is not UTF-8 text: its character 15"),
        (
            {b"PUSHER_APP_ID": b"1", b"PUSHER_KEY": b"k", b"PUSHER_SECRET": b"s\xff", b"PUSHER_HOST": b"127.0.0.1"},
            "PUSHER_SECRET is not UTF-8 text: its character 2",
        ),
    ],
)
async def test_a_variable_holding_bytes_that_are_not_utf8_is_named_before_any_request(
    variables: dict[bytes, bytes], named: str
) -> None:
    """The environment as a shell can set it (export RELAY_URL=$'…\\xff…'): Python keeps the byte as a lone
    surrogate, and the publish failed at its request ("a string cut in the middle of a character"), naming no
    variable."""
    clean = {
        name.encode(): value.encode()
        for name, value in os.environ.items()
        if not name.startswith(("RELAY_", "PUSHER_", "ABLY_"))
    }
    process = await asyncio.create_subprocess_exec(
        *RELAY, "publish", "orders", "shipped", "{}", env={**clean, **variables}, stdout=PIPE, stderr=PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert stderr.decode() == (
        f"relay: configuration error: {named} is a byte that could not be decoded (the environment keeps such bytes "
        "as they were); set it again\n"
    )


@pytest.mark.parametrize("url", ["", "  "])
async def test_an_empty_url_flag_is_refused_not_replaced_by_the_environment_s_provider(url: str) -> None:
    """--url was put in RELAY_URL, where empty is unset: `--url ""` published through PUSHER_URL, another provider."""
    outcome = await run_relay(
        "publish", "--url", url, "orders", "shipped", "{}", env={"PUSHER_URL": "http://k:s@127.0.0.1:9/apps/1"}
    )
    assert_refused(outcome, f"--url must be a provider URL (scheme://…), got {url!r}")


async def test_a_url_flag_holding_bytes_that_are_not_utf8_is_named_as_the_flag() -> None:
    """`--url $'…\\xff'` was reported as RELAY_URL, which the user had not set."""
    outcome = await run_relay("publish", "--url", "emulator://k:s\udcff@127.0.0.1:9/apps/1", "orders", "shipped", "{}")
    assert_refused(outcome, "--url is not UTF-8 text: its character 15 is a byte that could not be decoded")
    assert "RELAY_URL" not in outcome.stderr


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (
            "emulatr://k:s@127.0.0.1:9/apps/1",
            "unknown provider scheme 'emulatr'; use one of pusher, emulator, ably, memory (did you mean emulator?)",
        ),
        (
            "emulator://k:s@127.0.0.1:99999/apps/1",
            "emulator:// URL has an invalid port '99999': a port is a number from 1 to 65535",
        ),
        ("mirror:emulator://k:s@127.0.0.1:9/apps/1", "mirror: needs two or more provider URLs separated by '|'"),
    ],
)
async def test_a_url_flag_the_library_refuses_is_named_as_the_flag(url: str, problem: str) -> None:
    """A --url with a typo was reported as "RELAY_URL: …", a variable the user may not have set, or (here) whose value
    is fine: the user was sent to fix the wrong thing."""
    env = {"RELAY_URL": "emulator://k:s@127.0.0.1:9/apps/1"}
    outcome = await run_relay("publish", "--url", url, "orders", "shipped", "{}", env=env)
    assert (outcome.returncode, outcome.stderr) == (2, f"relay: configuration error: --url: {problem}\n")


@pytest.mark.parametrize("utf8_mode", ["0", "1"])
async def test_standard_input_that_is_not_utf8_is_said_plainly(emulator: RunningEmulator, utf8_mode: str) -> None:
    """Python's UTF-8 mode reads such bytes as lone surrogates, and the publish failed on one of them; a UTF-8
    locale's strict decoding raised UnicodeDecodeError."""
    process = await asyncio.create_subprocess_exec(
        *RELAY,
        "publish",
        "orders",
        "shipped",
        "-",
        "--string",
        stdin=PIPE,
        stdout=PIPE,
        stderr=PIPE,
        env={**os.environ, "RELAY_URL": emulator_url(emulator), "PYTHONUTF8": utf8_mode, "LC_ALL": "C.UTF-8"},
    )
    _, stderr = await asyncio.wait_for(process.communicate(b"caf\xe9\n"), 30)

    assert (process.returncode, stderr) == (2, b"relay publish: DATA is -, but standard input is not UTF-8 text\n")


async def test_a_script_run_again_with_its_idempotency_key_is_delivered_once_by_ably(
    emulator: RunningEmulator, connect: Connect
) -> None:
    """Each run is a new process, so only a provider that dedupes (Ably, and the emulator's Ably side) can tell the
    second run is the first's resend: a Pusher subscriber of the shared channel gets the event once."""
    client = await connect(emulator)
    await client.subscribed("orders")
    env = {"RELAY_URL": f"ably://{emulator.app.ably_api_key}@127.0.0.1:{emulator.port}?tls=false"}
    command = ("publish", "--idempotency-key", "order-42-ready", "orders", "order-ready", '{"id": 42}')

    first, again = await run_relay(*command, env=env), await run_relay(*command, env=env)

    assert (first.returncode, again.returncode) == (0, 0), (first.stderr, again.stderr)
    assert first.stdout == again.stdout == "published order-ready to orders (message id order-42-ready:0)\n"
    assert json.loads((await client.expect("order-ready", "orders"))["data"]) == {"id": 42}
    await client.sync()  # the second run's was not delivered


async def test_a_bad_idempotency_key_is_refused_before_anything_is_sent(
    emulator: RunningEmulator, connect: Connect
) -> None:
    client = await connect(emulator)
    await client.subscribed("orders")
    outcome = await run_relay(
        "publish", "--idempotency-key", "two words", "orders", "e", "1", env={"RELAY_URL": emulator_url(emulator)}
    )
    assert outcome.returncode == 2
    assert outcome.stderr == (
        "relay publish: an idempotency key is 1 to 200 printable ASCII characters without spaces (a UUID or a ULID "
        "fits): got one holding ' '\n"
    )
    await client.sync()

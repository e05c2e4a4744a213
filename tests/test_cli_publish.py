"""``relay publish``: one event from a shell, through the provider RELAY_URL names, to real subscribers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

from tests.cli_support import assert_refused, run_relay
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
    text = await run_relay("publish", "chat", "message", "plain words", "--string", env=env)
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
    bad_channel = await run_relay("publish", "orders!", "shipped", "1", env={"RELAY_URL": emulator_url(emulator)})
    after = await run_relay("publish", "orders", "shipped", "2", env={"RELAY_URL": emulator_url(emulator)})

    assert wrong_secret.returncode == 1
    assert wrong_secret.stderr.startswith("relay: publish failed (the Relay emulator answered 401): "), wrong_secret
    assert "Traceback" not in wrong_secret.stderr + bad_channel.stderr
    assert bad_channel.returncode == 1
    assert bad_channel.stderr.startswith("relay: publish failed: "), bad_channel.stderr
    assert "orders!" in bad_channel.stderr
    assert after.returncode == 0
    assert (await client.expect("shipped", "orders"))["data"] == "2"


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

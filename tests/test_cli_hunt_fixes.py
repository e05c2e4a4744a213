"""Command-line and configuration mistakes an operator meets, each refused at start with a one-line configuration
error (exit status 2, no traceback) rather than found later."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from relay.config import from_env, parse_url
from relay.emulator.config import EmulatorConfig
from relay.errors import ConfigError
from tests.cli_support import RELAY, assert_refused, run_relay, write
from tests.cluster.conftest import RedisServer
from tests.cluster.conftest import redis_server as redis_server
from tests.emulator_process import EmulatorProcess
from tests.operations.support import make_certificate


@pytest.mark.parametrize("token", ["file-token ", "\tfile-token", "file-token\n", "   "])
async def test_a_config_file_console_token_with_whitespace_around_it_is_refused(tmp_path: Path, token: str) -> None:
    """The file's console_token was kept with its whitespace, while `Authorization: Bearer …` is read without it:
    the header could never match, and a token of whitespace alone opened the console to `?token=%20`. The flag and
    RELAY_CONSOLE_TOKEN are read without the whitespace around them; the file, written on purpose, is refused."""
    config = write(tmp_path, f'[server]\nport = 0\nconsole_token = """{token}"""\n')
    outcome = await run_relay("emulator", "--config", str(config))
    assert_refused(outcome, f"{config} [server]: console_token has whitespace around it")
    assert "file-token" not in outcome.stderr  # a secret: never shown


async def test_a_config_file_console_token_opens_the_console_with_a_bearer_header(tmp_path: Path) -> None:
    config = write(tmp_path, '[server]\nport = 0\nconsole_token = "file-token"\n')
    process = await EmulatorProcess.start("--config", str(config))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{process.port}") as http:
            opened = await http.get("/metrics", headers={"Authorization": "Bearer file-token"})
            refused = await http.get("/metrics", headers={"Authorization": "Bearer other"})
        assert (opened.status_code, refused.status_code) == (200, 401)
    finally:
        await process.stop()


# Names no resolver takes: an empty label, a label over 63 characters. The sync client's resolver raised UnicodeError
# ("label empty or too long") from inside the request: a traceback from `relay publish`, not a RelayError.
UNRESOLVABLE_HOSTS = ["x..y", ".example.com", "a" * 64 + ".example.com"]


@pytest.mark.parametrize("host", UNRESOLVABLE_HOSTS)
async def test_relay_publish_refuses_a_url_whose_host_no_resolver_takes(host: str) -> None:
    for scheme, path in (("emulator", "/apps/1"), ("pusher", "/apps/1"), ("ably", "")):
        key = "app.key" if scheme == "ably" else "key"
        url = f"{scheme}://{key}:secret@{host}:6001{path}"
        outcome = await run_relay("publish", "orders", "order-ready", "{}", env={"RELAY_URL": url})
        assert_refused(outcome, f"{scheme}:// URL's host {host!r} is not a host name or an IP address")
        assert "secret" not in outcome.stderr.replace("KEYSECRET", "")


async def test_relay_publish_refuses_a_pusher_host_no_resolver_takes() -> None:
    env = {"PUSHER_APP_ID": "1", "PUSHER_KEY": "key", "PUSHER_SECRET": "secret", "PUSHER_HOST": "x..y"}
    assert_refused(await run_relay("publish", "orders", "order-ready", "{}", env=env), "PUSHER_HOST must be a host")


@pytest.mark.parametrize("host", ["example.com", "example.com.", "localhost", "a" * 63 + ".example", "bücher.de"])
def test_host_names_a_resolver_takes_are_still_read(host: str) -> None:
    assert parse_url(f"emulator://key:secret@{host}:6001/apps/1").host == host


def test_the_library_refuses_an_unresolvable_host_as_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a host name or an IP address"):
        parse_url("emulator://key:secret@x..y:6001/apps/1")


def _documented_variables(reader: str) -> list[str]:
    """The RELAY_* variables docs/configuration.md lists as read by ``reader``."""
    page = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    rows = re.findall(r"^\| `(RELAY_[A-Z_]+)` \| ([^|]+) \|", page, flags=re.MULTILINE)
    return [name for name, readers in rows if reader in readers]


async def test_relay_serve_help_names_every_variable_the_gateway_reads() -> None:
    """`relay serve --help` listed the gateway's variables but RELAY_PUBLIC_URL, which it reads at start."""
    variables = _documented_variables("`relay serve`")
    assert "RELAY_PUBLIC_URL" in variables
    outcome = await run_relay("serve", "--help")
    assert outcome.returncode == 0
    assert [name for name in variables if name not in outcome.stdout] == []


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("tls", ["true", "false"])
async def test_a_pusher_url_with_a_tls_option_is_refused_naming_its_scheme(scheme: str, tls: str) -> None:
    """PUSHER_URL's scheme says whether TLS is used: https://…?tls=false published in clear, over plain HTTP, and
    http://…?tls=true was refused as "pusher:// URL gives the option tls twice", an option written once."""
    url = f"{scheme}://key:secret@relay.example.com/apps/1?tls={tls}"
    outcome = await run_relay("publish", "orders", "order-ready", "{}", env={"PUSHER_URL": url})
    assert_refused(
        outcome, f"PUSHER_URL ({scheme}://KEY:SECRET@HOST/apps/APP_ID): no tls option: the scheme says whether"
    )
    assert "twice" not in outcome.stderr


@pytest.mark.parametrize(
    ("url", "base_url"),
    [
        ("https://k:s@h.example.com/apps/1?tls=", "https://h.example.com"),
        ("http://k:s@h.example.com/apps/1", "http://h.example.com"),
    ],
)
def test_a_pusher_url_without_a_tls_value_uses_its_scheme(url: str, base_url: str) -> None:
    assert from_env({"PUSHER_URL": url}).base_url == base_url


def _with_encrypted_key(directory: Path) -> tuple[Path, Path]:
    """A certificate and its key encrypted with a passphrase (openssl pkey -aes256)."""
    cert, key = make_certificate(directory)
    encrypted = directory / "encrypted.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:hunter2", "-out", str(encrypted)], check=True
    )
    return cert, encrypted


async def test_an_encrypted_tls_key_is_refused_rather_than_prompted_for(tmp_path: Path) -> None:
    """A passphrase-protected key made OpenSSL prompt "Enter PEM pass phrase:" on the terminal, at the check and again
    at the start (in each worker with --workers); without a terminal (a service), it failed as "TLS files … cannot be
    read: Invalid argument"."""
    cert, encrypted = _with_encrypted_key(tmp_path)
    outcome = await run_relay("emulator", "--port", "0", "--tls-cert", str(cert), "--tls-key", str(encrypted))
    assert_refused(outcome, f"TLS key {encrypted} is encrypted (it needs a passphrase)", "openssl pkey -in")
    assert "pass phrase" not in outcome.stderr


@pytest.mark.parametrize("path", ["/abc", "/1/2", "/l", "/0x1", "/-1"])
async def test_a_redis_url_whose_path_is_not_a_database_number_is_refused(path: str) -> None:
    """redis-py reads /abc as no database (0, perhaps another deployment's) and /1/2 as database 12."""
    url = f"redis://:secret@127.0.0.1:1{path}"
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", url)
    assert_refused(outcome, f"--redis-url has the path {path!r}: a Redis URL's path is the database number")
    assert "cannot reach" not in outcome.stderr and "secret" not in outcome.stderr


@pytest.mark.parametrize("path", ["", "/", "/0", "/15"])
def test_a_redis_url_with_no_path_or_a_database_number_is_read(path: str) -> None:
    url = f"redis://127.0.0.1:6379{path}"
    assert EmulatorConfig(apps=(), redis_url=url).redis_url == url


async def test_one_webhook_url_given_twice_is_refused_rather_than_sent_each_event_twice(tmp_path: Path) -> None:
    hook = "http://127.0.0.1:9/hooks"
    outcome = await run_relay("emulator", "--port", "0", "--webhook-url", hook, "--webhook-url", hook)
    assert_refused(outcome, f"--webhook-url {hook!r} is given twice with the same settings")
    config = write(
        tmp_path,
        '[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n'
        f'[[apps.webhooks]]\nurl = "{hook}"\n[[apps.webhooks]]\nurl = "{hook}"\n',
    )
    outcome = await run_relay("emulator", "--port", "0", "--config", str(config))
    assert_refused(outcome, f"{config} apps[0]: url {hook!r} is given twice with the same settings")


async def test_one_webhook_url_with_other_settings_is_two_webhooks(tmp_path: Path) -> None:
    hook = "http://127.0.0.1:9/hooks"
    config = write(
        tmp_path,
        '[server]\nport = 0\n[[apps]]\napp_id = "1"\nkey = "k"\nsecret = "s"\n'
        f'[[apps.webhooks]]\nurl = "{hook}"\nevent_types = ["member_added"]\n'
        f'[[apps.webhooks]]\nurl = "{hook}"\nformat = "ably"\n',
    )
    process = await EmulatorProcess.start("--config", str(config))
    assert await process.stop() == 0


@pytest.mark.parametrize("ttl", ["0.0005", "0.01", "0.9"])
async def test_a_node_ttl_under_a_second_is_refused_naming_the_flag(ttl: str) -> None:
    """Under 1 ms, Redis refused the heartbeat's expiry, reported as "cannot reach Redis at …: invalid expire time in
    'set' command"; a few ms buried live nodes at every pause of the event loop."""
    outcome = await run_relay("emulator", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0", "--node-ttl", ttl)
    assert_refused(outcome, "--node-ttl must be at least 1 second")
    assert "cannot reach Redis" not in outcome.stderr


async def _serve_with_stdout(stdout: int, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Start ``relay emulator --port 0 ARGS`` with ``stdout`` as its standard output, check that it serves (its
    /ready answers), stop it with SIGTERM: its exit status and standard error."""
    process = await asyncio.create_subprocess_exec(
        *RELAY,
        "emulator",
        "--port",
        "0",
        *args,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert process.stderr is not None
    err = ""
    try:
        async with asyncio.timeout(20):
            while (found := re.search(r"emulator listening .*port=(\d+)", err)) is None:
                line = await process.stderr.readline()
                assert line, err
                err += line.decode()
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"http://127.0.0.1:{found[1]}/ready")).status_code == 200
            await asyncio.sleep(0.5)  # the banner is printed once it listens
            process.send_signal(signal.SIGTERM)
            err += (await process.stderr.read()).decode()
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in err, err[-1500:]
    return status, err


async def test_the_emulator_serves_on_when_its_banner_cannot_be_written_to_a_closed_pipe(
    redis_server: RedisServer,
) -> None:
    """`relay emulator | true`, or a reader gone before the banner: the print of the client settings raised
    BrokenPipeError, a traceback, and the emulator stopped (status 1), with --workers too."""
    for args in ((), ("--workers", "2", "--redis-url", redis_server.url)):
        read, write_end = os.pipe()
        os.close(read)
        try:
            status, err = await _serve_with_stdout(write_end, *args)
        finally:
            os.close(write_end)
        assert status == 0, err[-800:]
        assert "the client settings could not be written to standard output (Broken pipe); serving on" in err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_the_emulator_serves_on_when_its_banner_cannot_be_written_to_a_full_disk() -> None:
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        status, err = await _serve_with_stdout(full)
    finally:
        os.close(full)
    assert status == 0, err[-800:]
    assert "the client settings could not be written to standard output (No space left on device); serving on" in err


async def test_a_banner_standard_output_s_encoding_cannot_write_is_shown_escaped(tmp_path: Path) -> None:
    """An app id of café, with standard output in ASCII (PYTHONIOENCODING, a locale): UnicodeEncodeError, a
    traceback, and the emulator stopped."""
    banner = tmp_path / "banner.txt"
    out = os.open(banner, os.O_WRONLY | os.O_CREAT)
    try:
        status, err = await _serve_with_stdout(out, "--app-id", "café", env={"PYTHONIOENCODING": "ascii"})
    finally:
        os.close(out)
    assert status == 0, err[-800:]
    assert (
        "standard output's encoding (ascii) cannot write '\\xe9' of the client settings: they are shown escaped" in err
    )
    assert "app caf\\xe9:" in banner.read_text()


@pytest.mark.parametrize("flag", ["--usage", "--pricing", "--plot"])
async def test_relay_cost_refuses_an_empty_file_name_naming_the_flag(flag: str) -> None:
    """`relay cost --usage "$USAGE_FILE"` with the variable unset: Path("") is the current directory, refused as
    "usage file . cannot be read: Is a directory" (a file the user never named), and --plot "" as "--plot .: the file
    name must end in .png or .svg"."""
    outcome = await run_relay("cost", "--connections", "100", flag, "")
    assert outcome.returncode == 2
    assert "Traceback" not in outcome.stderr
    assert outcome.stderr.splitlines()[-1] == f"relay cost: error: argument {flag}: must be a file name, got ''"


@pytest.mark.parametrize("command", ["cost", "emulator", "serve", "publish"])
async def test_every_help_is_written_to_an_ascii_standard_output(command: str) -> None:
    """In an ASCII locale (PYTHONIOENCODING=ascii, a locale without UTF-8), `relay cost --help` raised
    UnicodeEncodeError at its ×: a traceback, status 1, and no help. (relay cost's answer says how to fix the
    encoding; the help is how a user finds anything out.)"""
    outcome = await run_relay(command, "--help", env={"PYTHONIOENCODING": "ascii"})
    assert (outcome.returncode, outcome.stderr) == (0, "")
    assert outcome.stdout.startswith(f"usage: relay {command}")
    assert outcome.stdout.isascii()
    if command == "cost":
        assert "publishes per day = N x 86,400 / (--peak-factor x" in " ".join(outcome.stdout.split())


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        (["emulator", "--prot", "1"], "usage: relay emulator [-h]"),
        (["serve", "--prot", "1"], "usage: relay serve [-h]"),
        (["cost", "--nope"], "usage: relay cost [-h]"),
    ],
)
async def test_a_misspelt_flag_is_refused_with_its_command_s_usage(command: list[str], usage: str) -> None:
    """argparse's top-level parser reported a subcommand's unknown flag with its own usage, 'relay [-h] [--version]
    COMMAND ...', which lists none of the command's flags; now the command's parser says it, with its usage."""
    outcome = await run_relay(*command)
    assert outcome.returncode == 2
    assert outcome.stderr.startswith(usage), outcome.stderr
    unknown = " ".join(command[1:])
    assert outcome.stderr.endswith(f"relay {command[0]}: error: unrecognized arguments: {unknown}\n"), outcome.stderr


def test_the_emulator_stops_cleanly_with_its_standard_output_closed() -> None:
    """``relay emulator >&-``: the listening socket took descriptor 1, and uvloop, which never closes 0 to 2, aborted
    at the stop ("Assertion `fd > STDERR_FILENO' failed", status -6). Closed standard descriptors are /dev/null now."""
    command = " ".join([*RELAY, "emulator", "--port", "0"])
    process = subprocess.Popen(["bash", "-c", f"exec {command} >&-"], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    log = ""
    while "emulator listening" not in log:
        line = process.stderr.readline()
        assert line, f"the emulator ended before listening: {log}"
        log += line
    port = int(re.search(r"port=(\d+)", log).group(1))  # type: ignore[union-attr]
    assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=20) == 0, rest
    assert "Assertion" not in rest and "shutdown: done" in rest, rest


@pytest.mark.parametrize("flag", ["--tls-cert", "--tls-key"])
async def test_an_empty_tls_flag_says_it_is_empty(tmp_path: Path, flag: str) -> None:
    """`--tls-cert ''` (meant to turn off the TLS the config file sets) said "--tls-cert and --tls-key go together",
    which it had been given with; given both empty, "TLS file  does not exist"."""
    cert, key = make_certificate(tmp_path)
    config = write(tmp_path, f"[server]\ntls_cert = '{cert}'\ntls_key = '{key}'\n")
    for empty in ([flag, ""], ["--tls-cert", "", "--tls-key", ""]):
        outcome = await run_relay("emulator", "--port", "0", "--config", str(config), *empty)
        assert_refused(outcome, f"{empty[0]} is empty: an empty path is not a file", "remove tls_cert and tls_key")
        assert "go together" not in outcome.stderr

"""The emulator's config file: the documented example loads, and every mistake names the key to fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.emulator.config import EmulatorConfig, load_config
from relay.errors import ConfigError

DOCS = Path(__file__).parents[2] / "docs" / "emulator.md"
DEFAULTS = EmulatorConfig(apps=())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "emulator.toml"
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert example is not None
    config = load_config(write(tmp_path, example.group(1)), defaults=DEFAULTS)
    shop, admin = config.apps
    assert (shop.app_id, shop.key, shop.subscription_count, shop.max_connections) == ("1", "shop-key", True, 1000)
    assert shop.limits.max_presence_members == 100
    (hook,) = shop.webhooks
    assert hook.wants("member_added", "presence-room")
    assert not hook.wants("member_added", "private-room")
    assert not hook.wants("client_event", "presence-room")
    assert hook.headers == {"X-Source": "relay"}
    assert admin.enabled is False
    assert "admin-secret" not in repr(admin)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[apps]]\napp_id = '1'\nkey = 'k'\n", "apps[0]: secret is required"),
        ("[[apps]]\napp_id = '1'\nkey = 'k'\nsecret = 's'\ncolour = 'red'\n", "unknown key(s) colour"),
        ("[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\n[apps.limits]\nmax_members = 3\n", "limits: unknown key(s)"),
        (
            "[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\nactivity_timeout = 0\n",
            "activity_timeout must be a whole number, 1 or more, got 0",
        ),
        (
            "[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\nactivity_timeout = 2.5\n",
            "activity_timeout must be a whole number, 1 or more, got 2.5",
        ),
        (
            "[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\n[[apps.webhooks]]\nurl='http://x'\nevent_types=['nope']\n",
            "event_types has types pusher webhooks do not send: ['nope']",
        ),
        ("[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\n[[apps]]\napp_id='1'\nkey='j'\nsecret='s'\n", "share the app_id"),
        (
            "[[apps]]\napp_id='1'\nkey='k'\nsecret='s'\nably_key='x.y:1'\n"
            "[[apps]]\napp_id='2'\nkey='j'\nsecret='s'\nably_key='x.y:2'\n",
            "two apps share the Ably key name 'x.y'",
        ),
        ("[server]\nport = 'x'\nbogus = 1\n", "[server]: unknown key(s) bogus"),
        ("[server]\nmax_send_buffer = -1\n", "[server]: max_send_buffer must be a whole number, 1 or more, got -1"),
        ("[server]\nmax_frame_bytes = 1.5\n", "max_frame_bytes must be a whole number, 1 or more, got 1.5"),
        ("this is not toml", "is not valid TOML"),
        # Python's limits met in tomllib: they were a RecursionError and a ValueError traceback
        ("x = " + "[" * 600 + "]" * 600, "is nested too deeply to be a config file"),
        ("x = " + "9" * 5000, ": a number is too long: Exceeds the limit (4300 digits)"),
    ],
)
def test_mistakes_name_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), defaults=DEFAULTS)
    assert message in caught.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", defaults=DEFAULTS)

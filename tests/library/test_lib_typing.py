"""The public API as ``mypy --strict`` sees it from an application: what the docs show type-checks, and a misspelt or
mistyped client option is an error before the code runs.

mypy does not follow the editable install's import hook, so it reads the package through a view of it as installed
(``relay.adapters`` and ``relay.emulator`` are the checkout's ``adapters/`` and ``emulator/``), as ``.ci/typecheck``
does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]

# What docs/library.md shows, or states the types of
DOCUMENTED_USE = """
import os

import relay
from relay import AsyncRelay, Relay
from relay.senders import AsyncSender, RetryPolicy, SyncSender


def main(headers: dict[str, str], raw: bytes, text: str) -> None:
    client = Relay.from_url(os.getenv("RELAY_URL"))  # unset: a ConfigError saying to set RELAY_URL
    Relay.from_url("memory://docs", retry=RetryPolicy(attempts=5, backoff=0.5))
    Relay.from_url("memory://docs", sender=SyncSender())
    Relay.from_env(retry=RetryPolicy(timeout=None))
    Relay.from_env({"RELAY_URL": "memory://docs"}, retry=RetryPolicy())
    AsyncRelay.from_url(os.getenv("RELAY_URL"), retry=RetryPolicy(), sender=AsyncSender())
    AsyncRelay.from_env(retry=RetryPolicy())
    relay.verify_webhook(headers, raw)
    relay.verify_webhook(headers, text)  # the raw body: bytes, or the str they decode to
    client.verify_webhook(headers, text)
"""

# Each line marked "error" is one mypy must report
MISTAKES = """
import relay
from relay import AsyncRelay, Relay

print(relay.__verison__)  # error: misspelt (the package's lazy __getattr__ made any name an object)

Relay.from_url("memory://docs", retyr=3)  # error: misspelt
Relay.from_url("memory://docs", retry=3)  # error: a number of attempts, not a RetryPolicy
Relay.from_env(retry=3)  # error
Relay.from_env({"RELAY_URL": "memory://docs"}, timeout=3)  # error: no such option
AsyncRelay.from_url("memory://docs", retyr=3)  # error
AsyncRelay.from_env(retry=3)  # error
"""


def installed_view(directory: Path) -> Path:
    view = directory / "view"
    (view / "relay").mkdir(parents=True)
    for entry in (CHECKOUT / "relay").iterdir():
        (view / "relay" / entry.name).symlink_to(entry)
    (view / "relay" / "adapters").symlink_to(CHECKOUT / "adapters")
    (view / "relay" / "emulator").symlink_to(CHECKOUT / "emulator")
    return view


def mypy_errors(tmp_path: Path, files: dict[str, str]) -> dict[str, set[int]]:
    """The lines of each file that ``mypy --strict`` reports an error on."""
    app = tmp_path / "app"
    app.mkdir()
    for name, text in files.items():
        (app / name).write_text(text)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), *files],
        cwd=app, env={**os.environ, "MYPYPATH": str(installed_view(tmp_path))}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    errors: dict[str, set[int]] = {name: set() for name in files}
    for line in checked.stdout.splitlines():
        if re.match(r"[^:]+:\d+: note: ", line):  # where a function is defined, what was meant
            continue
        reported = re.match(r"([^:]+):(\d+): error: ", line)
        assert reported is not None and reported[1] in files, f"mypy: {line}\n{checked.stdout}{checked.stderr}"
        errors[reported[1]].add(int(reported[2]))
    assert checked.returncode == (1 if any(errors.values()) else 0), checked.stdout + checked.stderr
    return errors


def test_documented_use_type_checks_and_a_wrong_option_does_not(tmp_path: Path) -> None:
    """``relay.verify_webhook(headers, body)`` took only bytes (the docs, and ``Relay.verify_webhook``, bytes or
    str); ``Relay.from_url(os.getenv("RELAY_URL"))``, shown in the docs, was a str | None error; and ``from_url`` and
    ``from_env`` took ``**options: Any``, so ``retyr=3`` and ``retry=3`` passed."""
    errors = mypy_errors(tmp_path, {"documented.py": DOCUMENTED_USE, "mistakes.py": MISTAKES})
    assert errors["documented.py"] == set()
    marked = {number for number, line in enumerate(MISTAKES.splitlines(), 1) if "# error" in line}
    assert errors["mistakes.py"] == marked


def test_the_package_lists_its_classes_before_their_first_use() -> None:
    """relay/__init__.py loads its classes at their first use: ``dir(relay)`` and ``help(relay)`` (and an editor's
    completion list) had none of them until then, and ``from relay import *`` still has them all."""
    listed = subprocess.run(
        [sys.executable, "-c", LISTED],
        cwd=CHECKOUT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert listed.stdout.splitlines() == ["dir: []", "help: []", "star: []"], listed.stdout + listed.stderr


LISTED = """
import pydoc
import relay

names = [name for name in relay.__all__ if name[0].isupper()]
print("dir:", [name for name in [*names, "__version__"] if name not in dir(relay)])
shown = pydoc.render_doc(relay, renderer=pydoc.plaintext)
print("help:", [name for name in names if f"class {name}(" not in shown])
star = {}
exec("from relay import *", star)
print("star:", [name for name in relay.__all__ if name not in star])
"""


def test_the_modules_importing_the_package_loaded_are_still_its_attributes() -> None:
    """``import relay`` loaded the client, and with it relay.errors, relay.senders and the others, bound as the
    package's attributes: ``relay.errors.ProtocolError`` (docs/migration.md's counterpart of pusher's errors) after
    ``import relay`` alone was an AttributeError once the classes were loaded at their first use."""
    found = subprocess.run(
        [sys.executable, "-c", "import relay; print(relay.errors.ProtocolError.__name__, relay.senders.RetryPolicy())"],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert found.stdout.startswith("ProtocolError RetryPolicy("), found.stdout + found.stderr


def test_the_module_level_functions_type_hints_resolve_in_a_fresh_interpreter() -> None:
    """``typing.get_type_hints(relay.publish)`` (what FastAPI's ``Depends`` and pydantic's ``validate_call`` read)
    was a NameError: the functions lived in the package's ``__init__``, where the classes their annotations name
    load at their first use."""
    hints = subprocess.run(
        [sys.executable, "-c", HINTS],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert hints.returncode == 0, hints.stderr
    assert hints.stdout.splitlines() == [
        "publish -> PublishResult",
        "publish_batch -> PublishResult",
        "channel -> ChannelInfo",
        "channels -> dict[str, relay.models.ChannelInfo]",
        "presence_members -> list[relay.models.PresenceMember]",
        "verify_webhook -> list[relay.models.WebhookEvent]",
        "default_client -> Relay",
    ]


HINTS = """
import typing
import relay

for name in ("publish", "publish_batch", "channel", "channels", "presence_members", "verify_webhook", "default_client"):
    returned = typing.get_type_hints(getattr(relay, name))["return"]
    print(name, "->", getattr(returned, "__name__", None) if isinstance(returned, type) else returned)
"""


def test_every_public_annotation_of_the_library_and_gateway_resolves() -> None:
    """``typing.get_type_hints`` on each public function, class and method of the library's, the adapters' and the
    gateway's modules (a FastAPI dependency or pydantic model built on them reads them): ``JwtVerifier.__init__``
    named ``GatewaySettings``, imported for type checking alone, and was a NameError. The emulator's and
    ``relay cost``'s modules are the servers' and the command's insides, not an API to build on."""
    hints = subprocess.run(
        [sys.executable, "-c", ALL_HINTS],
        cwd=CHECKOUT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert hints.returncode == 0, hints.stderr
    *unresolved, checked = hints.stdout.splitlines()
    assert unresolved == []
    assert int(checked) > 300  # the walk found the modules


ALL_HINTS = """
import importlib
import inspect
import typing
from pathlib import Path

modules = []
for folder, package in (("relay", "relay"), ("adapters", "relay.adapters")):
    for path in sorted(Path(folder).rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[0] not in ("cost", "__main__"):
            modules.append(".".join((package, *parts)).removesuffix(".__init__"))
checked = 0
for name in modules:
    module = importlib.import_module(name)
    for attribute, value in vars(module).items():
        if attribute.startswith("_") or getattr(value, "__module__", None) != name:
            continue
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        annotated = [(attribute, value)]
        if inspect.isclass(value):
            annotated += [
                (f"{attribute}.{method}", function) for method, function in vars(value).items()
                if inspect.isfunction(function) and (method == "__init__" or not method.startswith("_"))
            ]
        for qualified, item in annotated:
            checked += 1
            try:
                typing.get_type_hints(item)
            except Exception as exc:
                print(f"{name}.{qualified}: {type(exc).__name__}: {exc}")
print(checked)
"""

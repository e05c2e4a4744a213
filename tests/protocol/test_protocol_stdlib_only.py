"""relay.protocol and relay.errors import nothing but the standard library (and each other)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import relay.errors
import relay.protocol

PROTOCOL_DIR = Path(relay.protocol.__file__).parent
ERRORS_FILE = Path(relay.errors.__file__)
MODULES = [*sorted(PROTOCOL_DIR.glob("*.py")), ERRORS_FILE]
ALLOWED_INTERNAL = ("relay.protocol", "relay.errors")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name imported anywhere in ``path`` (including inside functions and ``if`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import stays inside the package it is in.
                names.add("relay.protocol" if path.parent == PROTOCOL_DIR else "relay")
            elif node.module is not None:
                names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
        ):
            names.add("<dynamic import>")
    return names


def is_allowed(module: str, *, in_errors: bool) -> bool:
    top = module.partition(".")[0]
    if top == "__future__" or top in sys.stdlib_module_names:
        return True
    if in_errors:
        return False
    return any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED_INTERNAL)


def test_the_package_files_are_found() -> None:
    names = {path.name for path in MODULES}
    expected = {"signing.py", "channels.py", "frames.py", "codes.py", "members.py", "socket_ids.py", "ably.py"}
    assert expected <= names
    assert "errors.py" in names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_imports_only_stdlib(path: Path) -> None:
    in_errors = path == ERRORS_FILE
    outside = sorted(module for module in imported_modules(path) if not is_allowed(module, in_errors=in_errors))
    assert outside == [], f"{path.name} imports outside the standard library: {outside}"


def test_checker_flags_third_party_and_other_relay_modules(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from __future__ import annotations\nimport json\nimport os.path\nimport jwt\nfrom pusher import Pusher\n"
        "from relay.adapters import x\nfrom relay.errors import RelayError\nfrom relay.protocol.codes import y\n"
        "def f():\n    import httpx\n"
    )
    flagged = sorted(module for module in imported_modules(sample) if not is_allowed(module, in_errors=False))
    assert flagged == ["httpx", "jwt", "pusher", "relay.adapters"]
    flagged_in_errors = sorted(module for module in imported_modules(sample) if not is_allowed(module, in_errors=True))
    assert "relay.errors" in flagged_in_errors

"""docs/architecture.md's layer table, enforced: every module's imports (including those inside functions) parsed
with ``ast`` and held against what its layer may import."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "architecture.md"
# Where each package's source lives in the checkout (pyproject.toml's package-dir; .ci/typecheck).
PACKAGES = {"relay": ROOT / "relay", "relay.adapters": ROOT / "adapters", "relay.emulator": ROOT / "emulator"}

# Network and process I/O: what "no network" rules out.
NETWORK = frozenset(
    {"socket", "ssl", "selectors", "asyncio", "subprocess", "multiprocessing", "http", "urllib.request"}
    | {"httpx", "requests", "aiohttp", "websockets", "httptools", "redis", "uvicorn", "uvloop"}
)
# What relay.protocol takes as arguments instead: the clock, randomness and the environment.
IMPURE = frozenset({"os", "time", "datetime", "random", "secrets", "uuid"})
# Optional extras (relay[redis], relay[plot]): only these modules may import them at their top.
EXTRAS = frozenset({"redis", "matplotlib"})
NEEDS_EXTRA = frozenset({"relay.emulator.cluster"})
DYNAMIC = "<dynamic import>"


@dataclass(frozen=True)
class Layer:
    name: str  # as in the doc's table
    members: tuple[str, ...]  # modules, or packages with everything under them
    may_import: tuple[str, ...] = ()  # the layers below it that it uses
    also: tuple[str, ...] = ()  # single modules (or module attributes) of layers it may not import otherwise
    third_party: frozenset[str] = frozenset()  # top-level import names
    network: bool | frozenset[str] = False  # True, False, or the only members that may
    impure: bool = True  # may read the clock, randomness, the environment


LAYERS = (
    Layer("errors", ("relay.errors",)),
    Layer("protocol", ("relay.protocol",), ("errors",), impure=False),
    Layer(
        "values",
        ("relay.models", "relay.http_errors", "relay.config", "relay.payload", "relay.files"),
        ("errors", "protocol"),
    ),
    Layer("adapters", ("relay.adapters",), ("errors", "protocol", "values"), third_party=frozenset({"nacl"})),
    Layer(
        "public API",
        (
            "relay",
            "relay.client",
            "relay.default",
            "relay.idempotency",
            "relay.senders",
            "relay.rules",
            "relay.web",
            "relay.testing",
        ),
        ("errors", "protocol", "values", "adapters"),
        # httpcore: relay.senders wraps the network backend of httpx's pools (the deadline bounds every read)
        third_party=frozenset({"httpx", "httpcore", "fastapi"}),
        network=frozenset({"relay.senders", "relay.idempotency"}),  # idempotency: futures, no socket
    ),
    Layer(
        "gateway",
        ("relay.gateway", "relay.identity"),
        ("errors", "protocol", "values", "public API"),
        third_party=frozenset({"fastapi", "starlette", "pydantic", "httpx", "jwt", "cryptography", "idna"}),
        network=True,
    ),
    Layer(
        "emulator",
        ("relay.emulator",),
        ("errors", "protocol"),
        also=("relay.config", "relay.files", "relay.__version__"),
        third_party=frozenset({"httptools", "websockets", "httpx", "msgpack", "jwt", "redis"}),
        network=True,
    ),
    Layer("cost", ("relay.cost",), ("errors",), also=("relay.files",), third_party=frozenset({"rich", "matplotlib"})),
    Layer(
        "CLI",
        ("relay.__main__", "relay.cli", "relay.serve"),
        ("errors", "protocol", "values", "adapters", "public API", "gateway", "emulator", "cost"),
        third_party=frozenset({"uvicorn", "h11", "fastapi", "uvloop", "redis"}),
        network=True,
    ),
)


def covers(member: str, name: str) -> bool:
    return name == member or name.startswith(member + ".")


def layer_of(name: str) -> Layer | None:
    """The layer holding module (or module attribute) ``name``: the one whose member is its longest prefix."""
    found = [(len(member), layer) for layer in LAYERS for member in layer.members if covers(member, name)]
    return max(found, key=lambda pair: pair[0])[1] if found else None


@dataclass(frozen=True)
class Import:
    target: str  # "a.b" for ``import a.b``; "a.b.c" for ``from a.b import c`` (c may be a module or any name)
    lazy: bool  # inside a function or ``if TYPE_CHECKING:``: not run when the module is imported


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, *, is_package: bool = False) -> Iterator[Import]:
    """Every import in ``source`` (module ``module``), relative ones made absolute; a call of ``import_module`` or
    ``__import__`` is a :data:`DYNAMIC` import, which no rule admits."""
    tree = ast.parse(source)
    lazy_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy_nodes.update(id(inner) for inner in ast.walk(node))
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            lazy_nodes.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            yield from (Import(alias.name, lazy) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            yield from (Import(base if alias.name == "*" else f"{base}.{alias.name}", lazy) for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                yield Import(DYNAMIC, lazy)


def _in(names: frozenset[str], target: str) -> bool:
    return any(covers(name, target) for name in names)


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """What ``module`` imports that its layer's row does not allow, one line each."""
    layer = layer_of(module)
    if layer is None:
        return [f"{module} is in no layer"]
    problems: list[str] = []
    for found in imports(source, module, is_package=is_package):
        target = found.target
        top = target.partition(".")[0]
        if target == DYNAMIC:
            problems.append(f"{module} imports dynamically")
            continue
        if top == "__future__":
            continue
        if top in sys.stdlib_module_names:
            if not layer.impure and _in(IMPURE, target):
                problems.append(f"{module} imports {target}: the clock, randomness or environment")
        elif top == "relay":
            owner = layer_of(target)
            below = owner is not None and owner.name in layer.may_import
            if not (owner is layer or below or _in(frozenset(layer.also), target)):
                problems.append(f"{module} ({layer.name}) imports {target} ({owner.name if owner else 'no layer'})")
            continue
        elif top not in layer.third_party:
            problems.append(f"{module} ({layer.name}) imports {top}, not a library its layer uses")
        network = layer.network if isinstance(layer.network, bool) else module in layer.network
        if not network and _in(NETWORK, target):
            problems.append(f"{module} imports {target}: network I/O")
    return problems


def eager_extra_users(sources: Mapping[str, str]) -> set[str]:
    """The modules of ``sources`` (name → source) that cannot be imported without an optional extra: those importing
    one at their top, and those importing such a module at their top."""
    eager = {
        module: {found.target for found in imports(source, module) if not found.lazy}
        for module, source in sources.items()
    }
    needing = {module for module, targets in eager.items() if any(_in(EXTRAS, target) for target in targets)}
    while True:
        more = {
            m for m, targets in eager.items() if m not in needing and any(_in(frozenset(needing), t) for t in targets)
        }
        if not more:
            return needing
        needing |= more


def unplaced(modules: Iterable[str]) -> list[str]:
    """The modules no row names: only packages cover what is under them, never the root ``relay`` (so a new top-level
    module needs a row, rather than falling to the public API's)."""
    return [
        name
        for name in modules
        if not any(
            name == member or (member != "relay" and covers(member, name))
            for layer in LAYERS
            for member in layer.members
        )
    ]


def source_modules() -> dict[str, Path]:
    """Every module of the three packages, by its installed name."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "relay" and parts[0] in ("adapters", "emulator"):
                continue  # an installed layout's copies, if any: the folders above are the source
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = source_modules()


def test_every_module_has_a_row() -> None:
    expected = {
        "relay",
        "relay.protocol.signing",
        "relay.adapters.pusher",
        "relay.emulator.server",
        "relay.cost.engine",
    }
    assert expected <= MODULES.keys()
    assert unplaced(MODULES) == []
    assert unplaced(["relay.client", "relay.newmodule", "relay.emulator.new"]) == ["relay.newmodule"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_layer_table(module: str) -> None:
    path = MODULES[module]
    assert violations(module, path.read_text(encoding="utf-8"), is_package=path.name == "__init__.py") == []


def test_only_the_cluster_needs_an_optional_extra() -> None:
    sources = {name: path.read_text(encoding="utf-8") for name, path in MODULES.items()}
    assert eager_extra_users(sources) == NEEDS_EXTRA


def test_the_doc_table_lists_these_layers() -> None:
    section = DOC.read_text(encoding="utf-8").partition("## Layers")[2].partition("\n## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    cells = {name.strip(): where for name, where in rows[1:]}  # after the header row
    assert list(cells) == [layer.name for layer in LAYERS]
    for layer in LAYERS:
        for member in layer.members:
            shown = "__init__" if member == "relay" else member.rpartition(".")[2]
            assert shown in cells[layer.name], f"{member} is not in the {layer.name} row's place"


def test_the_doc_lists_every_module_of_the_gateway() -> None:
    """The gateway's module table (docs/architecture.md, "The gateway") names each module of relay/gateway/."""
    section = DOC.read_text(encoding="utf-8").partition("\n## The gateway")[2].partition("\n## ")[0]
    listed = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    assert listed == {path.name for path in (ROOT / "relay" / "gateway").glob("*.py")}


# -- the checker itself, on modules that break each rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "source", "complaint"),
    [
        ("relay.errors", "from relay.protocol import codes", "relay.errors (errors) imports relay.protocol.codes"),
        ("relay.protocol.frames", "import jwt", "imports jwt, not a library"),
        ("relay.protocol.signing", "def now():\n    import time", "imports time: the clock"),
        ("relay.protocol.channels", "import os", "imports os: the clock, randomness or environment"),
        ("relay.protocol.channels", "from relay.models import User", "(protocol) imports relay.models.User (values)"),
        ("relay.payload", "from relay.client import Relay", "(values) imports relay.client.Relay (public API)"),
        ("relay.adapters.pusher", "import httpx", "imports httpx, not a library"),
        ("relay.adapters.pusher", "import socket", "imports socket: network I/O"),
        ("relay.adapters.ably", "from asyncio import sleep", "imports asyncio.sleep: network I/O"),
        ("relay.adapters.memory", "from relay.senders import SyncSender", "imports relay.senders.SyncSender"),
        ("relay.client", "import socket", "imports socket: network I/O"),
        ("relay.rules", "from relay.emulator.hub import AppState", "(public API) imports relay.emulator.hub.AppState"),
        ("relay.gateway", "from relay.adapters.base import Call", "(gateway) imports relay.adapters.base.Call"),
        ("relay.emulator.hub", "from relay.adapters.pusher import PusherAdapter", "imports relay.adapters.pusher"),
        ("relay.emulator.hub", "from relay import Relay", "(emulator) imports relay.Relay (public API)"),
        ("relay.emulator.hub", "from relay.models import Event", "(emulator) imports relay.models.Event (values)"),
        ("relay.emulator.session", "from .. import client", "(emulator) imports relay.client (public API)"),
        ("relay.emulator.server", "import pusher", "imports pusher, not a library"),
        ("relay.cost.engine", "from relay.protocol import frames", "(cost) imports relay.protocol.frames"),
        ("relay.cost.engine", "import httpx", "imports httpx, not a library"),
        ("relay.cli", "import ably", "imports ably, not a library"),
        ("relay.cli", "import importlib\nimportlib.import_module('relay.client')", "imports dynamically"),
    ],
)
def test_the_checker_flags(module: str, source: str, complaint: str) -> None:
    found = violations(module, source)
    assert any(complaint in line for line in found), found


def test_the_checker_admits_what_the_table_allows() -> None:
    admitted = {
        "relay.protocol.members": "import json, re\nfrom . import frames\nfrom relay.errors import ProtocolError",
        "relay.payload": "from relay.protocol.frames import dumps",
        "relay.adapters.pusher": "import time\nimport nacl.secret\nfrom .base import Call\nfrom relay.config import x",
        "relay.senders": "import asyncio, ssl\nimport httpx\nfrom relay.adapters.base import HttpRequest",
        "relay.emulator.console": "from relay.emulator import metrics\ndef f():\n    from relay import __version__",
        "relay.emulator.config": "import httpx\nfrom relay.config import is_url",
        "relay.cost.plot": "from .engine import estimate\ndef draw():\n    from matplotlib.figure import Figure",
    }
    assert {module: violations(module, source) for module, source in admitted.items()} == {
        module: [] for module in admitted
    }


def test_relative_imports_resolve_from_the_module_or_package() -> None:
    assert [found.target for found in imports("from . import frames", "relay.protocol", is_package=True)] == [
        "relay.protocol.frames"
    ]
    assert [found.target for found in imports("from ..errors import X", "relay.protocol.codes")] == ["relay.errors.X"]


def test_an_extra_needed_at_import_time_spreads_to_its_importers() -> None:
    sources = {
        "relay.emulator.cluster": "import redis.asyncio",
        "relay.emulator.server": "from relay.emulator.cluster import RedisCluster",
        "relay.cli": "def run():\n    from relay.emulator.cluster import RedisCluster",
        "relay.emulator.hub": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis",
        "relay.cost.plot": "import matplotlib",
    }
    assert eager_extra_users(sources) == {"relay.emulator.cluster", "relay.emulator.server", "relay.cost.plot"}

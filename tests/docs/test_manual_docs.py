"""The manual's prose pages: docs/concepts.md and docs/migration.md run their Python; blocks marked
``from <file>`` are that file's text (the examples, tested end to end); every relative link and anchor of the pages
of the manual resolves."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from relay.emulator.config import App, EmulatorConfig, load_config

ROOT = Path(__file__).parents[2]
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
EXCERPT = re.compile(r"^(?:#|//) from (\S+)\n")
LINKED_PAGES = [
    DOCS / "index.md",
    DOCS / "quickstart.md",
    DOCS / "concepts.md",
    DOCS / "configuration.md",
    DOCS / "migration.md",
    DOCS / "deploy.md",
    ROOT / "examples" / "README.md",
    ROOT / "README.md",
]


def blocks(path: Path) -> list[tuple[str, str]]:
    return BLOCK.findall(path.read_text())


@pytest.mark.parametrize("page", ["concepts.md", "migration.md"])
def test_python_blocks_run(page: str) -> None:
    runnable = [body for lang, body in blocks(DOCS / page) if lang == "python" and not EXCERPT.match(body)]
    assert runnable, page
    for body in runnable:
        exec(compile(body, str(DOCS / page), "exec"), {"__name__": "docs"})


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_excerpts_are_the_files_text() -> None:
    excerpts = [(match, body) for _, body in blocks(DOCS / "migration.md") if (match := EXCERPT.match(body))]
    assert len(excerpts) == 3
    for match, body in excerpts:
        source = (ROOT / match.group(1)).read_text()
        wanted, have = stripped_lines(body[match.end() :]), stripped_lines(source)
        assert any(have[i : i + len(wanted)] == wanted for i in range(len(have))), (
            f"the excerpt from {match.group(1)} is not in that file any more:\n{body}"
        )


def test_every_block_of_concepts_and_migration_is_run_or_checked() -> None:
    for page in ("concepts.md", "migration.md"):
        for lang, body in blocks(DOCS / page):
            assert lang == "python" or lang == "text" or EXCERPT.match(body), f"{page}: an unchecked {lang} block"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = BLOCK.sub("", path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page: Path) -> None:
    text = BLOCK.sub("", page.read_text())
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no #{anchor} in {resolved.name}"


def test_the_gateway_embedding_example_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/gateway.md's FastAPI embedding example, with the settings it reads from the environment."""
    monkeypatch.setenv("RELAY_URL", "memory://gateway-docs")
    monkeypatch.setenv("RELAY_API_TOKEN", "token")
    (body,) = [body for lang, body in blocks(DOCS / "gateway.md") if lang == "python"]
    namespace: dict[str, object] = {"__name__": "docs"}
    exec(compile(body, str(DOCS / "gateway.md"), "exec"), namespace)
    paths = set(namespace["app"].openapi()["paths"])  # type: ignore[attr-defined]
    assert {"/v1/publish", "/v1/auth/channel", "/v1/webhooks"} <= paths
    assert set(namespace["whole"].openapi()["paths"]) >= paths  # type: ignore[attr-defined]


def test_the_emulator_page_s_config_files_load(tmp_path: Path) -> None:
    """docs/emulator.md's TOML blocks (the several-apps file, the key rotation's first step, the operations settings)
    are files `relay emulator --config` takes as they are written."""
    fenced = re.compile(r"^ *```toml\n(.*?)^ *```$", re.MULTILINE | re.DOTALL)
    toml_blocks = [textwrap.dedent(block) for block in fenced.findall((DOCS / "emulator.md").read_text())]
    assert len(toml_blocks) == 3
    path = tmp_path / "emulator.toml"
    loaded = []
    for block in toml_blocks:
        path.write_text(block)
        loaded.append(load_config(path, defaults=EmulatorConfig(apps=(App("9", "k", "s"),))))
    assert [app.app_id for app in loaded[0].apps] == ["1", "2"]
    assert loaded[1].apps[0].keys == ["shop-key", "shop-key-2026"]

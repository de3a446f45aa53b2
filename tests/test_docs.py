"""The documentation: the MkDocs site builds strictly and documents every command and module, and the README
stays a front door whose two commands, Python example and links all work."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 260
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def public_modules() -> list[tuple[str, ...]]:
    """Every public module and package of harness/, which the API reference must have a page for (private
    names, ``_x``, left out)."""
    modules = set()
    for path in (ROOT / "harness").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if not any(p.startswith("_") for p in parts):
            modules.add(parts)
    return sorted(modules)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as `mkdocs build --strict` writes it: a broken link or anchor, or a page left out of the nav,
    fails the build."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f",
                             str(ROOT / "mkdocs.yml"), "--site-dir", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_site_builds_strictly_and_its_cli_reference_names_every_command(site):
    page = (site / "cli-reference" / "index.html").read_text(encoding="utf-8")
    missing = [name for name in sorted(main.commands) if f"harness {name}" not in page]
    assert missing == [], f"commands missing from the CLI reference: {missing}"


def test_the_api_reference_has_a_page_for_every_public_module(site):
    missing = [".".join(parts) for parts in public_modules()
               if not (site / "reference" / Path(*parts) / "index.html").is_file()]
    assert missing == []
    page = (site / "reference" / "harness" / "attribution" / "index.html").read_text(encoding="utf-8")
    assert "harness.attribution" in page and "explain" in page      # rendered from the docstrings


def test_the_readme_is_a_front_door_with_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make demo" in text and "make test" in text
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_readme_python_example_runs(tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 1, "the README holds one Python example"
    result = subprocess.run([sys.executable, "-c", blocks[0]], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr


def test_every_relative_link_of_the_readme_resolves():
    targets = LINK.findall(README.read_text(encoding="utf-8"))
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "the README links into the docs"
    missing = [t for t in relative if not (ROOT / t.split("#")[0]).exists()]
    assert missing == []

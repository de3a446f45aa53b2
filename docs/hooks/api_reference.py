"""The API reference's pages, generated at build time from the package tree (a mkdocs hook).

Every public module under ``harness/`` gets a page holding one mkdocstrings directive (``::: harness.x.y``), and
the nav entry "API reference" becomes that tree, a section per package. Nothing lists modules by hand, so the
reference follows the package as modules move. Skipped: private modules and packages (a name starting with
``_``, other than a package's ``__init__.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

PACKAGE = "harness"
REFERENCE = "reference"
# Sphinx roles in docstrings (":func:`x`"), which Markdown renders as the role's name before the code span
ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):(?=<code>)")


def _root(config) -> Path:
    return Path(config.config_file_path).resolve().parent


def public_modules(root: Path) -> list[tuple[str, ...]]:
    """The dotted parts of every public module and package under ``root / harness``, packages first."""
    modules = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        modules.append(parts)
    return sorted(set(modules))


def _is_package(root: Path, parts: tuple[str, ...]) -> bool:
    return (root.joinpath(*parts) / "__init__.py").is_file()


def page_of(root: Path, parts: tuple[str, ...]) -> str:
    """The reference page of a module: ``reference/harness/x/index.md`` for a package, else ``.../x.md``."""
    if _is_package(root, parts):
        return "/".join((REFERENCE, *parts, "index.md"))
    return "/".join((REFERENCE, *parts)) + ".md"


def _nav(root: Path, modules: list[tuple[str, ...]], package: tuple[str, ...]) -> list:
    """The nav of one package: its own page, then its modules, then a section per subpackage."""
    entries: list = [page_of(root, package)]
    children = [m for m in modules if len(m) == len(package) + 1 and m[: len(package)] == package]
    for child in children:
        if _is_package(root, child):
            entries.append({".".join(child): _nav(root, modules, child)})
        else:
            entries.append({".".join(child): page_of(root, child)})
    return entries


def _index(root: Path, modules: list[tuple[str, ...]]) -> str:
    lines = ["# API reference", "",
             "Rendered from the docstrings of every public module of the package (generated at build time from",
             "the package tree). The command line's reference is [its own page](../cli-reference.md).", ""]
    for parts in modules:
        target = page_of(root, parts).removeprefix(REFERENCE + "/")
        lines.append(f"- [`{'.'.join(parts)}`]({target})")
    return "\n".join(lines) + "\n"


def on_config(config):
    """Replace the nav entry "API reference" by the package tree."""
    root = _root(config)
    modules = public_modules(root)
    tree = [f"{REFERENCE}/index.md", {PACKAGE: _nav(root, modules, (PACKAGE,))}]
    for i, entry in enumerate(config.nav or []):
        if isinstance(entry, dict) and "API reference" in entry:
            config.nav[i] = {"API reference": tree}
    return config


def on_files(files, config):
    """Add the generated pages: the index and one page per module."""
    root = _root(config)
    modules = public_modules(root)
    files.append(File.generated(config, f"{REFERENCE}/index.md", content=_index(root, modules)))
    for parts in modules:
        files.append(File.generated(config, page_of(root, parts), content=f"::: {'.'.join(parts)}\n"))
    return files


def on_page_content(html, page, config, files):
    """Drop the Sphinx role names in front of code spans on the reference's pages."""
    if page.file.src_uri.startswith(REFERENCE + "/"):
        return ROLE.sub("", html)
    return html

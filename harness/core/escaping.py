"""Text that a model or a file supplied (names, labels, card fields, captions), made inert for each output format.

Third-party files are hostile until checked: a model name can carry HTML, a label a CSV formula, a card field a
terminal escape sequence. Each renderer escapes what it writes, with the rule of its format:

* HTML: Jinja2's autoescape (``harness.report.render``), kept on for every ``.html`` template;
* Markdown: :func:`markdown_text` for text, :func:`markdown_url` for link targets;
* CSV: :func:`csv_cell`, OWASP's rule against formula injection;
* JSON: ``json.dumps`` with ASCII output, which escapes every control character;
* the terminal: :func:`terminal_text`.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import quote

# Backslash escapes of CommonMark (every ASCII punctuation character may be escaped). Escaped always: HTML
# (< >), code (`), emphasis (*), tables (|), strikethrough (~) and the escape itself. "_" opens emphasis only at
# a word's edge, and "[" / "]" make a link or an image only as "](" or "][": those forms are escaped, so that
# names such as efficientnet_lite0 and intervals such as [0.90, 0.95] read as they are written.
_MARKDOWN_ALWAYS = re.compile(r"([\\`*<>|~])")
_MARKDOWN_EDGE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_MARKDOWN_LINK = re.compile(r"\](?=[(\[:])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
# Terminal: every C0 control but tab and newline (ESC among them: without it no escape sequence acts), C1
# controls (CSI and OSC of 8-bit terminals), and the Unicode controls that reorder or hide text (bidi overrides
# and isolates, "Trojan Source").
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


class MarkdownSafe(str):
    """Text already made inert for Markdown (a link target from :func:`markdown_url`): written as it is."""


def _visible(match: re.Match) -> str:
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in match.group(0))


def terminal_text(text: str) -> str:
    """``text`` safe to print: escape sequences and control characters shown as ``\\xNN`` / ``\\uNNNN`` (visible,
    never acted on by the terminal); tabs and newlines kept."""
    return _CONTROL.sub(_visible, str(text))


def markdown_text(value) -> str:
    """``value`` as inline Markdown text that renders as itself: line breaks folded to spaces (no heading, list
    or table row can start), control characters dropped, markup characters backslash-escaped."""
    if isinstance(value, MarkdownSafe):
        return value
    text = _CONTROL.sub("", _LINE_BREAKS.sub(" ", str(value)))
    text = _MARKDOWN_ALWAYS.sub(r"\\\1", text)
    text = _MARKDOWN_EDGE_UNDERSCORE.sub(r"\\_", text)
    return _MARKDOWN_LINK.sub(r"\\]", text)


def markdown_url(path) -> MarkdownSafe:
    """A relative link target (a figure's file) percent-encoded, so that no character of it ends the link."""
    return MarkdownSafe(quote(str(path), safe="/._-~"))


def csv_cell(value):
    """A CSV cell that no spreadsheet evaluates: text starting with ``= + - @``, a tab or a carriage return gets a
    leading ``'`` (OWASP's rule for CSV injection). Numbers are written as numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def file_stem(name: str) -> str:
    """A file name made from ``name`` (a model's), safe on every file system and in every URL: ``name`` itself
    where it holds only letters, digits, ``.``, ``_`` and ``-`` (``a/b`` becomes ``a-b``); else those characters
    and a short hash of the whole name, so that two names never share a file."""
    safe = _UNSAFE_IN_FILE_NAMES.sub("-", name.replace("/", "-")).strip(".-") or "model"
    if safe == name.replace("/", "-"):
        return safe
    return f"{safe[:60]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"

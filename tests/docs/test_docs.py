"""The examples of the README and of every page under docs/ run, and print what the text says.

An example is a ```python block followed, after one blank line, by a ```text block holding
what it prints. Every ```python block must have one: a block that only shows a shape without
running (a configuration snippet, a signature) is fenced ```py or ```pycon instead, and these
tests skip it on purpose. Logging output is not compared (examples may quiet the ``tinybus``
logger); each example runs in a namespace of its own.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tinybus

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(`{3,})(\S*)\s*$")


@dataclass(frozen=True)
class Example:
    document: str  # relative to the repository, e.g. "docs/requests.md"
    line: int  # where its ```python fence is
    heading: str  # the heading it is under
    code: str
    expected: str | None  # None: the block has no ```text block after it


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _blocks(text: str) -> list[tuple[int, str, str, str]]:
    """Each fenced block, as (line, language, body, heading above it), in order."""
    blocks: list[tuple[int, str, str, str]] = []
    lines = text.splitlines(keepends=True)
    heading = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        opening = FENCE.match(line)
        if opening is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            index += 1
            continue
        fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != fence:
            end += 1
        blocks.append((index + 1, language, "".join(lines[index + 1 : end]), heading))
        index = end + 1
    return blocks


def examples_of(path: Path) -> list[Example]:
    text = path.read_text()
    lines = text.splitlines()
    document = path.relative_to(ROOT).as_posix()
    blocks = _blocks(text)
    found: list[Example] = []
    for position, (line, language, body, heading) in enumerate(blocks):
        if language != "python":
            continue
        expected = None
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        if following is not None and following[1] == "text":
            between = lines[line + body.count("\n") + 1 : following[0] - 1]
            if between == [""]:  # one blank line between the two blocks
                expected = following[2]
        found.append(Example(document, line, heading, body, expected))
    return found


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "top"


def all_examples() -> list[Any]:
    params: list[Any] = []
    for path in documents():
        seen: dict[str, int] = {}
        for example in examples_of(path):
            name = _slug(example.heading)
            seen[name] = seen.get(name, 0) + 1
            suffix = "" if seen[name] == 1 else f"-{seen[name]}"
            params.append(pytest.param(example, id=f"{example.document}::{name}{suffix}"))
    return params


EXAMPLES = all_examples()


def test_readme_has_examples() -> None:
    assert len(examples_of(ROOT / "README.md")) >= 6


def test_every_python_block_shows_its_output() -> None:
    """A runnable example without its output would go unchecked: fence it ```py if it only
    shows a shape, else add the ```text block it prints."""
    unchecked = [
        f"{example.document}:{example.line}"
        for path in documents()
        for example in examples_of(path)
        if example.expected is None
    ]
    # An indented example (in a list item or an admonition) would not be found at all.
    unchecked += [
        f"{path.relative_to(ROOT).as_posix()}:{number} (indented)"
        for path in documents()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.match(r"\s+`{3,}python\s*$", line)
    ]
    assert unchecked == []


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_prints_what_the_text_shows(example: Example) -> None:
    output = io.StringIO()
    logger = logging.getLogger("tinybus")
    level = logger.level  # examples may quiet the log; the tests after them must not inherit it
    try:
        with contextlib.redirect_stdout(output):
            code_object = compile(
                example.code, f"{example.document}:{example.line}", "exec", dont_inherit=True
            )
            exec(code_object, {"__name__": "docs_example"})
    finally:
        logger.setLevel(level)
    assert output.getvalue() == example.expected


def test_every_docs_page_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    pages = [path.relative_to(DOCS).as_posix() for path in sorted(DOCS.rglob("*.md"))]
    assert [page for page in pages if page not in config] == []


def test_the_api_reference_documents_every_public_name() -> None:
    reference = "".join(path.read_text() for path in sorted((DOCS / "reference").glob("*.md")))
    documented = set(re.findall(r"^::: tinybus\.(?:\w+\.)*?(\w+)\s*$", reference, re.MULTILINE))
    assert sorted(set(tinybus.__all__) - documented) == []


def test_main_example_runs_as_the_quick_start_says() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "user_service.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.splitlines() == ["User created: john", "Retrieved user: john"]

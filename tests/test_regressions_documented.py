"""Regression tests are documented one way: docs/RELIABILITY.md's "Failures we test for" names each
test, and a `# Went wrong: ...` line right above the test says what once went wrong."""

from __future__ import annotations

import ast
import fnmatch
import re

from helpers.processes import REPO

TESTS = REPO / "tests"
WENT_WRONG = "# Went wrong:"


def failures_we_test_for() -> list[tuple[str, list[str]]]:
    """(what went wrong, its test references) for each item of the list, a reference being
    `path.py::name` or `::name` (the path of the reference before it) or a bare `path.py`."""
    text = (REPO / "docs" / "RELIABILITY.md").read_text(encoding="utf-8")
    section = text.split("\n## Failures we test for\n", 1)[1].split("\n## ", 1)[0]
    items = []
    for item in re.split(r"\n- ", section)[1:]:
        what, arrow, references = item.partition(" ->")
        assert arrow, f"no '->' in the item: {item!r}"
        items.append((" ".join(what.split()), re.findall(r"`([^`]+)`", references)))
    return items


def comment_above(lines: list[str], function: ast.FunctionDef) -> list[str]:
    """The comment lines right above a test (and above its decorators)."""
    first = min([function.lineno] + [decorator.lineno for decorator in function.decorator_list])
    comments = []
    index = first - 2
    while index >= 0 and lines[index].startswith("#"):
        comments.append(lines[index])
        index -= 1
    return comments


def test_every_test_named_in_failures_we_test_for_exists_and_says_what_went_wrong() -> None:
    items = failures_we_test_for()
    assert len(items) > 30, "the list of 'Failures we test for' was not found in docs/RELIABILITY.md"
    problems = []
    for what, references in items:
        assert references, f"no test named for: {what}"
        path = ""
        for reference in references:
            named_path, _, name = reference.partition("::")
            path = named_path or path
            source = TESTS / path
            if not source.is_file():
                problems.append(f"{reference}: no file tests/{path} ({what})")
                continue
            if not name:
                continue  # a whole file (the crash-state tests) covers the failure
            text = source.read_text(encoding="utf-8")
            pattern = name.split("[", 1)[0]  # a parameter id names one case of the test
            tests = [
                node
                for node in ast.parse(text).body
                if isinstance(node, ast.FunctionDef) and fnmatch.fnmatchcase(node.name, pattern)
            ]
            if not tests:
                problems.append(f"tests/{path}::{name}: no such test ({what})")
            for test in tests:
                if not any(line.startswith(WENT_WRONG) for line in comment_above(text.splitlines(), test)):
                    problems.append(f"tests/{path}::{test.name}: no '{WENT_WRONG}' line above it ({what})")
    assert not problems, "\n".join(problems)


def test_no_regression_test_uses_another_convention() -> None:
    """Bug numbers of a deleted log, 'Regression (...)', 'Found by review', 'fixed in <sha>':
    each said less than what went wrong, and the line above the test now says that."""
    other = re.compile(r'"""(Bug \d+:|Regression \(|Found by review)|a bug fixed in [0-9a-f]{7}')
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if other.search(line)
    ]
    assert not found, "\n".join(found)

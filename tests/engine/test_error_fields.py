"""Typed errors carry the path as a field, and their text names it once."""

from __future__ import annotations

from pathlib import Path

import pytest

from filelog_bus import LogReader
from filelog_bus.check import verify_bus
from filelog_bus.errors import NotABusError


# Went wrong: "no bus at X: the directory does not exist (X); check the path" named the path twice.
def test_a_missing_bus_is_named_once_in_the_text_and_given_as_the_path_field(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    with pytest.raises(NotABusError) as raised:
        LogReader(missing).open()
    assert raised.value.path == str(missing) and raised.value.advice == "check the path"
    assert str(raised.value) == f"no bus at {missing}: the directory does not exist; check the path"


# Went wrong: the check's refusal of a missing directory or a file had no path field.
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_verify_refusing_a_path_gives_it_as_the_path_field(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bus"
    if kind == "file":
        path.write_text("not a bus")
    with pytest.raises(NotABusError) as raised:
        verify_bus(str(path))
    assert raised.value.path == str(path)
    assert str(raised.value).count(str(path)) == 1


def test_a_path_that_only_starts_the_named_path_is_still_given(tmp_path: Path) -> None:
    error = NotABusError(f"cannot read {tmp_path}/bus/00000000000000000000.log", path=f"{tmp_path}/bus")
    assert str(error).endswith(f"({tmp_path}/bus)")

"""Permissions: files follow the umask, readers need only read access and never write.

* Every file and the directory a writer creates get the process umask applied
  (checked with 0o022 and 0o077 in writer processes): nothing world-writable.
* A consumer that may only read the bus (a forked child that drops to user and
  group 65534, "nobody") reads everything, seeks and finds records, even on a bus
  whose writer was killed and left an unpublished tail; a writer without write
  access gets BusPermissionError.
* A reader never creates, modifies or deletes anything in the bus directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from helpers.bus import (
    dir_snapshot,
    published_view,
    read_all,
    segment_paths,
    write_and_close,
    write_then_kill,
)
from helpers.permissions import NOBODY, as_nobody
from helpers.processes import run_python

from filelog_bus import LogReader, LogWriter
from filelog_bus.check import bus_stats, verify_bus
from filelog_bus.errors import BusPermissionError, OffsetOutOfRangeError
from filelog_bus.layout import FILE_HEADER_SIZE, OFFSET_INDEX_SUFFIX
from filelog_bus.record import encode_record
from filelog_bus.retention import plan_retention_now

#: Creates a bus under the given umask: appends across several segments, deletes an index (so the
#: next open rebuilds it), reopens, applies retention, closes. argv: path umask
UMASK_WRITER = """
import glob, os, sys
from filelog_bus import LogWriter

path, umask = sys.argv[1], int(sys.argv[2], 8)
os.umask(umask)
with LogWriter(path, segment_bytes=1024) as writer:
    for i in range(60):
        writer.append("users", b"x" * 50)
os.unlink(sorted(glob.glob(os.path.join(path, "*.index")))[1])
with LogWriter(path, segment_bytes=1024) as writer:
    writer.append("users", b"y")
    writer.apply_retention(max_bytes=3000)
"""


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_files_are_created_under_the_process_umask(bus_dir: Path, umask: int) -> None:
    result = run_python(UMASK_WRITER, str(bus_dir), oct(umask))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(bus_dir.stat().st_mode) == 0o777 & ~umask
    names = sorted(os.listdir(bus_dir))
    assert "watermark" in names and "writer.lock" in names and len(segment_paths(bus_dir)) > 1
    assert not [n for n in names if n.endswith(".new")], "a temporary file was left behind"
    for name in names:
        mode = (bus_dir / name).stat().st_mode
        assert stat.S_ISREG(mode), name
        assert stat.S_IMODE(mode) == 0o666 & ~umask, (
            f"{name}: {oct(stat.S_IMODE(mode))} under umask {oct(umask)}"
        )
        assert not mode & stat.S_IWOTH, f"{name} is world-writable"


# -- a consumer with read access only ------------------------------------------------------------------------


def summary(records: list[Any]) -> list[list[Any]]:
    return [[r.offset, r.category, r.payload.hex()] for r in records]


@pytest.mark.others_reach_shared_dir
def test_consumer_with_read_access_only_reads_everything(shared_dir: Path) -> None:
    bus = shared_dir / "bus"
    old = os.umask(0o022)  # the writer processes inherit it: files 0o644, directory 0o755
    try:
        write_and_close(bus, "a", 25, segment_bytes=1024)
        write_then_kill(bus, "b", 10, segment_bytes=1024)  # no recovery yet ...
        with open(segment_paths(bus)[-1], "ab") as newest:  # ... and an unpublished record at the tail
            newest.write(encode_record("users", 0.0, b"not published"))
    finally:
        os.umask(old)
    records, end = published_view(bus)
    snapshot = dir_snapshot(bus)
    probes = [records[7].offset, records[7].offset + 1, records[-1].offset, end]

    def consume() -> dict[str, Any]:
        out: dict[str, Any] = {"uid": os.geteuid()}
        with LogReader(bus, timeout=0.2) as reader:
            out["all"] = summary(list(reader))
            out["end"] = reader.end_offset
            out["seeks"] = []
            for probe in probes:
                reader.seek(probe)
                found = reader.read_next()
                out["seeks"].append(None if found is None else found.offset)
            reader.seek_to_beginning()
            out["hosts"] = summary([r for r in iter(lambda: reader.find_next("hosts"), None)])
        try:
            LogWriter(bus).open()
            out["writer"] = "opened"
        except BusPermissionError as exc:
            out["writer"] = str(exc)
        return out

    got = as_nobody(consume)
    assert got["uid"] == NOBODY
    assert got["all"] == summary(records)
    assert got["end"] == end
    expected_seeks = []
    for probe in probes:
        after = [r.offset for r in records if r.offset >= probe]
        expected_seeks.append(after[0] if after else None)
    assert got["seeks"] == expected_seeks
    assert got["hosts"] == summary([r for r in records if r.category == "hosts"])
    assert "permission denied" in got["writer"] and "writer.lock" in got["writer"], got["writer"]
    assert dir_snapshot(bus) == snapshot


@pytest.mark.others_reach_shared_dir
def test_consumer_without_read_access_gets_a_permission_error(shared_dir: Path) -> None:
    bus = shared_dir / "bus"
    write_and_close(bus, "a", 5)
    for path in [bus, *bus.iterdir()]:
        path.chmod(0o711 if path.is_dir() else 0o600)  # others may traverse, not read

    def consume() -> str:
        try:
            with LogReader(bus) as reader:
                list(reader)
        except BusPermissionError as exc:
            return f"BusPermissionError: {exc}"
        return "read it"

    outcome = as_nobody(consume)
    assert outcome.startswith("BusPermissionError") and "permission denied" in outcome, outcome


# Went wrong: stats and retention's planning on a bus directory the user may not list said they were
# refused "to read the bus" instead of what they were doing (to take its statistics, to plan retention).
@pytest.mark.others_reach_shared_dir
def test_stats_and_retention_planning_refused_a_listing_say_what_they_were_doing(shared_dir: Path) -> None:
    bus = shared_dir / "bus"
    write_and_close(bus, "a", 5)
    bus.chmod(0o711)  # others may traverse, not list

    def refusals() -> list[str]:
        said = []
        for attempt in (
            lambda: bus_stats(str(bus)),
            lambda: plan_retention_now(str(bus), max_age_days=1, max_bytes=None),
            lambda: verify_bus(str(bus)),
        ):
            try:
                attempt()
            except BusPermissionError as exc:
                said.append(exc.reason)
        return said

    assert as_nobody(refusals) == [
        f"permission denied reading {bus} to {purpose}"
        for purpose in ("take its statistics", "plan retention", "verify it")
    ]


# -- a reader never writes -----------------------------------------------------------------------------------


def exercise_reader(bus: Path) -> None:
    """Everything a consumer does, including what fails."""
    with LogReader(bus, timeout=0.2) as reader:
        records = list(reader)  # ends after waiting 0.2 s at the end
        reader.seek_to_beginning()
        for record in records[::7]:
            reader.seek(record.offset)
            reader.read_next()
            reader.seek(record.offset + 1)
            reader.read_next()
        for category in ("users", "groups", "hosts", "printers", "never-written"):
            reader.seek_to_beginning()
            while reader.find_next(category) is not None:
                pass
        with pytest.raises(OffsetOutOfRangeError):
            reader.seek(reader.end_offset + 1)
        _ = reader.begin_offset, reader.end_offset, reader.position


def test_reader_never_creates_or_modifies_anything(bus_dir: Path) -> None:
    write_and_close(bus_dir, "a", 40, segment_bytes=1024, interval=64)
    write_then_kill(bus_dir, "b", 10, segment_bytes=1024, interval=64)
    newest = segment_paths(bus_dir)[-1]
    with open(newest, "ab") as file:
        file.write(b"\x00torn tail")  # a tail only a writer may cut
    index = sorted(bus_dir.glob("*" + OFFSET_INDEX_SUFFIX))[1]
    with open(index, "r+b") as file:
        file.seek(FILE_HEADER_SIZE + 3)
        file.write(b"\xff")  # damage only a writer may repair
    before = dir_snapshot(bus_dir)
    contents = {p.name: p.read_bytes() for p in bus_dir.iterdir()}

    exercise_reader(bus_dir)
    assert dir_snapshot(bus_dir) == before
    assert {p.name: p.read_bytes() for p in bus_dir.iterdir()} == contents
    assert len(read_all(bus_dir)) == 50


def test_reader_waiting_for_a_bus_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    with LogReader(missing, missing_ok=True, timeout=0.2) as reader:
        assert list(reader) == []
        assert reader.find_next("users") is None
        assert (reader.begin_offset, reader.end_offset) == (0, 0)
    assert not missing.exists()
    assert os.listdir(tmp_path) == []

"""A file-system call that fails in a roll, an index write or an open: typed, the writer stops, nothing leaks.

Faults are injected through the engine's I/O seam (``filelog_bus.fs``, see tests/helpers/faults.py)
or come from a real full tmpfs; after each one the promises of docs/RELIABILITY.md are checked
(tests/helpers/promises.py). The fault sweep (test_fault_sweep.py) fails every call in turn; these
are the cases that once went wrong, each checked in depth.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers.bus import read_all, segment_names
from helpers.faults import Fault, count_calls, fill_disk, injected, is_directory, path_faults
from helpers.promises import (
    BIG,
    READ_DEADLINE,
    Ack,
    after_failed_append,
    append,
    assert_stopped,
    check_bus,
    count_target_calls,
    open_fds,
    open_writer,
    prepare,
    record,
    reopen_append_and_roll,
)

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import (
    BusPermissionError,
    BusWriteError,
    FilelogBusError,
)

# -- a roll that fails after the new segment file was linked --------------------------------


# Went wrong: the failed roll left its new segment behind: retries hit EEXIST, records were acknowledged past the old segment's end.
@pytest.mark.parametrize(
    ("call", "error"),
    [("fsync", errno.EIO), ("fsync", errno.ENOSPC), ("open", errno.EMFILE)],
    ids=["dir-fsync-EIO", "dir-fsync-ENOSPC", "dir-open-EMFILE"],
)
@pytest.mark.parametrize("then", ["append", "retention"])
def test_a_roll_failing_after_the_new_segment_was_linked_stops_the_writer(
    tmp_path: Path, call: str, error: int, then: str
) -> None:
    """A roll that fails after the new segment file was linked (the directory fsync fails with
    EIO/ENOSPC, or opening the directory hits EMFILE) stops the writer; every acknowledged record stays
    readable, and the reopened bus rolls again and never lets retention delete its active segment.
    """
    bus = tmp_path / "bus"
    writer, acks, big = prepare(bus, "rolls")
    offset = writer.end_offset
    new_segment = bus / f"{offset:020d}.log"  # a roll names the new segment after the end

    def decide(name: str, path: str | None, args: tuple[Any, ...]) -> int | None:
        if name == call and new_segment.exists() and is_directory(path, bus):
            return error
        return None

    with path_faults(decide) as fired, pytest.raises(BusWriteError) as info:
        writer.append(*big)
    assert fired, f"the roll made no fs.{call} of the bus directory once the new segment existed"
    assert info.value.errno == error
    assert info.value.path is None or Path(info.value.path).is_relative_to(bus)
    assert info.value.offset in (None, offset)
    assert_stopped(writer, BusWriteError, bus)
    assert [r.offset for r in read_all(bus, hang_guard=READ_DEADLINE)] == [a.offset for a in acks]
    writer.close()

    since = 0
    with open_writer(bus) as writer:
        if then == "retention":
            append(writer, acks, record("before-retention", 0, size=20))  # the active segment holds a record
            active = segment_names(bus)[-1]
            deleted = writer.apply_retention(max_bytes=1)
            assert active not in deleted and (bus / active).exists(), "retention deleted the active segment"
            since = writer.begin_offset
            assert since <= int(active[:20])
        append(writer, acks, record("small", 0, size=20))
        append(writer, acks, record("big-again", 0, size=BIG))
        for seq in range(12):
            append(writer, acks, record("then", seq))
    records = check_bus(bus, acks, since=since)
    assert records[-1].offset == acks[-1].offset
    reopen_append_and_roll(bus, acks, "later", since=since)


# -- EIO from the fdatasync inside a roll ---------------------------------------------------


# Went wrong: EIO from the fdatasync inside a roll left the writer usable.
def test_eio_from_a_sync_inside_a_roll_stops_the_writer(tmp_path: Path) -> None:
    """EIO from a sync inside a roll stops the writer: after EIO it refuses until reopened.

    EIO at each fdatasync and each fsync of an append that rolls, in turn.
    """
    counts = count_target_calls(tmp_path, "rolls")
    cases = [(call, k) for call in ("fdatasync", "fsync") for k in range(1, counts.get(call, 0) + 1)]
    assert counts.get("fdatasync", 0) + counts.get("fsync", 0) >= 2, f"a roll made no syncs? {counts}"
    for call, k in cases:
        bus = tmp_path / f"bus-{call}-{k}"
        writer, acks, target = prepare(bus, "rolls")
        offset = writer.end_offset
        with injected(Fault(call, k, errno.EIO)) as log, pytest.raises(BusWriteError) as info:
            writer.append(*target)
        assert log.fired
        assert info.value.errno == errno.EIO, f"fs.{call} #{k}"
        assert info.value.offset in (None, offset)
        assert isinstance(writer.failure, BusWriteError) and writer.failure.errno == errno.EIO
        after_failed_append(bus, writer, acks, BusWriteError)


# -- ENOSPC while writing the category index ------------------------------------------------


# Went wrong: after ENOSPC in the category index, the retried record got no index entry (the in-memory 'seen' set kept the failed one).
@pytest.mark.parametrize(
    ("target", "nth"),
    [(".catindex", 1), (".catindex", 2), (".catindex", 5), (".catsummary", 1), (".catsummary", 2)],
)
def test_enospc_writing_the_category_index_then_a_retried_append_is_indexed(
    tmp_path: Path, target: str, nth: int
) -> None:
    """After ENOSPC while writing the category index, the retried append is indexed: find_next finds
    it, and the category summary written at the roll does not make readers skip its segment.

    The nth write to a category index (or to a category summary, at a roll) fails with ENOSPC; the
    append is retried on a reopened writer (the failed one is stopped).
    """
    bus = tmp_path / "bus"
    armed = [False]
    writes = [0]

    def decide(name: str, path: str | None, args: tuple[Any, ...]) -> int | None:
        if armed[0] and name in ("write", "pwrite") and path is not None and target in os.path.basename(path):
            writes[0] += 1
            if writes[0] == nth:
                return errno.ENOSPC
        return None

    acks: list[Ack] = []
    failed = None
    raised = False
    with path_faults(decide) as fired:
        writer = open_writer(bus)  # inside the block: the tracker learns which fd is which file
        armed[0] = True
        for seq in range(80):
            rec = record("pre", seq)
            offset = writer.end_offset
            try:
                append(writer, acks, rec)
            except BusWriteError as exc:
                failed, raised = rec, True
                assert exc.errno == errno.ENOSPC
                assert exc.offset in (None, offset)
                break
            if fired:
                failed = rec  # the fault did not surface: the writer claims it coped; hold it to that
                break
    assert fired, f"no write to a {target} file was made (saw {writes[0]})"
    assert failed is not None
    if raised:
        if writer.failure is not None:  # stopped: the retry goes to a new writer
            assert_stopped(writer, BusWriteError, bus)
            writer.close()
            writer = open_writer(bus)
        append(writer, acks, failed)  # the retry
    retried = acks[-1]
    with writer:
        for seq in range(40):  # several rolls: the retried record's segment gets its summary
            append(writer, acks, record("post", seq))
    check_bus(bus, acks)
    with LogReader(bus, timeout=0) as reader:
        reader.seek(retried.offset)
        found = reader.find_next(retried.category)
        assert found is not None and found.offset == retried.offset, "find_next missed the retried record"
    reopen_append_and_roll(bus, acks, "later")


# -- opening a writer on a full disk --------------------------------------------------------


def assert_typed_open_failure(exc: BaseException, error: int) -> None:
    """A failed open raises a FilelogBusError; an OSError-based one carries the system's errno."""
    assert isinstance(exc, FilelogBusError), f"open() raised a bare {type(exc).__name__}: {exc!r}"
    assert str(exc)
    if isinstance(exc, OSError):
        assert isinstance(exc, (BusWriteError, BusPermissionError))
        assert exc.errno == error, f"errno {exc.errno}, expected {error}"


class OpenAttempt(NamedTuple):
    #: What open() raised (None: it opened; the writer was closed again).
    raised: Exception | None
    #: File descriptors open after the attempt that were not before (taken while the caller
    #: still holds the exception, as a caller that logs or stores it does).
    leaked: set[str]


def try_open(bus: Path) -> OpenAttempt:
    before = open_fds()
    try:
        writer = open_writer(bus)
    except Exception as exc:
        return OpenAttempt(exc, open_fds() - before)
    writer.close()
    return OpenAttempt(None, set())


def assert_failed_cleanly(attempt: OpenAttempt, error: int) -> None:
    assert attempt.raised is not None, "open() succeeded on a full disk although it had to write files"
    assert_typed_open_failure(attempt.raised, error)
    assert not attempt.leaked, f"a failed open left file descriptors open: {sorted(attempt.leaked)}"


# Went wrong: opening a writer on a full disk raised a bare OSError, and a failed lock left the lock file open.
@pytest.mark.parametrize("state", ["new", "clean", "indexes-lost"])
def test_opening_a_writer_on_a_full_disk_is_a_typed_error_that_leaks_nothing(
    small_tmpfs: Path, state: str
) -> None:
    """Opening a writer on a full disk (lock-file pid write, derived index files, watermark creation)
    raises a typed error and leaves no file open in the process, the lock file included.
    """
    bus = small_tmpfs / "bus"
    acks: list[Ack] = []
    if state != "new":
        with open_writer(bus) as writer:
            for seq in range(20):
                append(writer, acks, record("before", seq))
        if state == "indexes-lost":
            for name in os.listdir(bus):
                if name.endswith((".index", ".catindex", ".catsummary")):
                    (bus / name).unlink()
    ballast = small_tmpfs / "ballast"
    fill_disk(ballast)
    attempt = try_open(bus)
    if attempt.raised is not None or state != "clean":
        assert_failed_cleanly(attempt, errno.ENOSPC)
    else:  # a cleanly closed bus may open without a new block; appending then fails, typed
        writer = open_writer(bus)
        try:
            with pytest.raises(BusWriteError) as info:
                for seq in range(50):
                    append(writer, acks, record("full", seq))
            assert info.value.errno == errno.ENOSPC
        finally:
            writer.close()
    ballast.unlink()
    with open_writer(bus) as writer:
        for seq in range(20):
            append(writer, acks, record("after", seq))
    check_bus(bus, acks)


def crashed_copy(source_writer_bus: Path, destination: Path) -> None:
    """Copy a bus while its writer is open: the state a SIGKILL leaves (no clean-close note)."""
    shutil.copytree(source_writer_bus, destination)


# Went wrong: a failed call in open raised a bare OSError or left a descriptor open.
@pytest.mark.parametrize("state", ["new", "clean", "crashed"])
def test_a_fault_at_each_call_of_open_is_typed_and_leaks_nothing(tmp_path: Path, state: str) -> None:
    """A failed call anywhere in open is a typed error and leaks no descriptor.

    ENOSPC and EMFILE at each seam call of open() in turn: open() raises a typed error (or copes),
    leaves no fd open, and the next open works with every acknowledged record intact.
    """
    template = tmp_path / "template"
    acks: list[Ack] = []
    if state != "new":
        writer = open_writer(template)
        for seq in range(20):
            append(writer, acks, record("before", seq))
        if state == "crashed":  # plus lost derived files, which open() must rebuild
            crashed = tmp_path / "crashed"
            crashed_copy(template, crashed)
            writer.close()
            shutil.rmtree(template)
            crashed.rename(template)
            newest = segment_names(template)[-1][:20]
            for name in (
                f"{newest}.index",
                f"{newest}.catindex",
                f"{segment_names(template)[0][:20]}.catsummary",
            ):
                (template / name).unlink()
        else:
            writer.close()

    def fresh(name: str) -> Path:
        bus = tmp_path / name
        if state != "new":
            shutil.copytree(template, bus)
        return bus

    opened: list[LogWriter] = []
    probe = fresh("count")
    total = count_calls(lambda: opened.append(open_writer(probe)))["any"]
    opened[0].close()
    assert total > 0
    for n in range(1, total + 1):
        for error in (errno.ENOSPC, errno.EMFILE):
            bus = fresh(f"bus-{n}-{errno.errorcode[error]}")
            with injected(Fault("any", n, error)) as log:
                attempt = try_open(bus)
            assert log.fired
            if attempt.raised is not None:
                assert_typed_open_failure(attempt.raised, error)
            if log.fired_at != "close":  # an injected close failure skips the real close: its fd stays
                assert not attempt.leaked, (
                    f"open() failing at call {n} (fs.{log.fired_at}) left fds open: {sorted(attempt.leaked)}"
                )
            case_acks = list(acks)
            with open_writer(bus) as writer:
                append(writer, case_acks, record("after", n))
            check_bus(bus, case_acks)

"""Regression tests for the engine bugs 1-8 of issue 8, at the public API and CLI level.

Each test is named after the bug it guards against and quotes it in its docstring. Faults
are injected through the engine's I/O seam (``filelog_bus.fs``, see tests/helpers/faults.py),
with a real signal, a real full tmpfs, or by building the damaged on-disk state by hand.
After each fault the tests check the promises of docs/RELIABILITY.md: every append that
returned reads back at its offset with its own category and payload, once, in order; no
offset is returned twice; readers never hit CorruptionError; the writer that failed refuses
every later call with BusClosedError; a new writer opens the bus, appends and rolls;
``verify_bus`` says healthy. Bug 9 (power cut during retention, watermark durability) and
the crash-state side of bug 6 are covered by the crash-state simulator's tests.

They assert on error types and fields (errno, path, offset, failure), never on messages.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers.bus import deadline, read_all
from helpers.faults import Fault, Interrupt, count_calls, injected, is_directory, path_faults
from helpers.processes import python_env

import filelog_bus
from filelog_bus import LogReader, LogWriter, Record, check
from filelog_bus.errors import (
    BusClosedError,
    BusPermissionError,
    BusWriteError,
    FilelogBusError,
)

#: Small segments and index blocks: a roll every few records, index entries for most records.
SEGMENT_BYTES = 1024
INTERVAL = 64
CATEGORIES = ("users", "groups", "hosts")
#: A record this big never fits in what fill_near_roll leaves of a segment: appending it rolls.
BIG = 400
#: How long reading a small bus may take before it counts as a reader spinning (a hang guard).
READ_DEADLINE = 20.0
PAGE = 4096
HEADER = 32  # every segment file starts with a 32-byte header (docs/FORMAT.md)


class Ack(NamedTuple):
    """An append that returned: what must read back at ``offset``."""

    offset: int
    category: str
    payload: bytes


def record(
    tag: str, seq: int, size: int | None = None, category: str | None = None
) -> tuple[str, bytes, float]:
    """(category, payload, timestamp) of a deterministic record: 40-120 bytes unless ``size``."""
    length = 40 + (seq * 37) % 80 if size is None else size
    payload = f"{tag}/{seq}:".encode().ljust(length, b"#")
    return category or CATEGORIES[seq % len(CATEGORIES)], payload, 1_700_000_000.0 + seq


def append(writer: LogWriter, acks: list[Ack], rec: tuple[str, bytes, float]) -> int:
    offset = writer.append(*rec)
    acks.append(Ack(offset, rec[0], rec[1]))
    return offset


def open_writer(bus: Path, **settings: Any) -> LogWriter:
    settings.setdefault("segment_bytes", SEGMENT_BYTES)
    settings.setdefault("index_interval_bytes", INTERVAL)
    return LogWriter(bus, **settings).open()


def segment_names(bus: Path) -> list[str]:
    return sorted(name for name in os.listdir(bus) if name.endswith(".log"))


def active_base(bus: Path) -> int:
    return int(segment_names(bus)[-1][:20])


def fill_near_roll(writer: LogWriter, bus: Path, acks: list[Ack], tag: str) -> None:
    """Append small records until fewer than BIG - 100 bytes are left in the active segment."""
    seq = 0
    while writer.end_offset - active_base(bus) <= SEGMENT_BYTES - BIG + 100:
        append(writer, acks, record(tag, seq))
        seq += 1


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def assert_healthy(bus: Path) -> None:
    report = check.verify_bus(str(bus))
    assert report.healthy, f"verify_bus found problems: {report.problems}"


def check_bus(bus: Path, acks: list[Ack], *, since: int = 0, verify: bool = True) -> list[Record]:
    """The invariants: acknowledged records (at or after ``since``) read back, once, in order; verify is healthy.

    verify=False for a bus no writer has recovered yet (verify may rightly report, e.g., the missing
    indexes of a segment whose creation was cut short).
    """
    offsets = [ack.offset for ack in acks]
    assert offsets == sorted(set(offsets)), f"an offset was returned twice, or out of order: {offsets}"
    records = read_all(bus, hang_guard=READ_DEADLINE)
    seen = [r.offset for r in records]
    assert seen == sorted(set(seen)), f"the reader yielded an offset twice, or out of order: {seen}"
    by_offset = {r.offset: r for r in records}
    wanted = [ack for ack in acks if ack.offset >= since]
    for ack in wanted:
        found = by_offset.get(ack.offset)
        assert found is not None, f"the record acknowledged at offset {ack.offset} is not on the bus"
        assert (found.category, found.payload) == (ack.category, ack.payload), (
            f"offset {ack.offset} holds {found.category}/{found.payload[:20]!r}, "
            f"not the record acknowledged there ({ack.category}/{ack.payload[:20]!r})"
        )
    with deadline(READ_DEADLINE, "find_next with timeout=0"), LogReader(bus, timeout=0) as reader:
        for ack in wanted:
            reader.seek(ack.offset)
            found = reader.find_next(ack.category)
            assert found is not None and found.offset == ack.offset, (
                f"find_next({ack.category!r}) from {ack.offset} gave {found and found.offset}"
            )
        for category in CATEGORIES:
            reader.seek_to_beginning()
            chain = []
            while (found := reader.find_next(category)) is not None:
                assert found.category == category
                chain.append(found.offset)
            assert chain == [r.offset for r in records if r.category == category], (
                f"find_next({category!r}) from the beginning skipped or invented records"
            )
    if verify:
        assert_healthy(bus)
    return records


def assert_stopped(writer: LogWriter, failure: type[BaseException], bus: Path) -> None:
    """The writer refuses every later call with BusClosedError naming the failure, and deletes nothing."""
    assert isinstance(writer.failure, failure), f"writer.failure is {writer.failure!r}"
    names = sorted(os.listdir(bus))
    calls: dict[str, Callable[[], object]] = {
        "append": lambda: writer.append("users", b"after the failure"),
        "end_offset": lambda: writer.end_offset,
        "begin_offset": lambda: writer.begin_offset,
        "apply_retention": lambda: writer.apply_retention(max_bytes=1),
        "repair_indexes": writer.repair_indexes,
    }
    for name, call in calls.items():
        with pytest.raises(BusClosedError) as info:
            call()
        assert isinstance(info.value.failure, failure), (
            f"{name}: BusClosedError.failure is {info.value.failure!r}"
        )
        assert str(info.value)
    assert segment_names(bus) == [n for n in names if n.endswith(".log")], "a stopped writer deleted segments"


def reopen_append_and_roll(bus: Path, acks: list[Ack], tag: str, *, since: int = 0) -> None:
    """A new writer opens the bus, appends until it rolled, closes; another one opens and appends.

    The invariants hold after each.
    """
    with open_writer(bus) as writer:
        rolled = len(segment_names(bus)) + 1
        seq = 0
        while len(segment_names(bus)) < rolled:
            append(writer, acks, record(tag, seq))
            seq += 1
    check_bus(bus, acks, since=since)
    with open_writer(bus) as writer:
        append(writer, acks, record(tag, seq))
    check_bus(bus, acks, since=since)


def after_failed_append(bus: Path, writer: LogWriter, acks: list[Ack], failure: type[BaseException]) -> None:
    """What must hold after an append failed: stopped, failed record invisible, bus reopens and goes on."""
    assert_stopped(writer, failure, bus)
    visible = read_all(bus, hang_guard=READ_DEADLINE)
    assert [(r.offset, r.payload) for r in visible] == [(a.offset, a.payload) for a in acks], (
        "while the failed writer lives, readers must see exactly the acknowledged records"
    )
    writer.close()  # still works on a stopped writer, releases the lock
    check_bus(bus, acks, verify=False)  # readers cope before any writer recovered the bus
    reopen_append_and_roll(bus, acks, "after")


class Prepared(NamedTuple):
    writer: LogWriter
    acks: list[Ack]
    target: tuple[str, bytes, float]


def prepare(bus: Path, kind: str, durability: str = "always") -> Prepared:
    """An open writer with some acknowledged records, and the record whose append will fail.

    kind "rolls": appending the target rolls the segment; "plain": it fits in the active one.
    """
    writer = open_writer(bus, durability=durability)
    acks: list[Ack] = []
    if kind == "rolls":
        for seq in range(10):  # at least one closed segment first
            append(writer, acks, record("first", seq))
        fill_near_roll(writer, bus, acks, "pre")
        return Prepared(writer, acks, record("target", 0, size=BIG))
    for seq in range(3):
        append(writer, acks, record("pre", seq))
    return Prepared(writer, acks, record("target", 0, size=20))


def count_target_calls(tmp_path: Path, kind: str, durability: str = "always") -> dict[str, int]:
    """The seam calls of the target append of ``prepare(kind)`` (checking that it rolls or not)."""
    bus = tmp_path / f"count-{kind}-{durability}"
    writer, _, target = prepare(bus, kind, durability)
    before = len(segment_names(bus))
    counts = count_calls(lambda: writer.append(*target))
    writer.close()
    assert len(segment_names(bus)) == before + (kind == "rolls"), "the test's roll prediction is wrong"
    return dict(counts)


# -- bug 1: an exception raised by a signal handler during append ---------------------------------


@pytest.mark.parametrize("durability", ["always", "never"])
@pytest.mark.parametrize("kind", ["plain", "rolls"])
def test_bug1_interrupt_during_append_stops_the_writer(tmp_path: Path, kind: str, durability: str) -> None:
    """Bug 1: "An exception raised by a signal handler during append (Ctrl-C, an alarm), then the same
    writer used again: the next append returns an offset that holds the previous record's bytes;
    readers then stop with CorruptionError, and after the next roll the bus does not reopen. A
    KeyboardInterrupt landing during a roll does the same."

    The interrupt is raised at each seam call of an append in turn (one that rolls, one that does not).
    """
    total = count_target_calls(tmp_path, kind, durability)["any"]
    for n in range(1, total + 1):
        bus = tmp_path / f"bus-{n}"
        writer, acks, target = prepare(bus, kind, durability)
        with injected(Fault("any", n, Interrupt)) as log, pytest.raises(Interrupt):
            writer.append(*target)
        assert log.fired, f"call {n} of {total} was not reached"
        after_failed_append(bus, writer, acks, Interrupt)


@pytest.mark.parametrize("kind", ["plain", "rolls"])
def test_a_signal_handlers_timeout_error_reaches_the_caller_as_it_is(tmp_path: Path, kind: str) -> None:
    """A signal handler raising TimeoutError (an OSError without an errno: a deadline, not a disk
    error) at any seam call of an append, or of an open: the caller gets that TimeoutError, not a
    BusWriteError saying "Input/output error, check the disk"; the writer stops as for an interrupt.
    """
    total = count_target_calls(tmp_path, kind)["any"]
    for n in range(1, total + 1):
        bus = tmp_path / f"bus-{n}"
        writer, acks, target = prepare(bus, kind)
        with injected(Fault("any", n, TimeoutError)) as log, pytest.raises(TimeoutError) as raised:
            writer.append(*target)
        assert log.fired and type(raised.value) is TimeoutError and raised.value.errno is None
        after_failed_append(bus, writer, acks, TimeoutError)
    bus = tmp_path / "bus-1"
    with injected(None) as log:
        opened = LogWriter(str(bus)).open()
    opened.close()
    for n in range(1, log.total + 1):
        with injected(Fault("any", n, TimeoutError)) as fault:
            try:
                opened = LogWriter(str(bus)).open()
            except TimeoutError as exc:  # a BusWriteError would fail the test here
                assert type(exc) is TimeoutError
                continue
        assert not fault.fired, f"a best-effort step of open took the TimeoutError at fs.{fault.fired_at}"
        opened.close()
    with LogWriter(str(bus)) as writer:
        writer.append("after", b"opens")


def test_bug1_keyboard_interrupt_during_a_roll_stops_the_writer(tmp_path: Path) -> None:
    """Bug 1: "A KeyboardInterrupt landing during a roll does the same" (the next append reuses an
    offset, readers hit CorruptionError, the bus does not reopen after the next roll).

    KeyboardInterrupt at the middle seam call of a rolling append, and at its last one.
    """
    total = count_target_calls(tmp_path, "rolls")["any"]
    for n in sorted({max(1, total // 2), total}):
        bus = tmp_path / f"bus-{n}"
        writer, acks, target = prepare(bus, "rolls")
        with injected(Fault("any", n, KeyboardInterrupt)) as log, pytest.raises(KeyboardInterrupt):
            writer.append(*target)
        assert log.fired
        after_failed_append(bus, writer, acks, KeyboardInterrupt)


def test_bug1_real_sigalrm_handler_raising_inside_append(tmp_path: Path) -> None:
    """Bug 1: "An exception raised by a signal handler during append (Ctrl-C, an alarm), then the same
    writer used again: the next append returns an offset that holds the previous record's bytes".

    A real SIGALRM, fired by setitimer at small intervals, whose handler raises when it lands
    inside the engine; each time, the writer must be stopped (or, where it could restore its
    state, go on appending correctly), and a new writer recovers.
    """
    seed = int(os.environ.get("FILELOG_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed {seed} (signal timing varies: a seed replays the delays and durabilities only)")
    rng = random.Random(seed)
    bus = tmp_path / "bus"
    engine = os.path.dirname(os.path.abspath(filelog_bus.__file__)) + os.sep
    armed = [False]
    where: list[str] = []

    def handler(signum: int, frame: Any) -> None:
        if not armed[0]:
            return
        innermost = frame
        while innermost.f_code is handler.__code__:  # a second alarm landed in this handler
            innermost = innermost.f_back
        while frame is not None:
            if frame.f_code.co_filename.startswith(engine):
                armed[0] = False  # one interrupt per landing, even if another alarm is pending
                code = innermost.f_code
                where.append(f"{os.path.basename(code.co_filename)}:{innermost.f_lineno} {code.co_name}")
                raise Interrupt("alarm")
            frame = frame.f_back
        # landed in the test's own code: let the next alarm try again

    acks: list[Ack] = []
    seq = 0
    outcomes = []
    previous = signal.signal(signal.SIGALRM, handler)
    try:
        while len(outcomes) < 8:
            writer = open_writer(bus, durability=rng.choice(["always", "never"]))
            armed[0] = True
            signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0001, 0.003), 0.0003)
            landed = False
            try:
                for _ in range(5000):
                    append(writer, acks, record("alarm", seq))
                    seq += 1
            except Interrupt:
                landed = True
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                armed[0] = False
            assert landed, "the alarm never landed inside an append"
            seq += 1  # the interrupted record's payload is never reused
            if writer.failure is None:
                # It landed where the writer could provably restore its state (or before anything was
                # written): then the writer must go on appending correctly.
                outcomes.append(f"usable after {where[-1]}")
                for _ in range(3):
                    append(writer, acks, record("alarm", seq))
                    seq += 1
            else:
                outcomes.append(f"stopped after {where[-1]}")
                assert isinstance(writer.failure, Interrupt)
                with pytest.raises(BusClosedError) as info:
                    writer.append("users", b"after the interrupt")
                assert isinstance(info.value.failure, Interrupt)
            writer.close()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    print("\n".join(outcomes))
    check_bus(bus, acks, verify=False)  # the last alarm may have cut a roll short: a writer recovers it
    reopen_append_and_roll(bus, acks, "after-alarms")


# -- bug 2: a roll that fails after the new segment file was linked --------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [("fsync", errno.EIO), ("fsync", errno.ENOSPC), ("open", errno.EMFILE)],
    ids=["dir-fsync-EIO", "dir-fsync-ENOSPC", "dir-open-EMFILE"],
)
@pytest.mark.parametrize("then", ["append", "retention"])
def test_bug2_roll_failing_after_the_new_segment_was_linked(
    tmp_path: Path, call: str, error: int, then: str
) -> None:
    """Bug 2: "A roll that fails after the new segment file was linked (the directory fsync fails with
    EIO/ENOSPC, or open of the directory hits EMFILE): ... the new empty segment stays; every retry
    that needs a roll fails with EEXIST; a smaller record is acknowledged at an offset past the old
    segment's end, which readers never reach; the bus no longer reopens. If retention runs in that
    state, it deletes the segment still being written, and later acknowledged records are on no
    file at all."
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


# -- bug 3: EIO from the fdatasync inside a roll ---------------------------------------------------


def test_bug3_eio_from_a_sync_inside_a_roll_stops_the_writer(tmp_path: Path) -> None:
    """Bug 3: "EIO from the fdatasync inside a roll leaves the writer usable (the documented rule is:
    after EIO, refuse until reopened)."

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


# -- bug 4: ENOSPC while writing the category index ------------------------------------------------


@pytest.mark.parametrize(
    ("target", "nth"),
    [(".catindex", 1), (".catindex", 2), (".catindex", 5), (".catsummary", 1), (".catsummary", 2)],
)
def test_bug4_enospc_writing_the_category_index_then_the_append_retried(
    tmp_path: Path, target: str, nth: int
) -> None:
    """Bug 4: "ENOSPC while writing the category index, then the append retried: the retried record
    gets no category-index entry, so find_next misses it, and after the roll the category summary
    can make readers skip the whole segment."

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


# -- bug 5: opening a writer on a full disk --------------------------------------------------------


def fill(path: Path) -> None:
    """Write ``path`` until the file system is full."""
    with open(path, "ab", buffering=0) as file:
        chunk = bytes(PAGE)
        try:
            while True:
                file.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


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


@pytest.mark.parametrize("state", ["new", "clean", "indexes-lost"])
def test_bug5_opening_a_writer_on_a_full_disk(small_tmpfs: Path, state: str) -> None:
    """Bug 5: "Opening a writer on a full disk raises a bare OSError (lock-file pid write, derived index
    files, watermark creation), and a failed _lock leaves the lock file open in the process."
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
    fill(ballast)
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


@pytest.mark.parametrize("state", ["new", "clean", "crashed"])
def test_bug5_fault_at_each_call_of_open_is_typed_and_leaks_nothing(tmp_path: Path, state: str) -> None:
    """Bug 5: "Opening a writer on a full disk raises a bare OSError (lock-file pid write, derived index
    files, watermark creation), and a failed _lock leaves the lock file open in the process."

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


# -- bug 6: durability="never", a page lost in the middle of the unsynced tail -------------------


@pytest.mark.parametrize("indexes", ["kept", "lost"])
@pytest.mark.parametrize("segment", ["first", "after-rolls"])
def test_bug6_never_durability_page_lost_in_the_middle_of_the_tail(
    tmp_path: Path, indexes: str, segment: str
) -> None:
    """Bug 6: "durability="never" and a power cut that loses a page in the middle of the unsynced tail
    (a later page did reach the disk): either the writer reopens, keeps the hole and publishes it as
    durable (readers stop at it; new records land behind it), or, with the index files lost too, the
    bus refuses to open. The documented promise is that the bus opens and the lost tail is cut."

    Built by hand: the bus is copied while its durability="never" writer is open (what the page
    cache held), then one 4096-byte page of the active segment's tail is zeroed, a later one kept.
    The active segment is preallocated (its file goes on past its data with zeros), so the tail and
    its pages are measured from the data end (the writer's end offset), not from the file size.
    """
    live = tmp_path / "live"
    bus = tmp_path / "bus"
    segment_bytes = 2**20 if segment == "first" else 12_000
    writer = open_writer(live, durability="never", segment_bytes=segment_bytes, index_interval_bytes=256)
    acks: list[Ack] = []
    seq = 0
    while True:
        append(writer, acks, record("never", seq, size=200 + seq % 50))
        seq += 1
        enough_segments = segment == "first" or len(segment_names(live)) >= 3
        if enough_segments and HEADER + writer.end_offset - active_base(live) >= 2 * PAGE + 1500:
            break
    shutil.copytree(live, bus)  # the writer is still open: no clean close, nothing synced
    writer.close()

    records = read_all(bus, hang_guard=READ_DEADLINE)
    assert [r.offset for r in records] == [a.offset for a in acks]
    base = active_base(bus)
    active = bus / f"{base:020d}.log"
    size = HEADER + records[-1].next_offset - base  # where the data ends in the file
    assert active.stat().st_size >= size
    assert not any(active.read_bytes()[size:]), "only the zeros of the preallocated tail follow the data"
    hole_page = 1 if size < 4 * PAGE else (size // PAGE) // 2
    assert (hole_page + 1) * PAGE < size, "no page after the hole: the test premise is broken"
    with open(active, "r+b") as file:
        file.seek(hole_page * PAGE)
        file.write(bytes(PAGE))
    if indexes == "lost":
        for suffix in (".index", ".catindex"):
            (bus / f"{base:020d}{suffix}").unlink()
    hole = base + hole_page * PAGE - HEADER  # the bus offset of the first lost byte
    kept = [r for r in records if r.offset + r.size <= hole]
    cut = next(r.offset for r in records if r.offset + r.size > hole)
    assert kept and cut >= base

    with open_writer(
        bus, durability="never", segment_bytes=segment_bytes, index_interval_bytes=256
    ) as writer:
        assert writer.end_offset == cut, "the writer did not cut the tail at the first damaged record"
        first_new = writer.append("users", b"after the cut")
        assert first_new == cut, "the first new record must land right after the cut"
        new_acks = [Ack(first_new, "users", b"after the cut")]
        for i in range(30):
            append(writer, new_acks, record("new", i, size=150))
    after = read_all(bus, hang_guard=READ_DEADLINE)
    assert [r.offset for r in after[: len(kept)]] == [r.offset for r in kept]
    assert [r.payload for r in after[: len(kept)]] == [r.payload for r in kept], (
        "records before the hole changed"
    )
    assert [r.offset for r in after[len(kept) :]] == [a.offset for a in new_acks], (
        "records after the hole survived, or new records did not land right after the cut"
    )
    kept_acks = [Ack(r.offset, r.category, r.payload) for r in kept]
    check_bus(bus, kept_acks + new_acks)


# -- bug 7: a reader with timeout=0 when the newest segment is shorter than the watermark ----------

READER_CHILD = """
import json, sys
from filelog_bus import LogReader
from filelog_bus.errors import FilelogBusError

path = sys.argv[1]
out = {}

def probe(name, timeout, action):
    try:
        with LogReader(path, timeout=timeout) as reader:
            out[name] = action(reader)
    except FilelogBusError as exc:
        out[name] = "error:" + type(exc).__name__

def offset_of(found):
    return None if found is None else found.offset

def drain(reader):
    offsets = []
    while (found := reader.read_next()) is not None:
        offsets.append(found.offset)
    return offsets

probe("iterate", 0, lambda r: [x.offset for x in r])
probe("iterate_with_timeout", 0.3, lambda r: [x.offset for x in r])
probe("read_next", 0, drain)
probe("wait_at_end", 0, lambda r: (drain(r), r.wait_for_records())[1])
probe("find_next_tail", 0, lambda r: offset_of(r.find_next("tail")))
probe("find_next_absent", 0, lambda r: offset_of(r.find_next("absent")))
probe("find_next_waiting_tail", 0, lambda r: offset_of(r.find_next_waiting("tail")))
print(json.dumps(out))
"""


@pytest.mark.parametrize("cut", ["record-boundary", "mid-record", "header-only"])
def test_bug7_reader_with_timeout_0_returns_when_the_segment_is_behind_the_watermark(
    tmp_path: Path, cut: str
) -> None:
    """Bug 7: "A reader with timeout=0 spins at 100 % CPU forever when the newest segment is shorter
    than the published watermark (the state after 2. or 6.)."

    The state is made by truncating the active segment below the watermark after a clean close; the
    reader runs in a child process killed after 20 s, so a spin fails the test instead of hanging it.
    """
    bus = tmp_path / "bus"
    acks: list[Ack] = []
    with open_writer(bus) as writer:
        seq = 0
        while len(segment_names(bus)) < 2 or writer.end_offset - active_base(bus) < 300:
            append(writer, acks, record("w", seq))
            seq += 1
        for i in range(2):
            append(writer, acks, record("t", i, category="tail"))
    records = read_all(bus, hang_guard=READ_DEADLINE)
    assert [r.offset for r in records] == [a.offset for a in acks]
    base = active_base(bus)
    if cut == "record-boundary":
        position = records[-2].offset - base + HEADER
    elif cut == "mid-record":
        position = records[-1].offset - base + HEADER + 5
    else:
        position = HEADER
    os.truncate(bus / f"{base:020d}.log", position)
    intact = [r for r in records if r.offset + r.size - base + HEADER <= position]
    intact_offsets = [r.offset for r in intact]
    tail = [r.offset for r in intact if r.category == "tail"]

    try:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(READER_CHILD), str(bus)],
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=READ_DEADLINE,
        )
    except subprocess.TimeoutExpired:
        result = None
    if result is None:
        pytest.fail(f"a reader with timeout=0 did not return within {READ_DEADLINE} s (it spins)")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    partial_ok = cut == "mid-record"  # a torn record at the end may be reported, never yielded

    def acceptable(value: object, expected: object) -> bool:
        return value == expected or (partial_ok and value == "error:CorruptionError")

    for name in ("iterate", "iterate_with_timeout", "read_next"):
        assert acceptable(seen[name], intact_offsets), f"{name}: {seen[name]} != {intact_offsets}"
    assert acceptable(seen["wait_at_end"], False), seen["wait_at_end"]
    assert acceptable(seen["find_next_tail"], tail[0] if tail else None), seen["find_next_tail"]
    assert acceptable(seen["find_next_waiting_tail"], tail[0] if tail else None), seen[
        "find_next_waiting_tail"
    ]
    assert acceptable(seen["find_next_absent"], None), seen["find_next_absent"]


# -- bug 8: filelog-bus verify --repair and a damaged category summary ----------------------------


def filelog_bus_command() -> str:
    command = shutil.which("filelog-bus", path=os.path.dirname(sys.executable)) or shutil.which("filelog-bus")
    if command is None:
        pytest.skip("the filelog-bus command is not installed (pip install -e .)")
    return command


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [filelog_bus_command(), *args], capture_output=True, text=True, timeout=120, env=python_env()
    )


@pytest.mark.parametrize("damage", ["entry-byte", "header-byte", "last-byte", "deleted"])
def test_bug8_verify_repair_rebuilds_a_damaged_category_summary(tmp_path: Path, damage: str) -> None:
    """Bug 8: "filelog-bus verify --repair does not rebuild a damaged .catsummary (verify says it will;
    both runs exit 1)."
    """
    bus = tmp_path / "bus"
    acks: list[Ack] = []
    with open_writer(bus) as writer:
        seq = 0
        while len(segment_names(bus)) < 3:
            append(writer, acks, record("s", seq))
            seq += 1
    base = segment_names(bus)[0][:20]
    summary = bus / f"{base}.catsummary"
    original = summary.read_bytes()
    assert len(original) > HEADER + 16, "a closed segment's summary has entries"
    if damage == "deleted":
        summary.unlink()
    else:
        data = bytearray(original)
        position = {"entry-byte": HEADER + 2, "header-byte": 10, "last-byte": len(data) - 1}[damage]
        data[position] ^= 0x10
        summary.write_bytes(bytes(data))

    before = run_cli("verify", str(bus))
    assert before.returncode in (0, 1), before.stderr
    if damage != "deleted":
        assert before.returncode == 1, "verify did not report the damaged category summary"
    repair = run_cli("verify", "--repair", "--json", str(bus))
    assert repair.returncode == 0, f"verify --repair did not end healthy:\n{repair.stdout}\n{repair.stderr}"
    report = json.loads(repair.stdout)
    assert report["healthy"] is True
    if before.returncode == 1:
        assert any(base in name for name in report.get("repaired", [])), (
            f"verify --repair did not report rebuilding {summary.name}: {report.get('repaired')}"
        )
    after = run_cli("verify", str(bus))
    assert after.returncode == 0, after.stdout + after.stderr
    assert summary.read_bytes() == original, "the rebuilt summary differs from the one the writer wrote"
    check_bus(bus, acks)

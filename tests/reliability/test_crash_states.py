"""Power cuts at every seam call of a workload, each possible disk state recovered (issue 8, points 6 and 9).

tests/helpers/crash_model.py records a workload's file-system calls and builds, for a crash right
after each call, the disk states a power cut may leave: each unsynced 4 KiB page and each
file size kept or lost, each directory operation not yet made durable by an fsync of its
directory kept or lost, independently and in any order. Every state is materialized in
a fresh directory and recovered:

(a) ``durability="always"`` appends across rolls: every append that returned reads back
    at its offset, in order, once; after it, only a prefix of what was appended;
(b) ``durability="never"`` appends across a roll, pages lost in the middle of the unsynced
    tail: the bus opens; what was durable (the clean close before, the roll) is there; what
    follows is a prefix of what was appended (no hole, no garbage);
(c) a retention pass deleting four of six segments: whatever subset of its unlinks reached
    the disk, the bus opens and reads contiguously from its first segment to its end;
(d) a new bus and one "always" append: every state opens with a writer, and once the append
    returned, a reader finds a readable watermark (it was durable before the bus was used);
(e) deferred appends across a roll, made durable by ``sync()``: promised once it returned;
(f) a roll that takes the standby (the next segment's zero-filled file, prepared ahead).

In every state: the writer opens and closes, ``check.verify_bus`` says healthy, a record
appended after recovery lands right after the recovered ones, and a reader with
``timeout=0`` returns (on the raw crash state too: it may refuse with a FilelogBusError,
but never spin or yield a record that was not appended there; with "always", never one that
recovery then cuts: the watermark promise).

Budget (crash_states.Budget): by default every subset of a crash point's unsynced items when
there are at most 5, else both extremes, every single-item flip and 6 random subsets: about
3,500 states, ~35 s on tmpfs. ``FILELOG_LONG=1`` takes every subset up to 10 items, 64 random
ones beyond, and longer workloads: about 17,000 states, ~3.5 min. States are materialized
under /dev/shm when it is writable. A failure names the workload, the crash point (the seam
call after which the power was cut, and how many appends had returned), the unsynced items
kept and lost, and what broke; ``FILELOG_CRASH_REPORT=FILE`` appends every failing state to
FILE (JSON lines), ``FILELOG_CRASH_MAX_FAILURES`` (200) bounds how many a workload collects.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import crash_model as cs
from helpers.bus import LONG, Hung, deadline, read_all, write_bus

from filelog_bus import LogWriter, fs, segment, standby
from filelog_bus.check import verify_bus
from filelog_bus.errors import FilelogBusError
from filelog_bus.layout import FILE_HEADER_SIZE, STANDBY_NAME
from filelog_bus.segment import preallocated_size

BUDGET = cs.Budget(exhaustive_up_to=10, samples=64) if LONG else cs.Budget(exhaustive_up_to=5, samples=6)
#: Seconds a reader with timeout=0 (or a writer's open) may take before it counts as spinning.
HANG_SECONDS = 5.0
#: After this many raw-state readers that spin, a workload stops trying readers on raw states;
#: after this many writers or readers on recovered states that hang, it stops.
MAX_HANGS = 3
#: A workload stops after this many failing states (each spinning reader costs HANG_SECONDS).
MAX_FAILURES = int(os.environ.get("FILELOG_CRASH_MAX_FAILURES", "200"))
TIMESTAMP = 1_700_000_000.0
SEGMENT_NAME_LENGTH = len("00000000000000000000.log")
HEADER_SIZE = 32  # docs/FORMAT.md: every file starts with a 32-byte header


# -- plumbing --------------------------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for the many materialized states: on tmpfs when there is one (fsync is free)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path)
    directory = Path(tempfile.mkdtemp(prefix="crash-states-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Appended:
    offset: int
    category: str
    payload: bytes
    timestamp: float
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def as_appended(record: Any) -> Appended:
    return Appended(record.offset, record.category, bytes(record.payload), record.timestamp, record.size)


@dataclass
class Workload:
    name: str
    recording: cs.Recording
    config: dict[str, Any]
    #: Every record the bus holds after the whole workload ran without a crash, in order.
    expected: list[Appended]
    #: How many of ``expected`` (counted from the first) must survive a crash at a checkpoint.
    required: Callable[[cs.Checkpoint], int]
    #: (c): the offset from which every record must survive (the first segment retention keeps).
    keep_from: int = 0
    #: (d): from how many marks on a reader must find a readable watermark before any writer opens.
    reader_must_open_after_marks: int | None = None
    failures: list[str] = field(default_factory=list)
    #: Readers on raw crash states that spun; calls on recovered states that hung.
    hangs: int = 0
    stalls: int = 0


def read_appended(bus: Path) -> list[Appended]:
    return [as_appended(record) for record in read_all(bus, hang_guard=HANG_SECONDS)]


def is_segment_name(name: str) -> bool:
    return len(name) == SEGMENT_NAME_LENGTH and name.endswith(".log") and name[:20].isdigit()


def tree_segments(tree: dict[str, bytes | None], bus: str = "bus") -> dict[int, bytes]:
    """base -> bytes of each segment file of a tree."""
    files = {}
    for path, data in tree.items():
        directory, name = os.path.split(path)
        if directory == bus and data is not None and is_segment_name(name):
            files[int(name[:20])] = data
    return files


def record_bytes(segments: dict[int, bytes], record: Appended) -> bytes | None:
    """The bytes at ``record``'s place in the segment that holds it (None: no such file)."""
    base = max((base for base in segments if base <= record.offset), default=None)
    if base is None:
        return None
    position = HEADER_SIZE + record.offset - base
    return segments[base][position : position + record.size]


def acknowledged_or_durable(
    expected: list[Appended], initial: int, reference: dict[int, bytes], acknowledged: bool = True
) -> Callable[[cs.Checkpoint], int]:
    """What must survive: the records there before (``initial``), every append that returned
    (one mark each; only if ``acknowledged``, i.e. with durability="always"), and every record
    whose bytes were made durable (fsync'd, in a file whose name was made durable: the "all
    unsynced items lost" state holds them, as in the ``reference`` files of the full run)."""

    def required(checkpoint: cs.Checkpoint) -> int:
        segments = tree_segments(cs.durable_tree(checkpoint))
        durable = 0
        for position, record in enumerate(expected):
            if record_bytes(segments, record) == record_bytes(reference, record):
                durable = position + 1
        return max(initial + (checkpoint.marks if acknowledged else 0), durable)

    return required


def record_workload(
    name: str,
    scratch: Path,
    config: dict[str, Any],
    prepare: Callable[[Path], None] | None,
    run: Callable[[Path, cs.Recorder], None],
    keeps_what_it_started_with: bool = True,
) -> Workload:
    """Build the snapshot (``prepare`` on world/bus), then record ``run`` on a copy of it."""
    snapshot = scratch / f"{name}-snapshot"
    snapshot.mkdir()
    if prepare is not None:
        prepare(snapshot / "bus")
    initial = read_appended(snapshot / "bus") if (snapshot / "bus").exists() else []
    world = scratch / f"{name}-world"
    cs.copy_tree(str(snapshot), str(world))
    with cs.Recorder(str(world)) as recorder:
        run(world / "bus", recorder)
    recording = recorder.recording
    assert not recording.unseen, (
        "the engine changed bus files outside the I/O seam (filelog_bus.fs), so the crash states "
        f"would be wrong: {recording.unseen}"
    )
    expected = read_appended(world / "bus")
    assert not keeps_what_it_started_with or expected[: len(initial)] == initial, (
        "the workload should keep the records it started with"
    )
    names = [name for name in os.listdir(world / "bus") if is_segment_name(name)]
    reference = {int(name[:20]): (world / "bus" / name).read_bytes() for name in names}
    required = acknowledged_or_durable(expected, len(initial), reference, config["durability"] == "always")
    return Workload(name, recording, config, expected, required)


def append_all(
    writer: LogWriter, recorder: cs.Recorder, records: list[tuple[str, bytes]], first: int
) -> None:
    for number, (category, payload) in enumerate(records, start=first):
        offset = writer.append(category, payload, timestamp=TIMESTAMP + number)
        recorder.mark(offset)  # the append RETURNED: from here on it must survive any crash


def stamped(records: list[tuple[str, bytes]]) -> list[tuple[str, bytes, float]]:
    """(category, payload, timestamp): record ``number`` stamped TIMESTAMP + number, as append_all does."""
    return [(category, payload, TIMESTAMP + number) for number, (category, payload) in enumerate(records)]


def records_of(count: int, size: int, first: int = 0) -> list[tuple[str, bytes]]:
    categories = ("alpha", "beta", "gamma")
    return [
        (categories[number % 3], bytes([65 + number % 26]) * (size + number % 7 * 11))
        for number in range(first, first + count)
    ]


# -- checking one state ------------------------------------------------------------------------


def verify_problem(bus: Path, when: str) -> str | None:
    try:
        report = verify_bus(str(bus))
    except Exception as exc:
        return f"verify {when} raises {type(exc).__name__}: {exc}"
    if report.healthy:
        return None
    return f"verify {when} is not healthy: {[str(problem) for problem in report.problems][:4]}"


def check_state(workload: Workload, state: cs.CrashState, directory: Path, required: int) -> str | None:
    """None if the state recovers as promised (the first ``required`` records survive), else what broke."""
    cs.materialize(state, str(directory))
    bus = directory / "bus"
    checkpoint = state.checkpoint
    problem, seen = check_raw_reader(workload, bus, checkpoint)
    if problem:
        return problem
    try:
        with deadline(HANG_SECONDS, "LogWriter.open"):
            writer = LogWriter(bus, **workload.config).open()
        writer.close()
    except (Exception, Hung) as exc:  # any failure to open is the finding
        workload.stalls += isinstance(exc, Hung)
        return f"the writer does not open: {type(exc).__name__}: {exc}"
    problem = verify_problem(bus, "after the writer's open+close")
    if problem:
        return problem
    try:
        records = read_appended(bus)
    except (Exception, Hung) as exc:
        workload.stalls += isinstance(exc, Hung)
        return f"reading the recovered bus fails: {type(exc).__name__}: {exc}"
    problem = check_sequence(workload, records, required, workload.keep_from, "after recovery")
    if problem:
        return problem
    if workload.config["durability"] == "always" and seen and (not records or records[-1].end < seen[-1].end):
        # The watermark promise: a reader never sees a record a power cut can still take away.
        return (
            f"before recovery a reader saw records up to offset {seen[-1].end}, "
            f"but after recovery the bus ends at {records[-1].end if records else 'nothing'}"
        )
    # New records land right after the recovered ones (not behind a hole).
    try:
        with LogWriter(bus, **workload.config) as writer:
            offset = writer.append("after", b"after recovery", timestamp=TIMESTAMP - 1)
        again = read_appended(bus)
    except (Exception, Hung) as exc:
        workload.stalls += isinstance(exc, Hung)
        return f"appending after recovery fails: {type(exc).__name__}: {exc}"
    end = records[-1].end if records else None
    if end is not None and offset != end:
        return f"the record appended after recovery got offset {offset}, not the recovered end {end}"
    if (
        again[:-1] != records
        or not again
        or again[-1].offset != offset
        or again[-1].payload != b"after recovery"
    ):
        return (
            f"after one more append the bus reads {len(again)} records, not the {len(records)} recovered + 1"
        )
    return verify_problem(bus, "after one more append")


def check_sequence(
    workload: Workload, records: list[Appended], required: int, keep_from: int | None, when: str
) -> str | None:
    """``records`` must be a contiguous run of the expected ones, starting at or before the
    first record at or after ``keep_from`` (None: anywhere) and running at least to the
    ``required``-th expected record."""
    expected = workload.expected
    if not records:
        if required > 0:
            return f"{when}: the bus is empty, but the first {required} records must survive"
        return None
    by_offset = {record.offset: position for position, record in enumerate(expected)}
    if records[0].offset not in by_offset:
        return f"{when}: the first record read is at offset {records[0].offset}, where no record was appended"
    start = by_offset[records[0].offset]
    for position, record in enumerate(records):
        if start + position >= len(expected) or record != expected[start + position]:
            wanted = expected[start + position] if start + position < len(expected) else None
            return (
                f"{when}: record #{position} read is {record} but the bus had "
                f"{wanted} there (a hole, garbage, a duplicate or a reordering)"
            )
    if keep_from is not None:
        first_kept = next((p for p, r in enumerate(expected) if r.offset >= keep_from), len(expected))
        if start > first_kept:
            return (
                f"{when}: the bus starts at offset {records[0].offset} but the records from offset "
                f"{expected[first_kept].offset} on must survive"
            )
    if start + len(records) < required:
        return (
            f"{when}: the bus ends at offset {records[-1].end}, but the first {required} records "
            f"(acknowledged or durable) must survive, up to offset {expected[required - 1].end}"
        )
    return None


def check_raw_reader(
    workload: Workload, bus: Path, checkpoint: cs.Checkpoint
) -> tuple[str | None, list[Appended]]:
    """A reader on the crash state itself (no writer has recovered it yet) returns and invents
    nothing. Returns what broke (or None) and the records it read."""
    must_open = (
        workload.reader_must_open_after_marks is not None
        and checkpoint.marks >= workload.reader_must_open_after_marks
    )
    if not bus.exists():
        return ("the bus directory is gone although an append returned" if must_open else None), []
    if workload.hangs >= MAX_HANGS:
        return None, []
    try:
        records = read_appended(bus)
    except Hung as exc:
        workload.hangs += 1
        more = (
            f"; after {MAX_HANGS} such states, raw states are no longer read"
            if workload.hangs == MAX_HANGS
            else ""
        )
        return f"before recovery: {exc} (it spins){more}", []
    except FilelogBusError as exc:
        if must_open:
            return (
                f"before recovery, after the first append returned, a reader fails: "
                f"{type(exc).__name__}: {exc} (the watermark was not durable before the bus was used)"
            ), []
        return None, []
    except Exception as exc:
        return f"before recovery a reader raises an untyped {type(exc).__name__}: {exc}", []
    return check_sequence(workload, records, 0, None, "before recovery, a reader"), records


def run_workload(workload: Workload, scratch: Path) -> tuple[int, int]:
    """Check every built state of every crash point; return (crash points, states)."""
    points = workload.recording.crash_points()
    states_checked = 0
    for point in points:
        required = workload.required(point)
        for state in cs.crash_states(point, BUDGET):
            directory = scratch / f"state-{states_checked}"
            problem = check_state(workload, state, directory, required)
            states_checked += 1
            if problem:
                workload.failures.append(f"{problem} -- {state.describe()}")
            shutil.rmtree(directory, ignore_errors=True)
            if len(workload.failures) >= MAX_FAILURES or workload.stalls >= MAX_HANGS:
                workload.failures.append(f"(stopped after {len(workload.failures)} failing states)")
                break
        else:
            continue
        break
    report_path = os.environ.get("FILELOG_CRASH_REPORT")
    if report_path and workload.failures:
        with open(report_path, "a", encoding="utf-8") as report:
            for failure in workload.failures:
                report.write(json.dumps({"workload": workload.name, "failure": failure}) + "\n")
    return len(points), states_checked


def assert_no_failures(workload: Workload, points: int, states: int) -> None:
    print(
        f"{workload.name}: {states} crash states at {points} crash points, {len(workload.failures)} failing"
    )
    if workload.failures:
        shown = "\n".join(f"  - {failure}" for failure in workload.failures[:8])
        pytest.fail(
            f"{workload.name}: {len(workload.failures)} of {states} crash states ({points} crash points) "
            f"break a promise; first ones:\n{shown}",
            pytrace=False,
        )


# -- the simulator itself ------------------------------------------------------------------------


def _states_at_end(root: Path, workload: Callable[[str], None]) -> tuple[cs.Recording, list[cs.CrashState]]:
    with cs.Recorder(str(root)) as recorder:
        workload(str(root))
    assert not recorder.recording.unseen
    return recorder.recording, cs.crash_states(
        recorder.recording.checkpoints[-1], cs.Budget(exhaustive_up_to=12)
    )


def test_simulator_loses_and_keeps_pages_and_sizes_independently(tmp_path: Path) -> None:
    old = b"".join(bytes([48 + page]) * cs.PAGE for page in range(3))  # three durable pages
    (tmp_path / "f").write_bytes(old)

    def workload(root: str) -> None:
        fd = fs.open(os.path.join(root, "f"), os.O_RDWR)
        for page in range(4):  # rewrite the three pages, then add a fourth
            fs.pwrite(fd, bytes([65 + page]) * cs.PAGE, page * cs.PAGE)
        fs.close(fd)

    recording, states = _states_at_end(tmp_path, workload)
    items = cs.unsynced_items(recording.checkpoints[-1])
    assert [item.text for item in items] == [f"f page {n}" for n in range(4)] + [
        f"f size {3 * cs.PAGE} -> {4 * cs.PAGE}"
    ]
    contents = {state.tree["f"] for state in states}
    new = b"".join(bytes([65 + page]) * cs.PAGE for page in range(4))
    assert len(contents) == 2**5 - 2**3  # with the old size, page 3's fate does not show
    assert new in contents and old in contents
    # A middle page lost while a later one was kept; a kept size with its new page lost (a hole).
    assert new[: cs.PAGE] + old[cs.PAGE : 2 * cs.PAGE] + new[2 * cs.PAGE :] in contents
    assert new[: 3 * cs.PAGE] + bytes(cs.PAGE) in contents
    # Syncing makes it all durable: one state.
    with cs.Recorder(str(tmp_path)) as recorder:
        fd = fs.open(str(tmp_path / "f"), os.O_RDWR)
        fs.fdatasync(fd)
        fs.close(fd)
    assert [state.tree["f"] for state in cs.crash_states(recorder.recording.checkpoints[-1])] == [new]


def test_simulator_applies_unsynced_directory_operations_in_any_order(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")

    def workload(root: str) -> None:
        fd = fs.open(os.path.join(root, "b.new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        fs.write(fd, b"B")
        fs.fsync(fd)  # the file's bytes are durable, its name is not
        fs.close(fd)
        fs.replace(os.path.join(root, "b.new"), os.path.join(root, "b"))
        fs.unlink(os.path.join(root, "a"))

    recording, states = _states_at_end(tmp_path, workload)
    trees = {tuple(sorted(state.tree.items())) for state in states}
    assert trees == {
        (("a", b"A"),),  # nothing reached the disk
        (("a", b"A"), ("b.new", b"B")),
        (("a", b"A"), ("b", b"B")),  # the rename without the creation: the inode is there anyway
        (),  # only the unlink
        (("b.new", b"B"),),
        (("b", b"B"),),  # everything
    }
    # The all-kept state is the real tree; after fsync_directory nothing is left in flight.
    assert dict(
        cs.build_state(
            recording.checkpoints[-1], cs.unsynced_items(recording.checkpoints[-1]), set(range(3))
        ).tree
    ) == {"b": b"B"}
    with cs.Recorder(str(tmp_path)) as recorder:
        fs.fsync_directory(str(tmp_path))
    assert cs.unsynced_items(recorder.recording.checkpoints[-1]) == []


def test_simulator_new_file_synced_but_not_its_directory(tmp_path: Path) -> None:
    def workload(root: str) -> None:
        fs.mkdir(os.path.join(root, "d"))
        fd = fs.open(os.path.join(root, "d", "f"), os.O_WRONLY | os.O_CREAT)
        fs.write(fd, b"x" * 5000)
        fs.fdatasync(fd)
        fs.close(fd)
        fs.fsync_directory(os.path.join(root, "d"))  # d's entries are durable, d's own is not

    _, states = _states_at_end(tmp_path, workload)
    assert sorted(tuple(sorted(state.tree.items())) for state in states) == [
        (),
        (("d", None), ("d/f", b"x" * 5000)),
    ]


def test_simulator_materializes_a_kept_link_and_a_lost_unlink_as_hard_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()

    def workload(directory: str) -> None:  # how the engine creates a segment
        fd = fs.open(os.path.join(directory, "s.new"), os.O_WRONLY | os.O_CREAT)
        fs.write(fd, b"header")
        fs.fsync(fd)
        fs.close(fd)
        fs.link(os.path.join(directory, "s.new"), os.path.join(directory, "s"))
        fs.unlink(os.path.join(directory, "s.new"))

    _, states = _states_at_end(root, workload)
    both = [state for state in states if state.tree.keys() == {"s", "s.new"}]
    assert len(both) == 1 and both[0].links in ({"s.new": "s"}, {"s": "s.new"})
    target = cs.materialize(both[0], str(tmp_path / "state"))
    assert os.stat(os.path.join(target, "s")).st_ino == os.stat(os.path.join(target, "s.new")).st_ino
    assert (Path(target) / "s").read_bytes() == b"header"


# -- the workloads -----------------------------------------------------------------------------


def test_always_appends_across_rolls_survive_every_power_cut(scratch: Path) -> None:
    """(a) Every acknowledged append survives, at its offset, once, in order; no garbage after."""
    config = {"durability": "always", "segment_bytes": 1024, "index_interval_bytes": 64}
    before = records_of(3, 120)
    during = records_of(12 if not LONG else 20, 150, first=3)

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        append_all(writer, recorder, during, first=3)
        writer.close()

    workload = record_workload(
        "always", scratch, config, lambda bus: write_bus(bus, stamped(before), **config), run
    )
    assert sum(name.endswith(".log") for name in os.listdir(scratch / "always-world" / "bus")) >= 3, (
        "the workload should roll at least twice"
    )
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_never_power_cut_losing_pages_in_the_middle_of_the_tail_leaves_a_prefix(scratch: Path) -> None:
    """(b) A hole in the unsynced tail is cut: the bus keeps what was durable, then a prefix, nothing else."""
    config = {"durability": "never", "segment_bytes": 12 * 1024, "index_interval_bytes": 1024}
    before = records_of(2, 1500)
    during = records_of(12 if not LONG else 18, 1500, first=2)

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        append_all(writer, recorder, during, first=2)
        writer.close()

    workload = record_workload(
        "never", scratch, config, lambda bus: write_bus(bus, stamped(before), **config), run
    )
    assert len(os.listdir(scratch / "never-world" / "bus")) > len(
        os.listdir(scratch / "never-snapshot" / "bus")
    ), "the workload should roll once"
    # The interesting states exist: a segment with three unsynced pages, so a middle one can be lost.
    assert (
        max(
            sum(item.kind == "page" and ".log page" in item.text for item in cs.unsynced_items(point))
            for point in workload.recording.crash_points()
        )
        >= 3
    ), "the workload should leave at least three unsynced pages of a segment at some point"
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_retention_cut_short_by_a_power_cut_leaves_a_bus_that_opens(scratch: Path) -> None:
    """(c) Whatever subset of retention's unlinks reached the disk, the bus opens and reads without a gap."""
    config = {"durability": "always", "segment_bytes": 1024, "index_interval_bytes": 64}
    deleted: list[str] = []

    def prepare(bus: Path) -> None:
        with LogWriter(bus, **config) as writer:  # five closed segments and an active one
            number = 0
            while sum(name.endswith(".log") for name in os.listdir(bus)) < 6:
                writer.append(*records_of(1, 150, first=number)[0], timestamp=TIMESTAMP + number)
                number += 1

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        sizes = sorted(
            (int(name[:20]), os.path.getsize(bus / name) - 32)
            for name in os.listdir(bus)
            if name.endswith(".log")
        )
        assert len(sizes) == 6, f"the snapshot should hold 6 segments, not {len(sizes)}"
        deleted.extend(writer.apply_retention(max_bytes=sizes[-1][1] + sizes[-2][1]))
        recorder.mark("retention done")
        append_all(writer, recorder, records_of(1, 150, first=100), first=100)
        writer.close()

    workload = record_workload("retention", scratch, config, prepare, run, keeps_what_it_started_with=False)
    assert len(deleted) == 4, f"retention should delete 4 of 6 segments, deleted {deleted}"
    # After the full run the bus starts at the first segment retention kept; before it, it held
    # every record of the snapshot. A crash state holds a contiguous run of both, that covers
    # at least the kept segments' records and, once its append returned (mark 2), the new one.
    snapshot = read_appended(scratch / "retention-snapshot" / "bus")
    workload.keep_from = workload.expected[0].offset
    workload.expected = snapshot + [r for r in workload.expected if r.offset >= snapshot[-1].end]
    workload.required = lambda checkpoint: len(snapshot) + (1 if checkpoint.marks >= 2 else 0)
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_deferred_appends_are_promised_once_sync_returns(scratch: Path) -> None:
    """(e) Deferred appends (written in one batch at the sync, across a roll): a power cut before
    sync() returned may lose them, never a record acknowledged before them; once it returned, all
    survive; the durable append after them too."""
    config = {"durability": "always", "segment_bytes": 1024, "index_interval_bytes": 64}
    before = records_of(3, 120)
    deferred = records_of(7 if not LONG else 12, 150, first=3)
    after = records_of(2, 90, first=3 + len(deferred))

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        for number, (category, payload) in enumerate(deferred, start=3):
            writer.append(category, payload, timestamp=TIMESTAMP + number, deferred=True)
        writer.sync()
        for offset in range(len(deferred)):
            recorder.mark(offset)  # every deferred append is promised now
        append_all(writer, recorder, after, first=3 + len(deferred))
        writer.close()

    workload = record_workload(
        "deferred", scratch, config, lambda bus: write_bus(bus, stamped(before), **config), run
    )
    assert sum(name.endswith(".log") for name in os.listdir(scratch / "deferred-world" / "bus")) >= 3
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_a_roll_that_takes_the_standby_survives_every_power_cut(scratch: Path) -> None:
    """(f) The next segment's standby (zeros, prepared ahead) is renamed, headed and linked into
    place by the roll: every acknowledged append survives whatever part of that reached the disk."""
    config = {"durability": "always", "segment_bytes": 1024, "index_interval_bytes": 64}
    before = records_of(5, 120)
    during = records_of(6, 150, first=5)

    def prepare(bus: Path) -> None:
        write_bus(bus, stamped(before), **config)
        assert standby.prepare(str(bus), preallocated_size(1024))

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        append_all(writer, recorder, during, first=5)
        writer.close()

    workload = record_workload("standby", scratch, config, prepare, run)
    assert not (scratch / "standby-world" / "bus" / STANDBY_NAME).exists(), "a roll should take the standby"
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_a_new_bus_has_a_durable_watermark_before_its_first_append_returns(scratch: Path) -> None:
    """(d) Creating a bus and appending once: every state opens; a reader finds a readable watermark."""
    config = {"durability": "always", "segment_bytes": 1024, "index_interval_bytes": 64}

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        append_all(writer, recorder, records_of(1, 100), first=0)
        writer.close()

    workload = record_workload("new-bus", scratch, config, None, run)
    workload.reader_must_open_after_marks = 1
    assert_no_failures(workload, *run_workload(workload, scratch))


def test_a_new_bus_rolling_off_its_small_first_segment_survives_every_power_cut(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(f) A new bus's first segment is small (segment_capacity: created fast) and rolls early into a
    full-size one: creating it, appending and that roll keep every acknowledged append."""
    monkeypatch.setattr(segment, "FIRST_SEGMENT_BYTES", 512)
    config = {"durability": "always", "segment_bytes": 2048, "index_interval_bytes": 64}

    def run(bus: Path, recorder: cs.Recorder) -> None:
        writer = LogWriter(bus, **config).open()
        append_all(writer, recorder, records_of(8, 150), first=0)
        writer.close()

    workload = record_workload("small-first", scratch, config, None, run)
    logs = sorted(name for name in os.listdir(scratch / "small-first-world" / "bus") if is_segment_name(name))
    assert len(logs) == 2 and int(logs[1][:20]) <= 512 + 200, "the first segment rolled early"
    workload.reader_must_open_after_marks = 1
    assert_no_failures(workload, *run_workload(workload, scratch))


# Went wrong: a clean-close note erased but not durably vouched for a later writer's unsynced pages.
def test_a_clean_close_note_never_vouches_for_a_later_unsynced_writer(scratch: Path) -> None:
    """Writer A closes cleanly (its note: "the data ends at E"); writer B (durability="never") appends;
    power cut. Whatever survived, the next writer must not trust A's note for B's files: the note's
    erasure is durable before B's first write, so no stale byte of B's lies past the next writer's end,
    and records never come back out of order (found by an adversarial review of issue 9: 28 of 781
    states left stale bytes, 18 brought lost records back after later ones, 6 refused to open)."""
    config = {"segment_bytes": 1 << 20, "index_interval_bytes": 4096}
    size = 1400
    world = scratch / "world"
    world.mkdir()
    with LogWriter(world / "bus", durability="never", **config) as first:
        for _ in range(3):
            first.append("a", b"A" * size)
    with cs.Recorder(str(world)) as recorder:
        second = LogWriter(world / "bus", durability="never", **config).open()
        for i in range(8):
            second.append("b", bytes([66 + i]) * size)
        second._release()  # the process dies; the power cut decides what reached the disk
    failures: list[str] = []
    states = 0
    for point in recorder.recording.crash_points():
        for state in cs.crash_states(point, BUDGET):
            states += 1
            directory = scratch / f"state-{states}"
            cs.materialize(state, str(directory))
            bus = directory / "bus"
            with LogWriter(bus, durability="always", **config) as third:
                end = third.end_offset
                log = bus / "00000000000000000000.log"
                if any(log.read_bytes()[FILE_HEADER_SIZE + end :]):
                    failures.append(f"stale bytes past the end {end}: {state.describe()[:300]}")
                offsets = [third.append("c", b"C" * size) for _ in range(3)]
            categories = [record.category for record in read_appended(bus)]
            if categories[:3] != ["a"] * 3 or categories[-3:] != ["c"] * 3 or set(categories[3:-3]) - {"b"}:
                failures.append(f"records out of order {categories}: {state.describe()[:300]}")
            assert [r.offset for r in read_appended(bus)][-3:] == offsets
            shutil.rmtree(directory)
    assert states > 50
    assert not failures, "\n".join(failures[:5])

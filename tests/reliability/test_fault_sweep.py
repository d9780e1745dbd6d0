"""I/O-error sweep, SQLite style: fail each file-system call of a write-side operation in turn.

For each workload (create a bus, also with a first segment smaller than the others; open one
after a clean close or after a crash; append with and without a roll, also off a small first
segment, with both durabilities; retention deleting several segments; clean close;
repair_indexes) the sweep first counts the calls the workload makes through the
engine's I/O seam (``filelog_bus.fs``), then runs it once per call number N with that
call failing (``Fault("any", N, error)``): ENOSPC, EIO, EMFILE, or an exception raised
the way a signal handler would (``Interrupt``). After each fault it checks:

(a) the failed call raised a typed error: ``BusWriteError`` with the injected errno and a
    ``.path`` (or ``BusPermissionError``; any ``FilelogBusError`` for ``open()``), or the
    interrupt propagated unchanged; an error is never swallowed, except where that loses
    nothing: a failed ``fs.close``, or a failed open of a file for reading only (an index,
    which the engine then rebuilds from its segment, as when it is damaged);
(b) every append that returned reads back at its offset, exactly once, in order, with its
    category and payload; no offset was returned twice; while the failed writer lives,
    readers see exactly the acknowledged records;
(c) the writer then either appends correctly or is stopped: every call raises
    ``BusClosedError`` (whose ``.failure`` is the error that stopped it) until closed;
    ``close()`` never raises after a fault, and releases the lock;
(d) a new writer opens the bus (``lock_timeout=0``), appends, closes; ``verify_bus``
    says healthy; the acknowledged records are all there;
(e) ``LogReader(path, timeout=0)`` iteration returns (in a thread with a join timeout, so
    a reader that spins is a failure, not a hung suite);
and that no file of the bus is left open in the process.

The default (CI) run gives each call number one of the four faults, rotating, so every
call and every fault is swept in well under three minutes; ``FILELOG_LONG=1`` runs every
call with every fault. All violations of one workload and fault are reported together,
each naming the fault: which seam call failed (``fs.fsync #2``), its number N among all
the workload's calls, and the error.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import resource
import shutil
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import pytest
from helpers.bus import LONG, SMALL_DENSE, open_files_under, segment_paths, sized_payload
from helpers.faults import (
    SWEPT_CALLS,
    SWEPT_ERRORS,
    Fault,
    FaultLog,
    Interrupt,
    count_calls,
    injected,
    same_failure,
)

from filelog_bus import LogReader, LogWriter, fs, segment, standby
from filelog_bus.check import verify_bus
from filelog_bus.errors import (
    BusClosedError,
    BusLockedError,
    BusPermissionError,
    BusWriteError,
    FilelogBusError,
)
from filelog_bus.segment import preallocated_size

#: Small segments and index intervals: rolls and index entries within a few appends.
FAULTS: tuple[int | type[BaseException], ...] = (*SWEPT_ERRORS, Interrupt)
#: How long a reader with timeout=0 may take to iterate a small bus before it counts as spinning.
READER_JOIN_SECONDS = 20.0
#: Violations shown in full in a failure message (all are counted).
SHOWN = 40
CATEGORIES = ("orders", "users", "catégorie/☃")


def fault_name(error: int | type[BaseException]) -> str:
    return errno.errorcode[error] if isinstance(error, int) else error.__name__


# -- the run: one bus, its acknowledged appends, its writer -----------------------------------------


class Acked(NamedTuple):
    offset: int
    category: str
    payload: bytes


@dataclass
class Run:
    path: str
    settings: dict[str, Any]
    acked: list[Acked] = field(default_factory=list)
    #: (category, payload) of appends that were called but did not return (or were deferred and not
    #: synced before a failure).
    failed: list[tuple[str, bytes]] = field(default_factory=list)
    #: Deferred appends that returned, not promised until the next sync returns.
    pending: list[Acked] = field(default_factory=list)
    writer: LogWriter | None = None
    sequence: int = 0
    #: Retention may delete acknowledged records below this offset (the active segment's base).
    deletable_below: int = 0

    def new_writer(self, **extra: Any) -> LogWriter:
        return LogWriter(self.path, **{**self.settings, **extra})

    def append(self, size: int, category: str | None = None, *, deferred: bool = False) -> Acked:
        """An append; a deferred one is promised only once ``sync`` returns (until then it may or may
        not survive a failure, like an append that raised)."""
        assert self.writer is not None
        self.sequence += 1
        category = category or CATEGORIES[self.sequence % len(CATEGORIES)]
        payload = sized_payload(self.sequence, size)
        try:
            offset = self.writer.append(category, payload, deferred=deferred)
        except BaseException:
            self.failed.append((category, payload))
            self._unpromise_pending()
            raise
        acked = Acked(offset, category, payload)
        (self.pending if deferred else self.acked).append(acked)
        return acked

    def sync(self) -> None:
        assert self.writer is not None
        try:
            self.writer.sync()
        except BaseException:
            self._unpromise_pending()
            raise
        self.acked += self.pending
        self.pending.clear()

    def _unpromise_pending(self) -> None:
        self.failed += [(p.category, p.payload) for p in self.pending]
        self.pending.clear()


# -- workloads -------------------------------------------------------------------------------------------


def flip_last_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x40
    path.write_bytes(bytes(content))


def template_empty(run: Run) -> None:
    """A bus with one record, closed cleanly."""
    with run.new_writer() as run.writer:
        run.append(30)


def template_full_first_segment(run: Run) -> None:
    """A bus whose only segment is nearly full: the next big record rolls."""
    with run.new_writer() as run.writer:
        while run.writer.end_offset < 900:
            run.append(50)
    assert len(segment_paths(run.path)) == 1


def template_several_segments(run: Run) -> None:
    """A bus of six segments or so, closed cleanly."""
    with run.new_writer() as run.writer:
        for _ in range(30):
            run.append(150)
    assert len(segment_paths(run.path)) >= 5


def template_crashed(run: Run) -> None:
    """The state a SIGKILLed writer leaves: no clean close, and a torn record at the end."""
    live = run.path + ".live"
    with LogWriter(live, **run.settings) as run.writer:
        for _ in range(14):
            run.append(70)
        shutil.copytree(live, run.path)  # while the writer holds the bus open
    shutil.rmtree(live)
    with open(segment_paths(run.path)[-1], "ab") as newest:
        newest.write(b"\x5a" * 11)  # part of a record header: a torn write


def open_run_writer(run: Run) -> None:
    run.writer = run.new_writer().open()


def open_and_damage_indexes(run: Run) -> None:
    """Open the writer, then damage indexes as a bit rot would (opening would repair a missing one)."""
    open_run_writer(run)
    segments = segment_paths(run.path)
    assert len(segments) >= 4
    segments[0].with_suffix(".index").unlink()
    flip_last_byte(segments[1].with_suffix(".catindex"))
    flip_last_byte(segments[2].with_suffix(".catsummary"))


def open_and_append_some(run: Run) -> None:
    open_run_writer(run)
    for size in (40, 90, 10):
        run.append(size)


def note_active_segment(run: Run) -> None:
    open_run_writer(run)
    run.deletable_below = int(segment_paths(run.path)[-1].name[:20])


def body_open(run: Run) -> None:
    run.writer = run.new_writer()
    run.writer.open()


def body_append(run: Run) -> None:
    """Three small appends, no roll (each crosses an index interval)."""
    for size in (40, 70, 5):
        run.append(size)


def body_append_roll(run: Run) -> None:
    """An append that rolls to a new segment, then one in the new segment."""
    run.append(200)
    run.append(40)


def body_deferred_then_sync(run: Run) -> None:
    """Deferred appends (one rolls), made durable by sync(), then a durable append."""
    for size in (40, 300, 70, 500):
        run.append(size, deferred=True)
    run.sync()
    run.append(30)


def open_writer_with_standby(run: Run) -> None:
    """Open the writer with the next segment's standby ready: the roll takes it."""
    open_run_writer(run)
    assert standby.prepare(run.path, preallocated_size(run.settings["segment_bytes"]))


def body_roll_off_the_first_segment(run: Run) -> None:
    """Appends past a new bus's small first segment (segment_capacity), into a full-size one."""
    assert run.writer is not None and run.writer.end_offset == 0
    for size in (150, 150, 40):
        run.append(size)
    assert len(segment_paths(run.path)) == 2


def body_retention(run: Run) -> None:
    assert run.writer is not None
    deleted = run.writer.apply_retention(max_bytes=1500)
    assert len(deleted) >= 3, deleted


def body_close(run: Run) -> None:
    assert run.writer is not None
    run.writer.close()


def body_repair(run: Run) -> None:
    assert run.writer is not None
    repaired = run.writer.repair_indexes()
    assert len(repaired) >= 3, repaired


def repair_again(writer: LogWriter) -> None:
    writer.repair_indexes()  # the damage we made (not the fault) may still be there


@dataclass(frozen=True)
class Workload:
    name: str
    #: Builds the bus every run starts from (once per test; each run gets a copy).
    template: Callable[[Run], None] | None
    #: Per run, before the fault can fire.
    prepare: Callable[[Run], None] | None
    #: What the sweep fails, call by call.
    body: Callable[[Run], None]
    #: The body is LogWriter.open(): any FilelogBusError is a typed failure.
    opens: bool = False
    #: The body closes the writer: afterwards it is closed whatever happened.
    closes: bool = False
    durability: str = "always"
    #: Run by the new writer after reopening (finishes what the failed operation was asked to do).
    after_reopen: Callable[[LogWriter], None] | None = None
    #: segment.FIRST_SEGMENT_BYTES for the whole sweep: a first segment smaller than the others.
    first_segment_bytes: int | None = None

    def __str__(self) -> str:
        return self.name


WORKLOADS = [
    Workload("create", None, None, body_open, opens=True),
    Workload("create-small-first-segment", None, None, body_open, opens=True, first_segment_bytes=256),
    Workload(
        "append-roll-off-the-first-segment",
        None,
        open_run_writer,
        body_roll_off_the_first_segment,
        first_segment_bytes=256,
    ),
    Workload("open-after-clean-close", template_several_segments, None, body_open, opens=True),
    Workload("open-after-crash", template_crashed, None, body_open, opens=True),
    Workload("open-after-crash-never", template_crashed, None, body_open, opens=True, durability="never"),
    Workload("append", template_empty, open_run_writer, body_append),
    Workload("append-roll", template_full_first_segment, open_run_writer, body_append_roll),
    Workload("append-roll-standby", template_full_first_segment, open_writer_with_standby, body_append_roll),
    Workload("append-deferred-sync", template_full_first_segment, open_run_writer, body_deferred_then_sync),
    Workload("append-never", template_empty, open_run_writer, body_append, durability="never"),
    Workload(
        "append-roll-never",
        template_full_first_segment,
        open_run_writer,
        body_append_roll,
        durability="never",
    ),
    Workload("retention", template_several_segments, note_active_segment, body_retention),
    Workload("close", template_empty, open_and_append_some, body_close, closes=True),
    Workload(
        "close-never", template_empty, open_and_append_some, body_close, closes=True, durability="never"
    ),
    Workload(
        "repair-indexes",
        template_several_segments,
        open_and_damage_indexes,
        body_repair,
        after_reopen=repair_again,
    ),
]


# -- checks ------------------------------------------------------------------------------------------


class ReadResult(NamedTuple):
    records: list[Any]
    error: BaseException | None
    hung: bool


def read_everything(path: str) -> ReadResult:
    """Iterate ``LogReader(path, timeout=0)`` in a thread; a reader that does not return is reported."""
    result: dict[str, Any] = {"records": []}

    def target() -> None:
        try:
            with LogReader(path, timeout=0) as reader:
                for record in reader:
                    result["records"].append(record)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"reader of {path}", daemon=True)
    thread.start()
    thread.join(READER_JOIN_SECONDS)
    return ReadResult(result["records"], result.get("error"), thread.is_alive())


def check_acked_offsets(run: Run) -> list[str]:
    offsets = [a.offset for a in run.acked]
    problems = []
    if len(set(offsets)) != len(offsets):
        twice = sorted({o for o in offsets if offsets.count(o) > 1})
        problems.append(f"(b) offsets returned twice by append: {twice}")
    if offsets != sorted(offsets):
        problems.append(f"(b) append returned offsets out of order: {offsets}")
    return problems


def check_read_records(run: Run, read: ReadResult, when: str, *, extras_allowed: bool) -> list[str]:
    """(b) and (e): the acknowledged records, at their offsets, once, in order; nothing else unless allowed."""
    if read.hung:
        return [
            f"(e) {when}: LogReader(timeout=0) iteration did not return within {READER_JOIN_SECONDS:.0f} s"
        ]
    problems = []
    if read.error is not None:
        problems.append(f"(e) {when}: reading raised {read.error!r}")
    got = read.records
    offsets = [r.offset for r in got]
    if offsets != sorted(set(offsets)):
        problems.append(f"(b) {when}: reader yielded offsets not strictly increasing: {offsets}")
    begin = offsets[0] if offsets else None
    by_offset = {r.offset: r for r in got}
    for acked in run.acked:
        record = by_offset.get(acked.offset)
        if record is None:
            if read.error is None and begin is not None and acked.offset < begin <= run.deletable_below:
                continue  # deleted by retention, as asked
            problems.append(f"(b) {when}: acknowledged record at offset {acked.offset} is missing")
        elif (record.category, bytes(record.payload)) != (acked.category, acked.payload):
            problems.append(
                f"(b) {when}: offset {acked.offset} holds {record.category!r} {bytes(record.payload)[:24]!r}..., "
                f"not the acknowledged {acked.category!r} {acked.payload[:24]!r}..."
            )
    acked_offsets = {a.offset for a in run.acked}
    payload_seen: dict[bytes, int] = {}
    for record in got:
        payload = bytes(record.payload)
        if payload in payload_seen:
            problems.append(
                f"(b) {when}: the same record at offsets {payload_seen[payload]} and {record.offset}"
            )
        payload_seen[payload] = record.offset
        if record.offset in acked_offsets:
            continue
        if not extras_allowed:
            problems.append(
                f"(b) {when}: unacknowledged record visible at offset {record.offset}: "
                f"{record.category!r} {payload[:24]!r}"
            )
        elif (record.category, payload) not in run.failed:
            problems.append(
                f"(b) {when}: record at offset {record.offset} was never appended: {record.category!r} {payload[:24]!r}"
            )
    return problems


def check_raised(
    workload: Workload, fault: Fault, log: FaultLog, raised: BaseException | None, *, absorbable: bool
) -> list[str]:
    """(a): the failure is typed, carries the injected errno, or is the interrupt itself.

    An error may be absorbed (nothing raised) only where that loses nothing: a failed close,
    a failed open of a file for reading only (an index: the engine then falls back on
    the segment, as for a damaged index), or a preallocation the disk refuses (ENOSPC from
    posix_fallocate or from writing a new segment's zeros; appends then extend the file). Whether the bus is then right is what (b)-(e) check.
    """
    if not log.fired:
        return [] if raised is None else [f"(a) the workload raised {raised!r} though no fault fired"]
    if fault.error is Interrupt:
        if type(raised) is not Interrupt:
            return [f"(a) the Interrupt did not propagate unchanged: got {raised!r}"]
        return []
    if raised is None:
        if log.fired_at == "close" or absorbable:
            return []
        if log.fired_at == "fallocate" and fault.error == errno.ENOSPC:
            return []
        return [f"(a) the injected {fault_name(fault.error)} was swallowed: the workload raised nothing"]
    if isinstance(raised, BusWriteError):
        problems = []
        if raised.errno != fault.error:
            problems.append(
                f"(a) BusWriteError.errno is {raised.errno}, not the injected {fault.error}: {raised!r}"
            )
        if raised.path is None:
            problems.append(f"(a) BusWriteError without .path (which file failed): {raised!r}")
        return problems
    if isinstance(raised, BusPermissionError) or (workload.opens and isinstance(raised, FilelogBusError)):
        return []
    return [f"(a) untyped failure: {type(raised).__module__}.{type(raised).__qualname__}: {raised}"]


def probe_writer(workload: Workload, run: Run, raised: BaseException | None) -> list[str]:
    """(c): the writer appends correctly, or refuses every call with BusClosedError."""
    writer = run.writer
    if writer is None:
        return []
    must_refuse = workload.closes or (workload.opens and raised is not None)
    try:
        before = run.acked[-1].offset if run.acked else -1
        acked = run.append(25, "probe")
    except BusClosedError as exc:
        return check_stopped(workload, run, raised, exc, must_refuse)
    except (Exception, Interrupt) as exc:
        return [f"(c) the writer's next append raised {exc!r}, not BusClosedError"]
    problems = []
    if must_refuse:
        what = "closed" if workload.closes else "failed to open"
        problems.append(f"(c) a writer that {what} accepted an append (offset {acked.offset})")
    if acked.offset <= before:
        problems.append(f"(c) the append after the fault got offset {acked.offset}, not past {before}")
    try:
        if writer.end_offset <= acked.offset:
            problems.append(
                f"(c) end_offset {writer.end_offset} is not past the last append at {acked.offset}"
            )
        run.append(60)
    except (Exception, Interrupt) as exc:
        problems.append(f"(c) the writer accepted one append after the fault, then raised {exc!r}")
    return problems


def check_stopped(
    workload: Workload, run: Run, raised: BaseException | None, exc: BusClosedError, must_refuse: bool
) -> list[str]:
    writer = run.writer
    assert writer is not None
    problems = []
    if raised is None and not workload.closes:
        problems.append(f"(c) the writer refuses appends ({exc!r}) though the workload raised nothing")
    if raised is not None and not must_refuse:
        failure = getattr(exc, "failure", None)
        if not same_failure(failure, raised):
            problems.append(
                f"(c) BusClosedError.failure is {failure!r}, not the error that stopped it, {raised!r}"
            )
        if not same_failure(getattr(writer, "failure", None), raised):
            problems.append(f"(c) writer.failure is {getattr(writer, 'failure', None)!r}, not {raised!r}")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("append", lambda: writer.append("probe", b"again")),
        ("end_offset", lambda: writer.end_offset),
        ("begin_offset", lambda: writer.begin_offset),
        ("apply_retention", lambda: writer.apply_retention(max_bytes=10**15)),
        ("repair_indexes", writer.repair_indexes),
    ]
    for name, call in calls:
        try:
            call()
        except BusClosedError:
            continue
        except (Exception, Interrupt) as other:
            problems.append(f"(c) a stopped writer's {name} raised {other!r}, not BusClosedError")
        else:
            problems.append(f"(c) a stopped writer's {name} did not raise BusClosedError")
    return problems


def close_writer(run: Run) -> list[str]:
    if run.writer is None:
        return []
    try:
        run.writer.close()
    except (Exception, Interrupt) as exc:
        return [f"(c) close() after the fault raised {exc!r}"]
    return []


def reopen_and_verify(workload: Workload, run: Run) -> list[str]:
    """(d): a new writer opens, appends and closes; verify says healthy; every acknowledged record is there."""
    problems = []
    try:
        writer = run.new_writer(lock_timeout=0).open()
    except BusLockedError as exc:
        return [f"(d) the bus is still locked after the faulted writer closed: {exc!r}"]
    except (Exception, Interrupt) as exc:
        return [f"(d) a new writer does not open the bus: {exc!r}"]
    run.writer = writer
    try:
        if workload.after_reopen is not None:
            workload.after_reopen(writer)
        last = run.acked[-1].offset if run.acked else -1
        if writer.end_offset <= last:
            problems.append(f"(d) the reopened writer's end_offset {writer.end_offset} is not past {last}")
        run.append(33, "after-reopen")
    except (Exception, Interrupt) as exc:
        problems.append(f"(d) the reopened writer failed: {exc!r}")
    finally:
        try:
            writer.close()
        except (Exception, Interrupt) as exc:
            problems.append(f"(d) closing the reopened writer raised {exc!r}")
    try:
        report = verify_bus(run.path)
    except (Exception, Interrupt) as exc:
        problems.append(f"(d) verify_bus raised {exc!r}")
    else:
        if not report.healthy:
            problems.append("(d) verify_bus after reopening: " + "; ".join(str(p) for p in report.problems))
    read = read_everything(run.path)
    problems += check_read_records(run, read, "after reopening", extras_allowed=True)
    return problems


def check_no_open_files(run_dir: str, log: FaultLog) -> list[str]:
    """No file of the bus stays open once its writers are closed (garbage collected objects aside).

    Leaked descriptors are not closed here: a file object owning one would close the number
    again later, when another file may hold it. An injected close failure leaks its
    descriptor by construction (the real close never ran); the module raises the
    descriptor limit so that those do not add up to EMFILE.
    """
    gc.collect()
    leaked = open_files_under(run_dir)
    if leaked and log.fired_at != "close":
        return ["files left open in the process: " + ", ".join(target for _, target in leaked)]
    return []


@pytest.fixture(scope="module", autouse=True)
def _room_for_leaked_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the sweep ---------------------------------------------------------------------------------------

T = TypeVar("T")


class SeamCall(NamedTuple):
    name: str
    #: The file the call concerns (its name; "a -> b" for link and replace), "" if unknown.
    target: str
    #: An open for reading only (not of a directory, which is opened to fsync it).
    absorbable: bool
    #: A write of zeros only: preallocation, which a full disk may refuse (appends then extend the file).
    zero_fill: bool = False

    def __str__(self) -> str:
        return f"fs.{self.name} on {self.target or '?'}"


def trace_calls(workload: Callable[[], object]) -> list[SeamCall]:
    """The seam calls ``workload()`` makes, in order, with the files they concern."""
    calls: list[SeamCall] = []
    names: dict[int, str] = {}
    originals = {name: getattr(fs, name) for name in fs.SEAM}

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            paths = [
                os.path.basename(os.fsdecode(a)) for a in args if isinstance(a, (str, bytes, os.PathLike))
            ]
            if paths:
                target = " -> ".join(paths)
            elif args and isinstance(args[0], int):
                target = names.get(args[0], "")
            else:
                target = ""
            flags = args[1] if len(args) > 1 else kwargs.get("flags", 0)
            writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_DIRECTORY
            zeros = name == "write_zeros"
            calls.append(SeamCall(name, target, name == "open" and not flags & writes, zeros))
            result = original(*args, **kwargs)
            if name == "open":
                names[result] = target
            return result

        return call

    for name, original in originals.items():
        setattr(fs, name, wrap(name, original))
    try:
        workload()
    finally:
        for name, original in originals.items():
            setattr(fs, name, original)
    return calls


class Sweep:
    """One workload on copies of one template bus."""

    def __init__(self, workload: Workload, tmp_path: Path) -> None:
        self.workload = workload
        self.tmp_path = tmp_path
        self.settings = {**SMALL_DENSE, "durability": workload.durability}
        self.template = Run(str(tmp_path / "template"), self.settings)
        self.calls: list[SeamCall] = []
        if workload.template is not None:
            workload.template(self.template)
            self.template.writer = None

    def fresh_run(self, label: str) -> tuple[str, Run]:
        run_dir = str(self.tmp_path / label)
        os.mkdir(run_dir)
        run = Run(
            os.path.join(run_dir, "bus"),
            self.settings,
            acked=list(self.template.acked),
            sequence=self.template.sequence,
        )
        if self.workload.template is not None:
            shutil.copytree(self.template.path, run.path)
        if self.workload.prepare is not None:
            self.workload.prepare(run)
        return run_dir, run

    def count(self) -> int:
        """Count the workload's seam calls, then record what each is (twice: the sweep needs the same calls)."""
        counts = self._on_a_copy("count", lambda run: count_calls(lambda: self.workload.body(run)))
        assert counts["any"] > 0
        assert any(counts[name] for name in SWEPT_CALLS), counts
        self.calls = self._on_a_copy("trace", lambda run: trace_calls(lambda: self.workload.body(run)))
        assert len(self.calls) == counts["any"], "the workload does not make the same calls twice"
        return counts["any"]

    def _on_a_copy(self, label: str, action: Callable[[Run], T]) -> T:
        run_dir, run = self.fresh_run(label)
        try:
            return action(run)
        finally:
            if run.writer is not None:
                run.writer.close()
            shutil.rmtree(run_dir)

    def describe(self, fault: Fault, log: FaultLog) -> str:
        if not log.fired_at:
            return "nothing fired"
        call = self.calls[fault.nth - 1] if fault.nth <= len(self.calls) else None
        where = f" on {call.target}" if call is not None and call.target else ""
        return f"fs.{log.fired_at} #{log.counts[log.fired_at]}{where}"

    def run_one(self, fault: Fault) -> tuple[str, list[str]]:
        """Run the workload with ``fault``; return (what fired, violations)."""
        run_dir, run = self.fresh_run(f"n{fault.nth}-{fault_name(fault.error)}")
        raised: BaseException | None = None
        with injected(fault) as log:
            try:
                self.workload.body(run)
            except (Exception, Interrupt) as exc:
                raised = exc
        fired = self.describe(fault, log)
        call = self.calls[fault.nth - 1] if fault.nth <= len(self.calls) else None
        try:
            problems = self.check(run, fault, log, raised)
            if log.fired and (call is None or call.name != log.fired_at):
                problems.append(f"the fault hit fs.{log.fired_at}, but the counted run made {call} there")
        except (Exception, Interrupt) as exc:  # an engine call the checks make failed unexpectedly
            problems = ["checking raised " + "".join(traceback.format_exception(exc)).strip()]
        finally:
            if run.writer is not None:
                with contextlib.suppress(Exception, Interrupt):
                    run.writer.close()
        if raised is not None:
            raised.__traceback__ = None  # its frames would keep the engine's files open
        problems += check_no_open_files(run_dir, log)
        shutil.rmtree(run_dir, ignore_errors=True)
        return fired, problems

    def check(self, run: Run, fault: Fault, log: FaultLog, raised: BaseException | None) -> list[str]:
        call = self.calls[fault.nth - 1] if fault.nth <= len(self.calls) else None
        absorbable = call is not None and (
            call.absorbable or (call.zero_fill and fault.error in (errno.ENOSPC, errno.EDQUOT))
        )
        problems = check_raised(self.workload, fault, log, raised, absorbable=absorbable)
        problems += check_acked_offsets(run)
        problems += probe_writer(self.workload, run, raised)
        if run.writer is not None or self.workload.template is not None:
            live = read_everything(run.path)
            bus_may_be_unborn = (
                not run.acked and live.error is not None and isinstance(live.error, FilelogBusError)
            )
            if not bus_may_be_unborn:
                problems += check_read_records(
                    run, live, "while the failed writer lives", extras_allowed=False
                )
        problems += close_writer(run)
        problems += reopen_and_verify(self.workload, run)
        return problems


def faults_to_sweep(total: int, error: int | type[BaseException], workload_index: int) -> list[Fault]:
    """Every call number in the long mode; in CI, the call numbers whose turn this error has."""
    turn = FAULTS.index(error)
    numbers = range(1, total + 1)
    if not LONG:
        numbers = [n for n in numbers if (n + workload_index) % len(FAULTS) == turn]
    return [Fault("any", n, error) for n in numbers]


@pytest.mark.parametrize("workload", WORKLOADS, ids=str)
def test_workload_passes_every_check_without_a_fault(
    workload: Workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline: with no fault, every invariant of the sweep holds (so a sweep failure is the fault's)."""
    if workload.first_segment_bytes is not None:
        monkeypatch.setattr(segment, "FIRST_SEGMENT_BYTES", workload.first_segment_bytes)
    sweep = Sweep(workload, tmp_path)
    total = sweep.count()
    fired, problems = sweep.run_one(Fault("any", total + 1, errno.EIO))
    assert fired == "nothing fired"
    assert not problems, "\n".join(problems)


# Went wrong: an interrupt in one close() call of LogWriter.close() skipped the others: the bus stayed locked.
@pytest.mark.parametrize("error", FAULTS, ids=fault_name)
@pytest.mark.parametrize("workload", WORKLOADS, ids=str)
def test_fault_at_each_call_keeps_every_promise(
    workload: Workload, error: int | type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if workload.first_segment_bytes is not None:
        monkeypatch.setattr(segment, "FIRST_SEGMENT_BYTES", workload.first_segment_bytes)
    sweep = Sweep(workload, tmp_path)
    total = sweep.count()
    violations = []
    faults = faults_to_sweep(total, error, WORKLOADS.index(workload))
    for fault in faults:
        fired, problems = sweep.run_one(fault)
        violations += [
            f"{workload} | {fault_name(error)} at call {fault.nth}/{total} ({fired}): {problem}"
            for problem in problems
        ]
    shown = "\n".join(violations[:SHOWN])
    more = f"\n... and {len(violations) - SHOWN} more" if len(violations) > SHOWN else ""
    assert not violations, (
        f"{len(violations)} violations in {len(faults)} faulted runs of {workload} with {fault_name(error)}:\n{shown}{more}"
    )

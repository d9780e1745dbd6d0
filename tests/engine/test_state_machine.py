"""A Hypothesis rule-based state machine: the engine against a simple in-memory model.

The model is the list of retained records (offset, category, payload, timestamp),
the bases of the retained segments and one reader's position. Offsets and
segment rolls follow from the documented rules alone: a record's offset is the
end of the previous one, and a record that would take a non-empty active segment
beyond ``segment_bytes`` starts a new segment named after its offset.

Rules: append (few categories: one rare, one non-ASCII, two whose category-index
keys collide; payloads smaller and larger than the index interval), forced roll,
writer reopen (with changed settings, optionally after deleting every index or
flipping a bit in one), retention by bytes and by age with an explicit ``now``,
seek (to records, record + 1, the ends, out of range), seek_to_beginning,
find_next from the position, partial and full iteration, reader reopen. After
every step the bus is compared with the model.

Failure rules (issue 8, fail-stop writes): a failing append (one of the append's calls
through the I/O seam, drawn by number, fails with ENOSPC, EIO or EMFILE) and an
interrupted append (an exception raised there as a signal handler would). The append must
raise (``BusWriteError`` with the errno, or the interrupt unchanged); the writer is then
stopped: every call raises ``BusClosedError`` until "reopen writer" runs, and readers do
not see the failed record. After the reopen the record is either gone or at the end, where
the model expected it (the model allows both, then adopts what the bus shows); a segment
the failed append had started may be left empty, and is adopted the same way.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from helpers.bus import sized_payload
from helpers.faults import SWEPT_ERRORS, Fault, Interrupt, injected, same_failure
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from filelog_bus import LogReader, LogWriter, Record, fs
from filelog_bus.errors import BusClosedError, BusWriteError, OffsetOutOfRangeError
from filelog_bus.layout import parse_segment_name, segment_name
from filelog_bus.record import encode_record

SECONDS_PER_DAY = 86400.0
COMMON = ["orders", "users"]
RARE = "rare"
UNICODE = "catégorie/☃"
#: Two names with the same CRC-32, hence the same category-index key: find_next must tell them apart.
COLLIDING = ["cat8976", "cat3716400"]
#: Weighted: the rare category comes up about one append in fourteen.
APPEND_CATEGORIES = [*COMMON * 5, UNICODE, RARE, *COLLIDING]
#: find_next also looks for a category that is never appended.
LOOKUP_CATEGORIES = [*COMMON, UNICODE, RARE, *COLLIDING, "never-appended"]
SEGMENT_BYTES = [1024, 2048, 4096]
INDEX_INTERVALS = [64, 256, 512]
#: Which of an append's seam calls fails: mostly the first few (write, index, sync), sometimes a roll's.
FAULT_CALL_NUMBERS = st.one_of(st.integers(1, 5), st.integers(1, 30))
INTERRUPTS = [Interrupt, KeyboardInterrupt]


class Model(NamedTuple):
    offset: int
    category: str
    payload: bytes
    timestamp: float
    size: int


class Pending(NamedTuple):
    """An append that failed: after reopen its record is either gone or this one."""

    record: Model
    #: The model expected it to start a new segment.
    rolls: bool


@contextlib.contextmanager
def failed_open_flags() -> Iterator[list[int]]:
    """The flags of the fs.open calls that fail in the block (a fault makes one fail)."""
    flags: list[int] = []
    inner = fs.open

    def recording(path: str, mode_flags: int, *args: object) -> int:
        try:
            return inner(path, mode_flags, *args)
        except BaseException:
            flags.append(mode_flags)
            raise

    fs.open = recording
    try:
        yield flags
    finally:
        fs.open = inner


def append_batches(min_size: int) -> st.SearchStrategy[list[tuple[str, int, float]]]:
    """Batches of (category, payload size, seconds the clock advances) for appends in a row."""
    return st.lists(
        st.tuples(st.sampled_from(APPEND_CATEGORIES), st.integers(0, 400), st.floats(0, 7200)),
        min_size=min_size,
        max_size=12,
    )


class LogMachine(RuleBasedStateMachine):
    """One writer and one long-lived reader on a fresh bus, checked against the model after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="filelog-sm-")
        self.path = os.path.join(self.tmp, "bus")
        self.segment_bytes = 2048
        self.interval = 256
        self.writer = self._open_writer()
        self.reader = LogReader(self.path).open()
        self.records: list[Model] = []
        self.bases = [0]
        self.end = 0
        self.position = 0
        self.clock = 1_700_000_000.0
        self.sequence = 0
        #: The error that stopped the writer (None while it is usable), and the append it failed.
        self.failure: BaseException | None = None
        self.pending: Pending | None = None

    def teardown(self) -> None:
        try:
            self.reader.close()
            self.writer.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------------------

    def _open_writer(self) -> LogWriter:
        return LogWriter(
            self.path, segment_bytes=self.segment_bytes, index_interval_bytes=self.interval
        ).open()

    @property
    def begin(self) -> int:
        return self.bases[0]

    @property
    def stopped(self) -> bool:
        return self.failure is not None

    def _next_record(self, category: str, size: int, advance: float) -> Pending:
        """The record the next append makes, and whether it starts a new segment."""
        self.clock += advance
        self.sequence += 1
        payload = sized_payload(self.sequence, size)
        record_size = len(encode_record(category, self.clock, payload))
        active = self.bases[-1]
        rolls = self.end > active and self.end - active + record_size > self.segment_bytes
        return Pending(Model(self.end, category, payload, self.clock, record_size), rolls)

    def _adopt(self, expected: Pending) -> None:
        if expected.rolls:
            self.bases.append(expected.record.offset)
        self.records.append(expected.record)
        self.end += expected.record.size

    def _append(self, category: str, size: int, advance: float) -> Model:
        expected = self._next_record(category, size, advance)
        offset = self.writer.append(category, expected.record.payload, expected.record.timestamp)
        assert offset == expected.record.offset
        self._adopt(expected)
        return expected.record

    def _faulted_append(self, category: str, size: int, fault: Fault) -> None:
        """Append with ``fault`` injected: either it returns (the fault did not fire) or the writer stops."""
        expected = self._next_record(category, size, 60.0)
        raised: BaseException | None = None
        with injected(fault) as log, failed_open_flags() as flags:
            try:
                offset = self.writer.append(category, expected.record.payload, expected.record.timestamp)
            except (Exception, Interrupt, KeyboardInterrupt) as exc:
                raised = exc
        if raised is None:
            # The append made fewer calls than the fault's number, or the failed call lost nothing: a
            # close, or an open for reading (of an index, rebuilt from the segment when unreadable).
            absorbable = (
                log.fired_at == "close"
                or (
                    log.fired_at == "open"
                    and not flags[0] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_DIRECTORY)
                )
                or (log.fired_on_zeros and fault.error == errno.ENOSPC)  # a new segment's zeros
            )
            assert not log.fired or absorbable, f"{fault} in fs.{log.fired_at} was swallowed"
            assert offset == expected.record.offset
            self._adopt(expected)
            event("faulted append: returned" + (f" (fs.{log.fired_at} failed)" if log.fired else ""))
            return
        event(f"faulted append: {type(raised).__name__} from fs.{log.fired_at}")
        assert log.fired, f"append raised {raised!r} though no fault fired"
        if isinstance(fault.error, int):
            assert isinstance(raised, BusWriteError), f"{fault} in fs.{log.fired_at} raised {raised!r}"
            assert raised.errno == fault.error, f"{fault} in fs.{log.fired_at} raised {raised!r}"
        else:
            assert type(raised) is fault.error, f"{fault} in fs.{log.fired_at} raised {raised!r}"
        self.failure = raised
        self.pending = expected

    def _from(self, offset: int) -> list[Model]:
        return [m for m in self.records if m.offset >= offset]

    def _drop_below(self, begin: int) -> None:
        self.records = self._from(begin)
        if self.position < begin:
            # Covered by test_retention.py: here the reader simply starts again from the oldest record.
            self.reader.seek_to_beginning()
            self.position = begin

    def _check_records(self, got: list[Record], expected: list[Model]) -> None:
        assert [(r.offset, r.category, r.payload, r.timestamp, r.size) for r in got] == [
            tuple(m) for m in expected
        ]

    # -- writer rules ---------------------------------------------------------------------------------------

    @precondition(lambda self: not self.stopped)
    @rule(
        category=st.sampled_from(APPEND_CATEGORIES),
        size=st.one_of(st.integers(0, 60), st.integers(257, 700)),
        advance=st.floats(0, SECONDS_PER_DAY),
    )
    def append(self, category: str, size: int, advance: float) -> None:
        """Append: offset = previous end; rolls as the model predicts."""
        self._append(category, size, advance)

    @precondition(lambda self: not self.stopped)
    @rule(batch=append_batches(min_size=2))
    def append_many(self, batch: list[tuple[str, int, float]]) -> None:
        """Several appends in a row, so segments fill several index blocks."""
        for category, size, advance in batch:
            self._append(category, size, advance)

    @precondition(lambda self: not self.stopped)
    @rule(batch=append_batches(min_size=1), then=st.sampled_from(["sync", "append", "close"]))
    def append_deferred(self, batch: list[tuple[str, int, float]], then: str) -> None:
        """Deferred appends get the offsets plain ones would, are invisible to readers, and become
        readable (all of them) once sync(), a durable append or close() made them durable."""
        first = self.end
        for category, size, advance in batch:
            expected = self._next_record(category, size, advance)
            payload, timestamp = expected.record.payload, expected.record.timestamp
            assert self.writer.append(category, payload, timestamp, deferred=True) == expected.record.offset
            self._adopt(expected)
        assert self.writer.end_offset == self.end
        with LogReader(self.path, timeout=0) as other:
            other.seek(min(first, other.end_offset))
            assert [r.offset for r in other if r.offset >= first] == [], "a deferred record was visible"
        if then == "sync":
            assert self.writer.sync() == self.end
        elif then == "append":
            self._append(APPEND_CATEGORIES[0], 10, 1.0)
        else:
            self.writer.close()
            self.writer = self._open_writer()

    @precondition(lambda self: not self.stopped)
    @rule(category=st.sampled_from(APPEND_CATEGORIES), extra=st.integers(0, 300))
    def roll(self, category: str, extra: int) -> None:
        """A record too big for the rest of a non-empty active segment starts a new segment at its offset."""
        room = self.segment_bytes - (self.end - self.bases[-1])
        rolls = self.end > self.bases[-1]
        record = self._append(category, max(room, 0) + extra, 3600.0)
        if rolls:
            assert self.bases[-1] == record.offset

    @rule(
        segment_bytes=st.sampled_from(SEGMENT_BYTES),
        interval=st.sampled_from(INDEX_INTERVALS),
        damage=st.sampled_from(["none", "delete every index", "flip a bit in one index"]),
        data=st.data(),
    )
    def reopen_writer(self, segment_bytes: int, interval: int, damage: str, data: st.DataObject) -> None:
        """Close and reopen the writer (new settings; optionally with indexes deleted or damaged while it
        was closed): nothing readers see changes. After a failed append, the new writer recovers the bus:
        the failed record is gone or at the end (adopted then)."""
        self.writer.close()  # never raises, stopped or not
        indexes = sorted(n for n in os.listdir(self.path) if n.endswith((".index", ".catindex")))
        # (after a failed roll an index may be left empty, for the reopen to repair: no bit to flip there)
        flippable = [n for n in indexes if os.path.getsize(os.path.join(self.path, n)) > 0]
        if damage == "delete every index":
            for name in indexes:
                os.unlink(os.path.join(self.path, name))
        elif damage == "flip a bit in one index" and flippable:
            target = os.path.join(self.path, data.draw(st.sampled_from(flippable)))
            with open(target, "r+b") as file:
                content = bytearray(file.read())
                bit = data.draw(st.integers(0, len(content) * 8 - 1))
                content[bit // 8] ^= 1 << (bit % 8)
                file.seek(0)
                file.write(content)
        self.segment_bytes, self.interval = segment_bytes, interval
        self.writer = self._open_writer()
        if self.pending is not None:
            self._adopt_what_recovery_kept(self.pending)
        self.failure = self.pending = None
        assert self.writer.end_offset == self.end

    def _adopt_what_recovery_kept(self, pending: Pending) -> None:
        with LogReader(self.path) as fresh:
            got = list(fresh)
        on_disk = sorted(b for n in os.listdir(self.path) if (b := parse_segment_name(n)) is not None)
        if len(got) == len(self.records) + 1:
            self._check_records(got[-1:], [pending.record])  # kept: exactly where the model expected it
            self._adopt(pending)
            event("reopen after a failed append: its record was kept")
        else:
            event("reopen after a failed append: its record is gone")
            assert len(got) == len(self.records), "recovery lost or invented records"
            if pending.rolls and on_disk == [*self.bases, pending.record.offset]:
                self.bases.append(pending.record.offset)  # the segment the failed roll started, left empty
        assert on_disk == self.bases

    @precondition(lambda self: not self.stopped)
    @rule(
        category=st.sampled_from(APPEND_CATEGORIES),
        size=st.one_of(st.integers(0, 60), st.integers(257, 2000)),
        number=FAULT_CALL_NUMBERS,
        error=st.sampled_from(SWEPT_ERRORS),
    )
    def failing_append(self, category: str, size: int, number: int, error: int) -> None:
        """The append's Nth call through the I/O seam fails (disk full, I/O error, too many files):
        BusWriteError with that errno, and the writer stops."""
        self._faulted_append(category, size, Fault("any", number, error))

    @precondition(lambda self: not self.stopped)
    @rule(
        category=st.sampled_from(APPEND_CATEGORIES),
        size=st.one_of(st.integers(0, 60), st.integers(257, 2000)),
        number=FAULT_CALL_NUMBERS,
        interrupt=st.sampled_from(INTERRUPTS),
    )
    def interrupted_append(
        self, category: str, size: int, number: int, interrupt: type[BaseException]
    ) -> None:
        """A signal handler raises during the append's Nth seam call: the exception propagates unchanged,
        and the writer stops."""
        self._faulted_append(category, size, Fault("any", number, interrupt))

    @precondition(lambda self: self.stopped)
    @rule(category=st.sampled_from(APPEND_CATEGORIES))
    def stopped_writer_refuses(self, category: str) -> None:
        """Every call of a stopped writer raises BusClosedError carrying the failure, and changes nothing."""
        assert self.failure is not None
        assert same_failure(self.writer.failure, self.failure)
        calls = [
            lambda: self.writer.append(category, b"refused", self.clock),
            lambda: self.writer.apply_retention(max_bytes=0),
            self.writer.repair_indexes,
            lambda: self.writer.end_offset,
            lambda: self.writer.begin_offset,
        ]
        for call in calls:
            with pytest.raises(BusClosedError) as refused:
                call()
            assert same_failure(refused.value.failure, self.failure)

    @precondition(lambda self: not self.stopped)
    @rule(max_bytes=st.integers(0, 10_000))
    def retention_by_bytes(self, max_bytes: int) -> None:
        """Oldest closed segments go while the bus exceeds max_bytes; never the active one."""
        doomed = []
        total = self.end - self.begin
        for base, following in itertools.pairwise(self.bases):
            if total <= max_bytes:
                break
            doomed.append(base)
            total -= following - base
        deleted = self.writer.apply_retention(max_bytes=max_bytes)
        assert deleted == [segment_name(b) for b in doomed]
        self.bases = self.bases[len(doomed) :]
        self._drop_below(self.begin)

    @precondition(lambda self: not self.stopped)
    @rule(max_age_days=st.floats(0.1, 5), ahead_days=st.floats(0, 5))
    def retention_by_age(self, max_age_days: float, ahead_days: float) -> None:
        """Closed segments whose newest record is older than max_age_days at ``now`` go, oldest first."""
        now = self.clock + ahead_days * SECONDS_PER_DAY
        cutoff = now - max_age_days * SECONDS_PER_DAY
        doomed = []
        for base, following in itertools.pairwise(self.bases):
            newest = [m.timestamp for m in self.records if base <= m.offset < following]
            if not newest or newest[-1] >= cutoff:
                break
            doomed.append(base)
        deleted = self.writer.apply_retention(max_age_days=max_age_days, now=now)
        assert deleted == [segment_name(b) for b in doomed]
        self.bases = self.bases[len(doomed) :]
        self._drop_below(self.begin)

    # -- reader rules -----------------------------------------------------------------------------------------

    @rule(data=st.data())
    def seek(self, data: st.DataObject) -> None:
        """seek(p) lands on the first record >= p (the end if none); outside [begin, end] it raises."""
        choices = [self.begin, self.end, self.end + 1, self.end + 10_000]
        if self.begin > 0:
            choices += [self.begin - 1, 0]
        for m in self.records:
            choices += [m.offset, m.offset + 1, m.offset + m.size - 1]
        target = data.draw(st.one_of(st.sampled_from(choices), st.integers(self.begin, self.end)))
        if not self.begin <= target <= self.end:
            with pytest.raises(OffsetOutOfRangeError) as raised:
                self.reader.seek(target)
            error = raised.value
            assert isinstance(error, IndexError)
            assert (error.offset, error.begin, error.end) == (target, self.begin, self.end)
            assert f"[{self.begin}, {self.end}]" in str(error)
            assert self.reader.position == self.position
            return
        self.reader.seek(target)
        self.position = next((m.offset for m in self.records if m.offset >= target), self.end)

    @rule()
    def seek_to_beginning(self) -> None:
        """seek_to_beginning lands on the oldest retained record."""
        self.reader.seek_to_beginning()
        self.position = self.begin

    @rule(category=st.sampled_from(LOOKUP_CATEGORIES))
    def find_next(self, category: str) -> None:
        """find_next = the model's first record of the category >= position; None leaves the position."""
        expected = next((m for m in self._from(self.position) if m.category == category), None)
        found = self.reader.find_next(category)
        if expected is None:
            assert found is None
        else:
            assert found is not None
            self._check_records([found], [expected])
            self.position = expected.offset + expected.size

    @rule(count=st.integers(1, 5))
    def read_some(self, count: int) -> None:
        """Iterating part of the way yields the next records and moves the position past them."""
        self.reader.set_timeout(0)
        got = list(itertools.islice(self.reader, count))
        expected = self._from(self.position)[:count]
        self._check_records(got, expected)
        if expected:
            self.position = expected[-1].offset + expected[-1].size

    @rule()
    def iterate_to_end(self) -> None:
        """Iterating with timeout 0 yields every record from the position, then stops at the end."""
        self.reader.set_timeout(0)
        self._check_records(list(self.reader), self._from(self.position))
        self.position = self.end

    @precondition(lambda self: self.end > 0)
    @rule()
    def reopen_reader(self) -> None:
        """A reopened reader starts at the oldest retained record."""
        self.reader.close()
        self.reader = LogReader(self.path).open()
        self.position = self.begin

    # -- invariants --------------------------------------------------------------------------------------------

    @invariant()
    def ends_match(self) -> None:
        """Writer and reader agree with the model on begin, end and the reader's position
        (a stopped writer refuses to tell: BusClosedError)."""
        if self.stopped:
            with pytest.raises(BusClosedError):
                _ = self.writer.end_offset
        else:
            assert (self.writer.begin_offset, self.writer.end_offset) == (self.begin, self.end)
        assert (self.reader.begin_offset, self.reader.end_offset) == (self.begin, self.end)
        assert self.reader.position == self.position

    @invariant()
    def segments_match(self) -> None:
        """The segment files are exactly the model's retained segments (while a failed roll's writer is
        stopped, the segment it started may still be there)."""
        on_disk = sorted(b for n in os.listdir(self.path) if (b := parse_segment_name(n)) is not None)
        if self.pending is not None and self.pending.rolls and on_disk == [*self.bases, self.end]:
            return
        assert on_disk == self.bases

    @invariant()
    def whole_bus_matches(self) -> None:
        """A fresh reader reads the model (never a failed append's record while its writer lives); offsets
        strictly increase and each record ends where the next starts."""
        with LogReader(self.path) as fresh:
            got = list(fresh)
        self._check_records(got, self.records)
        for record, following in itertools.pairwise(got):
            assert record.offset < following.offset
            assert record.next_offset == following.offset


LogMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLogStateMachine = LogMachine.TestCase

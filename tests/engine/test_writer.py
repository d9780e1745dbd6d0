"""LogWriter on real files and real processes: offsets, rolls, SIGKILL mid-stream, the writer lock."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers.bus import read_all, segment_bases
from helpers.processes import PROCESS_TIMEOUT, run_python, spawn_python

from filelog_bus import LogWriter, check, fs
from filelog_bus.errors import (
    BusClosedError,
    BusIOError,
    BusLockedError,
    BusWriteError,
    ConfigError,
    InvalidRecordError,
    NotABusError,
)
from filelog_bus.layout import segment_name
from filelog_bus.record import encode_record

# -- appending, rolling, reopening ---------------------------------------------------------------------------


def test_offsets_are_byte_positions_and_survive_reopen(bus_dir: Path) -> None:
    """Each offset is the previous offset + the previous record's framed size, also across a reopen."""
    expected_end = 0
    with LogWriter(bus_dir) as writer:
        assert (writer.begin_offset, writer.end_offset) == (0, 0)
        for i in range(5):
            assert writer.append("c", b"x" * i, float(i)) == expected_end
            expected_end += len(encode_record("c", float(i), b"x" * i))
        assert writer.end_offset == expected_end
    with LogWriter(bus_dir) as writer:
        assert writer.end_offset == expected_end
        assert writer.append("d", b"after reopen", 9.0) == expected_end
    records = read_all(bus_dir)
    assert [r.payload for r in records] == [b"x" * i for i in range(5)] + [b"after reopen"]
    assert records[-1].offset == expected_end


def test_segments_roll_at_segment_bytes_and_are_named_by_first_offset(bus_dir: Path) -> None:
    """A record that would take a non-empty segment past segment_bytes starts a segment named by its offset."""
    segment_bytes = 1024
    offsets = []
    with LogWriter(bus_dir, segment_bytes=segment_bytes, index_interval_bytes=64) as writer:
        for i in range(40):
            offsets.append(writer.append("c", b"p" * (i * 7 % 150), float(i)))
        end = writer.end_offset
    bases = segment_bases(bus_dir)
    assert len(bases) > 3 and bases[0] == 0
    assert set(bases) <= set(offsets)
    for base, following in zip(bases, [*bases[1:], end], strict=True):
        size = following - base
        assert 0 < size <= segment_bytes
        data = (bus_dir / segment_name(base)).read_bytes()
        # file header + the records, then nothing (closed) or only preallocated zeros (active)
        assert len(data) == 32 + size if following != end else not any(data[32 + size :])
        assert (bus_dir / segment_name(base).replace(".log", ".index")).exists()
        assert (bus_dir / segment_name(base).replace(".log", ".catindex")).exists()
    # Every record fits in its segment: no record straddles a boundary.
    for offset, following in zip(offsets, [*offsets[1:], end], strict=True):
        containing = max(b for b in bases if b <= offset)
        assert following <= ([b for b in bases if b > containing] or [end])[0]


def test_record_bigger_than_segment_bytes_gets_a_segment_of_its_own(bus_dir: Path) -> None:
    """An oversized record (still under max_record_bytes) is written whole in a new segment."""
    with LogWriter(bus_dir, segment_bytes=1024) as writer:
        writer.append("small", b"s", 1.0)
        big = writer.append("big", b"B" * 5000, 2.0)
        after = writer.append("small", b"t", 3.0)
    assert segment_bases(bus_dir) == [0, big, after]
    assert [r.payload for r in read_all(bus_dir)] == [b"s", b"B" * 5000, b"t"]


def test_append_without_timestamp_uses_the_current_time(bus_dir: Path) -> None:
    """timestamp=None stores the wall-clock time of the append (UTC epoch seconds)."""
    with LogWriter(bus_dir) as writer:
        before = time.time()
        writer.append("c", b"now")
        after = time.time()
    (record,) = read_all(bus_dir)
    assert before <= record.timestamp <= after


# Went wrong: an unhashable category raised TypeError instead of InvalidRecordError.
def test_refused_append_writes_nothing(bus_dir: Path) -> None:
    """A record over max_record_bytes or with a bad field is refused before any byte is written."""
    with LogWriter(bus_dir, max_record_bytes=200) as writer:
        writer.append("c", b"ok", 1.0)
        end = writer.end_offset
        for bad in [
            lambda: writer.append("c", b"x" * 201, 1.0),
            lambda: writer.append("c", b"x" * 190, 1.0),  # payload fits, framed record does not
            lambda: writer.append("", b"x", 1.0),
            lambda: writer.append("c", "text", 1.0),  # type: ignore[arg-type]
            lambda: writer.append("c", b"x", float("nan")),
            lambda: writer.append(["c"], b"x", 1.0),  # type: ignore[arg-type]  # unhashable: not a TypeError
            lambda: writer.append({"c": 1}, b"x", 1.0),  # type: ignore[arg-type]
        ]:
            with pytest.raises(InvalidRecordError):
                bad()
            assert writer.end_offset == end
        assert writer.append("c", b"next", 2.0) == end
    data = (bus_dir / segment_name(0)).read_bytes()
    assert not any(data[32 + end + len(encode_record("c", 2.0, b"next")) :]), "only preallocated zeros follow"


def test_closed_writer_raises_and_close_is_idempotent(bus_dir: Path) -> None:
    """After close, append and the offsets raise BusClosedError; a second close is harmless."""
    writer = LogWriter(bus_dir)
    with pytest.raises(BusClosedError):
        writer.append("c", b"never opened")
    writer.open()
    writer.append("c", b"x", 1.0)
    writer.close()
    writer.close()
    with pytest.raises(BusClosedError):
        writer.append("c", b"y", 1.0)
    with pytest.raises(BusClosedError):
        _ = writer.end_offset


def test_bus_directory_rules(tmp_path: Path) -> None:
    """The writer creates a missing bus directory but not its parent, and refuses a foreign directory."""
    with pytest.raises(NotABusError):
        LogWriter(tmp_path / "missing-parent" / "bus").open()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(NotABusError):
        LogWriter(foreign).open()
    assert (foreign / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError):
        LogWriter(tmp_path / "bus", segment_bytes=10)


# -- SIGKILL mid-stream ---------------------------------------------------------------------------------------

KILLED_WRITER = """
    import sys
    from filelog_bus import LogWriter

    path, durability = sys.argv[1], sys.argv[2]
    with LogWriter(path, durability=durability, segment_bytes=4096, index_interval_bytes=256) as writer:
        i = 0
        while True:
            offset = writer.append("c%d" % (i % 3), b"%08d" % i + b"x" * (i * 37 % 700), float(i))
            print(i, offset, flush=True)  # printed only once append has returned: acknowledged
            i += 1
"""


@pytest.mark.parametrize(
    ("durability", "kill_after"), [("always", 25), ("always", 140), ("always", 400), ("never", 150)]
)
def test_sigkilled_writer_keeps_every_acknowledged_record(
    bus_dir: Path, durability: str, kill_after: int
) -> None:
    """SIGKILL mid-stream, reopen: acknowledged records all there once, in order, + at most the one in flight."""
    child = spawn_python(KILLED_WRITER, str(bus_dir), durability)
    assert child.stdout is not None
    lines = []
    while len(lines) < kill_after:
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else "writer died"
        lines.append(line)
    child.send_signal(signal.SIGKILL)
    # Read the rest through the same buffered stream: communicate() would skip what readline() buffered.
    rest = child.stdout.read()
    assert child.wait(timeout=PROCESS_TIMEOUT) == -signal.SIGKILL
    if child.stderr is not None:
        child.stderr.close()
    lines += rest.splitlines(keepends=True)
    acknowledged = [tuple(map(int, line.split())) for line in lines if line.endswith("\n")]

    with LogWriter(bus_dir, segment_bytes=4096, index_interval_bytes=256) as writer:
        records = read_all(bus_dir)
        assert len(acknowledged) <= len(records) <= len(acknowledged) + 1
        assert [(int(r.payload[:8]), r.offset) for r in records[: len(acknowledged)]] == acknowledged
        sequence = [int(r.payload[:8]) for r in records]
        assert sequence == list(range(len(records)))
        assert writer.end_offset == records[-1].next_offset
        after = writer.append("after", b"restart", 0.0)
    assert after == records[-1].next_offset
    assert len(segment_bases(bus_dir)) > 1
    assert read_all(bus_dir)[-1].payload == b"restart"


# -- the writer lock ----------------------------------------------------------------------------------------

LOCK_HOLDER = """
    import sys
    from filelog_bus import LogWriter

    writer = LogWriter(sys.argv[1]).open()
    writer.append("held", b"by the first writer", 1.0)
    print("locked", flush=True)
    sys.stdin.readline()
    writer.close()
    print("released", flush=True)
"""

TRY_LOCK = """
    import sys
    from filelog_bus import LogWriter
    from filelog_bus.errors import BusLockedError

    try:
        LogWriter(sys.argv[1]).open().close()
    except BusLockedError:
        print("refused")
    else:
        print("opened")
"""


def start_holder(bus_dir: Path) -> subprocess.Popen[str]:
    holder = spawn_python(LOCK_HOLDER, str(bus_dir), stdin=subprocess.PIPE)
    assert holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    return holder


def let_the_holder_go(holder: subprocess.Popen[str]) -> str:
    assert holder.stdin is not None
    holder.stdin.write("go\n")
    holder.stdin.flush()
    out, _ = holder.communicate(timeout=PROCESS_TIMEOUT)
    return out


def test_second_writer_in_another_process_is_refused(bus_dir: Path) -> None:
    """While a process holds the bus, a writer elsewhere gets BusLockedError naming the holder's pid."""
    holder = start_holder(bus_dir)
    try:
        with pytest.raises(BusLockedError, match=rf"pid {holder.pid}\b"):
            LogWriter(bus_dir).open()
        with pytest.raises(BusLockedError):
            LogWriter(bus_dir, lock_timeout=0.2).open()
        # Readers need no lock.
        assert [r.payload for r in read_all(bus_dir)] == [b"by the first writer"]
    finally:
        assert let_the_holder_go(holder) == "released\n"
    with LogWriter(bus_dir) as writer:
        assert writer.begin_offset == 0 and writer.end_offset > 0


def test_second_writer_in_the_same_process_is_refused_and_the_first_keeps_the_lock(bus_dir: Path) -> None:
    """Two LogWriters in one process: the second is refused, and its failed attempt does not free the lock."""
    first = LogWriter(bus_dir).open()
    try:
        with pytest.raises(BusLockedError):
            LogWriter(bus_dir).open()
        result = run_python(TRY_LOCK, str(bus_dir), timeout=PROCESS_TIMEOUT)
        assert result.stdout == "refused\n", result.stderr
        first.append("c", b"still the writer", 1.0)
    finally:
        first.close()
    result = run_python(TRY_LOCK, str(bus_dir), timeout=PROCESS_TIMEOUT)
    assert result.stdout == "opened\n", result.stderr


def test_lock_timeout_waits_for_the_first_writer_to_exit(bus_dir: Path) -> None:
    """With lock_timeout, a second writer waits while the first holds the lock and opens once it exits."""
    holder = start_holder(bus_dir)
    with pytest.raises(BusLockedError):
        LogWriter(bus_dir).open()  # the lock is held right now
    outputs: list[str] = []
    # Let the holder go shortly after this thread has started waiting (a sequencing delay, not an assertion).
    releaser = threading.Timer(0.3, lambda: outputs.append(let_the_holder_go(holder)))
    releaser.start()
    try:
        with LogWriter(bus_dir, lock_timeout=PROCESS_TIMEOUT) as writer:
            offset = writer.append("second", b"after the wait", 2.0)
    finally:
        releaser.join()
    assert outputs == ["released\n"] and holder.returncode == 0
    assert [r.payload for r in read_all(bus_dir)] == [b"by the first writer", b"after the wait"]
    assert read_all(bus_dir)[-1].offset == offset


def test_lock_is_released_when_the_holder_is_killed(bus_dir: Path) -> None:
    """A SIGKILLed writer leaves no stale lock: the next writer opens at once."""
    holder = start_holder(bus_dir)
    holder.kill()
    holder.communicate(timeout=PROCESS_TIMEOUT)
    with LogWriter(bus_dir) as writer:
        assert writer.append("c", b"next", 2.0) > 0


def _failing_read_opens(monkeypatch: pytest.MonkeyPatch, suffix: str, error: int) -> None:
    """Make every read-only open of a bus file ending in ``suffix`` fail, through the engine's I/O seam."""
    real_open = fs.open

    def open_failing(path: str, flags: int, mode: int = 0o666) -> int:
        if str(path).endswith(suffix) and not flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(fs, "open", open_failing)


# Went wrong: a roll whose category index could not be read wrote no summary.
def test_a_roll_whose_category_index_cannot_be_read_still_writes_the_summary(
    bus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roll whose category index cannot be read (EIO, EMFILE) still writes the category summary, so
    verify reports the bus healthy."""
    with LogWriter(bus_dir, segment_bytes=1024, index_interval_bytes=64) as writer:
        writer.append("c", b"x" * 300)
        _failing_read_opens(monkeypatch, ".catindex", errno.EIO)
        while len(segment_bases(bus_dir)) < 2:
            writer.append("c", b"x" * 300)
        monkeypatch.undo()
        assert writer.failure is None
        assert check.verify_bus(str(bus_dir)).healthy


# Went wrong: retention by age raised a bare OSError when a segment's timestamps could not be read.
def test_retention_by_age_that_cannot_read_timestamps_raises_a_typed_error_and_goes_on(
    bus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention by age that cannot read a segment's timestamps raises a typed error, and the writer goes on."""
    with LogWriter(bus_dir, segment_bytes=1024) as writer:
        for i in range(20):
            writer.append("c", b"x" * 300, float(i))
        _failing_read_opens(monkeypatch, ".log", errno.EMFILE)
        with pytest.raises(BusIOError) as raised:
            writer.apply_retention(max_age_days=1, now=10 * 86400.0)
        monkeypatch.undo()
        assert raised.value.errno == errno.EMFILE and raised.value.path
        assert writer.failure is None  # nothing was deleted: the writer goes on
        assert writer.apply_retention(max_age_days=1, now=10 * 86400.0)


# Went wrong: open() on a stopped writer returned it still stopped.
def test_open_on_a_stopped_writer_recovers_the_bus(bus_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open() on a stopped writer recovers the bus and returns a usable writer."""
    writer = LogWriter(bus_dir).open()
    first = writer.append("c", b"before")
    monkeypatch.setattr(fs, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "injected")))
    with pytest.raises(BusWriteError):
        writer.append("c", b"lost")
    monkeypatch.undo()
    assert writer.failure is not None
    writer.open()
    assert writer.failure is None
    second = writer.append("c", b"after")
    writer.close()
    assert [(r.offset, r.payload) for r in read_all(bus_dir)] == [(first, b"before"), (second, b"after")]


# Went wrong: repair_indexes() rewrote a healthy bus's indexes while entries and deferred records waited in memory.
def test_repair_indexes_of_a_healthy_bus_rewrites_nothing_while_entries_and_deferred_records_wait(
    bus_dir: Path,
) -> None:
    """The active segment's index entries (and deferred records) wait in memory a while: a repair
    compares what the files hold once everything appended is written, so a healthy bus needs none,
    and a deferred record not written yet is no "damage"."""
    with LogWriter(bus_dir) as writer:
        offsets = [writer.append("c", bytes(300), 1.0 + i) for i in range(40)]
        assert writer.repair_indexes() == []
        offsets.append(writer.append("d", b"deferred", 50.0, deferred=True))
        assert writer.repair_indexes() == []
        writer.sync()
    assert [r.offset for r in read_all(bus_dir)] == offsets
    assert check.verify_bus(str(bus_dir)).healthy

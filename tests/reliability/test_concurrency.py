"""Concurrency between real processes: the writer lock, and readers following a live writer.

* Writers contending for one bus take turns (lock_timeout), never interleave bytes,
  and a waiter whose timeout expires gets BusLockedError naming the holder.
* A writer SIGKILLed while holding the lock does not leave the bus locked, even for
  a writer already waiting for it.
* Three reader processes following a writer that rolls segments and applies
  retention see every record exactly once, in order; a reader that falls behind
  retention gets RecordsExpiredError, never a silent gap.

No timing assertions: processes are sequenced through their output and stdin.
"""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import pytest
from helpers.bus import (
    CHILD_TIMEOUT,
    LOCK_ATTEMPT,
    Expected,
    LineReader,
    assert_contiguous,
    hold_bus,
    kill_and_collect,
    read_all,
    release,
    segment_base,
    segment_paths,
)
from helpers.processes import run_python, spawn_python

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import BusLockedError, RecordsExpiredError
from filelog_bus.layout import LOCK_NAME

# -- the writer lock -----------------------------------------------------------------------------------------

#: Opens the bus `sessions` times (waiting up to 60 s for the lock), appending `per_session` records
#: each time, and prints "session <n> <end before> <end after> <offsets...>".
CONTENDER = """
import sys
from filelog_bus import LogWriter

path, name, sessions, per_session = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for session in range(sessions):
    with LogWriter(path, lock_timeout=60, segment_bytes=2048, index_interval_bytes=64) as writer:
        start = writer.end_offset
        offsets = [
            writer.append(name, f"{name}/{session}/{i}/".encode() * (1 + i % 5), float(i))
            for i in range(per_session)
        ]
        print("session", session, start, writer.end_offset, *offsets, flush=True)
"""


def test_contending_writer_processes_take_turns_without_interleaving(bus_dir: Path) -> None:
    names, sessions, per_session = ["w0", "w1", "w2", "w3"], 4, 15
    LogWriter(bus_dir).open().close()
    processes = [
        spawn_python(CONTENDER, str(bus_dir), name, str(sessions), str(per_session)) for name in names
    ]
    outputs = {}
    for name, process in zip(names, processes, strict=True):
        out, err = process.communicate(timeout=CHILD_TIMEOUT)
        assert process.returncode == 0, f"{name}: {err}"
        outputs[name] = out

    records = read_all(bus_dir)  # every byte decodes: no interleaved writes
    assert_contiguous(records)
    assert len(records) == len(names) * sessions * per_session
    spans = []
    for name, out in outputs.items():
        mine = [r for r in records if r.category == name]
        assert [r.payload.split(b"/")[1:3] for r in mine] == [
            [str(s).encode(), str(i).encode()] for s in range(sessions) for i in range(per_session)
        ], f"{name}'s records are missing, duplicated or out of order"
        for line in out.splitlines():
            _, session, start, end, *offsets = line.split()
            session_records = [r for r in mine if r.payload.split(b"/")[1] == session.encode()]
            assert [r.offset for r in session_records] == [int(o) for o in offsets]
            assert (session_records[0].offset, session_records[-1].next_offset) == (int(start), int(end))
            spans.append((int(start), int(end), name))
    spans.sort()
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        assert end == start, f"sessions of {name} and {other} overlap or leave a gap: not serialized"


#: Waits for the lock (up to 60 s), then appends one record and closes.
PATIENT_WRITER = """
import sys
from filelog_bus import LogWriter

print("trying", flush=True)
with LogWriter(sys.argv[1], lock_timeout=60) as writer:
    print("appended", writer.append("patient", b"after the holder"), flush=True)
"""


def test_waiter_whose_lock_timeout_expires_gets_a_clear_bus_locked_error(bus_dir: Path) -> None:
    holder, lines = hold_bus(bus_dir)
    try:
        for timeout in ("0", "0.3"):
            result = run_python(LOCK_ATTEMPT, str(bus_dir), timeout)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("BusLockedError"), result.stdout
            message = result.stdout
            assert f"pid {holder.pid}" in message, message
            assert str(bus_dir / LOCK_NAME) in message and "lock_timeout" in message, message
        with pytest.raises(BusLockedError, match=f"pid {holder.pid}"):
            LogWriter(bus_dir, lock_timeout=0.1).open()  # in this process too
    finally:
        release(holder, lines)
    assert holder.returncode == 0
    assert len(read_all(bus_dir)) == 3


def test_a_patient_writer_gets_the_lock_when_the_holder_closes(bus_dir: Path) -> None:
    holder, lines = hold_bus(bus_dir)
    patient = spawn_python(PATIENT_WRITER, str(bus_dir), text=False)
    patient_lines = LineReader(patient)
    assert patient_lines.readline() == "trying\n"
    assert holder.stdin is not None
    holder.stdin.write(b"\n")  # release: the holder closes
    holder.stdin.close()
    assert lines.rest() == "closed\n"
    assert patient_lines.readline().startswith("appended")
    assert patient.wait(timeout=CHILD_TIMEOUT) == 0 and holder.wait(timeout=CHILD_TIMEOUT) == 0
    records = read_all(bus_dir)
    assert [r.category for r in records[3:]] == ["patient"]
    assert all(Expected("holder", seq).matches(r) for seq, r in enumerate(records[:3]))


def test_writer_killed_while_holding_the_lock_does_not_leave_the_bus_locked(bus_dir: Path) -> None:
    holder, lines = hold_bus(bus_dir, count=5)
    patient = spawn_python(PATIENT_WRITER, str(bus_dir), text=False)
    patient_lines = LineReader(patient)
    assert patient_lines.readline() == "trying\n"
    kill_and_collect(holder, lines)  # SIGKILL: no close, no unlock by the holder
    assert patient_lines.readline().startswith("appended"), "the waiting writer never got the lock"
    assert patient.wait(timeout=CHILD_TIMEOUT) == 0
    with LogWriter(bus_dir, lock_timeout=0) as writer:  # and nobody holds it now
        writer.append("after", b"kill")
    records = read_all(bus_dir)
    assert [r.category for r in records[5:]] == ["patient", "after"]
    assert all(Expected("holder", seq).matches(r) for seq, r in enumerate(records[:5]))


# -- readers following a live writer -------------------------------------------------------------------------

#: Appends `per_phase` records per phase (the last of each is category "mark"), applies retention
#: with a byte budget and prints "phase <n> <segments deleted so far> <begin offset>"; waits for a
#: line on stdin before each phase and before the final "end" record.
PHASED_WRITER = """
import sys
from filelog_bus import LogWriter

path, phases, per_phase, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
writer = LogWriter(path, segment_bytes=2048, index_interval_bytes=256).open()
seq = deleted = 0
for phase in range(phases):
    sys.stdin.readline()
    for i in range(per_phase):
        category = "mark" if i == per_phase - 1 else ("users", "groups")[seq % 2]
        writer.append(category, f"{seq}/{phase}/".encode() + b"x" * (seq % 90), float(seq))
        seq += 1
    deleted += len(writer.apply_retention(max_bytes=budget))
    print("phase", phase, deleted, writer.begin_offset, flush=True)
sys.stdin.readline()
writer.append("end", f"{seq}/end/".encode(), float(seq))
writer.close()
print("done", seq + 1, deleted, flush=True)
"""

#: Follows the bus from offset 0 (started before the bus exists), checking that offsets and
#: sequence numbers follow each other; prints "mark <phase>" at each mark (and, at the mark of
#: phase `pause_at`, waits for a line on stdin), "end <count>" at the end, or what went wrong.
FOLLOWER = """
import sys
from filelog_bus import LogReader
from filelog_bus.errors import RecordsExpiredError

path, pause_at = sys.argv[1], sys.argv[2]
reader = LogReader(path, missing_ok=True, timeout=60.0).open()
print("ready", reader.position, flush=True)
position = seq = 0
try:
    for record in reader:
        if record.offset != position:
            sys.exit(print("GAP", position, record.offset, flush=True) or 1)
        fields = record.payload.split(b"/")
        if int(fields[0]) != seq:
            sys.exit(print("SEQUENCE", seq, int(fields[0]), flush=True) or 1)
        position, seq = record.next_offset, seq + 1
        if record.category == "mark":
            print("mark", fields[1].decode(), flush=True)
            if fields[1].decode() == pause_at:
                sys.stdin.readline()
        elif record.category == "end":
            sys.exit(print("end", seq, flush=True) or 0)
except RecordsExpiredError as exc:
    sys.exit(print("expired", seq, position, exc.begin, flush=True) or 3)
print("timeout", seq, flush=True)
sys.exit(2)
"""


def test_three_readers_follow_a_rolling_writer_with_retention_and_see_everything_once(bus_dir: Path) -> None:
    """Plus a fourth reader that pauses and falls behind retention: RecordsExpiredError, no gap."""
    phases, per_phase = 6, 150
    budget = 30_000  # about 2.5 phases: retention never reaches a reader that has passed the previous mark
    followers = [
        spawn_python(FOLLOWER, str(bus_dir), "-", text=False, stdin=subprocess.PIPE) for _ in range(3)
    ]
    laggard = spawn_python(FOLLOWER, str(bus_dir), "0", text=False, stdin=subprocess.PIPE)
    readers = [LineReader(p) for p in [*followers, laggard]]
    for lines in readers:
        assert lines.readline() == "ready 0\n"
    writer = spawn_python(
        PHASED_WRITER,
        str(bus_dir),
        str(phases),
        str(per_phase),
        str(budget),
        stdin=subprocess.PIPE,
        text=False,
    )
    writer_lines = LineReader(writer)
    assert writer.stdin is not None and laggard.stdin is not None
    try:
        for phase in range(phases):
            writer.stdin.write(b"\n")
            writer.stdin.flush()
            assert writer_lines.readline().startswith(f"phase {phase} ")
            for lines in readers[:3] if phase else readers:
                line = lines.readline()
                assert line == f"mark {phase}\n", f"reader {readers.index(lines)}: {line!r}"
        writer.stdin.write(b"\n")
        writer.stdin.close()
        _, total, deleted = writer_lines.readline().split()
        assert writer.wait(timeout=CHILD_TIMEOUT) == 0
        assert int(deleted) > 0, "retention deleted nothing: the test did not exercise it"
        for lines in readers[:3]:
            assert lines.readline() == f"end {total}\n"
        for process in followers:
            assert process.wait(timeout=CHILD_TIMEOUT) == 0

        laggard.stdin.write(b"\n")  # resume the reader paused since mark 0
        laggard.stdin.close()
        outcome = readers[3].rest().split()
        assert outcome[0] == "expired", f"the paused reader did not get RecordsExpiredError: {outcome}"
        _, _, position, begin = outcome
        assert int(begin) > int(position), "RecordsExpiredError although the records were still there"
        assert laggard.wait(timeout=CHILD_TIMEOUT) == 3
    finally:
        for process in [*followers, laggard, writer]:
            if process.poll() is None:
                process.kill()
                process.wait()
    records = read_all(bus_dir)
    assert_contiguous(records, begin=records[0].offset)
    assert records[-1].category == "end"


@pytest.mark.parametrize(
    ("segment_bytes", "count"),
    [(2048, 120), (600_000, 12_000)],
    ids=["segment-in-one-batch", "segment-larger-than-a-read"],
)
def test_a_reader_paused_inside_a_deleted_segment_finishes_it_then_gets_records_expired(
    bus_dir: Path, segment_bytes: int, count: int
) -> None:
    """Retention deletes the segment a reader is in: it reads on from its open file, then stops loudly."""
    with LogWriter(bus_dir, segment_bytes=segment_bytes, durability="never") as writer:
        for i in range(count):
            writer.append("users", f"{i}/".encode() + b"y" * 40, float(i))
    reader = LogReader(bus_dir).open()
    try:
        seen = [next(iter(reader))]
        first_segment_end = segment_base(segment_paths(bus_dir)[1])
        with LogWriter(bus_dir, segment_bytes=segment_bytes, durability="never") as writer:
            for i in range(count, 3 * count):
                writer.append("users", f"{i}/".encode() + b"y" * 40, float(i))
            assert writer.apply_retention(max_bytes=segment_bytes)
            begin = writer.begin_offset
        assert not (bus_dir / "00000000000000000000.log").exists()
        with pytest.raises(RecordsExpiredError) as failure:
            seen.extend(reader)
        assert [int(r.payload.split(b"/")[0]) for r in seen] == list(range(len(seen))), "a record was skipped"
        assert_contiguous(seen)
        assert seen[-1].next_offset == first_segment_end, "the reader did not finish the segment it had open"
        assert (failure.value.offset, failure.value.begin) == (first_segment_end, begin)
        reader.seek(failure.value.begin)  # the documented way on
        assert int(next(iter(reader)).payload.split(b"/")[0]) > len(seen)
    finally:
        reader.close()

"""What an operator (or a tmp cleaner) deletes, replaces or truncates under running processes.

* One writer, whatever is deleted: with ``writer.lock`` deleted, replaced (by a file naming
  another pid) or truncated under a live writer, a second writer process is refused with
  BusLockedError naming the first, and the first goes on; a process holding writer.lock the
  way older versions lock it keeps a new writer out too; a writer whose bus directory was
  deleted and created again writes nothing into the new bus; an interrupt at any close of a
  writer's files never keeps the bus locked.
* No death by signal: the watermark truncated, removed or replaced under a writer process or a
  reader process kills neither; the writer stops with a typed error (BusFileChangedError), and
  the next writer's open repairs the bus.

Real processes, real files; no timing assertions (processes are sequenced through their output).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.bus import CHILD_TIMEOUT, LOCK_ATTEMPT, Expected, hold_bus, read_all, release
from helpers.faults import Fault, Interrupt, injected
from helpers.processes import run_python, run_python_out_of_descriptors, spawn_python

from filelog_bus import LogWriter
from filelog_bus.check import bus_stats, verify_bus
from filelog_bus.errors import BusIOError, BusLockedError
from filelog_bus.layout import LOCK_NAME, WATERMARK_NAME


def delete(lock: Path) -> None:
    lock.unlink()


def delete_and_create_again(lock: Path) -> None:
    lock.unlink()
    lock.touch()


def replace_naming_another_pid(lock: Path) -> None:
    replacement = lock.with_name("writer.lock.by-operator")
    replacement.write_text("1\n")
    replacement.replace(lock)


def truncate(lock: Path) -> None:
    os.truncate(lock, 0)


@pytest.mark.parametrize(
    "intrusion",
    [delete, delete_and_create_again, replace_naming_another_pid, truncate],
    ids=lambda f: f.__name__,
)
def test_whatever_happens_to_writer_lock_a_second_writer_is_refused_naming_the_first(
    bus_dir: Path, intrusion: Callable[[Path], None]
) -> None:
    holder, lines = hold_bus(bus_dir)
    try:
        intrusion(bus_dir / LOCK_NAME)
        for timeout in ("0", "0.2"):
            attempt = run_python(LOCK_ATTEMPT, str(bus_dir), timeout)
            assert attempt.returncode == 0, attempt.stderr
            assert attempt.stdout.startswith("BusLockedError "), f"a second writer got in: {attempt.stdout}"
            _, named, message = attempt.stdout.split(" ", 2)
            assert named == str(holder.pid), attempt.stdout
            assert f"pid {holder.pid}" in message and str(bus_dir) in message and "lock_timeout" in message
        with pytest.raises(BusLockedError) as refused:  # in this process too
            LogWriter(bus_dir).open()
        assert refused.value.holder == str(holder.pid)
    finally:
        rest = release(holder, lines)
    assert (holder.returncode, rest) == (0, "closed\n")
    records = read_all(bus_dir)
    assert len(records) == 3 and all(Expected("holder", seq).matches(r) for seq, r in enumerate(records))
    with LogWriter(bus_dir) as writer:  # the lock was released with the holder, whatever its file became
        assert writer.append("after", b"x") == records[-1].next_offset
    assert verify_bus(str(bus_dir)).healthy


#: Locks writer.lock exactly as writers before the directory lock did (portalocker's flock on the
#: file, its pid written into it), prints "locked", and holds it until stdin closes.
OLDER_VERSION_WRITER = """
import os, sys
import portalocker

with open(sys.argv[1], "r+" if os.path.exists(sys.argv[1]) else "w+", encoding="ascii") as lock_file:
    portalocker.lock(lock_file, portalocker.LOCK_EX | portalocker.LOCK_NB)
    lock_file.truncate(0)
    lock_file.write(f"{os.getpid()}\\n")
    lock_file.flush()
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_writer_of_an_older_version_locking_only_writer_lock_keeps_a_new_writer_out(bus_dir: Path) -> None:
    LogWriter(bus_dir).open().close()
    older = spawn_python(OLDER_VERSION_WRITER, str(bus_dir / LOCK_NAME), stdin=subprocess.PIPE)
    try:
        assert older.stdout is not None and older.stdout.readline() == "locked\n"
        with pytest.raises(BusLockedError) as refused:
            LogWriter(bus_dir, lock_timeout=0.1).open()
        assert refused.value.holder == str(older.pid), refused.value
    finally:
        older.communicate("", timeout=CHILD_TIMEOUT)
    assert older.returncode == 0
    with LogWriter(bus_dir) as writer:  # neither lock is left behind by the refused open
        writer.append("after", b"x")


# -- the watermark deleted, replaced or truncated: no death by SIGBUS ------------------------------------------

#: Opens a writer, appends 3 records, prints "holding" and waits for a line; then appends 10 more
#: and syncs, printing "stopped <error type> <change> <message>" if that raises, then "refused
#: <type of .failure>" if the next append raises BusClosedError, then closes and prints "closed".
WATERMARK_VICTIM = """
import sys
from filelog_bus import LogWriter
from filelog_bus.errors import BusClosedError, FilelogBusError

writer = LogWriter(sys.argv[1], durability=sys.argv[2], segment_bytes=1024)
writer.open()
for i in range(3):
    writer.append("before", b"%d" % i)
print("holding", flush=True)
sys.stdin.readline()
try:
    for i in range(10):
        writer.append("after", b"%d" % i)
    writer.sync()
    print("no error", flush=True)
except FilelogBusError as exc:
    print("stopped", type(exc).__name__, getattr(exc, "change", None), exc, flush=True)
try:
    writer.append("later", b"x")
except BusClosedError as exc:
    print("refused", type(exc.failure).__name__, flush=True)
writer.close()
print("closed", flush=True)
"""


def truncate_watermark(watermark: Path) -> None:
    os.truncate(watermark, 0)


def delete_watermark(watermark: Path) -> None:
    watermark.unlink()


def restore_an_old_copy_of_the_watermark(watermark: Path) -> None:
    copy = watermark.with_name("watermark.backup")
    copy.write_bytes(watermark.read_bytes())
    copy.replace(watermark)


WATERMARK_INTRUSIONS = {
    "truncated": truncate_watermark,
    "deleted": delete_watermark,
    "replaced": restore_an_old_copy_of_the_watermark,
}


@pytest.mark.parametrize("durability", ["always", "never"])
@pytest.mark.parametrize("change", WATERMARK_INTRUSIONS)
def test_watermark_changed_under_a_writer_process_stops_it_with_a_typed_error_not_sigbus(
    bus_dir: Path, change: str, durability: str
) -> None:
    writer = spawn_python(WATERMARK_VICTIM, str(bus_dir), durability, stdin=subprocess.PIPE)
    assert writer.stdout is not None and writer.stdout.readline() == "holding\n", writer.communicate()
    WATERMARK_INTRUSIONS[change](bus_dir / WATERMARK_NAME)
    out, err = writer.communicate("go\n", timeout=CHILD_TIMEOUT)
    assert writer.returncode == 0, f"the writer died (status {writer.returncode}): {err}"
    stopped, refused, closed = out.splitlines()
    assert stopped.startswith(f"stopped BusFileChangedError {change} the watermark file was {change}"), out
    assert "open a new writer" in stopped, out
    assert (refused, closed) == ("refused BusFileChangedError", "closed"), out

    with LogWriter(bus_dir) as repairer:  # the next open repairs the bus
        end = repairer.append("repaired", b"r")
    records = read_all(bus_dir)
    assert [(r.category, r.payload) for r in records[:3]] == [("before", b"%d" % i) for i in range(3)]
    after = records[3:-1]  # what the stopped writer wrote past its last publication: a prefix, or nothing
    assert [(r.category, r.payload) for r in after] == [("after", b"%d" % i) for i in range(len(after))]
    assert (records[-1].category, records[-1].offset) == ("repaired", end)
    assert verify_bus(str(bus_dir)).healthy


#: Reads every record (waiting up to 1 s at the end) after printing "reading"; prints each one's
#: payload, then "end", or "error <type> <damage>" for a FilelogBusError.
WAITING_READER = """
import sys
from filelog_bus import LogReader
from filelog_bus.errors import FilelogBusError

with LogReader(sys.argv[1], timeout=1.0) as reader:
    print("reading", flush=True)
    try:
        for record in reader:
            print(record.payload.decode(), flush=True)
        print("end", flush=True)
    except FilelogBusError as exc:
        print("error", type(exc).__name__, getattr(exc, "damage", None), flush=True)
"""


@pytest.mark.parametrize("change", WATERMARK_INTRUSIONS)
def test_watermark_changed_under_a_waiting_reader_process_never_kills_it(bus_dir: Path, change: str) -> None:
    with LogWriter(bus_dir) as writer:
        for i in range(3):
            writer.append("c", b"%d" % i)
    reader = spawn_python(WAITING_READER, str(bus_dir))
    assert reader.stdout is not None
    assert [reader.stdout.readline() for _ in range(4)] == ["reading\n", "0\n", "1\n", "2\n"]
    WATERMARK_INTRUSIONS[change](bus_dir / WATERMARK_NAME)  # while it waits at the end
    out, err = reader.communicate(timeout=CHILD_TIMEOUT)
    assert reader.returncode == 0, f"the reader died (status {reader.returncode}): {err}"
    # A truncated slot reads as damaged; a deleted or replaced file leaves the reader the one it opened.
    assert out == ("error CorruptionError watermark\n" if change == "truncated" else "end\n"), out


#: Opens a writer (small segments), appends 3 records, prints "holding" and waits for a line; then
#: appends until a roll must create a segment, printing "stopped <type> <change>" when that raises.
ROLLING_WRITER = """
import sys
from filelog_bus import LogWriter
from filelog_bus.errors import FilelogBusError

with LogWriter(sys.argv[1], segment_bytes=1024) as writer:
    for i in range(3):
        writer.append("first", b"%d" % i)
    print("holding", flush=True)
    sys.stdin.readline()
    try:
        for i in range(1000):
            writer.append("first", bytes(100))
        print("no error", flush=True)
    except FilelogBusError as exc:
        print("stopped", type(exc).__name__, getattr(exc, "change", None), flush=True)
"""


def test_a_writer_whose_bus_was_deleted_and_created_again_writes_nothing_into_the_new_bus(
    bus_dir: Path,
) -> None:
    first = spawn_python(ROLLING_WRITER, str(bus_dir), stdin=subprocess.PIPE)
    assert first.stdout is not None and first.stdout.readline() == "holding\n", first.communicate()
    shutil.rmtree(bus_dir)
    with LogWriter(bus_dir) as second:  # a new bus at the same path: its own directory, its own lock
        second.append("second", b"mine")
        out, err = first.communicate("go\n", timeout=CHILD_TIMEOUT)
        second.append("second", b"still mine")
    assert (first.returncode, out) == (0, "stopped BusFileChangedError replaced\n"), err
    assert [(r.category, r.payload) for r in read_all(bus_dir)] == [
        ("second", b"mine"),
        ("second", b"still mine"),
    ]
    assert verify_bus(str(bus_dir)).healthy


# Went wrong: an interrupt landing before the close of the bus directory's descriptor left it locked, and no writer could open the bus again.
def test_an_interrupt_at_any_close_of_a_writers_files_never_keeps_the_bus_locked(bus_dir: Path) -> None:
    """An interrupt landing at any close of a writer's files never leaves the bus locked: a writer
    can open it again."""

    def open_and_append() -> LogWriter:
        writer = LogWriter(bus_dir).open()
        writer.append("c", b"x")
        return writer

    writer = open_and_append()
    with injected(None) as log:
        writer.close()
    assert log.counts["close"] >= 3, "close() closes the segment, the watermark and the directory"
    for nth in range(1, log.counts["close"] + 1):
        writer = open_and_append()
        with injected(Fault("close", nth, Interrupt)), pytest.raises(Interrupt):
            writer.close()
        with LogWriter(bus_dir, lock_timeout=0) as again:  # BusLockedError if the bus were left locked
            again.append("c", b"after")


# Went wrong: stats and verify raised a bare OSError ("Is a directory", no path, no advice) on a
# bus whose watermark an operator replaced with a directory, and under EMFILE.
def test_stats_and_verify_explain_a_failed_read_with_a_typed_error(tmp_path: Path) -> None:
    """A failed call other than a refusal is a BusIOError naming the bus, its errno and advice."""
    bus = tmp_path / "bus"
    with LogWriter(bus) as writer:
        writer.append("c", b"x")
    (bus / WATERMARK_NAME).unlink()
    (bus / WATERMARK_NAME).mkdir()
    for inspect, purpose in ((bus_stats, "take its statistics"), (verify_bus, "verify it")):
        with pytest.raises(BusIOError) as raised:
            inspect(str(bus))
        assert (raised.value.errno, raised.value.path) == (errno.EISDIR, str(bus))
        assert purpose in str(raised.value) and "run it again" in (raised.value.advice or "")
    (bus / WATERMARK_NAME).rmdir()
    with LogWriter(bus) as writer:  # the writer rebuilds the watermark
        writer.append("c", b"y")
    result = run_python_out_of_descriptors(
        """
        import sys
        from filelog_bus.check import bus_stats, verify_bus
        from filelog_bus.errors import BusIOError
        """,
        """
        for inspect in (bus_stats, verify_bus):
            try:
                inspect(sys.argv[1])
            except BusIOError as exc:
                print(exc.errno, exc.advice)
        """,
        str(bus),
    )
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(
        line.startswith(f"{errno.EMFILE} the process has too many open files") for line in lines
    ), result.stdout

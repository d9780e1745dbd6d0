"""Waiting readers wake on publication (filelog_bus/wakeup.py), never miss one, and notice a deleted bus.

The lost-wake-up tests switch off the periodic re-check (``RECHECK_SECONDS``): a reader that
missed a wake-up would then wait forever, and the thread join (a hang guard, not a timing
assertion) fails the test.
"""

from __future__ import annotations

import logging
import random
import shutil
import signal
import sys
import threading
from pathlib import Path

import pytest
from helpers.cli import DUMP, HANG_GUARD, Lines, start
from helpers.processes import spawn_python
from hypothesis import given, settings
from hypothesis import strategies as st

from filelog_bus import LogReader, LogWriter, wakeup
from filelog_bus.errors import BusDeletedError

#: Stands for "never" while the reader waits: only a wake-up (or the active window) ends a sleep.
NO_RECHECK = 3600.0


class Follower(threading.Thread):
    """A reader that waits (timeout None) until it has read ``count`` records after ``start``."""

    def __init__(self, bus: Path, count: int, start: int = 0) -> None:
        super().__init__(daemon=True)
        self.reader = LogReader(bus, timeout=None).open()
        self.reader.seek(start)
        self.count = count
        self.payloads: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for record in self.reader:
                self.payloads.append(record.payload)
                if len(self.payloads) == self.count:
                    return
        except BaseException as exc:
            self.error = exc

    def finish(self) -> list[bytes]:
        self.join(HANG_GUARD)
        assert not self.is_alive(), f"a waiting reader missed a wake-up: it read {len(self.payloads)} records"
        waiter = self.reader._waiter
        self.woken = waiter is not None and not waiter.polling
        self.reader.close()
        assert self.error is None, self.error
        return self.payloads


@pytest.mark.parametrize("durability", ["always", "never"])
def test_racing_threads_see_every_record_without_a_re_check(
    durability: str, bus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "RECHECK_SECONDS", NO_RECHECK)
    rng = random.Random(18)
    count = 300
    with LogWriter(bus_dir, durability=durability, segment_bytes=4096) as writer:
        followers = [Follower(bus_dir, count) for _ in range(3)]
        for follower in followers:
            follower.start()
        for i in range(count):
            writer.append("race", b"%d" % i)
            # gaps within the coalescing interval (unrung publications) and beyond it
            gap = rng.choice((0, 0.0001, 0.0002, 0.0003, 0.0004, 0.005))
            if gap:
                threading.Event().wait(gap)
        expected = [b"%d" % i for i in range(count)]
        for follower in followers:
            assert follower.finish() == expected
            assert follower.woken


@settings(max_examples=20, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.0001, 0.0005, 0.0015, 0.004]), min_size=1, max_size=30),
    durability=st.sampled_from(["always", "never"]),
)
def test_any_schedule_of_publications_reaches_a_waiting_reader_without_a_re_check(
    gaps: list[float], durability: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Bursts, pauses shorter and longer than the coalescing interval, in any order."""
    bus = tmp_path_factory.mktemp("schedule") / "bus"
    with pytest.MonkeyPatch.context() as patch, LogWriter(bus, durability=durability) as writer:
        patch.setattr(wakeup, "RECHECK_SECONDS", NO_RECHECK)
        follower = Follower(bus, len(gaps))
        follower.start()
        for i, gap in enumerate(gaps):
            if gap:
                threading.Event().wait(gap)
            writer.append("schedule", b"%d" % i)
        assert follower.finish() == [b"%d" % i for i in range(len(gaps))]


_WRITER = """
import random, sys, time
from filelog_bus import LogWriter
bus, count, durability, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
with LogWriter(bus, durability=durability, segment_bytes=8192) as writer:
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        writer.append("race", b"%d" % i)
        gap = rng.choice((0, 0.0001, 0.0002, 0.0003, 0.0004, 0.005))
        if gap:
            time.sleep(gap)
"""

_COUNTING_READER = """
import sys
from filelog_bus import LogReader, wakeup
wakeup.RECHECK_SECONDS = 3600.0
bus, count = sys.argv[1], int(sys.argv[2])
with LogReader(bus, timeout=None) as reader:
    print("ready", flush=True)
    seen = []
    for record in reader:
        seen.append(int(record.payload))
        if len(seen) == count:
            break
print("in order" if seen == list(range(count)) else f"wrong: {seen}", flush=True)
"""


@pytest.mark.parametrize("durability", ["always", "never"])
def test_racing_processes_see_every_record_without_a_re_check(
    durability: str, bus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "RECHECK_SECONDS", NO_RECHECK)
    count = 200
    LogWriter(bus_dir).open().close()
    writer = spawn_python(_WRITER, str(bus_dir), str(count), durability, "7", stdin=-1)
    readers = [spawn_python(_COUNTING_READER, str(bus_dir), str(count)) for _ in range(2)]
    try:
        for process in (writer, *readers):
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        follower = Follower(bus_dir, count)
        follower.start()
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert follower.finish() == [b"%d" % i for i in range(count)]
        for process in readers:
            out, err = process.communicate(timeout=HANG_GUARD)
            assert (out, err, process.returncode) == ("in order\n", "", 0)
        assert writer.wait(timeout=HANG_GUARD) == 0
    finally:
        for process in (writer, *readers):
            process.kill()
            process.wait()


_KILLED_WRITER = """
import os, signal, sys
from filelog_bus import LogWriter, wakeup, watermark
bus, when = sys.argv[1], sys.argv[2]
writer = LogWriter(bus).open()
writer.append("kill", b"0")
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if when == "before publication":  # the record is written and synced, not yet published
    watermark.WatermarkPublisher.publish = die
else:  # published, before the wake-up
    wakeup.Waker.published = die
print("ready", flush=True)
sys.stdin.readline()
writer.append("kill", b"1")
"""


@pytest.mark.parametrize("when", ["before publication", "right after publication"])
def test_a_writer_killed_around_its_publication_never_leaves_a_reader_waiting_for_its_timeout(
    when: str, bus_dir: Path
) -> None:
    writer = spawn_python(_KILLED_WRITER, str(bus_dir), when, stdin=-1)
    assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
    follower = Follower(bus_dir, 3)  # record 0, then 1 (published or recovered), then 2
    follower.start()
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    assert writer.wait(timeout=HANG_GUARD) == -signal.SIGKILL
    if when == "right after publication":  # seen by the re-check: no wake-up will ever come
        while len(follower.payloads) < 2 and follower.is_alive():
            threading.Event().wait(0.01)
        assert follower.payloads == [b"0", b"1"]
    with LogWriter(bus_dir) as second:  # recovery publishes (and wakes) what the first made durable
        second.append("kill", b"2")
    assert follower.finish() == [b"0", b"1", b"2"]


def test_a_reader_falls_back_to_polling_when_the_writer_never_wakes_it_and_says_so_once(
    bus_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(wakeup, "RECHECK_SECONDS", 0.01)
    monkeypatch.setattr(wakeup, "_told", set())
    count = 2 * wakeup.SILENT_CHANGES_TO_FALL_BACK + 2
    with LogWriter(bus_dir) as writer:
        # an older writer: it publishes without waking anyone
        waker, writer._watermark._waker = writer._watermark._waker, None  # type: ignore[union-attr]
        assert waker is not None
        waker.close()
        followers = [Follower(bus_dir, count) for _ in range(2)]
        for follower in followers:
            follower.start()
        with caplog.at_level(logging.WARNING, logger="filelog_bus.wakeup"):
            for i in range(count):
                threading.Event().wait(0.05)  # longer than the re-check: each change is found by one
                writer.append("old", b"%d" % i)
            for follower in followers:
                assert follower.finish() == [b"%d" % i for i in range(count)]
                assert not follower.woken
    warnings = [r.getMessage() for r in caplog.records if r.name == "filelog_bus.wakeup"]
    assert len(warnings) == 1 and "are not woken when the watermark moves" in warnings[0]


def waiting_after_the_first_record(bus_dir: Path) -> Follower:
    """A bus of one record, and a Follower (of two records) that has read it and now waits for the next."""
    with LogWriter(bus_dir) as writer:
        writer.append("a", b"0")
    follower = Follower(bus_dir, 2)
    follower.start()
    while not follower.payloads:
        threading.Event().wait(0.01)
    return follower


def test_a_waiting_reader_raises_when_the_bus_is_deleted_or_created_again(bus_dir: Path) -> None:
    follower = waiting_after_the_first_record(bus_dir)
    shutil.rmtree(bus_dir)
    follower.join(HANG_GUARD)
    assert isinstance(follower.error, BusDeletedError) and not follower.error.recreated
    assert follower.error.path == str(bus_dir) and "was deleted" in str(follower.error)
    follower.reader.close()

    follower = waiting_after_the_first_record(bus_dir)
    shutil.rmtree(bus_dir)
    with LogWriter(bus_dir) as writer:
        writer.append("b", b"new bus")
    follower.join(HANG_GUARD)
    assert isinstance(follower.error, BusDeletedError) and follower.error.recreated
    assert "deleted and created again" in str(follower.error) and follower.payloads == [b"0"]
    follower.reader.close()
    follower.reader.set_timeout(0)
    with follower.reader:  # opened again, it reads the new bus
        assert [record.payload for record in follower.reader] == [b"new bus"]


def test_a_watermark_rebuilt_by_a_writer_in_the_same_bus_is_followed(bus_dir: Path) -> None:
    follower = waiting_after_the_first_record(bus_dir)
    (bus_dir / "watermark").unlink()
    with LogWriter(bus_dir) as writer:  # recovery writes a new watermark file
        writer.append("a", b"1")
    assert follower.finish() == [b"0", b"1"]


@pytest.mark.parametrize("recreated", [False, True])
def test_dump_follow_says_the_bus_was_deleted_and_exits_non_zero(recreated: bool, bus_dir: Path) -> None:
    with LogWriter(bus_dir) as writer:
        writer.append("a", b"first")
    follower = start(DUMP, bus_dir, "--follow")
    try:
        Lines(follower.stdout).wait_for(lambda line: line.endswith("first"))  # type: ignore[arg-type]
        shutil.rmtree(bus_dir)
        if recreated:
            with LogWriter(bus_dir) as writer:
                writer.append("b", b"second")
        status = follower.wait(timeout=HANG_GUARD)
        assert follower.stderr is not None
        message = follower.stderr.read()
    finally:
        follower.kill()
        follower.wait()
    assert status == 3  # EXIT_NOT_A_BUS
    what = "was deleted and created again" if recreated else "was deleted while"
    assert message.startswith("filelog-dump: error: the bus at") and what in message


# -- an interrupt inside the wake-up --------------------------------------------------------------
# An interrupt (what a signal handler raises) landing inside the writer's wake-up call must not
# leave the waker believing its ringer is busy while the ringer sleeps: readers would then not be
# woken again until the ringer's idle timeout (a minute), and fall back to polling for good.
#
# The interrupt is delivered with a line trace at a chosen line of ``Waker._wake_now`` (a signal
# handler runs between any two lines of the main thread); the reader's periodic re-check is
# switched off, so a missed wake-up shows as a reader that never finishes (a hang guard).


GUARD = 15.0  # well under the ringer's idle timeout (60 s), which would hide the bug


def _interrupt_once_at(code: object, line_text: str) -> list[bool]:
    """Arm a trace that raises KeyboardInterrupt once, at the first line of ``code`` containing ``line_text``."""
    import inspect

    lines, first = inspect.getsourcelines(code)
    target = next(first + i for i, text in enumerate(lines) if line_text in text)
    fired: list[bool] = []

    def local(frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line" and frame.f_lineno == target and not fired:
            fired.append(True)
            sys.settrace(None)
            raise KeyboardInterrupt
        return local

    def global_(frame, event, arg):  # type: ignore[no-untyped-def]
        return local if frame.f_code is code.__code__ and not fired else None

    sys.settrace(global_)
    return fired


# Went wrong: an interrupt inside the writer's first wake-up left the waker busy with its ringer asleep: readers fell back to polling.
@pytest.mark.parametrize(
    "line_text", ["self._pending = False", "self._ring(self._word.wake())", "if self._thread is None:"]
)
def test_an_interrupt_inside_the_wake_up_never_silences_later_wake_ups(
    line_text: str, bus_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "RECHECK_SECONDS", NO_RECHECK)
    with LogWriter(bus_dir, durability="never", segment_bytes=1 << 16) as writer:
        writer.append("w", b"0")  # starts the ringer thread
        waker = writer._watermark._waker  # type: ignore[union-attr]
        assert waker is not None
        guard = threading.Event()
        for _ in range(1000):  # the ringer goes idle after an interval without publications
            if waker._idle:
                break
            guard.wait(0.01)
        assert waker._idle
        follower = Follower(bus_dir, 20, start=writer.end_offset)
        follower.start()
        fired = _interrupt_once_at(wakeup.Waker._wake_now, line_text)
        try:
            writer.append("w", b"1")  # published: returns, the interrupt is held
        finally:
            sys.settrace(None)
        assert fired
        with pytest.raises(KeyboardInterrupt):
            writer.append("w", b"held")  # the held interrupt, before anything changes
        for i in range(2, 40):
            writer.append("w", b"%d" % i)
            guard.wait(0.002)
        follower.join(GUARD)
        assert not follower.is_alive(), f"reader never woken again: read {follower.payloads}"
        follower.reader.close()

"""An interrupt (what a signal handler raises) at any line the writer runs in append() or close()
never leaves the bus locked, loses an acknowledged record, or keeps one whose append failed
(a caller would send it again: a duplicate)."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from helpers.bus import open_files_under
from helpers.faults import Fault, Interrupt, injected
from helpers.promises import (
    Ack,
    after_failed_append,
    append,
    check_bus,
    count_target_calls,
    open_writer,
    prepare,
    record,
    reopen_append_and_roll,
)

import filelog_bus
from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import BusClosedError

PACKAGE = str(Path(filelog_bus.__file__).parent)


class _Interrupter:
    """A trace raising KeyboardInterrupt at the ``at``-th line the package runs (counting only).

    A line of a finaliser (``__del__``, such as WriterLock's, run when close() drops the lock) is
    counted but not interrupted there: Python ignores an exception raised in a finaliser ("Exception
    ignored in ...") and the caller never sees it. The interrupt lands on the next line outside one.
    """

    def __init__(self, at: int) -> None:
        self.at, self.seen, self.fired = at, 0, False

    def __call__(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None
        return self._local

    def _local(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line" and not self.fired:
            self.seen += 1
            if self.seen >= self.at and frame.f_code.co_name != "__del__":
                self.fired = True
                self.where = (Path(frame.f_code.co_filename).name, frame.f_lineno, frame.f_code.co_name)
                raise KeyboardInterrupt
        return self._local


WHERE: list[object] = []


def _run(call, at: int) -> tuple[bool, bool]:  # type: ignore[no-untyped-def]
    """(fired, raised); where it fired in WHERE[-1]"""
    trace = _Interrupter(at)
    sys.settrace(trace)
    try:
        call()
    except KeyboardInterrupt:
        return trace.fired, True
    finally:
        sys.settrace(None)
        WHERE.append(getattr(trace, "where", None))
    return trace.fired, False


def _lines(call) -> int:  # type: ignore[no-untyped-def]
    trace = _Interrupter(10**9)
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return trace.seen


def _payloads(bus: Path) -> list[bytes]:
    with LogReader(bus, timeout=0) as reader:
        return [record.payload for record in reader]


# Went wrong: an interrupt between an append's write and its publication left the failed record on the bus (a duplicate once the caller sent it again).
@pytest.mark.parametrize("durability", ["always", "never"])
def test_an_interrupt_anywhere_in_append_keeps_the_promise(durability: str, tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    with LogWriter(probe, durability=durability, segment_bytes=4096) as writer:
        writer.append("c", b"a")
        total = _lines(partial(writer.append, "c", b"b"))
    for at in range(1, total + 1):
        bus = tmp_path / f"bus{at}"
        writer = LogWriter(bus, durability=durability, segment_bytes=4096).open()
        writer.append("c", b"a")
        fired, raised = _run(partial(writer.append, "c", b"b"), at)
        with contextlib.suppress(KeyboardInterrupt):  # the held interrupt, if append returned
            writer.close()
        del writer
        gc.collect()
        with LogWriter(bus, durability=durability, lock_timeout=0) as again:
            again.sync()
        got = _payloads(bus)
        assert got in ([b"a", b"b"], [b"a"]), (at, got)
        if fired and raised:
            assert got == [b"a"], f"append raised at {WHERE[-1]} but its record is on the bus: {got}"
        if not raised:
            assert got == [b"a", b"b"], f"append returned at {WHERE[-1]} but its record is missing: {got}"


# Went wrong: an interrupt in WriterLock.close gave up the directory descriptor before the bus was unlocked: the bus stayed locked.
def test_an_interrupt_anywhere_in_close_never_leaves_the_bus_locked(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    writer = LogWriter(probe, durability="always", segment_bytes=4096).open()
    writer.append("c", b"a")
    total = _lines(writer.close)
    for at in range(1, total + 1):
        bus = tmp_path / f"bus{at}"
        writer = LogWriter(bus, durability="always", segment_bytes=4096).open()
        writer.append("c", b"a")
        _run(writer.close, at)
        # the caller does not retry close(): the writer is dropped
        del writer
        gc.collect()
        with LogWriter(bus, durability="always", lock_timeout=0) as again:
            again.append("c", b"z")
        assert _payloads(bus) == [b"a", b"z"], WHERE[-1]


# Went wrong: an interrupt in WriterLock's acquire or __init__ leaked the locked directory descriptor: the bus stayed locked.
def test_an_interrupt_anywhere_in_open_never_leaves_the_bus_locked_or_records_lost(tmp_path: Path) -> None:
    def prepared(bus: Path) -> LogWriter:
        with LogWriter(bus, durability="always", segment_bytes=4096) as first:
            first.append("c", b"a")
        return LogWriter(bus, durability="always", segment_bytes=4096)

    total = _lines(prepared(tmp_path / "probe").open)
    for at in range(1, total + 1):
        bus = tmp_path / f"bus{at}"
        writer = prepared(bus)
        _run(writer.open, at)
        with contextlib.suppress(KeyboardInterrupt):
            writer.close()
        del writer
        gc.collect()
        with LogWriter(bus, durability="always", lock_timeout=0) as again:
            again.append("c", b"z")
        assert _payloads(bus) == [b"a", b"z"], WHERE[-1]


class _InterrupterIn(_Interrupter):
    """An _Interrupter counting (and interrupting) only the lines of functions named ``function``."""

    def __init__(self, at: int, function: str) -> None:
        super().__init__(at)
        self.function = function

    def _local(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if frame.f_code.co_name != self.function:
            return self._local
        return super()._local(frame, event, arg)


# Went wrong: an interrupt in a roll between the new segment's creation and the writer holding it (or before the sealed one was closed) left a segment's log and index files open for good.
def test_an_interrupt_anywhere_in_a_roll_leaves_no_file_of_the_bus_open(tmp_path: Path) -> None:
    def prepared(bus: Path) -> LogWriter:
        writer = LogWriter(bus, durability="always", segment_bytes=4096).open()
        for _ in range(7):
            writer.append("c", b"x" * 500)
        return writer

    for at in range(1, 100):
        bus = tmp_path / f"bus{at}"
        writer = prepared(bus)
        trace = _InterrupterIn(at, "_roll")
        sys.settrace(trace)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                writer.append("c", b"y" * 900)  # rolls
        finally:
            sys.settrace(None)
        with contextlib.suppress(KeyboardInterrupt):
            writer.close()
        del writer
        gc.collect()
        if not trace.fired:
            break
        assert open_files_under(bus) == [], trace.where
    assert at > 5  # the roll's every line was interrupted once


# -- an exception raised by a signal handler during append or a roll ------------------------------


# Went wrong: an exception from a signal handler during append left the writer usable, its end offset out of step with the file.
@pytest.mark.parametrize("durability", ["always", "never"])
@pytest.mark.parametrize("kind", ["plain", "rolls"])
def test_an_interrupt_during_append_stops_the_writer_and_the_bus_reopens(
    tmp_path: Path, kind: str, durability: str
) -> None:
    """An exception raised during append (Ctrl-C, a signal handler's) stops the writer: it is not used
    again at a wrong offset, readers meet no corruption, and the bus reopens, after a roll too.

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


# Went wrong: a signal handler's TimeoutError came out as BusWriteError (EIO) and best-effort steps took it for a failure and went on.
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


# Went wrong: a KeyboardInterrupt inside a roll left the writer usable, and the bus did not reopen after the roll.
def test_a_keyboard_interrupt_during_a_roll_stops_the_writer(tmp_path: Path) -> None:
    """A KeyboardInterrupt landing during a roll stops the writer, and the bus reopens with every
    acknowledged record.

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


# Went wrong: the next append after a signal handler's exception returned an offset holding the previous record's bytes.
def test_a_real_sigalrm_handler_raising_inside_append_loses_no_acknowledged_record(tmp_path: Path) -> None:
    """A real signal handler raising inside append loses no acknowledged record.

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

"""An interrupt (what a signal handler raises) at any line the writer runs in append() or close()
never leaves the bus locked, loses an acknowledged record, or keeps one whose append failed
(a caller would send it again: a duplicate)."""

from __future__ import annotations

import contextlib
import gc
import sys
from functools import partial
from pathlib import Path

import pytest

import filelog_bus
from filelog_bus import LogReader, LogWriter

PACKAGE = str(Path(filelog_bus.__file__).parent)


class _Interrupter:
    """A trace raising KeyboardInterrupt at the ``at``-th line the package runs (counting only)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen, self.fired = at, 0, False

    def __call__(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if not frame.f_code.co_filename.startswith(PACKAGE):
            return None
        return self._local

    def _local(self, frame, event, arg):  # type: ignore[no-untyped-def]
        if event == "line" and not self.fired:
            self.seen += 1
            if self.seen == self.at:
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

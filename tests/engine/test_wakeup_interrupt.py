"""An interrupt (what a signal handler raises) landing inside the writer's wake-up call must not
leave the waker believing its ringer is busy while the ringer sleeps: readers would then not be
woken again until the ringer's idle timeout (a minute), and fall back to polling for good.

The interrupt is delivered with a line trace at a chosen line of ``Waker._wake_now`` (a signal
handler runs between any two lines of the main thread); the reader's periodic re-check is
switched off, so a missed wake-up shows as a reader that never finishes (a hang guard)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from test_wakeup import NO_RECHECK, Follower

from filelog_bus import LogWriter, wakeup

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

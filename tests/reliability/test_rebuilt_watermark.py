"""A watermark file deleted by an operator and rebuilt by the next writer, in the same bus
directory, is the same bus: a reader waiting at the end of it must follow it, not report the bus
"deleted and created again" (a caller would then reset its consumers' offsets)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import BusDeletedError


def test_a_reader_of_an_empty_bus_follows_a_watermark_rebuilt_in_the_same_directory(bus_dir: Path) -> None:
    with LogWriter(bus_dir):
        pass
    got: list[bytes] = []
    errors: list[BaseException] = []
    reader = LogReader(bus_dir, timeout=20).open()
    reader.seek(0)

    def follow() -> None:
        try:
            for record in reader:
                got.append(record.payload)
                return
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    os.unlink(bus_dir / "watermark")  # an operator's clean-up, while no writer runs
    with LogWriter(bus_dir) as writer:  # rebuilds the file (a new inode) in the same directory
        writer.append("c", b"after")
    thread.join(30)
    reader.close()
    assert not any(isinstance(e, BusDeletedError) for e in errors), errors
    assert got == [b"after"], (got, errors)

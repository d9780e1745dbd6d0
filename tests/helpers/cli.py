"""Helpers shared by the CLI tests (tests/test_cli*.py); this module holds no tests.

The commands run as the installed console scripts, next to the test's Python, as a user
would run them; buses are written with LogWriter.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from filelog_bus import Record
from helpers.bus import SMALL, segment_bases, write_bus
from helpers.processes import python_env

BIN = Path(sys.executable).parent
DUMP = BIN / "filelog-dump"
BUS = BIN / "filelog-bus"
#: A fixed time, 2024-05-01T10:40:00Z, so that dump lines are known in advance.
T0 = 1_714_560_000.0
#: How kafka-export names itself in its error lines.
KAFKA_EXPORT_PROG = "filelog-bus kafka-export"
#: Bound on a process the test waits for: only reached when something hangs.
HANG_GUARD = 60


def run(command: Path, *args: object, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run an installed command to completion; its result is not checked."""
    return subprocess.run(
        [str(command), *map(str, args)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=HANG_GUARD,
        input=input,
    )


def start(command: Path, *args: object, **popen: object) -> subprocess.Popen[str]:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(  # type: ignore[call-overload]
        [str(command), *map(str, args)], text=True, env=python_env(), **popen
    )


def dump(*args: object) -> subprocess.CompletedProcess[str]:
    return run(DUMP, *args)


def bus(*args: object) -> subprocess.CompletedProcess[str]:
    return run(BUS, *args)


def sample(
    count: int, categories: tuple[str, ...] = ("base", "initsync", "audit")
) -> list[tuple[str, bytes, float]]:
    """``count`` records, one a minute from T0, categories in turn, small JSON payloads."""
    return [
        (categories[i % len(categories)], b'{"n": %d, "who": "user-%d"}' % (i, i), T0 + 60 * i)
        for i in range(count)
    ]


def multi_segment_bus(path: Path, count: int = 60) -> list[Record]:
    return write_bus(path, sample(count), **SMALL)


def file_of(path: Path, record: Record) -> tuple[str, int]:
    """(segment file name, file position) of a record."""
    bases = segment_bases(path)
    base = max(b for b in bases if b <= record.offset)
    return f"{base:020d}.log", record.offset - base + 32


def flip_byte(file: Path, position: int) -> None:
    data = bytearray(file.read_bytes())
    data[position] ^= 0xFF
    file.write_bytes(bytes(data))


def assert_error_line(result: subprocess.CompletedProcess[str], prog: str, status: int) -> str:
    """The command failed with ``status`` and exactly one "PROG: error: ..." line on stderr."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith(f"{prog}: error: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


class Lines:
    """The lines a process prints, collected by a thread so that a test can wait for one."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool]) -> list[str]:
        """Collect lines until one satisfies ``predicate``; fail if the stream ends or hangs first."""
        while True:
            try:
                line = self._queue.get(timeout=HANG_GUARD)
            except queue.Empty:
                raise AssertionError(f"no matching line within {HANG_GUARD} s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"the output ended without a matching line; got {self.lines}")
            self.lines.append(line)
            if predicate(line):
                return self.lines

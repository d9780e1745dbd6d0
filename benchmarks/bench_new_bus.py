"""New-bus benchmark (issue 18 item 7): creating a bus and its first durable append, 64 MiB segments.

Not a test. Three rows, measured in the same run, in interleaved rounds (medians, and the spread):

* the library: ``LogWriter(new directory).open()`` then one durable ``append``, timed until it returns
  (the writer is closed outside the timing);
* the baseline, today's library with the first segment zero-filled to its full 64 MiB before
  ``open()`` returns, as every segment was before (``segment.FIRST_SEGMENT_BYTES`` set to the
  segment size for these rounds);
* the physical bound: what any durable first record in a new directory costs on this disk, with
  os calls only (mkdir and fsync of its parent, create a file, write the record, fdatasync, fsync
  the directory).

And two rows for what moved: a ``durability="never"`` writer that appends 20,000 records (12.7 MB,
crossing the first roll) into a new bus, timed from before ``open()``, library and baseline. The 64
MiB of zeros the baseline wrote in ``open()`` are now written by the standby thread while the
small first segment fills, and a fast writer that reaches the first roll before the thread is done
waits for it there: the total should be about the same.

Goal: the library's median at most 20 ms::

    python benchmarks/bench_new_bus.py [--rounds 21] [--workdir /var/tmp/filelog-bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout, not an installed copy

from filelog_bus import LogWriter, segment  # noqa: E402
from filelog_bus.record import encode_record  # noqa: E402

SEGMENT_BYTES = 64 * 2**20
PAYLOAD = b"p" * 600
GOAL_MS = 20.0


def library(path: Path) -> float:
    writer = LogWriter(path, segment_bytes=SEGMENT_BYTES)
    start = time.perf_counter()
    writer.open()
    writer.append("users", PAYLOAD)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


def baseline(path: Path) -> float:
    """The library as it was: the first segment zero-filled to its full size before open() returns."""
    saved = segment.FIRST_SEGMENT_BYTES
    segment.FIRST_SEGMENT_BYTES = SEGMENT_BYTES
    try:
        return library(path)
    finally:
        segment.FIRST_SEGMENT_BYTES = saved


NEVER_RECORDS = 20_000


def never_library(path: Path) -> float:
    """open + NEVER_RECORDS appends with durability="never" into a new bus; close untimed."""
    writer = LogWriter(path, segment_bytes=SEGMENT_BYTES, durability="never")
    start = time.perf_counter()
    writer.open()
    for _ in range(NEVER_RECORDS):
        writer.append("users", PAYLOAD)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


def never_baseline(path: Path) -> float:
    saved = segment.FIRST_SEGMENT_BYTES
    segment.FIRST_SEGMENT_BYTES = SEGMENT_BYTES
    try:
        return never_library(path)
    finally:
        segment.FIRST_SEGMENT_BYTES = saved


def bound(path: Path) -> float:
    """A durable first record in a new directory, with os calls only."""
    record = encode_record("users", time.time(), PAYLOAD)
    start = time.perf_counter()
    os.mkdir(path)
    parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(parent)
    os.close(parent)
    fd = os.open(path / "00000000000000000000.log", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, record)
    os.fdatasync(fd)
    os.close(fd)
    directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(directory)
    os.close(directory)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "filelog-bench-new-bus")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Callable[[Path], float]] = {
        "library: open a new bus + first durable append": library,
        "baseline: same, first segment zero-filled to 64 MiB (as before)": baseline,
        "bound: mkdir + durable first record, os calls only": bound,
        f"never: open + {NEVER_RECORDS:,} appends, library": never_library,
        f"never: open + {NEVER_RECORDS:,} appends, baseline": never_baseline,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for number in range(args.rounds):
        for name, measure in rows.items():  # interleaved: each round sees the same disk weather
            path = args.workdir / f"bus-{number}-{len(times[name])}-{measure.__name__}"
            times[name].append(measure(path) * 1000)
            shutil.rmtree(path)
    base = median(times[next(name for name in rows if name.startswith("baseline"))])
    never_base = median(times[next(name for name in rows if name.endswith("appends, baseline"))])
    print(f"bench_new_bus: {args.rounds} interleaved rounds in {args.workdir}, 64 MiB segments")
    print(f"{'row':<66} {'median ms':>9} {'min':>6} {'max':>7} {'vs baseline':>11}")
    for name, values in times.items():
        against = never_base if name.startswith("never") else base
        print(
            f"{name:<66} {median(values):9.2f} {min(values):6.2f} {max(values):7.2f} "
            f"{median(values) / against:10.2f}x"
        )
    ours = median(times[next(iter(rows))])
    print(
        f"goal: library median <= {GOAL_MS:g} ms: {'met' if ours <= GOAL_MS else 'NOT met'} ({ours:.2f} ms)"
    )
    print(f"1-minute load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine)")


if __name__ == "__main__":
    main()

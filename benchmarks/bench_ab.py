"""A/B: the append rate of two checkouts of filelog-bus, side by side in one run.

Not a test. For a change whose cost must be known (issue 18: the watermark published with a
pwrite instead of a store into a shared mapping, and the writer's checks of its files), run the
same append loop from a baseline checkout and from this one, each round in a fresh process,
alternating which goes first, and report medians, the median of the paired ratios, and the
physical bound measured in the same rounds: the raw loop of the same records (os.pwrite, plus
os.fdatasync for "always", into a 64 MiB zero-filled file, as a segment is)::

    git worktree add /tmp/baseline main     # or: git archive main | tar -x -C /tmp/baseline
    python benchmarks/bench_ab.py /tmp/baseline             # this checkout against it
    python benchmarks/bench_ab.py /tmp/baseline --rounds-never 31 --rounds-always 21
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_BYTES = 600
#: (appends per round) by durability: "never" rounds short enough that writeback stays quiet.
COUNTS = {"never": 30_000, "always": 1_000}
RAW = "raw loop (bound)"

#: argv: checkout durability count bus-path; prints appends per second.
LIBRARY_LOOP = """
import os, shutil, sys, time
sys.path.insert(0, sys.argv[1])
from filelog_bus import LogWriter

durability, count, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
payload = bytes(range(256)) * 2 + bytes(88)
shutil.rmtree(path, ignore_errors=True)
with LogWriter(path, durability=durability) as writer:
    append = writer.append
    for _ in range(min(count, 2000)):  # warm-up: category cache, first pages
        append("cat", payload)
    start = time.perf_counter()
    for _ in range(count):
        append("cat", payload)
    elapsed = time.perf_counter() - start
shutil.rmtree(path)
print(count / elapsed)
"""

#: argv: durability count file-path; prints appends per second.
RAW_LOOP = """
import os, sys, time

durability, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
record = bytes(616)  # a 600-byte payload's record
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
chunk = bytes(1 << 20)
for position in range(0, 64 << 20, 1 << 20):
    os.pwrite(fd, chunk, position)
os.fsync(fd)
sync = durability == "always"
position = 32
start = time.perf_counter()
for _ in range(count):
    os.pwrite(fd, record, position)
    if sync:
        os.fdatasync(fd)
    position += len(record)
elapsed = time.perf_counter() - start
os.close(fd)
os.unlink(path)
print(count / elapsed)
"""


def run(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return float(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("baseline", type=Path, help="the checkout to compare against")
    parser.add_argument("--change", type=Path, default=ROOT, help="the checkout measured (default: this one)")
    parser.add_argument("--rounds-never", type=int, default=21)
    parser.add_argument("--rounds-always", type=int, default=15)
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/filelog-bench"), help="on the disk to measure"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        bus, raw = os.path.join(work, "bus"), os.path.join(work, "raw")
        print(
            "| durability | baseline /s | change /s | change / baseline (medians) | median of paired ratios | raw loop /s (bound) | rounds |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for durability, rounds in (("never", args.rounds_never), ("always", args.rounds_always)):
            if not rounds:
                continue
            count = str(COUNTS[durability])
            rates: dict[str, list[float]] = {"baseline": [], "change": [], RAW: []}
            for number in range(rounds):
                order = ("baseline", "change") if number % 2 == 0 else ("change", "baseline")
                for which in order:
                    checkout = str(args.baseline if which == "baseline" else args.change)
                    rates[which].append(run(LIBRARY_LOOP, checkout, durability, count, bus))
                rates[RAW].append(run(RAW_LOOP, durability, count, raw))
            base, change = median(rates["baseline"]), median(rates["change"])
            paired = median(c / b for b, c in zip(rates["baseline"], rates["change"], strict=True))
            print(
                f"| {durability} | {base:,.0f} ({1e6 / base:.2f} µs) | {change:,.0f} ({1e6 / change:.2f} µs) | "
                f"{change / base:.3f} | {paired:.3f} | {median(rates[RAW]):,.0f} | {rounds} |"
            )


if __name__ == "__main__":
    main()

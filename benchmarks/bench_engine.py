"""Engine benchmark (issue 2 item 10, issue 5 item 1): append, read, seek, find_next and reader memory.

Not a test. Every library number is paired with a reference measured in the same run (interleaved
rounds, medians), because absolute numbers on shared machines are noise::

    python benchmarks/bench_engine.py                 # 10k, 100k and 1M records
    python benchmarks/bench_engine.py --quick         # 10k and 100k, fewer rounds
    python benchmarks/bench_engine.py --sizes 10000 --profile
    python benchmarks/bench_engine.py --quick --append-only [--profile]

Append (issue 9 items 1-2): the library's durable append against loops measured in the same
rounds: the naive one (os.write to an O_APPEND file + fdatasync: every append grows the file, so
every fdatasync also commits its new size) and the preallocated ceiling, os.pwrite + fdatasync into
a file that already has the space, as a segment has it: 64 MiB, posix_fallocate'd or zero-filled
(the better of the two is the ceiling). Shown too, without a target: the same loop into a
zero-filled file only as long as its records, which this disk runs a few per cent faster. Then the
latency of each durable append over a run with 5 MiB segments that crosses at least 3 rolls
(median, p99, p99.9, max; target p99.9 <= 3 x median), next to the raw loop's own spread.

Buses are built once with durability="never" and cached in --workdir, so re-runs are quick.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import errno
import io
import itertools
import json
import os
import platform
import pstats
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from statistics import median
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
# Measure the checkout this script lives in, not whatever copy happens to be installed.
sys.path.insert(0, str(ROOT))

from filelog_bus import LogReader, LogWriter  # noqa: E402
from filelog_bus.layout import FILE_HEADER_SIZE, parse_segment_name, segment_name  # noqa: E402
from filelog_bus.record import decode_records, encode_record  # noqa: E402
from filelog_bus.segment import list_segment_bases  # noqa: E402
from filelog_bus.standby import fill_zeros  # noqa: E402

T = TypeVar("T")

PAYLOAD_BYTES = 600
#: The library's default segment size: the size of the preallocated files of the ceiling loops.
SEGMENT_BYTES = 64 * 2**20
COMMON_CATEGORIES = tuple(f"cat-{i}" for i in range(8))
RARE_CATEGORY = "rare"
ABSENT_CATEGORY = "absent"
CACHE_VERSION = 4  # bump when the content of the cached buses changes (4: format version 2, preallocated)
SEED = 20240601
REF_CHUNK = 256 * 1024  # what the reference decode loop reads at a time
PAYLOAD = random.Random(SEED).randbytes(PAYLOAD_BYTES)  # incompressible, like most real payloads

SEEK_TARGET_MS = 2.0
FIND_TARGET_MS = 10.0
READ_TARGET_PER_S = 500_000
#: issue 9: durable append against the naive O_APPEND write+fdatasync loop, and against the raw
#: preallocated loop (the ceiling: what the device allows when no append grows the file).
NAIVE_TARGET_RATIO = 1.3
CEILING_TARGET_RATIO = 0.9
#: issue 9: p99.9 of a durable append, over a run that crosses rolls, at most this times its median.
LATENCY_TAIL_FACTOR = 3.0
#: Segment size of the latency run: small, so that tens of thousands of appends cross several rolls,
#: and at least standby.BACKGROUND_BYTES, so that the next segment is prepared as with the default.
LATENCY_SEGMENT_BYTES = 5 * 2**20
LATENCY_MIN_ROLLS = 3
#: durability="never" has no target but must not get slower: the library/os.write ratio of the
#: previous RESULTS.md (engine 1680478: 173,036 vs 1,452,054 and 145,079 vs 1,416,816 rec/s), by
#: number of categories, and how far below it still counts as noise.
NEVER_PREVIOUS_RATIO = {1: 0.119, 8: 0.102}
NEVER_NOISE = 0.85


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much work each measurement does; --quick trades precision for time."""

    #: (rounds, records per round) by durability. Many short rounds for "always": fsync latency on a
    #: shared disk comes in bursts, and adjacent short rounds see the same burst.
    append_plan: dict[str, tuple[int, int]]
    read_rounds: int
    seeks: int
    finds: int
    budget_s: float  # stop repeating a latency measurement after this long (at least 5 samples)
    #: (rounds, appends per round) of the per-append latency run, library and raw loop alternating.
    latency_plan: tuple[int, int] = (3, 26_000)


FULL = Settings({"always": (31, 300), "never": (11, 50_000)}, 5, 2000, 30, 10.0, (3, 26_000))
QUICK = Settings({"always": (9, 200), "never": (5, 20_000)}, 3, 500, 10, 3.0, (1, 26_000))


# --------------------------------------------------------------------------- helpers


def p99(values: Sequence[float]) -> float:
    """99th percentile (nearest rank): the tail a caller sees once in a hundred."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def interleaved(
    rounds: int, first: Callable[[], float], second: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Run two measurements in ABBA order so drift and noise hit both alike."""
    a: list[float] = []
    b: list[float] = []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def repeat_ms(
    setup: Callable[[], T], action: Callable[[T], object], times: int, budget_s: float
) -> list[float]:
    """Latencies of ``action(setup())`` in ms, ``setup`` untimed; stops early once the budget is spent."""
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < times and (len(samples) < 5 or time.perf_counter() < deadline):
        value = setup()
        start = time.perf_counter_ns()
        action(value)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return samples


# --------------------------------------------------------------------------- append

#: The references of the append benchmark, by name: what a program without the library would do.
NAIVE = "os.write+fdatasync"  # O_APPEND: every append grows the file, so fdatasync also commits its size
FALLOCATED = "pwrite+fdatasync, fallocated"  # overwrite space posix_fallocate gave the file
ZERO_FILLED = "pwrite+fdatasync, zero-filled"  # overwrite space written with zeros beforehand
#: The same, into a file only as long as the records (not a segment's 64 MiB): shown, no target.
ZERO_FILLED_SHORT = "pwrite+fdatasync, short zero-filled"
WRITE_ONLY = "os.write"  # durability="never": the same bytes, no sync


def naive_append_rate(path: Path, record: bytes, count: int, sync: bool) -> float:
    """The same bytes with bare os.write to an O_APPEND file (+ os.fdatasync each) into a fresh file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for _ in range(count):
            os.write(fd, record)
            if sync:
                os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return count / elapsed


def preallocated_file(path: Path, size: int, zero_filled: bool) -> int:
    """A fresh file of ``size`` bytes (posix_fallocate'd, or written with zeros by the library's own
    ``fill_zeros``), durable with its directory entry, as the library creates a segment; returns
    an fd open for writing. Untimed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if zero_filled:
            if not fill_zeros(fd, 0, size):
                raise OSError(errno.ENOSPC, f"no room for {size} bytes of zeros", str(path))
        else:
            os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def preallocated_append_rate(path: Path, record: bytes, count: int, zero_filled: bool, size: int) -> float:
    """The ceiling: os.pwrite of each record in turn into space the file already has, + os.fdatasync."""
    fd = preallocated_file(path, size, zero_filled)
    try:
        position = 0
        start = time.perf_counter()
        for _ in range(count):
            os.pwrite(fd, record, position)
            position += len(record)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return count / elapsed


def lib_append_rate(path: Path, payload: bytes, categories: list[str], durability: str) -> float:
    """LogWriter.append of one record per item of ``categories`` into a fresh bus; its creation untimed:
    open, close, and the roll off its small first segment (segment.FIRST_SEGMENT_BYTES), which the
    64 MiB of zeros of the next one's standby wait for (bench_new_bus.py measures creation)."""
    shutil.rmtree(path, ignore_errors=True)
    with LogWriter(str(path), durability="never") as writer:
        while list_segment_bases(str(path))[-1] == 0:
            writer.append(COMMON_CATEGORIES[0], payload)
    with LogWriter(str(path), durability=durability) as writer:
        append = writer.append
        start = time.perf_counter()
        for category in categories:
            append(category, payload)
        elapsed = time.perf_counter() - start
    shutil.rmtree(path)
    return len(categories) / elapsed


def round_robin(count: int, categories: int) -> Iterator[str]:
    """Categories of ``count`` records cycling over the first ``categories`` common ones."""
    return itertools.islice(itertools.cycle(COMMON_CATEGORIES[:categories]), count)


def interleaved_all(rounds: int, measures: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every measurement once per round, in an order that rotates and reverses from round to
    round, so that drift and bursts of load hit all of them alike; samples by name, by round."""
    names = list(measures)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        shift = i % len(names)
        order = names[shift:] + names[:shift]
        if (i // len(names)) % 2:
            order.reverse()
        for name in order:
            samples[name].append(measures[name]())
    return samples


@dataclasses.dataclass(frozen=True)
class AppendResult:
    """One library row against one reference, both sampled in the same rounds."""

    durability: str
    categories: int
    count: int
    reference: str
    raw: list[float]
    lib: list[float]
    target: float | None  # lib/ref ratio to reach, if this row has a target

    @property
    def ratio(self) -> float:
        return median(self.lib) / median(self.raw)

    @property
    def paired(self) -> list[float]:
        return [lib / raw for lib, raw in zip(self.lib, self.raw, strict=True)]


def bench_append(workdir: Path, settings: Settings) -> tuple[list[AppendResult], dict[str, list[float]], int]:
    """append/s per durability against the references, all measured in the same rounds.

    Returns the rows, every reference's samples by name, and the encoded record size. With one
    category the category index gets one entry per index block; with all the common categories in
    turn (as in the cached buses) it gets about one per record.
    """
    record = encode_record(COMMON_CATEGORIES[0], time.time(), PAYLOAD)  # all common names are equally long
    results: list[AppendResult] = []
    references: dict[str, list[float]] = {}
    for durability, (rounds, count) in settings.append_plan.items():
        names = {n: list(round_robin(count, n)) for n in (1, len(COMMON_CATEGORIES))}  # built untimed
        measures: dict[str, Callable[[], float]] = {}
        if durability == "always":
            measures[NAIVE] = partial(naive_append_rate, workdir / "raw.append", record, count, True)
            for name, zero_filled, size in (
                (FALLOCATED, False, SEGMENT_BYTES),
                (ZERO_FILLED, True, SEGMENT_BYTES),
                (ZERO_FILLED_SHORT, True, count * len(record)),
            ):
                measures[name] = partial(
                    preallocated_append_rate, workdir / "raw.prealloc", record, count, zero_filled, size
                )
        else:
            measures[WRITE_ONLY] = partial(naive_append_rate, workdir / "raw.append", record, count, False)
        for n, categories in names.items():
            measures[f"lib{n}"] = partial(
                lib_append_rate, workdir / "lib.append", PAYLOAD, categories, durability
            )
        samples = interleaved_all(rounds, measures)
        for n in names:
            lib = samples[f"lib{n}"]
            if durability == "always":
                ceiling = max((FALLOCATED, ZERO_FILLED), key=lambda name: median(samples[name]))
                results.append(
                    AppendResult(durability, n, count, NAIVE, samples[NAIVE], lib, NAIVE_TARGET_RATIO)
                )
                results.append(
                    AppendResult(durability, n, count, ceiling, samples[ceiling], lib, CEILING_TARGET_RATIO)
                )
                short = samples[ZERO_FILLED_SHORT]
                results.append(AppendResult(durability, n, count, ZERO_FILLED_SHORT, short, lib, None))
            else:
                previous = NEVER_PREVIOUS_RATIO[n] * NEVER_NOISE
                results.append(
                    AppendResult(durability, n, count, WRITE_ONLY, samples[WRITE_ONLY], lib, previous)
                )
        for name, values in samples.items():
            if not name.startswith("lib"):
                references.setdefault(name, values)
    return results, references, len(record)


# --------------------------------------------------------------------------- append latency across rolls


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Per-append latencies (ms) of durable appends over a run that crosses rolls, and of the raw loop."""

    lib_ms: list[float]
    raw_ms: list[float]
    roll_ms: list[float]  # the library appends that rolled to a new segment
    rolls: int
    rounds: int

    @staticmethod
    def tail(values: Sequence[float]) -> tuple[float, float, float, float]:
        """median, p99, p99.9 (nearest rank) and max."""
        ordered = sorted(values)
        last = len(ordered) - 1
        return (
            median(ordered),
            ordered[min(last, int(0.99 * len(ordered)))],
            ordered[min(last, int(0.999 * len(ordered)))],
            ordered[-1],
        )


def lib_append_latencies(path: Path, payload: bytes, count: int) -> tuple[list[float], list[float], int]:
    """ms per durable LogWriter.append into a fresh bus of LATENCY_SEGMENT_BYTES segments.

    Returns every latency, those of the appends that rolled, and the number of rolls.
    """
    shutil.rmtree(path, ignore_errors=True)
    samples: list[float] = []
    offsets: list[int] = []
    clock = time.perf_counter_ns
    with LogWriter(str(path), durability="always", segment_bytes=LATENCY_SEGMENT_BYTES) as writer:
        append = writer.append
        for _ in range(count):
            start = clock()
            offset = append(COMMON_CATEGORIES[0], payload)
            samples.append((clock() - start) / 1e6)
            offsets.append(offset)
    bases = {base for name in os.listdir(path) if (base := parse_segment_name(name)) is not None}
    shutil.rmtree(path)
    rolled = [ms for ms, offset in zip(samples, offsets, strict=True) if offset in bases and offset > 0]
    return samples, rolled, len(bases) - 1


def raw_append_latencies(path: Path, record: bytes, count: int) -> list[float]:
    """ms per pwrite+fdatasync into a zero-filled file: the disk's own latency spread."""
    fd = preallocated_file(path, count * len(record), zero_filled=True)
    samples: list[float] = []
    clock = time.perf_counter_ns
    try:
        position = 0
        for _ in range(count):
            start = clock()
            os.pwrite(fd, record, position)
            os.fdatasync(fd)
            samples.append((clock() - start) / 1e6)
            position += len(record)
    finally:
        os.close(fd)
        path.unlink()
    return samples


def bench_latency(workdir: Path, settings: Settings) -> LatencyResult:
    """Durable appends across rolls, library and raw loop in alternate rounds, samples pooled."""
    rounds, count = settings.latency_plan
    record = encode_record(COMMON_CATEGORIES[0], time.time(), PAYLOAD)
    lib: list[float] = []
    raw: list[float] = []
    rolled: list[float] = []
    rolls = 0
    for i in range(rounds):
        for which in ("lib", "raw") if i % 2 == 0 else ("raw", "lib"):
            if which == "lib":
                samples, roll_samples, round_rolls = lib_append_latencies(
                    workdir / "lib.latency", PAYLOAD, count
                )
                lib += samples
                rolled += roll_samples
                rolls += round_rolls
            else:
                raw += raw_append_latencies(workdir / "raw.latency", record, count)
    return LatencyResult(lib, raw, rolled, rolls, rounds)


# --------------------------------------------------------------------------- cached buses


@dataclasses.dataclass(frozen=True)
class Bus:
    """A cached benchmark bus and what the benchmark needs to know about it."""

    path: Path
    records: int
    rare_offset: int  # first record of RARE_CATEGORY, ~99 % of the way in
    end_offset: int
    record_size: int
    build_rate: float | None  # append/s while building (None: reused from the cache)

    @property
    def data_bytes(self) -> int:
        """The records' bytes (offsets start at 0 and no retention runs here): not the file sizes,
        since the active segment is preallocated past its data."""
        return self.end_offset

    @property
    def allocated_bytes(self) -> int:
        """What every file of the bus takes on disk, preallocated space and index files included."""
        return sum(f.stat().st_blocks * 512 for f in self.path.iterdir() if f.is_file())


def rare_indexes(records: int) -> set[int]:
    """Where RARE_CATEGORY goes: once near the end, once at the very end."""
    return {records - max(1, records // 100), records - 1}


def build_bus(path: Path, records: int) -> Bus:
    """Write ``records`` records of PAYLOAD_BYTES, round-robin over the common categories."""
    shutil.rmtree(path, ignore_errors=True)
    rare = rare_indexes(records)
    first_rare = min(rare)
    rare_offset = -1
    start = time.perf_counter()
    with LogWriter(str(path), durability="never") as writer:
        append = writer.append
        for i, category in enumerate(round_robin(records, len(COMMON_CATEGORIES))):
            offset = append(RARE_CATEGORY if i in rare else category, PAYLOAD)
            if i == first_rare:
                rare_offset = offset
        end_offset = writer.end_offset
    rate = records / (time.perf_counter() - start)
    return Bus(path, records, rare_offset, end_offset, end_offset // records, rate)


def cached_bus(workdir: Path, records: int, rebuild: bool) -> Bus:
    """Reuse a bus from an earlier run when its marker matches and it still reads back right."""
    path = workdir / f"bus-{records}"
    marker = workdir / f"bus-{records}.json"
    if not rebuild and marker.exists():
        meta = json.loads(marker.read_text())
        bus = Bus(path, records, meta["rare_offset"], meta["end_offset"], meta["record_size"], None)
        if meta.get("version") == CACHE_VERSION and bus_is_intact(bus):
            return bus
        print(f"  cached bus {path} is stale; rebuilding", flush=True)
    marker.unlink(missing_ok=True)
    print(f"  building {records:,} records in {path} ...", flush=True)
    bus = build_bus(path, records)
    meta = {"version": CACHE_VERSION, "rare_offset": bus.rare_offset, "end_offset": bus.end_offset}
    marker.write_text(json.dumps({**meta, "record_size": bus.record_size}))
    return bus


def bus_is_intact(bus: Bus) -> bool:
    """Cheap check that a cached bus is complete and readable by the engine under test."""
    try:
        with LogReader(str(bus.path), timeout=0) as reader:
            if reader.end_offset != bus.end_offset:
                return False
            reader.seek(bus.rare_offset)
            record = next(iter(reader), None)
            return record is not None and record.category == RARE_CATEGORY
    except Exception as exc:  # any failure means: rebuild
        print(f"  cached bus {bus.path} unreadable: {exc!r}", flush=True)
        return False


# --------------------------------------------------------------------------- read, seek, find_next


def read_all(bus: Bus) -> int:
    """Iterate the whole bus with one LogReader; returns the record count."""
    count = 0
    with LogReader(str(bus.path), timeout=0) as reader:
        reader.seek_to_beginning()
        for _ in reader:
            count += 1
    return count


def decode_all(bus: Bus) -> int:
    """Framing reference: stream each segment file in REF_CHUNK reads into record.decode_records.

    The floor of what a pure-Python reader of this format can do, with no position or index logic.
    Each segment is read up to where the next one begins, the newest up to the bus's end: past it,
    a preallocated segment holds only zeros.
    """
    bases = sorted(b for name in os.listdir(bus.path) if (b := parse_segment_name(name)) is not None)
    count = 0
    for base, end in zip(bases, [*bases[1:], bus.end_offset], strict=True):
        with (bus.path / segment_name(base)).open("rb", buffering=0) as file:
            file.seek(FILE_HEADER_SIZE)
            left = end - base
            pending = b""
            while left > 0 and (chunk := file.read(min(REF_CHUNK, left))):
                left -= len(chunk)
                data = pending + chunk if pending else chunk
                batch = decode_records(data, base)
                count += len(batch.records)
                base += batch.consumed
                pending = data[batch.consumed :]
    return count


def timed_rate(count_records: Callable[[Bus], int], bus: Bus) -> float:
    """records/s of one full pass; a short count means the engine lost records, which is fatal here."""
    start = time.perf_counter()
    count = count_records(bus)
    elapsed = time.perf_counter() - start
    if count != bus.records:
        raise SystemExit(f"{count_records.__name__} returned {count} records, expected {bus.records}")
    return count / elapsed


def random_offsets(bus: Bus, count: int, seed: int = SEED) -> list[int]:
    """Uniform byte offsets that have at least one record at or after them."""
    rng = random.Random(seed)
    return [rng.randrange(0, bus.end_offset - 2 * bus.record_size) for _ in range(count)]


def seek_and_read(reader: LogReader, offset: int) -> None:
    reader.seek(offset)
    if next(iter(reader), None) is None:
        raise SystemExit(f"seek({offset}) then read gave no record")


def find_rare(reader: LogReader, bus: Bus) -> None:
    found = reader.find_next(RARE_CATEGORY)
    if found is None or found.offset != bus.rare_offset:
        raise SystemExit(f"find_next({RARE_CATEGORY!r}) gave {found!r}, expected offset {bus.rare_offset}")


def find_absent(reader: LogReader) -> None:
    if reader.find_next(ABSENT_CATEGORY) is not None:
        raise SystemExit(f"find_next({ABSENT_CATEGORY!r}) found a record")


@dataclasses.dataclass(frozen=True)
class SizeResult:
    bus: Bus
    read: list[float]
    decode: list[float]
    seek_only_ms: list[float]
    seek_ms: list[float]
    rare_ms: list[float]
    rare_new_reader_ms: list[float]
    absent_ms: list[float]
    memory: Memory
    baseline: Memory


def bench_size(bus: Bus, settings: Settings, memory: Memory, baseline: Memory) -> SizeResult:
    """Timings on a warm page cache; memory comes from children spawned before the parent grew."""
    read, decode = interleaved(
        settings.read_rounds, lambda: timed_rate(read_all, bus), lambda: timed_rate(decode_all, bus)
    )
    times, budget = settings.finds, settings.budget_s
    with LogReader(str(bus.path), timeout=0) as reader, contextlib.ExitStack() as fresh:
        offsets = random_offsets(bus, settings.seeks)
        seek_only_ms = repeat_ms(iter(offsets).__next__, reader.seek, settings.seeks, budget)
        seek_ms = repeat_ms(
            iter(offsets).__next__, lambda o: seek_and_read(reader, o), settings.seeks, budget
        )

        def at_beginning() -> LogReader:
            reader.seek_to_beginning()
            return reader

        def new_reader() -> LogReader:
            """A consumer's first find_next also pays for loading the category indexes."""
            fresh.close()  # one at a time: a pile of open readers would only measure page faults
            return fresh.enter_context(LogReader(str(bus.path), timeout=0))

        rare_ms = repeat_ms(at_beginning, lambda r: find_rare(r, bus), times, budget)
        rare_new_ms = repeat_ms(new_reader, lambda r: find_rare(r, bus), times, budget)
        absent_ms = repeat_ms(at_beginning, find_absent, times, budget)
    return SizeResult(
        bus, read, decode, seek_only_ms, seek_ms, rare_ms, rare_new_ms, absent_ms, memory, baseline
    )


# --------------------------------------------------------------------------- reader memory (child process)


@dataclasses.dataclass(frozen=True)
class Memory:
    """Peak memory of one child process, in KiB.

    ``ru_maxrss`` also counts the parent's resident set at spawn time (Linux carries the pre-exec
    high-water mark into the child's), so it is only as clean as the parent is small; VmHWM from
    /proc/self/status is reset by exec and is the child's own peak.
    """

    maxrss_kb: int
    hwm_kb: int

    @property
    def peak_kb(self) -> int:
        return self.hwm_kb or self.maxrss_kb


def own_memory() -> Memory:
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:  # not Linux: ru_maxrss is all there is
        return Memory(maxrss_kb, 0)
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return Memory(maxrss_kb, int(hwm.split()[1]))


def child_memory(mode: str, bus: Bus | None = None) -> Memory:
    """Peak memory of a fresh interpreter running this script in ``--child`` mode."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    if bus is not None:
        command += ["--child-bus", json.dumps({**dataclasses.asdict(bus), "path": str(bus.path)})]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return Memory(**json.loads(out))


def run_child(mode: str, bus_json: str | None) -> None:
    """Child side: 'baseline' only imports filelog_bus (done at module import); 'reader' reads everything."""
    if mode == "reader" and bus_json:
        fields = json.loads(bus_json)
        bus = Bus(**{**fields, "path": Path(fields["path"])})
        timed_rate(read_all, bus)
        with LogReader(str(bus.path), timeout=0) as reader:
            for offset in random_offsets(bus, 200):
                seek_and_read(reader, offset)
            reader.seek_to_beginning()
            find_rare(reader, bus)
            reader.seek_to_beginning()
            find_absent(reader)
    print(json.dumps(dataclasses.asdict(own_memory())))


# --------------------------------------------------------------------------- profiling


def profile(label: str, action: Callable[[], object], top: int) -> None:
    """Print the functions that dominate ``action`` by own time (tottime)."""
    profiler = cProfile.Profile()
    profiler.runcall(action)
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream).strip_dirs().sort_stats("tottime")
    stats.print_stats(top)
    body = stream.getvalue()
    print(f"\n--- cProfile: {label} (top {top} by tottime)")
    print(body[body.find("   ncalls") :].rstrip())


def profile_appends(workdir: Path, top: int) -> None:
    for durability, count in (("never", 20_000), ("always", 1_000)):
        names = list(round_robin(count, len(COMMON_CATEGORIES)))
        profile(
            f"{count} appends over {len(COMMON_CATEGORIES)} categories, durability={durability}",
            lambda: lib_append_rate(workdir / "lib.append", PAYLOAD, names, durability),  # noqa: B023
            top,
        )


def profile_reads(bus: Bus, top: int) -> None:
    profile(f"read all {bus.records:,} records", lambda: read_all(bus), top)
    with LogReader(str(bus.path), timeout=0) as reader:
        profile("500 seek+read", lambda: [seek_and_read(reader, o) for o in random_offsets(bus, 500)], top)
        reader.seek_to_beginning()
        profile(f"find_next({RARE_CATEGORY!r}) from the beginning", lambda: find_rare(reader, bus), top)
        reader.seek_to_beginning()
        profile(f"find_next({ABSENT_CATEGORY!r}) from the beginning", lambda: find_absent(reader), top)


# --------------------------------------------------------------------------- report


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Right-aligned plain-text table: readable in a terminal and in a Markdown code block."""
    rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def report_append(results: list[AppendResult], references: dict[str, list[float]], record_size: int) -> None:
    print(
        f"\nAppend ({record_size} B records on disk; references and library measured in the same rounds, "
        "order rotating; lib/ref is the ratio of the medians, paired the ratios within each round)"
    )
    for name, values in references.items():
        print(
            f"  reference {name}: median {median(values):,.0f} rec/s ({min(values):,.0f}-{max(values):,.0f})"
        )
    rows = []
    for r in results:
        paired = r.paired
        if r.target is None:
            target = "-"
        elif r.durability == "never":
            target = f">= {r.target:.3f} (no slower than RESULTS.md) {verdict(r.ratio >= r.target)}"
        else:
            kind = "naive" if r.reference == NAIVE else "ceiling"
            target = f"{kind} >= {r.target} {verdict(r.ratio >= r.target)}"
        rows.append(
            [
                r.durability,
                str(r.categories),
                f"{len(r.raw)} x {r.count:,}",
                r.reference,
                f"{median(r.raw):,.0f}",
                f"{median(r.lib):,.0f}",
                f"{r.ratio:.3f}",
                f"{median(paired):.3f} ({min(paired):.2f}-{max(paired):.2f})",
                target,
            ]
        )
    header = [
        "durability",
        "categories",
        "rounds x recs",
        "reference",
        "ref rec/s",
        "lib rec/s",
        "lib/ref",
        "paired: median (range)",
        "target",
    ]
    print(table(header, rows))


def report_latency(result: LatencyResult) -> None:
    per_round = len(result.lib_ms) // result.rounds
    print(
        f"\nDurable append latency across rolls ({result.rounds} x {per_round:,} appends, "
        f"segment_bytes={LATENCY_SEGMENT_BYTES:,}, {result.rolls} rolls; raw = pwrite+fdatasync into a "
        "zero-filled file, alternate rounds; ms)"
    )
    rows = []
    for label, values in (("library", result.lib_ms), ("raw loop", result.raw_ms)):
        mid, p_99, p_999, top = LatencyResult.tail(values)
        rows.append([label, f"{mid:.3f}", f"{p_99:.3f}", f"{p_999:.3f}", f"{top:.3f}", f"{p_999 / mid:.2f}"])
    header = ["", "median", "p99", "p99.9", "max", "p99.9/median"]
    print(table(header, rows))
    mid, _, p_999, _ = LatencyResult.tail(result.lib_ms)
    rolled = sorted(result.roll_ms)
    print(
        f"  appends that rolled: {', '.join(f'{ms:.2f}' for ms in rolled)} ms "
        f"({max(rolled) / mid if rolled else 0:.1f}x the median at most)"
    )
    ok = p_999 <= LATENCY_TAIL_FACTOR * mid and result.rolls >= LATENCY_MIN_ROLLS * result.rounds
    print(
        f"  target p99.9 <= {LATENCY_TAIL_FACTOR:g} x median over >= {LATENCY_MIN_ROLLS} rolls: "
        f"{p_999:.3f} <= {LATENCY_TAIL_FACTOR * mid:.3f} ms {verdict(ok)}"
    )


def report_sizes(results: list[SizeResult]) -> None:
    print("\nRead (warm page cache; reference = 256 KiB reads + record.decode_records; medians)")
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.bus.records:,}",
                f"{r.bus.data_bytes / 2**20:,.0f} / {r.bus.allocated_bytes / 2**20:,.0f}",
                "cached" if r.bus.build_rate is None else f"{r.bus.build_rate:,.0f}",
                f"{median(r.decode):,.0f}",
                f"{median(r.read):,.0f}",
                f"{median(r.read) / median(r.decode):.2f}",
                verdict(median(r.read) >= READ_TARGET_PER_S),
            ]
        )
    header = [
        "records",
        "MiB data / on disk",
        "build rec/s",
        "ref rec/s",
        "read rec/s",
        "read/ref",
        f">= {READ_TARGET_PER_S:,}",
    ]
    print(table(header, rows))

    print(
        "\nLatency in ms (median / p99, the max below 100 samples); peak RSS in MiB of a child that "
        "reads the whole bus, seeks and finds (VmHWM, and ru_maxrss)"
    )
    rows = []
    for r in results:
        latencies = (r.seek_only_ms, r.seek_ms, r.rare_ms, r.rare_new_reader_ms, r.absent_ms)
        seek_ok = median(r.seek_ms) <= SEEK_TARGET_MS
        find_ok = max(median(r.rare_ms), median(r.rare_new_reader_ms)) <= FIND_TARGET_MS
        rows.append(
            [
                f"{r.bus.records:,}",
                *[f"{median(ms):.3f} / {p99(ms):.3f}" for ms in latencies],
                f"{r.memory.peak_kb / 1024:.1f}",
                f"{(r.memory.peak_kb - r.baseline.peak_kb) / 1024:+.1f}",
                f"{r.memory.maxrss_kb / 1024:.1f}",
                verdict(seek_ok and find_ok),
            ]
        )
    header = ["records", "seek", "seek+read", "find rare", "find rare, new reader", "find absent"]
    header += ["RSS", "vs import", "maxrss", "targets"]
    print(table(header, rows))
    if len(results) > 1:
        small, large = results[0], results[-1]
        growth = large.bus.records / small.bus.records
        print(
            f"\nFlatness {small.bus.records:,} -> {large.bus.records:,} records (x{growth:,.0f}): "
            f"seek x{median(large.seek_ms) / median(small.seek_ms):.2f}, "
            f"find_next rare x{median(large.rare_ms) / median(small.rare_ms):.2f} "
            f"(new reader x{median(large.rare_new_reader_ms) / median(small.rare_new_reader_ms):.2f}), "
            f"find_next absent x{median(large.absent_ms) / median(small.absent_ms):.2f}, "
            f"read rec/s x{median(large.read) / median(small.read):.2f}, "
            f"RSS {small.memory.peak_kb / 1024:.1f} -> {large.memory.peak_kb / 1024:.1f} MiB "
            f"(import-only child {small.baseline.peak_kb / 1024:.1f} MiB)"
        )


def output_of(*command: str) -> str:
    """stdout of a read-only helper command, or '?' when it is not available."""
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip() or "?"
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine(workdir: Path) -> str:
    """What the numbers were measured on: engine version, CPUs, Python, the filesystem under --workdir."""
    df = output_of("df", "-hT", str(workdir)).splitlines()
    fs = " ".join(df[-1].split()[:3]) if len(df) > 1 else "?"
    commit = output_of("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
    dirty = (
        output_of(
            "git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "--", "filelog_bus"
        )
        != "?"
    )
    return (
        f"engine={commit}{'+uncommitted' if dirty else ''} nproc={os.cpu_count()} "
        f"python={platform.python_version()} kernel={platform.release()} workdir={workdir} fs={fs} "
        f"load={os.getloadavg()[0]:.2f}"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k records only, fewer rounds")
    parser.add_argument("--sizes", help="comma-separated bus sizes in records (default 10000,100000,1000000)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/filelog-bench"), help="bus cache directory"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached buses")
    parser.add_argument("--skip-append", action="store_true", help="skip the append benchmarks")
    parser.add_argument(
        "--append-only", action="store_true", help="only the append benchmarks (rates and latency)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile appends and the largest bus's reads")
    parser.add_argument("--profile-top", type=int, default=12, help="functions shown per profile")
    parser.add_argument("--child", choices=["baseline", "reader"], help=argparse.SUPPRESS)
    parser.add_argument("--child-bus", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.child_bus)
        return
    settings = QUICK if args.quick else FULL
    default_sizes = "10000,100000" if args.quick else "10000,100000,1000000"
    sizes = sorted(int(s.replace("_", "")) for s in (args.sizes or default_sizes).split(","))
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bench_engine: {' '.join(sys.argv)}\n{machine(workdir)}", flush=True)

    if not args.skip_append:
        appends, references, record_size = bench_append(workdir, settings)
        report_append(appends, references, record_size)
        report_latency(bench_latency(workdir, settings))
    if args.append_only:
        print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine)")
        if args.profile:
            profile_appends(workdir, args.profile_top)
        return

    buses = []
    for records in sizes:
        need = records * (PAYLOAD_BYTES + 64) * 1.2 + 2**30
        if shutil.disk_usage(workdir).free < need and not (workdir / f"bus-{records}.json").exists():
            print(f"  skipping {records:,} records: not enough free space in {workdir}", flush=True)
            continue
        buses.append(cached_bus(workdir, records, args.rebuild))
    # Memory first, while this process is small: a child's ru_maxrss inherits the parent's peak.
    parent = own_memory()
    baseline = child_memory("baseline")
    memories = [child_memory("reader", bus) for bus in buses]
    print(f"  parent peak RSS when spawning the memory children: {parent.peak_kb / 1024:.1f} MiB", flush=True)
    results = []
    for bus, memory in zip(buses, memories, strict=True):
        print(f"  measuring {bus.records:,} records ...", flush=True)
        results.append(bench_size(bus, settings, memory, baseline))
    report_sizes(results)

    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine)")
    if args.profile:
        profile_appends(workdir, args.profile_top)
        if results:
            profile_reads(results[-1].bus, args.profile_top)


if __name__ == "__main__":
    main()

"""Engine benchmark (issue 2 item 10, issue 5 item 1): append, read, seek, find_next and reader memory.

Not a test. Every library number is paired with a reference measured in the same run (interleaved
rounds, medians), because absolute numbers on shared machines are noise::

    python benchmarks/bench_engine.py                 # 10k, 100k and 1M records
    python benchmarks/bench_engine.py --quick         # 10k and 100k, fewer rounds
    python benchmarks/bench_engine.py --sizes 10000 --profile

Buses are built once with durability="never" and cached in --workdir, so re-runs are quick.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
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
from pathlib import Path
from statistics import median
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
# Measure the checkout this script lives in, not whatever copy happens to be installed.
sys.path.insert(0, str(ROOT))

from filelog_bus import LogReader, LogWriter  # noqa: E402
from filelog_bus.layout import FILE_HEADER_SIZE, parse_segment_name  # noqa: E402
from filelog_bus.record import decode_records, encode_record  # noqa: E402

T = TypeVar("T")

PAYLOAD_BYTES = 600
COMMON_CATEGORIES = tuple(f"cat-{i}" for i in range(8))
RARE_CATEGORY = "rare"
ABSENT_CATEGORY = "absent"
CACHE_VERSION = 3  # bump when the content of the cached buses changes
SEED = 20240601
REF_CHUNK = 256 * 1024  # what the reference decode loop reads at a time
PAYLOAD = random.Random(SEED).randbytes(PAYLOAD_BYTES)  # incompressible, like most real payloads

SEEK_TARGET_MS = 2.0
FIND_TARGET_MS = 10.0
READ_TARGET_PER_S = 500_000
APPEND_TARGET_RATIO = 0.85


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


FULL = Settings({"always": (31, 300), "never": (11, 50_000)}, 5, 2000, 30, 10.0)
QUICK = Settings({"always": (9, 200), "never": (5, 20_000)}, 3, 500, 10, 3.0)


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


def raw_append_rate(path: Path, record: bytes, count: int, sync: bool) -> float:
    """Physical reference: the same bytes with bare os.write (+ os.fdatasync) into a fresh file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
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


def lib_append_rate(path: Path, payload: bytes, categories: list[str], durability: str) -> float:
    """LogWriter.append of one record per item of ``categories`` into a fresh bus; open and close untimed."""
    shutil.rmtree(path, ignore_errors=True)
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


@dataclasses.dataclass(frozen=True)
class AppendResult:
    durability: str
    categories: int
    count: int
    raw: list[float]
    lib: list[float]

    @property
    def ratio(self) -> float:
        return median(self.lib) / median(self.raw)

    @property
    def paired(self) -> list[float]:
        return [lib / raw for lib, raw in zip(self.lib, self.raw, strict=True)]


def bench_append(workdir: Path, settings: Settings) -> tuple[list[AppendResult], int]:
    """append/s per durability against the raw loop; also returns the encoded record size.

    With one category the category index gets one entry per index block; with all the common
    categories in turn (as in the cached buses) it gets about one per record.
    """
    record = encode_record(COMMON_CATEGORIES[0], time.time(), PAYLOAD)  # all common names are equally long
    results = []
    for durability, (rounds, count) in settings.append_plan.items():
        for categories in (1, len(COMMON_CATEGORIES)):
            names = list(round_robin(count, categories))  # built before the timed loop
            raw, lib = interleaved(
                rounds,
                lambda: raw_append_rate(workdir / "raw.append", record, count, durability == "always"),  # noqa: B023
                lambda: lib_append_rate(workdir / "lib.append", PAYLOAD, names, durability),  # noqa: B023
            )
            results.append(AppendResult(durability, categories, count, raw, lib))
    return results, len(record)


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
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())


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
    """
    count = 0
    for path in sorted(bus.path.iterdir()):
        base = parse_segment_name(path.name)
        if base is None:
            continue
        with path.open("rb", buffering=0) as file:
            file.seek(FILE_HEADER_SIZE)
            pending = b""
            while chunk := file.read(REF_CHUNK):
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


def profile_all(workdir: Path, bus: Bus, top: int) -> None:
    for durability, count in (("never", 20_000), ("always", 1_000)):
        names = list(round_robin(count, len(COMMON_CATEGORIES)))
        profile(
            f"{count} appends over {len(COMMON_CATEGORIES)} categories, durability={durability}",
            lambda: lib_append_rate(workdir / "lib.append", PAYLOAD, names, durability),  # noqa: B023
            top,
        )
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


def report_append(results: list[AppendResult], record_size: int) -> None:
    print(
        f"\nAppend ({record_size} B records on disk, interleaved ref/lib rounds; lib/ref is the ratio of "
        "the medians, paired the ratios of adjacent rounds)"
    )
    rows = []
    for r in results:
        paired = r.paired
        target = f">= {APPEND_TARGET_RATIO}" if r.durability == "always" else "-"
        ok = verdict(r.ratio >= APPEND_TARGET_RATIO) if r.durability == "always" else ""
        reference = "os.write+fdatasync" if r.durability == "always" else "os.write"
        rows.append(
            [
                r.durability,
                str(r.categories),
                f"{len(r.raw)} x {r.count:,}",
                reference,
                f"{median(r.raw):,.0f}",
                f"{median(r.lib):,.0f}",
                f"{r.ratio:.3f}",
                f"{median(paired):.3f} ({min(paired):.2f}-{max(paired):.2f})",
                f"{target} {ok}".strip(),
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


def report_sizes(results: list[SizeResult]) -> None:
    print("\nRead (warm page cache; reference = 256 KiB reads + record.decode_records; medians)")
    rows = []
    for r in results:
        rows.append(
            [
                f"{r.bus.records:,}",
                f"{r.bus.size_bytes / 2**20:,.0f}",
                "cached" if r.bus.build_rate is None else f"{r.bus.build_rate:,.0f}",
                f"{median(r.decode):,.0f}",
                f"{median(r.read):,.0f}",
                f"{median(r.read) / median(r.decode):.2f}",
                verdict(median(r.read) >= READ_TARGET_PER_S),
            ]
        )
    header = [
        "records",
        "bus MiB",
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
    parser.add_argument("--skip-append", action="store_true", help="skip the append benchmark")
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
        appends, record_size = bench_append(workdir, settings)
        report_append(appends, record_size)

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
    if args.profile and results:
        profile_all(workdir, results[-1].bus, args.profile_top)


if __name__ == "__main__":
    main()

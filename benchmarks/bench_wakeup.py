"""Waiting readers (issue 18): wake-up mechanisms side by side with today's polling reader.

    python benchmarks/bench_wakeup.py            # the issue's sizes: 30 s idle runs, K = 10, 50, 200
    python benchmarks/bench_wakeup.py --quick    # shorter idle runs and fewer appends

Mechanisms, each measured in the same run:

  poll     the baseline: the writer wakes nobody; readers sleep-poll the watermark every 10 ms
           (LogReader's poll_interval), the Hermes consumer every 20 ms (its POLL_SECONDS);
  futex    the library: FUTEX_WAIT on the watermark page, FUTEX_WAKE after publishing, coalesced
           by a ringer thread (filelog_bus/wakeup.py);
  inotify  a prototype of the alternative: the writer pwrites one byte into a doorbell file
           (outside the bus, coalesced with a clock read: at most one ring per ms), readers block
           on an inotify watch of it (inotify_simple) and re-check every 2 ms while the watermark
           moves; needs `pip install inotify_simple`, else its rows are skipped.

Measured: the writer's cost (durability="never" and durable append rates, interleaved rounds,
ratios to the writer that wakes nobody); delivery latency from append() returning to a reader
process yielding the record (p50/p99/p99.9, paced appends, both durabilities), with the futex
round trip between two processes as the physical bound; CPU of one idle waiting reader and of an
idle Hermes consumer plugin iterating with a 60 s timeout (from /proc/PID/schedstat); a durable
writer's rate with K tailing reader processes as a ratio of its solo rate, measured just before.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "helpers" / "hermes_standin"
sys.path[:0] = [str(STANDIN), str(ROOT)]

from filelog_bus import LogReader, LogWriter, wakeup  # noqa: E402

MECHANISMS = ("poll", "futex", "inotify")
PAYLOAD = b"p" * 200
LATENCY_GOAL_MS = 5.0
IDLE_GOAL_PERCENT = 0.05
TAIL_GOALS = {10: 0.97, 50: 0.95, 200: 0.9}
NEVER_GOAL = 0.97


@dataclass
class Settings:
    rate_rounds: int
    never_appends: int
    durable_appends: int
    latency_records: int
    idle_seconds: float
    tail_rounds: int
    tail_appends: int
    tail_readers: tuple[int, ...]


FULL = Settings(11, 50_000, 300, 2000, 30.0, 15, 100, (10, 50, 200))
QUICK = Settings(7, 20_000, 200, 1000, 10.0, 9, 60, (10, 50, 200))


def have_inotify() -> bool:
    try:
        import inotify_simple  # noqa: F401
    except ImportError:
        return False
    return True


# -- what each mechanism changes in a process --------------------------------------------------------


def force_polling() -> None:
    """Make this process's readers poll, as before issue 18 (before any bus is opened)."""
    wakeup._missing = "were told to poll (benchmark baseline)"
    wakeup._told.add(wakeup._missing)  # no log line


#: The inotify prototype coalesces as a first design of the futex waker did: a clock read per
#: append, a ring when the last one is older than this, and readers that re-check every
#: PROTOTYPE_WINDOW while the watermark moves (docs/WAKEUP.md).
PROTOTYPE_INTERVAL = 0.001
PROTOTYPE_WINDOW = 0.002


class Doorbell:
    """The inotify prototype's writer side: a one-byte pwrite after appends, coalesced (or not)."""

    def __init__(self, path: Path, every: bool) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.interval = 0.0 if every else PROTOTYPE_INTERVAL
        self._previous = self._rung_after = float("-inf")

    def published(self) -> None:
        now = time.monotonic()
        if now - self._rung_after >= self.interval:
            self._rung_after = self._previous
            os.pwrite(self.fd, b"\0", 0)
        self._previous = now


def open_writer(
    mechanism: str, bus: Path, *, every: bool = False, **settings: object
) -> tuple[LogWriter, Callable[[], None]]:
    """A writer for ``mechanism`` and what to call after each append: nothing for the library's
    own futex waker; with ``every``, a wake-up per append instead (no coalescing)."""
    writer = LogWriter(bus, **settings).open()  # type: ignore[arg-type]
    publisher = writer._watermark
    assert publisher is not None
    if mechanism == "futex" and not every:
        return writer, lambda: None
    waker, publisher._waker = publisher._waker, None  # wakes nobody, as before issue 18
    if waker is not None:
        waker.close()
    if mechanism == "inotify":
        return writer, Doorbell(doorbell_path(bus), every).published
    if mechanism == "futex":
        word = wakeup._map_word(publisher.fd)
        assert word is not None
        return writer, word.wake
    return writer, lambda: None


def end_of(bus: Path | str) -> int:
    with LogReader(bus) as reader:
        return reader.end_offset


def doorbell_path(bus: Path) -> Path:
    return bus.parent / (bus.name + ".doorbell")


def follow(mechanism: str, bus: Path, start: int) -> Callable[[], object]:
    """Records from ``start`` on, waiting forever at the end, by ``mechanism``: a generator."""
    if mechanism != "inotify":
        if mechanism == "poll":
            force_polling()
        reader = LogReader(bus, timeout=None).open()
        reader.seek(start)
        return iter(reader).__next__
    return _inotify_follow(bus, start).__next__


def _inotify_follow(bus: Path, start: int):  # type: ignore[no-untyped-def]
    """The prototype's reader: the same re-check bounds as wakeup.Waiter, sleeping in inotify."""
    from inotify_simple import INotify, flags

    watch = INotify()
    watch.add_watch(str(doorbell_path(bus)), flags.MODIFY)  # armed before the first check
    reader = LogReader(bus, timeout=0).open()
    reader.seek(start)
    seen, moved_at = -1, float("-inf")
    while True:
        record = reader.read_next()
        if record is not None:
            yield record
            continue
        now, end = time.monotonic(), reader.end_offset
        if end != seen:
            seen, moved_at = end, now
        active_for = moved_at + PROTOTYPE_WINDOW - now
        watch.read(timeout=1000 * (active_for if active_for > 0 else wakeup.RECHECK_SECONDS))


# -- child processes ----------------------------------------------------------------------------------


def role(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def role_latency(mechanism: str, bus: str, count: str) -> None:
    """Print `index monotonic-time` as each record is yielded."""
    next_record = follow(mechanism, Path(bus), end_of(bus))
    print("ready", flush=True)
    times = []
    for _ in range(int(count)):
        record = next_record()
        times.append((int(record.payload.split(b" ")[0]), time.monotonic()))  # type: ignore[attr-defined]
    print(json.dumps(times), flush=True)


def role_idle(mechanism: str, bus: str) -> None:
    """Wait at the end of the bus until killed."""
    next_record = follow(mechanism, Path(bus), end_of(bus))
    print("ready", flush=True)
    next_record()


def role_idle_hermes(mechanism: str, bus: str) -> None:
    """A Hermes consumer plugin iterating with a 60 s timeout at the end of the bus, until killed."""
    if mechanism == "poll":
        force_polling()
    from hermes_consumer_plugin import FilelogConsumerPlugin

    plugin = FilelogConsumerPlugin({"path": bus})
    plugin.setTimeout(60_000)
    with plugin:
        plugin.seekToBeginning()
        for _ in plugin:
            pass
        print("ready", flush=True)
        for _ in plugin:
            pass


def role_tail(mechanism: str, bus: str, start: str, count: str) -> None:
    """Read ``count`` records from ``start``; print whether each came once and in order."""
    next_record = follow(mechanism, Path(bus), int(start))
    print("ready", flush=True)
    numbers = [int(next_record().payload.split(b" ")[0]) for _ in range(int(count))]  # type: ignore[attr-defined]
    print("ok" if numbers == list(range(int(count))) else "bad", flush=True)


#: The futex word's byte in the file (wakeup._MappedWord waits on the word at this position).
WORD = wakeup._WORD_POSITION


def await_byte(mapping: mmap.mmap, word: wakeup._MappedWord, value: int) -> None:
    """Sleep on the futex until the word's low byte is ``value``."""
    while (current := mapping[WORD]) != value:
        word.wait(current, 1.0)


def role_futex_ping(path: str, rounds: str) -> None:
    """The futex round trip's far end: wait for the word to change, then change it again and wake."""
    fd = os.open(path, os.O_RDWR)
    mapping = mmap.mmap(fd, mmap.PAGESIZE)
    word = wakeup._MappedWord(wakeup._futex(), fd)  # type: ignore[arg-type]
    print("ready", flush=True)
    for i in range(int(rounds)):
        await_byte(mapping, word, (2 * i + 1) % 256)
        mapping[WORD] = (2 * i + 2) % 256
        word.wake()


ROLES = {
    "latency": role_latency,
    "idle": role_idle,
    "idle-hermes": role_idle_hermes,
    "tail": role_tail,
    "futex-ping": role_futex_ping,
}


def ready(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    line = process.stdout.readline()
    if line != "ready\n":
        raise RuntimeError(f"a reader process failed to start ({line!r})")


def cpu_seconds(pid: int) -> float:
    """CPU time of a process so far, to the nanosecond (scheduler statistics)."""
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as stat:
        return int(stat.read().split()[0]) / 1e9


# -- measurements ---------------------------------------------------------------------------------------


def fresh_bus(workdir: Path, name: str, *, empty: bool = False) -> Path:
    """A new bus holding one record (none if ``empty``: what a Hermes consumer can decode)."""
    bus = workdir / name
    shutil.rmtree(bus, ignore_errors=True)
    doorbell_path(bus).unlink(missing_ok=True)
    doorbell_path(bus).touch()
    with LogWriter(bus, segment_bytes=8 * 2**20) as writer:
        if not empty:
            writer.append("init", b"-1 " + PAYLOAD)
    return bus


def append_rate(mechanism: str, bus: Path, durability: str, count: int, every: bool = False) -> float:
    """Appends per second of one writer of ``mechanism`` (``every``: a wake-up per append)."""
    writer, ring = open_writer(mechanism, bus, every=every, durability=durability, segment_bytes=256 * 2**20)
    try:
        start = time.perf_counter()
        for _ in range(count):
            writer.append("rate", PAYLOAD)
            ring()
        return count / (time.perf_counter() - start)
    finally:
        writer.close()


def bench_writer_cost(workdir: Path, settings: Settings) -> dict[str, list[float]]:
    """Interleaved rounds, the order rotating: {variant: rates}."""
    variants: dict[str, Callable[[Path], float]] = {
        "never, no wake-up": lambda bus: append_rate("poll", bus, "never", settings.never_appends),
        "never, futex": lambda bus: append_rate("futex", bus, "never", settings.never_appends),
        "never, futex, a wake per append": lambda bus: append_rate(
            "futex", bus, "never", settings.never_appends, every=True
        ),
        "always, no wake-up": lambda bus: append_rate("poll", bus, "always", settings.durable_appends),
        "always, futex": lambda bus: append_rate("futex", bus, "always", settings.durable_appends),
    }
    if have_inotify():
        variants["never, inotify doorbell"] = lambda bus: append_rate(
            "inotify", bus, "never", settings.never_appends
        )
        variants["never, inotify doorbell, a pwrite per append"] = lambda bus: append_rate(
            "inotify", bus, "never", settings.never_appends, every=True
        )
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(settings.rate_rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            bus = fresh_bus(workdir, "rate")
            rates[name].append(variants[name](bus))
    return rates


def bench_latency(workdir: Path, mechanism: str, durability: str, count: int) -> list[float]:
    """Milliseconds from append() returning to a reader process yielding the record."""
    bus = fresh_bus(workdir, f"latency-{mechanism}")
    reader = role("latency", mechanism, bus, count)
    try:
        ready(reader)
        returned = []
        pace = random.Random(18)
        writer, ring = open_writer(mechanism, bus, durability=durability, segment_bytes=8 * 2**20)
        with writer:
            for number in range(count):
                time.sleep(pace.uniform(0.0005, 0.004))
                writer.append("latency", b"%d " % number + PAYLOAD)
                ring()
                returned.append(time.monotonic())
        out, _ = reader.communicate(timeout=300)
    finally:
        reader.kill()
        reader.wait()
    yielded = dict(json.loads(out))
    return [1000 * (yielded[number] - at) for number, at in enumerate(returned)]


def futex_round_trips(workdir: Path, rounds: int) -> list[float]:
    """Milliseconds for a wake to reach another process and its answer to come back, halved."""
    path = workdir / "futex-word"
    path.write_bytes(bytes(mmap.PAGESIZE))
    fd = os.open(path, os.O_RDWR)
    mapping = mmap.mmap(fd, mmap.PAGESIZE)
    word = wakeup._MappedWord(wakeup._futex(), fd)  # type: ignore[arg-type]
    far = role("futex-ping", path, rounds)
    samples = []
    try:
        ready(far)
        for i in range(rounds):
            time.sleep(0.001)
            start = time.perf_counter()
            mapping[WORD] = (2 * i + 1) % 256
            word.wake()
            await_byte(mapping, word, (2 * i + 2) % 256)
            samples.append(1000 * (time.perf_counter() - start) / 2)
        far.wait(timeout=60)
    finally:
        far.kill()
        far.wait()
        word.close()
        mapping.close()
        os.close(fd)
    return samples


def bench_idle(workdir: Path, kind: str, mechanism: str, seconds: float) -> float:
    """Percent of a core used by one idle waiting reader (or Hermes consumer) over ``seconds``."""
    bus = fresh_bus(workdir, f"idle-{kind}-{mechanism}", empty=kind == "idle-hermes")
    process = role(kind, mechanism, bus)
    try:
        ready(process)
        time.sleep(0.5)  # past the reader's first re-checks
        before, start = cpu_seconds(process.pid), time.monotonic()
        time.sleep(seconds)
        used, wall = cpu_seconds(process.pid) - before, time.monotonic() - start
    finally:
        process.kill()
        process.wait()
    return 100 * used / wall


def timed_appends(writer: LogWriter, ring: Callable[[], None], first: int, count: int) -> float:
    """Durable appends per second of records numbered from ``first``."""
    begin = time.perf_counter()
    for number in range(first, first + count):
        writer.append("tail", b"%d " % number + PAYLOAD)
        ring()
    return count / (time.perf_counter() - begin)


def bench_tail(
    workdir: Path, mechanism: str, readers: int, rounds: int, count: int
) -> tuple[list[float], list[float], int]:
    """Rates of a durable writer on a bus ``readers`` processes tail and on one nobody reads, in
    alternating rounds (ABBA: the disk's fsync rate drifts); and how many readers saw every
    record once and in order."""
    tailed, alone = fresh_bus(workdir, f"tail-{mechanism}"), fresh_bus(workdir, "tail-alone")
    start = end_of(tailed)
    processes = [role("tail", mechanism, tailed, start, rounds * count) for _ in range(readers)]
    with_readers: list[float] = []
    solo: list[float] = []
    try:
        for process in processes:
            ready(process)
        writer, ring = open_writer(mechanism, tailed, durability="always", segment_bytes=8 * 2**20)
        other, other_ring = open_writer(mechanism, alone, durability="always", segment_bytes=8 * 2**20)
        with writer, other:
            for round_number in range(rounds):
                first = round_number * count
                if round_number % 2 == 0:
                    with_readers.append(timed_appends(writer, ring, first, count))
                    solo.append(timed_appends(other, other_ring, first, count))
                else:
                    solo.append(timed_appends(other, other_ring, first, count))
                    with_readers.append(timed_appends(writer, ring, first, count))
        good = sum(process.communicate(timeout=600)[0].strip() == "ok" for process in processes)
    finally:
        for process in processes:
            process.kill()
            process.wait()
    return solo, with_readers, good


# -- report -----------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def table(header: Sequence[str], rows: list[list[str]]) -> str:
    rows = [list(header), *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(text: str) -> None:
    print(text, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter idle runs, fewer appends")
    parser.add_argument("--workdir", type=Path, default=None, help="where the buses go (default: a temp dir)")
    parser.add_argument("--only", nargs="*", default=None, help="writer latency idle tail (default: all)")
    parser.add_argument("--role", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        ROLES[args.role[0]](*args.role[1:])
        return
    settings = QUICK if args.quick else FULL
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="filelog-wakeup-"))
    workdir.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ("writer", "latency", "idle", "tail"))
    mechanisms = [m for m in MECHANISMS if m != "inotify" or have_inotify()]
    say(f"bench_wakeup {'--quick ' if args.quick else ''}in {workdir}; load average {os.getloadavg()}")
    try:
        if "writer" in only:
            rates = bench_writer_cost(workdir, settings)
            rows = []
            for name, values in rates.items():
                base = rates["never, no wake-up" if name.startswith("never") else "always, no wake-up"]
                ratios = [a / b for a, b in zip(values, base, strict=True)]
                rows.append(
                    [
                        name,
                        f"{statistics.median(values):,.0f}",
                        f"{statistics.median(ratios):.3f}",
                        f"{min(ratios):.3f}-{max(ratios):.3f}",
                    ]
                )
            say(
                f"\nwriter cost, {settings.rate_rounds} interleaved rounds, medians (ratio within each round)"
            )
            say(table(["append", "rec/s", "/ no wake-up", "range"], rows))
        if "latency" in only:
            rows = []
            bound = futex_round_trips(workdir, 300)
            rows.append(
                [
                    "bound: futex wake, process to process",
                    "",
                    f"{percentile(bound, 0.5):.3f}",
                    f"{percentile(bound, 0.99):.3f}",
                    f"{percentile(bound, 0.999):.3f}",
                ]
            )
            for durability in ("always", "never"):
                for mechanism in mechanisms:
                    lat = bench_latency(workdir, mechanism, durability, settings.latency_records)
                    rows.append(
                        [
                            mechanism,
                            durability,
                            f"{percentile(lat, 0.5):.3f}",
                            f"{percentile(lat, 0.99):.3f}",
                            f"{percentile(lat, 0.999):.3f}",
                        ]
                    )
            say(
                f"\ndelivery latency, append() returned -> reader process yields, {settings.latency_records} records, ms"
            )
            say(table(["reader", "durability", "p50", "p99", "p99.9"], rows))
        if "idle" in only:
            rows = []
            for kind in ("idle", "idle-hermes"):
                for mechanism in mechanisms if kind == "idle" else ("poll", "futex"):
                    percent = bench_idle(workdir, kind, mechanism, settings.idle_seconds)
                    what = "LogReader" if kind == "idle" else "Hermes consumer, 60 s timeout"
                    rows.append([what, mechanism, f"{percent:.4f}"])
            say(f"\nidle waiting reader, {settings.idle_seconds:g} s, % of a core (bound: 0)")
            say(table(["reader", "mechanism", "% of a core"], rows))
        if "tail" in only:
            rows = []
            for readers in settings.tail_readers:
                for mechanism in ("poll", "futex"):
                    solo, tailed, good = bench_tail(
                        workdir, mechanism, readers, settings.tail_rounds, settings.tail_appends
                    )
                    ratios = [a / b for a, b in zip(tailed, solo, strict=True)]
                    rows.append(
                        [
                            str(readers),
                            mechanism,
                            f"{statistics.median(solo):,.0f}",
                            f"{statistics.median(tailed):,.0f}",
                            f"{statistics.median(ratios):.3f}",
                            f"{min(ratios):.2f}-{max(ratios):.2f}",
                            f"{TAIL_GOALS[readers]}",
                            f"{good}/{readers}",
                        ]
                    )
            say(
                f"\ndurable writer with K tailing reader processes, {settings.tail_rounds} alternating rounds "
                f"of {settings.tail_appends} appends, rec/s (medians; ratio within each round)"
            )
            say(
                table(["K", "readers", "alone", "tailed", "ratio", "range", "goal", "saw all in order"], rows)
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

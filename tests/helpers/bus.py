"""Building, reading and checking buses: helpers shared by the test suites.

Child processes import this module too (pass ``extra_path=[TESTS_DIR]`` to
spawn_python/run_python), so it must not import pytest. Everything here goes
through the public API (LogWriter, LogReader) or through plain file I/O on the
bus directory, which is how the suites simulate faults.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import subprocess
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

from filelog_bus import LogReader, LogWriter, Record
from filelog_bus.layout import FILE_HEADER_SIZE, parse_segment_name
from helpers.processes import TESTS_DIR, run_python, spawn_python

#: FILELOG_LONG=1 runs the randomized suites with many more trials.
LONG = os.environ.get("FILELOG_LONG") == "1"
CATEGORIES = ("users", "groups", "hosts", "printers")
#: Small segments and index blocks, so that a few dozen records span several of each.
SMALL = {"segment_bytes": 1024, "index_interval_bytes": 128}
#: Small segments with an index entry for nearly every record.
SMALL_DENSE = {"segment_bytes": 1024, "index_interval_bytes": 64}
DAY = 86400.0
#: How long any child process may take before a test gives up on it (a hang guard, not a timing check).
CHILD_TIMEOUT = 120.0


def suite_seed(what: str) -> int:
    """The seed of a randomized test: FILELOG_SEED if set, else a fresh one; printed, so that a failure can be rerun."""
    if os.environ.get("FILELOG_SEED"):
        seed = int(os.environ["FILELOG_SEED"])
    else:
        seed = random.SystemRandom().randrange(2**32)
    print(f"{what}: seed {seed} (rerun with FILELOG_SEED={seed})")
    return seed


# -- deterministic record contents --------------------------------------------------------------------


def _digest(tag: str, seq: int) -> bytes:
    return hashlib.blake2b(f"{tag}/{seq}".encode(), digest_size=32).digest()


def payload_for(tag: str, seq: int) -> bytes:
    """Payload of record ``seq`` written under ``tag``: 10 to ~420 bytes, self-describing."""
    digest = _digest(tag, seq)
    size = 10 + digest[0] + digest[1] % 160
    head = f"{tag}/{seq}:".encode()
    return (head + digest * (size // 32 + 1))[: max(size, len(head))]


def sized_payload(sequence: int, size: int) -> bytes:
    """A payload of exactly ``size`` bytes whose bytes identify the append that made it."""
    stamp = f"#{sequence}:".encode()
    return (stamp * (size // len(stamp) + 1))[:size]


def category_for(tag: str, seq: int) -> str:
    return CATEGORIES[_digest(tag, seq)[2] % len(CATEGORIES)]


def timestamp_for(seq: int) -> float:
    return 1_700_000_000.0 + seq / 8


class Expected(NamedTuple):
    """What a record written by WRITER_CHILD must hold."""

    tag: str
    seq: int

    def matches(self, record: Record) -> bool:
        return (
            record.payload == payload_for(self.tag, self.seq)
            and record.category == category_for(self.tag, self.seq)
            and record.timestamp == timestamp_for(self.seq)
        )


#: A writer process: opens the bus, prints "ready <end>", then appends records and prints
#: "ack <seq> <offset>" after each append returns. count < 0: append until killed. Then, with
#: then="hold", prints "holding" and waits for a line on stdin before closing.
#: argv: path tag durability segment_bytes index_interval first_seq count then
WRITER_CHILD = """
import sys
from filelog_bus import LogWriter
from helpers.bus import category_for, payload_for, timestamp_for

path, tag, durability = sys.argv[1:4]
segment_bytes, interval, first, count = map(int, sys.argv[4:8])
writer = LogWriter(path, durability=durability, segment_bytes=segment_bytes, index_interval_bytes=interval)
writer.open()
print("ready", writer.end_offset, flush=True)
seq = first
while count < 0 or seq < first + count:
    offset = writer.append(category_for(tag, seq), payload_for(tag, seq), timestamp_for(seq))
    print("ack", seq, offset, flush=True)
    seq += 1
if sys.argv[8] == "hold":
    print("holding", flush=True)
    sys.stdin.readline()
writer.close()
print("closed", flush=True)
"""


def start_writer(
    bus: Path | str,
    tag: str,
    *,
    durability: str = "always",
    segment_bytes: int = 1024,
    interval: int = 4096,
    first: int = 0,
    count: int = -1,
    then: str = "close",
) -> subprocess.Popen[bytes]:
    """Start a WRITER_CHILD (binary pipes; read its output with LineReader)."""
    return spawn_python(
        WRITER_CHILD,
        str(bus),
        tag,
        durability,
        str(segment_bytes),
        str(interval),
        str(first),
        str(count),
        then,
        extra_path=[TESTS_DIR],
        text=False,
        stdin=subprocess.PIPE,
    )


def hold_bus(bus: Path | str, count: int = 3) -> tuple[subprocess.Popen[bytes], LineReader]:
    """A WRITER_CHILD that appended ``count`` records and now holds the bus, waiting for a line."""
    holder = start_writer(bus, "holder", count=count, then="hold")
    lines = LineReader(holder)
    while (line := lines.readline()) and line != "holding\n":
        pass
    assert line == "holding\n", f"the holder could not open the bus: {kill_and_collect(holder, lines)}"
    return holder, lines


def release(holder: subprocess.Popen[bytes], lines: LineReader) -> str:
    """Let a ``hold_bus`` writer close the bus; return what it printed then."""
    assert holder.stdin is not None
    holder.stdin.write(b"\n")
    holder.stdin.close()
    rest = lines.rest()
    holder.wait(timeout=CHILD_TIMEOUT)
    return rest


#: Tries to open the bus for writing; prints "acquired", or "BusLockedError <holder> <message>".
#: argv: path lock_timeout
LOCK_ATTEMPT = """
import sys
from filelog_bus import LogWriter
from filelog_bus.errors import BusLockedError

try:
    LogWriter(sys.argv[1], lock_timeout=float(sys.argv[2])).open().close()
    print("acquired")
except BusLockedError as exc:
    print("BusLockedError", exc.holder, exc)
"""


def write_then_kill(bus: Path | str, tag: str, count: int, **options: object) -> list[tuple[int, int]]:
    """Have a writer process append ``count`` records, then SIGKILL it while it holds the bus."""
    process = start_writer(bus, tag, count=count, then="hold", **options)  # type: ignore[arg-type]
    lines = LineReader(process)
    output = ""
    while (line := lines.readline()) and line != "holding\n":
        output += line
    assert line == "holding\n", f"writer failed: {kill_and_collect(process, lines)[1]}"
    kill_and_collect(process, lines)
    acks = parse_acks(output)
    assert len(acks) == count
    return acks


def write_and_close(bus: Path | str, tag: str, count: int, **options: object) -> list[tuple[int, int]]:
    """Have a writer process append ``count`` records and close the bus cleanly."""
    process = start_writer(bus, tag, count=count, **options)  # type: ignore[arg-type]
    out, err = process.communicate(timeout=CHILD_TIMEOUT)
    assert process.returncode == 0, err.decode()
    acks = parse_acks(out.decode())
    assert len(acks) == count
    return acks


#: A reader process: prints JSON with every record from the beginning (iterating with the given
#: timeout), end_offset, the error type (or "ok") of seek(p) for each probe p, and the offset
#: find_next(c) returns from the beginning for each category c.
#: argv: path probes-json categories-json timeout
READER_CHILD = """
import json, sys
from filelog_bus import LogReader
from filelog_bus.errors import FilelogBusError

path, probes, categories, timeout = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), float(sys.argv[4])
out = {"seeks": {}, "find": {}}
with LogReader(path, timeout=timeout) as reader:
    out["records"] = [[r.offset, r.timestamp, r.category, r.payload.hex(), r.size] for r in reader]
    out["end"] = reader.end_offset
    for probe in probes:
        try:
            reader.seek(probe)
            out["seeks"][str(probe)] = "ok"
        except FilelogBusError as exc:
            out["seeks"][str(probe)] = type(exc).__name__
    for category in categories:
        reader.seek_to_beginning()
        found = reader.find_next(category)
        out["find"][category] = None if found is None else found.offset
print(json.dumps(out))
"""


class ReaderView(NamedTuple):
    """What a READER_CHILD reported."""

    records: list[Record]
    end: int
    seeks: dict[str, str]
    find: dict[str, int | None]


def read_in_child(
    bus: Path | str, probes: Sequence[int] = (), categories: Sequence[str] = (), timeout: float = 0.0
) -> ReaderView:
    """Read a bus from a separate reader process."""
    result = run_python(
        READER_CHILD, str(bus), json.dumps(list(probes)), json.dumps(list(categories)), str(timeout)
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    records = [Record(o, t, c, bytes.fromhex(p), s) for o, t, c, p, s in out["records"]]
    return ReaderView(records, out["end"], out["seeks"], out["find"])


def parse_acks(output: str) -> list[tuple[int, int]]:
    """(seq, offset) of every complete "ack" line a WRITER_CHILD printed."""
    acks = []
    for line in output.splitlines(keepends=True):
        parts = line.split()
        if line.endswith("\n") and len(parts) == 3 and parts[0] == "ack":
            acks.append((int(parts[1]), int(parts[2])))
    return acks


class LineReader:
    """Reads lines from a child's binary stdout with a hang guard, leaving the rest for later."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process = process
        self.fd = process.stdout.fileno()
        self.buffer = b""
        self.eof = False

    def _fill(self) -> None:
        ready, _, _ = select.select([self.fd], [], [], CHILD_TIMEOUT)
        if not ready:
            self.process.kill()
            raise AssertionError(f"child {self.process.args!r} printed nothing for {CHILD_TIMEOUT} s")
        data = os.read(self.fd, 65536)
        self.eof = not data
        self.buffer += data

    def readline(self) -> str:
        """The next complete line, or "" at end of output."""
        while b"\n" not in self.buffer and not self.eof:
            self._fill()
        if b"\n" not in self.buffer:
            return ""
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode() + "\n"

    def rest(self) -> str:
        """Everything the child prints until it exits (call after it exits or is killed)."""
        while not self.eof:
            self._fill()
        rest, self.buffer = self.buffer, b""
        return rest.decode(errors="replace")


def kill_and_collect(process: subprocess.Popen[bytes], lines: LineReader) -> tuple[str, str]:
    """SIGKILL the child, wait for it, and return (remaining stdout, stderr)."""
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=CHILD_TIMEOUT)
    out = lines.rest()
    err = process.stderr.read().decode(errors="replace") if process.stderr is not None else ""
    return out, err


# -- looking at a bus --------------------------------------------------------------------------------------


def read_all(path: Path | str, *, missing_ok: bool = True, hang_guard: float | None = None) -> list[Record]:
    """Every record a fresh reader yields from the beginning (no waiting).

    With ``hang_guard``, a reader still iterating after that many seconds (one that spins) fails
    the test with ``Hung`` instead of hanging the suite.
    """
    with ExitStack() as stack:
        if hang_guard is not None:
            stack.enter_context(deadline(hang_guard, "iterating a LogReader with timeout=0"))
        reader = stack.enter_context(LogReader(path, missing_ok=missing_ok))
        return list(reader)


def published_view(path: Path | str) -> tuple[list[Record], int]:
    """(records, end_offset) as a fresh reader sees them."""
    with LogReader(path, missing_ok=True) as reader:
        return list(reader), reader.end_offset


def assert_contiguous(records: Sequence[Record], begin: int = 0) -> None:
    """Records follow each other without gaps or overlaps from ``begin``."""
    position = begin
    for record in records:
        assert record.offset == position, f"gap or overlap: record at {record.offset}, expected {position}"
        position = record.next_offset


def segment_paths(path: Path | str) -> list[Path]:
    """The segment files of a bus, oldest first."""
    directory = Path(path)
    named = [
        (base, directory / name)
        for name in os.listdir(directory)
        if (base := parse_segment_name(name)) is not None
    ]
    return [p for _, p in sorted(named)]


def segment_names(path: Path | str) -> list[str]:
    """The file names of a bus's segments, oldest first."""
    return [segment.name for segment in segment_paths(path)]


def segment_base(segment: Path) -> int:
    base = parse_segment_name(segment.name)
    assert base is not None
    return base


def dir_snapshot(path: Path | str) -> dict[str, tuple[int, int, int, int, int]]:
    """name -> (size, mtime_ns, ctime_ns, mode, inode) of every entry, plus the directory itself as '.'."""
    directory = Path(path)
    snapshot = {}
    for name in [".", *sorted(os.listdir(directory))]:
        st = os.stat(directory / name)
        snapshot[name] = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_ino)
    return snapshot


def content_snapshot(path: Path) -> dict[str, tuple[int, int, str]]:
    """Every file of a directory (and the directory itself): size, mtime and content hash."""
    state = {".": (0, os.stat(path).st_mtime_ns, "")}
    for name in sorted(os.listdir(path)):
        stat = os.stat(path / name)
        state[name] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256((path / name).read_bytes()).hexdigest())
    return state


def file_contents(path: Path | str, *, skip: Iterable[str] = ()) -> dict[str, bytes]:
    """name -> bytes of every file in a bus directory except ``skip``."""
    directory = Path(path)
    return {
        name: (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
        if name not in set(skip) and (directory / name).is_file()
    }


def data_end(path: Path | str) -> int:
    """Where a bus's data ends, as its watermark says (after a clean close, the end of the records).

    Not the newest segment's file size: a preallocated (format version 2) active segment's file
    extends past its data with zeros.
    """
    with LogReader(path, missing_ok=True) as reader:
        return reader.end_offset


def data_end_position(segment: Path, end: int) -> int:
    """File position of bus offset ``end`` in ``segment`` (where the next append, or a torn one, lands)."""
    return FILE_HEADER_SIZE + end - segment_base(segment)


def assert_only_zeros_after(segment: Path | str, file_position: int) -> None:
    """The file reaches ``file_position`` and holds only zeros after it (a preallocated tail), if anything."""
    data = Path(segment).read_bytes()
    assert len(data) >= file_position, f"{segment} ends at {len(data)}, before {file_position}"
    tail = data[file_position:]
    stray = next((i for i, byte in enumerate(tail) if byte), None)
    assert stray is None, f"{segment} holds a non-zero byte at {file_position + stray} after the data end"


def assert_data_then_zeros(segment: Path | str, data: bytes) -> None:
    """The file starts with exactly ``data`` (header and records) and only zeros follow, if anything."""
    content = Path(segment).read_bytes()
    assert content[: len(data)] == data, f"{segment}: the data up to its end changed"
    assert_only_zeros_after(segment, len(data))


def written_end(segment: Path, at_least: int) -> int:
    """Bus offset just past the last non-zero byte of ``segment`` (where a writer's bytes end, in front of
    a preallocated tail of zeros), but never before ``at_least`` (records known to be there may end
    with zero bytes)."""
    data = segment.read_bytes()
    stripped = len(data[FILE_HEADER_SIZE:].rstrip(b"\0"))
    return max(segment_base(segment) + stripped, at_least)


def write_at(segment: Path | str, file_position: int, data: bytes) -> None:
    """Write ``data`` in place at ``file_position`` (a torn append lands at the data end, over the zeros
    of a preallocated tail)."""
    fd = os.open(segment, os.O_RDWR)
    try:
        os.pwrite(fd, data, file_position)
    finally:
        os.close(fd)


def flip_bit(path: Path, position: int, bit: int = 3) -> None:
    """Invert one bit of a file in place."""
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, position)
        os.pwrite(fd, bytes([byte[0] ^ (1 << bit)]), position)
    finally:
        os.close(fd)


# -- lookups agree with iteration -----------------------------------------------------------------------


def lookup_results(path: Path | str, probes: Sequence[int], categories: Sequence[str]) -> list[object]:
    """What seek, read_next and find_next return on a bus, for comparing two copies of it.

    For each probe offset: the record a seek there lands on, and the first record of
    each category at or after it. Then every category's complete find_next chain.
    """
    results: list[object] = []
    with LogReader(path) as reader:
        for probe in probes:
            reader.seek(probe)
            results.append(("seek", probe, reader.read_next()))
            for category in categories:
                reader.seek(probe)
                results.append(("find", probe, category, reader.find_next(category), reader.position))
        for category in categories:
            reader.seek_to_beginning()
            chain = []
            while (found := reader.find_next(category)) is not None:
                chain.append(found.offset)
            results.append(("chain", category, chain))
        reader.seek_to_beginning()
        results.append(("all", list(reader)))
    return results


def assert_lookups_agree(
    path: Path | str, records: Sequence[Record], rng: random.Random, samples: int = 25
) -> None:
    """seek and find_next give what the records (from iteration) say they must."""
    if not records:
        return
    categories = sorted({r.category for r in records})
    end = records[-1].next_offset
    with LogReader(path) as reader:
        for i in rng.sample(range(len(records)), min(samples, len(records))):
            record = records[i]
            reader.seek(record.offset)
            assert reader.read_next() == record
            reader.seek(record.offset + 1)
            assert reader.read_next() == (records[i + 1] if i + 1 < len(records) else None)
        for category in categories:
            reader.seek_to_beginning()
            chain = []
            while (found := reader.find_next(category)) is not None:
                chain.append(found)
            assert chain == [r for r in records if r.category == category], f"find_next({category!r}) chain"
        for _ in range(samples):
            position = rng.randrange(records[0].offset, end + 1)
            category = rng.choice(categories)
            reader.seek(position)
            want = next((r for r in records if r.offset >= position and r.category == category), None)
            assert reader.find_next(category) == want, f"find_next({category!r}) after seek({position})"


class Hung(BaseException):
    """Raised by ``deadline`` in a call that did not return (a BaseException: no engine handler eats it)."""


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise Hung in the block after ``seconds``: a reader that spins fails the test instead of hanging it."""

    def expired(signum: int, frame: object) -> None:
        raise Hung(f"{what} did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def segment_bases(path: Path) -> list[int]:
    return sorted(b for n in os.listdir(path) if (b := parse_segment_name(n)) is not None)


def index_files(path: Path) -> list[Path]:
    return sorted([*path.glob("*.index"), *path.glob("*.catindex"), *path.glob("*.catsummary")])


def write_bus(path: Path, records: Iterable[tuple[str, bytes, float]], **settings: object) -> list[Record]:
    """Append (category, payload, timestamp) records with a LogWriter; return them as a reader sees them."""
    written = []
    with LogWriter(path, **settings) as writer:  # type: ignore[arg-type]
        for category, payload, timestamp in records:
            offset = writer.append(category, payload, timestamp)
            written.append((offset, timestamp, category, payload))
        end = writer.end_offset
    next_offsets = [offset for offset, *_ in written[1:]] + [end] if written else []
    return [
        Record(o, t, c, p, following - o)
        for (o, t, c, p), following in zip(written, next_offsets, strict=True)
    ]


#: Pairs of short category names with the same CRC-32, i.e. the same category-index key (found
#: once by a birthday search).
CRC32_COLLISIONS = (("cat8976", "cat3716400"), ("c699378", "c18020006"))


def colliding_categories(pair: int = 0) -> tuple[str, str]:
    """One of the CRC32_COLLISIONS, checked."""
    first, second = CRC32_COLLISIONS[pair]
    assert zlib.crc32(first.encode()) == zlib.crc32(second.encode())
    return first, second


def open_files_under(path: Path | str) -> list[tuple[int, str]]:
    """(descriptor, target) of every file this process has open in ``path``, or on ``path`` itself."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(str(path) + os.sep) or target == str(path):
            found.append((int(name), target))
    return found

"""Corruption: single-bit flips in segments and index files (random places, printed seed).

* Segment damage is always detected: iterating raises CorruptionError naming the
  segment file and the file position of the damaged record (0 for the file header),
  after yielding only the intact records before it; ``filelog-bus verify`` reports
  it too (non-zero exit, file name).
* Index damage never changes a result: seek, find_next and iteration on the
  damaged bus return exactly what they return on the intact one (the reader checks
  the chained CRC and falls back to scanning), the reader leaves the damage alone,
  and a writer that reopens the bus rebuilds an index whose shape is wrong
  (truncated, extended, missing) byte for byte.
"""

from __future__ import annotations

import contextlib
import io
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.bus import (
    LONG,
    assert_only_zeros_after,
    data_end_position,
    file_contents,
    flip_bit,
    index_files,
    lookup_results,
    read_all,
    segment_base,
    segment_paths,
    suite_seed,
)
from helpers.processes import run_python

from filelog_bus import LogReader, LogWriter, Record
from filelog_bus.errors import CorruptionError
from filelog_bus.layout import (
    CATEGORY_ENTRY,
    CATEGORY_INDEX_SUFFIX,
    FILE_HEADER_SIZE,
    LOCK_NAME,
    OFFSET_ENTRY,
    OFFSET_INDEX_SUFFIX,
    WATERMARK_NAME,
)

FLIPS = 600 if LONG else 60
CATEGORIES = ("users", "groups", "hosts", "rare")
#: Bytes 28-31 of a file header are padding; the exhaustive header test covers them on purpose.
HEADER_PADDING = range(28, 32)


def build_bus(path: Path) -> list[Record]:
    """Several closed segments and an active one, index blocks of 128 bytes, varied record sizes."""
    rng = random.Random(1234)
    with LogWriter(path, segment_bytes=2048, index_interval_bytes=128) as writer:
        for i in range(160):
            category = "rare" if i % 37 == 5 else rng.choice(CATEGORIES[:3])
            writer.append(category, rng.randbytes(rng.choice((3, 20, 60, 150, 400))), 1_700_000_000.0 + i)
    return read_all(path)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Record]]:
    path = tmp_path_factory.mktemp("pristine") / "bus"
    return path, build_bus(path)


@pytest.fixture
def damaged_copy(pristine: tuple[Path, list[Record]], tmp_path: Path) -> Path:
    """A copy of the pristine bus to damage."""
    copy = tmp_path / "bus"
    shutil.copytree(pristine[0], copy, ignore=shutil.ignore_patterns(LOCK_NAME))
    return copy


def verify_available() -> bool:
    try:
        from filelog_bus.cli import main as cli
    except ImportError:
        return False
    return "verify" in cli.main_parser().format_help()


def run_verify(bus: Path) -> tuple[int, str]:
    """`filelog-bus verify BUS` in-process: (exit status, stdout + stderr)."""
    from filelog_bus.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["verify", str(bus)])
    return status, out.getvalue() + err.getvalue()


def record_containing(records: list[Record], segment: Path, position: int) -> Record | None:
    """The record of ``segment`` whose bytes include file position ``position`` (None: the header)."""
    if position < FILE_HEADER_SIZE:
        return None
    offset = segment_base(segment) + position - FILE_HEADER_SIZE
    return next(r for r in records if r.offset <= offset < r.next_offset)


def assert_detected(bus: Path, records: list[Record], segment: Path, position: int, context: str) -> None:
    """Reading the bus raises CorruptionError at the damaged record, after only intact records."""
    damaged = record_containing(records, segment, position)
    start = segment_base(segment) if damaged is None else damaged.offset
    expected_position = 0 if damaged is None else damaged.offset - segment_base(segment) + FILE_HEADER_SIZE
    yielded: list[Record] = []
    with LogReader(bus) as reader, pytest.raises(CorruptionError) as failure:
        yielded.extend(reader)
    assert yielded == [r for r in records if r.offset < start], f"{context}: wrong records before the damage"
    assert failure.value.path == str(segment), f"{context}: {failure.value}"
    assert failure.value.file_position == expected_position, f"{context}: {failure.value}"
    assert str(segment) in str(failure.value)

    with LogReader(bus) as reader, pytest.raises(CorruptionError):
        reader.seek(start)  # a reader that starts right at the damage is stopped too
        for record in reader:
            assert record in records, f"{context}: a damaged record was yielded: {record}"


def test_every_bit_flip_in_a_segment_is_detected_and_located(
    pristine: tuple[Path, list[Record]], damaged_copy: Path
) -> None:
    seed = suite_seed("segment flips")
    rng = random.Random(seed)
    records = pristine[1]
    segments = segment_paths(damaged_copy)
    assert len(segments) >= 4
    # The active segment is preallocated: its records end before its file does, and only zeros follow.
    active_data = data_end_position(segments[-1], records[-1].next_offset)
    assert_only_zeros_after(segments[-1], active_data)
    check_verify = verify_available()
    for flip in range(FLIPS):
        segment = rng.choice(segments[:-1]) if flip % 4 else segments[-1]  # mostly closed segments
        original = segment.read_bytes()
        data = active_data if segment == segments[-1] else len(original)
        position = rng.choice([p for p in range(data) if p not in HEADER_PADDING])
        bit = rng.randrange(8)
        context = f"seed {seed} flip {flip}: bit {bit} of byte {position} of {segment.name}"
        flip_bit(segment, position, bit)
        assert_detected(damaged_copy, records, segment, position, context)
        if check_verify and flip % 6 == 0:
            status, output = run_verify(damaged_copy)
            assert status != 0 and segment.name in output, f"{context}: verify did not report it:\n{output}"
        segment.write_bytes(original)
    assert read_all(damaged_copy) == records


# Went wrong: the segment header's reserved bytes were never checked.
def test_every_bit_of_a_segment_header_is_checked(
    pristine: tuple[Path, list[Record]], damaged_copy: Path
) -> None:
    """Exhaustive over the 32-byte file header of a closed segment, padding included.

    Bytes 28-31 are documented as zero; they went unchecked before 8a54937.
    """
    segment = segment_paths(damaged_copy)[1]
    original = segment.read_bytes()
    missed = []
    for position in range(FILE_HEADER_SIZE):
        for bit in range(8):
            flip_bit(segment, position, bit)
            try:
                read_all(damaged_copy)
                missed.append((position, bit))
            except CorruptionError as exc:
                assert (exc.path, exc.file_position) == (str(segment), 0)
            segment.write_bytes(original)
    assert not missed, f"header bit flips nobody noticed (byte, bit): {missed}"


def probes_for(records: list[Record], rng: random.Random) -> list[int]:
    end = records[-1].next_offset
    picked = [r.offset for r in rng.sample(records, 12)] + [rng.randrange(0, end + 1) for _ in range(12)]
    return sorted({0, end, *picked})


def test_index_bit_flips_never_change_results(
    pristine: tuple[Path, list[Record]], damaged_copy: Path
) -> None:
    seed = suite_seed("index flips")
    rng = random.Random(seed)
    records = pristine[1]
    probes = probes_for(records, rng)
    expected = lookup_results(pristine[0], probes, CATEGORIES)
    indexes = index_files(damaged_copy)
    check_verify = verify_available()
    for flip in range(FLIPS):
        index = rng.choice(indexes)
        original = index.read_bytes()
        position, bit = rng.randrange(len(original)), rng.randrange(8)
        context = f"seed {seed} flip {flip}: bit {bit} of byte {position} of {index.name}"
        flip_bit(index, position, bit)
        damaged = index.read_bytes()
        assert lookup_results(damaged_copy, probes, CATEGORIES) == expected, f"{context}: results changed"
        assert index.read_bytes() == damaged, f"{context}: the reader modified the index"
        if check_verify and flip % 10 == 0 and position not in HEADER_PADDING:
            status, output = run_verify(damaged_copy)
            assert status != 0 and index.name in output, f"{context}: verify did not report it:\n{output}"
        index.write_bytes(original)


# Went wrong: the fast open after a clean close trusted the note's index sizes, not the files'.
@pytest.mark.parametrize(
    "damage", ["cut-inside-entry", "junk-appended", "header-only-half", "empty", "deleted"]
)
@pytest.mark.parametrize("which", ["closed", "newest"])
def test_index_of_wrong_shape_is_bypassed_then_rebuilt_by_a_writer(
    pristine: tuple[Path, list[Record]], damaged_copy: Path, damage: str, which: str
) -> None:
    records = pristine[1]
    rng = random.Random(f"{damage}/{which}")
    probes = probes_for(records, rng)
    expected = lookup_results(pristine[0], probes, CATEGORIES)
    segments = segment_paths(damaged_copy)
    base_name = (segments[1] if which == "closed" else segments[-1]).name.removesuffix(".log")
    originals = file_contents(damaged_copy, skip=[WATERMARK_NAME])
    for suffix, entry in ((OFFSET_INDEX_SUFFIX, OFFSET_ENTRY), (CATEGORY_INDEX_SUFFIX, CATEGORY_ENTRY)):
        index = damaged_copy / (base_name + suffix)
        data = index.read_bytes()
        if damage == "cut-inside-entry":
            index.write_bytes(data[: -rng.randrange(1, entry.size)])
        elif damage == "junk-appended":
            index.write_bytes(data + rng.randbytes(rng.randrange(1, entry.size)))
        elif damage == "header-only-half":
            index.write_bytes(data[: FILE_HEADER_SIZE // 2])
        elif damage == "empty":
            index.write_bytes(b"")
        else:
            index.unlink()
    assert lookup_results(damaged_copy, probes, CATEGORIES) == expected, "the damaged index changed results"
    with LogWriter(damaged_copy, segment_bytes=2048, index_interval_bytes=128):
        pass
    assert file_contents(damaged_copy, skip=[WATERMARK_NAME, LOCK_NAME]) == originals, (
        "not rebuilt identically"
    )
    assert lookup_results(damaged_copy, probes, CATEGORIES) == expected


def test_verify_command_reports_a_damaged_segment_by_name(damaged_copy: Path) -> None:
    """The real `filelog-bus verify` entry point, in its own process, on a flipped bit."""
    if not verify_available():
        pytest.skip("filelog-bus verify (filelog_bus/cli/) is not available in this checkout")
    status, output = run_verify(damaged_copy)
    assert status == 0, output
    segment = segment_paths(damaged_copy)[2]
    flip_bit(segment, FILE_HEADER_SIZE + 20, 3)
    script = Path(sys.executable).with_name("filelog-bus")  # the console script pip installed
    if script.exists():
        result = subprocess.run(
            [str(script), "verify", str(damaged_copy)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    else:
        result = run_python(
            "import sys\nfrom filelog_bus.cli.main import main\nsys.exit(main(sys.argv[1:]))",
            "verify",
            str(damaged_copy),
        )
    assert result.returncode != 0
    assert segment.name in result.stdout + result.stderr


def test_repair_indexes_restores_every_flipped_index(
    pristine: tuple[Path, list[Record]], damaged_copy: Path
) -> None:
    """`LogWriter.repair_indexes()` (behind `filelog-bus verify --repair`) rebuilds any flipped index exactly."""
    seed = suite_seed("index repairs")
    rng = random.Random(seed)
    indexes = index_files(damaged_copy)
    originals = {index.name: index.read_bytes() for index in indexes}
    for flip in range(FLIPS // 2):
        index = rng.choice(indexes)
        position, bit = rng.randrange(index.stat().st_size), rng.randrange(8)
        context = f"seed {seed} flip {flip}: bit {bit} of byte {position} of {index.name}"
        flip_bit(index, position, bit)
        with LogWriter(damaged_copy, segment_bytes=2048, index_interval_bytes=128) as writer:
            repaired = writer.repair_indexes()
        assert {i.name: i.read_bytes() for i in indexes} == originals, f"{context}: not repaired ({repaired})"
        # An index whose header or size is wrong is already rebuilt by the open itself.
        assert repaired in ([], [index.name]), f"{context}: {repaired}"

"""`filelog-bus stats | verify | retention`, run as installed commands against real buses."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.bus import SMALL, content_snapshot, segment_names, write_bus
from helpers.cli import (
    BUS,
    HANG_GUARD,
    T0,
    assert_error_line,
    bus,
    dump,
    file_of,
    flip_byte,
    multi_segment_bus,
    sample,
)
from helpers.processes import python_env, spawn_python
from helpers.promises import HEADER, Ack, append, check_bus, open_writer, record

from filelog_bus.layout import (
    CATEGORY_ENTRY,
    FILE_HEADER_SIZE,
    OFFSET_ENTRY,
    OFFSET_INDEX_MAGIC,
    encode_file_header,
    encode_index_entry,
)

# -- stats -----------------------------------------------------------------------------


def test_stats_json_describes_segments_records_categories_and_times(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    names = segment_names(bus_dir)
    bases = [int(name[:20]) for name in names]

    result = bus("stats", bus_dir, "--json")

    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["record_count"] == len(records) == 60
    assert stats["categories"] == {"audit": 20, "base": 20, "initsync": 20}
    assert (stats["begin_offset"], stats["end_offset"]) == (0, records[-1].next_offset)
    assert stats["bytes"] == records[-1].next_offset
    assert (stats["oldest_offset"], stats["oldest_time"]) == (0, T0)
    assert (stats["newest_offset"], stats["newest_time"]) == (records[-1].offset, records[-1].timestamp)
    assert stats["oldest_iso"] == "2024-05-01T10:40:00.000000Z"
    assert [s["name"] for s in stats["segments"]] == names
    assert [s["active"] for s in stats["segments"]] == [False] * (len(names) - 1) + [True]
    for segment, base, end in zip(
        stats["segments"], bases, [*bases[1:], records[-1].next_offset], strict=True
    ):
        inside = [r for r in records if base <= r.offset < end]
        assert segment["base"] == base and segment["end"] == end
        assert segment["file_size"] == os.path.getsize(bus_dir / segment["name"])
        assert segment["record_count"] == len(inside)
        assert (segment["first_offset"], segment["last_offset"]) == (inside[0].offset, inside[-1].offset)
        assert (segment["first_time"], segment["last_time"]) == (inside[0].timestamp, inside[-1].timestamp)


def test_stats_text_shows_the_same_facts(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)

    result = bus("stats", bus_dir)

    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"records      60 in {len(segment_names(bus_dir))} segments" in text
    assert "oldest       offset 0 at 2024-05-01T10:40:00.000Z" in text
    assert f"newest       offset {records[-1].offset} at 2024-05-01T11:39:00.000Z" in text
    assert f"end offset   {records[-1].next_offset}" in text
    assert "  audit     20" in text
    for name in segment_names(bus_dir):
        assert name in text


def test_stats_of_an_empty_bus_is_not_an_error(bus_dir: Path) -> None:
    write_bus(bus_dir, [])

    result = bus("stats", bus_dir, "--json")

    assert result.returncode == 0
    stats = json.loads(result.stdout)
    assert (stats["record_count"], stats["oldest_offset"], stats["end_offset"]) == (0, None, 0)


def test_stats_on_a_damaged_segment_is_one_line_naming_it(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    name, position = file_of(bus_dir, records[20])
    flip_byte(bus_dir / name, position + 1)

    message = assert_error_line(bus("stats", bus_dir), "filelog-bus stats", 5)

    assert f"{name} at file position {position}" in message


def test_stats_and_verify_refuse_what_is_not_a_bus(tmp_path: Path) -> None:
    for command in ("stats", "verify"):
        assert_error_line(bus(command, tmp_path / "missing"), f"filelog-bus {command}", 3)
        assert_error_line(bus(command, tmp_path), f"filelog-bus {command}", 3)


# -- verify ----------------------------------------------------------------------------


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return bus("verify", path)


def problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line[len("problem: ") :] for line in result.stdout.splitlines() if line.startswith("problem: ")]


def test_verify_a_healthy_bus_exits_0_without_a_progress_bar_when_piped(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    segments = len(segment_names(bus_dir))

    result = verify(bus_dir)

    assert result.returncode == 0, result.stdout
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"checked {bus_dir}: {segments} segments, 60 records, {records[-1].next_offset} bytes and "
        f"{3 * segments - 1} index files, up to offset {records[-1].next_offset} (the watermark)",
        "result: healthy",
    ]


def test_verify_an_empty_bus_is_healthy(bus_dir: Path) -> None:
    write_bus(bus_dir, [])

    assert verify(bus_dir).returncode == 0


def test_a_flipped_byte_in_a_closed_segment_is_reported_with_its_file_and_offset(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    body, header = records[3], records[40]  # in the first and in a later closed segment
    body_file, body_position = file_of(bus_dir, body)
    header_file, header_position = file_of(bus_dir, header)
    assert body_file != header_file and header_file != segment_names(bus_dir)[-1]
    flip_byte(bus_dir / body_file, body_position + 30)
    flip_byte(bus_dir / header_file, header_position + 5)  # the body length: caught by the header CRC

    result = verify(bus_dir)

    assert result.returncode == 1
    found = problems(result)
    assert found[0].startswith(f"{body_file} at file position {body_position} (offset {body.offset}): ")
    assert "record body checksum mismatch" in found[0]
    assert f"next valid record at offset {records[4].offset}" in found[0]
    assert found[1].startswith(f"{header_file} at file position {header_position} (offset {header.offset}): ")
    assert "record header checksum mismatch" in found[1]
    assert len(found) == 2
    assert result.stdout.splitlines()[-1] == "result: 2 problems"


def test_a_flipped_byte_in_the_active_segment_below_the_watermark_is_reported_once(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    active = segment_names(bus_dir)[-1]
    first = next(r for r in records if file_of(bus_dir, r)[0] == active)
    name, position = file_of(bus_dir, first)
    flip_byte(bus_dir / name, position + 20)

    result = verify(bus_dir)

    assert result.returncode == 1
    # Only the record: the index entries of the records after it cannot be judged, and are not.
    assert problems(result) == [
        f"{name} at file position {position} (offset {first.offset}): damaged record: record body checksum "
        f"mismatch; {first.size} bytes are unreadable, up to the next valid record at offset {first.next_offset}; "
        "restore the segment from a backup: readers stop with an error at this offset"
    ]


def test_a_flipped_byte_in_an_index_file_is_reported_with_its_file_and_entry(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    first = segment_names(bus_dir)[0][:20]
    offset_index, category_index = Path(f"{first}.index"), Path(f"{first}.catindex")
    flip_byte(bus_dir / offset_index, FILE_HEADER_SIZE + 2 * OFFSET_ENTRY.size + 9)  # entry 2's timestamp
    flip_byte(bus_dir / category_index, FILE_HEADER_SIZE + 5 * CATEGORY_ENTRY.size + 1)  # entry 5's offset

    result = verify(bus_dir)

    assert result.returncode == 1
    found = problems(result)
    assert len(found) == 2, found
    assert found[0].startswith(
        f"{offset_index} at file position {FILE_HEADER_SIZE + 2 * OFFSET_ENTRY.size}: "
    )
    assert found[1].startswith(
        f"{category_index} at file position {FILE_HEADER_SIZE + 5 * CATEGORY_ENTRY.size}: "
    )
    assert all("chained CRC" in problem for problem in found)


def test_a_damaged_index_file_header_is_reported(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    index = Path(segment_names(bus_dir)[1][:20] + ".catindex")
    flip_byte(bus_dir / index, 0)

    found = problems(verify(bus_dir))

    assert len(found) == 1 and found[0].startswith(
        f"{index} at file position 0: bad category index file header"
    )


def test_a_damaged_segment_header_is_reported_and_its_records_still_checked(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    name = segment_names(bus_dir)[1]
    flip_byte(bus_dir / name, 3)

    result = bus("verify", bus_dir, "--json")

    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["records"] == 60
    assert [(p["file"], p["file_position"]) for p in report["problems"]] == [(name, 0)]
    assert "wrong magic number" in report["problems"][0]["message"]


def test_an_index_with_valid_crcs_but_wrong_entries_differs_from_a_rebuild(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    first = segment_names(bus_dir)[0]
    in_first = [r for r in records if r.offset < int(segment_names(bus_dir)[1][:20])]
    # A well-formed offset index that points every block at the segment's second record.
    data, crc = encode_file_header(OFFSET_INDEX_MAGIC, 0, SMALL["index_interval_bytes"]), 0
    for _ in range(3):
        entry, crc = encode_index_entry(OFFSET_ENTRY, crc, in_first[1].offset, in_first[1].timestamp)
        data += entry
    (bus_dir / f"{first[:20]}.index").write_bytes(data)

    found = problems(verify(bus_dir))

    assert len(found) == 2, found
    assert found[0].startswith(
        f"{first[:20]}.index at file position {FILE_HEADER_SIZE} (offset {in_first[1].offset}): "
    )
    assert f"but a rebuild from the segment gives (offset 0, timestamp {T0!r})" in found[0]
    assert "lacks its last" in found[1]


def test_a_missing_index_and_a_truncated_closed_segment_are_reported(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    names = segment_names(bus_dir)
    (bus_dir / f"{names[0][:20]}.catindex").unlink()
    segment = bus_dir / names[1]
    size = segment.stat().st_size
    os.truncate(segment, size - 10)

    found = problems(verify(bus_dir))

    assert found[0] == (
        f"{names[1]} at file position {size - 10}: the segment ends at offset {int(names[2][:20]) - 10} but "
        f"the next segment starts at {int(names[2][:20])}: the file was truncated, and a writer refuses to "
        "open the bus until it is repaired; restore the segment from a backup"
    )
    assert any(p.startswith(f"{names[0][:20]}.catindex: the category index file is missing") for p in found)
    assert any(p.startswith(f"{names[1]} at file position ") and "cut short" in p for p in found)


def damage_three_indexes(bus_dir: Path) -> list[str]:
    """A flipped byte, a cut-short file and well-formed wrong entries: the three kinds of index damage."""
    records = multi_segment_bus(bus_dir)
    names = [name[:20] for name in segment_names(bus_dir)]
    flip_byte(bus_dir / f"{names[-1]}.catindex", FILE_HEADER_SIZE + 3)
    short = bus_dir / f"{names[1]}.index"
    short.write_bytes(short.read_bytes()[: FILE_HEADER_SIZE + OFFSET_ENTRY.size])
    data, crc = encode_file_header(OFFSET_INDEX_MAGIC, 0, SMALL["index_interval_bytes"]), 0
    for _ in range(3):
        entry, crc = encode_index_entry(OFFSET_ENTRY, crc, records[1].offset, records[1].timestamp)
        data += entry
    (bus_dir / f"{names[0]}.index").write_bytes(data)
    return sorted([f"{names[0]}.index", f"{names[1]}.index", f"{names[-1]}.catindex"])


def test_verify_repair_rebuilds_every_damaged_index(bus_dir: Path) -> None:
    damaged = damage_three_indexes(bus_dir)

    repaired = bus("verify", bus_dir, "--repair")
    after = verify(bus_dir)

    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    lines = repaired.stdout.splitlines()
    assert "result: 4 problems" in lines  # the forged index is also short
    assert f"repaired: rebuilt {', '.join(damaged)}" in lines
    assert lines[-1] == "result: healthy"
    assert after.returncode == 0 and after.stdout.splitlines()[-1] == "result: healthy"


def test_verify_repair_needs_the_lock_only_when_there_is_an_index_to_rebuild(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    healthy = bus_dir.parent / "healthy"
    multi_segment_bus(healthy)
    damage_three_indexes(bus_dir.parent / "damaged")
    holders = [
        spawn_python(
            """
            import sys
            from filelog_bus import LogWriter
            with LogWriter(sys.argv[1], segment_bytes=1024, index_interval_bytes=128):
                print("holding", flush=True)
                sys.stdin.read()
            """,
            str(path),
            stdin=subprocess.PIPE,
        )
        for path in (healthy, bus_dir.parent / "damaged")
    ]
    try:
        for holder in holders:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"

        nothing_to_do = bus("verify", healthy, "--repair")
        locked = bus("verify", bus_dir.parent / "damaged", "--repair")

        assert nothing_to_do.returncode == 0, nothing_to_do.stderr
        message = assert_error_line(locked, "filelog-bus verify", 6)
        assert f"locked by a running writer (pid {holders[1].pid}): repairing indexes needs" in message
        assert locked.stdout.splitlines()[-1] == "result: 4 problems"  # the report came first
    finally:
        for holder in holders:
            holder.communicate("", timeout=HANG_GUARD)


def test_verify_json_lists_the_problems(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    name, position = file_of(bus_dir, records[2])
    flip_byte(bus_dir / name, position + 25)

    result = bus("verify", bus_dir, "--json")

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["healthy"] is False and report["records"] == 59
    assert [(p["file"], p["file_position"], p["offset"]) for p in report["problems"]] == [
        (name, position, records[2].offset)
    ]


def test_verify_draws_a_progress_bar_when_stderr_is_a_terminal(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(BUS), "verify", str(bus_dir)], stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    stdout, _ = process.communicate(timeout=HANG_GUARD)

    assert process.returncode == 0
    assert b"verify [" in drawn and b"100%" in drawn
    assert b"result: healthy" in stdout


_BUSY_WRITER = """
    import sys
    from filelog_bus import LogWriter

    path = sys.argv[1]
    i = 0
    while True:  # until terminated: append, roll every few records, reopen, delete old segments
        with LogWriter(path, segment_bytes=1024, index_interval_bytes=64) as writer:
            for _ in range(100):
                writer.append(("base", "initsync")[i % 2], b'{"n": %d}' % i + b" " * (i % 40))
                i += 1
                if i % 25 == 0:
                    writer.apply_retention(max_bytes=6000)
                if i == 300:
                    print("busy", flush=True)
"""


def test_read_only_commands_are_safe_while_a_writer_appends_rolls_and_deletes(bus_dir: Path) -> None:
    writer = spawn_python(_BUSY_WRITER, str(bus_dir))
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "busy\n"
        for _ in range(4):
            checked = verify(bus_dir)
            assert checked.returncode == 0 and "problem" not in checked.stdout, checked.stdout
            stats = bus("stats", bus_dir, "--json")
            assert stats.returncode == 0, stats.stderr
            assert set(json.loads(stats.stdout)["categories"]) == {"base", "initsync"}
            dumped = dump(bus_dir, "--category", "initsync")
            assert dumped.returncode == 0, dumped.stderr
            assert "Traceback" not in dumped.stderr
    finally:
        writer.terminate()
        writer.wait(timeout=HANG_GUARD)


# -- retention -------------------------------------------------------------------------


def test_retention_by_bytes_deletes_the_oldest_closed_segments(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    names = segment_names(bus_dir)
    keep_from = int(names[2][:20])

    result = bus("retention", bus_dir, "--bytes", records[-1].next_offset - keep_from)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"deleted 2 segments ({keep_from} bytes): {names[0]}, {names[1]}",
        f"the bus now starts at offset {keep_from}",
    ]
    assert segment_names(bus_dir) == names[2:]
    assert int(dump(bus_dir, "--limit", 1).stdout.split()[0]) == keep_from
    assert verify(bus_dir).returncode == 0  # the indexes kept their block size


def test_retention_by_days_deletes_segments_whose_newest_record_is_older(bus_dir: Path) -> None:
    now = time.time()
    old = [(c, p, now - 10 * 86400 + i) for i, (c, p, _) in enumerate(sample(40))]
    new = [(c, p, now - 3600 + i) for i, (c, p, _) in enumerate(sample(40))]
    records = write_bus(bus_dir, old + new, **SMALL)
    names = segment_names(bus_dir)
    ends = [int(name[:20]) for name in names[1:]]
    doomed = [
        name for name, end in zip(names, ends, strict=False) if end <= records[40].offset
    ]  # only old records
    assert 0 < len(doomed) < len(names) - 1

    result = bus("retention", bus_dir, "--days", "7")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"deleted {len(doomed)} segments")
    assert not set(doomed) & set(segment_names(bus_dir))


def test_retention_dry_run_only_says_what_it_would_delete(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    names = segment_names(bus_dir)
    before = content_snapshot(bus_dir)

    result = bus("retention", bus_dir, "--bytes", "0", "--dry-run")

    assert result.returncode == 0
    assert result.stdout.startswith(f"would delete {len(names) - 1} segments")
    assert content_snapshot(bus_dir) == before


def test_retention_says_clearly_when_the_server_holds_the_lock(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)
    holder = spawn_python(
        """
        import sys
        from filelog_bus import LogWriter
        with LogWriter(sys.argv[1]):
            print("holding", flush=True)
            sys.stdin.read()
        """,
        str(bus_dir),
        stdin=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        names = segment_names(bus_dir)

        result = bus("retention", bus_dir, "--bytes", "0")

        message = assert_error_line(result, "filelog-bus retention", 6)
        assert f"locked by a running writer (pid {holder.pid}): retention needs the writer lock" in message
        assert "--wait" in message
        assert segment_names(bus_dir) == names
    finally:
        holder.communicate("", timeout=HANG_GUARD)


def test_retention_never_creates_a_bus_and_needs_a_policy(tmp_path: Path, bus_dir: Path) -> None:
    missing = tmp_path / "missing"
    assert_error_line(bus("retention", missing, "--days", "1"), "filelog-bus retention", 3)
    assert not missing.exists()
    multi_segment_bus(bus_dir, count=3)
    assert "--days N, --bytes N" in assert_error_line(bus("retention", bus_dir), "filelog-bus retention", 2)
    for bad in (["--days", "0"], ["--days", "soon"], ["--bytes", "lots"], ["--wait", "-1"]):
        assert_error_line(bus("retention", bus_dir, "--bytes", "1", *bad), "filelog-bus retention", 2)


# -- verify --repair and a damaged category summary -----------------------------------------------


def filelog_bus_command() -> str:
    command = shutil.which("filelog-bus", path=os.path.dirname(sys.executable)) or shutil.which("filelog-bus")
    if command is None:
        pytest.skip("the filelog-bus command is not installed (pip install -e .)")
    return command


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [filelog_bus_command(), *args], capture_output=True, text=True, timeout=120, env=python_env()
    )


# Went wrong: filelog-bus verify --repair did not rebuild a damaged .catsummary.
@pytest.mark.parametrize("damage", ["entry-byte", "header-byte", "last-byte", "deleted"])
def test_verify_repair_rebuilds_a_damaged_category_summary(tmp_path: Path, damage: str) -> None:
    """filelog-bus verify --repair rebuilds a damaged or deleted .catsummary, as verify says it will,
    and the bus is healthy afterwards.
    """
    bus = tmp_path / "bus"
    acks: list[Ack] = []
    with open_writer(bus) as writer:
        seq = 0
        while len(segment_names(bus)) < 3:
            append(writer, acks, record("s", seq))
            seq += 1
    base = segment_names(bus)[0][:20]
    summary = bus / f"{base}.catsummary"
    original = summary.read_bytes()
    assert len(original) > HEADER + 16, "a closed segment's summary has entries"
    if damage == "deleted":
        summary.unlink()
    else:
        data = bytearray(original)
        position = {"entry-byte": HEADER + 2, "header-byte": 10, "last-byte": len(data) - 1}[damage]
        data[position] ^= 0x10
        summary.write_bytes(bytes(data))

    before = run_cli("verify", str(bus))
    assert before.returncode in (0, 1), before.stderr
    if damage != "deleted":
        assert before.returncode == 1, "verify did not report the damaged category summary"
    repair = run_cli("verify", "--repair", "--json", str(bus))
    assert repair.returncode == 0, f"verify --repair did not end healthy:\n{repair.stdout}\n{repair.stderr}"
    report = json.loads(repair.stdout)
    assert report["healthy"] is True
    if before.returncode == 1:
        assert any(base in name for name in report.get("repaired", [])), (
            f"verify --repair did not report rebuilding {summary.name}: {report.get('repaired')}"
        )
    after = run_cli("verify", str(bus))
    assert after.returncode == 0, after.stdout + after.stderr
    assert summary.read_bytes() == original, "the rebuilt summary differs from the one the writer wrote"
    check_bus(bus, acks)

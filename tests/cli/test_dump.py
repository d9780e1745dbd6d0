"""`filelog-dump`, run as the installed command against buses written with LogWriter."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from helpers.bus import SMALL, write_bus
from helpers.cli import (
    DUMP,
    HANG_GUARD,
    T0,
    Lines,
    assert_error_line,
    bus,
    dump,
    file_of,
    flip_byte,
    multi_segment_bus,
    sample,
    start,
)
from helpers.processes import spawn_python

from filelog_bus import LogWriter, Record


def dumped_offsets(stdout: str) -> list[int]:
    return [int(line.split()[0]) for line in stdout.splitlines()]


def test_one_line_per_record_with_offset_time_category_size_and_preview(bus_dir: Path) -> None:
    records = write_bus(
        bus_dir,
        [
            ("initsync", b'{\n    "eventtype": "init-start",\n    "objattrs": {}\n}', T0),
            ("base", b"plain   text\nover two lines", T0 + 1.5),
            ("base", bytes(range(200, 256)), T0 + 86400),
            ("base", b"x" * 500, T0 + 86401),
        ],
    )

    result = dump(bus_dir)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"         0  2024-05-01T10:40:00.000Z  initsync    {records[0].size:>6}  "
        '{"eventtype":"init-start","objattrs":{}}',
        f"{records[1].offset:>10}  2024-05-01T10:40:01.500Z  base        {records[1].size:>6}  "
        "plain text over two lines",
        f"{records[2].offset:>10}  2024-05-02T10:40:00.000Z  base        {records[2].size:>6}  "
        f"hex:{bytes(range(200, 232)).hex()}…",
        f"{records[3].offset:>10}  2024-05-02T10:40:01.000Z  base        {records[3].size:>6}  {'x' * 71}…",
    ]


def test_control_characters_in_payloads_are_escaped_not_sent_to_the_terminal(bus_dir: Path) -> None:
    write_bus(bus_dir, [("base", b"red \x1b[31m alert\x07", T0)])

    line = dump(bus_dir).stdout
    full = dump(bus_dir, "--payload").stdout

    assert "\x1b" not in line + full and "\x07" not in line + full
    assert "red \\x1b[31m alert\\x07" in line
    assert "    red \\x1b[31m alert\\x07" in full.splitlines()


def test_from_positions_on_the_first_record_at_or_after_the_offset(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    middle = records[30]

    exact = dump(bus_dir, "--from", middle.offset)
    inside = dump(bus_dir, "--from", middle.offset + 1)
    as_segment_name = dump(bus_dir, "--from", f"{middle.offset:020d}")

    assert dumped_offsets(exact.stdout) == [r.offset for r in records[30:]]
    assert dumped_offsets(inside.stdout) == [r.offset for r in records[31:]]
    assert dumped_offsets(as_segment_name.stdout) == dumped_offsets(exact.stdout)


def test_from_outside_the_bus_names_the_valid_range(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    end = records[-1].next_offset

    result = dump(bus_dir, "--from", end + 1)

    message = assert_error_line(result, "filelog-dump", 4)
    assert f"[0, {end}]" in message


def test_from_end_prints_nothing_and_says_so(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)

    result = dump(bus_dir, "--from", "end")

    assert result.stdout == ""
    assert "no record matched --from end" in assert_error_line(result, "filelog-dump", 1)


def test_category_returns_exactly_that_categorys_records_across_segments(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir, count=90)
    initsync = [r for r in records if r.category == "initsync"]

    everything = dump(bus_dir, "--category", "initsync")
    from_middle = dump(bus_dir, "--category", "initsync", "--from", records[45].offset + 1)

    assert dumped_offsets(everything.stdout) == [r.offset for r in initsync]
    assert dumped_offsets(from_middle.stdout) == [r.offset for r in initsync if r.offset > records[45].offset]
    assert all(line.split()[2] == "initsync" for line in everything.stdout.splitlines())


def test_category_that_never_occurs_prints_nothing_with_status_1(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir)

    result = dump(bus_dir, "--category", "nosuch")

    assert result.stdout == ""
    assert "--category nosuch" in assert_error_line(result, "filelog-dump", 1)


def test_since_is_inclusive_and_until_exclusive_in_every_time_syntax(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)  # one record a minute from 10:40 UTC
    at_11 = [r.offset for r in records if T0 + 20 * 60 <= r.timestamp < T0 + 23 * 60]

    iso_z = dump(bus_dir, "--since", "2024-05-01T11:00:00Z", "--until", "2024-05-01T11:03:00Z")
    naive_is_utc = dump(bus_dir, "--since", "2024-05-01T11:00", "--until", "2024-05-01 11:03")
    other_zone = dump(bus_dir, "--since", "2024-05-01T13:00+02:00", "--until", "2024-05-01T13:03+02:00")
    epoch = dump(bus_dir, "--since", f"@{T0 + 1200:.0f}", "--until", f"@{T0 + 1380:.0f}")
    date_only = dump(bus_dir, "--until", "2024-05-01")

    assert len(at_11) == 3
    for result in (iso_z, naive_is_utc, other_zone, epoch):
        assert dumped_offsets(result.stdout) == at_11, result.stderr
    assert date_only.returncode == 1 and date_only.stdout == ""


def test_since_accepts_a_duration_ago(bus_dir: Path) -> None:
    now = time.time()
    records = write_bus(bus_dir, [("base", b"old", now - 3 * 3600), ("base", b"new", now - 600)])

    result = dump(bus_dir, "--since", "1h")

    assert dumped_offsets(result.stdout) == [records[1].offset]


def test_limit_stops_after_n_records(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)

    result = dump(bus_dir, "--limit", 7, "--category", "base")

    assert dumped_offsets(result.stdout) == [r.offset for r in records if r.category == "base"][:7]


def test_json_gives_every_field_and_the_whole_payload_as_text_or_base64(bus_dir: Path) -> None:
    text = '{\n    "login": "ålice",\n    "groups": ["staff"]\n}\n' + "z" * 5000
    binary = b"\xff\xfe\x00 not utf-8"
    records = write_bus(bus_dir, [("base", text.encode(), T0 + 0.25), ("blob", binary, T0 + 1)])

    result = dump(bus_dir, "--json")

    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first == {
        "offset": 0,
        "next_offset": records[0].size,
        "time": "2024-05-01T10:40:00.250000Z",
        "timestamp": T0 + 0.25,
        "category": "base",
        "size": records[0].size,
        "payload_size": len(text.encode()),
        "payload_encoding": "utf-8",
        "payload": text,
    }
    assert second["payload_encoding"] == "base64"
    assert base64.b64decode(second["payload"]) == binary
    assert second["offset"] == records[1].offset


def test_payload_prints_the_whole_payload_indented_under_each_line(bus_dir: Path) -> None:
    write_bus(bus_dir, [("base", b'{\n    "a": 1\n}', T0), ("blob", bytes(range(20)), T0 + 1)])

    lines = dump(bus_dir, "--payload").stdout.splitlines()

    assert lines[1:4] == ["    {", '        "a": 1', "    }"]
    assert lines[5:] == [
        "    00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................",
        "    00000010  10 11 12 13                                      ....",
    ]
    assert lines[0].split()[2] == "base" and lines[4].split()[2] == "blob"


def test_output_to_a_pipe_closed_early_ends_quietly(bus_dir: Path) -> None:
    # Far more output than a pipe buffers, so the command is still writing when the pipe closes.
    write_bus(bus_dir, [("base", b"%05d " % i + b"p" * 2000, T0 + i) for i in range(300)], durability="never")
    process = start(DUMP, bus_dir, "--payload")
    assert process.stdout is not None and process.stderr is not None

    first = process.stdout.readline()
    process.stdout.close()
    status = process.wait(timeout=HANG_GUARD)

    assert first.split()[0] == "0"
    assert status == 0
    assert process.stderr.read() == ""


def test_piped_into_head_ends_quietly(bus_dir: Path) -> None:
    write_bus(bus_dir, [("base", b"p" * 1000, T0 + i) for i in range(500)], durability="never")

    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; '{DUMP}' '{bus_dir}' | head -n 3"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
    )

    assert result.returncode == 0
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 3


_WRITER = """
    import os, sys, time
    from filelog_bus import LogWriter

    path, go = sys.argv[1], sys.argv[2]
    with LogWriter(path, segment_bytes=1024, index_interval_bytes=128) as writer:
        for i in range(3):
            writer.append("before", b"before-%d" % i)
        writer.append("after", b"after-ready")
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.01)
        i = 0
        while True:  # until the test terminates it, rolling a segment every dozen records
            writer.append("after", b"after-%d" % i)
            writer.append("noise", b"noise-%d" % i)
            i += 1
            time.sleep(0.02)
"""


def test_follow_prints_records_appended_after_it_started_and_ends_cleanly_on_ctrl_c_or_sigterm(
    bus_dir: Path, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    writer = spawn_python(_WRITER, str(bus_dir), str(go))
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        plain = start(DUMP, bus_dir, "--follow")
        by_category = start(DUMP, bus_dir, "--follow", "--category", "after", "--json")
        plain_lines, category_lines = Lines(plain.stdout), Lines(by_category.stdout)  # type: ignore[arg-type]
        plain_lines.wait_for(lambda line: line.endswith("after-ready"))  # both followers are running
        category_lines.wait_for(lambda line: json.loads(line)["payload"] == "after-ready")

        go.touch()  # only now does the writer append the "after" records
        plain_lines.wait_for(lambda line: line.endswith("after-12"))
        category_lines.wait_for(lambda line: json.loads(line)["payload"] == "after-12")

        # Ctrl-C, and SIGTERM (a service manager, kill): both end it cleanly, never by the signal
        for follower, ending in ((plain, signal.SIGTERM), (by_category, signal.SIGINT)):
            follower.send_signal(ending)
            assert follower.wait(timeout=HANG_GUARD) == 0
            assert follower.stderr is not None and follower.stderr.read() == ""
    finally:
        writer.terminate()
        writer.wait(timeout=HANG_GUARD)

    previews = [line.split()[-1] for line in plain_lines.lines]
    appended_later = [f"{kind}-{i}" for i in range(13) for kind in ("after", "noise")][:-1]
    assert previews == ["before-0", "before-1", "before-2", "after-ready", *appended_later]
    payloads = [json.loads(line)["payload"] for line in category_lines.lines]
    assert payloads == ["after-ready", *(f"after-{i}" for i in range(13))]


def test_follow_with_a_limit_stops_by_itself(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir, count=10)

    result = dump(bus_dir, "--follow", "--limit", 4)

    assert result.returncode == 0 and len(result.stdout.splitlines()) == 4


def test_records_deleted_by_retention_while_dumping_are_skipped_with_a_warning(bus_dir: Path) -> None:
    settings = {"segment_bytes": 256 * 1024, "durability": "never"}
    records = write_bus(
        bus_dir, [("base", b"%05d " % i + b"p" * 2000, T0 + i) for i in range(600)], **settings
    )
    bases = sorted(int(name[:20]) for name in os.listdir(bus_dir) if name.endswith(".log"))
    process = start(DUMP, bus_dir, "--payload")
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # it has started; a full pipe now holds it inside the first segment

    with LogWriter(bus_dir, **settings) as writer:  # type: ignore[arg-type]
        deleted = writer.apply_retention(max_bytes=0)
    rest = process.stdout.read()
    status = process.wait(timeout=HANG_GUARD)

    assert len(deleted) == len(bases) - 1 >= 2
    assert status == 0
    assert process.stderr.read() == (
        f"filelog-dump: warning: retention deleted offsets {bases[1]} to {bases[-1]} before they were printed; "
        f"going on from offset {bases[-1]}\n"
    )
    headers = [line for line in (first + rest).splitlines() if line.split()[1].endswith("Z")]  # not payloads
    shown = [int(line.split()[0]) for line in headers]
    assert shown == [r.offset for r in records if r.offset < bases[1] or r.offset >= bases[-1]]


def test_a_damaged_record_ends_the_dump_with_one_line_naming_the_file(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir)
    name, position = file_of(bus_dir, records[5])
    flip_byte(bus_dir / name, position + 20)

    result = dump(bus_dir)

    message = assert_error_line(result, "filelog-dump", 5)
    assert f"{name} at file position {position}" in message
    assert dumped_offsets(result.stdout) == [r.offset for r in records[:5]]


def test_paths_that_are_not_a_bus_are_refused_with_status_3(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")

    for path in (tmp_path / "missing", foreign / "notes.txt", foreign):
        assert "bus" in assert_error_line(dump(path), "filelog-dump", 3)
    assert os.listdir(foreign) == ["notes.txt"]


def test_an_empty_bus_says_so_with_status_1(bus_dir: Path) -> None:
    write_bus(bus_dir, [])

    result = dump(bus_dir)

    assert "empty" in assert_error_line(result, "filelog-dump", 1)


def test_bad_command_lines_are_one_line_and_status_2(bus_dir: Path) -> None:
    multi_segment_bus(bus_dir, count=3)

    for args, expected in [
        (["--since", "yesterday"], "invalid time 'yesterday'"),
        (["--until", "2024-13-01"], "invalid time"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "must be before --until"),
        (["--follow", "--until", "2024-05-01"], "--until cannot be combined with --follow"),
        (["--from", "12ab"], "invalid offset"),
        (["--from", "-5"], "invalid offset"),
        (["--limit", "0"], "at least 1"),
        (["--category", ""], "category"),
        (["--json", "--payload"], "not allowed with"),
        (["--no-such-option"], "unrecognized arguments"),
    ]:
        message = assert_error_line(dump(bus_dir, *args), "filelog-dump", 2)
        assert expected in message, (args, message)


def test_dump_is_also_a_filelog_bus_command(bus_dir: Path) -> None:
    records = multi_segment_bus(bus_dir, count=5)

    result = bus("dump", bus_dir, "--limit", 2)

    assert dumped_offsets(result.stdout) == [r.offset for r in records[:2]]


def test_json_carries_every_field_of_the_records_as_written(bus_dir: Path) -> None:
    records = write_bus(bus_dir, sample(20), **SMALL)

    shown = [json.loads(line) for line in dump(bus_dir, "--json").stdout.splitlines()]

    as_records = [
        Record(o["offset"], o["timestamp"], o["category"], o["payload"].encode(), o["size"]) for o in shown
    ]
    assert as_records == records

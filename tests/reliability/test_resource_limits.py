"""Resource faults: the file-size limit (EFBIG) and a full disk (ENOSPC) during appends.

Each fault is real: ``resource.setrlimit(RLIMIT_FSIZE)`` in a writer process
(Python ignores SIGXFSZ, so write() fails with EFBIG), and a 1 MiB tmpfs (mounted
when the tests run as root and may mount; skipped otherwise). The failing append
must raise BusWriteError, leave no byte of itself behind, lose nothing
acknowledged; the writer then refuses every call (fail-stop, BusClosedError) and the
bus goes on once a writer is opened again. Through the Hermes producer plugin the
same fault must surface as FailedToSendEventError.
"""

from __future__ import annotations

import errno
import random
import subprocess
from pathlib import Path

import pytest
from helpers.bus import (
    CHILD_TIMEOUT,
    LineReader,
    assert_contiguous,
    assert_lookups_agree,
    parse_acks,
    read_all,
    segment_paths,
)
from helpers.faults import fill_disk
from helpers.processes import REPO, STANDIN_DIR, run_python, spawn_python

from filelog_bus import LogWriter
from filelog_bus.errors import FilelogBusError
from filelog_bus.layout import FILE_HEADER_SIZE

#: Appends 700-byte records under a file-size limit until one fails, then retries it (the stopped
#: writer refuses), then closes.
#: argv: path durability limit
FSIZE_CHILD = """
import resource, sys
from filelog_bus import LogWriter
from filelog_bus.errors import BusClosedError, BusWriteError

path, durability, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
writer = LogWriter(path, durability=durability, segment_bytes=4 * limit).open()
for seq in range(4 * limit // 700):
    try:
        offset = writer.append("users", bytes([seq % 256]) * 700, float(seq))
    except BusWriteError as exc:
        print("failed", exc.errno, str(exc).replace("\\n", " "), flush=True)
        break
    print("ack", seq, offset, flush=True)
else:
    print("never failed", flush=True)
try:
    writer.append("users", bytes(700), 0.0)
    print("retry accepted", flush=True)
except BusClosedError as exc:
    print("retry refused", type(exc.failure).__name__, flush=True)
writer.close()
print("closed", flush=True)
"""


def outcome(output: str, prefix: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, f"expected one {prefix!r} line in:\n{output}"
    return lines[0]


@pytest.mark.parametrize("durability", ["always", "never"])
def test_file_size_limit_fails_the_append_and_loses_nothing(bus_dir: Path, durability: str) -> None:
    limit = 30_000
    result = run_python(FSIZE_CHILD, str(bus_dir), durability, str(limit))
    assert result.returncode == 0, result.stderr
    acks = parse_acks(result.stdout)
    failed = outcome(result.stdout, "failed")
    assert failed.split()[1] == str(errno.EFBIG)
    assert "file-size limit" in failed and segment_paths(bus_dir)[0].name in failed, failed
    assert outcome(result.stdout, "retry") == "retry refused BusWriteError", (
        "the stopped writer accepted a retry"
    )
    assert "closed" in result.stdout

    (segment,) = segment_paths(bus_dir)
    acked_end = acks[-1][1] + read_all(bus_dir)[-1].size
    assert segment.stat().st_size == FILE_HEADER_SIZE + acked_end, "the failed append left bytes behind"
    assert segment.stat().st_size <= limit
    records = read_all(bus_dir)
    assert [(r.offset, r.payload) for r in records] == [(o, bytes([s % 256]) * 700) for s, o in acks]

    with LogWriter(bus_dir, lock_timeout=0) as writer:  # no limit here: the bus goes on
        assert writer.end_offset == acked_end
        writer.append("users", b"after the limit was lifted")
    records = read_all(bus_dir)
    assert len(records) == len(acks) + 1
    assert_contiguous(records)
    assert_lookups_agree(bus_dir, records, random.Random(0))


# -- a full disk ---------------------------------------------------------------------------------------------


#: Appends until the disk is full, reports how the failure looked (and that the stopped writer refuses
#: a retry), waits for the test to free space, then reopens the writer, appends 20 more records and
#: closes. argv: path segment_bytes payload_size interval
ENOSPC_CHILD = """
import sys
from filelog_bus import LogWriter

path = sys.argv[1]
segment_bytes, size, interval = map(int, sys.argv[2:5])
writer = LogWriter(path, segment_bytes=segment_bytes, index_interval_bytes=interval).open()
seq = 0

def append():
    global seq
    offset = writer.append(f"c{seq % 5}", bytes([seq % 256]) * size, float(seq))
    print("ack", seq, offset, flush=True)
    seq += 1

def attempt(what):
    try:
        append()
        return True
    except Exception as exc:
        print(what, type(exc).__name__, getattr(exc, "errno", None), str(exc).replace("\\n", " "), flush=True)
        return False

while attempt("failed"):
    pass
seq += 1  # the failed record's seq is never reused
attempt("retry")
print("full", flush=True)
sys.stdin.readline()
writer.close()
writer = LogWriter(path, segment_bytes=segment_bytes, index_interval_bytes=interval).open()
for _ in range(20):
    append()
writer.close()
print("closed", flush=True)
"""


# Went wrong: ENOSPC while a roll created the new segment's indexes escaped as a bare OSError.
@pytest.mark.parametrize(
    ("segment_bytes", "payload_size", "interval"),
    [(1024, 100, 64), (4096, 3000, 64), (65536, 5000, 4096)],
    ids=["small-segments", "page-sized-records", "large-segments"],
)
def test_full_disk_fails_the_append_then_the_bus_goes_on(
    small_tmpfs: Path, segment_bytes: int, payload_size: int, interval: int
) -> None:
    """ENOSPC: BusWriteError, the writer stops, nothing acknowledged is lost, and a reopened writer goes
    on once space is freed."""
    bus = small_tmpfs / "bus"
    ballast = small_tmpfs / "ballast"
    ballast.write_bytes(bytes(600 * 1024))
    process = spawn_python(
        ENOSPC_CHILD,
        str(bus),
        str(segment_bytes),
        str(payload_size),
        str(interval),
        text=False,
        stdin=subprocess.PIPE,
    )
    try:
        lines = LineReader(process)
        output = ""
        while (line := lines.readline()) and line != "full\n":
            output += line
        assert line == "full\n", f"writer died: {process.stderr.read().decode() if process.stderr else ''}"
        failed = outcome(output, "failed ")
        assert outcome(output, "retry ").startswith("retry BusClosedError"), (
            "the stopped writer accepted a retry"
        )
        acks = parse_acks(output)
        assert acks, "nothing fit on the disk: the test premise is broken"
        records = read_all(bus)
        assert [r.offset for r in records] == [offset for _, offset in acks], "the reader shows other records"

        ballast.unlink()
        assert process.stdin is not None
        process.stdin.write(b"\n")
        process.stdin.close()
        output += lines.rest()
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert process.wait(timeout=CHILD_TIMEOUT) == 0, (
            f"the writer did not go on once space was freed:\n{stderr}"
        )
        acks = parse_acks(output)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # While the disk is full again, opening may fail, but only with a typed error.
    filler = small_tmpfs / "filler"
    fill_disk(filler)
    try:
        LogWriter(bus, lock_timeout=0).open().close()
    except FilelogBusError:
        pass
    except OSError as exc:
        pytest.fail(f"opening the bus on a full disk raised an untyped {exc!r}")
    filler.unlink()

    with LogWriter(bus, lock_timeout=0) as writer:
        writer.append("c0", b"after the disk was freed", 0.0)
    records = read_all(bus)
    assert [r.offset for r in records[:-1]] == [offset for _, offset in acks]
    assert all(r.payload == bytes([s % 256]) * payload_size for r, (s, _) in zip(records, acks, strict=False))
    assert_contiguous(records)
    assert_lookups_agree(bus, records, random.Random(0))
    # The failing append itself: a BusWriteError saying the disk is full (checked last, so the
    # checks above still report what else went wrong).
    assert failed.split()[1:3] == ["BusWriteError", str(errno.ENOSPC)], failed
    assert "free disk space" in failed, failed


# -- through the Hermes producer ---------------------------------------------------------------------------

HERMES_CHILD = """
import resource, sys
from hermes_runtime import install_hermes_builtin
from lib.datamodel.event import Event
from lib.plugins import FailedToSendEventError
from hermes_plugin import FilelogProducerPlugin

path, limit = sys.argv[1], int(sys.argv[2])
install_hermes_builtin("hermes-server")
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
bus = FilelogProducerPlugin({"path": path})
sent = 0
with bus:
    try:
        for i in range(10 * limit // 500):
            bus.send(Event("base", "added", "user", f"user-{i}", {"blob": "x" * 500}))
            sent += 1
        print("never failed", flush=True)
    except FailedToSendEventError as exc:
        print("FailedToSendEventError", sent, str(exc).replace("\\n", " "), flush=True)
print("closed", sent, flush=True)
"""


def test_hermes_producer_reports_a_write_failure_as_failed_to_send(bus_dir: Path) -> None:
    """The file-size limit through the Hermes producer plugin: FailedToSendEventError, sent events intact."""
    if not (REPO / "hermes_plugin.py").exists() or not (STANDIN_DIR / "lib" / "plugins.py").exists():
        pytest.skip("the Hermes producer plugin or its stand-in is not in this checkout yet")
    result = run_python(HERMES_CHILD, str(bus_dir), "40000", extra_path=[STANDIN_DIR])
    assert result.returncode == 0, result.stderr
    failed = outcome(result.stdout, "FailedToSendEventError")
    sent = int(failed.split()[1])
    assert sent > 0
    assert "File too large" in failed or "file-size limit" in failed, failed
    records = read_all(bus_dir)
    assert [r.category for r in records] == ["base"] * sent
    assert [f'"user-{i}"' in r.payload.decode() for i, r in enumerate(records)] == [True] * sent

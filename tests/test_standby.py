"""The standby: the next segment's file, zero-filled ahead of the roll (filelog_bus/standby.py).

Real files, a real background thread, real SIGKILLs and faults injected at the I/O seam by the
file they hit: the standby appears once the active segment is half full, a roll takes that very
file, and nothing that goes wrong with it (a failing disk, a kill in the middle, a leftover of
another size) costs a record or stops the writer.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest
from fault_support import path_faults
from reliability_support import read_all
from support import spawn_python

from filelog_bus import LogWriter
from filelog_bus.check import verify_bus
from filelog_bus.layout import STANDBY_NAME, TEMPORARY_SUFFIX, segment_name
from filelog_bus.segment import list_segment_bases, preallocated_size
from filelog_bus.standby import BACKGROUND_BYTES

#: The smallest segments whose standby is prepared in the background.
SEGMENT = BACKGROUND_BYTES
PAYLOAD = bytes(range(256)) * 4  # 1 KiB, no zero bytes at the start


def standby(bus: Path) -> Path:
    return bus / STANDBY_NAME


def leftovers(bus: Path) -> list[str]:
    return sorted(name for name in os.listdir(bus) if name.endswith(TEMPORARY_SUFFIX))


def only_zeros(path: Path) -> bool:
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    return True


def wait_for(condition: object, what: str, seconds: float = 60.0) -> None:
    """Wait for a background thread's work to show on disk (not a timing assertion: a deadline)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.01)


def fill_to(writer: LogWriter, base: int, fraction: float) -> list[int]:
    """Append 1 KiB records until the active segment (at ``base``) is ``fraction`` full."""
    offsets = []
    while writer.end_offset - base < fraction * SEGMENT:
        offsets.append(writer.append("c", PAYLOAD))
    return offsets


def test_the_next_segment_is_prepared_from_half_full_and_the_roll_takes_that_file(tmp_path: Path) -> None:
    bus = tmp_path / "bus"
    size = preallocated_size(SEGMENT)
    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        offsets = fill_to(writer, 0, 0.45)
        assert not standby(bus).exists(), "prepared before the segment was half full"
        offsets += fill_to(writer, 0, 0.55)
        wait_for(lambda: standby(bus).exists(), "preparing the standby")  # while the writer appends
        assert standby(bus).stat().st_size == size and only_zeros(standby(bus))
        assert leftovers(bus) == []
        held = os.open(standby(bus), os.O_RDONLY)  # while held, its inode number is not reused
        try:
            offsets += fill_to(writer, 0, 1.01)  # the roll
            new_base = list_segment_bases(str(bus))[-1]
            assert new_base > 0
            new_segment = bus / segment_name(new_base)
            assert new_segment.stat().st_ino == os.fstat(held).st_ino, "the roll did not take the standby"
        finally:
            os.close(held)
        assert new_segment.stat().st_size == size
        assert not standby(bus).exists()
        offsets += fill_to(writer, new_base, 0.6)  # the next one is prepared in its turn
    assert standby(bus).exists() and only_zeros(standby(bus))  # close waited for it: complete
    assert leftovers(bus) == []
    assert [record.offset for record in read_all(bus)] == offsets
    assert verify_bus(str(bus)).healthy


def test_small_segments_and_small_buses_get_no_standby(tmp_path: Path) -> None:
    """Segments under BACKGROUND_BYTES are zero-filled at the roll; a bus whose active segment never
    got half full has no standby: no disk spent ahead for nothing."""
    small = tmp_path / "small"
    with LogWriter(small, segment_bytes=64 * 1024, durability="never") as writer:
        for _ in range(300):
            writer.append("c", PAYLOAD)
    assert len(list_segment_bases(str(small))) > 3
    assert not standby(small).exists()
    assert (small / segment_name(list_segment_bases(str(small))[-1])).stat().st_size == preallocated_size(
        64 * 1024
    )
    default = tmp_path / "default"
    with LogWriter(default) as writer:
        writer.append("c", PAYLOAD)
    assert not standby(default).exists()


@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC])
@pytest.mark.parametrize("call", ["open", "pwrite", "fsync", "replace"])
def test_a_failed_preparation_costs_only_speed(tmp_path: Path, call: str, error: int) -> None:
    """A failing call of the background preparation (EIO, a full disk) neither stops the writer nor
    costs a record: the roll zero-fills the new segment itself, and no temporary file is left."""
    bus = tmp_path / "bus"
    temporary = str(standby(bus)) + TEMPORARY_SUFFIX
    target = str(standby(bus)) if call == "replace" else temporary  # the path each call acts on

    def decide(name: str, path: str | None, args: tuple[object, ...]) -> int | None:
        return error if name == call and path == target else None

    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        with path_faults(decide) as fired:
            offsets = fill_to(writer, 0, 0.6)
            wait_for(lambda: fired, "the injected fault")
            offsets += fill_to(writer, 0, 1.2)  # rolls without a standby
        assert writer.failure is None
        assert fired == [(call, target)]
        new_base = list_segment_bases(str(bus))[-1]
        assert new_base > 0
        assert (bus / segment_name(new_base)).stat().st_size == preallocated_size(SEGMENT)
    assert leftovers(bus) == []
    assert [record.offset for record in read_all(bus)] == offsets
    assert verify_bus(str(bus)).healthy


def test_a_standby_of_another_size_and_a_half_written_one_are_not_used(tmp_path: Path) -> None:
    """A standby left by a writer with another segment size is deleted, not taken; a half-written
    one (a crash in the middle) is a temporary file, removed by the next open."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=64 * 1024) as writer:
        offsets = [writer.append("c", PAYLOAD)]
    standby(bus).write_bytes(bytes(preallocated_size(32 * 1024)))
    half_written = Path(str(standby(bus)) + TEMPORARY_SUFFIX)
    half_written.write_bytes(b"\x01" * 5000)
    held = os.open(standby(bus), os.O_RDONLY)  # while held, its inode number is not reused
    try:
        with LogWriter(bus, segment_bytes=64 * 1024) as writer:
            assert leftovers(bus) == []
            while len(list_segment_bases(str(bus))) < 2:
                offsets.append(writer.append("c", PAYLOAD))
            new = bus / segment_name(list_segment_bases(str(bus))[-1])
            assert new.stat().st_ino != os.fstat(held).st_ino
            assert new.stat().st_size == preallocated_size(64 * 1024)
            assert not standby(bus).exists()
    finally:
        os.close(held)
    assert [record.offset for record in read_all(bus)] == offsets


CHILD = """
import os, signal, sys
from filelog_bus import LogWriter
bus, segment, durability = sys.argv[1], int(sys.argv[2]), sys.argv[3]
writer = LogWriter(bus, segment_bytes=segment, durability=durability).open()
payload = bytes(range(256)) * 4
while True:
    offset = writer.append("c", payload)
    print(offset, flush=True)
    if writer.end_offset > segment * {stop}:
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize(("stop", "durability"), [(0.51, "always"), (0.55, "never"), (1.05, "always")])
def test_sigkill_while_the_standby_is_prepared_or_taken(tmp_path: Path, stop: float, durability: str) -> None:
    """A writer killed right after starting the preparation (or just after a roll took the standby):
    the next open removes any half-written standby, every acknowledged record is there, and the bus
    goes on rolling into full-size segments."""
    bus = tmp_path / "bus"
    child = spawn_python(CHILD.format(stop=stop), str(bus), str(SEGMENT), durability)
    output, _ = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL
    acknowledged = [int(line) for line in output.split()]
    with LogWriter(bus, segment_bytes=SEGMENT, durability="never") as writer:
        assert leftovers(bus) == []
        if standby(bus).exists():  # only ever complete
            assert standby(bus).stat().st_size == preallocated_size(SEGMENT) and only_zeros(standby(bus))
        assert [record.offset for record in read_all(bus)] == acknowledged
        base = list_segment_bases(str(bus))[-1]
        more = fill_to(writer, base, 1.1)
    bases = list_segment_bases(str(bus))
    assert (bus / segment_name(bases[-1])).stat().st_size == preallocated_size(SEGMENT)
    assert [record.offset for record in read_all(bus)][-len(more) :] == more
    assert verify_bus(str(bus)).healthy

"""The promises of docs/RELIABILITY.md, checked after a failure: a harness of small segments and index blocks.

Every append that returned reads back at its offset with its own category and payload, once, in
order; no offset is returned twice; readers never hit CorruptionError; a writer that failed refuses
every later call with BusClosedError; a new writer opens the bus, appends and rolls; ``verify_bus``
says healthy. The checks assert on error types and fields, never on messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from filelog_bus import LogReader, LogWriter, Record, check
from filelog_bus.errors import BusClosedError
from helpers.bus import SMALL_DENSE, deadline, read_all, segment_names
from helpers.faults import count_calls

#: The categories of the harness's records (three, unlike helpers.bus's writer children).
HARNESS_CATEGORIES = ("users", "groups", "hosts")


#: A record this big never fits in what fill_near_roll leaves of a segment: appending it rolls.
BIG = 400


#: How long reading a small bus may take before it counts as a reader spinning (a hang guard).
READ_DEADLINE = 20.0


HEADER = 32  # every segment file starts with a 32-byte header (docs/FORMAT.md)
PAGE = 4096  # the page a power cut loses whole (the unsynced-tail recovery tests)


class Ack(NamedTuple):
    """An append that returned: what must read back at ``offset``."""

    offset: int
    category: str
    payload: bytes


def record(
    tag: str, seq: int, size: int | None = None, category: str | None = None
) -> tuple[str, bytes, float]:
    """(category, payload, timestamp) of a deterministic record: 40-120 bytes unless ``size``."""
    length = 40 + (seq * 37) % 80 if size is None else size
    payload = f"{tag}/{seq}:".encode().ljust(length, b"#")
    return category or HARNESS_CATEGORIES[seq % len(HARNESS_CATEGORIES)], payload, 1_700_000_000.0 + seq


def append(writer: LogWriter, acks: list[Ack], rec: tuple[str, bytes, float]) -> int:
    offset = writer.append(*rec)
    acks.append(Ack(offset, rec[0], rec[1]))
    return offset


def open_writer(bus: Path, **settings: Any) -> LogWriter:
    """A writer on small segments with an index entry for nearly every record (SMALL_DENSE)."""
    return LogWriter(bus, **{**SMALL_DENSE, **settings}).open()


def active_base(bus: Path) -> int:
    return int(segment_names(bus)[-1][:20])


def fill_near_roll(writer: LogWriter, bus: Path, acks: list[Ack], tag: str) -> None:
    """Append small records until fewer than BIG - 100 bytes are left in the active segment."""
    seq = 0
    while writer.end_offset - active_base(bus) <= SMALL_DENSE["segment_bytes"] - BIG + 100:
        append(writer, acks, record(tag, seq))
        seq += 1


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def assert_healthy(bus: Path) -> None:
    report = check.verify_bus(str(bus))
    assert report.healthy, f"verify_bus found problems: {report.problems}"


def check_bus(bus: Path, acks: list[Ack], *, since: int = 0, verify: bool = True) -> list[Record]:
    """The invariants: acknowledged records (at or after ``since``) read back, once, in order; verify is healthy.

    verify=False for a bus no writer has recovered yet (verify may rightly report, e.g., the missing
    indexes of a segment whose creation was cut short).
    """
    offsets = [ack.offset for ack in acks]
    assert offsets == sorted(set(offsets)), f"an offset was returned twice, or out of order: {offsets}"
    records = read_all(bus, hang_guard=READ_DEADLINE)
    seen = [r.offset for r in records]
    assert seen == sorted(set(seen)), f"the reader yielded an offset twice, or out of order: {seen}"
    by_offset = {r.offset: r for r in records}
    wanted = [ack for ack in acks if ack.offset >= since]
    for ack in wanted:
        found = by_offset.get(ack.offset)
        assert found is not None, f"the record acknowledged at offset {ack.offset} is not on the bus"
        assert (found.category, found.payload) == (ack.category, ack.payload), (
            f"offset {ack.offset} holds {found.category}/{found.payload[:20]!r}, "
            f"not the record acknowledged there ({ack.category}/{ack.payload[:20]!r})"
        )
    with deadline(READ_DEADLINE, "find_next with timeout=0"), LogReader(bus, timeout=0) as reader:
        for ack in wanted:
            reader.seek(ack.offset)
            found = reader.find_next(ack.category)
            assert found is not None and found.offset == ack.offset, (
                f"find_next({ack.category!r}) from {ack.offset} gave {found and found.offset}"
            )
        for category in HARNESS_CATEGORIES:
            reader.seek_to_beginning()
            chain = []
            while (found := reader.find_next(category)) is not None:
                assert found.category == category
                chain.append(found.offset)
            assert chain == [r.offset for r in records if r.category == category], (
                f"find_next({category!r}) from the beginning skipped or invented records"
            )
    if verify:
        assert_healthy(bus)
    return records


def assert_stopped(writer: LogWriter, failure: type[BaseException], bus: Path) -> None:
    """The writer refuses every later call with BusClosedError naming the failure, and deletes nothing."""
    assert isinstance(writer.failure, failure), f"writer.failure is {writer.failure!r}"
    names = sorted(os.listdir(bus))
    calls: dict[str, Callable[[], object]] = {
        "append": lambda: writer.append("users", b"after the failure"),
        "end_offset": lambda: writer.end_offset,
        "begin_offset": lambda: writer.begin_offset,
        "apply_retention": lambda: writer.apply_retention(max_bytes=1),
        "repair_indexes": writer.repair_indexes,
    }
    for name, call in calls.items():
        with pytest.raises(BusClosedError) as info:
            call()
        assert isinstance(info.value.failure, failure), (
            f"{name}: BusClosedError.failure is {info.value.failure!r}"
        )
        assert str(info.value)
    assert segment_names(bus) == [n for n in names if n.endswith(".log")], "a stopped writer deleted segments"


def reopen_append_and_roll(bus: Path, acks: list[Ack], tag: str, *, since: int = 0) -> None:
    """A new writer opens the bus, appends until it rolled, closes; another one opens and appends.

    The invariants hold after each.
    """
    with open_writer(bus) as writer:
        rolled = len(segment_names(bus)) + 1
        seq = 0
        while len(segment_names(bus)) < rolled:
            append(writer, acks, record(tag, seq))
            seq += 1
    check_bus(bus, acks, since=since)
    with open_writer(bus) as writer:
        append(writer, acks, record(tag, seq))
    check_bus(bus, acks, since=since)


def after_failed_append(bus: Path, writer: LogWriter, acks: list[Ack], failure: type[BaseException]) -> None:
    """What must hold after an append failed: stopped, failed record invisible, bus reopens and goes on."""
    assert_stopped(writer, failure, bus)
    visible = read_all(bus, hang_guard=READ_DEADLINE)
    assert [(r.offset, r.payload) for r in visible] == [(a.offset, a.payload) for a in acks], (
        "while the failed writer lives, readers must see exactly the acknowledged records"
    )
    writer.close()  # still works on a stopped writer, releases the lock
    check_bus(bus, acks, verify=False)  # readers cope before any writer recovered the bus
    reopen_append_and_roll(bus, acks, "after")


class Prepared(NamedTuple):
    writer: LogWriter
    acks: list[Ack]
    target: tuple[str, bytes, float]


def prepare(bus: Path, kind: str, durability: str = "always") -> Prepared:
    """An open writer with some acknowledged records, and the record whose append will fail.

    kind "rolls": appending the target rolls the segment; "plain": it fits in the active one.
    """
    writer = open_writer(bus, durability=durability)
    acks: list[Ack] = []
    if kind == "rolls":
        for seq in range(10):  # at least one closed segment first
            append(writer, acks, record("first", seq))
        fill_near_roll(writer, bus, acks, "pre")
        return Prepared(writer, acks, record("target", 0, size=BIG))
    for seq in range(3):
        append(writer, acks, record("pre", seq))
    return Prepared(writer, acks, record("target", 0, size=20))


def count_target_calls(tmp_path: Path, kind: str, durability: str = "always") -> dict[str, int]:
    """The seam calls of the target append of ``prepare(kind)`` (checking that it rolls or not)."""
    bus = tmp_path / f"count-{kind}-{durability}"
    writer, _, target = prepare(bus, kind, durability)
    before = len(segment_names(bus))
    counts = count_calls(lambda: writer.append(*target))
    writer.close()
    assert len(segment_names(bus)) == before + (kind == "rolls"), "the test's roll prediction is wrong"
    return dict(counts)

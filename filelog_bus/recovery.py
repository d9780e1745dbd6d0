"""Opening a bus for writing: the passes that bring it to a clean state (Kafka's LogLoader).

``load_segments`` runs them in order:

1. remove leftovers of interrupted work: temporary files (``*.new``) and derived files
   whose segment is gone (a crash during retention);
2. check that closed segments follow each other without gaps (a stat each) and rebuild
   derived files that are missing or misshapen (a cheap header check each);
3. open the active segment: continue where a clean close left it, or recover it
   (``ActiveSegment.recover``: only what follows the last durable point is scanned, so the
   cost does not grow with the bus).

This is the single recovery path: whatever a crash or a failed write left behind, the
next writer's open goes through here.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from typing import NamedTuple

from filelog_bus import fs
from filelog_bus.errors import CorruptionError, DamageKind
from filelog_bus.layout import TEMPORARY_SUFFIX, CleanClose, parse_index_name, segment_name
from filelog_bus.segment import (
    ActiveSegment,
    ReadOnlySegment,
    delete_segment_files,
    derived_files_sound,
    gap_after_segment,
)


class DurablePoint(NamedTuple):
    """What the previous writer left in the watermark about durability."""

    #: Every record below this offset was durable (0 when nothing is known).
    offset: int
    #: The previous writer appended without syncing each record (durability="never").
    unsynced_writer: bool


class LoadedSegments(NamedTuple):
    bases: list[int]
    active: ActiveSegment
    end: int


def load_segments(
    directory: str,
    bases: list[int],
    interval: int,
    segment_bytes: int,
    durable: DurablePoint,
    clean_close: CleanClose | None,
    before_recovery: Callable[[], None],
) -> LoadedSegments:
    """Run the passes on a bus that has at least one segment (``bases``, from list_segment_bases); the
    caller owns the returned segment.

    ``before_recovery`` runs before the active segment's recovery writes anything (the writer
    makes the erasure of a clean-close note durable there).
    """
    remove_leftovers(directory, bases)  # 1
    check_closed_segments(directory, bases, interval)  # 2
    active = ActiveSegment.open(directory, bases[-1], interval, segment_bytes)  # 3
    try:
        if clean_close is not None and active.continue_after_clean_close(clean_close):
            end = clean_close.end
        else:
            before_recovery()
            end = active.recover(max(durable.offset, active.base), durable.unsynced_writer)
    except BaseException:
        active.close()
        raise
    return LoadedSegments(bases, active, end)


def remove_leftovers(directory: str, bases: list[int]) -> None:
    """Finish a retention pass a crash cut short (derived files whose segment is gone), and delete
    temporary files."""
    names = os.listdir(directory)
    orphans = {base for name in names if (base := parse_index_name(name)) is not None} - set(bases)
    for base in sorted(orphans):
        delete_segment_files(directory, base)
    temporaries = [name for name in names if name.endswith(TEMPORARY_SUFFIX)]
    for name in temporaries:
        with contextlib.suppress(FileNotFoundError):
            fs.unlink(os.path.join(directory, name))
    if temporaries:
        fs.fsync_directory(directory)


def check_closed_segments(directory: str, bases: list[int], interval: int) -> None:
    """Check that closed segments follow each other without gaps; rebuild damaged derived files."""
    for base, next_base in itertools.pairwise(bases):
        gap = gap_after_segment(directory, base, next_base)
        if gap is not None:
            end, size = gap
            raise CorruptionError(
                f"segment ends at offset {end} but the next segment starts at {next_base}: the file was "
                f"truncated or extended",
                path=os.path.join(directory, segment_name(base)),
                file_position=size,
                damage=DamageKind.SEGMENT_GAP,
                advice="restore it from a backup, or move it and every older segment aside to keep only the "
                "newer records",
            )
        if not derived_files_sound(directory, base):
            segment = ReadOnlySegment.open(directory, base)
            try:
                segment.repair_derived(next_base, default_interval=interval)
            finally:
                segment.close()

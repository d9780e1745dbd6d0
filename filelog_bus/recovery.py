"""Bringing a bus back to a clean state when a writer opens it (Kafka's LogLoader.recover).

Only the newest segment can have a torn tail, and only its data after the last
trusted index point is scanned, so recovery costs the same on any log size.
Closed segments are checked with a stat each; a missing or misshapen index is
rebuilt from its segment.
"""

from __future__ import annotations

import itertools
import os

from filelog_bus.errors import CorruptionError
from filelog_bus.fsutil import fsync_directory, open_or_explain
from filelog_bus.index import (
    IndexRebuild,
    IndexView,
    SegmentIndexer,
    encode_category_summary,
    index_headers_sound,
    load_category_index,
    load_offset_index,
    summarize_categories,
)
from filelog_bus.layout import (
    FILE_HEADER_SIZE,
    OFFSET_INDEX_MAGIC,
    LayoutError,
    decode_file_header,
    derived_file_names,
    parse_index_name,
    segment_name,
)
from filelog_bus.record import (
    HEADER_SIZE,
    RecordDecodeError,
    category_key,
    decode_header,
)
from filelog_bus.segment import LogSegment


def remove_orphan_indexes(directory: str, bases: list[int]) -> None:
    """Delete index files whose segment is gone (retention deletes the segment first, then a crash)."""
    present = set(bases)
    orphans = [
        name
        for name in os.listdir(directory)
        if (base := parse_index_name(name)) is not None and base not in present
    ]
    for name in orphans:
        os.unlink(os.path.join(directory, name))
    if orphans:
        fsync_directory(directory)


def check_closed_segments(directory: str, bases: list[int], interval: int) -> None:
    """Check that closed segments follow each other without gaps; rebuild missing indexes."""
    for base, next_base in itertools.pairwise(bases):
        path = os.path.join(directory, segment_name(base))
        size = os.stat(path).st_size
        if base + size - FILE_HEADER_SIZE != next_base:
            raise CorruptionError(
                f"segment ends at offset {base + size - FILE_HEADER_SIZE} but the next segment starts at "
                f"{next_base}: the file was truncated or extended; restore it from a backup, or move it and "
                f"every older segment aside to keep only the newer records",
                path=path,
                offset=size,
            )
        if not index_headers_sound(directory, base):
            rebuild_indexes(directory, base, next_base, interval)


def rebuild_indexes(directory: str, base: int, end: int, interval: int) -> None:
    """Rewrite the indexes and category summary of a closed segment from its records, durably."""
    segment = LogSegment.open(directory, base)
    try:
        write_derived_files(directory, base, expected_indexes(segment, end, interval))
    finally:
        segment.close()


def repair_closed_indexes(directory: str, base: int, end: int, default_interval: int) -> bool:
    """Rebuild a closed segment's derived files unless they are exactly what a rebuild writes."""
    current = current_indexes(directory, base)
    try:
        _, interval = decode_file_header(OFFSET_INDEX_MAGIC, current[0] or b"")
    except LayoutError:
        interval = default_interval  # no trustworthy record of the block size: use today's
    segment = LogSegment.open(directory, base)
    try:
        expected = expected_indexes(segment, end, interval or default_interval)
    finally:
        segment.close()
    if current == expected:
        return False
    write_derived_files(directory, base, expected)
    return True


def expected_indexes(segment: LogSegment, end: int, interval: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of the offset index, category index and category summary of ``segment`` up to ``end``."""
    rebuild = IndexRebuild(segment.base, interval)
    for record in segment.iter_records(segment.base, end):
        rebuild.add(record)
    return rebuild.files()


def current_indexes(directory: str, base: int) -> tuple[bytes | None, ...]:
    """The bytes of a segment's derived files as they are (None where missing), in derived_file_names order."""
    return tuple(_read_or_none(os.path.join(directory, name)) for name in derived_file_names(base))


def write_category_summary(directory: str, base: int, end: int) -> None:
    """Write the category summary of a segment being closed, from its (complete) category index."""
    categories = load_category_index(directory, base, end)
    if categories is None:
        return  # a damaged index: the next writer's open rebuilds both from the segment
    data = encode_category_summary(base, categories.interval, summarize_categories(categories), end)
    write_derived_files(directory, base, (None, None, data))


def write_derived_files(directory: str, base: int, files: tuple[bytes | None, ...]) -> None:
    """Replace derived files atomically (readers see the old or the new file, never half of one)."""
    for name, data in zip(derived_file_names(base), files, strict=False):
        if data is None:
            continue
        path = os.path.join(directory, name)
        fd = open_or_explain(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path + ".new", path)
    fsync_directory(directory)


def _read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        return None


def reindex(segment: LogSegment, indexer: SegmentIndexer, end: int) -> None:
    """Index the active segment's records up to ``end`` afresh; CorruptionError if damaged."""
    indexer.reset()
    for record in segment.iter_records(segment.base, end):
        indexer.add(record.offset, record.timestamp, category_key(record.category))


def recover_active_segment(
    segment: LogSegment, indexer: SegmentIndexer, interval: int, published: int | None
) -> int:
    """Make the newest segment end on a record boundary; return that end offset.

    A torn tail (incomplete or damaged bytes with no valid record after them) is
    cut. Damage followed by valid records, or damage below ``published`` (what
    readers were already shown, hence acknowledged), raises CorruptionError.
    """
    file_end = segment.end()
    offsets = load_offset_index(segment.directory, segment.base, file_end)
    categories = load_category_index(segment.directory, segment.base, file_end)
    start = _resume_point(segment.base, offsets, categories, interval)
    if start > segment.base:
        indexer.resume(offsets, categories, start)
    else:
        indexer.reset()
    end = _index_from(segment, indexer, start, file_end)
    if end == start and start > segment.base and end < file_end:
        # The index pointed at something that is not a record: distrust it entirely.
        indexer.reset()
        end = _index_from(segment, indexer, segment.base, file_end)
    if end < file_end:
        if (published is not None and published > end) or _valid_record_after(segment, end, file_end):
            raise _damage(segment, end, file_end)
        segment.truncate(end)
    segment.sync()
    return end


def _resume_point(base: int, offsets: IndexView | None, categories: IndexView | None, interval: int) -> int:
    """Latest offset below which both indexes are complete: the first record of an index block."""
    if offsets is None or categories is None or not offsets.count or not categories.count:
        return base
    if offsets.interval != interval or categories.interval != interval:
        return base  # index_interval_bytes changed: rebuild with the new one
    last_category = categories.offset_at(categories.count - 1)
    block_start = base + (last_category - base) // interval * interval
    first_of_block = categories.offset_at(categories.bisect_offset(block_start))
    return min(offsets.offset_at(offsets.count - 1), first_of_block)


def _index_from(segment: LogSegment, indexer: SegmentIndexer, start: int, end: int) -> int:
    """Index the valid records from ``start``; return where they stop."""
    position = start
    while position < end:
        batch = segment.read_batch(position, end)
        indexer.add_records(batch.records)
        position += batch.consumed
        if batch.error is not None or not batch.records:
            break
    return position


def _valid_record_after(segment: LogSegment, start: int, end: int) -> bool:
    """Whether a valid record starts after the bad bytes at ``start``: the mark of mid-log damage.

    When those bytes begin with a valid header, the search starts after the body it
    declares: a frame inside the body (a relayed record, say) proves nothing, and a
    body running past the end of the file is a torn write with nothing after it.
    """
    search_from = start + 1
    try:
        length, _ = decode_header(segment.read(start, HEADER_SIZE))
    except RecordDecodeError:
        pass
    else:
        search_from = start + HEADER_SIZE + length
    return search_from < end and segment.find_valid_record(search_from, end) is not None


def _damage(segment: LogSegment, offset: int, file_end: int) -> CorruptionError:
    return segment.corruption(
        offset,
        RecordDecodeError(f"invalid bytes that recovery must not cut ({file_end - offset} bytes to the end)"),
        "acknowledged records are damaged or valid records follow the damage, so it is not a torn "
        "write; inspect with `filelog-bus verify`, then restore the segment from a backup",
    )

"""Retention: which closed segments to delete, and deleting them.

The decision (plan_retention) is pure; the writer applies it, oldest segment first,
each deletion made durable before the next begins: a power cut in the middle of a
pass can then only leave a shorter prefix deleted, never a gap. The active segment
is never deleted, so the bus always keeps its newest offset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filelog_bus.errors import ConfigError
from filelog_bus.index import load_offset_index
from filelog_bus.segment import LogSegment

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class SegmentSpan:
    base: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.base


def check_policy(max_age_days: float | None, max_bytes: int | None) -> None:
    if max_age_days is not None and (
        isinstance(max_age_days, bool) or not isinstance(max_age_days, (int, float)) or not max_age_days > 0
    ):
        raise ConfigError(f"retention max_age_days must be a number > 0, got {max_age_days!r}")
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0
    ):
        raise ConfigError(f"retention max_bytes must be an integer >= 0, got {max_bytes!r}")


def plan_retention(
    segments: Sequence[SegmentSpan],
    *,
    now: float,
    max_age_days: float | None,
    max_bytes: int | None,
    newest_timestamp: Callable[[SegmentSpan], float | None],
    keep_from: int | None = None,
) -> list[SegmentSpan]:
    """The oldest segments to delete; ``segments`` is oldest first and its last is the active one.

    ``keep_from``: the age budget never deletes a segment holding offsets >= keep_from (events
    some reader has not read yet); only the size budget may, when it is exceeded.
    """
    closed = list(segments[:-1])
    doomed: list[SegmentSpan] = []
    if max_age_days is not None:
        cutoff = now - max_age_days * SECONDS_PER_DAY
        for segment in closed:
            if keep_from is not None and segment.end > keep_from:
                break
            newest = newest_timestamp(segment)
            if newest is None or newest >= cutoff:
                break
            doomed.append(segment)
    if max_bytes is not None:
        total = sum(segment.size for segment in segments[len(doomed) :])
        for segment in closed[len(doomed) :]:
            if total <= max_bytes:
                break
            doomed.append(segment)
            total -= segment.size
    return doomed


def segment_spans(bases: Sequence[int], active_end: int) -> list[SegmentSpan]:
    """Spans of the segments: closed ones end where the next begins, and none past ``active_end``
    (for a reader, the watermark: a roll can close a segment that holds deferred records nobody
    has synced and published yet)."""
    ends = [*bases[1:], active_end]
    return [SegmentSpan(base, max(base, min(end, active_end))) for base, end in zip(bases, ends, strict=True)]


def read_newest_timestamp(directory: str, base: int, end: int) -> float | None:
    """Timestamp of the last record before ``end`` in a segment (None if it has none).

    Reads from the last offset-index entry, so it costs one index block.
    """
    index = load_offset_index(directory, base, end)
    start = index.offset_at(index.count - 1) if index is not None and index.count else base
    segment = LogSegment.open(directory, base)
    try:
        newest = None
        for record in segment.records(start, end):
            newest = record.timestamp
        return newest
    finally:
        segment.close()

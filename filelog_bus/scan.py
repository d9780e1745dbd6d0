"""The one reader of records from a segment file (LevelDB's ``log::Reader`` is the model).

Everything that decodes records from a file goes through ``RecordScanner``: readers
(``batch``), recovery, ``verify`` and ``stats`` (``records``). What damage means is the
caller's choice, passed as a ``Reporter``: raise at once (readers), stop at the first
damage and say where (recovery), or note it and go on at the next valid record
(verify). The byte-level decoding itself is ``record.decode_records`` (pure, no I/O).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

from filelog_bus.record import (
    HEADER_SIZE,
    RECORD_MAGIC,
    DecodedBatch,
    Record,
    RecordDecodeError,
    decode_header,
    decode_records,
)

#: How much a sequential read asks the OS for at a time.
READ_CHUNK = 256 * 1024


class RecordSource(Protocol):
    """What a scanner reads: a segment's records by bus offset."""

    path: str
    base: int

    def read(self, offset: int, length: int) -> bytes: ...


class Damage(NamedTuple):
    """Bytes at ``offset`` that are not a complete valid record."""

    offset: int
    #: What is wrong, for people.
    reason: str
    #: True when the bytes are only incomplete (the scan reached ``end`` inside a record).
    incomplete: bool
    #: The next valid record after the damage, when the reporter asked for it (see Reporter.resync).
    resume: int | None = None


class Reporter(Protocol):
    """Decides what damage met during a scan means."""

    #: Whether the scanner should look for the next valid record after damage (costly).
    resync: bool

    def damage(self, source: RecordSource, damage: Damage) -> bool:
        """Called at each damage; True goes on at ``damage.resume``, False ends the scan."""
        ...


class StopAtDamage:
    """Recovery's policy: end the scan at the first damage and remember it."""

    resync = False

    def __init__(self) -> None:
        self.found: Damage | None = None

    def damage(self, source: RecordSource, damage: Damage) -> bool:
        self.found = damage
        return False


class CollectDamage:
    """verify's policy: note every damage and go on at the next valid record."""

    resync = True

    def __init__(self) -> None:
        self.found: list[Damage] = []

    def damage(self, source: RecordSource, damage: Damage) -> bool:
        self.found.append(damage)
        return True


class RaiseOnDamage:
    """The readers' policy: damage is an error (a CorruptionError built by ``make_error``)."""

    resync = False

    def __init__(self, make_error: Callable[[RecordSource, Damage], Exception]) -> None:
        self.make_error = make_error

    def damage(self, source: RecordSource, damage: Damage) -> bool:
        raise self.make_error(source, damage)


class RecordScanner:
    """Decodes the records of one source in [start, end), reading in chunks."""

    def __init__(self, source: RecordSource) -> None:
        self.source = source

    def batch(self, offset: int, end: int, chunk: int = READ_CHUNK) -> DecodedBatch:
        """Decode the complete records in [offset, end), reading at most about ``chunk`` bytes.

        A record larger than ``chunk`` is read whole. The batch is empty (consumed 0, no
        error) when no complete record starts at ``offset`` before ``end``.
        """
        data = self.source.read(offset, min(chunk, end - offset))
        batch = decode_records(data, offset)
        if not batch.records and batch.error is None and len(data) < batch.wanted <= end - offset:
            data = self.source.read(offset, batch.wanted)
            batch = decode_records(data, offset)
        return batch

    def records(self, start: int, end: int, reporter: Reporter) -> Iterator[Record]:
        """Every valid record in [start, end); damage goes to ``reporter``."""
        position = start
        while position < end:
            batch = self.batch(position, end)
            yield from batch.records
            position += batch.consumed
            if batch.error is None and batch.records:
                continue
            if position >= end:
                return
            if batch.error is not None:
                damage = Damage(position, str(batch.error), False)
            else:
                damage = Damage(position, f"the record is cut short: the data ends at offset {end}", True)
            if reporter.resync:
                damage = damage._replace(resume=self.find_valid_record(self.resync_from(position, end), end))
            if not reporter.damage(self.source, damage) or damage.resume is None:
                return
            position = damage.resume

    def resync_from(self, offset: int, end: int) -> int:
        """Where to look for the next valid record after bad bytes at ``offset``.

        When those bytes begin with a valid header, the search starts after the body it
        declares: a frame inside the body (a relayed record, say) proves nothing.
        """
        try:
            length, _ = decode_header(self.source.read(offset, HEADER_SIZE))
        except RecordDecodeError:
            return offset + 1
        return min(offset + HEADER_SIZE + length, end)

    def find_valid_record(self, start: int, end: int) -> int | None:
        """Offset of the first complete, valid record starting in [start, end), or None.

        Used after damage: to tell mid-log damage (valid records follow) from a torn
        tail, and to go on checking past it. Reads in chunks, whatever the distance.
        """
        position = start
        while end - position >= HEADER_SIZE:
            data = self.source.read(position, min(READ_CHUNK, end - position))
            found = data.find(RECORD_MAGIC)
            while found >= 0:
                candidate = position + found
                if self.batch(candidate, end, 4096).records:
                    return candidate
                found = data.find(RECORD_MAGIC, found + 1)
            position += max(len(data) - 1, 1)  # keep one byte: a magic may straddle two reads
        return None

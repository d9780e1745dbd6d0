"""How a bus record travels as a Kafka message (pure: no I/O, no kafka-python).

Hermes's Kafka consumer reads ``key`` = the category, ``value`` = the event's JSON and the
message timestamp in milliseconds. The export writes exactly that, plus a *mark*: two headers,
which Hermes ignores, holding the record's bus offset and the offset just past it. The marks
make the copy resumable exactly once (resume after the last mark in the topic) and translate a
client's bus offsets into Kafka offsets (find the first mark at or after them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from filelog_bus.record import Record

OFFSET_HEADER = "filelog-offset"
NEXT_OFFSET_HEADER = "filelog-next-offset"

Headers = Sequence[tuple[str, bytes]]


class Mark(NamedTuple):
    """Where a message's record is on the bus: [offset, next_offset)."""

    offset: int
    next_offset: int


class Message(NamedTuple):
    """One message of the topic: what the export wrote (``kafka_offset`` is the broker's)."""

    kafka_offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    mark: Mark | None


def timestamp_ms(seconds: float) -> int:
    """A record's time (UTC epoch seconds) as Kafka's message timestamp, in whole milliseconds: the
    time the filelog consumer gives (``datetime.fromtimestamp``, to the microsecond) cut to the
    millisecond, so both consumers agree to the millisecond."""
    return round(seconds * 1_000_000) // 1000


#: Kafka's record batch (format v2): the batch's own header, and the most a marked record takes besides
#: its key and value: its varint fields (length, attributes, timestamp and offset deltas, key and value
#: lengths, header count: 36 bytes) and the mark's two headers (two lengths, a name and at most 20
#: digits each).
BATCH_HEADER_BYTES = 61
_MARKED_RECORD_BYTES = 36 + sum(10 + len(name) + 20 for name in (OFFSET_HEADER, NEXT_OFFSET_HEADER))


class Outgoing(NamedTuple):
    """The message the export sends for a record: Hermes's key, value and timestamp, and the mark."""

    key: bytes
    value: bytes
    timestamp_ms: int
    headers: list[tuple[str, bytes]]

    def size_bound(self) -> int:
        """At least the bytes this message takes in a record batch."""
        return _MARKED_RECORD_BYTES + len(self.key) + len(self.value)


def outgoing(record: Record) -> Outgoing:
    """The message for ``record``."""
    offset = record.offset
    headers = [(OFFSET_HEADER, b"%d" % offset), (NEXT_OFFSET_HEADER, b"%d" % (offset + record.size))]
    return Outgoing(record.category.encode("utf-8"), record.payload, timestamp_ms(record.timestamp), headers)


def mark_of(headers: Headers) -> Mark | None:
    """The mark in a message's headers; None when it has none, or one that is not ours."""
    found = {name: value for name, value in headers if name in (OFFSET_HEADER, NEXT_OFFSET_HEADER)}
    try:
        offset = int(found[OFFSET_HEADER].decode("ascii"))
        next_offset = int(found[NEXT_OFFSET_HEADER].decode("ascii"))
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return Mark(offset, next_offset) if 0 <= offset < next_offset else None


def is_copy_of(message: Message, record: Record) -> bool:
    """Whether ``message`` is what the export writes for ``record``."""
    sent = outgoing(record)
    return message.mark == Mark(record.offset, record.next_offset) and (
        message.key,
        message.value,
        message.timestamp_ms,
    ) == (sent.key, sent.value, sent.timestamp_ms)

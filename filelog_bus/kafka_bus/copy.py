"""What a topic holds of a bus: a prefix of its records, checked against the bus.

Both the export (where to resume) and the client migration (which Kafka offset is which bus offset)
start here, so both refuse the same topics: one whose first or last message is not the export's copy
of this bus's record at the offset its mark names.
"""

from __future__ import annotations

from dataclasses import dataclass

from filelog_bus.errors import OffsetOutOfRangeError, TopicMismatchError
from filelog_bus.kafka_bus.marks import Message, is_copy_of
from filelog_bus.kafka_bus.topic import KafkaTopic
from filelog_bus.reader import LogReader
from filelog_bus.record import Record


@dataclass(frozen=True)
class Copy:
    """What the topic holds of the bus: messages ``first`` to ``last`` (None when empty), then the
    Kafka offset the next message gets; and the bus's range now."""

    first: Message | None
    last: Message | None
    kafka_end: int
    bus_begin: int
    bus_end: int

    @property
    def complete(self) -> bool:
        """Whether every record on the bus is in the topic."""
        if self.last is None:
            return self.bus_begin == self.bus_end
        assert self.last.mark is not None
        return self.last.mark.next_offset == self.bus_end


def _foreign(topic: KafkaTopic, message: Message, reader: LogReader, why: str) -> TopicMismatchError:
    return TopicMismatchError(
        f"the Kafka topic {topic.topic} holds messages that did not come from the bus at {reader.path}: "
        f"the message at Kafka offset {message.kafka_offset} {why}",
        bootstrap_servers=topic.bootstrap_servers,
        topic=topic.topic,
        kafka_offset=message.kafka_offset,
        advice="export each bus to a topic of its own (a topic that does not exist is created with one partition)",
    )


def overtaken(topic: KafkaTopic, copied_to: int, begin: int) -> TopicMismatchError:
    """Retention deleted records of the bus from ``copied_to`` (where the copy stops) to ``begin``."""
    return TopicMismatchError(
        f"retention deleted the bus's records from offset {copied_to} to {begin} before they were copied "
        f"into {topic.topic}: the topic cannot go on without a gap",
        bootstrap_servers=topic.bootstrap_servers,
        topic=topic.topic,
        advice="export the bus to a new topic (clients that read this one must be re-initialised); keep "
        "the export running (--follow) ahead of the bus's retention",
    )


def record_at(reader: LogReader, offset: int) -> Record | None:
    """The record that starts exactly at ``offset``, or None (no record starts there, or it is gone)."""
    try:
        reader.seek(offset)
    except OffsetOutOfRangeError:
        return None
    record = reader.read_next()
    return record if record is not None and record.offset == offset else None


def check_message(reader: LogReader, topic: KafkaTopic, message: Message, begin: int, end: int) -> None:
    """Refuse (TopicMismatchError) a message that is not the export's copy of this bus's record.

    A message whose record retention has deleted since cannot be compared: it is taken on its mark.
    """
    mark = message.mark
    if mark is None:
        raise _foreign(
            topic, message, reader, "has no filelog-offset header (it was not written by kafka-export)"
        )
    if mark.offset >= end:
        raise _foreign(
            topic, message, reader, f"copies bus offset {mark.offset}, past this bus's end ({end})"
        )
    if mark.offset < begin < mark.next_offset:
        raise _foreign(
            topic,
            message,
            reader,
            f"copies bus offsets {mark.offset} to {mark.next_offset}, across this bus's start",
        )
    if mark.offset >= begin:
        record = record_at(reader, mark.offset)
        if record is not None and not is_copy_of(message, record):
            raise _foreign(topic, message, reader, f"differs from this bus's record at offset {mark.offset}")
        if record is None and mark.offset >= reader.begin_offset:  # not deleted meanwhile: no record there
            raise _foreign(topic, message, reader, f"copies bus offset {mark.offset}, where no record starts")


def read_copy(reader: LogReader, topic: KafkaTopic) -> Copy:
    """What the topic holds of the bus at ``reader``, after checking it came from this bus."""
    first_kafka, end_kafka, last = topic.true_end()
    # the bus after the topic: a running export (the bridge) copies only records already on the bus,
    # so every message found is before this end; the other way round, records appended and copied
    # meanwhile would make the last message look past the bus's end (another bus's)
    begin, end = reader.begin_offset, reader.end_offset
    first = None
    if last is not None:
        first = last if first_kafka == last.kafka_offset else topic.message_at(first_kafka)
        for message in (first, last):
            check_message(reader, topic, message, begin, end)
        assert first.mark is not None
        if first.kafka_offset == 0 and first.mark.offset > begin:
            # the bus's start only moves forward: when the topic's first message was written, the bus's
            # records from `begin` to it were there already, and an export starts at the bus's start
            raise _foreign(
                topic,
                first,
                reader,
                f"is the topic's first and copies bus offset {first.mark.offset}, but this bus holds records "
                f"from offset {begin}, which the topic never had",
            )
    return Copy(first, last, end_kafka, begin, end)

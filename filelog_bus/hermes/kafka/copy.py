"""What a topic holds of a bus: a prefix of its records, checked against the bus.

Both the export (where to resume) and the client migration (which Kafka offset is which bus offset)
start here, so both refuse the same topics:
- one whose first or last message is not the export's copy of this bus's record at the offset its
  mark names (another bus's copy, or messages not written by the export);
- one whose last messages do not follow one another (each mark starting where the one before ended),
  over at least two batches' worth: where a duplicate or a gap would be if two exports wrote at once,
  or if a killed export's last batch was appended after the next run's first (the run that sends a
  batch after such a foreign one notices it at once and stops, so it lies in the last two batches);
- one Kafka's retention emptied: where the copy stopped can no longer be told.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from filelog_bus.errors import OffsetOutOfRangeError, TopicMismatchError
from filelog_bus.hermes.kafka.marks import Message, is_copy_of
from filelog_bus.hermes.kafka.topic import KafkaTopic
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


def check_tail(reader: LogReader, topic: KafkaTopic, first: Message, last: Message, span: int) -> None:
    """Refuse (TopicMismatchError) a topic whose last messages, over at least ``span`` bytes of the
    bus, are not consecutive copies. Messages are read from an estimate of where that span starts,
    further back when the estimate fell short."""
    assert first.mark is not None and last.mark is not None
    messages = last.kafka_offset - first.kafka_offset + 1
    count = span * messages // max(last.mark.next_offset - first.mark.offset, 1) + 2
    while True:
        start = max(first.kafka_offset, last.kafka_offset - count)
        earliest = check_consecutive(reader, topic, topic.read_forward(start))
        assert earliest.mark is not None
        if start == first.kafka_offset or last.mark.next_offset - earliest.mark.offset >= span:
            return
        count *= 2


def check_consecutive(reader: LogReader, topic: KafkaTopic, messages: Iterable[Message]) -> Message:
    """Refuse messages that are not consecutive copies: Kafka offsets one apart, each mark starting
    where the one before it ends. Returns the first."""
    earliest = previous = None
    for message in messages:
        if message.mark is None:
            check_message(reader, topic, message, reader.begin_offset, reader.end_offset)  # says why
        assert message.mark is not None
        if previous is not None:
            assert previous.mark is not None
            if (
                message.kafka_offset != previous.kafka_offset + 1
                or message.mark.offset != previous.mark.next_offset
            ):
                raise TopicMismatchError(
                    f"the Kafka topic {topic.topic} is not a gap-free copy of the bus at {reader.path}: the "
                    f"message at Kafka offset {message.kafka_offset} copies bus offset {message.mark.offset}, "
                    f"but the one before it (Kafka offset {previous.kafka_offset}) ended at "
                    f"{previous.mark.next_offset}: two exports wrote to it at once, or a killed export's last "
                    "batch was appended late",
                    bootstrap_servers=topic.bootstrap_servers,
                    topic=topic.topic,
                    kafka_offset=message.kafka_offset,
                    advice="export the bus to a new topic; clients that read this one may have handled events "
                    "twice or missed some",
                )
        earliest = earliest or message
        previous = message
    assert earliest is not None
    return earliest


def read_copy(reader: LogReader, topic: KafkaTopic) -> Copy:
    """What the topic holds of the bus at ``reader``, after checking it came from this bus (its last
    messages over ``topic.checked_span`` bytes of the bus)."""
    first_kafka, end_kafka, last = topic.true_end()
    if last is None and end_kafka > 0:
        raise TopicMismatchError(
            f"the Kafka topic {topic.topic} is empty, but its messages start at offset {end_kafka}: Kafka's "
            "retention deleted every message, so where the copy of the bus stopped cannot be told",
            bootstrap_servers=topic.bootstrap_servers,
            topic=topic.topic,
            advice="export the bus to a new topic, with a retention.ms longer than the age of the bus's "
            "oldest record (Kafka's retention counts from each message's own time)",
        )
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
        check_tail(reader, topic, first, last, topic.checked_span)
    return Copy(first, last, end_kafka, begin, end)

"""How a record travels as a Kafka message (filelog_bus/hermes/kafka/marks.py): pure, no broker."""

from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder

from filelog_bus.hermes.kafka.marks import (
    NEXT_OFFSET_HEADER,
    OFFSET_HEADER,
    Mark,
    mark_of,
    outgoing,
)
from filelog_bus.record import Record

records = st.builds(
    lambda offset, size, timestamp, category, payload: Record(offset, timestamp, category, payload, size),
    st.integers(0, 2**63 - 2**32),
    st.integers(17, 2**31),
    st.floats(0, 4e9, allow_nan=False),
    st.text(min_size=1, max_size=50),
    st.binary(max_size=3000),
)


@settings(max_examples=200)
@given(records, st.integers(0, 2**31 - 1), st.integers(-(2**62), 2**62))
def test_a_messages_size_bound_is_never_below_what_kafka_python_encodes(
    record: Record, offset_delta: int, timestamp_delta: int
) -> None:
    message = outgoing(record)
    encoded = DefaultRecordBatchBuilder.size_in_bytes(
        offset_delta, timestamp_delta, message.key, message.value, message.headers
    )
    assert message.size_bound() >= encoded


@settings(max_examples=200)
@given(records)
def test_a_message_carries_hermess_key_value_and_time_and_the_records_mark(record: Record) -> None:
    message = outgoing(record)
    assert message.key == record.category.encode("utf-8") and message.value == record.payload
    assert mark_of(message.headers) == Mark(record.offset, record.next_offset)
    # the time Hermes's Kafka consumer gives is the filelog consumer's, cut to the millisecond
    filelog = datetime.datetime.fromtimestamp(record.timestamp, datetime.timezone.utc)
    kafka = datetime.datetime.fromtimestamp(message.timestamp_ms / 1000, datetime.timezone.utc)
    assert kafka == filelog.replace(microsecond=filelog.microsecond // 1000 * 1000)


def test_headers_that_are_not_a_mark_give_none() -> None:
    assert mark_of([]) is None
    assert mark_of([(OFFSET_HEADER, b"12")]) is None
    assert mark_of([(OFFSET_HEADER, b"12"), (NEXT_OFFSET_HEADER, b"x")]) is None
    assert mark_of([(OFFSET_HEADER, b"12"), (NEXT_OFFSET_HEADER, b"12")]) is None  # no record is empty
    assert mark_of([(OFFSET_HEADER, b"-1"), (NEXT_OFFSET_HEADER, b"5")]) is None
    assert mark_of([("other", b"1"), (OFFSET_HEADER, b"12"), (NEXT_OFFSET_HEADER, b"40")]) == Mark(12, 40)

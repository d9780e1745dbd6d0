"""Stand-in for Hermes's Kafka consumer plugin, written from the facts in shared/HERMES_INTERFACE.md
(no Hermes code): what a hermes-client reads after moving to Hermes's Kafka bus.

One partition, an arbitrary one of the topic's; `seek(offset)` goes to that Kafka offset;
`seekToBeginning()` to the partition's start; no offset commits; each message becomes
`Event.from_json(value)` with `offset` = the message's offset and `timestamp` =
`datetime.fromtimestamp(timestamp_ms / 1000)`; `setTimeout` takes effect at the next `open()`;
`findNextEventOfCategory` compares the message key with the category.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from lib.datamodel.event import Event
from lib.plugins import AbstractMessageBusConsumerPlugin


class KafkaConsumerStandin(AbstractMessageBusConsumerPlugin):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._timeout_ms: int | None = None
        self._consumer: KafkaConsumer | None = None
        self._partition: TopicPartition | None = None

    def open(self) -> None:
        timeout = float("inf") if self._timeout_ms is None else self._timeout_ms
        self._consumer = KafkaConsumer(
            bootstrap_servers=self._settings["servers"],
            group_id=self._settings["group_id"],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            consumer_timeout_ms=timeout,
        )
        partitions = self._consumer.partitions_for_topic(self._settings["topic"])
        if not partitions:
            raise RuntimeError(f"topic {self._settings['topic']} does not exist")
        self._partition = TopicPartition(self._settings["topic"], next(iter(partitions)))
        self._consumer.assign([self._partition])

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def seekToBeginning(self) -> None:
        self._consumer.seek_to_beginning(self._partition)

    def seek(self, offset: Any) -> None:
        self._consumer.seek(self._partition, offset)

    def setTimeout(self, timeout_ms: int | None) -> None:
        self._timeout_ms = timeout_ms

    def _events(self) -> Iterator[tuple[bytes, Event]]:
        for message in self._consumer:
            event = Event.from_json(message.value.decode("utf-8"))
            event.offset = message.offset
            event.timestamp = datetime.datetime.fromtimestamp(message.timestamp / 1000)
            yield message.key, event

    def findNextEventOfCategory(self, category: str) -> Event | None:
        for key, event in self._events():
            if key.decode("utf-8") == category:
                return event
        return None

    def __iter__(self) -> Iterator[Event]:
        for _key, event in self._events():
            yield event

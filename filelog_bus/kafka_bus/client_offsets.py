"""hermes-client offsets translated from the bus to the topic the bus was exported to.

A client keeps three bus offsets: ``initstartoffset`` and ``initstopoffset``, the offsets of its
initsync sequence's first and last events, and ``nextoffset``, the offset of the last event it
handled + 1. On Hermes's Kafka bus the same three are message numbers. Each offset ``p`` becomes the
Kafka offset of the first message whose record is at or after ``p``: the same event for the first
two, the next unread event for the third, so the client goes on from Kafka where it stopped. The
order of the three is kept, so Hermes's own tests on them (``nextoffset >= initstopoffset``...)
give the same answers. An offset that is unset stays unset.

Refused (nothing written for any client): an offset whose event is on the bus but not yet in the
topic (finish the export first), one past the end of the bus (another bus's offsets), and one whose
events retention deleted before they were exported (re-initialise the client). One exception: the
initsync offsets of an initialised client, whose sequence it no longer reads, go to the topic's
first message when their events were deleted.

The way back (``bus_offsets``, while hermes-server still writes the bus) reads the marks the other
way: a Kafka offset becomes the bus offset of the record its message copies.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

from filelog_bus.client_cache import OFFSET_KEYS, ClientCache
from filelog_bus.errors import ClientOffsetError, NotExportedYetError
from filelog_bus.kafka_bus.copy import Copy, check_message, read_copy
from filelog_bus.kafka_bus.topic import KafkaTopic
from filelog_bus.reader import LogReader

Offsets = dict[str, int | None]


def _refusal(
    kind: type[ClientOffsetError], cache: ClientCache, key: str, offset: int, reason: str, advice: str
) -> ClientOffsetError:
    return kind(reason, path=cache.path, key=key, offset=offset, advice=advice)


def translate(
    cache: ClientCache, key: str, position: int, copy: Copy, first_at_or_after: Callable[[int], int]
) -> int:
    """The Kafka offset for the bus offset ``position`` in ``cache``'s entry ``key`` (pure but for
    ``first_at_or_after``, which finds the first message whose record is at or after an offset)."""

    def refuse(why: str, advice: str, kind: type[ClientOffsetError] = ClientOffsetError) -> ClientOffsetError:
        return _refusal(
            kind, cache, key, position, f"cannot translate {cache.appname}'s {key} {position}: {why}", advice
        )

    if position > copy.bus_end:
        raise refuse(
            f"it is past the end of the bus ({copy.bus_end}): its offsets come from another bus",
            "check the bus path; a client with offsets of another bus must be re-initialised",
        )
    last = copy.last
    if last is None or last.mark is None or position > last.mark.offset:
        if copy.complete:
            return copy.kafka_end
        exported = (
            "nothing" if last is None or last.mark is None else f"up to bus offset {last.mark.next_offset}"
        )
        raise refuse(
            f"its next event is on the bus but not in the topic yet (the topic holds {exported}, the bus "
            f"ends at {copy.bus_end})",
            "finish the export first: stop hermes-server and let filelog-bus kafka-export (or its --follow "
            "service) copy the rest, then run this again",
            NotExportedYetError,
        )
    assert copy.first is not None and copy.first.mark is not None
    if position >= copy.first.mark.offset:
        return first_at_or_after(position)
    if key != "nextoffset" and cache.initialised:
        return copy.first.kafka_offset  # a sequence it has read, gone from the bus and the topic
    raise refuse(
        f"the topic starts at bus offset {copy.first.mark.offset}: retention deleted the events before it, "
        "which this client has not read, before they were exported",
        "re-initialise the client (empty its cache and have hermes-server send an initsync sequence)",
    )


class _MarkSearch:
    """``first_at_or_after`` for ``translate``: the Kafka offset of the first message whose record is at
    or after a bus offset, in few round trips (a broker may take tens of milliseconds for each).

    Bus offsets grow with Kafka offsets at about a record's size per message, so a probe guesses by
    interpolation between the closest messages known on each side (every other probe bisects, so
    there are at most twice as many as a binary search's), and each fetch brings a window of
    consecutive messages, all remembered.
    """

    def __init__(self, topic: KafkaTopic, copy: Copy, reader: LogReader) -> None:
        assert copy.first is not None and copy.last is not None
        assert copy.first.mark is not None and copy.last.mark is not None
        self.topic, self.copy, self.reader = topic, copy, reader
        self.kafka_offsets = [copy.first.kafka_offset, copy.last.kafka_offset]
        self.bus_offsets = [copy.first.mark.offset, copy.last.mark.offset]

    def _probe(self, kafka_offset: int) -> None:
        window = self.topic.messages_from(kafka_offset)
        check_message(self.reader, self.topic, window[0], self.copy.bus_begin, self.copy.bus_end)
        for message in window:
            if message.mark is None:  # not the export's: check_message says so
                check_message(self.reader, self.topic, message, self.copy.bus_begin, self.copy.bus_end)
            assert message.mark is not None
            slot = bisect.bisect_left(self.kafka_offsets, message.kafka_offset)
            if slot == len(self.kafka_offsets) or self.kafka_offsets[slot] != message.kafka_offset:
                self.kafka_offsets.insert(slot, message.kafka_offset)
                self.bus_offsets.insert(slot, message.mark.offset)

    def __call__(self, position: int) -> int:
        """For ``first.mark.offset <= position <= last.mark.offset``."""
        for step in itertools.count():
            high_slot = bisect.bisect_left(self.bus_offsets, position)  # the first known at or after it
            high = self.kafka_offsets[high_slot]
            if high_slot == 0:
                return high
            low = self.kafka_offsets[high_slot - 1]
            if high == low + 1:
                return high
            if step % 2:
                guess = (low + high) // 2
            else:
                low_bus, high_bus = self.bus_offsets[high_slot - 1], self.bus_offsets[high_slot]
                guess = low + (position - low_bus) * (high - low) // (high_bus - low_bus)
            self._probe(min(max(guess, low + 1), high - 1))
        raise AssertionError("unreachable")


def translate_back(
    cache: ClientCache, key: str, kafka_offset: int, copy: Copy, topic: KafkaTopic, reader: LogReader
) -> int:
    """The bus offset for the Kafka offset ``kafka_offset`` in ``cache``'s entry ``key``: the offset
    of the record the message copies (for ``nextoffset``, the next unread one), or, past the last
    message, the bus offset after the last record the topic holds."""

    def refuse(why: str, advice: str) -> ClientOffsetError:
        reason = f"cannot translate {cache.appname}'s {key} {kafka_offset} back to the bus: {why}"
        return _refusal(ClientOffsetError, cache, key, kafka_offset, reason, advice)

    if kafka_offset > copy.kafka_end:
        raise refuse(
            f"it is past the end of the topic ({copy.kafka_end}): its offsets come from another topic",
            "check the topic's name",
        )
    if copy.last is None or copy.first is None:
        return copy.bus_begin
    assert copy.last.mark is not None
    if kafka_offset == copy.kafka_end:
        return copy.last.mark.next_offset
    if kafka_offset < copy.first.kafka_offset:
        raise refuse(
            f"Kafka's retention deleted the topic's messages before offset {copy.first.kafka_offset}",
            "re-initialise the client",
        )
    message = topic.message_at(kafka_offset)
    check_message(reader, topic, message, copy.bus_begin, copy.bus_end)
    assert message.mark is not None
    if message.mark.offset >= copy.bus_begin:
        return message.mark.offset
    if key != "nextoffset" and cache.initialised:
        return copy.bus_begin  # a sequence it has read, gone from the bus
    raise refuse(
        f"retention deleted its next event (bus offset {message.mark.offset}) from the bus, which now starts "
        f"at {copy.bus_begin}",
        "re-initialise the client (empty its cache and have hermes-server send an initsync sequence)",
    )


Translation = Callable[[ClientCache, str, int], int]


def _plan(caches: Sequence[ClientCache], translation: Translation) -> list[tuple[ClientCache, Offsets]]:
    """Every client's offsets translated (unset ones stay unset), or the first ClientOffsetError."""
    planned = []
    for cache in caches:
        current = (cache.initstartoffset, cache.initstopoffset, cache.nextoffset)
        offsets: Offsets = {
            key: None if value is None else translation(cache, key, value)
            for key, value in zip(OFFSET_KEYS, current, strict=True)
        }
        planned.append((cache, offsets))
    return planned


def kafka_offsets(
    caches: Sequence[ClientCache], reader: LogReader, topic: KafkaTopic
) -> list[tuple[ClientCache, Offsets]]:
    """Each client's three offsets on the topic, from its bus offsets."""
    copy = read_copy(reader, topic)
    first_at_or_after = _MarkSearch(topic, copy, reader) if copy.last is not None else (lambda _: 0)
    return _plan(caches, lambda cache, key, value: translate(cache, key, value, copy, first_at_or_after))


def bus_offsets(
    caches: Sequence[ClientCache], reader: LogReader, topic: KafkaTopic
) -> list[tuple[ClientCache, Offsets]]:
    """Each client's three offsets on the bus, from its offsets on the topic (the way back)."""
    copy = read_copy(reader, topic)
    return _plan(caches, lambda cache, key, value: translate_back(cache, key, value, copy, topic, reader))

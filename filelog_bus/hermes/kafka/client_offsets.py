"""hermes-client offsets translated from the bus to the topic the bus was exported to, and back.

A client keeps three bus offsets: ``initstartoffset`` and ``initstopoffset``, the offsets of its
initsync sequence's first and last events, and ``nextoffset``, the offset of the last event it
handled + 1. On Hermes's Kafka bus the same three are message numbers. Each offset ``p`` becomes the
Kafka offset of the first message whose record is at or after ``p``: the same event for the first
two, the next unread event for the third, so the client goes on from Kafka where it stopped. An
offset that is unset stays unset.

Refused (nothing written for any client):
- an offset whose event is on the bus but not yet in the topic (finish the export first);
- one past the end of the bus, or one that is neither where an event starts nor just after one
  (another bus's offsets, or a topic's: a client moved already);
- one whose events retention deleted before they were exported (re-initialise the client); but the
  initsync offsets of an initialised client, whose sequence it no longer reads, go to the topic's
  first message then;
- a client the move would make initialised when it was not: one whose next event is its sequence's
  ``init-stop`` (on Kafka, ``nextoffset`` would equal ``initstopoffset``, and Hermes would take the
  sequence as read).

The way back (``bus_offsets``, while hermes-server still writes the bus) reads the marks the other
way: a Kafka offset becomes the bus offset of the record its message copies.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

from filelog_bus.errors import ClientOffsetError, NotExportedYetError
from filelog_bus.hermes.client_cache import ClientCache, Offsets, initialised
from filelog_bus.hermes.kafka.copy import Copy, check_consecutive, check_message, read_copy, record_at
from filelog_bus.hermes.kafka.topic import KafkaTopic
from filelog_bus.reader import LogReader

#: Translates one offset of a client's cache entry.
Translation = Callable[[ClientCache, str, int], int]

_REINITIALISE = "re-initialise the client (empty its cache and have hermes-server send an initsync sequence)"


def _refusal(
    cache: ClientCache,
    key: str,
    offset: int,
    why: str,
    advice: str,
    kind: type[ClientOffsetError] = ClientOffsetError,
    *,
    back: bool = False,
) -> ClientOffsetError:
    way = " back to the bus" if back else ""
    return kind(
        f"cannot translate {cache.appname}'s {key} {offset}{way}: {why}",
        path=cache.path,
        key=key,
        offset=offset,
        advice=advice,
    )


class _MarkSearch:
    """The Kafka offset of the first message whose record is at
    or after a bus offset, in few round trips (each one a fetch from a broker, over the network).

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
        """Fetch the window at ``kafka_offset``: checked consecutive copies, its first against the bus."""
        window = self.topic.messages_from(kafka_offset)
        check_consecutive(self.reader, self.topic, window)
        check_message(self.reader, self.topic, window[0], self.copy.bus_begin, self.copy.bus_end)
        for message in window:
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


class _ToKafka:
    """Bus offsets to Kafka offsets (``Translation``)."""

    def __init__(self, reader: LogReader, topic: KafkaTopic) -> None:
        self.reader = reader
        self.copy = copy = read_copy(reader, topic)
        self.first_at_or_after = _MarkSearch(topic, copy, reader) if copy.last is not None else None

    def _client_could_hold(self, position: int) -> bool:
        """Where an event starts (the initsync offsets, a bus's start), just after one starts
        (``nextoffset``), or the bus's end."""
        if position == self.copy.bus_end:
            return True
        return any(record_at(self.reader, at) is not None for at in (position, position - 1))

    def __call__(self, cache: ClientCache, key: str, position: int) -> int:
        copy = self.copy
        if position > copy.bus_end:
            raise _refusal(
                cache,
                key,
                position,
                f"it is past the end of the bus ({copy.bus_end}): its offsets come from another bus",
                "check the bus path; a client with offsets of another bus must be re-initialised",
            )
        if position >= copy.bus_begin and not self._client_could_hold(position):
            raise _refusal(
                cache,
                key,
                position,
                "no event of this bus starts there or just before: these are another bus's offsets, or a "
                "Kafka topic's (a client moved already)",
                "check the cache: a client already moved needs no second move (its backup FILE.bak-... holds "
                "its offsets from before)",
            )
        last, first = copy.last, copy.first
        last_mark = None if last is None else last.mark  # read_copy refuses a last message without one
        if last_mark is None or position > last_mark.offset:
            if copy.complete:
                return copy.kafka_end
            exported = "nothing" if last_mark is None else f"up to bus offset {last_mark.next_offset}"
            raise _refusal(
                cache,
                key,
                position,
                f"its next event is on the bus but not in the topic yet (the topic holds {exported}, the bus "
                f"ends at {copy.bus_end})",
                "finish the export first: stop hermes-server and let filelog-bus kafka-export (or its --follow "
                "service) copy the rest, then run this again",
                NotExportedYetError,
            )
        assert first is not None and first.mark is not None and self.first_at_or_after is not None
        if position >= first.mark.offset:
            return self.first_at_or_after(position)
        if key != "nextoffset" and cache.initialised:
            return first.kafka_offset  # a sequence it has read, gone from the bus and the topic
        raise _refusal(
            cache,
            key,
            position,
            f"the topic starts at bus offset {first.mark.offset}: retention deleted the events before it, "
            "which this client has not read, before they were exported",
            _REINITIALISE,
        )


class _ToBus:
    """Kafka offsets to bus offsets (``Translation``): the way back."""

    def __init__(self, reader: LogReader, topic: KafkaTopic) -> None:
        self.reader, self.topic = reader, topic
        self.copy = read_copy(reader, topic)

    def __call__(self, cache: ClientCache, key: str, kafka_offset: int) -> int:
        copy = self.copy

        def refuse(why: str, advice: str) -> ClientOffsetError:
            return _refusal(cache, key, kafka_offset, why, advice, back=True)

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
        initsync_read = key != "nextoffset" and cache.initialised  # offsets it no longer uses
        if kafka_offset < copy.first.kafka_offset:
            if initsync_read:
                return copy.bus_begin
            raise refuse(
                f"Kafka's retention deleted the topic's messages before offset {copy.first.kafka_offset}",
                _REINITIALISE,
            )
        message = self.topic.message_at(kafka_offset)
        check_message(self.reader, self.topic, message, copy.bus_begin, copy.bus_end)
        assert message.mark is not None
        if message.mark.offset >= copy.bus_begin:
            return message.mark.offset
        if initsync_read:
            return copy.bus_begin
        raise refuse(
            f"retention deleted its next event (bus offset {message.mark.offset}) from the bus, which now "
            f"starts at {copy.bus_begin}",
            _REINITIALISE,
        )


def _plan(caches: Sequence[ClientCache], translation: Translation) -> list[tuple[ClientCache, Offsets]]:
    """Every client's offsets translated (unset ones stay unset), or the first ClientOffsetError."""
    planned = []
    for cache in caches:
        offsets: Offsets = {
            key: None if value is None else translation(cache, key, value)
            for key, value in cache.offsets.items()
        }
        if initialised(*offsets.values()) != cache.initialised:
            assert cache.nextoffset is not None
            raise _refusal(
                cache,
                "nextoffset",
                cache.nextoffset,
                "its next event is the init-stop of the initsync sequence it is reading: Hermes's Kafka client "
                "would take the sequence as read, and skip it",
                "start the client once more on the filelog bus, so that it handles init-stop, stop it, then run "
                "this again",
            )
        planned.append((cache, offsets))
    return planned


def kafka_offsets(
    caches: Sequence[ClientCache], reader: LogReader, topic: KafkaTopic
) -> list[tuple[ClientCache, Offsets]]:
    """Each client's three offsets on the topic, from its bus offsets."""
    return _plan(caches, _ToKafka(reader, topic))


def bus_offsets(
    caches: Sequence[ClientCache], reader: LogReader, topic: KafkaTopic
) -> list[tuple[ClientCache, Offsets]]:
    """Each client's three offsets on the bus, from its offsets on the topic (the way back)."""
    return _plan(caches, _ToBus(reader, topic))

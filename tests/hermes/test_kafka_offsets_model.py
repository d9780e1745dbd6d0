"""Client offsets to Kafka and back, against a brute-force model of the topic: random positions on a bus
whose start retention deleted, exported in part, with records of very different sizes."""

from __future__ import annotations

import bisect
import random
from pathlib import Path

from helpers.bus import write_bus
from helpers.cli import T0
from helpers.kafka import Broker, export, topic_messages

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import ClientOffsetError, NotExportedYetError
from filelog_bus.hermes.client_cache import ClientCache
from filelog_bus.hermes.kafka.client_offsets import bus_offsets, kafka_offsets
from filelog_bus.hermes.kafka.topic import KafkaTopic

SETTINGS = {"segment_bytes": 64 * 1024, "index_interval_bytes": 512}


def _records(chooser: random.Random, count: int) -> list[tuple[str, bytes, float]]:
    return [("base", b"x" * chooser.choice([1, 30, 400, 3000]), T0 + i) for i in range(count)]


def _cache(nextoffset: int) -> ClientCache:
    return ClientCache(f"/nowhere/_c{nextoffset}.json", f"c{nextoffset}", "1.0.9", None, None, nextoffset)


def _planned(translate, cache: ClientCache, reader: LogReader, kafka: KafkaTopic) -> object:
    try:
        return translate([cache], reader, kafka)[0][1]["nextoffset"]
    except NotExportedYetError:
        return "not exported"
    except ClientOffsetError:
        return "refused"


def test_random_positions_map_to_kafka_and_back_as_a_brute_force_scan_of_the_topic_says(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    chooser = random.Random(20261207)
    path = tmp_path / "bus"
    written = write_bus(path, _records(chooser, 900), **SETTINGS)
    with LogWriter(path, **SETTINGS) as writer:
        writer.apply_retention(max_bytes=500_000)
        begin = writer.begin_offset
    assert begin > 0
    assert export(path, broker, topic).returncode == 0
    written += write_bus(path, _records(chooser, 50), **SETTINGS)  # on the bus, not in the topic yet
    with LogWriter(path, **SETTINGS) as writer:
        writer.apply_retention(max_bytes=400_000)  # and the topic's first messages' records are gone
        now_begin = writer.begin_offset
    with LogReader(path) as reader:
        end = reader.end_offset
    messages = topic_messages(broker.bootstrap, topic)
    starts = [m.mark.offset for m in messages]
    exported_end = messages[-1].mark.next_offset
    assert starts[0] == begin < now_begin < starts[-1] and exported_end < end

    record_starts = {record.offset for record in written}

    def to_kafka(position: int) -> object:
        if position > end:
            return "refused"
        if now_begin <= position < end and not {position, position - 1} & record_starts:
            return "refused"  # no client holds it: not where an event starts, nor just after
        if position > starts[-1]:
            return "not exported"
        if position < begin:
            return "refused"  # its unread events were deleted before the export
        return bisect.bisect_left(starts, position)

    def to_bus(kafka_offset: int) -> object:
        if kafka_offset > len(messages):
            return "refused"
        if kafka_offset == len(messages):
            return exported_end
        return starts[kafka_offset] if starts[kafka_offset] >= now_begin else "refused"  # gone from the bus

    positions = [chooser.randrange(0, end + 100) for _ in range(20)]
    positions += [chooser.choice(written).offset + chooser.choice([0, 1]) for _ in range(60)]
    position_edges = [0, begin - 1, begin, begin + 1, now_begin - 1, now_begin, starts[-1], starts[-1] + 1]
    position_edges += [exported_end, end, end + 1]
    kafka_positions = [chooser.randrange(0, len(messages) + 5) for _ in range(40)]
    gone = bisect.bisect_left(starts, now_begin)  # the first message whose record is still on the bus
    kafka_edges = [0, gone - 1, gone, len(messages) - 1, len(messages), len(messages) + 1]
    with LogReader(path) as reader, KafkaTopic(broker.bootstrap, topic) as kafka:
        kafka.open()
        for translate, tried, edges, model in (
            (kafka_offsets, positions, position_edges, to_kafka),
            (bus_offsets, kafka_positions, kafka_edges, to_bus),
        ):
            # the ones translated, all in one plan (as the command does); each edge refused on its own
            translated = [value for value in tried + edges if isinstance(model(value), int)]
            planned = translate([_cache(value) for value in translated], reader, kafka)
            assert [offsets["nextoffset"] for _, offsets in planned] == [model(v) for v in translated]
            refused = [value for value in edges if not isinstance(model(value), int)]
            assert len(refused) >= 3
            for value in refused:
                assert _planned(translate, _cache(value), reader, kafka) == model(value), value

"""`filelog-bus clients --set-offsets kafka`: hermes-clients move to Hermes's Kafka bus without draining.

Clients are tests/helpers/hermes_standin/fake_client.py, stopped at chosen events on the filelog bus; after
the move they read the topic through the stand-in of Hermes's Kafka consumer
(tests/helpers/hermes_standin/kafka_consumer.py). Each must then handle exactly the events it would have
handled had it stayed on the filelog bus.
"""

from __future__ import annotations

import bisect
import datetime
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from helpers.bus import SMALL, write_bus
from helpers.cli import BUS, HANG_GUARD, T0, assert_error_line, bus, sample, start
from helpers.clients import hermes_cache, offsets, write_cache
from helpers.hermes import handled_events, run_standin
from helpers.kafka import Broker, cut_by_retention, export, migrate, wait_for_topic
from lib.datamodel.event import Event

from filelog_bus import LogReader, LogWriter
from filelog_bus.hermes.client_cache import ClientCache
from filelog_bus.hermes.kafka.client_offsets import kafka_offsets
from filelog_bus.hermes.kafka.topic import KafkaTopic

PROG = "filelog-bus clients"
LAST_KEY = "late-4"


def seen(events: list[dict[str, Any]]) -> list[tuple[str, str, str | None, datetime.datetime]]:
    """What a client did, offsets aside (they differ by design), times to the millisecond."""
    result = []
    for event in events:
        moment = datetime.datetime.fromisoformat(event["timestamp"])
        result.append(
            (
                event["evcategory"],
                event["eventtype"],
                event["objpkey"],
                moment.replace(microsecond=moment.microsecond // 1000 * 1000),
            )
        )
    return result


def test_clients_stopped_anywhere_go_on_from_kafka_with_exactly_the_events_the_bus_would_give(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    status, _, err = run_standin("fake_server.py", path, "--initsync", 5, "--base", 20, "--loops", 2)
    assert status == 0, err
    stops = {"initsync-begun": 3, "initsync-read": 7, "base-half-read": 17}
    filelog_caches, kafka_caches = tmp_path / "filelog", tmp_path / "kafka"
    filelog_caches.mkdir()
    for name, count in stops.items():
        cache = filelog_caches / f"_hermes-client-{name}.json"
        status, _, err = run_standin("fake_client.py", path, cache, "--stop-after", count)
        assert status == 0, err
    drained = filelog_caches / "_hermes-client-drained.json"
    status, _, err = run_standin("fake_client.py", path, drained, "--stop-at", "base-19")
    assert status == 0, err
    new = filelog_caches / "_hermes-client-new.json"
    hermes_cache.save(new, hermes_cache.new_content())
    shutil.copytree(filelog_caches, kafka_caches)
    begun = offsets(kafka_caches / "_hermes-client-initsync-begun.json")
    assert None not in begun and begun[2] < begun[1]  # a sequence read part-way
    export(path, broker, topic, check=True)  # hermes-server stopped: the topic holds the whole bus

    moved = migrate(path, broker, topic, kafka_caches)

    assert moved.returncode == 0, moved.stderr
    assert offsets(kafka_caches / "_hermes-client-new.json") == (None, None, None)  # unset stays unset
    with LogReader(path) as reader:
        count = sum(1 for _ in reader)
    drained_offsets = offsets(kafka_caches / "_hermes-client-drained.json")
    assert drained_offsets[2] == count  # a drained client goes on at the end of the topic
    assert f"(Kafka offsets in {topic})" in moved.stdout and len(list(kafka_caches.glob("*.bak-*"))) == 4
    # hermes-server goes on writing its local bus; the export (as with --follow) copies it
    with LogWriter(path) as writer:
        for i in range(5):
            writer.append("base", Event("base", "modified", "user", f"late-{i}", {"n": i}).to_json().encode())
    export(path, broker, topic, check=True)

    for name in [*stops, "drained", "new"]:
        cache_name = f"_hermes-client-{name}.json"
        status, stayed, err = run_standin(
            "fake_client.py", path, filelog_caches / cache_name, "--stop-at", LAST_KEY
        )
        assert status == 0, err
        status, went, err = run_standin(
            "fake_client.py",
            "-",
            kafka_caches / cache_name,
            "--stop-at",
            LAST_KEY,
            "--timeout-ms",
            "500",
            "--kafka",
            broker.bootstrap,
            "--topic",
            topic,
        )
        assert status == 0, err
        on_filelog, on_kafka = handled_events(stayed), handled_events(went)
        assert seen(on_kafka) == seen(on_filelog), name
        assert [e["offset_type"] for e in on_kafka] == ["int"] * len(on_kafka)
        assert on_filelog[-1]["objpkey"] == LAST_KEY
    assert len(handled_events(stayed)) == 32  # the new client: initsync (7 events), 20 base and 5 late events


def _bus_and_topic(tmp_path: Path, broker: Broker, topic: str, count: int = 30) -> tuple[Path, list[Any]]:
    path = tmp_path / "bus"
    written = write_bus(path, sample(count), **SMALL)
    export(path, broker, topic, check=True)
    return path, written


def _unchanged(*caches: Path) -> dict[Path, bytes]:
    return {cache: cache.read_bytes() for cache in caches}


def test_a_client_whose_next_event_is_not_in_the_topic_yet_is_refused_and_nothing_is_written(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path, written = _bus_and_topic(tmp_path, broker, topic)
    later = write_bus(path, [("base", b"{}", T0 + 9000 + i) for i in range(3)], **SMALL)
    caches = tmp_path / "caches"
    fine = write_cache(caches, "hermes-client-fine", compressed=True, nextoffset=written[10].offset + 1)
    ahead = write_cache(caches, "hermes-client-ahead", compressed=False, nextoffset=later[0].offset + 1)
    before = _unchanged(fine, ahead)

    result = migrate(path, broker, topic, fine, ahead)

    message = assert_error_line(result, PROG, 4)
    assert "hermes-client-ahead's nextoffset" in message and "finish the export first" in message
    assert _unchanged(fine, ahead) == before and not list(caches.glob("*.bak-*"))


def test_a_client_that_has_read_everything_waits_at_the_end_only_once_the_topic_holds_the_whole_bus(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path, written = _bus_and_topic(tmp_path, broker, topic)
    caches = tmp_path / "caches"
    drained = write_cache(
        caches, "hermes-client-drained", compressed=False, nextoffset=written[-1].offset + 1
    )
    write_bus(path, [("base", b"{}", T0 + 9000)], **SMALL)

    behind = migrate(path, broker, topic, drained)

    assert "not in the topic yet" in assert_error_line(behind, PROG, 4)
    export(path, broker, topic, check=True)

    result = migrate(path, broker, topic, drained)

    assert result.returncode == 0, result.stderr
    # its initsync offsets (0: the first event), and message 30: the one appended, which it has not read
    assert offsets(drained) == (0, 0, 30)


def test_offsets_map_to_the_same_events_and_unset_ones_stay_unset(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path, written = _bus_and_topic(tmp_path, broker, topic, count=200)
    caches = tmp_path / "caches"
    client = write_cache(
        caches,
        "hermes-client-ldap",
        compressed=True,
        initstartoffset=written[17].offset,
        initstopoffset=written[42].offset,
        nextoffset=written[150].offset + 1,
    )
    unset = write_cache(
        caches,
        "hermes-client-new",
        compressed=False,
        nextoffset=None,
        initstartoffset=None,
        initstopoffset=None,
    )

    result = migrate(path, broker, topic, client, unset)

    assert result.returncode == 0, result.stderr
    assert offsets(client) == (17, 42, 151)
    assert offsets(unset) == (None, None, None)
    assert "now initstartoffset 17, initstopoffset 42, nextoffset 151" in result.stdout


def test_a_client_whose_unread_events_retention_deleted_before_the_export_is_refused(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, sample(60), **SMALL)
    begin = cut_by_retention(path, 2048)
    export(path, broker, topic, check=True)
    caches = tmp_path / "caches"
    expired = write_cache(caches, "hermes-client-slow", compressed=False, nextoffset=written[2].offset + 1)
    # initialised long ago: its initsync sequence is gone, and it no longer needs it
    old_sync = write_cache(
        caches,
        "hermes-client-old",
        compressed=False,
        initstartoffset=0,
        initstopoffset=written[1].offset,
        nextoffset=begin,
    )

    refused = migrate(path, broker, topic, expired)
    result = migrate(path, broker, topic, old_sync)

    message = assert_error_line(refused, PROG, 4)
    assert f"the topic starts at bus offset {begin}" in message and "re-initialise the client" in message
    assert result.returncode == 0, result.stderr
    assert offsets(old_sync) == (0, 0, 0)


def test_offsets_of_another_bus_are_refused(tmp_path: Path, broker: Broker, topic: str) -> None:
    path, written = _bus_and_topic(tmp_path, broker, topic)
    caches = tmp_path / "caches"
    foreign = write_cache(
        caches, "hermes-client-x", compressed=False, nextoffset=written[-1].next_offset + 5000
    )

    result = migrate(path, broker, topic, foreign)

    assert "past the end of the bus" in assert_error_line(result, PROG, 4)


def test_broker_down_is_a_clear_error_and_no_cache_is_touched(
    tmp_path: Path, own_broker: Broker, topic: str
) -> None:
    path, written = _bus_and_topic(tmp_path, own_broker, topic)
    caches = tmp_path / "caches"
    client = write_cache(caches, "hermes-client-ldap", compressed=True, nextoffset=written[5].offset + 1)
    before = _unchanged(client)
    own_broker.stop()

    result = migrate(path, own_broker, topic, client, timeout="1")

    message = assert_error_line(result, PROG, 9)
    assert f"Kafka brokers {own_broker.bootstrap}" in message
    assert _unchanged(client) == before and not list(caches.glob("*.bak-*"))


def test_kafka_options_go_together(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(1))
    cache = write_cache(tmp_path / "caches", "hermes-client-a", compressed=False, nextoffset=0)

    missing = bus("clients", path, cache, "--set-offsets", "kafka", "--topic", "t")
    stray = bus("clients", path, cache, "--set-offsets", "start", "--topic", "t")

    assert "--set-offsets kafka needs --bootstrap-server and --topic" in assert_error_line(missing, PROG, 2)
    assert "only apply to --set-offsets kafka" in assert_error_line(stray, PROG, 2)


def test_the_kafka_offset_of_a_clients_bus_offset_is_the_first_message_at_or_after_it(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    """Thousands of records of very different sizes, so that finding a message takes several probes."""
    chooser = random.Random(17)
    path = tmp_path / "bus"
    written = write_bus(path, [("base", b"x" * chooser.choice([5, 50, 500, 5000]), T0) for _ in range(6000)])
    export(path, broker, topic, check=True)
    # what a client holds: where an event starts (its initsync offsets), or just after (nextoffset)
    positions = [chooser.choice(written).offset + chooser.choice([0, 1]) for _ in range(60)]
    positions += [written[0].offset, written[-1].offset, written[-1].offset + 1, written[-1].next_offset]
    caches = [
        ClientCache(f"/nowhere/_c{i}.json", f"c{i}", "1.0.9", None, None, position)
        for i, position in enumerate(positions)
    ]
    starts = [record.offset for record in written]

    with LogReader(path) as reader, KafkaTopic(broker.bootstrap, topic) as kafka:
        kafka.open()
        planned = kafka_offsets(caches, reader, kafka)

    for (cache, new), position in zip(planned, positions, strict=True):
        assert new == {
            "initstartoffset": None,
            "initstopoffset": None,
            "nextoffset": bisect.bisect_left(starts, position),
        }, cache


def test_the_way_back_a_client_that_read_kafka_goes_on_from_the_bus_where_it_stopped(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    """Bridge mode rolled back: hermes-server kept writing the bus; the client read part of the topic."""
    path = tmp_path / "bus"
    status, _, err = run_standin("fake_server.py", path, "--initsync", 3, "--base", 20, "--loops", 2)
    assert status == 0, err
    export(path, broker, topic, check=True)
    cache = tmp_path / "caches" / "_hermes-client-ldap.json"
    cache.parent.mkdir()
    hermes_cache.save(cache, hermes_cache.new_content())
    kafka = ("--kafka", broker.bootstrap, "--topic", topic, "--timeout-ms", "500")
    status, on_kafka, err = run_standin("fake_client.py", "-", cache, "--stop-after", 12, *kafka)
    assert status == 0, err
    kafka_offsets = offsets(cache)
    reference = tmp_path / "reference.json"
    hermes_cache.save(reference, hermes_cache.new_content())
    status, everything, err = run_standin("fake_client.py", path, reference, "--stop-at", "base-19")
    assert status == 0, err

    back = bus(
        "clients",
        path,
        cache,
        "--set-offsets",
        "from-kafka",
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
    )
    status, on_bus, err = run_standin("fake_client.py", path, cache, "--stop-at", "base-19")

    assert back.returncode == 0, back.stderr
    assert offsets(cache) != kafka_offsets
    assert status == 0, err
    assert seen(handled_events(on_kafka) + handled_events(on_bus)) == seen(handled_events(everything))
    assert len(handled_events(everything)) == 25


def test_a_client_whose_next_event_is_the_init_stop_it_has_not_read_is_refused(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    """On the bus its nextoffset is just past the event before init-stop; on Kafka it would equal
    initstopoffset, which Hermes reads as initialised: it would skip init-stop."""
    path = tmp_path / "bus"
    status, _, err = run_standin("fake_server.py", path, "--initsync", 5, "--base", 3, "--loops", 1)
    assert status == 0, err
    cache = tmp_path / "caches" / "_hermes-client-ldap.json"
    cache.parent.mkdir()
    status, _, err = run_standin("fake_client.py", path, cache, "--stop-after", 6)  # init-start and 5 added
    assert status == 0, err
    before = cache.read_bytes()
    export(path, broker, topic, check=True)

    refused = migrate(path, broker, topic, cache)

    message = assert_error_line(refused, PROG, 4)
    assert "its next event is the init-stop" in message and "start the client once more" in message
    assert cache.read_bytes() == before
    status, _, err = run_standin("fake_client.py", path, cache, "--stop-after", 1)  # it handles init-stop
    assert status == 0, err
    assert migrate(path, broker, topic, cache).returncode == 0
    _, stop, next_ = offsets(cache)
    assert next_ == stop + 1  # initialised, past init-stop


# -- a client already moved to Kafka --------------------------------------------------------------
# `clients --set-offsets kafka` run on a cache it has already moved (an operator moving "the remaining
# clients" with a cache directory that holds one moved during the bridge).


# Found by the adversarial test: a second move took the Kafka offsets the first wrote for bus offsets
# (17, 42, 151 became 1, 1, 3) and the client would have replayed 148 events.
def test_moving_a_client_already_moved_to_kafka_is_refused_and_nothing_is_written(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, sample(200), **SMALL)
    export(path, broker, topic, check=True)
    cache = write_cache(
        tmp_path / "caches",
        "hermes-client-ldap",
        compressed=False,
        initstartoffset=written[17].offset,
        initstopoffset=written[42].offset,
        nextoffset=written[150].offset + 1,
    )
    assert migrate(path, broker, topic, cache).returncode == 0
    moved = offsets(cache)
    assert moved == (17, 42, 151)

    again = migrate(path, broker, topic, cache)

    assert offsets(cache) == moved  # it wrote (1, 1, 3): the client would replay 148 events
    assert "a Kafka topic's (a client moved already)" in assert_error_line(again, PROG, 4)


def test_clients_move_while_the_bridge_copies_what_hermes_server_appends(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    """The bridge of docs/HERMES.md: hermes-server writes, kafka-export --follow copies, a client moves.
    The bus's end was read before the topic's: a message copied in between looked past the bus's end,
    and the move failed (status 3, "holds messages that did not come from the bus") nearly every time."""
    path = tmp_path / "bus"
    written = write_bus(path, sample(50), **SMALL)
    bridge = start(
        BUS, "kafka-export", path, "--bootstrap-server", broker.bootstrap, "--topic", topic, "--follow"
    )
    writing = threading.Event()
    writing.set()

    def hermes_server() -> None:
        with LogWriter(path, **SMALL) as writer:
            count = 0
            while writing.is_set():
                writer.append("base", b'{"n": %d}' % count)
                count += 1
                time.sleep(0.001)

    server = threading.Thread(target=hermes_server)
    try:
        wait_for_topic(broker, topic, 50, bridge)
        server.start()
        caches = tmp_path / "caches"
        for attempt in range(5):
            cache = write_cache(
                caches, f"hermes-client-{attempt}", compressed=False, nextoffset=written[10].offset + 1
            )

            moved = migrate(path, broker, topic, cache)

            assert moved.returncode == 0, moved.stderr
            assert offsets(cache) == (0, 0, 11)
    finally:
        writing.clear()
        if server.is_alive():
            server.join()
        bridge.send_signal(signal.SIGTERM)
        _, err = bridge.communicate(timeout=HANG_GUARD)
    assert bridge.returncode == 0, err

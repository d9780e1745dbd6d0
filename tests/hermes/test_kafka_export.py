"""`filelog-bus kafka-export`: a bus copied into a real Kafka-protocol broker (tansu), exactly once.

Every test runs the installed command against a broker started on a loopback port
(tests/helpers/kafka.py) and reads the topic back with a plain kafka-python consumer.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.bus import SMALL, read_all, write_bus
from helpers.cli import (
    BUS,
    HANG_GUARD,
    KAFKA_EXPORT_PROG,
    T0,
    Lines,
    assert_error_line,
    bus,
    file_of,
    flip_byte,
    sample,
)
from helpers.kafka import (
    Broker,
    as_messages,
    assert_topic_is_bus,
    contents,
    create_topic,
    cut_by_retention,
    end_offset,
    export,
    marks,
    partitions_of,
    produce,
    start_export,
    topic_messages,
    wait_for_topic,
)

from filelog_bus import LogWriter
from filelog_bus.hermes.kafka.marks import Mark


def test_a_bus_with_categories_unicode_and_binary_payloads_arrives_whole(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    records = [
        ("initsync", b'{"evcategory": "initsync", "eventtype": "init-start"}', T0),
        ("base", '{"objpkey": "zoë", "name": "Ünïcødé ✓"}'.encode(), T0 + 0.0015),
        ("catégorie-é", b"\xff\xfe\x00not utf-8\x80", T0 + 1.9999),
        ("base", b"", T0 + 2.123456),
        *sample(40),
    ]
    write_bus(path, records, **SMALL)

    result = export(path, broker, topic)

    assert result.returncode == 0, result.stderr
    assert f"created the topic {topic} with one partition" in result.stdout
    assert partitions_of(broker.bootstrap, topic) == {0}
    messages = assert_topic_is_bus(broker, topic, path)
    assert len(messages) == 44
    assert messages[2].key == "catégorie-é".encode() and messages[2].value == b"\xff\xfe\x00not utf-8\x80"
    assert messages[1].timestamp_ms == 1_714_560_000_001  # the record's own time, to the millisecond
    assert "exported 44 records" in result.stdout and "at Kafka offsets up to 43" in result.stdout


def test_a_second_run_copies_only_what_was_appended_since(tmp_path: Path, broker: Broker, topic: str) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(10), **SMALL)
    assert export(path, broker, topic).returncode == 0
    again = export(path, broker, topic)
    assert again.returncode == 0, again.stderr
    assert "exported 0 records" in again.stdout
    write_bus(path, sample(25)[10:], **SMALL)

    result = export(path, broker, topic)

    assert result.returncode == 0, result.stderr
    assert "resuming at bus offset" in result.stdout and "exported 15 records" in result.stdout
    assert len(assert_topic_is_bus(broker, topic, path)) == 25


def test_a_bus_whose_start_retention_deleted_is_exported_from_its_first_record_and_says_so(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, sample(60), **SMALL)
    begin = cut_by_retention(path, 2048)
    assert begin > 0

    result = export(path, broker, topic)

    assert result.returncode == 0, result.stderr
    assert f"note: the bus starts at offset {begin}: retention deleted the records before it" in result.stdout
    messages = assert_topic_is_bus(broker, topic, path)
    assert messages[0].mark == Mark(begin, next(r.next_offset for r in written if r.offset == begin))


def test_retention_deleting_records_not_yet_exported_stops_the_next_run_with_a_gap_error(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(30), **SMALL)
    assert export(path, broker, topic).returncode == 0
    exported = read_all(path)
    write_bus(path, sample(60)[30:], **SMALL)
    # deletes the whole exported part, and a little more
    assert cut_by_retention(path, 1500) > exported[-1].next_offset

    result = export(path, broker, topic)

    # the records between the last exported one and the new start are gone: the topic cannot go on
    assert_error_line(result, KAFKA_EXPORT_PROG, 3)
    assert "retention deleted the bus's records from offset" in result.stderr
    assert f"from offset {exported[-1].next_offset}" in result.stderr


def test_retention_that_deleted_only_exported_records_is_resumed_after(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(40), **SMALL)
    assert export(path, broker, topic).returncode == 0
    before = read_all(path)
    write_bus(path, sample(50)[40:], **SMALL)
    begin = cut_by_retention(path, 1500)
    assert before[0].offset < begin <= before[-1].offset  # the topic's first and last messages are gone

    result = export(path, broker, topic)

    assert result.returncode == 0, result.stderr
    messages = topic_messages(broker.bootstrap, topic)
    assert contents(messages) == as_messages(before + read_all(path)[-10:])


def test_a_topic_with_several_partitions_is_refused(tmp_path: Path, broker: Broker, topic: str) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(3))
    create_topic(broker.bootstrap, topic, partitions=4)

    result = export(path, broker, topic)

    message = assert_error_line(result, KAFKA_EXPORT_PROG, 3)
    assert f"the Kafka topic {topic} has 4 partitions" in message and "exactly one" in message


def test_a_topic_holding_messages_that_are_not_from_this_bus_is_refused_and_left_alone(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path, other = tmp_path / "bus", tmp_path / "other"
    write_bus(path, sample(5))
    write_bus(other, [(c, p + b" ", t) for c, p, t in sample(5)])
    create_topic(broker.bootstrap, topic)
    produce(broker.bootstrap, topic, [{"key": b"base", "value": b"{}"}])  # as Hermes's own producer

    unmarked = export(path, broker, topic)

    assert "has no filelog-offset header" in assert_error_line(unmarked, KAFKA_EXPORT_PROG, 3)
    other_topic = topic + "-other"
    assert export(other, broker, other_topic).returncode == 0

    foreign = export(path, broker, other_topic)

    assert "differs from this bus's record at offset 0" in assert_error_line(foreign, KAFKA_EXPORT_PROG, 3)
    assert len(topic_messages(broker.bootstrap, topic)) == 1
    assert contents(topic_messages(broker.bootstrap, other_topic)) == as_messages(read_all(other))


def test_a_topic_ahead_of_the_bus_is_refused(tmp_path: Path, broker: Broker, topic: str) -> None:
    """The bus was deleted and created again under the same path: the topic holds more than it has."""
    path = tmp_path / "bus"
    write_bus(path, sample(20))
    assert export(path, broker, topic).returncode == 0
    for file in path.iterdir():
        file.unlink()
    path.rmdir()
    write_bus(path, sample(3))

    result = export(path, broker, topic)

    assert "past this bus's end" in assert_error_line(result, KAFKA_EXPORT_PROG, 3)


def test_killed_at_random_moments_then_run_again_the_topic_holds_every_record_once(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, [(c, p * 40, t) for c, p, t in sample(8000)], segment_bytes=256 * 1024)
    expected = as_messages(read_all(path))
    chooser = random.Random(20261207)
    held: list[int] = []
    for _attempt in range(60):
        # a kill when the topic has grown by a random share of what is left: part-way, however fast
        target = (held[-1] if held else 0) + int(
            chooser.uniform(0.05, 0.6) * (8000 - (held[-1] if held else 0))
        )
        process = start_export(path, broker, topic, "--max-request-size", "8K")
        while process.poll() is None and end_offset(broker.bootstrap, topic) < target:
            time.sleep(0.005)
        if process.poll() is None:
            process.kill()
            process.communicate()
            now = contents(topic_messages(broker.bootstrap, topic))
            assert now == expected[: len(now)]  # a prefix of the bus, whatever the moment of the kill
            held.append(len(now))
            continue
        assert process.returncode == 0, process.communicate()[1]
        break
    else:
        pytest.fail("the export never finished")
    assert len([count for count in held if 0 < count < 8000]) >= 2  # killed part-way, more than once
    assert len(assert_topic_is_bus(broker, topic, path)) == 8000


def test_a_damaged_record_stops_the_export_at_it_and_a_run_after_the_repair_completes_it(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, sample(200), **SMALL)
    damaged = written[120]
    segment, position = file_of(path, damaged)
    flip_byte(path / segment, position + 20)

    failed = export(path, broker, topic)

    assert_error_line(failed, KAFKA_EXPORT_PROG, 5)
    held = topic_messages(broker.bootstrap, topic)
    assert contents(held) == as_messages(written[: len(held)])
    assert 0 < len(held) <= 120
    flip_byte(path / segment, position + 20)  # the record restored, as from a backup

    result = export(path, broker, topic)

    assert result.returncode == 0, result.stderr
    assert len(assert_topic_is_bus(broker, topic, path)) == 200


def test_the_broker_going_down_mid_export_is_a_clear_error_and_the_next_run_completes(
    tmp_path: Path, own_broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, [(c, p * 40, t) for c, p, t in sample(6000)], segment_bytes=256 * 1024)
    process = start_export(path, own_broker, topic, "--max-request-size", "8K", "--timeout", "2")
    wait_for_topic(own_broker, topic, 1, process)
    own_broker.stop()

    out, err = process.communicate(timeout=HANG_GUARD)

    assert process.returncode == 9, (out, err)
    assert_error_line(
        subprocess.CompletedProcess(process.args, 9, out, err), KAFKA_EXPORT_PROG, 9
    )  # one line, no traceback
    assert f"Kafka brokers {own_broker.bootstrap}" in err
    assert "run the command again: it resumes where it stopped" in err
    assert "exported" in out  # the summary of what reached the topic
    own_broker.start()  # an empty broker (tansu keeps nothing): the next run starts the topic anew

    result = export(path, own_broker, topic)

    assert result.returncode == 0, result.stderr
    assert len(assert_topic_is_bus(own_broker, topic, path)) == 6000


def test_no_broker_at_all_is_a_clear_error(tmp_path: Path, topic: str) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(3))
    nobody = Broker()  # a free port nobody listens on

    result = bus(
        "kafka-export", path, "--bootstrap-server", nobody.bootstrap, "--topic", topic, "--timeout", "1"
    )

    message = assert_error_line(result, KAFKA_EXPORT_PROG, 9)
    assert f"Kafka brokers {nobody.bootstrap}" in message and "check that the broker is running" in message


def test_a_record_larger_than_a_request_is_refused_with_its_offset(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, [("base", b"x" * 100, T0), ("base", b"y" * 50_000, T0 + 1)])

    result = export(path, broker, topic, "--max-request-size", "16K")

    message = assert_error_line(result, KAFKA_EXPORT_PROG, 9)
    assert f"the record at bus offset {written[1].offset}" in message and "max.message.bytes" in message
    assert marks(topic_messages(broker.bootstrap, topic)) == [Mark(written[0].offset, written[0].next_offset)]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--bootstrap-server", "kafka1", "invalid bootstrap server 'kafka1'"),
        ("--topic", "no spaces", "invalid Kafka topic name 'no spaces'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_done(
    tmp_path: Path, broker: Broker, option: str, value: str, words: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(1))
    settings = {"--bootstrap-server": broker.bootstrap, "--topic": "fine", option: value}

    result = bus("kafka-export", path, *[word for pair in settings.items() for word in pair])

    assert words in assert_error_line(result, KAFKA_EXPORT_PROG, 2)


def test_without_kafka_python_the_command_says_what_to_install(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(1))
    hide_kafka = (
        "import sys; sys.modules['kafka'] = None; from filelog_bus.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )

    result = subprocess.run(
        [
            str(BUS.parent / "python"),
            "-c",
            hide_kafka,
            "kafka-export",
            str(path),
            "--bootstrap-server",
            "127.0.0.1:9",
            "--topic",
            "t",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )

    assert "pip install 'filelog-bus[kafka]'" in assert_error_line(result, KAFKA_EXPORT_PROG, 9)


# -- --follow -------------------------------------------------------------------------------------


def test_follow_copies_what_a_writer_appends_across_rolls_and_ends_cleanly_on_sigterm(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(10), **SMALL)
    follower = start_export(path, broker, topic, "--follow")
    try:
        wait_for_topic(broker, topic, 10, follower)
        with LogWriter(path, **SMALL) as writer:  # rolls a segment every ~20 records
            for i, (category, payload, timestamp) in enumerate(sample(120)[10:]):
                writer.append(category, payload, timestamp)
                if i % 25 == 0:
                    time.sleep(0.05)  # some records arrive while the follower waits
        wait_for_topic(broker, topic, 120, follower)
    finally:
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=HANG_GUARD)

    assert follower.returncode == 0, err
    assert "exported 120 records" in out
    assert len(assert_topic_is_bus(broker, topic, path)) == 120


def test_follow_killed_and_restarted_while_a_writer_appends_loses_and_repeats_nothing(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    chooser = random.Random(7)
    with LogWriter(path, **SMALL) as writer:
        for round_number in range(4):
            follower = start_export(path, broker, topic, "--follow")
            for category, payload, timestamp in sample(300)[round_number * 60 : round_number * 60 + 60]:
                writer.append(category, payload, timestamp)
                if chooser.random() < 0.1:
                    time.sleep(0.01)
            time.sleep(chooser.uniform(0.0, 0.3))
            follower.kill()
            follower.communicate()
    last = start_export(path, broker, topic, "--follow")
    try:
        Lines(last.stdout).wait_for(lambda line: line.startswith("resuming at bus offset"))
        wait_for_topic(broker, topic, 240, last)
    finally:
        last.send_signal(signal.SIGINT)
        last.wait(timeout=HANG_GUARD)
    assert last.returncode == 0, last.stderr.read()
    assert len(assert_topic_is_bus(broker, topic, path)) == 240


def test_a_second_export_of_the_bus_into_the_same_topic_is_refused_while_one_runs(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, sample(10))
    follower = start_export(path, broker, topic, "--follow")
    try:
        Lines(follower.stdout).wait_for(lambda line: line.startswith("created the topic"))

        second = export(path, broker, topic)
        elsewhere = export(path, broker, topic + "-other")  # another topic: no conflict
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=HANG_GUARD)

    message = assert_error_line(second, KAFKA_EXPORT_PROG, 6)
    assert (
        f"another kafka-export of the bus at {path} into the topic {topic} is running (pid {follower.pid})"
        in message
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    after = export(path, broker, topic)
    assert after.returncode == 0 and "exported 0 records" in after.stdout, after.stderr
    assert len(assert_topic_is_bus(broker, topic, path)) == 10


def test_cut_off_from_a_broker_that_keeps_the_topic_then_run_again_it_resumes_where_it_stopped(
    tmp_path: Path, relayed_broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    write_bus(path, [(c, p * 40, t) for c, p, t in sample(6000)], segment_bytes=256 * 1024)
    process = start_export(path, relayed_broker, topic, "--max-request-size", "8K", "--timeout", "2")
    wait_for_topic(relayed_broker, topic, 100, process)
    assert relayed_broker.relay is not None
    relayed_broker.relay.cut()  # the network, not the broker: the topic stays

    out, err = process.communicate(timeout=HANG_GUARD)

    assert process.returncode == 9, (out, err)
    assert f"Kafka brokers {relayed_broker.bootstrap}" in err and "it resumes where it stopped" in err
    relayed_broker.relay.restore()
    held = topic_messages(relayed_broker.bootstrap, topic)
    assert 100 <= len(held) < 6000
    assert contents(held) == as_messages(read_all(path))[: len(held)]

    result = export(path, relayed_broker, topic)

    assert result.returncode == 0, result.stderr
    assert f"resuming at bus offset {held[-1].mark.next_offset}" in result.stdout
    assert len(assert_topic_is_bus(relayed_broker, topic, path)) == 6000

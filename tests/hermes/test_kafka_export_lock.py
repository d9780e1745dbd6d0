"""Two exports appending to one topic at once: the one-export lock (an abstract Unix socket named after
the bus directory's inode and the topic) does not see an export of a copy of the bus (the bus moved with
cp -a while the old service still runs), nor one in another network namespace (a container)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.bus import SMALL, read_all, write_bus
from helpers.cli import assert_error_line, sample
from helpers.kafka import Broker, as_messages, contents, export, topic_messages

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import TopicMismatchError
from filelog_bus.hermes.kafka.export import BusExport
from filelog_bus.hermes.kafka.topic import KafkaTopic


# Found by the adversarial test: read_copy checked only the topic's first and last messages, so
# duplicates two racing exports left were accepted by every later run; it now checks the last two
# batches' worth of messages follow one another (copy.check_tail).
def test_a_topic_two_racing_exports_left_duplicates_in_is_refused_by_the_next_run(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path, copy = tmp_path / "bus", tmp_path / "moved-bus"
    write_bus(path, sample(60), **SMALL)
    shutil.copytree(path, copy)
    with (
        LogReader(path) as reader,
        LogReader(copy) as copy_reader,
        KafkaTopic(broker.bootstrap, topic, max_request_bytes=2048) as first,
        KafkaTopic(broker.bootstrap, topic, max_request_bytes=2048) as second,
    ):
        first.open(create=True)
        second.open()
        racing = [BusExport(reader, first), BusExport(copy_reader, second)]  # both find the topic empty
        racing[0].run()
        with pytest.raises(TopicMismatchError, match="another producer writes"):
            racing[1].run()  # its first batch landed after the whole bus: detected, too late
    expected = as_messages(read_all(path))
    held = contents(topic_messages(broker.bootstrap, topic))
    assert held[:60] == expected and held[60:] == expected[: len(held) - 60]  # duplicates in the topic

    again = export(path, broker, topic)

    # it exits 0: resumes after the copy's batch and appends the rest again, the topic holds the bus twice
    assert again.returncode == 3, again.stdout


def test_a_topic_that_starts_after_the_start_of_the_bus_is_refused(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    """A topic filled from a copy of the bus whose start retention had deleted (a trial run on a
    staging copy): the real bus still holds the records before the topic's first message, which the
    topic never had. Taken on its first and last messages, it was resumed and reported as holding the
    bus up to its end, with a gap at its start."""
    path, trial = tmp_path / "bus", tmp_path / "staging-copy"
    write_bus(path, sample(60), **SMALL)
    shutil.copytree(path, trial)
    with LogWriter(trial, **SMALL) as writer:
        writer.apply_retention(max_bytes=1500)
        cut = writer.begin_offset
    assert cut > 0
    assert export(trial, broker, topic).returncode == 0
    before = topic_messages(broker.bootstrap, topic)

    result = export(path, broker, topic)

    message = assert_error_line(result, "filelog-bus kafka-export", 3)
    assert f"copies bus offset {cut}, but this bus holds records from offset 0" in message
    assert topic_messages(broker.bootstrap, topic) == before

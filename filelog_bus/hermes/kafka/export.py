"""Copying a bus into partition 0 of a Kafka topic, exactly once across interruptions.

Invariants (each run keeps them, so any interruption leaves them true):
1. The topic holds a gap-free run of the bus's records, in bus order, from its first message on;
   each message is marked with the offsets of the record it copies (marks.py).
2. A run appends only after the topic's true last message, once that message has been checked
   against the bus (and so has the first): a topic holding anything else is refused.
3. A batch goes to the broker only once the one before it is acknowledged, and a failed batch is
   never sent again by the same run: the topic grows by whole batches, a prefix of what was sent.
So a run killed anywhere, or failing on the broker or on the bus, leaves a prefix of the bus in the
topic, and the next run resumes right after its last message.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from filelog_bus.errors import (
    ExportRunningError,
    FilelogBusError,
    RecordsExpiredError,
    RecordTooLargeError,
    TopicMismatchError,
)
from filelog_bus.hermes.kafka.copy import Copy, overtaken, read_copy
from filelog_bus.hermes.kafka.marks import BATCH_HEADER_BYTES, Message, Outgoing, outgoing
from filelog_bus.hermes.kafka.topic import KafkaTopic
from filelog_bus.progress import TotalProgress
from filelog_bus.reader import LogReader
from filelog_bus.record import Record

#: How long a --follow export waits for the bus at a time before it looks at its stop flag.
_FOLLOW_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class Resume:
    """Where a run starts: the first bus record it copies and the Kafka offset it will get."""

    bus_offset: int
    kafka_offset: int
    #: The topic's last message before this run (None: the topic was empty).
    last: Message | None
    #: The bus's first offset when the topic was empty and retention had already deleted the
    #: records before it (None when the bus still starts at offset 0 or the topic was not empty).
    retention_cut: int | None


@dataclass
class ExportSummary:
    """What one run did."""

    records: int = 0
    bytes: int = 0
    #: The bus offset after the last record in the topic, and the Kafka offset after its message.
    bus_offset: int = 0
    kafka_offset: int = 0
    seconds: float = 0.0


def plan_resume(copy: Copy, topic: KafkaTopic) -> Resume:
    """Where this run starts: right after the topic's last message, or at the bus's first record."""
    last = copy.last
    if last is None:
        return Resume(copy.bus_begin, copy.kafka_end, None, copy.bus_begin if copy.bus_begin > 0 else None)
    assert last.mark is not None  # read_copy refuses a last message without a mark
    resume_at = last.mark.next_offset
    if resume_at < copy.bus_begin:
        raise overtaken(topic, resume_at, copy.bus_begin)
    return Resume(resume_at, copy.kafka_end, last, None)


class _Batch:
    """Records read and not sent yet, with their messages: at most one request's worth."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.messages: list[Outgoing] = []
        self.size = 0
        #: Whether the next record did not fit (the bus holds more now).
        self.full = False


class BusExport:
    """One run of the copy: ``run`` appends the records after ``resume`` in batches."""

    def __init__(
        self, reader: LogReader, topic: KafkaTopic, *, progress: TotalProgress | None = None
    ) -> None:
        self.reader = reader
        self.topic = topic
        self.progress = progress
        #: The messages of one batch, so that the batch fits in one request.
        self._batch_bytes = topic.max_request_bytes - BATCH_HEADER_BYTES
        #: A record read that did not fit in the last batch: the first of the next.
        self._held: tuple[Record, Outgoing, int] | None = None
        self.resume = plan_resume(read_copy(reader, topic), topic)
        self.summary = ExportSummary(bus_offset=self.resume.bus_offset, kafka_offset=self.resume.kafka_offset)

    def run(self, *, follow: bool = False, should_stop: Callable[[], bool] = lambda: False) -> ExportSummary:
        """Copy up to the end of the bus (``follow``: and then what the writer appends), or until
        ``should_stop()`` is true after a batch. Returns the summary; on an error, what was read
        before it is still sent, and ``self.summary`` says what reached the topic."""
        started = time.monotonic()
        summary = self.summary
        total = max(self.reader.end_offset - summary.bus_offset, 0)
        try:
            self._seek(summary.bus_offset)
            while True:
                batch, failure = self._read_batch()
                self._append(batch)  # with a failure: what was read before it
                if self.progress is not None:
                    self.progress(summary.bus_offset - self.resume.bus_offset, total)
                if isinstance(failure, RecordsExpiredError):  # counted once what was read is in the topic
                    raise self._overtaken() from failure
                if failure is not None:
                    raise failure
                if should_stop() or not (batch.full or follow):
                    return summary
                if not batch.full:
                    self._wait(should_stop)
        finally:
            summary.seconds = time.monotonic() - started

    def _seek(self, offset: int) -> None:
        try:
            self.reader.seek(offset)
        except RecordsExpiredError:
            raise self._overtaken() from None

    def _read_batch(self) -> tuple[_Batch, FilelogBusError | None]:
        """The records on the bus now, up to one request's worth (``full`` when more wait), and the
        error that stopped the reading, if one did. (The export's inner loop: one record at a time.)"""
        batch = _Batch()
        records, messages, limit = batch.records, batch.messages, self._batch_bytes
        read_next = self.reader.read_next
        try:
            while True:
                if self._held is None:
                    record = read_next()
                    if record is None:
                        return batch, None
                    message = outgoing(record)
                    self._held = record, message, self._checked_size(record, message)
                record, message, size = self._held
                if batch.size + size > limit:
                    batch.full = True
                    return batch, None
                records.append(record)
                messages.append(message)
                batch.size += size
                self._held = None
        except FilelogBusError as exc:
            return batch, exc

    def _checked_size(self, record: Record, message: Outgoing) -> int:
        """The message's size bound, or RecordTooLargeError when no batch can carry it."""
        size = message.size_bound()
        if size > self._batch_bytes:
            raise RecordTooLargeError(
                f"the record at bus offset {record.offset} takes {size} bytes as a Kafka message, "
                f"more than one request may carry ({self._batch_bytes} bytes and a batch header)",
                bootstrap_servers=self.topic.bootstrap_servers,
                topic=self.topic.topic,
                offset=record.offset,
                advice="raise the topic's max.message.bytes and give --max-request-size to match",
            )
        return size

    def _append(self, batch: _Batch) -> None:
        """Send a batch, wait for its acknowledgement, and count it."""
        if not batch.records:
            return
        summary = self.summary
        records = batch.records
        first = self.topic.append_batch(batch.messages, records[0].offset)
        if first != summary.kafka_offset:
            raise TopicMismatchError(
                f"the records from bus offset {records[0].offset} landed at Kafka offset {first}, not at "
                f"{summary.kafka_offset} right after the last copy: another producer writes to {self.topic.topic}",
                bootstrap_servers=self.topic.bootstrap_servers,
                topic=self.topic.topic,
                kafka_offset=first,
                advice="stop the other producer (the topic must be written by the export alone), then export "
                "to a new topic",
            )
        summary.records += len(records)
        summary.bytes += sum(record.size for record in records)
        summary.bus_offset = records[-1].next_offset
        summary.kafka_offset = first + len(records)

    def _wait(self, should_stop: Callable[[], bool]) -> None:
        reader = self.reader
        reader.set_timeout(_FOLLOW_WAIT_SECONDS)
        while not should_stop() and not reader.wait_for_records():
            pass

    def _overtaken(self) -> TopicMismatchError:
        return overtaken(self.topic, self.summary.bus_offset, self.reader.begin_offset)


def collect_garbage_rarely() -> None:
    """For a process whose work is the export (the command): fewer garbage collections.

    The export allocates a few objects per record, and kafka-python a few more per message, nearly
    all freed by reference counting. With the collector's defaults, its collections (one every 700
    allocations, and now and then a scan of everything the process holds) took a good part of the
    copy's time (benchmarks/RESULTS.md, "The road to Kafka", garbage collection). So what the process holds when the export
    starts is moved out of the collector's scans, and a young collection comes every 100,000
    allocations; cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


@contextmanager
def one_export_at_a_time(bus_path: str, topic: KafkaTopic) -> Iterator[None]:
    """Refuse (ExportRunningError) to run beside another export of the same bus into the same topic
    (on the same brokers): both would append after the same last message.

    The lock is an abstract Unix socket named after the bus directory's identity, the brokers and the
    topic: it needs no file (a reader of the bus may write nowhere near it), and the kernel releases it
    when the process ends, however it ends. Linux only; elsewhere nothing is locked (the check of the
    topic's last messages still refuses what two exports at once leave behind).
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    status = os.stat(bus_path)
    identity = f"{status.st_dev}/{status.st_ino}/{','.join(sorted(topic.servers))}/{topic.topic}"
    key = hashlib.sha256(identity.encode()).hexdigest()[:40]
    name = f"\0filelog-bus-kafka-export-{key}"
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(name)
        lock.listen(1)
    except OSError as exc:
        lock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        holder = _holder(name)
        raise ExportRunningError(
            f"another kafka-export of the bus at {bus_path} into the topic {topic.topic} is running "
            f"(pid {holder}): both would append after the same last message",
            holder=holder,
            bootstrap_servers=topic.bootstrap_servers,
            topic=topic.topic,
            advice="stop it first (a --follow service: systemctl stop), or let it finish",
        ) from None
    try:
        yield
    finally:
        lock.close()


def _holder(name: str) -> str:
    """The pid of the process listening on the abstract socket ``name``, or "unknown"."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(name)
        credentials = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return str(struct.unpack("3i", credentials)[0])
    except OSError:
        return "unknown"
    finally:
        probe.close()

"""Partition 0 of a Kafka topic, as the export and the client migration use it: the one module that
talks to a broker (through kafka-python).

Facts about brokers this relies on, each checked against the tansu broker the tests run:
- a record batch sent in one produce request is appended whole, and a batch follows the one
  before it, so with one batch in flight at a time and no retries the topic holds a prefix of
  what was sent: never a gap, never a duplicate within a run;
- ``end_offsets()`` may be short after batches (tansu answers the last batch's first offset + 1),
  but it is never past the end and never before the last batch: the true end is found by reading
  forward from there until the fetch's high watermark (``true_end``);
- offsets are dense message numbers (Hermes's topics are not compacted), so a message found at or
  after ``k`` is the message ``k``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from filelog_bus.errors import (
    BrokerRefusedError,
    BrokerUnavailableError,
    ConfigError,
    KafkaMissingError,
    RecordTooLargeError,
    TopicMismatchError,
)
from filelog_bus.hermes.kafka.marks import Message, Outgoing, mark_of

#: Kafka's own limit on a request (and Hermes's producer's ``max_request_size``): 1 MiB.
DEFAULT_MAX_REQUEST_BYTES = 1048576
DEFAULT_TIMEOUT_SECONDS = 30.0
#: The longest --timeout: beyond an hour a broker that does not answer is down, not slow.
MAX_TIMEOUT_SECONDS = 3600.0
#: The smallest request that carries a marked message with a small event, with room to spare.
MIN_REQUEST_BYTES = 1024
#: Kafka's protocol carries a replication factor as a 16-bit signed integer.
_MAX_REPLICATION_FACTOR = 32767
#: kafka-python's default: a consumer's request timeout must stay below it.
_DEFAULT_CONNECTIONS_MAX_IDLE_MS = 540_000
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PARTITION = 0
#: The producer sends a batch when told to (flush), never on its own: one batch per request.
_NEVER_LINGER_MS = 3_600_000
_RECOVERY_ADVICE = (
    "check that the broker is running and reachable, then run the command again: it resumes where it stopped"
)


def _kafka() -> Any:
    """The kafka-python package, or KafkaMissingError saying how to install it."""
    try:
        import kafka
    except ImportError as exc:
        raise KafkaMissingError(
            f"the Kafka commands need kafka-python, which cannot be imported ({exc})",
            advice="install it with: pip install 'filelog-bus[kafka]'",
        ) from None
    return kafka


def parse_bootstrap_servers(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` as a list, or ConfigError."""
    servers = [part.strip() for part in text.split(",")]
    for server in servers:
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"invalid bootstrap server {server!r} in {text!r}",
                advice="give HOST:PORT, or several separated by commas, e.g. kafka1:9092,kafka2:9092",
            )
    return servers


def check_topic_name(name: str) -> str:
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"invalid Kafka topic name {name!r}",
            advice="a topic name is 1 to 249 characters among letters, digits, '.', '_' and '-'",
        )
    return name


class KafkaTopic:
    """Partition 0 of ``topic`` on the brokers ``bootstrap_servers``: reads by offset, finds the
    true end, and appends batches that land whole or not at all.

    Every broker failure is a BrokerUnavailableError; a topic with more than one partition is a
    TopicMismatchError (Hermes's consumer reads one arbitrary partition).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        timeout: float | None = None,
        max_request_bytes: int | None = None,
    ) -> None:
        """``timeout`` and ``max_request_bytes`` of None are the defaults (what a command line that
        leaves them out asks for)."""
        timeout = DEFAULT_TIMEOUT_SECONDS if timeout is None else timeout
        max_request_bytes = DEFAULT_MAX_REQUEST_BYTES if max_request_bytes is None else max_request_bytes
        self.bootstrap_servers = bootstrap_servers
        self.servers = parse_bootstrap_servers(bootstrap_servers)
        self.topic = check_topic_name(topic)
        if not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
            raise ConfigError(
                f"the Kafka timeout must be between 1 second and {MAX_TIMEOUT_SECONDS:g} seconds, got {timeout!r}"
            )
        if max_request_bytes < MIN_REQUEST_BYTES:
            raise ConfigError(
                f"the Kafka request size must be at least {MIN_REQUEST_BYTES} bytes, got {max_request_bytes}",
                advice="give --max-request-size as large as the topic's max.message.bytes (Kafka's default: 1M)",
            )
        self.timeout = float(timeout)
        self.max_request_bytes = max_request_bytes
        #: How much of the bus the check of the topic's last messages covers: two batches of the
        #: largest size an export may have sent (``copy.check_tail``).
        self.checked_span = 2 * max(max_request_bytes, DEFAULT_MAX_REQUEST_BYTES)
        self._kafka = _kafka()
        self._consumer: Any = None
        self._producer: Any = None
        self._partition: Any = None

    def __enter__(self) -> KafkaTopic:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._close_producer()
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # closing after a broker failure may fail again
                self._consumer.close()
            self._consumer = None

    def _close_producer(self) -> None:
        """Close the producer; after a failure, one that cannot finish is disarmed.

        kafka-python's ``close`` flushes first and gives up, leaving the producer open, when a batch
        is still unacknowledged; its finaliser then tries again when the process exits, and prints
        its own failure. So the batch gets the timeout to finish (with no retries it fails or lands
        by then), and a producer that still cannot close is marked closed (its private ``_closed``
        flag, the one use of it): its daemon sender thread ends with the process. No batch follows a
        failed one in this run, and a batch that lands late is found by the next run's check.
        """
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=self.timeout)
            except Exception:
                producer._closed = True

    # -- errors ------------------------------------------------------------------------------

    def _fields(self) -> dict[str, str]:
        return {"bootstrap_servers": self.bootstrap_servers, "topic": self.topic}

    @contextmanager
    def _broker(self, what: str) -> Iterator[None]:
        """kafka-python's failures while doing ``what``: BrokerUnavailableError when running again
        later may succeed (no connection, no answer in time, an error Kafka calls retriable),
        BrokerRefusedError when the broker refuses for good."""
        errors = self._kafka.errors
        try:
            yield
        except errors.KafkaError as exc:
            name = type(exc).__name__
            detail = str(exc) if str(exc) not in ("", name) else "no answer"
            transient = (errors.NoBrokersAvailable, errors.KafkaConnectionError, errors.KafkaTimeoutError)
            if exc.retriable or isinstance(exc, transient):
                raise BrokerUnavailableError(
                    f"{what} failed, Kafka brokers {self.bootstrap_servers}: {name} ({detail})",
                    advice=_RECOVERY_ADVICE,
                    **self._fields(),
                ) from exc
            raise BrokerRefusedError(
                f"{what}: the Kafka brokers {self.bootstrap_servers} refused it: {name} ({detail})",
                kafka_error=name,
                advice="running again will not help: fix what Kafka's error names (the topic's settings, "
                "the cluster's policies, this client's rights; see docs/HERMES.md, 'What you need')",
                **self._fields(),
            ) from exc

    def _timed_out(self, what: str) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"{what} got no answer in {self.timeout:g} s, Kafka brokers {self.bootstrap_servers}",
            advice=_RECOVERY_ADVICE,
            **self._fields(),
        )

    # -- the partition -----------------------------------------------------------------------

    def open(self, *, create: bool = False, replication_factor: int = 1) -> bool:
        """Attach to partition 0; with ``create``, create a missing topic with one partition.

        Returns whether the topic was created. A missing topic without ``create`` is a
        TopicMismatchError, as is a topic with several partitions.
        """
        kafka = self._kafka
        if not 1 <= replication_factor <= _MAX_REPLICATION_FACTOR:
            raise ConfigError(
                f"a Kafka replication factor is 1 to {_MAX_REPLICATION_FACTOR}, got {replication_factor}",
                advice="give --replication-factor as many as the brokers that should hold the topic (e.g. 3)",
            )
        request_timeout_ms = int(self.timeout * 1000)
        with self._broker("connecting"):
            self._consumer = kafka.KafkaConsumer(
                bootstrap_servers=self.servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="none",
                allow_auto_create_topics=False,  # a broker would create one with its default partitions
                request_timeout_ms=request_timeout_ms,
                # kafka-python refuses a request timeout that is not below it
                connections_max_idle_ms=max(_DEFAULT_CONNECTIONS_MAX_IDLE_MS, request_timeout_ms + 60_000),
                api_version_auto_timeout_ms=request_timeout_ms,
                max_partition_fetch_bytes=max(self.max_request_bytes, 1048576),
            )
        partitions = self._partitions()
        created = False
        if not partitions:
            if not create:
                raise TopicMismatchError(
                    f"the Kafka topic {self.topic} does not exist on {self.bootstrap_servers}",
                    advice="check the topic's name, or run filelog-bus kafka-export first",
                    **self._fields(),
                )
            partitions = self._create(replication_factor)
            created = True
        if partitions != {_PARTITION}:
            raise TopicMismatchError(
                f"the Kafka topic {self.topic} has {len(partitions)} partitions: Hermes's Kafka consumer reads "
                "one arbitrary partition, so a Hermes topic must have exactly one",
                advice="give a new topic name (it is created with one partition), or create the topic "
                "with --partitions 1 yourself",
                **self._fields(),
            )
        self._partition = kafka.TopicPartition(self.topic, _PARTITION)
        self._consumer.assign([self._partition])
        return created

    def _create(self, replication_factor: int) -> set[int]:
        kafka = self._kafka
        from kafka.admin import NewTopic

        with self._broker(f"creating the topic {self.topic}"):
            admin = kafka.KafkaAdminClient(
                bootstrap_servers=self.servers, request_timeout_ms=int(self.timeout * 1000)
            )
            try:
                admin.create_topics([NewTopic(self.topic, 1, replication_factor)])
            except kafka.errors.TopicAlreadyExistsError:
                pass  # created meanwhile by someone else: its partitions are checked below
            finally:
                admin.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            partitions = self._partitions()
            if partitions:
                return partitions
            time.sleep(0.05)
        raise self._timed_out(f"creating the topic {self.topic}")

    # -- reading -----------------------------------------------------------------------------

    def _partitions(self) -> set[int]:
        """The topic's partitions, from a metadata request that gives up after the timeout.

        kafka-python's own ``partitions_for_topic`` and ``topics`` wait for the answer without a
        limit, and never get one from a broker gone after the connection: this asks its client
        (a private attribute, the one use of one) with its own bounded ``poll``.
        """
        client = self._consumer._client
        cluster = client.cluster
        with self._broker("reading the topic's metadata"):
            stash, cluster.need_all_topic_metadata = cluster.need_all_topic_metadata, True
            try:
                answer = cluster.request_update()
                client.poll(timeout_ms=int(self.timeout * 1000), future=answer)
            finally:
                cluster.need_all_topic_metadata = stash
            if not answer.is_done:
                raise self._timed_out("reading the topic's metadata")
            if answer.failed():
                raise answer.exception
        return set(cluster.partitions_for_topic(self.topic) or ())

    def _message(self, raw: Any) -> Message:
        return Message(raw.offset, raw.key, raw.value, raw.timestamp, mark_of(raw.headers or ()))

    def beginning(self) -> int:
        with self._broker("asking for the topic's first offset"):
            return int(self._consumer.beginning_offsets([self._partition])[self._partition])

    def read_forward(self, start: int) -> Iterator[Message]:
        """Messages from ``start`` on, up to the high watermark of the broker's last answer."""
        consumer, partition = self._consumer, self._partition
        with self._broker("reading the topic"):
            consumer.seek(partition, start)
        deadline = time.monotonic() + self.timeout
        while True:
            with self._broker("reading the topic"):
                polled = consumer.poll(timeout_ms=100).get(partition, [])
                highwater = consumer.highwater(partition)
                position = consumer.position(partition)
            for raw in polled:
                yield self._message(raw)
            if highwater is not None and position >= highwater:
                return
            if polled:
                deadline = time.monotonic() + self.timeout
            elif time.monotonic() > deadline:
                raise self._timed_out("reading the topic")

    def true_end(self) -> tuple[int, int, Message | None]:
        """(first offset, offset after the last message, the last message or None when empty)."""
        begin = self.beginning()
        with self._broker("asking for the topic's end"):
            estimate = int(self._consumer.end_offsets([self._partition])[self._partition])
        if estimate <= begin:
            return begin, begin, None
        last = None
        for last in self.read_forward(estimate - 1):  # noqa: B007 - the loop finds the last one
            pass
        if last is None:  # not where the estimate said: read the whole partition
            for last in self.read_forward(begin):  # noqa: B007
                pass
        return (begin, begin, None) if last is None else (begin, last.kafka_offset + 1, last)

    def messages_from(self, kafka_offset: int) -> list[Message]:
        """The message at ``kafka_offset`` (which must be below the end) and those right after it
        that the same fetch brought: one round trip, however many."""
        consumer, partition = self._consumer, self._partition
        with self._broker("reading the topic"):
            consumer.seek(partition, kafka_offset)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with self._broker("reading the topic"):
                polled = consumer.poll(timeout_ms=100).get(partition, [])
            if polled:
                return [self._message(raw) for raw in polled]
        raise self._timed_out(f"reading the message at Kafka offset {kafka_offset}")

    def message_at(self, kafka_offset: int) -> Message:
        """The message at ``kafka_offset``, which must be below the end."""
        return self.messages_from(kafka_offset)[0]

    # -- appending ---------------------------------------------------------------------------

    def _sending_producer(self) -> Any:
        if self._producer is None:
            with self._broker("connecting a producer"):
                self._producer = self._kafka.KafkaProducer(
                    bootstrap_servers=self.servers,
                    acks="all",
                    allow_auto_create_topics=False,
                    retries=0,
                    max_in_flight_requests_per_connection=1,
                    linger_ms=_NEVER_LINGER_MS,
                    delivery_timeout_ms=_NEVER_LINGER_MS + int(self.timeout * 2000),
                    batch_size=self.max_request_bytes,
                    max_request_size=self.max_request_bytes,
                    request_timeout_ms=int(self.timeout * 1000),
                    api_version_auto_timeout_ms=int(self.timeout * 1000),
                    max_block_ms=int(self.timeout * 1000),
                )
        return self._producer

    def append_batch(self, messages: Sequence[Outgoing], bus_offset: int) -> int:
        """Append ``messages`` as one batch and wait until every in-sync replica has it; return the
        Kafka offset of the first (the others follow it).

        The caller keeps a batch within ``max_request_bytes`` (``Outgoing.size_bound``, and the batch
        header), so that kafka-python sends it as one batch in one request, and sends the next one
        only once this one has returned: the topic grows by whole batches, in order. ``bus_offset``
        (of the first message's record) is for the error messages.
        """
        producer = self._sending_producer()
        with self._sending(bus_offset):
            futures = [
                producer.send(
                    self.topic,
                    key=key,
                    value=value,
                    partition=_PARTITION,
                    timestamp_ms=timestamp,
                    headers=headers,
                )
                for key, value, timestamp, headers in messages
            ]
            producer.flush(timeout=self.timeout)
            first, last = (future.get(timeout=0).offset for future in (futures[0], futures[-1]))
        if last != first + len(futures) - 1:  # kafka-python split the batch: never expected
            raise TopicMismatchError(
                f"the records from bus offset {bus_offset} landed at Kafka offsets {first} to {last}, "
                f"not {len(futures)} consecutive ones",
                kafka_offset=first,
                advice="report this; run the export again: it goes on from the topic's last message",
                **self._fields(),
            )
        return first

    @contextmanager
    def _sending(self, bus_offset: int) -> Iterator[None]:
        """Broker failures while sending a batch: the producer is dropped (it never sends the rest
        later), and a batch the broker finds too large says what to change."""
        try:
            with self._broker(f"sending the records from bus offset {bus_offset}"):
                yield
        except (BrokerUnavailableError, BrokerRefusedError) as exc:
            self._close_producer()
            if isinstance(exc.__cause__, self._kafka.errors.MessageSizeTooLargeError):
                raise RecordTooLargeError(
                    f"the broker refused a batch from bus offset {bus_offset} as too large ({exc.__cause__})",
                    offset=bus_offset,
                    advice="raise the topic's max.message.bytes, or give a smaller --max-request-size",
                    **self._fields(),
                ) from exc.__cause__
            raise

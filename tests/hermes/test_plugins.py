"""The Hermes producer and consumer plugins against the plugin contract, in one process.

Hermes's base classes and Event come from the stand-in in tests/helpers/hermes_standin (put on
sys.path only for these tests); the bus is real, in a temporary directory.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.faults import Fault, Interrupt, injected, publishes_the_watermark, raised_after
from helpers.permissions import outcome_as_unprivileged_user
from helpers.processes import REPO, STANDIN_DIR

from filelog_bus import LogReader, LogWriter
from filelog_bus.errors import BusClosedError, NotABusError


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def hermes(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """The stand-in Hermes modules, the plugins, and a `__hermes__` logger recording what they log."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    import hermes_runtime
    from lib.datamodel.event import Event
    from lib.plugins import FailedToSendEventError

    from hermes_consumer_plugin import FilelogConsumerPlugin
    from hermes_plugin import FilelogProducerPlugin

    handler = RecordingHandler()
    logger = logging.getLogger("hermes-standin-test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    hermes_runtime.install_hermes_builtin("hermes-test", logger)
    yield types.SimpleNamespace(
        Event=Event,
        FailedToSendEventError=FailedToSendEventError,
        Producer=FilelogProducerPlugin,
        Consumer=FilelogConsumerPlugin,
        log=handler,
    )
    hermes_runtime.remove_hermes_builtin()
    logger.removeHandler(handler)


def send_events(hermes: types.SimpleNamespace, bus: Path, events: list, **settings: object) -> None:
    producer = hermes.Producer({"path": str(bus), **settings})
    with producer:
        for event in events:
            producer.send(event)


def base_events(hermes: types.SimpleNamespace, count: int, start: int = 0) -> list:
    return [hermes.Event("base", "added", "user", f"u{i}", {"uid": i}) for i in range(start, start + count)]


def consumer(hermes: types.SimpleNamespace, bus: Path, timeout_ms: int | None = 0):
    plugin = hermes.Consumer({"path": str(bus)})
    plugin.setTimeout(timeout_ms)
    return plugin


def test_consumer_yields_sent_events_with_int_offsets_and_naive_local_timestamps(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    sent = [
        hermes.Event("base", "added", "user", "é", {"name": "Zoë", "groups": [1, 2]}),
        *base_events(hermes, 3),
    ]
    send_events(hermes, bus, sent)

    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        received = list(client)

    assert [e.to_json() for e in received] == [e.to_json() for e in sent]
    assert all(type(e.offset) is int for e in received)
    assert [e.offset for e in received] == sorted({e.offset for e in received})
    local_now = datetime.datetime.now()  # hermes-client compares event.timestamp with this
    for event in received:
        assert isinstance(event.timestamp, datetime.datetime) and event.timestamp.tzinfo is None
        assert abs(event.timestamp - local_now) < datetime.timedelta(minutes=10)


def test_seek_to_last_offset_plus_one_resumes_after_it_and_end_of_bus_waits(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 6))
    with consumer(hermes, bus, timeout_ms=50) as client:
        client.seekToBeginning()
        everything = list(client)
        client.seek(everything[2].offset + 1)
        assert [e.objpkey for e in client] == ["u3", "u4", "u5"]
        client.seek(everything[2].offset)
        assert [e.objpkey for e in client] == ["u2", "u3", "u4", "u5"]
        client.seek(everything[-1].offset + 1)  # nextoffset after the last event: nothing new yet
        assert list(client) == []

    send_events(hermes, bus, base_events(hermes, 2, start=6))
    with consumer(hermes, bus, timeout_ms=50) as client:
        client.seek(everything[-1].offset + 1)
        assert [e.objpkey for e in client] == ["u6", "u7"]


def test_seek_to_an_offset_not_on_the_bus_raises_index_error_naming_the_range(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 2))
    with consumer(hermes, bus) as client:
        with LogReader(bus) as reader:
            end = reader.end_offset
        with pytest.raises(IndexError) as raised:
            client.seek(end + 1000)
    message = str(raised.value)
    assert f"[0, {end}]" in message
    assert f"offset {end + 1000}" in message
    assert "docs/HERMES.md" in message  # says what to do about offsets cached for another bus


def test_find_next_event_of_category_uses_the_index_and_never_parses_other_categories(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    rare = hermes.Event("rare", "dataschema", objattrs={"found": True})
    with LogWriter(bus, index_interval_bytes=256) as writer:
        for _ in range(2000):  # payloads Event.from_json would choke on: proof they are never parsed
            writer.append("base", b"\xff not json, not even UTF-8")
        rare_offset = writer.append("rare", rare.to_json().encode("utf-8"))
        writer.append("base", b"\xff more garbage")

    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        found = client.findNextEventOfCategory("rare")
        assert found is not None and found.objattrs == {"found": True}
        assert found.offset == rare_offset and found.timestamp is not None
        assert client.findNextEventOfCategory("rare") is None  # the position moved past it
        assert client.findNextEventOfCategory("never-sent") is None


def test_find_next_event_of_category_that_is_absent_consumes_the_bus_like_hermes_plugins(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    """Hermes's own plugins iterate to find an event: not finding one leaves them at the end."""
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 3))
    with consumer(hermes, bus, timeout_ms=20) as client:
        client.seekToBeginning()
        first = next(iter(client))
        assert first.objpkey == "u0"
        assert client.findNextEventOfCategory("initsync") is None
        assert list(client) == []
        send_events(hermes, bus, base_events(hermes, 1, start=3))
        assert [e.objpkey for e in client] == ["u3"]


def waiting_client_output(
    hermes: types.SimpleNamespace, bus: Path, start: str, wait: str, events: list
) -> str:
    """Run a client process (setTimeout(None)) that does ``start`` then prints ``wait``'s result;
    send ``events`` once it says it is waiting, and return what it printed."""
    script = (
        "import sys\n"
        "from hermes_consumer_plugin import FilelogConsumerPlugin\n"
        "bus = FilelogConsumerPlugin({'path': sys.argv[1]})\n"
        "bus.setTimeout(None)\n"
        "with bus:\n"
        f"    {start}\n"
        "    print('waiting', flush=True)\n"
        f"    print({wait}, flush=True)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STANDIN_DIR), str(REPO)])}
    client = subprocess.Popen(
        [sys.executable, "-c", script, str(bus)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "waiting"
        send_events(hermes, bus, events)
        out, _ = client.communicate(timeout=60)
    finally:
        client.kill()
    return out.strip()


def test_find_next_event_of_category_waits_up_to_the_timeout_for_one_to_be_sent(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    """With setTimeout(None), a client in another process finds an event sent after it started looking."""
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 1))
    sent_later = [*base_events(hermes, 1, start=1), hermes.Event("initsync", "init-start")]
    found = waiting_client_output(
        hermes, bus, "bus.seekToBeginning()", "bus.findNextEventOfCategory('initsync').eventtype", sent_later
    )
    assert found == "init-start"


def test_timeouts_in_milliseconds_end_an_empty_iteration_and_none_waits_for_the_next_event(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 1))
    for timeout_ms in (0, 1, 100):
        with consumer(hermes, bus, timeout_ms=timeout_ms) as client:
            client.seekToBeginning()
            assert [e.objpkey for e in client] == ["u0"]

    # setTimeout(None): a client in another process waits until this process sends.
    with LogReader(bus) as reader:
        end = reader.end_offset
    received = waiting_client_output(
        hermes, bus, f"bus.seek({end})", "next(iter(bus)).objpkey", base_events(hermes, 1, start=1)
    )
    assert received == "u1"


def test_missing_bus_directory_is_an_empty_bus_until_the_server_creates_it(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "not-created-yet"
    with consumer(hermes, bus, timeout_ms=20) as client:
        client.seekToBeginning()
        assert list(client) == []
        assert client.findNextEventOfCategory("initsync") is None
        client.seek(0)
        send_events(hermes, bus, base_events(hermes, 2))
        assert [e.objpkey for e in client] == ["u0", "u1"]
    waiting = [m for m in hermes.log.messages(logging.INFO) if "does not exist yet" in m]
    assert waiting == [f"filelog bus '{bus}' does not exist yet: waiting for hermes-server"]


def test_consumer_on_a_path_that_is_not_a_bus_directory_says_which_setting_to_fix(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "bus.sqlite"
    not_a_directory.write_text("an old SQLite bus file")
    with pytest.raises(Exception, match=r"settings\.path") as raised:
        consumer(hermes, not_a_directory).open()
    assert "bus.sqlite" in str(raised.value)


def test_a_failing_send_surfaces_as_failed_to_send_event_error_and_is_logged(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    producer = hermes.Producer({"path": str(tmp_path / "bus")})
    with pytest.raises(hermes.FailedToSendEventError, match="not open"):
        producer.send(base_events(hermes, 1)[0])  # outside `with bus:`
    with producer, pytest.raises(hermes.FailedToSendEventError, match="category"):
        producer.send(hermes.Event("", "added"))  # the engine refuses an empty category
    assert len(hermes.log.messages(logging.CRITICAL)) == 2


# Went wrong: an interrupt landing once the event was durable and visible made send() fail, so Hermes sent the event again: a duplicate.
@pytest.mark.parametrize("error", [Interrupt, KeyboardInterrupt])
def test_an_interrupt_once_the_event_is_on_the_bus_does_not_fail_the_send(
    hermes: types.SimpleNamespace, tmp_path: Path, error: type[BaseException]
) -> None:
    """An interrupt landing once the event is durable and visible does not fail send(): send()
    returns, the next send raises the interrupt before writing anything, and the bus holds every
    event once."""
    bus = tmp_path / "bus"
    first, second, third = base_events(hermes, 3)
    producer = hermes.Producer({"path": str(bus)})
    with producer:
        with raised_after("pwrite", error, publishes_the_watermark) as fired:
            producer.send(first)
        assert fired
        with pytest.raises(error):
            producer.send(second)  # refused before anything is written: Hermes sends it again
        producer.send(second)
        producer.send(third)
    with consumer(hermes, bus) as plugin:
        assert [event.objpkey for event in plugin] == [first.objpkey, second.objpkey, third.objpkey]
    assert hermes.log.messages(logging.CRITICAL) == []


def test_second_producer_is_refused_while_the_first_holds_the_bus(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    with hermes.Producer({"path": str(bus)}):
        second = hermes.Producer({"path": str(bus)})
        with pytest.raises(Exception, match=r"(?i)only one hermes-server may produce on a bus") as raised:
            second.open()
    assert type(raised.value).__name__ == "BusLockedError"
    with hermes.Producer({"path": str(bus)}) as third:  # the lock is free again after close
        third.send(base_events(hermes, 1)[0])


def test_retention_settings_are_applied_on_each_open_and_logged(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    ten_days_ago = datetime.datetime.now().timestamp() - 10 * 86400
    with LogWriter(bus, segment_bytes=1024) as writer:  # several segments of ten-day-old events
        for i in range(40):
            old = hermes.Event("base", "added", "user", f"old{i}")
            writer.append("base", old.to_json().encode("utf-8"), ten_days_ago + i)
    by_age = {"segment_bytes": 1024, "retention_in_days": 5}
    send_events(hermes, bus, base_events(hermes, 10), **by_age)  # rolls, closing the old active segment
    send_events(hermes, bus, [], **by_age)  # a later update loop: its open() deletes that one too

    assert any("retention deleted" in m for m in hermes.log.messages(logging.INFO))
    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        remaining = [e.objpkey for e in client]
    assert remaining[-10:] == [f"u{i}" for i in range(10)]
    assert "old0" not in remaining, "the ten-day-old closed segments should be gone"
    with consumer(hermes, bus) as client, pytest.raises(IndexError, match="deleted by the bus's retention"):
        client.seek(0)  # a client stopped for longer than the retention

    by_size = {"segment_bytes": 1024, "retention_bytes": 2048}
    send_events(hermes, bus, base_events(hermes, 30, start=10), **by_size)
    send_events(hermes, bus, [], **by_size)
    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        kept = [e.objpkey for e in client]
    assert kept[-1] == "u39"
    assert not any(key.startswith("old") for key in kept) and len(kept) < 40


def test_a_failed_retention_pass_is_logged_and_the_update_loop_still_sends(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    """Retention failing (EIO on an unlink, through the engine's I/O seam) stops that writer; the
    producer logs it and reopens, so the loop's send() still works and nothing is lost."""
    bus = tmp_path / "bus"
    with LogWriter(bus, segment_bytes=1024) as writer:
        for i in range(40):
            writer.append(
                "base", hermes.Event("base", "added", "user", f"old{i}").to_json().encode(), float(i)
            )
    producer = hermes.Producer({"path": str(bus), "segment_bytes": 1024, "retention_bytes": 2048})
    with injected(Fault("unlink", 1, errno.EIO)) as faults:
        producer.open()
    assert faults.fired
    try:
        for event in base_events(hermes, 3):
            producer.send(event)
    finally:
        producer.close()
    assert any("retention could not delete" in m for m in hermes.log.messages(logging.ERROR))
    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        keys = [e.objpkey for e in client]
    assert keys[-3:] == ["u0", "u1", "u2"]


def test_durability_never_and_custom_segment_size_are_passed_to_the_engine(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus = tmp_path / "bus"
    send_events(hermes, bus, base_events(hermes, 50), durability="never", segment_bytes=2048)
    assert len(list(bus.glob("*.log"))) > 1
    with consumer(hermes, bus) as client:
        client.seekToBeginning()
        assert len(list(client)) == 50


def test_a_bus_the_client_may_not_read_gives_an_error_saying_what_to_do(
    hermes: types.SimpleNamespace, shared_dir: Path, tmp_path: Path
) -> None:
    bus = shared_dir / "bus"
    send_events(hermes, bus, base_events(hermes, 1))

    def consume_every_event(bus: Path = bus) -> None:
        with consumer(hermes, bus) as client:
            client.seekToBeginning()
            list(client)

    private = 0o700 if os.geteuid() == 0 else 0o000  # root-owned 0700: only root may enter
    bus.chmod(private)
    try:
        unreadable_directory = outcome_as_unprivileged_user(consume_every_event)
    finally:
        bus.chmod(0o755)
    segment = next(bus.glob("*.log"))
    segment.chmod(0o600 if os.geteuid() == 0 else 0o000)
    try:
        unreadable_segment = outcome_as_unprivileged_user(consume_every_event)
    finally:
        segment.chmod(0o644)
    tmp_path.chmod(private)
    try:
        unreachable_parent = outcome_as_unprivileged_user(lambda: consume_every_event(tmp_path / "bus"))
    finally:
        tmp_path.chmod(0o700)

    for outcome, where in (
        (unreadable_directory, bus),
        (unreadable_segment, bus),
        (unreachable_parent, tmp_path / "bus"),
    ):
        assert outcome.startswith("BusPermissionError: ")
        assert f"cannot read the filelog bus '{where}'" in outcome
        assert "give the client's user read access" in outcome.lower()


def test_a_bus_the_server_may_not_write_gives_an_error_saying_what_to_do(
    hermes: types.SimpleNamespace, shared_dir: Path, tmp_path: Path
) -> None:
    bus = shared_dir / "bus"
    send_events(hermes, bus, base_events(hermes, 1))
    bus.chmod(0o755 if os.geteuid() == 0 else 0o555)
    try:
        read_only = outcome_as_unprivileged_user(hermes.Producer({"path": str(bus)}).open)
    finally:
        bus.chmod(0o755)
    tmp_path.chmod(0o700 if os.geteuid() == 0 else 0o000)
    try:
        unreachable = outcome_as_unprivileged_user(hermes.Producer({"path": str(tmp_path / "bus")}).open)
    finally:
        tmp_path.chmod(0o700)

    for outcome, where in ((read_only, bus), (unreachable, tmp_path / "bus")):
        assert outcome.startswith("BusPermissionError: ")
        assert f"hermes-server cannot write the filelog bus '{where}'" in outcome
        assert "write access" in outcome


# Went wrong: the consumer restated the engine's NotABusError without its path and advice fields.
def test_consumer_on_a_path_that_is_not_a_bus_gives_the_path_and_the_setting_as_fields(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    not_a_directory = tmp_path / "bus.sqlite"
    not_a_directory.write_text("an old SQLite bus file")
    with pytest.raises(NotABusError) as raised:
        consumer(hermes, not_a_directory).open()
    assert raised.value.path == str(not_a_directory)
    assert raised.value.advice is not None and "settings.path" in raised.value.advice
    assert str(raised.value).count(str(not_a_directory)) == 1


# Went wrong: the producer's body raised a bare RuntimeError for a send before open() (the consumer's a
# BusClosedError without the path): untyped, or typed without its structured field.
def test_the_plugin_bodies_used_before_open_raise_bus_closed_error_with_the_path(
    hermes: types.SimpleNamespace, tmp_path: Path
) -> None:
    """Used outside `with bus:`, both bodies raise BusClosedError naming the bus, with advice."""
    from filelog_bus.hermes.consumer import BusConsumer
    from filelog_bus.hermes.producer import BusProducer

    bus = str(tmp_path / "bus")
    for use in (
        lambda: BusProducer({"path": bus}).send(base_events(hermes, 1)[0]),
        lambda: BusConsumer({"path": bus}, hermes.Event.from_json).seek(0),
    ):
        with pytest.raises(BusClosedError) as raised:
            use()
        assert raised.value.path == bus and "with bus:" in (raised.value.advice or "")

"""Retention that spares the events named hermes-clients have not read: the engine's keep_from,
`filelog-bus retention --clients` (installed command) and the producer's `retention_clients`.
"""

from __future__ import annotations

import logging
import shutil
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.bus import DAY, SMALL, content_snapshot, segment_names
from helpers.cli import bus
from helpers.clients import aged_times, by_client, clients_json, events_bus, unread, write_cache
from helpers.processes import REPO, STANDIN_DIR

from filelog_bus import LogReader, Record
from filelog_bus.retention import SegmentSpan, plan_retention

# -- the engine ------------------------------------------------------------------------------------


def test_plan_keeps_segments_from_keep_from_by_age_but_not_over_the_size_budget() -> None:
    spans = [SegmentSpan(0, 100), SegmentSpan(100, 200), SegmentSpan(200, 300), SegmentSpan(300, 350)]

    def old(span: SegmentSpan, at_least: float) -> float:
        return 0.0  # every segment is old

    by_age = plan_retention(
        spans, now=1e9, max_age_days=1, max_bytes=None, latest_timestamp=old, keep_from=150
    )
    at_boundary = plan_retention(
        spans, now=1e9, max_age_days=1, max_bytes=None, latest_timestamp=old, keep_from=200
    )
    over_budget = plan_retention(
        spans, now=1e9, max_age_days=1, max_bytes=60, latest_timestamp=old, keep_from=150
    )

    assert by_age.doomed == [SegmentSpan(0, 100)]  # the segment holding offset 150 is kept, and all after it
    assert at_boundary.doomed == [SegmentSpan(0, 100), SegmentSpan(100, 200)]
    assert over_budget.doomed == spans[:3]  # the size budget wins; the active segment stays


# -- the retention command ------------------------------------------------------------------------


def old_bus(tmp_path: Path) -> tuple[Path, list[Record], Path]:
    """30 ten-day-old events then 10 recent ones; a stopped client that has read 12 of them."""
    bus_dir = tmp_path / "bus"
    records = events_bus(bus_dir, aged_times((30, 10 * DAY), (10, 60)))
    cache = write_cache(
        tmp_path / "cache", "hermes-client-slow", compressed=True, nextoffset=records[12].offset + 1
    )
    return bus_dir, records, cache


def begin_of(bus_dir: Path) -> int:
    with LogReader(bus_dir) as reader:
        return reader.begin_offset


def test_retention_with_clients_spares_what_they_have_not_read(tmp_path: Path) -> None:
    bus_dir, records, cache = old_bus(tmp_path)
    nextoffset = records[12].offset + 1
    unprotected = tmp_path / "copy"
    shutil.copytree(bus_dir, unprotected)

    files = segment_names(bus_dir)
    dry = bus("retention", bus_dir, "--days", 5, "--clients", cache.parent, "--dry-run")
    dry_files = segment_names(bus_dir)
    spared = bus("retention", bus_dir, "--days", 5, "--clients", cache.parent)
    plain = bus("retention", unprotected, "--days", 5)

    assert dry.returncode == 0 and dry_files == files, dry.stderr
    assert "would delete" in dry.stdout and f"spared by age: offsets from {nextoffset} on" in dry.stdout
    assert spared.returncode == 0, spared.stderr
    assert dry.stdout.split("\n")[0].replace("would delete", "deleted") == spared.stdout.split("\n")[0]
    assert records[0].offset < begin_of(bus_dir) <= nextoffset  # older segments went, its own stayed
    _, report = clients_json(bus_dir, cache)
    assert by_client(report)["hermes-client-slow"]["unread_events"] == unread(records, nextoffset)[0]
    assert by_client(report)["hermes-client-slow"]["state"] == "behind"
    assert plain.returncode == 0 and begin_of(unprotected) > nextoffset  # without --clients: gone
    _, lost = clients_json(unprotected, cache)
    assert by_client(lost)["hermes-client-slow"]["state"] == "expired"


def test_over_the_size_budget_retention_deletes_anyway_and_says_what_each_client_loses(
    tmp_path: Path,
) -> None:
    bus_dir, records, cache = old_bus(tmp_path)
    nextoffset = records[12].offset + 1

    result = bus("retention", bus_dir, "--days", 5, "--bytes", 2048, "--clients", cache)

    assert result.returncode == 1, result.stderr  # something to report: a client lost events
    begin = begin_of(bus_dir)
    assert begin > nextoffset
    lost_events = len([r for r in records if nextoffset <= r.offset < begin])
    assert (
        f"lost: client hermes-client-slow ({cache}) loses {lost_events} unread events, offsets {nextoffset} "
        f"to {begin} ({begin - nextoffset} bytes): re-initialise it"
    ) in result.stdout.splitlines()
    _, report = clients_json(bus_dir, cache)
    assert by_client(report)["hermes-client-slow"]["state"] == "expired"


def test_a_cache_that_cannot_be_read_makes_retention_delete_nothing(tmp_path: Path) -> None:
    bus_dir, _, cache = old_bus(tmp_path)
    (cache.parent / "_hermes-client-broken.json").write_text("{ not json")
    before = content_snapshot(bus_dir)

    result = bus("retention", bus_dir, "--days", 5, "--bytes", 2048, "--clients", cache.parent)

    assert result.returncode == 8
    assert result.stderr.startswith(
        "filelog-bus retention: error: nothing was deleted: retention keeps everything: the hermes-client cache "
        f"file {cache.parent / '_hermes-client-broken.json'} is damaged or not JSON"
    )
    assert content_snapshot(bus_dir) == before


# -- the producer's retention_clients ------------------------------------------------------------


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.SimpleNamespace]:
    """The producer plugin over the Hermes stand-in, with a recording `__hermes__` logger."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(STANDIN_DIR))
    import hermes_runtime

    from hermes_plugin import FilelogProducerPlugin

    handler, logger = Recorder(), logging.getLogger("hermes-retention-clients-test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    hermes_runtime.install_hermes_builtin("hermes-server", logger)
    yield types.SimpleNamespace(Plugin=FilelogProducerPlugin, log=handler)
    hermes_runtime.remove_hermes_builtin()
    logger.removeHandler(handler)


def open_and_close(plugin_class: type, bus_dir: Path, **settings: object) -> None:
    """One hermes-server update loop with no change to send: open() applies retention."""
    with plugin_class({"path": str(bus_dir), "segment_bytes": SMALL["segment_bytes"], **settings}):
        pass


def test_producer_retention_clients_spares_unread_events_and_logs_losses(
    producer: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus_dir, records, cache = old_bus(tmp_path)
    nextoffset = records[12].offset + 1
    open_and_close(producer.Plugin, bus_dir, retention_in_days=5, retention_clients=[str(cache.parent)])
    spared_begin = begin_of(bus_dir)
    open_and_close(
        producer.Plugin, bus_dir, retention_in_days=5, retention_bytes=2048, retention_clients=[str(cache)]
    )
    budget_begin = begin_of(bus_dir)

    assert records[0].offset < spared_begin <= nextoffset
    assert any("retention deleted" in m for m in producer.log.at(logging.INFO))
    assert budget_begin > nextoffset
    lost = len([r for r in records if nextoffset <= r.offset < budget_begin])
    [message] = producer.log.at(logging.ERROR)
    assert message == (
        f"filelog bus {str(bus_dir)!r}: retention_bytes exceeded: client hermes-client-slow ({cache}) loses "
        f"{lost} unread events, offsets {nextoffset} to {budget_begin} ({budget_begin - nextoffset} bytes): "
        "re-initialise it"
    )
    # The next loop: that client lost events already, so it holds nothing back, and says so.
    open_and_close(producer.Plugin, bus_dir, retention_in_days=5, retention_clients=[str(cache)])
    assert any("already lost unread events" in m for m in producer.log.at(logging.WARNING))


def test_producer_keeps_everything_when_a_named_cache_cannot_be_read(
    producer: types.SimpleNamespace, tmp_path: Path
) -> None:
    bus_dir, _, cache = old_bus(tmp_path)
    missing = tmp_path / "no-such-cache-dir" / "_hermes-client-gone.json"
    before = segment_names(bus_dir)

    open_and_close(
        producer.Plugin,
        bus_dir,
        retention_in_days=5,
        retention_bytes=1024,
        retention_clients=[str(cache), str(missing)],
    )

    assert segment_names(bus_dir) == before
    [message] = producer.log.at(logging.ERROR)
    assert message.startswith(
        f"filelog bus {str(bus_dir)!r}: retention keeps everything: no hermes-client cache file {missing}"
    )

"""What `filelog-bus clients --set-offsets` writes into each stopped client's cache.

Every client's new offsets are worked out, and every client checked not to be running, before
any cache is written: a refusal leaves every cache as it was. Writing is
client_cache.set_offsets; the CLI only parses the command line and prints the plan's outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from filelog_bus.bus_directory import DirectoryState, bus_state
from filelog_bus.hermes.client_cache import OFFSET_KEYS, ClientCache, Found, Offsets, refuse_if_running
from filelog_bus.reader import LogReader


@dataclass(frozen=True)
class OffsetChange:
    """One client's offsets: as its cache holds them, and as they are to be written."""

    cache: ClientCache
    offsets: Offsets

    @property
    def current(self) -> list[int | None]:
        return list(self.cache.offsets.values())

    @property
    def unchanged(self) -> bool:
        """The cache already holds these offsets: it is left untouched (no backup either)."""
        return self.offsets == self.cache.offsets


@dataclass(frozen=True)
class OffsetPlan:
    """Every client's change, and what the operator should know first (caches passed over, an
    offset that is not on the bus)."""

    changes: list[OffsetChange]
    notes: list[str]


def target_offset(path: str, where: int | str) -> tuple[int, str]:
    """The offset "start", "end" or `where` (an offset) stands for on the bus at `path`, and a
    note when it deserves one: no bus yet (a new bus starts at 0), or an offset not on the bus."""
    if bus_state(path) is not DirectoryState.BUS:
        if isinstance(where, int):
            return where, ""
        return 0, f"{path} holds no bus yet: a new bus starts at offset 0"
    with LogReader(path) as reader:
        begin, end = reader.begin_offset, reader.end_offset
    if where == "start":
        return begin, ""
    if where == "end":
        return end, ""
    assert isinstance(where, int)
    if not begin <= where <= end:
        return where, (
            f"offset {where} is not on {path} (offsets {begin} to {end}): written as given, for another "
            "bus such as a Kafka topic; a filelog client would fail on it"
        )
    return where, ""


def plan_target(path: str, found: Found, where: int | str, *, force: bool) -> OffsetPlan:
    """All three offsets of every found client set to one offset (see target_offset)."""
    target, why = target_offset(path, where)
    changes = [OffsetChange(cache, dict.fromkeys(OFFSET_KEYS, target)) for cache in found.clients]
    return _checked(changes, [*found.notes, *([why] if why else [])], force=force)


def plan_kafka(
    path: str,
    found: Found,
    *,
    to_kafka: bool,
    bootstrap_server: str,
    topic: str,
    timeout: float | None,
    force: bool,
) -> OffsetPlan:
    """Every found client's offsets translated to the topic kafka-export filled from the bus at
    `path` (`to_kafka`), or back from it to the bus."""
    from filelog_bus.hermes.kafka.client_offsets import bus_offsets, kafka_offsets
    from filelog_bus.hermes.kafka.topic import KafkaTopic

    translate = kafka_offsets if to_kafka else bus_offsets
    with (
        KafkaTopic(bootstrap_server, topic, timeout=timeout) as kafka_topic,
        LogReader(path) as reader,
    ):
        kafka_topic.open()
        planned = translate(found.clients, reader, kafka_topic)
    return _checked([OffsetChange(cache, offsets) for cache, offsets in planned], found.notes, force=force)


def _checked(changes: Sequence[OffsetChange], notes: list[str], *, force: bool) -> OffsetPlan:
    """The plan, once no client seems to be running (ClientRunningError otherwise), unless `force`."""
    if not force:
        for change in changes:
            refuse_if_running(change.cache)
    return OffsetPlan(list(changes), notes)

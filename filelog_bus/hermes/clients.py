"""Who reads the bus, and how far: each hermes-client's lag and state, and retention that spares them.

The bus knows nothing of its readers; their positions are in their cache files
(filelog_bus.hermes.client_cache). From those and the bus this module answers "is every client
keeping up?", "will retention delete events a client has not read?" and, when retention
must delete them anyway (the size budget), "what does each client lose?".
The decisions are pure: classify here, and what retention spares and what a reader loses
(retention.spared_from, retention.loses), applied to the clients' positions; the rest reads the bus.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from filelog_bus.compat import StrEnum
from filelog_bus.errors import ClientCacheError, RecordsExpiredError
from filelog_bus.hermes.client_cache import ClientCache, appname_of, find_clients
from filelog_bus.reader import LogReader
from filelog_bus.retention import check_policy, loses, plan_retention_now, spared_from
from filelog_bus.writer import LogWriter


class ClientState(StrEnum):
    """A client's state, from the best to the worst (the order a summary and the exit status use;
    the values are the words the CLI prints)."""

    OK = "ok"
    BEHIND = "behind"
    AT_RISK = "at risk"
    EXPIRED = "expired"
    AHEAD = "ahead"
    UNREADABLE = "unreadable"


#: States that need action now (Nagios CRITICAL); BEHIND and AT_RISK are warnings.
CRITICAL_STATES = (ClientState.EXPIRED, ClientState.AHEAD, ClientState.UNREADABLE)


@dataclass(frozen=True)
class Thresholds:
    """When a client counts as behind, and the retention policy the server applies."""

    behind_seconds: float | None = 900.0
    behind_events: int | None = None
    max_age_days: float | None = None
    max_bytes: int | None = None
    #: The server spares these clients' unread events (its retention_clients setting).
    sparing: bool = False


@dataclass(frozen=True)
class Unread:
    """What a position has not read yet: events, bytes, and the time of the oldest one."""

    events: int
    bytes: int
    oldest_time: float | None


@dataclass(frozen=True)
class ClientReport:
    """One row of `filelog-bus clients`."""

    cache: ClientCache
    state: ClientState
    why: str
    unread: Unread | None


@dataclass(frozen=True)
class BusPositions:
    """The bus as the clients see it: its range, and the range the next retention pass leaves."""

    begin: int
    end: int
    next_begin: int


# -- pure decisions ------------------------------------------------------------------------------


def classify(
    cache: ClientCache, bus: BusPositions, unread: Unread | None, thresholds: Thresholds, now: float
) -> tuple[ClientState, str]:
    """(state, why) of a client; `unread` is None when its position is not on the bus."""
    position = cache.nextoffset
    if position is None:
        return (
            ClientState.OK,
            "not initialised yet: it looks for an initsync sequence from the start of the bus",
        )
    if position > bus.end:
        return ClientState.AHEAD, (
            f"its next offset {position} is beyond the end of the bus ({bus.end}): its offsets come from "
            "another bus; set them with --set-offsets"
        )
    if position < bus.begin:
        return ClientState.EXPIRED, (
            f"retention deleted offsets {position} to {bus.begin} before it read them: re-initialise it "
            "(empty its cache and have hermes-server send an initsync sequence)"
        )
    assert unread is not None
    if bus.next_begin > position:  # its next seek would fail, as for an expired client
        return ClientState.AT_RISK, (
            f"the next retention pass deletes the bus up to offset {bus.next_begin}, past its next offset: "
            "events it has not read"
        )
    lag = None if unread.oldest_time is None else max(0.0, now - unread.oldest_time)
    if thresholds.behind_seconds is not None and lag is not None and lag > thresholds.behind_seconds:
        return (
            ClientState.BEHIND,
            f"its oldest unread event is {_duration(lag)} old (threshold {_duration(thresholds.behind_seconds)})",
        )
    if thresholds.behind_events is not None and unread.events > thresholds.behind_events:
        return ClientState.BEHIND, f"{unread.events} unread events (threshold {thresholds.behind_events})"
    return ClientState.OK, "keeping up" if unread.events else "has read every event"


@dataclass(frozen=True)
class Loss:
    """Events a client had not read that retention deletes: offsets [start, stop)."""

    cache: ClientCache
    start: int
    stop: int
    events: int

    def __str__(self) -> str:
        return (
            f"client {self.cache.appname} ({self.cache.path}) loses {self.events} unread events, offsets "
            f"{self.start} to {self.stop} ({self.stop - self.start} bytes): re-initialise it"
        )


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


# -- reading the bus -----------------------------------------------------------------------------


def unread_from(path: str, positions: Sequence[int], end: int | None = None) -> dict[int, Unread]:
    """What each position has not read, up to `end` (default: the end of the bus now), in one pass.

    Positions must be on the bus. Retention deleting records meanwhile restarts the pass.
    """
    wanted = sorted(set(positions))
    if not wanted:
        return {}
    for _attempt in range(3):
        try:
            return _count_unread(path, wanted, end)
        except RecordsExpiredError:
            continue
    return _count_unread(path, wanted, end)


def _count_unread(path: str, wanted: list[int], end: int | None) -> dict[int, Unread]:
    events = [0] * len(wanted)
    sizes = [0] * len(wanted)
    first: list[float | None] = [None] * len(wanted)
    with LogReader(path, timeout=0) as reader:
        stop = reader.end_offset if end is None else end
        reader.seek(wanted[0])
        for record in reader:
            if record.offset >= stop:
                break
            slot = bisect.bisect_right(wanted, record.offset) - 1  # the last position at or before it
            events[slot] += 1
            sizes[slot] += record.size
            if first[slot] is None:
                first[slot] = record.timestamp
    result = {}
    total_events = total_bytes = 0
    oldest: float | None = None
    for slot in range(len(wanted) - 1, -1, -1):  # a position has not read what later ones have not
        total_events += events[slot]
        total_bytes += sizes[slot]
        oldest = first[slot] if first[slot] is not None else oldest
        result[wanted[slot]] = Unread(total_events, total_bytes, oldest)
    return result


def bus_positions(
    path: str, thresholds: Thresholds, clients: Sequence[ClientCache], now: float
) -> BusPositions:
    with LogReader(path) as reader:
        begin, end = reader.begin_offset, reader.end_offset
    next_begin = begin
    if thresholds.max_age_days is not None or thresholds.max_bytes is not None:
        keep = spared_from((c.nextoffset for c in clients), begin, end) if thresholds.sparing else None
        plan = plan_retention_now(
            path,
            max_age_days=thresholds.max_age_days,
            max_bytes=thresholds.max_bytes,
            now=now,
            keep_from=keep,
        )
        next_begin = plan.begin_offset
    return BusPositions(begin, end, next_begin)


def client_reports(
    path: str, clients: Sequence[ClientCache], thresholds: Thresholds, now: float | None = None
) -> tuple[BusPositions, list[ClientReport]]:
    """Every client's state on the bus at `path` (which must exist)."""
    now = time.time() if now is None else now
    bus = bus_positions(path, thresholds, clients, now)
    on_bus = [
        c.nextoffset for c in clients if c.nextoffset is not None and bus.begin <= c.nextoffset <= bus.end
    ]
    unread = unread_from(path, on_bus, bus.end)
    reports = []
    for cache in clients:
        found = unread.get(cache.nextoffset) if cache.nextoffset is not None else None
        state, why = classify(cache, bus, found, thresholds, now)
        reports.append(ClientReport(cache, state, why, found))
    return bus, reports


def unreadable_report(error: ClientCacheError) -> ClientReport:
    cache = ClientCache(error.path, appname_of(error.path), None, None, None, None)
    return ClientReport(cache, ClientState.UNREADABLE, str(error), None)


# -- retention that spares unread events ---------------------------------------------------------


@dataclass(frozen=True)
class SparingOutcome:
    """What a retention pass sparing clients did: deleted segments, losses, and why it held back."""

    deleted: list[str]
    losses: list[Loss]
    kept_from: int | None
    refused: str | None = None
    #: Clients that had lost events before this pass: they hold nothing back.
    expired: tuple[ClientCache, ...] = ()
    #: Bytes deleted (or that would be), and the bus's first offset afterwards.
    bytes: int = 0
    begin_after: int | None = None
    #: Why the age budget stopped at a segment stamped in the future, or None (LogWriter.retention_note).
    note: str | None = None


def count_events(path: str, start: int, stop: int) -> int:
    """Records in [start, stop): what a client loses when retention deletes that range."""
    counted = unread_from(path, [start], stop)
    return counted[start].events if start in counted else 0


def plan_sparing(
    path: str,
    caches: Sequence[str],
    *,
    max_age_days: float | None,
    max_bytes: int | None,
    now: float | None = None,
) -> SparingOutcome:
    """What retention sparing the named clients would delete now, and what each client would lose.

    A cache that cannot be read makes the plan delete nothing at all (`refused` says why): a
    client whose position is unknown may need anything on the bus.
    """
    check_policy(max_age_days, max_bytes)
    found = find_clients(caches)
    if found.errors:
        reasons = "; ".join(str(error) for error in found.errors)
        return SparingOutcome([], [], None, refused=f"retention keeps everything: {reasons}")
    with LogReader(path) as reader:
        begin, end = reader.begin_offset, reader.end_offset
    keep = spared_from((c.nextoffset for c in found.clients), begin, end)
    plan = plan_retention_now(
        path,
        max_age_days=max_age_days,
        max_bytes=max_bytes,
        now=time.time() if now is None else now,
        keep_from=keep,
    )
    losses = [
        Loss(client, start, plan.begin_offset, count_events(path, start, plan.begin_offset))
        for client in found.clients
        if (start := client.nextoffset) is not None and loses(start, begin, plan.begin_offset)
    ]
    expired = tuple(c for c in found.clients if c.nextoffset is not None and c.nextoffset < begin)
    return SparingOutcome(
        plan.segments,
        losses,
        keep,
        expired=expired,
        bytes=plan.bytes,
        begin_after=plan.begin_offset,
        note=plan.note,
    )


def retention_sparing(
    writer: LogWriter,
    caches: Sequence[str],
    *,
    max_age_days: float | None,
    max_bytes: int | None,
    now: float | None = None,
) -> SparingOutcome:
    """Apply retention on an open writer, never deleting events the named clients have not read,
    unless the size budget requires it; `losses` then says what each client lost."""
    now = time.time() if now is None else now
    plan = plan_sparing(writer.path, caches, max_age_days=max_age_days, max_bytes=max_bytes, now=now)
    if plan.refused:
        return plan
    before = writer.begin_offset
    deleted = writer.apply_retention(
        max_age_days=max_age_days, max_bytes=max_bytes, now=now, keep_from=plan.kept_from
    )
    after = writer.begin_offset
    return SparingOutcome(
        deleted,
        plan.losses,
        plan.kept_from,
        expired=plan.expired,
        bytes=after - before,
        begin_after=after,
        note=writer.retention_note,
    )


def expired_message(client: ClientCache) -> str:
    return (
        f"client {client.appname} ({client.path}) already lost unread events (its next offset "
        f"{client.nextoffset} was deleted): it holds retention back no more; re-initialise it"
    )


def log_outcome(outcome: SparingOutcome, bus: str, logger: logging.Logger) -> None:
    """What the producer logs after a sparing pass: a refusal or a loss is an error, a deletion info."""
    if outcome.refused:
        logger.error(f"filelog bus {bus!r}: {outcome.refused}")
    for client in outcome.expired:
        logger.warning(f"filelog bus {bus!r}: {expired_message(client)}")
    for loss in outcome.losses:
        logger.error(f"filelog bus {bus!r}: retention_bytes exceeded: {loss}")
    if outcome.deleted:
        logger.info(
            f"filelog bus {bus!r}: retention deleted {len(outcome.deleted)} old segment(s): {outcome.deleted}"
        )
    if outcome.note is not None:
        logger.warning(f"filelog bus {bus!r}: {outcome.note}")

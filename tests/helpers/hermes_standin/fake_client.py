"""A hermes-client stand-in: consumes the bus through the consumer plugin the way hermes-client does.

Start-up: `seekToBeginning()` and a scan for a complete initsync sequence (init-start ...
init-stop); then the initsync events, then base events, each update loop doing
`seek(nextoffset)` and iterating until the timeout. After each handled event
`nextoffset = event.offset + 1`; the cache (initstartoffset, initstopoffset, nextoffset among
other entries) is saved at the end of every loop as hermes-client saves it (hermes_cache.py:
`_<appname>.json`, or `.json.gz` when compressed).

    python fake_client.py BUS CACHE_FILE [--timeout-ms T] [--stop-after N] [--stop-at OBJPKEY]
                          [--kafka HOST:PORT --topic TOPIC]

With --kafka it reads Hermes's Kafka bus through the stand-in of Hermes's Kafka consumer
(kafka_consumer.py) instead of the filelog bus (BUS is then ignored).

Prints one JSON line per handled event. Exits 0 when a stop condition is met (a clean stop,
cache saved), 3 after --max-loops loops without meeting one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hermes_cache
from hermes_runtime import install_hermes_builtin
from lib.datamodel.event import Event
from lib.plugins import AbstractMessageBusConsumerPlugin

from hermes_consumer_plugin import FilelogConsumerPlugin

Cache = dict[str, Any]


def load_cache(path: str) -> Cache:
    try:
        return hermes_cache.load(Path(path))
    except FileNotFoundError:
        return hermes_cache.new_content()


def save_cache(path: str, cache: Cache) -> None:
    hermes_cache.save(Path(path), cache)


def is_initialized(cache: Cache) -> bool:
    offsets = (cache["initstartoffset"], cache["initstopoffset"], cache["nextoffset"])
    return None not in offsets and cache["nextoffset"] >= cache["initstopoffset"]


def find_initsync(bus: AbstractMessageBusConsumerPlugin, cache: Cache) -> bool:
    """Look for the first complete initsync sequence on the whole bus; remember where it is."""
    bus.seekToBeginning()
    start = None
    for event in bus:
        if event.evcategory != "initsync":
            continue
        if event.eventtype == "init-start":
            start = event.offset
        elif event.eventtype == "init-stop" and start is not None:
            if cache["nextoffset"] is None or cache["nextoffset"] < start:
                cache["nextoffset"] = start
            cache["initstartoffset"], cache["initstopoffset"] = start, event.offset
            return True
    return False


def process_events(
    bus: AbstractMessageBusConsumerPlugin, cache: Cache, initsync: bool, handle: Callable[[Event], bool]
) -> bool:
    """Handle the events of one category from `nextoffset`; True when `handle` asks to stop."""
    category = "initsync" if initsync else "base"
    bus.seek(cache["nextoffset"])
    for event in bus:
        if initsync and event.offset > cache["initstopoffset"]:
            break
        cache["nextoffset"] = event.offset + 1
        if event.evcategory != category:
            continue
        if handle(event):
            return True
        if initsync and event.eventtype == "init-stop":
            break
    return False


def report(event: Event) -> None:
    line = {
        "offset": event.offset,
        "offset_type": type(event.offset).__name__,
        "evcategory": event.evcategory,
        "eventtype": event.eventtype,
        "objpkey": event.objpkey,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "timestamp_is_naive": event.timestamp is not None and event.timestamp.tzinfo is None,
    }
    print(json.dumps(line), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bus")
    parser.add_argument("cache")
    parser.add_argument("--timeout-ms", type=int, default=100)
    parser.add_argument("--stop-after", type=int, help="stop cleanly after handling this many events")
    parser.add_argument("--stop-at", help="stop cleanly after handling the event of this objpkey")
    parser.add_argument("--max-loops", type=int, default=300)
    parser.add_argument("--kafka", help="read Hermes's Kafka bus on these brokers instead of BUS")
    parser.add_argument("--topic", help="with --kafka: the topic")
    args = parser.parse_args()
    install_hermes_builtin("hermes-client-standin")

    handled = 0

    def handle(event: Event) -> bool:
        nonlocal handled
        report(event)
        handled += 1
        return handled == args.stop_after or (args.stop_at is not None and event.objpkey == args.stop_at)

    cache = load_cache(args.cache)
    if args.kafka:
        from kafka_consumer import KafkaConsumerStandin

        bus = KafkaConsumerStandin(
            {"servers": args.kafka.split(","), "topic": args.topic, "group_id": "standin"}
        )
    else:
        bus = FilelogConsumerPlugin({"path": args.bus})
    bus.setTimeout(args.timeout_ms)
    for _loop in range(args.max_loops):
        with bus:
            if is_initialized(cache):
                stop = process_events(bus, cache, initsync=False, handle=handle)
            elif find_initsync(bus, cache):
                stop = process_events(bus, cache, initsync=True, handle=handle)
            else:
                stop = False
        save_cache(args.cache, cache)
        if stop:
            return 0
    print(f"no stop condition met after {args.max_loops} loops", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())

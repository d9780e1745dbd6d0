"""A hermes-server stand-in: emits an initsync sequence, then base events, through the producer plugin.

Like hermes-server it wraps each update loop in `with bus:` and treats a failed open or a
`FailedToSendEventError` as fatal for the loop (here: exit status 1, error on stderr).

    python fake_server.py BUS --initsync N --base M --loops K [--hold-file F]

Object keys: initsync objects are `init-0` ..., base events `base-0` ... in order.
With --hold-file, the first loop creates F once the bus is open and waits until F is removed
(so a test can run a second server while this one holds the bus).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hermes_runtime import install_hermes_builtin
from lib.datamodel.event import Event
from lib.plugins import FailedToSendEventError

from hermes_plugin import FilelogProducerPlugin


def update_loops(initsync: int, base: int, loops: int) -> list[list[Event]]:
    """The events of each update loop: the initsync sequence first, then base events spread evenly."""
    first = [Event("initsync", "init-start", objattrs={"schema": "stand-in"})]
    first += [Event("initsync", "added", "user", f"init-{i}", {"uid": i}) for i in range(initsync)]
    first.append(Event("initsync", "init-stop"))
    base_events = [Event("base", "added", "user", f"base-{i}", {"uid": i}) for i in range(base)]
    per_loop = -(-base // loops) if loops else 0
    batches = [base_events[i : i + per_loop] for i in range(0, base, per_loop)] if per_loop else []
    return [first, *batches]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bus")
    parser.add_argument("--initsync", type=int, default=3)
    parser.add_argument("--base", type=int, default=10)
    parser.add_argument("--loops", type=int, default=2)
    parser.add_argument("--hold-file")
    parser.add_argument("--settings", default="{}", help="extra plugin settings as JSON")
    args = parser.parse_args()
    install_hermes_builtin("hermes-server")
    bus = FilelogProducerPlugin({"path": args.bus, **json.loads(args.settings)})
    try:
        for loop_number, events in enumerate(update_loops(args.initsync, args.base, args.loops)):
            with bus:
                if args.hold_file and loop_number == 0:
                    hold = Path(args.hold_file)
                    hold.touch()
                    while hold.exists():
                        time.sleep(0.01)
                for event in events:
                    bus.send(event)
            print(f"loop {loop_number}: sent {len(events)}", flush=True)
    except FailedToSendEventError as exc:
        print(f"FailedToSendEventError: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # hermes-server logs the failure of an update loop's open()
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Initsync sequences made durable once, at their init-stop (the producer's `initsync_durable_once`).

Real processes: a hermes-server stand-in loop sends base events, then an initsync sequence, and is
killed with SIGKILL in the middle of it; readers in this process watch what clients could see.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from helpers.bus import read_all
from helpers.processes import STANDIN_DIR, spawn_python

from filelog_bus import LogReader, LogWriter
from filelog_bus.check import verify_bus

#: Sends 30 base events, then init-start and `added` events until killed (or, with a count, then
#: init-stop and 5 more base events). Prints what each send() returned for.
#: argv: path initsync_durable_once(0/1) count(-1 for forever)
SERVER = """
import sys
from hermes_runtime import install_hermes_builtin
from lib.datamodel.event import Event
from hermes_plugin import FilelogProducerPlugin

path, once, count = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
install_hermes_builtin("hermes-server")
bus = FilelogProducerPlugin({"path": path, "initsync_durable_once": once})
with bus:
    for i in range(30):
        bus.send(Event("base", "added", "user", f"base-{i}", {"n": i}))
        print("sent base", i, flush=True)
    bus.send(Event("initsync", "init-start", objattrs={"schema": "stand-in"}))
    print("sent init-start", flush=True)
    i = 0
    while count < 0 or i < count:
        bus.send(Event("initsync", "added", "user", f"init-{i}", {"n": i, "pad": "p" * 300}))
        print("sent added", i, flush=True)
        i += 1
    bus.send(Event("initsync", "init-stop"))
    print("sent init-stop", flush=True)
    for i in range(30, 35):
        bus.send(Event("base", "added", "user", f"base-{i}", {"n": i}))
        print("sent base", i, flush=True)
print("closed", flush=True)
"""


def decoded_payloads(bus: Path) -> list[dict]:
    return [json.loads(record.payload) for record in read_all(bus)]


def test_sigkill_in_the_middle_of_an_initsync_sequence(tmp_path: Path) -> None:
    """Every base event whose send() returned is there once and in order; no client ever saw part of
    the sequence; what survives of it is a prefix; nothing that was not sent appears."""
    bus = tmp_path / "bus"
    server = spawn_python(SERVER, str(bus), "1", "-1", extra_path=[STANDIN_DIR], stdin=subprocess.DEVNULL)
    assert server.stdout is not None
    sent_base = added = 0
    with LogReader(bus, missing_ok=True) as reader:
        for line in server.stdout:
            if line.startswith("sent base"):
                sent_base += 1
            elif line.startswith("sent added"):
                added += 1
                if added % 200 == 0:  # a client looking now sees no initsync event at all
                    assert {r.category for r in reader} <= {"base"}
                if added == 2000:
                    break
    server.send_signal(signal.SIGKILL)
    server.wait()
    assert sent_base == 30
    with LogReader(bus) as reader:
        assert [r.category for r in reader] == ["base"] * 30, "clients saw part of an unfinished sequence"
    LogWriter(bus).open().close()  # what hermes-server's next open does
    events = decoded_payloads(bus)
    assert [e["objpkey"] for e in events[:30]] == [f"base-{i}" for i in range(30)]
    rest = events[30:]
    if rest:
        assert rest[0]["eventtype"] == "init-start"
        assert [e["objpkey"] for e in rest[1:]] == [f"init-{i}" for i in range(len(rest) - 1)]
    assert verify_bus(str(bus)).healthy


@pytest.mark.parametrize("once", [True, False])
def test_a_complete_sequence_is_on_the_bus_in_order_either_way(tmp_path: Path, once: bool) -> None:
    bus = tmp_path / "bus"
    server = spawn_python(
        SERVER, str(bus), "1" if once else "0", "500", extra_path=[STANDIN_DIR], stdin=subprocess.DEVNULL
    )
    out, err = server.communicate(timeout=120)
    assert server.returncode == 0, err
    assert out.splitlines()[-1] == "closed"
    events = decoded_payloads(bus)
    assert [(e["evcategory"], e["eventtype"]) for e in events] == (
        [("base", "added")] * 30
        + [("initsync", "init-start")]
        + [("initsync", "added")] * 500
        + [("initsync", "init-stop")]
        + [("base", "added")] * 5
    )
    assert verify_bus(str(bus)).healthy

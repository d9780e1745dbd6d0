"""Time going backwards (a clock stepped back, or one that was ahead): reported, and retention by age
follows the bus's own order (docs/RELIABILITY.md, "Time going backwards").

* ``stats`` and ``verify`` note every record stamped earlier than the record before it: where
  (segment, offset, the record before) and by how much; the first few one by one, then how many
  more and the largest.
* Retention by age deletes a segment only when every record in it and before it is stamped before
  the cutoff: records written after a clock stepped back are kept as long as a later-stamped
  record precedes them, even when the step is inside a segment.
* Retention by age that stops at a segment stamped in the future says so (the writer's
  ``retention_note``, the dry run's plan, the command's output, the Hermes producer's log).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.bus import DAY, SMALL_DENSE
from helpers.clients import write_cache
from helpers.processes import REPO, STANDIN_DIR, run_python

from filelog_bus import LogReader, LogWriter, check, retention
from filelog_bus.layout import segment_name


def write(bus: Path, stamps: list[float]) -> list[int]:
    """One record of 100 bytes or so per stamp (about nine per segment); their offsets."""
    with LogWriter(bus, **SMALL_DENSE) as writer:
        return [writer.append("users", f"record {i}".encode() * 10, stamp) for i, stamp in enumerate(stamps)]


def segments_of(bus: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in bus.glob("*.log"))


def segment_of(bus: Path, offset: int) -> str:
    return segment_name(max(base for base in segments_of(bus) if base <= offset))


def cli(*args: str) -> tuple[int, str, str]:
    result = run_python(
        "import sys; from filelog_bus.cli.main import main; sys.exit(main(sys.argv[1:]))", *args
    )
    return result.returncode, result.stdout, result.stderr


# -- stats and verify ----------------------------------------------------------------------------------


# Went wrong: a clock stepped back left stats showing the oldest record after the newest, without a word; verify said nothing either.
def test_stats_and_verify_note_each_record_stamped_earlier_than_the_one_before_it(bus_dir: Path) -> None:
    """stats and verify each note a record stamped earlier than the one before it (a clock stepped
    back)."""
    stamps = [1_000_000.0 + i for i in range(40)]
    stamps[12:] = [s - 3600.0 for s in stamps[12:]]  # stepped back an hour, inside a segment
    stamps[30:] = [s - 1.25 for s in stamps[30:]]  # and a quarter of a second
    offsets = write(bus_dir, stamps)

    stats = check.bus_stats(str(bus_dir))
    report = check.verify_bus(str(bus_dir))

    expected = [
        check.StepBack(segment_of(bus_dir, offsets[12]), offsets[12], offsets[11], 3599.0),
        check.StepBack(segment_of(bus_dir, offsets[30]), offsets[30], offsets[29], 0.25),
    ]
    assert stats.steps_back == check.StepsBack(2, tuple(expected), expected[0])
    assert report.steps_back == stats.steps_back
    assert report.healthy  # nothing is lost: a note, not a problem
    notes = [note for note in report.notes if note.startswith("time went backwards")]
    assert len(notes) == 2
    assert f"offset {offsets[12]} ({expected[0].segment})" in notes[0] and "3599.000000 s earlier" in notes[0]
    assert f"(offset {offsets[11]})" in notes[0] and "docs/RELIABILITY.md" in notes[0]

    status, out, _ = cli("stats", str(bus_dir))
    assert status == 0 and out.count("note: time went backwards") == 2, out
    status, out, _ = cli("stats", str(bus_dir), "--json")
    data = json.loads(out)
    assert data["steps_back"]["count"] == 2 and data["steps_back"]["listed"][1]["offset"] == offsets[30]
    status, out, _ = cli("verify", str(bus_dir))
    assert status == 0 and out.count("note: time went backwards") == 2 and "result: healthy" in out, out


def test_many_steps_back_are_counted_and_the_largest_named(bus_dir: Path) -> None:
    stamps = [1_000_000.0 + (i % 2) * 10 + (7 if i == 25 else 0) for i in range(40)]  # down every other
    offsets = write(bus_dir, stamps)

    found = check.bus_stats(str(bus_dir)).steps_back

    assert found.count == 19 and len(found.listed) == check.LISTED_STEPS_BACK
    assert found.largest is not None and (found.largest.offset, found.largest.seconds) == (offsets[26], 17.0)
    assert found.notes()[-1].startswith(f"time went backwards {19 - check.LISTED_STEPS_BACK} more times")
    assert f"offset {offsets[26]}" in found.notes()[-1] and "17.000000 s earlier" in found.notes()[-1]


def test_stamps_that_never_go_back_give_no_note(bus_dir: Path) -> None:
    write(bus_dir, [1_000_000.0 + i // 3 for i in range(30)])  # equal stamps are not a step back
    assert check.bus_stats(str(bus_dir)).steps_back == check.StepsBack()
    assert not [n for n in check.verify_bus(str(bus_dir)).notes if "backwards" in n]


# -- retention by age -----------------------------------------------------------------------------------


# Went wrong: a segment whose last record was stamped by a clock stepped back was deleted by --days, with every segment after it.
def test_retention_by_age_keeps_records_written_after_the_clock_stepped_back(bus_dir: Path) -> None:
    """Retention by age deletes a segment only when all its records, and all before it, are older
    than the cutoff, so records written after the clock stepped back stay."""
    now = time.time()
    with LogWriter(bus_dir, **SMALL_DENSE) as writer:
        while len(segments_of(bus_dir)) < 3:  # truly old records, until one starts a third segment
            writer.append("users", b"old" * 30, now - 60 * DAY)
        step_segment = segments_of(bus_dir)[-1]
        recent = [writer.append("users", b"recent" * 15, now - 10.0 + i) for i in range(2)]
        stepped = [writer.append("users", b"stepped" * 13, now - 40 * DAY + i) for i in range(30)]
    assert segment_of(bus_dir, stepped[0]) == segment_name(step_segment), "the step is inside a segment"
    assert segments_of(bus_dir)[-1] > step_segment, "which is closed, its last record stamped 40 days ago"

    plan = retention.plan_retention_now(str(bus_dir), max_age_days=30, max_bytes=None)
    with LogWriter(bus_dir, **SMALL_DENSE) as writer:
        deleted = writer.apply_retention(max_age_days=30)
        assert writer.retention_note is None

    assert deleted == plan.segments and deleted  # the truly old segments before it go
    assert segments_of(bus_dir)[0] == step_segment
    with LogReader(bus_dir) as reader:
        assert [r.offset for r in reader if r.offset >= recent[0]] == recent + stepped


# Went wrong: retention by age stopped at a segment stamped in the future and said nothing.
def test_retention_by_age_that_stops_at_a_segment_stamped_in_the_future_says_so(bus_dir: Path) -> None:
    """Retention by age that stops at a segment stamped in the future (a clock that was ahead) says
    so, rather than keeping every older-looking segment after it silently."""
    now = time.time()
    stamps = [now - 60 * DAY + i for i in range(20)]  # old: deleted
    stamps += [now + 5 * DAY + i for i in range(10)]  # a clock five days ahead ...
    stamps += [now - 50 * DAY + i for i in range(30)]  # ... corrected (these look old)
    offsets = write(bus_dir, stamps)
    future = segment_of(bus_dir, offsets[20])

    plan = retention.plan_retention_now(str(bus_dir), max_age_days=30, max_bytes=None, now=now)
    status, dry_run, _ = cli("retention", str(bus_dir), "--days", "30", "--dry-run")
    with LogWriter(bus_dir, **SMALL_DENSE) as writer:
        deleted = writer.apply_retention(max_age_days=30, now=now)
        note = writer.retention_note
        writer.apply_retention(max_bytes=10**9)
        assert writer.retention_note is None  # the note is the last pass's

    assert deleted == plan.segments and deleted
    assert note is not None and note == plan.note
    assert note.startswith(f"retention by age stopped at {future}:") and "in the future" in note
    assert "kept by age until" in note and "size budget still applies" in note
    assert status == 0 and f"note: retention by age stopped at {future}:" in dry_run
    status, out, _ = cli("retention", str(bus_dir), "--days", "30")
    assert status == 0 and "nothing to delete" in out and f"note: retention by age stopped at {future}" in out
    cache = write_cache(bus_dir.parent / "caches", "caught-up", compressed=False, nextoffset=offsets[-1] + 1)
    for dry_run in (["--dry-run"], []):  # sparing a client's unread events: the same note
        status, out, _ = cli("retention", str(bus_dir), "--days", "30", "--clients", str(cache), *dry_run)
        assert status == 0 and f"note: retention by age stopped at {future}" in out, out


@pytest.mark.parametrize("sparing", [False, True], ids=["plain", "retention_clients"])
def test_the_hermes_producer_logs_where_retention_by_age_stopped(bus_dir: Path, sparing: bool) -> None:
    now = time.time()
    offsets = write(bus_dir, [now + 5 * DAY + i for i in range(10)] + [now + i for i in range(10)])
    settings: dict[str, object] = {"path": str(bus_dir), "retention_in_days": 1, "segment_bytes": 1024}
    if sparing:
        cache = write_cache(bus_dir.parent / "caches", "client", compressed=False, nextoffset=offsets[-1] + 1)
        settings["retention_clients"] = [str(cache)]
    script = """
        import json, logging, sys
        sys.path[:0] = sys.argv[2:4]
        import hermes_runtime
        from hermes_plugin import FilelogProducerPlugin
        logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(message)s")
        hermes_runtime.install_hermes_builtin("test", logging.getLogger("test"))
        with FilelogProducerPlugin(json.loads(sys.argv[1])):
            pass
    """
    result = run_python(script, json.dumps(settings), str(REPO), str(STANDIN_DIR))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING filelog bus")]
    assert len(warnings) == 1 and "retention by age stopped at" in warnings[0], result.stdout

"""Crash suite: SIGKILLed writers, torn tails and truncated tails, then recovery.

Each trial runs a real writer process (WRITER_CHILD) that prints every offset
``append`` returned, then one of:

* ``kill``: SIGKILL at a random moment (during start-up and recovery, between
  appends, inside an append, during a segment roll);
* ``torn``: the writer is killed or exits, then random partial bytes are
  appended to the newest segment (garbage, a prefix of a real record, a prefix
  padded with zeros, or a half-created next segment);
* ``truncate``: the writer is killed, then the newest segment loses its
  unacknowledged tail from a random point (beyond every acknowledged record and
  beyond the published watermark: what a power cut can take away): the file is
  cut there, or (a preallocated segment keeps its size) zeros replace the tail.

The newest segment is preallocated (format version 2): its file goes on past its
data with zeros, so torn bytes are written where the data ends (where a torn
append lands), not at the end of the file.

Before recovery a reader must already show exactly the acknowledged records (plus
at most the in-flight one); after a writer reopens the bus (and closes it), the
bus must hold every record acknowledged so far exactly once, in order, with its
payload, and nothing else except possibly the single record in flight at the kill.

Trials use small segments (rolls every few records), index intervals from 64 bytes
to 4 KiB, and durability "always" or "never". At least 100 trials per run;
FILELOG_LONG=1 runs ten times more. FILELOG_SEED replays a run's random choices (the exact
kill moments still depend on timing).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from helpers.bus import (
    LONG,
    Expected,
    LineReader,
    assert_contiguous,
    assert_lookups_agree,
    category_for,
    kill_and_collect,
    parse_acks,
    payload_for,
    published_view,
    read_all,
    segment_base,
    segment_paths,
    start_writer,
    suite_seed,
    timestamp_for,
    write_at,
    written_end,
)

from filelog_bus import LogWriter, Record
from filelog_bus.layout import FILE_HEADER_SIZE, SEGMENT_MAGIC, encode_file_header, segment_name
from filelog_bus.record import encode_record

BATCHES = 3
TRIALS_PER_BATCH = 400 if LONG else 45
KINDS = ("kill", "torn", "truncate")


class TrialResult:
    """What a trial's writer process acknowledged, and the context to print on failure."""

    def __init__(self, tag: str, description: str) -> None:
        self.tag = tag
        self.description = description
        self.acks: list[tuple[int, int]] = []

    @property
    def in_flight(self) -> int:
        """The seq of the only record that may be on the bus without an ack."""
        return self.acks[-1][0] + 1 if self.acks else 0


def run_writer(bus: Path, rng: random.Random, trial: TrialResult, kill: bool) -> None:
    """Run one writer process to its end or to a SIGKILL at a random moment; record its acks."""
    durability = "never" if rng.random() < 0.3 else "always"
    segment_bytes = rng.choice((1024, 1500, 4096))
    interval = rng.choice((64, 200, 4096))
    count = -1 if kill else rng.randrange(1, 25)
    trial.description += (
        f" writer(durability={durability}, segment_bytes={segment_bytes}, interval={interval})"
    )
    process = start_writer(
        bus, trial.tag, durability=durability, segment_bytes=segment_bytes, interval=interval, count=count
    )
    lines = LineReader(process)
    if not kill:
        out = lines.rest()
        err = process.stderr.read().decode() if process.stderr else ""
        assert process.wait(timeout=60) == 0, f"{trial.description}: writer failed:\n{err}"
        trial.acks = parse_acks(out)
        return
    seen = ""
    if rng.random() < 0.15:
        time.sleep(rng.uniform(0, 0.12))  # somewhere in start-up: imports, lock, recovery, first appends
        moment = "during start-up"
    else:
        wanted = rng.randrange(0, 40)
        acks = 0
        while acks < wanted:
            line = lines.readline()
            if not line:
                break
            seen += line
            acks += line.startswith("ack")
        time.sleep(rng.uniform(0, 0.002))
        moment = f"after ~{acks} acks"
    out, err = kill_and_collect(process, lines)
    trial.description += f" killed {moment}"
    assert process.returncode == -signal.SIGKILL, f"{trial.description}: writer died by itself:\n{err}"
    trial.acks = parse_acks(seen + out)


def torn_bytes(rng: random.Random, tag: str) -> tuple[str, bytes]:
    """Bytes a torn write could leave at the end of a segment."""
    record = encode_record(category_for(tag, 999), timestamp_for(999), payload_for(tag, 999))
    kind = rng.choice(("garbage", "record-prefix", "prefix-then-zeros"))
    if kind == "garbage":
        return kind, rng.randbytes(rng.randrange(1, 300))
    prefix = record[: rng.randrange(1, len(record))]
    if kind == "prefix-then-zeros":
        prefix = (prefix + bytes(rng.randrange(1, 4096)))[: len(record) - 1]
    return kind, prefix


def damage_tail(
    bus: Path, rng: random.Random, trial: TrialResult, kind: str, clean_exit: bool, lower: int
) -> None:
    """Tear or cut the newest segment beyond offset ``lower`` (what nobody may rely on yet)."""
    segments = segment_paths(bus) if bus.is_dir() else []
    if not segments or segments[-1].stat().st_size < FILE_HEADER_SIZE:
        trial.description += " (no complete segment header to damage)"
        return
    newest = segments[-1]
    base = segment_base(newest)
    # Where the data ends (the file goes on with a preallocated tail of zeros): after a clean exit, the
    # watermark (``lower``); after a kill, maybe past it, by the record in flight.
    data_end = written_end(newest, lower)
    if kind == "torn" and clean_exit and data_end > base and rng.random() < 0.25:
        # A roll torn by a crash: the segment was cut to its data (the roll does that first, durably),
        # and the next segment exists with part of its header (as an older version, creating it in
        # place, could leave it).
        os.truncate(newest, data_end - base + FILE_HEADER_SIZE)
        size = rng.randrange(0, FILE_HEADER_SIZE)
        (bus / segment_name(data_end)).write_bytes(encode_file_header(SEGMENT_MAGIC, data_end)[:size])
        trial.description += f" torn roll: new segment with {size} header bytes"
        return
    if kind == "torn" or data_end <= lower:
        what, data = torn_bytes(rng, trial.tag)
        write_at(newest, data_end - base + FILE_HEADER_SIZE, data)  # where the next append lands
        trial.description += f" torn tail at offset {data_end}: {len(data)} bytes of {what}"
        data_end += len(data)
    if kind == "truncate":
        assert lower >= base, f"{trial.description}: unacknowledged tail starts before the newest segment"
        cut = rng.randrange(lower, data_end)
        if rng.random() < 0.5:
            os.truncate(newest, cut - base + FILE_HEADER_SIZE)
            trial.description += f" cut at offset {cut} (tail {lower}..{data_end})"
        else:
            write_at(newest, cut - base + FILE_HEADER_SIZE, bytes(data_end - cut))
            trial.description += f" zeroed from offset {cut} (tail {lower}..{data_end})"


def assert_trial_records(records: list[Record], before: list[Record], trial: TrialResult, when: str) -> None:
    """``records`` = ``before`` + this trial's acknowledged records + at most the in-flight record."""
    context = f"{trial.description} ({when})"
    assert records[: len(before)] == before, f"{context}: records acknowledged by earlier trials changed"
    new = records[len(before) :]
    acked = new[: len(trial.acks)]
    assert [r.offset for r in acked] == [offset for _, offset in trial.acks], (
        f"{context}: acknowledged offsets {trial.acks} but the bus holds {[r.offset for r in new]}"
    )
    for record, (seq, _) in zip(acked, trial.acks, strict=True):
        assert Expected(trial.tag, seq).matches(record), f"{context}: wrong record for seq {seq}: {record}"
    extra = new[len(trial.acks) :]
    assert len(extra) <= 1, f"{context}: records nobody appended: {extra}"
    if extra:
        assert Expected(trial.tag, trial.in_flight).matches(extra[0]), (
            f"{context}: an unacknowledged record that is not the in-flight one: {extra[0]}"
        )
    assert_contiguous(records)


def run_trial(bus: Path, rng: random.Random, tag: str, number: int, before: list[Record]) -> list[Record]:
    """One trial; returns the bus's records after it (the expectation for the next trial)."""
    kind = KINDS[number % len(KINDS)]
    trial = TrialResult(tag, f"trial {number} ({kind})")
    clean_exit = kind == "torn" and rng.random() < 0.5
    run_writer(bus, rng, trial, kill=not clean_exit)

    shown, watermark = published_view(bus)
    assert_trial_records(shown, before, trial, "read before recovery")
    acked_end = (
        shown[len(before) + len(trial.acks) - 1].next_offset
        if trial.acks
        else (before[-1].next_offset if before else 0)
    )
    if kind != "kill":
        damage_tail(bus, rng, trial, kind, clean_exit, max(acked_end, watermark))
        assert_trial_records(read_all(bus), before, trial, "read after damaging the tail, before recovery")

    durability = rng.choice(("always", "never"))
    with LogWriter(bus, durability=durability, index_interval_bytes=rng.choice((64, 4096)), lock_timeout=0):
        pass  # recovery only; lock_timeout=0: the killed writer must not have left the bus locked
    records = read_all(bus, missing_ok=False)
    assert_trial_records(records, before, trial, f"after recovery by a writer with durability={durability}")
    return records


@pytest.mark.parametrize("batch", range(BATCHES))
def test_acknowledged_records_survive_kills_torn_tails_and_truncations(bus_dir: Path, batch: int) -> None:
    """>= 100 trials per run (3 batches): every ack survives exactly once, in order; nothing else appears."""
    seed = suite_seed(f"crash suite batch {batch}")
    rng = random.Random(f"{seed}/{batch}")
    records: list[Record] = []
    for number in range(TRIALS_PER_BATCH):
        records = run_trial(bus_dir, rng, f"b{batch}t{number}", number, records)
        if number % 12 == 11:
            assert_lookups_agree(bus_dir, records, rng)  # indexes recovered correctly: seek/find_next agree
    assert len(records) > TRIALS_PER_BATCH, (
        "the trials acknowledged almost nothing: the suite is not testing much"
    )


# Went wrong: a crash inside retention leaked the deleted segment's index files.
def test_retention_cut_short_by_a_crash_leaves_no_orphan_index_files(bus_dir: Path) -> None:
    """Retention deletes a segment's .log, then its indexes: a crash in between must not leak them forever.

    Nothing deleted such orphaned indexes before 8a54937; the next writer's open now does.
    """
    with LogWriter(bus_dir, segment_bytes=1024) as writer:
        for i in range(60):
            writer.append("users", b"p" * 30, float(i))
    records = read_all(bus_dir)
    oldest = segment_paths(bus_dir)[0]
    oldest.unlink()  # what a SIGKILL inside retention's delete_segments leaves behind
    with LogWriter(bus_dir, segment_bytes=1024) as writer:
        writer.apply_retention(max_bytes=1500)
        begin = writer.begin_offset
    assert read_all(bus_dir) == [r for r in records if r.offset >= begin]
    names = os.listdir(bus_dir)
    logs = {name.removesuffix(".log") for name in names if name.endswith(".log")}
    orphans = sorted(n for n in names if n.endswith((".index", ".catindex")) and n.split(".")[0] not in logs)
    assert not orphans, f"index files of deleted segments are left behind: {orphans}"

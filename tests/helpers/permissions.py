"""Running code as user `nobody`, and a directory that user may reach: the permission tests' helpers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534  # uid and gid of user and group nobody


@contextmanager
def shared_directory(prefix: str, *, skip_unless_others_reach_it: bool) -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is private to root), removed after.

    With ``skip_unless_others_reach_it``, the test is skipped where a directory above it is closed to
    other users: a test that only reads as another user when it runs as root asks for no skip, so it
    still runs in-process as any user.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        path.chmod(0o755)
        if skip_unless_others_reach_it:
            for ancestor in path.parents:
                if not ancestor.stat().st_mode & stat.S_IXOTH:
                    pytest.skip(
                        f"{ancestor} is not traversable by other users, so nobody could reach a bus there"
                    )
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _in_a_child_as_nobody(work: Callable[[], Any]) -> dict[str, Any]:
    """``{"result": ...}`` of ``work`` (JSON-able) run in a forked child that dropped to user nobody
    (no supplementary groups either), or ``{"error": "TypeName: message"}``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = json.dumps({"result": work()})
        except BaseException as exc:
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            status = 1
        try:
            with os.fdopen(write_end, "w") as pipe:
                pipe.write(payload)
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(output)


def as_nobody(work: Callable[[], Any]) -> Any:
    """Run ``work`` as user nobody in a forked child; return its JSON-able result (skips unless root)."""
    if os.geteuid() != 0:
        pytest.skip("dropping privileges to user nobody needs root")
    answer = _in_a_child_as_nobody(work)
    assert "error" not in answer, f"as nobody: {answer['error']}"
    return answer["result"]


def outcome_as_unprivileged_user(action: Callable[[], object]) -> str:
    """`TypeName: message` of what `action` raised (or "ok"), run without root's power to read anything.

    As root, as user nobody in a forked child; otherwise in this process.
    """

    def outcome() -> str:
        try:
            action()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "ok"

    if os.geteuid() != 0:
        return outcome()
    return as_nobody(outcome)

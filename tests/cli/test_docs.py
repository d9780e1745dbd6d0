"""The shell sessions in the docs are what the commands print now (docs/transcripts.py writes them)."""

from __future__ import annotations

import subprocess
import sys

from helpers.processes import REPO


def test_every_transcript_in_the_docs_is_what_the_code_prints_now() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "docs" / "transcripts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, (
        "a doc's session differs from what the commands print now; run `python docs/transcripts.py` "
        f"and review the diff:\n{result.stdout}{result.stderr}"
    )

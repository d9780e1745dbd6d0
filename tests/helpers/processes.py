"""Helpers for tests that run real processes against real bus directories."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: Bound on a child process the test waits for: only reached when something hangs.
PROCESS_TIMEOUT = 60
#: The checkout, the tests' root (on sys.path, so children can import ``helpers``) and Hermes's stand-ins.
TESTS_DIR = Path(__file__).resolve().parent.parent
REPO = TESTS_DIR.parent
STANDIN_DIR = TESTS_DIR / "helpers" / "hermes_standin"


def python_env(extra_path: list[Path] | None = None) -> dict[str, str]:
    """Environment for a child Python that imports this checkout (plus ``extra_path``)."""
    env = dict(os.environ)
    paths = [str(p) for p in (extra_path or [])] + [str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def spawn_python(
    code: str, *args: str, extra_path: list[Path] | None = None, **popen: object
) -> subprocess.Popen:
    """Start ``code`` (dedented) in a new Python process with ``args`` as sys.argv[1:]."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    popen.setdefault("text", True)
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", textwrap.dedent(code), *args], env=python_env(extra_path), **popen
    )


def run_python(
    code: str, *args: str, timeout: float = 120, extra_path: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` to completion in a new Python process; return its result (not checked)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=python_env(extra_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python_out_of_descriptors(imports: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``imports``, then use up every file descriptor (a limit of 64, all held), then ``code``:
    what a real EMFILE does to the code under test. Returns the result (not checked)."""
    use_them_up = """
        import os as _os, resource as _resource
        _soft, _hard = _resource.getrlimit(_resource.RLIMIT_NOFILE)
        _resource.setrlimit(_resource.RLIMIT_NOFILE, (64, _hard))
        _held = []
        try:
            while True:
                _held.append(_os.open(_os.devnull, _os.O_RDONLY))
        except OSError:
            pass
        """
    return run_python("\n".join(textwrap.dedent(part) for part in (imports, use_them_up, code)), *args)

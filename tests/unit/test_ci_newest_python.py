"""CI's search for the newest CPython: pyenv's releases and python3.N, each one run to be sure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.docs_support import ROOT

SCRIPT = ROOT / ".ci" / "newest_python.py"


def _interpreter(path: Path, answer: str) -> Path:
    # A stand-in that answers the probe like an interpreter of that kind and version.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {answer}\n")
    path.chmod(0o755)
    return path


def _newest(pyenv_root: Path, path: Path) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pyenv_root)],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": str(path)},
    ).stdout.strip()


def test_picks_the_newest_working_cpython(tmp_path: Path) -> None:
    """Free-threaded builds, PyPy and interpreters that fail are passed over."""
    versions = tmp_path / "pyenv" / "versions"
    newest = _interpreter(versions / "3.98.2" / "bin" / "python3", "cpython 3 98 2")
    _interpreter(versions / "3.99.0t" / "bin" / "python3", "cpython 3 99 0")
    _interpreter(versions / "3.99.1" / "bin" / "python3", "pypy 3 99 1")
    broken = _interpreter(versions / "3.99.2" / "bin" / "python3", "cpython 3 99 2")
    broken.write_text("#!/bin/sh\nexit 127\n")
    minor = sys.version_info[1] + 1
    path = _interpreter(tmp_path / "bin" / f"python3.{minor}", f"cpython 3 {minor} 0").parent
    assert _newest(tmp_path / "pyenv", path) == f"{newest} 3.98"


def test_finds_python3_n_on_the_path(tmp_path: Path) -> None:
    """Without pyenv, python3.N on PATH newer than the running Python is found."""
    minor = sys.version_info[1] + 1
    found = _interpreter(tmp_path / "bin" / f"python3.{minor}", f"cpython 3 {minor} 4")
    assert _newest(tmp_path / "no-pyenv", found.parent) == f"{found} 3.{minor}"


def test_says_nothing_when_none_is_newer(tmp_path: Path) -> None:
    """Only the running version, or older ones: no second run."""
    major, minor = sys.version_info[:2]
    versions = tmp_path / "pyenv" / "versions"
    _interpreter(versions / f"{major}.{minor}.0" / "bin" / "python3", f"cpython {major} {minor} 0")
    _interpreter(versions / "3.6.15" / "bin" / "python3", "cpython 3 6 15")
    assert _newest(tmp_path / "pyenv", tmp_path / "empty") == ""
    assert _newest(tmp_path / "missing", tmp_path / "empty") == ""

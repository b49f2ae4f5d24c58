"""Print "<path> <major.minor>" of the newest CPython newer than the one running this.

Looks at python3.N on PATH and at pyenv's versions (the directory given as the
first argument, pyenv's root). Each candidate is run: a pyenv shim of a
version that is not active fails and is skipped. Prints nothing when no newer
CPython exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

_PROBE = "import sys; print(sys.implementation.name, *sys.version_info[:3])"
# pyenv names CPython releases 3.N.M; free-threaded builds (3.13.0t), PyPy and others differ.
_CPYTHON_RELEASE = re.compile(r"3\.\d+\.\d+")


def candidates(pyenv_root: Path | None) -> list[str]:
    """Interpreters worth asking: python3.N on PATH, newer than this one, and pyenv's."""
    found = [shutil.which(f"python3.{minor}") for minor in range(sys.version_info[1] + 1, 40)]
    paths = [path for path in found if path]
    if pyenv_root is not None and (pyenv_root / "versions").is_dir():
        for directory in sorted((pyenv_root / "versions").iterdir()):
            if _CPYTHON_RELEASE.fullmatch(directory.name):
                paths.append(str(directory / "bin" / "python3"))
    return paths


def version_of(path: str) -> tuple[int, int, int] | None:
    """The CPython version ``path`` runs, or None if it is not a working CPython."""
    try:
        answer = subprocess.run(
            [path, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(answer) != 4 or answer[0] != "cpython":
        return None
    return int(answer[1]), int(answer[2]), int(answer[3])


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None
    newer = []
    for path in candidates(root):
        version = version_of(path)
        if version is not None and version[:2] > sys.version_info[:2]:
            newer.append((version, path))
    if newer:
        (major, minor, _micro), path = max(newer)
        print(path, f"{major}.{minor}")


if __name__ == "__main__":
    main()

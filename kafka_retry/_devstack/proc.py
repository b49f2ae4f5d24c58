"""Background processes tracked by a JSON record in a per-service directory.

Each service owns ``<state_dir>/<name>/``; ``service.json`` there records the
process id and how to reach the service, so a later call (or another process)
can reuse a running service instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

RECORD_FILE = "service.json"

# The services this process started. Holding their Popen objects keeps them
# from being garbage-collected while running (which warns) and lets a stop
# reap them instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


class StartupError(Exception):
    """Raised when a process dies or stays unready during startup."""


@attrs.frozen
class Record:
    """What ``service.json`` remembers about a running service.

    Attributes:
        pid: Process id of the service's main process.
        address: How clients reach it (bootstrap servers or a database URL).
        kind: Which flavour was started (``kafka``, ``tansu``, ``system``, ...).
        marker: Text found in the process's command line; tells our process
            from an unrelated one that got the same id after a reboot.
        extra: Flavour-specific facts, such as whether idempotence works.
    """

    pid: int
    address: str
    kind: str
    marker: str
    extra: Mapping[str, Any] = attrs.field(factory=dict)


def read_record(service_dir: Path) -> Record | None:
    """Return the record in ``service_dir``, or None if absent or unreadable."""
    try:
        raw = json.loads((service_dir / RECORD_FILE).read_text())
        return Record(
            pid=int(raw["pid"]),
            address=str(raw["address"]),
            kind=str(raw["kind"]),
            marker=str(raw["marker"]),
            extra=dict(raw.get("extra", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(service_dir: Path, record: Record) -> None:
    """Write ``record`` atomically so readers never see half a file."""
    tmp = service_dir / f".{RECORD_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(attrs.asdict(record), indent=2) + "\n")
    tmp.replace(service_dir / RECORD_FILE)


def clear_record(service_dir: Path) -> None:
    """Forget the recorded process, if any."""
    (service_dir / RECORD_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def locked(service_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``service_dir`` so concurrent starts do not race."""
    service_dir.mkdir(parents=True, exist_ok=True)
    with (service_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def live_record(service_dir: Path) -> Record | None:
    """Return the record in ``service_dir`` if its process runs; else forget it and return None."""
    record = read_record(service_dir)
    if record is not None and is_alive(record.pid, record.marker):
        return record
    clear_record(service_dir)
    return None


def is_alive(pid: int, marker: str) -> bool:
    """Tell whether ``pid`` runs and, where /proc shows it, mentions ``marker``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists but belongs to another user
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[:1]
    except OSError:
        return True  # no /proc on this platform: trust the id
    return state != [b"Z"] and marker.encode() in cmdline


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` detached from this process, logging to ``log_path``.

    The child gets its own session so a Ctrl-C in the terminal (or the end of
    a pytest run) does not kill a service that other runs may reuse.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=None if user is None else user[0],
            group=None if user is None else user[1],
            extra_groups=None if user is None else [],
        )
    _children[process.pid] = process
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a process that failed to start and wait for it."""
    _children.pop(process.pid, None)
    process.kill()
    process.wait()


def terminate(pid: int, marker: str, *, sig: int = signal.SIGTERM, grace: float = 20.0) -> bool:
    """Stop ``pid`` with ``sig``, then SIGKILL after ``grace`` seconds.

    Returns:
        True if a live process was stopped, False if it was already gone.
    """
    if not is_alive(pid, marker):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not _wait_gone(pid, marker, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, marker, 5.0)
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5.0)
    return True


def _wait_gone(pid: int, marker: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(pid, marker):
        _reap(pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _reap(pid: int) -> None:
    # Our own children would stay zombies (and keep their pid) until waited for.
    child = _children.get(pid)
    if child is not None:
        child.poll()


def wait_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    log_path: Path,
) -> None:
    """Poll ``ready`` until it holds, the process exits, or ``timeout`` passes.

    Raises:
        StartupError: If the process exits first or the time runs out; the
            message names the log file.
    """
    deadline = time.monotonic() + timeout
    delay = 0.02
    while not ready():
        code = process.poll()
        if code is not None:
            raise StartupError(f"{what} exited with code {code} during startup; log: {log_path}")
        if time.monotonic() > deadline:
            raise StartupError(f"{what} was not ready within {timeout:g}s; log: {log_path}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether a server could bind ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """Return ``preferred`` if it is free, else a free port chosen by the kernel."""
    if preferred is not None and port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def pick_ports(preferred: Sequence[int | None], host: str = "127.0.0.1") -> list[int]:
    """Return one distinct free port per entry: the entry itself if free, else the kernel's.

    Every chosen port stays bound until all are chosen, so no two are the same
    (without ``SO_REUSEADDR``, which would let two of them share one).
    """
    held: list[socket.socket] = []
    try:
        for wanted in preferred:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            try:
                sock.bind((host, wanted or 0))
            except OSError:
                sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def tail(path: Path, lines: int = 5) -> str:
    """Return the last ``lines`` lines of a log file, or "" if unreadable."""
    try:
        text = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])

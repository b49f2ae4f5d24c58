"""A cluster of Apache Kafka KRaft nodes on this machine.

Each node is a broker and a controller in one JVM, and every node votes in the
controller quorum, so the cluster keeps serving while a majority runs. Node
``i`` lives in ``<service dir>/node-<i>/`` (its ``server.properties``, its
storage under ``data/`` and its pid record) and logs to a file of its own.
All nodes are formatted with one cluster id and started together: a node
cannot finish starting before a majority of the voters can elect a controller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import attrs

from kafka_retry._devstack import kafka, proc, wire

_PREFIX = "node-"
# Kafka's own port, for node 1; the next nodes take the ports after it.
_FIRST_PORT = 9092

LogOf = Callable[[int], Path]


@attrs.frozen
class _Start:
    """A node to start: its directory, configuration and client port."""

    node_id: int
    directory: Path
    properties: Path
    port: int


def node_dir(service_dir: Path, node_id: int) -> Path:
    """Where node ``node_id`` keeps its configuration, storage and pid record."""
    return service_dir / f"{_PREFIX}{node_id}"


def node_ids(service_dir: Path) -> list[int]:
    """The ids of the nodes that have a directory in ``service_dir``, in order."""
    if not service_dir.is_dir():
        return []
    found = (path.name.removeprefix(_PREFIX) for path in service_dir.glob(f"{_PREFIX}*"))
    return sorted(int(name) for name in found if name.isdigit())


def plan(count: int, first_port: int = _FIRST_PORT) -> list[kafka.Node]:
    """Ports for ``count`` nodes: clients on ``first_port`` and up if free; controllers anywhere."""
    preferred: list[int | None] = [first_port + i for i in range(count)]
    ports = proc.pick_ports([*preferred, *([None] * count)])
    return [kafka.Node(i + 1, ports[i], ports[count + i]) for i in range(count)]


def live_records(service_dir: Path) -> dict[int, proc.Record]:
    """The records of the nodes whose process runs, by node id."""
    live = {}
    for node_id in node_ids(service_dir):
        record = proc.live_record(node_dir(service_dir, node_id))
        if record is not None:
            live[node_id] = record
    return live


def start(
    service_dir: Path,
    count: int,
    *,
    log_of: LogOf,
    maven_log: Path,
    env: Mapping[str, str],
    timeout: float,
    keep_data: bool = False,
) -> list[proc.Record]:
    """Start every node of a ``count``-node cluster that does not run; return all records.

    Nodes that run are kept; a node that does not is started on the storage
    it kept (a node cannot rejoin its cluster with fresh storage). When no
    node runs, the cluster restarts on kept storage with ``keep_data``, else
    on fresh storage with new ports and a new cluster id.

    Raises:
        StartupError: A node has no kept storage to rejoin with, or did not
            start; the message names its log.
    """
    live = live_records(service_dir)
    starts = _kept(service_dir, count, skip=set(live)) if live or keep_data else None
    if starts == []:
        return [live[node_id] for node_id in sorted(live)]  # all run: no jars needed
    version = env.get("KAFKA_RETRY_KAFKA_VERSION", kafka.DEFAULT_VERSION)
    libs = kafka.ensure_libs(version, kafka.cache_root(env), maven_log)
    if starts is None:
        starts = _fresh(service_dir, count, libs, log_of)
    pids, idempotence = _launch(starts, libs, count, log_of, timeout)
    for item in starts:
        record = proc.Record(
            pid=pids[item.node_id],
            address=f"127.0.0.1:{item.port}",
            kind="kafka",
            marker=str(item.properties),
            extra={"idempotence": idempotence, "version": version, "node": item.node_id},
        )
        proc.write_record(item.directory, record)
        live[item.node_id] = record
    return [live[node_id] for node_id in sorted(live)]


def _kept(service_dir: Path, count: int, *, skip: set[int]) -> list[_Start]:
    """The nodes not in ``skip``, to start on the storage and configuration they kept."""
    starts = []
    for node_id in range(1, count + 1):
        if node_id in skip:
            continue
        directory = node_dir(service_dir, node_id)
        kept = kafka.formatted_config(directory)
        if kept is None:
            raise proc.StartupError(
                f"Kafka node {node_id} has no storage to rejoin its cluster with; "
                "stop the cluster and start it afresh"
            )
        starts.append(_Start(node_id, directory, *kept))
    return starts


def _fresh(service_dir: Path, count: int, libs: Path, log_of: LogOf) -> list[_Start]:
    """Wipe every node directory, then configure and format ``count`` new nodes."""
    remove(service_dir)
    nodes = plan(count)
    cluster_id = kafka.new_cluster_id()
    starts = []
    for node in nodes:
        directory = node_dir(service_dir, node.node_id)
        properties = kafka.write_node_config(directory, node, nodes)
        kafka.format_storage(
            directory, libs, properties, log_of(node.node_id), cluster_id=cluster_id
        )
        starts.append(_Start(node.node_id, directory, properties, node.port))
    return starts


def _launch(
    starts: Sequence[_Start], libs: Path, count: int, log_of: LogOf, timeout: float
) -> tuple[dict[int, int], bool]:
    """Spawn the nodes at once and wait until every one serves a full cluster.

    Returns:
        The process id of each node, and whether the cluster hands out
        producer ids. Whatever was spawned is killed if the wait fails.
    """
    processes: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for item in starts:
            command = kafka.java_command(item.directory, libs, "kafka.Kafka", str(item.properties))
            processes[item.node_id] = proc.spawn(
                command, log_path=log_of(item.node_id), cwd=item.directory
            )
        first = starts[0]
        proc.wait_ready(
            processes[first.node_id],
            _serving(starts, processes, list(range(1, count + 1)), log_of),
            what=f"a Kafka cluster of {count} nodes",
            timeout=timeout,
            log_path=log_of(first.node_id),
        )
        idempotence = wire.probe("127.0.0.1", first.port, timeout=30.0, idempotence=True)
    except BaseException:
        for process in processes.values():
            proc.kill(process)
        raise
    return {n: p.pid for n, p in processes.items()}, idempotence is not False


def _serving(
    starts: Sequence[_Start],
    processes: Mapping[int, subprocess.Popen[bytes]],
    wanted: list[int],
    log_of: LogOf,
) -> Callable[[], bool]:
    """A readiness check: every started node answers and knows every broker to be serving.

    The check raises :class:`~kafka_retry._devstack.proc.StartupError` as soon
    as any started node exits.
    """

    def ready() -> bool:
        for node_id, process in processes.items():
            code = process.poll()
            if code is not None:
                raise proc.StartupError(
                    f"Kafka node {node_id} exited with code {code} during startup; "
                    f"log: {log_of(node_id)}"
                )
        try:
            return all(
                wire.broker_ids("127.0.0.1", item.port, timeout=2.0) == wanted for item in starts
            )
        except (OSError, wire.ProbeError):
            return False

    return ready


def stop(service_dir: Path, *, sig: int = signal.SIGTERM, only: int | None = None) -> bool:
    """Stop the running nodes (or node ``only``); return whether any ran.

    Every node gets the signal before any is waited for: a node shutting down
    alone after the others would wait for a controller quorum that is gone.
    Storage is kept.
    """
    live = live_records(service_dir)
    if only is not None:
        live = {only: live[only]} if only in live else {}
    for record in live.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)
    for node_id, record in live.items():
        proc.terminate(record.pid, record.marker, sig=sig)
        proc.clear_record(node_dir(service_dir, node_id))
    return bool(live)


def remove(service_dir: Path) -> None:
    """Delete every node directory (configuration and storage) of ``service_dir``."""
    for node_id in node_ids(service_dir):
        shutil.rmtree(node_dir(service_dir, node_id), ignore_errors=True)

"""Apache Kafka in KRaft mode, assembled from Maven Central jars.

No distribution tarball is needed: Maven resolves ``kafka_2.13`` and its
runtime dependencies into a cache directory, and the broker runs straight from
that class path. The storage is formatted afresh on every start, so a stopped
devstack broker forgets its topics; tests use fresh names anyway. A restart
that keeps the data (the fault tests' broker outage) reuses the formatted
storage and the configuration, and so the same ports.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from kafka_retry._devstack.proc import StartupError

DEFAULT_VERSION = "4.1.1"
# log4j-slf4j-impl binds Kafka's slf4j 1.7 API to log4j2; without a binding the
# broker would print nothing at all.
_LOG4J_VERSION = "2.24.3"
_JVM_OPTIONS = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
_DOWNLOAD_TIMEOUT = 900.0
_FORMAT_TIMEOUT = 120.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-retry</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class AssemblyError(StartupError):
    """Raised when the broker's jars cannot be fetched or its storage formatted."""


def cache_root(env: Mapping[str, str]) -> Path:
    """Return where jar sets are cached: ``$KAFKA_RETRY_CACHE_DIR`` or the user cache."""
    override = env.get("KAFKA_RETRY_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-retry"


def ensure_libs(version: str, cache: Path, log_path: Path) -> Path:
    """Return the directory of the broker's jars, downloading them once.

    The jars land in a scratch directory that is renamed into place only when
    Maven succeeded, so a half-finished download is never mistaken for a cache.

    Raises:
        AssemblyError: If Maven is missing or fails; the message names the log.
    """
    libs = cache / f"kafka-{version}" / "libs"
    if libs.is_dir():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise AssemblyError("Apache Kafka needs Maven (mvn) on PATH to fetch its jars")
    libs.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as scratch:
            _run_maven(mvn, version, Path(scratch), log_path)
            try:
                (Path(scratch) / "libs").rename(libs)
            except OSError:
                if not libs.is_dir():  # another process did not win the race either
                    raise
    finally:
        with contextlib.suppress(OSError):
            libs.parent.rmdir()  # only succeeds when nothing was fetched
    return libs


def _run_maven(mvn: str, version: str, scratch: Path, log_path: Path) -> None:
    pom = scratch / "pom.xml"
    pom.write_text(_POM.format(version=version, log4j=_LOG4J_VERSION))
    command = [
        mvn,
        "--batch-mode",
        "--no-transfer-progress",
        "--file",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={scratch / 'libs'}",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=_DOWNLOAD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssemblyError(
                f"fetching Kafka {version} jars took over {_DOWNLOAD_TIMEOUT:g}s; log: {log_path}"
            ) from exc
    if result.returncode != 0:
        raise AssemblyError(
            f"Maven could not fetch Kafka {version} (exit {result.returncode}); log: {log_path}"
        )


@attrs.frozen
class Node:
    """One KRaft node of a devstack cluster: a broker and a controller in one JVM.

    Attributes:
        node_id: Its ``node.id``, from 1.
        port: The client (PLAINTEXT) port on 127.0.0.1.
        controller_port: The port of its controller listener.
    """

    node_id: int
    port: int
    controller_port: int

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, for clients."""
        return f"127.0.0.1:{self.port}"


def quorum_voters(cluster: Sequence[Node]) -> str:
    """The ``controller.quorum.voters`` of ``cluster``: every node votes."""
    return ",".join(f"{node.node_id}@127.0.0.1:{node.controller_port}" for node in cluster)


def bootstrap_servers(cluster: Sequence[Node]) -> str:
    """Every node's client address, in node order, comma-separated."""
    return ",".join(node.address for node in sorted(cluster, key=lambda n: n.node_id))


def replication(size: int) -> tuple[int, int]:
    """``(replication factor, min.insync.replicas)`` for a cluster of ``size`` nodes.

    Three copies where there are three nodes, and one node may always be lost
    without refusing ``acks=all`` writes: 1 node -> (1, 1), 2 -> (2, 1), 3+ -> (3, 2).
    """
    factor = min(size, 3)
    return factor, max(1, factor - 1)


def server_properties(*, data_dir: Path, port: int, controller_port: int) -> str:
    """Render a single-node broker+controller configuration sized for tests."""
    node = Node(1, port, controller_port)
    return node_properties(data_dir=data_dir, node=node, cluster=(node,))


def node_properties(*, data_dir: Path, node: Node, cluster: Sequence[Node]) -> str:
    """Render the configuration of ``node``, one broker+controller of ``cluster``.

    Every topic, the internal ones included, gets the replication of
    :func:`replication`, so the devstack's topics survive the loss of a node
    as a production cluster's do.
    """
    factor, min_isr = (str(n) for n in replication(len(cluster)))
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": quorum_voters(cluster),
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{node.address}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": factor,
        "auto.create.topics.enable": "true",
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": factor,
        # One partition keeps the first group coordinator lookup fast.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": factor,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": factor,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def write_config(service_dir: Path, *, port: int, controller_port: int) -> Path:
    """Write ``server.properties`` and the log4j2 file; return the former."""
    node = Node(1, port, controller_port)
    return write_node_config(service_dir, node, (node,))


def write_node_config(service_dir: Path, node: Node, cluster: Sequence[Node]) -> Path:
    """Write ``node``'s ``server.properties`` and log4j2 file; return the former."""
    service_dir.mkdir(parents=True, exist_ok=True)
    properties = service_dir / "server.properties"
    properties.write_text(
        node_properties(data_dir=service_dir / "data", node=node, cluster=cluster)
    )
    (service_dir / "log4j2.properties").write_text(_LOG4J2)
    return properties


def formatted_config(service_dir: Path) -> tuple[Path, int] | None:
    """The configuration and client port of storage formatted before, if any.

    Returns:
        ``(server.properties, port)`` when ``service_dir`` holds formatted
        storage and the configuration it was formatted with; else None.
    """
    properties = service_dir / "server.properties"
    if not (service_dir / "data" / "meta.properties").is_file() or not properties.is_file():
        return None
    found = re.search(r"^listeners=PLAINTEXT://[^:,]+:(\d+)", properties.read_text(), re.MULTILINE)
    return None if found is None else (properties, int(found.group(1)))


def java_command(service_dir: Path, libs: Path, main_class: str, *args: str) -> list[str]:
    """Build the ``java`` command line that runs ``main_class`` from ``libs``."""
    java = _java()
    return [
        java,
        *_JVM_OPTIONS,
        f"-Dlog4j2.configurationFile={service_dir / 'log4j2.properties'}",
        "-cp",
        f"{libs}{os.sep}*",
        main_class,
        *args,
    ]


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise AssemblyError("Apache Kafka needs Java 17+ (java) on PATH or in JAVA_HOME")
    return found


def new_cluster_id() -> str:
    """A fresh random cluster id, as ``kafka-storage random-uuid`` makes."""
    # Kafka's own ids never start with "-", which the tool would read as an option.
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def format_storage(
    service_dir: Path,
    libs: Path,
    properties: Path,
    log_path: Path,
    *,
    cluster_id: str | None = None,
) -> None:
    """Wipe the data directory and format it for a new cluster.

    The nodes of one cluster are formatted with the same ``cluster_id``; a
    single node gets a fresh one.

    Raises:
        AssemblyError: If the storage tool fails; the message names the log.
    """
    shutil.rmtree(service_dir / "data", ignore_errors=True)
    command = java_command(
        service_dir,
        libs,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        cluster_id or new_cluster_id(),
        "--config",
        str(properties),
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=_FORMAT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssemblyError(f"formatting Kafka storage timed out; log: {log_path}") from exc
    if result.returncode != 0:
        raise AssemblyError(
            f"formatting Kafka storage failed (exit {result.returncode}); log: {log_path}"
        )

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
from collections.abc import Mapping
from pathlib import Path

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


def server_properties(*, data_dir: Path, port: int, controller_port: int) -> str:
    """Render a single-node broker+controller configuration sized for tests."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "auto.create.topics.enable": "true",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        # One partition keeps the first group coordinator lookup fast.
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def write_config(service_dir: Path, *, port: int, controller_port: int) -> Path:
    """Write ``server.properties`` and the log4j2 file; return the former."""
    properties = service_dir / "server.properties"
    properties.write_text(
        server_properties(data_dir=service_dir / "data", port=port, controller_port=controller_port)
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


def _cluster_id() -> str:
    # Kafka's own ids never start with "-", which the tool would read as an option.
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not candidate.startswith("-"):
            return candidate


def format_storage(service_dir: Path, libs: Path, properties: Path, log_path: Path) -> None:
    """Wipe the data directory and format it for a new single-node cluster.

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
        _cluster_id(),
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

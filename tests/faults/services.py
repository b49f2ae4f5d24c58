"""The suite's own Kafka and PostgreSQL, which it stops and restarts, and its worker processes.

The services live in a state directory of their own, so their ports are picked
fresh and stopping them never touches a devstack that others share. A broker
restart keeps its data and port; so does a PostgreSQL restart. The cluster
scenarios get a 3-node Kafka cluster in a state directory of its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

from kafka_retry import devstack
from kafka_retry._devstack import postgres as _postgres

#: The checkout: workers run ``python -m tests.faults.worker`` from here.
ROOT = Path(__file__).resolve().parents[2]
# Set by `devstack up` for the shared services; ours must not follow them.
_SHARED = ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")


@contextlib.contextmanager
def _own_services() -> Iterator[None]:
    """Hide the shared services' addresses, so that the devstack starts ours."""
    saved = {name: os.environ.pop(name) for name in _SHARED if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@attrs.define
class Services:
    """Apache Kafka and PostgreSQL run from a private state directory.

    Attributes:
        state_dir: Where their data, pid records and logs live.
        bootstrap: The broker's ``host:port``; the same after a restart.
        database_url: The database's URL; the same after a restart.
    """

    state_dir: Path
    bootstrap: str = ""
    database_url: str = ""

    @classmethod
    def start(cls, state_dir: Path | None = None) -> Services:
        """Start both services in ``state_dir`` (default: a fresh temporary directory).

        Raises:
            DevstackError: A service could not be started; names its log.
        """
        if state_dir is None:
            state_dir = Path(tempfile.mkdtemp(prefix="kafka-retry-faults-"))
        state_dir.mkdir(parents=True, exist_ok=True)
        # Readable by all: PostgreSQL runs as its own user when we are root.
        state_dir.chmod(0o755)
        services = cls(state_dir)
        try:
            with _own_services():
                services.bootstrap = devstack.start_kafka("kafka", state_dir).bootstrap_servers
                services.database_url = devstack.start_postgres(state_dir).url
        except BaseException:
            services.close()
            raise
        return services

    @property
    def postgres_port(self) -> int:
        """The port PostgreSQL listens on."""
        port = urllib.parse.urlsplit(self.database_url).port
        assert port is not None
        return port

    def stop_kafka(self) -> None:
        """Stop the broker (SIGTERM, a clean shutdown), keeping its data."""
        devstack.stop("kafka", self.state_dir, keep_data=True)

    def start_kafka(self) -> None:
        """Start the broker again on its data and port; return once it answers."""
        with _own_services():
            service = devstack.start_kafka("kafka", self.state_dir, keep_data=True)
        assert service.bootstrap_servers == self.bootstrap

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (a fast shutdown); the cluster is kept."""
        devstack.stop("postgres", self.state_dir)

    def start_postgres(self) -> None:
        """Start PostgreSQL again on its port; return once it accepts connections."""
        with _own_services():
            service = devstack.start_postgres(self.state_dir, port=self.postgres_port)
        assert service.url == self.database_url

    def close(self) -> None:
        """Stop both services and delete their data."""
        devstack.stop_all(self.state_dir)
        # Where PostgreSQL's own user could not reach the state directory, the
        # devstack put the cluster in the temporary directory instead.
        cluster = _postgres.data_dir(self.state_dir / "postgres", _postgres.owner())
        shutil.rmtree(cluster.parent, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)


@attrs.define
class Cluster:
    """A 3-node Apache Kafka cluster of the suite's own (each node a broker and a voter).

    Attributes:
        state_dir: Where its nodes' data, pid records and logs live.
        bootstrap: Every node's ``host:port``; the same after a node's restart.
    """

    state_dir: Path
    bootstrap: str = ""

    #: Nodes, as in production: topics keep 3 copies, writes need 2 in sync.
    SIZE = 3

    @classmethod
    def start(cls, state_dir: Path) -> Cluster:
        """Start the cluster in ``state_dir``; return once every node serves.

        Raises:
            DevstackError: A node could not be started; names its log.
        """
        state_dir.mkdir(parents=True, exist_ok=True)
        cluster = cls(state_dir)
        try:
            with _own_services():
                service = devstack.start_kafka("kafka", state_dir, brokers=cls.SIZE)
        except BaseException:
            cluster.close()
            raise
        cluster.bootstrap = service.bootstrap_servers
        return cluster

    def on(self, services: Services) -> Services:
        """``services`` with this cluster in place of their single broker (same PostgreSQL)."""
        return Services(services.state_dir, self.bootstrap, services.database_url)

    def kill(self, node: int) -> None:
        """SIGKILL node ``node``, as a crash of its machine would; its data stays."""
        assert devstack.stop_node(node, self.state_dir, kill=True), f"node {node} was not running"

    def restart(self) -> None:
        """Start every node that does not run on its data and ports; return once all serve."""
        with _own_services():
            service = devstack.start_kafka("kafka", self.state_dir, brokers=self.SIZE)
        assert service.bootstrap_servers == self.bootstrap

    def close(self) -> None:
        """Stop every node and delete the cluster's data."""
        devstack.stop_all(self.state_dir)
        shutil.rmtree(self.state_dir, ignore_errors=True)


class Worker:
    """One ``python -m tests.faults.worker`` process, its output in ``log``.

    Args:
        args: The worker's command-line arguments.
        log: Where its stdout and stderr go.
        ready_dir: Where it creates ``ready-<pid>`` once its consumer is ready.
    """

    def __init__(self, args: Sequence[str], log: Path, ready_dir: Path) -> None:
        self.log = log
        env = {name: value for name, value in os.environ.items() if name not in _SHARED}
        with log.open("ab") as output:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.worker", *args],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._process.pid
        self.started = time.time()
        self._ready = ready_dir / f"ready-{self.pid}"

    @property
    def ready(self) -> bool:
        """Whether its consumer has joined every group and got its assignment."""
        return self._ready.exists()

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: the signal that ended it), or None while it runs."""
        return self._process.poll()

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.alive:
            self._process.send_signal(signal.SIGKILL)
        self._process.wait()

    def terminate(self) -> None:
        """Ask for a clean stop (SIGTERM), without waiting."""
        if self.alive:
            self._process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the process to end."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)

    def output(self) -> str:
        """What the process printed so far."""
        return self.log.read_text(errors="replace")

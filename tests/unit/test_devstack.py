"""The devstack's decisions and checks that need no running service."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_retry import devstack
from kafka_retry._devstack import cli as devstack_cli
from kafka_retry._devstack import cluster, kafka, postgres, proc, wire
from kafka_retry.errors import ServiceUnavailableError


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither java nor mvn can be found."""
    monkeypatch.setattr(shutil, "which", lambda name, path=None: None)


@pytest.fixture
def all_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both java and mvn can be found."""
    monkeypatch.setattr(shutil, "which", lambda name, path=None: f"/usr/bin/{name}")


@pytest.mark.usefixtures("no_tools")
def test_bootstrap_servers_env_means_external() -> None:
    """KAFKA_BOOTSTRAP_SERVERS wins over every other choice."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "KAFKA_RETRY_TEST_BROKER": "tansu"}
    assert devstack.select_broker("kafka", env) == "external"


@pytest.mark.usefixtures("no_tools")
def test_kind_argument_beats_test_broker_env() -> None:
    """An explicit kind overrides KAFKA_RETRY_TEST_BROKER."""
    assert devstack.select_broker("kafka", {"KAFKA_RETRY_TEST_BROKER": "tansu"}) == "kafka"


@pytest.mark.usefixtures("no_tools")
def test_test_broker_env_is_read_case_insensitively() -> None:
    """KAFKA_RETRY_TEST_BROKER picks the broker when no kind is given."""
    assert devstack.select_broker(None, {"KAFKA_RETRY_TEST_BROKER": " Tansu "}) == "tansu"


@pytest.mark.usefixtures("all_tools")
def test_default_is_apache_kafka_when_java_and_maven_exist() -> None:
    """With java and mvn on PATH the default broker is Apache Kafka."""
    assert devstack.select_broker(None, {}) == "kafka"


@pytest.mark.usefixtures("no_tools")
def test_default_falls_back_to_tansu_with_a_notice(capsys: pytest.CaptureFixture[str]) -> None:
    """Without java the default is Tansu, and stderr says why in one line."""
    assert devstack.select_broker(None, {}) == "tansu"
    assert capsys.readouterr().err.count("\n") == 1


def test_unknown_broker_is_refused() -> None:
    """A broker name other than kafka or tansu is a clear error."""
    with pytest.raises(devstack.DevstackError, match="'redpanda'"):
        devstack.select_broker("redpanda", {})


def test_state_dir_follows_env(tmp_path: Path) -> None:
    """KAFKA_RETRY_DEVSTACK_DIR moves the state directory."""
    env = {"KAFKA_RETRY_DEVSTACK_DIR": str(tmp_path / "state")}
    assert devstack.default_state_dir(env) == tmp_path / "state"
    assert devstack.default_state_dir({}).name == ".devstack"


def test_pick_port_keeps_a_free_preferred_port() -> None:
    """The preferred port is used when nothing holds it."""
    port = _closed_port()
    assert proc.pick_port(port) == port


def test_pick_port_avoids_a_taken_port() -> None:
    """A taken preferred port is replaced by another free one."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        chosen = proc.pick_port(taken)
        assert chosen != taken
        assert proc.port_is_free(chosen)


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("localhost:9092", [("localhost", 9092)]),
        ("a:1, b:2", [("a", 1), ("b", 2)]),
        ("PLAINTEXT://a:1", [("a", 1)]),
        ("kafka", [("kafka", 9092)]),
        ("[::1]:9093", [("::1", 9093)]),
    ],
)
def test_parse_bootstrap(bootstrap: str, expected: list[tuple[str, int]]) -> None:
    """Bootstrap strings split into (host, port) pairs; the port defaults to 9092."""
    assert wire.parse_bootstrap(bootstrap) == expected


@pytest.mark.parametrize("bootstrap", ["", " , ", "host:port"])
def test_parse_bootstrap_refuses_garbage(bootstrap: str) -> None:
    """An empty list or a non-numeric port is refused."""
    with pytest.raises(ValueError, match="bootstrap"):
        wire.parse_bootstrap(bootstrap)


@pytest.fixture
def mute_server() -> Iterator[str]:
    """A listener that reads a request and closes the connection without a word."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.05)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.recv(1024)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    done.set()
    thread.join(timeout=5)
    server.close()


def test_unreachable_kafka_is_named(mute_server: str) -> None:
    """Every address tried is named, with the reason it failed."""
    refused = f"127.0.0.1:{_closed_port()}"
    bootstrap = f"{refused},{mute_server}"
    with pytest.raises(ServiceUnavailableError) as caught:
        devstack.check_kafka_reachable(bootstrap, timeout=2.0)
    message = str(caught.value)
    assert f"{refused} connection refused" in message
    assert f"{mute_server} the connection was closed" in message
    assert caught.value.address == bootstrap


def test_unreachable_postgres_is_named_without_password() -> None:
    """The PostgreSQL check names host and port but never the password."""
    port = _closed_port()
    with pytest.raises(ServiceUnavailableError, match=f"127.0.0.1:{port}") as caught:
        devstack.check_postgres_reachable(f"postgresql://u:secret@127.0.0.1:{port}/db", 2.0)
    assert "secret" not in str(caught.value)


def test_postgres_url_is_a_tcp_url() -> None:
    """The local cluster's URL names user, password, loopback host, port and database."""
    assert postgres.url(5433) == "postgresql://kafka_retry:kafka_retry@127.0.0.1:5433/kafka_retry"


def test_postgres_service_repr_hides_the_url() -> None:
    """The URL, which may carry a password, stays out of the repr."""
    service = devstack.PostgresService("postgresql://u:secret@h/db", "external")
    assert "secret" not in repr(service)


def test_broker_config_is_single_node_kraft(tmp_path: Path) -> None:
    """The broker runs both roles with replication factors a single node can meet."""
    rendered = kafka.server_properties(data_dir=tmp_path, port=9092, controller_port=9093)
    settings = dict(line.split("=", 1) for line in rendered.splitlines())
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert settings["offsets.topic.replication.factor"] == "1"
    assert settings["transaction.state.log.replication.factor"] == "1"
    assert settings["group.initial.rebalance.delay.ms"] == "0"


def test_kept_data_is_restarted_on_its_own_port(tmp_path: Path) -> None:
    """Formatted storage and its configuration are found again, with the port they had."""
    assert kafka.formatted_config(tmp_path) is None
    properties = kafka.write_config(tmp_path, port=41234, controller_port=41235)
    assert kafka.formatted_config(tmp_path) is None  # written, but never formatted
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("node.id=1\n")
    assert kafka.formatted_config(tmp_path) == (properties, 41234)


def test_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    """Nothing runs from a state directory that was never used, and stopping is a no-op."""
    assert [state.running for state in devstack.status(tmp_path)] == [False, False, False]
    assert devstack.stop_all(tmp_path) == []


def test_cli_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A failing ``up`` exits non-zero with one line on stderr and no traceback."""
    bootstrap = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)

    code = devstack_cli.run(["--state-dir", str(tmp_path), "up"])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert re.fullmatch(rf"devstack: error: .*{re.escape(bootstrap)}.*\n", captured.err)


def test_cli_status_lists_every_service(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``status`` prints one line per service."""
    assert devstack_cli.run(["--state-dir", str(tmp_path), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["kafka", "stopped"],
        ["tansu", "stopped"],
        ["postgres", "stopped"],
    ]


def _settings(rendered: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in rendered.splitlines())


def test_cluster_node_config_is_one_voter_of_three(tmp_path: Path) -> None:
    """Each node of a 3-node cluster is broker and controller, every node a voter, 3 copies."""
    cluster = [kafka.Node(1, 9092, 19092), kafka.Node(2, 9093, 19093), kafka.Node(3, 9094, 19094)]
    settings = _settings(kafka.node_properties(data_dir=tmp_path, node=cluster[1], cluster=cluster))
    assert settings["process.roles"] == "broker,controller"
    assert settings["node.id"] == "2"
    voters = "1@127.0.0.1:19092,2@127.0.0.1:19093,3@127.0.0.1:19094"
    assert settings["controller.quorum.voters"] == voters
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:19093"
    assert settings["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9093"
    assert settings["log.dirs"] == str(tmp_path)
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert settings[key] == "3", key
    for key in (
        "min.insync.replicas",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.min.isr",
    ):
        assert settings[key] == "2", key


@pytest.mark.parametrize(("size", "expected"), [(1, (1, 1)), (2, (2, 1)), (3, (3, 2)), (5, (3, 2))])
def test_replication_follows_the_cluster_size(size: int, expected: tuple[int, int]) -> None:
    """Up to 3 copies; acks=all writes go on while one node is down."""
    assert kafka.replication(size) == expected


def test_bootstrap_lists_every_node_in_order() -> None:
    """Clients get every node's address, so any one of them can bootstrap."""
    nodes = [kafka.Node(2, 9093, 1), kafka.Node(1, 9092, 2)]
    assert kafka.bootstrap_servers(nodes) == "127.0.0.1:9092,127.0.0.1:9093"


def test_cluster_plan_gives_every_node_its_own_ports() -> None:
    """Six distinct free ports for three nodes; a taken preferred port is replaced."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        nodes = cluster.plan(3, first_port=taken)
    assert [node.node_id for node in nodes] == [1, 2, 3]
    ports = [port for node in nodes for port in (node.port, node.controller_port)]
    assert len(set(ports)) == 6
    assert taken not in ports


def test_pick_ports_never_repeats_a_port() -> None:
    """The same preferred port twice still yields two ports."""
    port = _closed_port()
    first, second = proc.pick_ports([port, port])
    assert first == port
    assert second != port


def test_cluster_status_lists_each_node(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """With a cluster's node directories, ``status`` has one line per node instead of kafka's."""
    for node in (3, 1, 2):
        cluster.node_dir(tmp_path / "kafka", node).mkdir(parents=True)
    (tmp_path / "kafka" / "node-x").mkdir()  # not a node
    assert cluster.node_ids(tmp_path / "kafka") == [1, 2, 3]
    assert devstack_cli.run(["--state-dir", str(tmp_path), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["kafka-1", "stopped"],
        ["kafka-2", "stopped"],
        ["kafka-3", "stopped"],
        ["tansu", "stopped"],
        ["postgres", "stopped"],
    ]
    assert not devstack.is_running("kafka", tmp_path)


@pytest.mark.parametrize("kind", ["tansu", "external"])
def test_a_cluster_needs_apache_kafka(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tansu and an external broker cannot be a devstack cluster: a clear error, nothing started."""
    if kind == "external":
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    with pytest.raises(devstack.DevstackError, match="cluster of 3 brokers needs Apache Kafka"):
        devstack.start_kafka(kind, tmp_path, brokers=3)
    assert not (tmp_path / "kafka").exists()


@pytest.mark.parametrize("value", ["0", "10", "three"])
def test_cli_refuses_a_bad_broker_count(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--brokers`` takes 1 to 9; anything else is a one-line usage error."""
    with pytest.raises(SystemExit) as caught:
        devstack_cli.run(["up", "--brokers", value])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--brokers" in err


def test_metadata_answer_names_the_serving_brokers() -> None:
    """A Metadata v4 answer is read down to its broker ids (a rack or none)."""

    def broker(node_id: int, host: bytes, rack: bytes | None) -> bytes:
        rack_part = struct.pack(">h", -1) if rack is None else struct.pack(">h", len(rack)) + rack
        return struct.pack(">ih", node_id, len(host)) + host + struct.pack(">i", 9092) + rack_part

    body = struct.pack(">ii", 0, 2) + broker(3, b"127.0.0.1", None) + broker(1, b"h", b"r1")
    body += struct.pack(">h", -1) + struct.pack(">ii", 1, 0)  # cluster id, controller, topics
    assert wire._metadata_brokers(body) == [1, 3]
    with pytest.raises(wire.ProbeError):
        wire._metadata_brokers(body[:10])


def _pretend_running(service_dir: Path, port: int) -> None:
    """A pid record of this very process (an empty marker is in every command line)."""
    service_dir.mkdir(parents=True, exist_ok=True)
    proc.write_record(service_dir, proc.Record(os.getpid(), f"127.0.0.1:{port}", "kafka", ""))


def test_a_running_cluster_is_not_taken_for_one_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for one broker while a 3-node cluster runs is an error naming both sizes."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # CI sets it for the suite
    for node in (1, 2, 3):
        _pretend_running(cluster.node_dir(tmp_path / "kafka", node), 9091 + node)
    with pytest.raises(devstack.DevstackError, match=r"3 broker\(s\), not 1; stop it first"):
        devstack.start_kafka("kafka", tmp_path, brokers=1)
    states = [state for state in devstack.status(tmp_path) if state.name == "kafka"]
    assert [(s.label, s.running, s.address) for s in states] == [
        ("kafka-1", True, "127.0.0.1:9092"),
        ("kafka-2", True, "127.0.0.1:9093"),
        ("kafka-3", True, "127.0.0.1:9094"),
    ]
    assert devstack.is_running("kafka", tmp_path)


def test_a_running_broker_is_not_taken_for_a_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for a cluster while one broker runs is an error; the broker's record stays."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)  # CI sets it for the suite
    _pretend_running(tmp_path / "kafka", 9092)
    with pytest.raises(devstack.DevstackError, match=r"1 broker\(s\), not 3"):
        devstack.start_kafka("kafka", tmp_path, brokers=3)
    assert proc.read_record(tmp_path / "kafka") is not None

"""The ``kafka-retry`` command as a subprocess against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kafka_retry import Config, Consumer, DatabaseConfig, Message, NonRetryableError
from kafka_retry.deadletter import H_REPLAYED_FROM

from .support import config_for, create_topics, eventually, fresh, produce

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).with_name("kafka-retry")
RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    (b"order-1", b'{"id": 1}', [("trace", b"a"), ("trace", b"\x00\xff")]),
    (b"order-2", b"\xff\xfe not text", [("null", None)]),
    (None, b"", []),
]


@attrs.frozen
class Result:
    """What a command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """Stdout parsed as JSON."""
        return json.loads(self.out)


async def cli(*args: str, env: dict[str, str], within: float = 60) -> Result:
    """Run ``kafka-retry ARGS`` with stdin closed; wait (``within`` seconds) for it to end."""
    process = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        *args,
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """A failure: non-zero exit, one line on stderr naming ``fragments``, no traceback."""
    assert result.code != 0, result
    assert "Traceback" not in result.err
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("kafka-retry: error: ")
    for fragment in fragments:
        assert fragment in result.err


def environment(kafka: Any, config: Config | None = None, **extra: str) -> dict[str, str]:
    """The test process's environment pointed at the broker (and ``config``'s group and topics)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
    env["KAFKA_IDEMPOTENCE"] = "true" if kafka.supports_idempotence else "false"
    if config is not None:
        env["KAFKA_GROUP"] = config.group
        env["KAFKA_TOPICS"] = ",".join(config.topics)
        env["KAFKA_RETRY_INTERVALS"] = ",".join(str(s) for s in config.retry_intervals)
        env["KAFKA_RETRY_BACKEND"] = config.retry_backend
    env.update(extra)
    return env


class Recorder:
    """A handler that records what it got and fails with ``NonRetryableError`` while broken."""

    def __init__(self) -> None:
        self.calls: list[Message] = []
        self.broken = True

    async def __call__(self, message: Message) -> None:
        self.calls.append(message)
        if self.broken:
            raise NonRetryableError("poison")


async def dead_letter_three(config: Config, handler: Recorder) -> None:
    """Produce RECORDS and run the consumer until all three are dead letters."""
    await produce(config.bootstrap, config.topics[0], RECORDS)
    async with Consumer(config, {config.topics[0]: handler}):
        await eventually(lambda: len(handler.calls) == 3)


async def handle_replays(config: Config, handler: Recorder, count: int) -> None:
    """Run the (now healthy) consumer until it handled ``count`` messages in all."""
    handler.broken = False
    async with Consumer(config, {config.topics[0]: handler}):
        await eventually(lambda: len(handler.calls) == count)


def originals(handler: Recorder) -> set[tuple[bytes | None, bytes | None, tuple[Any, ...]]]:
    """Key, value and headers of each call."""
    return {(m.key, m.value, m.headers) for m in handler.calls}


async def partitions(bootstrap: str, topics: list[str]) -> dict[str, int]:
    """Partitions per topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def read_to_sentinels(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord]:
    """Every record of ``topic`` (``count`` partitions) before a sentinel produced now to each.

    Deterministic without waiting for silence, and independent of the end
    offsets a broker reports.
    """
    for partition in range(count):
        await produce(bootstrap, topic, [(b"sentinel", None, [])], partition=partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(count)])
        await consumer.seek_to_beginning()
        async with asyncio.timeout(30):
            while sum(record.key == b"sentinel" for record in found) < count:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(records)
    finally:
        await consumer.stop()
    return [record for record in found if record.key != b"sentinel"]


async def test_replay_round_trip_on_kafka(kafka_service: Any) -> None:
    """Three dead letters replayed are handled again, byte-exact; a second replay sends nothing."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic, partitions=2)
    config = config_for(kafka_service, topics=[topic], metrics=False)
    handler = Recorder()
    await dead_letter_three(config, handler)
    env = environment(kafka_service, config)

    listed = await cli("dlq", "list", "--json", env=env)
    assert listed.code == 0, listed.err
    entries = listed.json()
    assert {json.dumps(e["key"]): e["value"] for e in entries} == {
        '{"text": "order-1"}': {"text": '{"id": 1}'},
        '{"text": "order-2"}': {"hex": "fffe206e6f742074657874"},
        "null": {"text": ""},
    }
    assert {e["error_message"] for e in entries} == {"poison"}
    shown = await cli("dlq", "show", entries[0]["id"], env=env)
    assert shown.code == 0, shown.err
    assert f"(in {config.topic_chain(topic)[-1]})" in shown.out

    dry = await cli("dlq", "replay", "--dry-run", "--json", env=env)
    assert (dry.json()["selected"], dry.json()["replayed"]) == (3, 0)
    first = await cli("dlq", "replay", env=env)
    assert first.code == 0, first.err
    assert first.out.strip() == "replayed 3 dead letter(s) to their main topic"
    await handle_replays(config, handler, 6)
    replays = handler.calls[3:]
    assert [m.attempt for m in replays] == [1, 1, 1]
    assert originals(handler) == {(m.key, m.value, m.headers) for m in replays}

    second = await cli("dlq", "replay", env=env)
    assert second.out.strip() == (
        "replayed 0 dead letter(s) to their main topic; 3 replayed before, skipped"
    )
    main = await read_to_sentinels(kafka_service.bootstrap_servers, topic, 2)
    assert len(main) == 6  # three originals, three replays, nothing twice
    origins = {dict(r.headers).get(H_REPLAYED_FROM) for r in main} - {None}
    assert len(origins) == 3
    assert (await cli("dlq", "list", "--json", env=env)).json() == []
    everything = (await cli("dlq", "list", "--all", "--json", env=env)).json()
    assert {e["replayed_to"] for e in everything} == {topic}


async def test_replay_to_a_retry_tier_on_kafka(kafka_service: Any) -> None:
    """--to-tier 1 sends a dead letter to the retry1 topic, handled at once as attempt 2."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic], retry_intervals=[30], metrics=False)
    handler = Recorder()
    await dead_letter_three(config, handler)
    env = environment(kafka_service, config)
    listed = (await cli("dlq", "list", "--json", "--error", "POISON", env=env)).json()
    result = await cli("dlq", "replay", "--to-tier", "1", listed[0]["id"], env=env)
    assert result.out.strip() == "replayed 1 dead letter(s) to retry1"
    await handle_replays(config, handler, 4)
    retried = handler.calls[3]
    assert (retried.attempt, retried.topic) == (2, config.topic_chain(topic)[1])
    assert retried.provenance is not None and retried.provenance.error_message == "poison"
    missing = await cli("dlq", "replay", "--to-tier", "2", env=env)
    assert_one_line_error(missing, "retry tier 2 does not exist")


async def test_replay_round_trip_on_postgres(
    kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The same round trip with dead-lettered rows; db status counts them."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic)
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    config = config_for(
        kafka_service, topics=[topic], retry_backend="postgres", database=database, metrics=False
    )
    handler = Recorder()
    await dead_letter_three(config, handler)
    env = environment(kafka_service, config, DATABASE_URL=database_url, DATABASE_SCHEMA=db_schema)

    status = (await cli("db", "status", "--json", env=env)).json()
    assert status["topics"][0]["dead_lettered"] == 3
    assert status["pending_migrations"] == []
    entries = (await cli("dlq", "list", "--json", env=env)).json()
    assert len(entries) == 3 and all(e["id"].isdigit() for e in entries)
    shown = await cli("dlq", "show", entries[1]["id"], "--json", env=env)
    assert shown.json()["id"] == entries[1]["id"]

    first = await cli("dlq", "replay", env=env)
    assert first.out.strip() == "replayed 3 dead letter(s) to their main topic", first.err
    await handle_replays(config, handler, 6)
    assert originals(handler) == {(m.key, m.value, m.headers) for m in handler.calls[3:]}
    second = await cli("dlq", "replay", "--json", env=env)
    assert (second.json()["replayed"], second.json()["already_replayed"]) == (0, 3)
    assert len(await read_to_sentinels(kafka_service.bootstrap_servers, topic, 1)) == 6
    status = (await cli("db", "status", "--json", env=env)).json()
    assert (status["topics"][0]["dead_lettered"], status["topics"][0]["replayed"]) == (0, 3)


async def test_purge_on_postgres(kafka_service: Any, database_url: str, db_schema: str) -> None:
    """Purge asks first (refused without a terminal), honours filters, and deletes rows."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic)
    database = DatabaseConfig.from_url(database_url, schema=db_schema)
    config = config_for(
        kafka_service, topics=[topic], retry_backend="postgres", database=database, metrics=False
    )
    await dead_letter_three(config, Recorder())
    env = environment(kafka_service, config, DATABASE_URL=database_url, DATABASE_SCHEMA=db_schema)
    entries = (await cli("dlq", "list", "--json", env=env)).json()

    refused = await cli("dlq", "purge", env=env)
    assert_one_line_error(refused, "--yes")
    dry = await cli("dlq", "purge", "--dry-run", entries[0]["id"], env=env)
    assert dry.out.strip() == f"would delete 1 dead letter(s) ({topic}: 1)"
    done = await cli("dlq", "purge", "--yes", entries[0]["id"], entries[1]["id"], env=env)
    assert done.out.strip() == f"deleted 2 dead letter(s) ({topic}: 2)"
    left = (await cli("dlq", "list", "--json", env=env)).json()
    assert [e["id"] for e in left] == [entries[2]["id"]]
    none = await cli("dlq", "purge", "--yes", "--error", "no such error", env=env)
    assert none.out.strip() == "nothing to purge"


async def test_purge_on_kafka(kafka_service: Any) -> None:
    """Replayed dead letters at the start of the topic are deleted; the rest stay."""
    if kafka_service.kind == "tansu":
        pytest.skip("Tansu does not implement DeleteRecords")
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic)
    config = config_for(kafka_service, topics=[topic], metrics=False)
    await dead_letter_three(config, Recorder())
    env = environment(kafka_service, config)
    ids = [e["id"] for e in (await cli("dlq", "list", "--json", env=env)).json()]
    assert ids == ["0:0", "0:1", "0:2"]
    await cli("dlq", "replay", "0:0", "0:2", env=env)

    by_error = await cli("dlq", "purge", "--yes", "--error", "poison", env=env)
    assert_one_line_error(by_error, "only be purged from its start")
    purged = await cli("dlq", "purge", "--yes", "--replayed", env=env)
    assert purged.out.strip() == f"deleted 1 dead letter(s) ({topic}: 1)", purged.err
    left = (await cli("dlq", "list", "--all", "--json", env=env)).json()
    assert [(e["id"], e["replayed_at"] is None) for e in left] == [("0:1", True), ("0:2", False)]
    everything = await cli("dlq", "purge", "--yes", env=env)
    assert everything.out.strip() == f"deleted 2 dead letter(s) ({topic}: 2)"
    assert (await cli("dlq", "list", "--all", "--json", env=env)).json() == []


async def test_topics_plan_and_create(kafka_service: Any) -> None:
    """create makes the chain like the main topic, and is idempotent; plan needs no broker."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic, partitions=3)
    group = fresh("g")
    env = environment(kafka_service, KAFKA_GROUP=group, KAFKA_TOPICS=topic)
    chain = [f"retry1.{group}.{topic}", f"retry2.{group}.{topic}", f"deadLetter.{group}.{topic}"]

    plan = await cli("topics", "plan", "--retry-intervals", "5,90", "-b", "127.0.0.1:1", env=env)
    assert re.search(rf"retry2\s+{re.escape(chain[1])}\s+after 1m30s", plan.out), plan.out
    created = await cli("topics", "create", "--retry-intervals", "5,90", env=env)
    assert created.code == 0, created.err
    assert [line.split()[:2] for line in created.out.splitlines()] == [
        ["created", name] for name in chain
    ]
    assert await partitions(kafka_service.bootstrap_servers, chain) == dict.fromkeys(chain, 3)
    again = await cli("topics", "create", "--retry-intervals", "5,90", env=env)
    assert [line.split()[0] for line in again.out.splitlines()] == ["exists"] * 3
    unknown = await cli("topics", "create", "-t", fresh("missing"), env=env)
    assert_one_line_error(unknown, "unknown topic")


async def test_db_migrate_and_status(database_url: str, db_schema: str) -> None:
    """migrate applies every version once; status reads an empty table."""
    env = {**os.environ, "DATABASE_URL": database_url, "DATABASE_SCHEMA": db_schema}
    first = await cli("db", "migrate", env=env)
    applied = "applied 0001_create_table, 0002_replayed_state, 0003_last_span, 0004_ordered_keys to"
    assert first.out.strip().startswith(applied)
    again = await cli("db", "migrate", env=env)
    assert again.out.strip().endswith("is up to date")
    status = await cli("db", "status", env=env)
    assert status.out.strip().endswith("has no rows")
    missing = await cli("db", "status", "--table", "nothing_here", env=env)
    assert_one_line_error(missing, "no retry table", "db migrate")


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_errors_are_one_line(kafka_service: Any) -> None:
    """Bad flag, unreachable broker, unknown topic, missing settings: one line, non-zero."""
    env = environment(kafka_service, KAFKA_GROUP="g", KAFKA_TOPICS=fresh("nope"))
    bad_flag = await cli("dlq", "list", "--bogus", env=env)
    assert bad_flag.code == 2 and bad_flag.err.count("\n") == 1 and "--bogus" in bad_flag.err
    address = f"127.0.0.1:{closed_port()}"
    unreachable = await cli("dlq", "list", "-b", address, env=env)
    assert_one_line_error(unreachable, address, "unreachable")
    unknown = await cli("dlq", "list", env=env)
    assert_one_line_error(unknown, "unknown topic", env["KAFKA_TOPICS"])
    no_database = await cli("db", "status", env=env)
    assert_one_line_error(no_database, "--database-url", "DATABASE_URL")
    no_database = await cli("dlq", "list", "--backend", "postgres", env=env)
    assert_one_line_error(no_database, "--database-url")
    no_group = await cli("dlq", "list", env={k: v for k, v in env.items() if k != "KAFKA_GROUP"})
    assert_one_line_error(no_group, "--group", "KAFKA_GROUP")
    bad_id = await cli("dlq", "show", "nonsense", env=env)
    assert_one_line_error(bad_id, "PARTITION:OFFSET")


async def read_until(stream: asyncio.StreamReader, wanted: Callable[[str], bool]) -> list[str]:
    """Lines of ``stream`` up to the first one ``wanted`` accepts."""
    lines: list[str] = []
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError(f"stream ended first: {lines}")
        lines.append(line)
        if wanted(line):
            return lines


async def test_run_handles_and_stops_on_sigterm(kafka_service: Any) -> None:
    """run imports the consumer, handles a message, and drains on SIGTERM with exit 0."""
    topic = fresh("orders")
    await create_topics(kafka_service.bootstrap_servers, topic)
    env = environment(kafka_service, KAFKA_GROUP=fresh("g"), KAFKA_TOPICS=topic)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kafka_retry",
        "run",
        "tests.integration.cli_app:consumer",
        env=env,
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        await produce(kafka_service.bootstrap_servers, topic, [(b"k", b"hello", [])])
        await asyncio.wait_for(read_until(process.stdout, lambda s: "hello" in s), 60)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    err = (await process.stderr.read()).decode()
    assert code == 0, err
    assert "stopped cleanly" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["kafka", "postgres"])
async def test_demo_summary(
    backend: str, kafka_service: Any, database_url: str, db_schema: str
) -> None:
    """The demo on a pipe prints plain lines and ends as designed: 293 handled, 7 dead letters."""
    env = environment(kafka_service, DATABASE_URL=database_url)
    result = await cli("demo", "--backend", backend, "--schema", db_schema, env=env, within=100)
    assert result.code == 0, result.out + result.err
    assert "\x1b" not in result.out
    summary = result.out.strip().splitlines()[-1]
    assert summary.startswith("demo: 300 orders, 293 handled, 7 dead-lettered (7 stored in ")
    assert "kafka-retry dlq list" in result.out

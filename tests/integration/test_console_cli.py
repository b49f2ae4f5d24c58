"""``kafka-retry dlq groups``, ``dlq replay --group`` and ``console`` as subprocesses."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from .console_support import TIMEOUT_GROUP, count_records, dead_letter_orders
from .test_cli import assert_one_line_error, cli, environment

pytestmark = pytest.mark.integration


async def test_groups_and_replay_by_group(kafka_service: Any) -> None:
    """dlq groups counts the three timeouts as one group; replay --group sends them once."""
    config = await dead_letter_orders(kafka_service, "kafka", None, None)
    env = environment(kafka_service, config)
    topic = config.topics[0]

    listed = await cli("dlq", "groups", "--json", env=env)
    assert listed.code == 0, listed.err
    assert [(g["fingerprint"], g["count"]) for g in listed.json()] == [
        (TIMEOUT_GROUP, 3),
        ("ValueError: bad payload in '<str>'", 2),
    ]
    table = await cli("dlq", "groups", env=env)
    assert table.out.splitlines()[0].split() == ["COUNT", "FIRST", "LAST", "FINGERPRINT"]
    assert TIMEOUT_GROUP in table.out

    before = await count_records(kafka_service.bootstrap_servers, topic)
    dry = await cli("dlq", "replay", "--group", TIMEOUT_GROUP, "--dry-run", "--json", env=env)
    assert dry.json()["selected"] == 3
    first = await cli("dlq", "replay", "--group", TIMEOUT_GROUP, env=env)
    assert first.out.strip() == "replayed 3 dead letter(s) to their main topic", first.err
    again = await cli("dlq", "replay", "--group", TIMEOUT_GROUP, "--json", env=env)
    assert again.json()["replayed"] == 0
    nothing = await cli("dlq", "replay", "--group", "no such group", "--json", env=env)
    assert nothing.json()["replayed"] == 0  # not "everything": an empty group selects none
    assert await count_records(kafka_service.bootstrap_servers, topic) == before + 3

    waiting = await cli("dlq", "groups", "--json", env=env)
    assert [(g["fingerprint"], g["count"]) for g in waiting.json()] == [
        ("ValueError: bad payload in '<str>'", 2)
    ]
    both = await cli("dlq", "replay", "--group", TIMEOUT_GROUP, f"{topic}:0:0", env=env)
    assert_one_line_error(both, "--group")


async def test_console_refusals_are_one_line(kafka_service: Any) -> None:
    """Another interface without --auth, a taken port, a bad --auth: one line, non-zero."""
    env = environment(kafka_service, KAFKA_GROUP="g", KAFKA_TOPICS="orders")
    exposed = await cli("console", "--host", "0.0.0.0", env=env)
    assert_one_line_error(exposed, "--host", "--auth")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = await cli("console", "--port", port, env=env)
    assert_one_line_error(busy, "--port", port)
    bad_auth = await cli("console", "--auth", "no_such_module:check", env=env)
    assert_one_line_error(bad_auth, "no_such_module")

"""In memory as on a broker, a record without key and value goes through every tier."""

from __future__ import annotations

from kafka_retry import Config, Message
from kafka_retry.testing import TestConsumer

HEADERS = [("trace", b"\x00\xff"), ("trace", None)]


async def failing(message: Message) -> None:
    raise RuntimeError(f"boom {message.attempt}")


async def test_null_key_and_value_are_retried_and_dead_lettered() -> None:
    """A failing record with null key and value is retried, then dead-lettered as it was."""
    config = Config(
        bootstrap_servers="localhost:9092", group="g", topics=["t"], retry_intervals=[1]
    )
    async with TestConsumer(config, {"t": failing}) as t:
        await t.publish("t", None, key=None, headers=HEADERS)
        await t.drain()
    assert [(m.attempt, m.key, m.value, list(m.headers)) for m in t.calls] == [
        (1, None, None, HEADERS),
        (2, None, None, HEADERS),
    ]
    [dead] = t.dead_letters("t")
    assert (dead.key, dead.value, list(dead.headers)) == (None, None, HEADERS)

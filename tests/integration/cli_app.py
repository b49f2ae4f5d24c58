"""A consumer for the ``kafka-retry run`` test: prints each value it handles.

Its settings come from the environment (``KAFKA_BOOTSTRAP_SERVERS``,
``KAFKA_GROUP``, ``KAFKA_TOPICS``), with the short group timeouts tests use.
"""

from __future__ import annotations

from kafka_retry import Config, Consumer, Message

config = Config.from_env(
    commit_interval=0.2,
    session_timeout_ms=6000,
    rebalance_timeout_ms=4000,
    drain_timeout=2.0,
    metrics=False,
)
consumer = Consumer(config)


@consumer.handler(config.topics[0])
async def handle(message: Message) -> None:
    """Say what was handled, at once (stdout is a pipe in the test)."""
    print(f"handled {message.value!r}", flush=True)

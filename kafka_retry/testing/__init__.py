"""Test support: the in-memory mode, :func:`consume_until`, and a pytest plugin.

In memory, the real consumer runtime runs against :class:`MemoryBroker` on a
:class:`VirtualClock` (the postgres retry backend on a :class:`MemoryRetryTable`)::

    from kafka_retry.testing import TestConsumer

    async with TestConsumer(consumer) as t:
        await t.publish("product", b"{}", key=b"42")
        await t.drain()
        assert [m.attempt for m in t.calls] == [1, 2]

Against a real broker, :func:`consume_until` runs a consumer until a condition
holds. The pytest plugin (loaded automatically) provides the fixtures
``memory_broker``, ``virtual_clock``, ``test_consumer``, ``kafka_bootstrap`` and
``database_url``.
"""

from __future__ import annotations

from kafka_retry.testing._broker import MemoryBroker
from kafka_retry.testing._clients import MemoryAdmin, MemoryProducer, MemoryTransport
from kafka_retry.testing._clock import VirtualClock
from kafka_retry.testing._consumer import MemoryConsumer
from kafka_retry.testing._harness import MakeTestConsumer, TestConsumer
from kafka_retry.testing._records import Call, DeadLetter, NotSettledError
from kafka_retry.testing._table import MemoryRetryTable
from kafka_retry.testing._until import consume_until

__all__ = [
    "Call",
    "DeadLetter",
    "MakeTestConsumer",
    "MemoryAdmin",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryProducer",
    "MemoryRetryTable",
    "MemoryTransport",
    "NotSettledError",
    "TestConsumer",
    "VirtualClock",
    "consume_until",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("kafka_retry.testing."):
        _obj.__module__ = "kafka_retry.testing"
del _name, _obj

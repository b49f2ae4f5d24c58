"""kafka-retry: consume Kafka with delayed retry tiers and dead letters, never losing a message."""

from __future__ import annotations

from kafka_retry.config import Config, DatabaseConfig
from kafka_retry.errors import (
    ConfigError,
    ConsumerStateError,
    KafkaRetryError,
    NonRetryableError,
    ServiceUnavailableError,
    SetupError,
)
from kafka_retry.message import Message, Provenance
from kafka_retry.runtime.consumer import Consumer, ConsumerState
from kafka_retry.topology import TopicChain, default_topic_name

__all__ = [
    "Config",
    "ConfigError",
    "Consumer",
    "ConsumerState",
    "ConsumerStateError",
    "DatabaseConfig",
    "KafkaRetryError",
    "Message",
    "NonRetryableError",
    "Provenance",
    "ServiceUnavailableError",
    "SetupError",
    "TopicChain",
    "default_topic_name",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("kafka_retry."):
        _obj.__module__ = "kafka_retry"
del _name, _obj

"""kafka-retry: consume Kafka with delayed retry tiers and dead letters, never losing a message."""

from __future__ import annotations

from kafka_retry._decoding import Decoder, default_decoder
from kafka_retry.config import CircuitBreaker, Config, DatabaseConfig
from kafka_retry.errors import (
    AuthenticationError,
    BatchFailed,
    ConfigError,
    ConsumerStateError,
    DeadLetterError,
    DecodeError,
    KafkaRetryError,
    NonRetryableError,
    SecurityError,
    ServiceUnavailableError,
    SetupError,
    TLSError,
)
from kafka_retry.message import Message, Provenance
from kafka_retry.runtime.consumer import Consumer, ConsumerState
from kafka_retry.topology import TopicChain, default_topic_name

__all__ = [
    "AuthenticationError",
    "BatchFailed",
    "CircuitBreaker",
    "Config",
    "ConfigError",
    "Consumer",
    "ConsumerState",
    "ConsumerStateError",
    "DatabaseConfig",
    "DeadLetterError",
    "DecodeError",
    "Decoder",
    "KafkaRetryError",
    "Message",
    "NonRetryableError",
    "Provenance",
    "SecurityError",
    "ServiceUnavailableError",
    "SetupError",
    "TLSError",
    "TopicChain",
    "default_decoder",
    "default_topic_name",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("kafka_retry."):
        _obj.__module__ = "kafka_retry"
del _name, _obj

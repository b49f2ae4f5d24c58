"""The one exception tree of kafka-retry.

Every error the library raises derives from :class:`KafkaRetryError`; errors of
aiokafka and asyncpg are translated at the boundary with ``raise ... from exc``.

::

    KafkaRetryError
    ├── ConfigError            bad settings, found before any connection
    ├── SetupError             handlers or topics do not match the config
    ├── ServiceUnavailableError  Kafka or PostgreSQL unreachable after the bound
    ├── ConsumerStateError     a lifecycle call that the state forbids
    └── NonRetryableError      raised by a handler: dead-letter at once
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConsumerStateError",
    "KafkaRetryError",
    "NonRetryableError",
    "ServiceUnavailableError",
    "SetupError",
]


class KafkaRetryError(Exception):
    """Raised for every error of kafka-retry; the root of the tree."""


class ConfigError(KafkaRetryError, ValueError):
    """Raised when a setting is invalid; names the field and the reason.

    Attributes:
        field: The name of the offending setting, as the user spells it.
        reason: Why its value was refused.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class SetupError(KafkaRetryError):
    """Raised at start when handlers and topics do not match, or topics are missing."""


class ServiceUnavailableError(KafkaRetryError):
    """Raised when Kafka or PostgreSQL stays unreachable after the configured attempts.

    Attributes:
        address: The address (or addresses) that could not be reached.
    """

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class ConsumerStateError(KafkaRetryError, RuntimeError):
    """Raised when a lifecycle call is not allowed in the consumer's current state."""


class NonRetryableError(KafkaRetryError):
    """Raised by a handler when retrying cannot help: the message is dead-lettered at once."""

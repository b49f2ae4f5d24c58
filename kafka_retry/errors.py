"""The one exception tree of kafka-retry.

Every error the library raises derives from :class:`KafkaRetryError`; errors of
aiokafka and asyncpg are translated at the boundary with ``raise ... from exc``.

::

    KafkaRetryError
    ├── ConfigError            bad settings, found before any connection
    ├── SetupError             handlers, topics or the broker do not match the config
    ├── ServiceUnavailableError  Kafka or PostgreSQL unreachable after the bound
    ├── SecurityError          reached, but the connection cannot be secured or authenticated
    │   ├── TLSError           TLS handshake refused: untrusted certificate, wrong host name, ...
    │   └── AuthenticationError  credentials refused (SASL, PostgreSQL password or certificate)
    ├── ConsumerStateError     a lifecycle call that the state forbids
    ├── DeadLetterError        a dead-letter operation that cannot be done
    ├── BatchFailed            raised by a batch handler: these messages of the batch failed
    └── NonRetryableError      raised by a handler: dead-letter at once
        └── DecodeError        a value does not decode into the handler's payload type
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kafka_retry.message import Message

__all__ = [
    "AuthenticationError",
    "BatchFailed",
    "ConfigError",
    "ConsumerStateError",
    "DeadLetterError",
    "DecodeError",
    "KafkaRetryError",
    "NonRetryableError",
    "SecurityError",
    "ServiceUnavailableError",
    "SetupError",
    "TLSError",
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
    """Raised at start when handlers and topics do not match, or topics are missing.

    Also when the broker refuses what the config asks of it, such as an
    idempotent producer from a broker that hands out no producer ids.
    """


class ServiceUnavailableError(KafkaRetryError):
    """Raised when Kafka or PostgreSQL stays unreachable after the configured attempts.

    Attributes:
        address: The address (or addresses) that could not be reached.
    """

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class SecurityError(KafkaRetryError):
    """Raised when a server answers but the connection cannot be secured or authenticated.

    Retrying cannot fix this, so it is raised at the first attempt, not after
    the connection bound. The message names the address and the problem, never
    a password or key.

    Attributes:
        address: The address (or addresses) concerned.
    """

    def __init__(self, message: str, *, address: str) -> None:
        super().__init__(message)
        self.address = address


class TLSError(SecurityError):
    """Raised when a TLS handshake fails.

    The server's certificate is not trusted or not for this host name, the
    server refuses the client certificate (or its absence), or one side does
    not speak TLS.
    """


class AuthenticationError(SecurityError):
    """Raised when the server refuses the credentials.

    A wrong SASL username or password, a SASL mechanism the listener does not
    offer, a PostgreSQL password or client certificate that is refused, or no
    ``pg_hba.conf`` rule that admits the connection.
    """


class ConsumerStateError(KafkaRetryError, RuntimeError):
    """Raised when a lifecycle call is not allowed in the consumer's current state."""


class DeadLetterError(KafkaRetryError):
    """Raised when a dead letter cannot be found, listed, replayed or purged as asked.

    For example: an unknown id, a filter the backend cannot apply, or a broker
    that does not support deleting records.
    """


class NonRetryableError(KafkaRetryError):
    """Raised by a handler when retrying cannot help: the message is dead-lettered at once."""


class DecodeError(NonRetryableError):
    """Raised when a record's value does not decode into the payload type its handler takes.

    Invalid JSON, text that is not UTF-8, a null value for a payload that cannot
    be ``None``, or a model that refuses the data. The handler is not called:
    the message is dead-lettered at once, byte-exact, and this error's text
    (the decoder's validation message) is recorded as its error. A custom
    decoder raises it for data that no retry can fix.
    """


class BatchFailed(KafkaRetryError):
    """Raised by a batch handler when only some messages of its batch failed.

    Each message named here is handed to its own next tier with its own error
    (a :class:`NonRetryableError` dead-letters it at once); every other message
    of the batch succeeded. An empty mapping means none failed.

    Args:
        failures: The failed messages of the batch, each with its error.

    Attributes:
        failures: The same mapping, read-only.

    Raises:
        TypeError: A key is not a ``Message`` or a value is not an exception instance.
    """

    def __init__(self, failures: Mapping[Message, BaseException]) -> None:
        checked: dict[Message, BaseException] = {}
        for message, error in failures.items():
            if not isinstance(message, Message):
                raise TypeError(
                    f"BatchFailed maps the batch's Message objects to errors, got key {message!r}"
                )
            if not isinstance(error, Exception):
                raise TypeError(
                    f"BatchFailed needs an exception instance for "
                    f"{message.topic}[{message.partition}]@{message.offset}, got {error!r}"
                )
            checked[message] = error
        self.failures: Mapping[Message, BaseException] = MappingProxyType(checked)
        super().__init__(f"{len(checked)} message(s) of the batch failed")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (dict(self.failures),))

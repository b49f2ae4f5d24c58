"""Settings: :class:`Config` for the consumer, :class:`DatabaseConfig` for PostgreSQL.

Both are frozen attrs records, validated at construction: a bad value raises
:class:`~kafka_retry.ConfigError` naming the field, before any connection is made.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import os
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from kafka_retry._decoding import Decoder, default_decoder
from kafka_retry._env import config_fields_from_env, database_fields_from_env
from kafka_retry.errors import ConfigError
from kafka_retry.topology import (
    TopicChain,
    TopicNameGenerator,
    build_chain,
    default_topic_name,
    find_collision,
)

__all__ = ["CircuitBreaker", "Config", "DatabaseConfig"]

RetryBackendName = Literal["kafka", "postgres"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Ordering = Literal["partition", "key", "none"]
OrderedDeadLetter = Literal["release", "dead_letter"]

#: The in-place retry backoff is multiplied by a random factor from 1 up to this.
BLOCKING_JITTER = 1.5

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
#: The port aiokafka and librdkafka take for a server given without one.
DEFAULT_KAFKA_PORT = 9092
#: The longest retry interval: 100 years, so every due time stays a valid timestamp.
MAX_INTERVAL = 100 * 365.25 * 86_400


def _fail(field: str, reason: str) -> ConfigError:
    return ConfigError(field, reason)


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise _fail(attribute.name, f"must be a finite number > 0, got {value!r}")


def _flag(_inst: object, attribute: attrs.Attribute[Any], value: bool) -> None:
    if not isinstance(value, bool):
        raise _fail(attribute.name, f"must be True or False, got {value!r}")


def _tracing_api_installed() -> bool:
    # Looked up, not imported: the API loads only once a consumer traces.
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:  # no ``opentelemetry`` package at all
        return False


def _identifier(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise _fail(
            attribute.name,
            f"must be a plain SQL identifier (letters, digits, _; at most 63), got {value!r}",
        )


def _client_context(field: str) -> Callable[[Any, Any, Any], None]:
    def check(_inst: object, _attribute: object, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, ssl.SSLContext):
            raise _fail(field, f"must be an ssl.SSLContext, got {type(value).__name__}")
        if value.protocol == ssl.PROTOCOL_TLS_SERVER:
            raise _fail(
                field, "is a server context; make a client one (ssl.create_default_context)"
            )

    return check


def _context_repr(context: ssl.SSLContext | None) -> str:
    # The default repr is only an address; what a reader of logs needs is how it verifies.
    if context is None:
        return "None"
    mode = ssl.VerifyMode(context.verify_mode).name
    return f"<ssl.SSLContext verify_mode={mode} check_hostname={context.check_hostname}>"


def _conflicts(given: Mapping[str, object]) -> str | None:
    named = [name for name, value in given.items() if value]
    if not named:
        return None
    return (
        f"cannot be combined with {', '.join(named)}: the context is used as it is, so "
        "set CAs, client certificate and verification on it (load_verify_locations, ...)"
    )


def _split_list(value: str | Iterable[str]) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(item).strip() for item in items if str(item).strip())


def _with_port(server: str) -> str:
    """``server`` with Kafka's default port added when it names a host only."""
    if server.startswith("[") and server.endswith("]"):
        return f"{server}:{DEFAULT_KAFKA_PORT}"
    try:
        address = ipaddress.ip_address(server)
    except ValueError:
        return server if ":" in server else f"{server}:{DEFAULT_KAFKA_PORT}"
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{DEFAULT_KAFKA_PORT}"


def _servers(value: str | Iterable[str]) -> tuple[str, ...]:
    # A bare host means port 9092, as aiokafka and librdkafka read it; writing
    # the port out keeps every later reader of the list on host:port.
    return tuple(_with_port(server) for server in _split_list(value))


def _intervals(value: Iterable[float] | str) -> tuple[float, ...]:
    if isinstance(value, str):
        items: list[Any] = [item for item in value.split(",") if item.strip()]
    else:
        items = list(value)
    try:
        return tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise _fail("retry_intervals", f"must be numbers of seconds, got {value!r}") from None


def _breaker_field(name: str, value: object, *, whole: bool = False) -> None:
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        raise _fail(f"circuit_breaker.{name}", f"must be a number > 0, got {value!r}")


@attrs.frozen
class CircuitBreaker:
    """When to stop calling a main topic's handler because its downstream is down.

    One breaker per main topic covers that topic's partitions in every tier. It
    *opens* when at least ``failure_ratio`` of the topic's last ``window``
    handler calls failed with a retryable error: no handler call starts for
    the topic until ``open_for`` seconds have passed. Then it is *half-open*:
    one message goes through; a success closes the breaker, a failure opens it
    again for twice as long, up to ``max_open_for``.

    Raises:
        ConfigError: A value is out of range; names the field.
    """

    failure_ratio: float = 0.5
    window: int = 20
    open_for: float = 30.0
    max_open_for: float = 300.0

    def __attrs_post_init__(self) -> None:
        _breaker_field("failure_ratio", self.failure_ratio)
        if self.failure_ratio > 1:
            ratio = self.failure_ratio
            raise _fail("circuit_breaker.failure_ratio", f"must be <= 1, got {ratio!r}")
        _breaker_field("window", self.window, whole=True)
        _breaker_field("open_for", self.open_for)
        _breaker_field("max_open_for", self.max_open_for)
        if self.max_open_for < self.open_for:
            raise _fail("circuit_breaker.max_open_for", "must be >= open_for")


@attrs.frozen
class DatabaseConfig:
    """How to reach PostgreSQL for the ``postgres`` retry backend.

    ``host`` may be a directory, which means a Unix socket there.
    ``sslmode`` takes libpq's values (``disable`` … ``verify-full``);
    ``sslrootcert`` / ``sslcert`` / ``sslkey`` name certificate files;
    ``sslpassword`` decrypts an encrypted ``sslkey``. ``tls_context``, the
    user's own ``ssl.SSLContext``, replaces the ``ssl*`` files and is passed to
    asyncpg as it is; two configs are equal only with the same context object.
    """

    host: str = attrs.field(default="localhost")
    port: int = attrs.field(default=5432)
    user: str = attrs.field(default="postgres")
    password: str | None = attrs.field(default=None, repr=False)
    database: str = attrs.field(default="postgres")
    schema: str = attrs.field(default="public", validator=_identifier)
    table: str = attrs.field(default="kafka_consumer_retries", validator=_identifier)
    sslmode: str | None = attrs.field(default=None)
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    sslpassword: str | None = attrs.field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = attrs.field(
        default=None, validator=_client_context("database.tls_context"), repr=_context_repr
    )

    def __attrs_post_init__(self) -> None:
        if self.tls_context is None:
            return
        conflict = _conflicts(
            {
                "database.sslrootcert": self.sslrootcert,
                "database.sslcert": self.sslcert,
                "database.sslkey": self.sslkey,
                "database.sslpassword": self.sslpassword,
            }
        )
        if conflict:
            raise _fail("database.tls_context", conflict)
        if self.sslmode in ("disable", "allow", "prefer"):
            raise _fail(
                "database.tls_context",
                f"always means TLS, but database.sslmode is {self.sslmode!r}: "
                "leave sslmode unset or make it require, verify-ca or verify-full",
            )

    @port.validator
    def _check_port(self, attribute: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or not 0 < value < 65536:
            raise _fail("database.port", f"must be a TCP port (1-65535), got {value!r}")

    @sslmode.validator
    def _check_sslmode(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and value not in _SSL_MODES:
            raise _fail("database.sslmode", f"must be one of {', '.join(_SSL_MODES)}")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> DatabaseConfig:
        """Parse ``postgresql://user:password@host:port/database?sslmode=…``.

        A Unix socket is given as ``?host=/run/postgresql`` (the host part may be empty).

        Raises:
            ConfigError: The URL is not a PostgreSQL URL or its port is not a number.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise _fail("database_url", "must start with postgresql:// (password not shown)")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            port = parts.port or int(query.get("port", 5432))
        except ValueError:
            raise _fail("database_url", "port is not a number") from None
        fields: dict[str, Any] = {
            "host": query.get("host") or unquote(parts.hostname or "") or "localhost",
            "port": port,
            "user": unquote(parts.username or "") or query.get("user") or "postgres",
            "password": unquote(parts.password) if parts.password else query.get("password"),
            "database": unquote(parts.path.lstrip("/")) or "postgres",
        }
        for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword"):
            if key in query:
                fields[key] = query[key]
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DatabaseConfig | None:
        """Read ``DATABASE_URL`` and ``DATABASE_*``; None when neither is set.

        ``DATABASE_*`` variables override the URL's parts.

        Raises:
            ConfigError: A variable is invalid; names the variable.
        """
        env = os.environ if environ is None else environ
        url, fields = database_fields_from_env(env)
        if url:
            return cls.from_url(url, **fields)
        return cls(**fields) if fields else None

    @property
    def qualified_table(self) -> str:
        """``"schema"."table"``, quoted; safe because both are validated identifiers."""
        return f'"{self.schema}"."{self.table}"'


@attrs.frozen
class Config:
    """Everything the consumer needs; see the configuration docs for each field.

    ``metrics`` turns the Prometheus metrics on (the default) or off;
    ``metrics_interval`` is how often, in seconds, the sampled gauges (lag,
    in-flight handlers, retry-table rows) are refreshed. ``tls_context``, the
    user's own ``ssl.SSLContext``, turns TLS on and is given as it is to every
    Kafka client; it replaces the ``tls_*`` settings, and two configs are equal
    only with the same context object. ``tracing`` makes every handler call an
    OpenTelemetry span (needs the ``otel`` extra).

    Raises:
        ConfigError: At construction, naming the first invalid field.
    """

    bootstrap_servers: tuple[str, ...] = attrs.field(converter=_servers)
    group: str = attrs.field()
    topics: tuple[str, ...] = attrs.field(converter=_split_list)
    retry_intervals: tuple[float, ...] = attrs.field(default=(), converter=_intervals)
    retry_backend: RetryBackendName = attrs.field(default="kafka")
    database: DatabaseConfig | None = None
    maintenance_interval: float = attrs.field(default=3600.0, validator=_positive)
    topic_name_generator: TopicNameGenerator = default_topic_name
    decoder: Decoder = default_decoder
    # Security (Kafka)
    tls_enabled: bool = False
    tls_skip_verify_peer: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_key_password: str | None = attrs.field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = attrs.field(
        default=None, validator=_client_context("tls_context"), repr=_context_repr
    )
    sasl_mechanism: SaslMechanism | None = attrs.field(default=None)
    sasl_username: str | None = None
    sasl_password: str | None = attrs.field(default=None, repr=False)
    # Runtime
    handler_timeout: float | None = attrs.field(default=None, validator=_positive)
    drain_timeout: float = attrs.field(default=30.0, validator=_positive)
    commit_interval: float = attrs.field(default=1.0, validator=_positive)
    connect_attempts: int = attrs.field(default=20)
    connect_interval: float = attrs.field(default=1.0, validator=_positive)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(default=(), converter=tuple)
    create_topics: bool = True
    replication_factor: int = attrs.field(default=1)
    dead_letter_retention_ms: int | None = attrs.field(default=None)
    idempotence: bool = True
    exactly_once: bool = attrs.field(default=False, validator=_flag)
    instance_id: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = attrs.field(default="earliest")
    isolation_level: Literal["read_uncommitted", "read_committed"] = attrs.field(
        default="read_uncommitted"
    )
    lenient_header_names: bool = attrs.field(default=True, validator=_flag)
    tune_gc: bool = attrs.field(default=True, validator=_flag)
    max_in_flight: int = attrs.field(default=1000)
    max_run_ahead: int = attrs.field(default=10_000)
    max_buffered_bytes: int = attrs.field(default=64 * 1024 * 1024)
    ordering: Ordering = attrs.field(default="partition")
    max_poll_interval_ms: int = attrs.field(default=300_000)
    session_timeout_ms: int = attrs.field(default=45_000)
    rebalance_timeout_ms: int | None = None
    client_id: str = "kafka-retry"
    error_max_length: int = attrs.field(default=4096)
    retry_batch_size: int = attrs.field(default=250)
    retry_lease: float = attrs.field(default=600.0, validator=_positive)
    # Outages
    blocking_retries: int = attrs.field(default=0)
    blocking_backoff: float = attrs.field(default=0.1, validator=_positive)
    circuit_breaker: CircuitBreaker | None = attrs.field(default=None)
    log_first_failures: int = attrs.field(default=5)
    log_summary_interval: float = attrs.field(default=10.0, validator=_positive)
    ordered_retries: bool = attrs.field(default=False, validator=_flag)
    ordered_dead_letter: OrderedDeadLetter = attrs.field(default="release")
    # Observability
    metrics: bool = attrs.field(default=True, validator=_flag)
    metrics_interval: float = attrs.field(default=5.0, validator=_positive)
    tracing: bool = attrs.field(default=False, validator=_flag)

    @bootstrap_servers.validator
    def _check_servers(self, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if not value:
            raise _fail("bootstrap_servers", "at least one host:port is required")
        for server in value:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise _fail("bootstrap_servers", f"{server!r} is not host:port")

    @dead_letter_retention_ms.validator
    def _check_dead_letter_retention(self, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < -1 or value == 0:
            raise _fail(attribute.name, f"must be >= 1, or -1 to keep forever, got {value!r}")

    @group.validator
    def _check_group(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise _fail("group", "must be a non-blank consumer group name")

    @topics.validator
    def _check_topics(self, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if not value:
            raise _fail("topics", "at least one topic is required")
        duplicates = sorted({t for t in value if value.count(t) > 1})
        if duplicates:
            raise _fail("topics", f"listed more than once: {', '.join(duplicates)}")

    @retry_intervals.validator
    def _check_intervals(self, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
        for number, interval in enumerate(value, start=1):
            if not 0 < interval <= MAX_INTERVAL:
                raise _fail(
                    "retry_intervals",
                    f"interval {number} must be a number of seconds > 0 and at most"
                    f" {MAX_INTERVAL:.0f} (100 years), got {interval!r}",
                )

    @retry_backend.validator
    def _check_backend(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in ("kafka", "postgres"):
            raise _fail("retry_backend", f"must be 'kafka' or 'postgres', got {value!r}")

    @sasl_mechanism.validator
    def _check_sasl(self, attribute: attrs.Attribute[Any], value: str | None) -> None:
        if value not in (None, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise _fail("sasl_mechanism", "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")

    @ordering.validator
    def _check_ordering(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in ("partition", "key", "none"):
            raise _fail("ordering", f"must be 'partition', 'key' or 'none', got {value!r}")

    @ordered_dead_letter.validator
    def _check_ordered_dead_letter(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in ("release", "dead_letter"):
            raise _fail(attribute.name, f"must be 'release' or 'dead_letter', got {value!r}")

    @auto_offset_reset.validator
    def _check_reset(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in ("earliest", "latest"):
            raise _fail("auto_offset_reset", "must be 'earliest' or 'latest'")

    @isolation_level.validator
    def _check_isolation(self, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in ("read_uncommitted", "read_committed"):
            raise _fail("isolation_level", "must be 'read_uncommitted' or 'read_committed'")

    @tracing.validator
    def _check_tracing(self, attribute: attrs.Attribute[Any], value: bool) -> None:
        if value and not _tracing_api_installed():
            raise _fail("tracing", "needs the OpenTelemetry API: pip install 'kafka-retry[otel]'")

    @non_retryable.validator
    def _check_non_retryable(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        for item in value:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise _fail("non_retryable", f"{item!r} is not an exception class")

    @circuit_breaker.validator
    def _check_breaker(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, CircuitBreaker):
            raise _fail("circuit_breaker", f"must be a CircuitBreaker or None, got {value!r}")

    def __attrs_post_init__(self) -> None:
        self._check_counts()
        self._check_blocking()
        if self.retry_backend == "postgres" and self.database is None:
            raise _fail("database", "the postgres retry backend needs database settings")
        if self.ordered_retries and self.retry_backend != "postgres":
            raise _fail(
                "ordered_retries", "needs retry_backend='postgres' (the order is kept in its table)"
            )
        if self.sasl_mechanism and not (self.sasl_username and self.sasl_password):
            raise _fail("sasl_username", "SASL needs both a username and a password")
        self._check_tls()
        self._check_exactly_once()
        if not callable(self.topic_name_generator):
            raise _fail("topic_name_generator", "must be callable (group, topic, prefix) -> str")
        if not callable(self.decoder):
            raise _fail("decoder", "must be callable (annotation) -> decode(value, message)")
        collision = find_collision([self.chain(t) for t in self.topics], self.topics)
        if collision:
            raise _fail("topic_name_generator", collision)

    def _check_tls(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise _fail("tls_cert_file", "a client certificate needs its key, and the other way")
        if self.tls_context is not None:
            conflict = _conflicts(
                {
                    "tls_ca_file": self.tls_ca_file,
                    "tls_cert_file": self.tls_cert_file,
                    "tls_key_file": self.tls_key_file,
                    "tls_key_password": self.tls_key_password,
                    "tls_skip_verify_peer": self.tls_skip_verify_peer,
                }
            )
            if conflict:
                raise _fail("tls_context", conflict)

    def _check_exactly_once(self) -> None:
        if self.instance_id is not None and not (
            isinstance(self.instance_id, str) and self.instance_id.strip()
        ):
            raise _fail("instance_id", "must be a non-blank name, stable across restarts")
        if not self.exactly_once:
            return
        if self.retry_backend != "kafka":
            raise _fail(
                "exactly_once",
                "needs the kafka retry backend: a hand-off to the retry table cannot join"
                " a Kafka transaction",
            )
        if not self.idempotence:
            raise _fail("exactly_once", "needs idempotence (transactions are idempotent)")
        if self.ordering != "partition":
            raise _fail(
                "ordering",
                "exactly_once needs ordering='partition': a commit must cover every"
                " forward of its transaction, and with 'key' or 'none' a slow handler"
                " below a forwarded record would hold it back",
            )

    def _check_blocking(self) -> None:
        for name, number in (
            ("blocking_retries", self.blocking_retries),
            ("log_first_failures", self.log_first_failures),
        ):
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise _fail(name, f"must be a whole number >= 0, got {number!r}")
        # A worker waits in place; its partition's records and commit wait with it,
        # so the longest wait must stay well inside max_poll_interval_ms.
        longest = self.longest_blocking_wait
        if longest * 1000 >= self.max_poll_interval_ms:
            raise _fail(
                "blocking_retries",
                f"{self.blocking_retries} in-place retries from {self.blocking_backoff}s may"
                f" wait {longest:.1f}s, not less than max_poll_interval_ms"
                f" ({self.max_poll_interval_ms})",
            )

    @property
    def longest_blocking_wait(self) -> float:
        """Seconds the in-place retries of one message may sleep in all, at most."""
        doublings: int = 2**self.blocking_retries - 1
        return BLOCKING_JITTER * self.blocking_backoff * doublings

    def _check_counts(self) -> None:
        bounds = {
            "connect_attempts": self.connect_attempts,
            "max_in_flight": self.max_in_flight,
            "max_run_ahead": self.max_run_ahead,
            "max_buffered_bytes": self.max_buffered_bytes,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "session_timeout_ms": self.session_timeout_ms,
            "rebalance_timeout_ms": self.effective_rebalance_timeout_ms,
            "error_max_length": self.error_max_length,
            "retry_batch_size": self.retry_batch_size,
        }
        for name, number in bounds.items():
            if not isinstance(number, int) or number < 1:
                raise _fail(name, f"must be a whole number >= 1, got {number!r}")
        if not isinstance(self.replication_factor, int) or self.replication_factor == 0:
            raise _fail("replication_factor", "must be >= 1, or -1 for the broker's default")
        drain_ms = self.drain_timeout * 1000
        if self.rebalance_timeout_ms is not None and self.rebalance_timeout_ms < drain_ms:
            # A revoke drains for up to drain_timeout; the group would give up first.
            raise _fail(
                "rebalance_timeout_ms",
                f"must be at least drain_timeout ({drain_ms:.0f} ms) so a revoke can drain,"
                f" got {self.rebalance_timeout_ms!r}",
            )

    def topic_chain(self, topic: str) -> list[str]:
        """The chain of ``topic``: main, retry topics, dead letter.

        >>> config = Config(bootstrap_servers="k:9092", group="algolia",
        ...                 topics=["product"], retry_intervals=[60])
        >>> config.topic_chain("product")
        ['product', 'retry1.algolia.product', 'deadLetter.algolia.product']
        """
        return self.chain(topic).topics

    def chain(self, topic: str) -> TopicChain:
        """The :class:`TopicChain` of ``topic``."""
        return build_chain(self.group, topic, len(self.retry_intervals), self.topic_name_generator)

    @property
    def effective_rebalance_timeout_ms(self) -> int:
        """The rebalance timeout: given, or long enough for a revoke to drain in-flight work."""
        if self.rebalance_timeout_ms is not None:
            return self.rebalance_timeout_ms
        return max(self.session_timeout_ms, round(self.drain_timeout * 1000) + 10_000)

    @property
    def effective_isolation_level(self) -> str:
        """What every tier reads with: ``read_committed`` with ``exactly_once``, else as set.

        A tier must not handle forwards of aborted transactions, so exactly_once
        overrides ``isolation_level``.
        """
        return "read_committed" if self.exactly_once else self.isolation_level

    @property
    def transactional_prefix(self) -> str:
        """``<group>.<instance id>``: what each tier's transactional id starts with.

        The instance id is ``instance_id``, or the host name: stable across
        restarts of one instance (a StatefulSet pod, a VM), distinct between
        instances.
        """
        return f"{self.group}.{self.instance_id or socket.gethostname()}"

    @property
    def bootstrap(self) -> str:
        """The servers as one comma-separated string."""
        return ",".join(self.bootstrap_servers)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read the settings from ``KAFKA_*`` and ``DATABASE_*`` environment variables.

        Keyword arguments override what the environment says. Every variable is
        listed in ``docs/configuration.md``.

        Raises:
            ConfigError: A variable is missing or invalid; names the variable.
        """
        env = os.environ if environ is None else environ
        fields = config_fields_from_env(env)
        database = DatabaseConfig.from_env(env)
        if database is not None:
            fields["database"] = database
        return cls(**{**fields, **overrides})

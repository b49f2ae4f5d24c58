"""Reading :class:`~kafka_retry.Config` fields from environment variables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kafka_retry.errors import ConfigError

# variable -> (Config field, parser)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(variable: str) -> Callable[[str], bool]:
    def parse(raw: str) -> bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(variable, f"must be true or false, got {raw!r}")

    return parse


def _number(variable: str, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            return kind(raw.strip())
        except ValueError:
            raise ConfigError(variable, f"must be a number, got {raw!r}") from None

    return parse


def _text(raw: str) -> str:
    return raw.strip()


KAFKA_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("bootstrap_servers", _text),
    "KAFKA_GROUP": ("group", _text),
    "KAFKA_TOPICS": ("topics", _text),
    "KAFKA_RETRY_INTERVALS": ("retry_intervals", _text),
    "KAFKA_RETRY_BACKEND": ("retry_backend", _text),
    "KAFKA_MAINTENANCE_INTERVAL": (
        "maintenance_interval",
        _number("KAFKA_MAINTENANCE_INTERVAL", float),
    ),
    "KAFKA_TLS_ENABLE": ("tls_enabled", _bool("KAFKA_TLS_ENABLE")),
    "KAFKA_TLS_SKIP_VERIFY_PEER": ("tls_skip_verify_peer", _bool("KAFKA_TLS_SKIP_VERIFY_PEER")),
    "KAFKA_TLS_CA_FILE": ("tls_ca_file", _text),
    "KAFKA_TLS_CERT_FILE": ("tls_cert_file", _text),
    "KAFKA_TLS_KEY_FILE": ("tls_key_file", _text),
    "KAFKA_SASL_MECHANISM": ("sasl_mechanism", lambda raw: raw.strip().upper()),
    "KAFKA_SASL_USERNAME": ("sasl_username", _text),
    "KAFKA_HANDLER_TIMEOUT": ("handler_timeout", _number("KAFKA_HANDLER_TIMEOUT", float)),
    "KAFKA_DRAIN_TIMEOUT": ("drain_timeout", _number("KAFKA_DRAIN_TIMEOUT", float)),
    "KAFKA_COMMIT_INTERVAL": ("commit_interval", _number("KAFKA_COMMIT_INTERVAL", float)),
    "KAFKA_CONNECT_ATTEMPTS": ("connect_attempts", _number("KAFKA_CONNECT_ATTEMPTS", int)),
    "KAFKA_CREATE_TOPICS": ("create_topics", _bool("KAFKA_CREATE_TOPICS")),
    "KAFKA_REPLICATION_FACTOR": (
        "replication_factor",
        _number("KAFKA_REPLICATION_FACTOR", int),
    ),
    "KAFKA_DEAD_LETTER_RETENTION_MS": (
        "dead_letter_retention_ms",
        _number("KAFKA_DEAD_LETTER_RETENTION_MS", int),
    ),
    "KAFKA_IDEMPOTENCE": ("idempotence", _bool("KAFKA_IDEMPOTENCE")),
    "KAFKA_EXACTLY_ONCE": ("exactly_once", _bool("KAFKA_EXACTLY_ONCE")),
    "KAFKA_INSTANCE_ID": ("instance_id", _text),
    "KAFKA_LENIENT_HEADER_NAMES": (
        "lenient_header_names",
        _bool("KAFKA_LENIENT_HEADER_NAMES"),
    ),
    "KAFKA_TUNE_GC": ("tune_gc", _bool("KAFKA_TUNE_GC")),
    "KAFKA_MAX_IN_FLIGHT": ("max_in_flight", _number("KAFKA_MAX_IN_FLIGHT", int)),
    "KAFKA_MAX_RUN_AHEAD": ("max_run_ahead", _number("KAFKA_MAX_RUN_AHEAD", int)),
    "KAFKA_MAX_BUFFERED_BYTES": (
        "max_buffered_bytes",
        _number("KAFKA_MAX_BUFFERED_BYTES", int),
    ),
    "KAFKA_ORDERING": ("ordering", _text),
    "KAFKA_BLOCKING_RETRIES": ("blocking_retries", _number("KAFKA_BLOCKING_RETRIES", int)),
    "KAFKA_BLOCKING_BACKOFF": ("blocking_backoff", _number("KAFKA_BLOCKING_BACKOFF", float)),
    "KAFKA_LOG_FIRST_FAILURES": (
        "log_first_failures",
        _number("KAFKA_LOG_FIRST_FAILURES", int),
    ),
    "KAFKA_LOG_SUMMARY_INTERVAL": (
        "log_summary_interval",
        _number("KAFKA_LOG_SUMMARY_INTERVAL", float),
    ),
    "KAFKA_METRICS": ("metrics", _bool("KAFKA_METRICS")),
    "KAFKA_METRICS_INTERVAL": ("metrics_interval", _number("KAFKA_METRICS_INTERVAL", float)),
    "KAFKA_TRACING": ("tracing", _bool("KAFKA_TRACING")),
    "KAFKA_ORDERED_RETRIES": ("ordered_retries", _bool("KAFKA_ORDERED_RETRIES")),
    "KAFKA_ORDERED_DEAD_LETTER": ("ordered_dead_letter", _text),
}

#: Secrets: the variable, or ``<variable>_FILE`` naming a file that holds it.
SECRET_VARIABLES: dict[str, str] = {
    "KAFKA_SASL_PASSWORD": "sasl_password",
    "KAFKA_TLS_KEY_PASSWORD": "tls_key_password",
}

DATABASE_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_HOST": ("host", _text),
    "DATABASE_PORT": ("port", _number("DATABASE_PORT", int)),
    "DATABASE_USER": ("user", _text),
    "DATABASE_NAME": ("database", _text),
    "DATABASE_SCHEMA": ("schema", _text),
    "DATABASE_TABLE": ("table", _text),
    "DATABASE_SSLMODE": ("sslmode", _text),
    "DATABASE_SSLROOTCERT": ("sslrootcert", _text),
    "DATABASE_SSLCERT": ("sslcert", _text),
    "DATABASE_SSLKEY": ("sslkey", _text),
}

#: Database secrets, read like :data:`SECRET_VARIABLES`.
DATABASE_SECRETS: dict[str, str] = {
    "DATABASE_PASSWORD": "password",
    "DATABASE_SSLPASSWORD": "sslpassword",
}


def read_secret(env: Mapping[str, str], variable: str) -> str | None:
    """The value of ``variable``, or the contents of the file ``<variable>_FILE`` names.

    Line breaks at the end of the file are dropped, as editors and ``echo`` add them.

    Raises:
        ConfigError: Both are set, or the file cannot be read (names the
            variable, never the secret).
    """
    path = env.get(f"{variable}_FILE")
    if variable in env:
        if path is not None:
            raise ConfigError(variable, f"set either {variable} or {variable}_FILE, not both")
        return env[variable]
    if path is None:
        return None
    try:
        return Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{variable}_FILE", f"cannot read {path}: {exc.strerror}") from None


def config_fields_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Translate the environment into keyword arguments for ``Config``.

    Raises:
        ConfigError: A required variable is missing or a value is malformed.
    """
    fields: dict[str, Any] = {}
    for variable, (field, parse) in KAFKA_VARIABLES.items():
        if variable in env:
            fields[field] = parse(env[variable])
    for variable, field in SECRET_VARIABLES.items():
        secret = read_secret(env, variable)
        if secret is not None:
            fields[field] = secret
    for variable, field in (
        ("KAFKA_BOOTSTRAP_SERVERS", "bootstrap_servers"),
        ("KAFKA_GROUP", "group"),
        ("KAFKA_TOPICS", "topics"),
    ):
        if field not in fields:
            raise ConfigError(variable, "is not set")
    return fields


def database_fields_from_env(env: Mapping[str, str]) -> tuple[str | None, dict[str, Any]]:
    """``DATABASE_URL`` (or None) and the ``DatabaseConfig`` fields that ``DATABASE_*`` set.

    Raises:
        ConfigError: A value is malformed; names the variable.
    """
    fields: dict[str, Any] = {}
    for variable, (field, parse) in DATABASE_VARIABLES.items():
        if variable in env:
            fields[field] = parse(env[variable])
    for variable, field in DATABASE_SECRETS.items():
        secret = read_secret(env, variable)
        if secret is not None:
            fields[field] = secret
    return env.get("DATABASE_URL") or None, fields

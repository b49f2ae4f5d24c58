"""tls_context: the user's own SSLContext, used as it is and never mixed with the tls_* files."""

from __future__ import annotations

import ssl
from typing import Any

import attrs
import pytest

from kafka_retry import Config, ConfigError, DatabaseConfig
from kafka_retry._kafka import AIOKafkaTransport, security_kwargs
from kafka_retry._tls import client_context
from kafka_retry.retry._pg_connect import connect_kwargs


def config(**fields: Any) -> Config:
    return Config(bootstrap_servers="k:9093", group="g", topics=["t"], **fields)


@pytest.fixture
def context() -> ssl.SSLContext:
    """A client context the way a user with a legacy CA makes one."""
    made = ssl.create_default_context()
    made.verify_flags &= ~ssl.VERIFY_X509_STRICT
    return made


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tls_ca_file", "/etc/ca.pem"),
        ("tls_cert_file", "/etc/client.pem"),
        ("tls_key_password", "secret"),
        ("tls_skip_verify_peer", True),
    ],
)
def test_context_with_a_file_setting_names_both(
    context: ssl.SSLContext, field: str, value: object
) -> None:
    """A context plus a tls_* setting is refused: the context would silently win."""
    extra = {"tls_key_file": "/etc/client.key"} if field == "tls_cert_file" else {}
    with pytest.raises(ConfigError) as caught:
        config(tls_context=context, **{field: value}, **extra)
    assert caught.value.field == "tls_context"
    assert field in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sslrootcert", "/etc/ca.pem"),
        ("sslcert", "/etc/client.pem"),
        ("sslkey", "/etc/client.key"),
        ("sslpassword", "secret"),
    ],
)
def test_database_context_with_a_file_setting_names_both(
    context: ssl.SSLContext, field: str, value: str
) -> None:
    """DatabaseConfig refuses a context together with any ssl* file."""
    files: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(tls_context=context, **files)
    assert caught.value.field == "database.tls_context"
    assert f"database.{field}" in str(caught.value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer"])
def test_database_context_with_an_optional_tls_mode_is_refused(
    context: ssl.SSLContext, mode: str
) -> None:
    """A context always means TLS; an sslmode that may skip it contradicts it."""
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(tls_context=context, sslmode=mode)
    assert caught.value.field == "database.tls_context"
    assert "sslmode" in str(caught.value)


def test_context_must_be_a_client_ssl_context() -> None:
    """Anything but a client SSLContext is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as caught:
        config(tls_context="/etc/ca.pem")
    assert caught.value.field == "tls_context"
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert caught.value.field == "database.tls_context"
    assert "server context" in str(caught.value)


def test_kafka_clients_get_the_context_itself(context: ssl.SSLContext) -> None:
    """The context is passed unchanged, with TLS on, and SASL then runs over it."""
    flags = context.verify_flags
    kwargs = security_kwargs(config(tls_context=context))
    assert kwargs["ssl_context"] is context
    assert kwargs["security_protocol"] == "SSL"
    assert client_context(config(tls_context=context)) is context
    assert context.verify_flags == flags
    sasl = config(
        tls_context=context,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",
    )
    assert security_kwargs(sasl)["security_protocol"] == "SASL_SSL"
    assert security_kwargs(sasl)["ssl_context"] is context


async def test_every_client_the_transport_makes_holds_the_context(
    context: ssl.SSLContext,
) -> None:
    """Admin, producer and consumer built from the config all carry the same context."""
    settings = config(tls_context=context)
    transport = AIOKafkaTransport()
    admin = transport.admin(settings)
    producer = transport.producer(settings)
    consumer = transport.consumer(settings, "g", "main", "earliest")
    try:
        for client in (admin._client, producer.client, consumer._client):
            assert client._ssl_context is context
            assert client._security_protocol == "SSL"
    finally:
        await admin.close()
        await producer.stop()
        await consumer.stop()


def test_database_context_goes_to_asyncpg_as_it_is(context: ssl.SSLContext) -> None:
    """asyncpg's ssl= is the context itself, with sslmode unset or verifying."""
    for mode in (None, "require", "verify-full"):
        assert connect_kwargs(DatabaseConfig(tls_context=context, sslmode=mode))["ssl"] is context


def test_repr_shows_how_the_context_verifies(context: ssl.SSLContext) -> None:
    """The repr says what the context checks, not where it lives in memory."""
    text = repr(config(tls_context=context))
    assert "tls_context=<ssl.SSLContext verify_mode=CERT_REQUIRED check_hostname=True>" in text
    assert "tls_context=None" in repr(DatabaseConfig())


def test_configs_are_equal_only_with_the_same_context(context: ssl.SSLContext) -> None:
    """Contexts are mutable and compare by identity; so do configs holding them."""
    first = config(tls_context=context)
    assert first == attrs.evolve(first, group="g")
    assert hash(first) == hash(config(tls_context=context))
    assert first != config(tls_context=ssl.create_default_context())


def test_from_env_takes_the_context_as_an_override(context: ssl.SSLContext) -> None:
    """No variable holds a context; from_env accepts it like any override, and checks it."""
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_GROUP": "g", "KAFKA_TOPICS": "t"}
    assert Config.from_env(environ, tls_context=context).tls_context is context
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**environ, "KAFKA_TLS_CA_FILE": "/etc/ca.pem"}, tls_context=context)
    assert "tls_ca_file" in str(caught.value)

"""Secrets stay out of reprs, errors, logs and metrics; they can come from files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import SaslAuthenticationFailed
from prometheus_client import REGISTRY, generate_latest

from kafka_retry import Config, ConfigError, DatabaseConfig, Message
from kafka_retry._handshake import classify
from kafka_retry._kafka import hide_sasl_requests, security_kwargs
from kafka_retry.testing import TestConsumer

SASL = "sasl-Secret-1"
KEY = "key-Secret-2"
DB = "db-Secret-3"
SSLKEY = "sslkey-Secret-4"
SECRETS = (SASL, KEY, DB, SSLKEY)
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_GROUP": "g", "KAFKA_TOPICS": "t"}


def secret_config(**fields: Any) -> Config:
    database = DatabaseConfig(password=DB, sslpassword=SSLKEY)
    return Config(
        bootstrap_servers="k:9092",
        group="g",
        topics=["t"],
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice",
        sasl_password=SASL,
        database=database,
        **{"tls_key_password": KEY, **fields},
    )


def test_reprs_hide_every_secret() -> None:
    """repr() and str() of the settings never show a password."""
    config = secret_config()
    text = repr(config) + str(config) + repr(config.database)
    assert all(secret not in text for secret in SECRETS)
    assert "alice" in text  # the username is not a secret


def test_database_url_password_is_not_in_errors() -> None:
    """A malformed URL is refused without echoing the URL, whose password it holds."""
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig.from_url(f"postgresql://u:{DB}@h:notaport/d")
    assert DB not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig.from_url(f"mysql://u:{DB}@h/d")
    assert DB not in str(caught.value)


def test_every_secret_can_come_from_a_file(tmp_path: Path) -> None:
    """Each secret variable has a *_FILE twin; a final line break is dropped."""
    files = {}
    for variable, value in {
        "KAFKA_SASL_PASSWORD": SASL,
        "KAFKA_TLS_KEY_PASSWORD": KEY,
        "DATABASE_PASSWORD": DB,
        "DATABASE_SSLPASSWORD": SSLKEY,
    }.items():
        path = tmp_path / variable.lower()
        path.write_text(value + "\n")
        files[f"{variable}_FILE"] = str(path)
    env = {
        **BASE,
        **files,
        "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "alice",
        "DATABASE_URL": "postgresql://u@db:5432/app",
    }
    config = Config.from_env(env)
    assert (config.sasl_password, config.tls_key_password) == (SASL, KEY)
    assert config.database is not None
    assert (config.database.password, config.database.sslpassword) == (DB, SSLKEY)
    assert all(secret not in repr(config) for secret in SECRETS)


def test_variable_and_file_together_are_refused(tmp_path: Path) -> None:
    """Setting both a secret and its *_FILE is ambiguous: an error naming the variable."""
    path = tmp_path / "pw"
    path.write_text(DB)
    env = {**BASE, "DATABASE_PASSWORD": "x", "DATABASE_PASSWORD_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert caught.value.field == "DATABASE_PASSWORD"
    assert DB not in str(caught.value)


def test_unreadable_secret_file_names_the_variable_not_the_content(tmp_path: Path) -> None:
    """A directory instead of a file is refused, naming the variable and the path."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**BASE, "KAFKA_TLS_KEY_PASSWORD_FILE": str(tmp_path)})
    assert caught.value.field == "KAFKA_TLS_KEY_PASSWORD_FILE"
    assert str(tmp_path) in str(caught.value)


def test_refused_login_never_repeats_the_password() -> None:
    """Even a broker that echoes the password gets it masked in the AuthenticationError."""
    config = secret_config()
    echoed = SaslAuthenticationFailed(f"bad credentials {SASL}")
    error = classify(echoed, "k:9092", config)
    assert error is not None
    assert SASL not in str(error)
    assert "***" in str(error)
    assert "'alice'" in str(error)


def test_sasl_request_bytes_are_hidden_from_debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka's DEBUG log of a SASL request shows a placeholder, not the PLAIN bytes."""

    class SaslAuthenticateRequest_v1:  # named like aiokafka's request class
        def __repr__(self) -> str:
            return f"SaslAuthenticateRequest(auth_bytes=b'\\x00alice\\x00{SASL}')"

    hide_sasl_requests()
    caplog.set_level(logging.DEBUG, logger="aiokafka.conn")
    logging.getLogger("aiokafka.conn").debug("%s sent %s", "conn", SaslAuthenticateRequest_v1())
    assert SASL not in caplog.text
    assert "<hidden>" in caplog.text


def test_security_kwargs_pick_the_protocol() -> None:
    """SASL with TLS material is SASL_SSL; without, SASL_PLAINTEXT; TLS alone is SSL."""
    sasl = secret_config(tls_key_password=None)
    assert security_kwargs(sasl)["security_protocol"] == "SASL_PLAINTEXT"
    tls_sasl = secret_config(tls_key_password=None, tls_enabled=True)
    assert security_kwargs(tls_sasl)["security_protocol"] == "SASL_SSL"
    tls_only = Config(bootstrap_servers="k:9092", group="g", topics=["t"], tls_enabled=True)
    assert security_kwargs(tls_only)["security_protocol"] == "SSL"


async def test_metrics_labels_carry_no_secret() -> None:
    """After retries and dead letters, no metric label holds a password."""
    config = Config(
        bootstrap_servers="k:9092",
        group="g",
        topics=["secret-labels"],
        retry_intervals=[1],
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password=SASL,
        tls_key_password=KEY,
    )

    async def failing(message: Message) -> None:
        raise RuntimeError("always")

    async with TestConsumer(config, {"secret-labels": failing}) as test:
        await test.publish("secret-labels", b"v")
        await test.drain()
    exposed = generate_latest(REGISTRY).decode()
    assert 'topic="secret-labels"' in exposed
    assert SASL not in exposed
    assert KEY not in exposed

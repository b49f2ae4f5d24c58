"""Config.from_env reads KAFKA_* and DATABASE_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_retry import Config, ConfigError

BASE = {
    "KAFKA_BOOTSTRAP_SERVERS": "a:9092,b:9092",
    "KAFKA_GROUP": "algolia",
    "KAFKA_TOPICS": "product,price",
}


def test_reads_the_basic_variables() -> None:
    """Servers, group, topics and intervals come from the environment."""
    config = Config.from_env({**BASE, "KAFKA_RETRY_INTERVALS": "60,120"})
    assert config.bootstrap_servers == ("a:9092", "b:9092")
    assert config.topics == ("product", "price")
    assert config.retry_intervals == (60.0, 120.0)


def test_postgres_backend_from_database_url() -> None:
    """DATABASE_URL gives the database settings; DATABASE_TABLE overrides."""
    config = Config.from_env(
        {
            **BASE,
            "KAFKA_RETRY_BACKEND": "postgres",
            "DATABASE_URL": "postgresql://u:pw@db:5432/app",
            "DATABASE_TABLE": "retries",
        }
    )
    assert config.database is not None
    assert (config.database.host, config.database.table) == ("db", "retries")
    assert config.database.password == "pw"


def test_database_fields_without_url() -> None:
    """DATABASE_HOST/PORT/USER/PASSWORD/NAME work without a URL."""
    config = Config.from_env(
        {
            **BASE,
            "KAFKA_RETRY_BACKEND": "postgres",
            "DATABASE_HOST": "db",
            "DATABASE_PORT": "6543",
            "DATABASE_USER": "app",
            "DATABASE_PASSWORD": "pw",
            "DATABASE_NAME": "orders",
        }
    )
    assert config.database is not None
    assert (config.database.port, config.database.database) == (6543, "orders")


def test_secrets_from_files(tmp_path: Path) -> None:
    """*_FILE variables name files holding passwords, as container secrets are mounted."""
    secret = tmp_path / "sasl"
    secret.write_text("s3cret\n")
    config = Config.from_env(
        {
            **BASE,
            "KAFKA_SASL_MECHANISM": "scram-sha-512",
            "KAFKA_SASL_USERNAME": "app",
            "KAFKA_SASL_PASSWORD_FILE": str(secret),
        }
    )
    assert config.sasl_password == "s3cret"
    assert config.sasl_mechanism == "SCRAM-SHA-512"


def test_missing_secret_file_names_the_variable(tmp_path: Path) -> None:
    """An unreadable secret file is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**BASE, "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "nope")})
    assert caught.value.field == "KAFKA_SASL_PASSWORD_FILE"


@pytest.mark.parametrize("missing", ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_GROUP", "KAFKA_TOPICS"])
def test_required_variables(missing: str) -> None:
    """A missing required variable is named."""
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError) as caught:
        Config.from_env(env)
    assert caught.value.field == missing


def test_malformed_values_name_the_variable() -> None:
    """A non-boolean or non-number value names its variable."""
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**BASE, "KAFKA_TLS_ENABLE": "maybe"})
    assert caught.value.field == "KAFKA_TLS_ENABLE"
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**BASE, "KAFKA_HANDLER_TIMEOUT": "soon"})
    assert caught.value.field == "KAFKA_HANDLER_TIMEOUT"


def test_keyword_overrides_win() -> None:
    """Keyword arguments override the environment."""
    assert Config.from_env(BASE, group="other").group == "other"

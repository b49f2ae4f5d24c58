"""Config validation: every bad value is a ConfigError naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_retry import Config, ConfigError, DatabaseConfig, KafkaRetryError


def make(**overrides: Any) -> Config:
    fields: dict[str, Any] = {
        "bootstrap_servers": ["localhost:9092"],
        "group": "algolia",
        "topics": ["product"],
        "retry_intervals": [60, 120],
    }
    fields.update(overrides)
    return Config(**fields)


def test_topic_chain_matches_go_module_names() -> None:
    """The chain is main, retryN.<group>.<topic>, deadLetter.<group>.<topic>."""
    assert make().topic_chain("product") == [
        "product",
        "retry1.algolia.product",
        "retry2.algolia.product",
        "deadLetter.algolia.product",
    ]


def test_no_intervals_means_straight_to_dead_letter() -> None:
    """Without retry intervals the chain is main then dead letter."""
    assert make(retry_intervals=[]).topic_chain("product") == [
        "product",
        "deadLetter.algolia.product",
    ]


def test_servers_accept_comma_separated_string() -> None:
    """A comma-separated string of servers becomes a tuple."""
    config = make(bootstrap_servers="a:9092, b:9093")
    assert config.bootstrap_servers == ("a:9092", "b:9093")
    assert config.bootstrap == "a:9092,b:9093"


def test_bare_host_takes_kafka_default_port() -> None:
    """A server without a port means port 9092, as aiokafka and librdkafka read it."""
    config = make(bootstrap_servers="broker1, broker2:9093, 10.0.0.7, [::1], ::2, [::3]:9094")
    assert config.bootstrap_servers == (
        "broker1:9092",
        "broker2:9093",
        "10.0.0.7:9092",
        "[::1]:9092",
        "[::2]:9092",
        "[::3]:9094",
    )


def test_rebalance_timeout_covering_the_drain_is_accepted() -> None:
    """An explicit rebalance timeout of at least drain_timeout is kept as given."""
    config = make(rebalance_timeout_ms=30_000, drain_timeout=30)
    assert config.effective_rebalance_timeout_ms == 30_000


def test_intervals_accept_comma_separated_string() -> None:
    """Intervals may come as "60,120" (as from the environment)."""
    assert make(retry_intervals="60,120").retry_intervals == (60.0, 120.0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"topics": []}, "topics"),
        ({"bootstrap_servers": []}, "bootstrap_servers"),
        ({"bootstrap_servers": "localhost:http"}, "bootstrap_servers"),
        ({"bootstrap_servers": "localhost:"}, "bootstrap_servers"),
        ({"group": "  "}, "group"),
        ({"retry_intervals": [60, 0]}, "retry_intervals"),
        ({"retry_intervals": [-1]}, "retry_intervals"),
        ({"retry_intervals": ["soon"]}, "retry_intervals"),
        ({"retry_intervals": [60, float("inf")]}, "retry_intervals"),
        ({"retry_intervals": "inf"}, "retry_intervals"),
        ({"retry_intervals": [float("nan")]}, "retry_intervals"),
        ({"retry_intervals": [1e300]}, "retry_intervals"),
        ({"drain_timeout": float("inf")}, "drain_timeout"),
        ({"rebalance_timeout_ms": 10_000, "drain_timeout": 30}, "rebalance_timeout_ms"),
        ({"topics": ["a", "b", "a"]}, "topics"),
        ({"retry_backend": "postgres"}, "database"),
        ({"retry_backend": "redis"}, "retry_backend"),
        ({"handler_timeout": 0}, "handler_timeout"),
        ({"connect_attempts": 0}, "connect_attempts"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"ordering": "random"}, "ordering"),
        ({"isolation_level": "serializable"}, "isolation_level"),
        ({"non_retryable": [42]}, "non_retryable"),
        ({"sasl_mechanism": "PLAIN"}, "sasl_username"),
        (
            {"sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
            "sasl_mechanism",
        ),
        ({"tls_cert_file": "client.pem"}, "tls_cert_file"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"dead_letter_retention_ms": 0}, "dead_letter_retention_ms"),
        ({"dead_letter_retention_ms": -2}, "dead_letter_retention_ms"),
        ({"dead_letter_retention_ms": "forever"}, "dead_letter_retention_ms"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict[str, Any], field: str) -> None:
    """Each invalid setting raises ConfigError whose field names it."""
    with pytest.raises(ConfigError) as caught:
        make(**overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, KafkaRetryError)


def test_generator_yielding_duplicates_is_refused() -> None:
    """A name generator that gives two tiers one name is a ConfigError."""
    with pytest.raises(ConfigError, match="twice") as caught:
        make(topic_name_generator=lambda group, topic, prefix: f"{group}.{topic}")
    assert caught.value.field == "topic_name_generator"


def test_generated_name_colliding_with_main_topic_is_refused() -> None:
    """A generated retry topic may not be one of the main topics."""

    def generator(group: str, topic: str, prefix: str) -> str:
        return "price" if (topic, prefix) == ("product", "retry1") else f"{prefix}.{topic}"

    with pytest.raises(ConfigError, match="collides with a main topic"):
        make(topics=["product", "price"], topic_name_generator=generator)


def test_custom_generator_names_the_chain() -> None:
    """A custom generator decides every retry and dead-letter name."""
    config = make(topic_name_generator=lambda g, t, p: f"{t}-{p}-{g}")
    assert config.topic_chain("product") == [
        "product",
        "product-retry1-algolia",
        "product-retry2-algolia",
        "product-deadLetter-algolia",
    ]


def test_passwords_never_in_repr() -> None:
    """SASL, key and database passwords are absent from every repr."""
    database = DatabaseConfig(password="db-secret")
    config = make(
        sasl_mechanism="PLAIN",
        sasl_username="user",
        sasl_password="sasl-secret",
        tls_key_password="key-secret",
        retry_backend="postgres",
        database=database,
    )
    text = repr(config)
    for secret in ("db-secret", "sasl-secret", "key-secret"):
        assert secret not in text
    assert "sasl_username='user'" in text


def test_database_from_url_with_everything() -> None:
    """A full URL fills every field, percent-decoding the password."""
    database = DatabaseConfig.from_url(
        "postgresql://app:p%40ss@db.example:6543/orders?sslmode=verify-full&sslrootcert=/ca.pem"
    )
    assert (database.host, database.port, database.user) == ("db.example", 6543, "app")
    assert database.password == "p@ss"
    assert database.database == "orders"
    assert database.sslmode == "verify-full"
    assert database.sslrootcert == "/ca.pem"


def test_database_from_unix_socket_url() -> None:
    """``?host=/dir`` means a Unix socket directory."""
    database = DatabaseConfig.from_url("postgresql://app@/orders?host=/run/postgresql&port=5433")
    assert database.host == "/run/postgresql"
    assert database.port == 5433
    assert database.database == "orders"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"table": "x; drop table y"}, "table"),
        ({"schema": 'public"'}, "schema"),
        ({"table": ""}, "table"),
        ({"port": 70000}, "database.port"),
        ({"sslmode": "sometimes"}, "database.sslmode"),
    ],
)
def test_database_settings_are_validated(overrides: dict[str, Any], field: str) -> None:
    """Table and schema must be identifiers; port and sslmode must be valid."""
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(**overrides)
    assert caught.value.field == field


def test_database_url_must_be_postgres() -> None:
    """A non-PostgreSQL URL is refused without echoing it (it may hold a password)."""
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig.from_url("mysql://root:hunter2@db/x")
    assert "hunter2" not in str(caught.value)


def test_ordered_retries_need_the_postgres_backend() -> None:
    """ordered_retries on the Kafka backend is a ConfigError naming the field."""
    with pytest.raises(ConfigError) as caught:
        Config(bootstrap_servers="k:9092", group="g", topics=["t"], ordered_retries=True)
    assert caught.value.field == "ordered_retries"
    config = Config(
        bootstrap_servers="k:9092",
        group="g",
        topics=["t"],
        retry_backend="postgres",
        database=DatabaseConfig(),
        ordered_retries=True,
    )
    assert config.ordered_retries and config.ordered_dead_letter == "release"


def test_ordered_dead_letter_is_release_or_dead_letter() -> None:
    """Any other ordered_dead_letter is a ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        Config(bootstrap_servers="k:9092", group="g", topics=["t"], ordered_dead_letter="x")  # type: ignore[arg-type]
    assert caught.value.field == "ordered_dead_letter"

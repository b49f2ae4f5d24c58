"""Migrations of the retry table: identifiers, templating, lock key (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_retry import ConfigError, DatabaseConfig
from kafka_retry.retry._pg_schema import (
    index_name,
    load_migrations,
    lock_key,
    quote,
    template_names,
)

INJECTIONS = [
    'x"; DROP TABLE users; --',
    "x; DROP TABLE users",
    "retries where 1=1",
    "a.b",
    'quo"te',
    "",
    "1starts_with_digit",
    "x" * 64,
]


@pytest.mark.parametrize("name", INJECTIONS)
@pytest.mark.parametrize("field", ["table", "schema"])
def test_injection_in_table_or_schema_raises_config_error(field: str, name: str) -> None:
    """A table or schema name that is not a plain identifier is refused, naming the field."""
    settings: dict[str, Any] = {field: name}
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(**settings)
    assert caught.value.field == field


@pytest.mark.parametrize("name", INJECTIONS)
def test_quote_refuses_what_is_not_an_identifier(name: str) -> None:
    """The quoting helper checks again, so no caller can splice a raw name into SQL."""
    with pytest.raises(ConfigError):
        quote(name)


def test_quote_wraps_identifiers_in_double_quotes() -> None:
    """Valid identifiers are always quoted, so reserved words and case are safe."""
    assert quote("User_Table1") == '"User_Table1"'


def test_long_index_names_fit_and_stay_distinct() -> None:
    """Index names of 63-character tables fit PostgreSQL's limit without colliding."""
    first, second = "a" * 62 + "b", "a" * 62 + "c"
    names = {index_name(table, "succeeded") for table in (first, second)}
    assert len(names) == 2
    assert all(len(name) <= 63 for name in names)
    assert index_name("jobs", "pending") == "jobs_pending"


def test_template_names_are_quoted_identifiers_only() -> None:
    """Migrations are templated with the quoted table and index names, nothing else."""
    names = template_names(DatabaseConfig(schema="s", table="t"))
    assert names == {
        "schema": '"s"',
        "table": '"s"."t"',
        "ix_pending": '"t_pending"',
        "ix_succeeded": '"t_succeeded"',
        "ix_dead": '"t_dead"',
        "ix_keys": '"t_keys"',
        "ix_waiting": '"t_waiting"',
    }


def test_the_ledger_table_name_is_reserved() -> None:
    """The retry table cannot take the migrations ledger's name."""
    with pytest.raises(ConfigError, match="reserved"):
        template_names(DatabaseConfig(table="kafka_retry_migrations"))


def test_lock_key_is_a_stable_signed_64_bit_number_per_schema() -> None:
    """The advisory lock key depends on the schema only, and fits a bigint."""
    assert lock_key("public") == lock_key("public") != lock_key("other")
    assert -(2**63) <= lock_key("public") < 2**63


def test_shipped_migrations_load_in_order_and_render_completely() -> None:
    """The package ships its SQL files; rendering leaves no placeholder behind."""
    migrations = load_migrations()
    versions = [migration.version for migration in migrations]
    assert versions[0] == "0001_create_table"
    assert versions == sorted(versions)
    names = template_names(DatabaseConfig(schema="s", table="t"))
    for migration in migrations:
        sql = migration.render(names)
        assert "${" not in sql
        assert len(migration.checksum) == 64
    assert 'CREATE TABLE "s"."t"' in migrations[0].render(names)

"""Every configurable SQL name is a validated, quoted identifier; values are parameters."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest

from kafka_retry import Config, ConfigError, DatabaseConfig
from kafka_retry.retry._pg_rows import Statements
from kafka_retry.retry._pg_schema import load_migrations, quote, template_names

INJECTIONS = [
    'x"; DROP TABLE users; --',
    "x'; DROP TABLE users; --",
    'public"."pg_authid',
    "retries; DELETE FROM t",
    "a b",
    "a-b",
    "a.b",
    "1starts_with_digit",
    "",
    " ",
    "x" * 64,
    "tbl\x00",
    "naïve",
    "$1",
    "x/*",
    "t\nDROP",
]
NAMES = ("schema", "table")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hostile", INJECTIONS)
def test_hostile_names_are_refused_by_the_settings(name: str, hostile: str) -> None:
    """DatabaseConfig refuses each hostile schema or table name, naming the field."""
    fields: dict[str, Any] = {name: hostile}
    with pytest.raises(ConfigError) as caught:
        DatabaseConfig(**fields)
    assert caught.value.field == name


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hostile", INJECTIONS[:6])
def test_hostile_names_are_refused_from_url_and_environment(name: str, hostile: str) -> None:
    """The URL and the DATABASE_* variables go through the same validation."""
    fields: dict[str, Any] = {name: hostile}
    with pytest.raises(ConfigError):
        DatabaseConfig.from_url("postgresql://u@h/d", **fields)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "KAFKA_GROUP": "g",
        "KAFKA_TOPICS": "t",
        "DATABASE_URL": "postgresql://u@h/d",
        f"DATABASE_{name.upper()}": hostile,
    }
    with pytest.raises(ConfigError):
        Config.from_env(env)


@pytest.mark.parametrize("hostile", INJECTIONS)
def test_statements_and_migrations_check_again(hostile: str) -> None:
    """A name that bypassed the settings' validators is still refused before any SQL."""
    database = DatabaseConfig()
    object.__setattr__(database, "table", hostile)  # what a buggy caller could do
    with pytest.raises(ConfigError):
        Statements.of(database)
    with pytest.raises(ConfigError):
        template_names(database)
    with pytest.raises(ConfigError):
        quote(hostile)


def test_names_are_always_quoted_so_case_and_keywords_survive() -> None:
    """Mixed case and SQL keywords are legal identifiers, always double-quoted."""
    database = DatabaseConfig(schema="Select", table="User")
    statements = Statements.of(database)
    assert statements.table == '"Select"."User"'
    names = template_names(database)
    for migration in load_migrations():
        sql = migration.render(names)
        assert '"Select"."User"' in sql
        assert not re.search(r"(?<![\"\w])User(?![\"\w])", sql)


def test_statements_take_values_only_as_parameters() -> None:
    """No statement has a place for a value other than $n: group and topics are parameters."""
    statements = Statements.of(DatabaseConfig(schema="s", table="t"))
    names = [a.name for a in attrs.fields(Statements)]
    for prop in dir(Statements):
        if prop.startswith("_") or prop in names or prop == "of":
            continue
        sql = getattr(statements, prop)
        assert isinstance(sql, str)
        literals = set(re.findall(r"'([^']*)'", sql))
        assert literals <= {"pending", "waiting", "succeeded", "dead_lettered", "replayed"}, prop

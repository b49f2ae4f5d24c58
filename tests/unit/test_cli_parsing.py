"""The command line's parsing: options, settings from the environment, clear errors."""

from __future__ import annotations

import argparse
import os

import pytest

from kafka_retry._cli._common import environment, explained, load_config, load_database
from kafka_retry._cli.dlq import build_query, replay_summary
from kafka_retry._cli.run import import_target, resolve_consumer, split_target
from kafka_retry.cli import build_parser, main
from kafka_retry.deadletter import ReplayResult, ReplayTarget
from kafka_retry.errors import ConfigError

LEAVES = [
    ["topics", "plan"],
    ["topics", "create"],
    ["db", "migrate"],
    ["db", "status"],
    ["dlq", "list"],
    ["dlq", "show"],
    ["dlq", "replay"],
    ["dlq", "purge"],
    ["run"],
    ["dev", "up"],
    ["dev", "down"],
    ["dev", "status"],
    ["demo"],
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KAFKA_* or DATABASE_* variable of the machine leaks into these tests."""
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "DATABASE_")):
            monkeypatch.delenv(name)


def parse(*argv: str) -> argparse.Namespace:
    """Parse a command line."""
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", LEAVES, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help works on every command and says what it does."""
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: kafka-retry {' '.join(command)}")


def test_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option: exit 2 and one line on stderr."""
    with pytest.raises(SystemExit) as caught:
        main(["dlq", "list", "--bogus"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unrecognized arguments: --bogus" in err


def test_options_override_the_environment() -> None:
    """Options write over their variables; the rest of the environment stays."""
    args = parse("dlq", "list", "-b", "k:1", "-t", "a,b", "-t", "c", "--schema", "s")
    env = environment(args, {"KAFKA_GROUP": "g", "KAFKA_BOOTSTRAP_SERVERS": "other:2"})
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "k:1"
    assert env["KAFKA_TOPICS"] == "a,b,c"
    assert env["KAFKA_GROUP"] == "g"
    assert env["DATABASE_SCHEMA"] == "s"
    assert environment(parse("dlq", "list"), {})["KAFKA_BOOTSTRAP_SERVERS"] == "localhost:9092"


def test_config_from_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Config has the options, metrics off, and fails fast when unreachable."""
    monkeypatch.setenv("KAFKA_GROUP", "g")
    args = parse("dlq", "list", "-t", "orders", "--retry-intervals", "5,60")
    config = load_config(args)
    assert (config.group, config.topics, config.retry_intervals) == ("g", ("orders",), (5, 60))
    assert config.metrics is False
    assert config.connect_attempts == 2


def test_missing_settings_name_the_option() -> None:
    """A missing group names --group and KAFKA_GROUP; a missing database --database-url."""
    with pytest.raises(ConfigError, match="pass --group or set KAFKA_GROUP"):
        load_config(parse("dlq", "list", "-t", "orders"))
    with pytest.raises(ConfigError, match="--database-url"):
        load_config(parse("dlq", "list", "-t", "orders", "-g", "g", "--backend", "postgres"))
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_database(parse("db", "status"))
    other = ConfigError("KAFKA_MAX_IN_FLIGHT", "must be a number")
    assert explained(other) is other


def test_database_from_url_and_options() -> None:
    """--database-url with --schema and --table."""
    args = parse("db", "status", "--database-url", "postgresql://u:p@h:5/d", "--table", "t")
    database = load_database(args)
    assert (database.host, database.port, database.database, database.table) == ("h", 5, "d", "t")


def test_query_from_options() -> None:
    """Selection options become a query: times parsed, topics split, ids kept."""
    args = parse("dlq", "replay", "1:2", "-t", "a,b", "--since", "2024-05-01", "--error", "Timeout")
    query = build_query(args, replayed=False)
    assert query.topics == ("a", "b")
    assert query.ids == ("1:2",)
    assert query.since == 1_714_521_600_000
    assert (query.until, query.error, query.replayed) == (None, "Timeout", False)


def test_replay_summary_lines() -> None:
    """A dry run lists what it would send; a replay says how many and what it skipped."""
    dry = ReplayResult(ReplayTarget(), 2, 0, 1, True, ("t:0:1", "t:0:2"))
    assert replay_summary(dry) == [
        "would replay 2 dead letter(s) to their main topic; 1 replayed before, skipped",
        "  t:0:1",
        "  t:0:2",
    ]
    done = ReplayResult(ReplayTarget(2), 3, 3, 0, False)
    assert replay_summary(done) == ["replayed 3 dead letter(s) to retry2"]


def test_run_target_must_be_module_colon_attribute() -> None:
    """The run target is MODULE:ATTRIBUTE; each part is checked."""
    assert split_target("a.b:c.d") == ("a.b", "c.d")
    for bad in ("a.b", ":c", "a:"):
        with pytest.raises(ConfigError, match="MODULE:ATTRIBUTE"):
            split_target(bad)
    with pytest.raises(ConfigError, match="cannot import no_such_module_here"):
        import_target("no_such_module_here:consumer")
    with pytest.raises(ConfigError, match="has no 'nothing'"):
        import_target("kafka_retry:nothing")


async def test_run_target_must_give_a_consumer() -> None:
    """An object that is not a Consumer (nor returns one) is refused."""
    with pytest.raises(ConfigError, match=r"is not a kafka_retry\.Consumer"):
        await resolve_consumer(lambda: 42, "m:factory")

"""``kafka-retry dlq list|show|groups|replay|purge``: dead letters of either backend."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from typing import Any

import attrs

from kafka_retry._cli._common import (
    Commands,
    Parser,
    database_options,
    json_option,
    kafka_options,
    load_config,
    print_json,
    run_async,
    verbosity,
)
from kafka_retry._cli._entries import entry_json, list_lines, show_lines
from kafka_retry._cli._output import Progress, format_time, parse_time, table
from kafka_retry.console._items import group_json
from kafka_retry.deadletter import (
    DeadLetterEntry,
    DeadLetterQuery,
    DeadLetterStore,
    FailureGroup,
    PurgePlan,
    ReplayResult,
    ReplayTarget,
    open_dead_letters,
)
from kafka_retry.deadletter._groups import group_stream, ids_in_group
from kafka_retry.errors import ConfigError, DeadLetterError

_CONNECTION = "Kafka and database settings come from the options or the environment."


def _leaf(
    actions: Commands, name: str, summary: str, description: str, group_flag: str = "--group"
) -> Parser:
    parser: Parser = actions.add_parser(
        name,
        parents=[verbosity()],
        help=summary,
        description=f"{description} {_CONNECTION}",
    )
    kafka_options(parser, group_flag=group_flag)
    database_options(parser)
    return parser


def _filters(parser: Parser, *, replayed: bool = True) -> None:
    selection = parser.add_argument_group("selection")
    selection.add_argument(
        "--since", metavar="TIME", help="dead-lettered at or after: 2024-05-01T12:00Z, or 2h ago"
    )
    selection.add_argument("--until", metavar="TIME", help="dead-lettered at or before")
    selection.add_argument(
        "--error", metavar="TEXT", help="the last error (type: message) contains TEXT, any case"
    )
    if replayed:
        selection.add_argument(
            "--replayed", action="store_true", help="only dead letters replayed before"
        )


def register(commands: Commands) -> None:
    """Add ``dlq`` and its actions."""
    dlq = commands.add_parser(
        "dlq",
        help="list, show, group, replay or purge dead letters",
        description="Dead letters: the dead-letter topics, or dead-lettered rows (postgres).",
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "list dead letters", "List the dead letters, oldest first.")
    _filters(listing)
    listing.add_argument("--all", action="store_true", help="include replayed dead letters")
    listing.add_argument("--limit", type=int, metavar="N", help="show at most N")
    json_option(listing)
    listing.set_defaults(handler=list_command)
    show = _leaf(actions, "show", "show one dead letter in full", "Show one dead letter in full.")
    show.add_argument(
        "id", metavar="ID", help="PARTITION:OFFSET or TOPIC:PARTITION:OFFSET (kafka), row id"
    )
    json_option(show)
    show.set_defaults(handler=show_command)
    groups = _leaf(
        actions,
        "groups",
        "dead letters by failure fingerprint",
        "Group the dead letters by failure fingerprint: the error type and message with "
        "numbers, ids and quoted values masked. Largest group first.",
    )
    _filters(groups)
    groups.add_argument("--all", action="store_true", help="count replayed dead letters too")
    json_option(groups)
    groups.set_defaults(handler=groups_command)
    _register_replay(actions)
    _register_purge(actions)


def _register_replay(actions: Commands) -> None:
    replay = _leaf(
        actions,
        "replay",
        "send dead letters back to their main topic or a retry tier",
        "Send the selected dead letters back to their main topic (or a retry tier) with "
        "their key, value and original headers. Each replay is recorded, so running the "
        "same replay again sends nothing twice. Here --group selects a failure group; "
        "the consumer group is -g/--consumer-group.",
        group_flag="--consumer-group",
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="only these dead letters")
    _filters(replay, replayed=False)
    replay.add_argument(
        "--group",
        dest="fingerprint",
        metavar="FINGERPRINT",
        help="only the failure group FINGERPRINT (see dlq groups)",
    )
    replay.add_argument(
        "--to-tier", type=int, metavar="K", help="send to retry tier K instead, retried at once"
    )
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    json_option(replay)
    replay.set_defaults(handler=replay_command)


def _register_purge(actions: Commands) -> None:
    purge = _leaf(
        actions,
        "purge",
        "delete dead letters for good",
        "Delete the selected dead letters. With the kafka backend a dead-letter topic is "
        "cut from its start (DeleteRecords), so only --until and --replayed select.",
    )
    purge.add_argument("ids", nargs="*", metavar="ID", help="only these (postgres backend)")
    _filters(purge)
    purge.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    purge.add_argument("--dry-run", action="store_true", help="say what would be deleted")
    purge.set_defaults(handler=purge_command)


def build_query(args: argparse.Namespace, *, replayed: bool | None) -> DeadLetterQuery:
    """The query of the selection options.

    Raises:
        ConfigError: A time is malformed.
    """
    now = int(time.time() * 1000)
    since = getattr(args, "since", None)
    until = getattr(args, "until", None)
    topics = [t for item in (args.topics or []) for t in item.split(",")]
    return DeadLetterQuery(
        topics=topics,
        ids=getattr(args, "ids", None) or (),
        since=None if since is None else parse_time(since, now, "--since"),
        until=None if until is None else parse_time(until, now, "--until"),
        error=getattr(args, "error", None),
        replayed=replayed,
    )


async def _collect(args: argparse.Namespace, query: DeadLetterQuery) -> list[DeadLetterEntry]:
    found: list[DeadLetterEntry] = []
    store = open_dead_letters(load_config(args))
    async with store, contextlib.aclosing(store.entries(query)) as entries:
        async for entry in entries:
            found.append(entry)
            if args.limit is not None and len(found) >= args.limit:
                break
    return found


def _replayed_filter(args: argparse.Namespace) -> bool | None:
    """Which dead letters ``--replayed`` / ``--all`` select: replayed, any, or not replayed."""
    return True if args.replayed else (None if args.all else False)


def _width() -> int | None:
    """The terminal's width; None when the output is not a terminal (no cutting)."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def list_command(args: argparse.Namespace) -> int:
    """Print the selected dead letters."""
    replayed = _replayed_filter(args)
    entries = run_async(_collect(args, build_query(args, replayed=replayed)))
    if args.json:
        print_json([entry_json(entry) for entry in entries])
        return 0
    if not entries:
        print("no dead letters", file=sys.stderr)
        return 0
    print("\n".join(list_lines(entries, show_replayed=replayed is not False, width=_width())))
    return 0


async def _show(args: argparse.Namespace) -> DeadLetterEntry:
    config = load_config(args)
    topic = args.topics[0] if args.topics and len(args.topics) == 1 else None
    async with open_dead_letters(config) as store:
        return await store.get(args.id, topic)


def show_command(args: argparse.Namespace) -> int:
    """Print one dead letter in full."""
    entry = run_async(_show(args))
    if args.json:
        print_json(entry_json(entry))
    else:
        print("\n".join(show_lines(entry)))
    return 0


async def _groups(args: argparse.Namespace, query: DeadLetterQuery) -> list[FailureGroup]:
    store = open_dead_letters(load_config(args))
    async with store, contextlib.aclosing(store.entries(query)) as entries:
        return await group_stream(entries)


def groups_command(args: argparse.Namespace) -> int:
    """Print the failure groups of the selected dead letters."""
    replayed = _replayed_filter(args)
    found = run_async(_groups(args, build_query(args, replayed=replayed)))
    if args.json:
        print_json([group_json(group) for group in found])
        return 0
    if not found:
        print("no dead letters", file=sys.stderr)
        return 0
    rows = [[str(g.count), format_time(g.first), format_time(g.last), g.fingerprint] for g in found]
    headers = ["COUNT", "FIRST", "LAST", "FINGERPRINT"]
    print("\n".join(table(headers, rows, right=[0], flexible=3, width=_width())))
    return 0


async def group_members(
    store: DeadLetterStore, query: DeadLetterQuery, fingerprint: str
) -> list[str]:
    """The ids of the dead letters ``query`` selects that are in the group ``fingerprint``."""
    async with contextlib.aclosing(store.entries(query)) as entries:
        return await ids_in_group(entries, fingerprint)


async def _replay(args: argparse.Namespace, progress: Progress) -> ReplayResult:
    query = build_query(args, replayed=False)
    target = ReplayTarget(args.to_tier)
    async with open_dead_letters(load_config(args)) as store:
        if args.fingerprint is not None:
            ids = await group_members(store, query, args.fingerprint)
            if not ids:  # an empty id filter would select every dead letter
                return ReplayResult(target, 0, 0, 0, args.dry_run)
            query = attrs.evolve(query, ids=ids)
        return await store.replay(query, target, dry_run=args.dry_run, progress=progress)


def replay_summary(result: ReplayResult) -> list[str]:
    """What a replay did, for a reader."""
    where = "their main topic" if result.target.tier is None else result.target.name
    skipped = f"; {result.already_replayed} replayed before, skipped"
    skipped = skipped if result.already_replayed else ""
    if result.dry_run:
        lines = [f"would replay {result.selected} dead letter(s) to {where}{skipped}"]
        return lines + [f"  {item}" for item in result.ids]
    return [f"replayed {result.replayed} dead letter(s) to {where}{skipped}"]


def replay_command(args: argparse.Namespace) -> int:
    """Replay, with a progress bar on a terminal."""
    if args.to_tier is not None and args.to_tier < 1:
        raise ConfigError("--to-tier", f"must be 1 or more, got {args.to_tier}")
    if args.fingerprint is not None and args.ids:
        raise ConfigError("--group", "select by ids or by --group, not both")
    progress = Progress("replaying")
    try:
        result = run_async(_replay(args, progress))
    finally:
        progress.close()
    if args.json:
        print_json(_replay_json(result))
    else:
        print("\n".join(replay_summary(result)))
    return 0


def _replay_json(result: ReplayResult) -> dict[str, Any]:
    return {
        "target": result.target.name,
        "dry_run": result.dry_run,
        "selected": result.selected,
        "replayed": result.replayed,
        "already_replayed": result.already_replayed,
        "ids": list(result.ids),
    }


def confirm(plan: PurgePlan) -> bool:
    """Ask on the terminal whether to purge.

    Raises:
        DeadLetterError: Standard input is not a terminal (pass --yes).
    """
    if not sys.stdin.isatty():
        raise DeadLetterError("purging needs confirmation: pass --yes (stdin is not a terminal)")
    topics = ", ".join(f"{topic}: {n}" for topic, n in plan.per_topic.items())
    answer = input(f"Delete {plan.count} dead letter(s) ({topics}) for good? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _purge(args: argparse.Namespace) -> tuple[PurgePlan, int | None]:
    query = build_query(args, replayed=True if args.replayed else None)
    async with open_dead_letters(load_config(args)) as store:
        plan = await store.plan_purge(query)
        if args.dry_run or not plan.count or not (args.yes or confirm(plan)):
            return plan, None
        return plan, await store.purge(plan)


def purge_command(args: argparse.Namespace) -> int:
    """Purge after confirmation (or ``--yes``)."""
    plan, purged = run_async(_purge(args))
    per_topic = ", ".join(f"{topic}: {n}" for topic, n in plan.per_topic.items())
    if not plan.count:
        print("nothing to purge")
    elif args.dry_run:
        print(f"would delete {plan.count} dead letter(s) ({per_topic})")
    elif purged is None:
        print("nothing deleted")
        return 1
    else:
        print(f"deleted {purged} dead letter(s) ({per_topic})")
    return 0

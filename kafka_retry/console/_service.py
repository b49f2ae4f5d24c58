"""What the console does with a dead-letter store: pages, one entry, groups, replays, purges.

No web framework here: the API and the page call these with a store opened
for the request, so both show and do exactly the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import attrs

from kafka_retry.config import Config
from kafka_retry.console._selection import (
    BadRequest,
    Listing,
    OrderKey,
    Selection,
    encode_cursor,
    order_key,
)
from kafka_retry.deadletter import (
    DeadLetterEntry,
    DeadLetterQuery,
    DeadLetterStore,
    FailureGroup,
    fingerprint_of,
    stable_id,
)
from kafka_retry.deadletter._groups import group_stream, ids_in_group
from kafka_retry.errors import DeadLetterError

__all__ = ["NotFound", "Page", "find", "groups", "list_page", "purge", "replay", "topic_counts"]


class NotFound(Exception):
    """Raised when no dead letter has the id asked for; the API answers 404."""


@attrs.frozen
class Page:
    """One page of a listing.

    Attributes:
        items: The dead letters, in listing order.
        next: The cursor of the next page, or None on the last one.
    """

    items: tuple[DeadLetterEntry, ...]
    next: str | None


@contextlib.asynccontextmanager
async def _stream(
    store: DeadLetterStore, query: DeadLetterQuery
) -> AsyncIterator[AsyncIterator[DeadLetterEntry]]:
    async with contextlib.aclosing(store.entries(query)) as entries:
        yield entries


def _wanted(listing: Listing, entry: DeadLetterEntry) -> bool:
    if listing.key is not None and entry.key != listing.key:
        return False
    return listing.group is None or fingerprint_of(entry) == listing.group


def _key(entry: DeadLetterEntry) -> OrderKey:
    return order_key(stable_id(entry))


async def list_page(store: DeadLetterStore, config: Config, listing: Listing) -> Page:
    """The page of dead letters ``listing`` asks for, in (topic, partition, offset) or row order.

    Keeps at most about twice the page in memory, however many dead letters there are.
    """
    keep = listing.limit + 1
    found: list[DeadLetterEntry] = []
    async with _stream(store, listing.query) as entries:
        async for entry in entries:
            if not _wanted(listing, entry):
                continue
            if listing.after is not None and _key(entry) <= listing.after:
                continue
            found.append(entry)
            if len(found) >= 2 * keep:
                found = sorted(found, key=_key)[:keep]
            # Rows come in id order: the page is complete once it is one over.
            if config.retry_backend == "postgres" and len(found) >= keep:
                break
    found = sorted(found, key=_key)[:keep]
    more = len(found) > listing.limit
    items = tuple(found[: listing.limit])
    return Page(items, encode_cursor(_key(items[-1])) if more else None)


async def find(store: DeadLetterStore, config: Config, text: str) -> DeadLetterEntry:
    """The dead letter with the stable id ``text``.

    Raises:
        BadRequest: Not an id of this backend.
        NotFound: No such dead letter.
    """
    topic, _, _ = order_key(text)
    postgres = config.retry_backend == "postgres"
    if postgres != text.strip().isdigit():
        expected = "a row id" if postgres else "TOPIC:PARTITION:OFFSET"
        raise BadRequest("id", f"{text!r} is not a dead-letter id here (expected {expected})")
    if not postgres and not topic and len(config.topics) != 1:
        raise BadRequest("id", f"{text!r} names no topic (expected TOPIC:PARTITION:OFFSET)")
    if topic and topic not in config.topics:
        raise NotFound(f"no dead letter {text!r}: {topic!r} is not a configured topic")
    try:
        return await store.get(text.strip())
    except DeadLetterError as exc:
        raise NotFound(str(exc)) from exc


async def groups(store: DeadLetterStore, query: DeadLetterQuery) -> list[FailureGroup]:
    """The failure groups of the dead letters ``query`` selects, the largest first."""
    async with _stream(store, query) as entries:
        return await group_stream(entries)


async def topic_counts(store: DeadLetterStore, config: Config) -> dict[str, tuple[int, int]]:
    """Per configured topic: (dead letters, of which replayed)."""
    counts = {topic: (0, 0) for topic in config.topics}
    async with _stream(store, DeadLetterQuery(replayed=None)) as entries:
        async for entry in entries:
            total, replayed = counts.get(entry.main_topic, (0, 0))
            counts[entry.main_topic] = (total + 1, replayed + entry.replayed)
    return counts


async def _chosen_ids(
    store: DeadLetterStore, selection: Selection, *, replayed: bool | None
) -> tuple[str, ...] | None:
    """The ids the selection names (a group resolved to its members); None for all."""
    if selection.ids:
        return selection.ids
    if selection.group is None:
        return None
    query = DeadLetterQuery(topics=(selection.topic,), replayed=replayed)
    async with _stream(store, query) as entries:
        return tuple(await ids_in_group(entries, selection.group))


async def replay(store: DeadLetterStore, selection: Selection) -> int:
    """Replay the selection (or count it, on a dry run); return how many.

    Dead letters replayed before are skipped, so the same replay twice sends nothing twice.

    Raises:
        DeadLetterError: The store refused (say, a Kafka error).
    """
    ids = await _chosen_ids(store, selection, replayed=False)
    if ids == ():
        return 0  # an empty group: an empty ids filter would select everything
    query = DeadLetterQuery(topics=(selection.topic,), ids=ids or ())
    if selection.rate is None or selection.dry_run:
        result = await store.replay(query, selection.target, dry_run=selection.dry_run)
        return result.selected if selection.dry_run else result.replayed
    if ids is None:
        async with _stream(store, query) as entries:
            ids = tuple([stable_id(entry) async for entry in entries])
    return await _paced(store, selection, ids)


async def _paced(store: DeadLetterStore, selection: Selection, ids: tuple[str, ...]) -> int:
    """Replay ``ids`` in one-second chunks of ``selection.rate`` dead letters."""
    assert selection.rate is not None
    chunk = max(1, int(selection.rate))
    loop = asyncio.get_running_loop()
    done = 0
    for start in range(0, len(ids), chunk):
        began = loop.time()
        query = DeadLetterQuery(topics=(selection.topic,), ids=ids[start : start + chunk])
        done += (await store.replay(query, selection.target)).replayed
        if start + chunk < len(ids):
            # Pacing is the point of a rate: wait out the rest of this chunk's share.
            await asyncio.sleep(max(0.0, chunk / selection.rate - (loop.time() - began)))
    return done


async def purge(store: DeadLetterStore, selection: Selection) -> int:
    """Delete the selection (or count it, on a dry run), replayed or not; return how many.

    Raises:
        DeadLetterError: The store cannot delete that selection (a Kafka
            dead-letter topic is cut only from its start), or failed.
    """
    ids = await _chosen_ids(store, selection, replayed=None)
    if ids == ():
        return 0
    query = DeadLetterQuery(topics=(selection.topic,), ids=ids or (), replayed=None)
    plan = await store.plan_purge(query)
    if selection.dry_run:
        return plan.count
    return await store.purge(plan)

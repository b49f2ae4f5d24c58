"""Topic chains: which topic a failed message moves to next. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs

__all__ = ["DEAD_LETTER_PREFIX", "TopicChain", "TopicNameGenerator", "default_topic_name"]

#: ``(group, main_topic, prefix) -> topic name``.
TopicNameGenerator = Callable[[str, str, str], str]

DEAD_LETTER_PREFIX = "deadLetter"


def default_topic_name(group: str, main_topic: str, prefix: str) -> str:
    """Name a retry or dead-letter topic exactly as the Go module does.

    >>> default_topic_name("algolia", "product", "retry1")
    'retry1.algolia.product'
    """
    return f"{prefix}.{group}.{main_topic}"


def retry_prefix(tier: int) -> str:
    """The name prefix of retry tier ``tier`` (1-based)."""
    return f"retry{tier}"


@attrs.frozen
class TopicChain:
    """The topics one main topic's failed messages move through.

    Attributes:
        main: The main (source) topic.
        retries: One topic per retry tier, tier 1 first.
        dead_letter: Where exhausted and non-retryable messages end.
    """

    main: str
    retries: tuple[str, ...]
    dead_letter: str

    @property
    def topics(self) -> list[str]:
        """Every topic of the chain, main first, dead letter last."""
        return [self.main, *self.retries, self.dead_letter]

    def next_after(self, attempts: int) -> str:
        """The topic a message goes to after ``attempts`` failed attempts."""
        if attempts <= len(self.retries):
            return self.retries[attempts - 1]
        return self.dead_letter


def build_chain(
    group: str, main_topic: str, tiers: int, generator: TopicNameGenerator
) -> TopicChain:
    """Build the chain of ``main_topic`` with ``tiers`` retry tiers."""
    retries = tuple(generator(group, main_topic, retry_prefix(k)) for k in range(1, tiers + 1))
    return TopicChain(
        main=main_topic,
        retries=retries,
        dead_letter=generator(group, main_topic, DEAD_LETTER_PREFIX),
    )


def find_collision(chains: Sequence[TopicChain], main_topics: Iterable[str]) -> str | None:
    """Describe the first generated name that repeats another topic, or return None."""
    mains = set(main_topics)
    seen: dict[str, str] = {}
    for chain in chains:
        for name in (*chain.retries, chain.dead_letter):
            if not isinstance(name, str) or not name:
                return f"generated an empty or non-string name for {chain.main!r}"
            if name in mains:
                return f"generated name {name!r} collides with a main topic"
            if name in seen:
                return f"generated name {name!r} twice (for {seen[name]!r} and {chain.main!r})"
            seen[name] = chain.main
    return None

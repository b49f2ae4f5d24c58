"""Reading the workers' ledgers, and judging a run against its plan.

An id has reached its terminal state when its handler succeeded (a success
line in some ledger) or when it is in the dead letter. The plan says which of
the two each id must reach; reaching neither is a loss, reaching the other is
a wrong outcome. Every terminal record past the first of an id is a duplicate,
which at-least-once delivery allows.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from tests.faults.plan import INTERVALS, ORDERED_KEYS, Act, LedgerLine, Record, behaviour

SUCCESS_OUTCOMES = frozenset({Act.OK.value, Act.VALUE.value})
# Ledger times are printed to the millisecond; due times are whole milliseconds.
_CLOCK_SLACK = 0.005


@attrs.frozen
class Call:
    """A ledger line and the process that wrote it.

    Attributes:
        pid: The worker's process id.
        line: What it recorded.
    """

    pid: int
    line: LedgerLine


@attrs.frozen
class DeadLetter:
    """A message found in the dead letter.

    Attributes:
        fid: Its id, or None when it has no ``fid`` header.
        digest: :func:`~tests.faults.plan.digest` of its key, value, original headers, timestamp.
        error_type: The error type recorded with it.
    """

    fid: int | None
    digest: str
    error_type: str


class LedgerView:
    """Everything the workers of one run have recorded so far.

    Args:
        directory: The run's ledger directory (``ledger-<pid>.log`` files).
    """

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._read: dict[Path, int] = {}
        self.calls: list[Call] = []
        #: Ids that reached the handler at least once.
        self.seen: set[int] = set()
        #: Ids whose handler succeeded at least once.
        self.succeeded: set[int] = set()
        #: Ids whose dead-lettering attempt has run.
        self.finally_failed: set[int] = set()
        #: Calls recorded per worker process.
        self.per_pid: collections.Counter[int] = collections.Counter()
        self._plan = ""

    def follow(self, plan: str) -> None:
        """Judge completion by ``plan`` from now on."""
        self._plan = plan

    def refresh(self) -> int:
        """Read the lines written since the last call; return how many."""
        before = len(self.calls)
        for path in sorted(self._directory.glob("ledger-*.log")):
            self._read_file(path)
        return len(self.calls) - before

    def _read_file(self, path: Path) -> None:
        pid = int(path.stem.removeprefix("ledger-"))
        with path.open("rb") as ledger:
            ledger.seek(self._read.get(path, 0))
            data = ledger.read()
        complete = data.rfind(b"\n") + 1  # a line being written is read next time
        self._read[path] = self._read.get(path, 0) + complete
        for raw in data[:complete].splitlines():
            self._add(Call(pid, LedgerLine.decode(raw)))

    def _add(self, call: Call) -> None:
        self.calls.append(call)
        self.per_pid[call.pid] += 1
        line = call.line
        self.seen.add(line.fid)
        if line.outcome in SUCCESS_OUTCOMES:
            self.succeeded.add(line.fid)
        elif self._plan and line.fid >= 0:
            attempt, dead = behaviour(self._plan, line.fid).final_attempt
            if dead and line.attempt == attempt:
                self.finally_failed.add(line.fid)

    def first_after(self, moment: float, *, pid: int | None = None, min_attempt: int = 1) -> float:
        """Seconds from ``moment`` to the first call after it; infinity if none.

        Only calls by ``pid`` (if given) of an attempt ``>= min_attempt`` count.
        """
        times = [
            c.line.at
            for c in self.calls
            if c.line.at >= moment
            and (pid is None or c.pid == pid)
            and c.line.attempt >= min_attempt
        ]
        return min(times) - moment if times else float("inf")

    def first_new_after(self, moment: float) -> float:
        """Seconds from ``moment`` to the first call after it of an id not handled before it.

        Returns infinity when there is none.
        """
        before = {c.line.fid for c in self.calls if c.line.at < moment}
        times = [c.line.at for c in self.calls if c.line.at >= moment and c.line.fid not in before]
        return min(times) - moment if times else float("inf")

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time without any handler call between ``start`` and ``end``."""
        times = sorted(c.line.at for c in self.calls if start <= c.line.at <= end)
        if not times:
            return end - start
        marks = [start, *times]
        return max(later - earlier for earlier, later in itertools.pairwise(marks))


@attrs.frozen
class Verdict:
    """How a run ended, judged against its plan.

    Attributes:
        messages: Ids produced.
        lost: Ids that reached no terminal state (must be empty).
        wrong: Ids that reached the terminal state the plan does not give them.
        duplicates: Terminal records past the first of each id.
        extra_calls: Handler calls beyond the plan's (redeliveries).
        corrupt: Descriptions of records that reached a handler or the
            dead letter altered (must be empty).
        early: Ids whose retry ran before it was due (must be empty).
        misrouted: Ids whose highest attempt is not the plan's last one: a
            failure taken for a success or the other way (must be empty).
        out_of_order: Ordered plan: ids first handled before an earlier id of
            their key had reached its last attempt (must be empty).
    """

    messages: int
    lost: list[int]
    wrong: list[int]
    duplicates: int
    extra_calls: int
    corrupt: list[str]
    early: list[int]
    misrouted: list[int]
    out_of_order: list[int] = attrs.field(factory=list)

    def problems(self) -> str:
        """What breaks a guarantee, or "" when nothing does."""
        found = []
        for name in ("lost", "wrong", "corrupt", "early", "misrouted", "out_of_order"):
            items = getattr(self, name)
            if items:
                found.append(f"{name}: {len(items)} e.g. {items[:10]}")
        return "; ".join(found)


def judge(
    plan: str, produced: Sequence[Record], calls: Sequence[Call], dead: Iterable[DeadLetter]
) -> Verdict:
    """Judge a finished run: every id must reach its planned terminal state, byte-exact."""
    expected = {record.fid: record.digest for record in produced}
    successes: collections.Counter[int] = collections.Counter()
    dead_letters: collections.Counter[int] = collections.Counter()
    corrupt = []
    for call in calls:
        line = call.line
        if expected.get(line.fid) != line.digest:
            corrupt.append(f"handler saw id {line.fid} attempt {line.attempt} altered")
        if line.outcome in SUCCESS_OUTCOMES:
            successes[line.fid] += 1
    for letter in dead:
        if letter.fid is None or expected.get(letter.fid) != letter.digest:
            corrupt.append(f"dead letter of id {letter.fid} altered")
        if letter.fid is not None:
            dead_letters[letter.fid] += 1
    lost, wrong, planned = [], [], 0
    for fid in expected:
        wanted = behaviour(plan, fid)
        planned += wanted.planned_calls
        reached, other = (
            (dead_letters, successes) if wanted.dead_letter else (successes, dead_letters)
        )
        if not reached[fid]:
            lost.append(fid)
        if other[fid]:
            wrong.append(fid)
    terminal = successes + dead_letters
    return Verdict(
        messages=len(expected),
        lost=lost,
        wrong=wrong,
        duplicates=sum(count - 1 for count in terminal.values() if count > 1),
        extra_calls=len(calls) - planned,
        corrupt=corrupt,
        early=early_retries(calls),
        misrouted=misrouted(plan, calls),
        out_of_order=out_of_order(plan, calls) if plan == "ordered" else [],
    )


def out_of_order(plan: str, calls: Sequence[Call]) -> list[int]:
    """Ids whose first call came before the call that ended the previous id of their key.

    Ids of one key are produced in id order, so they share a partition in that
    order. A redelivery may run an id again later, which is allowed; an id may
    not start before its predecessor's last attempt has started.
    """
    first: dict[int, float] = {}
    ended: dict[int, float] = {}
    for call in calls:
        line = call.line
        if line.fid < 0:
            continue
        first[line.fid] = min(first.get(line.fid, line.at), line.at)
        if line.attempt == behaviour(plan, line.fid).final_attempt[0]:
            ended[line.fid] = min(ended.get(line.fid, line.at), line.at)
    wrong = []
    for fid, at in first.items():
        previous = fid - ORDERED_KEYS
        if previous >= 0 and at + _CLOCK_SLACK < ended.get(previous, float("inf")):
            wrong.append(fid)
    return sorted(wrong)


def misrouted(plan: str, calls: Sequence[Call]) -> list[int]:
    """Ids whose highest attempt differs from the attempt that should have ended them."""
    highest: dict[int, int] = {}
    for call in calls:
        highest[call.line.fid] = max(highest.get(call.line.fid, 0), call.line.attempt)
    return sorted(
        fid
        for fid, attempt in highest.items()
        if fid < 0 or attempt != behaviour(plan, fid).final_attempt[0]
    )


def early_retries(calls: Sequence[Call]) -> list[int]:
    """Ids whose first attempt ``k + 1`` started before the first attempt ``k`` plus interval ``k``.

    Each retry's failure happened after its attempt started, so this bound holds
    whenever no retry runs before its due time.
    """
    first: dict[tuple[int, int], float] = {}
    for call in calls:
        key = (call.line.fid, call.line.attempt)
        first[key] = min(first.get(key, call.line.at), call.line.at)
    early = set()
    for (fid, attempt), at in first.items():
        previous = first.get((fid, attempt - 1))
        if previous is not None and at + _CLOCK_SLACK < previous + INTERVALS[attempt - 2]:
            early.add(fid)
    return sorted(early)

"""Finding and running the Python samples of the documentation (``docs/**/*.md``, README.md).

Every fenced ``python`` block of a page runs, in page order, in one namespace
per page, so a block may use what an earlier block of its page defined. An HTML
comment on the line before a fence changes that:

* ``<!-- requires: kafka -->`` (or ``postgres``, or ``kafka, postgres``): the
  block needs real services. It runs only in the integration suite, where
  the addresses a reader would type (``localhost:9092``, the
  ``postgresql://postgres:postgres@localhost:5432/postgres`` URL, metrics port
  9100) are replaced by those of the test services. ``apache-kafka`` is a
  broker with Kafka's whole admin API: not the Tansu test broker.
* ``<!-- not-run: reason -->``: the block is a fragment that cannot run; the
  reason is required. It is still compiled when it is valid Python.

A block whose first line is ``# some/path.py`` is also written to that path in
a temporary directory on ``sys.path``, so later blocks can import it as a
module, as a reader's test file imports their service. Functions named
``test_*`` that a block defines are called after it, with fixtures by parameter
name (``test_consumer``, ``memory_broker``, ``virtual_clock``, and against
services ``kafka_bootstrap`` and ``database_url``). The namespace's
``__name__`` is not ``"__main__"``: a script's ``if __name__ == "__main__":``
part does not run. In the integration suite, a block that requires services
and defines ``main()`` behind such a guard has ``main()`` run until every
consumer it started is ready, and then stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from kafka_retry.testing import MemoryBroker, TestConsumer, VirtualClock

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"

SERVICES = frozenset({"kafka", "apache-kafka", "postgres"})
KAFKA_ADDRESS = "localhost:9092"
DATABASE_URL = "postgresql://postgres:postgres@localhost:5432/postgres"
METRICS_PORT = "9100"

_FENCE = re.compile(r"^(?P<indent>[ ]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<kind>[a-z-]+)\s*:\s*(?P<value>.*?)\s*-->\s*$")
_MODULE_PATH = re.compile(r"^#\s*(?P<path>[\w./-]+\.py)\s*$")
_MAIN_GUARD = re.compile(r"^if __name__ == [\"']__main__[\"']:", re.MULTILINE)


class SampleError(Exception):
    """Raised when a page's samples are malformed (a bad directive, an unclosed fence)."""


@attrs.frozen
class Sample:
    """One fenced ``python`` block of a page.

    Attributes:
        page: The page, relative to the repository root.
        line: The line of the block's first code line (1-based).
        code: The code, dedented to the fence.
        requires: The services it needs (empty: runs in memory).
        not_run: Why it does not run, for a fragment; else None.
    """

    page: Path
    line: int
    code: str
    requires: frozenset[str] = frozenset()
    not_run: str | None = None

    @property
    def module_path(self) -> str | None:
        """The path named by a ``# path.py`` first line, or None."""
        first = self.code.split("\n", 1)[0]
        match = _MODULE_PATH.match(first)
        return match.group("path") if match else None

    @property
    def where(self) -> str:
        """``page:line``, for messages."""
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """Every documentation page and the README, in a stable order."""
    return [*sorted(DOCS.rglob("*.md")), README]


def _directive(line: str, where: str) -> tuple[frozenset[str], str | None] | None:
    match = _DIRECTIVE.match(line)
    if match is None:
        return None
    kind, value = match.group("kind"), match.group("value")
    if kind == "requires":
        services = frozenset(part.strip() for part in value.split(","))
        unknown = services - SERVICES
        if unknown or not value:
            raise SampleError(f"{where}: requires names unknown services {sorted(unknown)}")
        return services, None
    if kind == "not-run":
        if not value:
            raise SampleError(f"{where}: not-run needs a reason")
        return frozenset(), value
    return None  # another HTML comment


def samples(page: Path) -> list[Sample]:
    """The ``python`` blocks of ``page`` with their directives.

    Raises:
        SampleError: A fence is not closed, or a directive is not followed by a python block.
    """
    relative = page.relative_to(ROOT)
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Sample] = []
    pending: tuple[frozenset[str], str | None] | None = None
    pending_at = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _directive(line, f"{relative}:{index + 1}")
        if directive is not None:
            pending, pending_at = directive, index + 1
            index += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                raise SampleError(f"{relative}:{pending_at}: directive not followed by a block")
            index += 1
            continue
        end, body = _block(lines, index, fence, relative)
        language = fence.group("info").strip().split(" ")[0].lower()
        if language == "python":
            requires, not_run = pending or (frozenset(), None)
            found.append(Sample(relative, index + 2, "\n".join(body) + "\n", requires, not_run))
        elif pending is not None:
            raise SampleError(f"{relative}:{pending_at}: directive before a {language} block")
        pending = None
        index = end + 1
    return found


def _block(lines: list[str], start: int, fence: re.Match[str], page: Path) -> tuple[int, list[str]]:
    indent, marker = len(fence.group("indent")), fence.group("fence")
    for end in range(start + 1, len(lines)):
        stripped = lines[end].strip()
        if stripped.startswith(marker[0] * len(marker)) and not stripped.strip(marker[0]):
            return end, [text[indent:] for text in lines[start + 1 : end]]
    raise SampleError(f"{page}:{start + 1}: code fence not closed")


@attrs.frozen
class Services:
    """The real services of the integration suite.

    Attributes:
        kafka: Bootstrap servers of the test broker.
        supports_idempotence: Whether that broker hands out producer ids.
        database_url: The test database.
        full_kafka: Whether the broker has Kafka's whole admin API (Tansu has not).
    """

    kafka: str | None = None
    supports_idempotence: bool = True
    database_url: str | None = None
    full_kafka: bool = True

    @property
    def available(self) -> frozenset[str]:
        """The services that samples may require here."""
        found: set[str] = set()
        if self.kafka is not None:
            found.add("kafka")
            if self.full_kafka:
                found.add("apache-kafka")
        if self.database_url is not None:
            found.add("postgres")
        return frozenset(found)

    def substitute(self, code: str) -> str:
        """``code`` with a reader's addresses replaced by the test services'."""
        if self.kafka is not None:
            code = code.replace(KAFKA_ADDRESS, self.kafka)
        if self.database_url is not None:
            code = code.replace(DATABASE_URL, self.database_url)
        return code.replace(f"serve({METRICS_PORT}", "serve(0")


def _fixtures(services: Services | None) -> dict[str, Callable[[], Any]]:
    clock = VirtualClock()
    broker = MemoryBroker(clock=clock)

    def make(consumer: Any, handlers: Any = None, *, partitions: int = 1) -> TestConsumer:
        return TestConsumer(consumer, handlers, broker=broker, clock=clock, partitions=partitions)

    fixtures: dict[str, Callable[[], Any]] = {
        "virtual_clock": lambda: clock,
        "memory_broker": lambda: broker,
        "test_consumer": lambda: make,
    }
    if services is not None and services.kafka is not None:
        fixtures["kafka_bootstrap"] = lambda: services.kafka
    if services is not None and services.database_url is not None:
        fixtures["database_url"] = lambda: services.database_url
    return fixtures


def call_test(function: Callable[..., Any], services: Services | None, where: str) -> None:
    """Call a sample's test function with its fixtures; run it on a new loop if it is async."""
    fixtures = _fixtures(services)
    kwargs: dict[str, Any] = {}
    for name in inspect.signature(function).parameters:
        if name not in fixtures:
            raise SampleError(f"{where}: {function.__name__} asks for unknown fixture {name!r}")
        kwargs[name] = fixtures[name]()
    result = function(**kwargs)
    if inspect.iscoroutine(result):
        asyncio.run(result)


@contextlib.contextmanager
def _isolated(tmp: Path) -> Iterator[None]:
    """Put ``tmp`` on sys.path; afterwards forget its modules and restore the loggers."""
    sys.path.insert(0, str(tmp))
    loggers = [logging.getLogger(), logging.getLogger("kafka_retry")]
    saved = [(log, list(log.handlers), log.level) for log in loggers]
    before = set(sys.modules)
    try:
        yield
    finally:
        sys.path.remove(str(tmp))
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            # Namespace packages (a folder without __init__.py) have a path but no file.
            places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", ())]
            if any(str(place).startswith(str(tmp)) for place in places):
                del sys.modules[name]
        for log, handlers, level in saved:
            log.handlers[:] = handlers
            log.setLevel(level)


MainDriver = Callable[[Callable[[], Any], Sample], None]


def run_page(
    page: Path,
    tmp: Path,
    *,
    services: Services | None = None,
    drive_main: MainDriver | None = None,
) -> list[Sample]:
    """Run the samples of ``page`` that can run here; return those that ran.

    Without ``services`` only in-memory samples run; with them, every sample
    but the ``not-run`` ones and those requiring a service that is missing.

    Raises:
        SampleError: A sample is malformed.
        Exception: Whatever a sample raised.
    """
    namespace: dict[str, Any] = {"__name__": f"docs_{uuid.uuid4().hex[:8]}"}
    ran: list[Sample] = []
    with _isolated(tmp):
        for sample in samples(page):
            available = services.available if services is not None else frozenset()
            runnable = sample.not_run is None and sample.requires <= available
            code = sample.code
            if sample.requires and services is not None:
                code = services.substitute(code)
            if sample.module_path is not None and sample.not_run is None:
                target = tmp / sample.module_path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(code, encoding="utf-8")
            compiled = _compile(sample, code)
            if not runnable or compiled is None:
                continue
            exec(compiled, namespace)
            _run_tests(namespace, sample, services)
            if drive_main is not None and sample.requires and _MAIN_GUARD.search(code):
                main = namespace.get("main")
                if not inspect.iscoroutinefunction(main):
                    raise SampleError(f"{sample.where}: a __main__ guard without async main()")
                drive_main(main, sample)
            ran.append(sample)
    return ran


def _compile(sample: Sample, code: str) -> Any:
    """Compile with line numbers of the page, so tracebacks point into the Markdown."""
    source = "\n" * (sample.line - 1) + code
    try:
        return compile(source, str(sample.page), "exec")
    except SyntaxError:
        if sample.not_run is not None:
            return None  # a fragment may be no valid Python on its own
        raise


def _run_tests(namespace: Mapping[str, Any], sample: Sample, services: Services | None) -> None:
    last = sample.line + sample.code.count("\n")
    for name, value in list(namespace.items()):
        code = getattr(value, "__code__", None)
        if not name.startswith("test_") or code is None or not callable(value):
            continue
        if code.co_filename == str(sample.page) and sample.line <= code.co_firstlineno <= last:
            call_test(value, services, f"{sample.where} {name}")

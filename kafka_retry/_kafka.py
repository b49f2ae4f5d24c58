"""The shared Kafka client code: aiokafka clients from a Config, connecting within a bound, topics.

The runtime, the retry backends, the dead-letter tools and the command line all
make their Kafka clients here, so TLS, SASL and the connect bound behave alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import BrokerResponseError, KafkaConnectionError, KafkaError

from kafka_retry import _direct
from kafka_retry._handshake import classify, diagnose
from kafka_retry._tls import client_context
from kafka_retry._topic_configs import (
    MAIN_TOPIC_CONFIGS,
    RETENTION_CONFIGS,
    TopicConfigs,
    describe_topic_configs,
    new_topic_configs,
    retention_shortfalls,
)
from kafka_retry.config import Config
from kafka_retry.errors import ServiceUnavailableError, SetupError

log = logging.getLogger("kafka_retry")

T = TypeVar("T")

#: How long closing a client may take before it is left to finish in the background.
CLOSE_BOUND = 3.0
# Closings that outlived the bound: referenced, so they are not collected half-way.
_closing: set[asyncio.Future[Any]] = set()

_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3


class _HideSaslRequests(logging.Filter):
    """Hides the SASL bytes (a PLAIN password) from aiokafka's DEBUG log of each request."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(_is_sasl_request(arg) for arg in args):
            record.args = tuple(
                "SaslAuthenticateRequest(<hidden>)" if _is_sasl_request(arg) else arg
                for arg in args
            )
        return True


def _is_sasl_request(arg: object) -> bool:
    return type(arg).__name__.startswith("SaslAuthenticateRequest")


_SASL_FILTER = _HideSaslRequests()


def hide_sasl_requests() -> None:
    """Keep SASL credentials out of the ``aiokafka.conn`` logger's records (idempotent)."""
    logger = logging.getLogger("aiokafka.conn")
    if _SASL_FILTER not in logger.filters:
        logger.addFilter(_SASL_FILTER)


def security_kwargs(config: Config) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS and SASL.

    Raises:
        ConfigError: A certificate file cannot be loaded (names the field).
    """
    kwargs: dict[str, Any] = {}
    tls = config.tls_enabled or bool(config.tls_ca_file or config.tls_cert_file)
    tls = tls or config.tls_context is not None
    if tls:
        kwargs["ssl_context"] = client_context(config)
    if config.sasl_mechanism:
        hide_sasl_requests()
        kwargs["sasl_mechanism"] = config.sasl_mechanism
        kwargs["sasl_plain_username"] = config.sasl_username
        kwargs["sasl_plain_password"] = config.sasl_password
        kwargs["security_protocol"] = "SASL_SSL" if tls else "SASL_PLAINTEXT"
    elif tls:
        kwargs["security_protocol"] = "SSL"
    return kwargs


def common_kwargs(config: Config) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of this consumer shares."""
    return {"bootstrap_servers": config.bootstrap, **security_kwargs(config)}


async def close_within_bound(what: str, close: Callable[[], Awaitable[object]]) -> None:
    """Await ``close()``, but return after :data:`CLOSE_BOUND` seconds whatever it does.

    aiokafka's consumer, closing, waits for its group coordination to finish:
    during a broker outage that is until Kafka is back, and with a join pending
    at the broker (another member drains a rebalance) until that rebalance
    ends. Past the bound the closing goes on in the background and finishes by
    itself; nothing is lost, since offsets were committed (or not) before.

    Raises:
        Exception: What ``close()`` raised within the bound.
    """
    closing = asyncio.ensure_future(close())
    done, _ = await asyncio.wait({closing}, timeout=CLOSE_BOUND)
    if done:
        closing.result()
        return
    _closing.add(closing)
    closing.add_done_callback(_closed_late)
    log.warning(
        "%s did not close within %gs (Kafka unreachable, or a group join still pending);"
        " it goes on closing in the background",
        what,
        CLOSE_BOUND,
    )


async def finish_late_closes() -> None:
    """Wait for the closings that outlived :data:`CLOSE_BOUND` (tests; a clean exit)."""
    if _closing:
        await asyncio.wait(set(_closing))


def _closed_late(closing: asyncio.Future[Any]) -> None:
    _closing.discard(closing)
    if not closing.cancelled() and closing.exception() is not None:
        log.info("a late close failed: %s", closing.exception())


async def start_within_bound(config: Config, what: str, start: Callable[[], Awaitable[T]]) -> T:
    """Call ``start`` until it succeeds, at most ``config.connect_attempts`` times.

    A TLS or authentication failure is not retried: no later attempt can succeed.

    Raises:
        TLSError: A TLS handshake failed (untrusted certificate, ...); names the address.
        AuthenticationError: The broker refused the SASL credentials or mechanism.
        ServiceUnavailableError: Every attempt failed; names the address.
    """
    last: BaseException | None = None
    for attempt in range(1, config.connect_attempts + 1):
        try:
            return await start()
        except (KafkaError, OSError) as exc:
            last = exc
            refused = await _security_failure(config, exc)
            if refused is not None:
                raise refused from exc
            log.warning(
                "%s at %s not reachable (attempt %d of %d): %s",
                what,
                config.bootstrap,
                attempt,
                config.connect_attempts,
                exc,
            )
            if attempt < config.connect_attempts:
                await asyncio.sleep(config.connect_interval)
    attempts = config.connect_attempts
    raise ServiceUnavailableError(
        f"{what} at {config.bootstrap} unreachable after {attempts} attempts: {last}",
        address=config.bootstrap,
    ) from last


async def _security_failure(config: Config, error: BaseException) -> Exception | None:
    found = classify(error, config.bootstrap, config)
    if found is None and isinstance(error, KafkaConnectionError):
        # "Unable to bootstrap": aiokafka logged the reason and dropped it.
        found = await diagnose(config, security_kwargs(config))
    return found


_PRODUCER_KWARGS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 2,
    # Thousands of hand-offs may wait on one partition's batch; a 16 KB
    # batch drains (and wakes them all) every few records.
    "max_batch_size": 1024 * 1024,
    "max_request_size": 16 * 1024 * 1024,
}
#: Seconds a transactional producer may take to get its producer id at start.
TRANSACTIONS_BOUND = 20.0


def transactional_id(config: Config, tier: str) -> str:
    """The transactional id of ``tier`` (``main``, ``retry1``, ...) of this instance.

    ``<group>.<instance id>.<tier>``: the same after a restart of the instance,
    so the new producer fences the one before it and aborts its open transaction.
    """
    return f"{config.transactional_prefix}.{tier}"


class KafkaTransport(Protocol):
    """Makes the Kafka clients a consumer uses; swapped for an in-memory broker in tests.

    The objects returned behave like aiokafka's ``AIOKafkaAdminClient``,
    ``AIOKafkaProducer`` and ``AIOKafkaConsumer`` (the subset the runtime calls).
    A transport with transactions (``exactly_once``) also has
    ``transactional_producer(config, tier)``; the in-memory one has not.
    """

    def admin(self, config: Config) -> Any: ...

    def producer(self, config: Config) -> Any: ...

    def consumer(self, config: Config, group_id: str, tier: str, reset: str) -> Any: ...


class AIOKafkaTransport:
    """The real transport: aiokafka clients configured from the Config."""

    def admin(self, config: Config) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(client_id=f"{config.client_id}-admin", **common_kwargs(config))

    def producer(self, config: Config) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            client_id=f"{config.client_id}-forwarder",
            enable_idempotence=config.idempotence,
            **_PRODUCER_KWARGS,
            **common_kwargs(config),
        )

    def transactional_producer(self, config: Config, tier: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            client_id=f"{config.client_id}-forwarder-{tier}",
            transactional_id=transactional_id(config, tier),
            **_PRODUCER_KWARGS,
            **common_kwargs(config),
        )

    def consumer(self, config: Config, group_id: str, tier: str, reset: str) -> AIOKafkaConsumer:
        # The main tier's records become Messages in the fetcher (see _direct).
        direct = tier == "main" and _direct.install()
        return AIOKafkaConsumer(
            group_id=group_id,
            value_deserializer=_direct.direct_messages if direct else None,
            client_id=f"{config.client_id}-{tier}",
            enable_auto_commit=False,
            auto_offset_reset=reset,
            isolation_level=config.effective_isolation_level,
            max_poll_interval_ms=config.max_poll_interval_ms,
            session_timeout_ms=config.session_timeout_ms,
            rebalance_timeout_ms=config.effective_rebalance_timeout_ms,
            heartbeat_interval_ms=max(1000, config.session_timeout_ms // 10),
            **common_kwargs(config),
        )


async def start_admin(config: Config, transport: KafkaTransport) -> Any:
    """An admin client, connected within the configured bound."""

    async def start() -> Any:
        admin = transport.admin(config)
        try:
            await admin.start()
        except BaseException:
            await admin.close()
            raise
        return admin

    return await start_within_bound(config, "Kafka", start)


async def start_producer(config: Config, transport: KafkaTransport) -> Any:
    """The producer that forwards failures: acks=all, idempotent unless turned off.

    Raises:
        SetupError: The broker answers but refuses an idempotent producer (it
            hands out no producer ids); raised at the first attempt.
        ServiceUnavailableError: Kafka stayed unreachable; see :func:`start_within_bound`.
    """

    async def start() -> Any:
        producer = transport.producer(config)
        try:
            await producer.start()
        except BaseException as exc:
            await producer.stop()
            if _refused_idempotence(config, producer, exc):
                raise _idempotence_error(config, exc) from exc
            raise
        return producer

    return await start_within_bound(config, "Kafka", start)


def _refused_idempotence(config: Config, producer: Any, error: BaseException) -> bool:
    # aiokafka retries a lost connection or a moving coordinator itself; a
    # broker error that reaches start() after the metadata came back (so not a
    # SASL refusal) is the broker's answer to InitProducerId, and retrying
    # cannot change it.
    if not config.idempotence or not isinstance(error, BrokerResponseError) or error.retriable:
        return False
    cluster = getattr(getattr(producer, "client", None), "cluster", None)
    return bool(cluster is not None and cluster.brokers())


def _idempotence_error(config: Config, error: BaseException) -> SetupError:
    return SetupError(
        f"Kafka at {config.bootstrap} is reachable but refused an idempotent producer"
        f" ({type(error).__name__}: {error}); a broker that hands out no producer ids"
        " (Tansu, some Kafka-compatible services) needs idempotence=False"
        " (KAFKA_IDEMPOTENCE=false)"
    )


async def start_transactional_producer(config: Config, transport: KafkaTransport, tier: str) -> Any:
    """The transactional producer of tier ``tier``, started, its first transaction begun.

    Starting it fences an earlier producer of the same transactional id (this
    instance before a restart) and aborts that one's open transaction.

    Raises:
        SetupError: The broker has no transactions (or none within
            :data:`TRANSACTIONS_BOUND` seconds); names ``exactly_once``.
        ServiceUnavailableError: Kafka stayed unreachable for every attempt.
    """
    name = transactional_id(config, tier)
    make = getattr(transport, "transactional_producer", None)
    if make is None:
        raise SetupError(
            f"exactly_once=True needs Kafka transactions, which {type(transport).__name__}"
            " (the in-memory test mode) does not have; test with exactly_once=False, or"
            " against a broker"
        )

    async def start() -> Any:
        producer = make(config, tier)
        try:
            async with asyncio.timeout(TRANSACTIONS_BOUND):
                await producer.start()
                await producer.begin_transaction()
        except BaseException as exc:
            await close_within_bound(f"producer {name}", producer.stop)
            if isinstance(exc, TimeoutError):
                reason = f"no producer id for transactional id {name} in {TRANSACTIONS_BOUND:g}s"
                raise _no_transactions(config, reason) from exc
            if isinstance(exc, KafkaError) and not isinstance(exc, KafkaConnectionError):
                # The broker answered, but not with a producer id: Tansu says UnknownError.
                raise _no_transactions(config, f"{type(exc).__name__}: {exc}") from exc
            raise
        return producer

    return await start_within_bound(config, "Kafka", start)


def _no_transactions(config: Config, reason: str) -> SetupError:
    return SetupError(
        f"exactly_once=True needs a broker with transactions, and {config.bootstrap}"
        f" gave none ({reason}); use a broker that supports them, or exactly_once=False"
    )


async def partition_counts(admin: Any, topics: list[str]) -> dict[str, int]:
    """Partitions per existing topic among ``topics`` (missing topics are left out)."""
    # Describing a missing topic can auto-create it on the broker with default
    # settings, so only existing topics are described.
    existing = set(await admin.list_topics())
    topics = [topic for topic in topics if topic in existing]
    if not topics:
        return {}
    described = await admin.describe_topics(topics)
    counts: dict[str, int] = {}
    for topic in described:
        if topic["error_code"] == 0 and topic["partitions"]:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts


async def ensure_topics(admin: Any, config: Config) -> dict[str, int]:
    """Create every missing retry and dead-letter topic like its main topic.

    Partitions are the main topic's; retention and ``max.message.bytes`` follow
    from the main topic's (see :mod:`kafka_retry._topic_configs`). An existing
    retry or dead-letter topic that keeps records for less than that is left
    as it is, with a warning.

    Returns:
        Partitions per main topic.

    Raises:
        SetupError: A main topic does not exist, or the broker refused a creation.
    """
    mains = list(config.topics)
    counts = await partition_counts(admin, mains)
    missing_mains = [t for t in mains if t not in counts]
    if missing_mains:
        raise SetupError(
            f"main topic(s) {', '.join(missing_mains)} do not exist at {config.bootstrap}; "
            "create them before starting the consumer"
        )
    if config.retry_backend == "postgres":
        return counts  # retries and dead letters live in the table: no topics to create
    wanted = chain_topics(config)
    existing = await partition_counts(admin, list(wanted))
    main_configs = await describe_topic_configs(admin, mains, MAIN_TOPIC_CONFIGS)
    missing = {name: main for name, main in wanted.items() if name not in existing}
    if missing:
        await _create_topics(admin, config, missing, counts, main_configs)
    if existing:
        found = await describe_topic_configs(admin, existing, RETENTION_CONFIGS)
        for main in mains:
            for warning in retention_shortfalls(
                config, config.chain(main), main_configs.get(main, {}), found
            ):
                log.warning("%s", warning, extra={"topic": main})
    return counts


def chain_topics(config: Config) -> dict[str, str]:
    """The main topic of each retry and dead-letter topic of the Kafka backend."""
    return {name: main for main in config.topics for name in config.topic_chain(main)[1:]}


async def check_topics(admin: Any, config: Config) -> None:
    """Check that every topic the consumer reads or writes exists (``create_topics=False``).

    Raises:
        SetupError: Names the topics that do not exist: main topics, and with
            the Kafka backend the retry and dead-letter topics too.
    """
    wanted = list(config.topics)
    if config.retry_backend == "kafka":
        wanted += list(chain_topics(config))
    existing = await partition_counts(admin, wanted)
    missing = [topic for topic in wanted if topic not in existing]
    if missing:
        raise SetupError(
            f"topic(s) {', '.join(missing)} do not exist at {config.bootstrap} and"
            " create_topics is off; create them, or let the consumer (create_topics=True)"
        )


async def _create_topics(
    admin: Any,
    config: Config,
    missing: dict[str, str],
    counts: dict[str, int],
    main_configs: TopicConfigs,
) -> None:
    """Create the topics ``missing`` names (topic -> main topic)."""
    new = []
    for name, main in missing.items():
        chain = config.chain(main)
        tier = chain.retries.index(name) + 1 if name in chain.retries else None
        configs = new_topic_configs(config, main_configs.get(main, {}), tier)
        new.append(NewTopic(name, counts[main], config.replication_factor, topic_configs=configs))
    response = await admin.create_topics(new)
    for name, code, *rest in response.topic_errors:
        if code not in (0, _TOPIC_ALREADY_EXISTS):
            detail = rest[0] if rest else ""
            raise SetupError(f"could not create topic {name}: error {code} {detail}".strip())
    log.info("created topics %s", ", ".join(t.name for t in new))

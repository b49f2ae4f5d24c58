"""Just enough of the Kafka wire protocol to ask a broker whether it is ready.

A raw, synchronous exchange keeps the devstack usable from any context (a
running event loop, a shell) and lets it tell "nothing listens" apart from
"something listens but does not speak Kafka".
"""

from __future__ import annotations

import socket
import struct
import time

_API_VERSIONS = 18
_INIT_PRODUCER_ID = 22
_METADATA = 3
# Metadata v4 to v7 share one non-flexible layout up to the topic list; Kafka
# 4 answers v4 and later, Kafka 1.0 and later answer v4.
_METADATA_VERSIONS = range(4, 8)
_CLIENT_ID = b"kafka-retry-devstack"
# COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR,
# REQUEST_TIMED_OUT: a fresh broker answers these until its producer-id
# manager has its first block; they pass on retry.
_RETRIABLE = frozenset({14, 15, 16, 7})
_DEFAULT_PORT = 9092


class ProbeError(Exception):
    """Raised when an address does not answer like a Kafka broker."""


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """Split ``host:port,host:port`` into pairs; a missing port means 9092.

    Raises:
        ValueError: If the string names no address or a port is not a number.
    """
    addresses = []
    for item in bootstrap.split(","):
        entry = item.strip().rpartition("://")[2]
        if not entry:
            continue
        if entry.startswith("["):  # [::1]:9092
            host, _, rest = entry[1:].partition("]")
            port_text = rest.removeprefix(":")
        elif entry.count(":") == 1:
            host, _, port_text = entry.partition(":")
        else:
            host, port_text = entry, ""
        if port_text and not port_text.isdigit():
            raise ValueError(f"bad port in bootstrap address {item.strip()!r}")
        addresses.append((host, int(port_text) if port_text else _DEFAULT_PORT))
    if not addresses:
        raise ValueError(f"no address in bootstrap servers {bootstrap!r}")
    return addresses


class _Connection:
    """One blocking connection whose every read and write respects a deadline."""

    def __init__(self, host: str, port: int, deadline: float) -> None:
        self._deadline = deadline
        self._sock = socket.create_connection((host, port), timeout=self._left())
        self._correlation = 0

    def close(self) -> None:
        self._sock.close()

    def _left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        """Send one request (header v1) and return the response after its id."""
        self._correlation += 1
        header = struct.pack(">hhih", api_key, version, self._correlation, len(_CLIENT_ID))
        message = header + _CLIENT_ID + body
        self._sock.settimeout(self._left())
        self._sock.sendall(struct.pack(">i", len(message)) + message)
        (size,) = struct.unpack(">i", self._read(4))
        response = self._read(size)
        (correlation,) = struct.unpack(">i", response[:4])
        if correlation != self._correlation:
            raise ProbeError("the answer does not match the request")
        return response[4:]

    def _read(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            self._sock.settimeout(self._left())
            chunk = self._sock.recv(count - len(chunks))
            if not chunk:
                raise ProbeError("the connection was closed without an answer")
            chunks += chunk
        return bytes(chunks)


def _api_versions(conn: _Connection) -> dict[int, tuple[int, int]]:
    # Version 0 is the one request every broker must answer, whatever its age.
    body = conn.request(_API_VERSIONS, 0, b"")
    try:
        error, count = struct.unpack(">hi", body[:6])
        entries = [struct.unpack(">hhh", body[6 + 6 * i : 12 + 6 * i]) for i in range(count)]
    except struct.error as exc:
        raise ProbeError("the answer is not a Kafka ApiVersions response") from exc
    if error != 0:
        raise ProbeError(f"ApiVersions answered error code {error}")
    return {key: (low, high) for key, low, high in entries}


def _producer_id_error(conn: _Connection, versions: dict[int, tuple[int, int]]) -> int | None:
    low, _high = versions.get(_INIT_PRODUCER_ID, (99, -1))
    if low > 1:
        return None  # cannot ask with the simple encoding; assume a modern broker
    # transactional_id = null, transaction_timeout_ms: an idempotent producer's request.
    body = conn.request(_INIT_PRODUCER_ID, max(low, 0), struct.pack(">hi", -1, 60_000))
    (error,) = struct.unpack(">h", body[4:6])
    return int(error)


def probe(host: str, port: int, *, timeout: float, idempotence: bool = False) -> bool | None:
    """Check that ``host:port`` answers Kafka requests.

    Args:
        host: Broker host.
        port: Broker port.
        timeout: Seconds for the whole exchange.
        idempotence: Also ask for a producer id, as an idempotent producer does.

    Returns:
        With ``idempotence``: whether the broker hands out producer ids (None
        if it cannot be asked). Without: None.

    Raises:
        OSError: If nothing accepts the connection or it times out.
        ProbeError: If the peer does not answer like a Kafka broker.
    """
    deadline = time.monotonic() + timeout
    conn = _Connection(host, port, deadline)
    try:
        versions = _api_versions(conn)
        if not idempotence:
            return None
        while True:
            error = _producer_id_error(conn, versions)
            if error not in _RETRIABLE:
                return None if error is None else error == 0
            if time.monotonic() + 0.2 > deadline:
                raise ProbeError(f"InitProducerId kept answering error code {error}")
            time.sleep(0.2)
    finally:
        conn.close()


def _metadata_brokers(body: bytes) -> list[int]:
    """The node ids in a Metadata v4-v7 response (after its correlation id)."""
    try:
        (count,) = struct.unpack_from(">i", body, 4)  # after throttle_time_ms
        offset, ids = 8, []
        for _ in range(count):
            node_id, host_length = struct.unpack_from(">ih", body, offset)
            offset += 6 + host_length + 4  # host, then port
            (rack_length,) = struct.unpack_from(">h", body, offset)
            offset += 2 + max(rack_length, 0)
            ids.append(node_id)
    except struct.error as exc:
        raise ProbeError("the answer is not a Kafka Metadata response") from exc
    return sorted(ids)


def broker_ids(host: str, port: int, *, timeout: float) -> list[int]:
    """The ids of the brokers that ``host:port`` knows to be serving (unfenced).

    Raises:
        OSError: If nothing accepts the connection or it times out.
        ProbeError: If the peer does not answer like a Kafka broker, or
            speaks no Metadata version this module can read.
    """
    conn = _Connection(host, port, time.monotonic() + timeout)
    try:
        low, high = _api_versions(conn).get(_METADATA, (99, -1))
        version = max(low, _METADATA_VERSIONS.start)
        if version > min(high, _METADATA_VERSIONS.stop - 1):
            raise ProbeError(f"no readable Metadata version (broker: {low}..{high})")
        # An empty topic list (not null: that would mean every topic), no auto-creation.
        body = conn.request(_METADATA, version, struct.pack(">ib", 0, 0))
        return _metadata_brokers(body)
    finally:
        conn.close()

"""The console app without services: lazy imports, refusals before any connection, 503 when down."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import pytest

from kafka_retry import Config, ConfigError
from kafka_retry.console import console_app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


CONFIG = Config(
    bootstrap_servers=f"127.0.0.1:{_closed_port()}",
    group="shop",
    topics=["orders"],
    connect_attempts=1,
    connect_interval=0.05,
    metrics=False,
)


def client(**options: object) -> httpx.AsyncClient:
    """A client of the console of CONFIG, whose broker is not there."""
    transport = httpx.ASGITransport(app=console_app(CONFIG, **options))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://console")


def test_fastapi_is_imported_only_by_console_app() -> None:
    """The package, its command line and kafka_retry.console import without loading FastAPI."""
    code = (
        "import sys, kafka_retry, kafka_retry.cli, kafka_retry.console; "
        "print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_postgres_without_database_is_refused_at_once() -> None:
    """Settings errors surface when the app is made, not at the first request."""
    with pytest.raises(ConfigError, match="database"):
        console_app(
            Config(bootstrap_servers="x:1", group="g", topics=["t"], retry_backend="postgres")
        )


async def test_bad_input_is_refused_before_connecting() -> None:
    """Malformed requests answer 400 naming the field, without waiting for the broker."""
    async with client() as http:
        answer = await http.get("/api/dead-letters", params={"limit": "10" * 50})
        assert (answer.status_code, answer.json()["field"]) == (400, "limit")
        json_type = {"content-type": "application/json"}
        answer = await http.post("/api/replay", content=b"\xff", headers=json_type)
        assert (answer.status_code, answer.json()["field"]) == (400, "body")
        form = {"content-type": "text/plain"}  # what a cross-site form can send
        answer = await http.post(
            "/api/purge", content=b'{"topic": "orders", "all": true}', headers=form
        )
        assert (answer.status_code, answer.json()["field"]) == (400, "content-type")
        answer = await http.post("/api/purge", json={"topic": "orders", "ids": [], "all": True})
        assert (answer.status_code, answer.json()["field"]) == (400, "ids")
        assert (await http.get("/api/nothing-here")).status_code == 404


async def test_unreachable_broker_answers_503() -> None:
    """A broker that is down is a 503 with a message, on the API and on the page."""
    async with client() as http:
        api = await http.get("/api/dead-letters")
        assert api.status_code == 503
        assert CONFIG.bootstrap in api.json()["error"]
        page = await http.get("/")
        assert page.status_code == 503 and page.headers["content-type"].startswith("text/html")


async def test_read_only_refuses_before_connecting() -> None:
    """Read-only: purge and replay are 403 whatever the services; the dry run is not refused."""
    async with client(read_only=True) as http:
        purge = await http.post("/api/purge", json={"topic": "orders", "all": True})
        assert purge.status_code == 403
        replay = await http.post("/api/replay", json={"topic": "orders", "all": True})
        assert replay.status_code == 403
        dry = await http.post("/api/replay", json={"topic": "orders", "all": True, "dry_run": True})
        assert dry.status_code == 503  # allowed, and the broker is down

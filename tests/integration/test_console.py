"""The dead-letter console's JSON API over HTTP against real Kafka and PostgreSQL, both backends."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException

from kafka_retry import Config
from kafka_retry.console import console_app

from .console_support import (
    TIMEOUT_GROUP,
    client,
    count_records,
    dead_letter_orders,
    fresh_schema,
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["kafka", "postgres"])
async def dead_letters(request: pytest.FixtureRequest, kafka_service: Any) -> AsyncIterator[Config]:
    """The config of a fresh topic with five dead letters on the parametrized backend."""
    if request.param == "kafka":
        yield await dead_letter_orders(kafka_service, "kafka", None, None)
        return
    # The postgres service starts only for the tests that need it.
    database_url = request.getfixturevalue("database_url")
    async with fresh_schema(database_url) as schema:
        yield await dead_letter_orders(kafka_service, "postgres", database_url, schema)


async def _all_pages(http: Any, limit: int, **params: str) -> list[list[dict[str, Any]]]:
    pages, cursor = [], None
    while True:
        query = {"limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        answer = await http.get("/api/dead-letters", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["items"])
        cursor = body["next"]
        if cursor is None:
            return pages


async def test_list_filter_paginate_and_show(dead_letters: Config) -> None:
    """All five listed with their fields; filters narrow; pages of 2 cover them once; ids work."""
    topic = dead_letters.topics[0]
    async with client(dead_letters) as http:
        listed = (await http.get("/api/dead-letters", params={"topic": topic})).json()
        items = listed["items"]
        assert listed["next"] is None
        by_key = {item["key"]: item for item in items}
        assert sorted(by_key) == [f"order-{n}" for n in range(1, 6)]
        first = by_key["order-1"]
        assert (first["topic"], first["partition"], first["offset"]) == (topic, 0, 0)
        assert (first["value"], first["value_encoding"]) == ('{"id": 1}', "utf-8")
        assert first["headers"] == [{"name": "trace", "value": "a", "encoding": "utf-8"}]
        assert (first["error_type"], first["error_message"]) == (
            "TimeoutError",
            "order 1 timed out after 253 ms",
        )
        assert (first["attempts"], first["replayed"]) == (1, False)
        assert first["failed_at"].endswith("Z")
        binary = by_key["order-5"]
        assert binary["value_encoding"] == "base64"
        assert base64.b64decode(binary["value"]) == b"\xff\xfe\x00 not text"
        assert by_key["order-3"]["headers"][0]["encoding"] == "base64"

        timeouts = await http.get("/api/dead-letters", params={"error": "TIMED OUT"})
        assert {item["key"] for item in timeouts.json()["items"]} == {
            "order-1",
            "order-2",
            "order-3",
        }
        keyed = (await http.get("/api/dead-letters", params={"key": "order-4"})).json()
        assert [item["key"] for item in keyed["items"]] == ["order-4"]
        future = {"since": "2999-01-01T00:00Z"}
        assert (await http.get("/api/dead-letters", params=future)).json()["items"] == []
        past = {"until": "2000-01-01T00:00:00+00:00"}
        assert (await http.get("/api/dead-letters", params=past)).json()["items"] == []

        pages = await _all_pages(http, 2, topic=topic)
        assert [len(page) for page in pages] == [2, 2, 1]
        paged = [item["id"] for page in pages for item in page]
        assert paged == [item["id"] for item in items]  # same order, each once

        shown = await http.get(f"/api/dead-letters/{first['id']}")
        assert shown.status_code == 200
        assert shown.json() == first


async def test_hostile_input_is_refused_with_the_field_named(dead_letters: Config) -> None:
    """Malformed cursors, limits, times, ids, bodies: 400 naming the field; unknown ids: 404."""
    topic = dead_letters.topics[0]
    missing = f"{topic}:0:999" if dead_letters.retry_backend == "kafka" else "999999"
    async with client(dead_letters) as http:
        for params, field in [
            ({"cursor": "not-a-cursor"}, "cursor"),
            ({"cursor": base64.urlsafe_b64encode(b'["x", -1, 2]').decode()}, "cursor"),
            ({"limit": "100000000000000000000"}, "limit"),
            ({"limit": "0"}, "limit"),
            ({"since": "yesterday"}, "since"),
            ({"topic": "no-such-topic"}, "topic"),
        ]:
            answer = await http.get("/api/dead-letters", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["field"] == field
            assert field in answer.json()["error"]
        bad_id = await http.get("/api/dead-letters/%00nonsense")
        assert (bad_id.status_code, bad_id.json()["field"]) == (400, "id")
        unknown = await http.get(f"/api/dead-letters/{missing}")
        assert unknown.status_code == 404, unknown.text
        assert "error" in unknown.json()
        for body, field in [
            ([1, 2], "body"),
            ({"topic": topic}, "ids"),
            ({"topic": topic, "all": True, "group": "x"}, "ids"),
            ({"topic": topic, "all": "yes"}, "all"),
            ({"topic": topic, "all": True, "rate": -1}, "rate"),
            ({"topic": topic, "all": True, "to_tier": 7}, "to_tier"),
            ({"topic": topic, "ids": ["x:y"]}, "ids"),
            ({"topic": topic, "all": True, "surprise": 1}, "surprise"),
        ]:
            answer = await http.post("/api/replay", json=body)
            assert (answer.status_code, answer.json().get("field")) == (400, field), body
        json_type = {"content-type": "application/json"}
        not_json = await http.post("/api/replay", content=b"{", headers=json_type)
        assert (not_json.status_code, not_json.json()["field"]) == (400, "body")


async def test_groups_dry_run_and_idempotent_replay(
    dead_letters: Config, kafka_service: Any
) -> None:
    """Three timeouts form one group; a dry run sends nothing; replaying sends 3, then 0."""
    topic = dead_letters.topics[0]
    bootstrap = kafka_service.bootstrap_servers
    async with client(dead_letters) as http:
        groups = (await http.get("/api/groups", params={"topic": topic})).json()["groups"]
        assert [(g["fingerprint"], g["count"]) for g in groups] == [
            (TIMEOUT_GROUP, 3),
            ("ValueError: bad payload in '<str>'", 2),
        ]
        timeouts = groups[0]
        assert timeouts["error_type"] == "TimeoutError"
        assert timeouts["example"].startswith("order ") and timeouts["first"] <= timeouts["last"]

        selection = {"topic": topic, "group": TIMEOUT_GROUP}
        before = await count_records(bootstrap, topic)
        dry = await http.post("/api/replay", json={**selection, "dry_run": True})
        assert dry.json()["replayed"] == 3
        assert await count_records(bootstrap, topic) == before  # nothing sent

        first = await http.post("/api/replay", json=selection)
        assert first.status_code == 200, first.text
        assert first.json()["replayed"] == 3
        second = await http.post("/api/replay", json=selection)
        assert second.json()["replayed"] == 0
        assert await count_records(bootstrap, topic) == before + 3

        listed = (await http.get("/api/dead-letters", params={"topic": topic})).json()["items"]
        assert {item["key"]: item["replayed"] for item in listed} == {
            "order-1": True,
            "order-2": True,
            "order-3": True,
            "order-4": False,
            "order-5": False,
        }
        waiting = await http.get("/api/dead-letters", params={"replayed": "false"})
        assert len(waiting.json()["items"]) == 2

        one = next(item["id"] for item in listed if item["key"] == "order-4")
        paced = await http.post("/api/replay", json={"topic": topic, "ids": [one], "rate": 50})
        assert paced.json()["replayed"] == 1
        rest = await http.post("/api/replay", json={"topic": topic, "all": True})
        assert rest.json()["replayed"] == 1  # order-5; the others were replayed before
        assert await count_records(bootstrap, topic) == before + 5


async def test_read_only_refuses_purge_and_replay(dead_letters: Config) -> None:
    """A read-only console answers 403 to purges and replays, changing nothing; dry runs answer."""
    topic = dead_letters.topics[0]
    async with client(dead_letters, read_only=True) as http:
        purge = await http.post("/api/purge", json={"topic": topic, "all": True})
        assert purge.status_code == 403
        assert "read-only" in purge.json()["error"]
        replay = await http.post("/api/replay", json={"topic": topic, "all": True})
        assert replay.status_code == 403
        dry = await http.post("/api/replay", json={"topic": topic, "all": True, "dry_run": True})
        assert dry.json()["replayed"] == 5
        listed = (await http.get("/api/dead-letters")).json()["items"]
        assert len(listed) == 5 and not any(item["replayed"] for item in listed)


async def test_purge_a_selection(dead_letters: Config) -> None:
    """A purge dry run counts; a purge deletes (by id on postgres; a topic's prefix on Kafka)."""
    topic = dead_letters.topics[0]
    async with client(dead_letters) as http:
        items = (await http.get("/api/dead-letters")).json()["items"]
        chosen: dict[str, Any]
        if dead_letters.retry_backend == "postgres":
            chosen = {"topic": topic, "ids": [items[0]["id"], items[1]["id"]]}
            left = 3
        else:
            by_id = await http.post("/api/purge", json={"topic": topic, "ids": [items[0]["id"]]})
            assert by_id.status_code == 400
            assert "from its start" in by_id.json()["error"]
            chosen, left = {"topic": topic, "all": True}, 0
        dry = await http.post("/api/purge", json={**chosen, "dry_run": True})
        assert dry.json()["purged"] == 5 - left
        assert len((await http.get("/api/dead-letters")).json()["items"]) == 5
        done = await http.post("/api/purge", json=chosen)
        if done.status_code == 400 and "DeleteRecords" in done.text:
            pytest.skip("this broker cannot delete records (Tansu)")
        assert done.json()["purged"] == 5 - left
        assert len((await http.get("/api/dead-letters")).json()["items"]) == left


async def test_mounted_pages_behind_the_host_apps_auth(dead_letters: Config) -> None:
    """Mounted at /dlq behind a dependency: refused without it; pages, links and assets work."""
    topic = dead_letters.topics[0]

    def operator(x_operator: str | None = Header(default=None)) -> None:
        if x_operator != "alice":
            raise HTTPException(status_code=401, detail="who are you?")

    host = FastAPI()
    host.mount("/dlq", console_app(dead_letters, dependencies=[operator]))
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        for path in ["/dlq/", "/dlq/api/dead-letters", "/dlq/static/console.js"]:
            assert (await http.get(path)).status_code == 401, path
        http.headers["x-operator"] = "alice"
        page = await http.get("/dlq/", params={"topic": topic})
        assert page.status_code == 200
        html = page.text
        assert html.count('class="pick"') == 5
        assert "TimeoutError: order &lt;n&gt; timed out after &lt;n&gt; ms" in html
        assert 'href="/dlq/static/console.css"' in html and 'src="/dlq/static/console.js"' in html
        assert "https://" not in html and "http://" not in html  # every asset is ours
        items = (await http.get("/dlq/api/dead-letters")).json()["items"]
        binary = next(item for item in items if item["key"] == "order-5")
        assert f'href="/dlq/dead-letters/{binary["id"]}"' in html
        detail = await http.get(f"/dlq/dead-letters/{binary['id']}")
        assert "ff fe 00 20 6e 6f 74" in detail.text  # the value, as hex
        assert "Replay…" in detail.text
        for name, kind in [("console.css", "text/css"), ("console.js", "text/javascript")]:
            asset = await http.get(f"/dlq/static/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert (await http.get("/dlq/static/../../etc/passwd")).status_code == 404
        postgres = dead_letters.retry_backend == "postgres"
        missing = await http.get(f"/dlq/dead-letters/{'999999' if postgres else topic + ':0:999'}")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")


async def test_read_only_page_offers_no_changes(dead_letters: Config) -> None:
    """The read-only page shows the dead letters without replay or purge buttons."""
    async with client(dead_letters, read_only=True) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.text.count('class="pick"') == 5
        assert "data-action" not in page.text and "read-only" in page.text
        unknown = await http.get("/", params={"topic": "nope"})
        assert unknown.status_code == 400 and "topic" in unknown.text

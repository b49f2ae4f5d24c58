"""The console as a FastAPI application: the JSON API, the pages and their two assets.

Imported only by :func:`kafka_retry.console.console_app`, so the core package
never needs FastAPI.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request, params
from fastapi.responses import HTMLResponse, JSONResponse, Response

from kafka_retry.config import Config
from kafka_retry.console import _pages, _service
from kafka_retry.console._items import group_json, item_json
from kafka_retry.console._selection import (
    BadRequest,
    check_topic,
    parse_listing,
    parse_selection,
)
from kafka_retry.deadletter import DeadLetterQuery, DeadLetterStore, open_dead_letters
from kafka_retry.errors import ConfigError, DeadLetterError, KafkaRetryError

__all__ = ["build_app"]

_MAX_BODY = 1 << 20
_ASSETS = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}
_PAGE_SIZE = 100


class Forbidden(Exception):
    """Raised for a change the read-only console refuses; the API answers 403."""


def _base(request: Request) -> str:
    """Where the console is mounted (``/dlq``), for links that work under any prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _is_api(request: Request) -> bool:
    path = str(request.scope.get("path", ""))
    root = str(request.scope.get("root_path", ""))
    relative = path[len(root) :] if root and path.startswith(root) else path
    return relative.startswith("/api/")


def _status(exc: Exception) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, _service.NotFound):
        return 404
    if isinstance(exc, BadRequest | ConfigError | DeadLetterError):
        return 400
    return 503  # unreachable or unauthenticated services


def _handler(config: Config) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        status, message = _status(exc), " ".join(str(exc).split())
        if _is_api(request):
            body: dict[str, Any] = {"error": message}
            if isinstance(exc, BadRequest | ConfigError):
                body["field"] = exc.field
            return JSONResponse(body, status_code=status)
        page = _pages.error_page(config, status, message, base=_base(request))
        return HTMLResponse(page, status_code=status)

    return handle


def _depends(item: Any) -> Any:
    return item if isinstance(item, params.Depends) else Depends(item)


async def _json_body(request: Request) -> object:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        # A cross-site HTML form cannot send this type without the browser asking
        # first (CORS), so a page elsewhere cannot replay or purge with the
        # operator's cookies.
        raise BadRequest("content-type", f"must be application/json, got {kind or 'none'!r}")
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise BadRequest("body", f"larger than {_MAX_BODY} bytes")
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body", "not valid JSON") from None


def build_app(config: Config, *, read_only: bool, dependencies: Sequence[Any]) -> FastAPI:
    """The console application (see :func:`kafka_retry.console.console_app`)."""
    app = FastAPI(
        title="kafka-retry dead-letter console",
        dependencies=[_depends(item) for item in dependencies],
        # The interactive docs load their scripts from a CDN: the console ships none.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    handle = _handler(config)
    for kind in (KafkaRetryError, BadRequest, Forbidden, _service.NotFound):
        app.add_exception_handler(kind, handle)

    @contextlib.asynccontextmanager
    async def store() -> AsyncIterator[DeadLetterStore]:
        # A store per request: its clients are not shared between concurrent scans.
        async with open_dead_letters(config) as opened:
            yield opened

    _api(app, config, store, read_only=read_only)
    _page_routes(app, config, store, read_only=read_only)
    return app


def _api(app: FastAPI, config: Config, store: Any, *, read_only: bool) -> None:
    @app.get("/api/dead-letters")
    async def dead_letters(request: Request) -> JSONResponse:
        listing = parse_listing(config, request.query_params)
        async with store() as opened:
            page = await _service.list_page(opened, config, listing)
        return JSONResponse({"items": [item_json(e) for e in page.items], "next": page.next})

    @app.get("/api/dead-letters/{ident}")
    async def dead_letter(ident: str) -> JSONResponse:
        async with store() as opened:
            return JSONResponse(item_json(await _service.find(opened, config, ident)))

    @app.get("/api/groups")
    async def groups(request: Request) -> JSONResponse:
        listing = parse_listing(config, request.query_params)
        async with store() as opened:
            found = await _service.groups(opened, listing.query)
        return JSONResponse({"groups": [group_json(group) for group in found]})

    @app.post("/api/replay")
    async def replay(request: Request) -> JSONResponse:
        selection = parse_selection(config, await _json_body(request))
        if read_only and not selection.dry_run:
            raise Forbidden("the console is read-only: replays are refused (dry runs answer)")
        async with store() as opened:
            count = await _service.replay(opened, selection)
        return JSONResponse({"replayed": count, "dry_run": selection.dry_run})

    @app.post("/api/purge")
    async def purge(request: Request) -> JSONResponse:
        if read_only:
            raise Forbidden("the console is read-only: purges are refused")
        selection = parse_selection(config, await _json_body(request))
        async with store() as opened:
            count = await _service.purge(opened, selection)
        return JSONResponse({"purged": count, "dry_run": selection.dry_run})


def _page_routes(app: FastAPI, config: Config, store: Any, *, read_only: bool) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> HTMLResponse:
        params_ = dict(request.query_params)
        topic = check_topic(config, params_.get("topic") or None, required=False)
        topic = topic or config.topics[0]
        params_.update(topic=topic, limit=params_.get("limit", str(_PAGE_SIZE)))
        listing = parse_listing(config, params_)
        async with store() as opened:
            counts = await _service.topic_counts(opened, config)
            found = await _service.groups(opened, DeadLetterQuery(topics=(topic,), replayed=None))
            page = await _service.list_page(opened, config, listing)
        next_href = None
        if page.next is not None:
            query = {k: v for k, v in params_.items() if k != "cursor"} | {"cursor": page.next}
            next_href = f"{_base(request)}/?{urlencode(query)}"
        html = _pages.overview_page(
            config,
            base=_base(request),
            read_only=read_only,
            counts=counts,
            topic=topic,
            groups=found,
            page=page,
            group=listing.group,
            next_href=next_href,
        )
        return HTMLResponse(html)

    @app.get("/dead-letters/{ident}", response_class=HTMLResponse)
    async def detail(request: Request, ident: str) -> HTMLResponse:
        async with store() as opened:
            entry = await _service.find(opened, config, ident)
        html = _pages.detail_page(config, entry, base=_base(request), read_only=read_only)
        return HTMLResponse(html)

    @app.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise _service.NotFound(f"no asset {name!r}")
        data = resources.files("kafka_retry.console").joinpath("static", name).read_bytes()
        return Response(data, media_type=_ASSETS[name])

"""The console's HTML: the overview (topics, failure groups, dead letters) and one dead letter.

Rendered on the server from plain strings, every value escaped; the page reads
without JavaScript, and ``static/console.js`` adds the dry-run, confirm,
replay and purge actions. Pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote, urlencode

from kafka_retry._cli._output import format_time, hexdump
from kafka_retry.config import Config
from kafka_retry.console._service import Page
from kafka_retry.deadletter import DeadLetterEntry, FailureGroup, fingerprint_of, stable_id
from kafka_retry.message import escape_header_name

__all__ = ["detail_page", "error_page", "overview_page"]


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def layout(title: str, body: str, *, base: str, config: Config) -> str:
    """A whole page around ``body``; ``base`` is where the console is mounted."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · kafka-retry</title>
<link rel="stylesheet" href="{_e(base)}/static/console.css">
</head>
<body data-base="{_e(base)}">
<header><a href="{_e(base)}/">kafka-retry dead letters</a>
<span>group {_e(config.group)} · {_e(config.retry_backend)} backend</span></header>
<main>
<div id="flash" class="flash" hidden></div>
<div id="confirm" class="confirm" hidden role="alertdialog" aria-labelledby="confirm-message">
<span id="confirm-message"></span>
<button id="confirm-go" type="button" class="primary">Confirm</button>
<button id="confirm-cancel" type="button">Cancel</button>
</div>
{body}
</main>
<script src="{_e(base)}/static/console.js"></script>
</body>
</html>
"""


def _button(label: str, action: str, topic: str, scope: str, **data: str) -> str:
    extra = "".join(f' data-{name}="{_e(value)}"' for name, value in data.items())
    return (
        f'<button type="button" data-action="{action}" data-topic="{_e(topic)}"'
        f' data-scope="{scope}"{extra}>{_e(label)}</button>'
    )


def _actions(
    config: Config, topic: str, scope: str, *, read_only: bool, what: str = "", **data: str
) -> str:
    """Replay and purge buttons for a selection (``scope``: all, group, selected, ids)."""
    if read_only:
        return '<span class="muted">read-only</span>'
    buttons = _button(f"Replay{what}…", "replay", topic, scope, **data)
    # A Kafka dead-letter topic can only be cut from its start: purge it whole.
    if config.retry_backend == "postgres" or scope == "all":
        buttons += _button(f"Purge{what}…", "purge", topic, scope, **data)
    return buttons


def _topics_nav(base: str, counts: dict[str, tuple[int, int]], current: str) -> str:
    links = []
    for topic, (total, replayed) in counts.items():
        css = ' class="current"' if topic == current else ""
        href = f"{base}/?{urlencode({'topic': topic})}"
        waiting = total - replayed
        links.append(
            f'<a{css} href="{_e(href)}">{_e(topic)} <span class="count">{waiting}</span>'
            f'<span class="muted"> / {total}</span></a>'
        )
    return '<nav class="topics" aria-label="topics">' + "".join(links) + "</nav>"


def _groups_table(
    base: str, config: Config, topic: str, groups: Sequence[FailureGroup], *, read_only: bool
) -> str:
    if not groups:
        return '<p class="muted">No dead letters in this topic.</p>'
    rows = []
    for group in groups:
        href = f"{base}/?{urlencode({'topic': topic, 'group': group.fingerprint})}"
        buttons = _actions(config, topic, "group", read_only=read_only, group=group.fingerprint)
        rows.append(
            "<tr>"
            f'<td><a class="mono" href="{_e(href)}">{_e(group.fingerprint)}</a>'
            f'<div class="muted">e.g. {_e(group.example)}</div></td>'
            f'<td class="num count">{group.count - group.replayed}</td>'
            f'<td class="num">{group.replayed}</td>'
            f"<td>{_e(format_time(group.first))}</td><td>{_e(format_time(group.last))}</td>"
            f"<td>{buttons}</td>"
            "</tr>"
        )
    head = (
        "<tr><th>Failure</th><th>Waiting</th><th>Replayed</th><th>First</th><th>Last</th>"
        "<th></th></tr>"
    )
    return f'<table class="groups"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _key_preview(data: bytes | None) -> str:
    if data is None:
        return '<span class="muted">null</span>'
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f'<span class="mono">{_e(data[:12].hex())}</span>'
    return f'<span class="mono">{_e(text[:40])}</span>'


def _state(entry: DeadLetterEntry) -> str:
    if entry.replayed:
        return f'<span class="tag replayed">replayed {_e(format_time(entry.replayed_at))}</span>'
    return '<span class="tag waiting">waiting</span>'


def _entry_row(base: str, entry: DeadLetterEntry) -> str:
    ident = stable_id(entry)
    href = f"{base}/dead-letters/{quote(ident, safe=':')}"
    return (
        "<tr>"
        f'<td><input type="checkbox" class="pick" value="{_e(ident)}" '
        f'aria-label="select {_e(ident)}"></td>'
        f'<td><a class="mono" href="{_e(href)}">{_e(ident)}</a></td>'
        f"<td>{_e(format_time(entry.dead_lettered_at))}</td>"
        f'<td class="num">{_e("-" if entry.attempts is None else entry.attempts)}</td>'
        f"<td>{_key_preview(entry.key)}</td>"
        f"<td>{_e(entry.error or '-')}</td><td>{_state(entry)}</td>"
        "</tr>"
    )


def _target_select(config: Config) -> str:
    options = ['<option value="">main topic</option>'] + [
        f'<option value="{k}">retry tier {k}</option>'
        for k in range(1, len(config.retry_intervals) + 1)
    ]
    return f'<label>replay to <select id="target">{"".join(options)}</select></label>'


def _entries_table(base: str, config: Config, topic: str, page: Page, *, read_only: bool) -> str:
    if not page.items:
        return '<p class="muted">No dead letters match.</p>'
    bar = ""
    if not read_only:
        bar = (
            '<div class="actions">'
            + _actions(config, topic, "selected", read_only=read_only, what=" selected")
            + _target_select(config)
            + "</div>"
        )
    head = (
        '<tr><th><input type="checkbox" id="pick-all" aria-label="select all"></th>'
        "<th>Id</th><th>Dead-lettered</th><th>Attempts</th><th>Key</th><th>Error</th>"
        "<th>State</th></tr>"
    )
    rows = "".join(_entry_row(base, entry) for entry in page.items)
    return f'{bar}<table class="entries"><thead>{head}</thead><tbody>{rows}</tbody></table>'


def overview_page(
    config: Config,
    *,
    base: str,
    read_only: bool,
    counts: dict[str, tuple[int, int]],
    topic: str,
    groups: Sequence[FailureGroup],
    page: Page,
    group: str | None,
    next_href: str | None,
) -> str:
    """The main page: topics with counts, the topic's failure groups, a page of its dead letters."""
    title = f"Dead letters of {topic}"
    shown = f" in group <code>{_e(group)}</code>" if group else ""
    parts = [
        _topics_nav(base, counts, topic),
        f"<h2>Failure groups of {_e(topic)}</h2>",
        _groups_table(base, config, topic, groups, read_only=read_only),
        f"<h2>Dead letters{shown}</h2>",
        '<div class="actions">'
        + _actions(config, topic, "all", read_only=read_only, what=f" all of {topic}")
        + "</div>",
        _entries_table(base, config, topic, page, read_only=read_only),
    ]
    if next_href is not None:
        parts.append(f'<p class="pager"><a href="{_e(next_href)}">Next page →</a></p>')
    return layout(title, "\n".join(parts), base=base, config=config)


def _bytes_block(label: str, data: bytes | None) -> str:
    if data is None:
        return f"<h2>{label}</h2><p class='muted'>null</p>"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        shown, kind = "\n".join(hexdump(data)), "hex"
    else:
        shown, kind = text, "text"
    size = f"<span class='muted'>{len(data)} bytes, {kind}</span>"
    return f'<h2>{label} {size}</h2><pre class="{kind}">{_e(shown)}</pre>'


def _fields(pairs: Iterable[tuple[str, object]]) -> str:
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in pairs)
    return f'<dl class="fields">{items}</dl>'


def _provenance(entry: DeadLetterEntry) -> str:
    origin = entry.provenance
    if origin is None:
        return "<p class='muted'>No provenance headers.</p>"
    return _fields(
        [
            (
                "original",
                f"{origin.original_topic} partition {origin.original_partition}"
                f" offset {origin.original_offset}",
            ),
            ("original time", format_time(origin.original_timestamp)),
            ("consumer group", origin.group),
            ("attempts", origin.attempts),
            ("failed at", format_time(origin.failed_at)),
            ("error type", origin.error_type),
            ("error message", origin.error_message),
            ("failure group", fingerprint_of(entry)),
        ]
    )


def _headers_table(entry: DeadLetterEntry) -> str:
    if not entry.headers:
        return "<p class='muted'>No headers.</p>"
    rows = []
    for name, value in entry.headers:
        if value is None:
            shown = '<span class="muted">null</span>'
        else:
            try:
                shown = _e(value.decode("utf-8"))
            except UnicodeDecodeError:
                shown = f"<span class='muted'>hex</span> {_e(value.hex())}"
        rows.append(
            f'<tr><td class="mono">{_e(escape_header_name(name))}</td>'
            f'<td class="mono">{shown}</td></tr>'
        )
    head = "<thead><tr><th>Name</th><th>Value</th></tr></thead>"
    return f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"


def detail_page(config: Config, entry: DeadLetterEntry, *, base: str, read_only: bool) -> str:
    """One dead letter: state, provenance, headers, key and value (text, else hex)."""
    ident = stable_id(entry)
    state = _fields(
        [
            ("topic", entry.main_topic),
            ("stored in", f"{entry.source} ({entry.id})"),
            ("dead-lettered", format_time(entry.dead_lettered_at)),
            ("timestamp", format_time(entry.timestamp) if entry.timestamp >= 0 else "-"),
            (
                "replayed",
                f"{format_time(entry.replayed_at)} to {entry.replayed_to}"
                if entry.replayed
                else "no",
            ),
        ]
    )
    ids = json.dumps([ident])
    back = f"{base}/?{urlencode({'topic': entry.main_topic})}"
    parts = [
        f'<p><a href="{_e(back)}">← dead letters of {_e(entry.main_topic)}</a></p>',
        f'<h2>Dead letter <code id="entry-id">{_e(ident)}</code> {_state(entry)}</h2>',
        '<div class="actions">'
        + _actions(config, entry.main_topic, "ids", read_only=read_only, ids=ids)
        + (_target_select(config) if not read_only else "")
        + "</div>",
        state,
        "<h2>Provenance</h2>",
        _provenance(entry),
        f"<h2>Headers <span class='muted'>{len(entry.headers)}</span></h2>",
        _headers_table(entry),
        _bytes_block("Key", entry.key),
        _bytes_block("Value", entry.value),
    ]
    return layout(f"Dead letter {ident}", "\n".join(parts), base=base, config=config)


def error_page(config: Config, status: int, message: str, *, base: str) -> str:
    """A page that says what went wrong."""
    body = f'<h2>{status}</h2><p class="flash error">{_e(message)}</p>'
    return layout(f"Error {status}", body, base=base, config=config)

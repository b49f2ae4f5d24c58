"""The documentation: every Python sample runs, and the configuration table matches the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import pytest

from kafka_retry import Config, DatabaseConfig, _env
from kafka_retry._env import DATABASE_VARIABLES, KAFKA_VARIABLES, SECRET_VARIABLES
from tests.docs_support import DOCS, ROOT, pages, run_page, samples

PAGES_WITH_SAMPLES = [page for page in pages() if samples(page)]
CONFIGURATION = DOCS / "configuration.md"
_VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]+)`")


@pytest.mark.parametrize(
    "page", PAGES_WITH_SAMPLES, ids=[str(p.relative_to(ROOT)) for p in PAGES_WITH_SAMPLES]
)
def test_samples_run_in_memory(page: Path, tmp_path: Path) -> None:
    """Each page's samples that need no services run, in order, without raising."""
    run_page(page, tmp_path)


def test_samples_are_marked_and_mostly_run() -> None:
    """Directives parse; fragments say why they cannot run, and they stay rare."""
    every = [sample for page in pages() for sample in samples(page)]
    fragments = [sample for sample in every if sample.not_run is not None]
    assert len(every) >= 30
    assert all(sample.not_run for sample in fragments)
    assert len(fragments) <= len(every) // 10, [sample.where for sample in fragments]


def _table_rows(text: str) -> dict[str, tuple[str, str]]:
    """``setting -> (environment cell, default cell)`` of the settings table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        setting = cells[0].strip("`")
        assert setting not in rows, f"{setting} is listed twice"
        rows[setting] = (cells[1], cells[2])
    return rows


def _settings() -> dict[str, Any]:
    """Every setting as the table names it -> its attrs field."""
    found: dict[str, Any] = {field.name: field for field in attrs.fields(Config)}
    for field in attrs.fields(DatabaseConfig):
        found[f"database.{field.name}"] = field
    return found


def _expected_variables() -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {name: set() for name in _settings()}
    for variable, (field, _parse) in KAFKA_VARIABLES.items():
        expected[field].add(variable)
    for variable, field in SECRET_VARIABLES.items():
        expected[field] |= {variable, f"{variable}_FILE"}
    for variable, (field, _parse) in DATABASE_VARIABLES.items():
        expected[f"database.{field}"].add(variable)
    secrets = getattr(_env, "DATABASE_SECRETS", {"DATABASE_PASSWORD": "password"})
    for variable, field in secrets.items():
        expected[f"database.{field}"] |= {variable, f"{variable}_FILE"}
    expected["database"].add("DATABASE_URL")
    return expected


def _default_cell(field: Any) -> str:
    default = field.default
    if default is attrs.NOTHING:
        return "required"
    if callable(default):
        return f"`{default.__name__}`"
    return f"`{default!r}`"


def test_configuration_table_lists_every_setting() -> None:
    """Every Config and DatabaseConfig field has a row, and no row names a field that is gone."""
    rows = _table_rows(CONFIGURATION.read_text(encoding="utf-8"))
    assert set(rows) == set(_settings())


def test_configuration_table_names_each_environment_variable() -> None:
    """Each row's variables are exactly those that _env.py reads into that field."""
    rows = _table_rows(CONFIGURATION.read_text(encoding="utf-8"))
    for setting, variables in _expected_variables().items():
        environment = rows[setting][0]
        named = set(_VARIABLE.findall(environment))
        assert named == variables, setting
        if not variables:
            assert environment == "—", setting


def test_configuration_table_shows_each_default() -> None:
    """The default column is the field's default, as Python writes it."""
    rows = _table_rows(CONFIGURATION.read_text(encoding="utf-8"))
    for setting, field in _settings().items():
        assert rows[setting][1] == _default_cell(field), setting


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_diagrams_need_no_script_from_the_internet() -> None:
    """No page draws with a Mermaid fence (it renders only with a CDN script); images are local."""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        assert "```mermaid" not in text, page
        for target in _IMAGE.findall(text):
            assert "://" not in target, (page, target)
            image = (page.parent / target).resolve()
            assert image.is_file(), (page, target)
            if image.suffix == ".svg":
                head = image.read_text(encoding="utf-8")[:2000]
                assert "<svg" in head and "<script" not in head, image
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "extra_javascript" not in config
    assert "custom_fences" not in config

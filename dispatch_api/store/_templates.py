"""Incident templates: seeded from the data file into the database, read back at start-up."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from ..domain import IncidentTemplate, parse_templates, template_to_json


def read_template_file(path: Path | None) -> dict[str, IncidentTemplate]:
    """The templates of `path`, or of the packaged seed file when `path` is None."""
    if path is None:
        text = resources.files("dispatch_api.data").joinpath("incident_templates.json").read_text()
    else:
        text = path.read_text()
    document: Any = json.loads(text)
    return parse_templates(document)


async def seed(conn: asyncpg.Connection, templates: dict[str, IncidentTemplate]) -> None:
    """Insert or update every template; ones absent from the file stay (tickets use them)."""
    rows = [(t.name, t.title, template_to_json(t)["requirements"]) for t in templates.values()]
    await conn.executemany(
        "INSERT INTO incident_templates (name, title, requirements) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET title = EXCLUDED.title,"
        " requirements = EXCLUDED.requirements, updated_at = now()",
        rows,
    )


async def load(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, IncidentTemplate]:
    rows = await conn.fetch(
        "SELECT name, title, requirements FROM incident_templates ORDER BY name"
    )
    return parse_templates({"templates": [dict(r) for r in rows]})

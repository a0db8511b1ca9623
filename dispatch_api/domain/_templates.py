"""Incident templates from their data file's JSON, validated into domain values."""

from __future__ import annotations

from typing import Any

from ._model import EvidenceKind, EvidenceRequirement, IncidentTemplate


class TemplateError(ValueError):
    """The template data is malformed; the message names the template and the field."""


def parse_templates(document: Any) -> dict[str, IncidentTemplate]:
    """Parse `{"templates": [{"name", "title", "requirements": [...]}, ...]}`."""
    if not isinstance(document, dict) or not isinstance(document.get("templates"), list):
        raise TemplateError("expected an object with a 'templates' list")
    templates: dict[str, IncidentTemplate] = {}
    for position, raw in enumerate(document["templates"]):
        where = f"templates[{position}]"
        if not isinstance(raw, dict):
            raise TemplateError(f"{where}: expected an object")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TemplateError(f"{where}.name: expected a non-empty string")
        if name in templates:
            raise TemplateError(f"{where}.name: duplicate template {name!r}")
        raw_requirements = raw.get("requirements", [])
        if not isinstance(raw_requirements, list):
            raise TemplateError(f"{where}.requirements: expected a list")
        requirements = []
        for index, req in enumerate(raw_requirements):
            req_where = f"{where}.requirements[{index}]"
            try:
                kind = EvidenceKind(req["kind"])
            except (KeyError, TypeError, ValueError):
                raise TemplateError(
                    f"{req_where}.kind: expected one of {list(EvidenceKind)}"
                ) from None
            tag = req.get("tag")
            if tag is not None and not isinstance(tag, str):
                raise TemplateError(f"{req_where}.tag: expected a string")
            requirements.append(EvidenceRequirement(kind, tag, str(req.get("description", ""))))
        templates[name] = IncidentTemplate(name, str(raw.get("title", name)), tuple(requirements))
    return templates


def template_to_json(template: IncidentTemplate) -> dict[str, Any]:
    return {
        "name": template.name,
        "title": template.title,
        "requirements": [
            {"kind": str(r.kind), "tag": r.tag, "description": r.description}
            for r in template.requirements
        ],
    }

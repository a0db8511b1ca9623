"""The wire contract: JSON Schema and OpenAPI documents, shipped as package data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def openapi_document(service: str) -> dict[str, Any]:
    """The OpenAPI document of `service` (e.g. "dispatch-api"), parsed afresh."""
    text = resources.files("schemas.openapi").joinpath(f"{service}.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


__all__ = ["openapi_document"]

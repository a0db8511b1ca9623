"""The bridge's OpenAPI document describes exactly the routes it serves, and is served."""

from __future__ import annotations

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from bridge import create_bridge_app
from bridge._oauth_settings import OAuthSettings
from bridge._pipeline import TOOL_CALL_ID
from bridge.settings import BridgeSettings
from schemas import openapi_document
from settings import Secret
from testkit.openapi import Document, operations, served_routes
from tools import HTTP_STATUS, catalog

from .conftest import Bridge

PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
}
INVOKE = "/v1/tools/{name}/invoke"


@pytest.fixture(scope="module")
def document() -> Document:
    return openapi_document("bridge")


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_every_documented_route_exists(document: Document) -> None:
    # With OAuth on: every route the bridge can serve (the metadata documents only then).
    oauth = OAuthSettings(issuer="https://login.example")
    settings = BridgeSettings(
        gateway_token=Secret("unused"), public_url="https://bridge.example", oauth=oauth
    )
    served = served_routes(create_bridge_app(settings))
    documented = {(method, path) for method, path, _ in operations(document)}

    assert served - documented == set(), "served but missing from schemas/openapi/bridge.json"
    assert documented - served == set(), "documented but not served"


async def test_the_bridge_serves_its_document_without_credentials(
    bridge: Bridge, document: Document
) -> None:
    reply = await bridge.request("GET", "/openapi.json", as_="")

    assert reply.status == 200
    assert reply.content_type == "application/json"
    assert reply.body == document


def test_every_operation_but_probes_metrics_and_the_document_needs_a_bearer_key(
    document: Document,
) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    wrong = []
    for method, path, operation in operations(document):
        security = operation.get("security", document["security"])
        expected: list[dict[str, list[str]]] = [] if path in PUBLIC else [{"bearer": []}]
        if security != expected:
            wrong.append(f"{method} {path}: {security}")
        if path not in PUBLIC and "401" not in operation["responses"]:
            wrong.append(f"{method} {path}: 401 not documented")
    assert not wrong


def test_tool_names_error_codes_and_call_ids_are_the_ones_the_code_uses(
    document: Document,
) -> None:
    invoke = document["paths"][INVOKE]["post"]
    [name] = [p for p in invoke["parameters"] if p.get("name") == "name"]
    schemas = document["components"]["schemas"]

    assert name["schema"]["enum"] == [n for t in catalog() for n in (t.name, t.alias)]
    assert schemas["ToolErrorCode"]["enum"] == list(HTTP_STATUS)
    pattern = schemas["Invocation"]["properties"]["tool_call_id"]["pattern"]
    assert pattern == f"^{TOOL_CALL_ID.pattern}$"


def test_invoke_documents_the_status_of_every_error_code(document: Document) -> None:
    responses = document["paths"][INVOKE]["post"]["responses"]
    envelope = "#/components/schemas/Envelope"

    for status in {200, 413, *HTTP_STATUS.values()}:
        content = responses[str(status)]["content"]
        assert content["application/json"]["schema"]["$ref"] == envelope, status


def test_links_lead_to_operations_that_exist(document: Document) -> None:
    ids = {operation["operationId"] for _, _, operation in operations(document)}
    links = [
        link
        for _, _, operation in operations(document)
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]

    assert links, "no links: the stateful fuzz run would have no transitions"
    assert {link["operationId"] for link in links} <= ids
    assert len(ids) == len(list(operations(document)))  # operation ids are unique

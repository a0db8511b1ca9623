"""The OpenAPI document of dispatch-api describes exactly the routes the app serves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from dispatch_api.settings import ApiSettings
from dispatch_api.web import _tickets, create_app
from schemas import openapi_document
from testkit.openapi import Document, operations, served_routes

MUTATING_METHODS = ("post", "put", "patch", "delete")
SCHEMA_REF_PREFIX = "#/components/schemas/"


@pytest.fixture(scope="module")
def document() -> Document:
    return openapi_document("dispatch-api")


def resolve(document: Document, node: Mapping[str, Any]) -> dict[str, Any]:
    """`node` itself, or the object its local `$ref` (a JSON pointer) leads to."""
    seen: set[str] = set()
    while "$ref" in node:
        ref: str = node["$ref"]
        assert ref.startswith("#/"), f"only local references are expected, got {ref!r}"
        assert ref not in seen, f"reference cycle through {ref!r}"
        seen.add(ref)
        target: Any = document
        for token in ref[2:].split("/"):
            key = token.replace("~1", "/").replace("~0", "~")
            assert isinstance(target, dict), f"{ref!r} runs through a non-object at {key!r}"
            assert key in target, f"{ref!r} does not resolve: no {key!r}"
            target = target[key]
        assert isinstance(target, dict), f"{ref!r} resolves to a non-object"
        node = target
    return dict(node)


def parameters(document: Document, path: str, operation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The operation's parameters, path-level ones included, references resolved."""
    declared = [*document["paths"][path].get("parameters", []), *operation.get("parameters", [])]
    return [resolve(document, p) for p in declared]


def test_every_route_is_documented_and_every_documented_route_exists(document: Document) -> None:
    served = served_routes(create_app(ApiSettings(), "postgresql://unused"))
    documented = {(method, path) for method, path, _ in operations(document)}
    undocumented = sorted(served - documented)
    phantom = sorted(documented - served)
    message = (
        f"served but missing from schemas/openapi/dispatch-api.json: {undocumented}; "
        f"documented but not served: {phantom}"
    )
    assert served == documented, message


def test_openapi_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_request_body_ref_resolves_to_a_component(document: Document) -> None:
    components = document["components"]["schemas"]
    problems = []
    for method, path, operation in operations(document):
        if "requestBody" not in operation:
            continue
        body = resolve(document, operation["requestBody"])
        for media_type, media in body["content"].items():
            ref = media.get("schema", {}).get("$ref", "")
            name = ref.removeprefix(SCHEMA_REF_PREFIX)
            if not ref.startswith(SCHEMA_REF_PREFIX) or name not in components:
                problems.append(f"{method} {path} ({media_type}): {ref or 'no $ref'}")
    assert not problems, f"request bodies without a resolvable component schema: {problems}"


def test_action_routes_document_the_schema_their_handler_validates(document: Document) -> None:
    # The handler validates the body against a component by name; the document must name the same.
    mismatches = {}
    for action, (schema, _build) in _tickets._ACTIONS.items():
        operation = document["paths"][f"/v1/tickets/{{ticket_id}}/{action}"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        if ref != SCHEMA_REF_PREFIX + schema:
            mismatches[action] = (ref, schema)
    assert not mismatches, f"documented $ref vs schema the handler validates: {mismatches}"


def test_every_mutating_operation_needs_an_idempotency_key_and_documents_its_errors(
    document: Document,
) -> None:
    problems = []
    mutations = [
        (method, path, operation)
        for method, path, operation in operations(document)
        if method.lower() in MUTATING_METHODS and path.startswith("/v1/")
    ]
    assert mutations, "no mutating operations documented"
    for method, path, operation in mutations:
        keys = [
            p
            for p in parameters(document, path, operation)
            if p["in"] == "header" and p["name"].lower() == "idempotency-key"
        ]
        # Approval decisions are final (a second answers 409 approval_decided): their key
        # is documented but optional (issue 18).
        optional = path.startswith("/v1/approvals/")
        if not keys or not (optional or keys[0].get("required", False)):
            problems.append(f"{method} {path}: no required Idempotency-Key header parameter")
        missing = {"400", "401", "422"} - set(operation["responses"])
        if missing:
            problems.append(f"{method} {path}: responses {sorted(missing)} not documented")
    assert not problems, "\n".join(problems)


def test_every_error_response_is_a_problem_document(document: Document) -> None:
    problems = []
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if not (status == "default" or status.startswith(("4", "5"))):
                continue
            content = resolve(document, response).get("content", {})
            schema = content.get("application/problem+json", {}).get("schema", {})
            if set(content) != {"application/problem+json"} or schema.get("$ref") != (
                SCHEMA_REF_PREFIX + "Problem"
            ):
                problems.append(f"{method} {path} {status}: {sorted(content)}")
    assert not problems, f"error responses that are not application/problem+json: {problems}"


def test_v1_operations_need_a_bearer_token_and_probes_do_not(document: Document) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    wrong = []
    for method, path, operation in operations(document):
        security = operation.get("security", document.get("security", []))
        expected: list[dict[str, list[str]]] = [{"bearer": []}] if path.startswith("/v1/") else []
        if security != expected:
            wrong.append(f"{method} {path}: {security}")
    assert not wrong, f"operations with unexpected security: {wrong}"


def test_operation_ids_are_unique(document: Document) -> None:
    ids: list[str] = [operation.get("operationId", "") for _, _, operation in operations(document)]
    assert "" not in ids, "an operation has no operationId"
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})

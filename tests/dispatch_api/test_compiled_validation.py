"""dispatch-api's compiled body check (jsonschema-rs) only ever says "valid" first: a body the
Python validator refuses stays refused with the same problem, and what it accepts is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from dispatch_api.errors import Unprocessable, problem
from dispatch_api.web._validation import BodyValidators
from schemas import openapi_document

START, END = "2031-05-01T09:00:00Z", "2031-05-01T11:00:00Z"
SCHEDULE = {"technician_id": "tech-1", "window_start": START, "window_end": END}
PHOTO = {"kind": "photo", "content_type": "image/jpeg"}

#: (schema, body): each near a line where a compiled engine could read a schema otherwise
#: (ECMA `$` and `\s`, Unicode digits, real dates, base64 padding, refs between components,
#: formats only annotated, sizes counted in characters).
CASES: list[tuple[str, Any]] = [
    ("CreateTicket", {"customer_name": "Ada", "priority": "P2"}),
    ("CreateTicket", {"customer_name": "Ada", "priority": "P9"}),
    ("CreateTicket", {"customer_name": "Ada", "extra": 1}),
    ("CreateTicket", {"customer_name": ""}),
    ("CreateTicket", {"customer_name": "Zoë" * 66 + "Zo"}),
    ("CreateTicket", {"customer_name": "Zoë" * 67}),
    ("CreateTicket", {"contact_email": "a@b.example", "site_address": "1 Main St\x1c"}),
    ("CreateTicket", {"contact_email": "a\ufeff@b.example"}),
    ("CreateTicket", {"contact_email": "a\x85@b.example"}),
    ("CreateTicket", {"contact_phone": "+1 555 0100"}),
    ("CreateTicket", {"contact_phone": "+\u0663\u0665\u0665 0100"}),
    ("CreateTicket", {"incident_type": "no_power\n"}),
    ("CreateTicket", {"customer_name": "Zoë\ud800"}),
    ("CreateTicket", []),
    ("UpdateTicket", {}),
    ("Schedule", SCHEDULE),
    ("Schedule", {**SCHEDULE, "window_end": "2031-02-30T11:00:00Z"}),
    ("Schedule", {**SCHEDULE, "window_end": "2031-05-01T24:00:00Z"}),
    ("Schedule", {**SCHEDULE, "window_end": "2031-05-01T11:00:00Z\n"}),
    ("Schedule", {**SCHEDULE, "technician_id": "tech\u0661"}),
    ("Schedule", {**SCHEDULE, "technician_id": "Tech 1"}),
    ("Dispatch", {"technician_id": "tech-1", "bypass_reason": "storm"}),
    ("Cancel", {"reason": "duplicate"}),
    ("Cancel", {}),
    ("ContactAttempt", {"channel": "phone", "outcome": "reached"}),
    ("ContactAttempt", {"channel": "fax", "outcome": "reached"}),
    ("EvidenceUpload", {**PHOTO, "content_base64": "aGk="}),
    *(
        ("EvidenceUpload", {**PHOTO, "content_base64": text})
        for text in ("aGk", "", "Q===", "aGk=aGk=", "aGk=\n", "-_-_", "aG\u00e9=", "aGk=" * 1000)
    ),
    ("EvidenceUpload", {**PHOTO, "uri": "https://x.test/a/../b", "size_bytes": 1}),
    ("EvidenceUpload", {**PHOTO, "content_type": "Image/JPEG", "content_base64": "aGk="}),
    ("CreateTechnician", {"id": "tech-9", "name": "Ada", "skills": ["no_power"]}),
    ("CreateTechnician", {"id": "tech-9", "name": "Ada", "skills": ["no_power"] * 65}),
    ("CreateTechnician", {"id": "tech-9", "name": "Ada", "skills": [], "region": None}),
    ("ApprovalDecision", {"reason": "ok"}),
    ("ApprovalDecision", {"reason": 5}),
]


def _verdict(validators: BodyValidators, name: str, body: Any) -> Any:
    try:
        validators.validate(name, body)
    except Unprocessable as error:
        return problem(error)
    return "valid"


@pytest.fixture(scope="module")
def both() -> tuple[BodyValidators, BodyValidators]:
    document = openapi_document("dispatch-api")
    return BodyValidators(document), BodyValidators(document, compiled=False)


@pytest.mark.parametrize(("name", "body"), CASES)
def test_the_compiled_check_gives_the_python_validators_verdict_and_problem(
    both: tuple[BodyValidators, BodyValidators], name: str, body: Any
) -> None:
    fast, python_only = both

    assert _verdict(fast, name, body) == _verdict(python_only, name, body)


def test_the_cases_cover_both_verdicts_and_every_request_schema_compiles() -> None:
    document = openapi_document("dispatch-api")
    python_only = BodyValidators(document, compiled=False)
    verdicts = {_verdict(python_only, n, b) == "valid" for n, b in CASES}
    assert verdicts == {True, False}
    validators = BodyValidators(document)
    assert all(validators.compiled(n) for n in document["components"]["schemas"])

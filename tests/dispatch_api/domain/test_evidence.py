"""Evidence rules and incident templates: which requirements attached evidence fails."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import pytest

from dispatch_api.domain import (
    EvidenceKind,
    EvidenceRequirement,
    EvidenceSummary,
    IncidentTemplate,
    TemplateError,
    parse_templates,
    template_to_json,
    unmet_requirements,
)

PHOTO = EvidenceKind.PHOTO
SIGNATURE = EvidenceKind.SIGNATURE
DOCUMENT = EvidenceKind.DOCUMENT
NOTE = EvidenceKind.NOTE


def requirement(kind: EvidenceKind, tag: str | None) -> EvidenceRequirement:
    return EvidenceRequirement(kind, tag, f"{kind} {tag}")


def template(*requirements: EvidenceRequirement) -> IncidentTemplate:
    return IncidentTemplate("test", "Test", requirements)


def item(kind: EvidenceKind, tag: str | None) -> EvidenceSummary:
    return EvidenceSummary(kind, tag)


def shipped_templates() -> dict[str, IncidentTemplate]:
    text = resources.files("dispatch_api.data").joinpath("incident_templates.json").read_text()
    return parse_templates(json.loads(text))


# --- unmet_requirements ---------------------------------------------------------------------


def test_no_template_means_nothing_is_required() -> None:
    assert unmet_requirements(None, []) == []
    assert unmet_requirements(None, [item(PHOTO, "before")]) == []


def test_a_template_without_requirements_is_always_met() -> None:
    assert unmet_requirements(template(), []) == []


def test_every_requirement_is_unmet_when_nothing_is_attached() -> None:
    before, after = requirement(PHOTO, "before"), requirement(PHOTO, "after")

    assert unmet_requirements(template(before, after), []) == [before, after]


def test_a_matching_item_meets_its_requirement() -> None:
    before = requirement(PHOTO, "before")

    assert unmet_requirements(template(before), [item(PHOTO, "before")]) == []


@pytest.mark.parametrize(
    "attached",
    [item(PHOTO, "after"), item(PHOTO, None), item(DOCUMENT, "before"), item(SIGNATURE, "before")],
)
def test_a_tagged_requirement_needs_both_its_kind_and_its_tag(attached: EvidenceSummary) -> None:
    before = requirement(PHOTO, "before")

    assert unmet_requirements(template(before), [attached]) == [before]


def test_each_item_meets_at_most_one_requirement() -> None:
    before, signature = requirement(PHOTO, "before"), requirement(SIGNATURE, "customer")
    required = template(before, requirement(PHOTO, None), signature)

    unmet = unmet_requirements(required, [item(PHOTO, "before"), item(SIGNATURE, "customer")])

    assert unmet == [requirement(PHOTO, None)]


def test_two_identical_requirements_need_two_items() -> None:
    before = requirement(PHOTO, "before")
    required = template(before, before)

    assert unmet_requirements(required, [item(PHOTO, "before")]) == [before]
    assert unmet_requirements(required, [item(PHOTO, "before"), item(PHOTO, "before")]) == []


@pytest.mark.parametrize("tag", [None, "before", "wide_angle"])
def test_an_untagged_requirement_accepts_an_item_of_its_kind_with_any_tag(tag: str | None) -> None:
    any_photo = requirement(PHOTO, None)

    assert unmet_requirements(template(any_photo), [item(PHOTO, tag)]) == []
    assert unmet_requirements(template(any_photo), [item(DOCUMENT, tag)]) == [any_photo]


def test_an_untagged_requirement_does_not_steal_the_item_a_tagged_one_needs() -> None:
    any_photo, before = requirement(PHOTO, None), requirement(PHOTO, "before")

    # The untagged requirement comes first in the template but must not take the only
    # `before` photo while another photo is there for it.
    met = unmet_requirements(template(any_photo, before), [item(PHOTO, "before"), item(PHOTO, "x")])
    assert met == []

    # With a single photo, the tagged requirement keeps it; the untagged one is reported.
    unmet = unmet_requirements(template(any_photo, before), [item(PHOTO, "before")])
    assert unmet == [any_photo]


def test_unmet_requirements_are_reported_in_template_order() -> None:
    note, before = requirement(NOTE, None), requirement(PHOTO, "before")
    signature, after = requirement(SIGNATURE, "customer"), requirement(PHOTO, "after")

    unmet = unmet_requirements(template(note, before, signature, after), [item(PHOTO, "before")])

    assert unmet == [note, signature, after]


def test_unmet_requirements_accepts_any_iterable_of_evidence() -> None:
    before = requirement(PHOTO, "before")

    assert unmet_requirements(template(before), iter([item(PHOTO, "before")])) == []


def test_a_requirement_label_shows_kind_and_tag() -> None:
    assert requirement(PHOTO, "before").label == "photo:before"
    assert requirement(NOTE, None).label == "note"


# --- the shipped templates ------------------------------------------------------------------


def test_the_shipped_templates_include_the_seeded_incident_types() -> None:
    templates = shipped_templates()

    assert {"water_leak", "no_heat", "lockout", "electrical_hazard"} <= set(templates)
    assert all(name == t.name for name, t in templates.items())


def test_a_water_leak_needs_before_and_after_photos_and_a_customer_signature() -> None:
    water_leak = shipped_templates()["water_leak"]

    assert [r.label for r in water_leak.requirements] == [
        "photo:before",
        "photo:after",
        "signature:customer",
    ]
    assert all(r.description for r in water_leak.requirements)


def test_a_water_leak_with_its_three_items_attached_has_nothing_unmet() -> None:
    water_leak = shipped_templates()["water_leak"]
    evidence = [item(SIGNATURE, "customer"), item(PHOTO, "after"), item(PHOTO, "before")]

    assert unmet_requirements(water_leak, evidence) == []
    assert [r.label for r in unmet_requirements(water_leak, evidence[:2])] == ["photo:before"]


# --- parse_templates ------------------------------------------------------------------------


def test_templates_survive_a_round_trip_through_json() -> None:
    templates = shipped_templates()
    document = {"templates": [template_to_json(t) for t in templates.values()]}

    assert parse_templates(json.loads(json.dumps(document))) == templates


def test_a_template_without_a_title_is_titled_by_its_name_and_may_require_nothing() -> None:
    parsed = parse_templates({"templates": [{"name": "misc"}]})

    assert parsed == {"misc": IncidentTemplate("misc", "misc", ())}


def test_a_requirement_without_a_tag_is_untagged() -> None:
    parsed = parse_templates({"templates": [{"name": "misc", "requirements": [{"kind": "note"}]}]})

    assert parsed["misc"].requirements == (EvidenceRequirement(NOTE, None, ""),)


def _water_leak(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "water_leak",
        "title": "Water leak",
        "requirements": [{"kind": "photo", "tag": "before", "description": "before"}],
    }
    raw.update(overrides)
    return raw


@pytest.mark.parametrize(
    ("document", "names"),
    [
        (None, "'templates' list"),
        ([], "'templates' list"),
        ({"templates": {"water_leak": {}}}, "'templates' list"),
        ({"templates": [_water_leak(), "no_heat"]}, "templates[1]: expected an object"),
        ({"templates": [_water_leak(name="")]}, "templates[0].name"),
        ({"templates": [_water_leak(name=7)]}, "templates[0].name"),
        ({"templates": [{"title": "nameless"}]}, "templates[0].name"),
        ({"templates": [_water_leak(), _water_leak()]}, "templates[1].name: duplicate"),
        ({"templates": [_water_leak(requirements=5)]}, "templates[0].requirements"),
        ({"templates": [_water_leak(requirements=None)]}, "templates[0].requirements"),
        (
            {"templates": [_water_leak(requirements=[{"kind": "photo"}, {"kind": "video"}])]},
            "templates[0].requirements[1].kind",
        ),
        (
            {"templates": [_water_leak(), _water_leak(name="x", requirements=[{"tag": "a"}])]},
            "templates[1].requirements[0].kind",
        ),
        (
            {"templates": [_water_leak(requirements=["photo"])]},
            "templates[0].requirements[0].kind",
        ),
        (
            {"templates": [_water_leak(requirements=[{"kind": "photo", "tag": 3}])]},
            "templates[0].requirements[0].tag",
        ),
    ],
)
def test_malformed_template_data_raises_an_error_naming_the_template_and_field(
    document: Any, names: str
) -> None:
    with pytest.raises(TemplateError, match=re.escape(names)):
        parse_templates(document)


def test_a_duplicate_template_error_names_the_duplicated_template() -> None:
    with pytest.raises(TemplateError, match="'water_leak'"):
        parse_templates({"templates": [_water_leak(), _water_leak()]})


def test_a_template_error_is_a_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


def test_a_summary_counts_for_as_many_items_as_its_count() -> None:
    two_before = template(requirement(PHOTO, "before"), requirement(PHOTO, "before"))

    assert unmet_requirements(two_before, [EvidenceSummary(PHOTO, "before", 2)]) == []
    assert unmet_requirements(two_before, [EvidenceSummary(PHOTO, "before", 1)]) == [
        requirement(PHOTO, "before")
    ]


def test_a_counted_summary_serves_tagged_and_untagged_requirements_alike() -> None:
    photos = template(requirement(PHOTO, None), requirement(PHOTO, "after"))

    assert unmet_requirements(photos, [EvidenceSummary(PHOTO, "after", 2)]) == []
    assert unmet_requirements(photos, [EvidenceSummary(PHOTO, "after", 1)]) == [
        requirement(PHOTO, None)
    ]

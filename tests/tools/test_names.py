"""Tool names every model accepts: the safe spelling of a canonical name, and the index of
every spelling a call may use, which refuses a catalog where one spelling means two tools."""

from __future__ import annotations

import pytest

from tools import SAFE_NAME, catalog, name_index, safe_name


def test_a_dotted_name_is_spelled_with_underscores() -> None:
    assert safe_name("tech.complete") == "tech_complete"
    assert safe_name("customer.follow_up") == "customer_follow_up"
    assert safe_name("already-safe_1") == "already-safe_1"


@pytest.mark.parametrize("name", ["a" * 65, "ticket create", "ticket/get", "", "tïcket.get"])
def test_a_name_with_no_safe_spelling_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="no safe spelling"):
        safe_name(name)


def test_the_index_maps_both_spellings_to_the_canonical_name() -> None:
    assert name_index(["tech.complete", "sla.status", "ping"]) == {
        "tech.complete": "tech.complete",
        "tech_complete": "tech.complete",
        "sla.status": "sla.status",
        "sla_status": "sla.status",
        "ping": "ping",
    }


@pytest.mark.parametrize(
    "names",
    [
        ["ticket.get", "ticket_get"],  # a safe spelling that is another tool's name
        ["ticket_get", "ticket.get"],  # the same, the other way round
        ["ticket.get", "ticket.get"],  # one name twice
        ["a.b_c", "a_b.c"],  # two dotted names with one safe spelling
    ],
)
def test_names_whose_spellings_collide_cannot_be_indexed(names: list[str]) -> None:
    with pytest.raises(ValueError, match="collide"):
        name_index(names)


def test_every_catalog_tool_has_one_safe_name_that_no_other_tool_claims() -> None:
    names = [t.name for t in catalog()]
    index = name_index(names)

    assert len(index) == 2 * len(names)
    assert all(SAFE_NAME.fullmatch(t.alias) for t in catalog())

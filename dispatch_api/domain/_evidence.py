"""Evidence rules: which requirements of an incident template a ticket's evidence fails."""

from __future__ import annotations

from collections.abc import Iterable

from ._model import EvidenceRequirement, EvidenceSummary, IncidentTemplate


def unmet_requirements(
    template: IncidentTemplate | None, evidence: Iterable[EvidenceSummary]
) -> list[EvidenceRequirement]:
    """Return the template's requirements that no attached item satisfies, in template order.

    Each item satisfies at most one requirement, so a template asking for two photos tagged
    `before` needs two such photos. A requirement without a tag accepts any tag. A summary
    counts for as many items as its `count`.
    """
    if template is None:
        return []
    # Unused items per (kind, tag); a summary stands for `count` identical items.
    unused: dict[tuple[str, str | None], int] = {}
    for item in evidence:
        unused[(item.kind, item.tag)] = unused.get((item.kind, item.tag), 0) + item.count
    unmet = []
    # Tagged requirements first: an untagged requirement must not consume the only item
    # that a tagged one could have used.
    ordered = sorted(enumerate(template.requirements), key=lambda pair: pair[1].tag is None)
    failed: set[int] = set()
    for index, requirement in ordered:
        match = next(
            (
                key
                for key, left in unused.items()
                if left > 0
                and key[0] == requirement.kind
                and (requirement.tag is None or key[1] == requirement.tag)
            ),
            None,
        )
        if match is None:
            failed.add(index)
        else:
            unused[match] -= 1
    for index, requirement in enumerate(template.requirements):
        if index in failed:
            unmet.append(requirement)
    return unmet

"""Ids the services mint: request and correlation ids are random UUIDs (version 4)."""

from __future__ import annotations

import uuid

from telemetry import SAFE_ID, new_id


def test_minted_ids_are_distinct_version_4_uuids_in_canonical_form() -> None:
    minted = [new_id() for _ in range(2000)]
    assert len(set(minted)) == len(minted)
    for value in minted:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == value  # lower-case hex, hyphens where a UUID has them
        assert SAFE_ID.fullmatch(value)

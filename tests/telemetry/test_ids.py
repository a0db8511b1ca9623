"""Ids the services mint: request and correlation ids are random UUIDs (version 4)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

from telemetry import SAFE_ID, new_id


def test_minted_ids_are_distinct_version_4_uuids_in_canonical_form() -> None:
    minted = [new_id() for _ in range(2000)]
    assert len(set(minted)) == len(minted)
    for value in minted:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == value  # lower-case hex, hyphens where a UUID has them
        assert SAFE_ID.fullmatch(value)


def test_threads_minting_at_once_never_get_the_same_id() -> None:
    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(lambda _: [new_id() for _ in range(3000)], range(8)))
    minted = [value for batch in batches for value in batch]
    assert len(set(minted)) == len(minted)


def test_a_forked_child_does_not_mint_the_ids_its_parent_will() -> None:
    new_id()  # the parent holds a batch of randomness it has not used up
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent, then out
        os.close(reader)
        os.write(writer, "\n".join(new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        child = set(pipe.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {new_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent

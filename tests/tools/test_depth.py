"""schemas.too_deep: the bracket count of the text may spare the walk, never change the answer."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import MAX_JSON_DEPTH, too_deep


def nested(levels: int, inner: Any = 1) -> Any:
    value = inner
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("levels", [0, 1, MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
@pytest.mark.parametrize("inner", [1, "x" * 100_000], ids=["short text", "long text"])
def test_the_text_gives_the_same_answer_as_the_walk_at_the_limit(levels: int, inner: Any) -> None:
    """A long text (an evidence upload) is walked, not scanned for brackets: same answer."""
    value = nested(levels, inner)
    text = orjson.dumps(value)
    assert too_deep(value, text=text) is too_deep(value) is (levels > MAX_JSON_DEPTH)


def test_brackets_inside_strings_only_send_the_check_to_the_walk() -> None:
    shallow = {"note": "[" * (MAX_JSON_DEPTH * 2)}
    assert too_deep(shallow, text=orjson.dumps(shallow)) is False


def test_many_shallow_brackets_are_still_not_too_deep() -> None:
    wide = [[i] for i in range(MAX_JSON_DEPTH * 3)]
    assert too_deep(wide, text=orjson.dumps(wide)) is False

"""The one date-time parser of the wire format, and the `format: date-time` check on it.

RFC 3339 section 5.6 `date-time` only: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`,
`T` and `Z` in either case as the RFC allows. Not ISO 8601's other spellings that
`datetime.fromisoformat` takes (a space for `T`, no seconds, no offset, week or ordinal
dates, basic format without separators), which a caller could send meaning something else.

Years are 2000-2099 as written: a dispatch system schedules and records work of this
century, and an instant at year 1 or 9999 is a typo or a probe that breaks arithmetic
(a window's length, an offset pushing it out of range) further in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from jsonschema import FormatChecker

MIN_YEAR = 2000
MAX_YEAR = 2099

_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))",
    re.ASCII,
)

_NUMBERS = ("year", "month", "day", "hour", "minute", "second", "off_hour", "off_minute")


def parse_datetime(text: str) -> datetime:
    """`text` as an aware datetime in UTC; ValueError naming what is wrong otherwise."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) and len(text) <= 64 else None
    if match is None:
        raise ValueError(
            "not an RFC 3339 date-time: expected YYYY-MM-DDTHH:MM:SS[.fraction] and Z or"
            " +HH:MM, e.g. 2026-11-27T14:00:00Z"
        )
    numbers = match.groupdict(default="0")
    part = {name: int(numbers[name]) for name in _NUMBERS}
    if not MIN_YEAR <= part["year"] <= MAX_YEAR:
        raise ValueError(f"the year must be between {MIN_YEAR} and {MAX_YEAR}")
    if part["off_hour"] > 23 or part["off_minute"] > 59:
        raise ValueError("the UTC offset must be between -23:59 and +23:59")
    offset = timedelta(hours=part["off_hour"], minutes=part["off_minute"])
    fraction = (match.group("fraction") or "").ljust(6, "0")[:6]
    try:
        value = datetime(
            part["year"],
            part["month"],
            part["day"],
            part["hour"],
            part["minute"],
            part["second"],  # 60, a leap second, is refused here: datetime cannot hold it
            int(fraction),
            tzinfo=timezone(-offset if match.group("sign") == "-" else offset),
        )
    except ValueError:
        raise ValueError("not a real date and time (day of month, hour or second)") from None
    return value.astimezone(UTC)


def is_datetime(instance: object) -> bool:
    """JSON Schema `format: date-time`: true for what `parse_datetime` takes; other types
    pass (the `type` keyword judges those)."""
    if not isinstance(instance, str):
        return True
    try:
        parse_datetime(instance)
    except ValueError:
        return False
    return True


#: Asserts `format: date-time` with `parse_datetime`; every other format is annotation only.
FORMAT_CHECKER = FormatChecker(formats=())
FORMAT_CHECKER.checks("date-time")(is_datetime)

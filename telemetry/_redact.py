"""What may reach a log line: credentials redacted whatever their shape, every value bounded.

Credentials arrive in logs in shapes nobody chose: aiohttp's parser echoes the raw header
line it refused (`b'Authorization: Token <key>\\x00'`, or only `b' <key>'` for an obs-fold
continuation), tracebacks repr header mappings, an agent pastes its key into an argument.
`redact` therefore removes, in any text:

- the content of every Python bytes literal (`b'...'`): these are raw request bytes, and a
  credential in them has no reliable neighbour to find it by; a leading header name is kept;
- the value of an `Authorization`, `Proxy-Authorization`, `Cookie` or `Set-Cookie` header,
  whatever separates name and value and whatever scheme (or none) the value has;
- the credential after `Bearer`, `Basic`, `Digest` or `Negotiate`;
- anything shaped like our tokens (`dsp_...`, `agt_...` from `principals.new_token`) or a JWT.

`bounded` makes a log field safe: strings redacted and cut to a length with a marker,
containers cut to a few items, anything else turned into a short string.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from datetime import datetime
from itertools import islice
from typing import Any

REDACTED = "[redacted]"
#: Longest string field in a JSON log line (ids, codes, messages of a field).
MAX_FIELD_CHARS = 256
#: Items kept of a list or mapping field.
MAX_ITEMS = 8

_SECRETS = re.compile(
    # A bytes literal, as repr() writes it: raw request bytes.
    r"""(?P<bytes>\bb(?P<q>['"])(?P<body>(?:(?!(?P=q))[^\\]|\\.)*)(?P=q))"""
    # A credential header, then its value up to the end of the line or a closing quote
    # (obs-fold continuation lines included).
    r"""|(?P<header>\b(?:proxy-authorization|authorization|set-cookie|cookie))"""
    r"""(?P<sep>[\s'"]*[:=,]\s*(?:b?['"])?)(?P<value>(?:[^\r\n'"]|\r?\n[ \t])*)"""
    # An authentication scheme and its credential.
    r"""|(?P<scheme>\b(?:bearer|basic|digest|negotiate))(?P<space>\s+)(?P<cred>[^\s'"\\,;]+)"""
    # Our tokens and keys (prefix_ + 43 url-safe characters), and JWTs.
    r"""|(?P<token>(?-i:\b(?:dsp|agt)_[A-Za-z0-9_-]{16,}"""
    r"""|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*))""",
    re.IGNORECASE,
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&*+.^_`|~-]{1,64}:")


def _replace(match: re.Match[str]) -> str:
    if match.group("bytes") is not None:
        quote, body = match.group("q"), match.group("body")
        name = _HEADER_NAME.match(body)
        kept = f"{name.group(0)} " if name else ""
        return f"b{quote}{kept}{REDACTED}{quote}"
    if match.group("header") is not None:
        return match.group("header") + match.group("sep") + REDACTED
    if match.group("scheme") is not None:
        return match.group("scheme") + match.group("space") + REDACTED
    return REDACTED


#: Text no rule of _SECRETS can match: no quote, space or separator, and (checked apart)
#: no token prefix. Most logged values (ids, routes, codes) are such, and skip the scan:
#: a request's log line stays a few microseconds.
_PLAIN = re.compile(r"[A-Za-z0-9._/{}@+-]*")
_TOKEN_MARKS = ("dsp_", "agt_", "eyJ")


def _plain(text: str) -> bool:
    return _PLAIN.fullmatch(text) is not None and not any(m in text for m in _TOKEN_MARKS)


#: A serialized log line this long or shorter that `may_hold_secret` clears is written as is.
FAST_LINE_BYTES = 2048


#: Bytes of a serialized line that no rule of _SECRETS needs, JSON's own punctuation included.
_ORDINARY = b"".join(
    bytes([c]) for c in range(128) if chr(c).isalnum() or chr(c) in '"{}[]:,._/@+-'
)


def may_hold_secret(line: bytes) -> bool:
    """False when no rule of `redact` can match a value of the serialized `line`.

    Runs for every log line, so it asks the cheap question first: a line of letters, digits
    and JSON punctuation only (no quote, space, `=` or escape in any value) can hold no
    bytes literal, scheme and credential, or header value; only a token's shape remains."""
    if not line.translate(None, _ORDINARY):
        return b"dsp_" in line or b"agt_" in line or b"eyJ" in line
    low = line.lower()
    return (
        b"b'" in low
        or b'b\\"' in low
        or b"authoriz" in low
        or b"cookie" in low
        or b"bearer" in low
        or b"basic" in low
        or b"digest" in low
        or b"negotiate" in low
        or b"dsp_" in low
        or b"agt_" in low
        or b"eyj" in low
    )


def redact(text: str) -> str:
    """`text` with every credential it holds replaced by `[redacted]` (see the module doc)."""
    return _SECRETS.sub(_replace, text)


def safe_text(text: str, limit: int = MAX_FIELD_CHARS, *, keep_tail: bool = False) -> str:
    """`text` redacted, cut to `limit` characters with a marker saying how much went, and
    valid UTF-8 (aiohttp hands header bytes that are not UTF-8 on as lone surrogates).
    Only a bounded slice is ever scanned, so a 7 MB value costs what a short one does.
    `keep_tail` keeps the end instead (a traceback ends with what went wrong)."""
    text = _cut(text, limit, keep_tail)
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cut(text: str, limit: int, keep_tail: bool) -> str:
    slack = limit + 512  # room for a credential straddling the cut to still be recognised
    if len(text) <= slack:
        cleaned = redact(text)
        if len(cleaned) <= limit:
            return cleaned
        cut = len(cleaned) - limit
    else:
        cleaned = redact(text[-slack:] if keep_tail else text[:slack])
        cut = len(text) - limit
    if keep_tail:
        return f"[{cut} chars cut]…" + cleaned[-limit:]
    return cleaned[:limit] + f"…[{cut} chars cut]"


_SHORT = reprlib.Repr()
_SHORT.maxlevel = 2
_SHORT.maxstring = 64
_SHORT.maxother = 64
for _name in ("maxlist", "maxtuple", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_SHORT, _name, MAX_ITEMS)


_SCALARS = (bool, int, float, datetime)


def bounded(value: Any, *, nested: bool = False) -> Any:
    """`value` as a log field: scalars as they are, strings through `safe_text`, a list or
    mapping cut to MAX_ITEMS items (one level; deeper ones become short strings), anything
    else a short string. Never costs more than a bounded amount of work."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        limit = MAX_FIELD_CHARS // 2 if nested else MAX_FIELD_CHARS
        if len(value) <= limit and _plain(value):
            return value
        return safe_text(value, limit)
    if not nested and isinstance(value, Mapping):
        kept = {
            safe_text(str(k), 64): bounded(v, nested=True)
            for k, v in islice(value.items(), MAX_ITEMS)
        }
        if len(value) > MAX_ITEMS:
            kept["…"] = f"{len(value) - MAX_ITEMS} more"
        return kept
    if not nested and isinstance(value, list | tuple):
        items = [bounded(v, nested=True) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"…{len(value) - MAX_ITEMS} more")
        return items
    if isinstance(value, Mapping | list | tuple | set | frozenset | bytes | bytearray):
        return safe_text(_SHORT.repr(value), MAX_FIELD_CHARS // 2)
    return safe_text(str(value), MAX_FIELD_CHARS // 2)

"""The one JSON encoding of the pipeline, and the fast checks around it.

`compact_json` writes every value that goes on the wire or into storage (compact, UTF-8,
strict: no NaN, no lone surrogates, bounded nesting); `parse_json` reads request bodies
exactly as `json.loads` would; `json_problem` says why a value cannot be written. Both
ends use orjson where it provably gives the stdlib's answer (`scan_json` decides), and
the stdlib otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NoReturn

import orjson

# One encoder for every call: json.dumps with keyword arguments builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# What `scan_json` found, as bits of its answer.
JSON_TOO_DEEP = 1  # dicts/lists nested beyond the scan's limit (the scan stopped there)
JSON_TINY_FLOAT = 2  # a non-zero float below 1e-4 in magnitude
JSON_HUGE_FLOAT = 4  # a finite float of 2**63 or more in magnitude
JSON_NOT_FINITE = 8  # NaN or an infinity
JSON_OTHER_TYPE = 16  # anything but an exact dict, list, str, int, bool, float or None
# When none of these is found, orjson.dumps either raises or writes exactly the bytes the
# stdlib encoder writes (tests/unit/shared/test_compact_json.py proves it by property):
# * below 1e-4 the stdlib writes a float with an exponent (`1e-05`), orjson with digits
#   (`0.00001`); from 1e-4 up, zero too, both write the same shortest round-trip digits;
# * orjson writes NaN and infinities as `null`, where the stdlib refuses them;
# * orjson writes subclasses, dataclasses, datetimes, UUIDs, enums... its own way;
# * orjson refuses nesting past ORJSON_MAX_NESTING, which the scan reports first.
# What orjson refuses (integers beyond 64 bits, non-str keys, lone surrogates, cycles)
# goes to the stdlib encoder, which writes it or raises its own exception for it.
ORJSON_MAY_DIFFER = JSON_TOO_DEEP | JSON_TINY_FLOAT | JSON_NOT_FINITE | JSON_OTHER_TYPE
# orjson before 3.11.7 wrote positive exponents without their sign (`1e16` where the
# stdlib writes `1e+16`), and the scan above does not flag such floats. pyproject asks
# for 3.11.7 or later; an older one installed anyway only loses the fast path.
_ORJSON_SPELLS_AS_STDLIB = (
    orjson.dumps([1e16, 1.5e300, 2.5, 1e-4]) == b"[1e+16,1.5e+300,2.5,0.0001]"
)
ORJSON_MAX_NESTING = 254
_ORJSON_ALIKE_FROM = 1e-4
_HUGE = float(2**63)


def _scan_level(children: Iterable[Any], below: list[Any]) -> int:
    found = 0
    for child in children:
        kind = type(child)
        if kind is str or kind is int or kind is bool or child is None:
            continue
        if kind is dict or kind is list:
            below.append(child)
        elif kind is float:
            if -_ORJSON_ALIKE_FROM < child < _ORJSON_ALIKE_FROM:
                if child:
                    found |= JSON_TINY_FLOAT
            elif not -_HUGE < child < _HUGE:  # NaN too: every comparison with it is False
                found |= JSON_HUGE_FLOAT if child - child == 0 else JSON_NOT_FINITE
        else:
            found |= JSON_OTHER_TYPE
    return found


def scan_json(value: Any, limit: int = ORJSON_MAX_NESTING) -> int:
    """The JSON_* bits for what `value` holds (0: only exact JSON types, floats that
    orjson writes as the stdlib does, and nesting within `limit`).

    `value` itself counts as level 1 when it is a dict or list. Containers of any other
    type (subclasses, tuples) are JSON_OTHER_TYPE and not looked into. Stops at the first
    level past `limit`, so a container that holds itself once ends the walk as
    JSON_TOO_DEEP; one that holds itself twice or more doubles every level and the walk
    does not end: `value` must be acyclic, as everything parsed from JSON is. One level at a time
    with plain lists, no recursion, like `nesting_exceeds`, and about twice as fast: it
    compares exact types rather than calling isinstance."""
    below: list[Any] = []
    kind = type(value)
    if kind is dict:
        found = _scan_level(value.values(), below)
        depth = 1
    elif kind is list:
        found = _scan_level(value, below)
        depth = 1
    else:
        found = _scan_level((value,), below)
        depth = 0
    while below:
        depth += 1
        if depth > limit:
            return found | JSON_TOO_DEEP
        level = below
        below = []
        for item in level:
            found |= _scan_level(item.values() if type(item) is dict else item, below)
    return found


def compact_json(value: Any) -> bytes:
    """The one JSON encoding used on the wire and in storage: compact, UTF-8, strict.

    Raises ValueError for what is not valid JSON or not UTF-8 (NaN or infinite numbers,
    e.g. from a literal `1e400`; unpaired surrogates such as a `"\\ud800"` escape) and
    RecursionError for a value nested too deeply, so nothing we write can fail to parse
    on the other side.

    For any acyclic value (see `scan_json`) the bytes, and the exception, are those of
    the stdlib encoder
    (`json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)`);
    orjson writes them, ~15x cheaper, whenever `scan_json` proves it writes the same.
    """
    if _ORJSON_SPELLS_AS_STDLIB and not scan_json(value) & ORJSON_MAY_DIFFER:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass  # the stdlib writes it, or raises its own exception for it
    # Called here rather than through a helper, so that the stack depth at which the
    # stdlib encoder runs out of recursion is what it always was.
    return _ENCODER.encode(value).encode()


def compact_json_scanned(value: Any, found: int) -> bytes:
    """`compact_json(value)` for a caller that already has `found`, the bits
    `scan_json(value, limit)` answers for some `limit`, or those of a part of `value`
    whose other parts are strings and integers (a record and its payload's). Saves
    walking the value twice; raises as `compact_json` does."""
    if _ORJSON_SPELLS_AS_STDLIB and not found & ORJSON_MAY_DIFFER:
        try:
            return orjson.dumps(value)
        except orjson.JSONEncodeError:
            pass  # past ORJSON_MAX_NESTING, or what orjson refuses: see compact_json
    return _ENCODER.encode(value).encode()


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; accepting them would write invalid JSON to Kafka.
    raise ValueError(f"{name} is not valid JSON")


# orjson reads an integer literal beyond 64 bits as a float (2**64 becomes 1.8e19), where
# the standard library keeps it exact. Any run of 19 digits (i64 ends at 19, u64 at 20)
# sends the text to the standard library; a long run inside a string costs only speed.
# Found by mapping every digit to "0" and every other byte to " " and looking for 19
# zeros: the same answer as searching for `[0-9]{19}`, ~15x cheaper (the regex engine
# tries a match at every digit; this is two passes in C over the body).
_DIGIT_RUN_TABLE = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def has_long_digit_run(raw: bytes) -> bool:
    """Whether `raw` holds 19 ASCII digits in a row (what `re.search(rb"[0-9]{19}")`
    finds)."""
    return _LONG_DIGIT_RUN in raw.translate(_DIGIT_RUN_TABLE)


def parse_json(raw: bytes) -> tuple[Any, bool]:
    """`raw` parsed as JSON, exactly as `json.loads(raw)` with NaN and Infinity refused
    would parse it, and whether the value is known to be writable (`strict`).

    orjson parses what it can: strict UTF-8, no NaN or infinities (`1e400` included), no
    lone surrogates, integers within 64 bits. Whatever it refuses, and any text with a
    19-digit run, goes to the standard library, so what is accepted or refused, and the
    value, are those of `json.loads`. `strict` is True when orjson parsed it: then the
    value holds nothing `compact_json` could refuse except nesting (see `json_problem`).
    Raises ValueError (or RecursionError) as `json.loads` does, with its message.
    """
    if not has_long_digit_run(raw):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, parse_constant=_reject_constant), False


# Deeper JSON is refused on both sides: the producer answers 400, the consumer dead-letters.
# Real events are a few levels deep; Python's own recursion limit sits near 1,000 levels,
# and code that walks a value recursively (encoders, validators) must stay well inside it.
MAX_JSON_NESTING = 256


def nesting_exceeds(value: Any, limit: int = MAX_JSON_NESTING) -> bool:
    """True when `value` has dicts/lists nested more than `limit` deep.

    Walks one level at a time with plain lists: no recursion (it cannot run out of stack
    itself) and no per-node tuples, since it runs over every request body."""
    level = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
        depth += 1
    return False


def json_problem(value: Any, *, strict: bool = False) -> str | None:
    """Why `value` cannot be written with `compact_json` (or is nested deeper than
    MAX_JSON_NESTING), or None when it can. `strict=True` vouches that `value` came from
    `parse_json` with `strict` True, whose values can only fail on nesting: the encoding
    pass is skipped."""
    return scanned_json_problem(value, strict=strict)[0]


def scanned_json_problem(value: Any, *, strict: bool = False) -> tuple[str | None, int]:
    """`json_problem(value, strict=strict)`, and the bits `scan_json(value,
    MAX_JSON_NESTING)` found on the way: a caller that later encodes values built from
    parts of `value` hands them to `compact_json_scanned` rather than scan again."""
    found = scan_json(value, MAX_JSON_NESTING)
    # The scan does not look into containers of other types (subclasses): for those the
    # slower walk that does decides.
    if found & JSON_TOO_DEEP or (
        found & JSON_OTHER_TYPE and isinstance(value, dict | list) and nesting_exceeds(value)
    ):
        return f"nested more than {MAX_JSON_NESTING} levels deep", found
    if strict:
        return None, found
    try:
        compact_json(value)
    except RecursionError:
        return "nested too deeply", found
    except UnicodeEncodeError:
        return "contains an unpaired UTF-16 surrogate", found
    except ValueError as exc:
        return str(exc), found
    return None, found

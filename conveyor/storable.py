"""What both databases can store and read back: text made storable, JSON text checked for it.

PostgreSQL refuses NUL in text and jsonb and lone UTF-16 surrogates anywhere; SQLite stores a
lone surrogate as invalid UTF-8, after which reading the row fails. Python reads JSON nested
deeper than its recursion limit allows only near the top of the stack. So text Conveyor writes
on its own account (errors, tracebacks, results) is made storable here, and values a caller
gives (payloads, keys) are refused where they come in, with the reason.
"""

from __future__ import annotations

import re

MAX_JSON_DEPTH = 200
"""The deepest nesting of a stored JSON value: far past any real payload, far short of the
recursion limit that a worker's reader runs under."""

NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
"""JSON's escape for a NUL character (an odd run of backslashes before u0000)."""

_LONE_ESCAPE = re.compile(
    r"(?<!\\)((?:\\\\)*)(?:\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<![dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
"""A JSON escape of a lone surrogate: a high half not followed by a low one, or a low half alone."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")

REPLACEMENT = "\ufffd"


def storable_text(text: str) -> str:
    """``text`` as every backend stores it: NUL written as ``\\x00`` and a lone surrogate as its
    ``\\udXXX`` escape, visibly, so an error message or traceback keeps saying what it said."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def storable_json(text: str) -> str:
    """JSON text as every backend stores it: a NUL or lone surrogate in a string becomes U+FFFD
    (an escape would change the JSON's meaning, not keep it)."""
    if "\\u" in text:
        if "\\u0000" in text:
            text = NUL_ESCAPE.sub(lambda m: m.group(0)[:-6] + REPLACEMENT, text)
        text = _LONE_ESCAPE.sub(lambda m: m.group(1) + REPLACEMENT, text)
    if not text.isascii():
        text = _SURROGATE.sub(REPLACEMENT, text)
    return text


def json_problem(text: str, max_depth: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """Why JSON text cannot be stored and read back, as ``(error type, message)``; None if it can."""
    if "\\u" in text:
        if "\\u0000" in text and NUL_ESCAPE.search(text):
            return "nul_character", "contains a NUL character (\\u0000), which cannot be stored"
        if _LONE_ESCAPE.search(text):
            return "lone_surrogate", "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text any database stores"
    if not text.isascii() and _SURROGATE.search(text):
        return "lone_surrogate", "contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text any database stores"
    if text.count("{") + text.count("[") > max_depth and json_depth(text) > max_depth:
        return "too_deep", f"is nested more than {max_depth} levels deep"
    return None


def json_depth(text: str) -> int:
    """The deepest nesting of objects and arrays in JSON text (brackets inside strings ignored)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest

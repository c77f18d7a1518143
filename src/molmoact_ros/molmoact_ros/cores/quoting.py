"""Bounded quoting of input in error texts.

An error text that echoes its input as is grows with the input: a 100 KB request id becomes a 100 KB error
line, logged and re-published on ``~/status`` every period. Every error text that quotes a value that came
in from outside (ids, frame names, counts of a message's fields) quotes it with :func:`quote`.
"""

from __future__ import annotations

#: Longest quoted value kept whole (characters of its ``repr``).
QUOTE_LIMIT = 80
#: Longest error text (a last guard for texts built from many quoted parts).
TEXT_LIMIT = 1000


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to ``limit`` characters with an ellipsis and the original length when longer.

    >>> quote('abc')
    "'abc'"
    >>> quote('x' * 1000, 10)
    "'xxxxxxxx... (1002 chars)"
    """
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still quoted
        text = f'<{type(value).__name__}>'
    if len(text) <= limit:
        return text
    return f'{text[:max(1, limit - 1)]}... ({len(text)} chars)'


def bound(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters plus a note of its original length."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f'{text[:limit]}... ({len(text)} chars)'

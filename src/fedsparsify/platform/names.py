"""Names people type (federations, sites): one stored form and one key for uniqueness.

A name is stored in Unicode NFC with surrounding whitespace trimmed and every run of inner
whitespace collapsed to one space. Refused: control characters (newlines included), format
characters (bidirectional overrides, zero-width joiners), surrogates, private-use and unassigned
code points, and line or paragraph separators, so a name can neither forge a log line nor look
like another one through invisible characters. Two names are the same when their
:func:`name_key` (NFKC, case-folded) is equal: ``"Hospital A"``, ``"hospital a "`` and
``"ｈｏｓｐｉｔａｌ a"`` are one name.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_NAME_LENGTH", "name_key", "normalize_name"]

MAX_NAME_LENGTH = 128

#: Unicode categories refused anywhere in a name.
_REFUSED = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def normalize_name(value: str, *, max_length: int = MAX_NAME_LENGTH) -> str:
    """The stored form of a name; :class:`ValueError` naming the first refused character."""
    text = unicodedata.normalize("NFC", value)
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category in _REFUSED:
            raise ValueError(
                f"name holds {_REFUSED[category]} (U+{ord(char):04X}) at position {position}"
            )
    text = " ".join(text.split())
    if not text:
        raise ValueError("name is empty (or only whitespace)")
    if len(text) > max_length:
        raise ValueError(f"name has {len(text)} characters, at most {max_length} are allowed")
    return text


def name_key(value: str) -> str:
    """What uniqueness is checked on: NFKC, case-folded, whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(unicodedata.normalize("NFKC", folded).split())

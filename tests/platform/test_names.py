"""Display names: one stored form, one uniqueness key, refusals that say what is wrong."""

from __future__ import annotations

import re

import pytest

from fedsparsify.platform.names import name_key, normalize_name


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  Hospital   A  ", "Hospital A"),
        ("no\u0308rth", "n\u00f6rth"),  # NFD in, NFC stored
        ("Klinik\u00a0Süd", "Klinik Süd"),  # a no-break space is whitespace
        ("東京大学病院", "東京大学病院"),
    ],
)
def test_stored_form(raw: str, stored: str) -> None:
    assert normalize_name(raw) == stored


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Hospital A", "hospital a"),
        ("Hospital A", "Hospital A "),
        ("site", "ｓｉｔｅ"),  # fullwidth
        ("nörth", "no\u0308rth"),
        ("STRASSE", "straße"),
    ],
)
def test_same_key(a: str, b: str) -> None:
    assert name_key(normalize_name(a)) == name_key(normalize_name(b))


def test_different_names_have_different_keys() -> None:
    assert name_key("site-1") != name_key("site-2")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("site\n2026-01-01 INFO forged line", "control character (U+000A)"),
        ("tab\there", "control character (U+0009)"),
        ("esc\x1b[31mred", "control character (U+001B)"),
        ("abc\u202egnp.exe", "invisible format character (U+202E)"),
        ("zero\u200bwidth", "invisible format character (U+200B)"),
        ("line\u2028sep", "line separator"),
        ("   ", "empty"),
        ("", "empty"),
        ("x" * 129, "at most 128"),
    ],
)
def test_refused(raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        normalize_name(raw)

"""The server's log formatter: a message cannot start a line of its own."""

from __future__ import annotations

import logging

from fedsparsify.api.server import EscapingFormatter, escape_control


def test_messages_are_escaped_tracebacks_are_not() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.INFO, __file__, 1, "name %s", ("a\nINFO forged\x1b[31m",), sys.exc_info()
        )
    text = formatter.format(record)
    first, *rest = text.splitlines()
    assert first == "INFO name a\\nINFO forged\\x1b[31m"
    assert rest[0].startswith("Traceback")


def test_printable_text_is_unchanged() -> None:
    assert escape_control("Hôpital Süd 東京") == "Hôpital Süd 東京"
    assert escape_control("a\u2028b\u202ec") == "a\\u2028b\\u202ec"

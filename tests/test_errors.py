"""The error tree: stable, unique codes and statuses, and lookup by code."""

from __future__ import annotations

import pytest

from fedsparsify import errors


def test_codes_are_unique() -> None:
    codes = [cls.code for cls in errors.all_error_classes()]
    assert len(codes) == len(set(codes)), codes


def test_every_public_class_is_in_the_tree() -> None:
    exported = {getattr(errors, n) for n in errors.__all__ if isinstance(getattr(errors, n), type)}
    assert exported == set(errors.all_error_classes())


@pytest.mark.parametrize("cls", errors.all_error_classes())
def test_error_for_code_round_trips(cls: type[errors.FedsparsifyError]) -> None:
    assert errors.error_for_code(cls.code) is cls
    assert 400 <= cls.http_status < 600


def test_unknown_code_gives_base() -> None:
    assert errors.error_for_code("no-such-code") is errors.FedsparsifyError


def test_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    for cls in errors.all_error_classes():
        assert cls.__name__ in doc, cls.__name__
        assert cls.code in doc, cls.code

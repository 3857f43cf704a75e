"""No TenSEAL or ``cryptography`` exception escapes the public API: all are translated.

Two angles: mutated inputs (bit flips, cuts, insertions) pushed through every entry point that
takes bytes from outside, and injected library failures at every TenSEAL call site.
"""

from __future__ import annotations

import functools
import io
import random
from collections.abc import Callable

import numpy as np
import pytest

from fedsparsify.crypto import (
    PublicContext,
    SecretContext,
    SiteIdentity,
    UpdateParser,
    _seal,
    add_updates,
    context,
    create_secret_context,
    decrypt_sum,
    encrypt_update,
    open_envelope,
    read_update,
    seal_envelope,
)
from fedsparsify.errors import CryptoError, FedsparsifyError, WireFormatError
from tests.crypto._helpers import values

MUTATIONS = 60


def mutate(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    kind = rnd.choice(["flip", "cut", "insert", "zero"])
    if kind == "flip":
        for _ in range(rnd.randint(1, 4)):
            i = rnd.randrange(len(out))
            out[i] ^= 1 << rnd.randrange(8)
    elif kind == "cut":
        del out[rnd.randrange(len(out)) :]
    elif kind == "insert":
        i = rnd.randrange(len(out) + 1)
        out[i:i] = rnd.randbytes(rnd.randint(1, 16))
    else:
        i = rnd.randrange(len(out))
        out[i : i + rnd.randint(1, 64)] = bytes(min(64, len(out) - i))
    return bytes(out)


def only_our_errors(action: Callable[[], object]) -> str:
    """Run ``action``; fail on any exception that is not ours. Returns what happened."""
    try:
        action()
    except FedsparsifyError as exc:
        return type(exc).__name__
    except Exception as exc:  # the point of the test: nothing else may escape
        pytest.fail(f"raw {type(exc).__name__} escaped: {exc}")
    return "ok"


def test_mutated_public_and_secret_bytes(lean: SecretContext) -> None:
    rnd = random.Random(1)
    outcomes = set()
    for _ in range(MUTATIONS):
        outcomes.add(
            only_our_errors(lambda: PublicContext.from_bytes(mutate(lean.public_bytes(), rnd)))
        )
        outcomes.add(
            only_our_errors(
                lambda: SecretContext.from_secret_bytes(mutate(lean.secret_bytes(), rnd))
            )
        )
    assert "CryptoError" in outcomes


def test_mutated_update_streams(lean: SecretContext, lean_stream: bytes) -> None:
    rnd = random.Random(2)
    public = lean.public()
    outcomes = set()

    def parse(data: bytes) -> None:
        parser = UpdateParser(public)
        parser.feed(data)
        parser.finish()

    def add(data: bytes) -> None:
        add_updates(public, [io.BytesIO(data)], io.BytesIO())

    def pull(data: bytes) -> None:
        list(read_update(io.BytesIO(data), public)[1])

    def decrypt(data: bytes) -> None:
        decrypt_sum(lean, io.BytesIO(data))

    for _ in range(MUTATIONS):
        data = mutate(lean_stream, rnd)
        for entry in (parse, add, pull, decrypt):
            outcomes.add(only_our_errors(functools.partial(entry, data)))
    assert {"MalformedStreamError", "TruncatedStreamError"} <= outcomes


def test_mutated_envelopes() -> None:
    """Every changed envelope is refused with our error (the signature covers every byte)."""
    rnd = random.Random(3)
    me, dealer = SiteIdentity.generate(), SiteIdentity.generate()
    env = seal_envelope(
        b"s" * 100,
        recipient_public_key=me.public().envelope_key,
        federation_id="f",
        recipient_id="r",
        dealer_id="d",
        key_set_digest="00" * 32,
        signer=dealer,
    )
    changed = 0
    for _ in range(MUTATIONS):
        data = mutate(env, rnd)
        if data == env:
            continue
        changed += 1
        outcome = only_our_errors(
            functools.partial(
                open_envelope,
                data,
                recipient_private_key=me.envelope_private,
                federation_id="f",
                recipient_id="r",
                dealer_signing_key=dealer.public().signing_key,
            )
        )
        assert outcome == "EnvelopeError"
    assert changed > MUTATIONS // 2


@pytest.mark.parametrize("garbage", [b"", b"\x00", "text", 12, None, bytearray(b"FSPC\x01")])
def test_wrong_types_and_garbage_everywhere(lean: SecretContext, garbage: object) -> None:
    def each() -> list[Callable[[], object]]:
        return [
            lambda: PublicContext.from_bytes(garbage),  # type: ignore[arg-type]
            lambda: SecretContext.from_secret_bytes(garbage),  # type: ignore[arg-type]
            lambda: UpdateParser(lean.public()).feed(garbage),  # type: ignore[arg-type]
            lambda: decrypt_sum(lean, [garbage]),  # type: ignore[list-item]
            lambda: open_envelope(
                garbage,  # type: ignore[arg-type]
                recipient_private_key=bytes(32),
                federation_id="f",
                recipient_id="r",
                dealer_signing_key=bytes(32),
            ),
            lambda: encrypt_update(lean, garbage, weight=0.5, mask_digest="m"),  # type: ignore[arg-type]
            lambda: create_secret_context(garbage),  # type: ignore[arg-type]
        ]

    for action in each():
        only_our_errors(action)


LIBRARY_ERRORS = [ValueError("v"), RuntimeError("r"), TypeError("t"), OverflowError("o")]


@pytest.mark.parametrize("error", LIBRARY_ERRORS, ids=lambda e: type(e).__name__)
def test_injected_tenseal_failures_are_translated(
    lean: SecretContext, lean_stream: bytes, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Each TenSEAL call site, failing with each exception TenSEAL raises, gives our error."""

    def boom(*args: object, **kwargs: object) -> object:
        raise error

    cases: list[tuple[object, str, Callable[[], object], type[FedsparsifyError]]] = [
        (context, "load_ciphertext", lambda: decrypt_sum(lean, [lean_stream]), WireFormatError),
        (
            context,
            "save_to_bytes",
            lambda: list(encrypt_update(lean, values(10), weight=0.5, mask_digest="m")),
            CryptoError,
        ),
        (
            context,
            "load_ciphertext",
            lambda: UpdateParser(lean.public(), seal_check=True).feed(lean_stream),
            WireFormatError,
        ),
        (
            context,
            "load_secret_key",
            lambda: SecretContext.from_secret_bytes(lean.secret_bytes()),
            CryptoError,
        ),
        (
            context.ts,
            "context_from",
            lambda: PublicContext.from_bytes(lean.public_bytes()),
            CryptoError,
        ),
        (context.ts, "context", lambda: create_secret_context("lean"), CryptoError),
        (
            context,
            "save_secret_key",
            lambda: create_secret_context("lean"),
            CryptoError,
        ),
    ]
    for target, name, action, expected in cases:
        with monkeypatch.context() as patch:
            patch.setattr(target, name, boom)
            with pytest.raises(expected) as info:
                action()
            causes, cause = [], info.value.__cause__
            while cause is not None:
                causes.append(cause)
                cause = cause.__cause__
            assert error in causes, (name, info.value)


def test_encoder_overflow_is_a_value_range_error(lean: SecretContext) -> None:
    """Should a value slip past the range check, SEAL's own refusal is translated too."""
    from fedsparsify.errors import ValueRangeError

    with pytest.raises(ValueRangeError):
        lean._encrypt_chunk(np.full(4096, 1e6))


def test_seal_errors_cover_what_tenseal_raises() -> None:
    assert {ValueError, RuntimeError, TypeError, OverflowError} <= set(_seal.SEAL_ERRORS)

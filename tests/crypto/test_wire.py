"""The wire format: header fields, the push parser, and a typed error for every bad stream."""

from __future__ import annotations

import io
import json
import struct

import pytest

from fedsparsify.crypto import (
    FORMAT_VERSION,
    PublicContext,
    SecretContext,
    UpdateHeader,
    UpdateParser,
    read_update,
)
from fedsparsify.errors import (
    ContextMismatchError,
    CountMismatchError,
    MalformedStreamError,
    MaskMismatchError,
    ParameterMismatchError,
    TrailingBytesError,
    TruncatedStreamError,
    WireFormatError,
)
from tests.crypto._helpers import N_STREAM, stream, values

PREFIX = struct.Struct(">4sBI")


def split(data: bytes) -> tuple[dict[str, object], list[bytes]]:
    """Independent decoder of a stream: its header as a dict and its frame payloads."""
    magic, version, length = PREFIX.unpack_from(data)
    assert (magic, version) == (b"FSUP", FORMAT_VERSION)
    header = json.loads(data[PREFIX.size : PREFIX.size + length])
    pos, frames = PREFIX.size + length, []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return header, frames


def build(header: dict[str, object], frames: list[bytes]) -> bytes:
    body = json.dumps(header).encode()
    return (
        PREFIX.pack(b"FSUP", FORMAT_VERSION, len(body))
        + body
        + b"".join(struct.pack(">I", len(f)) + f for f in frames)
    )


def parse(data: bytes, ctx: PublicContext | None, **expect: object) -> tuple[UpdateHeader, int]:
    parser = UpdateParser(ctx, **expect)  # type: ignore[arg-type]
    frames = parser.feed(data)
    return parser.finish(), len(frames)


def test_header_carries_the_fields(lean: SecretContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    assert header == {
        "kind": "update",
        "preset": "lean",
        "context_digest": lean.digest,
        "mask_digest": "mask-a",
        "weight": 0.5,
        "n_values": N_STREAM,
        "values_per_ciphertext": 4096,
        "n_ciphertexts": 3,
        "contributors": ["site-a"],
        "federation_id": "",
        "round": 0,
        "attempt": 0,
        "participants_digest": "",
        "channel": "values",
        "payload": "packed",
        "seeds": 1,
    }
    # 40-bit residues + seed; the last, partly filled ciphertext as its 1808 coefficients
    assert [len(f) for f in frames] == [4096 * 5 + 65] * 2 + [1808 * 5 + 65]


def test_parser_returns_the_frames_and_header(lean_pub: PublicContext, lean_stream: bytes) -> None:
    parser = UpdateParser(lean_pub, expect_mask_digest="mask-a", expect_values=N_STREAM)
    assert parser.header is None
    frames = parser.feed(lean_stream)
    assert frames == split(lean_stream)[1]
    header = parser.finish()
    assert header is parser.header
    assert (header.kind, header.n_values, header.contributors) == ("update", N_STREAM, ("site-a",))


def test_feeding_one_byte_at_a_time(lean_pub: PublicContext, lean_stream: bytes) -> None:
    parser = UpdateParser(lean_pub)
    frames: list[bytes] = []
    header_seen_at = None
    for i in range(len(lean_stream)):
        frames += parser.feed(lean_stream[i : i + 1])
        if header_seen_at is None and parser.header is not None:
            header_seen_at = i
    assert frames == split(lean_stream)[1]
    assert parser.finish().n_ciphertexts == 3
    _, length = PREFIX.unpack_from(lean_stream)[1:]
    assert header_seen_at == PREFIX.size + length - 1  # known as soon as its last byte arrives


def test_the_parser_buffers_at_most_one_frame(lean_pub: PublicContext, lean_stream: bytes) -> None:
    parser = UpdateParser(lean_pub)
    biggest = 0
    for i in range(0, len(lean_stream), 1000):
        parser.feed(lean_stream[i : i + 1000])
        biggest = max(biggest, len(parser._buf))
    parser.finish()
    assert biggest < max(len(f) for f in split(lean_stream)[1]) + 1000


def test_read_update_from_a_file_and_from_chunks(
    lean_pub: PublicContext, lean_stream: bytes
) -> None:
    expected = split(lean_stream)[1]
    header, frames = read_update(io.BytesIO(lean_stream), lean_pub)
    assert header.n_values == N_STREAM
    assert list(frames) == expected
    pieces = [lean_stream[i : i + 777] for i in range(0, len(lean_stream), 777)]
    header, frames = read_update(iter(pieces), lean_pub, expect_mask_digest="mask-a")
    assert list(frames) == expected


def test_read_update_raises_at_the_end(lean_pub: PublicContext, lean_stream: bytes) -> None:
    _, frames = read_update([lean_stream[:-10]], lean_pub)
    with pytest.raises(TruncatedStreamError):
        list(frames)
    with pytest.raises(TruncatedStreamError):
        read_update([b"FSUP"], lean_pub)


# --- every malformed stream raises its typed error --------------------------------------------


def test_garbage_is_malformed_at_the_first_byte(lean_pub: PublicContext) -> None:
    parser = UpdateParser(lean_pub)
    with pytest.raises(MalformedStreamError, match="magic"):
        parser.feed(b"G")
    with pytest.raises(MalformedStreamError):  # a failed parser stays failed
        parser.feed(b"FSUP")


@pytest.mark.parametrize("garbage", [b"hello world", b"\x00" * 100, b"PK\x03\x04" + bytes(50)])
def test_garbage(lean_pub: PublicContext, garbage: bytes) -> None:
    with pytest.raises(MalformedStreamError):
        parse(garbage, lean_pub)


def test_unknown_version(lean_pub: PublicContext, lean_stream: bytes) -> None:
    with pytest.raises(MalformedStreamError, match="version"):
        parse(lean_stream[:4] + b"\x09" + lean_stream[5:], lean_pub)


@pytest.mark.parametrize("cut", [0, 3, 8, 40])
def test_truncated_header(lean_pub: PublicContext, lean_stream: bytes, cut: int) -> None:
    parser = UpdateParser(lean_pub)
    assert parser.feed(lean_stream[:cut]) == []
    with pytest.raises(TruncatedStreamError):
        parser.finish()


@pytest.mark.parametrize("missing", [1, 100, 5000])
def test_truncated_frame(lean_pub: PublicContext, lean_stream: bytes, missing: int) -> None:
    with pytest.raises(TruncatedStreamError):
        parse(lean_stream[:-missing], lean_pub)


def test_missing_frames(lean_pub: PublicContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    with pytest.raises(TruncatedStreamError, match="2 of 3"):
        parse(build(header, frames[:2]), lean_pub)


def test_trailing_bytes(lean_pub: PublicContext, lean_stream: bytes) -> None:
    with pytest.raises(TrailingBytesError):
        parse(lean_stream + b"\x00", lean_pub)
    header, frames = split(lean_stream)
    with pytest.raises(TrailingBytesError):  # one frame more than announced
        parse(build(header, [*frames, frames[0]]), lean_pub)


def test_wrong_context_digest(
    lean_pub: PublicContext, lean_other: SecretContext, lean_stream: bytes
) -> None:
    foreign = stream(lean_other, values(N_STREAM))
    with pytest.raises(ContextMismatchError):
        parse(foreign, lean_pub)
    with pytest.raises(ContextMismatchError):
        parse(lean_stream, None, expect_context_digest=lean_other.digest)


def test_ciphertext_made_under_other_parameters(
    lean_pub: PublicContext, small: SecretContext, lean_stream: bytes
) -> None:
    header, frames = split(lean_stream)
    _, alien = split(stream(small, values(N_STREAM)))
    with pytest.raises(ParameterMismatchError, match="frame 1"):
        parse(build(header, [frames[0], alien[0], frames[2]]), lean_pub)


def test_stream_of_another_preset(
    lean_pub: PublicContext, peer: SecretContext, small: SecretContext
) -> None:
    with pytest.raises(ParameterMismatchError, match="peer-default"):
        parse(stream(peer, values(100)), lean_pub)
    with pytest.raises(ParameterMismatchError):
        parse(stream(small, values(100)), lean_pub)


def test_wrong_values_per_ciphertext(lean_pub: PublicContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    header.update(values_per_ciphertext=8192, n_ciphertexts=2)
    with pytest.raises(ParameterMismatchError, match="8192"):
        parse(build(header, frames[:2]), lean_pub)
    with pytest.raises(ParameterMismatchError):  # known preset, even without a context
        parse(build(header, frames[:2]), None)


def test_wrong_count(lean_pub: PublicContext, lean_stream: bytes) -> None:
    with pytest.raises(CountMismatchError, match="expects 10001"):
        parse(lean_stream, lean_pub, expect_values=N_STREAM + 1)
    header, frames = split(lean_stream)
    header["n_ciphertexts"] = 2
    with pytest.raises(CountMismatchError, match="announces 2"):
        parse(build(header, frames[:2]), lean_pub)


def test_wrong_mask(lean_pub: PublicContext, lean_stream: bytes) -> None:
    with pytest.raises(MaskMismatchError):
        parse(lean_stream, lean_pub, expect_mask_digest="mask-b")


def test_wrong_kind(lean_pub: PublicContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    header["kind"] = "aggregate"
    with pytest.raises(MalformedStreamError, match="expected an update"):
        parse(build(header, frames), lean_pub)
    assert parse(build(header, frames), lean_pub, expect_kind=None)[0].kind == "aggregate"


@pytest.mark.parametrize("length", [0, 2**31])
def test_frame_length_out_of_bounds(
    lean_pub: PublicContext, lean_stream: bytes, length: int
) -> None:
    header, _ = split(lean_stream)
    data = build(header, []) + struct.pack(">I", length)
    parser = UpdateParser(lean_pub)
    with pytest.raises(MalformedStreamError, match="announces"):
        parser.feed(data)  # refused from the length alone, before any payload is buffered


def test_explicit_frame_bound(lean_pub: PublicContext, lean_stream: bytes) -> None:
    with pytest.raises(MalformedStreamError):
        parse(lean_stream, lean_pub, max_frame_bytes=1000)


def test_frame_that_is_not_a_ciphertext(lean_pub: PublicContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    for ctx in (lean_pub, None):
        with pytest.raises(ParameterMismatchError, match="expected 20545"):
            parse(build(header, [b"x" * 500, *frames[1:]]), ctx)
    # the right length, but residues of all ones are not below the 40-bit prime
    with pytest.raises(MalformedStreamError, match="not below the prime"):
        parse(build(header, [b"\xff" * len(frames[0]), *frames[1:]]), lean_pub)


def test_corrupted_ciphertext_body(lean_pub: PublicContext, lean_stream: bytes) -> None:
    header, frames = split(lean_stream)
    broken = frames[0][:16] + bytes(len(frames[0]) - 16)
    with pytest.raises((MalformedStreamError, ParameterMismatchError)):
        parse(build(header, [broken, *frames[1:]]), lean_pub)


HEADER_BREAKERS = {
    "not json": None,
    "missing key": {"kind": "update"},
    "extra key": {"secret": 1},
    "weight above 1": {"weight": 1.5},
    "weight zero": {"weight": 0},
    "weight nan": {"weight": float("nan")},
    "weight string": {"weight": "0.5"},
    "negative count": {"n_values": -1},
    "float count": {"n_values": 10.0},
    "bool count": {"n_ciphertexts": True},
    "bad digest": {"context_digest": "abc"},
    "unknown kind": {"kind": "sum"},
    "two contributors on an update": {"contributors": ["a", "b"]},
    "empty contributor": {"contributors": [""]},
}


@pytest.mark.parametrize("case", list(HEADER_BREAKERS))
def test_bad_header_fields(lean_pub: PublicContext, lean_stream: bytes, case: str) -> None:
    header, frames = split(lean_stream)
    change = HEADER_BREAKERS[case]
    if change is None:
        body = b"{not json"
        data = PREFIX.pack(b"FSUP", FORMAT_VERSION, len(body)) + body
    elif case == "missing key":
        del header["weight"]
        data = build(header, frames)
    else:
        header.update(change)
        data = build(header, frames)
    with pytest.raises(MalformedStreamError):
        parse(data, lean_pub)


def test_oversized_header(lean_pub: PublicContext) -> None:
    with pytest.raises(MalformedStreamError, match="exceeds"):
        UpdateParser(lean_pub).feed(PREFIX.pack(b"FSUP", FORMAT_VERSION, 10**9))


def test_parser_without_a_context_checks_structure(lean_stream: bytes) -> None:
    header, n = parse(lean_stream, None, expect_mask_digest="mask-a")
    assert n == 3 and header.preset == "lean"


def test_plaintext_frames_must_have_the_right_length(plain: SecretContext) -> None:
    data = stream(plain, values(20_000))
    header, frames = split(data)
    assert [len(f) for f in frames] == [4 * 16384, 4 * (20_000 - 16384)]
    for ctx in (plain.public(), None):
        with pytest.raises(ParameterMismatchError):
            parse(build(header, [frames[0], frames[1][:-4]]), ctx)


def test_plaintext_frames_must_be_finite(plain: SecretContext) -> None:
    header, frames = split(stream(plain, values(10)))
    bad = struct.pack("<f", float("nan")) + frames[0][4:]
    with pytest.raises(MalformedStreamError, match="NaN"):
        parse(build(header, [bad]), plain.public())


def test_every_wire_error_is_a_wire_format_error() -> None:
    for cls in (
        MalformedStreamError,
        TruncatedStreamError,
        TrailingBytesError,
        ContextMismatchError,
        ParameterMismatchError,
        CountMismatchError,
        MaskMismatchError,
    ):
        assert issubclass(cls, WireFormatError)

"""Wire format 3: bit-packed frames against SEAL's own serialisation, every refusal, seeded
aggregates, and the streams earlier formats wrote."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    add_updates,
    decrypt_sum,
    encrypt_update,
    participants_digest,
    read_update,
)
from fedsparsify.crypto._seal import load_ciphertext, save_to_bytes, sealapi
from fedsparsify.crypto.aggregate import RunningSum
from fedsparsify.crypto.frames import RingFrame, pack_bits, unpack_bits
from fedsparsify.errors import (
    MalformedStreamError,
    ParameterMismatchError,
    TrailingBytesError,
    TruncatedStreamError,
    WireFormatError,
)
from tests.crypto._helpers import LEAN_BUDGET_PER_SQRT_CLIENT, stream, values

PREFIX = struct.Struct(">4sBI")
FIXTURES = Path(__file__).parents[1] / "fixtures"
V2 = FIXTURES / "wire-v2"


def split(data: bytes) -> tuple[int, dict[str, object], list[bytes]]:
    """Independent decoder: version, JSON header, frame payloads."""
    _magic, version, length = PREFIX.unpack_from(data)
    header = json.loads(data[PREFIX.size : PREFIX.size + length])
    pos, frames = PREFIX.size + length, []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return version, header, frames


def build(version: int, header: dict[str, object], frames: list[bytes]) -> bytes:
    body = json.dumps(header).encode()
    return (
        PREFIX.pack(b"FSUP", version, len(body))
        + body
        + b"".join(struct.pack(">I", len(f)) + f for f in frames)
    )


def independent_unpack(data: bytes, width: int, count: int) -> list[int]:
    """Bit-by-bit reference decoder: value j is bits [j*width, (j+1)*width), LSB first."""
    big = int.from_bytes(data, "little")
    return [(big >> (j * width)) & ((1 << width) - 1) for j in range(count)]


def decrypt_seal(ctx: SecretContext, data: bytes, n: int) -> np.ndarray:
    """Decrypt SEAL bytes with SEAL alone (no frame codec)."""
    ct = load_ciphertext(ctx.public()._seal, data)
    pt = sealapi.Plaintext()
    ctx._decryptor.decrypt(ct, pt)
    return np.asarray(ctx._encoder.decode_complex(pt), dtype=np.complex128).view(np.float64)[:n]


# --- bit packing ---------------------------------------------------------------------------


@pytest.mark.parametrize("width", [13, 20, 40, 60])
def test_bit_packing_matches_an_independent_decoder(width: int) -> None:
    rng = np.random.default_rng(width)
    x = rng.integers(0, 2**width, 64, dtype=np.uint64)
    packed = pack_bits(x, width)
    assert len(packed) == 64 * width // 8
    assert independent_unpack(packed, width, 64) == [int(v) for v in x]
    assert np.array_equal(unpack_bits(packed, width, 64), x)


# --- the packed frame against SEAL's own serialisation ------------------------------------


@pytest.mark.parametrize("which", ["lean", "lean_public_key", "peer"])
def test_packed_frames_decrypt_like_seal_serialisation(
    request: pytest.FixtureRequest, which: str
) -> None:
    """The residues SEAL saves, packed and rebuilt, are bit for bit the same ciphertext: SEAL
    decrypts the rebuilt bytes exactly as it decrypts its own (seeded, public-key, two-prime
    chain with a 60-bit prime)."""
    ctx: SecretContext = request.getfixturevalue(which)
    pub = ctx.public()
    ring = pub.ring
    assert ring is not None
    x = values(ctx.preset.values_per_ciphertext, seed=3)
    pt = sealapi.Plaintext()
    if ctx.preset.complex_packing:
        ctx._encoder.encode(x.astype(np.float64).view(np.complex128).tolist(), ctx.preset.scale, pt)
    else:
        ctx._encoder.encode(x.astype(np.float64).tolist(), ctx.preset.scale, pt)
    if ctx.preset.seeded:
        ct = ctx._encryptor.encrypt_symmetric(pt)
    else:
        ct = sealapi.Ciphertext()
        ctx._encryptor.encrypt(pt, ct)
    saved = save_to_bytes(ct)
    frame = ring.from_seal(saved)
    seeds = len(frame.seeds)
    assert seeds == int(ctx.preset.seeded)
    packed = ring.pack(frame)
    assert len(packed) == ring.payload_bytes(seeds)
    back = ring.unpack(packed, seeds)
    assert np.array_equal(back.c0, frame.c0) and back.seeds == frame.seeds
    rebuilt = (
        ring.to_seal(back.c0, c1=back.c1)
        if seeds == 0
        else ring.to_seal(back.c0, seed=back.seeds[0])
    )
    n = x.size
    if ctx.preset.complex_packing:
        assert np.array_equal(decrypt_seal(ctx, rebuilt, n), decrypt_seal(ctx, saved, n))
    via_codec = ctx._decrypt_frame(back, n)
    assert np.abs(via_codec - x).max() < 2e-5  # public-key encryption: more noise
    # 40 bits per coefficient for lean (5 bytes), plus 65 for the seed record
    if which == "lean":
        assert len(packed) == 4096 * 5 + 65 and len(packed) < len(saved)


def test_an_upload_costs_five_bytes_per_value_plus_the_seed(lean: SecretContext) -> None:
    x = values(4096 * 36)
    data = stream(lean, x, contributor="site-a")
    _version, _header, frames = split(data)
    assert sum(len(f) + 4 for f in frames) / x.size == pytest.approx((5 * 4096 + 69) / 4096)
    assert len(data) / x.size < 5.05


# --- refusals ------------------------------------------------------------------------------


def parse(data: bytes, ctx: object, **kw: object) -> None:
    from fedsparsify.crypto import UpdateParser

    parser = UpdateParser(ctx, **kw)  # type: ignore[arg-type]
    parser.feed(data)
    parser.finish()


def test_a_residue_at_or_above_its_prime_is_refused(lean: SecretContext) -> None:
    """Checked on the packed values themselves (SEAL would refuse it too, later), in a whole
    frame and in a tail frame."""
    ring = lean.public().ring
    assert ring is not None
    version, header, frames = split(stream(lean, values(5000)))
    q = ring.moduli[0]
    for bad in (q, 2**40 - 1):
        for index, tail in ((0, 0), (1, 904)):
            frame = ring.unpack(frames[index], 1, tail)
            c0 = frame.c0.copy()
            c0[0, 17] = bad
            changed = list(frames)
            changed[index] = pack_bits(c0[0], 40) + frame.seeds[0]
            with pytest.raises(MalformedStreamError, match=f"frame {index}: c0 residue 17 of"):
                parse(build(version, header, changed), lean.public())


def test_a_frame_packed_at_another_width_is_refused(lean: SecretContext) -> None:
    ring = lean.public().ring
    assert ring is not None
    version, header, frames = split(stream(lean, values(4096)))
    frame = ring.unpack(frames[0], 1)
    for width in (39, 41, 64):
        raw = pack_bits(frame.c0[0], width) + frame.seeds[0]
        with pytest.raises((ParameterMismatchError, MalformedStreamError), match="bytes"):
            parse(build(version, header, [raw]), lean.public())
        with pytest.raises((ParameterMismatchError, MalformedStreamError)):  # without a context
            parse(build(version, header, [raw]), None)


def test_truncated_and_trailing_packed_streams(lean: SecretContext) -> None:
    data = stream(lean, values(5000))
    version, header, frames = split(data)
    for cut in (1, 65, 20545 + 4):
        with pytest.raises(TruncatedStreamError):
            parse(data[:-cut], lean.public())
    with pytest.raises(TrailingBytesError):
        parse(data + b"\x00", lean.public())
    with pytest.raises(MalformedStreamError, match="announces"):  # one byte too many in a frame
        parse(build(version, header, [frames[0] + b"\x00", frames[1]]), lean.public())
    with pytest.raises(ParameterMismatchError, match="expected 20545"):  # one byte short
        parse(build(version, header, [frames[0][:-1], frames[1]]), lean.public())


def test_frames_of_other_parameters_are_refused(
    lean: SecretContext, small: SecretContext, peer: SecretContext
) -> None:
    version, header, frames = split(stream(lean, values(5000)))
    _, _, alien = split(stream(small, values(5000)))  # N=2048: half the bytes
    with pytest.raises(ParameterMismatchError, match="frame 1"):
        parse(build(version, header, [frames[0], alien[0]]), lean.public())
    with pytest.raises(ParameterMismatchError, match="peer-default"):
        parse(stream(peer, values(100)), lean.public())


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"payload": "float32", "seeds": 0}, ParameterMismatchError, "float32"),
        ({"payload": "float32"}, MalformedStreamError, "no seed records"),
        ({"payload": "seal"}, MalformedStreamError, "payload"),
        ({"seeds": 2}, MalformedStreamError, "at most one seed"),
        ({"seeds": -1}, MalformedStreamError, "seeds"),
        ({"seeds": True}, MalformedStreamError, "seeds"),
        ({"seeds": 0}, ParameterMismatchError, "expected 20980"),
    ],
)
def test_header_payload_fields_are_checked(
    lean: SecretContext, change: dict[str, object], error: type[WireFormatError], match: str
) -> None:
    version, header, frames = split(stream(lean, values(100)))
    header.update(change)
    with pytest.raises(error, match=match):
        parse(build(version, header, frames), lean.public())


def test_unknown_prng_type_and_transparent_frames_are_refused(lean: SecretContext) -> None:
    ring = lean.public().ring
    assert ring is not None
    version, header, frames = split(stream(lean, values(100)))
    bad_type = frames[0][:-65] + b"\x00" + frames[0][-64:]
    with pytest.raises(MalformedStreamError, match="PRNG type 0"):
        parse(build(version, header, [bad_type]), lean.public())
    frame = ring.unpack(frames[0], 1, 100)
    transparent = ring.pack(RingFrame(frame.c0, np.zeros(ring.shape, np.uint64), (), 100))
    header.update(seeds=0)
    with pytest.raises(MalformedStreamError, match="transparent"):
        parse(build(version, header, [transparent]), lean.public())


def test_seal_rechecks_update_frames_when_asked(
    lean: SecretContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedsparsify.crypto import context

    data = stream(lean, values(5000))
    calls: list[int] = []
    real = context.load_ciphertext
    monkeypatch.setattr(context, "load_ciphertext", lambda *a: calls.append(1) or real(*a))
    parse(data, lean.public())
    assert calls == []  # the frame codec's own checks
    parse(data, lean.public(), seal_check=True)
    assert len(calls) == 1  # the whole frame (a tail frame has no SEAL form of its own)


def test_the_codec_accepts_nothing_seal_refuses(lean: SecretContext) -> None:
    """Mutated packed frames: whatever the codec accepts, SEAL loads too (so leaving SEAL's
    load out of the upload path loses no check); many are refused by the codec itself."""
    import random

    pub = lean.public()
    ring = pub.ring
    assert ring is not None
    frames = split(stream(lean, values(4096 * 2)))[2]
    rnd = random.Random(5)
    refused = 0
    for _ in range(200):
        data = bytearray(frames[rnd.randrange(2)])
        kind = rnd.choice(["residue at the top", "byte", "prng type"])
        if kind == "residue at the top":  # a 40-bit residue of all ones: 2^40 - 1 >= q
            j = rnd.randrange(4096)
            data[5 * j : 5 * j + 5] = b"\xff" * 5
        elif kind == "byte":
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        else:
            data[-65] = rnd.randrange(256)
        try:
            frame = ring.unpack(bytes(data), 1)
        except WireFormatError:
            refused += 1
            continue
        pub._load_ciphertext(pub._first_ciphertext(frame))  # raises if SEAL disagrees
    assert refused > 20


# --- seeded aggregates --------------------------------------------------------------------

IDS = ("site-a", "site-b", "site-c", "site-d")


def uploads(ctx: SecretContext, xs: dict[str, np.ndarray], masked: bool) -> list[bytes]:
    ids = {who: SiteIdentity.generate() for who in xs}
    keys = {who: ident.public().mask_key for who, ident in ids.items()}
    binding = RoundBinding("fed", 1, 0, participants_digest(keys))
    out = []
    for who, x in xs.items():
        masker = (
            PairwiseMasker(
                own_id=who,
                own_mask_private=ids[who].mask_private,
                mask_keys=keys,
                binding=binding,
                channel="values",
            )
            if masked
            else None
        )
        chunks = encrypt_update(
            ctx,
            x,
            weight=1 / len(xs),
            mask_digest="m",
            contributor=who,
            binding=binding,
            masker=masker,
        )
        out.append(b"".join(chunks))
    return out


def full_form(ctx: SecretContext, aggregate: bytes) -> bytes:
    """The same sum in full form: every seed expanded into c1 (what the aggregator writes past
    the break-even)."""
    pub = ctx.public()
    header, frames = read_update(io.BytesIO(aggregate), pub, expect_kind=None)
    parts = [dataclasses.replace(header, seeds=0).to_bytes()]
    for index, payload in enumerate(frames):
        frame = pub._load_frame(payload, header.frame_values(index), header.form())
        packed = pub._dump_frame(frame, 0)
        parts.append(struct.pack(">I", len(packed)) + packed)
    return b"".join(parts)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_seeded_and_full_aggregates_decrypt_to_the_same_average(
    lean: SecretContext, masked: bool
) -> None:
    xs = {who: values(9000, seed=k) for k, who in enumerate(IDS)}
    out = io.BytesIO()
    header = add_updates(lean.public(), [io.BytesIO(u) for u in uploads(lean, xs, masked)], out)
    assert header.seeds == len(IDS)
    seeded = out.getvalue()
    full = full_form(lean, seeded)
    assert len(full) > 1.9 * len(seeded)
    want = sum(x.astype(np.float64) for x in xs.values()) / len(IDS)
    h1, a = decrypt_sum(lean, io.BytesIO(seeded))
    h2, b = decrypt_sum(lean, io.BytesIO(full))
    assert (h1.seeds, h2.seeds) == (len(IDS), 0)
    assert np.abs(a - b).max() < 1e-9  # the same ciphertext, two encodings
    assert np.abs(a / h1.weight - want).max() < LEAN_BUDGET_PER_SQRT_CLIENT * 2


def test_past_the_break_even_the_sum_is_written_in_full(lean: SecretContext) -> None:
    """65 bytes per record against 20,480 for a packed c1: seeded up to 315 sources."""
    ring = lean.public().ring
    assert ring is not None
    limit = ring.poly_bytes // 65
    assert limit == 315
    x = values(10)
    for k, form in ((limit, limit), (limit + 1, 0)):
        up = stream(lean, x, weight=1 / k)
        out = io.BytesIO()
        header = add_updates(lean.public(), [io.BytesIO(up) for _ in range(k)], out)
        assert header.seeds == form
        total = decrypt_sum(lean, io.BytesIO(out.getvalue()))[1]
        assert np.abs(total - x).max() < 1e-4  # one ciphertext k times: its noise adds up


def test_a_running_sum_equals_the_batch_sum(lean: SecretContext) -> None:
    """The upload path adds each arriving frame to the sum so far (RunningSum)."""
    pub = lean.public()
    xs = [values(9000, seed=k) for k in range(3)]
    ups = [stream(lean, x, weight=1 / 3, contributor=f"c{k}") for k, x in enumerate(xs)]
    base = io.BytesIO()
    add_updates(pub, [io.BytesIO(u) for u in ups[:2]], base)
    base.seek(0)
    running = io.BytesIO()
    acc = RunningSum(pub, base, running)
    header, frames = read_update(io.BytesIO(ups[2]), pub)
    acc.start(header)
    for index, payload in enumerate(frames):
        acc.add(pub._load_frame(payload, header.frame_values(index), header.form()))
    assert acc.finish().contributors == ("c0", "c1", "c2")
    batch = io.BytesIO()
    add_updates(pub, [io.BytesIO(u) for u in ups], batch)
    _, a = decrypt_sum(lean, io.BytesIO(running.getvalue()))
    _, b = decrypt_sum(lean, io.BytesIO(batch.getvalue()))
    assert np.abs(a - b).max() < 1e-9
    assert running.getvalue() == batch.getvalue()


# --- earlier formats ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def v2_context() -> SecretContext:
    return SecretContext.from_secret_bytes((V2 / "secret-context.bin").read_bytes())


def test_version_2_streams_still_read_sum_and_decrypt(v2_context: SecretContext) -> None:
    xs = np.load(V2 / "values.npz")
    want = (xs["site_a"].astype(np.float64) + xs["site_b"]) / 2
    for name in ("aggregate-v2.bin", "update-site-a-v2.bin"):
        header, frames = read_update(
            io.BytesIO((V2 / name).read_bytes()), v2_context.public(), expect_kind=None
        )
        assert (header.version, header.payload, header.round) == (2, "seal", 3)
        assert len(list(frames)) == 2
    h, total = decrypt_sum(v2_context, io.BytesIO((V2 / "aggregate-v2.bin").read_bytes()))
    assert np.abs(total / h.weight - want).max() < 1e-6
    for kind in ("update", "masked"):
        sources = [
            io.BytesIO((V2 / f"{kind}-{w}-v2.bin").read_bytes()) for w in ("site-a", "site-b")
        ]
        out = io.BytesIO()
        header = add_updates(v2_context.public(), sources, out)
        # a partly filled last ciphertext: the sum stays in format 2 (format 3 encodes it as
        # a tail frame)
        assert (header.version, header.payload, header.seeds) == (2, "seal", 0)
        h, total = decrypt_sum(v2_context, io.BytesIO(out.getvalue()))
        assert np.abs(total / h.weight - want).max() < 1e-6


def test_version_2_and_3_uploads_with_a_partly_filled_ciphertext_do_not_mix(
    v2_context: SecretContext,
) -> None:
    """5,000 values: format 2 slot-encodes the last ciphertext, format 3 sends a tail frame;
    they cannot be added, and the refusal says why."""
    old = (V2 / "update-site-a-v2.bin").read_bytes()
    binding = read_update(io.BytesIO(old))[0].binding
    v3 = b"".join(
        encrypt_update(
            v2_context,
            values(5000, seed=9),
            weight=0.5,
            mask_digest="mask-v2",
            contributor="site-c",
            binding=binding,
        )
    )
    with pytest.raises(ParameterMismatchError, match="upgrade the site"):
        add_updates(v2_context.public(), [io.BytesIO(old), io.BytesIO(v3)], io.BytesIO())


def test_tail_frames_cost_what_they_hold(lean: SecretContext) -> None:
    """A partly filled last ciphertext travels as its t coefficients (5 bytes each) plus the
    seed, and sums and decrypts like the others (coefficient encoding: even more precise)."""
    for t in (1, 745, 4095):
        xs = [values(4096 + t, seed=k) for k in range(3)]
        ups = [stream(lean, x, weight=1 / 3, contributor=f"c{k}") for k, x in enumerate(xs)]
        frames = split(ups[0])[2]
        assert [len(f) for f in frames] == [4096 * 5 + 65, t * 5 + 65]
        out = io.BytesIO()
        add_updates(lean.public(), [io.BytesIO(u) for u in ups], out)
        assert [len(f) for f in split(out.getvalue())[2]] == [4096 * 5 + 195, t * 5 + 195]
        want = sum(x.astype(np.float64) for x in xs) / 3
        total = decrypt_sum(lean, io.BytesIO(out.getvalue()))[1]
        assert np.abs(total - want).max() < 2 * LEAN_BUDGET_PER_SQRT_CLIENT
        assert np.abs(total[4096:] - want[4096:]).max() < 1e-8


def test_release_0_1_fixtures_still_parse(lean: SecretContext) -> None:
    for path in sorted((FIXTURES / "release-0.1" / "wire").glob("*.bin")):
        header, frames = read_update(io.BytesIO(path.read_bytes()), expect_kind=None)
        assert header.version == 1 and header.payload == "seal" and len(list(frames)) == 1


def test_plaintext_streams_are_float32_frames(plain: SecretContext) -> None:
    data = stream(plain, values(100))
    version, header, frames = split(data)
    assert (version, header["payload"], header["seeds"]) == (3, "float32", 0)
    assert len(frames[0]) == 400
    header.update(payload="packed")
    with pytest.raises(ParameterMismatchError, match="float32"):
        parse(build(version, header, frames), plain.public())
    assert decrypt_sum(plain, [data])[0].payload == "float32"

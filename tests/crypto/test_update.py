"""Encrypt, add without a secret key, decrypt: against numpy's weighted sum, within budgets."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

import fedsparsify.crypto as crypto_package
from fedsparsify.crypto import (
    PublicContext,
    SecretContext,
    UpdateParser,
    add_updates,
    decrypt_sum,
    encrypt_update,
    read_update,
)
from fedsparsify.errors import (
    ConfigError,
    ContextMismatchError,
    CountMismatchError,
    MaskMismatchError,
    TrailingBytesError,
    TruncatedStreamError,
    ValueRangeError,
)
from tests.crypto._helpers import LEAN_BUDGET_PER_SQRT_CLIENT, stream, values

#: Max |error| of one update, per preset (weight applied): CKKS noise, or float32 rounding.
SINGLE_BUDGET = {
    "lean": LEAN_BUDGET_PER_SQRT_CLIENT,
    "small": LEAN_BUDGET_PER_SQRT_CLIENT,
    "lean_public_key": 3e-6,
    "peer": 1e-7,
    "plain": 2e-8,
}


def weights(k: int, seed: int = 0) -> np.ndarray:
    """Sample-count weights of k clients, summing to 1."""
    counts = np.random.default_rng(seed).integers(50, 500, k)
    return np.asarray(counts / counts.sum(), dtype=np.float64)


def aggregate(ctx: SecretContext, xs: list[np.ndarray], ws: np.ndarray) -> io.BytesIO:
    """Encrypt each client's update and sum them with only the public context."""
    public = PublicContext.from_bytes(ctx.public_bytes())
    sources = [
        io.BytesIO(stream(ctx, x, weight=float(w), contributor=f"site-{i}"))
        for i, (x, w) in enumerate(zip(xs, ws, strict=True))
    ]
    out = io.BytesIO()
    add_updates(public, sources, out)
    out.seek(0)
    return out


@pytest.mark.parametrize("name", list(SINGLE_BUDGET))
@pytest.mark.parametrize("n", [1, 3, 4097, 9000])
def test_round_trip_of_one_update(request: pytest.FixtureRequest, name: str, n: int) -> None:
    ctx: SecretContext = request.getfixturevalue(name)
    x = values(n, seed=n)
    header, total = decrypt_sum(ctx, [stream(ctx, x, weight=0.3)])
    assert header.kind == "update" and header.weight == 0.3 and total.shape == (n,)
    assert total.dtype == np.float64
    assert np.abs(total - 0.3 * x.astype(np.float64)).max() <= SINGLE_BUDGET[name]


@pytest.mark.parametrize("name", ["lean", "peer", "plain"])
def test_sum_of_ten_clients_equals_the_numpy_weighted_sum(
    request: pytest.FixtureRequest, name: str
) -> None:
    ctx: SecretContext = request.getfixturevalue(name)
    k, n = 10, 20_000
    xs = [values(n, seed=i) for i in range(k)]
    ws = weights(k)
    header, total = decrypt_sum(ctx, aggregate(ctx, xs, ws))
    expected = np.average(np.stack(xs).astype(np.float64), axis=0, weights=ws)
    assert header.kind == "aggregate"
    assert header.weight == pytest.approx(1.0, abs=1e-12)
    assert header.contributors == tuple(f"site-{i}" for i in range(k))
    budget = SINGLE_BUDGET[name] * math.sqrt(k)
    assert np.abs(total / header.weight - expected).max() <= budget


def test_the_lean_budget_is_documented_and_measured(lean: SecretContext) -> None:
    # 10 clients of N(0, 0.05): documented as <= 1e-6 (budget 3e-7 * sqrt(10) = 9.5e-7)
    assert LEAN_BUDGET_PER_SQRT_CLIENT * math.sqrt(10) <= 1e-6
    assert "1e-6" in (crypto_package.__doc__ or "")


@pytest.mark.parametrize("pattern", ["plus", "minus", "signs", "pairs"])
def test_the_whole_value_range_sums_correctly(lean: SecretContext, pattern: str) -> None:
    limit = lean.preset.max_abs_value
    n, k = 8192, 10
    rng = np.random.default_rng(1)
    if pattern == "plus":
        xs = [np.full(n, limit, np.float32) for _ in range(k)]
    elif pattern == "minus":
        xs = [np.full(n, -limit, np.float32) for _ in range(k)]
    elif pattern == "signs":
        xs = [(rng.choice([-1.0, 1.0], n) * limit).astype(np.float32) for _ in range(k)]
    else:  # the same sign in both halves of each complex slot, flipping slot by slot
        xs = [np.repeat(rng.choice([-1.0, 1.0], n // 2), 2).astype(np.float32) * limit] * k
    ws = weights(k, seed=2)
    _, total = decrypt_sum(lean, aggregate(lean, xs, ws))
    expected = np.average(np.stack(xs).astype(np.float64), axis=0, weights=ws)
    assert np.abs(total - expected).max() <= LEAN_BUDGET_PER_SQRT_CLIENT * math.sqrt(k)


def test_running_sum_equals_one_pass_sum(lean: SecretContext) -> None:
    xs = [values(5000, seed=i) for i in range(3)]
    ws = weights(3)
    ups = [
        stream(lean, x, weight=float(w), contributor=f"c{i}")
        for i, (x, w) in enumerate(zip(xs, ws, strict=True))
    ]
    public = lean.public()
    running = io.BytesIO()
    add_updates(public, [io.BytesIO(ups[0])], running)
    for up in ups[1:]:
        nxt = io.BytesIO()
        add_updates(public, [io.BytesIO(running.getvalue()), io.BytesIO(up)], nxt)
        running = nxt
    one_pass = io.BytesIO()
    add_updates(public, [io.BytesIO(u) for u in ups], one_pass)
    h1, t1 = decrypt_sum(lean, [running.getvalue()])
    h2, t2 = decrypt_sum(lean, [one_pass.getvalue()])
    assert h1 == h2
    assert np.abs(t1 - t2).max() < 1e-6
    assert h1.contributors == ("c0", "c1", "c2")


def test_an_aggregate_is_served_seeded(lean: SecretContext) -> None:
    """A sum of K seeded uploads is c0 plus K seed records per frame: 65 bytes more per
    frame and contributor than one upload, not a second polynomial."""
    ups = [stream(lean, values(4096 * 2, seed=k), weight=0.25) for k in range(4)]
    out = io.BytesIO()
    header = add_updates(lean.public(), [io.BytesIO(u) for u in ups], out)
    assert (header.payload, header.seeds) == ("packed", 4)
    frames = read_update(io.BytesIO(out.getvalue()), expect_kind=None)[1]
    assert [len(f) for f in frames] == [4096 * 5 + 4 * 65] * 2


def test_seeded_uploads_are_half_the_public_key_size(
    lean: SecretContext, lean_public_key: SecretContext
) -> None:
    x = values(4096 * 4)
    seeded, unseeded = len(stream(lean, x)), len(stream(lean_public_key, x))
    assert seeded / x.size <= 6.5
    assert 1.8 < unseeded / seeded < 2.2


def test_public_key_streams_add_without_the_key_and_decrypt_to_the_weighted_sum(
    lean: SecretContext, lean_public_key: SecretContext
) -> None:
    """Public-key (unseeded) ciphertexts load, add under the public context alone and decrypt
    to numpy's weighted sum; a seeded stream of another key set is refused by that context."""
    xs = [values(5000, seed=s) for s in (1, 2, 3)]
    ws = weights(3, seed=4)
    header, total = decrypt_sum(lean_public_key, aggregate(lean_public_key, xs, ws))
    expected = np.average(np.stack(xs).astype(np.float64), axis=0, weights=ws)
    assert header.contributors == ("site-0", "site-1", "site-2")
    assert np.abs(total / header.weight - expected).max() <= SINGLE_BUDGET["lean_public_key"]
    parser = UpdateParser(lean_public_key.public())
    with pytest.raises(ContextMismatchError):
        parser.feed(stream(lean, values(100)))


def test_empty_update(lean: SecretContext) -> None:
    header, total = decrypt_sum(lean, [stream(lean, np.zeros(0, np.float32))])
    assert header.n_ciphertexts == 0 and total.shape == (0,)


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "match"),
    [(33.0, r"max \|x\| = 33 exceeds the limit 32"), (-1e6, "exceeds the limit 32")],
)
def test_values_out_of_range_are_refused_before_encrypting(
    lean: SecretContext, monkeypatch: pytest.MonkeyPatch, bad: float, match: str
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(
        SecretContext, "_encrypt_chunk", lambda self, c, timings=None: calls.append(1)
    )
    x = values(100)
    x[57] = bad
    with pytest.raises(ValueRangeError, match=match):
        encrypt_update(lean, x, weight=0.5, mask_digest="m")  # refused at call time
    assert calls == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_refused(lean: SecretContext, bad: float) -> None:
    x = values(100)
    x[3] = bad
    with pytest.raises(ValueRangeError, match="first at index 3"):
        encrypt_update(lean, x, weight=0.5, mask_digest="m")


@pytest.mark.parametrize("weight", [0.0, -0.1, 1.0001, float("nan"), float("inf"), True])
def test_weights_outside_zero_one_are_refused(lean: SecretContext, weight: float) -> None:
    with pytest.raises(ValueRangeError):
        encrypt_update(lean, values(10), weight=weight, mask_digest="m")


@pytest.mark.parametrize(
    "x", [np.zeros((2, 2), np.float32), np.arange(4), [0.1, 0.2]], ids=["2d", "int", "list"]
)
def test_values_must_be_a_flat_float_array(lean: SecretContext, x: object) -> None:
    with pytest.raises(ConfigError):
        encrypt_update(lean, x, weight=0.5, mask_digest="m")  # type: ignore[arg-type]


def test_encryption_is_chunk_by_chunk(lean: SecretContext, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = SecretContext._encrypt_chunk

    def counting(
        self: SecretContext,
        chunk: np.ndarray,
        timings: dict[str, float] | None = None,
        mask: np.ndarray | None = None,
    ) -> bytes:
        calls.append(chunk.size)
        return original(self, chunk, timings=timings, mask=mask)

    monkeypatch.setattr(SecretContext, "_encrypt_chunk", counting)
    chunks = encrypt_update(lean, values(3 * 4096 + 5), weight=0.5, mask_digest="m")
    next(chunks)  # the header comes first, before any encryption
    assert calls == []
    next(chunks)
    assert calls == [4096]
    rest = list(chunks)
    assert calls == [4096, 4096, 4096, 5] and len(rest) == 3


def test_total_weight_above_one_is_refused(lean: SecretContext) -> None:
    ups = [io.BytesIO(stream(lean, values(10), weight=0.6, contributor=c)) for c in "ab"]
    with pytest.raises(ValueRangeError, match=r"1\.2"):
        add_updates(lean.public(), ups, io.BytesIO())


def test_rounding_slack_on_the_total_weight(lean: SecretContext) -> None:
    ups = [io.BytesIO(stream(lean, values(10), weight=0.1, contributor=str(i))) for i in range(10)]
    out = io.BytesIO()
    assert add_updates(lean.public(), ups, out).weight == pytest.approx(1.0)


def test_a_contributor_counted_twice_is_refused(lean: SecretContext) -> None:
    ups = [io.BytesIO(stream(lean, values(10), weight=0.1, contributor="a")) for _ in range(2)]
    with pytest.raises(CountMismatchError, match="'a'"):
        add_updates(lean.public(), ups, io.BytesIO())


def test_sources_must_agree(lean: SecretContext, lean_other: SecretContext) -> None:
    pub = lean.public()
    a = stream(lean, values(10), weight=0.1, mask="m1", contributor="a")
    with pytest.raises(MaskMismatchError):
        add_updates(
            pub,
            [
                io.BytesIO(a),
                io.BytesIO(stream(lean, values(10), weight=0.1, mask="m2", contributor="b")),
            ],
            io.BytesIO(),
        )
    with pytest.raises(CountMismatchError):
        add_updates(
            pub,
            [
                io.BytesIO(a),
                io.BytesIO(stream(lean, values(11), weight=0.1, mask="m1", contributor="b")),
            ],
            io.BytesIO(),
        )
    with pytest.raises(ContextMismatchError, match="source 1"):
        add_updates(
            pub,
            [
                io.BytesIO(a),
                io.BytesIO(stream(lean_other, values(10), weight=0.1, mask="m1", contributor="b")),
            ],
            io.BytesIO(),
        )
    with pytest.raises(ConfigError):
        add_updates(pub, [], io.BytesIO())


def test_broken_sources_raise_typed_errors(lean: SecretContext) -> None:
    a = stream(lean, values(9000), weight=0.1, contributor="a")
    b = stream(lean, values(9000), weight=0.1, contributor="b")
    with pytest.raises(TruncatedStreamError, match="source 1"):
        add_updates(lean.public(), [io.BytesIO(a), io.BytesIO(b[:-7])], io.BytesIO())
    with pytest.raises(TrailingBytesError, match="source 0"):
        add_updates(lean.public(), [io.BytesIO(a + b"!"), io.BytesIO(b)], io.BytesIO())


def test_decrypt_refuses_another_key_set(lean: SecretContext, lean_other: SecretContext) -> None:
    with pytest.raises(ContextMismatchError):
        decrypt_sum(lean, [stream(lean_other, values(10))])

"""CKKS presets, keys, envelopes, sparse packing, wire format and the homomorphic sum.

The flow of one round::

    dealer     ctx = create_secret_context("lean"); upload ctx.public_bytes()
               seal_envelope(ctx.secret_bytes(), ..., signer=identity) per confirmed member
    client     secret, digest = open_envelope(..., dealer_signing_key=confirmed dealer's key)
               ctx = SecretContext.from_secret_bytes(secret)       # check ctx.digest == digest
               masker = PairwiseMasker(own_id=..., mask_keys=confirmed participants, ...)
               for chunk in encrypt_update(ctx, kept_values, weight=w, mask_digest=d,
                                           binding=b, masker=masker): upload
    aggregator pub = PublicContext.from_bytes(...); UpdateParser(pub, ...) on each upload body
               add_updates(pub, [sum_so_far, upload], out)
    client     header, total = decrypt_sum(ctx, aggregate); average = total / header.weight

TenSEAL never leaks past this package; every TenSEAL / ``cryptography`` exception caused by bad
input is translated into :mod:`fedsparsify.errors` (tests check it).

Choosing ``lean`` (TenSEAL 0.3.18, SEAL 4.3, one thread, 1M kept values, 10 clients of
N(0, 0.05) with sample-count weights summing to 1; ``benchmarks/crypto_costs.py``, its
``--candidates`` flag adds the N=2048 row; measured with wire format 2, SEAL's own
serialisation, before frames were bit-packed: format 3 brings lean to 5.02 bytes per value)::

    set                             bytes/kept  client µs/kept  max error, 10-client sum
    lean: N=4096 [40, 20] 2^32      6.06        0.22-0.39       5.6e-7
    N=2048 [40, 14] 2^32, same use  6.09        0.28-0.40       3.8e-7
    lean, public-key (not seeded)   12.04       0.45-0.59       5.3e-6
    peer-default (public key, real) 57.59       1.1-1.5         4.2e-8
    plaintext float32               4.00        0.003           5.6e-9

Both lean candidates cost the same bytes (the one 40-bit ciphertext prime sets the size, not
N) and the same time within the noise of a shared machine; N=4096 [40, 20] uses 60 of the 109
modulus bits allowed at 128-bit security where N=2048 [40, 14] uses all 54 of 54, so ``lean``
takes the margin. Its costs: a ciphertext holds 4096 values (up to ~24 kB of padding in the last
one, against ~12 kB at N=2048) and its noise is sqrt(2) larger.

Value range: |x| <= 32 per client (``PRESETS["lean"].max_abs_value``; derivation in
:mod:`fedsparsify.crypto.presets`), with the weights of a sum adding up to at most 1.
Precision budget: max absolute error <= 3e-7 · sqrt(K) on a sum of K updates, i.e. <= 1e-6 for
10 clients (measured: std 3.4e-8 · sqrt(K), max 5.6e-7 over 1M values at K=10, 1.6e-6 at
K=100), independent of the values' size; divide by the sum of weights for the average (and its
error). Frames are bit-packed at the residues' width (:mod:`.frames`): a seeded lean upload is
40 bits per coefficient plus the 65-byte seed record, 5.02 bytes per value; an aggregate of K
seeded uploads is their summed c0 plus K seed records (the site rebuilds the second polynomial
from them), 5.0 + 0.016·K bytes per value, written as a full ciphertext (10 bytes per value)
only beyond K = 315, where that is smaller.

Security notes. Clients share one CKKS key, so pairwise masks (:mod:`.pairwise`) are what keeps
an individual update, and even the sum, from a holder of the key: an aggregator colluding with
any set of sites learns at most the sum of the honest participants' updates. A CKKS decryption
carries the encryption noise, so publishing a decrypted sum at full precision next to the
ciphertext it came from (which the aggregator holds) can reveal the secret key (Li and
Micciancio, 2021): clients round every decrypted average to a grid coarser than the noise.
"""

from fedsparsify.crypto.aggregate import add_updates
from fedsparsify.crypto.context import (
    PublicContext,
    SecretContext,
    create_secret_context,
)
from fedsparsify.crypto.envelope import envelope_dealer, open_envelope, seal_envelope
from fedsparsify.crypto.identity import (
    PublicIdentity,
    SiteIdentity,
    check_ed25519_public,
    check_x25519_public,
    is_fingerprint,
)
from fedsparsify.crypto.packing import check_values, layout_for
from fedsparsify.crypto.pairwise import PairwiseMasker, RoundBinding, participants_digest
from fedsparsify.crypto.presets import PRESETS, CkksPreset, check_security, get_preset
from fedsparsify.crypto.update import decrypt_sum, encrypt_update
from fedsparsify.crypto.wire import (
    FORMAT_VERSION,
    UpdateHeader,
    UpdateParser,
    read_update,
)

__all__ = [
    "FORMAT_VERSION",
    "PRESETS",
    "CkksPreset",
    "PairwiseMasker",
    "PublicContext",
    "PublicIdentity",
    "RoundBinding",
    "SecretContext",
    "SiteIdentity",
    "UpdateHeader",
    "UpdateParser",
    "add_updates",
    "check_ed25519_public",
    "check_security",
    "check_values",
    "check_x25519_public",
    "create_secret_context",
    "decrypt_sum",
    "encrypt_update",
    "envelope_dealer",
    "get_preset",
    "is_fingerprint",
    "layout_for",
    "open_envelope",
    "participants_digest",
    "read_update",
    "seal_envelope",
]

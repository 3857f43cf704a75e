"""Pairwise masks over the ciphertext ring: the aggregator learns neither updates nor their sum.

For each round attempt and channel, every pair of participants (i, j) derives a shared seed::

    seed_ij = HKDF-SHA256(X25519(mask_sk_i, mask_pk_j),
                          info = domain | federation | round | attempt | channel |
                                 participant-set digest | lower id | higher id)

and expands it with ChaCha20 into residues uniform modulo each ciphertext prime (rejection
sampling of ``bits(q)``-bit words). The site with the lower id adds the expansion, the other
subtracts it, on the NTT-form plaintext before encryption (which equals masking ``c0``), so:

- every stored upload decrypts, even under the secret key, to uniformly random residues;
- the masks cancel exactly (mod q) in the sum of all participants' uploads;
- ciphertexts stay seeded and the same size.

So an aggregator alone learns nothing, and with any set of colluding sites at most the sum of the
honest participants' updates. A participant that does not upload leaves masks that do not
cancel: the round moves to a new attempt (new participant set, new masks).

Frame ``f``'s expansion uses ChaCha20 nonce ``(f, prime index)``, so frames can be masked in any
order or in parallel.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsparsify.crypto.identity import x25519_shared
from fedsparsify.errors import ConfigError, CryptoError

__all__ = [
    "PairwiseMasker",
    "RoundBinding",
    "expand_residues",
    "participants_digest",
]

log = logging.getLogger(__name__)

_SEED_DOMAIN = b"fedsparsify/pairwise-mask/v1"
_PARTICIPANTS_DOMAIN = b"fedsparsify/participants/v1"
_U32 = struct.Struct(">I")
_NONCE_TAG = 0x6D61736B  # "mask"
#: Extra words drawn per block so that one ChaCha20 call almost always suffices.
_SLACK_WORDS = 64


def _field(value: str | int) -> bytes:
    raw = str(value).encode("utf-8")
    return _U32.pack(len(raw)) + raw


@dataclass(frozen=True)
class RoundBinding:
    """What an update is made for: federation, round, attempt and the exact participant set.

    It travels in every update header (wire format 2) and keys the pairwise masks, so an update
    made for one attempt can neither be replayed into another nor cancel another's masks.
    """

    federation_id: str
    round: int
    attempt: int
    participants_digest: str

    def __post_init__(self) -> None:
        if not isinstance(self.federation_id, str) or len(self.federation_id) > 256:
            raise ConfigError("federation_id must be a string of at most 256 characters")
        for name in ("round", "attempt"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
                raise ConfigError(f"{name} must be an integer in [0, 2^31)")
        if not isinstance(self.participants_digest, str) or len(self.participants_digest) > 64:
            raise ConfigError("participants_digest must be at most 64 characters")


def participants_digest(mask_keys: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) over the sorted participant ids and their mask public keys."""
    h = hashlib.sha256(_PARTICIPANTS_DOMAIN)
    for client_id in sorted(mask_keys):
        key = mask_keys[client_id]
        if not isinstance(key, bytes | bytearray):
            raise ConfigError(f"mask key of {client_id!r} must be bytes")
        h.update(_field(client_id) + _U32.pack(len(key)) + bytes(key))
    return h.hexdigest()


def expand_residues(seed: bytes, frame: int, prime_index: int, modulus: int, n: int) -> np.ndarray:
    """``n`` residues uniform in ``[0, modulus)`` from ChaCha20 keyed by ``seed`` (uint64)."""
    bits = int(modulus).bit_length()
    if not 2 <= bits <= 62:
        raise ConfigError(f"modulus of {bits} bits is outside the supported 2..62")
    width = (bits + 7) // 8
    nonce = (0).to_bytes(4, "little") + struct.pack(">III", frame, prime_index, _NONCE_TAG)
    stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    top = np.uint64((1 << bits) - 1)
    out = np.empty(0, dtype=np.uint64)
    while out.size < n:
        words = n - out.size + _SLACK_WORDS
        raw = np.frombuffer(stream.update(bytes(words * width)), dtype=np.uint8)
        wide = np.zeros((words, 8), dtype=np.uint8)  # little-endian words, zero-padded
        wide[:, :width] = raw.reshape(words, width)
        values = wide.view("<u8").reshape(words) & top
        out = np.concatenate([out, values[values < np.uint64(modulus)]])
    return out[:n]


class PairwiseMasker:
    """One participant's masks for one round attempt and channel.

    ``mask_keys`` maps every participant (this one included) to its mask public key, which the
    caller has confirmed (fingerprints). Raises :class:`CryptoError` naming a peer whose key is
    unusable.
    """

    def __init__(
        self,
        *,
        own_id: str,
        own_mask_private: bytes,
        mask_keys: Mapping[str, bytes],
        binding: RoundBinding,
        channel: str,
    ) -> None:
        if own_id not in mask_keys:
            raise ConfigError(f"{own_id!r} is not among the participants")
        if binding.participants_digest != participants_digest(mask_keys):
            raise CryptoError(
                "the round's participant-set digest does not match the participants' mask keys"
            )
        self.own_id = own_id
        self.binding = binding
        self.channel = channel
        self.prg_bytes = 0
        self._pairs: list[tuple[bytes, bool]] = []
        self._peers: list[str] = []
        for peer, key in sorted(mask_keys.items()):
            if peer == own_id:
                continue
            shared = x25519_shared(own_mask_private, key, f"mask key of participant {peer!r}")
            low, high = sorted((own_id, peer))
            info = b"".join(
                [
                    _SEED_DOMAIN,
                    _field(binding.federation_id),
                    _field(binding.round),
                    _field(binding.attempt),
                    _field(channel),
                    _field(binding.participants_digest),
                    _field(low),
                    _field(high),
                ]
            )
            seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
            self._pairs.append((seed, own_id < peer))
            self._peers.append(peer)

    @property
    def n_peers(self) -> int:
        """Participants this one shares a mask with."""
        return len(self._pairs)

    def pair_mask(self, peer: str, frame: int, moduli: Sequence[int], n: int) -> np.ndarray:
        """This participant's share of the mask it has with ``peer`` alone (RNS order); the
        peer's share is its negative modulo q. What a site colluding with the aggregator could
        strip from ``peer``'s upload: what is left is still masked by every other pair."""
        seed, add = self._pairs[self._peers.index(peer)]
        out = np.empty(len(moduli) * n, dtype=np.uint64)
        for index, q in enumerate(moduli):
            r = expand_residues(seed, frame, index, q, n)
            out[index * n : (index + 1) * n] = r if add else (np.uint64(q) - r) % np.uint64(q)
        return out

    def frame_mask(self, frame: int, moduli: Sequence[int], n: int) -> np.ndarray:
        """This participant's mask for frame ``frame``: ``n`` residues per prime, RNS order."""
        out = np.zeros(len(moduli) * n, dtype=np.uint64)
        for index, q in enumerate(moduli):
            acc = out[index * n : (index + 1) * n]
            modulus = np.uint64(q)
            for seed, add in self._pairs:
                r = expand_residues(seed, frame, index, q, n)
                acc += r if add else modulus - r
                np.subtract(acc, modulus, out=acc, where=acc >= modulus)
                self.prg_bytes += n * ((int(q).bit_length() + 7) // 8)
        return out

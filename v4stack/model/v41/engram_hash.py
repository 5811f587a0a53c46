"""Engram n-gram hashing (model_spec.md §3.9, golden/v41/README.md): token ids -> table row ids, before any layer.

Because the rows a forward pass needs depend on the input ids alone, they are known before the pass starts;
that is what lets the Engram tables live in slower memory (``v4stack.model.v41.engram_store``).

  cmap          compressed token map [len(tokenizer)]: ids whose normalised text is equal share one class
  tok_s(p)      cmap[id(p - s)] for shifts s = 0..N-1; once p < s or the token is DEAD (-1, image span) that
                shift and every longer one use pad = cmap[engram_pad_token_id]
  h_n(p)        (tok_0 * m_0) ^ (tok_1 * m_1) ^ ... ^ (tok_n * m_n)     n = 1..N-1 (the (n+1)-gram), int64
  id[n, e](p)   h_n mod prime[L][n-1][e] + offset[L][(n-1) H + e]           -> [T, (N-1) H] row ids of layer L

Multipliers m = 2 v + 1 with v ~ numpy default_rng(10007 L).integers(0, bound, N), bound =
max(1, ((2^63 - 1) // C) // 2) for C = compressed vocab size (so tok * m never overflows int64).
Primes: per (layer, n-gram size) the search restarts above engram_vocab_size - 1 and takes the next H primes
not used by any earlier (layer, size, head); the sum of a layer's primes is its table's row count.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from v4stack.config.v41_config import EngramConfig

DEAD = -1  # compressed id of an image-span token: it breaks every n-gram through it
MULTIPLIER_SEED_STRIDE = 10007  # numpy seed of layer L is 10007 * L (reference NgramHashState)
INT64_MAX = 2 ** 63 - 1
REPLACEMENT_CHAR = "\ufffd"  # a single id that decodes to a partial UTF-8 sequence
SPACE_SENTINEL = "\ue000"  # private-use char protecting a lone " " from Strip in the normaliser
MAP_FILE = "compressed_token_map.safetensors"
MAP_TENSOR = "compressed_token_map"


def is_prime(n: int) -> bool:
    """Deterministic trial division (the numbers are ~1.6e7 in the released model: sqrt is ~4000)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


@dataclass(frozen=True)
class LayerHashConstants:
    """Hash constants of one Engram layer: multipliers [N], primes [N-1][H], offsets [(N-1) H] (int64)."""

    layer_id: int
    multipliers: tuple[int, ...]
    primes: tuple[tuple[int, ...], ...]

    @property
    def flat_primes(self) -> tuple[int, ...]:
        return tuple(p for row in self.primes for p in row)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for p in self.flat_primes:
            out.append(acc)
            acc += p
        return tuple(out)

    @property
    def num_rows(self) -> int:
        return sum(self.flat_primes)


def hash_constants(cfg: EngramConfig) -> tuple[LayerHashConstants, ...]:
    """Multipliers and primes of every Engram layer, in config order."""
    bound = max(1, (INT64_MAX // cfg.compressed_vocab_size) // 2)
    used: set[int] = set()
    out = []
    for layer in cfg.layer_ids:
        v = np.random.default_rng(MULTIPLIER_SEED_STRIDE * layer).integers(0, bound, size=cfg.max_ngram_size,
                                                                          dtype=np.int64)
        mults = tuple(int(2 * x + 1) for x in v)
        rows = []
        for _ in range(cfg.ngram_sizes):
            current, heads = cfg.vocab_size - 1, []
            while len(heads) < cfg.n_heads:
                current += 1
                if current not in used and is_prime(current):
                    used.add(current)
                    heads.append(current)
            rows.append(tuple(heads))
        out.append(LayerHashConstants(layer, mults, tuple(rows)))
    return tuple(out)


def check_table_sizes(cfg: EngramConfig) -> None:
    """Raise ValueError when the config's table sizes disagree with the prime procedure (a corrupt config)."""
    for consts, rows in zip(hash_constants(cfg), cfg.num_embeddings):
        if consts.num_rows != rows:
            raise ValueError(f"config field 'engram_num_embeddings': layer {consts.layer_id} has {rows} rows, the "
                             f"hash primes give {consts.num_rows}")


# ---- compressed token map ----------------------------------------------------------------------------
def _normalizer():
    from tokenizers import Regex, normalizers

    return normalizers.Sequence([
        normalizers.NFKC(), normalizers.NFD(), normalizers.StripAccents(), normalizers.Lowercase(),
        normalizers.Replace(Regex(r"[ \t\r\n]+"), " "), normalizers.Replace(Regex(r"^ $"), SPACE_SENTINEL),
        normalizers.Strip(), normalizers.Replace(SPACE_SENTINEL, " "),
    ])


def build_compressed_token_map(tokenizer_json: str | Path) -> torch.Tensor:
    """int64 [len(tokenizer)]: compressed class of every id, classes numbered by first appearance of the key
    (the normalised single-id text, or the raw token string when the id decodes to a partial character)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    norm = _normalizer()
    classes: dict[str, int] = {}
    out = torch.empty(tok.get_vocab_size(with_added_tokens=True), dtype=torch.int64)
    for i in range(out.numel()):
        text = tok.decode([i], skip_special_tokens=False)
        if REPLACEMENT_CHAR in text:
            key = tok.id_to_token(i)
        else:
            key = norm.normalize_str(text) or text
        out[i] = classes.setdefault(key, len(classes))
    return out


def load_compressed_token_map(directory: str | Path) -> torch.Tensor:
    """The map stored next to a tokenizer (``compressed_token_map.safetensors``), or built from its
    ``tokenizer.json``; int64 [len(tokenizer)]."""
    directory = Path(directory)
    stored = directory / MAP_FILE
    if stored.exists():
        from safetensors.torch import load_file

        return load_file(str(stored))[MAP_TENSOR].long()
    tok = directory / "tokenizer.json"
    if not tok.exists():
        raise FileNotFoundError(f"{directory}: no {MAP_FILE} or tokenizer.json to build the Engram token map from")
    return build_compressed_token_map(tok)


def map_sha256(cmap: torch.Tensor) -> str:
    """sha256 of the map as little-endian int64 (the golden README's checksum)."""
    return hashlib.sha256(cmap.to(torch.int64).numpy().astype("<i8").tobytes()).hexdigest()


# ---- hashing -------------------------------------------------------------------------------------------
class NgramHasher:
    """Row ids of every Engram layer for new tokens of a sequence, given its compressed history.

    ``cmap``: int64 [len(tokenizer)]. Ids outside it (or negative) are refused with a ValueError.
    """

    def __init__(self, cfg: EngramConfig, cmap: torch.Tensor) -> None:
        if cmap.numel() == 0 or int(cmap.max()) + 1 != cfg.compressed_vocab_size:
            raise ValueError(f"Engram token map has {int(cmap.max()) + 1 if cmap.numel() else 0} classes, the "
                             f"config says engram_compressed_vocab_size={cfg.compressed_vocab_size}")
        self.cfg, self.cmap = cfg, cmap.long()
        self.constants = hash_constants(cfg)
        self.pad = int(self.cmap[cfg.pad_token_id])
        self.history = cfg.max_ngram_size - 1  # compressed ids of earlier positions a new token needs
        self._mults = torch.tensor([c.multipliers for c in self.constants], dtype=torch.int64)  # [L, N]
        self._primes = torch.tensor([c.flat_primes for c in self.constants], dtype=torch.int64)  # [L, (N-1)H]
        self._offsets = torch.tensor([c.offsets for c in self.constants], dtype=torch.int64)

    def compress(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [S] -> compressed ids [S] (int64). DEAD (-1) marks image-span tokens (none in text)."""
        ids = token_ids.long().cpu()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.cmap.numel()):
            bad = int(ids[(ids < 0) | (ids >= self.cmap.numel())][0])
            raise ValueError(f"token id {bad} is outside the Engram token map (0..{self.cmap.numel() - 1})")
        return self.cmap[ids]

    def hash_ids(self, compressed: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """compressed [S] ids of the new tokens, prior [<= N-1]: compressed ids of the positions just before
        them (fewer at the start of a sequence) -> row ids int64 [L, S, (N-1) H] for every Engram layer."""
        n, s = self.cfg.max_ngram_size, compressed.numel()
        seq = torch.cat([prior.long()[-self.history:] if self.history else prior[:0], compressed.long()])
        lead = seq.numel() - s  # positions of history available before the first new token
        shifted = torch.full((n, s), self.pad, dtype=torch.int64)  # [shift, S]
        broken = torch.zeros(s, dtype=torch.bool)  # a DEAD token or the sequence start at this shift or before
        for k in range(n):
            src = torch.arange(s) + lead - k  # index into seq of position p - k
            valid = src >= 0
            tok = torch.where(valid, seq[src.clamp_min(0)], torch.full_like(src, DEAD))
            broken = broken | (tok == DEAD)
            shifted[k] = torch.where(broken, torch.full_like(tok, self.pad), tok)
        prods = shifted[None, :, :] * self._mults[:, :, None]  # [L, N, S]; < 2^63 by the multiplier bound
        out = []
        h = prods[:, 0]
        for k in range(1, n):
            h = h ^ prods[:, k]  # [L, S]: hash of the (k+1)-gram ending at each position
            heads = self.cfg.n_heads
            p = self._primes[:, (k - 1) * heads:k * heads]  # [L, H]
            off = self._offsets[:, (k - 1) * heads:k * heads]
            out.append(torch.remainder(h[:, :, None], p[:, None, :]) + off[:, None, :])
        return torch.cat(out, dim=-1)

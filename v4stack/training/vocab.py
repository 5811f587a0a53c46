"""Growing a small V4 tokenizer and checkpoint by the chat-template tokens, so the V4 chat format means
something to a model trained on plain text.

The V4 encoder (``v4stack.chat.encoder``) writes role, thinking, tool-call and task markers that the
official V4 tokenizer holds as single added tokens (model_spec section 6.1). A tokenizer trained on plain
text would split each into several byte-level pieces; :func:`add_chat_tokens` appends them as added
tokens (ids after the existing vocabulary, in the order of the official ids; flags as in the official
``tokenizer.json``: not special, so ``decode(skip_special_tokens=True)`` keeps them for the parser, as it
does with the official tokenizer), and :func:`grow_vocab_tensors` gives the checkpoint the matching rows.

Knows: which strings the chat format writes, the vocabulary-sized tensors of a checkpoint. Does not know:
training.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from v4stack.chat.formats import ChatFormat
from v4stack.modelio.writer import SPECIAL_TOKENS

EMBEDDING_ROWS = ("embed.weight", "head.weight")  # [vocab, hidden]: the token embedding and the output head
HASH_TABLE_SUFFIX = "tid2eid"  # hash-routed gates: [vocab, top-k] expert ids per token id


def chat_tokens(fmt: ChatFormat) -> list[str]:
    """The marker strings ``fmt`` writes beyond BOS/EOS, in the official V4 id order: user, assistant,
    think open/close, the DSML marker, latest_reminder, then the task tokens. V4.1's system token is
    included when the format has one."""
    tokens = [fmt.user_token, fmt.assistant_token, fmt.think_open, fmt.think_close, fmt.dsml,
              fmt.latest_reminder_token, *fmt.task_tokens.values()]
    if fmt.system_token is not None:
        tokens.append(fmt.system_token)
    return tokens


def add_chat_tokens(tokenizer, fmt: ChatFormat) -> dict[str, int]:
    """Append the chat tokens to a ``tokenizers.Tokenizer`` (in place) -> token -> new id. Raises
    ValueError if one is already in the vocabulary (growing twice would desynchronise the checkpoint)."""
    from tokenizers import AddedToken

    tokens = chat_tokens(fmt)
    present = [t for t in tokens if tokenizer.token_to_id(t) is not None]
    if present:
        raise ValueError(f"tokenizer already holds the chat tokens {present}")
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=True) for t in tokens])
    return {t: tokenizer.token_to_id(t) for t in tokens}


def grow_vocab_tensors(tensors: dict[str, torch.Tensor], new_vocab: int, n_experts: int,
                       seed: int) -> dict[str, torch.Tensor]:
    """Logical fp32/int tensors of a checkpoint (name -> tensor) with every vocabulary-sized tensor grown to
    ``new_vocab`` rows: embedding and head rows start at the mean of the existing rows (a new token starts
    as an 'average' token, neither favoured nor ruled out by the head); hash-routing rows get k distinct
    experts of ``n_experts`` drawn uniformly (how ``training.init`` fills the whole table)."""
    grown = dict(tensors)
    old = tensors[EMBEDDING_ROWS[0]].shape[0]
    extra = new_vocab - old
    if extra < 0:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {new_vocab}")
    gen = torch.Generator().manual_seed(seed)
    for name, value in tensors.items():
        if name in EMBEDDING_ROWS:
            mean = value.float().mean(dim=0, keepdim=True)  # [1, hidden]
            grown[name] = torch.cat([value, mean.expand(extra, -1).to(value.dtype)])
        elif name.endswith(HASH_TABLE_SUFFIX):
            rows = torch.rand(extra, n_experts, generator=gen).argsort(dim=1)[:, : value.shape[1]]
            grown[name] = torch.cat([value, rows.to(value.dtype)])
    return grown


def write_tokenizer_config(directory: Path, model_max_length: int) -> None:
    """tokenizer_config.json with the fields of the official V4 one (bos/eos/pad as AddedToken entries,
    no BOS/EOS added by the tokenizer: the chat encoder writes BOS itself) and this model's context."""
    def added(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    config = {"add_bos_token": False, "add_eos_token": False, "bos_token": added(SPECIAL_TOKENS[0]),
              "clean_up_tokenization_spaces": False, "eos_token": added(SPECIAL_TOKENS[1]), "legacy": True,
              "model_max_length": model_max_length, "pad_token": added(SPECIAL_TOKENS[1]), "sp_model_kwargs": {},
              "unk_token": None, "tokenizer_class": "PreTrainedTokenizerFast"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))

"""Chat training data from the plays: one speech as the user turn, the next speaker's reply as the
assistant turn, rendered by v4stack's own V4 chat encoder in both modes.

* chat mode (Fast): ``BOS <｜User｜>{speech}<｜Assistant｜></think>{reply}EOS``;
* thinking mode (Expert): ``BOS <｜User｜>{speech}<｜Assistant｜><think>{who and where}</think>{reply}EOS``,
  the reasoning one short, fixed-pattern sentence (``Abraham, to Gregory. Romeo And Juliet 1.1.``: the
  replying speaker, whom they answer, the play, act.scene), so a short fine-tune learns where it ends.

Play text layout (the Gutenberg texts of ``corpus``): blank-line separated blocks; a speech block is a
speaker heading line (``ROMEO.``, ``Lady Capulet.``, ``First Soldier.``) then its lines; ``ACT II.`` and
``Scene 3. A street.`` / ``SCENE III. ...`` headings set the place; lines wholly in brackets are stage
directions and are dropped. Two speeches form an exchange when they follow each other in the same scene
and have different speakers.

Training rows (:func:`pack_rows`) concatenate rendered samples and carry a mask that is 1 on the
assistant's tokens (reasoning, ``</think>``, reply and EOS), so the loss teaches the replies, not the
prompts. The ``</think>`` token may weigh more than 1 (``close_weight``): closing the thinking block is the
one token Expert mode cannot do without, and it is rare (one per thinking sample).

Knows: the play layout and the chat layout (through the encoder). Does not know: the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from v4stack.chat.encoder import encode_messages
from v4stack.chat.formats import ChatFormat

# A speaker heading: 1-5 capitalised words (lower-case joiners allowed after the first) and a full stop;
# some texts (A Midsummer Night's Dream) write upper-case headings without the stop.
SPEAKER_RE = re.compile(r"^[A-Z][\w']*(?:[ -](?:[A-Z][\w']*|of|the|and|de|la|le|du)){0,4}\.$")
UPPER_SPEAKER_RE = re.compile(r"^[A-Z][A-Z']+(?:[ -][A-Z][A-Z']*){0,4}$")
ACT_RE = re.compile(r"^ACT ([IVXL]+|\d+|FIRST|SECOND|THIRD|FOURTH|FIFTH)\b")
ORDINALS = {"FIRST": 1, "SECOND": 2, "THIRD": 3, "FOURTH": 4, "FIFTH": 5}  # Henry VI Part 1: "ACT FIRST"
INLINE_DIRECTION_RE = re.compile(r"\s*\[[^\]]*\]")
SCENE_RE = re.compile(r"^(?:SCENE|Scene) ([IVXL]+|\d+)\b\.?\s*(.*)$")
STAGE_DIRECTION_RE = re.compile(r"^\s*\[.*\]\s*$")
HEADING_WORDS = ("ACT", "SCENE", "Scene", "PROLOGUE", "EPILOGUE", "Prologue", "Epilogue")
ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50}
ROMAN_WORD_RE = re.compile(r"^[IVXL]+$")
MAX_SPEECH_LINES = 6  # longer speeches are cut at a line boundary (a reply must fit a 256-token row)
FILE_SUFFIX = "_gut.txt"


@dataclass(frozen=True)
class Exchange:
    """One user/assistant pair: ``prompt`` said by ``asker``, answered by ``speaker`` with ``reply``."""

    play: str
    act: int
    scene: int
    asker: str
    prompt: str
    speaker: str
    reply: str


@dataclass(frozen=True)
class Sample:
    """A rendered exchange: token ids [n] and the loss weights [n] (0 = a prompt token, 1 = an assistant
    token, ``close_weight`` = the assistant's ``</think>``)."""

    ids: torch.Tensor
    mask: torch.Tensor


def roman_to_int(text: str) -> int:
    """'IV' -> 4, '12' -> 12."""
    if text.isdigit():
        return int(text)
    if text in ORDINALS:
        return ORDINALS[text]
    values = [ROMAN[c] for c in text]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def play_title(file_name: str) -> str:
    """'henry_vi_part_3_gut.txt' -> 'Henry VI Part 3' (roman numerals kept upper-case)."""
    words = file_name.removesuffix(FILE_SUFFIX).split("_")
    return " ".join(w.upper() if ROMAN_WORD_RE.match(w.upper()) and len(w) <= 4 and w != "i" else w.capitalize()
                    for w in words)


def _speech_lines(lines: list[str]) -> list[str]:
    """Spoken lines: stage directions (whole-line or inline, in brackets) removed."""
    spoken = (INLINE_DIRECTION_RE.sub("", line).strip() for line in lines if not STAGE_DIRECTION_RE.match(line))
    return [line for line in spoken if line]


def is_speaker(line: str) -> bool:
    return bool(SPEAKER_RE.match(line) or UPPER_SPEAKER_RE.match(line)) and not line.startswith(HEADING_WORDS)


def speeches(text: str) -> list[tuple[int, int, str, str]]:
    """(act, scene, speaker, speech text) of every speech in a play, in order; speeches before the first
    act heading (the cast list) are skipped."""
    act, scene, out = 0, 0, []
    for block in text.split("\n\n"):
        lines = [line for line in block.strip("\n").split("\n") if line.strip()]
        if not lines:
            continue
        head = lines[0].strip()
        if m := ACT_RE.match(head):
            act, scene = roman_to_int(m.group(1)), 0
            continue
        if m := SCENE_RE.match(head):
            scene = roman_to_int(m.group(1))
            continue
        if act == 0 or len(lines) < 2 or not is_speaker(head):
            continue
        body = _speech_lines(lines[1:])[:MAX_SPEECH_LINES]
        if body:
            out.append((act, scene, head.removesuffix("."), "\n".join(body)))
    return out


def exchanges(play: str, text: str) -> list[Exchange]:
    """Consecutive speeches of the same scene by different speakers, as exchanges."""
    said = speeches(text)
    return [Exchange(play, a[0], a[1], a[2], a[3], b[2], b[3]) for a, b in zip(said, said[1:])
            if (a[0], a[1]) == (b[0], b[1]) and a[2] != b[2]]


def reasoning(ex: Exchange) -> str:
    """The thinking block of an exchange: who replies to whom, and where."""
    return f"{ex.speaker}, to {ex.asker}. {ex.play} {ex.act}.{ex.scene}."


def render(ex: Exchange, fmt: ChatFormat, thinking: bool) -> tuple[str, str]:
    """(prompt, completion) text: the prompt ends with the generation opener; the completion is what the
    model must write (reasoning and ``</think>`` in thinking mode, then the reply and EOS)."""
    user = {"role": "user", "content": ex.prompt}
    prompt = encode_messages([user], fmt=fmt, thinking=thinking)
    assistant = {"role": "assistant", "content": ex.reply, "reasoning_content": reasoning(ex) if thinking else None}
    full = encode_messages([user, assistant], fmt=fmt, thinking=thinking)
    if not full.startswith(prompt):
        raise RuntimeError("chat encoder: a conversation does not extend its generation prompt")
    return prompt, full[len(prompt):]


def _weights(prompt_len: int, completion: list[int], close_id: int | None, close_weight: float) -> torch.Tensor:
    """Loss weights [prompt_len + len(completion)]: 0 on the prompt, 1 on the completion, ``close_weight`` on
    the completion's ``close_id`` tokens."""
    c = torch.ones(len(completion))
    if close_id is not None:
        c[torch.tensor(completion) == close_id] = close_weight
    return torch.cat([torch.zeros(prompt_len), c])


def encode_sample(tokenizer, ex: Exchange, fmt: ChatFormat, thinking: bool, close_weight: float = 1.0) -> Sample:
    """Tokenise a rendered exchange (``tokenizers.Tokenizer``; BOS is in the text). Prompt and completion
    are tokenised apart: the prompt ends in an added token, so no merge crosses the boundary."""
    return encode_samples(tokenizer, [ex], fmt, thinking, close_weight)[0]


def encode_samples(tokenizer, exs: list[Exchange], fmt: ChatFormat, thinking: bool,
                   close_weight: float = 1.0) -> list[Sample]:
    """:func:`encode_sample` of many exchanges, tokenised in batches (the tokenizer's own threads)."""
    rendered = [render(ex, fmt, thinking) for ex in exs]
    prompts = tokenizer.encode_batch([p for p, _ in rendered], add_special_tokens=False)
    completions = tokenizer.encode_batch([c for _, c in rendered], add_special_tokens=False)
    close_id = tokenizer.token_to_id(fmt.think_close) if thinking else None
    return [Sample(torch.tensor(p.ids + c.ids, dtype=torch.long), _weights(len(p.ids), c.ids, close_id, close_weight))
            for p, c in zip(prompts, completions)]


def mixed_samples(tokenizer, exs: list[Exchange], fmt: ChatFormat, thinking_share: float = 0.5,
                  close_weight: float = 1.0, seed: int = 0) -> list[Sample]:
    """Every exchange in thinking mode, and in chat mode a random subset (drawn with ``seed``) sized so that
    about ``thinking_share`` of the samples are thinking ones; 0.5 = every exchange in both modes. An
    exchange's chat sample, when kept, comes just before its thinking sample."""
    if not 0.5 <= thinking_share <= 1.0:
        raise ValueError(f"thinking_share must be in [0.5, 1], got {thinking_share}")
    chat, think = (encode_samples(tokenizer, exs, fmt, thinking, close_weight) for thinking in (False, True))
    chat_per_think = (1 - thinking_share) / thinking_share  # 1 at a share of 0.5
    keep = torch.rand(len(exs), generator=torch.Generator().manual_seed(seed)) < chat_per_think
    return [s for c, t, k in zip(chat, think, keep.tolist()) for s in ([c, t] if k else [t])]


def pack_rows(samples: list[Sample], rows: int, length: int, order: torch.Tensor,
              cursor: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Training rows from the samples ``order[cursor], order[cursor + 1], ...`` (indices into ``samples``,
    cycled) -> (ids [rows, length], loss weights [rows, length], the cursor after the last sample used). Each row is
    whole samples back to back (each starts with its own BOS), the last one cut at the row's end."""
    ids = torch.empty(rows, length, dtype=torch.long)
    mask = torch.empty(rows, length)
    k = cursor
    for r in range(rows):
        got_ids, got_mask, n = [], [], 0
        while n < length:
            s = samples[int(order[k % order.numel()])]
            k += 1
            got_ids.append(s.ids)
            got_mask.append(s.mask)
            n += s.ids.numel()
        ids[r] = torch.cat(got_ids)[:length]
        mask[r] = torch.cat(got_mask)[:length]
    return ids, mask, k

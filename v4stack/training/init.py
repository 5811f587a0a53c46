"""Initial values for training a V4 model from scratch (the reference ships ``torch.empty`` parameters).

Scaled so that every sublayer starts near identity-preserving:
  * linear weights ~ N(0, 1/in), the residual-branch outputs (``wo_b``, expert ``w2``) further scaled by
    1/sqrt(2 * blocks) (GPT-2 style), embedding ~ N(0, 1), norms 1, sinks / ``ape`` / gate bias 0;
  * mHC: small ``*_fn`` and ``*_scale`` so the mixes start close to their bases; pre base so each stream
    contributes 1/hc, post base 0 (post = 1), comb base favouring the identity before Sinkhorn;
  * ``tid2eid``: for every token id, k distinct experts drawn uniformly.
"""

from __future__ import annotations

import math

import torch

from v4stack.model.transformer import DeepseekV4
from v4stack.training.trainable import logical_name

HC_FN_GAIN = 0.1  # mixes start within ~0.1 of their bases
HC_SCALE_INIT = 1.0
COMB_IDENTITY_LOGIT = 4.0  # comb base on the diagonal: softmax puts ~0.95 of each row on its own stream


def _hc_base(hc: int) -> torch.Tensor:
    pre = torch.full((hc,), math.log(1.0 / (hc - 1)))  # sigmoid(pre) = 1/hc
    post = torch.zeros(hc)
    comb = torch.eye(hc) * COMB_IDENTITY_LOGIT
    return torch.cat([pre, post, comb.flatten()])


@torch.no_grad()
def init_parameters(model: DeepseekV4, seed: int) -> None:
    """Fill every parameter and trained buffer of a ``make_trainable`` model."""
    cfg = model.cfg
    gen = torch.Generator().manual_seed(seed)
    blocks = cfg.num_hidden_layers + cfg.num_mtp_layers
    residual_gain = 1.0 / math.sqrt(2 * blocks)
    for pname, p in model.named_parameters():
        name = logical_name(pname)
        leaf = name.rsplit(".", 1)[-1]
        if name == "embed.weight":
            p.copy_(torch.randn(p.shape, generator=gen))
        elif "norm" in name:
            p.fill_(1.0)
        elif leaf.endswith("_fn"):
            p.copy_(torch.randn(p.shape, generator=gen) * HC_FN_GAIN / math.sqrt(p.shape[1]))
        elif leaf.endswith("_base") and leaf.startswith("hc_"):
            # block sites: pre, post, comb [(2+hc)*hc]; the head collapse: its own pre weights [hc]
            base = _hc_base(cfg.hc_mult)
            p.copy_(base if p.numel() == base.numel() else base[: cfg.hc_mult])
        elif leaf.endswith("_scale") and leaf.startswith("hc_"):
            p.fill_(HC_SCALE_INIT)
        elif p.dim() == 2:
            gain = residual_gain if (".wo_b." in name or ".w2." in name) else 1.0
            p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(p.shape[1]))
        else:  # attn_sink, ape
            p.zero_()
    for name, buf in model.named_buffers():
        if name.endswith("gate.bias"):
            buf.zero_()
        elif name.endswith("tid2eid"):
            k = buf.shape[1]
            rows = torch.rand(buf.shape[0], cfg.n_routed_experts, generator=gen).argsort(dim=1)[:, :k]
            buf.copy_(rows.to(buf.dtype))

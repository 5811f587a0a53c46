"""The trainable twin of a v4stack model, and its export back to the official checkpoint layout.

``make_trainable`` turns a freshly built :class:`DeepseekV4` (fp32 numerics) into a model autograd can
train, the way QAT preparation works in torch.ao: every checkpoint-format ``Linear`` is swapped for a
``TrainableLinear`` holding an fp32 master weight that the forward sees through the straight-through
fake quantiser of its checkpoint format (FP8 e4m3 128x128 / FP4 e2m1 1x32 / bf16), every other
floating tensor becomes an fp32 parameter (seen as bf16 where the checkpoint stores bf16), and every CSA
attention a ``ProbedAttention`` (the indexer's loss; ``training.probed_attention``). The module
tree keeps its names, so ``export_tensors`` reads each official tensor name straight off the model and
quantises it with the checkpoint writer's quantisers: the exported checkpoint computes exactly what the
training forward computed.

Not parameters: the noaux gate ``bias`` (set by the load-balancing rule, not by gradients) and the hash
table ``tid2eid``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from v4stack.model.compute import Compute
from v4stack.model.linear import DENSE, FP4, FP8, Linear
from v4stack.model.moe import Gate
from v4stack.model.transformer import DeepseekV4
from v4stack.modelio.writer import encode_tensor
from v4stack.training.fake_quant import FakeCast, fake_cast, fake_fp4, fake_fp8
from v4stack.training.probed_attention import probe_csa_layers
from v4stack.modelio.inventory import checkpoint_spec

NOT_TRAINED = ("bias", "tid2eid")  # Gate buffers: balance rule / fixed hash table
PARAM_PREFIX, PARAM_SUFFIX = ".parametrizations.", ".original"


class TrainableLinear(nn.Module):
    """Drop-in for :class:`Linear` (same ``forward``/``dense_weight`` contract) over an fp32 master weight
    [out, in]; ``fmt`` and ``dense_dtype`` are the checkpoint format it will be exported to."""

    def __init__(self, in_features: int, out_features: int, fmt: str, compute: Compute,
                 dense_dtype: torch.dtype, dense_compute_fp32: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.fmt, self.compute = in_features, out_features, fmt, compute
        self.dense_dtype, self.dense_compute_fp32 = dense_dtype, dense_compute_fp32
        self.weight = nn.Parameter(torch.empty(out_features, in_features))

    @classmethod
    def like(cls, src: Linear) -> "TrainableLinear":
        dense_dtype = src.weight.dtype if src.fmt == DENSE else torch.float32
        return cls(src.in_features, src.out_features, src.fmt, src.compute, dense_dtype, src.dense_compute_fp32)

    def quantized(self) -> torch.Tensor:
        """The master weight on its checkpoint grid, fp32 [out, in] (straight-through gradient)."""
        if self.fmt == FP8:
            return fake_fp8(self.weight, self.compute.weight_block)
        if self.fmt == FP4:
            return fake_fp4(self.weight)
        return fake_cast(self.weight, self.dense_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.float32 if self.dense_compute_fp32 else self.compute.dtype
        return F.linear(x.to(dtype), self.quantized().to(dtype))

    def dense_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return self.quantized().to(dtype)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, trains as {self.fmt}"


def make_trainable(model: DeepseekV4) -> DeepseekV4:
    """Convert ``model`` in place (see module docstring) and return it. The model must use fp32 numerics
    without the activation QAT simulation (its reference GEMMs are exact fp64 block sums, far too slow to
    train with); its tensors are uninitialised afterwards: call ``training.init.init_parameters``."""
    if model.compute.quant or model.compute.dtype != torch.float32:
        raise ValueError("train with Numerics.exact_fp32(); weights are fake-quantised, activations are not")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Linear):
                setattr(parent, name, TrainableLinear.like(child))
    for module in list(model.modules()):
        for name, buf in list(module._buffers.items()):
            if buf is None or not buf.is_floating_point() or buf.dtype.itemsize == 1:
                continue
            if isinstance(module, Gate) and name in NOT_TRAINED:
                module._buffers[name] = buf.float()
                continue
            del module._buffers[name]
            module.register_parameter(name, nn.Parameter(torch.empty(buf.shape, dtype=torch.float32)))
            if buf.dtype != torch.float32:
                parametrize.register_parametrization(module, name, FakeCast(buf.dtype))
    probe_csa_layers(model)  # the indexer's loss reads each CSA layer's attention (training.probed_attention)
    return model


def logical_name(param_name: str) -> str:
    """'a.b.parametrizations.weight.original' -> 'a.b.weight' (the official tensor name)."""
    if PARAM_PREFIX in param_name and param_name.endswith(PARAM_SUFFIX):
        head, tail = param_name.split(PARAM_PREFIX)
        return f"{head}.{tail[: -len(PARAM_SUFFIX)]}"
    return param_name


@torch.no_grad()
def export_tensors(model: DeepseekV4) -> dict[str, torch.Tensor]:
    """Official name -> tensor in the checkpoint format, for every tensor the loader expects."""
    out: dict[str, torch.Tensor] = {}
    for name, (shape, dtype) in checkpoint_spec(model.cfg).items():
        if dtype == torch.float8_e8m0fnu:
            continue  # written with its weight
        path, _, leaf = name.rpartition(".")
        value = getattr(model.get_submodule(path), leaf).detach().cpu()
        out.update(encode_tensor(name, value, dtype, model.compute.weight_block))
        if out[name].shape != shape:
            raise RuntimeError(f"export of {name}: shape {tuple(out[name].shape)}, checkpoint expects {shape}")
    return out

"""The one-call routing of decode-sized calls (``ops.fast.route_kernel``, ``csrc/moe_route.c``) through the fast
``route`` entry, against the reference ``ops.reference.moe.route`` (same gate GEMM order, so the logits are equal
and only the C scoring differs): the same experts (ties: the lower id first), weights within a few fp32 ulps; the
hash layers' tid2eid path; the torch fallback beyond ``MAX_ROWS`` / ``MAX_SCORES``, without a compiler and on bad
ids; the native, AVX2 and plain-C builds give the same bits."""

import pytest
import torch
from torch import nn

from v4stack.ops.fast import kernels, moe, route_kernel
from v4stack.ops.reference import moe as reference_moe
from v4stack.ops.reference.indexer import topk_lower_index_on_ties

pytestmark = pytest.mark.skipif(not route_kernel.available(), reason="no C compiler")

# fp32 ulps a weight may differ from the reference's: libm's exp / log1p rounded once against torch's vectorised
# ones (a score within an ulp or two), then the renormalisation's sum, division and route_scale product. torch's CPU
# softmax rounds its own way (an exp of its own and a scaling by the reciprocal of the sum: measured up to 14 ulps
# from exp(x - max) / sum on random rows); both stay within ~30 ulps of the fp64 softmax.
WEIGHT_ULPS = {"sqrtsoftplus": 8, "sigmoid": 8, "softmax": 32}
SHAPES = [(6, 3), (8, 2), (16, 4), (256, 6)]  # (experts, k): pro_like, flash_like / demo, the bench, V4-Flash
VOCAB = 50
ROUTE_SCALE = 2.5  # the golden configs' routed_scaling_factor


class _Gate(nn.Module):
    """``model.moe.Gate``'s attributes with random weights, prepared as ``ops.fast.prepare`` does."""

    def __init__(self, n_experts: int, dim: int, k: int, score_func: str, hashed: bool, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.topk, self.score_func, self.route_scale, self.hashed = k, score_func, ROUTE_SCALE, hashed
        self.register_buffer("weight", (torch.randn(n_experts, dim, generator=g) * 0.3).bfloat16())
        if hashed:
            rows = [torch.randperm(n_experts, generator=g)[:k] for _ in range(VOCAB)]
            self.register_buffer("tid2eid", torch.stack(rows))
        else:
            self.register_buffer("bias", torch.randn(n_experts, generator=g) * 0.1)
        self.prepared = self.weight.float().contiguous()


def _ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in fp32 ulps of same-signed a and b (routing weights are >= 0)."""
    return (a.view(torch.int32).long() - b.view(torch.int32).long()).abs()


def _inputs(rows: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return (torch.randn(rows, dim, generator=g) * (1 + seed % 5)).bfloat16(), torch.randint(0, VOCAB, (rows,),
                                                                                           generator=g)


@pytest.mark.parametrize("hashed", [False, True], ids=["scored", "hashed"])
@pytest.mark.parametrize("score_func", list(WEIGHT_ULPS))
@pytest.mark.parametrize("rows", [1, 4, 5, 16, route_kernel.MAX_ROWS])
def test_one_call_routes_like_the_reference(score_func, hashed, rows):
    for seed, (n_experts, k) in enumerate(SHAPES):
        gate = _Gate(n_experts, 256, k, score_func, hashed, seed)
        x, ids = _inputs(rows, 256, seed)
        logits = moe.ordered_gemm.linear_fp32(x.float(), gate.prepared)
        fast = route_kernel.route_rows(gate, logits, ids)
        if rows * n_experts > route_kernel.MAX_SCORES:  # torch's vectorised path is faster there
            assert fast is None
            assert [torch.equal(a, b) for a, b in zip(moe.route(gate, x, ids),
                                                      moe.route_from_logits(gate, logits, ids))] == [True, True]
            continue
        assert fast is not None  # the call took the C path
        assert [torch.equal(a, b) for a, b in zip(fast, moe.route(gate, x, ids))] == [True, True]
        (w, e), (w_ref, e_ref) = fast, reference_moe.route(gate, x, ids)
        assert e.dtype == torch.int64 and torch.equal(e, e_ref), (n_experts, k)
        if hashed:
            assert torch.equal(e, gate.tid2eid[ids])
        assert w.dtype == torch.float32 and w.shape == (rows, k)
        assert int(_ulps(w, w_ref).max()) <= WEIGHT_ULPS[score_func], (n_experts, k)


@pytest.mark.parametrize("score_func", list(WEIGHT_ULPS))
def test_ties_take_the_lower_expert_first(score_func):
    """Duplicated gate rows and biases give equal selection scores: the reference's stable order (lower id first),
    whatever torch.topk would do; a NaN logit counts as the largest, as in the reference's descending sort."""
    gate = _Gate(16, 64, 4, score_func, False, seed=7)
    gate.weight[8:] = gate.weight[:8]  # experts e and e + 8 tie everywhere
    gate.bias[8:] = gate.bias[:8]
    gate.prepared = gate.weight.float().contiguous()
    x, ids = _inputs(12, 64, seed=3)
    (w, e), (w_ref, e_ref) = moe.route(gate, x, ids), reference_moe.route(gate, x, ids)
    assert torch.equal(e, e_ref)
    assert int(_ulps(w, w_ref).max()) <= WEIGHT_ULPS[score_func]
    pairs = e[:, :2].sort(-1).values  # the two best of each row are a tied pair, the lower id ranked first
    assert torch.equal(pairs[:, 1] - pairs[:, 0], torch.full((12,), 8)) and torch.equal(e[:, 0], pairs[:, 0])
    logits = torch.zeros(2, 16)
    logits[0, 5] = logits[1, 3] = logits[1, 9] = float("nan")
    if score_func != "softmax":  # a softmax row with a NaN is all NaN: every expert ties
        weights, experts = route_kernel.route_rows(gate, logits, ids[:2])
        assert experts[0, 0] == 5 and experts[1, :2].tolist() == [3, 9]


@pytest.mark.parametrize("n_experts, k", [(8, 2), (16, 4), (256, 6), (6, 6)])
def test_many_way_ties_keep_the_stable_order(n_experts, k):
    """Logits from a few values (many experts tie at every rank; equal logits give equal scores on both paths, and
    distinct ones are far apart): the experts of the reference's stable sort, NaNs first."""
    gate = _Gate(n_experts, 64, k, "sqrtsoftplus", False, seed=n_experts)
    gate.bias.zero_()
    g = torch.Generator().manual_seed(k)
    logits = torch.randint(-2, 2, (route_kernel.MAX_ROWS, n_experts), generator=g).float()
    logits[0] = 1.0  # every expert ties: 0 .. k-1
    logits[1, ::3] = float("nan")
    rows = min(route_kernel.MAX_ROWS, route_kernel.MAX_SCORES // n_experts)
    weights, experts = route_kernel.route_rows(gate, logits[:rows], torch.zeros(rows, dtype=torch.int64))
    want = topk_lower_index_on_ties(reference_moe.gate_scores(logits[:rows], "sqrtsoftplus"), k)
    assert torch.equal(experts, want)
    assert experts[0].tolist() == list(range(k))


def test_larger_calls_and_bad_ids_take_the_torch_path():
    gate = _Gate(8, 64, 2, "sqrtsoftplus", True, seed=1)
    x, ids = _inputs(route_kernel.MAX_ROWS + 1, 64, seed=1)
    logits = moe.ordered_gemm.linear_fp32(x.float(), gate.prepared)
    assert route_kernel.route_rows(gate, logits, ids) is None  # a prefill: torch's vectorised path
    assert [torch.equal(a, b) for a, b in zip(moe.route(gate, x, ids), moe.route_from_logits(gate, logits, ids))] \
        == [True, True]
    assert route_kernel.route_rows(gate, logits[:2], torch.tensor([0, VOCAB])) is None  # token id past tid2eid
    with pytest.raises(IndexError):
        moe.route(gate, x[:2], torch.tensor([0, VOCAB]))  # the torch path raises as before
    gate.tid2eid[3, 1] = 8  # an expert id past E
    assert route_kernel.route_rows(gate, logits[:1], torch.tensor([3])) is None
    assert route_kernel.route_rows(gate, logits[:1].double(), ids[:1]) is None  # not fp32


def test_a_replaced_buffer_makes_a_new_plan():
    gate = _Gate(8, 64, 2, "sigmoid", False, seed=2)
    x, ids = _inputs(3, 64, seed=2)
    moe.route(gate, x, ids)
    gate.bias = torch.linspace(-5, 5, 8)  # a new tensor at another address (register_buffer's slot)
    assert torch.equal(moe.route(gate, x, ids)[1], reference_moe.route(gate, x, ids)[1])


def test_no_c_kernels_falls_back_to_torch(monkeypatch):
    """V4STACK_NO_C_KERNELS=1: no library, no plan, and the entry takes its torch path."""
    monkeypatch.setenv("V4STACK_NO_C_KERNELS", "1")
    route_kernel._library.cache_clear()
    try:
        assert not route_kernel.available()
        gate = _Gate(8, 64, 2, "sqrtsoftplus", False, seed=4)
        x, ids = _inputs(2, 64, seed=4)
        logits = moe.ordered_gemm.linear_fp32(x.float(), gate.prepared)
        assert route_kernel.route_rows(gate, logits, ids) is None
        got, want = moe.route(gate, x, ids), moe.route_from_logits(gate, logits, ids)
        assert [torch.equal(a, b) for a, b in zip(got, want)] == [True, True]
    finally:
        monkeypatch.delenv("V4STACK_NO_C_KERNELS")
        route_kernel._library.cache_clear()
    assert route_kernel.available()


@pytest.mark.parametrize("flags", ["x86-64-v3", "x86-64"])
@pytest.mark.parametrize("score_func", list(WEIGHT_ULPS))
def test_builds_give_the_same_bits(flags, score_func, monkeypatch):
    """The native build against the AVX2 and the plain-C ones, with NaN, infinite, huge and tiny logits."""
    other = route_kernel._library(tuple(f"-march={flags}" if f == "-march=native" else f for f in kernels.CFLAGS))
    if other is None:
        pytest.skip(f"the compiler cannot build -march={flags}")
    for hashed in (False, True):
        gate = _Gate(16, 64, 4, score_func, hashed, seed=5)
        g = torch.Generator().manual_seed(5)
        logits = torch.randn(route_kernel.MAX_ROWS, 16, generator=g) * 30
        logits[0, :6] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-30, 25.0, float("-inf")])
        logits[1, :4] = torch.tensor([20.0, 20.000002, 88.0, -104.0])  # softplus's threshold, exp's range ends
        ids = torch.randint(0, VOCAB, (route_kernel.MAX_ROWS,), generator=g)
        native = route_kernel.route_rows(gate, logits, ids)
        gate.__dict__.pop(route_kernel.PLAN)
        monkeypatch.setattr(route_kernel, "_library", lambda cflags=kernels.CFLAGS: other)
        portable = route_kernel.route_rows(gate, logits, ids)
        monkeypatch.undo()
        for a, b in zip(native, portable):
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))

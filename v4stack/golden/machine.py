"""Whether this machine's fp32 vector math is the golden machines'.

The golden files (../shared/golden/v4, v41) were written with torch 2.13's CPU wheel on AMD CPUs. In that wheel
torch's fp32 ``exp`` and ``sqrt`` on contiguous tensors are MKL VML calls, and MKL picks their code by CPU: on a
non-Intel CPU its SSE4.2/AVX code, on an Intel AVX-512 CPU its AVX-512 code. The two give other bits on 1.7 % of
``exp`` and 17 % of ``sqrt`` values (docs/numerics.md). The reference calls them in the Sinkhorn softmax, the
attention's online softmax and the router's sqrtsoftplus. Everything else the reference numerics compute (exact
block sums, bf16 GEMMs, the fp32 GEMM orders of ``ops.reference.blas_order``) is reproduced on either CPU; these
few ulps are not, and the random golden models amplify them: on an Intel Xeon the first full-prompt row that is
not bit-identical is position 128 (flash_like) / 48 (pro_like), and the V4.1 case's all-top-k logits reach a min
cosine of 0.9970 instead of 0.9992.

An AMD CPU without AVX-512 (EPYC Zen 3, torch's ATen capability AVX2) runs the golden machines' VML code (MKL
gives the same exp/sqrt bits there under any ``MKL_ENABLE_INSTRUCTIONS``) and still leaves the golden's bits at
the same rows as the Intel box does under SSE4.2 VML: first differing full-prompt row 254 (flash_like) / 144
(pro_like), 18 / 26 of 44 / 45 stored rows (measured 2026-12-04; the cause, some kernel that torch or MKL picks by
instruction set, is not found). The CPUs on which every stored row did match were AMD with torch capability
AVX512, so that is what the gate asks for; but an AMD EPYC Zen 4 (cpu family 25, model 17; AVX512, avx512_bf16)
measured on 2026-12-06 leaves the golden at the very same rows 254 / 144 (18 / 26 rows), unchanged under every
``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA`` setting tried and at 1, 2 or 4 threads, so the AMD models
measured off the golden rows are named in ``OFF_GOLDEN_MODELS`` and the gate leaves them out.

So a check that needs the golden's bits beyond the short contexts (a full-prompt prefill, a bit-identical engine
run, bands tuned on the golden machines' bits) holds only where MKL takes the golden machines' code; elsewhere
the golden READMEs' statistical bands are the test. :func:`golden_vector_math` says which case this machine is.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
INTEL_VENDOR = "GenuineIntel"  # the one vendor on which MKL runs its Intel-specific (AVX2/AVX-512) VML code
GOLDEN_CAPABILITY = "AVX512"  # torch's ATen CPU capability on the machines that reproduce every golden row
# (cpu family, model) of AVX512 AMD CPUs measured off the golden rows (254 / 144 on, as above), with where and when
OFF_GOLDEN_MODELS = {(25, 17): "AMD EPYC Zen 4, 2026-12-06"}


def _cpu_fields(cpuinfo: Path) -> dict[str, str]:
    """The ``key: value`` lines of the first CPU in ``cpuinfo`` (Linux); empty where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first CPU's block ends at the first blank line
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_vendor(cpuinfo: Path = CPUINFO) -> str | None:
    """The ``vendor_id`` of the first CPU in ``cpuinfo`` (Linux), or None where it cannot be read."""
    return _cpu_fields(cpuinfo).get("vendor_id")


def cpu_family_model(cpuinfo: Path = CPUINFO) -> tuple[int, int] | None:
    """(``cpu family``, ``model``) of the first CPU in ``cpuinfo``, or None where they cannot be read."""
    fields = _cpu_fields(cpuinfo)
    try:
        return int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return None


def golden_vector_math(cpuinfo: Path = CPUINFO, capability: str | None = None) -> bool:
    """True when torch's fp32 ``exp``/``sqrt`` run the MKL code the golden machines ran and torch's own kernels are
    theirs: an MKL build of torch on a known non-Intel x86 CPU with ATen capability ``GOLDEN_CAPABILITY``
    (``capability``: default this machine's). False on an Intel CPU, without MKL, where the vendor is unknown, on
    a CPU without AVX-512, or on a CPU model in ``OFF_GOLDEN_MODELS``."""
    vendor = cpu_vendor(cpuinfo)
    capability = capability or torch.backends.cpu.get_cpu_capability()
    return (bool(torch.backends.mkl.is_available()) and vendor is not None and vendor != INTEL_VENDOR
            and capability == GOLDEN_CAPABILITY and cpu_family_model(cpuinfo) not in OFF_GOLDEN_MODELS)


def vector_math_note() -> str:
    """One line for a skipped check or a report: what this machine's vector math is and why it matters."""
    vendor = cpu_vendor() or "unknown vendor"
    family_model = cpu_family_model()
    if family_model is not None:
        vendor += f" family {family_model[0]} model {family_model[1]}"
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    same = "the golden machines' code" if golden_vector_math() else "not the golden machines' code"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{vendor} CPU, {mkl}, torch capability {capability}: fp32 math runs {same} (v4stack.golden.machine)"

"""Hardware registry: every figure sourced and flagged; lookups and the CPU probe."""

import pytest

from v4stack.hardware.registry import KINDS, get_chip, list_chips, _probe_meminfo

REQUIRED = {"910b", "910c", "950pr", "950pr-roadmap", "950dt", "h20", "h100", "h200", "b200", "gb300", "cpu"}


def _figures(c):
    figs = [c.memory, c.memory_bw, c.link_bw, c.link_latency, *c.flops.values()]
    return figs + ([c.power] if c.power else [])


def test_registry_has_every_chip_of_issue_3():
    assert REQUIRED <= set(list_chips())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_figure_has_source_and_kind(name):
    c = get_chip(name)
    for f in _figures(c):
        assert f.source and f.kind in KINDS and f.value > 0
    assert "bf16" in c.flops


def test_values_match_hardware_md():
    # hardware.md s1.1: Atlas 350 (950PR as shipped) 112 GB, 1.4 TB/s, 1.56 PF FP4, 600 W
    pr = get_chip("atlas350")
    assert pr.name == "950pr"
    assert (pr.memory.value, pr.memory_bw.value, pr.flops["fp4"].value, pr.power.value) == (112e9, 1.4e12, 1.56e15, 600)
    # roadmap spec: 128 GB, 1.6 TB/s; 950DT: 144 GB, 4 TB/s
    assert get_chip("950pr-roadmap").memory.value == 128e9
    assert get_chip("950dt").memory_bw.value == 4.0e12
    # H200: 141 GB, 4.8 TB/s, 989 TF BF16, NVLink 900 GB/s bidirectional -> 450 GB/s one way
    h = get_chip("H200")
    assert (h.memory.value, h.memory_bw.value, h.flops["bf16"].value) == (141e9, 4.8e12, 989e12)
    assert h.link_bw_per_direction == 450e9
    # A2/A3 have no FP8/FP4 datapath; 950 and Blackwell have FP4
    assert not get_chip("910c").has_fp8 and not get_chip("910b").has_fp4
    assert get_chip("950pr").has_fp4 and get_chip("b200").has_fp4 and not get_chip("h200").has_fp4


def test_gemm_rate_rules():
    b = get_chip("b200")
    assert b.gemm_flops("fp4") == b.flops["fp8"].value      # W4A8: FP8 activations
    assert b.gemm_flops("bf16") == b.flops["bf16"].value
    c = get_chip("910c")
    assert c.gemm_flops("fp8") == c.flops["bf16"].value      # no FP8 datapath -> BF16
    assert c.gemm_flops("int4") == c.flops["int8"].value


def test_cpu_probe_reads_this_machine():
    c = get_chip("cpu")
    mem = _probe_meminfo()
    if mem is not None:
        assert c.memory.value == mem and c.memory.kind == "measured"
    assert c.memory_bw.kind == "estimate" and c.flops["bf16"].kind == "estimate"


def test_unknown_chip():
    with pytest.raises(KeyError):
        get_chip("tpu-v9")

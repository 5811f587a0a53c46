"""The machine gate of the golden checks that need the golden machines' fp32 vector math."""

import torch

from v4stack.golden.machine import (GOLDEN_CAPABILITY, INTEL_VENDOR, OFF_GOLDEN_MODELS, cpu_family_model, cpu_vendor,
                                    golden_vector_math, vector_math_note)


def _cpuinfo(tmp_path, vendor: str, family_model: tuple[int, int] = (26, 2)):
    path = tmp_path / f"cpuinfo_{vendor}_{family_model[0]}_{family_model[1]}"
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family_model[0]}\nmodel\t\t: {family_model[1]}\n"
                    f"model name\t: x\n\nprocessor\t: 1\nvendor_id\t: {vendor}\ncpu family\t: 6\nmodel\t\t: 1\n")
    return path


def test_vendor_is_read_from_cpuinfo(tmp_path):
    assert cpu_vendor(_cpuinfo(tmp_path, "AuthenticAMD")) == "AuthenticAMD"
    assert cpu_vendor(tmp_path / "missing") is None
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_vendor(tmp_path / "empty") is None
    assert cpu_family_model(_cpuinfo(tmp_path, "AuthenticAMD", (25, 17))) == (25, 17)  # the first CPU's, not the last
    assert cpu_family_model(tmp_path / "empty") is None


def test_intel_and_unknown_cpus_do_not_count_as_the_golden_machines(tmp_path):
    mkl = torch.backends.mkl.is_available()
    amd = _cpuinfo(tmp_path, "AuthenticAMD")
    assert golden_vector_math(amd, GOLDEN_CAPABILITY) == mkl
    assert not golden_vector_math(amd, "AVX2")  # AMD Zen 3: measured off the golden rows from 254 / 144 on
    for family_model in OFF_GOLDEN_MODELS:  # measured off the golden rows with AVX512 (AMD EPYC Zen 4)
        assert not golden_vector_math(_cpuinfo(tmp_path, "AuthenticAMD", family_model), GOLDEN_CAPABILITY)
    assert golden_vector_math(amd) == (mkl and torch.backends.cpu.get_cpu_capability() == GOLDEN_CAPABILITY)
    assert not golden_vector_math(_cpuinfo(tmp_path, INTEL_VENDOR), GOLDEN_CAPABILITY)
    assert not golden_vector_math(tmp_path / "missing", GOLDEN_CAPABILITY)


def test_note_names_this_machine():
    note = vector_math_note()
    assert (cpu_vendor() or "unknown vendor") in note and ("not the golden" in note) != golden_vector_math()

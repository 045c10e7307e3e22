"""Which implementation the registry picks: by mode, device target and attn_implementation."""
import os

import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import ops as fused
from mindformers_hf.ops import cpu_build, registry

ASCEND_OPS = ["add_rms_norm", "apply_rotary_pos_emb", "causal_attention", "rms_norm", "swiglu"]


@pytest.fixture
def ascend(monkeypatch):
    """Pretend MindSpore's device target is Ascend (the built-ins cannot run here; nothing is executed)."""
    monkeypatch.setattr(registry, "device_target", lambda: "Ascend")


def test_every_op_has_a_reference():
    for op in registry.ops():
        assert registry.REFERENCE in registry.implementations(op, available_only=False)


@pytest.mark.parametrize("op", ASCEND_OPS)
def test_ascend_builtin_is_selected_on_ascend(ascend, op):
    assert registry.implementation_name(op) == "ascend"
    assert registry.select(op) is registry._TABLE[op]["ascend"].fn
    with registry.use_kernels("reference"):
        assert registry.implementation_name(op) == registry.REFERENCE


def test_ascend_selection_of_attention_follows_attn_implementation(ascend):
    assert registry.implementation_name("causal_attention", "sdpa") == "ascend"
    assert registry.implementation_name("causal_attention", "flash_attention_2") == "ascend"
    assert registry.implementation_name("causal_attention", "eager") == registry.REFERENCE


def test_ascend_without_builtin_keeps_the_reference(ascend):
    # Ascend has no two-input silu_mul: the reference (fused by the graph compiler there) stays
    assert registry.implementation_name("silu_mul") == registry.REFERENCE


def test_cpu_kernels_are_not_selected_on_ascend(ascend):
    for op in registry.ops():
        assert registry.implementation_name(op) != "cpu"


def test_reference_mode_from_environment(monkeypatch):
    monkeypatch.setenv("MINDFORMERS_HF_KERNELS", "reference")
    assert all(registry.implementation_name(op) == registry.REFERENCE for op in registry.ops())
    monkeypatch.setenv("MINDFORMERS_HF_KERNELS", "all")
    for op in registry.ops():
        kernels = [n for n in registry.implementations(op) if n != registry.REFERENCE]
        assert registry.implementation_name(op) == (kernels[0] if kernels else registry.REFERENCE)


def test_context_manager_overrides_environment_and_restores(monkeypatch):
    monkeypatch.setenv("MINDFORMERS_HF_KERNELS", "all")
    with fused.use_kernels("reference"):
        assert registry.implementation_name("rms_norm") == registry.REFERENCE
        with fused.use_kernels("all"):
            assert registry.current_mode() == "all"
        assert registry.current_mode() == "reference"
    assert registry.current_mode() == "all"
    with pytest.raises(ValueError, match="use_kernels mode"):
        with fused.use_kernels("fast"):
            pass


def test_eager_attention_is_the_reference_and_flash_asks_for_the_kernel(monkeypatch):
    monkeypatch.setenv("MINDFORMERS_HF_KERNELS", "auto")
    assert registry.implementation_name("causal_attention", "eager") == registry.REFERENCE
    kernels = [n for n in registry.implementations("causal_attention") if n != registry.REFERENCE]
    if kernels:
        assert registry.implementation_name("causal_attention", "flash_attention_2") == kernels[0]


def test_unknown_attn_implementation_uses_default():
    assert registry.implementation_name("causal_attention", "magic") == registry.implementation_name("causal_attention")


def test_get_unknown_names():
    with pytest.raises(KeyError, match="no implementation"):
        registry.get("rms_norm", "tpu")
    with pytest.raises(KeyError, match="unknown op"):
        registry.implementations("conv2d")


def test_no_compiler_falls_back_to_reference(monkeypatch, tmp_path):
    """Without a C++ compiler the CPU kernels report unavailable and the reference runs (same values)."""
    monkeypatch.setattr(cpu_build, "compiler", lambda: None)
    monkeypatch.setattr(cpu_build, "_built", {})
    monkeypatch.setenv("MINDFORMERS_HF_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("MINDFORMERS_HF_KERNELS", "all")
    monkeypatch.setattr(registry, "device_target", lambda: "CPU")
    assert cpu_build.library("norm") is None
    assert registry.implementation_name("rms_norm") == registry.REFERENCE
    x = ms.Tensor(np.ones((2, 4), np.float32))
    np.testing.assert_allclose(fused.rms_norm(x, ms.Tensor(np.ones(4, np.float32)), 1e-6).asnumpy(), 1.0, rtol=1e-5)
    assert os.listdir(tmp_path) == []


def test_failed_build_warns_and_leaves_no_partial_file(monkeypatch, tmp_path):
    if cpu_build.compiler() is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setattr(cpu_build, "_built", {})
    monkeypatch.setattr(cpu_build, "FLAGS", cpu_build.FLAGS + ("-DMFH_FORCE_ERROR", "-include", "no_such_header.h"))
    monkeypatch.setenv("MINDFORMERS_HF_KERNEL_CACHE", str(tmp_path))
    messages = []
    monkeypatch.setattr(cpu_build, "warn_once", messages.append)
    assert cpu_build.library("silu_mul") is None
    assert messages and "silu_mul" in messages[0] and "no_such_header.h" in messages[0]
    assert os.listdir(tmp_path) == []


def test_build_is_cached_by_source_hash(monkeypatch, tmp_path):
    if cpu_build.compiler() is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setattr(cpu_build, "_built", {})
    monkeypatch.setenv("MINDFORMERS_HF_KERNEL_CACHE", str(tmp_path))
    path = cpu_build.library("silu_mul")
    assert path is not None and os.path.dirname(path) == str(tmp_path)
    mtime = os.path.getmtime(path)
    monkeypatch.setattr(cpu_build, "_built", {})
    assert cpu_build.library("silu_mul") == path and os.path.getmtime(path) == mtime  # reused, not rebuilt
    key = cpu_build._build_key("silu_mul", cpu_build.compiler())
    monkeypatch.setattr(cpu_build, "FLAGS", cpu_build.FLAGS + ("-DMFH_OTHER",))
    assert cpu_build._build_key("silu_mul", cpu_build.compiler()) != key
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(path)]


def test_kernel_refused_by_mindspore_falls_back(monkeypatch):
    """MindSpore refuses AOT libraries outside MS_CUSTOM_AOT_WHITE_LIST: warn and use the reference."""
    if cpu_build.compiler() is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", "/nonexistent")
    monkeypatch.setattr(cpu_build, "_built", dict(cpu_build._built))
    for kernel in cpu_build.CustomKernel._by_source["silu_mul"]:
        monkeypatch.setattr(kernel, "op", None)
    monkeypatch.setattr(registry, "device_target", lambda: "CPU")
    messages = []
    monkeypatch.setattr(cpu_build, "warn_once", messages.append)
    with registry.use_kernels("all"):
        assert registry.implementation_name("silu_mul") == registry.REFERENCE
    assert messages and "refused" in messages[0]


def test_loading_every_kernel_leaves_subnormals_alone():
    """The kernels are compiled with -ffast-math; loaded, they must not switch the process to flush-to-zero (gcc
    links crtfastmath.o into a -ffast-math shared library unless linking is a separate step)."""
    import subprocess
    import sys

    if cpu_build.compiler() is None:
        pytest.skip("no C++ compiler here")
    script = (
        "import ctypes, glob, os, numpy as np\n"
        "from mindformers_hf.ops import cpu_build\n"
        "names = [os.path.basename(p)[:-3] for p in glob.glob(os.path.join(cpu_build.CSRC, '*.cc'))]\n"
        "for name in names: ctypes.CDLL(cpu_build.library(name))\n"
        "assert names and np.float32(1e-40) * np.float32(1) != 0, 'subnormals are flushed'\n"
        "print('ok', len(names))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]

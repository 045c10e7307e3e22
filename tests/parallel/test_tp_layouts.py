"""Parallel layouts declared by the modules, and tensor-parallel loading through the one pipeline, in one process
(a mesh without a group: no collectives). Whole families' shards are checked in test_tp_layers.py, the
collectives in test_tp_msrun.py."""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

import mindformers_hf
from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.layers import Linear
from mindformers_hf.modeling_utils import find_checkpoint_files
from mindformers_hf.parallel import TPMesh, apply_tensor_parallel, resolve_tp_plan
from mindformers_hf.parallel.loading import load_tensor_parallel_checkpoint
from mindformers_hf.safetensors_io import CheckpointError
from tests.conftest import make_hf_checkpoint

rng = np.random.default_rng(0)
PARALLEL = os.path.join(os.path.dirname(mindformers_hf.__file__), "parallel")


def _imported_modules(path, package):
    """Every module a file imports, at top level or inside functions, as absolute names."""
    names = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_parallel_imports_no_model_family():
    files = [f for f in os.listdir(PARALLEL) if f.endswith(".py")]
    assert "plan.py" in files and "styles.py" in files
    for name in files:
        imported = _imported_modules(os.path.join(PARALLEL, name), "mindformers_hf.parallel")
        assert not [m for m in imported if m.startswith("mindformers_hf.models")], name
        assert "mindformers_hf.parallel.layers" in imported or name != "styles.py"
    # and at run time: importing and applying the package loads no model module
    code = ("import sys, mindformers_hf.parallel as p, mindformers_hf.parallel.styles; "
            "print([m for m in sys.modules if m.startswith('mindformers_hf.models')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert out.stdout.strip() == "[]"


class _ToyBlock(nn.Cell):
    """A family the parallel package has never heard of: two fused column blocks of unequal units, one row split."""
    _tp_plan = {"up": ("colwise", "a", "b"), "down": ("rowwise", "a")}

    def __init__(self):
        super().__init__()
        self.tp_units = {"a": (4, 3, False), "b": (2, 5, False)}  # rows: 4 units of 3, then 2 units of 5
        self.up, self.down = Linear(6, 22, True), Linear(12, 6, False)

    def construct(self, x):
        up = self.up(x)
        a = self.down.weight.shape[1]  # this rank's share, read from the weight
        return self.down(up[..., :a]), up[..., a:]


def test_any_module_opts_in_by_declaring_its_layout():
    full = _ToyBlock()
    tensors = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in full.parameters_and_names()}
    for name, p in full.parameters_and_names():
        p.set_data(ms.Tensor(tensors[name]))
    x = ms.Tensor(rng.standard_normal((3, 6)).astype(np.float32))
    want_down, want_b = (t.asnumpy() for t in full(x))
    got_down, got_b = 0, []
    for rank in range(2):
        shard = _ToyBlock()
        assert resolve_tp_plan(shard, "auto") == {"up": "colwise", "down": "rowwise"}
        apply_tensor_parallel(shard, TPMesh(rank, 2), resolve_tp_plan(shard, "auto"))
        for name, p in shard.parameters_and_names():
            owner = shard.up if name.startswith("up") else shard.down
            owner.weight_loader(p, tensors[name])
        down, b = shard(x)
        got_down = got_down + down.asnumpy()
        got_b.append(b.asnumpy())
        assert shard.up.weight.shape == (2 * 3 + 1 * 5, 6) and shard.down.weight.shape == (6, 6)
    np.testing.assert_allclose(got_down, want_down, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(got_b, -1), want_b, rtol=1e-6, atol=1e-6)


def _rewrite(folder, key, fn):
    """Rewrite one tensor of a single-file checkpoint with the safetensors library: fn(torch tensor) -> tensor."""
    from safetensors.torch import load_file, save_file

    path = find_checkpoint_files(folder)[0]
    tensors = load_file(path)
    tensors[key] = fn(tensors[key])
    save_file(tensors, path, metadata={"format": "pt"})


CASES = ("float8", "shape")


def test_float8_and_mis_shaped_tensors_are_clear_errors_in_a_tp_load(tmp_path):
    import torch

    key = "model.layers.0.self_attn.q_proj.weight"
    for case in CASES:
        folder = make_hf_checkpoint(tmp_path / case, num_hidden_layers=1)
        if case == "float8":  # float8 has no numpy type: refused by the reader, naming file, key and dtype
            _rewrite(folder, key, lambda t: t.to(torch.float8_e4m3fn))
            match = rf"model.safetensors: tensor '{key}' has dtype F8_E4M3"
        else:
            _rewrite(folder, key, lambda t: torch.cat([t, t[:4]]))
            match = rf"Shape mismatch for '{key}' in .*model.safetensors: checkpoint has \(68, 64\), .* expects \(64, 64\)"
        model = AutoModelForCausalLM.from_pretrained(make_hf_checkpoint(tmp_path / f"ok_{case}", num_hidden_layers=1))
        apply_tensor_parallel(model, TPMesh(0, 2), resolve_tp_plan(model, "auto"))
        with pytest.raises(CheckpointError, match=match):
            load_tensor_parallel_checkpoint(model, find_checkpoint_files(folder))

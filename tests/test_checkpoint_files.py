"""Which files from_pretrained / save_pretrained read and write (src/mindformers_hf/checkpoint_files.py), each
case compared with HF transformers on the same folder: shard names that leave the folder, variants,
subfolders, a stale index beside model.safetensors, a config that ties a head the checkpoint has, and
dtypes no model can be built in. (The same cases through the hub: tests/hub/test_hub_checkpoint_files.py.)"""
import json
import os
import shutil

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, CheckpointError
from tests.conftest import batch, edit_json, hf_forward, make_hf_checkpoint


def _ids():
    return batch(pad_left=(0, 0))[0]


def _ours(folder, **kwargs):
    return np.asarray(AutoModelForCausalLM.from_pretrained(folder, **kwargs)(input_ids=_ids()).logits)


def _hf(folder, **kwargs):
    return hf_forward(folder, _ids(), **kwargs).logits.numpy()


# ------------------------------------------------------------------------- 1. shards outside the folder
@pytest.mark.parametrize("outside", ["relative", "absolute"])
def test_index_naming_a_file_outside_the_folder_is_refused(tmp_path, outside):
    folder = make_hf_checkpoint(tmp_path / "model", save_kwargs={"max_shard_size": "30KB"})
    index_path = os.path.join(folder, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    key, shard = next(iter(index["weight_map"].items()))
    shutil.copy(os.path.join(folder, shard), tmp_path / "other.safetensors")  # a loadable file outside
    name = "../other.safetensors" if outside == "relative" else str(tmp_path / "other.safetensors")
    index["weight_map"] = {k: (name if v == shard else v) for k, v in index["weight_map"].items()}
    with open(index_path, "w") as f:
        json.dump(index, f)
    with pytest.raises(ValueError, match="outside the model directory"):
        _hf(folder)
    with pytest.raises(CheckpointError, match=f"outside the model directory: {name!r}"):
        AutoModelForCausalLM.from_pretrained(folder)


# ------------------------------------------------------------------------- 2. quantized configs
@pytest.mark.parametrize("method", ["awq", "gptq", "bitsandbytes", "fp8"])
def test_quantized_config_is_refused_by_name(tiny_llama, tmp_path, method):
    folder = shutil.copytree(tiny_llama, tmp_path / method)
    edit_json(os.path.join(folder, "config.json"), quantization_config={"quant_method": method, "bits": 4})
    with pytest.raises(NotImplementedError, match=f"quantized checkpoint .*quant_method '{method}'"):
        AutoModelForCausalLM.from_pretrained(folder)


# ------------------------------------------------------------------------- 3. variant on save
def test_save_with_variant_writes_beside_the_plain_files_as_hf_names_them(tiny_llama, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    out = tmp_path / "out"
    model.save_pretrained(out)
    plain = (out / "model.safetensors").read_bytes()
    other = AutoModelForCausalLM.from_pretrained(make_hf_checkpoint(tmp_path / "seed1", seed=1))
    other.save_pretrained(out, variant="fp16")
    assert (out / "model.safetensors").read_bytes() == plain  # not overwritten
    assert (out / "model.fp16.safetensors").is_file()
    np.testing.assert_array_equal(_hf(str(out), variant="fp16"), _hf(str(tmp_path / "seed1")))
    np.testing.assert_array_equal(_hf(str(out)), _hf(tiny_llama))

    other.save_pretrained(out, variant="fp16", max_shard_size="30KB")  # sharded: HF's names, single file replaced
    names = sorted(os.listdir(out))
    assert "model.safetensors.index.fp16.json" in names and "model.fp16.safetensors" not in names
    shards = [n for n in names if n.startswith("model.fp16-")]
    assert len(shards) > 1 and all(n.endswith(f"-of-{len(shards):05d}.safetensors") for n in shards)
    assert (out / "model.safetensors").read_bytes() == plain
    np.testing.assert_array_equal(_hf(str(out), variant="fp16"), _hf(str(tmp_path / "seed1")))
    np.testing.assert_allclose(_ours(out, variant="fp16"), _hf(str(tmp_path / "seed1")), atol=1e-4, rtol=0)
    model.save_pretrained(out)  # a plain save keeps the variant's shards (transformers deletes them)
    assert sorted(os.listdir(out)) == names
    np.testing.assert_array_equal(_hf(str(out), variant="fp16"), _hf(str(tmp_path / "seed1")))


# ------------------------------------------------------------------------- 4. subfolder and variant on load
def test_subfolder_and_variant_load_what_hf_loads(tmp_path):
    root = make_hf_checkpoint(tmp_path / "root")
    make_hf_checkpoint(tmp_path / "root" / "sub", seed=1)
    make_hf_checkpoint(tmp_path / "root", seed=2, save_kwargs={"variant": "fp16"})
    for kwargs in ({"subfolder": "sub"}, {"variant": "fp16"}, {}):
        want = _hf(root, **kwargs)
        np.testing.assert_allclose(_ours(root, **kwargs), want, atol=1e-4, rtol=0, err_msg=str(kwargs))
    assert not np.allclose(_hf(root, subfolder="sub"), _hf(root))
    with pytest.raises(FileNotFoundError, match="model.bf16.safetensors.*pass variant=None"):
        AutoModelForCausalLM.from_pretrained(root, variant="bf16")


# ------------------------------------------------------------------------- 5. tie_word_embeddings vs the file
def test_tied_config_with_its_own_head_in_the_checkpoint_is_not_tied(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "untied")
    edit_json(os.path.join(folder, "config.json"), tie_word_embeddings=True)
    np.testing.assert_allclose(_ours(folder), _hf(folder), atol=1e-4, rtol=0)
    tied = make_hf_checkpoint(tmp_path / "tied", tie_word_embeddings=True)  # no head in the file: still tied
    np.testing.assert_allclose(_ours(tied), _hf(tied), atol=1e-4, rtol=0)
    assert AutoModelForCausalLM.from_pretrained(tied).config.tie_word_embeddings


# ------------------------------------------------------------------------- 6. stale index beside model.safetensors
def stale_index_folder(path):
    """What HF leaves after saving sharded, then unsharded, into one folder: the shards are gone, the index
    stays, and model.safetensors holds the newer weights (seed 1)."""
    make_hf_checkpoint(path, save_kwargs={"max_shard_size": "30KB"})
    folder = make_hf_checkpoint(path, seed=1)
    assert {"model.safetensors", "model.safetensors.index.json"} <= set(os.listdir(folder))
    return folder


def test_model_safetensors_wins_over_a_stale_index(tmp_path):
    folder = stale_index_folder(tmp_path / "m")
    np.testing.assert_allclose(_ours(folder), _hf(folder), atol=1e-4, rtol=0)


def test_tensor_parallel_load_resolves_files_the_same_way(tmp_path, monkeypatch):
    from mindformers_hf.parallel import TPMesh, mesh

    folder = stale_index_folder(tmp_path / "m")
    full = AutoModelForCausalLM.from_pretrained(folder)
    monkeypatch.setattr(mesh, "init_tensor_parallel", lambda tp_size=None: TPMesh(0, 2))  # rank 0 of 2
    shard = AutoModelForCausalLM.from_pretrained(folder, tp_plan="auto")
    want = full.model.layers[0].self_attn.q_proj.weight.asnumpy()
    got = shard.model.layers[0].self_attn.q_proj.weight.asnumpy()
    assert got.shape[0] == want.shape[0] // 2
    np.testing.assert_array_equal(got, want[:got.shape[0]])


# ------------------------------------------------------------------------- 7. dtypes no model is built in
@pytest.mark.parametrize("dtype,error", [("int8", ValueError), ("float8_e4m3fn", TypeError)])
@pytest.mark.parametrize("where", ["config", "kwarg"])
def test_non_float_dtype_is_refused_as_hf_does(tiny_llama, tmp_path, dtype, error, where):
    import transformers

    folder, kwargs = tiny_llama, {"dtype": dtype}
    if where == "config":
        folder, kwargs = str(shutil.copytree(tiny_llama, tmp_path / "c")), {}
        edit_json(os.path.join(folder, "config.json"), dtype=dtype)
    with pytest.raises(error):
        transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    with pytest.raises(error, match=f"dtype='{dtype}'"):
        AutoModelForCausalLM.from_pretrained(folder, **kwargs)

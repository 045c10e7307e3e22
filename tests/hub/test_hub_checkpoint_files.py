"""Checkpoint file resolution through the hub (the local server in tests/hub/): the same rules as a local
folder (tests/test_checkpoint_files.py), compared with HF transformers downloading from the same server,
and weights downloaded only once the config is accepted."""
import json
import os
import shutil

import numpy as np
import pytest

from mindformers_hf import AutoModelForCausalLM, CheckpointError
from tests.conftest import batch, edit_json, make_hf_checkpoint
from tests.test_checkpoint_files import stale_index_folder

REPO = "org/files"


def _ids():
    return batch(pad_left=(0, 0))[0]


def _ours(repo, **kwargs):
    return np.asarray(AutoModelForCausalLM.from_pretrained(repo, **kwargs)(input_ids=_ids()).logits)


def _hf(repo, **kwargs):
    """HF transformers, downloading from the same local hub (hub_env points it there)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(repo, dtype=torch.float32, **kwargs).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(_ids())).logits.numpy()


def _weight_gets(server, start=0):
    return [p.split("?")[0].split("/resolve/", 1)[1].split("/", 1)[1] for m, p, _ in server.requests[start:]
            if m == "GET" and "/resolve/" in p and p.split("?")[0].endswith((".safetensors", ".gguf"))]


def test_index_naming_a_file_outside_the_repo_is_refused(hub_env, tmp_path):
    folder = make_hf_checkpoint(tmp_path / "m", save_kwargs={"max_shard_size": "30KB"})
    index_path = os.path.join(folder, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"] = {k: ("../other.safetensors" if v == shard else v) for k, v in index["weight_map"].items()}
    with open(index_path, "w") as f:
        json.dump(index, f)
    hub_env.server.add_folder(REPO, folder)
    with pytest.raises(CheckpointError, match="outside the model directory: '../other.safetensors'"):
        AutoModelForCausalLM.from_pretrained(REPO)
    assert _weight_gets(hub_env.server) == []  # refused before any shard was fetched
    with pytest.raises(ValueError, match="outside the model directory"):
        _hf(REPO)


@pytest.mark.parametrize("change,error,match", [
    ({"quantization_config": {"quant_method": "awq", "bits": 4}}, NotImplementedError, "quant_method 'awq'"),
    ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, NotImplementedError,
     "quant_method 'bitsandbytes'"),
    ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, ValueError, "Unrecognized model type 'bert'"),
])
def test_unloadable_config_is_refused_before_any_weight_download(hub_env, tiny_llama, tmp_path, change, error,
                                                                 match):
    folder = shutil.copytree(tiny_llama, tmp_path / "q")
    edit_json(os.path.join(folder, "config.json"), **change)
    hub_env.server.add_folder(REPO, folder)
    with pytest.raises(error, match=match):
        AutoModelForCausalLM.from_pretrained(REPO)
    assert hub_env.server.count("GET", "/config.json") >= 1
    assert _weight_gets(hub_env.server) == []


def test_subfolder_and_variant_download_and_load_what_hf_loads(hub_env, tmp_path):
    root = make_hf_checkpoint(tmp_path / "root")
    make_hf_checkpoint(tmp_path / "root" / "sub", seed=1)
    make_hf_checkpoint(tmp_path / "root", seed=2, save_kwargs={"variant": "fp16", "max_shard_size": "30KB"})
    server = hub_env.server
    server.add_folder(REPO, root)
    for kwargs, fetched in (({"subfolder": "sub"}, {"sub/model.safetensors"}),
                            ({"variant": "fp16"}, {n for n in os.listdir(root) if n.startswith("model.fp16-")})):
        start = len(server.requests)
        got = _ours(REPO, **kwargs)
        assert set(_weight_gets(server, start)) == fetched, kwargs
        np.testing.assert_allclose(got, _hf(REPO, **kwargs), atol=1e-4, rtol=0, err_msg=str(kwargs))


def test_model_safetensors_wins_over_a_stale_index(hub_env, tmp_path):
    hub_env.server.add_folder(REPO, stale_index_folder(tmp_path / "m"))
    got = _ours(REPO)
    assert _weight_gets(hub_env.server) == ["model.safetensors"]
    np.testing.assert_allclose(got, _hf(REPO), atol=1e-4, rtol=0)

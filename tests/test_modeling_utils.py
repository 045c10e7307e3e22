"""from_pretrained / save_pretrained behaviour: round trips with HF, bad input, dtypes, input kinds."""
import json
import os

import numpy as np
import pytest

import mindspore as ms
from mindformers_hf import AutoModelForCausalLM, AutoModel, CheckpointError, LlamaForCausalLM
from mindformers_hf.safetensors_io import SafetensorsFile, write_safetensors
from tests.conftest import batch, hf_forward, make_hf_checkpoint


# ---------------------------------------------------------------- round trips with HF
@pytest.mark.parametrize("max_shard_size", ["50GB", "30KB"])
def test_our_save_loads_in_hf_with_identical_logits(tiny_llama, tmp_path, max_shard_size):
    ids, mask = batch(pad_left=(0, 0))
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    out_dir = tmp_path / "saved"
    ours.save_pretrained(out_dir, max_shard_size=max_shard_size)
    files = sorted(os.listdir(out_dir))
    assert "config.json" in files and "generation_config.json" in files
    if max_shard_size == "30KB":
        assert "model.safetensors.index.json" in files and "model.safetensors" not in files
    else:
        assert "model.safetensors" in files
    want = hf_forward(tiny_llama, ids).logits.numpy()
    got_hf = hf_forward(str(out_dir), ids).logits.numpy()
    assert np.array_equal(want, got_hf)  # the same weights, bit for bit
    again = AutoModelForCausalLM.from_pretrained(out_dir)
    assert np.abs(again(input_ids=ids).logits - want).max() <= 1e-4


def test_tied_model_saves_without_lm_head_and_hf_reloads(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "tied", tie_word_embeddings=True)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "out")
    keys = SafetensorsFile(tmp_path / "out" / "model.safetensors").keys()
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    ids, _ = batch(pad_left=(0, 0))
    assert np.abs(hf_forward(str(tmp_path / "out"), ids).logits.numpy()
                  - hf_forward(folder, ids).logits.numpy()).max() == 0


def test_resave_into_same_folder_removes_stale_shards(tiny_llama, tmp_path):
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ours.save_pretrained(tmp_path, max_shard_size="30KB")
    ours.save_pretrained(tmp_path)
    assert sorted(f for f in os.listdir(tmp_path) if "safetensors" in f) == ["model.safetensors"]


def test_base_model_loads_from_causal_lm_checkpoint(tiny_llama):
    ids, _ = batch(pad_left=(0, 0))
    base = AutoModel.from_pretrained(tiny_llama)
    want = hf_forward(tiny_llama, ids, model_class="AutoModel").last_hidden_state.numpy()
    assert np.abs(base(input_ids=ids).last_hidden_state - want).max() <= 1e-4


def test_fp16_and_bf16_files_keep_their_values(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "bf16", hf_dtype="bfloat16")
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert ours.dtype == ms.bfloat16  # dtype "auto": held as the file's bf16, as transformers 5 does
    ours.save_pretrained(tmp_path / "bf16_saved")
    original, saved = SafetensorsFile(os.path.join(folder, "model.safetensors")), SafetensorsFile(
        tmp_path / "bf16_saved" / "model.safetensors")
    assert {saved.dtype(k) for k in saved.keys()} == {"BF16"}
    for key in original.keys():  # bit for bit
        assert np.array_equal(original._raw(key), saved._raw(key)), key
    ours = AutoModelForCausalLM.from_pretrained(folder, dtype="float16")
    assert ours.dtype == ms.float16
    ours.save_pretrained(tmp_path / "fp16")
    reader = SafetensorsFile(tmp_path / "fp16" / "model.safetensors")
    assert {reader.dtype(k) for k in reader.keys()} == {"F16"}
    with open(tmp_path / "fp16" / "config.json") as f:
        assert json.load(f)["dtype"] == "float16"


@pytest.mark.parametrize("dtype", ["float32", "fp16", "bfloat16", "auto", ms.float16, None])
def test_dtype_spellings(tiny_llama, dtype):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=dtype)
    expected = {"fp16": ms.float16, ms.float16: ms.float16, "bfloat16": ms.bfloat16}.get(dtype, ms.float32)
    assert model.dtype == expected


def test_torch_dtype_objects(tiny_llama):
    import torch

    assert AutoModelForCausalLM.from_pretrained(tiny_llama, torch_dtype=torch.float16).dtype == ms.float16
    assert AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).dtype == ms.float32


# ---------------------------------------------------------------- bad input
def test_bad_dtype_string(tiny_llama):
    with pytest.raises(ValueError, match="Unknown dtype 'float17'"):
        AutoModelForCausalLM.from_pretrained(tiny_llama, dtype="float17")


def _copy_checkpoint(src, dst):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f_in, open(os.path.join(dst, name), "wb") as f_out:
            f_out.write(f_in.read())
    return str(dst)


def test_truncated_file(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "t")
    path = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    with pytest.raises(CheckpointError, match="truncated"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_corrupt_header(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "c")
    path = os.path.join(folder, "model.safetensors")
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\xff\xfe garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        AutoModelForCausalLM.from_pretrained(folder)


def _rewrite(folder, edit):
    """Rewrite model.safetensors with `edit(dict of arrays)` applied."""
    path = os.path.join(folder, "model.safetensors")
    reader = SafetensorsFile(path)
    arrays = {k: reader.get(k) for k in reader.keys()}
    reader.close()
    edit(arrays)
    entries = [(k, (a.shape, "F32", lambda a=a: a)) for k, a in arrays.items()]
    write_safetensors(path, entries)


def test_wrong_shape_names_key_file_and_shapes(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "s")
    _rewrite(folder, lambda a: a.__setitem__("model.norm.weight", np.ones(63, np.float32)))
    with pytest.raises(CheckpointError) as err:
        AutoModelForCausalLM.from_pretrained(folder)
    message = str(err.value)
    assert "model.norm.weight" in message and "model.safetensors" in message
    assert "(63,)" in message and "(64,)" in message


def test_missing_key(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "m")
    _rewrite(folder, lambda a: a.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"Missing keys.*model\.layers\.1\.mlp\.up_proj\.weight \(96, 64\)"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_unexpected_key(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "u")
    _rewrite(folder, lambda a: a.__setitem__("model.layers.0.extra.weight", np.ones(3, np.float32)))
    with pytest.raises(CheckpointError, match=r"Unexpected key 'model\.layers\.0\.extra\.weight'.*model\.safetensors"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_old_rotary_buffers_are_skipped(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "r")
    _rewrite(folder, lambda a: a.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", np.ones(8, np.float32)))
    AutoModelForCausalLM.from_pretrained(folder)


def test_unknown_model_type(tiny_llama, tmp_path):
    folder = _copy_checkpoint(tiny_llama, tmp_path / "k")
    from tests.conftest import edit_json

    edit_json(os.path.join(folder, "config.json"), model_type="no_such_model")
    with pytest.raises(ValueError, match="no_such_model"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_pickle_only_folder_is_refused(tmp_path, tiny_llama):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text(open(os.path.join(tiny_llama, "config.json")).read())
    (folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileNotFoundError, match="never unpickled"):
        AutoModelForCausalLM.from_pretrained(folder)


def test_interrupted_save_leaves_previous_file_intact(tiny_llama, tmp_path):
    path = tmp_path / "model.safetensors"
    good = [("a", ((2,), "F32", lambda: np.ones(2, np.float32)))]
    write_safetensors(path, good)

    def explode():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_safetensors(path, [("a", ((2,), "F32", explode))])
    assert SafetensorsFile(path).get("a").tolist() == [1.0, 1.0]
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_ignored_kwargs_warn_once(tiny_llama, monkeypatch):
    from mindformers_hf import utils

    seen = []
    monkeypatch.setattr(utils, "_warned", set())
    monkeypatch.setattr(utils.logger, "warning", lambda message, *a, **k: seen.append(message))
    AutoModelForCausalLM.from_pretrained(tiny_llama, device_map="auto", low_cpu_mem_usage=True)
    AutoModelForCausalLM.from_pretrained(tiny_llama, device_map="auto")
    assert len([m for m in seen if "device_map" in m]) == 1
    assert len([m for m in seen if "low_cpu_mem_usage" in m]) == 1


# ---------------------------------------------------------------- forward surface
def test_input_kinds_and_output_access(tiny_llama):
    import torch

    ids, mask = batch(pad_left=(0, 0))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    out_np = model(input_ids=ids, labels=ids)
    assert isinstance(out_np.logits, np.ndarray)
    assert out_np[0] is out_np.loss and out_np["logits"] is out_np.logits and out_np[1] is out_np.logits
    # as transformers 5.25: loss, logits and the cache the forward built (use_cache defaults to the config's);
    # HF's key for it is `cache`, ours `past_key_values` with `cache` as an alias (docs/differences.md)
    assert list(out_np.keys()) == ["loss", "logits", "past_key_values"] and out_np.cache is out_np.past_key_values
    out_pt = model(input_ids=torch.tensor(ids))
    assert isinstance(out_pt.logits, torch.Tensor) and out_pt[0] is out_pt.logits
    out_ms = model(input_ids=ms.Tensor(ids))
    assert isinstance(out_ms.logits, ms.Tensor)
    assert np.array_equal(out_ms.logits.asnumpy(), out_np.logits)
    loss, logits, _ = model(input_ids=ids, labels=ids, return_dict=False)  # (HF's tuple has 3 items too)
    assert np.array_equal(logits, out_np.logits)


def test_inputs_embeds_and_position_ids_match_hf(tiny_llama):
    import torch
    import transformers

    ids, _ = batch(pad_left=(0, 0))
    positions = np.tile(np.arange(5, 5 + ids.shape[1]), (ids.shape[0], 1))
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    embeds = ours.get_input_embeddings().weight.asnumpy()[ids]
    with torch.no_grad():
        want = hf(inputs_embeds=torch.tensor(embeds), position_ids=torch.tensor(positions)).logits.numpy()
    got = ours(inputs_embeds=embeds, position_ids=positions).logits
    assert np.abs(got - want).max() <= 1e-4
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        ours(input_ids=ids, inputs_embeds=embeds)


def test_model_surface(tiny_llama):
    import transformers

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert isinstance(model, LlamaForCausalLM)
    assert model.num_parameters() == hf.num_parameters()
    assert model.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True)
    assert model.device == "cpu" and model.config.model_type == "llama"
    assert {n for n, _ in model.named_parameters()} == {n for n, _ in hf.named_parameters()}
    assert model.generation_config.bos_token_id == 1
    ids, _ = batch(pad_left=(0, 0))
    full = model(input_ids=ids).logits
    assert model.to("cpu").half().dtype == ms.float16  # device strings are no-ops, dtypes cast
    assert {p.dtype for p in model.parameters()} == {ms.float16}
    assert np.abs(model(input_ids=ids).logits.astype(np.float32) - full).max() < 5e-2
    assert model.float().dtype == ms.float32


def test_tokenizer_to_device_with_every_kind(tiny_llama, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(128)}
    vocab["[UNK]"] = 127
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="w0", unk_token="[UNK]").save_pretrained(tmp_path)
    from mindformers_hf import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for kind in ["np", "pt", "ms"]:
        enc = tok(["w5 w6 w7", "w9"], return_tensors=kind, padding=True).to(model.device)
        out = model(**enc)
        assert out.logits.shape == (2, 3, 128)
    enc = tok("w5 w6", return_tensors="ms")
    assert isinstance(enc["input_ids"], ms.Tensor)

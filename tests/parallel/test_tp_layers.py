"""Tensor-parallel layers and plan in one process: every rank's shard is built with a mesh that has no group
(no collectives), and the ranks' partial results are combined by hand (concat or sum) and compared with the
unsharded layer of the same HF checkpoint. The real collectives run in test_tp_msrun.py."""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.layers import Embedding, Linear
from mindformers_hf.modeling_utils import find_checkpoint_files
from mindformers_hf.parallel import TPMesh, apply_tensor_parallel, resolve_tp_plan
from mindformers_hf.parallel.layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, even_range
from mindformers_hf.parallel.loading import load_tensor_parallel_checkpoint
from mindformers_hf.safetensors_io import SafetensorsFile, write_safetensors
from tests.conftest import make_hf_checkpoint

rng = np.random.default_rng(0)


def _linear(in_f, out_f, bias):
    layer = Linear(in_f, out_f, bias)
    weight = rng.standard_normal((out_f, in_f)).astype(np.float32)
    layer.weight.set_data(ms.Tensor(weight))
    b = rng.standard_normal(out_f).astype(np.float32) if bias else None
    if bias:
        layer.bias.set_data(ms.Tensor(b))
    return layer, weight, b


def test_column_parallel_concat_equals_full():
    full, weight, bias = _linear(8, 12, True)
    x = ms.Tensor(rng.standard_normal((2, 3, 8)).astype(np.float32))
    parts = []
    for rank in range(2):
        layer = ColumnParallelLinear(8, 12, [even_range(12, rank, 2)], TPMesh(rank, 2), bias=True)
        layer.weight_loader(layer.weight, weight)
        layer.weight_loader(layer.bias, bias)
        assert layer.weight.shape == (6, 8)
        parts.append(layer.partial(x).asnumpy())
    np.testing.assert_allclose(np.concatenate(parts, -1), full(x).asnumpy(), rtol=1e-6, atol=1e-6)


def test_row_parallel_sum_plus_bias_once_equals_full():
    full, weight, bias = _linear(12, 8, True)
    x = rng.standard_normal((2, 3, 12)).astype(np.float32)
    total = 0
    for rank in range(2):
        cols = even_range(12, rank, 2)
        layer = RowParallelLinear(12, 8, cols, TPMesh(rank, 2), bias=True)
        layer.weight_loader(layer.weight, weight)
        layer.weight_loader(layer.bias, bias)
        total = total + layer.partial(ms.Tensor(x[..., cols[0]:cols[1]])).asnumpy()
    np.testing.assert_allclose(total + bias, full(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)


def test_vocab_parallel_embedding_and_tied_logits_with_padding():
    vocab, dim = 11, 4  # 11 rows over 2 ranks: 6 + 5, the last rank padded with a zero row
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    full = Embedding(vocab, dim)
    full.weight.set_data(ms.Tensor(table))
    ids = ms.Tensor(np.array([[0, 5, 6, 10], [3, 7, 1, 9]], np.int32))
    hidden = rng.standard_normal((2, 4, dim)).astype(np.float32)
    summed, logits = 0, []
    for rank in range(2):
        layer = VocabParallelEmbedding(vocab, dim, even_range(vocab, rank, 2, pad=True), TPMesh(rank, 2))
        layer.weight_loader(layer.weight, table)
        summed = summed + layer.partial(ids).asnumpy()
        logits.append(layer.partial_logits(ms.Tensor(hidden)).asnumpy())
    np.testing.assert_allclose(summed, full(ids).asnumpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(logits, -1)[..., :vocab], hidden @ table.T, rtol=1e-5, atol=1e-5)


def test_get_slice_reads_only_the_slice(tmp_path):
    array = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    path = tmp_path / "t.safetensors"
    write_safetensors(path, [("w", ((6, 10), "F32", lambda: array))])
    reader = SafetensorsFile(path)
    np.testing.assert_array_equal(reader.get_slice("w", 1, 3, 7), array[:, 3:7])
    assert reader.bytes_read == 6 * 4 * 4
    np.testing.assert_array_equal(reader.get_slice("w", 0, 2, 4), array[2:4])
    assert reader.bytes_read == 6 * 4 * 4 + 2 * 10 * 4
    with pytest.raises(ValueError, match="outside"):
        reader.get_slice("w", 1, 8, 11)


def _shards(folder, size):
    """Each rank's model, sharded by the config's plan and loaded through the weight loaders."""
    models = []
    for rank in range(size):
        model = AutoModelForCausalLM.from_pretrained(folder)
        apply_tensor_parallel(model, TPMesh(rank, size), resolve_tp_plan(model, "auto"))
        model.tp_load_stats = load_tensor_parallel_checkpoint(model, find_checkpoint_files(folder))
        models.append(model)
    return models


def _one_layer_checkpoint(tmp_path, family):
    if family in ("chatglm", "internlm2"):  # remote formats: renaming tables, fused qkv (2 KV groups), q/k/v bias;
        # ChatGLM also a fused gate_up, InternLM2's wqkv grouped per KV head (rows permuted lazily at load)
        from tests.models import test_remote_formats

        return getattr(test_remote_formats, f"{family}_checkpoint")(tmp_path / family)[0]
    config, cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
                   "phi3": ("Phi3Config", "Phi3ForCausalLM"), "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM")}[family]
    extra = {"pad_token_id": 0} if family != "phi3" else {"pad_token_id": 0, "num_key_value_heads": 2}
    if family == "qwen2_moe":  # per-expert keys stacked at load, experts split by width, gated shared expert
        extra.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                     norm_topk_prob=True)
    return make_hf_checkpoint(tmp_path / family, config, cls, num_hidden_layers=1, **extra)


@pytest.mark.parametrize("family,size", [("llama", 2), ("llama", 4), ("qwen2", 2), ("phi3", 2), ("qwen2_moe", 2),
                                         ("chatglm", 2), ("internlm2", 2)])
def test_sharded_attention_and_mlp_sum_to_full(tmp_path, family, size):
    """tp=4 with 2 KV heads replicates each KV head on two ranks; Phi3 splits fused qkv/gate_up per block;
    Qwen2-MoE and the ChatGLM format load through the shared pipeline (stacking, renaming) by slices."""
    folder = _one_layer_checkpoint(tmp_path, family)
    full = AutoModelForCausalLM.from_pretrained(folder)
    hidden = ms.Tensor(rng.standard_normal((2, 5, 64)).astype(np.float32))
    position_ids = ms.Tensor(np.arange(5, dtype=np.int32).reshape(1, 5))
    cos, sin = full.model.rotary_emb(hidden, position_ids)
    mask = full.model.causal_masks(None, 2, 5, 0)["full_attention"]
    layer = full.model.layers[0]
    want_attn = layer.self_attn(hidden, cos, sin, mask).asnumpy()
    want_mlp = layer.mlp(hidden).asnumpy()
    attn_sum = mlp_sum = 0
    for model in _shards(folder, size):
        shard = model.model.layers[0]
        assert shard.self_attn.num_heads == 4 // size
        attn_sum = attn_sum + shard.self_attn(hidden, cos, sin, mask).asnumpy()
        mlp_sum = mlp_sum + shard.mlp(hidden).asnumpy()
        stats = model.tp_load_stats
        assert stats["sharded_bytes_read"] <= stats["sharded_bytes_in_file"] * (0.6 if size == 2 else 0.35)
    with pytest.raises(NotImplementedError, match="tensor-parallel model"):
        model.save_pretrained(tmp_path / "saved")
    if layer.self_attn.o_proj.bias is not None:  # (InternLM2) each rank adds it after its reduce: count it once
        attn_sum = attn_sum - (size - 1) * layer.self_attn.o_proj.bias.asnumpy()
    np.testing.assert_allclose(attn_sum, want_attn, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mlp_sum, want_mlp, rtol=1e-5, atol=1e-5)


def test_world_size_not_dividing_heads_is_a_clear_error(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "hf", num_hidden_layers=1)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(ValueError, match="tensor parallel size 3 does not divide num_attention_heads=4"):
        apply_tensor_parallel(model, TPMesh(0, 3), resolve_tp_plan(model, "auto"))


def test_unsupported_style_and_gguf_are_refused(tmp_path):
    folder = make_hf_checkpoint(tmp_path / "hf", num_hidden_layers=1)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(NotImplementedError, match="sequence_parallel"):
        apply_tensor_parallel(model, TPMesh(0, 2), {"model.norm": "sequence_parallel"})
    with pytest.raises(NotImplementedError, match="GGUF"):
        type(model).from_pretrained(folder, tp_plan="auto", gguf_file="x.gguf")

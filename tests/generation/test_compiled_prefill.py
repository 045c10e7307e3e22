"""generate()'s compiled prefill (models/llama/decoder_layer.py under `compiled_layers`): one graph shared by all
LLaMA-shaped decoder layers, on prompts left-padded to `prefill_length`. Expected values come from HF transformers on
torch; the compiled forward is checked against the eager one (the same decoder-layer function)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import transformers  # noqa: E402
import mindspore as ms  # noqa: E402

from mindformers_hf import AutoModelForCausalLM  # noqa: E402
from mindformers_hf.cache_utils import DynamicCache  # noqa: E402
from mindformers_hf.compiled_layers import compiled_layers, supports_compiled_layers  # noqa: E402
from mindformers_hf.generation.runner import prefill_length  # noqa: E402
from mindformers_hf.ops import registry  # noqa: E402
from tests.conftest import batch, make_hf_checkpoint  # noqa: E402


def test_prefill_length_buckets():
    assert [prefill_length(n) for n in (1, 32, 33, 500, 512, 513, 1000)] == [32, 32, 64, 512, 512, 640, 1024]


# the decoder-layer variants: biased q/k/v (Qwen2), q/k norm (Qwen3), fused qkv and gate/up (Phi3), interleaved
# partial rotary (GLM), sandwich norms (GLM4), (1 + w) norms, scaled embeddings and GeGLU (Gemma),
# four norms, soft-capping and sliding layers (Gemma 2), rope per layer type and (1 + w) q/k norms (Gemma 3)
VARIANTS = {
    "llama": {},
    "qwen2": dict(config_class="Qwen2Config", model_class="Qwen2ForCausalLM"),
    "qwen3": dict(config_class="Qwen3Config", model_class="Qwen3ForCausalLM"),
    "phi3": dict(config_class="Phi3Config", model_class="Phi3ForCausalLM"),
    "glm": dict(config_class="GlmConfig", model_class="GlmForCausalLM"),
    "glm4": dict(config_class="Glm4Config", model_class="Glm4ForCausalLM"),
    "gemma": dict(config_class="GemmaConfig", model_class="GemmaForCausalLM", head_dim=16),
    "gemma2": dict(config_class="Gemma2Config", model_class="Gemma2ForCausalLM", head_dim=16, sliding_window=4,
                   attn_logit_softcapping=1.5, final_logit_softcapping=2.0),
    "gemma3_text": dict(config_class="Gemma3TextConfig", model_class="Gemma3ForCausalLM", head_dim=16,
                        sliding_window=4, layer_types=["sliding_attention", "full_attention"]),
    # sparse MoE layers (router, moe_experts kernel, gated shared expert) in the graph: with the CPU kernel only
    "qwen2_moe": dict(config_class="Qwen2MoeConfig", model_class="Qwen2MoeForCausalLM", num_experts=4,
                      num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48),
}


@pytest.mark.parametrize("family", list(VARIANTS))
def test_compiled_forward_equals_eager_and_fills_the_cache(tmp_path, family, layer_graph_shapes):
    """"prefill" (generate's mode: only the last position is read, so the last layer computes only that
    one after its keys and values) and "train" (every position; LLaMA and Qwen2 only, to keep compilations few)
    against the eager forward, which runs the same decoder-layer function over the modules."""
    if family == "qwen2_moe" and registry.implementation_name("moe_experts") != "cpu":
        pytest.skip("MoE layers are compiled only with the moe_experts CPU kernel")
    model = AutoModelForCausalLM.from_pretrained(make_hf_checkpoint(tmp_path / family, **VARIANTS[family]))
    ids, mask = batch(rows=2, length=13, pad_left=(0, 4), seed=1)

    def forward(mode, cache):
        cache = DynamicCache() if cache else None
        with compiled_layers(model, mode or None):
            out = model(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask), past_key_values=cache,
                        use_cache=cache is not None)
        kv = [t.asnumpy() for t in cache.key_cache + cache.value_cache] if cache is not None else []
        return out.logits.asnumpy(), kv

    eager_logits, eager_kv = forward(False, True)
    assert not layer_graph_shapes
    prefill_logits, prefill_kv = forward("prefill", True)
    assert len(layer_graph_shapes) == model.config.num_hidden_layers
    assert prefill_logits.shape[1] == 1  # the caller (generate) keeps only the last position
    np.testing.assert_allclose(prefill_logits[:, 0], eager_logits[:, -1], atol=1e-5)
    for got, want in zip(prefill_kv, eager_kv):
        np.testing.assert_allclose(got, want, atol=1e-5)
    if family not in ("llama", "qwen2"):
        return
    train_logits, _ = forward("train", False)
    valid = mask.astype(bool)
    np.testing.assert_allclose(train_logits[valid], eager_logits[valid], atol=1e-5)


def test_generate_pads_compiles_once_per_length_and_matches_hf(tiny_llama, layer_graph_shapes):
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    for length in (9, 20):  # both pad to 32: one graph shape
        ids, mask = batch(rows=2, length=length, pad_left=(0, 3), seed=length)
        with torch.no_grad():
            want = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), max_new_tokens=6,
                               do_sample=False).numpy()
        got = ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        np.testing.assert_array_equal(got, want)
    assert {tuple(shape) for shape in layer_graph_shapes} == {(2, 32, ours.config.hidden_size)}


def test_disable_compile_and_other_layers_stay_eager(tmp_path, tiny_llama, layer_graph_shapes):
    ours = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids, mask = batch(rows=1, length=7, pad_left=(0,), seed=2)
    ours.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False, disable_compile=True)
    assert not layer_graph_shapes
    mixtral = AutoModelForCausalLM.from_pretrained(make_hf_checkpoint(
        tmp_path / "mixtral", config_class="MixtralConfig", model_class="MixtralForCausalLM", num_local_experts=4,
        num_experts_per_tok=2))
    # MoE layers join the graph only with the moe_experts CPU kernel (the grouped and reference experts read
    # the routing on the host or loop in Python), not while router logits are recorded, not while training
    layer = mixtral.model.layers[0]
    assert (layer.graph_spec() is not None) == (registry.implementation_name("moe_experts") == "cpu")
    layer.mlp.gate.recording = True
    assert layer.graph_spec() is None
    layer.mlp.gate.recording = False
    mixtral.set_train(True)
    assert layer.graph_spec() is None
    mixtral.set_train(False)
    with registry.use_kernels("reference"):
        assert layer.graph_spec() is None and not supports_compiled_layers(mixtral)
        mixtral.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False)
    assert not layer_graph_shapes

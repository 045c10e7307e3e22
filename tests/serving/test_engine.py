"""The engine offline (`LLM.generate`): greedy equals HF transformers' through chunked prefill, preemption and
the paged cache; sampling, stop strings and limits."""
import pytest

from mindformers_hf.serving import LLM, SamplingParams

PROMPTS = ["The capital of France", "héllo wörld 世界 " * 4, "def add(a, b):", "Once upon a time there was"]


@pytest.fixture(scope="module")
def llm_and_hf(chat_llama):
    from mindformers_hf import AutoModelForCausalLM, AutoTokenizer

    from .conftest import Served

    tokenizer = AutoTokenizer.from_pretrained(chat_llama)
    model = AutoModelForCausalLM.from_pretrained(chat_llama)
    oracle = Served.__new__(Served)  # only its HF helpers: no server
    oracle.folder, oracle.tokenizer, oracle._hf = chat_llama, tokenizer, None
    # 4 tokens per block, 24 blocks, 8 tokens per step: every prompt is prefilled in chunks and the pool is
    # too small for all four sequences at their longest, so some are preempted and recomputed
    llm = LLM(model, tokenizer, max_num_seqs=4, max_num_batched_tokens=8, block_size=4, num_blocks=24)
    return llm, oracle


def test_greedy_equals_hf_through_chunked_prefill_and_preemption(llm_and_hf):
    llm, oracle = llm_and_hf
    outs = llm.generate(PROMPTS, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
    for prompt, out in zip(PROMPTS, outs):
        ids = oracle.tokenizer(prompt)["input_ids"]
        assert out.prompt_token_ids == ids
        expected = oracle.hf.generate(__import__("torch").tensor([ids]), max_new_tokens=20, do_sample=False,
                                      min_new_tokens=20, pad_token_id=0)[0, len(ids):].tolist()
        assert out.outputs[0].token_ids == expected
        assert out.outputs[0].finish_reason == "length"
    assert llm.engine.scheduler.num_preemptions > 0
    assert llm.engine.kv_blocks()[0] == 0


def test_sampling_is_seeded_and_top_k_1_is_greedy(llm_and_hf):
    llm, _ = llm_and_hf
    greedy = llm.generate(PROMPTS[0], SamplingParams(max_tokens=8, temperature=0, ignore_eos=True))[0]
    top1 = llm.generate(PROMPTS[0], SamplingParams(max_tokens=8, temperature=0.8, top_k=1, ignore_eos=True))[0]
    assert top1.outputs[0].token_ids == greedy.outputs[0].token_ids
    params = SamplingParams(max_tokens=8, temperature=1.0, top_p=0.9, seed=7, n=3, ignore_eos=True)
    first, again = llm.generate(PROMPTS[0], params)[0], llm.generate(PROMPTS[0], params)[0]
    assert [o.token_ids for o in first.outputs] == [o.token_ids for o in again.outputs]
    assert len({tuple(o.token_ids) for o in first.outputs}) > 1  # the choices differ from each other


def test_stop_strings_cut_the_text(llm_and_hf):
    llm, _ = llm_and_hf
    full = llm.generate(PROMPTS[3], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0].outputs[0]
    stop = full.text[5:8]
    cut = llm.generate(PROMPTS[3], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True,
                                                  stop=stop))[0].outputs[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.index(stop)]


def test_invalid_requests_name_the_problem(llm_and_hf):
    llm, _ = llm_and_hf
    with pytest.raises(ValueError, match="max_tokens"):
        llm.generate("hi", SamplingParams(max_tokens=0))
    with pytest.raises(ValueError, match="top_p"):
        llm.generate("hi", SamplingParams(top_p=0))
    with pytest.raises(ValueError, match="context length"):
        llm.generate("hi", SamplingParams(max_tokens=10 ** 4))
    assert llm.engine.kv_blocks()[0] == 0 and not llm.engine.has_unfinished_requests()


def test_models_without_prebuilt_masks_are_refused_by_name():
    class EncoderDecoderModel:  # no per-layer-type causal masks (Whisper, say)
        base_model_prefix = "model"

    with pytest.raises(NotImplementedError, match="EncoderDecoderModel"):
        LLM(EncoderDecoderModel(), tokenizer=object())


class _IdsTokenizer:
    """Enough of a tokenizer for token-id prompts."""
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.mark.parametrize("config_class, model_class, overrides", [
    ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4}),            # windowed masks over paged blocks
    ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),  # MoE: eager step
    ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=32, n_layer=2, n_head=2, vocab_size=128, n_positions=64)),
    ("DeepseekV2Config", "DeepseekV2ForCausalLM", dict(  # MLA: the pool holds the latent and the rotary key
        num_hidden_layers=2, num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=12, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
        first_k_dense_replace=1, n_shared_experts=1)),
])
def test_other_llama_shaped_families_equal_hf(tmp_path, config_class, model_class, overrides):
    import numpy as np
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM

    from ..conftest import make_hf_checkpoint

    folder = make_hf_checkpoint(tmp_path, config_class, model_class, **overrides)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    llm = LLM(AutoModelForCausalLM.from_pretrained(folder), _IdsTokenizer(), max_num_batched_tokens=5, block_size=4)
    prompts = [np.random.default_rng(i).integers(3, 128, size=n).tolist() for i, n in enumerate((11, 3, 7))]
    outs = llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0))
    for prompt, out in zip(prompts, outs):
        with torch.no_grad():
            want = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False,
                               pad_token_id=0)[0, len(prompt):].tolist()
        want = want[:want.index(2) + 1] if 2 in want else want
        assert out.outputs[0].token_ids == want


def test_first_chunks_run_through_the_compiled_layer_graph(llm_and_hf, layer_graph_shapes):
    """A sequence's first prompt chunk runs as generate's compiled prefill (padded to 32 tokens); later
    chunks attend to the cache and run op by op; the tokens stay HF's (the greedy test above)."""
    llm, oracle = llm_and_hf
    ids = oracle.tokenizer(PROMPTS[1])["input_ids"]   # longer than the 8-token budget: several chunks
    out = llm.generate([ids], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))[0]
    layers = llm.engine.model.config.num_hidden_layers
    assert layer_graph_shapes == [(1, 32, llm.engine.model.config.hidden_size)] * layers
    import torch

    want = oracle.hf.generate(torch.tensor([ids]), max_new_tokens=3, min_new_tokens=3, do_sample=False,
                              pad_token_id=0)[0, len(ids):].tolist()
    assert out.outputs[0].token_ids == want


def test_first_chunks_of_one_step_run_as_one_batch(llm_and_hf, layer_graph_shapes):
    """Prompts admitted in the same step run their first chunks as one batched forward per padded length (the
    batch padded to a power of two with rows that are all padding); each still gets HF's greedy tokens."""
    llm, oracle = llm_and_hf
    roomy = LLM(llm.engine.model, oracle.tokenizer, max_num_seqs=8, max_num_batched_tokens=512, block_size=4,
                num_blocks=64)
    prompts = PROMPTS[:1] + PROMPTS[2:]                      # three prompts that pad to 32 tokens
    outs = roomy.generate(prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    layers = llm.engine.model.config.num_hidden_layers
    assert layer_graph_shapes == [(4, 32, llm.engine.model.config.hidden_size)] * layers
    import torch

    for prompt, out in zip(prompts, outs):
        ids = oracle.tokenizer(prompt)["input_ids"]
        want = oracle.hf.generate(torch.tensor([ids]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                  pad_token_id=0)[0, len(ids):].tolist()
        assert out.outputs[0].token_ids == want
    assert roomy.engine.kv_blocks()[0] == 0


@pytest.mark.parametrize("mode", ["auto", "reference"])
def test_attention_reads_the_pool_through_ops_paged_attention(llm_and_hf, monkeypatch, mode):
    """Every forward's attention (compiled decode, later prompt chunks) goes through ops.paged_attention: the
    CPU kernel by default, the gather reference in "reference" mode; the tokens are HF's either way."""
    import torch

    from mindformers_hf import ops as fused
    from mindformers_hf.ops import registry

    llm, oracle = llm_and_hf
    calls = []
    for name, impl in registry._TABLE["paged_attention"].items():
        monkeypatch.setattr(impl, "fn", lambda *a, _f=impl.fn, _n=name: calls.append(_n) or _f(*a))
    fresh = LLM(llm.engine.model, oracle.tokenizer, max_num_seqs=4, max_num_batched_tokens=8, block_size=4,
                num_blocks=24)   # a new engine: its decode step is traced (selected) under this mode
    ids = [oracle.tokenizer(p)["input_ids"] for p in PROMPTS[:2]]
    with fused.use_kernels(mode):
        outs = fresh.generate(ids, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    expected = "reference" if mode == "reference" else registry.implementation_name("paged_attention")
    assert calls and set(calls) == {expected}
    for prompt, out in zip(ids, outs):
        want = oracle.hf.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                  pad_token_id=0)[0, len(prompt):].tolist()
        assert out.outputs[0].token_ids == want


@pytest.mark.parametrize("kind", ["internlm", "internlm2", "chatglm", "qwen", "baichuan"])
def test_remote_formats_through_the_engine_equal_generate(tmp_path, kind):
    """The remote-code checkpoint formats read natively (tests/models/remote_formats.py writes each from an
    HF-native model; the family matrix checks generate's tokens against transformers): the engine's greedy tokens,
    through chunked prefill and the paged cache, equal generate's."""
    import numpy as np

    from mindformers_hf import AutoModelForCausalLM

    from ..models import remote_formats

    getattr(remote_formats, f"{kind}_checkpoint")(tmp_path / kind)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / kind))
    prompts = [np.random.default_rng(i).integers(3, 100, size=n).tolist() for i, n in enumerate((11, 3, 7))]
    outs = LLM(model, _IdsTokenizer(), max_num_batched_tokens=5, block_size=4).generate(
        prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    for prompt, out in zip(prompts, outs):
        want = model.generate(np.array([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                              pad_token_id=0)[0, len(prompt):].tolist()
        assert out.outputs[0].token_ids == [int(t) for t in want]

"""THE family x capability matrix: one tiny case per model family (a row) and what is tested of it (the cells).

Rows are data: the HF config and model class and the tiny kwargs (hidden 32, 2 layers, vocab 128, few experts)
for an HF-native family, or for a remote-code format the writer that produces the format's folder from a random
HF-native model (tests/models/remote_formats.py) plus that HF-native oracle. `row_folders(name)` gives
`(our_folder, hf_folder)` once per process (the same folder for a native family); `hf_model(name)` loads the
oracle (with the row's `hf_adapter`, e.g. Baichuan-13B's ALiBi on LLaMA's modules).

A cell is one of:
- TEST: tests/models/test_family_matrix.py runs it (pass / fail; `xfail=` marks a known failure, strictly);
- NODES: existing test node ids that cover it (they must exist; Whisper and a few LLaMA cells);
- PENDING: built on another branch, not wired yet (the docs say "not yet");
- NA: not applicable, with the reason.

`python -m tests.models.matrix --write-docs` regenerates the table in docs/models.md from this data;
tests/models/test_family_matrix.py asserts the file equals the generated table.
"""
import atexit
import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

CAPABILITIES = ("load", "forward", "generate", "train", "lora", "tp", "gguf", "seq_cls")
TITLES = {"load": "Load", "forward": "Forward parity", "generate": "Generate", "train": "Train", "lora": "LoRA",
          "tp": "Tensor parallel", "gguf": "GGUF", "seq_cls": "Sequence classification"}


@dataclass(frozen=True)
class Cell:
    kind: str                 # "test" | "nodes" | "pending" | "na"
    detail: str = ""          # what "yes" covers (docs), or the reason (na / pending)
    xfail: str = ""           # test cells: a known failure (strict xfail) with its reason
    nodes: tuple = ()         # nodes cells: test node ids


def TEST(detail="", xfail=""):
    return Cell("test", detail, xfail)


def NODES(*nodes, detail=""):
    return Cell("nodes", detail, nodes=tuple(nodes))


def PENDING(branch):
    return Cell("pending", f"built on branch `{branch}`")


def NA(reason):
    return Cell("na", reason)


NOT_YET = Cell("pending", "not built")  # nobody built it yet (the docs say "not yet")


@dataclass(frozen=True)
class Row:
    name: str                 # the row id (the model_type, or model_type + variant)
    model_type: str
    classes: str              # docs: the classes
    architecture: str         # the causal-LM class HF's config names (ours must build it)
    config_class: str = ""    # HF-native rows: transformers' config / model class and the tiny kwargs
    model_class: str = ""
    kwargs: dict = field(default_factory=dict)
    writer: str = ""          # "module:function": writes the folder (native) or (folder, arrays, hf) (remote)
    hf_adapter: str = ""      # "module:function(hf_model) -> hf_model", applied to the oracle on load
    seq_class: str = ""       # transformers' ...ForSequenceClassification class, when it has one
    gguf_arch: str = ""       # llama.cpp's architecture name, when transformers' GGUF loader reads it
    extra: str = ""           # "module:function(ours, our_folder, hf_folder)": row-specific forward checks
    compiled_generate: bool = False  # generate through the compiled prefill / decode graphs (else op by op)
    cells: dict = field(default_factory=dict)

    @property
    def remote(self):
        return self.model_type in REMOTE_TYPES

    def cell(self, capability):
        return self.cells[capability]


REMOTE_TYPES = ("internlm", "internlm2", "baichuan", "chatglm", "qwen", "cogvlm2")
TINY = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2)
MOE = dict(num_experts_per_tok=2, router_aux_loss_coef=0.02)
MLA = dict(num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8,
           v_head_dim=12, moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=1, n_routed_experts=4,
           num_experts_per_tok=2, n_group=2, topk_group=1)
ROUTER = "tests.models.test_mixtral_parity:router_loss_check"
GENERATE = "greedy, beam, sampling"
COMPILED = "greedy, beam, sampling; compiled"
GGUF_HF = ""
# train / LoRA of the text rows: tests/models/test_matrix_train.py (the cells of tests/models/matrix_train.py)
TRAIN = NODES("tests/models/test_matrix_train.py::test_train", detail="Trainer: 2 AdamW steps = HF Trainer")
LORA = NODES("tests/models/test_matrix_train.py::test_lora", detail="PEFT files both ways, merge")
# tensor parallel: every row of tests/parallel/test_tp_msrun.py's one msrun launch (tests/parallel/tp_matrix.py)
TP = NODES("tests/parallel/test_tp_msrun.py::test_tp2_matches_single_process_and_hf",
           detail="tp=2 logits, greedy, gradients")
# the VL rows: the same launch, through AutoModelForImageTextToText, on a batch with images
VL_TP = NODES(*TP.nodes, detail="tp=2 logits, greedy, gradients with images; vision tower replicated")
# the remote-code VL rows: the same launch, the oracle their torch reference of the published structure
REMOTE_VL_TP = NODES(*TP.nodes, detail="tp=2 logits (vs the torch reference), greedy, gradients with images; "
                                       "vision tower replicated")


def _na_gguf(arch):
    return NA(f"transformers' GGUF loader has no `{arch}` architecture")


def _na_gguf_ours(arch):
    return TEST(GGUF_HF, xfail=f"our GGUF loader does not read llama.cpp's `{arch}` architecture yet")


# measured (tests/models/test_family_matrix.py checks it on every run): no working loader to match
_GPT_OSS_GGUF = ("transformers 5.25's GGUF loader maps none of a llama.cpp `gpt-oss` file's experts "
                 "(`ffn_{gate,up,down}_exps`) or attention sinks (`attn_sinks`) to a GptOssForCausalLM parameter, so it "
                 "leaves them randomly initialised; its processor expects `ffn_*_projs` names and turns those into "
                 "per-expert `block_sparse_moe` keys GptOssForCausalLM does not have")
_REMOTE_NA_GGUF = NA("transformers has no class for this remote-code format, so neither its GGUF loader")
_REMOTE_NA_SEQ = NA("transformers has no class for this remote-code format (the Hub runs its own code)")


def _native(name, prefix, config_class, model_class, seq_class=None, gguf=None, ours_read_gguf=True, extra="",
            writer="", base=TINY, cells=None, compiled=False, **kwargs):
    """A HF-native decoder row: transformers' classes, every cell tested here (train / LoRA / tp pending).
    `gguf`: llama.cpp's name of the architecture when transformers' GGUF loader reads it."""
    gguf_cell = (TEST(GGUF_HF) if ours_read_gguf else _na_gguf_ours(gguf)) if gguf else _na_gguf(name)
    return Row(name, name, f"`{model_class}`, `{prefix}Model`", model_class, config_class, model_class,
               {**base, **kwargs}, writer=writer, seq_class=seq_class or f"{prefix}ForSequenceClassification",
               gguf_arch=gguf or "", extra=extra, compiled_generate=compiled,
               cells=dict(dict(load=TEST(), forward=TEST(), generate=TEST(COMPILED if compiled else GENERATE),
                               train=TRAIN, lora=LORA, tp=TP, gguf=gguf_cell, seq_cls=TEST()), **(cells or {})))


def _remote(name, model_type, classes, architecture, writer, vs, hf_adapter="", extra="", compiled=False, **kwargs):
    return Row(name, model_type, classes, architecture, kwargs=kwargs, writer=f"tests.models.remote_formats:{writer}",
               hf_adapter=hf_adapter, extra=extra and f"tests.models.remote_formats:{extra}",
               compiled_generate=compiled,
               cells=dict(load=TEST("remote format"), forward=TEST(f"vs {vs}"),
                          generate=TEST(COMPILED if compiled else GENERATE), train=TRAIN,
                          lora=LORA, tp=TP, gguf=_REMOTE_NA_GGUF, seq_cls=_REMOTE_NA_SEQ))


_GEMMA2 = dict(head_dim=8, tie_word_embeddings=True, query_pre_attn_scalar=24, sliding_window=4,
               attn_logit_softcapping=1.5, final_logit_softcapping=2.0)
_GEMMA3 = dict(head_dim=8, query_pre_attn_scalar=24, sliding_window=4, layer_types=["sliding_attention",
                                                                                      "full_attention"],
               rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10.0},
                                "full_attention": {"rope_type": "default", "rope_theta": 10000.0}})
_WHISPER_GEN = "tests/models/test_whisper_generate.py::"
_COG = "tests/models/test_cogvlm2_parity.py::"
_VL = "tests/models/test_qwen2_vl_parity.py::"  # both VL families (the checkpoint fixture is parametrised)
_VL_LORA = "tests/trainer/test_qwen2_vl_lora.py::test_lora_training_matches_hf_peft"  # both (fixture params)
_QWEN_VL = "tests/models/test_qwen_vl_parity.py::"
_ROWS = [
    # LLaMA's train / LoRA: the in-depth tests (test_matrix_train.py runs its cells too)
    _native("llama", "Llama", "LlamaConfig", "LlamaForCausalLM", gguf="llama", compiled=True, cells=dict(
        train=NODES("tests/trainer/test_trainer_parity.py::test_adamw_steps_match_hf_trainer",
                    "tests/trainer/test_data_parallel.py", detail="Trainer, tiny LLaMA; data parallel 2 ranks"),
        lora=NODES("tests/peft/test_lora.py::test_our_adapter_loads_in_hf_peft_with_equal_logits",
                   "tests/peft/test_lora.py::test_merge_and_unload_equals_hf_merge"))),
    _native("qwen2", "Qwen2", "Qwen2Config", "Qwen2ForCausalLM", gguf="qwen2"),
    _native("mistral", "Mistral", "MistralConfig", "MistralForCausalLM", sliding_window=4, cells=dict(gguf=NA(
        "llama.cpp writes Mistral models under its `llama` architecture (the `gguf` package has no `mistral` one, "
        "so transformers' GGUF loader cannot open a `mistral` file); such a file is the llama row's case"))),
    # head_dim 128 (Qwen3Config's default): transformers' GGUF loader reads no head_dim for `qwen3` (real Qwen3
    # models all have 128), so a file of any other head_dim does not load there
    _native("qwen3", "Qwen3", "Qwen3Config", "Qwen3ForCausalLM", gguf="qwen3", head_dim=128),
    _native("phi3", "Phi3", "Phi3Config", "Phi3ForCausalLM", gguf="phi3"),
    _native("glm", "Glm", "GlmConfig", "GlmForCausalLM", head_dim=8),
    _native("glm4", "Glm4", "Glm4Config", "Glm4ForCausalLM", head_dim=8),
    _native("gemma", "Gemma", "GemmaConfig", "GemmaForCausalLM", head_dim=8, tie_word_embeddings=True),
    _native("gemma2", "Gemma2", "Gemma2Config", "Gemma2ForCausalLM", gguf="gemma2", compiled=True, **_GEMMA2),
    _native("gemma3_text", "Gemma3Text", "Gemma3TextConfig", "Gemma3ForCausalLM", gguf="gemma3", compiled=True,
            **_GEMMA3),
    _native("gpt2", "GPT2", "GPT2Config", "GPT2LMHeadModel", gguf="gpt2",
            writer="tests.models.test_gpt2_parity:make_gpt2_checkpoint",
            base={}, seq_class="GPT2ForSequenceClassification", n_embd=32, hidden_size=32),
    _native("mixtral", "Mixtral", "MixtralConfig", "MixtralForCausalLM", extra=ROUTER, num_local_experts=4, **MOE),
    _native("qwen2_moe", "Qwen2Moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", gguf="qwen2moe",
            extra=ROUTER, num_experts=4, compiled=True,
            moe_intermediate_size=32, shared_expert_intermediate_size=48, norm_topk_prob=True, mlp_only_layers=[0],
            **MOE),
    _native("qwen3_moe", "Qwen3Moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", gguf="qwen3moe",
            extra=ROUTER, num_experts=4,
            moe_intermediate_size=32, norm_topk_prob=True, head_dim=8, **MOE),
    _native("deepseek_v2", "DeepseekV2", "DeepseekV2Config", "DeepseekV2ForCausalLM",
            extra="tests.models.test_deepseek_v2_parity:no_aux_loss_check", topk_method="group_limited_greedy",
            compiled=True,
            routed_scaling_factor=2.0, **MLA),
    _native("deepseek_v3", "DeepseekV3", "DeepseekV3Config", "DeepseekV3ForCausalLM",
            writer="tests.models.test_deepseek_v2_parity:deepseek_v3_checkpoint", routed_scaling_factor=2.5,
            norm_topk_prob=True, **MLA),
    _native("starcoder2", "Starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM", sliding_window=4,
            hidden_act="gelu_pytorch_tanh", cells=dict(gguf=NODES(
                "tests/models/test_starcoder2_gguf.py::test_starcoder2_gguf_matches_hf_gguf_loader"))),
    _native("phi", "Phi", "PhiConfig", "PhiForCausalLM", compiled=True),
    _native("olmo2", "Olmo2", "Olmo2Config", "Olmo2ForCausalLM", compiled=True),
    _native("smollm3", "SmolLM3", "SmolLM3Config", "SmolLM3ForCausalLM", compiled=True, no_rope_layers=[1, 0],
            rope_parameters={"rope_type": "default", "rope_theta": 100.0}),
    # gpt-oss: load, forward (+ router loss) and generate are its own test's (random expert biases, module fixture)
    _native("gpt_oss", "GptOss", "GptOssConfig", "GptOssForCausalLM", gguf="gpt-oss",
            head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=4, swiglu_limit=0.1,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0,
                             "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 16},
            cells=dict(**{c: NODES("tests/models/test_gpt_oss_parity.py::test_gpt_oss_matches_hf",
                                             detail=detail) for c, detail in (
                ("load", "not MXFP4"), ("forward", "+ router aux loss"), ("generate", "greedy, beam; eager layers"))},
                gguf=NA(_GPT_OSS_GGUF))),
    _remote("internlm", "internlm", "`InternLMForCausalLM`, `InternLMModel`", "InternLMForCausalLM",
            "internlm_checkpoint", "LLaMA"),
    _remote("internlm2", "internlm2", "`InternLM2ForCausalLM`, `InternLM2Model`", "InternLM2ForCausalLM",
            "internlm2_checkpoint", "LLaMA"),
    _remote("baichuan", "baichuan", "`BaichuanForCausalLM`, `BaichuanModel` (7B: rotary)", "BaichuanForCausalLM",
            "baichuan_checkpoint", "LLaMA", extra="baichuan_z_loss_check", compiled=True),
    _remote("baichuan_13b", "baichuan", "`BaichuanForCausalLM`, `BaichuanModel` (13B: ALiBi)",
            "BaichuanForCausalLM", "baichuan_alibi_checkpoint", "LLaMA + ALiBi",
            hf_adapter="tests.models.remote_formats:alibi_llama", hidden_size=96, num_attention_heads=6),
    _remote("chatglm", "chatglm", "`ChatGLMForConditionalGeneration`, `ChatGLMModel`",
            "ChatGLMForConditionalGeneration", "chatglm_checkpoint", "GLM"),
    _remote("qwen", "qwen", "`QWenLMHeadModel`, `QWenModel`", "QWenLMHeadModel", "qwen_checkpoint", "Qwen2",
            extra="qwen_seq_length_check"),
    # Qwen-VL (v1): model_type qwen with a `visual` config; no transformers class, so the oracle is a torch
    # reference written in tests/models/qwen_vl_fixtures.py from the published structure
    Row("qwen_vl", "qwen", "`QWenLMHeadModel` with a `visual` config (Qwen-VL, Qwen-VL-Chat)", "QWenLMHeadModel",
        cells=dict(
            load=NODES(_QWEN_VL + "test_published_names_load_and_save_back_bit_for_bit",
                       detail="remote format with `transformer.visual.*`; saved back bit for bit"),
            forward=NODES(_QWEN_VL + "test_image_features_logits_and_greedy_tokens_equal_reference",
                          _QWEN_VL + "test_preprocessing_equals_pil_resize_and_the_published_normalisation",
                          detail="image features, logits with images vs a torch reference of the published "
                                 "visual.py (no HF class) + Qwen2; PIL/numpy preprocessing"),
            generate=NODES(_QWEN_VL + "test_image_features_logits_and_greedy_tokens_equal_reference",
                           _QWEN_VL + "test_chat_with_an_image_follows_the_published_flow",
                           detail="`generate` greedy with images, left-padded batch; `chat` with `<img>path</img>`"),
            lora=NODES(_QWEN_VL + "test_lora_files_both_ways_and_merge",
                       detail="published finetune modules + the tower's c_fc / kv_proj, with images: PEFT files both "
                              "ways (HF peft on the torch reference), merge; peft has no default for `qwen`"),
            train=NODES(_QWEN_VL + "test_training_steps_match_hf_trainer_on_the_reference",
                        detail="Trainer with images: 2 AdamW steps = transformers' Trainer on the torch reference "
                               "(losses, grad norms, every weight, vision tower included)"),
            tp=REMOTE_VL_TP, gguf=_REMOTE_NA_GGUF,
            seq_cls=_REMOTE_NA_SEQ)),
    *(Row(name, name, classes, f"{prefix}ForConditionalGeneration", cells=dict(
        load=NODES(_VL + "test_auto_classes_build_the_family_classes",
                   _VL + "test_transformers5_names_load_and_our_save_reloads_in_hf", detail=load),
        forward=NODES(_VL + "test_image_features_logits_and_greedy_tokens_equal_hf",
                      _VL + "test_videos_and_rope_index_equal_hf", detail=forward),
        generate=NODES(_VL + "test_image_features_logits_and_greedy_tokens_equal_hf",
                       "tests/models/test_qwen2_vl_processor.py::test_chat_template_inputs_generate_hf_tokens",
                       detail="`generate` greedy with images, left-padded batch: M-RoPE `rope_deltas` in decoding"),
        train=train, lora=lora, tp=VL_TP, gguf=_na_gguf(name),
        seq_cls=NA(f"transformers has no {prefix}ForSequenceClassification")))
      for name, prefix, classes, load, forward, train, lora in (
          ("qwen2_vl", "Qwen2VL", "`Qwen2VLForConditionalGeneration` (`AutoModelForImageTextToText`), `Qwen2VLModel`, "
           "`Qwen2VLTextModel`", "published and transformers 5 key layouts; saves the published one",
           "vision features, logits with images, videos, `get_rope_index`",
           NODES(_VL_LORA, detail="LoRA steps with images = HF peft + Trainer"),
           NODES(_VL_LORA, detail="language model's q/v, Trainer")),
          ("qwen2_5_vl", "Qwen2_5_VL", "`Qwen2_5_VLForConditionalGeneration` (`AutoModelForImageTextToText`), "
           "`Qwen2_5_VLModel`, `Qwen2_5_VLTextModel`", "", "window attention, videos with `second_per_grid_ts`",
           NODES(_VL_LORA, detail="LoRA steps with images = HF peft + Trainer"),
           NODES(_VL_LORA, detail="language model's q/v, Trainer")))),
    Row("cogvlm2", "cogvlm2", "`CogVLM2ForCausalLM` (architecture `CogVLMForCausalLM`), `CogVLM2Model`",
        "CogVLMForCausalLM", cells=dict(
            load=NODES(_COG + "test_published_names_load_and_save_back_bit_for_bit",
                       detail="remote format: published names, saved back bit for bit"),
            forward=NODES(_COG + "test_vision_features_and_logits_equal_the_reference",
                          _COG + "test_position_rule_and_expert_routing_equal_the_reference",
                          detail="vs a torch reference written from the published code: vision features, logits "
                                 "with an image and text only"),
            generate=NODES(_COG + "test_greedy_tokens_equal_the_reference",
                           detail="greedy with an image, left-padded batch"),
            lora=NODES(_COG + "test_lora_files_both_ways_and_merge",
                       detail="both experts' projections, with images: PEFT files both ways (HF peft on the "
                              "reference), merge"),
            train=NODES("tests/trainer/test_cogvlm2_lora.py::test_lora_training_matches_hf_peft_on_the_reference",
                        detail="LoRA steps with images = HF peft + Trainer on the reference"),
            tp=NODES(*REMOTE_VL_TP.nodes, detail="tp=2 logits (vs the torch reference), greedy, gradients with an "
                                                   "image: both experts' projections split; vision tower replicated"),
            gguf=_REMOTE_NA_GGUF, seq_cls=_REMOTE_NA_SEQ)),
    Row("whisper", "whisper", "`WhisperForConditionalGeneration` (`AutoModelForSpeechSeq2Seq`), `WhisperModel`",
        "WhisperForConditionalGeneration",
        cells=dict(
            load=NODES("tests/models/test_whisper_parity.py::test_save_pretrained_reloads_in_hf",
                       "tests/models/test_whisper_generate.py::test_auto_classes_build_whisper"),
            forward=NODES("tests/models/test_whisper_parity.py::test_logits_encoder_and_loss_match_hf",
                          "tests/models/test_whisper_parity.py::test_cached_decoding_matches_full_pass",
                          detail="encoder states, logits, loss"),
            generate=NODES(_WHISPER_GEN + "test_generate_matches_hf", _WHISPER_GEN + "test_detect_language_matches_hf",
                           _WHISPER_GEN + "test_timestamps_match_hf", _WHISPER_GEN + "test_long_form_matches_hf",
                           "tests/models/test_whisper_fallback.py::test_short_form_options_match_hf",
                           "tests/models/test_whisper_fallback.py::test_long_form_conditioning_matches_hf",
                           _WHISPER_GEN + "test_token_timestamps_match_hf",
                           detail="`generate`: greedy and beam search, language/task prompt, language detection, "
                                  "timestamps, token/word timestamps, long-form seek, prompt_ids, temperature "
                                  "fallback"),
            train=NODES("tests/trainer/test_whisper_finetune.py::test_whisper_training_steps_match_hf_seq2seq_trainer",
                        "tests/trainer/test_whisper_finetune.py::test_seq2seq_trainer_predict_with_generate_matches_hf",
                        detail="Trainer steps = HF Seq2SeqTrainer; `predict_with_generate`"),
            lora=NODES("tests/peft/test_whisper_lora.py::test_our_adapter_loads_in_hf_peft",
                       "tests/peft/test_whisper_lora.py::test_hf_adapter_loads_in_ours_and_merges_as_peft",
                       "tests/peft/test_whisper_lora.py::test_lora_trainer_steps_match_hf_peft",
                       detail="q/v of self- and cross-attention: PEFT files both ways, merge, Seq2SeqTrainer steps"),
            tp=NA("transformers has no tensor-parallel plan for Whisper (WhisperConfig.base_model_tp_plan is None)"),
            gguf=_na_gguf("whisper"),
            seq_cls=NA("transformers has no WhisperForSequenceClassification (audio classification is "
                       "`WhisperForAudioClassification`, another task)"))),
]
ROWS = {row.name: row for row in _ROWS}
assert all(set(row.cells) == set(CAPABILITIES) for row in _ROWS)


# ------------------------------------------------------------------------------------------------ the folders
def import_object(spec):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


@functools.lru_cache(maxsize=None)
def _root():
    root = tempfile.mkdtemp(prefix="family_matrix_")
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.lru_cache(maxsize=None)
def _written(name):
    """(our_folder, hf_folder, arrays or None): written once per process."""
    from tests.conftest import make_hf_checkpoint

    row = ROWS[name]
    base = os.path.join(_root(), name)
    if row.remote:
        our_folder, arrays, hf = import_object(row.writer)(os.path.join(base, "format"), **row.kwargs)
        hf_folder = os.path.join(base, "hf")
        hf.save_pretrained(hf_folder)
        return our_folder, hf_folder, arrays
    if row.writer:
        folder = import_object(row.writer)(os.path.join(base, "hf"), **row.kwargs)
    else:
        folder = make_hf_checkpoint(os.path.join(base, "hf"), row.config_class, row.model_class, **row.kwargs)
    return folder, folder, None


def row_folders(name):
    """`(our_folder, hf_folder)` of a row, written once per process: the folder our library loads and the one
    transformers loads (the same folder for an HF-native family; for a remote format, the format's checkpoint
    and the HF-native model it was written from)."""
    return _written(name)[:2]


def written_arrays(name):
    """A remote-format row: the tensors its writer wrote (for the bit-for-bit save check)."""
    return _written(name)[2]


def hf_model(name):
    """The oracle: transformers' model on `hf_folder` (fp32, eval), with the row's adapter applied. Fresh each call
    (callers that can share one keep it)."""
    import torch
    import transformers

    row = ROWS[name]
    model = transformers.AutoModelForCausalLM.from_pretrained(row_folders(name)[1], dtype=torch.float32).eval()
    return import_object(row.hf_adapter)(model) if row.hf_adapter else model


# ------------------------------------------------------------------------------------------------ the docs table
DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "models.md")
BEGIN, END = "<!-- matrix: begin (python -m tests.models.matrix --write-docs) -->", "<!-- matrix: end -->"


def cell_text(cell):
    if cell.kind in ("test", "nodes"):
        if cell.xfail:
            return f"fails: {cell.xfail}"
        return f"yes ({cell.detail})" if cell.detail else "yes"
    if cell.kind == "pending":
        return "not yet"
    return f"n/a: {cell.detail}"


def docs_table():
    head = ["`model_type`", "Classes"] + [TITLES[c] for c in CAPABILITIES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS.values():
        cells = [f"`{row.model_type}`", row.classes] + [cell_text(row.cell(c)) for c in CAPABILITIES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join([BEGIN] + lines + [END])


def docs_section(text):
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def write_docs(path=DOCS):
    with open(path) as f:
        text = f.read()
    new = text.replace(docs_section(text), docs_table())
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-docs"]:
        sys.exit("usage: python -m tests.models.matrix --write-docs")
    write_docs()

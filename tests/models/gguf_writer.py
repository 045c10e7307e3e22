"""Tiny unquantised GGUF files written with the `gguf` package the way llama.cpp's converter writes them: its
tensor names, its q/k row permutation for LLaMA / Mistral and its `1 + w` RMSNorm convention for Gemma 2/3; for
StarCoder2, LayerNorm weights and biases and ffn_up / ffn_down for c_fc / c_proj, no q/k permutation."""
import numpy as np

_LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
          "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
          "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
# Gemma 2/3: four norms a layer; llama.cpp's ffn_norm is the pre-MLP norm there
_GEMMA_LAYER = {**_LAYER, "post_attention_layernorm": "post_attention_norm",
                "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"}
# Phi-3: HF's fused projections are llama.cpp's too
_PHI3_LAYER = {**_LAYER, "self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"}
# Qwen2-MoE / Qwen3-MoE: router, experts stacked [E, ...] (HF's fused gate_up_proj split in its gate and up
# halves), the shared expert and its gate (a vector [hidden] in llama.cpp)
_MOE_LAYER = {**_LAYER, "mlp.gate": "ffn_gate_inp", "mlp.experts.down_proj": "ffn_down_exps",
              "mlp.shared_expert.gate_proj": "ffn_gate_shexp", "mlp.shared_expert.up_proj": "ffn_up_shexp",
              "mlp.shared_expert.down_proj": "ffn_down_shexp", "mlp.shared_expert_gate": "ffn_gate_inp_shexp"}
# StarCoder2: a plain MLP, c_fc / c_proj (with biases, as every projection and LayerNorm)
_STARCODER2_LAYER = {**_LAYER, "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
_MOE = ("qwen2moe", "qwen3moe")
_GEMMA = ("gemma2", "gemma3")
_KEY_LENGTH = ("qwen3", "qwen3moe")
_PERMUTED = ("llama", "mistral")  # llama.cpp's convert_hf_to_gguf.py permutes q/k rows of these (LlamaModel)


def gguf_name(hf_name, arch):
    if arch == "gpt2":
        return _gpt2_name(hf_name)
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    module, _, kind = hf_name.rpartition(".")
    if module in top:  # (StarCoder2's LayerNorm and head have biases too)
        return f"{top[module]}.{kind}"
    _, _, layer, rest = hf_name.split(".", 3)
    module, _, kind = rest.rpartition(".")
    if rest in ("mlp.experts.down_proj", "mlp.experts.gate_up_proj"):  # bare stacked parameters
        module, kind = rest, "weight"
    table = (_GEMMA_LAYER if arch in _GEMMA else _PHI3_LAYER if arch == "phi3" else _MOE_LAYER if arch in _MOE
             else _STARCODER2_LAYER if arch == "starcoder2" else _LAYER)
    return f"blk.{layer}.{table[module]}.{kind}"


_GPT2_TOP = {"transformer.wte": "token_embd", "transformer.wpe": "position_embd", "transformer.ln_f": "output_norm",
             "lm_head": "output"}
_GPT2_LAYER = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
               "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
_GPT2_CONV1D = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")  # llama.cpp's GPT2Model transposes these


def _gpt2_name(hf_name):
    module, _, kind = hf_name.rpartition(".")
    if module in _GPT2_TOP:
        return f"{_GPT2_TOP[module]}.{kind}"
    _, _, layer, rest = module.split(".", 3)
    return f"blk.{layer}.{_GPT2_LAYER[rest]}.{kind}"


def _write_gpt2_parameters(writer, config):
    """llama.cpp's GPT2Model.set_gguf_parameters, and a placeholder vocabulary (its size is the config's)."""
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(config.vocab_size)])


def _write_shape(writer, config):
    """The keys every transformer-config architecture here writes first: lengths, sizes, head counts."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_embedding_length(config.hidden_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)


def _write_starcoder2_parameters(writer, config):
    """LayerNorm's epsilon, no rotary keys; HF's loader reads StarCoder2's vocabulary size only from the vocabulary
    (no `vocab_size` key)."""
    _write_shape(writer, config)
    writer.add_layer_norm_eps(config.norm_epsilon)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(config.vocab_size)])


def _permute(weights, n_head):
    """llama.cpp's LlamaModel.permute: rows (heads, dim/2, 2) -> (heads, 2, dim/2)."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def write_gguf(hf_model, path, arch):
    """What llama.cpp's converter writes for `hf_model`'s tensors (unquantised, fp32) and hyper-parameters."""
    import gguf

    config = hf_model.config
    if arch in ("gpt2", "starcoder2"):
        writer = gguf.GGUFWriter(str(path), arch)
        (_write_gpt2_parameters if arch == "gpt2" else _write_starcoder2_parameters)(writer, config)
        return _write_tensors(writer, hf_model, arch)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    _write_shape(writer, config)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(config.rope_parameters.get("rope_theta", 10000.0))
                              if "rope_theta" in config.rope_parameters else 10000.0)
    writer.add_vocab_size(config.vocab_size)
    if arch in _GEMMA or arch in _KEY_LENGTH:  # (llama.cpp writes key_length for a config that names its head_dim)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    if arch in _GEMMA:
        writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_dimension_count(head_dim)
    if arch in _MOE:
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        writer.add_expert_feed_forward_length(config.moe_intermediate_size)
        if getattr(config, "shared_expert_intermediate_size", None):
            writer.add_expert_shared_feed_forward_length(config.shared_expert_intermediate_size)
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("pad", writer.add_pad_token_id)):
        if isinstance(getattr(config, f"{token}_token_id", None), int):
            add(getattr(config, f"{token}_token_id"))
    return _write_tensors(writer, hf_model, arch)


def _write_tensors(writer, hf_model, arch):
    config = hf_model.config
    tied = config.tie_word_embeddings
    for name, tensor in hf_model.state_dict().items():
        if name == "lm_head.weight" and tied:  # tied: llama.cpp writes no output tensor
            continue
        array = tensor.numpy().astype(np.float32)
        if arch in _GEMMA and name.endswith("norm.weight"):
            array = array + np.float32(1)
        if arch in _PERMUTED and name.endswith(("q_proj.weight", "k_proj.weight")):
            array = _permute(array, config.num_attention_heads if "q_proj" in name else config.num_key_value_heads)
        if name.endswith("mlp.experts.gate_up_proj"):  # [E, 2I, H]: llama.cpp's gate and up stacks
            layer = name.split(".")[2]
            gate, up = np.split(array, 2, axis=1)
            writer.add_tensor(f"blk.{layer}.ffn_gate_exps.weight", np.ascontiguousarray(gate))
            writer.add_tensor(f"blk.{layer}.ffn_up_exps.weight", np.ascontiguousarray(up))
            continue
        if arch == "gpt2" and name.endswith(_GPT2_CONV1D):
            array = np.ascontiguousarray(array.T)
        if name.endswith("shared_expert_gate.weight"):
            array = array.reshape(-1)
        writer.add_tensor(gguf_name(name, arch), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

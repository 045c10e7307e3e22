"""Remote-code checkpoint formats written from HF-native models, with the inverse of each published conversion
(the sources are cited at the writers in tests/models/remote_formats.py, which builds its checkpoints with these
functions on the family matrix's sizes, and tests/models/test_remote_formats.py checks the forward pass of each).

`FORMATS[name]` holds, per format: the HF-native architecture it converts to, the function mapping an HF-native
model's tensors to the format's (`tensors(hf)`), its config.json (`config(hf)`), and the fused modules with how
their output rows are laid out, which the LoRA checks use to split a fused adapter into HF-native ones.
`WRITERS[name](folder)` writes a tiny checkpoint: (the format's folder, the HF-native model's folder).
"""
import json
import os

import numpy as np

VOCAB = 128
TINY = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, bos_token_id=1,
            eos_token_id=2, pad_token_id=0)


def hf_native(config_class, model_class, seed=0, base=TINY, **overrides):
    """A random HF-native model (random norms and biases, so a misplaced one cannot hide)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**{**base, **overrides})
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def auto_map(config_module, model_module, config_class, model_class):
    return {"AutoConfig": f"{config_module}.{config_class}", "AutoModelForCausalLM": f"{model_module}.{model_class}"}


def write_remote(folder, config, tensors):
    """A remote-format folder: config.json (with the repo's auto_map; no .py file exists) + model.safetensors
    written by the safetensors package itself."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    arrays = {k: np.ascontiguousarray(v.detach().float().numpy()) for k, v in tensors.items()}
    save_file(arrays, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return str(folder), arrays


def read_tensors(folder):
    from mindformers_hf.safetensors_io import SafetensorsFile

    reader = SafetensorsFile(os.path.join(folder, "model.safetensors"))
    out = {k: np.array(reader.get(k)) for k in reader.keys()}
    reader.close()
    return out


# ------------------------------------------------------------------------------------------------ InternLM2
def internlm2_rows(c):
    """wqkv's rows as (q/k/v, row index): per KV group, [q_per_kv query heads, 1 key head, 1 value head] x D."""
    kv, d = c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    g = c.num_attention_heads // kv
    rows = []
    for group in range(kv):
        rows += [("q_proj", (group * g + j) * d + i) for j in range(g) for i in range(d)]
        rows += [("k_proj", group * d + i) for i in range(d)]
        rows += [("v_proj", group * d + i) for i in range(d)]
    return rows


def _fuse(rows, parts):
    """Stack HF-native q/k/v rows (torch) in a fused module's row order."""
    import torch

    return torch.stack([parts[name][i] for name, i in rows])


def internlm2_tensors(hf):
    c = hf.config
    rows = internlm2_rows(c)
    tensors = {"model.tok_embeddings.weight": hf.model.embed_tokens.weight, "model.norm.weight": hf.model.norm.weight,
               "output.weight": hf.lm_head.weight}
    for i, layer in enumerate(hf.model.layers):
        a, p = layer.self_attn, f"model.layers.{i}."
        for kind in ("weight", "bias"):
            tensors[p + f"attention.wqkv.{kind}"] = _fuse(rows, {n: getattr(getattr(a, n), kind)
                                                                 for n in ("q_proj", "k_proj", "v_proj")})
            tensors[p + f"attention.wo.{kind}"] = getattr(a.o_proj, kind)
        tensors.update({p + "attention_norm.weight": layer.input_layernorm.weight,
                        p + "ffn_norm.weight": layer.post_attention_layernorm.weight,
                        p + "feed_forward.w1.weight": layer.mlp.gate_proj.weight,
                        p + "feed_forward.w3.weight": layer.mlp.up_proj.weight,
                        p + "feed_forward.w2.weight": layer.mlp.down_proj.weight})
    return tensors


def internlm2_config(hf):
    c = hf.config
    return {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
            "auto_map": auto_map("configuration_internlm2", "modeling_internlm2", "InternLM2Config",
                                 "InternLM2ForCausalLM"),
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads, "hidden_act": "silu", "max_position_embeddings": 64,
            "rms_norm_eps": c.rms_norm_eps, "bias": True, "rope_theta": 1000000,
            "rope_scaling": {"type": "linear", "factor": 2.0}, "attn_implementation": "eager",
            "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
            "torch_dtype": "float32"}


def internlm2_model(**overrides):
    return hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, **{
        "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}, **overrides})


# ------------------------------------------------------------------------------------------------ InternLM v1
def internlm_config(hf):
    c = hf.config
    return {"architectures": ["InternLMForCausalLM"], "model_type": "internlm",
            "auto_map": auto_map("configuration_internlm", "modeling_internlm", "InternLMConfig", "InternLMForCausalLM"),
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
            "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": c.rms_norm_eps,
            "bias": True, "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def internlm_model(**overrides):
    return hf_native("LlamaConfig", "LlamaForCausalLM", attention_bias=True, **{
        "num_key_value_heads": TINY["num_attention_heads"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, **overrides})


# ------------------------------------------------------------------------------------------------ Baichuan2
def qkv_rows(c, heads=None):
    """A fused module whose rows are q, k, v one after the other."""
    d = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads if heads is None else heads
    return ([("q_proj", i) for i in range(c.num_attention_heads * d)] + [("k_proj", i) for i in range(kv * d)]
            + [("v_proj", i) for i in range(kv * d)])


def baichuan_tensors(hf):
    """W_pack = rows q, k, v; the head as it is (a format checkpoint's head is any scaling of the normalised one)."""
    rows = qkv_rows(hf.config)
    tensors = {"model.embed_tokens.weight": hf.model.embed_tokens.weight, "model.norm.weight": hf.model.norm.weight,
               "lm_head.weight": hf.lm_head.weight}
    for i, layer in enumerate(hf.model.layers):
        a, p = layer.self_attn, f"model.layers.{i}."
        tensors[p + "self_attn.W_pack.weight"] = _fuse(rows, {n: getattr(a, n).weight
                                                              for n in ("q_proj", "k_proj", "v_proj")})
        tensors[p + "self_attn.o_proj.weight"] = a.o_proj.weight
        for name in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm"):
            tensors[p + name + ".weight"] = layer.get_submodule(name).weight
    return tensors


def baichuan_config(hf, position_embedding="rope"):
    c = hf.config
    config = {"architectures": ["BaichuanForCausalLM"], "model_type": "baichuan",
              "auto_map": auto_map("configuration_baichuan", "modeling_baichuan", "BaichuanConfig",
                                   "BaichuanForCausalLM"),
              "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
              "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
              "hidden_act": "silu", "model_max_length": 64, "rms_norm_eps": c.rms_norm_eps,
              "tie_word_embeddings": False, "z_loss_weight": 0, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 0,
              # the released configs leave these to the modeling file shipped (see configuration_baichuan.py:
              # hidden_size 4096 -> rotary, vocab 125696 -> NormHead); a tiny model states them
              "position_embedding": position_embedding, "norm_head": True}
    if position_embedding == "rope":
        config["max_position_embeddings"] = 64
    return config


def normalise_head(hf, seed=0):
    """llamafy_baichuan2 L2-normalises each head row (NormHead); the format's head is that times random positive
    row scales, which NormHead undoes. Normalises `hf`'s head in place and returns the format's head. seed None:
    the scales come from torch's global generator."""
    import torch

    with torch.no_grad():
        hf.lm_head.weight.copy_(torch.nn.functional.normalize(hf.lm_head.weight))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    scales = torch.empty(hf.lm_head.weight.shape[0], 1).uniform_(0.5, 2.0, generator=generator)
    return hf.lm_head.weight * scales


def baichuan_model(**overrides):
    return hf_native("LlamaConfig", "LlamaForCausalLM", **{"num_key_value_heads": TINY["num_attention_heads"],
                                                           **overrides})


# ------------------------------------------------------------------------------------------------ ChatGLM
def chatglm_tensors(hf):
    rows = qkv_rows(hf.config)
    layer = "transformer.encoder.layers.{}."
    tensors = {"transformer.embedding.word_embeddings.weight": hf.model.embed_tokens.weight,
               "transformer.encoder.final_layernorm.weight": hf.model.norm.weight,
               "transformer.output_layer.weight": hf.lm_head.weight}
    for i, block in enumerate(hf.model.layers):
        p, a = layer.format(i), block.self_attn
        for kind in ("weight", "bias"):
            tensors[p + f"self_attention.query_key_value.{kind}"] = _fuse(
                rows, {n: getattr(getattr(a, n), kind) for n in ("q_proj", "k_proj", "v_proj")})
        tensors.update({p + "self_attention.dense.weight": a.o_proj.weight,
                        p + "input_layernorm.weight": block.input_layernorm.weight,
                        p + "post_attention_layernorm.weight": block.post_attention_layernorm.weight,
                        p + "mlp.dense_h_to_4h.weight": block.mlp.gate_up_proj.weight,
                        p + "mlp.dense_4h_to_h.weight": block.mlp.down_proj.weight})
    return tensors


def chatglm_config(hf):
    c = hf.config
    return {"architectures": ["ChatGLMModel"], "model_type": "chatglm",
            "auto_map": {**auto_map("configuration_chatglm", "modeling_chatglm", "ChatGLMConfig",
                                    "ChatGLMForConditionalGeneration"),
                         "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration"},
            "num_layers": c.num_hidden_layers, "padded_vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "ffn_hidden_size": c.intermediate_size, "kv_channels": c.head_dim,
            "num_attention_heads": c.num_attention_heads, "multi_query_attention": True,
            "multi_query_group_num": c.num_key_value_heads, "seq_length": 64,
            "layernorm_epsilon": c.rms_norm_eps, "rope_ratio": 50, "rmsnorm": True,
            "apply_residual_connection_post_layernorm": False, "post_layer_norm": True, "add_qkv_bias": True,
            "add_bias_linear": False, "original_rope": True, "hidden_dropout": 0.0, "attention_dropout": 0.0,
            "tie_word_embeddings": False, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32"}


def chatglm_model(**overrides):
    return hf_native("GlmConfig", "GlmForCausalLM", attention_bias=True, **{
        "head_dim": 8, "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0, "partial_rotary_factor": 0.5},
        **overrides})


# ------------------------------------------------------------------------------------------------ Qwen v1
def qwen_tensors(hf):
    rows = qkv_rows(hf.config)
    tensors = {"transformer.wte.weight": hf.model.embed_tokens.weight, "transformer.ln_f.weight": hf.model.norm.weight,
               "lm_head.weight": hf.lm_head.weight}
    for i, block in enumerate(hf.model.layers):
        p, a = f"transformer.h.{i}.", block.self_attn
        for kind in ("weight", "bias"):
            tensors[p + f"attn.c_attn.{kind}"] = _fuse(rows, {n: getattr(getattr(a, n), kind)
                                                              for n in ("q_proj", "k_proj", "v_proj")})
        tensors.update({p + "attn.c_proj.weight": a.o_proj.weight, p + "ln_1.weight": block.input_layernorm.weight,
                        p + "ln_2.weight": block.post_attention_layernorm.weight,
                        p + "mlp.w1.weight": block.mlp.up_proj.weight, p + "mlp.w2.weight": block.mlp.gate_proj.weight,
                        p + "mlp.c_proj.weight": block.mlp.down_proj.weight})
    return tensors


def qwen_config(hf):
    c = hf.config
    return {"architectures": ["QWenLMHeadModel"], "model_type": "qwen",
            "auto_map": auto_map("configuration_qwen", "modeling_qwen", "QWenConfig", "QWenLMHeadModel"),
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads, "kv_channels": c.hidden_size // c.num_attention_heads,
            "intermediate_size": 2 * c.intermediate_size, "layer_norm_epsilon": c.rms_norm_eps,
            "max_position_embeddings": 64, "seq_length": 16, "rotary_emb_base": 10000, "rotary_pct": 1.0,
            "no_bias": True, "use_dynamic_ntk": True, "use_logn_attn": True, "scale_attn_weights": True,
            "bf16": False, "fp16": False, "fp32": False, "use_flash_attn": "auto", "tie_word_embeddings": False,
            "emb_dropout_prob": 0.0, "attn_dropout_prob": 0.0}


def qwen_model(**overrides):
    return hf_native("Qwen2Config", "Qwen2ForCausalLM", **{"num_key_value_heads": TINY["num_attention_heads"],
                                                           "rope_theta": 10000.0, **overrides})


# ------------------------------------------------------------------------------------------------ the table
def _named(hf):
    return dict(hf.named_parameters())


FORMATS = {
    # name: (HF-native model maker, tensors(hf), config(hf), {fused module: rows(config)}, {module: HF module})
    "internlm": (internlm_model, _named, internlm_config, {}, {}),
    "internlm2": (internlm2_model, internlm2_tensors, internlm2_config, {"wqkv": internlm2_rows},
                  {"wo": "o_proj", "w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}),
    "baichuan": (baichuan_model, baichuan_tensors, baichuan_config, {"W_pack": qkv_rows}, {}),
    "chatglm": (chatglm_model, chatglm_tensors, chatglm_config, {"query_key_value": qkv_rows},
                {"dense": "o_proj", "dense_h_to_4h": "gate_up_proj", "dense_4h_to_h": "down_proj"}),
    "qwen": (qwen_model, qwen_tensors, qwen_config, {"c_attn": qkv_rows},
             {"c_proj": "o_proj", "w1": "up_proj", "w2": "gate_proj"}),
}


def write_format(name, folder, hf, **config_options):
    """Write `hf` (an HF-native model) as format `name` under folder/<name>, and `hf` itself under folder/hf."""
    tensors = FORMATS[name][1](hf)
    if name == "baichuan":
        tensors["lm_head.weight"] = normalise_head(hf)
    out, _ = write_remote(os.path.join(folder, name), FORMATS[name][2](hf, **config_options), tensors)
    hf.save_pretrained(os.path.join(folder, "hf"))
    return out, os.path.join(str(folder), "hf")


WRITERS = {name: (lambda folder, n=name: write_format(n, folder, FORMATS[n][0]())) for name in FORMATS}
# Baichuan2-13B: ALiBi instead of rotary; 6 heads, not a power of two, so the interleaved extra slopes are used
WRITERS["baichuan_alibi"] = lambda folder: write_format(
    "baichuan", folder, FORMATS["baichuan"][0](hidden_size=48, num_attention_heads=6, num_key_value_heads=6),
    position_embedding="alibi")


def alibi_heads(our_folder):
    """The head count when `our_folder` is a Baichuan ALiBi checkpoint (its reference needs ALiBi), else None."""
    with open(os.path.join(our_folder, "config.json")) as f:
        config = json.load(f)
    return config["num_attention_heads"] if config.get("position_embedding") == "alibi" else None


def alibi_inputs(mask, heads):
    """The ALiBi reference's inputs (no HF-native architecture has ALiBi with RMSNorm and SwiGLU): transformers'
    LlamaForCausalLM with rotary switched off (position_ids all 0: cos 1, sin 0) and ALiBi in its 4D additive
    attention mask: causal + padding mask plus transformers' Bloom `build_alibi_tensor` (the published slopes
    times key position). Softmax is shift-invariant per row, so Bloom's slope * key position equals
    Baichuan-13B's slope * (key - query position) on every allowed key."""
    import torch
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    m = torch.as_tensor(np.asarray(mask))
    bsz, length = m.shape
    alibi = build_alibi_tensor(m, heads, torch.float32).reshape(bsz, heads, 1, length)
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool))[None, None] & m.bool()[:, None, None, :]
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min) + alibi  # [B, H, S, T]
    return {"attention_mask": additive, "position_ids": torch.zeros(bsz, length, dtype=torch.long)}


def alibi_reference(model, heads):
    """`model` (a LLaMA, or a peft model of one) called with ALiBi's inputs: a torch module transformers' Trainer
    trains like any model (a causal LM: labels shifted)."""
    import torch

    class AlibiReference(torch.nn.Module):
        loss_type = "ForCausalLM"

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            return self.model(input_ids=input_ids, labels=labels, **alibi_inputs(mask, heads), **kwargs)

    return AlibiReference()


# ------------------------------------------------------------------------------------------------ training
def hf_training_model(fmt, our_folder, hf):
    """The torch model that trains as the format's remote code does. Baichuan's NormHead normalises each head
    row in every forward (modeling_baichuan.py's NormHead: F.normalize(self.weight)), so its reference is the
    HF-native model with that parametrization on lm_head, starting from the format's unnormalised head."""
    import torch

    if fmt == "baichuan":
        class Normalize(torch.nn.Module):
            def forward(self, weight):
                return torch.nn.functional.normalize(weight)

        head = torch.tensor(read_tensors(our_folder)["lm_head.weight"])
        torch.nn.utils.parametrize.register_parametrization(hf.lm_head, "weight", Normalize())
        with torch.no_grad():
            hf.lm_head.parametrizations.weight.original.copy_(head)
        if alibi_heads(our_folder):
            return alibi_reference(hf, alibi_heads(our_folder))
    return hf


def format_decay_names(fmt, our_folder, model, decide):
    """The parameters of `model` (the HF-native twin a format was written from, as hf_training_model gives it) that
    transformers' Trainer decays when it trains the format's own remote code: its rule (`decide`, its
    get_decay_parameter_names) applied to the format's module tree (`skeleton`: the format's names; its norms are
    custom RMSNorm classes, not nn.LayerNorm), carried to the twin's parameters through the tensor conversion.
    Qwen v1's `ln_1` / `ln_2` / `ln_f` match none of the rule's patterns, the twin's `*_layernorm` do. A tensor
    the conversion fuses or recomputes (q/k/v into c_attn, NormHead) keeps the rule on its own name (a fused
    weight is decayed, a bias is not, under either name)."""
    import torch

    inner = getattr(model, "model", model) if type(model).__name__ == "AlibiReference" else model
    with torch.no_grad():
        format_name = {id(tensor): key for key, tensor in FORMATS[fmt][1](inner).items()}
    format_decay, own = set(decide(skeleton(our_folder, fmt))), set(decide(model))
    return [name for name, p in model.named_parameters()
            if (format_name[id(p)] in format_decay if id(p) in format_name else name in own)]


def to_format(fmt, hf, our_folder=None):
    """The format's tensors (numpy) of a trained HF-native model, as our save_pretrained writes them."""
    import torch

    hf = getattr(hf, "model", hf) if type(hf).__name__ == "AlibiReference" else hf
    with torch.no_grad():
        tensors = FORMATS[fmt][1](hf)
        if fmt == "baichuan":  # NormHead's own weight: trained (the parametrization's) or the format file's
            parametrized = getattr(hf.lm_head, "parametrizations", None)
            tensors["lm_head.weight"] = (parametrized.weight.original if parametrized is not None
                                         else torch.tensor(read_tensors(our_folder)["lm_head.weight"]))
        return {k: v.detach().float().numpy().copy() for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------ LoRA
EMBEDDINGS = ("embed_tokens", "tok_embeddings", "word_embeddings", "wte")
HEADS = ("lm_head", "output", "output_layer")


def skeleton(folder, model_type):
    """The format's module tree as its remote code builds it, as far as HF peft can see: a torch module per
    tensor group (nn.Embedding, nn.Linear for the 2D weights, a plain module otherwise) under the format's
    names, holding the checkpoint's values, with `config.model_type` (peft picks default targets by it)."""
    import torch

    class Skeleton(torch.nn.Module):
        def prepare_inputs_for_generation(self, *args, **kwargs):  # (peft's causal-LM wrapper reads it)
            raise NotImplementedError

    root = Skeleton()
    root.config = {"model_type": model_type, "tie_word_embeddings": False}
    groups = {}
    for name, array in read_tensors(folder).items():
        path, _, leaf = name.rpartition(".")
        groups.setdefault(path, {})[leaf] = torch.tensor(array)
    for path, leaves in sorted(groups.items()):
        weight = leaves.get("weight")
        last = path.rpartition(".")[2]
        if last in EMBEDDINGS:
            module = torch.nn.Embedding(*weight.shape)
        elif weight is not None and weight.ndim == 2:
            module = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in leaves)
        else:
            module = torch.nn.Module()
            for leaf, value in leaves.items():
                module.register_parameter(leaf, torch.nn.Parameter(value.clone()))
        with torch.no_grad():
            for leaf, value in leaves.items():
                getattr(module, leaf).copy_(value)
        parent = root
        for part in path.split(".")[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(last, module)
    return root.eval()


def linear_targets(model):
    """The module names of every linear layer but the output head."""
    import torch

    return sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name.rpartition(".")[2] not in HEADS})


def adapter_to_native(fmt, folder, out, hf):
    """A LoRA adapter written for format `fmt`'s modules, as the HF-native adapter it equals: a renamed module
    keeps its pair; a fused module's pair (A [r, in], B [rows, r]) becomes one pair per HF-native module with
    the same A and B's rows of that module (the rows of B @ A are the rows of the fused weight's update)."""
    import re

    from safetensors.numpy import save_file

    fused = FORMATS[fmt][3]
    by_id = {id(p): name for name, p in hf.named_parameters()}
    modules = {}  # the format's module path -> HF-native module path, through the tensor conversion
    for name, tensor in FORMATS[fmt][1](hf).items():
        if id(tensor) in by_id and name.endswith(".weight"):
            modules[name[:-len(".weight")]] = by_id[id(tensor)][:-len(".weight")]
    prefix = "base_model.model."
    tensors = {k: np.array(v) for k, v in read_adapter(folder).items()}
    native, targets = {}, set()
    for key, value in tensors.items():
        path, kind = re.fullmatch(r"base_model\.model\.(.*)\.(lora_[AB]\.weight)", key).groups()
        last = path.rpartition(".")[2]
        if last in fused:
            layer = int(re.search(r"\.(\d+)\.", path).group(1))
            rows = fused[last](hf.config)
            for part in ("q_proj", "k_proj", "v_proj"):
                index = [j for j, (name, _) in enumerate(rows) if name == part]
                order = np.argsort([rows[j][1] for j in index])
                piece = value if kind == "lora_A.weight" else value[np.array(index)[order]]
                native[f"{prefix}model.layers.{layer}.self_attn.{part}.{kind}"] = piece
                targets.add(part)
        else:
            native[f"{prefix}{modules[path]}.{kind}"] = value
            targets.add(modules[path].rpartition(".")[2])
    os.makedirs(out, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in native.items()}, os.path.join(out, "adapter_model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(folder, "adapter_config.json")) as f:
        config = json.load(f)
    config.update(target_modules=sorted(targets), base_model_name_or_path=None)
    with open(os.path.join(out, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    return str(out)


def read_adapter(folder):
    from mindformers_hf.safetensors_io import SafetensorsFile

    reader = SafetensorsFile(os.path.join(folder, "adapter_model.safetensors"))
    out = {k: np.array(reader.get(k)) for k in reader.keys()}
    reader.close()
    return out

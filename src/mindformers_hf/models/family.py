"""What a model family declares about itself, in one place: `Family`, with its `DecoderVariant` and
`MoeVariant`. Each models/<family>/__init__.py holds its declaration (`FAMILY`, or `FAMILIES` when one
folder serves two model types); models/families.py derives the auto mappings, the remote-format tables and
the package's lazy exports from them.

Tensor-free and import-free (no MindSpore, no transformers): the package __init__ reads these at import.
"""
import importlib
import sys
import types
from dataclasses import dataclass, field


def import_object(target, package=None):
    """"module:name" -> the object, imported on first use (objects pass through). The one resolver behind
    the auto classes, the decoder variants' attention / MLP builders and the family packages' lazy names;
    a relative module (".modeling_x") is taken relative to `package`."""
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module, package), name)


@dataclass(frozen=True)
class DecoderVariant:
    """How a LLaMA-shaped family departs from LLaMA; each switch mirrors a line of that family's HF file."""
    qkv_bias: object = None           # None: config.attention_bias, as LLaMA and Qwen3; a str: that config field
    o_bias: object = None             # None: config.attention_bias; a str: that config field (StarCoder2: use_bias)
    qk_norm: bool = False             # Qwen3: RMSNorm over head_dim on q and k, before rotary
    fused_qkv: bool = False           # Phi3: one `qkv_proj` [(H + 2*KV) * D, hidden], rows q then k then v
    fused_gate_up: bool = False       # Phi3, GLM: one `gate_up_proj` [2 * inter, hidden], rows gate then up
    interleaved_rotary: bool = False  # GLM: rotary pairs are adjacent dims (0, 1), (2, 3), ...
    sandwich_norm: bool = False       # GLM4: RMSNorm on the attention and MLP outputs, before each residual add
    # the layer's norms: before attention, after it (sandwich_norm), before the MLP, after it (sandwich_norm);
    # Gemma 2/3 name them input_layernorm, post_attention_layernorm, pre_/post_feedforward_layernorm; a None
    # pre-norm is no norm there (OLMo 2 norms only the sublayers' outputs)
    norm_names: tuple = ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm",
                         "post_mlp_layernorm")
    norm_offset: bool = False         # Gemma: every RMSNorm scales by (1 + weight) in float32, weights start at 0
    embed_scale: bool = False         # Gemma: embeddings times sqrt(hidden_size), rounded to the weights' dtype
    attn_softcap: bool = True         # Gemma 3: False -- HF's file keeps attn_logit_softcapping but never applies it
    activation: str = "hidden_act"    # the config field naming the gated MLP's activation (Gemma 2/3's
                                      # hidden_activation); attention soft-capping, query_pre_attn_scalar and
                                      # final logit soft-capping are read from the config fields of those names
    # OLMo 2: q_norm / k_norm over the whole projection (H * D, KV * D) rather than each head's D
    qk_norm_whole: bool = False
    layer_norm: bool = False          # StarCoder2, Phi: LayerNorm (weight and bias) where LLaMA has RMSNorm
    eps: str = "rms_norm_eps"         # the config field of the norms' eps (StarCoder2: norm_epsilon)
    mlp_bias: object = "mlp_bias"     # the MLP's biases: a config field's name, or a bool (Phi: True)
    # the MLP's projections, gate / up / down; gate None: a plain MLP down(act(up(x))) (StarCoder2 c_fc / c_proj)
    mlp_names: tuple = ("gate_proj", "up_proj", "down_proj")
    o_name: str = "o_proj"            # the attention's output projection (Phi: dense)
    parallel_residual: bool = False   # Phi: x + attn(norm(x)) + mlp(norm(x)), one norm a layer
    final_norm: str = "norm"          # the base model's last norm (Phi: final_layernorm)
    lm_head_bias: bool = False        # Phi: the LM head has a bias
    sinks: bool = False               # gpt-oss: a learned per-head logit `self_attn.sinks` joins the softmax
    attention: str = None             # "module:Class" replacing LlamaAttention (DeepSeek's latent attention)
    mlp: str = None                   # "module:function(config, layer_idx, dtype)" building a layer's MLP (MoE)


@dataclass(frozen=True)
class MoeVariant:
    """How a family's sparse MLP departs from Mixtral's; each switch mirrors a line of that family's HF file."""
    checkpoint_block: str = "mlp"                 # Mixtral checkpoints call the block `block_sparse_moe`
    checkpoint_experts: tuple = ("gate_proj", "up_proj", "down_proj")  # per-expert tensor names on the Hub
                                                  # (None: the Hub's files hold the stacked tensors, gpt-oss)
    expert_size: str = "moe_intermediate_size"    # Mixtral's experts are `intermediate_size` wide
    norm_topk_prob: object = "config"             # True (Mixtral), False (DeepSeek-V2 ignores the field)
    scoring: str = "softmax"                      # DeepSeek-V3: "sigmoid"
    topk_method: str = None                       # None: config.topk_method; DeepSeek-V3 always groups
    correction_bias: bool = False                 # DeepSeek-V3: `gate.e_score_correction_bias`, for choice only
    router_fp32: bool = False                     # DeepSeek keeps the router weight in float32
    shared_expert: str = None                     # "shared_expert" (+ sigmoid gate, Qwen2-MoE) / "shared_experts"
    sparse_layers: str = "all"                    # "sparse_step" (Qwen-MoE), "first_k_dense" (DeepSeek)


MOE_MLP = "mindformers_hf.models.mixtral.modeling_mixtral:moe_mlp_for_layer"  # the sparse MLP of every MoE family


@dataclass(frozen=True)
class Family:
    """One model type: its class names, where they come from, and how it departs from LLaMA.

    Class names are `prefix` + "PreTrainedModel", "Model", `causal_lm` and each of `heads` (the base model,
    heads and config under `text_prefix` when set). With `module`
    unset they are built on first use as subclasses of the `parent` family's classes (the LLaMA-shaped
    families whose difference is all in `variant`); otherwise `module` (".modeling_x") defines them."""
    model_type: str
    prefix: str
    variant: DecoderVariant = DecoderVariant()
    moe: MoeVariant = None
    module: str = None                 # ".modeling_x" defining the classes; None: built from `parent`'s
    parent: str = "llama"              # the family package whose classes built ones subclass
    causal_lm: str = "ForCausalLM"     # GPT-2 and Qwen v1: "LMHeadModel"; ChatGLM: "ForConditionalGeneration"
    lm_task: str = "ForCausalLM"       # the auto class `causal_lm` serves (Whisper: "ForSpeechSeq2Seq")
    heads: tuple = ("ForSequenceClassification", "ForTokenClassification")
    auto_model: str = "Model"          # what AutoModel builds (ChatGLM repos' AutoModel is the causal LM)
    # formats the Hub runs with trust_remote_code, read natively: our config class (".configuration_x:Name")
    # and the config.json `architectures` that name the format (decisive over model_type: some InternLM2
    # repos kept model_type "internlm")
    config: str = None
    architectures: tuple = ()
    exports: dict = field(default_factory=dict)  # further package names: name -> ".module" defining it
    # the prefix of the base model, the heads and the config class when it differs from `prefix`: Gemma 3's
    # text-only model type has Gemma3ForCausalLM and Gemma3PreTrainedModel but Gemma3TextModel,
    # Gemma3TextForSequenceClassification and Gemma3TextConfig (Gemma3Model is the multimodal model)
    text_prefix: str = None

    @property
    def pretrained_model(self):
        return self.prefix + "PreTrainedModel"

    @property
    def model(self):
        return (self.text_prefix or self.prefix) + "Model"

    @property
    def auto_model_class(self):
        """What AutoModel builds."""
        return self.model if self.auto_model == "Model" else self.prefix + self.auto_model

    @property
    def for_causal_lm(self):
        return self.prefix + self.causal_lm

    def head(self, suffix):
        """The class name of a task head ("ForSequenceClassification"), or None when the family has none."""
        return (self.text_prefix or self.prefix) + suffix if suffix in self.heads else None

    @property
    def config_class(self):
        """The config class's name: ours for remote formats, else transformers' (re-exported)."""
        return self.config.rpartition(":")[2] if self.config else (self.text_prefix or self.prefix) + "Config"

    @property
    def class_names(self):
        return (self.pretrained_model, self.model, self.for_causal_lm, *(self.head(h) for h in self.heads))


def family_package(namespace, *families):
    """(`__all__`, `__getattr__`, `__dir__`) for a family's package, given its globals(): its names resolve on
    first use, so importing the package (and reading its declarations) imports neither MindSpore nor
    transformers."""
    package = namespace["__name__"]
    sources = {}
    for fam in families:
        for name in fam.class_names:
            sources[name] = fam
        if fam.config:
            sources[fam.config_class] = fam.config.partition(":")[0]
        sources.update(fam.exports)

    def __getattr__(name):
        if name in namespace:  # asked through the modeling module below after the package resolved it
            return namespace[name]
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        if isinstance(source, Family):
            if source.module:
                value = import_object(f"{source.module}:{name}", package)
            else:
                namespace.update({cls.__name__: cls for cls in build_classes(source, modeling.__name__)})
                value = namespace[name]
        else:
            value = import_object(f"{source}:{name}", package)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(sources))

    if any(not fam.module for fam in families):
        # built classes live in the module transformers' path names (models.qwen2.modeling_qwen2), which holds
        # nothing else: `from mindformers_hf.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM` and pickle work
        tail = "modeling_" + package.rpartition(".")[2]
        modeling = types.ModuleType(f"{package}.{tail}", f"The classes of {package}, built from its declaration.")
        modeling.__getattr__ = __getattr__
        modeling.__dir__ = lambda: sorted(n for n, s in sources.items() if isinstance(s, Family) and not s.module)
        sys.modules[modeling.__name__] = namespace[tail] = modeling
    return sorted(sources), __getattr__, __dir__


def build_classes(fam, module, *mixins, chat=None, **attrs):
    """The classes of `fam` (in `class_names` order) as subclasses of its parent family's, named as transformers
    names them (config.json `architectures` and imports find them) and placed in `module`. `mixins` go before
    the parent class of the three model classes, with `attrs` (a checkpoint format's CheckpointFormatMixin and
    weight_table); `chat` before those of the causal LM (the format's chat methods)."""
    from ..modeling_heads import GenericForSequenceClassification, GenericForTokenClassification

    parent = importlib.import_module(f"{__name__.rpartition('.')[0]}.{fam.parent}")
    parent_family = parent.FAMILY

    def subclass(name, *bases, **extra):
        return type(name, bases, {"__module__": module, "__qualname__": name, **extra})

    pretrained = subclass(fam.pretrained_model, *mixins, getattr(parent, parent_family.pretrained_model), **attrs)
    model = subclass(fam.model, *mixins, getattr(parent, parent_family.model), **attrs)
    causal_lm = subclass(fam.for_causal_lm, *((chat,) if chat else ()), *mixins,
                         getattr(parent, parent_family.for_causal_lm), **attrs)
    generic = {"ForSequenceClassification": GenericForSequenceClassification,
               "ForTokenClassification": GenericForTokenClassification}
    heads = [subclass(fam.head(suffix), generic[suffix], pretrained, _base_model_class=model)
             for suffix in fam.heads]
    return (pretrained, model, causal_lm, *heads)

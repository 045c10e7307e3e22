"""Mixtral, and the sparse-MoE MLP that Qwen2-MoE, Qwen3-MoE and DeepSeek-V2/V3 share with it.

A MoE family is LLaMA with a sparse MLP in some layers: its declaration (models/<family>/__init__.py) points
the decoder layer's MLP at `moe_mlp_for_layer` below, and its `moe` variant says how the family's router,
shared expert and checkpoint names depart from Mixtral's. Read top to bottom: router (`gate`), experts, sparse block, checkpoint stacking, base model, causal-LM head.

Parameter names are transformers 5's module paths: experts are stacked as `mlp.experts.gate_up_proj`
[E, 2 * I, H] (gate rows, then up rows) and `mlp.experts.down_proj` [E, H, I]. Checkpoints on the Hub (and
what HF's save_pretrained writes) name each expert separately; EXPERT_STACKING is the table that stacks
them at load and `save_pretrained` writes the per-expert names again.
"""
import re

import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...layers import Linear, new_parameter
from ...modeling_heads import GenericForSequenceClassification, GenericForTokenClassification
from ...modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from ...ops import moe as moe_ops
from ...safetensors_io import CheckpointError
from ...weight_loading import StackedSource, as_source
from ..families import moe_variant
from ..llama.modeling_llama import LlamaForCausalLM, LlamaMLP, LlamaModel, LlamaPreTrainedModel


def num_experts(config):
    """Routed experts: `num_experts` is an alias on most configs, DeepSeek-V3 only aliases `num_local_experts`."""
    for name in ("num_experts", "num_local_experts", "n_routed_experts"):
        if getattr(config, name, None) is not None:
            return getattr(config, name)
    raise ValueError(f"{type(config).__name__} names no number of experts")


def is_sparse_layer(config, layer_idx):
    rule = moe_variant(config).sparse_layers
    if rule == "sparse_step":
        return (layer_idx not in (getattr(config, "mlp_only_layers", None) or []) and num_experts(config) > 0
                and (layer_idx + 1) % config.decoder_sparse_step == 0)
    if rule == "first_k_dense":
        return layer_idx >= config.first_k_dense_replace
    return True


class MixtralTopKRouter(nn.Cell):
    """HF's `mlp.gate`: logits = x W^T [T, E], then top-k experts and their weights (ops.moe.route_tokens).

    While `recording` is set, the last logits are kept in `router_logits`, as HF's output recorder keeps them,
    for `output_router_logits` and the load-balancing loss.
    """
    records_router_logits = True  # _RouterRecording finds the routers by this (gpt-oss's router declares it too)

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        variant = moe_variant(config)
        self.top_k = config.num_experts_per_tok
        self.scoring = variant.scoring
        self.norm_topk_prob = (bool(getattr(config, "norm_topk_prob", False)) if variant.norm_topk_prob == "config"
                               else variant.norm_topk_prob)
        self.topk_method = variant.topk_method or getattr(config, "topk_method", None) or "greedy"
        self.n_group = getattr(config, "n_group", None) or 1
        self.topk_group = getattr(config, "topk_group", None) or self.n_group
        self.routed_scaling_factor = float(getattr(config, "routed_scaling_factor", None) or 1.0)
        weight_dtype = ms.float32 if variant.router_fp32 else dtype
        self.weight = new_parameter((num_experts(config), config.hidden_size), weight_dtype, "normal",
                                    config.initializer_range)
        self.correction_bias = variant.correction_bias
        if self.correction_bias:
            self.e_score_correction_bias = new_parameter((num_experts(config),), ms.float32, "zeros")
        self.recording = False
        self.router_logits = None

    def construct(self, x):
        """x [T, H] -> (weights [T, k] float32, indices [T, k] int32)."""
        if x.dtype != ms.float32 or self.weight.dtype != ms.bfloat16:  # (bf16 weights, float32 activations: CPU)
            x = x.astype(self.weight.dtype)
        logits = fused.linear(x, self.weight)                                               # [T, E]
        if self.recording:
            self.router_logits = logits
        return moe_ops.route_tokens(
            logits, self.top_k, self.scoring, self.norm_topk_prob, self.topk_method, self.n_group, self.topk_group,
            self.routed_scaling_factor, self.e_score_correction_bias if self.correction_bias else None)


class MixtralExperts(nn.Cell):
    """HF 5's stacked experts: gate_up_proj [E, 2 * I, H], down_proj [E, H, I]; compute is ops.moe_experts."""

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        hidden, inter = config.hidden_size, getattr(config, moe_variant(config).expert_size)
        std = config.initializer_range
        self.gate_up_proj = new_parameter((num_experts(config), 2 * inter, hidden), dtype, "normal", std)
        self.down_proj = new_parameter((num_experts(config), hidden, inter), dtype, "normal", std)
        if config.hidden_act not in ("silu", "swish"):
            raise NotImplementedError(f"MoE expert activation {config.hidden_act!r} is not supported (only silu)")

    def construct(self, x, indices, weights):
        return fused.moe_experts(x, indices, weights, self.gate_up_proj, self.down_proj)


class MixtralSparseMoeBlock(nn.Cell):
    """Router + routed experts (+ the always-on shared expert(s) of Qwen2-MoE and DeepSeek)."""
    # tensor-parallel layout (parallel/plan.py): every expert's width split, the router replicated; a shared
    # expert is a LlamaMLP and declares its own
    _tp_plan = {"experts": "experts"}

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        variant = moe_variant(config)
        self.gate = MixtralTopKRouter(config, dtype)
        self.experts = MixtralExperts(config, dtype)
        self.jitter_noise = float(getattr(config, "router_jitter_noise", 0.0) or 0.0)
        self.shared = variant.shared_expert
        if self.shared == "shared_expert":
            self.shared_expert = LlamaMLP(config, dtype, config.shared_expert_intermediate_size)
            self.shared_expert_gate = Linear(config.hidden_size, 1, False, dtype, std=config.initializer_range)
        elif self.shared == "shared_experts":
            self.shared_experts = LlamaMLP(config, dtype, config.moe_intermediate_size * config.n_shared_experts)

    def graph_spec(self):
        """The block's MoESpec when the compiled decoder-layer graph may run it (decoder_layer.py `moe`), else None:
        not while training (router jitter, and the kernel's compiled gradient runs every expert on every token),
        not while router logits are recorded, not with the grouped fallback (it reads the routing indices on the
        host), and only with the plain modules (no tensor-parallel experts, no LoRA-wrapped shared expert)."""
        from ..llama.decoder_layer import MoESpec
        from ...ops import registry

        gate = self.gate
        if self.training or gate.recording or registry.implementation_name("moe_experts") != "cpu":
            return None
        if type(gate) is not MixtralTopKRouter or type(self.experts) is not MixtralExperts:
            return None
        shared_mlp = None
        if self.shared:
            shared = getattr(self, self.shared)
            if any(type(cell) not in (LlamaMLP, Linear) for _, cell in shared.cells_and_names()):
                return None
            if self.shared == "shared_expert" and type(self.shared_expert_gate) is not Linear:
                return None
            shared_mlp = shared.spec()
        return MoESpec(gate.top_k, gate.scoring, gate.norm_topk_prob, gate.topk_method, gate.n_group, gate.topk_group,
                       gate.routed_scaling_factor, bool(gate.correction_bias), self.shared, shared_mlp)

    def construct(self, hidden_states):
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])                                           # [T, H]
        if self.training and self.jitter_noise > 0:  # Mixtral: multiplicative noise on the router's and experts' input
            x = x * ops.uniform(x.shape, ms.Tensor(1.0 - self.jitter_noise), ms.Tensor(1.0 + self.jitter_noise))
        weights, indices = self.gate(x)
        out = self.experts(x, indices, weights)
        if self.shared == "shared_expert":
            out = out + ops.sigmoid(self.shared_expert_gate(x)) * self.shared_expert(x)
        elif self.shared == "shared_experts":
            out = out + self.shared_experts(x)
        return out.reshape(shape)


def moe_mlp_for_layer(config, layer_idx, dtype=ms.float32):
    """The MLP of decoder layer `layer_idx`: the sparse block, or a dense LLaMA MLP where the family keeps one."""
    if is_sparse_layer(config, layer_idx):
        return MixtralSparseMoeBlock(config, dtype)
    return LlamaMLP(config, dtype)


# ---------------------------------------------------------------------------------------------- checkpoints
# Our stacked parameter <- HF's per-expert tensors: (stacked name, which per-expert name, row block).
# Per-expert names come from MoeVariant.checkpoint_experts, in the order (gate, up, down).
EXPERT_STACKING = (("gate_up_proj", 0, 0), ("gate_up_proj", 1, 1), ("down_proj", 2, 0))
_EXPERT_KEY = re.compile(r"^(?P<layer>.*layers\.\d+\.)(?P<block>\w+)\.experts\.(?P<expert>\d+)\.(?P<proj>\w+)\.weight$")


class _ExpertSlice:
    """One HF per-expert tensor cut from a stacked parameter only when save_pretrained writes it."""

    def __init__(self, tensor, expert, rows):
        self.tensor, self.expert, self.rows = tensor, expert, rows
        self.dtype = tensor.dtype
        self.shape = (rows.stop - rows.start,) + tuple(tensor.shape[2:])

    def view(self, dtype):
        return _ExpertSlice(self.tensor.view(dtype), self.expert, self.rows)

    def asnumpy(self):
        return self.tensor[self.expert, self.rows.start:self.rows.stop].asnumpy()


class MoeCheckpointMixin:
    """Loads per-expert checkpoint tensors into the stacked parameters, and saves them per expert again."""

    def _checkpoint_names(self):
        variant = moe_variant(self.config)
        return variant.checkpoint_block, variant.checkpoint_experts

    def load_weights(self, source):
        if self._checkpoint_names()[1] is None:  # the files hold the stacked tensors already (gpt-oss)
            return super().load_weights(source)
        return super().load_weights(self._stack_experts(source))

    def _stack_experts(self, source):
        """Stream (key, file, tensor, is_bf16_bits), collecting each layer's per-expert tensors into one lazy
        stacked tensor (weight_loading.StackedSource: a tensor-parallel rank then reads only its share).

        Keys already in the stacked form (HF's save_original_format=False) pass through untouched.
        """
        block, names = self._checkpoint_names()
        where = {names[part]: (stacked, block_index) for stacked, part, block_index in EXPERT_STACKING}
        experts_count = num_experts(self.config)
        pending = {}  # stacked key -> [{(expert, block): source}, is_bits, file, blocks, first key]
        for key, path, array, is_bits in source:
            if block != "mlp":  # Mixtral: block_sparse_moe.gate / .experts -> mlp.gate / .experts
                key = key.replace(f".{block}.", ".mlp.")
            match = _EXPERT_KEY.match(key)
            if match is None or match["block"] != "mlp" or match["proj"] not in where:
                yield key, path, array, is_bits
                continue
            stacked, block_index = where[match["proj"]]
            expert = int(match["expert"])
            if expert >= experts_count:
                raise CheckpointError(f"Unexpected key {key!r} in {path}: expert {expert} but the config has "
                                      f"num_experts={experts_count}")
            target = f"{match['layer']}mlp.experts.{stacked}"
            array = as_source(array, is_bits)
            blocks = 2 if stacked == "gate_up_proj" else 1
            entry = pending.setdefault(target, [{}, is_bits, path, blocks, array])
            first = entry[4]
            if tuple(array.shape) != tuple(first.shape) or array.dtype != first.dtype:
                raise CheckpointError(f"Shape mismatch for {key!r} in {path}: {tuple(array.shape)} {array.dtype}, "
                                      f"other experts of this layer are {tuple(first.shape)} {first.dtype}")
            entry[0][(expert, block_index)] = array
            if len(entry[0]) == experts_count * blocks:
                parts = pending.pop(target)[0]
                stacked_source = StackedSource([[parts[(e, b)] for b in range(blocks)] for e in range(experts_count)],
                                               is_bits)
                yield target, entry[2], stacked_source, entry[1]
        for target, entry in pending.items():
            missing = sorted({e for e in range(experts_count) for b in range(entry[3]) if (e, b) not in entry[0]})
            raise CheckpointError(f"Missing keys: the checkpoint has only part of {target!r} (experts {missing} "
                                  f"are incomplete)")

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Writes HF's per-expert names (what transformers' own save_pretrained writes by default)."""
        block, names = self._checkpoint_names()
        if names is None:
            return super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        params = state_dict if state_dict is not None else dict(self.parameters_and_names())
        out = type(params)() if isinstance(params, dict) else {}  # (keeps a gathered state's WholeStateDict type)
        for name, param in params.items():
            stacked = name.rsplit(".", 1)[-1]
            if ".mlp.experts." in name and stacked in ("gate_up_proj", "down_proj"):
                prefix = name[:-len(f"mlp.experts.{stacked}")] + f"{block}.experts."
                rows = param.shape[1] // (2 if stacked == "gate_up_proj" else 1)
                for expert in range(param.shape[0]):
                    for target, part, block_index in EXPERT_STACKING:
                        if target == stacked:
                            out[f"{prefix}{expert}.{names[part]}.weight"] = _ExpertSlice(
                                param, expert, slice(block_index * rows, (block_index + 1) * rows))
            elif block != "mlp" and ".mlp.gate." in name:
                out[name.replace(".mlp.gate.", f".{block}.gate.")] = param
            else:
                out[name] = param
        return super().save_pretrained(save_directory, *args, state_dict=out, **kwargs)


# ---------------------------------------------------------------------------------------------- models
class _RouterRecording:
    """`with _RouterRecording(model, on) as rec:` keeps every router's logits of one forward in rec.logits."""

    def __init__(self, model, on):
        self.routers = [cell for _, cell in model.cells_and_names() if getattr(cell, "records_router_logits", False)]
        self.on = bool(on)
        self.logits = None

    def __enter__(self):
        for router in self.routers:
            router.recording, router.router_logits = self.on, None
        return self

    def __exit__(self, *exc):
        if self.on:
            self.logits = tuple(r.router_logits for r in self.routers if r.router_logits is not None)
        for router in self.routers:
            router.recording, router.router_logits = False, None
        return False


def _output_router_logits(config, value):
    return value if value is not None else bool(getattr(config, "output_router_logits", False))


class MixtralPreTrainedModel(MoeCheckpointMixin, LlamaPreTrainedModel):
    _no_split_modules = ["LlamaDecoderLayer"]


class MixtralModel(MoeCheckpointMixin, LlamaModel):
    def construct(self, *args, output_router_logits=None, return_dict=None, **kwargs):
        with _RouterRecording(self, _output_router_logits(self.config, output_router_logits)) as rec:
            out = super().construct(*args, return_dict=True, **kwargs)
        out = MoeModelOutputWithPast(last_hidden_state=out.last_hidden_state, past_key_values=out.past_key_values,
                                     hidden_states=out.hidden_states, router_logits=rec.logits)
        return out.to_tuple() if return_dict is False else out


class MixtralForCausalLM(MoeCheckpointMixin, LlamaForCausalLM):
    """LLaMA's causal LM with sparse MLPs; adds HF's router load-balancing loss when the family has one."""

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, logits_to_keep=0, num_items_in_batch=None,
                  output_router_logits=None, **kwargs):
        record = _output_router_logits(self.config, output_router_logits)
        with _RouterRecording(self, record) as rec:
            out = super().construct(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                    past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                    use_cache=use_cache, output_hidden_states=output_hidden_states,
                                    output_attentions=output_attentions, return_dict=True,
                                    logits_to_keep=logits_to_keep, num_items_in_batch=num_items_in_batch, **kwargs)
        loss, aux_loss = out.loss, None
        coef = getattr(self.config, "router_aux_loss_coef", None)
        if record and coef is not None and moe_variant(self.config).aux_loss:  # (not DeepSeek-V2/V3, as in HF)
            aux_loss = moe_ops.load_balancing_loss(rec.logits, num_experts(self.config),
                                                   self.config.num_experts_per_tok, attention_mask)
            if labels is not None:
                loss = loss + coef * aux_loss
        out = MoeCausalLMOutputWithPast(loss=loss, aux_loss=aux_loss, logits=out.logits,
                                        past_key_values=out.past_key_values, hidden_states=out.hidden_states,
                                        router_logits=rec.logits)
        return out.to_tuple() if return_dict is False else out


class MixtralForSequenceClassification(GenericForSequenceClassification, MixtralPreTrainedModel):
    _base_model_class = MixtralModel


class MixtralForTokenClassification(GenericForTokenClassification, MixtralPreTrainedModel):
    _base_model_class = MixtralModel

"""Apply a tensor-parallel plan to a built model from outside the model file (torchtitan style).

The plan is HF's: `config.base_model_tp_plan` ({"layers.*.self_attn.q_proj": "colwise", ...}, keys relative
to the base model) plus the head entry HF keeps on its torch class (`LlamaForCausalLM._tp_plan`:
{"lm_head": "colwise_gather_output"}). Matching Linear/Embedding cells are replaced one-for-one by the
layers of parallel/layers.py; afterwards each attention module's head counts and each MLP's width are this
rank's, which is all the unchanged model code needs to run on its shard.
"""
import re

from .layers import ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding, even_range

_STYLES = ("colwise", "rowwise", "colwise_gather_output", "embedding_rowwise")
_ATTENTION_COLUMNS = ("q_proj", "k_proj", "v_proj", "qkv_proj")
_MLP_COLUMNS = ("gate_proj", "up_proj", "gate_up_proj")


def resolve_tp_plan(model, tp_plan):
    """tp_plan="auto" -> {full cell name pattern: style} from the config; a dict is taken as given (keys
    relative to the model passed to from_pretrained)."""
    if isinstance(tp_plan, dict):
        return dict(tp_plan)
    if tp_plan != "auto":
        raise ValueError(f"tp_plan={tp_plan!r}: use 'auto' (the config's base_model_tp_plan) or a dict of "
                         "{module pattern: style}")
    base = getattr(model.config, "base_model_tp_plan", None)
    if not base:
        raise NotImplementedError(f"tensor parallelism: config of model_type {model.config.model_type!r} has no "
                                  "base_model_tp_plan; pass tp_plan as a dict")
    prefix = model.base_model_prefix + "." if hasattr(model, model.base_model_prefix) else ""
    plan = {}
    for key, style in base.items():
        # HF replicates fused qkv/gate_up outputs (Phi3: "colwise_gather_output" then "rowwise_split_input")
        # because its torch hooks cannot split per sub-block; ours can, so those become plain colwise/rowwise.
        if style == "colwise_gather_output" and key.endswith(("qkv_proj", "gate_up_proj")):
            style = "colwise"
        elif style == "rowwise_split_input":
            style = "rowwise"
        elif style == "replicated_with_grad_allreduce":
            continue  # Qwen3's per-head q/k norms: the same weight on every rank (inference only here)
        plan[prefix + key] = style
    if getattr(model, "lm_head", None) is not None:
        plan["lm_head"] = "colwise_gather_output"
    return plan


def _head_range(num_heads, rank, size):
    """Heads [start, stop) of this rank; with fewer heads than ranks (GQA's KV heads) ranks share a head:
    rank r takes the KV head its query heads read, r // (size // num_heads)."""
    if num_heads >= size:
        return even_range(num_heads, rank, size)
    head = rank // (size // num_heads)
    return head, head + 1


def _check_divisible(module, size):
    if hasattr(module, "intermediate_size"):  # an MLP
        if module.intermediate_size % size:
            raise ValueError(f"tensor parallel size {size} does not divide intermediate_size={module.intermediate_size}")
        return
    heads, kv = module.num_heads, module.num_key_value_heads
    if heads % size:
        raise ValueError(f"tensor parallel size {size} does not divide num_attention_heads={heads}: use a tp size "
                         "that divides the number of attention heads")
    if kv % size and size % kv:
        raise ValueError(f"tensor parallel size {size} and num_key_value_heads={kv}: one must divide the other")


def _column_ranges(parent, leaf, linear, mesh):
    from ..models.llama.modeling_llama import LlamaAttention, LlamaMLP

    rank, size = mesh.rank, mesh.size
    if leaf in _ATTENTION_COLUMNS and type(parent) is LlamaAttention:
        d, heads, kv = parent.head_dim, parent.num_heads, parent.num_key_value_heads
        q0, q1 = _head_range(heads, rank, size)
        k0, k1 = _head_range(kv, rank, size)
        q, kv_rows = (q0 * d, q1 * d), (k0 * d, k1 * d)
        if leaf == "qkv_proj":  # fused rows: all q heads, then all k heads, then all v heads
            k_start, v_start = heads * d, (heads + kv) * d
            return [q, (k_start + kv_rows[0], k_start + kv_rows[1]), (v_start + kv_rows[0], v_start + kv_rows[1])]
        return [q if leaf == "q_proj" else kv_rows]
    if leaf in _MLP_COLUMNS and type(parent) is LlamaMLP:
        inter = parent.intermediate_size
        start, stop = even_range(inter, rank, size)
        return [(start, stop), (inter + start, inter + stop)] if leaf == "gate_up_proj" else [(start, stop)]
    if leaf == "lm_head":
        return [even_range(linear.out_features, rank, size, pad=True)]
    raise NotImplementedError(f"tensor parallelism: no column split known for {leaf!r} in {type(parent).__name__}")


def _row_range(parent, leaf, linear, mesh):
    from ..models.llama.modeling_llama import LlamaAttention, LlamaMLP

    if leaf == "o_proj" and type(parent) is LlamaAttention:
        start, stop = _head_range(parent.num_heads, mesh.rank, mesh.size)
        return start * parent.head_dim, stop * parent.head_dim
    if leaf == "down_proj" and type(parent) is LlamaMLP:
        return even_range(parent.intermediate_size, mesh.rank, mesh.size)
    raise NotImplementedError(f"tensor parallelism: no row split known for {leaf!r} in {type(parent).__name__}")


def _replacement(parent, leaf, cell, style, mesh):
    dtype = cell.weight.dtype  # values come from the checkpoint (weight_loader); no init worth copying
    if style in ("colwise", "colwise_gather_output"):
        return ColumnParallelLinear(cell.in_features, cell.out_features, _column_ranges(parent, leaf, cell, mesh),
                                    mesh, cell.bias is not None, dtype, gather_output=style != "colwise")
    if style == "rowwise":
        return RowParallelLinear(cell.in_features, cell.out_features, _row_range(parent, leaf, cell, mesh), mesh,
                                 cell.bias is not None, dtype)
    vocab_range = even_range(cell.num_embeddings, mesh.rank, mesh.size, pad=True)
    return VocabParallelEmbedding(cell.num_embeddings, cell.embedding_dim, vocab_range, mesh, dtype)


def apply_tensor_parallel(model, mesh, plan):
    """Replace the plan's cells in `model` by this rank's parallel layers; returns the replaced names."""
    from ..models.llama.modeling_llama import LlamaAttention, LlamaMLP

    if hasattr(model, "_to_our_names"):
        raise NotImplementedError(f"tensor parallelism for {type(model).__name__}: checkpoints renamed at load "
                                  "(remote-code formats) are not supported yet")
    patterns = []
    for key, style in plan.items():
        if style not in _STYLES:
            raise NotImplementedError(f"tensor parallel style {style!r} (for {key!r}) is not supported; supported: "
                                      f"{', '.join(_STYLES)}")
        patterns.append((re.compile(re.escape(key).replace(r"\*", r"[^.]+")), style))
    cells = dict(model.cells_and_names())
    # exact types: subclasses (Baichuan's ALiBi attention) carry per-head state this plan does not split
    for cell in cells.values():
        if type(cell) in (LlamaAttention, LlamaMLP):
            _check_divisible(cell, mesh.size)
    replaced, parents = [], []
    for name, cell in cells.items():
        style = next((s for pattern, s in patterns if pattern.fullmatch(name)), None)
        if style is None:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = cells[parent_name] if parent_name else model
        setattr(parent, leaf, _replacement(parent, leaf, cell, style, mesh))
        replaced.append(name)
        if type(parent) in (LlamaAttention, LlamaMLP) and all(p is not parent for p in parents):
            parents.append(parent)
    if not replaced:
        raise ValueError(f"tp_plan matched no module of {type(model).__name__}: {sorted(plan)}")
    for parent in parents:  # the model code reshapes and splits by these counts: make them this rank's
        if type(parent) is LlamaAttention:
            kv = parent.num_key_value_heads
            parent.num_heads //= mesh.size
            parent.num_key_value_heads = kv // mesh.size if kv >= mesh.size else 1
        else:
            parent.intermediate_size //= mesh.size
    model.tp_mesh = mesh  # save_pretrained refuses a sharded model; generate and tests read the rank
    return replaced

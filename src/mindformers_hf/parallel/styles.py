"""Parallel styles: how one cell is replaced by this rank's parallel layer (HF's ParallelStyle names).

A style is a function (cell, blocks, mesh) -> replacement cell, registered by name. `blocks` is the row split the
parent module declares for that cell (parallel/plan.py reads it from the parent's `_tp_plan`): a list of
`Block`s, each a run of `count` units of `width` rows (heads of head_dim rows, MLP channels of one row), laid
one after another in the full tensor. None: the parent declares nothing, the style splits evenly.

Add a style: write the function, decorate it with `@parallel_style("name")`; a module opts in by naming it in
its `_tp_plan`. A `_tp_plan` entry may also name one of the module's own parameters (gpt-oss's per-head `sinks`):
PARAMETER_STYLES split it in place (`colwise`: its rows by the declared blocks).
"""
from dataclasses import dataclass

from ..layers import new_parameter
from .layers import (ColumnParallelLinear, GradSummedReplica, GradSummedTail, ParallelExperts, ParallelStackedExperts,
                     RowParallelLinear, ShardedParameter, ShardedRMSNorm, VocabParallelEmbedding, even_range)

PARALLEL_STYLES = {}
PARAMETER_STYLES = {}
# HF plan values whose meaning here is another style's (HF's torch hooks cannot split a fused output per block,
# ours can): {HF name: ours, None = not split}
HF_STYLE_ALIASES = {"rowwise_split_input": "rowwise", "replicate": None,
                    "embedding_rowwise": "vocab", "moe_tp_experts": "experts"}


def parallel_style(name):
    def register(fn):
        PARALLEL_STYLES[name] = fn
        return fn
    return register


@dataclass(frozen=True)
class Block:
    name: str            # the count's name in errors (HF's config field: num_attention_heads, ...)
    count: int           # units in the full tensor
    width: int = 1       # rows per unit
    shared: bool = False  # fewer units than ranks may be shared (GQA's KV heads): rank r takes unit r // (size / count)

    def units(self, rank, size):
        """This rank's units [start, stop); a size the count does not fit is a ValueError naming both."""
        if self.count % size == 0:
            return even_range(self.count, rank, size)
        if self.shared and size % self.count == 0:
            head = rank // (size // self.count)
            return head, head + 1
        if self.shared:
            raise ValueError(f"tensor parallel size {size} and {self.name}={self.count}: one must divide the other")
        raise ValueError(f"tensor parallel size {size} does not divide {self.name}={self.count}: use a tp size that "
                         f"divides {self.name}")


def block_ranges(blocks, rank, size):
    """Row ranges [start, stop) of this rank in the full tensor: one per block."""
    ranges, offset = [], 0
    for block in blocks:
        start, stop = block.units(rank, size)
        ranges.append((offset + start * block.width, offset + stop * block.width))
        offset += block.count * block.width
    return ranges


def _column(cell, blocks, mesh, gather_output):
    if blocks is None:
        blocks = [Block("out_features", cell.out_features)]
    if gather_output:  # the LM head: pad the vocabulary to a multiple of the ranks (zero rows past the end)
        ranges = [even_range(cell.out_features, mesh.rank, mesh.size, pad=True)]
    else:
        ranges = block_ranges(blocks, mesh.rank, mesh.size)
    # a cell that stores its weight [in, out] says so (`transposed`, OpenAI's Conv1D): the split is over columns
    return ColumnParallelLinear(cell.in_features, cell.out_features, ranges, mesh, cell.bias is not None,
                                cell.weight.dtype, gather_output=gather_output,
                                transposed=getattr(cell, "transposed", False))


@parallel_style("colwise")
def colwise(cell, blocks, mesh):
    """Output features (rows of W) split; a fused weight (qkv, gate_up) per declared block."""
    return _column(cell, blocks, mesh, False)


@parallel_style("packed_colwise")
def packed_colwise(cell, blocks, mesh):
    """HF's name for a fused gate_up: two equal blocks when the parent declares none."""
    if blocks is None:
        blocks = [Block("out_features // 2", cell.out_features // 2)] * 2
    return _column(cell, blocks, mesh, False)


@parallel_style("colwise_gather_output")
def colwise_gather_output(cell, blocks, mesh):
    """The LM head: vocab rows split, logits all-gathered (parallel_logits)."""
    return _column(cell, blocks, mesh, True)


@parallel_style("rowwise")
def rowwise(cell, blocks, mesh):
    """Input features (columns of W) split, partial outputs all-reduced; the bias added once."""
    blocks = blocks or [Block("in_features", cell.in_features)]
    if len(blocks) != 1:
        raise ValueError(f"rowwise split takes one block of columns, got {len(blocks)}")
    (cols,) = block_ranges(blocks, mesh.rank, mesh.size)
    return RowParallelLinear(cell.in_features, cell.out_features, cols, mesh, cell.bias is not None,
                             cell.weight.dtype, transposed=getattr(cell, "transposed", False))


@parallel_style("replicated_with_grad_allreduce")
def replicated_with_grad_allreduce(cell, blocks, mesh):
    """The whole cell on every rank, its parameters' gradients summed over the group: a cell applied to this rank's
    heads only (Qwen3's per-head q/k norms), whose gradient each rank holds a part of."""
    return GradSummedReplica(cell, mesh)


@parallel_style("mla_kv_a_proj")
def mla_kv_a_proj(cell, blocks, mesh):
    """HF's style for DeepSeek's `kv_a_proj_with_mqa`: replicated, the gradient of its last block (the shared
    rotary key, which reaches only this rank's heads) summed over the group. The parent declares the blocks
    (latent, rotary key); without them the rotary width is unknown."""
    if not blocks:
        raise ValueError("mla_kv_a_proj needs its parent to declare the blocks (kv_lora_rank, qk_rope_head_dim)")
    return GradSummedTail(cell, blocks[-1].count * blocks[-1].width, mesh)


@parallel_style("vocab")
def vocab(cell, blocks, mesh):
    """An embedding's rows split (the last rank padded); ids outside a rank's rows are filled by the reduce."""
    vocab_range = even_range(cell.num_embeddings, mesh.rank, mesh.size, pad=True)
    return VocabParallelEmbedding(cell.num_embeddings, cell.embedding_dim, vocab_range, mesh, cell.weight.dtype)


@parallel_style("experts")
def experts(cell, blocks, mesh):
    """Stacked experts (gate_up_proj [E, 2 * I, H], down_proj [E, H, I]): each expert's width I split; the counts
    are read from the weights' shapes."""
    num, hidden, inter = cell.down_proj.shape
    (units,) = blocks or [Block("moe_intermediate_size", inter)]
    return ParallelExperts(num, hidden, inter, units.units(mesh.rank, mesh.size), mesh, cell.down_proj.dtype)


@parallel_style("sharded_rms_norm")
def sharded_rms_norm(cell, blocks, mesh):
    """An RMSNorm over a column-parallel output (OLMo 2's q/k norms over the whole projection): its weight split as
    that output's rows (the parent declares the blocks), the sum of squares all-reduced (layers.ShardedRMSNorm).
    Chosen over HF's plan for OLMo 2 (q/k/v gathered, attention replicated): the heads and the KV cache stay
    split, for one all-reduce of [B, S, 1] per norm."""
    if not blocks:
        raise ValueError("sharded_rms_norm needs its parent to declare the blocks of the output it normalises")
    full = cell.weight.shape[0]
    ranges = block_ranges(blocks, mesh.rank, mesh.size)
    replicas = max(1, mesh.size // blocks[0].count) if len(blocks) == 1 and blocks[0].shared else 1
    return ShardedRMSNorm(full, ranges, cell.variance_epsilon, mesh, cell.weight.dtype, replicas)


@parallel_style("stacked_experts")
def stacked_experts(cell, blocks, mesh):
    """Stacked experts that compute themselves (gpt-oss's, with biases): every expert's width split, each parameter
    along the dimension the cell declares (`tp_param_dims`); see layers.ParallelStackedExperts."""
    if not blocks or len(blocks) != 1:
        raise ValueError("stacked_experts needs its parent to declare one block (the expert width)")
    return ParallelStackedExperts(cell, blocks[0].units(mesh.rank, mesh.size), mesh)


def _colwise_parameter(param, blocks, mesh):
    """A parameter's rows by the declared blocks (gpt-oss's sinks: one per query head) -> (this rank's parameter,
    its loader)."""
    if not blocks:
        raise ValueError("a parameter split colwise needs its parent to declare the blocks")
    ranges = block_ranges(blocks, mesh.rank, mesh.size)
    shape = (sum(b - a for a, b in ranges),) + tuple(param.shape[1:])
    return new_parameter(shape, param.dtype), ShardedParameter(param.shape, ranges)


PARAMETER_STYLES["colwise"] = _colwise_parameter

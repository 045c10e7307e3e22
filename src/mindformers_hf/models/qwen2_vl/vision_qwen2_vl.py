"""The vision tower of Qwen2-VL and Qwen2.5-VL (`visual.*`), read as transformers' modeling files: patch embedding,
2D rotary, blocks, patch merger; Qwen2.5-VL adds window attention, RMSNorms and a gated MLP.

The patch embedding is HF's Conv3d with stride equal to its kernel over patches already cut by the image processor:
one matmul of the flattened patches [N, C * T * P * P] with the kernel (kept in the checkpoint's 5D shape).
Attention runs over every patch of every image at once with a block-diagonal mask (one block per frame, or per
window in Qwen2.5-VL's windowed blocks), through the ops registry as the text attention does
(`fused.causal_attention` takes any additive mask). The index work -- rotary positions, segment boundaries,
window order -- is numpy on the host from `grid_thw`, as HF computes it from `grid_thw.tolist()`.

How Qwen2.5-VL departs is configuration: `VisionVariant`, chosen by the vision config's model_type.
"""
from dataclasses import dataclass

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...activations import activation, get_activation
from ...layers import LayerNorm, Linear, new_parameter
from ...masking_utils import MASK_VALUE
from ...modeling_outputs import BaseModelOutputWithPooling
from ...tensor_io import to_mindspore


@dataclass(frozen=True)
class VisionVariant:
    """How a vision tower departs from Qwen2-VL's; each switch mirrors a line of that family's HF file."""
    width: str = "embed_dim"            # the config field of the blocks' width (Qwen2.5-VL: hidden_size)
    out_width: str = "hidden_size"      # the merger's output width (Qwen2.5-VL: out_hidden_size)
    rms_norm: bool = False              # Qwen2.5-VL: RMSNorm (eps 1e-6) for norm1/norm2/ln_q instead of LayerNorm
    gated_mlp: bool = False             # Qwen2.5-VL: gate/up/down_proj with biases, else fc1/fc2 (mlp_ratio wide)
    windows: bool = False               # Qwen2.5-VL: blocks outside fullatt_block_indexes attend within windows


QWEN2_VL_VISION = VisionVariant()
QWEN2_5_VL_VISION = VisionVariant("hidden_size", "out_hidden_size", rms_norm=True, gated_mlp=True, windows=True)
_VARIANTS = {"qwen2_vl_vision": QWEN2_VL_VISION, "qwen2_5_vl_vision": QWEN2_5_VL_VISION}


def vision_variant(config):
    try:
        return _VARIANTS[config.model_type]
    except KeyError:
        raise NotImplementedError(f"vision tower of model_type {config.model_type!r} is not supported "
                                  f"(supported: {', '.join(_VARIANTS)})") from None


# ---------------------------------------------------------------------------------------------- host index work
def vision_position_ids(grid_thw, merge):
    """[N, 2] (row, column) of each patch, in the processor's order: merge x merge blocks, block-major (HF's
    get_vision_position_ids), repeated for each of the t frames."""
    out = []
    for t, h, w in grid_thw:
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        out.append(np.tile(np.stack([hpos, wpos], -1), (t, 1)))
    return np.concatenate(out, 0)


def frame_seqlens(grid_thw):
    """cu_seqlens: [0, ...] the boundaries of each frame's patches (each frame attends to itself)."""
    lengths = np.repeat([h * w for _, h, w in grid_thw], [t for t, _, _ in grid_thw])
    return np.concatenate([[0], np.cumsum(lengths)])


def window_index(grid_thw, merge, window_size, patch_size):
    """(order of the merged patches when grouped by window [N / merge^2], window boundaries in patches) --
    HF's get_vision_window_index: windows of window_size pixels, padded grids, empty windows dropped."""
    order, cu, offset = [], [0], 0
    win = window_size // merge // patch_size
    unit = merge * merge
    for t, h, w in grid_thw:
        gh, gw = h // merge, w // merge
        index = np.arange(t * gh * gw).reshape(t, gh, gw)
        pad_h, pad_w = win - gh % win, win - gw % win
        nh, nw = (gh + pad_h) // win, (gw + pad_w) // win
        padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        padded = padded.reshape(t, nh, win, nw, win).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, win, win)
        seqlens = (padded != -100).sum((2, 3)).reshape(-1)
        flat = padded.reshape(-1)
        order.append(flat[flat != -100] + offset)
        cu.extend((np.cumsum(seqlens) * unit + cu[-1]).tolist())
        offset += t * gh * gw
    cu = np.asarray(cu)
    keep = np.concatenate([[True], cu[1:] != cu[:-1]])  # torch.unique_consecutive
    return np.concatenate(order), cu[keep]


def block_diagonal_mask(cu_seqlens):
    """[1, 1, N, N] float32 additive mask: 0 within each segment [cu[i], cu[i+1]), MASK_VALUE across."""
    total = int(cu_seqlens[-1])
    segment = np.repeat(np.arange(len(cu_seqlens) - 1), np.diff(cu_seqlens))
    allowed = segment[:, None] == segment[None, :]
    return ms.Tensor(np.where(allowed, np.float32(0.0), np.float32(MASK_VALUE)).reshape(1, 1, total, total))


# ---------------------------------------------------------------------------------------------- modules
class VisionRMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6, dtype=ms.float32):
        super().__init__()
        self.weight = new_parameter((hidden_size,), dtype, "ones")
        self.variance_epsilon = eps

    def construct(self, x):
        return fused.rms_norm(x, self.weight, self.variance_epsilon)


def _norm(variant, width, dtype):
    return VisionRMSNorm(width, 1e-6, dtype) if variant.rms_norm else LayerNorm(width, 1e-6, dtype)


class PatchEmbed(nn.Cell):
    """HF's Conv3d(kernel = stride = [T, P, P], no bias) over pixel_values [N, C * T * P * P] -> [N, width]."""

    def __init__(self, config, width, dtype=ms.float32):
        super().__init__()
        kernel = (width, config.in_channels, config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Cell()
        self.proj.weight = new_parameter(kernel, dtype, "normal", config.initializer_range)
        self.width = width
        self._matmul = ops.MatMul(transpose_b=True)

    def construct(self, pixel_values):
        weight = self.proj.weight.reshape(self.width, -1)                          # [width, C * T * P * P]
        return self._matmul(pixel_values.reshape(-1, weight.shape[1]).astype(weight.dtype), weight)


class VisionAttention(nn.Cell):
    def __init__(self, config, width, dtype=ms.float32):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = width // self.num_heads
        self.scaling = self.head_dim ** -0.5
        self.attn_implementation = getattr(config, "_attn_implementation", None)
        std = config.initializer_range
        self.qkv = Linear(width, 3 * width, True, dtype, std=std)
        self.proj = Linear(width, width, True, dtype, std=std)

    def construct(self, hidden_states, cos, sin, mask):
        """hidden_states [N, width], cos/sin [1, N, head_dim], mask [1, 1, N, N] -> [N, width]."""
        n = hidden_states.shape[0]
        qkv = self.qkv(hidden_states).reshape(n, 3, self.num_heads, self.head_dim).transpose(1, 2, 0, 3)
        q, k, v = qkv[0:1], qkv[1:2], qkv[2:3]                                     # [1, H, N, D]
        dtype = q.dtype  # HF rotates in float32 and casts back
        q, k = fused.apply_rotary_pos_emb(q.astype(ms.float32), k.astype(ms.float32), cos, sin)
        out = fused.causal_attention(q.astype(dtype), k.astype(dtype), v, mask, self.scaling,
                                     attn_implementation=self.attn_implementation)
        return self.proj(out[0].swapaxes(0, 1).reshape(n, -1))                     # [N, H * D]


class VisionMlp(nn.Cell):
    """Qwen2-VL: fc2(act(fc1(x))), mlp_ratio wide; Qwen2.5-VL (gated_mlp): down(act(gate(x)) * up(x)) with biases."""

    def __init__(self, config, variant, width, dtype=ms.float32):
        super().__init__()
        std = config.initializer_range
        self.gated = variant.gated_mlp
        self.act = config.hidden_act
        get_activation(self.act, "vision hidden_act")
        if self.gated:
            inter = config.intermediate_size
            self.gate_proj = Linear(width, inter, True, dtype, std=std)
            self.up_proj = Linear(width, inter, True, dtype, std=std)
            self.down_proj = Linear(inter, width, True, dtype, std=std)
        else:
            inter = int(width * config.mlp_ratio)
            self.fc1 = Linear(width, inter, True, dtype, std=std)
            self.fc2 = Linear(inter, width, True, dtype, std=std)

    def construct(self, x):
        if self.gated:
            return self.down_proj(activation(self.act, self.gate_proj(x)) * self.up_proj(x))
        return self.fc2(activation(self.act, self.fc1(x)))


class VisionBlock(nn.Cell):
    def __init__(self, config, variant, width, dtype=ms.float32):
        super().__init__()
        self.norm1 = _norm(variant, width, dtype)
        self.norm2 = _norm(variant, width, dtype)
        self.attn = VisionAttention(config, width, dtype)
        self.mlp = VisionMlp(config, variant, width, dtype)

    def construct(self, hidden_states, cos, sin, mask):
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states), cos, sin, mask)
        return hidden_states + self.mlp(self.norm2(hidden_states))


class PatchMerger(nn.Cell):
    """Norm, then each merge x merge group of patches concatenated [N / m^2, width * m^2] -> MLP -> [.., out]."""

    def __init__(self, config, variant, width, out_width, dtype=ms.float32):
        super().__init__()
        self.hidden = width * config.spatial_merge_size ** 2
        std = config.initializer_range
        self.ln_q = _norm(variant, width, dtype)
        # HF's nn.Sequential(Linear, GELU, Linear): parameters mlp.0.* and mlp.2.*
        self.mlp = nn.CellDict({"0": Linear(self.hidden, self.hidden, True, dtype, std=std),
                                "2": Linear(self.hidden, out_width, True, dtype, std=std)})

    def construct(self, x):
        x = self.ln_q(x).reshape(-1, self.hidden)
        return self.mlp["2"](ops.gelu(self.mlp["0"](x), approximate="none"))


class VisionTransformer(nn.Cell):
    """HF's Qwen2VisionTransformerPretrainedModel / Qwen2_5_VisionTransformerPretrainedModel (the `visual` module):
    (pixel_values [N, C * T * P * P], grid_thw [[t, h, w], ...]) -> BaseModelOutputWithPooling: the blocks' output
    [N, width] and the merged features [N / merge^2, out_width] (`pooler_output`)."""

    def __init__(self, config, dtype=ms.float32):
        super().__init__()
        self.config = config
        variant = self.variant = vision_variant(config)
        width = getattr(config, variant.width)
        self.spatial_merge_size = config.spatial_merge_size
        self.patch_embed = PatchEmbed(config, width, dtype)
        head_dim = width // config.num_heads
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        spatial = head_dim // 2
        self.inv_freq = (1.0 / (theta ** (np.arange(0, spatial, 2, dtype=np.float32) / spatial))).astype(np.float32)
        self.blocks = nn.CellList([VisionBlock(config, variant, width, dtype) for _ in range(config.depth)])
        self.merger = PatchMerger(config, variant, width, getattr(config, variant.out_width), dtype)
        self.fullatt_block_indexes = tuple(getattr(config, "fullatt_block_indexes", None) or ())

    def rotary(self, positions):
        """[N, 2] (row, column) -> cos, sin [1, N, head_dim]: row frequencies then column ones, twice (HF)."""
        freqs = ms.Tensor(positions.astype(np.float32)).expand_dims(-1) * ms.Tensor(self.inv_freq)  # [N, 2, D/4]
        freqs = ops.cat((freqs[:, 0], freqs[:, 1]), -1)                                           # [N, D/2]
        emb = ops.cat((freqs, freqs), -1).expand_dims(0)                                          # [1, N, D]
        return ops.cos(emb), ops.sin(emb)

    def construct(self, pixel_values, grid_thw):
        grid = [tuple(int(v) for v in row) for row in np.asarray(grid_thw).reshape(-1, 3)]
        merge = self.spatial_merge_size
        hidden_states = self.patch_embed(to_mindspore(pixel_values))              # [N, width]
        positions = vision_position_ids(grid, merge)
        full_mask = block_diagonal_mask(frame_seqlens(grid))
        order = None
        if self.variant.windows:
            windows, cu_windows = window_index(grid, merge, self.config.window_size, self.config.patch_size)
            unit = merge * merge
            order = (windows[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)  # patches, window by window
            hidden_states = ops.gather(hidden_states, ms.Tensor(order.astype(np.int32)), 0)
            positions = positions[order]
            window_mask = block_diagonal_mask(cu_windows)
        cos, sin = self.rotary(positions)
        for index, block in enumerate(self.blocks):
            windowed = self.variant.windows and index not in self.fullatt_block_indexes
            # full attention stays within each frame; in window order a frame's patches are still contiguous
            hidden_states = block(hidden_states, cos, sin, window_mask if windowed else full_mask)
        merged = self.merger(hidden_states)                                        # [N / merge^2, out_width]
        if order is not None:
            merged = ops.gather(merged, ms.Tensor(np.argsort(windows).astype(np.int32)), 0)
        # as HF: the blocks' output (in window order for Qwen2.5-VL) and the merged features
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=merged)

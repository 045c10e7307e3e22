"""Qwen-VL (v1)'s vision tower (`transformer.visual.*` in Qwen/Qwen-VL and Qwen/Qwen-VL-Chat), read as the repos'
visual.py describes it; the repo's code never runs.

Facts from the published visual.py (its `VisionTransformer`, built from config.json's `visual` section):
- conv1: a patch_size x patch_size Conv2d with stride patch_size and no bias, [B, 3, S, S] -> [B, grid^2, width];
- positional_embedding: 256 rows (a 16 x 16 grid) resized to the image's grid by `get_abs_pos`: torch's bicubic
  interpolation (align_corners=False) in float32; ln_pre, then `transformer.resblocks`: pre-norm blocks
  (ln_1, attn, ln_2, mlp c_fc -> exact GELU -> c_proj, width * mlp_ratio wide), every LayerNorm eps 1e-6;
- the blocks' attention (`VisualAttention`) has one `in_proj` whose rows are per head: [q_h0, k_h0, v_h0, q_h1, ...],
  each head_dim wide (MindSpore Transformers' convert_weight.py splits it this way), and `out_proj`;
- `attn_pool` (Resampler): n_queries (256) learned queries attend once to the patches: kv_proj (no bias; absent
  when width == output_dim), ln_kv, ln_q; the query side adds `pos_embed` (2D sin-cos, a checkpoint tensor) as it
  is, the key side adds it resized to the image grid by get_abs_pos; the attention is torch's nn.MultiheadAttention
  (in_proj_weight rows q, k, v; output_dim // 128 heads; out_proj);
- ln_post, then `x @ proj` (proj [output_dim, output_dim], not transposed): [B, 256, output_dim].
"""
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

from ... import ops as fused
from ...layers import LayerNorm, Linear, new_parameter
from ...tensor_io import to_mindspore
from ...utils import activation_dtype

POSITIONS = 256  # the published positional_embedding: a 16 x 16 grid, whatever the image size


def bicubic_matrix(src, dst):
    """[dst, src] float32: the weights torch's bicubic interpolation (align_corners=False, A = -0.75, indices
    clamped at the borders) gives each source row, so that resizing an axis is one matmul."""
    a = -0.75
    scale = np.float32(src) / np.float32(dst)
    out = np.zeros((dst, src), np.float64)
    for i in range(dst):
        real = scale * np.float32(i + 0.5) - np.float32(0.5)
        base = math.floor(real)
        t = float(real - base)
        weights = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                   ((a + 2) * t - (a + 3)) * t * t + 1,
                   ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                   ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
        for offset, weight in zip(range(-1, 3), weights):
            out[i, min(max(base + offset, 0), src - 1)] += weight
    return out.astype(np.float32)


def sincos_pos_embed(dim, grid):
    """[grid^2, dim] 2D sin-cos table (the MAE form visual.py builds `attn_pool.pos_embed` with): the first half
    of each row encodes the column, the second the row; each half is sin then cos of position * 10000^(-k/(d/4))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32), indexing="ij")

    def one(pos):
        angles = pos.reshape(-1)[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], 1)

    return np.concatenate([one(cols), one(rows)], 1).astype(np.float32)


def resize_positions(table, tgt_len):
    """visual.py's get_abs_pos: a [src^2, C] table resized to [tgt^2, C] on the square grid (bicubic, float32)."""
    src, tgt = int(math.sqrt(table.shape[0])), int(math.sqrt(tgt_len))
    if src == tgt:
        return table
    weights = ms.Tensor(bicubic_matrix(src, tgt))                                  # [tgt, src]
    dtype = table.dtype
    x = table.astype(ms.float32).reshape(src, src, -1)                             # [rows, cols, C]
    x = ops.matmul(weights, x.reshape(src, -1)).reshape(tgt, src, -1)              # rows resized
    x = ops.matmul(weights, x.swapaxes(0, 1).reshape(src, -1)).reshape(tgt, tgt, -1).swapaxes(0, 1)  # columns
    return x.reshape(tgt * tgt, -1).astype(dtype)


def _split_heads(x, heads):
    """[B, L, H * D] -> [B, H, L, D]."""
    bsz, length, width = x.shape
    return x.reshape(bsz, length, heads, width // heads).swapaxes(1, 2)


class VisualAttention(nn.Cell):
    """Self-attention with the published fused `in_proj` (rows per head: q, k, v of head 0, then head 1...)."""

    def __init__(self, width, heads, dtype=ms.float32):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.in_proj = Linear(width, 3 * width, True, dtype)
        self.out_proj = Linear(width, width, True, dtype)

    def construct(self, x):
        bsz, length, width = x.shape
        qkv = self.in_proj(x).reshape(bsz, length, self.heads, 3, self.head_dim).transpose(3, 0, 2, 1, 4)
        out = fused.causal_attention(qkv[0], qkv[1], qkv[2], None, self.head_dim ** -0.5)   # [B, H, L, D]
        return self.out_proj(out.swapaxes(1, 2).reshape(bsz, length, width))


class VisualMLP(nn.Cell):
    def __init__(self, width, hidden, dtype=ms.float32):
        super().__init__()
        self.c_fc = Linear(width, hidden, True, dtype)
        self.c_proj = Linear(hidden, width, True, dtype)

    def construct(self, x):
        return self.c_proj(ops.gelu(self.c_fc(x), approximate="none"))


class VisualAttentionBlock(nn.Cell):
    def __init__(self, width, heads, mlp_ratio, dtype=ms.float32):
        super().__init__()
        self.ln_1 = LayerNorm(width, 1e-6, dtype)
        self.attn = VisualAttention(width, heads, dtype)
        self.ln_2 = LayerNorm(width, 1e-6, dtype)
        self.mlp = VisualMLP(width, int(width * mlp_ratio), dtype)

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TransformerBlock(nn.Cell):
    def __init__(self, width, layers, heads, mlp_ratio, dtype=ms.float32):
        super().__init__()
        self.resblocks = nn.CellList([VisualAttentionBlock(width, heads, mlp_ratio, dtype) for _ in range(layers)])

    def construct(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class MultiheadAttention(nn.Cell):
    """torch.nn.MultiheadAttention's parameters (in_proj_weight rows q, k, v; in_proj_bias; out_proj) and
    computation, batch first, no mask, no dropout."""

    def __init__(self, dim, heads, dtype=ms.float32):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.in_proj_weight = new_parameter((3 * dim, dim), dtype, "normal")
        self.in_proj_bias = new_parameter((3 * dim,), dtype, "zeros")
        self.out_proj = Linear(dim, dim, True, dtype)

    def _project(self, x, index):
        rows = slice(index * self.dim, (index + 1) * self.dim)
        bsz, length, _ = x.shape
        y = fused.linear(x.reshape(-1, self.dim), self.in_proj_weight[rows])  # bf16 weights on CPU: float32 out
        y = y + self.in_proj_bias[rows].astype(y.dtype)
        return _split_heads(y.reshape(bsz, length, self.dim), self.heads)

    def construct(self, query, key, value):
        q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)
        out = fused.causal_attention(q, k, v, None, (self.dim // self.heads) ** -0.5)      # [B, H, Q, D]
        return self.out_proj(out.swapaxes(1, 2).reshape(query.shape[0], query.shape[1], self.dim))


class Resampler(nn.Cell):
    """`attn_pool`: learned queries (with the sin-cos table) attend once to the patches (with the table resized)."""

    def __init__(self, n_queries, embed_dim, heads, kv_dim, dtype=ms.float32):
        super().__init__()
        grid = int(math.sqrt(n_queries))
        self.pos_embed = ms.Parameter(ms.Tensor(sincos_pos_embed(embed_dim, grid)).astype(dtype), requires_grad=False)
        self.query = new_parameter((n_queries, embed_dim), dtype, "normal")
        self.kv_proj = Linear(kv_dim, embed_dim, False, dtype) if kv_dim != embed_dim else None
        self.attn = MultiheadAttention(embed_dim, heads, dtype)
        self.ln_q = LayerNorm(embed_dim, 1e-6, dtype)
        self.ln_kv = LayerNorm(embed_dim, 1e-6, dtype)

    def construct(self, x):
        """x [B, L, kv_dim] -> [B, n_queries, embed_dim]."""
        pos = resize_positions(self.pos_embed, x.shape[1])                           # [L, E]
        if self.kv_proj is not None:
            x = self.kv_proj(x)
        x = self.ln_kv(x)
        query = self.query.astype(x.dtype)  # bf16 weights on CPU: the activations' float32
        q = (self.ln_q(query) + self.pos_embed.astype(x.dtype)).expand_dims(0)      # [1, Q, E]
        q = ops.broadcast_to(q, (x.shape[0],) + q.shape[1:])
        return self.attn(q, x + pos.astype(x.dtype).expand_dims(0), x)


class QWenVisionTransformer(nn.Cell):
    """The published `VisionTransformer` (`transformer.visual`): pixel_values [B, 3, S, S] -> [B, n_queries,
    output_dim], the features that replace the tokens between <img> and </img>."""

    def __init__(self, visual, dtype=ms.float32):
        super().__init__()
        width, patch = visual["width"], visual["patch_size"]
        self.image_size, self.patch_size, self.width = visual["image_size"], patch, width
        self.output_dim = visual["output_dim"]
        self.n_queries = visual.get("n_queries", 256)
        self.conv1 = nn.Cell()
        self.conv1.weight = new_parameter((width, 3, patch, patch), dtype, "normal")
        self.positional_embedding = new_parameter((POSITIONS, width), dtype, "normal", width ** -0.5)
        self.ln_pre = LayerNorm(width, 1e-6, dtype)
        self.transformer = TransformerBlock(width, visual["layers"], visual["heads"], visual["mlp_ratio"], dtype)
        self.attn_pool = Resampler(self.n_queries, self.output_dim, self.output_dim // 128, width, dtype)
        self.ln_post = LayerNorm(self.output_dim, 1e-6, dtype)
        self.proj = new_parameter((self.output_dim, self.output_dim), dtype, "normal", self.output_dim ** -0.5)

    def patch_embed(self, pixel_values):
        """conv1 (stride = kernel, no bias) as one matmul over the cut patches: [B, 3, S, S] -> [B, grid^2, width]."""
        bsz, channels, height, width = pixel_values.shape
        p = self.patch_size
        gh, gw = height // p, width // p
        if gh * p != height or gw * p != width:
            raise ValueError(f"Qwen-VL: image size {height}x{width} is not a multiple of patch_size {p}")
        patches = pixel_values.reshape(bsz, channels, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)
        weight = self.conv1.weight.reshape(self.width, -1)                           # [width, 3 * P * P]
        patches = patches.reshape(-1, weight.shape[1]).astype(activation_dtype(weight.dtype))
        return fused.linear(patches, weight).reshape(bsz, gh * gw, self.width)

    def construct(self, pixel_values):
        x = self.patch_embed(to_mindspore(pixel_values))
        if x.shape[1] != int(math.sqrt(x.shape[1])) ** 2:
            raise ValueError(f"Qwen-VL: the image grid must be square (got {x.shape[1]} patches)")
        x = x + resize_positions(self.positional_embedding, x.shape[1]).astype(x.dtype)
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(self.attn_pool(x))
        return ops.matmul(x, self.proj.astype(x.dtype))                               # [B, Q, output_dim]

"""A torch reference of Qwen-VL (v1) and a tiny checkpoint in its published format (`transformer.visual.*` and Qwen
v1's `transformer.h.*`), for tests/models/test_qwen_vl_parity.py.

transformers has no Qwen-VL class (the repos run their own modeling_qwen.py / visual.py with trust_remote_code), and
the hub is out of reach here, so the vision reference is written below in torch from the published structure: the
facts are those of Qwen/Qwen-VL-Chat's visual.py as MindSpore Transformers' port (research/qwenvl: qwenvl_model.py,
convert_weight.py) and copies of visual.py show them. It is built from torch's own modules (Conv2d,
F.interpolate bicubic, nn.MultiheadAttention, nn.GELU, nn.LayerNorm), not from our code. The language model is
transformers' Qwen2 under Qwen v1's names (Qwen v1 = Qwen2 renamed, remote_formats.qwen_checkpoint), with the image
features written over the positions between <img> and </img> as the published QWenModel.forward does.
"""
import math
from collections import OrderedDict

import numpy as np

from tests.models.remote_formats import _auto_map, hf_native, write_remote

VOCAB, IMG_START = 300, 290          # <img> = 290, </img> = 291, <imgpad> = 292 (the published start + 1, + 2)
QUERIES = 256                        # the published n_queries / the tokenizer's IMG_TOKEN_SPAN
VISUAL = {"heads": 4, "image_size": 112, "image_start_id": IMG_START, "layers": 2, "mlp_ratio": 2.5,
          "output_dim": 256, "patch_size": 14, "width": 64}
TEXT = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=1024, rope_theta=10000.0)


def mae_sincos(dim, grid):
    """The 2D sin-cos table of the published Resampler's pos_embed (MAE's get_2d_sincos_pos_embed: meshgrid(w, h),
    first half from the w grid, each 1D half [sin, cos] of pos * 1 / 10000^(k / (d/2)) with d = dim / 2)."""
    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


def torch_reference(visual, seed=0):
    """The published VisionTransformer in torch (module and parameter names as the checkpoint's)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def get_abs_pos(abs_pos, tgt_len):
        src, tgt = int(math.sqrt(abs_pos.size(0))), int(math.sqrt(tgt_len))
        if src == tgt:
            return abs_pos
        x = abs_pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(tgt, tgt), mode="bicubic", align_corners=False)
        return x.permute(0, 2, 3, 1).flatten(0, 2).to(abs_pos.dtype)

    class VisualAttention(nn.Module):  # in_proj rows per head: [q, k, v] of head 0, then head 1, ...
        def __init__(self, dim, heads):
            super().__init__()
            self.heads, self.head_dim = heads, dim // heads
            self.in_proj, self.out_proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

        def forward(self, x):  # x [L, B, E] (the published layout)
            length, bsz, dim = x.shape
            mixed = self.in_proj(x).view(length, bsz, self.heads, 3 * self.head_dim)
            q, k, v = mixed.split(self.head_dim, dim=-1)
            q, k, v = (t.reshape(length, bsz * self.heads, self.head_dim).transpose(0, 1) for t in (q, k, v))
            probs = torch.bmm(q / math.sqrt(self.head_dim), k.transpose(-2, -1)).softmax(-1)
            out = torch.bmm(probs, v).view(bsz, self.heads, length, self.head_dim).permute(2, 0, 1, 3)
            return self.out_proj(out.reshape(length, bsz, dim))

    class Block(nn.Module):
        def __init__(self, dim, heads, mlp_ratio):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.attn = VisualAttention(dim, heads)
            hidden = int(dim * mlp_ratio)
            self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(dim, hidden)), ("gelu", nn.GELU()),
                                                  ("c_proj", nn.Linear(hidden, dim))]))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class Transformer(nn.Module):
        def __init__(self, dim, layers, heads, mlp_ratio):
            super().__init__()
            self.resblocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(layers)])

        def forward(self, x):
            for block in self.resblocks:
                x = block(x)
            return x

    class Resampler(nn.Module):
        def __init__(self, grid, dim, heads, kv_dim):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.from_numpy(mae_sincos(dim, grid)).float(), requires_grad=False)
            self.query = nn.Parameter(0.02 * torch.randn(grid * grid, dim))
            self.kv_proj = nn.Linear(kv_dim, dim, bias=False) if kv_dim != dim else nn.Identity()
            self.attn = nn.MultiheadAttention(dim, heads)
            self.ln_q, self.ln_kv = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)

        def forward(self, x):  # x [B, L, kv_dim]
            pos = get_abs_pos(self.pos_embed, x.size(1))
            x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)                         # [L, B, E]
            q = self.ln_q(self.query).unsqueeze(1).repeat(1, x.shape[1], 1)          # [Q, B, E]
            out = self.attn(q + self.pos_embed.unsqueeze(1), x + pos.unsqueeze(1), x)[0]
            return out.permute(1, 0, 2)

    class VisionTransformer(nn.Module):
        def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio, output_dim, **_):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
            self.positional_embedding = nn.Parameter(width ** -0.5 * torch.randn(256, width))
            self.ln_pre = nn.LayerNorm(width, eps=1e-6)
            self.transformer = Transformer(width, layers, heads, mlp_ratio)
            self.attn_pool = Resampler(int(math.sqrt(QUERIES)), output_dim, output_dim // 128, width)
            self.ln_post = nn.LayerNorm(output_dim, eps=1e-6)
            self.proj = nn.Parameter(output_dim ** -0.5 * torch.randn(output_dim, output_dim))

        def forward(self, x):
            x = self.conv1(x)
            x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
            x = self.ln_pre(x + get_abs_pos(self.positional_embedding, x.size(1)))
            x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            return self.ln_post(self.attn_pool(x)) @ self.proj

    torch.manual_seed(seed)
    model = VisionTransformer(**visual).eval()
    with torch.no_grad():  # random norms and biases, sharper attention: a misplaced one cannot hide
        for name, p in model.named_parameters():
            if name.endswith("weight") and ".ln" in "." + name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith(("attn.in_proj.weight", "attn.in_proj_weight")):
                p.mul_(2.0)
    return model


def qwen_vl_checkpoint(folder, seed=0, vocab=VOCAB, image_start_id=IMG_START):
    """(folder, arrays written, torch vision reference, transformers' Qwen2 language model) of a tiny Qwen-VL."""
    import torch

    visual_config = {**VISUAL, "image_start_id": image_start_id}
    visual = torch_reference(visual_config, seed)
    hf = hf_native("Qwen2Config", "Qwen2ForCausalLM", seed=seed, **{**TEXT, "vocab_size": vocab})
    c = hf.config
    tensors = {"transformer.wte.weight": hf.model.embed_tokens.weight, "transformer.ln_f.weight": hf.model.norm.weight,
               "lm_head.weight": hf.lm_head.weight}
    for i, block in enumerate(hf.model.layers):
        p, a = f"transformer.h.{i}.", block.self_attn
        for kind in ("weight", "bias"):
            tensors[p + f"attn.c_attn.{kind}"] = torch.cat([getattr(a.q_proj, kind), getattr(a.k_proj, kind),
                                                            getattr(a.v_proj, kind)])
        tensors.update({p + "attn.c_proj.weight": a.o_proj.weight, p + "ln_1.weight": block.input_layernorm.weight,
                        p + "ln_2.weight": block.post_attention_layernorm.weight,
                        p + "mlp.w1.weight": block.mlp.up_proj.weight, p + "mlp.w2.weight": block.mlp.gate_proj.weight,
                        p + "mlp.c_proj.weight": block.mlp.down_proj.weight})
    tensors.update({"transformer.visual." + k: v for k, v in visual.state_dict().items()})
    config = {"architectures": ["QWenLMHeadModel"], "model_type": "qwen",
              "auto_map": _auto_map("configuration_qwen", "modeling_qwen", "QWenConfig", "QWenLMHeadModel"),
              "vocab_size": vocab, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
              "num_attention_heads": c.num_attention_heads, "kv_channels": c.hidden_size // c.num_attention_heads,
              "intermediate_size": 2 * c.intermediate_size, "layer_norm_epsilon": c.rms_norm_eps,
              "max_position_embeddings": 1024, "seq_length": 1024, "rotary_emb_base": 10000, "rotary_pct": 1.0,
              "no_bias": True, "use_dynamic_ntk": True, "use_logn_attn": True, "scale_attn_weights": True,
              "bf16": False, "fp16": False, "fp32": True, "use_flash_attn": False, "tie_word_embeddings": False,
              "emb_dropout_prob": 0.0, "attn_dropout_prob": 0.0, "visual": visual_config}
    folder, arrays = write_remote(folder, config, tensors)
    return folder, arrays, visual, hf


def image_prompt(seed=0, paths=("img0.png", "img1.png")):
    """Two rows, the second left-padded by 3, each with one <img> span: a path's UTF-8 bytes as ids, then <imgpad>
    up to 256 tokens, as the published tokenizer writes `<img>path</img>`. (input_ids, attention_mask, pixel_values)."""
    rng = np.random.default_rng(seed)
    rows = []
    for n, (before, after) in enumerate(((4, 3), (2, 2))):
        path = list(paths[n].encode("utf-8"))
        span = [IMG_START] + path + [IMG_START + 2] * (QUERIES - len(path)) + [IMG_START + 1]
        rows.append(list(rng.integers(3, 256, before)) + span + list(rng.integers(3, 256, after)))
    width = max(map(len, rows))
    ids = np.array([[0] * (width - len(r)) + r for r in rows], np.int64)
    mask = np.array([[0] * (width - len(r)) + [1] * len(r) for r in rows], np.int64)
    size = VISUAL["image_size"]
    pixels = rng.standard_normal((2, 3, size, size)).astype(np.float32)
    return ids, mask, pixels


def reference_logits(visual, hf, ids, mask, pixels, position_ids=None, start=IMG_START):
    """The published forward: embeddings, each image's features over its span's inner positions, the decoder."""
    import torch

    with torch.no_grad():
        ids_t = torch.tensor(ids)
        embeds = hf.model.embed_tokens(ids_t)
        features = visual(torch.tensor(pixels))
        starts = torch.nonzero(ids_t == start).tolist()
        ends = torch.nonzero(ids_t == start + 1).tolist()
        for n, ((row, a), (_, b)) in enumerate(zip(starts, ends)):
            embeds[row, a + 1:b] = features[n]
        out = hf(inputs_embeds=embeds, attention_mask=torch.tensor(mask),
                 position_ids=None if position_ids is None else torch.tensor(position_ids))
        return features.numpy(), out.logits.numpy()


def reference_greedy(visual, hf, ids, mask, pixels, steps, start=IMG_START):
    """Greedy decoding by full recomputation, positions counted over the mask as generate does."""
    ids, mask = ids.copy(), mask.copy()
    for _ in range(steps):
        positions = np.where(mask == 0, 1, np.cumsum(mask, -1) - 1)
        next_ids = reference_logits(visual, hf, ids, mask, pixels, positions, start)[1][:, -1].argmax(-1)
        ids = np.concatenate([ids, next_ids[:, None]], 1)
        mask = np.concatenate([mask, np.ones_like(mask[:, :1])], 1)
    return ids


def published_reference(folder):
    """The whole published QWenLMHeadModel in torch under its parameter names (`transformer.wte`,
    `transformer.h.{i}.ln_1 / attn.c_attn / attn.c_proj / ln_2 / mlp.w1 / mlp.w2 / mlp.c_proj`, `transformer.ln_f`,
    `transformer.visual`, `lm_head`), holding `folder`'s weights: the module tree HF peft adapts and transformers'
    Trainer trains (transformers has no Qwen-VL class). The language model as the published modeling_qwen.py
    computes it: RMSNorm in float32, rotary on half-split pairs at positions 0..S-1, c_attn's rows q, k, v, an
    additive causal + padding mask, c_proj(w1(x) * silu(w2(x))); the vision tower is `torch_reference`; the images
    (pixel_values, one per <img> span in row-major order, where the published model opens the paths) replace the
    embeddings strictly between <img> and </img>; with labels, the published loss: shifted, mean over the labelled
    tokens. `config.model_type` is "qwen" (peft picks default target modules by it)."""
    import json
    import os

    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from torch import nn

    with open(os.path.join(folder, "config.json")) as fh:
        c = json.load(fh)
    hidden, heads, eps = c["hidden_size"], c["num_attention_heads"], c["layer_norm_epsilon"]
    head_dim, ff = c["kv_channels"], c["intermediate_size"] // 2

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden))

        def forward(self, x):
            h = x.float()
            return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * self.weight

    def rotate(x, positions):  # x [B, S, H, D]: half-split pairs
        inv_freq = 1.0 / c["rotary_emb_base"] ** (torch.arange(0, head_dim, 2).float() / head_dim)
        freqs = positions.float()[:, None] * inv_freq
        emb = torch.cat((freqs, freqs), -1)[None, :, None, :]
        x1, x2 = x.chunk(2, -1)
        return x * emb.cos() + torch.cat((-x2, x1), -1) * emb.sin()

    class QWenAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(hidden, 3 * hidden)
            self.c_proj = nn.Linear(hidden, hidden, bias=not c["no_bias"])

        def forward(self, x, mask):
            b, s, _ = x.shape
            q, k, v = (t.view(b, s, heads, head_dim) for t in self.c_attn(x).split(hidden, -1))
            positions = torch.arange(s)
            q, k = rotate(q, positions), rotate(k, positions)
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim) + mask
            out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, s, hidden)
            return self.c_proj(out)

    class QWenMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(hidden, ff, bias=not c["no_bias"])
            self.w2 = nn.Linear(hidden, ff, bias=not c["no_bias"])
            self.c_proj = nn.Linear(ff, hidden, bias=not c["no_bias"])

        def forward(self, x):
            return self.c_proj(self.w1(x) * F.silu(self.w2(x)))

    class QWenBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = RMSNorm(), QWenAttention(), RMSNorm(), QWenMLP()

        def forward(self, x, mask):
            x = x + self.attn(self.ln_1(x), mask)
            return x + self.mlp(self.ln_2(x))

    class QWenModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(c["vocab_size"], hidden)
            self.h = nn.ModuleList([QWenBlock() for _ in range(c["num_hidden_layers"])])
            self.ln_f = RMSNorm()
            self.visual = torch_reference(c["visual"])

        def forward(self, input_ids, attention_mask, pixel_values):
            start = c["visual"]["image_start_id"]
            x = self.wte(input_ids)
            if pixel_values is not None:
                features = self.visual(pixel_values)
                starts, ends = (torch.nonzero(input_ids == i).tolist() for i in (start, start + 1))
                for n, ((row, a), (_, b)) in enumerate(zip(starts, ends)):
                    x[row, a + 1:b] = features[n]
            s, low = input_ids.shape[1], torch.finfo(torch.float32).min
            mask = torch.full((s, s), low).triu(1)[None, None] + (1.0 - attention_mask[:, None, None, :].float()) * low
            mask = mask.clamp(min=low)
            for block in self.h:
                x = block(x, mask)
            return self.ln_f(x)

    class QWenLMHeadModel(nn.Module):
        def __init__(self):
            super().__init__()
            # a dict for peft (config.get("model_type")) that takes attributes (transformers' Trainer sets use_cache)
            self.config = type("Config", (dict,), {})(model_type="qwen", tie_word_embeddings=False)
            self.transformer = QWenModel()
            self.lm_head = nn.Linear(hidden, c["vocab_size"], bias=False)

        def forward(self, input_ids, attention_mask=None, pixel_values=None, labels=None):
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            logits = self.lm_head(self.transformer(input_ids, attention_mask, pixel_values))
            if labels is None:
                return {"logits": logits}
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
            return {"loss": loss, "logits": logits}

        def prepare_inputs_for_generation(self, *args, **kwargs):  # (peft's causal-LM wrapper reads it)
            raise NotImplementedError

    model = QWenLMHeadModel()
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    return model.eval()

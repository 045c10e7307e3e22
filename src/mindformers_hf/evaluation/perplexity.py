"""Perplexity with transformers' documented sliding-window recipe (docs: "Perplexity of fixed-length models").

The texts are joined with "\\n\\n" and tokenized once; windows of `max_length` tokens advance by `stride`, and
each window scores only the tokens the previous one did not (the rest are labelled -100). The window's mean loss
is weighted by its scored tokens minus one, as the recipe does (the model shifts the labels by one).
"""
import math

import numpy as np

IGNORE_INDEX = -100


def perplexity(model, tokenizer, texts, stride=512, max_length=None, add_special_tokens=True):
    """exp(mean negative log-likelihood per token) of `texts` (a string or a list of strings)."""
    if isinstance(texts, str):
        texts = [texts]
    if not texts:
        raise ValueError("perplexity: no texts")
    if max_length is None:
        config = model.config
        max_length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if max_length is None:
            raise ValueError("perplexity: pass max_length (the config has no n_positions/max_position_embeddings)")
    if stride < 1 or stride > max_length:
        raise ValueError(f"perplexity: stride must be in [1, max_length={max_length}], got {stride}")
    ids = np.asarray(tokenizer("\n\n".join(texts), add_special_tokens=add_special_tokens, return_tensors="np")
                     ["input_ids"], np.int64)
    seq_len = ids.shape[1]
    if seq_len < 2:
        raise ValueError("perplexity: the texts give fewer than two tokens")
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        target_len = end - prev_end  # shorter than stride on the last window
        input_ids = ids[:, begin:end]
        labels = input_ids.copy()
        labels[:, :-target_len] = IGNORE_INDEX
        loss = float(np.asarray(model(input_ids=input_ids, labels=labels).loss))
        scored = int((labels != IGNORE_INDEX).sum()) - labels.shape[0]
        if scored > 0:  # a one-token last window scores nothing (its mean loss is 0/0; the recipe gets NaN)
            nll_sum += loss * scored
            n_tokens += scored
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens)

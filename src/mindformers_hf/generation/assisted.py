"""Assisted decoding (`assistant_model=`) and prompt lookup decoding (`prompt_lookup_num_tokens=`), greedy, as
transformers' `_assisted_decoding`: candidate tokens are proposed cheaply (by a smaller model, or by copying what
followed the last n-gram earlier in the sequence), the model scores them all in one forward, and the longest
prefix that greedy decoding would have chosen is kept, plus the model's own next token. The tokens are therefore
exactly plain greedy search's; only the number of forwards changes. With do_sample=True each position is sampled
from the model's warped distribution (prompt lookup) or candidates are accepted by speculative sampling against the
assistant's distribution (the speculative decoding paper's algorithm 1, as transformers), so the tokens follow the
model's own sampling distribution. Rejected positions are cropped from the cache (`DynamicCache.crop(-n)`).
"""
import copy

import numpy as np
import mindspore as ms

from .. import runtime
from ..cache_utils import DynamicCache
from .logits_process import softmax
from .runner import forward_kwargs, position_ids_from_mask


def prompt_lookup_candidates(ids, num_output_tokens, max_matching_ngram_size, max_length, eos):
    """transformers' PromptLookupCandidateGenerator on one row: the tokens that followed the first earlier
    occurrence of the sequence's last n-gram (longest n first), cut before the first eos."""
    length = len(ids)
    if max_length == length + 1:
        return []
    for n in range(min(max_matching_ngram_size, length - 1), 0, -1):
        tail = ids[length - n:]
        for start in range(length - n + 1):
            if np.array_equal(ids[start:start + n], tail):
                begin, end = start + n, min(start + n + num_output_tokens, length, max_length)
                if begin < end:
                    chosen = list(ids[begin:end])
                    for i, token in enumerate(chosen):
                        if eos and token in eos:
                            chosen = chosen[:i]
                            break
                    return chosen
    return []


class _Drafter:
    """Candidate tokens (and, when sampling, the assistant's warped scores for them) from an assistant model that
    keeps its own cache across iterations; it decodes with the main call's generation config, as in transformers."""

    def __init__(self, assistant, config, custom_processors):
        if not hasattr(assistant, "generate") or not hasattr(assistant, "_prepare_generation_config") or \
                type(assistant).__module__.startswith("transformers."):
            raise TypeError("generate: assistant_model must be a mindformers_hf model (it drafts with our generate)")
        self.assistant, self.custom = assistant, custom_processors
        self.config = copy.deepcopy(config)
        self.config.return_dict_in_generate, self.config.output_scores = True, True
        self.config.output_logits = self.config.output_hidden_states = False
        self.count = int(config.num_assistant_tokens or 20)
        self.cache = DynamicCache(config=assistant.config)

    def candidates(self, ids, max_length):
        new = min(self.count, max_length - len(ids) - 1)
        if new <= 0:
            return [], None
        self.cache.crop(-max(self.cache.get_seq_length() - (len(ids) - 1), 0))  # what it holds past the accepted part
        self.config.max_new_tokens, self.config.min_new_tokens = new, 0
        out = self.assistant.generate(input_ids=ids[None, :], past_key_values=self.cache, generation_config=self.config,
                                      logits_processor=self.custom)
        tokens = [int(t) for t in np.asarray(out.sequences)[0, len(ids):]]
        return tokens, np.concatenate([np.asarray(s, np.float32) for s in out.scores], 0)  # [k, V]


def _speculative(candidates, candidate_scores, processed, sample):
    """transformers' `_speculative_sampling`: accept candidate i while u < p_i / q_i, then sample the next token
    from max(p - q, 0) renormalised after a rejection, or from p after accepting all."""
    k = len(candidates)
    q, p = softmax(candidate_scores), softmax(processed)                    # [k, V], [k + 1, V]
    rows = np.arange(k)
    ratio = p[rows, candidates] / q[rows, candidates]
    n = int(np.cumprod(np.random.random_sample(k) < ratio).sum())
    residual = p[n] if n == k else np.maximum(p[n] - q[n], 0)
    return np.asarray(candidates[:n] + [int(sample(residual[None] / residual.sum())[0])], np.int64)


def assisted_decoding(model, ids, attention_mask, config, processors, criteria, eos, streamer, assistant,
                      custom_processors, sample):
    """Decoding of one row checked against candidate tokens; returns generate's result dict. `sample` draws one
    token per row from [B, V] probabilities (generate's sampler, so set_seed governs it)."""
    if ids.shape[0] != 1:
        raise ValueError("assisted generate is only supported for batch_size = 1")
    if config.output_hidden_states:
        raise NotImplementedError("generate: output_hidden_states with assisted / prompt lookup decoding is not "
                                  "supported")
    if getattr(config, "assistant_ensemble_weight", None) is not None:  # it changes the tokens: not to be ignored
        raise NotImplementedError("generate: assistant_ensemble_weight (ensemble verification) is not supported")
    drafter = _Drafter(assistant, config, custom_processors) if assistant is not None else None
    ngram = int(getattr(config, "max_matching_ngram_size", None) or 2)
    cache = DynamicCache(config=model.config)
    extra = forward_kwargs(model)
    scores, raw = [], []
    while True:
        cur_len = ids.shape[1]
        candidate_scores = None
        if drafter is not None:
            candidates, candidate_scores = drafter.candidates(ids[0], config.max_length)
        else:
            candidates = prompt_lookup_candidates(ids[0], config.prompt_lookup_num_tokens, ngram, config.max_length,
                                                  eos)
        k = len(candidates)
        candidate_ids = np.concatenate([ids, np.asarray([candidates], np.int64).reshape(1, k)], 1)
        mask = np.concatenate([attention_mask, np.ones((1, k), np.int64)], 1)
        logits = _forward(model, cache, candidate_ids, mask, extra, k + 1)            # [k + 1, V] float32
        processed = np.stack([processors(candidate_ids[:, :cur_len + i], logits[i:i + 1].copy())[0]
                              for i in range(k + 1)])
        if config.do_sample and candidate_scores is not None and k:
            valid = _speculative(candidates, candidate_scores, processed, sample)
        else:
            selected = sample(softmax(processed)) if config.do_sample else processed.argmax(-1)
            n_matches = int(np.cumprod(selected[:k] == np.asarray(candidates, np.int64)).sum()) if k else 0
            valid = selected[:n_matches + 1]
        valid = valid[:config.max_length - cur_len]
        if eos:
            hits = np.flatnonzero(np.isin(valid, eos))
            if len(hits):
                valid = valid[:hits[0] + 1]
        n_matches = len(valid) - 1
        ids = np.concatenate([ids, valid[None, :].astype(np.int64)], 1)
        attention_mask = np.concatenate([attention_mask, np.ones((1, len(valid)), np.int64)], 1)
        if streamer is not None:
            streamer.put(valid.copy())
        with runtime.model_lock():
            cache.crop(-(k - n_matches))
        scores.extend(processed[i:i + 1] for i in range(len(valid)))
        raw.extend(logits[i:i + 1] for i in range(len(valid)))
        if criteria(ids, scores).all():
            break
    return {"sequences": ids, "scores": scores if config.output_scores else [],
            "logits": raw if config.output_logits else [], "hidden_states": [], "cache": cache}


@runtime.serialized
def _forward(model, cache, candidate_ids, mask, extra, keep):
    """The tokens the cache does not hold yet, with the whole mask; the last `keep` positions' logits."""
    past = cache.get_seq_length()
    kwargs = {**extra, "logits_to_keep": keep} if "logits_to_keep" in extra else extra
    out = model(input_ids=ms.Tensor(candidate_ids[:, past:]), attention_mask=ms.Tensor(mask),
                position_ids=ms.Tensor(position_ids_from_mask(mask)[:, past:]), past_key_values=cache,
                use_cache=True, **kwargs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits.astype(ms.float32).asnumpy()[0, -keep:]

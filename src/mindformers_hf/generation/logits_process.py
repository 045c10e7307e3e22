"""Logits processors and warpers with transformers' names and semantics, on numpy arrays.

Each takes (input_ids [B, T] int, scores [B, V] float) and returns new scores. Decoding keeps the
per-token logits on the host as numpy: for a [B, vocab] row block numpy is faster than launching
MindSpore ops one by one. The processors also accept torch or MindSpore tensors and give back the kind
they were given, so they can be unit-tested against transformers' own processors on the same logits.
"""

import numpy as np

from .. import tensor_io


def _log_softmax(scores):
    shifted = scores - scores.max(-1, keepdims=True)
    finite = np.isfinite(shifted)
    exp = np.where(finite, np.exp(np.where(finite, shifted, 0.0)), 0.0)
    return shifted - np.log(exp.sum(-1, keepdims=True))


def softmax(scores):
    """Row softmax in float64 on numpy (-inf entries get probability 0)."""
    return np.exp(_log_softmax(np.asarray(scores, np.float64)))


def _token_ids(value):
    """An int, a list of ints or a tensor of ids -> sorted unique int64 numpy array (None -> empty)."""
    if value is None:
        return np.zeros(0, np.int64)
    array = np.asarray(tensor_io.to_numpy(value) if tensor_io.kind_of(value) else value, np.int64).reshape(-1)
    return np.unique(array)


class LogitsProcessor:
    """Base class: subclasses implement `process(input_ids, scores)` on numpy arrays."""

    def __call__(self, input_ids, scores, **kwargs):
        kind = tensor_io.kind_of(scores)
        ids = np.asarray(tensor_io.to_numpy(input_ids))
        result = self.process(ids, np.array(tensor_io.to_numpy(scores), np.float32, copy=True))
        if kind in (tensor_io.TORCH, tensor_io.MINDSPORE):
            import mindspore as ms

            return tensor_io.to_kind(ms.Tensor(result), kind)
        return result

    def process(self, input_ids, scores):
        raise NotImplementedError(f"{type(self).__name__} must implement process(input_ids, scores)")


LogitsWarper = LogitsProcessor  # transformers 4.x name


class LogitsProcessorList(list):
    """Applies its processors in order. transformers' own processor objects (torch) are accepted too:
    they get torch tensors, as they expect."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            if type(processor).__module__.startswith("transformers."):
                scores = _call_transformers_processor(processor, input_ids, scores, **kwargs)
            else:
                scores = processor(input_ids, scores, **kwargs)
        return scores


def _call_transformers_processor(processor, input_ids, scores, **kwargs):
    import torch  # a transformers processor object was passed in: it computes with torch

    result = processor(torch.from_numpy(np.ascontiguousarray(tensor_io.to_numpy(input_ids), np.int64)),
                       torch.from_numpy(np.ascontiguousarray(tensor_io.to_numpy(scores), np.float32)), **kwargs)
    return result.detach().cpu().numpy()


class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature):
        if not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"`temperature` (={temperature}) has to be a strictly positive float")
        self.temperature = float(temperature)

    def process(self, input_ids, scores):
        return scores / np.float32(self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    def __init__(self, top_k, filter_value=-float("inf"), min_tokens_to_keep=1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def process(self, input_ids, scores):
        k = min(self.top_k, scores.shape[-1])
        kth = np.partition(scores, -k, axis=-1)[:, -k][:, None]      # the k-th largest score per row
        return np.where(scores < kth, np.float32(self.filter_value), scores)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus filtering: drop the least likely tokens whose cumulative probability is <= 1 - top_p."""

    def __init__(self, top_p, filter_value=-float("inf"), min_tokens_to_keep=1):
        top_p = float(top_p)
        if top_p < 0 or top_p > 1.0:
            raise ValueError(f"`top_p` has to be a float > 0 and < 1, but is {top_p}")
        if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
            raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")
        self.top_p, self.filter_value, self.min_tokens_to_keep = top_p, filter_value, min_tokens_to_keep

    def process(self, input_ids, scores):
        cols = sparse_columns(scores)
        if cols is not None:  # after top-k only a few scores are finite: the rest have probability 0 anyway
            sub = np.take_along_axis(scores, cols, -1)
            kept = np.where(self._remove(sub), np.float32(self.filter_value), sub)
            out = np.full_like(scores, np.float32(self.filter_value))
            np.put_along_axis(out, cols, kept, -1)
            return out
        return np.where(self._remove(scores), np.float32(self.filter_value), scores)

    def _remove(self, scores):
        order = np.argsort(scores, axis=-1)                                 # ascending, as transformers sorts
        sorted_scores = np.take_along_axis(scores, order, -1)
        cumulative = np.cumsum(softmax(sorted_scores.astype(np.float32)).astype(np.float32), -1)
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[:, -self.min_tokens_to_keep:] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, -1)
        return remove


def sparse_columns(scores, fraction=8):
    """[B, k] column indices covering every finite score of each row, when at most 1/fraction of the
    vocabulary is finite (as after top-k); None otherwise. Work on those columns is exact: the others
    are -inf, probability 0."""
    k = int(np.isfinite(scores).sum(-1).max())
    if k == 0 or k > scores.shape[-1] // fraction:
        return None
    return np.argpartition(-scores, k - 1, axis=-1)[:, :k]


class MinPLogitsWarper(LogitsProcessor):
    """Keep tokens whose probability is at least min_p times the top token's."""

    def __init__(self, min_p, filter_value=-float("inf"), min_tokens_to_keep=1):
        if not 0 <= float(min_p) <= 1.0:
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        self.min_p, self.filter_value, self.min_tokens_to_keep = float(min_p), filter_value, min_tokens_to_keep

    def process(self, input_ids, scores):
        probs = softmax(scores)
        remove = probs < self.min_p * probs.max(-1, keepdims=True)
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        top = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
        np.put_along_axis(remove, top, False, -1)
        return np.where(remove, np.float32(self.filter_value), scores)


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Every token already in input_ids: score / penalty when positive, score * penalty when negative.
    prompt_ignore_length (an int, or one per row: generate passes each row's left-padding length, as
    transformers 5 does) leaves that many leading positions out."""

    def __init__(self, penalty, prompt_ignore_length=None):
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        if prompt_ignore_length is not None and tensor_io.kind_of(prompt_ignore_length):
            prompt_ignore_length = tensor_io.to_numpy(prompt_ignore_length)
        self.penalty, self.prompt_ignore_length = penalty, prompt_ignore_length

    def process(self, input_ids, scores):
        vocab = scores.shape[-1]
        input_ids = np.minimum(input_ids.astype(np.int64), vocab)  # ids past the head's vocabulary: ignored
        if isinstance(self.prompt_ignore_length, (int, np.integer)):
            input_ids = input_ids[:, self.prompt_ignore_length:]
        elif self.prompt_ignore_length is not None:
            ignore = np.asarray(self.prompt_ignore_length).reshape(-1, 1)
            input_ids = np.where(np.arange(input_ids.shape[1])[None, :] < ignore, vocab, input_ids)
        seen = np.zeros((scores.shape[0], vocab + 1), bool)
        np.put_along_axis(seen, input_ids, True, -1)
        penalized = np.where(scores < 0, scores * np.float32(self.penalty), scores / np.float32(self.penalty))
        return np.where(seen[:, :vocab], penalized, scores)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would repeat an n-gram already present in the row."""

    def __init__(self, ngram_size):
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size

    def process(self, input_ids, scores):
        n, cur_len = self.ngram_size, input_ids.shape[-1]
        if cur_len < n:  # no complete n-gram yet
            return scores
        for row, tokens in enumerate(input_ids.tolist()):
            prefix = tuple(tokens[cur_len + 1 - n:]) if n > 1 else ()
            banned = [tokens[i + n - 1] for i in range(cur_len - n + 1) if tuple(tokens[i:i + n - 1]) == prefix]
            if banned:
                scores[row, banned] = -np.inf
        return scores


class MinLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible while the whole sequence (prompt included) is shorter than min_length."""

    def __init__(self, min_length, eos_token_id, device=None):
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` has to be a non-negative integer, but is {min_length}")
        self.min_length, self.eos_token_id = min_length, _token_ids(eos_token_id)

    def process(self, input_ids, scores):
        if input_ids.shape[-1] < self.min_length:
            scores[:, self.eos_token_id] = -np.inf
        return scores


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """EOS is impossible until min_new_tokens tokens were generated after the prompt."""

    def __init__(self, prompt_length_to_skip, min_new_tokens, eos_token_id, device=None):
        self.prompt_length_to_skip, self.min_new_tokens = prompt_length_to_skip, min_new_tokens
        self.eos_token_id = _token_ids(eos_token_id)

    def process(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            scores[:, self.eos_token_id] = -np.inf
        return scores


class SuppressTokensLogitsProcessor(LogitsProcessor):
    def __init__(self, suppress_tokens, device=None):
        self.suppress_tokens = _token_ids(suppress_tokens)

    def process(self, input_ids, scores):
        scores[:, self.suppress_tokens] = -np.inf
        return scores


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, bos_token_id):
        self.bos_token_id = int(bos_token_id)

    def process(self, input_ids, scores):
        if input_ids.shape[-1] == 1:
            scores[:] = -np.inf
            scores[:, self.bos_token_id] = 0
        return scores


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    def __init__(self, max_length, eos_token_id, device=None):
        self.max_length, self.eos_token_id = max_length, _token_ids(eos_token_id)

    def process(self, input_ids, scores):
        if input_ids.shape[-1] == self.max_length - 1:
            scores[:] = -np.inf
            scores[:, self.eos_token_id] = 0
        return scores


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    def process(self, input_ids, scores):
        scores = np.where(np.isnan(scores), np.float32(0.0), scores)
        big = np.finfo(np.float32).max
        return np.where(scores == np.inf, big, np.where(scores == -np.inf, -big, scores)).astype(np.float32)


class LogitNormalization(LogitsProcessor):
    def process(self, input_ids, scores):
        return _log_softmax(scores.astype(np.float64)).astype(np.float32)


__all__ = ["LogitsProcessor", "LogitsWarper", "LogitsProcessorList", "TemperatureLogitsWarper",
           "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "RepetitionPenaltyLogitsProcessor",
           "NoRepeatNGramLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
           "SuppressTokensLogitsProcessor", "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor",
           "InfNanRemoveLogitsProcessor", "LogitNormalization", "softmax"]


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """transformers' processor for `begin_suppress_tokens`: the tokens are banned at the first generated position
    only (`begin_index`, the prompt length; Whisper sets it to the length of its decoder prompt)."""

    def __init__(self, begin_suppress_tokens, begin_index, device=None):
        self.begin_suppress_tokens = _token_ids(begin_suppress_tokens)
        self.begin_index = begin_index

    def set_begin_index(self, begin_index):
        self.begin_index = begin_index

    def process(self, input_ids, scores):
        if input_ids.shape[-1] == self.begin_index:
            scores[:, self.begin_suppress_tokens] = -np.inf
        return scores

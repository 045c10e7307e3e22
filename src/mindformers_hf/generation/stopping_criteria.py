"""Stopping criteria with transformers' names: each returns a [B] bool numpy array, True where a row is done."""
import time

import numpy as np

from ..utils import warn_once


class StoppingCriteria:
    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class StoppingCriteriaList(list):
    def __call__(self, input_ids, scores, **kwargs):
        done = np.zeros(input_ids.shape[0], bool)
        for criteria in self:
            done |= np.asarray(_to_numpy(criteria(input_ids, scores, **kwargs)), bool).reshape(-1)
        return done

    @property
    def max_length(self):
        for criteria in self:
            if isinstance(criteria, MaxLengthCriteria):
                return criteria.max_length
        return None


def _to_numpy(value):
    from .. import tensor_io

    return tensor_io.to_numpy(value) if tensor_io.kind_of(value) else value


class MaxLengthCriteria(StoppingCriteria):
    """Done once the whole sequence (prompt included) has max_length tokens."""

    def __init__(self, max_length, max_position_embeddings=None):
        self.max_length, self.max_position_embeddings = max_length, max_position_embeddings

    def __call__(self, input_ids, scores, **kwargs):
        cur_len = input_ids.shape[-1]
        is_done = cur_len >= self.max_length
        if self.max_position_embeddings is not None and not is_done and cur_len > self.max_position_embeddings:
            warn_once("This is a friendly reminder - the current text generation call has exceeded the model's "
                      f"predefined maximum length ({self.max_position_embeddings}). Depending on the model, you may "
                      "observe exceptions, performance degradation, or nothing at all.")
        return np.full(input_ids.shape[0], is_done)


class MaxTimeCriteria(StoppingCriteria):
    def __init__(self, max_time, initial_timestamp=None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        return np.full(input_ids.shape[0], time.time() - self.initial_timestamp > self.max_time)


class EosTokenCriteria(StoppingCriteria):
    def __init__(self, eos_token_id):
        self.eos_token_id = np.unique(np.asarray(eos_token_id, np.int64).reshape(-1))

    def __call__(self, input_ids, scores, **kwargs):
        return np.isin(input_ids[:, -1], self.eos_token_id)


class StopStringCriteria(StoppingCriteria):
    """Done when a stop string ends inside the last token, as in transformers: the string may begin in
    earlier tokens and the last token may run past its end ("st" + "opper" stops on "stop"), but a stop
    string that lies wholly before the last token does not count (it was checked when it was generated).

    Tokens are turned into the text they yield the way transformers does it: after a fixed prefix, so
    tokenizers that drop or add a leading space on their own cannot hide one.
    """

    _PREFIX = "abcdef"

    def __init__(self, tokenizer, stop_strings):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings = tuple(stop_strings)
        if not self.stop_strings or any(not s for s in self.stop_strings):
            raise ValueError("stop_strings must be non-empty strings")
        self.tokenizer = tokenizer
        self._base = tokenizer.convert_ids_to_tokens(tokenizer(self._PREFIX, add_special_tokens=False)["input_ids"])
        self._texts = {}
        self._longest = max(len(s) for s in self.stop_strings)

    def token_text(self, token_id):
        text = self._texts.get(token_id)
        if text is None:
            token = self.tokenizer.convert_ids_to_tokens(int(token_id))
            full = self.tokenizer.convert_tokens_to_string(self._base + [token]) if token is not None else ""
            text = full[full.index(self._PREFIX) + len(self._PREFIX):] if self._PREFIX in full else full
            self._texts[token_id] = text
        return text

    def __call__(self, input_ids, scores, **kwargs):
        done = np.zeros(input_ids.shape[0], bool)
        for row, tokens in enumerate(np.asarray(input_ids).tolist()):
            last = self.token_text(tokens[-1])
            if not last:
                continue
            # gather earlier tokens until they cover the longest stop string's possible start
            pieces, covered = [last], 0
            for token in reversed(tokens[:-1]):
                if covered >= self._longest:
                    break
                piece = self.token_text(token)
                pieces.append(piece)
                covered += len(piece)
            text = "".join(reversed(pieces))
            last_start = len(text) - len(last)
            for stop in self.stop_strings:
                start = text.find(stop, max(0, last_start - len(stop) + 1))
                if start >= 0 and start + len(stop) > last_start:
                    done[row] = True
                    break
        return done


__all__ = ["StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
           "StopStringCriteria"]

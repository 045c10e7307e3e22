"""pipeline("text-classification") (alias "sentiment-analysis"): transformers' TextClassificationPipeline
inputs, options (`top_k`, `function_to_apply`, text pairs) and output schema, one text per forward
(`batch_size` is accepted and ignored)."""
import numpy as np

from .. import tensor_io
from ..utils import warn_once

_FUNCTIONS = ("sigmoid", "softmax", "none")


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ignore_batch_size(batch_size):
    if batch_size not in (None, 1):
        warn_once(f"text-classification pipeline: batch_size={batch_size} is accepted and ignored (one text per "
                  "forward)")


class TextClassificationPipeline:
    task = "text-classification"

    def __init__(self, model, tokenizer, function_to_apply=None, top_k="", batch_size=None, **tokenizer_kwargs):
        self.model, self.tokenizer = model, tokenizer
        _ignore_batch_size(batch_size)
        self._defaults = dict(function_to_apply=function_to_apply, top_k=top_k)
        self._tokenizer_kwargs = tokenizer_kwargs

    def __call__(self, inputs, **kwargs):
        _ignore_batch_size(kwargs.pop("batch_size", None))
        wrap_single = "top_k" not in kwargs  # transformers wraps one string's result in a list unless top_k is passed
        options = {**self._defaults, **{k: kwargs.pop(k) for k in ("function_to_apply", "top_k") if k in kwargs}}
        tokenizer_kwargs = {**self._tokenizer_kwargs, **kwargs}
        if isinstance(inputs, (str, dict)) or (isinstance(inputs, list) and len(inputs) == 1
                                               and isinstance(inputs[0], list)):
            result = self._one(inputs, options, tokenizer_kwargs)
            return [result] if isinstance(inputs, str) and wrap_single else result
        return [self._one(item, options, tokenizer_kwargs) for item in inputs]

    def _one(self, item, options, tokenizer_kwargs):
        if isinstance(item, dict):
            encoded = self.tokenizer(**item, return_tensors="np", **tokenizer_kwargs)
        elif isinstance(item, list) and len(item) == 1 and isinstance(item[0], list) and len(item[0]) == 2:
            encoded = self.tokenizer(text=item[0][0], text_pair=item[0][1], return_tensors="np", **tokenizer_kwargs)
        elif isinstance(item, list):
            raise ValueError("The pipeline received invalid inputs, if you are trying to send text pairs, you can try "
                             'to send a dictionary `{"text": "My text", "text_pair": "My pair"}` in order to send a '
                             "text pair.")
        else:
            encoded = self.tokenizer(item, return_tensors="np", **tokenizer_kwargs)
        inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        logits = tensor_io.to_numpy(self.model(**inputs, use_cache=False).logits)[0].astype(np.float32)
        return self._postprocess(logits, options["function_to_apply"], options["top_k"])

    def _postprocess(self, logits, function_to_apply, top_k):
        """transformers' postprocess: without an explicit `top_k` (int or None) the best label as one dict,
        else the `top_k` best (all for None) as a list, highest score first."""
        config = self.model.config
        if function_to_apply is None:
            if config.problem_type == "regression":
                function_to_apply = "none"
            elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
                function_to_apply = "sigmoid"
            elif config.problem_type == "single_label_classification" or config.num_labels > 1:
                function_to_apply = "softmax"
            else:
                function_to_apply = getattr(config, "function_to_apply", "none")
        function_to_apply = str(getattr(function_to_apply, "value", function_to_apply)).lower()
        if function_to_apply not in _FUNCTIONS:
            raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
        scores = {"sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "softmax": _softmax,
                  "none": lambda x: x}[function_to_apply](logits)
        if not (isinstance(top_k, int) or top_k is None):
            return {"label": config.id2label[int(scores.argmax())], "score": float(scores.max())}
        results = [{"label": config.id2label[i], "score": float(s)} for i, s in enumerate(scores)]
        results.sort(key=lambda x: x["score"], reverse=True)
        return results if top_k is None else results[:top_k]

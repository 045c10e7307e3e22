"""pipeline("feature-extraction"): the base model's last hidden states, as transformers' pipeline returns
them ([1, tokens, hidden] nested lists per text; with `return_tensors=True` a MindSpore tensor)."""
from .. import tensor_io


class FeatureExtractionPipeline:
    task = "feature-extraction"

    def __init__(self, model, tokenizer, truncation=None, tokenize_kwargs=None, return_tensors=None):
        self.model, self.tokenizer = model, tokenizer
        self._defaults = dict(truncation=truncation, tokenize_kwargs=tokenize_kwargs, return_tensors=return_tensors)

    def __call__(self, inputs, truncation=None, tokenize_kwargs=None, return_tensors=None, **kwargs):
        tokenize_kwargs = dict(tokenize_kwargs or self._defaults["tokenize_kwargs"] or {})
        truncation = truncation if truncation is not None else self._defaults["truncation"]
        if truncation is not None:
            if "truncation" in tokenize_kwargs:
                raise ValueError("truncation parameter defined twice (given as keyword argument as well as in "
                                 "tokenize_kwargs)")
            tokenize_kwargs["truncation"] = truncation
        tokenize_kwargs.update(kwargs)
        return_tensors = return_tensors if return_tensors is not None else self._defaults["return_tensors"]
        if isinstance(inputs, str):
            return self._one(inputs, tokenize_kwargs, return_tensors)
        return [self._one(text, tokenize_kwargs, return_tensors) for text in inputs]

    def _one(self, text, tokenize_kwargs, return_tensors):
        encoded = self.tokenizer(text, return_tensors="ms", **tokenize_kwargs)
        inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        hidden = self.model(**inputs).last_hidden_state                                     # [1, T, H]
        return hidden if return_tensors else tensor_io.to_numpy(hidden).tolist()

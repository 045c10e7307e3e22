"""pipeline("token-classification") (alias "ner"): our model's logits, transformers' own entity building.

Tokenising and the forward are ours (numpy / MindSpore); the steps after the softmax (pre-entities, the
`aggregation_strategy` grouping, the `ignore_labels` filter) are transformers' TokenClassificationPipeline
methods, which work on numpy arrays and Python lists only, bound to this class, so the entities are
transformers' by construction. `stride` and `is_split_into_words` raise NotImplementedError.
"""
import numpy as np

from .. import tensor_io

# transformers' tensor-free methods this pipeline runs as its own
_HF_METHODS = ("gather_pre_entities", "aggregate", "aggregate_word", "aggregate_words", "group_sub_entities",
               "get_tag", "group_entities")


def _hf_module():
    from transformers.pipelines import token_classification

    return token_classification


class TokenClassificationPipeline:
    task = "token-classification"

    def __init__(self, model, tokenizer, aggregation_strategy=None, ignore_labels=None, **kwargs):
        hf = _hf_module()
        for name in _HF_METHODS:
            if name not in TokenClassificationPipeline.__dict__:
                setattr(TokenClassificationPipeline, name, getattr(hf.TokenClassificationPipeline, name))
        self.model, self.tokenizer = model, tokenizer
        self._defaults = dict(aggregation_strategy=aggregation_strategy, ignore_labels=ignore_labels)
        self._check_unsupported(kwargs)

    @staticmethod
    def _check_unsupported(kwargs):
        for key in ("stride", "is_split_into_words", "offset_mapping", "delimiter"):
            if kwargs.get(key):
                raise NotImplementedError(f"token-classification pipeline: {key}= is not supported")
        unknown = set(kwargs) - {"stride", "is_split_into_words", "offset_mapping", "delimiter"}
        if unknown:
            raise TypeError(f"token-classification pipeline got unexpected keyword argument(s) {sorted(unknown)}")

    def _strategy(self, value):
        strategy_enum = _hf_module().AggregationStrategy
        if value is None:
            return strategy_enum.NONE
        strategy = strategy_enum[value.upper()] if isinstance(value, str) else strategy_enum(value)
        if strategy in (strategy_enum.FIRST, strategy_enum.MAX, strategy_enum.AVERAGE) and not self.tokenizer.is_fast:
            raise ValueError('Slow tokenizers cannot handle subwords. Please set the `aggregation_strategy` option to '
                             '`"simple"` or use a fast tokenizer.')
        return strategy

    def __call__(self, inputs, aggregation_strategy=None, ignore_labels=None, **kwargs):
        self._check_unsupported(kwargs)
        strategy = self._strategy(aggregation_strategy if aggregation_strategy is not None
                                  else self._defaults["aggregation_strategy"])
        ignore = ignore_labels if ignore_labels is not None else self._defaults["ignore_labels"]
        ignore = ["O"] if ignore is None else ignore
        if isinstance(inputs, str):
            return self._one(inputs, strategy, ignore)
        return [self._one(sentence, strategy, ignore) for sentence in inputs]

    def _one(self, sentence, strategy, ignore_labels):
        truncation = bool(self.tokenizer.model_max_length and self.tokenizer.model_max_length > 0)
        encoded = self.tokenizer(sentence, return_tensors="np", truncation=truncation,
                                 return_special_tokens_mask=True, return_offsets_mapping=self.tokenizer.is_fast)
        out = self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        logits = tensor_io.to_numpy(out.logits)[0].astype(np.float32)                     # [T, labels]
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        offsets = encoded["offset_mapping"][0].tolist() if "offset_mapping" in encoded else None
        pre_entities = self.gather_pre_entities(sentence, encoded["input_ids"][0], scores, offsets,
                                                encoded["special_tokens_mask"][0], strategy)
        return [entity for entity in self.aggregate(pre_entities, strategy)
                if entity.get("entity", None) not in ignore_labels
                and entity.get("entity_group", None) not in ignore_labels]

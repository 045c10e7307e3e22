"""Task heads shared by every family, as transformers' modeling_layers.py has them: a family's classes are
`class LlamaForSequenceClassification(GenericForSequenceClassification, LlamaPreTrainedModel)` with the
family's base model class named in `_base_model_class`.

- Sequence classification: a bias-free `score` Linear on every position, then the logits of each row's
  last non-pad token (the rightmost position whose id is not `pad_token_id`: left and right padding alike).
- Token classification: dropout, then a `score` Linear with bias on every position.
Their classifier weights are new when loaded from a checkpoint without them (a causal LM): they are drawn
from N(0, initializer_range) with transformers' warning, and the checkpoint's `lm_head` is skipped.
"""
import mindspore as ms
from mindspore import nn, ops

from .layers import Linear
from .loss_utils import sequence_classification_loss, token_classification_loss
from .modeling_outputs import SequenceClassifierOutputWithPast, TokenClassifierOutput
from .utils import warn_once


def last_non_pad_logits(logits, input_ids, pad_token_id):
    """[B, S, C] -> [B, C] at each row's last non-pad token (transformers' pooling, errors and warning)."""
    batch_size = logits.shape[0]
    if pad_token_id is None and batch_size != 1:
        raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
    if pad_token_id is None:
        return logits[:, -1]
    if input_ids is None:
        warn_once("Sequence classification with `inputs_embeds`: padding tokens cannot be detected; the last "
                  "position of each row is used (results may be unexpected with padding)")
        return logits[:, -1]
    non_pad = (input_ids != pad_token_id).astype(ms.float32)
    positions = ops.arange(input_ids.shape[-1], dtype=ms.float32)
    last = ops.argmax(positions * non_pad, dim=-1).astype(ms.int32)                  # [B]
    index = last.reshape(batch_size, 1, 1).broadcast_to((batch_size, 1, logits.shape[-1]))
    return ops.gather_elements(logits, 1, index).squeeze(1)


class _TaskHead:
    """Builds the family's base model under `base_model_prefix` and names the head parameters that may be
    absent from a checkpoint (PreTrainedModel.load_weights reads `_new_head_prefixes`)."""

    _base_model_class = None
    _head_name = "score"

    @property
    def _new_head_prefixes(self):
        return (self._head_name + ".",)

    def _base_outputs(self, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache,
                      output_hidden_states, kwargs):
        base = getattr(self, self.base_model_prefix)
        return base(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                    output_hidden_states=output_hidden_states, **kwargs)


class GenericForSequenceClassification(_TaskHead):
    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self._base_model_class(config, dtype))
        setattr(self, self._head_name, Linear(config.hidden_size, config.num_labels, False, dtype,
                                              std=config.initializer_range))

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, **kwargs):
        outputs = self._base_outputs(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                     use_cache, output_hidden_states, kwargs)
        logits = getattr(self, self._head_name)(outputs.last_hidden_state)                  # [B, S, C]
        pooled = last_non_pad_logits(logits, input_ids, self.config.pad_token_id)           # [B, C]
        loss = sequence_classification_loss(pooled, labels, self.config) if labels is not None else None
        out = SequenceClassifierOutputWithPast(loss=loss, logits=pooled, past_key_values=outputs.past_key_values,
                                               hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out


class GenericForTokenClassification(_TaskHead):
    def __init__(self, config, dtype=ms.float32):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self._base_model_class(config, dtype))
        dropout = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout", None)
        self.dropout = nn.Dropout(p=0.1 if dropout is None else dropout)
        setattr(self, self._head_name, Linear(config.hidden_size, config.num_labels,
                                              getattr(config, "token_classification_bias", True), dtype,
                                              std=config.initializer_range))

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                  output_attentions=None, return_dict=None, **kwargs):
        outputs = self._base_outputs(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                     use_cache, output_hidden_states, kwargs)
        logits = getattr(self, self._head_name)(self.dropout(outputs.last_hidden_state))    # [B, S, C]
        loss = token_classification_loss(logits, labels, self.num_labels) if labels is not None else None
        out = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return out.to_tuple() if return_dict is False else out

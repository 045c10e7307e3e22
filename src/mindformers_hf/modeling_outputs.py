"""Model outputs with transformers' access patterns: `out.logits`, `out["logits"]`, `out[0]`.

As in transformers, fields that are None are left out of key and index access, so `out[0]` is the
loss when labels were given and the logits otherwise.
"""
from collections import OrderedDict


class ModelOutput(OrderedDict):
    _fields: tuple = ()

    def __init__(self, *args, **kwargs):
        super().__init__()
        if len(args) > len(self._fields):
            raise TypeError(f"{type(self).__name__} takes at most {len(self._fields)} positional fields")
        for name, value in zip(self._fields, args):
            if name in kwargs:
                raise TypeError(f"{type(self).__name__} got field {name!r} twice")
            kwargs[name] = value
        unknown = set(kwargs) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        for name in self._fields:
            self.__setattr__(name, kwargs.get(name))

    def __getattr__(self, name):
        if name in self._fields:
            return None
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in self._fields:
            if value is None:
                super().pop(name, None)
            else:
                super().__setitem__(name, value)

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def to_tuple(self):
        return tuple(OrderedDict.__getitem__(self, k) for k in self.keys())

    def __reduce__(self):
        return (type(self), (), dict(self.items()))

    def __setstate__(self, state):
        for k, v in state.items():
            self.__setattr__(k, v)


class _CacheAlias:
    """transformers 5.x names the cache field `cache`; older scripts read `past_key_values`. Both work."""

    @property
    def cache(self):
        return self.past_key_values


class BaseModelOutputWithPast(_CacheAlias, ModelOutput):
    _fields = ("last_hidden_state", "past_key_values", "hidden_states", "attentions")


class CausalLMOutputWithPast(_CacheAlias, ModelOutput):
    _fields = ("loss", "logits", "past_key_values", "hidden_states", "attentions")


class MoeModelOutputWithPast(_CacheAlias, ModelOutput):
    _fields = ("last_hidden_state", "past_key_values", "hidden_states", "attentions", "router_logits")


class MoeCausalLMOutputWithPast(_CacheAlias, ModelOutput):
    _fields = ("loss", "aux_loss", "logits", "past_key_values", "hidden_states", "attentions", "router_logits")


class SequenceClassifierOutputWithPast(_CacheAlias, ModelOutput):
    _fields = ("loss", "logits", "past_key_values", "hidden_states", "attentions")


class TokenClassifierOutput(ModelOutput):
    _fields = ("loss", "logits", "hidden_states", "attentions")


class BaseModelOutput(ModelOutput):
    _fields = ("last_hidden_state", "hidden_states", "attentions")


class BaseModelOutputWithPooling(ModelOutput):
    _fields = ("last_hidden_state", "pooler_output", "hidden_states", "attentions")


class Seq2SeqModelOutput(_CacheAlias, ModelOutput):
    _fields = ("last_hidden_state", "past_key_values", "decoder_hidden_states", "decoder_attentions",
               "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions")


class Seq2SeqLMOutput(_CacheAlias, ModelOutput):
    _fields = ("loss", "logits", "past_key_values", "decoder_hidden_states", "decoder_attentions",
               "cross_attentions", "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions")

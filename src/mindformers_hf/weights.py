"""Checkpoint formats whose tensor names are not our parameter names: declared renaming tables.

Checkpoints of some families (InternLM2, Baichuan, ChatGLM, Qwen v1: the Hub runs them with
`trust_remote_code`) hold a LLaMA-shaped model under other names and fused layouts. Their model classes
here are the LLaMA classes plus one `WeightTable`: a list of rules "checkpoint key <-> our parameter",
each optionally with a pair of functions that permute a fused tensor into our layout and back.
`CheckpointFormatMixin` renames the tensor stream at load (through `PreTrainedModel.load_weights`, the
same hook the MoE families use to stack experts) and renames back in `save_pretrained`, so a folder we
save has the tensor names and layouts of the format it came from.
"""
import re
from dataclasses import dataclass

from .weight_loading import as_source, row_permuted


@dataclass(frozen=True)
class WeightRule:
    """One checkpoint key template and our parameter template. `{i}` stands for a layer number, `{kind}`
    for `weight` or `bias`, `{rest}` for any tail of the name (a sub-module renamed by its prefix).
    `load` / `save` (array, config) -> array reorder a tensor's rows without changing its shape (None: the
    tensor is copied as is); at load the order is applied lazily (weight_loading.py row_permuted), so a
    tensor-parallel rank reads only the rows of its slice."""
    checkpoint: str
    ours: str
    load: object = None
    save: object = None


def _template_regex(template):
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{kind\}", r"(?P<kind>weight|bias)")
    pattern = pattern.replace(r"\{rest\}", r"(?P<rest>.+)")
    return re.compile(f"^{pattern}$")


class WeightTable:
    """The rules of one checkpoint format. Keys no rule matches keep their name (our names then decide
    whether they load); keys matching a `skip` pattern (buffers such as ChatGLM's rotary inv_freq) are
    dropped."""

    def __init__(self, *rules, skip=()):
        self.rules = [(rule, _template_regex(rule.checkpoint), _template_regex(rule.ours)) for rule in rules]
        self.skip = tuple(re.compile(p) for p in skip)

    def to_ours(self, key):
        """checkpoint key -> (our parameter name or None to skip, load function or None)."""
        if any(p.search(key) for p in self.skip):
            return None, None
        for rule, checkpoint, _ in self.rules:
            match = checkpoint.match(key)
            if match:
                return rule.ours.format(**match.groupdict()), rule.load
        return key, None

    def to_checkpoint(self, name):
        """our parameter name -> (checkpoint key, save function or None)."""
        for rule, _, ours in self.rules:
            match = ours.match(name)
            if match:
                return rule.checkpoint.format(**match.groupdict()), rule.save
        return name, None


class _Reordered:
    """A parameter whose checkpoint layout is computed only when save_pretrained writes it."""

    def __init__(self, tensor, fn, config):
        self.tensor, self.fn, self.config = tensor, fn, config
        self.dtype, self.shape = tensor.dtype, tuple(tensor.shape)

    def view(self, dtype):  # bf16 leaves as raw bits; a permutation of bits is the permuted tensor
        return _Reordered(self.tensor.view(dtype), self.fn, self.config)

    def asnumpy(self):
        return self.fn(self.tensor.asnumpy(), self.config)


class CheckpointFormatMixin:
    """Put before the LLaMA class: `class InternLM2ForCausalLM(CheckpointFormatMixin, LlamaForCausalLM)`
    with `weight_table` the format's WeightTable (rules written for the causal-LM keys)."""

    weight_table: WeightTable = None

    def load_weights(self, source):
        return super().load_weights(self._to_our_names(source))

    @classmethod
    def checkpoint_key_of(cls, name):
        return cls.weight_table.to_checkpoint(name)[0]

    def _to_our_names(self, source):
        for key, path, array, is_bits in source:
            name, load = self.weight_table.to_ours(key)
            if name is None:
                continue
            if load is not None:
                array = row_permuted(as_source(array, is_bits), load, self.config)
            yield name, path, array, is_bits

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """Writes the format's own tensor names and layouts (a base model writes its keys under the
        causal LM's prefix, which our base and causal-LM classes both read)."""
        params = state_dict if state_dict is not None else dict(self.parameters_and_names())
        prefix = "" if hasattr(self, self.base_model_prefix) else self.base_model_prefix + "."
        out = type(params)() if isinstance(params, dict) else {}  # (keeps a gathered state's WholeStateDict type)
        for name, param in params.items():
            key, save = self.weight_table.to_checkpoint(prefix + name)
            out[key] = param if save is None else _Reordered(param, save, self.config)
        return super().save_pretrained(save_directory, *args, state_dict=out, **kwargs)

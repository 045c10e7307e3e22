"""Which decoder layers run compiled, chosen by the caller for the duration of a block:

    with compiled_layers(model, "prefill"):   # generate's prefill, the serving engine's first chunks
        model(...)

The choice lives in a context variable (this thread's, this block's), not on the model: nothing outside a model
sets its attributes or replaces its layers' `construct`, and two threads can run the same model compiled and
eagerly at once. Modes:
  - "prefill": the model's decoder layers that support it run as one compiled graph shared by all of them, on
    inputs without autograd, and the last layer computes only the last position after its keys and values
    (the caller reads only the last position's logits). LLaMA-shaped models: models/llama/decoder_layer.py.
  - "score": the same graph, every position, on inputs without autograd (lm-eval's log-likelihood forwards: they
    read the logits of all positions).
  - "train": the same graph, every position, with weights passed as views that carry gradients.
  - "jit": every decoder layer compiled (TrainingArguments(torch_compile=True)): layers the base model compiles
    as in "train" run so; the others (the model's `_no_split_modules` classes, any family) each under its own
    `ms.jit` of their `construct`, compiled once per layer and input shape -- unless their class says its
    construct cannot be parsed by `ms.jit` (`jit_construct = False`), then eagerly.
A model that supports the first three says so with a `compiles_layers()` method on its base model; elsewhere the
block runs eagerly.
"""
import contextlib
import contextvars
import types

import mindspore as ms

MODES = ("prefill", "score", "train", "jit")

# {id(cell): mode} for the cells of the models inside a `compiled_layers` block: base models, and for "jit" also
# the decoder layers (the cells stay alive while their block runs)
_ACTIVE = contextvars.ContextVar("mindformers_hf_compiled_layers", default={})
# one jitted `construct` per layer class: the graph cache keys on the instance, so each layer compiles once
_JITTED_CONSTRUCT = {}


def base_model(model):
    """The transformer that runs the decoder layers: under a PEFT wrapper and a task head (`model.model`)."""
    get_base = getattr(model, "get_base_model", None)
    model = get_base() if callable(get_base) else model
    return getattr(model, getattr(model, "base_model_prefix", ""), model)


def supports_compiled_layers(model):
    """Whether "prefill" / "score" / "train" would compile any of the model's decoder layers."""
    compiles = getattr(base_model(model), "compiles_layers", None)
    return callable(compiles) and bool(compiles())


def decoder_layers(model):
    """The repeated blocks "jit" compiles: cells whose class the model names in `_no_split_modules`."""
    get_base = getattr(model, "get_base_model", None)
    model = get_base() if callable(get_base) else model
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [cell for _, cell in model.cells_and_names() if type(cell).__name__ in names]


@contextlib.contextmanager
def compiled_layers(model, mode="prefill", layers=None):
    """Run `model`'s decoder layers compiled (see the module docstring) inside the block; mode None: eagerly
    (so a caller can write `compiled_layers(model, "prefill" if wanted else None)`). "jit" takes the layers
    to compile, or finds them (`decoder_layers`)."""
    if mode is None:
        yield
        return
    if mode not in MODES:
        raise ValueError(f"compiled_layers: mode must be one of {MODES} or None, not {mode!r}")
    cells = [base_model(model)]
    if mode == "jit":
        cells += decoder_layers(model) if layers is None else layers
    active = dict(_ACTIVE.get())
    active.update((id(cell), mode) for cell in cells)
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def compile_mode(cell):
    """The mode a `compiled_layers` block chose for this base model or decoder layer, or None (eager)."""
    active = _ACTIVE.get()
    return active.get(id(cell)) if active else None


def jitted(layer):
    """The layer's own `construct` under `ms.jit`, bound to it (the instance keeps its construct); the layer
    itself when its class says `ms.jit` cannot parse its construct."""
    cls = type(layer)
    if not getattr(cls, "jit_construct", True):
        return layer
    if cls not in _JITTED_CONSTRUCT:
        _JITTED_CONSTRUCT[cls] = ms.jit(cls.construct)
    return types.MethodType(_JITTED_CONSTRUCT[cls], layer)

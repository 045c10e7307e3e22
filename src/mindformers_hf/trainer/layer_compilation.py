"""How the Trainer's steps compile the model's decoder layers, through `compiled_layers` (compiled_layers.py).

- By default (`SharedLayerGraph`), train steps run the model's LLaMA-shaped decoder layers as one compiled graph
  shared by all layers (models/llama/decoder_layer.py), compiled once per batch shape (~1.5 s). Batches of ever
  new shapes (dynamic padding) would recompile each time, so after MAX_SHAPES distinct shapes the steps stay in
  PyNative. MINDFORMERS_HF_COMPILE_LAYERS=0 turns it off.
- `torch_compile=True` (`JitLayers`): each decoder layer (the model's `_no_split_modules` classes, any family)
  runs under its own `ms.jit` while gradients are taken; the rest of the model stays PyNative. The whole forward
  cannot be compiled as written (its output classes become interpreted nodes that stop gradients). Each layer
  compiles once per input shape; evaluation and generation are not affected.
"""
import contextlib
import os

from ..compiled_layers import compiled_layers, decoder_layers, supports_compiled_layers
from ..utils import warn_once


class SharedLayerGraph:
    MAX_SHAPES = 8

    def __init__(self, model):
        self.model = model
        self.enabled = os.environ.get("MINDFORMERS_HF_COMPILE_LAYERS") != "0" and supports_compiled_layers(model)
        self.shapes = set()

    @contextlib.contextmanager
    def step(self, inputs):
        """Around one step's forward and backward on `inputs` (the batch)."""
        items = sorted(inputs.items()) if isinstance(inputs, dict) else enumerate(inputs)
        shape = tuple((k, tuple(v.shape)) for k, v in items if hasattr(v, "shape"))
        new_past_limit = shape not in self.shapes and len(self.shapes) >= self.MAX_SHAPES
        if not self.enabled or new_past_limit:
            if self.enabled:
                warn_once(f"Trainer: batches came in more than {self.MAX_SHAPES} shapes; the decoder layers run in "
                          "PyNative for new shapes from now on (pad batches to a few lengths, e.g. "
                          "pad_to_multiple_of, to keep them compiled)")
            yield
            return
        self.shapes.add(shape)
        with compiled_layers(self.model, "train"):
            yield


class JitLayers:
    def __init__(self, model):
        self.model = model
        self.layers = decoder_layers(model)
        if not self.layers:
            warn_once("torch_compile=True: the model names no decoder-layer class (_no_split_modules) to compile; "
                      "training runs in PyNative")

    @contextlib.contextmanager
    def step(self, inputs):
        with compiled_layers(self.model, "jit" if self.layers else None, layers=self.layers):
            yield


def layer_compilation(model, torch_compile):
    """The Trainer's policy: JitLayers for torch_compile=True, else SharedLayerGraph."""
    return JitLayers(model) if torch_compile else SharedLayerGraph(model)

"""compiled_layers(model, mode): the compilation choice is scoped to the block and the calling thread, and never
stored on the model or its layers."""
import threading

import pytest

from mindformers_hf import AutoModelForCausalLM
from mindformers_hf.compiled_layers import compile_mode, compiled_layers, supports_compiled_layers


def test_mode_is_scoped_to_the_block_and_the_thread(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base, layer = model.model, model.model.layers[0]
    before = {name: dict(vars(cell)).keys() for name, cell in model.cells_and_names()}
    assert supports_compiled_layers(model) and compile_mode(base) is None
    seen = {}
    with compiled_layers(model, "prefill"):
        assert compile_mode(base) == "prefill" and compile_mode(layer) is None
        other = threading.Thread(target=lambda: seen.setdefault("other thread", compile_mode(base)))
        other.start()
        other.join()
        with compiled_layers(model, "jit"):  # nested: the inner block's choice, then the outer one's again
            assert compile_mode(base) == "jit" and compile_mode(layer) == "jit"
        assert compile_mode(base) == "prefill" and compile_mode(layer) is None
    assert seen == {"other thread": None}
    assert compile_mode(base) is None
    with compiled_layers(model, None):
        assert compile_mode(base) is None
    assert {name: dict(vars(cell)).keys() for name, cell in model.cells_and_names()} == before


def test_unknown_mode_is_an_error(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match="mode must be one of"):
        with compiled_layers(model, "decode"):
            pass

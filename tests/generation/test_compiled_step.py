"""A compiled decode step never replays another step's graph (issue 17).

MindSpore keys its traced graphs on the traced function's module, name, id(), source line and input shapes and
keeps them for the life of the process; once a step is freed, a new step's function can be allocated at the same
address. Before the fix, such a step replayed the freed step's graph (its weights, its cache buffers) from its
second call on -- in a full test run, Qwen v1's generate took another model's tokens from the third one on.

And a trace that fails half-way leaves the process usable: eager ops and later traces run (a trace left open in
MindSpore's C++ recorder used to make every later op fail with "'NoneType' object has no attribute 'run_op'" /
'prepare_op')."""
import gc

import numpy as np
import pytest

import mindspore as ms
from mindspore import ops

from mindformers_hf.generation.compile import CompiledStep


def _scaled_step(k):
    weight = ms.Tensor(np.full(4, k, np.float32))  # what the step's closure holds: a model's weights, say

    def step(x):
        return x * weight
    return CompiledStep(step)


def _three_calls(step, x):
    # eager (checked), traced, replayed
    return [step(x).asnumpy().tolist() for _ in range(3)]


def test_a_step_whose_id_recycles_a_freed_ones_runs_its_own_graph(monkeypatch):
    """MindSpore's tracer sees one id() for every function: what a recycled address does (whether CPython hands a
    freed step's address to the next step depends on the allocator's state: in a fresh process it did within three
    tries, in a test run after other tests not within eight)."""
    from mindspore.graph import jit_trace

    monkeypatch.setattr(jit_trace, "id", lambda obj: 17, raising=False)
    x = ms.Tensor(np.arange(4, dtype=np.float32))
    first = _scaled_step(2.0)
    assert _three_calls(first, x) == [[0.0, 2.0, 4.0, 6.0]] * 3
    # the first step stays alive, so its graphs are not released: only the step's own name keeps them apart
    assert _three_calls(_scaled_step(3.0), x) == [[0.0, 3.0, 6.0, 9.0]] * 3
    assert first(x).asnumpy().tolist() == [0.0, 2.0, 4.0, 6.0]


def test_a_freed_steps_graphs_are_released():
    """MindSpore's table holds the graphs (and through them a model's weights) until the step that traced them is
    freed; the next compiled step's call releases them."""
    from mindspore.graph import jit_trace

    x = ms.Tensor(np.arange(4, dtype=np.float32))
    step = _scaled_step(2.0)
    _three_calls(step, x)
    name = f".{step.fn.__name__}#"
    assert [phase for phase in jit_trace._trace_compile_cache if name in phase]
    del step
    gc.collect()
    assert _three_calls(_scaled_step(3.0), x) == [[0.0, 3.0, 6.0, 9.0]] * 3
    assert not [phase for phase in jit_trace._trace_compile_cache if name in phase]


def test_two_models_with_one_decode_shape_each_generate_hfs_tokens(tiny_llama, tmp_path, monkeypatch):
    """The issue's case: Qwen v1 (use_dynamic_ntk / use_logn_attn) after another model whose compiled decode step
    has the same input shapes, with MindSpore's ids colliding; each model's greedy tokens are transformers'."""
    torch = pytest.importorskip("torch")
    import transformers
    from mindspore.graph import jit_trace

    from mindformers_hf import AutoModelForCausalLM
    from tests.models import remote_formats

    monkeypatch.setattr(jit_trace, "id", lambda obj: 17, raising=False)
    qwen, _, qwen_hf = remote_formats.qwen_checkpoint(tmp_path / "qwen")
    llama_hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompt = np.random.default_rng(0).integers(3, 100, size=(1, 7))
    for folder, hf in ((tiny_llama, llama_hf), (str(qwen), qwen_hf)):
        model = AutoModelForCausalLM.from_pretrained(folder)
        got = model.generate(prompt, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
        assert any(graph.step.compiled for graph in model.__dict__["_mindformers_decode_graphs"])
        with torch.no_grad():
            want = hf.generate(torch.tensor(prompt), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                               pad_token_id=0)
        np.testing.assert_array_equal(got, want.numpy())


@pytest.mark.parametrize("where", ["between ops", "inside an op"])
def test_a_trace_that_fails_half_way_leaves_the_process_usable(where):
    calls = []
    wrong = ms.Tensor(np.ones((3, 5), np.float32))

    def step(x, w):
        y = ops.matmul(x, w)
        calls.append(1)
        if len(calls) == 2:             # the second call is the trace
            if where == "between ops":
                raise ValueError("fails while tracing")
            y = ops.matmul(y, wrong)     # a shape error raised by the op
        return ops.matmul(y, w) + 1

    x = ms.Tensor(np.arange(8, dtype=np.float32).reshape(2, 4))
    w = ms.Tensor(np.full((4, 4), 0.5, np.float32))
    expected = (x.asnumpy() @ w.asnumpy()) @ w.asnumpy() + 1
    compiled = CompiledStep(step, "failing test step")
    np.testing.assert_allclose(compiled(x, w).asnumpy(), expected)   # eager check call
    np.testing.assert_allclose(compiled(x, w).asnumpy(), expected)   # the trace fails: eager result
    assert not compiled.compiled
    np.testing.assert_allclose(compiled(x, w).asnumpy(), expected)
    np.testing.assert_allclose((x * 2).asnumpy(), x.asnumpy() * 2)  # plain eager ops still run
    other = CompiledStep(lambda a, b: ops.matmul(a, b) * 2, "later test step")
    for _ in range(3):
        out = other(x, w)
    assert other.compiled
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy() @ w.asnumpy() * 2)

"""`CompiledStep` when MindSpore's trace fails half-way: the step falls back to its eager result and the process
keeps working -- eager ops and later traces included (a trace left open in MindSpore's C++ recorder used to make
every later op fail with "'NoneType' object has no attribute 'run_op'" / 'prepare_op')."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import ops

from mindformers_hf.generation.compile import CompiledStep


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


def test_a_new_step_never_replays_a_freed_steps_graph():
    """MindSpore keys a traced graph on the function's id() (and the input shapes); ids are reused once a step is
    freed. Steps computing different things, made and freed one after another, each give their own results."""
    import gc

    x = ms.Tensor(np.ones((2, 3), np.float32))
    for factor in range(1, 9):
        step = CompiledStep(lambda a, _f=factor: a * _f, f"step x{factor}")
        for _ in range(3):   # eager check, trace, replay
            out = step(x)
        assert step.compiled
        np.testing.assert_allclose(out.asnumpy(), np.full((2, 3), factor, np.float32))
        del step, out
        gc.collect()

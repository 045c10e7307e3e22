"""The float32 `linear` op (x [M, K] @ w [N, K]^T): every implementation against a float64 numpy product, forward and
both gradients, eager and under ms.jit, and the routing of `ops.linear`.

Tolerance: the kernels sum in another order than MatMul (K blocks, vector lanes). A float32 dot product of length K
is off by at most K * 2^-24 * sum|x_k w_k| (worst case) and typically sqrt(K) * 2^-24 of it; for K <= 4096 that is
<= 4e-6, so 1e-5 of the largest sum|x_k w_k| bounds every entry, for the reference as for the kernels.
"""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import ops as fused
from mindformers_hf.ops import gemm, registry

IMPLS = registry.implementations("linear")  # the reference and the CPU kernels that build here
TOL = 1e-5
# the kernels' primitives at every size ("cpu" itself takes the kernel only up to gemm.KERNEL_MAX_ROWS rows)
PRIMITIVES = {"cpu": gemm._fwd, "cpu_portable": gemm._fwd_portable}


def run(impl):
    return PRIMITIVES[impl].op if impl in PRIMITIVES else registry.get("linear", impl)

# (M, K, N): the dot path (M <= 8: decode) with K not a multiple of 16, K = 1, and the packed GEMM (M > 8) with
# tails in every direction, two and three K blocks, N past one N block (2048)
SHAPES = [(1, 67, 13), (3, 16, 70), (8, 1, 5), (9, 33, 7), (30, 300, 45), (100, 577, 190), (15, 520, 2100)]


def check(got, want, scale, what):
    got = got.asnumpy() if hasattr(got, "asnumpy") else got
    assert got.shape == want.shape and got.dtype == np.float32, what
    err = np.abs(got - want).max() / scale
    assert err <= TOL, f"{what}: error {err:.2e} of the largest |x||w| sum > {TOL}"


def data(m, k, n, seed=0):
    rng = np.random.default_rng(seed + m * 7 + k * 13 + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    dy = rng.standard_normal((m, n)).astype(np.float32)
    return x, w, dy


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_linear_forward(impl, m, k, n):
    x, w, _ = data(m, k, n)
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    got = run(impl)(ms.Tensor(x), ms.Tensor(w))
    check(got, want, (np.abs(x) @ np.abs(w).T).max(), f"{impl} {m}x{k}x{n}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("m,k,n", [(1, 67, 13), (9, 33, 7), (100, 577, 190)])
def test_linear_backward(impl, m, k, n):
    x, w, dy = data(m, k, n, seed=1)
    fn = run(impl)
    dx, dw = ms.grad(lambda a, b: (fn(a, b) * ms.Tensor(dy)).sum(), grad_position=(0, 1))(ms.Tensor(x), ms.Tensor(w))
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    check(dx, dy64 @ w64, (np.abs(dy) @ np.abs(w)).max(), f"{impl} dx")
    check(dw, dy64.T @ x64, (np.abs(dy).T @ np.abs(x)).max(), f"{impl} dw")


@pytest.mark.parametrize("impl", IMPLS)
def test_linear_reads_a_transposed_view(impl):
    rng = np.random.default_rng(5)
    x = ms.Tensor(rng.standard_normal((40, 12)).astype(np.float32)).swapaxes(0, 1)  # [12, 40], not contiguous
    w = rng.standard_normal((30, 40)).astype(np.float32)
    want = x.asnumpy().astype(np.float64) @ w.T
    check(run(impl)(x, ms.Tensor(w)), want, (np.abs(x.asnumpy()) @ np.abs(w).T).max(), impl)


def test_ops_linear_routes_float32_through_the_linear_op_under_jit():
    """`ops.linear` (every projection) takes the `linear` op for float32 weights: the kernel up to KERNEL_MAX_ROWS
    rows, MatMul above; the kernel and its bprop run inside an ms.jit graph on both sides of its dot / GEMM split."""
    if "cpu" not in IMPLS:
        pytest.skip("the linear CPU kernel does not build here")
    calls = []

    class Counting:
        def __init__(self, primitive):
            self.primitive = primitive

        def __call__(self, *args):
            calls.append(args[0].shape)
            return self.primitive(*args)

    for m, fn in ((2, fused.linear), (gemm.KERNEL_MAX_ROWS + 1, fused.linear), (20, gemm._fwd.op)):
        x, w, dy = data(m, 48, 24, seed=2)
        x_t, w_t, dy_t = ms.Tensor(x), ms.Tensor(w), ms.Tensor(dy)

        def forward(a, b):
            return fn(a, b)

        def loss(a, b):
            return (fn(a, b) * dy_t).sum()

        with registry.use_kernels("all"):  # (not on by default: ops/gemm.py says why)
            assert registry.implementation_name("linear") == "cpu"
            y = ms.jit(forward)(x_t, w_t)
            _, (dx, dw) = ms.jit(ms.value_and_grad(loss, (0, 1)))(x_t, w_t)
            if fn is fused.linear:  # eagerly, count the kernel's calls: only up to KERNEL_MAX_ROWS rows
                saved, gemm._fwd.op = gemm._fwd.op, Counting(gemm._fwd.op)
                try:
                    fused.linear(x_t, w_t)
                finally:
                    gemm._fwd.op = saved
                assert calls == ([(m, 48)] if m <= gemm.KERNEL_MAX_ROWS else []), m
                calls.clear()
        scale = (np.abs(x) @ np.abs(w).T).max()
        check(y, x.astype(np.float64) @ w.T.astype(np.float64), scale, f"jit forward M={m}")
        check(dx, dy.astype(np.float64) @ w, (np.abs(dy) @ np.abs(w)).max(), f"jit dx M={m}")
        check(dw, dy.T.astype(np.float64) @ x, (np.abs(dy).T @ np.abs(x)).max(), f"jit dw M={m}")
    with registry.use_kernels("reference"):
        assert registry.implementation_name("linear") == registry.REFERENCE

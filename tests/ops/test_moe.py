"""MoE ops: the grouped expert implementation and the CPU kernel against the per-expert reference (and the
definition in numpy), and the router's load-balancing loss against transformers' own `load_balancing_loss_func`
(torch, the oracle).

Routing itself is checked against HF's routers end to end by the model parity tests (tests/models/test_*moe*).
"""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf.ops import moe, registry


def _case(seed, tokens, hidden, inter, experts, top_k, skip_experts=()):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, hidden)).astype(np.float32)
    gate_up = (0.1 * rng.standard_normal((experts, 2 * inter, hidden))).astype(np.float32)
    down = (0.1 * rng.standard_normal((experts, hidden, inter))).astype(np.float32)
    logits = rng.standard_normal((tokens, experts)).astype(np.float32)
    logits[:, list(skip_experts)] = -1e4  # experts no token picks: the grouped path must skip them
    weights, indices = moe.route_tokens(ms.Tensor(logits), top_k, norm_topk_prob=True)
    return ms.Tensor(x), indices, weights, ms.Tensor(gate_up), ms.Tensor(down)


def _numpy_moe(x, indices, weights, gate_up, down):
    """The definition, token by token, in float64."""
    x, gate_up, down = (a.asnumpy().astype(np.float64) for a in (x, gate_up, down))
    indices, weights = indices.asnumpy(), weights.asnumpy().astype(np.float64)
    inter = down.shape[2]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(indices.shape[1]):
            e = indices[t, slot]
            h = gate_up[e] @ x[t]
            act = h[:inter] / (1 + np.exp(-h[:inter])) * h[inter:]
            out[t] += weights[t, slot] * (down[e] @ act)
    return out


@pytest.mark.parametrize("shape", [dict(tokens=1, hidden=16, inter=24, experts=8, top_k=2),
                                   dict(tokens=37, hidden=32, inter=48, experts=8, top_k=2),
                                   dict(tokens=50, hidden=16, inter=8, experts=16, top_k=4, skip_experts=(3, 9, 15))])
def test_grouped_equals_reference_and_definition(shape):
    args = _case(0, **shape)
    ref = moe.moe_experts_reference(*args).asnumpy()
    grouped = moe.moe_experts_grouped(*args).asnumpy()
    np.testing.assert_allclose(ref, _numpy_moe(*args), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grouped, ref, rtol=1e-5, atol=1e-6)


def _relative_error(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


CPU_KERNEL = "cpu" in registry.implementations("moe_experts")
needs_kernel = pytest.mark.skipif(not CPU_KERNEL, reason="the moe_experts CPU kernel is not available here")

# float32 on both sides: the kernel and the reference differ only in the order of their float32 sums (the kernel
# adds a token's k slots in slot order, the reference its experts in expert order; the GEMMs' k order may differ),
# a few ulp of the output's scale, far inside 1e-5 relative.
KERNEL_SHAPES = [dict(tokens=1, hidden=16, inter=24, experts=8, top_k=2),                      # decode: dot body
                 dict(tokens=50, hidden=16, inter=8, experts=16, top_k=4, skip_experts=(3, 9, 15)),
                 dict(tokens=90, hidden=33, inter=21, experts=4, top_k=2)]  # tiled: 45 per expert, odd H, I


@needs_kernel
@pytest.mark.parametrize("weights_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_cpu_kernel_equals_reference(shape, weights_dtype):
    x, indices, weights, gate_up, down = _case(0, **shape)
    if weights_dtype == "bfloat16":  # the kernel reads bf16 weights; the reference gets the same values widened
        gate_up, down = gate_up.astype(ms.bfloat16), down.astype(ms.bfloat16)
    got = registry.get("moe_experts", "cpu")(x, indices, weights, gate_up, down).asnumpy()
    args32 = (x, indices, weights, gate_up.astype(ms.float32), down.astype(ms.float32))
    want = moe.moe_experts_reference(*args32).asnumpy()
    assert _relative_error(got, want) <= 1e-5
    assert _relative_error(got, _numpy_moe(*args32)) <= 1e-5


@needs_kernel
def test_cpu_kernel_under_jit_and_its_gradients():
    """The kernel inside ms.jit (routing indices are graph inputs) and its composite gradient, eagerly (grouped)
    and under ms.jit (dense), against the reference's autograd."""
    x, indices, weights, gate_up, down = _case(0, tokens=12, hidden=8, inter=8, experts=3, top_k=2,
                                               skip_experts=(2,))  # (few experts: the jit bprop unrolls them)
    kernel = registry.get("moe_experts", "cpu")
    want = moe.moe_experts_reference(x, indices, weights, gate_up, down).asnumpy()
    assert _relative_error(ms.jit(kernel)(x, indices, weights, gate_up, down).asnumpy(), want) <= 1e-5
    proj = ms.Tensor(np.random.default_rng(1).standard_normal(want.shape).astype(np.float32))

    def grads(fn):
        def loss(x, weights, gate_up, down):
            return (fn(x, indices, weights, gate_up, down) * proj).sum()
        return ms.grad(loss, grad_position=(0, 1, 2, 3))

    want_grads = grads(moe.moe_experts_reference)(x, weights, gate_up, down)
    for got_grads in (grads(kernel)(x, weights, gate_up, down), ms.jit(grads(kernel))(x, weights, gate_up, down)):
        for got, expected in zip(got_grads, want_grads):
            assert _relative_error(got.asnumpy(), expected.asnumpy()) <= 1e-5


@needs_kernel
def test_cpu_kernel_refuses_an_expert_index_out_of_range():
    x, indices, weights, gate_up, down = _case(0, tokens=3, hidden=16, inter=8, experts=4, top_k=2)
    with pytest.raises(RuntimeError, match="moe_experts_fwd"):
        registry.get("moe_experts", "cpu")(x, ms.Tensor(np.full((3, 2), 4, np.int32)), weights, gate_up,
                                           down).asnumpy()


def test_cpu_default_then_grouped():
    assert "grouped" in registry.implementations("moe_experts")
    with registry.use_kernels("auto"):
        assert registry.implementation_name("moe_experts") == ("cpu" if CPU_KERNEL else "grouped")
    with registry.use_kernels("reference"):
        assert registry.implementation_name("moe_experts") == registry.REFERENCE


@pytest.mark.parametrize("with_mask", [False, True])
def test_load_balancing_loss_matches_transformers(with_mask):
    import torch
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    rng = np.random.default_rng(1)
    batch, seq, experts, top_k = 3, 7, 8, 2
    logits = [rng.standard_normal((batch * seq, experts)).astype(np.float32) for _ in range(3)]
    mask = np.ones((batch, seq), np.int64)
    mask[1, :3] = 0
    mask[2, -2:] = 0
    want = load_balancing_loss_func(tuple(torch.tensor(a) for a in logits), experts, top_k,
                                    torch.tensor(mask) if with_mask else None)
    got = moe.load_balancing_loss([ms.Tensor(a) for a in logits], experts, top_k,
                                  ms.Tensor(mask) if with_mask else None)
    assert abs(float(got) - float(want)) <= 1e-6 * abs(float(want))


def test_unknown_topk_method_is_named():
    with pytest.raises(NotImplementedError, match="topk_method 'random'"):
        moe.route_tokens(ms.Tensor(np.zeros((2, 4), np.float32)), 2, topk_method="random")

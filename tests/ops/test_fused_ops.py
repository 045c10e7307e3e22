"""Every implementation of every fused op available here against the plain MindSpore reference.

Forward and backward, float32 and bfloat16 inputs, odd shapes. bf16 on CPU is storage only, so the
expected bf16 value is the float32 reference on the same (bf16-rounded) inputs, cast to bf16 -- what the
model computes. The reference itself is checked against HF formulas by the model parity tests.
"""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import ops as fused
from mindformers_hf.masking_utils import create_causal_mask
from mindformers_hf.ops import reference, registry

KERNELS = {op: [name for name in registry.implementations(op) if name != registry.REFERENCE]
           for op in registry.ops()}
TOL = {"float32": 2e-5, "bfloat16": 2e-2}


def kernel_cases(op):
    names = KERNELS[op]
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no kernel for {op} on this device"))]
    return names


def tensor(rng, shape, dtype="float32", scale=1.0):
    t = ms.Tensor((rng.standard_normal(shape) * scale).astype(np.float32))
    return t.astype(ms.bfloat16) if dtype == "bfloat16" else t


def f32(t):
    return t.astype(ms.float32) if t.dtype != ms.float32 else t


def as_np(t):
    return f32(t).asnumpy()


def assert_close(got, want, dtype, what=""):
    got, want = (got if isinstance(got, (tuple, list)) else (got,)), (want if isinstance(want, (tuple, list)) else (want,))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = as_np(g), as_np(w)
        assert g.shape == w.shape, (what, i, g.shape, w.shape)
        err = np.abs(g - w).max() / max(1.0, np.abs(w).max())
        assert err <= TOL[dtype], f"{what} output {i}: relative error {err:.2e} > {TOL[dtype]}"


def run_both(impl, ref, args, n_grad, dtype, seed=1):
    """Forward and input gradients of impl and of the float32 reference on the same values."""
    args32 = [f32(a) if isinstance(a, ms.Tensor) else a for a in args]
    out = impl(*args)
    want = ref(*args32)
    outs = out if isinstance(out, tuple) else (out,)
    for o, a in zip(outs, args):
        assert o.dtype == a.dtype  # cast back to the input dtype, as the model expects
    rng = np.random.default_rng(seed)
    weights = [tensor(rng, o.shape) for o in (want if isinstance(want, tuple) else (want,))]

    def loss(fn, rest):
        def inner(*xs):
            res = fn(*xs, *rest)
            res = res if isinstance(res, tuple) else (res,)
            return sum((f32(r) * w).sum() for r, w in zip(res, weights))
        return inner

    positions = tuple(range(n_grad))
    grads = ms.grad(loss(impl, args[n_grad:]), grad_position=positions)(*args[:n_grad])
    want_grads = ms.grad(loss(ref, args32[n_grad:]), grad_position=positions)(*args32[:n_grad])
    return out, want, grads, want_grads


DTYPES = ["float32", "bfloat16"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 7, 33), (1, 1, 64), (3, 5)])
@pytest.mark.parametrize("impl", kernel_cases("rms_norm"))
def test_rms_norm(impl, shape, dtype):
    rng = np.random.default_rng(0)
    x, w = tensor(rng, shape, dtype, 3.0), tensor(rng, shape[-1:], dtype)
    fn = registry.get("rms_norm", impl)
    out, want, grads, want_grads = run_both(lambda a, b: fn(a, b, 1e-5), lambda a, b: reference.rms_norm(a, b, 1e-5),
                                            [x, w], 2, dtype)
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", kernel_cases("add_rms_norm"))
def test_add_rms_norm(impl, dtype):
    rng = np.random.default_rng(0)
    x, res, w = tensor(rng, (2, 5, 31), dtype), tensor(rng, (2, 5, 31), dtype, 2.0), tensor(rng, (31,), dtype)
    fn = registry.get("add_rms_norm", impl)
    out, want, grads, want_grads = run_both(lambda a, r, b: fn(a, r, b, 1e-6),
                                            lambda a, r, b: reference.add_rms_norm(a, r, b, 1e-6), [x, res, w], 3, dtype)
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 37), (5000,), (1, 1, 1)])
@pytest.mark.parametrize("impl", kernel_cases("silu_mul"))
def test_silu_mul(impl, shape, dtype):
    rng = np.random.default_rng(0)
    gate, up = tensor(rng, shape, dtype, 4.0), tensor(rng, shape, dtype)
    out, want, grads, want_grads = run_both(registry.get("silu_mul", impl), reference.silu_mul, [gate, up], 2, dtype)
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("impl", kernel_cases("swiglu"))
def test_swiglu(impl, dtype):
    rng = np.random.default_rng(0)
    x = tensor(rng, (2, 3, 2 * 19), dtype, 3.0)
    fn = registry.get("swiglu", impl)
    out, want, grads, want_grads = run_both(fn, reference.swiglu, [x], 1, dtype)
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")
    assert out.shape == (2, 3, 19)


ROPE_CASES = {
    "half": dict(rot=16, interleaved=False, cos_batch=1),
    "interleaved": dict(rot=16, interleaved=True, cos_batch=1),
    "partial_half": dict(rot=6, interleaved=False, cos_batch=2),
    "partial_interleaved": dict(rot=10, interleaved=True, cos_batch=2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(ROPE_CASES))
@pytest.mark.parametrize("impl", kernel_cases("apply_rotary_pos_emb"))
def test_apply_rotary_pos_emb(impl, case, dtype):
    rot, interleaved, cos_batch = ROPE_CASES[case]["rot"], ROPE_CASES[case]["interleaved"], ROPE_CASES[case]["cos_batch"]
    rng = np.random.default_rng(0)
    # q, k as the model makes them: [B, S, H, D] transposed to [B, H, S, D] (a strided view)
    q = tensor(rng, (2, 5, 4, 16), dtype).swapaxes(1, 2)
    k = tensor(rng, (2, 5, 2, 16), dtype).swapaxes(1, 2)
    angles = rng.uniform(0, 6.3, (cos_batch, 5, rot // 2))
    angles = np.concatenate([angles, angles], -1)  # HF's cat(freqs, freqs) layout
    cos, sin = ms.Tensor(np.cos(angles).astype(np.float32)), ms.Tensor(np.sin(angles).astype(np.float32))
    if dtype == "bfloat16":
        cos, sin = cos.astype(ms.bfloat16), sin.astype(ms.bfloat16)
    fn = registry.get("apply_rotary_pos_emb", impl)
    out, want, grads, want_grads = run_both(lambda a, b, c, s: fn(a, b, c, s, interleaved),
                                            lambda a, b, c, s: reference.apply_rotary_pos_emb(a, b, c, s, interleaved),
                                            [q, k, cos, sin], 2, dtype)
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")


def test_reference_interleaved_rotary_matches_formula():
    """The interleaved layout pairs channels (2i, 2i+1) rotated by frequency i (GPT-J / GLM)."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 3, 8)).astype(np.float32)
    theta = rng.uniform(0, 6.3, (1, 3, 4))
    cos, sin = np.cos(np.concatenate([theta, theta], -1)), np.sin(np.concatenate([theta, theta], -1))
    got = reference.apply_rotary_pos_emb(ms.Tensor(q), ms.Tensor(q), ms.Tensor(cos.astype(np.float32)),
                                         ms.Tensor(sin.astype(np.float32)), interleaved=True)[0].asnumpy()
    even, odd = q[..., 0::2], q[..., 1::2]
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    want = np.stack([even * c - odd * s, odd * c + even * s], -1).reshape(q.shape)
    np.testing.assert_allclose(got, want, atol=1e-5)


ATTENTION_CASES = {
    # name: (batch, heads, kv_heads, q_len, past_len, head_dim or (qk dim, v dim), left padding per row or None)
    "gqa_padding": (2, 6, 2, 9, 0, 16, (0, 3)),
    "mha_no_mask": (1, 3, 3, 5, 0, 8, None),
    "mqa_odd_dim": (2, 4, 1, 7, 0, 13, (2, 0)),
    "kv_cache_decode": (2, 4, 2, 1, 11, 16, (0, 4)),
    "kv_cache_chunk": (1, 4, 2, 5, 6, 16, (0,)),
    "long_prompt": (1, 4, 2, 150, 0, 32, (0,)),
    "value_dim_differs": (2, 4, 2, 70, 0, (24, 72), (0, 5)),  # DeepSeek's latent attention: qk 192, v 128
    # the kernel's register-tiled prefill path: long rows with padding (fully masked rows), row counts that are
    # not multiples of its 6-row tiles, a last query block of 5 rows (the per-row path)
    "long_gqa_padding": (2, 6, 2, 530, 0, 64, (0, 37)),
    "mha_odd_length": (1, 5, 5, 37, 0, 24, (0,)),
}


def attention_inputs(case, dtype, rng, views=False):
    """views: q, k, v as the model's projections give them, [B, S, N, D] swapped to [B, N, S, D] (strided views;
    the CPU kernel then reads v in place and writes o in the projection layout)."""
    bsz, heads, kv_heads, q_len, past, dim, pad = ATTENTION_CASES[case]
    dim, v_dim = dim if isinstance(dim, tuple) else (dim, dim)
    total = past + q_len

    def make(shape):
        if not views:
            return tensor(rng, shape, dtype)
        return tensor(rng, (shape[0], shape[2], shape[1], shape[3]), dtype).swapaxes(1, 2)

    q = make((bsz, heads, q_len, dim))
    k = make((bsz, kv_heads, total, dim))
    v = make((bsz, kv_heads, total, v_dim))
    mask, valid = None, np.ones((bsz, q_len), bool)
    if pad is not None:
        attention_mask = np.ones((bsz, total), np.int64)
        for row, n in enumerate(pad):
            attention_mask[row, :n] = 0
        mask = create_causal_mask(ms.Tensor(attention_mask), bsz, q_len, past)
        valid = attention_mask[:, past:].astype(bool)
    return q, k, v, mask, dim ** -0.5, valid


@pytest.mark.parametrize("views", [False, True], ids=["contiguous", "views"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(ATTENTION_CASES))
@pytest.mark.parametrize("impl", kernel_cases("causal_attention"))
def test_causal_attention(impl, case, dtype, views):
    q, k, v, mask, scale, _ = attention_inputs(case, dtype, np.random.default_rng(0), views)
    fn = registry.get("causal_attention", impl)
    out, want, grads, want_grads = run_both(lambda a, b, c: fn(a, b, c, mask, scale),
                                            lambda a, b, c: reference.causal_attention(a, b, c, mask, scale),
                                            [q, k, v], 3, dtype)
    assert out.shape == q.shape[:3] + v.shape[3:]
    assert_close(out, want, dtype, "forward")
    assert_close(grads, want_grads, dtype, "grad")


def test_causal_attention_mask_batch_broadcast():
    """A [1, 1, S, T] mask (no padding) serves every batch row."""
    rng = np.random.default_rng(0)
    q, k, v = tensor(rng, (3, 4, 6, 8)), tensor(rng, (3, 2, 6, 8)), tensor(rng, (3, 2, 6, 8))
    mask = create_causal_mask(None, 3, 6, 0)
    assert mask.shape[0] == 1
    want = reference.causal_attention(q, k, v, mask, 0.3)
    for impl in KERNELS["causal_attention"]:
        assert_close(registry.get("causal_attention", impl)(q, k, v, mask, 0.3), want, "float32", impl)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 33), (3, 4099), (1, 1)])
@pytest.mark.parametrize("impl", kernel_cases("cross_entropy"))
def test_cross_entropy(impl, shape, dtype):
    """Per-row losses and the logits' gradient, with ignored rows (label -100) giving 0 and no gradient."""
    rng = np.random.default_rng(0)
    logits = tensor(rng, shape, dtype, 5.0)
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    labels[::3] = -100
    labels = ms.Tensor(labels)
    fn = registry.get("cross_entropy", impl)
    out = fn(logits, labels)
    assert out.dtype == ms.float32  # the loss is float32 whatever the logits' dtype
    grad = ms.grad(lambda x: (fn(x, labels) * ms.Tensor(np.arange(shape[0], dtype=np.float32))).sum())(logits)
    ref = reference.cross_entropy
    want = ref(f32(logits), labels)
    want_grad = ms.grad(lambda x: (ref(x, labels) * ms.Tensor(np.arange(shape[0], dtype=np.float32))).sum())(f32(logits))
    assert_close(out, want, "float32", "forward")
    assert_close(grad, want_grad, dtype, "grad")
    assert float(np.abs(as_np(out)[::3]).max()) == 0.0 and float(np.abs(as_np(grad)[::3]).max()) == 0.0


def test_cross_entropy_matches_torch_and_names_bad_labels():
    """Expected values from torch's cross_entropy; a label outside the vocabulary is an IndexError, as in torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((6, 50)) * 4).astype(np.float32)
    labels = np.array([3, -100, 49, 0, 7, -100])
    x = torch.tensor(logits, requires_grad=True)
    want = torch.nn.functional.cross_entropy(x, torch.tensor(labels), reduction="none")
    want.sum().backward()
    got = fused.cross_entropy(ms.Tensor(logits), ms.Tensor(labels))
    grad = ms.grad(lambda t: fused.cross_entropy(t, ms.Tensor(labels)).sum())(ms.Tensor(logits))
    np.testing.assert_allclose(got.asnumpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.asnumpy(), x.grad.numpy(), rtol=1e-5, atol=1e-6)
    if "cpu" in KERNELS["cross_entropy"]:
        with pytest.raises(IndexError, match="outside"):
            registry.get("cross_entropy", "cpu")(ms.Tensor(logits), ms.Tensor(np.array([3, 50, 0, 0, 0, 0]))).asnumpy()


def test_ops_under_jit_match_pynative():
    """The registry's choice is made while ms.jit traces; the kernels and their bprops run inside the graph."""
    from mindspore import nn

    rng = np.random.default_rng(0)
    x, w = tensor(rng, (2, 5, 16)), tensor(rng, (16,))
    q, k, v, mask, scale, _ = attention_inputs("gqa_padding", "float32", rng)
    cos = ms.Tensor(np.cos(rng.uniform(0, 6, (1, 9, 16))).astype(np.float32))
    sin = ms.Tensor(np.sin(rng.uniform(0, 6, (1, 9, 16))).astype(np.float32))

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            self.w = ms.Parameter(w)

        def construct(self, x, q, k, v, mask):
            h, s = fused.add_rms_norm(fused.rms_norm(x, self.w, 1e-6), x, self.w, 1e-6)
            qr, kr = fused.apply_rotary_pos_emb(q, k, cos, sin)
            return fused.silu_mul(h, s), fused.causal_attention(qr, kr, v, mask, scale)

    def loss(x, q, k, v, mask):
        h, a = block(x, q, k, v, mask)
        return (h * h).sum() + (a * a).sum()

    block = Block()
    positions = (0, 1, 2, 3)
    with registry.use_kernels("all"):
        got = ms.jit(block.construct)(x, q, k, v, mask)
        got_grads = ms.jit(ms.value_and_grad(loss, positions, block.trainable_params()))(x, q, k, v, mask)[1]
    with registry.use_kernels("reference"):
        want = block(x, q, k, v, mask)
        want_grads = ms.value_and_grad(loss, positions, block.trainable_params())(x, q, k, v, mask)[1]
    assert_close(got, want, "float32", "jit")
    assert_close(got_grads[0] + got_grads[1], want_grads[0] + want_grads[1], "float32", "jit grad")

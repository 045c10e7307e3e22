"""bf16 weights held as bf16 on CPU: the bf16_linear / bf16_embedding / bf16_widen ops against their references
(forward and backward), and a bf16 model against HF transformers.

Model tolerance: our bf16 model holds HF's bf16 weights exactly and computes in float32, so its expected logits are
HF's float32 forward on the same bf16 weights (max abs diff <= 1e-4, the float32 standard). HF's own bf16 forward
also rounds every activation to bf16 (8 mantissa bits): its logits move from that float32 forward by about
2^-8 of their size, so against HF bf16 we allow HF bf16's own distance from its float32 forward plus 1e-4.
"""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import ops as fused
from mindformers_hf.ops import bf16, registry
from tests.conftest import make_hf_checkpoint

LINEAR_KERNELS = [n for n in registry.implementations("bf16_linear") if n != registry.REFERENCE]
# relative to max(1, |y|): the portable kernel is exact float32 products; the AVX-512 BF16 one keeps ~16
# mantissa bits of the activations (x = hi + lo in bf16)
LINEAR_TOL = {"cpu_portable": 2e-6, "cpu": 2e-5 if bf16.uses_avx512_bf16() else 2e-6}


def bf16_weight(rng, shape):
    return ms.Tensor(rng.standard_normal(shape).astype(np.float32)).astype(ms.bfloat16)


def widened(w):
    """A bf16 tensor's values as float32 numpy, from its bits (independent of the code under test)."""
    bits = w.view(ms.uint16).asnumpy().astype(np.uint32) << 16
    return bits.view(np.float32)


@pytest.mark.parametrize("impl", LINEAR_KERNELS)
@pytest.mark.parametrize("rows,k,n", [(1, 67, 13), (5, 33, 7), (16, 96, 130), (20, 64, 9)])
def test_bf16_linear_matches_float32_matmul_of_the_widened_weight(impl, rows, k, n):
    rng = np.random.default_rng(rows * 1000 + k)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    w = bf16_weight(rng, (n, k))
    want = x @ widened(w).T
    got = registry.get("bf16_linear", impl)(ms.Tensor(x), w)
    assert got.dtype == ms.float32 and got.shape == (rows, n)
    ref = registry.get("bf16_linear", registry.REFERENCE)(ms.Tensor(x), w).asnumpy()
    assert np.abs(ref - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert np.abs(got.asnumpy() - want).max() <= LINEAR_TOL[impl] * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("impl", LINEAR_KERNELS)
@pytest.mark.parametrize("rows", [3, 20])  # the kernel (<= KERNEL_MAX_ROWS) and the widened-GEMM path
def test_bf16_linear_backward(impl, rows):
    rng = np.random.default_rng(rows)
    x = ms.Tensor(rng.standard_normal((rows, 24)).astype(np.float32))
    w = bf16_weight(rng, (10, 24))
    dy = rng.standard_normal((rows, 10)).astype(np.float32)

    def loss(fn):
        return lambda a, b: (fn(a, b) * ms.Tensor(dy)).sum()

    dx, dw = ms.grad(loss(registry.get("bf16_linear", impl)), grad_position=(0, 1))(x, w)
    assert dw.dtype == ms.bfloat16  # the gradient of a bf16 parameter is bf16, as torch's
    np.testing.assert_allclose(dx.asnumpy(), dy @ widened(w), rtol=1e-5, atol=1e-5)
    want_dw = dy.T @ x.asnumpy()
    np.testing.assert_allclose(widened(dw), want_dw, rtol=1e-2, atol=1e-2 * np.abs(want_dw).max())


@pytest.mark.parametrize("impl", registry.implementations("bf16_embedding"))
def test_bf16_embedding_and_widen(impl):
    rng = np.random.default_rng(3)
    w = bf16_weight(rng, (11, 9))
    ids = np.array([[0, 10, 3], [3, 3, 7]], np.int64)
    got = fused.embedding(w, ms.Tensor(ids), ms.float32) if impl == "cpu" else None
    rows = registry.get("bf16_embedding", impl)(w, ms.Tensor(ids.reshape(-1)))
    np.testing.assert_array_equal(rows.asnumpy(), widened(w)[ids.reshape(-1)])
    if got is not None:
        assert got.shape == (2, 3, 9) and got.dtype == ms.float32
        np.testing.assert_array_equal(got.asnumpy(), widened(w)[ids])
    dw = ms.grad(lambda t: registry.get("bf16_embedding", impl)(t, ms.Tensor(ids.reshape(-1))).sum())(w)
    np.testing.assert_array_equal(widened(dw), np.bincount(ids.reshape(-1), minlength=11)[:, None] * np.ones((1, 9)))
    for name in registry.implementations("bf16_widen"):
        np.testing.assert_array_equal(registry.get("bf16_widen", name)(w).asnumpy(), widened(w))


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny_bf16"), hf_dtype="bfloat16")


def test_bf16_model_holds_bf16_and_matches_hf(bf16_checkpoint):
    import torch
    import transformers

    from mindformers_hf import AutoModelForCausalLM

    ids = np.random.default_rng(0).integers(3, 128, (2, 11))
    model = AutoModelForCausalLM.from_pretrained(bf16_checkpoint, dtype="bfloat16")
    assert model.dtype == ms.bfloat16
    assert {p.dtype for _, p in model.parameters_and_names()} == {ms.bfloat16}
    with registry.use_kernels("all"):  # every kernel, the portable linear excepted (selected after "cpu")
        out = model(input_ids=ids, labels=ids)
    hf, hf_models = {}, {}
    for dtype in ("float32", "bfloat16"):
        torch_model = transformers.AutoModelForCausalLM.from_pretrained(bf16_checkpoint, dtype=getattr(torch, dtype))
        hf_models[dtype] = torch_model.eval()
        with torch.no_grad():
            hf[dtype] = torch_model(input_ids=torch.tensor(ids), labels=torch.tensor(ids))
    logits = np.asarray(out.logits)
    hf32, hf16 = hf["float32"].logits.numpy(), hf["bfloat16"].logits.float().numpy()
    assert np.abs(logits - hf32).max() <= 1e-4
    assert abs(float(out.loss) - float(hf["float32"].loss)) <= 1e-4
    assert np.abs(logits - hf16).max() <= np.abs(hf16 - hf32).max() + 1e-4
    # greedy decoding (the decode step runs the bf16_linear kernel on one row) equals HF's float32 on these weights
    prompt = ids[:1]
    ours = np.asarray(model.generate(prompt, max_new_tokens=6, do_sample=False))
    want = hf_models["float32"].generate(torch.tensor(prompt), max_new_tokens=6, do_sample=False).numpy()
    np.testing.assert_array_equal(ours, want)

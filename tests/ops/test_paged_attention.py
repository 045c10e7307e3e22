"""`ops.paged_attention`: every implementation against the reference (gather through the block tables, then
causal_attention), and the reference against causal_attention on contiguous keys/values built in numpy."""
import numpy as np
import pytest
import mindspore as ms

from mindformers_hf import ops as fused
from mindformers_hf.masking_utils import MASK_VALUE
from mindformers_hf.ops import reference, registry

from .test_fused_ops import DTYPES, assert_close, kernel_cases, tensor

CASES = {
    # name: (batch, heads, kv heads, new tokens, context lengths per row, head dim or (qk, v), block size, window)
    "decode_gqa": (3, 4, 2, 1, (5, 17, 1), 16, 4, None),
    "decode_mqa_odd_dim": (2, 6, 1, 1, (9, 30), 13, 8, None),
    "decode_window": (2, 4, 2, 1, (21, 12), 16, 4, 6),
    "chunk_mha": (1, 3, 3, 5, (11,), 8, 4, None),
    "value_dim_differs": (2, 4, 2, 1, (7, 3), (24, 40), 4, None),
}


def paged_inputs(case, dtype, rng):
    """Pools with rows' blocks scattered (shuffled block numbers, block 0 unused), block tables padded with block
    0 to a common width, the engine's mask (causal, optional window, padded positions hidden), and the rows'
    contiguous keys/values [B, KV, T, D] for the oracle."""
    bsz, heads, kv_heads, new, lengths, dim, size, window = CASES[case]
    dim, v_dim = dim if isinstance(dim, tuple) else (dim, dim)
    width = -(-max(lengths) // size) + 1                  # one spare block column, as a context bucket gives
    length = width * size - size // 2                     # T not a multiple of the block size
    num_blocks = 1 + sum(-(-n // size) for n in lengths) + 3
    order = rng.permutation(np.arange(1, num_blocks))
    tables, used = np.zeros((bsz, width), np.int32), 0
    for row, n in enumerate(lengths):
        count = -(-n // size)
        tables[row, :count] = order[used:used + count]
        used += count
    key_cache = tensor(rng, (num_blocks, size, kv_heads, dim), dtype)
    value_cache = tensor(rng, (num_blocks, size, kv_heads, v_dim), dtype)
    q = tensor(rng, (bsz, heads, new, dim), dtype)
    ends = np.array([[n - new + s for s in range(new)] for n in lengths])    # [B, S] last key each query sees
    key = np.arange(length)[None, None, :]
    allowed = key <= ends[:, :, None]
    if window is not None:
        allowed &= key > ends[:, :, None] - window
    mask = ms.Tensor(np.where(allowed, np.float32(0), np.float32(MASK_VALUE))[:, None])
    slots = (tables[:, :, None] * size + np.arange(size)).reshape(bsz, -1)[:, :length]
    k_rows = key_cache.astype(ms.float32).asnumpy().reshape(-1, kv_heads, dim)[slots].transpose(0, 2, 1, 3)
    v_rows = value_cache.astype(ms.float32).asnumpy().reshape(-1, kv_heads, v_dim)[slots].transpose(0, 2, 1, 3)
    return (q, key_cache, value_cache, ms.Tensor(tables), mask, dim ** -0.5), (k_rows, v_rows)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_is_causal_attention_on_the_gathered_rows(case):
    args, (k_rows, v_rows) = paged_inputs(case, "float32", np.random.default_rng(0))
    q, _, _, _, mask, scale = args
    want = reference.causal_attention(q, ms.Tensor(k_rows), ms.Tensor(v_rows), mask, scale)
    assert_close(reference.paged_attention(*args), want, "float32", case)


def flat_pools(args):
    """The same inputs with [num_blocks * block_size, KV, D] pools (the engine's layout) and the block size."""
    q, key_cache, value_cache, tables, mask, scale = args
    flat = [pool.reshape(-1, *pool.shape[2:]) for pool in (key_cache, value_cache)]
    return (q, *flat, tables, mask, scale, key_cache.shape[1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_reads_flat_pools_as_blocks(case):
    args, _ = paged_inputs(case, "float32", np.random.default_rng(3))
    np.testing.assert_array_equal(reference.paged_attention(*flat_pools(args)).asnumpy(),
                                  reference.paged_attention(*args).asnumpy())
    with pytest.raises(ValueError, match="block_size"):
        reference.paged_attention(*flat_pools(args)[:-1])


@pytest.mark.parametrize("layout", ["blocks", "flat"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl", kernel_cases("paged_attention"))
def test_paged_attention(impl, case, dtype, layout):
    args, _ = paged_inputs(case, dtype, np.random.default_rng(1))
    out = registry.get("paged_attention", impl)(*(flat_pools(args) if layout == "flat" else args))
    assert out.dtype == args[0].dtype and out.shape == args[0].shape[:3] + args[2].shape[3:]
    # the float32 reference on the same (bf16-rounded) values: CPU MindSpore has no bf16 matmul
    f32 = [a.astype(ms.float32) if isinstance(a, ms.Tensor) and a.dtype == ms.bfloat16 else a for a in args]
    assert_close(out, reference.paged_attention(*f32), dtype, case)


def test_kernel_refuses_a_block_number_outside_the_pool():
    if not registry.implementations("paged_attention")[1:]:
        pytest.skip("no paged_attention kernel here")
    args, _ = paged_inputs("decode_gqa", "float32", np.random.default_rng(2))
    tables = args[3].asnumpy().copy()
    tables[0, 0] = args[1].shape[0]
    with pytest.raises(RuntimeError):
        registry.get("paged_attention", "cpu")(*args[:3], ms.Tensor(tables), *args[4:]).asnumpy()


def test_public_entry_follows_the_mode():
    args, _ = paged_inputs("decode_gqa", "float32", np.random.default_rng(3))
    want = reference.paged_attention(*args)
    for mode in ("reference", "all"):
        with fused.use_kernels(mode):
            assert_close(fused.paged_attention(*args), want, "float32", mode)

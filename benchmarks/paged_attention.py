"""One decode attention call over a paged KV cache: the gather path the engine used before (gather each row's
context, then the causal_attention kernel), ops.paged_attention's reference (gather) and its CPU kernel.

    python benchmarks/paged_attention.py

SmolLM2-135M's attention shapes (9 query heads, 3 KV heads of 64), block size 16, rows' contexts between T/2
and T; PyNative, best of 5 rounds of 20 calls, the three interleaved (other processes share the cores).
"""
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import mindspore as ms
from mindspore import ops

from mindformers_hf import ops as fused
from mindformers_hf import runtime  # noqa: F401,E402  (synchronous CPU launch, as the models run)
from mindformers_hf.masking_utils import MASK_VALUE
from mindformers_hf.ops import reference, registry

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 16
SCALE = HEAD_DIM ** -0.5
SHAPES = [(1, 64), (1, 512), (4, 256), (16, 256), (16, 1024), (32, 2048)]


def case(batch, length, rng):
    width = -(-length // BLOCK)
    num_blocks = batch * width + 1
    caches = [ms.Tensor(rng.standard_normal((num_blocks, BLOCK, KV_HEADS, HEAD_DIM)).astype(np.float32))
              for _ in range(2)]
    tables = rng.permutation(np.arange(1, num_blocks))[:batch * width].reshape(batch, width).astype(np.int32)
    q = ms.Tensor(rng.standard_normal((batch, HEADS, 1, HEAD_DIM)).astype(np.float32))
    lengths = rng.integers(length // 2, length + 1, size=batch)
    allowed = np.arange(length)[None, None, None, :] < lengths[:, None, None, None]
    mask = ms.Tensor(np.where(allowed, 0, MASK_VALUE).astype(np.float32))
    slots = ms.Tensor((tables[:, :, None] * BLOCK + np.arange(BLOCK)).reshape(batch, -1)[:, :length].reshape(-1))
    pools = [c.reshape(-1, KV_HEADS, HEAD_DIM) for c in caches]

    def gather_path():
        k, v = (ops.gather(p, slots, 0).reshape(batch, length, KV_HEADS, HEAD_DIM).swapaxes(1, 2) for p in pools)
        return fused.causal_attention(q, k, v, mask, SCALE)

    kernel = registry.get("paged_attention", "cpu")
    return {"gather + causal_attention kernel": gather_path,
            "reference (gather)": lambda: reference.paged_attention(q, *caches, ms.Tensor(tables), mask, SCALE),
            "paged kernel": lambda: kernel(q, *caches, ms.Tensor(tables), mask, SCALE)}


def main():
    rng = np.random.default_rng(0)
    for batch, length in SHAPES:
        fns, best = case(batch, length, rng), {}
        for fn in fns.values():
            fn().asnumpy()
        for _ in range(5):
            for name, fn in fns.items():
                start = time.perf_counter()
                for _ in range(20):
                    out = fn()
                out.asnumpy()
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / 20)
        print(f"{batch:3d} x {length:5d}  " + "  ".join(f"{k}: {v * 1e3:8.3f} ms" for k, v in best.items()),
              flush=True)


if __name__ == "__main__":
    main()

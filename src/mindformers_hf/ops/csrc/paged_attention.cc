// Paged attention (the serving engine's decode): each row's keys and values are read from the layer's block
// pool through the row's block table, never gathered into a contiguous [B, KV, T, D] copy.
//
// q [B, H, S, D]; key_cache [num_blocks, block_size, KV, D] or flat [num_blocks * block_size, KV, D] (the
// engine's pools: reshaping a pool Parameter inside a MindSpore graph copies all of it, every step);
// value_cache the same with Dv; block_tables [B, M] int32 (context position j of row b lives in block
// block_tables[b, j / block_size], offset j % block_size); mask [B or 1, 1, S, T] float32 added to the scores,
// T <= M * block_size; scale [1] float32; block_size [1] int32. Output o [B, H, S, Dv]. Inference only.
//
// Keys whose mask value is below kSkip add exp(-1e4) == 0 to a float32 softmax, so each query row visits only
// the keys between its first and last allowed one (which skips the padding of short rows in a batch bucket and
// the keys a sliding window hides); a row with no allowed key visits every key, as the reference sees it.
#include "common.h"

namespace {

constexpr float kSkip = -1e4f;
constexpr float kMinusBig = -1e30f;  // finite: the kernels are built with -ffast-math

}  // namespace

// inputs: q, key_cache, value_cache, block_tables, mask, scale, block_size; output: o
MFH_KERNEL paged_attention_fwd(MFH_ARGS) {
  if (nparam != 8) return 1;
  for (int i : {0, 1, 2, 4, 5, 7}) {
    if (!mfh::all_float32(1, dtypes + i)) return 1;
  }
  if (std::strcmp(dtypes[3], "int32") != 0 || std::strcmp(dtypes[6], "int32") != 0) return 1;
  const int pool_dims = ndims[1];
  if (ndims[0] != 4 || (pool_dims != 3 && pool_dims != 4) || ndims[2] != pool_dims || ndims[3] != 2 ||
      ndims[4] != 4 || ndims[6] != 1 || shapes[6][0] != 1) {
    return 1;
  }
  const int64_t block_size = static_cast<int32_t *>(params[6])[0];
  if (block_size < 1) return 1;
  // a 4-d pool is [num_blocks, block_size, KV, D]; a flat one [num_blocks * block_size, KV, D]
  const int64_t *ks = shapes[1], *vs = shapes[2];
  const int64_t slots = pool_dims == 4 ? ks[0] * ks[1] : ks[0];
  if (pool_dims == 4 && (ks[1] != block_size || vs[1] != block_size || vs[0] != ks[0])) return 1;
  if (pool_dims == 3 && (slots % block_size != 0 || vs[0] != slots)) return 1;
  const int64_t num_blocks = slots / block_size;
  const int64_t B = shapes[0][0], H = shapes[0][1], S = shapes[0][2], D = shapes[0][3];
  const int64_t KV = ks[pool_dims - 2], Dv = vs[pool_dims - 1], M = shapes[3][1], MB = shapes[4][0];
  const int64_t T = shapes[4][3];
  if (ks[pool_dims - 1] != D || vs[pool_dims - 2] != KV) return 1;
  if (KV == 0 || H % KV != 0 || shapes[3][0] != B || (MB != 1 && MB != B)) return 1;
  if (shapes[4][1] != 1 || shapes[4][2] != S || T > M * block_size) return 1;
  const float *q = static_cast<float *>(params[0]), *kc = static_cast<float *>(params[1]);
  const float *vc = static_cast<float *>(params[2]), *mask = static_cast<float *>(params[4]);
  const int32_t *tables = static_cast<int32_t *>(params[3]);
  const float scale = static_cast<float *>(params[5])[0];
  float *o = static_cast<float *>(params[7]);
  const int64_t G = H / KV;
  for (int64_t i = 0; i < B * M; ++i) {
    if (tables[i] < 0 || tables[i] >= num_blocks) return 1;
  }

  // One task = one (batch row, kv head): its G query heads read the same keys, so each key row is fetched
  // once per task while it is in cache.
  const int64_t tasks = B * KV;
  const int nt = mfh::threads_for(tasks, 4.0 * G * S * T * D);
  std::vector<std::vector<float>> scratch(nt, std::vector<float>(T));
  mfh::parallel_for(tasks, nt, [&](int64_t task, int thread) {
    const int64_t b = task / KV, kvh = task % KV;
    const int32_t *table = tables + b * M;
    float *scores = scratch[thread].data();
    auto key_row = [&](int64_t j) {
      return kc + ((table[j / block_size] * block_size + j % block_size) * KV + kvh) * D;
    };
    auto value_row = [&](int64_t j) {
      return vc + ((table[j / block_size] * block_size + j % block_size) * KV + kvh) * Dv;
    };
    for (int64_t i = 0; i < S; ++i) {
      const float *mrow = mask + ((MB == 1 ? 0 : b) * S + i) * T;
      int64_t lo = 0, hi = T - 1;
      while (lo < T && mrow[lo] < kSkip) ++lo;
      while (hi >= lo && mrow[hi] < kSkip) --hi;
      if (lo > hi) {
        lo = 0;
        hi = T - 1;
      }
      for (int64_t g = 0; g < G; ++g) {
        const int64_t row = (b * H + kvh * G + g) * S + i;
        const float *qr = q + row * D;
        float *out = o + row * Dv;
        float m = kMinusBig;
        for (int64_t j = lo; j <= hi; ++j) {
          scores[j] = mfh::dot(qr, key_row(j), D) * scale + mrow[j];
          m = std::max(m, scores[j]);
        }
        float sum = 0.f;
        for (int64_t j = lo; j <= hi; ++j) {
          scores[j] = std::exp(scores[j] - m);
          sum += scores[j];
        }
        std::fill(out, out + Dv, 0.f);
        for (int64_t j = lo; j <= hi; ++j) mfh::axpy(scores[j], value_row(j), out, Dv);
        const float inv = 1.f / sum;
#pragma omp simd
        for (int64_t d = 0; d < Dv; ++d) out[d] *= inv;
      }
    }
  });
  return 0;
}

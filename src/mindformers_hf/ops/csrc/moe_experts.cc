// Routed SwiGLU experts in one kernel: out[t] = sum over slots s of w[t, s] * expert_{e[t, s]}(x[t]), where
// expert_e(x) = down[e] @ (silu(gate[e] @ x) * (up[e] @ x)), gate[e] / up[e] the first / second I rows of gate_up[e].
// Layouts are transformers 5's stacked experts: gate_up [E, 2I, H], down [E, H, I] (row-major, weights as
// nn.Linear stores them: output rows, input columns).
//
//   1. count the (token, slot) pairs per expert and sort them by expert (a counting sort on the host CPU: the
//      routing indices are the kernel's input, so nothing leaves the device side under ms.jit);
//   2. cut each expert's pairs into blocks of at most kBlock tokens: one task per (expert, block), tasks shared by
//      the threads (mfh::parallel_for);
//   3. per task: gather the block's tokens, gate_up GEMM -> silu(gate) * up -> down GEMM, and write each pair's
//      result times its routing weight into its own row of a [T * k, H] buffer (no two tasks write one row);
//   4. out[t] = the sum of token t's k rows, in slot order.
// Inputs longer than the pair buffer's budget (kPairFloats) run as consecutive chunks of tokens.
//
// GEMM bodies (the weights stay as they are; nothing is repacked):
//   - blocks of >= kTileMin tokens: the block is gathered transposed, X^T [H, L] (L = tokens rounded up to 16,
//     zero padded; stored as panels of 32 tokens, each contiguous), and a register tile of 12 weight rows x 16 or
//     32 tokens accumulates in up to 24 AVX-512 registers: per k, each weight element is broadcast once and FMA'd
//     into 16-token vectors. gate and up rows are tiled together (6 + 6) so SwiGLU is applied as the tile is
//     stored; the down GEMM reads the activations the same way (A^T [I, L]);
//   - fewer tokens (decode): dot products of 4 weight rows with up to 4 tokens' rows at a time (memory-bound:
//     each weight row is read once per 4 tokens).
// Without AVX-512 the same loops run on 16-float arrays the compiler vectorises for the target.
// Weights may be float32 or bfloat16 (widened by a 16-bit shift as they are read); activations are float32.
// Forward only: the gradient is a composite in ops/moe.py.
#include "common.h"

#include <memory>

#if defined(__AVX512F__)
#include <immintrin.h>
#define MFH_MOE_AVX512 1
#else
#define MFH_MOE_AVX512 0
#endif

namespace {

constexpr int64_t kBlock = 64;   // tokens per task at most
constexpr int64_t kTileMin = 8;  // blocks with fewer tokens take the dot-product body
constexpr int kRows = 12;        // weight rows per register tile (x 32 tokens: 24 of the 32 AVX-512 registers)
constexpr int kHalf = kRows / 2;  // gate_up tiles: kHalf gate rows and the same kHalf up rows
// the per-pair buffer holds at most this many floats (128 MB): longer inputs run in chunks of tokens
constexpr int64_t kPairFloats = int64_t(1) << 25;

inline float widen(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float load_scalar(const float *p) { return *p; }
inline float load_scalar(const uint16_t *p) { return widen(*p); }

inline float silu_mul(float g, float u) {
  // min: exp(-g) stays finite for very negative g (-ffast-math assumes no infinities)
  return g / (1.f + std::exp(std::min(-g, 80.f))) * u;
}

#if MFH_MOE_AVX512
inline __m512 bcast(const float *p) { return _mm512_set1_ps(*p); }
inline __m512 bcast(const uint16_t *p) { return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(*p) << 16)); }
inline __m512 load16(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t *p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}

// c[r][v * 16 + lane] = sum_k rows[r][k] * bt[k * ldb + v * 16 + lane], r < kRows, v < NV
template <class W, int NV>
void tile(const W *const *rows, const float *bt, int64_t ldb, int64_t K, float *c) {
  __m512 acc[kRows][NV];
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    __m512 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(bt + k * ldb + 16 * v);
    for (int r = 0; r < kRows; ++r) {
      const __m512 a = bcast(rows[r] + k);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + r * 32 + 16 * v, acc[r][v]);
}

// y[r * 4 + j] = rows[r] . xs[j] over K, for 4 rows and NT <= 4 token rows
template <class W, int NT>
void dots(const W *const *rows, const float *const *xs, int64_t K, float *y) {
  __m512 acc[4][NT];
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < NT; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
    __m512 xv[NT];
    for (int j = 0; j < NT; ++j) xv[j] = _mm512_maskz_loadu_ps(m, xs[j] + k);
    for (int r = 0; r < 4; ++r) {
      const __m512 wv = load16(rows[r] + k, m);
      for (int j = 0; j < NT; ++j) acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < NT; ++j) y[r * 4 + j] = _mm512_reduce_add_ps(acc[r][j]);
}
#else
template <class W, int NV>
void tile(const W *const *rows, const float *bt, int64_t ldb, int64_t K, float *c) {
  float acc[kRows][32] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float *b = bt + k * ldb;
    for (int r = 0; r < kRows; ++r) {
      const float a = load_scalar(rows[r] + k);
#pragma omp simd
      for (int l = 0; l < NV * 16; ++l) acc[r][l] += a * b[l];
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int l = 0; l < NV * 16; ++l) c[r * 32 + l] = acc[r][l];
}

template <class W, int NT>
void dots(const W *const *rows, const float *const *xs, int64_t K, float *y) {
  for (int r = 0; r < 4; ++r) {
    for (int j = 0; j < NT; ++j) {
      const W *w = rows[r];
      const float *x = xs[j];
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < K; ++k) s += load_scalar(w + k) * x[k];
      y[r * 4 + j] = s;
    }
  }
}
#endif

struct Task {
  int64_t expert, start, count;  // pairs [start, start + count) of the expert-sorted order
};

template <class W>
struct Moe {
  const float *x;
  const float *weights;
  const W *gate_up, *down;
  int64_t H, I;
  const int32_t *order;  // expert-sorted pairs p = t * k + slot
  int64_t top_k;
  float *pairs;          // [T * k, H]: each pair's weighted expert output

  // blocks of >= kTileMin tokens: transposed gather into panels, register tiles
  void tiled(const Task &task) const {
    const int64_t n = task.count, L = (n + 15) / 16 * 16;
    const W *gu = gate_up + task.expert * 2 * I * H, *dn = down + task.expert * H * I;
    // X^T and A^T in panels of 32 tokens (the last one 16 if L is an odd multiple of 16): panel q holds
    // [K][width] contiguously at q * K * 32, so a tile streams its operand sequentially
    std::vector<float> xt(H * L, 0.f), at(I * L), c(kRows * 32);
    for (int64_t m = 0; m < n; ++m) {
      const float *row = x + (order[task.start + m] / top_k) * H;
      const int64_t q = m / 32, width = std::min<int64_t>(32, L - q * 32);
      float *dst = xt.data() + q * H * 32 + m % 32;
      for (int64_t h = 0; h < H; ++h) dst[h * width] = row[h];
    }
    const W *rows[kRows];
    // gate_up: 4 gate rows and the same 4 up rows per tile, SwiGLU as the tile is stored
    for (int64_t i0 = 0; i0 < I; i0 += kHalf) {
      const int64_t valid = std::min<int64_t>(kHalf, I - i0);
      for (int r = 0; r < kHalf; ++r) {
        const int64_t i = i0 + (r < valid ? r : 0);
        rows[r] = gu + i * H, rows[r + kHalf] = gu + (I + i) * H;
      }
      for (int64_t m0 = 0; m0 < L; m0 += 32) {
        const int64_t width = std::min<int64_t>(32, L - m0);
        if (width == 32) tile<W, 2>(rows, xt.data() + m0 * H, 32, H, c.data());
        else tile<W, 1>(rows, xt.data() + m0 * H, 16, H, c.data());
        for (int64_t r = 0; r < valid; ++r) {
          float *dst = at.data() + m0 * I + (i0 + r) * width;
          const float *g = c.data() + r * 32, *u = c.data() + (r + kHalf) * 32;
#pragma omp simd
          for (int l = 0; l < width; ++l) dst[l] = silu_mul(g[l], u[l]);
        }
      }
    }
    // down: 8 rows of the output per tile, written to each pair's row times its routing weight
    for (int64_t h0 = 0; h0 < H; h0 += kRows) {
      const int64_t valid = std::min<int64_t>(kRows, H - h0);
      for (int r = 0; r < kRows; ++r) rows[r] = dn + (h0 + (r < valid ? r : 0)) * I;
      for (int64_t m0 = 0; m0 < L; m0 += 32) {
        const int64_t width = std::min<int64_t>(32, L - m0);
        if (width == 32) tile<W, 2>(rows, at.data() + m0 * I, 32, I, c.data());
        else tile<W, 1>(rows, at.data() + m0 * I, 16, I, c.data());
        const int64_t tokens = std::min<int64_t>(width, n - m0);
        for (int64_t l = 0; l < tokens; ++l) {
          const int64_t p = order[task.start + m0 + l];
          const float w = weights[p];
          float *dst = pairs + p * H + h0;
          for (int64_t r = 0; r < valid; ++r) dst[r] = w * c[r * 32 + l];
        }
      }
    }
  }

  // few tokens: dot products of 4 weight rows with up to 4 token rows at a time, each weight row read once per
  // 4 tokens
  void dotted(const Task &task) const {
    const int64_t n = task.count;
    const W *gu = gate_up + task.expert * 2 * I * H, *dn = down + task.expert * H * I;
    std::vector<float> hbuf(2 * I * n), a(I * n);
    float y[16];
    const W *rows[4];
    const float *xs[4];
    auto run_dots = [&](int64_t K, int64_t nt) {
      switch (nt) {
        case 1: dots<W, 1>(rows, xs, K, y); break;
        case 2: dots<W, 2>(rows, xs, K, y); break;
        case 3: dots<W, 3>(rows, xs, K, y); break;
        default: dots<W, 4>(rows, xs, K, y); break;
      }
    };
    for (int64_t m0 = 0; m0 < n; m0 += 4) {
      const int64_t nt = std::min<int64_t>(4, n - m0);
      for (int64_t j = 0; j < nt; ++j) xs[j] = x + (order[task.start + m0 + j] / top_k) * H;
      for (int64_t j0 = 0; j0 < 2 * I; j0 += 4) {
        const int64_t valid = std::min<int64_t>(4, 2 * I - j0);
        for (int r = 0; r < 4; ++r) rows[r] = gu + (j0 + (r < valid ? r : 0)) * H;
        run_dots(H, nt);
        for (int64_t r = 0; r < valid; ++r)
          for (int64_t j = 0; j < nt; ++j) hbuf[(m0 + j) * 2 * I + j0 + r] = y[r * 4 + j];
      }
    }
    for (int64_t m = 0; m < n; ++m) {
      const float *g = hbuf.data() + m * 2 * I, *u = g + I;
      float *dst = a.data() + m * I;
#pragma omp simd
      for (int64_t i = 0; i < I; ++i) dst[i] = silu_mul(g[i], u[i]);
    }
    for (int64_t m0 = 0; m0 < n; m0 += 4) {
      const int64_t nt = std::min<int64_t>(4, n - m0);
      for (int64_t j = 0; j < nt; ++j) xs[j] = a.data() + (m0 + j) * I;
      for (int64_t h0 = 0; h0 < H; h0 += 4) {
        const int64_t valid = std::min<int64_t>(4, H - h0);
        for (int r = 0; r < 4; ++r) rows[r] = dn + (h0 + (r < valid ? r : 0)) * I;
        run_dots(I, nt);
        for (int64_t j = 0; j < nt; ++j) {
          const int64_t p = order[task.start + m0 + j];
          for (int64_t r = 0; r < valid; ++r) pairs[p * H + h0 + r] = weights[p] * y[r * 4 + j];
        }
      }
    }
  }
};

// one chunk of tokens: x [T, H], expert ids [T * K] (checked), weights [T * K] -> out [T, H];
// pairs: a [T * K, H] buffer
template <class W>
void run_chunk(const float *x, const int32_t *expert_of, const float *weights, const W *gate_up, const W *down,
               float *out, float *pairs, int64_t T, int64_t K, int64_t E, int64_t H, int64_t I) {
  // counting sort of the pairs by expert (stable: within an expert, pairs in token order)
  std::vector<int64_t> counts(E, 0), next(E, 0);
  std::vector<int32_t> order(T * K);
  for (int64_t p = 0; p < T * K; ++p) ++counts[expert_of[p]];
  for (int64_t e = 1; e < E; ++e) next[e] = next[e - 1] + counts[e - 1];
  for (int64_t p = 0; p < T * K; ++p) order[next[expert_of[p]]++] = static_cast<int32_t>(p);
  std::vector<Task> tasks;
  int64_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = counts[e];
    if (n == 0) continue;
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    // even blocks (a multiple of 16 tokens each where they are tiled): no small leftover block
    int64_t size = (n + blocks - 1) / blocks;
    if (size >= kTileMin) size = std::min<int64_t>(kBlock, (size + 15) / 16 * 16);
    for (int64_t s = 0; s < n; s += size) tasks.push_back({e, start + s, std::min(size, n - s)});
    start += n;
  }
  Moe<W> moe{x, weights, gate_up, down, H, I, order.data(), K, pairs};
  const int64_t ntasks = static_cast<int64_t>(tasks.size());
  const double cost = 6.0 * H * I * std::max<int64_t>(1, (T * K) / std::max<int64_t>(1, ntasks));
  mfh::parallel_for(ntasks, mfh::threads_for(ntasks, cost), [&](int64_t i, int) {
    if (tasks[i].count >= kTileMin) moe.tiled(tasks[i]);
    else moe.dotted(tasks[i]);
  });
  // out[t] = sum over slots, in slot order
  for (int64_t t = 0; t < T; ++t) {
    float *dst = out + t * H;
    std::memcpy(dst, pairs + t * K * H, H * sizeof(float));
    for (int64_t s = 1; s < K; ++s) mfh::axpy(1.f, pairs + (t * K + s) * H, dst, H);
  }
}

template <class W>
void run(void **params, const int32_t *expert_of, int64_t T, int64_t K, int64_t E, int64_t H, int64_t I) {
  const float *x = static_cast<const float *>(params[0]), *weights = static_cast<const float *>(params[2]);
  const W *gate_up = static_cast<const W *>(params[3]), *down = static_cast<const W *>(params[4]);
  float *out = static_cast<float *>(params[5]);
  const int64_t chunk = std::max<int64_t>(1, std::min(T, kPairFloats / (K * H)));
  std::unique_ptr<float[]> pairs(new float[chunk * K * H]);
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t n = std::min(chunk, T - t0);
    run_chunk<W>(x + t0 * H, expert_of + t0 * K, weights + t0 * K, gate_up, down, out + t0 * H, pairs.get(), n, K,
                 E, H, I);
  }
}

}  // namespace

// inputs: x [T, H] float32, indices [T, k] int32 or int64, weights [T, k] float32, gate_up [E, 2I, H] and
// down [E, H, I] (both float32 or both bfloat16); output: [T, H] float32. Returns 1 on other shapes or dtypes
// and on an expert index outside [0, E).
MFH_KERNEL moe_experts_fwd(MFH_ARGS) {
  if (nparam != 6 || ndims[0] != 2 || ndims[1] != 2 || ndims[2] != 2 || ndims[3] != 3 || ndims[4] != 3 ||
      ndims[5] != 2)
    return 1;
  if (!mfh::all_float32(1, dtypes) || !mfh::all_float32(1, dtypes + 2) || !mfh::all_float32(1, dtypes + 5)) return 1;
  const bool i64 = std::strcmp(dtypes[1], "int64") == 0;
  if (!i64 && std::strcmp(dtypes[1], "int32") != 0) return 1;
  const bool bf16 = std::strcmp(dtypes[3], "bfloat16") == 0;
  if (std::strcmp(dtypes[3], dtypes[4]) != 0 || !(bf16 || mfh::all_float32(1, dtypes + 3))) return 1;
  const int64_t T = shapes[0][0], H = shapes[0][1], K = shapes[1][1], E = shapes[3][0], I = shapes[4][2];
  if (shapes[1][0] != T || shapes[2][0] != T || shapes[2][1] != K || shapes[3][1] != 2 * I || shapes[3][2] != H ||
      shapes[4][0] != E || shapes[4][1] != H || shapes[5][0] != T || shapes[5][1] != H)
    return 1;
  if (T == 0) return 0;
  std::vector<int32_t> expert_of(T * K);
  for (int64_t p = 0; p < T * K; ++p) {
    const int64_t e = i64 ? static_cast<int64_t *>(params[1])[p] : static_cast<int32_t *>(params[1])[p];
    if (e < 0 || e >= E) return 1;
    expert_of[p] = static_cast<int32_t>(e);
  }
  if (bf16) run<uint16_t>(params, expert_of.data(), T, K, E, H, I);
  else run<float>(params, expert_of.data(), T, K, E, H, I);
  return 0;
}

// 1 when the kernel was built with AVX-512 (read through ctypes by tests and benchmarks)
extern "C" int moe_experts_uses_avx512() { return MFH_MOE_AVX512; }

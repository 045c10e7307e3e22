// Blocked (online-softmax) attention with grouped KV heads and an additive mask, forward and backward.
//
// q [B, H, S, D]; k [B, KV, T, D]; v [B, KV, T, Dv] with H = KV * G; mask [B or 1, 1, S, T] float32 added to the scores,
// or a 1-element tensor meaning "no mask"; scale [1]. Forward outputs o [B, H, S, Dv] and per row the
// softmax statistics stats [B, H, S, 2] = (max score m, sum of exp(score - m)) that the backward pass uses
// to rebuild probabilities one key block at a time, so neither pass holds more than a block of scores
// ([kBlockQ x kBlockK] per thread). (m and the sum are kept apart rather than as one log-sum-exp: for a
// fully masked row m is about -1e9, where float32 cannot hold m + log(sum).)
//
// The *_bshd kernels take v as [B, T, KV, Dv] and keep o (and, backward, do and dv) as [B, S, H, Dv]: the
// layouts of the model's projections, so neither the swap of v to heads-first nor the swap of o back costs a
// copy (MindSpore copies a swapped view element by element, slowly).
//
// Keys whose mask value is below kSkip contribute exp(-1e4) == 0 to a float32 softmax, so each query row
// only visits keys between its first and last allowed key (the causal and left-padding cut). A row with no
// allowed key at all visits every key, which reproduces the reference's (uniform) result for it.
#include <algorithm>
#include <memory>
#include <type_traits>

#include "common.h"

namespace {

constexpr int64_t kBlockQ = 16;
constexpr int64_t kBlockK = 64;
constexpr float kSkip = -1e4f;
constexpr float kMinusBig = -1e30f;  // finite: the kernels are built with -ffast-math

struct Shapes {
  int64_t batch, heads, kv_heads, groups, q_len, kv_len, dim, v_dim, mask_batch;
  int64_t v_row;  // distance between consecutive keys' value rows: Dv, or KV * Dv for a [B, T, KV, Dv] v
  bool has_mask, bshd;
};

bool read_shapes(int *ndims, int64_t **shapes, Shapes *s, bool bshd) {
  if (ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 4) return false;
  s->batch = shapes[0][0];
  s->heads = shapes[0][1];
  s->q_len = shapes[0][2];
  s->dim = shapes[0][3];
  s->kv_heads = shapes[1][1];
  s->kv_len = shapes[1][2];
  s->v_dim = shapes[2][3];
  if (s->kv_heads == 0 || s->heads % s->kv_heads != 0 || shapes[1][3] != s->dim) return false;
  const int64_t v_heads = shapes[2][bshd ? 2 : 1], v_len = shapes[2][bshd ? 1 : 2];
  if (shapes[2][0] != s->batch || v_heads != s->kv_heads || v_len != s->kv_len) return false;
  s->bshd = bshd;
  s->v_row = bshd ? s->kv_heads * s->v_dim : s->v_dim;
  s->groups = s->heads / s->kv_heads;
  s->has_mask = mfh::numel(ndims[3], shapes[3]) > 1;
  s->mask_batch = 1;
  if (s->has_mask) {
    if (ndims[3] != 4 || shapes[3][1] != 1 || shapes[3][2] != s->q_len || shapes[3][3] != s->kv_len) return false;
    s->mask_batch = shapes[3][0];
    if (s->mask_batch != 1 && s->mask_batch != s->batch) return false;
  }
  return true;
}

// [lo, hi) key range per query row of one batch entry.
void key_ranges(const float *mask, const Shapes &s, int64_t b, int64_t *lo, int64_t *hi) {
  for (int64_t i = 0; i < s.q_len; ++i) {
    lo[i] = 0;
    hi[i] = s.kv_len;
    if (!s.has_mask) continue;
    const float *row = mask + ((s.mask_batch == 1 ? 0 : b) * s.q_len + i) * s.kv_len;
    int64_t first = 0, last = s.kv_len - 1;
    while (first < s.kv_len && row[first] < kSkip) ++first;
    while (last >= first && row[last] < kSkip) --last;
    if (first <= last) {
      lo[i] = first;
      hi[i] = last + 1;
    }
  }
}

// Offset of output row (batch b, head h, position i) in o / do: [B, H, S, Dv], or [B, S, H, Dv] when bshd.
inline int64_t out_row(bool bshd, const Shapes &s, int64_t b, int64_t h, int64_t i) {
  return (bshd ? (b * s.q_len + i) * s.heads + h : (b * s.heads + h) * s.q_len + i) * s.v_dim;
}

// Value row 0 of (batch b, kv head h); key j's row is v_row further per key.
inline int64_t v_offset(const Shapes &s, int64_t b, int64_t h) {
  return s.bshd ? (b * s.kv_len * s.kv_heads + h) * s.v_dim : (b * s.kv_heads + h) * s.kv_len * s.v_dim;
}

inline float mask_at(const float *mask, const Shapes &s, int64_t b, int64_t i, int64_t j) {
  return s.has_mask ? mask[((s.mask_batch == 1 ? 0 : b) * s.q_len + i) * s.kv_len + j] : 0.f;
}

// GCC/Clang vector types: 8 floats, compiled to AVX on x86 and to pairs of NEON registers on ARM.
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));  // for unaligned loads and stores

// acc[0:D] += sum_j p[j] * v[j, 0:D] (rows `stride` apart), with acc held in registers 64 channels at a time.
inline void accumulate_pv(const float *p, int64_t n, const float *v, int64_t D, float *acc, int64_t stride) {
  int64_t c0 = 0;
  for (; c0 + 64 <= D; c0 += 64) {
    v8 o[8];
    for (int c = 0; c < 8; ++c) o[c] = *reinterpret_cast<const v8u *>(acc + c0 + 8 * c);
    for (int64_t j = 0; j < n; ++j) {
      const float *vj = v + j * stride + c0;
      for (int c = 0; c < 8; ++c) o[c] += p[j] * *reinterpret_cast<const v8u *>(vj + 8 * c);
    }
    for (int c = 0; c < 8; ++c) *reinterpret_cast<v8u *>(acc + c0 + 8 * c) = o[c];
  }
  if (c0 < D) {
    for (int64_t j = 0; j < n; ++j) mfh::axpy(p[j], v + j * stride + c0, acc + c0, D - c0);
  }
}

// dst[d, jj] = src[jj, d] for jj < n, zero beyond: a [n, D] block of keys or values (rows `stride` apart)
// transposed to [D, kBlockK].
inline void transpose_block(const float *src, int64_t n, int64_t D, float *dst, int64_t stride) {
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t jj = 0; jj < n; ++jj) dst[d * kBlockK + jj] = src[jj * stride + d];
    for (int64_t jj = n; jj < kBlockK; ++jj) dst[d * kBlockK + jj] = 0.f;
  }
}

// Register-blocked tiles for prefill (many rows per key block): R rows x 16 columns of accumulators
// (R <= 6: 12 of the 16 AVX registers), so each vector loaded from the key or value block serves R rows
// instead of one -- the per-row loops above are bound by those loads.
constexpr int kTileRows = 6;

// out[r, 0:kBlockK] = q_r . kt[:, 0:kBlockK] for the R query rows qrows[0:R]; kt is a transposed key block.
template <int R>
void qk_tile(const float *const *qrows, const float *kt, int64_t D, float *out) {
  for (int64_t c0 = 0; c0 < kBlockK; c0 += 16) {
    v8 acc[R][2] = {};
    for (int64_t d = 0; d < D; ++d) {
      const v8 k0 = *reinterpret_cast<const v8u *>(kt + d * kBlockK + c0);
      const v8 k1 = *reinterpret_cast<const v8u *>(kt + d * kBlockK + c0 + 8);
      for (int r = 0; r < R; ++r) {
        const float x = qrows[r][d];
        acc[r][0] += x * k0;
        acc[r][1] += x * k1;
      }
    }
    for (int r = 0; r < R; ++r) {
      *reinterpret_cast<v8u *>(out + r * kBlockK + c0) = acc[r][0];
      *reinterpret_cast<v8u *>(out + r * kBlockK + c0 + 8) = acc[r][1];
    }
  }
}

// acc[r, 0:Dv] += sum_{j in [j_lo, j_hi)} p[r, j] v[j, 0:Dv] for R rows (p[r, j] at p[r * PR + j * PC], acc
// rows `as` apart, v rows vs apart). The backward pass also uses it with keys as the rows r and query rows as
// j, reading a [row, key] block of probabilities transposed (PR = 1, PC = kBlockK) rather than copying it so.
template <int R, int64_t PR = kBlockK, int64_t PC = 1>
void pv_tile(const float *p, int64_t j_lo, int64_t j_hi, const float *v, int64_t vs, int64_t Dv, float *acc,
             int64_t as) {
  int64_t c0 = 0;
  for (; c0 + 16 <= Dv; c0 += 16) {
    v8 o[R][2];
    for (int r = 0; r < R; ++r) {
      o[r][0] = *reinterpret_cast<const v8u *>(acc + r * as + c0);
      o[r][1] = *reinterpret_cast<const v8u *>(acc + r * as + c0 + 8);
    }
    for (int64_t j = j_lo; j < j_hi; ++j) {
      const v8 v0 = *reinterpret_cast<const v8u *>(v + j * vs + c0);
      const v8 v1 = *reinterpret_cast<const v8u *>(v + j * vs + c0 + 8);
      for (int r = 0; r < R; ++r) {
        const float pr = p[r * PR + j * PC];
        o[r][0] += pr * v0;
        o[r][1] += pr * v1;
      }
    }
    for (int r = 0; r < R; ++r) {
      *reinterpret_cast<v8u *>(acc + r * as + c0) = o[r][0];
      *reinterpret_cast<v8u *>(acc + r * as + c0 + 8) = o[r][1];
    }
  }
  for (; c0 < Dv; ++c0) {  // channels past the last multiple of 16 (odd head sizes)
    for (int r = 0; r < R; ++r) {
      float sum = acc[r * as + c0];
      for (int64_t j = j_lo; j < j_hi; ++j) sum += p[r * PR + j * PC] * v[j * vs + c0];
      acc[r * as + c0] = sum;
    }
  }
}

template <class F>
void with_tile_rows(int rows, F f) {  // f(std::integral_constant<int, R>) for R = rows (1..kTileRows)
  switch (rows) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    case 4: f(std::integral_constant<int, 4>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    default: f(std::integral_constant<int, 6>()); break;
  }
}

}  // namespace

namespace {

// inputs: q, k, v, mask, scale; outputs: o, stats
int attention_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool bshd) {
  Shapes s;
  if (nparam != 7 || !mfh::all_float32(7, dtypes) || !read_shapes(ndims, shapes, &s, bshd)) return 1;
  const float *q = static_cast<float *>(params[0]), *k = static_cast<float *>(params[1]);
  const float *v = static_cast<float *>(params[2]), *mask = static_cast<float *>(params[3]);
  const float scale = static_cast<float *>(params[4])[0];
  float *o = static_cast<float *>(params[5]), *stats = static_cast<float *>(params[6]);
  const int64_t D = s.dim, Dv = s.v_dim, S = s.q_len, T = s.kv_len, G = s.groups;

  std::vector<int64_t> lo(s.batch * S), hi(s.batch * S);
  for (int64_t b = 0; b < s.batch; ++b) key_ranges(mask, s, b, lo.data() + b * S, hi.data() + b * S);

  // One task = a block of query positions of one (batch, kv head), for all G query heads of that kv head,
  // so each key block is transposed once for G * kBlockQ rows. Rows are independent in the forward pass.
  const int64_t row_blocks = (S + kBlockQ - 1) / kBlockQ;
  const int64_t tasks = s.batch * s.kv_heads * row_blocks;
  const int nt = mfh::threads_for(tasks, 4.0 * G * std::min<int64_t>(S, kBlockQ) * T * D);
  struct Scratch {  // per thread: accumulators of a task's rows, one transposed key block, one row's scores
    std::vector<float> acc, kt, m, l, scores, block_scores, tile_scores;
  };
  const int64_t max_rows = G * kBlockQ;
  std::vector<Scratch> scratch(nt, Scratch{std::vector<float>(max_rows * Dv), std::vector<float>(D * kBlockK),
                                           std::vector<float>(max_rows), std::vector<float>(max_rows),
                                           std::vector<float>(kBlockK), std::vector<float>(kBlockK),
                                           std::vector<float>(max_rows * kBlockK)});
  mfh::parallel_for(tasks, nt, [&](int64_t task, int thread) {
    std::vector<float> &acc = scratch[thread].acc, &kt = scratch[thread].kt, &m = scratch[thread].m,
                       &l = scratch[thread].l;
    float *scores = scratch[thread].scores.data(), *block_scores = scratch[thread].block_scores.data();
    const int64_t bkv = task / row_blocks, i0 = (task % row_blocks) * kBlockQ;
    const int64_t b = bkv / s.kv_heads, kvh = bkv % s.kv_heads;
    const int64_t n_pos = std::min(kBlockQ, S - i0), rows = G * n_pos;
    const int64_t *lo_b = lo.data() + b * S, *hi_b = hi.data() + b * S;
    const float *kb = k + bkv * T * D, *vb = v + v_offset(s, b, kvh);
    const int64_t vs = s.v_row;
    int64_t j_start = T, j_end = 0;
    for (int64_t i = i0; i < i0 + n_pos; ++i) {
      j_start = std::min(j_start, lo_b[i]);
      j_end = std::max(j_end, hi_b[i]);
    }
    std::fill(m.begin(), m.begin() + rows, kMinusBig);
    std::fill(l.begin(), l.begin() + rows, 0.f);
    std::fill(acc.begin(), acc.begin() + rows * Dv, 0.f);
    // Row r of the task: query head kvh * G + r / n_pos at position i0 + r % n_pos.
    auto q_row = [&](int64_t r) { return q + ((b * s.heads + kvh * G + r / n_pos) * S + i0 + r % n_pos) * D; };
    for (int64_t j0 = j_start; j0 < j_end && rows >= kTileRows; j0 += kBlockK) {
      // Prefill: scores of all rows for this key block as register tiles, softmax update row by row
      // (probabilities zero outside each row's allowed keys), then the value tiles.
      const int64_t nk = std::min(kBlockK, j_end - j0);
      float *ps = scratch[thread].tile_scores.data();
      transpose_block(kb + j0 * D, nk, D, kt.data(), D);
      for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
        const int n = (int)std::min<int64_t>(kTileRows, rows - r0);
        const float *qrows[kTileRows];
        for (int r = 0; r < n; ++r) qrows[r] = q_row(r0 + r);
        with_tile_rows(n, [&](auto R) { qk_tile<R()>(qrows, kt.data(), D, ps + r0 * kBlockK); });
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r % n_pos;
        const int64_t jb = std::max(j0, lo_b[i]) - j0, je = std::min(j0 + nk, hi_b[i]) - j0;
        float *pr = ps + r * kBlockK;
        if (jb >= je) {
          std::fill(pr, pr + kBlockK, 0.f);
          continue;
        }
        float block_max = kMinusBig;
        if (s.has_mask) {
          const float *mrow = mask + ((s.mask_batch == 1 ? 0 : b) * S + i) * T + j0;
#pragma omp simd reduction(max : block_max)
          for (int64_t j = jb; j < je; ++j) {
            pr[j] = pr[j] * scale + mrow[j];
            block_max = std::max(block_max, pr[j]);
          }
        } else {
#pragma omp simd reduction(max : block_max)
          for (int64_t j = jb; j < je; ++j) {
            pr[j] *= scale;
            block_max = std::max(block_max, pr[j]);
          }
        }
        const float m_new = std::max(m[r], block_max);
        const float alpha = std::exp(m[r] - m_new);
        float *ar = acc.data() + r * Dv;
        if (alpha != 1.f) {
#pragma omp simd
          for (int64_t d = 0; d < Dv; ++d) ar[d] *= alpha;
        }
        float row_sum = 0.f;
#pragma omp simd reduction(+ : row_sum)
        for (int64_t j = jb; j < je; ++j) {
          pr[j] = std::exp(pr[j] - m_new);
          row_sum += pr[j];
        }
        std::fill(pr, pr + jb, 0.f);
        std::fill(pr + je, pr + kBlockK, 0.f);
        l[r] = l[r] * alpha + row_sum;
        m[r] = m_new;
      }
      for (int64_t r0 = 0; r0 < rows; r0 += kTileRows) {
        const int n = (int)std::min<int64_t>(kTileRows, rows - r0);
        int64_t jb = nk, je = 0;  // the keys any row of the tile attends to in this block
        for (int64_t r = r0; r < r0 + n; ++r) {
          const int64_t i = i0 + r % n_pos;
          const int64_t rb = std::max(j0, lo_b[i]) - j0, re = std::min(j0 + nk, hi_b[i]) - j0;
          if (rb < re) {
            jb = std::min(jb, rb);
            je = std::max(je, re);
          }
        }
        if (jb >= je) continue;
        with_tile_rows(n, [&](auto R) {
          pv_tile<R()>(ps + r0 * kBlockK, jb, je, vb + j0 * vs, vs, Dv, acc.data() + r0 * Dv, Dv);
        });
      }
    }
    for (int64_t j0 = j_start; j0 < j_end && rows < kTileRows; j0 += kBlockK) {
      // Few rows (decode: G rows per kv head): scores as dot products, as a transposed block would cost more
      // than it saves.
      const int64_t nk = std::min(kBlockK, j_end - j0);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t g = r / n_pos, i = i0 + r % n_pos;
        const int64_t jb = std::max(j0, lo_b[i]), je = std::min(j0 + nk, hi_b[i]);
        if (jb >= je) continue;
        const int64_t row = (b * s.heads + kvh * G + g) * S + i;
        const float *qr = q + row * D;
        for (int64_t j = jb; j < je; ++j) block_scores[j - j0] = mfh::dot(qr, kb + j * D, D);
        const int64_t n = je - jb;
        float block_max = kMinusBig;
        for (int64_t j = 0; j < n; ++j) {
          const float sc = block_scores[jb - j0 + j] * scale + mask_at(mask, s, b, i, jb + j);
          scores[j] = sc;
          block_max = std::max(block_max, sc);
        }
        const float m_new = std::max(m[r], block_max);
        const float alpha = std::exp(m[r] - m_new);
        float *ar = acc.data() + r * Dv;
        if (alpha != 1.f) {
#pragma omp simd
          for (int64_t d = 0; d < Dv; ++d) ar[d] *= alpha;
        }
        float row_sum = 0.f;
#pragma omp simd reduction(+ : row_sum)
        for (int64_t j = 0; j < n; ++j) {
          scores[j] = std::exp(scores[j] - m_new);
          row_sum += scores[j];
        }
        accumulate_pv(scores, n, vb + jb * vs, Dv, ar, vs);
        l[r] = l[r] * alpha + row_sum;
        m[r] = m_new;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t g = r / n_pos, i = i0 + r % n_pos;
      const int64_t row = (b * s.heads + kvh * G + g) * S + i;
      float *orow = o + out_row(bshd, s, b, kvh * G + g, i);
      const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
      const float *ar = acc.data() + r * Dv;
#pragma omp simd
      for (int64_t d = 0; d < Dv; ++d) orow[d] = ar[d] * inv;
      stats[row * 2] = m[r];
      stats[row * 2 + 1] = l[r];
    }
  });
  return 0;
}

}  // namespace

MFH_KERNEL attention_fwd(MFH_ARGS) { return attention_forward(nparam, params, ndims, shapes, dtypes, false); }
MFH_KERNEL attention_fwd_bshd(MFH_ARGS) { return attention_forward(nparam, params, ndims, shapes, dtypes, true); }

namespace {

// inputs: q, k, v, mask, scale, o, stats, do; outputs: dq, dk, dv
// With p = exp(score - m) / sum rebuilt per key block and delta_i = do_i . o_i:
//   dv_j += p_ij do_i,  ds_ij = p_ij (do_i . v_j - delta_i),  dq_i += scale ds_ij k_j,  dk_j += scale ds_ij q_i
// computed as in FlashAttention-2: per key block and chunk of up to kChunk query rows, five small matrix
// products on register tiles (scores and do . v^T with qk_tile; dq, dv and dk with pv_tile), so each vector
// loaded serves up to kTileRows rows instead of one.
constexpr int64_t kChunk = 64;  // query rows per chunk: [kChunk, kBlockK] blocks of p and ds per thread

int attention_backward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, bool bshd) {
  Shapes s;
  if (nparam != 11 || !mfh::all_float32(11, dtypes) || !read_shapes(ndims, shapes, &s, bshd)) return 1;
  const float *q = static_cast<float *>(params[0]), *k = static_cast<float *>(params[1]);
  const float *v = static_cast<float *>(params[2]), *mask = static_cast<float *>(params[3]);
  const float scale = static_cast<float *>(params[4])[0];
  const float *o = static_cast<float *>(params[5]), *stats = static_cast<float *>(params[6]);
  const float *dout = static_cast<float *>(params[7]);
  float *dq = static_cast<float *>(params[8]), *dk = static_cast<float *>(params[9]), *dv = static_cast<float *>(params[10]);
  const int64_t D = s.dim, Dv = s.v_dim, S = s.q_len, T = s.kv_len, G = s.groups;
  const int64_t q_size = s.batch * s.heads * S * D;

  std::vector<int64_t> lo(s.batch * S), hi(s.batch * S);
  for (int64_t b = 0; b < s.batch; ++b) key_ranges(mask, s, b, lo.data() + b * S, hi.data() + b * S);
  std::vector<float> delta(s.batch * s.heads * S);
  const int64_t bh_count = s.batch * s.heads;
  mfh::parallel_for(bh_count, mfh::threads_for(bh_count, 2.0 * S * Dv), [&](int64_t bh, int) {
    for (int64_t i = 0; i < S; ++i) {
      const int64_t off = out_row(bshd, s, bh / s.heads, bh % s.heads, i);
      delta[bh * S + i] = mfh::dot(dout + off, o + off, Dv);
    }
  });

  // One task = a block of keys of one (batch, kv head): it owns those dk/dv rows. dq rows are shared
  // between key blocks, so each thread sums into its own dq copy and the copies are added at the end. The
  // copies are left uninitialised here and zeroed by their thread at its first task, so the zeroing (and the
  // page faults of fresh memory) run in parallel; a thread that got no task has nothing to add.
  const int64_t key_blocks = (T + kBlockK - 1) / kBlockK;
  const int64_t tasks = s.batch * s.kv_heads * key_blocks;
  const int nt = mfh::threads_for(tasks, 10.0 * G * S * std::min<int64_t>(T, kBlockK) * D);
  std::unique_ptr<float[]> dq_private(nt > 1 ? new float[(size_t)(nt - 1) * q_size] : nullptr);
  std::vector<char> dq_started(nt, 0);  // element t written by thread t only
  std::fill(dq, dq + q_size, 0.f);
  std::fill(dk, dk + s.batch * s.kv_heads * T * D, 0.f);
  std::fill(dv, dv + s.batch * s.kv_heads * T * Dv, 0.f);
  const int64_t do_stride = bshd ? s.heads * Dv : Dv;  // between consecutive positions' do rows of one head
  struct Scratch {
    // transposed key and value blocks; q, do and dq rows of a chunk gathered when they are not consecutive
    // positions; the chunk's scores (then p) and do . v^T (then ds) [row, key]; the task's rows
    std::vector<float> kt, vt, qc, doc, dqc, ps, dps;
    std::vector<int64_t> rows;
  };
  std::vector<Scratch> scratch(nt, Scratch{std::vector<float>(D * kBlockK), std::vector<float>(Dv * kBlockK),
                                           std::vector<float>(kChunk * D), std::vector<float>(kChunk * Dv),
                                           std::vector<float>(kChunk * D), std::vector<float>(kChunk * kBlockK),
                                           std::vector<float>(kChunk * kBlockK), std::vector<int64_t>(S)});
  mfh::parallel_for(tasks, nt, [&](int64_t task, int thread) {
    float *dq_t = thread == 0 ? dq : dq_private.get() + (size_t)(thread - 1) * q_size;
    if (!dq_started[thread]) {
      if (thread > 0) std::fill(dq_t, dq_t + q_size, 0.f);
      dq_started[thread] = 1;
    }
    Scratch &w = scratch[thread];
    float *kt = w.kt.data(), *vt = w.vt.data(), *ps = w.ps.data(), *dps = w.dps.data();
    // Key block major: under a causal mask the first key blocks are seen by the most rows, so the largest
    // tasks go first and the threads finish together.
    const int64_t bkv = task % (s.batch * s.kv_heads), j0 = task / (s.batch * s.kv_heads) * kBlockK;
    const int64_t b = bkv / s.kv_heads, kvh = bkv % s.kv_heads;
    const int64_t nk = std::min(kBlockK, T - j0);
    const float *kb = k + bkv * T * D + j0 * D, *vb = v + v_offset(s, b, kvh) + j0 * s.v_row;
    float *dkb = dk + bkv * T * D + j0 * D, *dvb = dv + v_offset(s, b, kvh) + j0 * s.v_row;  // dv has v's layout
    const int64_t vs = s.v_row;
    const int64_t *lo_b = lo.data() + b * S, *hi_b = hi.data() + b * S;
    // The query rows that see a key of this block (all heads of the group share the mask), with their keys
    // [jb, je) relative to j0: the causal cut leaves the rows from j0 on, padding any subset.
    int64_t n_rows = 0;
    for (int64_t i = 0; i < S; ++i) {
      if (std::max(j0, lo_b[i]) < std::min(j0 + nk, hi_b[i])) w.rows[n_rows++] = i;
    }
    if (n_rows == 0) return;
    auto key_lo = [&](int64_t i) { return std::max(j0, lo_b[i]) - j0; };
    auto key_hi = [&](int64_t i) { return std::min(j0 + nk, hi_b[i]) - j0; };
    transpose_block(kb, nk, D, kt, D);
    transpose_block(vb, nk, Dv, vt, vs);
    for (int64_t g = 0; g < G; ++g) {
      const int64_t h = kvh * G + g, bh = b * s.heads + h;
      for (int64_t c0 = 0; c0 < n_rows; c0 += kChunk) {
        const int64_t n = std::min(kChunk, n_rows - c0);
        const int64_t *idx = w.rows.data() + c0;
        // Consecutive positions (no padding inside the chunk) are read and written in place, rows qs / dos /
        // D apart; other chunks are gathered into scratch, and their dq added back at the end.
        const bool in_place = idx[n - 1] - idx[0] == n - 1;
        const float *qc = q + (bh * S + idx[0]) * D, *doc = dout + out_row(bshd, s, b, h, idx[0]);
        float *dqc = dq_t + (bh * S + idx[0]) * D;
        int64_t qs = D, dos = do_stride;
        if (!in_place) {
          for (int64_t r = 0; r < n; ++r) {
            std::memcpy(w.qc.data() + r * D, q + (bh * S + idx[r]) * D, D * sizeof(float));
            std::memcpy(w.doc.data() + r * Dv, dout + out_row(bshd, s, b, h, idx[r]), Dv * sizeof(float));
          }
          qc = w.qc.data(), doc = w.doc.data(), dqc = w.dqc.data(), dos = Dv;
          std::fill(dqc, dqc + n * D, 0.f);
        }
        // scores = q k^T and dp = do v^T for the chunk, [n, kBlockK] each
        for (int64_t r0 = 0; r0 < n; r0 += kTileRows) {
          const int t = (int)std::min<int64_t>(kTileRows, n - r0);
          const float *qrows[kTileRows], *drows[kTileRows];
          for (int r = 0; r < t; ++r) {
            qrows[r] = qc + (r0 + r) * qs;
            drows[r] = doc + (r0 + r) * dos;
          }
          with_tile_rows(t, [&](auto R) {
            qk_tile<R()>(qrows, kt, D, ps + r0 * kBlockK);
            qk_tile<R()>(drows, vt, Dv, dps + r0 * kBlockK);
          });
        }
        // p and ds in place of them, zero outside each row's allowed keys
        for (int64_t r = 0; r < n; ++r) {
          const int64_t i = idx[r], row = bh * S + i, jb = key_lo(i), je = key_hi(i);
          const float row_max = stats[row * 2], row_inv_sum = 1.f / stats[row * 2 + 1], row_delta = delta[row];
          float *pr = ps + r * kBlockK, *dsr = dps + r * kBlockK;
          // score * scale + mask first, stored, then - m as the forward pass does: in one expression
          // -ffast-math may take mask - m first, which for a fully masked row (mask and m about -1e9, where
          // float32 steps by 64) keeps the scores the forward pass rounded away.
          if (s.has_mask) {
            const float *mrow = mask + ((s.mask_batch == 1 ? 0 : b) * S + i) * T + j0;
#pragma omp simd
            for (int64_t j = jb; j < je; ++j) pr[j] = pr[j] * scale + mrow[j];
          } else {
#pragma omp simd
            for (int64_t j = jb; j < je; ++j) pr[j] *= scale;
          }
#pragma omp simd
          for (int64_t j = jb; j < je; ++j) {
            pr[j] = std::exp(pr[j] - row_max) * row_inv_sum;
            dsr[j] = pr[j] * (dsr[j] - row_delta) * scale;
          }
          std::fill(pr, pr + jb, 0.f);
          std::fill(pr + je, pr + kBlockK, 0.f);
          std::fill(dsr, dsr + jb, 0.f);
          std::fill(dsr + je, dsr + kBlockK, 0.f);
        }
        // dq rows += ds k_block, over the keys any row of the tile sees
        for (int64_t r0 = 0; r0 < n; r0 += kTileRows) {
          const int t = (int)std::min<int64_t>(kTileRows, n - r0);
          int64_t jb = nk, je = 0;
          for (int64_t r = r0; r < r0 + t; ++r) {
            jb = std::min(jb, key_lo(idx[r]));
            je = std::max(je, key_hi(idx[r]));
          }
          with_tile_rows(t, [&](auto R) { pv_tile<R()>(dps + r0 * kBlockK, jb, je, kb, D, D, dqc + r0 * qs, qs); });
        }
        if (!in_place) {
          for (int64_t r = 0; r < n; ++r) mfh::axpy(1.f, dqc + r * D, dq_t + (bh * S + idx[r]) * D, D);
        }
        // dv_block += p^T do_chunk and dk_block += ds^T q_chunk: tiles of kTileRows keys, over the chunk rows
        // [rb, re) that see any of them
        for (int64_t j = 0; j < nk; j += kTileRows) {
          const int t = (int)std::min<int64_t>(kTileRows, nk - j);
          int64_t rb = 0, re = n;
          while (rb < re && (key_lo(idx[rb]) >= j + t || key_hi(idx[rb]) <= j)) ++rb;
          while (re > rb && (key_lo(idx[re - 1]) >= j + t || key_hi(idx[re - 1]) <= j)) --re;
          if (rb >= re) continue;
          with_tile_rows(t, [&](auto R) {
            pv_tile<R(), 1, kBlockK>(ps + j, rb, re, doc, dos, Dv, dvb + j * vs, vs);
            pv_tile<R(), 1, kBlockK>(dps + j, rb, re, qc, qs, D, dkb + j * D, D);
          });
        }
      }
    }
  });
  if (nt > 1) {
    const int64_t pieces = 4 * nt, piece = (q_size + pieces - 1) / pieces;
    mfh::parallel_for(pieces, nt, [&](int64_t p, int) {
      const int64_t x0 = p * piece, x1 = std::min(q_size, x0 + piece);
      for (int t = 1; t < nt; ++t) {
        if (!dq_started[t]) continue;
        const float *src = dq_private.get() + (size_t)(t - 1) * q_size;
#pragma omp simd
        for (int64_t x = x0; x < x1; ++x) dq[x] += src[x];
      }
    });
  }
  return 0;
}

}  // namespace

MFH_KERNEL attention_bwd(MFH_ARGS) { return attention_backward(nparam, params, ndims, shapes, dtypes, false); }
MFH_KERNEL attention_bwd_bshd(MFH_ARGS) { return attention_backward(nparam, params, ndims, shapes, dtypes, true); }

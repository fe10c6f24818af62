// DLRM dot interaction, compiled once per ISA level (DLRMX_ISA_NS names the level).
// Each sample's F feature vectors are first copied into an fp32 scratch block [F, D], so every
// inner loop is a unit-stride loop over D that the auto-vectorizer turns into FMAs; common D get a
// compile-time size so the loops are fully unrolled.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "interaction.h"

namespace dlrmx::cpu::DLRMX_ISA_NS {
namespace {

inline float load(float x) { return x; }
inline float load(uint16_t bf16) { return bf16_to_float(bf16); }
inline void store(float* p, float x) { *p = x; }
inline void store(uint16_t* p, float x) { *p = float_to_bf16(x); }

// z[f*D + d] <- feature f of sample b, as fp32.
template <int kD, typename elem_t>
inline void gather(const elem_t* dense, const elem_t* emb, int64_t b, int64_t T, int64_t dim,
                   float* __restrict z) {
  const int64_t D = kD > 0 ? kD : dim;
  const elem_t* x = dense + b * D;
#pragma omp simd
  for (int64_t d = 0; d < D; ++d) z[d] = load(x[d]);
  const elem_t* e = emb + b * T * D;
  for (int64_t k = 0; k < T * D; k += D) {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) z[D + k + d] = load(e[k + d]);
  }
}

// Features transposed, zt[d * FP + f], FP = F rounded up to 16 (padding zeroed), so that the dots
// of feature i with all earlier features are vector FMAs across j: a per-pair horizontal sum
// over D (the obvious loop) cost ~25 cycles a pair and made forward 5x slower than backward.
template <int kD, typename elem_t>
inline void gather_transposed(const elem_t* dense, const elem_t* emb, int64_t b, int64_t T,
                              int64_t dim, int64_t FP, float* __restrict zt) {
  const int64_t D = kD > 0 ? kD : dim;
  const elem_t* x = dense + b * D;
  for (int64_t d = 0; d < D; ++d) zt[d * FP] = load(x[d]);
  const elem_t* e = emb + b * T * D;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) zt[d * FP + 1 + t] = load(e[t * D + d]);
}

template <int kD, typename elem_t>
void forward_impl(const elem_t* dense, const elem_t* emb, int64_t batch, int64_t T, int64_t dim,
                  elem_t* out, int num_threads) {
  constexpr int64_t kLanes = 16, kRows = 4;
  const int64_t D = kD > 0 ? kD : dim, F = T + 1, P = F * (F - 1) / 2, width = D + P;
  // Padded so that a block of kRows rows never reads past the zeroed columns.
  const int64_t FP = (F + kRows + kLanes - 1) / kLanes * kLanes;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<float> ztbuf(D * FP, 0.f), rowbuf(P);
    float* __restrict zt = ztbuf.data();
    float* __restrict row_out = rowbuf.data();  // the pair dots in fp32, stored in one loop
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      gather_transposed<kD>(dense, emb, b, T, D, FP, zt);
      elem_t* o = out + b * width;
      const elem_t* x = dense + b * D;
      for (int64_t d = 0; d < D; ++d) o[d] = x[d];  // the concatenated bottom output, bit-exact
      // kRows features i at a time against kLanes earlier features j: kRows x kLanes
      // accumulators in registers (a local array), independent chains hide the FMA latency.
      for (int64_t i0 = 1; i0 < F; i0 += kRows) {
        const int64_t rows = std::min<int64_t>(kRows, F - i0);
        for (int64_t c = 0; c < i0 + rows - 1; c += kLanes) {  // lane blocks covering j < i
          float acc[kRows][kLanes] = {};
          for (int64_t d = 0; d < D; ++d) {
            const float* row = zt + d * FP;
            for (int64_t r = 0; r < kRows; ++r) {
              const float w = row[i0 + r];
#pragma omp simd
              for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += w * row[c + l];
            }
          }
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = i0 + r, end = std::min<int64_t>(c + kLanes, i);
            for (int64_t j = c; j < end; ++j) row_out[i * (i - 1) / 2 + j] = acc[r][j - c];
          }
        }
      }
#pragma omp simd
      for (int64_t q = 0; q < P; ++q) store(o + D + q, row_out[q]);
    }
  }
}

// acc[r*D + d] = (r == 0 ? init[d] : 0) + sum_j g[r*F + j] * z[j*D + d] for kRows rows. With a
// compile-time D the accumulators are a local array the compiler keeps in registers; through
// memory every FMA waited on the previous one's store.
template <int kD, int kRows>
inline void rows_times_z(const float* __restrict g, const float* __restrict z, int64_t F,
                         int64_t dim, const float* __restrict init, float* __restrict out) {
  if constexpr (kD > 0) {
    float acc[kRows][kD] = {};
    if (init != nullptr)
      for (int d = 0; d < kD; ++d) acc[0][d] = init[d];
    for (int64_t j = 0; j < F; ++j) {
      const float* zj = z + j * kD;
      for (int r = 0; r < kRows; ++r) {
        const float w = g[r * F + j];
#pragma omp simd
        for (int d = 0; d < kD; ++d) acc[r][d] += w * zj[d];
      }
    }
    for (int r = 0; r < kRows; ++r)
      for (int d = 0; d < kD; ++d) out[r * kD + d] = acc[r][d];
  } else {
    for (int64_t k = 0; k < kRows * dim; ++k) out[k] = 0.f;
    if (init != nullptr)
      for (int64_t d = 0; d < dim; ++d) out[d] = init[d];
    for (int64_t j = 0; j < F; ++j) {
      const float* zj = z + j * dim;
      for (int r = 0; r < kRows; ++r) {
        const float w = g[r * F + j];
        float* a = out + r * dim;
#pragma omp simd
        for (int64_t d = 0; d < dim; ++d) a[d] += w * zj[d];
      }
    }
  }
}

template <int kD, typename elem_t>
void backward_impl(const elem_t* grad_out, const elem_t* dense, const elem_t* emb, int64_t batch,
                   int64_t T, int64_t dim, elem_t* grad_dense, elem_t* grad_emb,
                   int num_threads) {
  const int64_t D = kD > 0 ? kD : dim, F = T + 1, P = F * (F - 1) / 2, width = D + P;
#pragma omp parallel num_threads(num_threads)
  {
    constexpr int64_t kRows = kD > 32 ? 2 : 4;  // the accumulators must fit the registers
    const int64_t rows_padded = (F + kRows - 1) / kRows * kRows;
    std::vector<float> zbuf(F * D), gbuf(rows_padded * F, 0.f), accbuf(kRows * D), gobuf(width);
    float* __restrict z = zbuf.data();
    float* __restrict gof = gobuf.data();  // this sample's output gradient in fp32
    float* __restrict g = gbuf.data();  // symmetric G + G^T, zero diagonal
    float* __restrict acc = accbuf.data();
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; ++b) {
      gather<kD>(dense, emb, b, T, D, z);
      const elem_t* go_row = grad_out + b * width;
#pragma omp simd
      for (int64_t q = 0; q < width; ++q) gof[q] = load(go_row[q]);
      const float* go = gof;
      int64_t p = D;
      for (int64_t i = 0; i < F; ++i) g[i * F + i] = 0.f;
      for (int64_t i = 1; i < F; ++i)
        for (int64_t j = 0; j < i; ++j) {
          const float v = load(go[p++]);
          g[i * F + j] = v;
          g[j * F + i] = v;
        }
      // kRows output rows at a time: independent accumulator chains hide the FMA latency (one
      // chain per row made the backward latency-bound). G's padding rows are zero.
      for (int64_t i0 = 0; i0 < F; i0 += kRows) {
        rows_times_z<kD, kRows>(g + i0 * F, z, F, D, i0 == 0 ? go : nullptr, acc);
        for (int64_t r = 0; r < kRows && i0 + r < F; ++r) {
          const int64_t i = i0 + r;
          elem_t* dst = i == 0 ? grad_dense + b * D : grad_emb + (b * T + (i - 1)) * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) store(dst + d, acc[r * D + d]);
        }
      }
    }
  }
}

}  // namespace

template <typename elem_t>
void dot_interaction_forward(const elem_t* dense, const elem_t* emb, int64_t batch,
                             int64_t num_sparse, int64_t dim, elem_t* out, int num_threads) {
  switch (dim) {
    case 16: return forward_impl<16>(dense, emb, batch, num_sparse, dim, out, num_threads);
    case 32: return forward_impl<32>(dense, emb, batch, num_sparse, dim, out, num_threads);
    case 64: return forward_impl<64>(dense, emb, batch, num_sparse, dim, out, num_threads);
    case 128: return forward_impl<128>(dense, emb, batch, num_sparse, dim, out, num_threads);
    default: return forward_impl<0>(dense, emb, batch, num_sparse, dim, out, num_threads);
  }
}

template <typename elem_t>
void dot_interaction_backward(const elem_t* grad_out, const elem_t* dense, const elem_t* emb,
                              int64_t batch, int64_t num_sparse, int64_t dim, elem_t* grad_dense,
                              elem_t* grad_emb, int num_threads) {
#define DLRMX_BWD(K) \
  return backward_impl<K>(grad_out, dense, emb, batch, num_sparse, dim, grad_dense, grad_emb, num_threads)
  switch (dim) {
    case 16: DLRMX_BWD(16);
    case 32: DLRMX_BWD(32);
    case 64: DLRMX_BWD(64);
    case 128: DLRMX_BWD(128);
    default: DLRMX_BWD(0);
  }
#undef DLRMX_BWD
}

template void dot_interaction_forward<float>(const float*, const float*, int64_t, int64_t, int64_t,
                                             float*, int);
template void dot_interaction_forward<uint16_t>(const uint16_t*, const uint16_t*, int64_t, int64_t,
                                                int64_t, uint16_t*, int);
template void dot_interaction_backward<float>(const float*, const float*, const float*, int64_t,
                                              int64_t, int64_t, float*, float*, int);
template void dot_interaction_backward<uint16_t>(const uint16_t*, const uint16_t*,
                                                 const uint16_t*, int64_t, int64_t, int64_t,
                                                 uint16_t*, uint16_t*, int);

}  // namespace dlrmx::cpu::DLRMX_ISA_NS

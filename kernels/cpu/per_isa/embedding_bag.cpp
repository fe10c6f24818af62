// Embedding-bag forward and backward, compiled once per ISA level (DLRMX_ISA_NS names the level).
// Inner loops run over the embedding dimension and are written for the auto-vectorizer; common
// dimensions get a compile-time size so a bag's accumulator stays in registers.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "bf16.h"
#include "embedding_bag.h"

namespace dlrmx::cpu::DLRMX_ISA_NS {
namespace {

// How many ids ahead rows are prefetched (into L2): about 8 KiB of rows in flight, 16 to 64 ids.
// Measured on 2 GiB of tables: fp32 dim-64 rows did best 32 ids ahead, bf16 ones 64 ahead.
constexpr int64_t prefetch_distance(int64_t row_bytes) {
  return std::clamp<int64_t>(8192 / std::max<int64_t>(row_bytes, 1), 16, 64);
}
constexpr int64_t kPlanPrefetch = 16;  // lookups ahead in the sorted backward plan

inline float to_float(float x) { return x; }
inline float to_float(uint16_t bf16) { return bf16_to_float(bf16); }

template <typename T>
inline void prefetch_row(const T* row, int64_t dim, int rw = 0) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < dim * static_cast<int64_t>(sizeof(T)); b += 64)
    rw ? __builtin_prefetch(p + b, 1, 3) : __builtin_prefetch(p + b, 0, 2);
}

// 16 floats as one GCC vector: the compiler maps it to one zmm register (AVX-512), two ymm
// (AVX2) or four xmm (baseline), so one source serves every ISA level.
typedef float vf16 __attribute__((vector_size(64)));
typedef uint16_t vu16x16 __attribute__((vector_size(32)));
typedef uint32_t vu32x16 __attribute__((vector_size(64)));

inline vf16 load16(const float* p) {
  vf16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline vf16 load16(const uint16_t* p) {  // 16 bf16 -> fp32: widen and shift into the upper half
  vu16x16 h;
  std::memcpy(&h, p, sizeof h);
  return reinterpret_cast<vf16>(__builtin_convertvector(h, vu32x16) << 16);
}

// Calls fn(j, row) for each non-padding id of one bag (ids[begin:end]), prefetching the row
// `ahead` ids further on (never past prefetch_end, the end of the table's ids); returns how
// many ids it visited.
template <typename index_t, typename weight_t, typename Fn>
__attribute__((always_inline)) inline int64_t for_each_row(
    const weight_t* table, int64_t dim, const index_t* ids, int64_t begin, int64_t end,
    int64_t prefetch_end, int64_t pad, int64_t ahead, Fn&& fn) {
  int64_t count = 0;
  for (int64_t j = begin; j < end; ++j) {
    if (j + ahead < prefetch_end)
      prefetch_row(table + static_cast<int64_t>(ids[j + ahead]) * dim, dim);
    const int64_t id = static_cast<int64_t>(ids[j]);
    if (id == pad) continue;
    ++count;
    fn(j, id, table + id * dim);
  }
  return count;
}

// Sum/mean pooling of one bag for dims that are a multiple of 16: the accumulator stays in
// registers for the whole bag.
template <int kD, typename index_t, typename weight_t>
void sum_bag(const weight_t* table, const index_t* ids, int64_t begin, int64_t end,
             int64_t prefetch_end, const float* psw, int64_t pad, Pooling pooling, float* out) {
  static_assert(kD % 16 == 0, "vector path needs a multiple of 16");
  constexpr int V = kD / 16;
  constexpr int64_t kAhead = prefetch_distance(kD * sizeof(weight_t));
  vf16 acc[V] = {};
  const int64_t count = for_each_row(table, kD, ids, begin, end, prefetch_end, pad, kAhead,
                                     [&](int64_t j, int64_t, const weight_t* row) {
    if (psw) {
      const float w = psw[j];
      for (int v = 0; v < V; ++v) acc[v] += w * load16(row + 16 * v);
    } else {
      for (int v = 0; v < V; ++v) acc[v] += load16(row + 16 * v);
    }
  });
  const float scale = (pooling == Pooling::mean && count > 0) ? 1.f / count : 1.f;
  for (int v = 0; v < V; ++v) {
    const vf16 r = acc[v] * scale;
    std::memcpy(out + 16 * v, &r, sizeof r);
  }
}

// bf16 sum/mean for dims that are a multiple of 32, without widening: 32 bf16 loaded as 16
// uint32 hold the even elements in their low halves and the odd ones in their high halves, so
// `x << 16` and `x & 0xFFFF0000` are those elements as fp32. Even and odd elements accumulate
// apart and are interleaved once per bag.
template <int kD, typename index_t>
void sum_bag_bf16(const uint16_t* table, const index_t* ids, int64_t begin, int64_t end,
                  int64_t prefetch_end, const float* psw, int64_t pad, Pooling pooling, float* out) {
  static_assert(kD % 32 == 0, "needs pairs of 16-lane vectors");
  constexpr int V = kD / 32;
  constexpr int64_t kAhead = prefetch_distance(kD * sizeof(uint16_t));
  vf16 even[V] = {}, odd[V] = {};
  const int64_t count = for_each_row(table, kD, ids, begin, end, prefetch_end, pad, kAhead,
                                     [&](int64_t j, int64_t, const uint16_t* row) {
    const float w = psw ? psw[j] : 1.f;
    for (int v = 0; v < V; ++v) {
      vu32x16 x;
      std::memcpy(&x, row + 32 * v, sizeof x);
      even[v] += w * reinterpret_cast<vf16>(x << 16);
      odd[v] += w * reinterpret_cast<vf16>(x & 0xFFFF0000u);
    }
  });
  const float scale = (pooling == Pooling::mean && count > 0) ? 1.f / count : 1.f;
  for (int v = 0; v < V; ++v)
    for (int i = 0; i < 16; ++i) {
      out[32 * v + 2 * i] = even[v][i] * scale;
      out[32 * v + 2 * i + 1] = odd[v][i] * scale;
    }
}

// Pools one bag into out[0:dim]. kD > 0 fixes dim at compile time; kD == 0 handles any dim.
template <int kD, typename index_t, typename weight_t>
void pool_bag(const weight_t* table, int64_t dim, const index_t* ids, int64_t begin, int64_t end,
              int64_t prefetch_end, const float* psw, int64_t pad, Pooling pooling, float* out,
              int64_t* argmax) {
  if constexpr (kD > 0 && kD % 16 == 0) {
    if (pooling != Pooling::max) {
      if constexpr (std::is_same_v<weight_t, uint16_t> && kD % 32 == 0)
        return sum_bag_bf16<kD>(table, ids, begin, end, prefetch_end, psw, pad, pooling, out);
      else
        return sum_bag<kD>(table, ids, begin, end, prefetch_end, psw, pad, pooling, out);
    }
  }
  const int64_t D = kD > 0 ? kD : dim;
  float local[kD > 0 ? kD : 1];
  float* acc = kD > 0 ? local : out;
  const int64_t ahead = prefetch_distance(D * static_cast<int64_t>(sizeof(weight_t)));
  if (pooling != Pooling::max)
    for (int64_t d = 0; d < D; ++d) acc[d] = 0.f;
  // Max pooling as torch's: the bag's first (non-padding) row starts the maximum and a later row
  // replaces it only where strictly greater. So a NaN in the first row stays (nothing compares
  // greater than it), a later NaN never wins, and a bag of -inf rows pools to -inf.
  bool first = true;
  const int64_t count = for_each_row(table, D, ids, begin, end, prefetch_end, pad, ahead,
                                     [&](int64_t j, int64_t id, const weight_t* __restrict row) {
    if (pooling == Pooling::max) {
      if (first) {
        first = false;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) acc[d] = to_float(row[d]), argmax[d] = id;
        return;
      }
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        const float v = to_float(row[d]);
        const bool better = v > acc[d];
        acc[d] = better ? v : acc[d];
        argmax[d] = better ? id : argmax[d];
      }
    } else {
      const float w = psw ? psw[j] : 1.f;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc[d] += w * to_float(row[d]);
    }
  });
  if (pooling == Pooling::max) {
    if (count == 0)  // an empty bag (or only padding) pools to 0, with no row to take a gradient
      for (int64_t d = 0; d < D; ++d) out[d] = 0.f, argmax[d] = -1;
    else if (acc != out)
      for (int64_t d = 0; d < D; ++d) out[d] = acc[d];
  } else {
    const float scale = (pooling == Pooling::mean && count > 0) ? 1.f / count : 1.f;
    for (int64_t d = 0; d < D; ++d) out[d] = acc[d] * scale;
  }
}

template <typename index_t, typename weight_t>
using PoolFn = void (*)(const weight_t*, int64_t, const index_t*, int64_t, int64_t, int64_t,
                        const float*, int64_t, Pooling, float*, int64_t*);

template <typename index_t, typename weight_t>
PoolFn<index_t, weight_t> pool_fn_for(int64_t dim) {
  switch (dim) {
    case 16: return pool_bag<16, index_t, weight_t>;
    case 32: return pool_bag<32, index_t, weight_t>;
    case 64: return pool_bag<64, index_t, weight_t>;
    case 128: return pool_bag<128, index_t, weight_t>;
    default: return pool_bag<0, index_t, weight_t>;
  }
}

// Calls fn(part, t, row, g, dim) once per distinct destination row with g = that row's summed
// gradient, g[0:dim]. Each thread visits only the rows it owns in the plan, in ascending order;
// prefetch(t, row) is called a few lookups ahead of the row being reduced.
template <typename index_t, typename Fn, typename Prefetch>
void for_each_row_gradient(const Tables& tables, const Bags<index_t>& bags,
                           const GradientPlan& plan, const float* grad_out,
                           const int64_t* argmax, Fn&& fn, Prefetch&& prefetch) {
  int64_t max_dim = 1;
  for (int64_t t = 0; t < tables.num_tables; ++t) max_dim = std::max(max_dim, tables.dims[t]);
  const int64_t B = bags.batch_size, width = tables.output_width;
  const float* psw = bags.per_sample_weights;
  const bool is_max = bags.pooling == Pooling::max;
#pragma omp parallel num_threads(plan.num_threads)
  {
    std::vector<float> gbuf(max_dim);
    float* __restrict g = gbuf.data();
    const int team = omp_get_num_threads();
    for (int part = omp_get_thread_num(); part < plan.num_threads; part += team) {
      const auto& L = plan.lookups[part];
      int64_t t = 0;
      size_t i = 0;
      while (i < L.size()) {
        const uint64_t key = L[i].key;
        while (key >= static_cast<uint64_t>(plan.row_base[t + 1])) ++t;
        const int64_t row = static_cast<int64_t>(key - plan.row_base[t]);
        const int64_t D = tables.dims[t], col = tables.output_offsets[t];
        for (int64_t d = 0; d < D; ++d) g[d] = 0.f;
        uint32_t prev_bag = UINT32_MAX;
        for (; i < L.size() && L[i].key == key; ++i) {
          if (i + kPlanPrefetch < L.size()) {
            const RowLookup& ahead = L[i + kPlanPrefetch];
            prefetch_row(grad_out + (ahead.bag % B) * width + col, D);
            if (ahead.key != L[i + kPlanPrefetch - 1].key && ahead.key < static_cast<uint64_t>(plan.row_base[t + 1]))
              prefetch(t, static_cast<int64_t>(ahead.key - plan.row_base[t]));
          }
          const uint32_t bag = L[i].bag;
          const float* __restrict go = grad_out + (bag % B) * width + col;
          if (is_max) {
            // A row repeated in a bag still won each column at most once.
            if (bag == prev_bag) continue;
            prev_bag = bag;
            const int64_t* am = argmax + (bag % B) * width + col;
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) g[d] += am[d] == row ? go[d] : 0.f;
          } else {
            const float s = (psw ? psw[L[i].pos] : 1.f) * plan.bag_scale[bag];
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) g[d] += s * go[d];
          }
        }
        fn(part, t, row, g, D);
      }
    }
  }
}

}  // namespace

template <typename index_t, typename weight_t>
void embedding_bag_forward(const Tables& tables, const Bags<index_t>& bags,
                           const weight_t* const* weights, float* out, int64_t* argmax,
                           int num_threads) {
  const int64_t T = tables.num_tables, B = bags.batch_size, width = tables.output_width;
  std::vector<PoolFn<index_t, weight_t>> pool(T);
  for (int64_t t = 0; t < T; ++t) pool[t] = pool_fn_for<index_t, weight_t>(tables.dims[t]);
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(static)
  for (int64_t bag = 0; bag < T * B; ++bag) {
    const int64_t t = bag / B, b = bag % B, col = tables.output_offsets[t];
    pool[t](weights[t], tables.dims[t], bags.ids, bags.offsets[bag], bags.offsets[bag + 1],
            bags.offsets[(t + 1) * B], bags.per_sample_weights, tables.padding_idx[t],
            bags.pooling, out + b * width + col, argmax ? argmax + b * width + col : nullptr);
  }
}

template <typename index_t>
void embedding_bag_grad(const Tables& tables, const Bags<index_t>& bags, const GradientPlan& plan,
                        const float* grad_out, const int64_t* argmax, float* const* dense_grads,
                        int64_t* const* sparse_rows, float* const* sparse_values) {
  // Each part writes its distinct rows of table t from write_start(part, t) on.
  std::vector<int64_t> cursor(static_cast<size_t>(plan.num_threads) * tables.num_tables);
  for (int p = 0; p < plan.num_threads; ++p)
    for (int64_t t = 0; t < tables.num_tables; ++t)
      cursor[p * tables.num_tables + t] = plan.write_start(p, t);
  for_each_row_gradient(tables, bags, plan, grad_out, argmax,
                        [&](int part, int64_t t, int64_t row, const float* g, int64_t D) {
                          float* dst;
                          if (dense_grads) {
                            dst = dense_grads[t] + row * D;
                          } else {
                            const int64_t k = cursor[part * tables.num_tables + t]++;
                            sparse_rows[t][k] = row;
                            dst = sparse_values[t] + k * D;
                          }
                          std::memcpy(dst, g, D * sizeof(float));
                        },
                        [](int64_t, int64_t) {});
}

// One SGD step of one row: w -= step * go (split-SGD: on the rebuilt fp32 master).
template <typename weight_t>
inline void sgd_row(weight_t* __restrict w, uint16_t* __restrict trail, const float* __restrict go,
                    float step, int64_t D) {
  if constexpr (std::is_same_v<weight_t, uint16_t>) {
    int64_t d0 = 0;
    // 16 at a time in vector types: the scalar loop below did not vectorize and cost ~100 ns
    // a row (6x fp32's update).
    for (; d0 + 16 <= D; d0 += 16) {
      vu16x16 hi, lo;
      std::memcpy(&hi, w + d0, sizeof hi);
      std::memcpy(&lo, trail + d0, sizeof lo);
      vu32x16 bits = (__builtin_convertvector(hi, vu32x16) << 16) | __builtin_convertvector(lo, vu32x16);
      const vf16 x = reinterpret_cast<vf16>(bits) - step * load16(go + d0);
      bits = reinterpret_cast<vu32x16>(x);
      hi = __builtin_convertvector(bits >> 16, vu16x16);
      lo = __builtin_convertvector(bits & 0xFFFFu, vu16x16);
      std::memcpy(w + d0, &hi, sizeof hi);
      std::memcpy(trail + d0, &lo, sizeof lo);
    }
    for (int64_t d = d0; d < D; ++d) {
      uint32_t bits = (static_cast<uint32_t>(w[d]) << 16) | trail[d];
      float x;
      std::memcpy(&x, &bits, 4);
      x -= step * go[d];
      std::memcpy(&bits, &x, 4);
      w[d] = static_cast<uint16_t>(bits >> 16);
      trail[d] = static_cast<uint16_t>(bits & 0xFFFFu);
    }
  } else {
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) w[d] -= step * go[d];
  }
}

template <typename index_t, typename weight_t>
void embedding_bag_sgd(const Tables& tables, const Bags<index_t>& bags, const float* grad_out,
                       weight_t* const* weights, const UpdateParams& u, int num_threads) {
  const int64_t T = tables.num_tables, B = bags.batch_size, width = tables.output_width;
  std::vector<uint64_t> row_base(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) row_base[t + 1] = row_base[t] + tables.rows[t];
  const int parts = std::max(1, num_threads);
  const bool split = std::is_same_v<weight_t, uint16_t>;
#pragma omp parallel num_threads(parts)
  {
    const int team = omp_get_num_threads();
    for (int part = omp_get_thread_num(); part < parts; part += team) {
      auto mine = [&](uint64_t key) { return parts == 1 || row_owner(key, parts) == part; };
      for (int64_t bag = 0; bag < T * B; ++bag) {
        const int64_t t = bag / B, begin = bags.offsets[bag], end = bags.offsets[bag + 1];
        if (begin == end) continue;
        const int64_t D = tables.dims[t], pad = tables.padding_idx[t], table_end = bags.offsets[(t + 1) * B];
        const uint64_t base = row_base[t];
        const int64_t distance = prefetch_distance(D * static_cast<int64_t>(sizeof(weight_t)));
        float scale = 1.f;
        if (bags.pooling == Pooling::mean) {
          int64_t len = 0;
          for (int64_t j = begin; j < end; ++j) len += static_cast<int64_t>(bags.ids[j]) != pad;
          scale = len > 0 ? 1.f / len : 1.f;
        }
        const float* go = grad_out + (bag % B) * width + tables.output_offsets[t];
        for (int64_t j = begin; j < end; ++j) {
          if (j + distance < table_end) {
            const int64_t ahead = static_cast<int64_t>(bags.ids[j + distance]);
            if (ahead != pad && mine(base + ahead)) {
              prefetch_row(weights[t] + ahead * D, D, 1);
              if (split) prefetch_row(u.trail[t] + ahead * D, D, 1);
            }
          }
          const int64_t id = static_cast<int64_t>(bags.ids[j]);
          if (id == pad || !mine(base + id)) continue;
          const float step = u.lr * scale * (bags.per_sample_weights ? bags.per_sample_weights[j] : 1.f);
          sgd_row(weights[t] + id * D, split ? u.trail[t] + id * D : nullptr, go, step, D);
        }
      }
    }
  }
}

template <typename index_t, typename weight_t>
void embedding_bag_update(const Tables& tables, const Bags<index_t>& bags,
                          const GradientPlan& plan, const float* grad_out, const int64_t* argmax,
                          weight_t* const* weights, const UpdateParams& u) {
  const float lr = u.lr, eps = u.eps;
  for_each_row_gradient(
      tables, bags, plan, grad_out, argmax,
      [&](int, int64_t t, int64_t row, const float* __restrict g, int64_t D) {
        weight_t* __restrict w = weights[t] + row * D;
        if constexpr (std::is_same_v<weight_t, uint16_t>) {
          sgd_row(w, u.trail[t] + row * D, g, lr, D);
        } else if (u.kind == Update::sgd) {
          sgd_row(w, nullptr, g, lr, D);
        } else if (u.kind == Update::rowwise_adagrad) {
          float sq = 0.f;
#pragma omp simd reduction(+ : sq)
          for (int64_t d = 0; d < D; ++d) sq += g[d] * g[d];
          float& state = u.state[t][row];
          state += sq / static_cast<float>(D);
          const float step = lr / (std::sqrt(state) + eps);
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) w[d] -= step * g[d];
        } else {  // adagrad
          float* __restrict s = u.state[t] + row * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) {
            s[d] += g[d] * g[d];
            w[d] -= lr * g[d] / (std::sqrt(s[d]) + eps);
          }
        }
      },
      [&](int64_t t, int64_t row) {
        const int64_t D = tables.dims[t];
        prefetch_row(weights[t] + row * D, D, 1);
        if (u.kind == Update::split_sgd) prefetch_row(u.trail[t] + row * D, D, 1);
        if (u.kind == Update::adagrad) prefetch_row(u.state[t] + row * D, D, 1);
        if (u.kind == Update::rowwise_adagrad) __builtin_prefetch(u.state[t] + row, 1, 3);
      });
}

#define DLRMX_INSTANTIATE(I)                                                                      \
  template void embedding_bag_forward<I, float>(const Tables&, const Bags<I>&,                    \
                                                const float* const*, float*, int64_t*, int);      \
  template void embedding_bag_forward<I, uint16_t>(const Tables&, const Bags<I>&,                 \
                                                   const uint16_t* const*, float*, int64_t*, int); \
  template void embedding_bag_grad<I>(const Tables&, const Bags<I>&, const GradientPlan&,         \
                                      const float*, const int64_t*, float* const*,                \
                                      int64_t* const*, float* const*);                            \
  template void embedding_bag_sgd<I, float>(const Tables&, const Bags<I>&, const float*,          \
                                            float* const*, const UpdateParams&, int);             \
  template void embedding_bag_sgd<I, uint16_t>(const Tables&, const Bags<I>&, const float*,       \
                                               uint16_t* const*, const UpdateParams&, int);       \
  template void embedding_bag_update<I, float>(const Tables&, const Bags<I>&,                     \
                                               const GradientPlan&, const float*, const int64_t*, \
                                               float* const*, const UpdateParams&);               \
  template void embedding_bag_update<I, uint16_t>(const Tables&, const Bags<I>&,                  \
                                                  const GradientPlan&, const float*,              \
                                                  const int64_t*, uint16_t* const*,               \
                                                  const UpdateParams&);
DLRMX_INSTANTIATE(int32_t)
DLRMX_INSTANTIATE(int64_t)

}  // namespace dlrmx::cpu::DLRMX_ISA_NS

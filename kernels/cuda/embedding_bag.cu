// Multi-table embedding bags on CUDA: forward pooling (sum / mean / max, per-sample weights,
// padding_idx, fp32 or bf16 tables) and backward (dense or coalesced sparse weight gradients, or
// the fused sparse optimizer update). Same semantics, checks and messages as the CPU kernels
// (kernels/cpu/per_isa/embedding_bag.cpp, csrc/embedding.cpp).
//
// Forward: one warp per bag (t, b); lanes own columns, ids are walked in order, four rows loaded
// ahead, so every output element is summed in the CPU's order (bit-equal without per-sample
// weights; with them both use fused multiply-adds).
// Backward: every lookup gets the key row_base[t] + id (padding and bad ids a sentinel past the
// last row); a stable radix sort (cub) groups the lookups of each distinct row in lookup order;
// run-length encoding gives the runs; one warp per run reduces its row's gradient in that fixed
// order in fp32 and then writes it (gradients) or applies the optimizer once (update). No
// floating-point atomics: the result does not depend on scheduling. SGD and split-SGD with
// sum/mean pooling apply each lookup in turn, as the CPU does (SGD is linear in the gradient).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_run_length_encode.cuh>
#include <cub/device/device_scan.cuh>

#include <cstdint>
#include <cstring>
#include <vector>

#include "common.cuh"

namespace dlrmx::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = 32 * kWarpsPerBlock;
constexpr int kPerLane = 4;                   // columns a lane owns in one pass
constexpr int64_t kChunk = 32 * kPerLane;     // columns a warp covers in one pass
constexpr int kAhead = 4;                     // lookups loaded ahead of the in-order reduction
enum Pool : int32_t { kSum = 0, kMean = 1, kMax = 2 };

// Per table, on the device.
struct TableMeta {
  const void* weight;  // [rows, dim], contiguous
  int64_t rows, dim, pad, col, row_base;  // row_base: the first key of the table's rows
  int32_t vec;  // rows are read 4 elements at a time (dim % 4 == 0 and the table aligned)
  int32_t unused;
};

// Error record words (int64): the batch's problems, then the plan's sizes.
enum : int64_t {
  kRecOffsetsStart = 0,  // 0 if offsets[0] != 0
  kRecOffsetsDecrease,   // first i with offsets[i] < offsets[i-1]
  kRecOffsetsEnd,        // nbags if offsets[nbags] != num_ids
  kRecBadId,             // first position of an id outside its table
  kRecNumRuns,           // runs of equal keys (the sentinel run included)
  kRecPlanKey,           // which batch the sparse plan was made for
  kRecHeader = 8         // then table_run_start[T + 1]: the first run of each table
};

// ---- the batch, as csrc/embedding.cpp reads it ------------------------------------------------

template <typename T>
T* address(int64_t v) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(v));
}

struct Batch {
  int64_t T = 0, B = 0, n = 0, nbags = 0, num_offsets = 0, width = 0, total_rows = 0;
  int32_t weight_dtype = 0, ids_dtype = 0, pooling = 0;
  const void* ids = nullptr;
  const int64_t* offsets = nullptr;
  const float* psw = nullptr;
  void* const* weights = nullptr;
  const int64_t *rows = nullptr, *dims = nullptr, *padding = nullptr;
  std::vector<TableMeta> meta;
  int bits = 1;  // key bits: keys (and the sentinel, total_rows) are below 2^bits
  bool bf16() const { return weight_dtype == DLRMX_BF16; }
  bool ids32() const { return ids_dtype == DLRMX_I32; }
  int64_t weight_bytes(int64_t t) const { return rows[t] * dims[t] * (bf16() ? 2 : 4); }
};

Batch make_batch(const int64_t* h) {
  CHECK_VALUE(h != nullptr, "no batch description");
  Batch b;
  b.T = h[DLRMX_BAGS_NUM_TABLES];
  CHECK_VALUE(b.T > 0, "need at least one table");
  for (int i : {DLRMX_BAGS_WEIGHT_DTYPE, DLRMX_BAGS_IDS_DTYPE, DLRMX_BAGS_POOLING})
    CHECK_VALUE(h[i] >= INT32_MIN && h[i] <= INT32_MAX, "batch description field ", i,
                " out of range");
  b.weight_dtype = static_cast<int32_t>(h[DLRMX_BAGS_WEIGHT_DTYPE]);
  b.ids_dtype = static_cast<int32_t>(h[DLRMX_BAGS_IDS_DTYPE]);
  b.pooling = static_cast<int32_t>(h[DLRMX_BAGS_POOLING]);
  b.ids = address<const void>(h[DLRMX_BAGS_IDS]);
  b.n = h[DLRMX_BAGS_NUM_IDS];
  b.offsets = address<const int64_t>(h[DLRMX_BAGS_OFFSETS]);
  b.num_offsets = h[DLRMX_BAGS_NUM_OFFSETS];
  b.psw = address<const float>(h[DLRMX_BAGS_PER_SAMPLE_WEIGHTS]);
  b.B = h[DLRMX_BAGS_BATCH_SIZE];
  const int64_t* tables = h + DLRMX_BAGS_HEADER;
  b.weights = reinterpret_cast<void* const*>(tables);
  b.rows = tables + b.T;
  b.dims = tables + 2 * b.T;
  b.padding = tables + 3 * b.T;
  const int64_t T = b.T;

  CHECK_VALUE(b.pooling >= 0 && b.pooling <= 2, "pooling must be 0 (sum), 1 (mean) or 2 (max)");
  CHECK_TYPE(b.weight_dtype == DLRMX_F32 || b.weight_dtype == DLRMX_BF16,
             "weights must be float32 or bfloat16");
  CHECK_TYPE(b.ids_dtype == DLRMX_I32 || b.ids_dtype == DLRMX_I64, "ids must be int32 or int64");
  CHECK_VALUE(b.B >= 0, "batch_size must be >= 0, got ", b.B);
  CHECK_VALUE(!__builtin_mul_overflow(T, b.B, &b.nbags) && b.nbags < INT64_MAX, "batch_size ",
              b.B, " is too large: T*B+1 offsets (T=", T, " tables) overflow int64; offsets has ",
              b.num_offsets, " entries");
  CHECK_VALUE(b.num_offsets == b.nbags + 1, "offsets must have T*B+1 = ", b.nbags + 1,
              " entries (T=", T, " tables, B=batch_size=", b.B, "), got ", b.num_offsets);
  CHECK_VALUE(b.n >= 0 && b.n < (int64_t(1) << 32) && b.nbags < (int64_t(1) << 32),
              "a batch may hold at most 2^32 ids and 2^32 bags");
  // cub's sort and run-length encoding count items in int here.
  CHECK_VALUE(b.n <= INT32_MAX, "the CUDA kernels take at most 2^31 - 1 ids per batch, got ", b.n);
  CHECK_VALUE(b.psw == nullptr || b.pooling == kSum,
              "per_sample_weights are only supported with mode='sum'");

  const char* op = "embedding_bag";
  const int elem = b.bf16() ? 2 : 4;
  b.meta.resize(T);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t rows = b.rows[t], pad = b.padding[t];
    CHECK_VALUE(rows >= 0 && b.dims[t] >= 0, "weights[", t, "] has negative sizes");
    CHECK_VALUE(pad == -1 || (pad >= 0 && pad < rows), "padding_idx[", t, "] = ", pad,
                " must be -1 (none) or a row of table ", t, " (which has ", rows, " rows)");
    const uintptr_t w = reinterpret_cast<uintptr_t>(b.weights[t]);
    b.meta[t] = {b.weights[t], rows, b.dims[t], pad, b.width, b.total_rows,
                 (b.dims[t] % 4 == 0 && w % (4 * elem) == 0) ? 1 : 0, 0};
    b.width = checks::add_size(b.width, b.dims[t], op, "the output width (sum of dims)");
    checks::mul_size(rows, b.dims[t], op, "a table's size (rows * dim)");
    b.total_rows = checks::add_size(b.total_rows, rows, op, "the total number of rows");
  }
  checks::mul_size(b.B, b.width, op, "the output size (batch_size * sum of dims)");
  while (b.bits < 64 && (static_cast<uint64_t>(b.total_rows) >> b.bits) != 0) ++b.bits;
  return b;
}

// The batch's problems, in the CPU's order: offsets (start, decrease, end), then ids.
void raise_bags_error(const Batch& b, const int64_t* rec, cudaStream_t stream) {
  if (rec[kRecOffsetsStart] != kNone)
    checks::fail(DLRMX_VALUE_ERROR, "offsets must start at 0, got offsets[0] = ",
                 fetch_value(b.offsets, stream));
  if (rec[kRecOffsetsDecrease] != kNone) {
    const int64_t i = rec[kRecOffsetsDecrease];
    checks::fail(DLRMX_VALUE_ERROR, "offsets must not decrease: offsets[", i, "] = ",
                 fetch_value(b.offsets + i, stream), " < offsets[", i - 1, "] (table ",
                 (i - 1) / b.B, ")");
  }
  if (rec[kRecOffsetsEnd] != kNone)
    checks::fail(DLRMX_VALUE_ERROR, "offsets must end at the number of ids (", b.n,
                 "), got offsets[", b.nbags, "] = ", fetch_value(b.offsets + b.nbags, stream));
  if (rec[kRecBadId] != kNone) {
    const int64_t j = rec[kRecBadId];
    const int64_t id = b.ids32()
        ? fetch_value(static_cast<const int32_t*>(b.ids) + j, stream)
        : fetch_value(static_cast<const int64_t*>(b.ids) + j, stream);
    const int64_t t = table_of(b.offsets, b.B, b.T, j, stream);
    checks::fail(DLRMX_INDEX_ERROR, "id ", id, " out of range for table ", t, " with ", b.rows[t],
                 " rows, at position ", j, " of ids");
  }
}

// ---- device helpers ----------------------------------------------------------------------------

// Bag `bag`'s ids, clamped to [0, n] so that unchecked (possibly bad) offsets never read outside
// the ids; a batch with bad offsets is refused before its results are used.
__device__ __forceinline__ void bag_range(const int64_t* off, int64_t bag, int64_t n,
                                          int64_t& begin, int64_t& end) {
  begin = min(max(off[bag], int64_t{0}), n);
  end = min(max(off[bag + 1], begin), n);
}

__global__ void check_offsets_kernel(const int64_t* __restrict__ off, int64_t nbags,
                                     int64_t num_ids, int64_t* rec) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i <= nbags;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t v = off[i];
    if (i == 0 && v != 0) record_min(rec + kRecOffsetsStart, 0);
    if (i > 0 && v < off[i - 1]) record_min(rec + kRecOffsetsDecrease, i);
    if (i == nbags && v != num_ids) record_min(rec + kRecOffsetsEnd, i);
  }
}

// Four consecutive elements of a row as fp32 (the row is 4-aligned there).
__device__ __forceinline__ void load_vec4(const float* p, float x[4]) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
}
__device__ __forceinline__ void load_vec4(const uint16_t* p, float x[4]) {
  const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));  // little-endian: low half first
  x[0] = __uint_as_float(v.x << 16), x[1] = __uint_as_float(v.x & 0xFFFF0000u);
  x[2] = __uint_as_float(v.y << 16), x[3] = __uint_as_float(v.y & 0xFFFF0000u);
}

// The column of a lane's k-th element in the pass starting at c0: 4 adjacent columns per lane
// (vector loads) or one column every 32 (any dim, any alignment).
template <bool kVec>
__device__ __forceinline__ int64_t lane_col(int64_t c0, int lane, int k) {
  return kVec ? c0 + 4 * lane + k : c0 + lane + 32 * k;
}

template <bool kVec, typename W>
__device__ __forceinline__ void load_row(const W* row, int64_t c0, int lane, int64_t D, float x[4]) {
  if (kVec) {
    if (c0 + 4 * lane < D) load_vec4(row + c0 + 4 * lane, x);
  } else {
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t d = lane_col<false>(c0, lane, k);
      if (d < D) x[k] = load_float(__ldg(row + d));
    }
  }
}

// ---- forward ------------------------------------------------------------------------------------

template <bool kVec, typename I, typename W>
__device__ void pool_bag(const TableMeta& m, const I* __restrict__ ids, int64_t begin, int64_t end,
                         const float* __restrict__ psw, int32_t pooling, float* __restrict__ out,
                         int64_t* __restrict__ argmax, int64_t* rec, int lane) {
  const W* table = static_cast<const W*>(m.weight);
  const int64_t D = m.dim;
  if (D == 0) {  // nothing to pool, but the ids are still checked
    for (int64_t j = begin + lane; j < end; j += 32) {
      const int64_t v = static_cast<int64_t>(ids[j]);
      if (v < 0 || v >= m.rows) record_min(rec + kRecBadId, j);
    }
    return;
  }
  for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
    float acc[kPerLane] = {0.f, 0.f, 0.f, 0.f};
    int64_t arg[kPerLane] = {-1, -1, -1, -1};
    int64_t count = 0;
    for (int64_t j0 = begin; j0 < end; j0 += kAhead) {
      float x[kAhead][kPerLane];
      float w[kAhead];
      int64_t id[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) x[u][k] = 0.f;
        id[u] = -1;
        w[u] = 1.f;
        const int64_t j = j0 + u;
        if (j >= end) continue;
        const int64_t v = static_cast<int64_t>(ids[j]);
        if (v < 0 || v >= m.rows) {
          if (c0 == 0 && lane == 0) record_min(rec + kRecBadId, j);
          continue;
        }
        if (v == m.pad) continue;
        id[u] = v;
        if (psw != nullptr) w[u] = psw[j];
        load_row<kVec>(table + v * D, c0, lane, D, x[u]);
      }
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        if (id[u] < 0) continue;
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) {
          if (pooling == kMax) {
            // torch's rule: the first row starts the maximum, a later one wins only if greater.
            if (count == 0 || x[u][k] > acc[k]) acc[k] = x[u][k], arg[k] = id[u];
          } else if (psw != nullptr) {
            acc[k] = __fmaf_rn(w[u], x[u][k], acc[k]);
          } else {
            acc[k] = __fadd_rn(acc[k], x[u][k]);
          }
        }
        ++count;
      }
    }
    float scale = 1.f;
    if (pooling == kMean && count > 0) scale = __fdiv_rn(1.f, static_cast<float>(count));
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
      const int64_t d = lane_col<kVec>(c0, lane, k);
      if (d >= D) continue;
      if (pooling == kMax) {
        out[d] = count == 0 ? 0.f : acc[k];  // an empty bag pools to 0, with no argmax row
        argmax[d] = count == 0 ? -1 : arg[k];
      } else {
        out[d] = __fmul_rn(acc[k], scale);
      }
    }
  }
}

template <typename I, typename W>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const TableMeta* __restrict__ meta, int64_t B, int64_t nbags, int64_t width,
               const I* __restrict__ ids, int64_t n, const int64_t* __restrict__ offsets,
               const float* __restrict__ psw, int32_t pooling, float* __restrict__ out,
               int64_t* __restrict__ argmax, int64_t* rec) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  for (int64_t bag = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; bag < nbags;
       bag += warps) {
    const int64_t t = bag / B, b = bag % B;
    const TableMeta m = meta[t];
    int64_t begin, end;
    bag_range(offsets, bag, n, begin, end);
    float* o = out + b * width + m.col;
    int64_t* am = argmax != nullptr ? argmax + b * width + m.col : nullptr;
    if (m.vec)
      pool_bag<true, I, W>(m, ids, begin, end, psw, pooling, o, am, rec, lane);
    else
      pool_bag<false, I, W>(m, ids, begin, end, psw, pooling, o, am, rec, lane);
  }
}

// ---- the backward plan: lookups grouped by destination row -------------------------------------

template <typename I>
__global__ void __launch_bounds__(kThreads)
plan_keys_kernel(const TableMeta* __restrict__ meta, int64_t B, int64_t nbags,
                 const I* __restrict__ ids, int64_t n, const int64_t* __restrict__ offsets,
                 int32_t pooling, uint64_t sentinel, uint64_t* __restrict__ keys,
                 uint32_t* __restrict__ vals, uint32_t* __restrict__ bag_of,
                 float* __restrict__ bag_scale, int64_t* rec) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  for (int64_t bag = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; bag < nbags;
       bag += warps) {
    const TableMeta m = meta[bag / B];
    int64_t begin, end;
    bag_range(offsets, bag, n, begin, end);
    int64_t len = 0;
    for (int64_t j = begin + lane; j < end; j += 32) {
      const int64_t id = static_cast<int64_t>(ids[j]);
      uint64_t key = sentinel;
      if (id < 0 || id >= m.rows) {
        record_min(rec + kRecBadId, j);
      } else if (id != m.pad) {
        key = static_cast<uint64_t>(m.row_base + id);
        ++len;
      }
      keys[j] = key;
      vals[j] = static_cast<uint32_t>(j);
      bag_of[j] = static_cast<uint32_t>(bag);
    }
    len = warp_sum(len);
    // 1/len for mean pooling (non-padding ids), else 1: the CPU plan's bag_scale.
    if (lane == 0)
      bag_scale[bag] = (pooling == kMean && len > 0) ? __fdiv_rn(1.f, static_cast<float>(len)) : 1.f;
  }
}

// table_run_start[t] = the first run whose key is >= row_base[t] (t = T: the sentinel's run, so
// table_run_start[T] is the number of real runs).
__global__ void table_starts_kernel(const TableMeta* __restrict__ meta, int64_t T,
                                    uint64_t sentinel, const uint64_t* __restrict__ unique,
                                    int64_t* rec) {
  const int64_t t = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (t > T) return;
  const uint64_t target = t < T ? static_cast<uint64_t>(meta[t].row_base) : sentinel;
  int64_t lo = 0, hi = rec[kRecNumRuns];
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (unique[mid] < target) lo = mid + 1;
    else hi = mid;
  }
  rec[kRecHeader + t] = lo;
}

__global__ void set_word_kernel(int64_t* word, int64_t value) { *word = value; }

// ---- backward: one warp per distinct row ------------------------------------------------------

enum Mode : int { kDenseGrad = 0, kSparseGrad = 1, kUpdate = 2, kSgdPerLookup = 3 };

struct RowArgs {
  const TableMeta* meta;
  int64_t T, B, width, runs;
  const uint64_t* unique;
  const int* counts;
  const int* starts;
  const uint32_t* vals;
  const uint32_t* bag_of;
  const float* bag_scale;
  const float* psw;
  const float* grad_out;
  const int64_t* argmax;
  const int64_t* table_run_start;  // [T + 1]
  void* const* out0;  // per table: dense grads, sparse rows, or optimizer state / split trails
  void* const* out1;  // per table: sparse values
  int32_t pooling, kind;
  float lr, eps;
};

// g = this lane's columns (pass c0) of one row's gradient: its lookups i in [first, last) in
// order, as the CPU's for_each_row_gradient sums them.
__device__ void row_gradient(const RowArgs& a, int64_t first, int64_t last, int64_t row,
                             int64_t D, int64_t col, int64_t c0, int lane, float g[kPerLane]) {
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) g[k] = 0.f;
  if (a.pooling == kMax) {
    uint32_t prev = 0xFFFFFFFFu;
    for (int64_t i = first; i < last; ++i) {
      const uint32_t bag = a.bag_of[a.vals[i]];
      if (bag == prev) continue;  // a row repeated in a bag still won each column at most once
      prev = bag;
      const int64_t base = (bag % a.B) * a.width + col;
      const float* go = a.grad_out + base;
      const int64_t* am = a.argmax + base;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int64_t d = c0 + lane + 32 * k;
        if (d < D) g[k] = __fadd_rn(g[k], am[d] == row ? go[d] : 0.f);
      }
    }
    return;
  }
  for (int64_t i0 = first; i0 < last; i0 += kAhead) {
    float s[kAhead], x[kAhead][kPerLane];
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      const int64_t i = i0 + u;
      s[u] = 0.f;
      if (i >= last) continue;
      const uint32_t j = a.vals[i], bag = a.bag_of[j];
      s[u] = __fmul_rn(a.psw != nullptr ? a.psw[j] : 1.f, a.bag_scale[bag]);
      const float* go = a.grad_out + (bag % a.B) * a.width + col;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) {
        const int64_t d = c0 + lane + 32 * k;
        x[u][k] = d < D ? go[d] : 0.f;
      }
    }
#pragma unroll
    for (int u = 0; u < kAhead; ++u) {
      if (i0 + u >= last) break;
#pragma unroll
      for (int k = 0; k < kPerLane; ++k) g[k] = __fmaf_rn(s[u], x[u][k], g[k]);
    }
  }
}

// Split-SGD: the fp32 master is the bf16 upper half and the int16 trail; split again by
// truncation (kernels/cpu/per_isa/embedding_bag.cpp, sgd_row).
__device__ __forceinline__ float join(uint16_t hi, uint16_t lo) {
  return __uint_as_float((static_cast<uint32_t>(hi) << 16) | lo);
}
__device__ __forceinline__ void split(float x, uint16_t* hi, uint16_t* lo) {
  const uint32_t bits = __float_as_uint(x);
  *hi = static_cast<uint16_t>(bits >> 16);
  *lo = static_cast<uint16_t>(bits & 0xFFFFu);
}

template <typename W>
__device__ __forceinline__ float load_master(const W* w, const uint16_t* trail, int64_t d) {
  if constexpr (sizeof(W) == 2) return join(w[d], trail[d]);
  else return w[d];
}
template <typename W>
__device__ __forceinline__ void store_master(W* w, uint16_t* trail, int64_t d, float x) {
  if constexpr (sizeof(W) == 2) split(x, &w[d], &trail[d]);
  else w[d] = x;
}

template <typename W, int kMode>
__global__ void __launch_bounds__(kThreads) row_kernel(const RowArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * kWarpsPerBlock;
  for (int64_t r = blockIdx.x * int64_t{kWarpsPerBlock} + threadIdx.x / 32; r < a.runs;
       r += warps) {
    // The table of run r: the last t with table_run_start[t] <= r (empty tables share a start).
    int64_t lo = 0, hi = a.T;
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      if (a.table_run_start[mid] <= r) lo = mid;
      else hi = mid;
    }
    const int64_t t = lo;
    const TableMeta m = a.meta[t];
    const int64_t row = static_cast<int64_t>(a.unique[r]) - m.row_base, D = m.dim, col = m.col;
    const int64_t first = a.starts[r], last = first + a.counts[r];
    float g[kPerLane];

    if constexpr (kMode == kDenseGrad || kMode == kSparseGrad) {
      float* dst;
      if constexpr (kMode == kDenseGrad) {
        dst = static_cast<float*>(a.out0[t]) + row * D;
      } else {
        const int64_t k = r - a.table_run_start[t];
        if (lane == 0) static_cast<int64_t*>(a.out0[t])[k] = row;
        dst = static_cast<float*>(a.out1[t]) + k * D;
      }
      for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
        row_gradient(a, first, last, row, D, col, c0, lane, g);
#pragma unroll
        for (int k = 0; k < kPerLane; ++k) {
          const int64_t d = c0 + lane + 32 * k;
          if (d < D) dst[d] = g[k];
        }
      }
    } else {
      W* w = static_cast<W*>(const_cast<void*>(m.weight)) + row * D;
      uint16_t* trail = sizeof(W) == 2 ? static_cast<uint16_t*>(a.out0[t]) + row * D : nullptr;
      if constexpr (kMode == kSgdPerLookup) {
        // Each lookup in turn: w -= (lr * scale * psw) * grad_out, as embedding_bag_sgd does.
        for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
          float x[kPerLane];
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) {
            const int64_t d = c0 + lane + 32 * k;
            x[k] = d < D ? load_master(w, trail, d) : 0.f;
          }
          for (int64_t i = first; i < last; ++i) {
            const uint32_t j = a.vals[i], bag = a.bag_of[j];
            const float step = __fmul_rn(__fmul_rn(a.lr, a.bag_scale[bag]),
                                         a.psw != nullptr ? a.psw[j] : 1.f);
            const float* go = a.grad_out + (bag % a.B) * a.width + col;
#pragma unroll
            for (int k = 0; k < kPerLane; ++k) {
              const int64_t d = c0 + lane + 32 * k;
              if (d < D) x[k] = __fmaf_rn(-step, go[d], x[k]);
            }
          }
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) {
            const int64_t d = c0 + lane + 32 * k;
            if (d < D) store_master(w, trail, d, x[k]);
          }
        }
      } else if constexpr (sizeof(W) == 2) {
        // split_sgd with max pooling: the summed gradient, one step on the fp32 master.
        for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
          row_gradient(a, first, last, row, D, col, c0, lane, g);
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) {
            const int64_t d = c0 + lane + 32 * k;
            if (d < D) store_master(w, trail, d, __fmaf_rn(-a.lr, g[k], load_master(w, trail, d)));
          }
        }
      } else if (a.kind == DLRMX_ROWWISE_ADAGRAD) {
        // state += mean(g * g); w -= lr / (sqrt(state) + eps) * g. The mean needs every column
        // first: dims beyond one pass reduce the gradient twice (same order, same values).
        float sq = 0.f;
        const bool one_pass = D <= kChunk;
        for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
          row_gradient(a, first, last, row, D, col, c0, lane, g);
#pragma unroll
          for (int k = 0; k < kPerLane; ++k)
            if (c0 + lane + 32 * k < D) sq = __fmaf_rn(g[k], g[k], sq);
        }
        sq = warp_sum(sq);
        float* state = static_cast<float*>(a.out0[t]) + row;
        const float s = __fadd_rn(*state, __fdiv_rn(sq, static_cast<float>(D)));
        const float step = __fdiv_rn(a.lr, __fadd_rn(__fsqrt_rn(s), a.eps));
        __syncwarp();  // every lane has read the old state
        if (lane == 0) *state = s;
        for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
          if (!one_pass) row_gradient(a, first, last, row, D, col, c0, lane, g);
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) {
            const int64_t d = c0 + lane + 32 * k;
            if (d < D) w[d] = __fmaf_rn(-step, g[k], w[d]);
          }
        }
      } else {
        for (int64_t c0 = 0; c0 < D; c0 += kChunk) {
          row_gradient(a, first, last, row, D, col, c0, lane, g);
#pragma unroll
          for (int k = 0; k < kPerLane; ++k) {
            const int64_t d = c0 + lane + 32 * k;
            if (d >= D) continue;
            if (a.kind == DLRMX_ADAGRAD) {
              // s += g * g; w -= lr * g / (sqrt(s) + eps)
              float* s = static_cast<float*>(a.out0[t]) + row * D + d;
              const float sd = __fmaf_rn(g[k], g[k], *s);
              *s = sd;
              w[d] = __fsub_rn(w[d], __fdiv_rn(__fmul_rn(a.lr, g[k]),
                                                __fadd_rn(__fsqrt_rn(sd), a.eps)));
            } else {  // sgd with max pooling: the summed gradient, one step
              w[d] = __fmaf_rn(-a.lr, g[k], w[d]);
            }
          }
        }
      }
    }
  }
}

// ---- host side ----------------------------------------------------------------------------------

struct Layout {
  int64_t* rec = nullptr;
  TableMeta* meta = nullptr;
  void** out0 = nullptr;
  void** out1 = nullptr;
  uint64_t *keys_in = nullptr, *keys_out = nullptr, *unique = nullptr;
  uint32_t *vals_in = nullptr, *vals_out = nullptr, *bag_of = nullptr;
  int *counts = nullptr, *starts = nullptr;
  float* bag_scale = nullptr;
  void* temp = nullptr;
  size_t temp_bytes = 0;
};

size_t cub_temp_bytes(const Batch& b) {
  const int n = static_cast<int>(b.n);
  size_t sort = 0, rle = 0, scan = 0;
  DLRMX_CUDA_TRY(cub::DeviceRadixSort::SortPairs(
      nullptr, sort, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr), n, 0, b.bits));
  DLRMX_CUDA_TRY(cub::DeviceRunLengthEncode::Encode(
      nullptr, rle, static_cast<const uint64_t*>(nullptr), static_cast<uint64_t*>(nullptr),
      static_cast<int*>(nullptr), static_cast<int64_t*>(nullptr), n));
  DLRMX_CUDA_TRY(cub::DeviceScan::ExclusiveSum(nullptr, scan, static_cast<const int*>(nullptr),
                                               static_cast<int*>(nullptr), n));
  return std::max(sort, std::max(rle, scan));
}

Layout layout(Arena& arena, const Batch& b, int32_t op) {
  Layout L;
  L.rec = arena.take<int64_t>(kRecHeader + b.T + 1);
  L.meta = arena.take<TableMeta>(b.T);
  L.out0 = arena.take<void*>(b.T);
  L.out1 = arena.take<void*>(b.T);
  if (op == DLRMX_CUDA_FORWARD || b.n == 0) return L;
  L.keys_in = arena.take<uint64_t>(b.n);
  L.keys_out = arena.take<uint64_t>(b.n);
  L.unique = arena.take<uint64_t>(b.n);
  L.vals_in = arena.take<uint32_t>(b.n);
  L.vals_out = arena.take<uint32_t>(b.n);
  L.bag_of = arena.take<uint32_t>(b.n);
  L.counts = arena.take<int>(b.n);
  L.starts = arena.take<int>(b.n);
  L.bag_scale = arena.take<float>(b.nbags);
  L.temp_bytes = cub_temp_bytes(b);
  L.temp = arena.take_bytes(static_cast<int64_t>(L.temp_bytes));
  return L;
}

int64_t workspace_bytes(const Batch& b, int32_t op) {
  Arena measure;
  layout(measure, b, op);
  return measure.used();
}

// The host-side copy of the per-table data (meta, then two pointer lists), sent in one copy.
void upload_tables(const Batch& b, const Layout& L, std::vector<char>& staging,
                   const std::vector<void*>& out0, const std::vector<void*>& out1,
                   cudaStream_t stream) {
  // meta, out0 and out1 are adjacent in the arena (each 256-aligned): copy the span.
  const char* first = reinterpret_cast<const char*>(L.meta);
  const char* end = reinterpret_cast<const char*>(L.out1 + b.T);
  staging.assign(end - first, 0);
  std::memcpy(staging.data(), b.meta.data(), b.T * sizeof(TableMeta));
  if (!out0.empty())
    std::memcpy(staging.data() + (reinterpret_cast<const char*>(L.out0) - first), out0.data(),
                b.T * sizeof(void*));
  if (!out1.empty())
    std::memcpy(staging.data() + (reinterpret_cast<const char*>(L.out1) - first), out1.data(),
                b.T * sizeof(void*));
  DLRMX_CUDA_TRY(cudaMemcpyAsync(L.meta, staging.data(), staging.size(), cudaMemcpyHostToDevice,
                                 stream));
}

void launch_check_offsets(const Batch& b, const Layout& L, cudaStream_t stream) {
  fill_none(L.rec, kRecHeader, stream);
  check_offsets_kernel<<<blocks_for(b.nbags + 1, 256), 256, 0, stream>>>(b.offsets, b.nbags, b.n,
                                                                          L.rec);
  DLRMX_CUDA_LAUNCHED("check_offsets_kernel");
}

// Builds the plan (keys, sort, runs, table starts), copies the record back and raises the
// batch's first problem. Returns the number of real runs (distinct rows touched).
int64_t make_plan(const Batch& b, const Layout& L, std::vector<int64_t>& rec, cudaStream_t stream) {
  launch_check_offsets(b, L, stream);
  const uint64_t sentinel = static_cast<uint64_t>(b.total_rows);
  rec.assign(kRecHeader + b.T + 1, 0);
  if (b.n > 0) {
    const unsigned grid = blocks_for(b.nbags, kWarpsPerBlock);
    if (b.ids32())
      plan_keys_kernel<int32_t><<<grid, kThreads, 0, stream>>>(
          L.meta, b.B, b.nbags, static_cast<const int32_t*>(b.ids), b.n, b.offsets, b.pooling,
          sentinel, L.keys_in, L.vals_in, L.bag_of, L.bag_scale, L.rec);
    else
      plan_keys_kernel<int64_t><<<grid, kThreads, 0, stream>>>(
          L.meta, b.B, b.nbags, static_cast<const int64_t*>(b.ids), b.n, b.offsets, b.pooling,
          sentinel, L.keys_in, L.vals_in, L.bag_of, L.bag_scale, L.rec);
    DLRMX_CUDA_LAUNCHED("plan_keys_kernel");
    const int n = static_cast<int>(b.n);
    size_t bytes = L.temp_bytes;
    DLRMX_CUDA_TRY(cub::DeviceRadixSort::SortPairs(L.temp, bytes, L.keys_in, L.keys_out, L.vals_in,
                                                   L.vals_out, n, 0, b.bits, stream));
    bytes = L.temp_bytes;
    DLRMX_CUDA_TRY(cub::DeviceRunLengthEncode::Encode(L.temp, bytes, L.keys_out, L.unique,
                                                      L.counts, L.rec + kRecNumRuns, n, stream));
    bytes = L.temp_bytes;
    DLRMX_CUDA_TRY(cub::DeviceScan::ExclusiveSum(L.temp, bytes, L.counts, L.starts, n, stream));
    table_starts_kernel<<<blocks_for(b.T + 1, 128), 128, 0, stream>>>(L.meta, b.T, sentinel,
                                                                      L.unique, L.rec);
    DLRMX_CUDA_LAUNCHED("table_starts_kernel");
    fetch(L.rec, rec.data(), kRecHeader + b.T + 1, stream);
  } else {
    fetch(L.rec, rec.data(), kRecHeader, stream);
    rec[kRecNumRuns] = 0;  // no ids: every table starts at run 0
  }
  raise_bags_error(b, rec.data(), stream);
  return b.n > 0 ? rec[kRecHeader + b.T] : 0;
}

RowArgs row_args(const Batch& b, const Layout& L, const float* grad_out, const int64_t* argmax,
                 int64_t runs) {
  RowArgs a{};
  a.meta = L.meta;
  a.T = b.T;
  a.B = b.B;
  a.width = b.width;
  a.runs = runs;
  a.unique = L.unique;
  a.counts = L.counts;
  a.starts = L.starts;
  a.vals = L.vals_out;
  a.bag_of = L.bag_of;
  a.bag_scale = L.bag_scale;
  a.psw = b.psw;
  a.grad_out = grad_out;
  a.argmax = argmax;
  a.table_run_start = L.rec + kRecHeader;
  a.out0 = L.out0;
  a.out1 = L.out1;
  a.pooling = b.pooling;
  return a;
}

template <typename W, int kMode>
void launch_rows(const RowArgs& a, cudaStream_t stream) {
  if (a.runs == 0) return;
  row_kernel<W, kMode><<<blocks_for(a.runs, kWarpsPerBlock), kThreads, 0, stream>>>(a);
  DLRMX_CUDA_LAUNCHED("row_kernel");
}

const int64_t* checked_argmax(const Batch& b, const int64_t* argmax) {
  if (b.pooling != kMax) return nullptr;
  CHECK_VALUE(argmax != nullptr || b.B * b.width == 0, "max pooling needs the forward's argmax");
  return argmax;
}

// Which batch a sparse plan was made for (its second call must describe the same one).
int64_t plan_key(const Batch& b) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  for (uint64_t v : {uint64_t(b.T), uint64_t(b.n), uint64_t(b.B), uint64_t(b.pooling),
                     uint64_t(b.ids_dtype), reinterpret_cast<uint64_t>(b.ids),
                     reinterpret_cast<uint64_t>(b.offsets), reinterpret_cast<uint64_t>(b.psw)})
    mix(v);
  for (int64_t t = 0; t < b.T; ++t) mix(b.rows[t]), mix(b.dims[t]), mix(b.padding[t]);
  return static_cast<int64_t>(h & 0x7FFFFFFFFFFFFFFFull);  // never kNone's sign
}

}  // namespace
}  // namespace dlrmx::cuda

using dlrmx::checks::guarded;
namespace dc = dlrmx::cuda;

extern "C" {

int dlrmx_cuda_embedding_bag_workspace(const int64_t* bags, int32_t op, int64_t* bytes,
                                       dlrmx_status* status) {
  return guarded(status, [&] {
    CHECK_VALUE(op >= DLRMX_CUDA_FORWARD && op <= DLRMX_CUDA_UPDATE, "unknown op code ", op);
    *bytes = dc::workspace_bytes(dc::make_batch(bags), op);
  });
}

int dlrmx_cuda_embedding_bag_forward(const int64_t* bags, float* out, int64_t* argmax,
                                     void* workspace, int64_t workspace_bytes, void* stream_ptr,
                                     dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    const Batch b = make_batch(bags);
    const cudaStream_t stream = as_stream(stream_ptr);
    int64_t* am = b.pooling == kMax ? argmax : nullptr;
    CHECK_VALUE(b.pooling != kMax || am != nullptr || b.B * b.width == 0,
                "max pooling needs an argmax buffer");
    Workspace ws(workspace, workspace_bytes, dc::workspace_bytes(b, DLRMX_CUDA_FORWARD), stream);
    Arena arena(ws.base());
    const Layout L = layout(arena, b, DLRMX_CUDA_FORWARD);
    std::vector<char> staging;
    upload_tables(b, L, staging, {}, {}, stream);
    launch_check_offsets(b, L, stream);
    if (b.nbags > 0) {  // also with width 0: the kernel checks the ids
      const unsigned grid = blocks_for(b.nbags, kWarpsPerBlock);
      auto launch = [&](auto index_tag, auto weight_tag) {
        using I = decltype(index_tag);
        using W = decltype(weight_tag);
        forward_kernel<I, W><<<grid, kThreads, 0, stream>>>(
            L.meta, b.B, b.nbags, b.width, static_cast<const I*>(b.ids), b.n, b.offsets, b.psw,
            b.pooling, out, am, L.rec);
      };
      if (b.ids32()) b.bf16() ? launch(int32_t{}, uint16_t{}) : launch(int32_t{}, float{});
      else b.bf16() ? launch(int64_t{}, uint16_t{}) : launch(int64_t{}, float{});
      DLRMX_CUDA_LAUNCHED("forward_kernel");
    }
    std::vector<int64_t> rec(kRecHeader);
    fetch(L.rec, rec.data(), kRecHeader, stream);
    raise_bags_error(b, rec.data(), stream);
  });
}

int dlrmx_cuda_embedding_bag_dense_grad(const int64_t* bags, const float* grad_out,
                                        const int64_t* argmax, float* const* grads,
                                        void* workspace, int64_t workspace_bytes,
                                        void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    const Batch b = make_batch(bags);
    const cudaStream_t stream = as_stream(stream_ptr);
    Workspace ws(workspace, workspace_bytes, dc::workspace_bytes(b, DLRMX_CUDA_DENSE_GRAD), stream);
    Arena arena(ws.base());
    const Layout L = layout(arena, b, DLRMX_CUDA_DENSE_GRAD);
    std::vector<char> staging;
    upload_tables(b, L, staging, std::vector<void*>(grads, grads + b.T), {}, stream);
    std::vector<int64_t> rec;
    const int64_t runs = make_plan(b, L, rec, stream);  // the batch's checks first, as on the CPU
    const int64_t* am = checked_argmax(b, argmax);
    launch_rows<float, kDenseGrad>(row_args(b, L, grad_out, am, runs), stream);
  });
}

int dlrmx_cuda_embedding_bag_sparse_plan(const int64_t* bags, int64_t* nnz, void* workspace,
                                         int64_t workspace_bytes, void* stream_ptr,
                                         dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    const Batch b = make_batch(bags);
    const cudaStream_t stream = as_stream(stream_ptr);
    CHECK_VALUE(workspace != nullptr, "embedding_bag_sparse_plan: the plan lives in the caller's "
                "workspace; pass one (dlrmx_cuda_embedding_bag_workspace)");
    Workspace ws(workspace, workspace_bytes, dc::workspace_bytes(b, DLRMX_CUDA_SPARSE_GRAD), stream);
    Arena arena(ws.base());
    const Layout L = layout(arena, b, DLRMX_CUDA_SPARSE_GRAD);
    std::vector<char> staging;
    upload_tables(b, L, staging, {}, {}, stream);
    std::vector<int64_t> rec;
    make_plan(b, L, rec, stream);
    for (int64_t t = 0; t < b.T; ++t)
      nnz[t] = b.n > 0 ? rec[kRecHeader + t + 1] - rec[kRecHeader + t] : 0;
    if (b.n == 0) {  // no runs were computed: every table starts at run 0
      std::vector<int64_t> zeros(b.T + 1, 0);
      DLRMX_CUDA_TRY(cudaMemcpyAsync(L.rec + kRecHeader, zeros.data(), zeros.size() * 8,
                                     cudaMemcpyHostToDevice, stream));
      DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));
    }
    set_word_kernel<<<1, 1, 0, stream>>>(L.rec + kRecPlanKey, plan_key(b));
    DLRMX_CUDA_LAUNCHED("set_word_kernel");
  });
}

int dlrmx_cuda_embedding_bag_sparse_grad(const int64_t* bags, const float* grad_out,
                                         const int64_t* argmax, int64_t* const* rows_out,
                                         float* const* values, void* workspace,
                                         int64_t workspace_bytes, void* stream_ptr,
                                         dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    const Batch b = make_batch(bags);
    const cudaStream_t stream = as_stream(stream_ptr);
    const int64_t* am = checked_argmax(b, argmax);
    CHECK_VALUE(workspace != nullptr, "embedding_bag_sparse_grad: pass the workspace "
                "dlrmx_cuda_embedding_bag_sparse_plan filled");
    Workspace ws(workspace, workspace_bytes, dc::workspace_bytes(b, DLRMX_CUDA_SPARSE_GRAD), stream);
    Arena arena(ws.base());
    const Layout L = layout(arena, b, DLRMX_CUDA_SPARSE_GRAD);
    std::vector<int64_t> rec(kRecHeader + b.T + 1);
    fetch(L.rec, rec.data(), rec.size(), stream);
    CHECK_VALUE(rec[kRecPlanKey] == plan_key(b),
                "embedding_bag_sparse_grad: call dlrmx_cuda_embedding_bag_sparse_plan for this "
                "batch first, with the same workspace");
    std::vector<char> staging;
    upload_tables(b, L, staging, std::vector<void*>(rows_out, rows_out + b.T),
                  std::vector<void*>(values, values + b.T), stream);
    const int64_t runs = b.n > 0 ? rec[kRecHeader + b.T] : 0;
    launch_rows<float, kSparseGrad>(row_args(b, L, grad_out, am, runs), stream);
    DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));  // staging must outlive its copy
  });
}

int dlrmx_cuda_embedding_bag_update(const int64_t* bags, const float* grad_out,
                                    const int64_t* argmax, int32_t optimizer, double lr,
                                    double eps, void* const* state, int64_t num_state,
                                    void* workspace, int64_t workspace_bytes, void* stream_ptr,
                                    dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    const Batch b = make_batch(bags);
    const cudaStream_t stream = as_stream(stream_ptr);
    const int64_t T = b.T;
    Workspace ws(workspace, workspace_bytes, dc::workspace_bytes(b, DLRMX_CUDA_UPDATE), stream);
    Arena arena(ws.base());
    const Layout L = layout(arena, b, DLRMX_CUDA_UPDATE);
    std::vector<char> staging;
    std::vector<void*> states;
    if (num_state == T && state != nullptr) states.assign(state, state + T);
    upload_tables(b, L, staging, states, {}, stream);
    std::vector<int64_t> rec;
    // The batch's checks (offsets, ids) first, as on the CPU; no row changes before all pass.
    const int64_t runs = make_plan(b, L, rec, stream);

    CHECK_VALUE(optimizer >= DLRMX_SGD && optimizer <= DLRMX_ADAGRAD,
                "unknown sparse optimizer code ", optimizer);
    dlrmx::checks::check_hyper("embedding_bag_update", "lr", lr, 0);
    dlrmx::checks::check_hyper("embedding_bag_update", "eps", eps, 0);
    const bool split = optimizer == DLRMX_SPLIT_SGD;
    CHECK_TYPE(b.bf16() == split,
               "split_sgd needs bfloat16 weights (with int16 trails); the other optimizers need "
               "float32 weights");
    if (optimizer == DLRMX_SGD)
      CHECK_VALUE(num_state == 0, "sgd keeps no state, got ", num_state, " state tensors");
    else
      CHECK_VALUE(num_state == T, "the optimizer needs one state tensor per table (", T, "), got ",
                  num_state);
    const int64_t* am = checked_argmax(b, argmax);

    dlrmx::checks::Footprint footprint("embedding_bag_update");
    const bool rowwise = optimizer == DLRMX_ROWWISE_ADAGRAD;
    for (int64_t t = 0; t < T; ++t) {
      footprint.add(b.weights[t], b.weight_bytes(t), {"weights", t}, true);
      if (num_state > 0) {
        const int64_t elems = rowwise ? b.rows[t] : b.rows[t] * b.dims[t];
        footprint.add(state[t], elems * (split ? 2 : 4), {"state", t}, true);
      }
    }
    const int64_t out_elems = b.B * b.width;
    footprint.add(grad_out, out_elems * 4, {"grad_out"}, false);
    footprint.add(b.psw, b.n * 4, {"per_sample_weights"}, false);
    footprint.add(b.ids, b.n * (b.ids32() ? 4 : 8), {"ids"}, false);
    footprint.add(b.offsets, b.num_offsets * 8, {"offsets"}, false);
    footprint.add(am, out_elems * 8, {"argmax"}, false);
    footprint.check();

    RowArgs a = row_args(b, L, grad_out, am, runs);
    a.kind = optimizer;
    a.lr = static_cast<float>(lr);
    a.eps = static_cast<float>(eps);
    const bool linear = optimizer == DLRMX_SGD || split;
    if (linear && b.pooling != kMax) {
      if (split) launch_rows<uint16_t, kSgdPerLookup>(a, stream);
      else launch_rows<float, kSgdPerLookup>(a, stream);
    } else {
      if (split) launch_rows<uint16_t, kUpdate>(a, stream);
      else launch_rows<float, kUpdate>(a, stream);
    }
  });
}

}  // extern "C"

// The hot/cold cache kernels on CUDA (kernels/cpu/cache.h, kernels/cpu/cache.cpp): remap a
// table-major batch to hot-tier slots while classifying each sample as hot (every lookup hot) or
// cold, and the bulk row copies between the hot replica and the master tables. Integer and copy
// work: results equal the CPU's exactly. Checks run first (device words, atomicMin), so an id or
// row index out of range raises the CPU's error before anything is written.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.cuh"

namespace dlrmx::cuda {
namespace {

constexpr int kThreads = 256;

struct HotTable {
  const int32_t* map;  // slot per row, or null: the run [lo, hi)
  int64_t lo, hi, rows;
};

enum : int64_t { kRecStart = 0, kRecDecrease, kRecEnd, kRecBadId, kRecMisses, kRecWords };

__global__ void check_offsets_kernel(const int64_t* __restrict__ off, int64_t nbags,
                                     int64_t num_ids, int64_t* rec) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i <= nbags;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t v = off[i];
    if (i == 0 && v != 0) record_min(rec + kRecStart, 0);
    if (i > 0 && v < off[i - 1]) record_min(rec + kRecDecrease, i);
    if (i == nbags && v != num_ids) record_min(rec + kRecEnd, i);
  }
}

__global__ void zero_kernel(int64_t* word) { *word = 0; }

// One thread per bag (t, b): slots of its ids, the sample's hot flag (cleared by any cold or bad
// lookup: every writer writes 0), and the misses (integer atomics: exact).
template <typename I>
__global__ void remap_kernel(const HotTable* __restrict__ tables, int64_t B, int64_t nbags,
                             const I* __restrict__ ids, int64_t n,
                             const int64_t* __restrict__ off, int32_t* __restrict__ slots,
                             uint8_t* __restrict__ sample_hot, int64_t* rec) {
  for (int64_t bag = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; bag < nbags;
       bag += int64_t{gridDim.x} * blockDim.x) {
    const HotTable m = tables[bag / B];
    const int64_t begin = min(max(off[bag], int64_t{0}), n);
    const int64_t end = min(max(off[bag + 1], begin), n);
    bool hot = true;
    unsigned long long misses = 0;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t id = static_cast<int64_t>(ids[j]);
      int32_t s = -1;
      if (id < 0 || id >= m.rows) {
        record_min(rec + kRecBadId, j);
        hot = false;
      } else {
        s = m.map != nullptr ? m.map[id] : (id >= m.lo && id < m.hi ? static_cast<int32_t>(id - m.lo) : -1);
        if (s < 0) hot = false, ++misses;
      }
      if (slots != nullptr) slots[j] = s;
    }
    if (!hot && sample_hot != nullptr) sample_hot[bag % B] = 0;
    if (misses) atomicAdd(reinterpret_cast<unsigned long long*>(rec + kRecMisses), misses);
  }
}

__global__ void check_rows_kernel(const int64_t* __restrict__ idx, int64_t n, int64_t rows,
                                  int64_t* rec) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    if (idx[i] < 0 || idx[i] >= rows) record_min(rec, i);
}

// One warp per row, copying in units of U (16, 8, 4 or 1 bytes, as the alignment allows).
template <typename U, bool kGather>
__global__ void copy_rows_kernel(const char* __restrict__ src, int64_t row_bytes,
                                 const int64_t* __restrict__ idx, int64_t n, char* __restrict__ dst) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x / 32);
  const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
  for (int64_t i = blockIdx.x * int64_t{blockDim.x / 32} + threadIdx.x / 32; i < n; i += warps) {
    const int64_t from = kGather ? idx[i] : i, to = kGather ? i : idx[i];
    const U* s = reinterpret_cast<const U*>(src + from * row_bytes);
    U* d = reinterpret_cast<U*>(dst + to * row_bytes);
    for (int64_t k = lane; k < units; k += 32) d[k] = s[k];
  }
}

template <bool kGather>
void copy_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
               cudaStream_t stream) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) |
                      static_cast<uintptr_t>(row_bytes);
  const unsigned grid = blocks_for(n, kThreads / 32);
  auto s = static_cast<const char*>(src);
  auto d = static_cast<char*>(dst);
  if (a % 16 == 0) copy_rows_kernel<uint4, kGather><<<grid, kThreads, 0, stream>>>(s, row_bytes, idx, n, d);
  else if (a % 8 == 0) copy_rows_kernel<uint2, kGather><<<grid, kThreads, 0, stream>>>(s, row_bytes, idx, n, d);
  else if (a % 4 == 0) copy_rows_kernel<uint32_t, kGather><<<grid, kThreads, 0, stream>>>(s, row_bytes, idx, n, d);
  else copy_rows_kernel<uint8_t, kGather><<<grid, kThreads, 0, stream>>>(s, row_bytes, idx, n, d);
  DLRMX_CUDA_LAUNCHED("copy_rows_kernel");
}

// csrc/cache.cpp's check_rows, on the device: the first index outside [0, rows).
void check_rows(const int64_t* idx, int64_t n, int64_t rows, const char* what,
                cudaStream_t stream) {
  DeviceWord word(stream);
  fill_none(word.get(), 1, stream);
  check_rows_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(idx, n, rows, word.get());
  DLRMX_CUDA_LAUNCHED("check_rows_kernel");
  int64_t bad = kNone;
  DLRMX_CUDA_TRY(cudaMemcpyAsync(&bad, word.get(), sizeof bad, cudaMemcpyDeviceToHost, stream));
  DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));
  CHECK_INDEX(bad == kNone, what, ": rows[", bad, "] = ", fetch_value(idx + bad, stream),
              " is outside the table's rows [0, ", rows, ")");
}

// Gather (out[i] = src[idx[i]]) or scatter (dst[idx[i]] = src[i]) of n rows, after checking
// every index against the indexed tensor's rows.
template <bool kGather>
void checked_copy(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
                  int64_t indexed_rows, void* stream_ptr) {
  const char* what = kGather ? "gather rows" : "scatter rows";
  CHECK_VALUE(row_bytes >= 1 && n >= 0, what, ": bad sizes");
  if (n == 0) return;
  const cudaStream_t stream = as_stream(stream_ptr);
  check_rows(idx, n, indexed_rows, what, stream);
  copy_rows<kGather>(src, row_bytes, idx, n, dst, stream);
}

}  // namespace
}  // namespace dlrmx::cuda

using dlrmx::checks::guarded;

extern "C" {

int dlrmx_cuda_cache_remap(int64_t num_tables, const int32_t* const* maps, const int64_t* lo,
                           const int64_t* hi, const int64_t* rows, const void* ids,
                           int32_t ids_dtype, int64_t num_ids, const int64_t* offsets,
                           int64_t batch, int32_t* slots, uint8_t* sample_hot, int64_t* misses,
                           void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    CHECK_VALUE(num_tables >= 1 && batch >= 0, "cache remap: bad sizes num_tables=", num_tables,
                ", batch=", batch);
    CHECK_TYPE(ids_dtype == DLRMX_I32 || ids_dtype == DLRMX_I64, "cache remap: ids must be int32 "
               "or int64");
    CHECK_VALUE(num_ids >= 0, "cache remap: negative id count ", num_ids);
    int64_t nbags = 0;
    CHECK_VALUE(!__builtin_mul_overflow(num_tables, batch, &nbags) && nbags < INT64_MAX,
                "cache remap: num_tables * batch overflows int64");
    const cudaStream_t stream = as_stream(stream_ptr);
    const int64_t T = num_tables;

    // One allocation: the record words, then the tables.
    const int64_t table_offset = 256;
    char* ws = nullptr;
    const int64_t bytes = table_offset + T * static_cast<int64_t>(sizeof(HotTable));
    DLRMX_CUDA_TRY(cudaMallocAsync(reinterpret_cast<void**>(&ws), bytes, stream));
    struct Free {
      char* p;
      cudaStream_t s;
      ~Free() { cudaFreeAsync(p, s); }
    } free_ws{ws, stream};
    int64_t* rec = reinterpret_cast<int64_t*>(ws);
    HotTable* tables = reinterpret_cast<HotTable*>(ws + table_offset);
    std::vector<HotTable> host(T);
    for (int64_t t = 0; t < T; ++t) host[t] = {maps[t], lo[t], hi[t], rows[t]};
    DLRMX_CUDA_TRY(cudaMemcpyAsync(tables, host.data(), T * sizeof(HotTable),
                                   cudaMemcpyHostToDevice, stream));
    fill_none(rec, kRecWords, stream);
    zero_kernel<<<1, 1, 0, stream>>>(rec + kRecMisses);
    check_offsets_kernel<<<blocks_for(nbags + 1, kThreads), kThreads, 0, stream>>>(offsets, nbags,
                                                                               num_ids, rec);
    DLRMX_CUDA_LAUNCHED("check_offsets_kernel");
    if (sample_hot != nullptr && batch > 0)
      DLRMX_CUDA_TRY(cudaMemsetAsync(sample_hot, 1, batch, stream));
    if (nbags > 0) {
      const unsigned grid = blocks_for(nbags, kThreads);
      if (ids_dtype == DLRMX_I32)
        remap_kernel<int32_t><<<grid, kThreads, 0, stream>>>(
            tables, batch, nbags, static_cast<const int32_t*>(ids), num_ids, offsets, slots,
            sample_hot, rec);
      else
        remap_kernel<int64_t><<<grid, kThreads, 0, stream>>>(
            tables, batch, nbags, static_cast<const int64_t*>(ids), num_ids, offsets, slots,
            sample_hot, rec);
      DLRMX_CUDA_LAUNCHED("remap_kernel");
    }
    int64_t r[kRecWords];
    fetch(rec, r, kRecWords, stream);
    // In the CPU path's order: the end is checked first (dlrmx.cache.kernels._checked_batch).
    CHECK_VALUE(r[kRecEnd] == kNone, "offsets end at ", fetch_value(offsets + nbags, stream),
                ", but values holds ", num_ids, " ids");
    CHECK_VALUE(r[kRecStart] == kNone, "cache remap: offsets[0] must be 0, got ",
                fetch_value(offsets, stream));
    CHECK_VALUE(r[kRecDecrease] == kNone, "cache remap: offsets decrease at ", r[kRecDecrease]);
    if (r[kRecBadId] != kNone) {
      const int64_t j = r[kRecBadId];
      const int64_t id = ids_dtype == DLRMX_I32
          ? fetch_value(static_cast<const int32_t*>(ids) + j, stream)
          : fetch_value(static_cast<const int64_t*>(ids) + j, stream);
      const int64_t t = table_of(offsets, batch, T, j, stream);
      dlrmx::checks::fail(DLRMX_INDEX_ERROR, "table ", t, ": values[", j, "] = ", id,
                   " is outside its rows [0, ", rows[t], ")");
    }
    *misses = r[kRecMisses];
  });
}

int dlrmx_cuda_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes,
                           const int64_t* idx, int64_t n, void* dst, void* stream_ptr,
                           dlrmx_status* status) {
  return guarded(status, [&] {
    dlrmx::cuda::checked_copy<true>(src, row_bytes, idx, n, dst, src_rows, stream_ptr);
  });
}

int dlrmx_cuda_scatter_rows(const void* src, int64_t n, int64_t row_bytes, const int64_t* idx,
                            void* dst, int64_t dst_rows, void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    dlrmx::cuda::checked_copy<false>(src, row_bytes, idx, n, dst, dst_rows, stream_ptr);
  });
}

}  // extern "C"

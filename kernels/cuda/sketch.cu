// Popularity counting on CUDA: the count-min sketch and the exact counter of
// kernels/cpu/per_isa/sketch.cpp, with the same layout and hash (kernels/cpu/sketch.h's mix64),
// so a sketch filled on the GPU equals one filled on the CPU counter for counter.
// Plain updates add with 64-bit integer atomics: exact whatever the order. Conservative updates
// depend on the order of the stream, so they run in stream order on one device thread (the CPU's
// result exactly, but sequential: for large batches the CPU sketch is faster).
#include <cstdint>

#include "common.cuh"

namespace dlrmx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxDepth = 64;

struct Seeds {
  uint64_t s[kMaxDepth];
};

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__global__ void check_weights_kernel(const int64_t* __restrict__ w, int64_t n, int64_t* rec) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    if (w[i] < 0) record_min(rec, i);
}

__global__ void check_ids_kernel(const int64_t* __restrict__ ids, int64_t n, int64_t rows,
                                 int64_t* rec) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    if (ids[i] < 0 || ids[i] >= rows) record_min(rec, i);
}

__global__ void cms_update_kernel(int64_t* table, int shift, int64_t width, int64_t depth,
                                  const Seeds seeds, const int64_t* __restrict__ ids,
                                  const int64_t* __restrict__ weights, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t x = static_cast<uint64_t>(ids[i]);
    const unsigned long long w = static_cast<unsigned long long>(weights ? weights[i] : 1);
    for (int64_t r = 0; r < depth; ++r) {
      const int64_t c = static_cast<int64_t>(mix64(x ^ seeds.s[r]) >> shift);
      atomicAdd(reinterpret_cast<unsigned long long*>(table + r * width + c), w);
    }
  }
}

// Conservative update, in stream order (one thread): raise only the counters below the new
// minimum estimate.
__global__ void cms_conservative_kernel(int64_t* table, int shift, int64_t width, int64_t depth,
                                        const Seeds seeds, const int64_t* __restrict__ ids,
                                        const int64_t* __restrict__ weights, int64_t n) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int64_t cols[kMaxDepth];
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = static_cast<uint64_t>(ids[i]);
    int64_t low = INT64_MAX;
    for (int64_t r = 0; r < depth; ++r) {
      cols[r] = r * width + static_cast<int64_t>(mix64(x ^ seeds.s[r]) >> shift);
      low = min(low, table[cols[r]]);
    }
    const int64_t target = low + (weights ? weights[i] : 1);
    for (int64_t r = 0; r < depth; ++r) table[cols[r]] = max(table[cols[r]], target);
  }
}

__global__ void cms_query_kernel(const int64_t* __restrict__ table, int shift, int64_t width,
                                 int64_t depth, const Seeds seeds, const int64_t* __restrict__ ids,
                                 int64_t n, int64_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t x = static_cast<uint64_t>(ids[i]);
    int64_t low = INT64_MAX;
    for (int64_t r = 0; r < depth; ++r)
      low = min(low, table[r * width + static_cast<int64_t>(mix64(x ^ seeds.s[r]) >> shift)]);
    out[i] = depth > 0 ? low : 0;
  }
}

__global__ void exact_count_kernel(int64_t* counts, const int64_t* __restrict__ ids, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    atomicAdd(reinterpret_cast<unsigned long long*>(counts + ids[i]), 1ull);
}

// csrc/sketch.cpp's checks.
void check_sketch(int64_t log2_width, int64_t depth, int64_t n) {
  CHECK_VALUE(log2_width >= 1 && log2_width <= 40, "count-min sketch: log2 width must be in "
              "[1, 40], got ", log2_width);
  CHECK_VALUE(depth >= 1 && depth <= 64, "count-min sketch: depth must be in [1, 64], got ", depth);
  CHECK_VALUE(n >= 0, "count-min sketch: negative id count ", n);
}

Seeds copy_seeds(const uint64_t* seeds, int64_t depth) {
  Seeds s{};
  for (int64_t r = 0; r < depth; ++r) s.s[r] = seeds[r];
  return s;
}

// Runs a check kernel writing the first bad position into one word; returns it (kNone: none).
template <typename Launch>
int64_t first_bad(cudaStream_t stream, Launch&& launch) {
  DeviceWord word(stream);
  fill_none(word.get(), 1, stream);
  launch(word.get());
  int64_t bad = kNone;
  DLRMX_CUDA_TRY(cudaMemcpyAsync(&bad, word.get(), sizeof bad, cudaMemcpyDeviceToHost, stream));
  DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));
  return bad;
}

}  // namespace
}  // namespace dlrmx::cuda

using dlrmx::checks::guarded;

extern "C" {

int dlrmx_cuda_cms_update(int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds,
                          const int64_t* ids, const int64_t* weights, int64_t n,
                          int32_t conservative, void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    check_sketch(log2_width, depth, n);
    const cudaStream_t stream = as_stream(stream_ptr);
    if (n == 0) return;
    if (weights != nullptr) {
      const int64_t bad = first_bad(stream, [&](int64_t* word) {
        check_weights_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(weights, n, word);
        DLRMX_CUDA_LAUNCHED("check_weights_kernel");
      });
      CHECK_VALUE(bad == kNone, "count-min sketch: weights[", bad, "] is ",
                  bad == kNone ? 0 : fetch_value(weights + bad, stream),
                  "; counts only grow (weights must be >= 0)");
    }
    const int shift = static_cast<int>(64 - log2_width);
    const int64_t width = int64_t{1} << log2_width;
    const Seeds s = copy_seeds(seeds, depth);
    if (conservative)
      cms_conservative_kernel<<<1, 1, 0, stream>>>(table, shift, width, depth, s, ids, weights, n);
    else
      cms_update_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(table, shift, width,
                                                                          depth, s, ids, weights, n);
    DLRMX_CUDA_LAUNCHED("cms_update_kernel");
  });
}

int dlrmx_cuda_cms_query(const int64_t* table, int64_t log2_width, int64_t depth,
                         const uint64_t* seeds, const int64_t* ids, int64_t n, int64_t* out,
                         void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    check_sketch(log2_width, depth, n);
    if (n == 0) return;
    const cudaStream_t stream = as_stream(stream_ptr);
    cms_query_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        table, static_cast<int>(64 - log2_width), int64_t{1} << log2_width, depth,
        copy_seeds(seeds, depth), ids, n, out);
    DLRMX_CUDA_LAUNCHED("cms_query_kernel");
  });
}

int dlrmx_cuda_exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n,
                           void* stream_ptr, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    CHECK_VALUE(rows >= 1 && n >= 0, "exact counter: bad sizes rows=", rows, ", n=", n);
    if (n == 0) return;
    const cudaStream_t stream = as_stream(stream_ptr);
    const int64_t bad = first_bad(stream, [&](int64_t* word) {
      check_ids_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(ids, n, rows, word);
      DLRMX_CUDA_LAUNCHED("check_ids_kernel");
    });
    CHECK_INDEX(bad == kNone, "ids[", bad, "] = ", bad == kNone ? 0 : fetch_value(ids + bad, stream),
                " is outside the counter's rows [0, ", rows, ")");
    exact_count_kernel<<<blocks_for(n, kThreads), kThreads, 0, stream>>>(counts, ids, n);
    DLRMX_CUDA_LAUNCHED("exact_count_kernel");
  });
}

}  // extern "C"

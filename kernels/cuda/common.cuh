// Shared by the CUDA kernels' host wrappers and kernels: error handling (csrc/checks.h's
// guarded/fail, so messages and error kinds are the CPU library's), the device error record,
// workspace carving, bf16 bit conversions (kernels/cpu/bf16.h's, bit for bit) and warp helpers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "dlrmx_cuda.h"

namespace dlrmx::cuda {

// ---- errors ------------------------------------------------------------------------------------

[[noreturn]] inline void cuda_fail(cudaError_t e, const char* what) {
  // A sticky error (a fault in an earlier kernel) poisons the context: say so plainly.
  checks::fail(DLRMX_RUNTIME_ERROR, "dlrmx cuda: ", what, " failed: ", cudaGetErrorName(e), " (",
               cudaGetErrorString(e), ")");
}

#define DLRMX_CUDA_TRY(expr)                                          \
  do {                                                                \
    const cudaError_t dlrmx_err_ = (expr);                            \
    if (dlrmx_err_ != cudaSuccess) ::dlrmx::cuda::cuda_fail(dlrmx_err_, #expr); \
  } while (0)

// After a launch: a bad configuration shows here, a fault later (at the next synchronisation).
// cudaGetLastError clears what it reports: this library's static runtime has its own error slot,
// which nothing else resets, so a peek would report one failure again at every later call.
#define DLRMX_CUDA_LAUNCHED(name) DLRMX_CUDA_TRY(cudaGetLastError())

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// ---- the device error record -------------------------------------------------------------------
// int64 words a check kernel lowers with atomicMin (positions are >= 0, so an unsigned minimum
// is the signed one); "no error" is kNone.
constexpr int64_t kNone = INT64_MAX;

__device__ __forceinline__ void record_min(int64_t* word, int64_t position) {
  atomicMin(reinterpret_cast<unsigned long long*>(word), static_cast<unsigned long long>(position));
}

// Fills n words with kNone on the stream (a kernel: cudaMemset sets bytes only).
void fill_none(int64_t* words, int64_t n, cudaStream_t stream);

// Copies n words device -> host and waits for the stream (the one synchronisation of a call).
inline void fetch(const int64_t* device, int64_t* host, int64_t n, cudaStream_t stream) {
  DLRMX_CUDA_TRY(cudaMemcpyAsync(host, device, n * sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));
}

// One value of type T at device address p (only on error paths).
template <typename T>
T fetch_value(const T* p, cudaStream_t stream) {
  T v{};
  DLRMX_CUDA_TRY(cudaMemcpyAsync(&v, p, sizeof(T), cudaMemcpyDeviceToHost, stream));
  DLRMX_CUDA_TRY(cudaStreamSynchronize(stream));
  return v;
}

// The table whose ids hold position j of a table-major batch: offsets[t * batch] is where table
// t's ids begin (batch >= 1 where there are ids). A word at a time (an error path; a 2-D copy's
// pitch, batch * 8 bytes, has a device limit).
inline int64_t table_of(const int64_t* offsets, int64_t batch, int64_t T, int64_t j,
                        cudaStream_t stream) {
  int64_t t = 0;
  while (t + 1 < T && j >= fetch_value(offsets + (t + 1) * batch, stream)) ++t;
  return t;
}

// One int64 word of device memory, freed (stream-ordered) however its scope ends.
class DeviceWord {
 public:
  explicit DeviceWord(cudaStream_t stream) : stream_(stream) {
    DLRMX_CUDA_TRY(cudaMallocAsync(reinterpret_cast<void**>(&p_), sizeof(int64_t), stream));
  }
  ~DeviceWord() { cudaFreeAsync(p_, stream_); }
  DeviceWord(const DeviceWord&) = delete;
  DeviceWord& operator=(const DeviceWord&) = delete;
  int64_t* get() const { return p_; }

 private:
  int64_t* p_ = nullptr;
  cudaStream_t stream_;
};

// ---- workspace ---------------------------------------------------------------------------------
// Carves aligned pieces out of one buffer. With base == nullptr it only measures, so the size
// query and the call share one layout function and cannot disagree.
class Arena {
 public:
  explicit Arena(char* base = nullptr) : base_(base) {}
  template <typename T>
  T* take(int64_t count) {
    used_ = (used_ + 255) / 256 * 256;
    T* p = base_ ? reinterpret_cast<T*>(base_ + used_) : nullptr;
    used_ += static_cast<int64_t>(sizeof(T)) * (count > 0 ? count : 0);
    return p;
  }
  void* take_bytes(int64_t bytes) { return take<char>(bytes); }
  int64_t used() const { return (used_ + 255) / 256 * 256; }

 private:
  char* base_;
  int64_t used_ = 0;
};

// The caller's workspace, or one allocated (and freed) on the stream when it passed none.
class Workspace {
 public:
  Workspace(void* given, int64_t given_bytes, int64_t needed, cudaStream_t stream)
      : stream_(stream) {
    if (given != nullptr) {
      CHECK_VALUE(given_bytes >= needed, "dlrmx cuda: the workspace has ", given_bytes,
                  " bytes, this call needs ", needed,
                  " (ask dlrmx_cuda_embedding_bag_workspace)");
      base_ = static_cast<char*>(given);
    } else if (needed > 0) {
      DLRMX_CUDA_TRY(cudaMallocAsync(reinterpret_cast<void**>(&base_), needed, stream));
      owned_ = true;
    }
  }
  ~Workspace() {
    if (owned_) cudaFreeAsync(base_, stream_);
  }
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  char* base() const { return base_; }

 private:
  char* base_ = nullptr;
  bool owned_ = false;
  cudaStream_t stream_;
};

// ---- numbers -----------------------------------------------------------------------------------

__device__ __forceinline__ float bf16_to_float(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

// fp32 -> bf16 rounding to nearest even, a NaN kept a quiet NaN: kernels/cpu/bf16.h's formula.
__device__ __forceinline__ uint16_t float_to_bf16(float x) {
  const uint32_t bits = __float_as_uint(x);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x40u;
  return static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

__device__ __forceinline__ float load_float(float x) { return x; }
__device__ __forceinline__ float load_float(uint16_t x) { return bf16_to_float(x); }

__device__ __forceinline__ int64_t warp_sum(int64_t v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Grid sizes: enough blocks to fill the device, grid-stride loops for the rest.
inline unsigned int blocks_for(int64_t items, int64_t per_block) {
  const int64_t b = (items + per_block - 1) / per_block;
  return static_cast<unsigned int>(b < 1 ? 1 : (b > (1 << 20) ? (1 << 20) : b));
}

}  // namespace dlrmx::cuda

// DLRM dot interaction on CUDA, the twin of kernels/cpu/per_isa/interaction.cpp (layout and order
// in kernels/cpu/interaction.h): per sample, out = [dense | z_i . z_j for i > j, i major], and
// backward dZ = (G + G^T) Z with the passthrough gradient added to dz_0.
//
// One block per sample (grid-stride over samples): the sample's F feature vectors are staged in
// shared memory as fp32 (rows padded to D + 1 floats, so threads reading different features at
// the same d hit different banks); each thread computes whole dot products (forward) or whole
// output elements (backward) with one fused multiply-add chain in the CPU's order (d ascending,
// resp. j ascending), so results match the CPU's FMA builds. Samples too large for shared memory
// read global memory instead (same arithmetic).
#include <cstdint>

#include "common.cuh"

namespace dlrmx::cuda {
namespace {

constexpr int kThreads = 256;
constexpr const char* kOp = "dot_interaction";

__device__ __forceinline__ void store_elem(float* p, float x) { *p = x; }
__device__ __forceinline__ void store_elem(uint16_t* p, float x) { *p = float_to_bf16(x); }

// Pair p of the strictly lower triangle, row by row: p = i(i-1)/2 + j, 0 <= j < i.
__device__ __forceinline__ void pair_of(int64_t p, int64_t& i, int64_t& j) {
  int64_t r = static_cast<int64_t>((1.f + sqrtf(1.f + 8.f * static_cast<float>(p))) * 0.5f);
  while (r > 1 && r * (r - 1) / 2 > p) --r;
  while ((r + 1) * r / 2 <= p) ++r;
  i = r;
  j = p - r * (r - 1) / 2;
}

// Feature f of sample b at column d, as fp32, from global memory.
template <typename E>
__device__ __forceinline__ float feature(const E* dense, const E* emb, int64_t b, int64_t T,
                                         int64_t D, int64_t f, int64_t d) {
  return load_float(f == 0 ? dense[b * D + d] : emb[(b * T + f - 1) * D + d]);
}

template <typename E, bool kShared>
__global__ void __launch_bounds__(kThreads)
forward_kernel(const E* __restrict__ dense, const E* __restrict__ emb, int64_t B, int64_t T,
               int64_t D, E* __restrict__ out) {
  extern __shared__ float smem[];
  const int64_t F = T + 1, P = F * T / 2, width = D + P, stride = D + 1;
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    if (kShared) {
      for (int64_t k = threadIdx.x; k < F * D; k += blockDim.x)
        smem[(k / D) * stride + k % D] = feature(dense, emb, b, T, D, k / D, k % D);
    }
    E* o = out + b * width;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) o[d] = dense[b * D + d];  // bit-exact
    if (kShared) __syncthreads();
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
      int64_t i, j;
      pair_of(p, i, j);
      float acc = 0.f;
      if (kShared) {
        const float* zi = smem + i * stride;
        const float* zj = smem + j * stride;
        for (int64_t d = 0; d < D; ++d) acc = __fmaf_rn(zi[d], zj[d], acc);
      } else {
        for (int64_t d = 0; d < D; ++d)
          acc = __fmaf_rn(feature(dense, emb, b, T, D, i, d), feature(dense, emb, b, T, D, j, d), acc);
      }
      store_elem(o + D + p, acc);
    }
    if (kShared) __syncthreads();  // before the next sample overwrites the features
  }
}

// G(i, j): the pair gradient of {i, j} (symmetric), 0 on the diagonal.
template <typename E>
__device__ __forceinline__ float pair_grad(const E* go, int64_t D, int64_t i, int64_t j) {
  if (i == j) return 0.f;
  const int64_t hi = i > j ? i : j, lo = i > j ? j : i;
  return load_float(go[D + hi * (hi - 1) / 2 + lo]);
}

template <typename E, bool kShared>
__global__ void __launch_bounds__(kThreads)
backward_kernel(const E* __restrict__ grad, const E* __restrict__ dense, const E* __restrict__ emb,
                int64_t B, int64_t T, int64_t D, E* __restrict__ grad_dense,
                E* __restrict__ grad_emb) {
  extern __shared__ float smem[];
  const int64_t F = T + 1, P = F * T / 2, width = D + P, stride = D + 1;
  float* z = smem;                 // [F][stride]
  float* g = smem + F * stride;    // [F][F]
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    const E* go = grad + b * width;
    if (kShared) {
      for (int64_t k = threadIdx.x; k < F * D; k += blockDim.x)
        z[(k / D) * stride + k % D] = feature(dense, emb, b, T, D, k / D, k % D);
      for (int64_t k = threadIdx.x; k < F * F; k += blockDim.x)
        g[k] = pair_grad(go, D, k / F, k % F);
      __syncthreads();
    }
    for (int64_t k = threadIdx.x; k < F * D; k += blockDim.x) {
      const int64_t i = k / D, d = k % D;
      float acc = i == 0 ? load_float(go[d]) : 0.f;  // the passthrough gradient of dense
      if (kShared) {
        for (int64_t j = 0; j < F; ++j) acc = __fmaf_rn(g[i * F + j], z[j * stride + d], acc);
      } else {
        for (int64_t j = 0; j < F; ++j)
          acc = __fmaf_rn(pair_grad(go, D, i, j), feature(dense, emb, b, T, D, j, d), acc);
      }
      store_elem(i == 0 ? grad_dense + b * D + d : grad_emb + (b * T + i - 1) * D + d, acc);
    }
    if (kShared) __syncthreads();
  }
}

// csrc/interaction.cpp's checks: the output width D + F(F-1)/2, F = T + 1; ValueErrors for sizes
// that overflow.
int64_t checked_width(int32_t dtype, int64_t B, int64_t T, int64_t D) {
  CHECK_TYPE(dtype == DLRMX_F32 || dtype == DLRMX_BF16,
             "dot_interaction: dense and emb must both be float32 or both bfloat16");
  CHECK_VALUE(B >= 0 && T >= 0 && D > 0, "dot_interaction: bad sizes B=", B, ", T=", T, ", D=", D);
  const int64_t F = checks::add_size(T, 1, kOp, "the feature count");
  const int64_t pairs = checks::mul_size(F, T, kOp, "the pair count") / 2;
  const int64_t width = checks::add_size(D, pairs, kOp, "the output width");
  checks::mul_size(B, width, kOp, "the output size (B * width)");
  checks::mul_size(B, checks::mul_size(T, D, kOp, "the emb width"), kOp, "the emb size");
  return width;
}

// Shared memory a block can have on this device (with the opt-in above 48 KiB).
int64_t shared_limit() {
  int device = 0, limit = 0;
  DLRMX_CUDA_TRY(cudaGetDevice(&device));
  DLRMX_CUDA_TRY(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return limit;
}

template <typename Kernel>
bool use_shared(Kernel shared_kernel, int64_t bytes) {
  if (bytes > shared_limit()) return false;
  if (bytes > 48 * 1024)
    DLRMX_CUDA_TRY(cudaFuncSetAttribute(shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  return true;
}

template <typename E>
void forward(const void* dense, const void* emb, int64_t B, int64_t T, int64_t D, void* out,
             cudaStream_t stream) {
  if (B == 0) return;
  const int64_t F = T + 1, bytes = F * (D + 1) * 4;
  const unsigned grid = blocks_for(B, 1);
  auto d = static_cast<const E*>(dense);
  auto e = static_cast<const E*>(emb);
  auto o = static_cast<E*>(out);
  if (use_shared(forward_kernel<E, true>, bytes))
    forward_kernel<E, true><<<grid, kThreads, bytes, stream>>>(d, e, B, T, D, o);
  else
    forward_kernel<E, false><<<grid, kThreads, 0, stream>>>(d, e, B, T, D, o);
  DLRMX_CUDA_LAUNCHED("dot_interaction forward_kernel");
}

template <typename E>
void backward(const void* grad, const void* dense, const void* emb, int64_t B, int64_t T,
              int64_t D, void* grad_dense, void* grad_emb, cudaStream_t stream) {
  if (B == 0) return;
  const int64_t F = T + 1, bytes = (F * (D + 1) + F * F) * 4;
  const unsigned grid = blocks_for(B, 1);
  auto g = static_cast<const E*>(grad);
  auto d = static_cast<const E*>(dense);
  auto e = static_cast<const E*>(emb);
  auto gd = static_cast<E*>(grad_dense);
  auto ge = static_cast<E*>(grad_emb);
  if (use_shared(backward_kernel<E, true>, bytes))
    backward_kernel<E, true><<<grid, kThreads, bytes, stream>>>(g, d, e, B, T, D, gd, ge);
  else
    backward_kernel<E, false><<<grid, kThreads, 0, stream>>>(g, d, e, B, T, D, gd, ge);
  DLRMX_CUDA_LAUNCHED("dot_interaction backward_kernel");
}

}  // namespace
}  // namespace dlrmx::cuda

using dlrmx::checks::guarded;

extern "C" {

int dlrmx_cuda_dot_interaction_forward(int32_t dtype, const void* dense, const void* emb,
                                       int64_t B, int64_t T, int64_t D, void* out, void* stream,
                                       dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    checked_width(dtype, B, T, D);
    if (dtype == DLRMX_F32) forward<float>(dense, emb, B, T, D, out, as_stream(stream));
    else forward<uint16_t>(dense, emb, B, T, D, out, as_stream(stream));
  });
}

int dlrmx_cuda_dot_interaction_backward(int32_t dtype, const void* grad, const void* dense,
                                        const void* emb, int64_t B, int64_t T, int64_t D,
                                        void* grad_dense, void* grad_emb, void* stream,
                                        dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cuda;
    checked_width(dtype, B, T, D);
    if (dtype == DLRMX_F32)
      backward<float>(grad, dense, emb, B, T, D, grad_dense, grad_emb, as_stream(stream));
    else
      backward<uint16_t>(grad, dense, emb, B, T, D, grad_dense, grad_emb, as_stream(stream));
  });
}

}  // extern "C"

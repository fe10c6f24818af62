// libdlrmx_cuda's identity (ABI version, CUDA versions) and the small helpers every kernel file
// shares.
#include <cstdint>

#include "common.cuh"

namespace dlrmx::cuda {
namespace {

__global__ void fill_none_kernel(int64_t* words, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    words[i] = kNone;
}

}  // namespace

void fill_none(int64_t* words, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  fill_none_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(words, n);
  DLRMX_CUDA_LAUNCHED("fill_none_kernel");
}

}  // namespace dlrmx::cuda

using dlrmx::checks::guarded;

extern "C" {

int32_t dlrmx_cuda_abi_version(void) { return DLRMX_CUDA_ABI_VERSION; }

int dlrmx_cuda_versions(int32_t* runtime, int32_t* driver, int32_t* capability,
                        dlrmx_status* status) {
  return guarded(status, [&] {
    *runtime = CUDART_VERSION;
    *driver = -1;
    *capability = -1;
    int v = 0;
    if (cudaDriverGetVersion(&v) == cudaSuccess) *driver = v;
    int device = 0, major = 0, minor = 0;
    if (cudaGetDevice(&device) == cudaSuccess &&
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess)
      *capability = major * 10 + minor;
    cudaGetLastError();  // a missing device is an answer here, not a sticky error
  });
}

}  // extern "C"

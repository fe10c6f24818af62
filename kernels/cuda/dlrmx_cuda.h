/* The C ABI of libdlrmx_cuda: dlrmx's CUDA kernels behind plain C functions, the twin of
 * libdlrmx's CPU ABI (csrc/dlrmx.h, whose error kinds, dtype codes, status struct, batch
 * description and optimizer codes it reuses). No torch: python/dlrmx/cuda.py loads it with ctypes.
 *
 * Conventions (every function):
 * - Tensor data are DEVICE pointers (on the current device, cudaSetDevice is the caller's); the
 *   per-table arrays, the batch description itself and the small parameter arrays (seeds, lo/hi,
 *   rows, pointer lists) are HOST arrays.
 * - `stream` is a cudaStream_t passed as void* (NULL: the legacy default stream); all work is
 *   queued on it.
 * - Data-dependent checks (offsets, ids, weights of a sketch) run on the device first: a check
 *   kernel records the first bad position in a device word (atomicMin), the wrapper copies it back
 *   (one stream synchronisation per call) and returns the same error kind and message as the CPU
 *   library, before any weight, count or destination row is written. No device-side assert.
 * - `workspace` / `workspace_bytes`: device scratch the caller owns (python/dlrmx/cuda.py passes a
 *   torch tensor, so the memory comes from torch's caching allocator). Ask for the size with
 *   dlrmx_cuda_embedding_bag_workspace. A NULL workspace makes the call allocate its own with
 *   cudaMallocAsync on `stream` (freed the same way). The sparse-gradient plan lives in the
 *   workspace between its two calls.
 * - Results are deterministic: no floating-point atomics. Duplicate ids of a batch are grouped by
 *   a stable radix sort (cub), and each distinct row is reduced by one warp in lookup order, the
 *   order the CPU kernels use, then updated once.
 */
#ifndef DLRMX_CUDA_H
#define DLRMX_CUDA_H

#include <stdint.h>

#include "dlrmx.h" /* error kinds, dtype codes, dlrmx_status, DLRMX_BAGS_*, optimizer codes */

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature below changes; python/dlrmx/cuda.py refuses another version. */
#define DLRMX_CUDA_ABI_VERSION 1

DLRMX_API int32_t dlrmx_cuda_abi_version(void);
/* The CUDA runtime version this library was built with (e.g. 13000) and the driver's, and the
 * compute capability of the current device (e.g. 90); -1 where unknown. */
DLRMX_API int dlrmx_cuda_versions(int32_t* runtime, int32_t* driver, int32_t* capability,
                                  dlrmx_status* status);

/* ---- Embedding bags. `bags` is the CPU ABI's batch description (csrc/dlrmx.h, DLRMX_BAGS_*)
 * with device addresses for ids, offsets, per-sample weights and the weights; the thread count
 * field is ignored. `op` for the workspace size: */
enum { DLRMX_CUDA_FORWARD = 0, DLRMX_CUDA_DENSE_GRAD = 1, DLRMX_CUDA_SPARSE_GRAD = 2,
       DLRMX_CUDA_UPDATE = 3 };
DLRMX_API int dlrmx_cuda_embedding_bag_workspace(const int64_t* bags, int32_t op, int64_t* bytes,
                                                 dlrmx_status* status);
/* out: [B, sum of dims] float32; argmax: [B, width] int64 for max pooling, else NULL. */
DLRMX_API int dlrmx_cuda_embedding_bag_forward(const int64_t* bags, float* out, int64_t* argmax,
                                               void* workspace, int64_t workspace_bytes,
                                               void* stream, dlrmx_status* status);
/* grads (host array of T device pointers): zero-filled float [rows[t], dims[t]]. */
DLRMX_API int dlrmx_cuda_embedding_bag_dense_grad(const int64_t* bags, const float* grad_out,
                                                  const int64_t* argmax, float* const* grads,
                                                  void* workspace, int64_t workspace_bytes,
                                                  void* stream, dlrmx_status* status);
/* Coalesced sparse gradients in two calls with one workspace: the plan gives each table's number
 * of distinct rows (nnz, a host array [T]); the gradient then fills rows_out[t] [nnz[t]] (int64,
 * ascending) and values[t] [nnz[t], dims[t]] for the same batch. */
DLRMX_API int dlrmx_cuda_embedding_bag_sparse_plan(const int64_t* bags, int64_t* nnz,
                                                   void* workspace, int64_t workspace_bytes,
                                                   void* stream, dlrmx_status* status);
DLRMX_API int dlrmx_cuda_embedding_bag_sparse_grad(const int64_t* bags, const float* grad_out,
                                                   const int64_t* argmax,
                                                   int64_t* const* rows_out, float* const* values,
                                                   void* workspace, int64_t workspace_bytes,
                                                   void* stream, dlrmx_status* status);
/* Fused backward + optimizer (DLRMX_SGD ... DLRMX_ADAGRAD), rows updated in place; state (host
 * array of device pointers) as in dlrmx_embedding_bag_update. */
DLRMX_API int dlrmx_cuda_embedding_bag_update(const int64_t* bags, const float* grad_out,
                                              const int64_t* argmax, int32_t optimizer, double lr,
                                              double eps, void* const* state, int64_t num_state,
                                              void* workspace, int64_t workspace_bytes,
                                              void* stream, dlrmx_status* status);

/* ---- DLRM dot interaction (same layout and order as dlrmx_dot_interaction_forward/backward),
 * F32 or BF16. */
DLRMX_API int dlrmx_cuda_dot_interaction_forward(int32_t dtype, const void* dense, const void* emb,
                                                 int64_t batch, int64_t num_sparse, int64_t dim,
                                                 void* out, void* stream, dlrmx_status* status);
DLRMX_API int dlrmx_cuda_dot_interaction_backward(int32_t dtype, const void* grad,
                                                  const void* dense, const void* emb,
                                                  int64_t batch, int64_t num_sparse, int64_t dim,
                                                  void* grad_dense, void* grad_emb, void* stream,
                                                  dlrmx_status* status);

/* ---- Popularity counting: the CPU sketch's layout and hashes (kernels/cpu/sketch.h), so a
 * sketch filled here equals one filled on the CPU. table, ids, weights, out, counts: device;
 * seeds: HOST array [depth]. Plain updates use 64-bit integer atomics (exact, any order);
 * conservative updates run in stream order on one device thread (exactly the CPU's result, but
 * sequential: slow). */
DLRMX_API int dlrmx_cuda_cms_update(int64_t* table, int64_t log2_width, int64_t depth,
                                    const uint64_t* seeds, const int64_t* ids,
                                    const int64_t* weights, int64_t n, int32_t conservative,
                                    void* stream, dlrmx_status* status);
DLRMX_API int dlrmx_cuda_cms_query(const int64_t* table, int64_t log2_width, int64_t depth,
                                   const uint64_t* seeds, const int64_t* ids, int64_t n,
                                   int64_t* out, void* stream, dlrmx_status* status);
DLRMX_API int dlrmx_cuda_exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n,
                                     void* stream, dlrmx_status* status);

/* ---- The hot/cold cache (kernels/cpu/cache.h). maps: host array of T device pointers (int32
 * slot per row) or NULL entries; lo, hi, rows: host arrays [T]; ids, offsets, slots, sample_hot:
 * device; num_ids: the number of ids (offsets must end there); *misses: host. */
DLRMX_API int dlrmx_cuda_cache_remap(int64_t num_tables, const int32_t* const* maps,
                                     const int64_t* lo, const int64_t* hi, const int64_t* rows,
                                     const void* ids, int32_t ids_dtype, int64_t num_ids,
                                     const int64_t* offsets, int64_t batch, int32_t* slots,
                                     uint8_t* sample_hot, int64_t* misses, void* stream,
                                     dlrmx_status* status);
/* dst[i] = src[idx[i]] / dst[idx[i]] = src[i], rows of row_bytes, all device memory. */
DLRMX_API int dlrmx_cuda_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes,
                                     const int64_t* idx, int64_t n, void* dst, void* stream,
                                     dlrmx_status* status);
DLRMX_API int dlrmx_cuda_scatter_rows(const void* src, int64_t n, int64_t row_bytes,
                                      const int64_t* idx, void* dst, int64_t dst_rows,
                                      void* stream, dlrmx_status* status);

#ifdef __cplusplus
}
#endif

#endif /* DLRMX_CUDA_H */

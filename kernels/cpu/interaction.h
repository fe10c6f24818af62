// DLRM "dot" feature interaction, fused with the concatenation of the bottom-MLP output.
// Framework-free: raw pointers and sizes only.
//
// Per sample b, the F = 1 + T feature vectors are z_0 = dense[b] (the bottom-MLP output) and
// z_{1+t} = emb[b, t*D:(t+1)*D]. The output row is
//   out[b] = [ dense[b] (D values) | z_i . z_j for i = 1..F-1, j = 0..i-1 (F(F-1)/2 values) ]
// in the reference DLRM's order (i major, j minor: the strictly lower triangle, row by row).
// Backward: with G the [F, F] matrix holding the pair gradients in its lower triangle,
//   dZ = (G + G^T) Z, and the dense passthrough gradient is added to dz_0.
#pragma once
#include <cstdint>

namespace dlrmx::cpu {

// elem_t: float, or uint16_t (bf16 bits; math in fp32, results rounded to nearest even).
#define DLRMX_INTERACTION_DECLS                                                                  \
  template <typename elem_t>                                                                     \
  void dot_interaction_forward(const elem_t* dense, const elem_t* emb, int64_t batch,            \
                               int64_t num_sparse, int64_t dim, elem_t* out, int num_threads);   \
  template <typename elem_t>                                                                     \
  void dot_interaction_backward(const elem_t* grad_out, const elem_t* dense, const elem_t* emb,  \
                                int64_t batch, int64_t num_sparse, int64_t dim,                  \
                                elem_t* grad_dense, elem_t* grad_emb, int num_threads);

namespace scalar { DLRMX_INTERACTION_DECLS }
namespace avx2 { DLRMX_INTERACTION_DECLS }
namespace avx512 { DLRMX_INTERACTION_DECLS }

}  // namespace dlrmx::cpu

// Fused multi-tensor optimizers for dense parameters (MLP weights, small replicated tables).
// One call updates every tensor of a parameter group in one parallel region.
#pragma once
#include <cstdint>

#include "isa.h"

namespace dlrmx::cpu {

// One fp32 parameter with its gradient and Adam-style moments, all `numel` long.
struct LambTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t numel;
};

// LAMB (You et al., 2020). Per tensor: m, v as in Adam (bias-corrected when bias_correction),
// u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p, then p -= lr * r * u with trust ratio
// r = min(|p|, max_weight_norm) / |u| (r = 1 when either norm is 0; no clamp if max_weight_norm == 0).
struct LambParams {
  float lr, beta1, beta2, eps, weight_decay, max_weight_norm;
  bool bias_correction;
  int64_t step;  // 1 for the first step
};

// One bf16 parameter stored split (upper halves + trail, see embedding_bag.h) with its grad:
// fp32 (grad) or bf16 (grad_bf16, the other one null).
struct SplitTensor {
  uint16_t* upper;
  uint16_t* trail;
  const float* grad;
  const uint16_t* grad_bf16;
  int64_t numel;
};

#define DLRMX_DENSE_OPTIM_DECLS                                                              \
  void lamb_step(const LambTensor* tensors, int64_t num_tensors, const LambParams& params,   \
                 int num_threads);                                                           \
  /* p32 -= lr * (g + weight_decay * p32) on the rebuilt fp32 weight, then split again. */   \
  void split_sgd_step(const SplitTensor* tensors, int64_t num_tensors, float lr,             \
                      float weight_decay, int num_threads);

namespace scalar { DLRMX_DENSE_OPTIM_DECLS }
namespace avx2 { DLRMX_DENSE_OPTIM_DECLS }
namespace avx512 { DLRMX_DENSE_OPTIM_DECLS }

}  // namespace dlrmx::cpu

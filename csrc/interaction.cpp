// The C ABI of the fused DLRM dot interaction.
#include <cstdint>

#include "checks.h"
#include "dlrmx.h"
#include "interaction.h"
#include "isa.h"

namespace dlrmx {
namespace {

constexpr const char* kOp = "dot_interaction";

// The output width D + F(F-1)/2 with F = T + 1 features; ValueErrors for sizes that overflow.
int64_t checked_width(int32_t dtype, int64_t B, int64_t T, int64_t D, int32_t num_threads) {
  CHECK_TYPE(dtype == DLRMX_F32 || dtype == DLRMX_BF16,
             "dot_interaction: dense and emb must both be float32 or both bfloat16");
  CHECK_VALUE(B >= 0 && T >= 0 && D > 0, "dot_interaction: bad sizes B=", B, ", T=", T, ", D=", D);
  CHECK_VALUE(num_threads >= 1, "num_threads must be >= 1, got ", num_threads);
  const int64_t F = checks::add_size(T, 1, kOp, "the feature count");
  const int64_t pairs = checks::mul_size(F, T, kOp, "the pair count") / 2;  // F(F-1)/2
  const int64_t width = checks::add_size(D, pairs, kOp, "the output width");
  checks::mul_size(B, width, kOp, "the output size (B * width)");
  checks::mul_size(B, checks::mul_size(T, D, kOp, "the emb width"), kOp, "the emb size");
  return width;
}

}  // namespace
}  // namespace dlrmx

using dlrmx::checks::guarded;

extern "C" {

int dlrmx_dot_interaction_forward(int32_t dtype, const void* dense, const void* emb, int64_t B,
                                  int64_t T, int64_t D, void* out, int32_t nt,
                                  dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cpu;
    dlrmx::checked_width(dtype, B, T, D, nt);
    if (dtype == DLRMX_F32) {
      DLRMX_ISA_CALL(isa::dot_interaction_forward<float>(
          static_cast<const float*>(dense), static_cast<const float*>(emb), B, T, D,
          static_cast<float*>(out), nt));
    }
    DLRMX_ISA_CALL(isa::dot_interaction_forward<uint16_t>(
        static_cast<const uint16_t*>(dense), static_cast<const uint16_t*>(emb), B, T, D,
        static_cast<uint16_t*>(out), nt));
  });
}

int dlrmx_dot_interaction_backward(int32_t dtype, const void* grad, const void* dense,
                                   const void* emb, int64_t B, int64_t T, int64_t D,
                                   void* grad_dense, void* grad_emb, int32_t nt,
                                   dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx::cpu;
    dlrmx::checked_width(dtype, B, T, D, nt);
    if (dtype == DLRMX_F32) {
      DLRMX_ISA_CALL(isa::dot_interaction_backward<float>(
          static_cast<const float*>(grad), static_cast<const float*>(dense),
          static_cast<const float*>(emb), B, T, D, static_cast<float*>(grad_dense),
          static_cast<float*>(grad_emb), nt));
    }
    DLRMX_ISA_CALL(isa::dot_interaction_backward<uint16_t>(
        static_cast<const uint16_t*>(grad), static_cast<const uint16_t*>(dense),
        static_cast<const uint16_t*>(emb), B, T, D, static_cast<uint16_t*>(grad_dense),
        static_cast<uint16_t*>(grad_emb), nt));
  });
}

}  // extern "C"

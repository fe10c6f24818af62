// The C ABI of the fused dense optimizers (dlrmx.optim.Lamb, dlrmx.optim.SplitSGD).
#include <cstdint>
#include <vector>

#include "checks.h"
#include "dense_optim.h"
#include "dlrmx.h"

using dlrmx::checks::guarded;

namespace {

void check_common(const char* op, int64_t n, const int64_t* numel, int32_t num_threads) {
  CHECK_VALUE(n >= 0, op, ": negative parameter count ", n);
  CHECK_VALUE(num_threads >= 1, "num_threads must be >= 1, got ", num_threads);
  for (int64_t i = 0; i < n; ++i) CHECK_VALUE(numel[i] >= 0, op, ": negative numel[", i, "]");
}

}  // namespace

extern "C" {

int dlrmx_lamb_step(int64_t n, float* const* params, const float* const* grads,
                    float* const* exp_avg, float* const* exp_avg_sq, const int64_t* numel,
                    double lr, double beta1, double beta2, double eps, double weight_decay,
                    double max_weight_norm, int32_t bias_correction, int64_t step,
                    int32_t num_threads, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    constexpr const char* op = "lamb_step";
    check_common(op, n, numel, num_threads);
    CHECK_VALUE(step >= 1, "lamb_step: step counts from 1, got ", step);
    checks::check_hyper(op, "lr", lr, 0);
    checks::check_hyper(op, "beta1", beta1, 0, 1, true);
    checks::check_hyper(op, "beta2", beta2, 0, 1, true);
    checks::check_hyper(op, "eps", eps, 0);
    checks::check_hyper(op, "weight_decay", weight_decay, 0);
    checks::check_hyper(op, "max_weight_norm", max_weight_norm, 0);
    std::vector<cpu::LambTensor> tensors;
    checks::Footprint footprint(op);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t bytes = checks::mul_size(numel[i], 4, op, "a parameter's bytes");
      footprint.add(params[i], bytes, {"params", i}, true);
      footprint.add(exp_avg[i], bytes, {"exp_avg", i}, true);
      footprint.add(exp_avg_sq[i], bytes, {"exp_avg_sq", i}, true);
      footprint.add(grads[i], bytes, {"grads", i}, false);
      tensors.push_back({params[i], grads[i], exp_avg[i], exp_avg_sq[i], numel[i]});
    }
    footprint.check();
    cpu::LambParams lp{static_cast<float>(lr), static_cast<float>(beta1),
                       static_cast<float>(beta2), static_cast<float>(eps),
                       static_cast<float>(weight_decay), static_cast<float>(max_weight_norm),
                       bias_correction != 0, step};
    DLRMX_ISA_CALL(isa::lamb_step(tensors.data(), n, lp, num_threads));
  });
}

int dlrmx_split_sgd_step(int64_t n, void* const* params, void* const* trails,
                         const void* const* grads, int32_t grads_dtype, const int64_t* numel,
                         double lr, double weight_decay, int32_t num_threads,
                         dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    constexpr const char* op = "split_sgd_step";
    check_common(op, n, numel, num_threads);
    checks::check_hyper(op, "lr", lr, 0);
    checks::check_hyper(op, "weight_decay", weight_decay, 0);
    CHECK_TYPE(grads_dtype == DLRMX_F32 || grads_dtype == DLRMX_BF16,
               "split_sgd_step: grads must be float32 or bfloat16 (dtype code ", grads_dtype, ")");
    const bool bf16_grads = grads_dtype == DLRMX_BF16;
    std::vector<cpu::SplitTensor> tensors;
    checks::Footprint footprint(op);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t bytes = checks::mul_size(numel[i], 2, op, "a parameter's bytes");
      footprint.add(params[i], bytes, {"params", i}, true);
      footprint.add(trails[i], bytes, {"trails", i}, true);
      footprint.add(grads[i], bf16_grads ? bytes : bytes * 2, {"grads", i}, false);
      tensors.push_back({static_cast<uint16_t*>(params[i]), static_cast<uint16_t*>(trails[i]),
                         bf16_grads ? nullptr : static_cast<const float*>(grads[i]),
                         bf16_grads ? static_cast<const uint16_t*>(grads[i]) : nullptr, numel[i]});
    }
    footprint.check();
    DLRMX_ISA_CALL(isa::split_sgd_step(tensors.data(), n, static_cast<float>(lr),
                                       static_cast<float>(weight_decay), num_threads));
  });
}

}  // extern "C"

// Torch glue for the fused dense optimizers (dlrmx.optim.Lamb, dlrmx.optim.SplitSGD).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "dense_optim.h"

namespace dlrmx {
namespace {

void check_same(const at::Tensor& a, const at::Tensor& b, const char* what, size_t i) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), what, "[", i, "] has shape ", b.sizes(),
                    ", its parameter has ", a.sizes());
}

void lamb_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
               at::TensorList exp_avg_sq, double lr, double beta1, double beta2, double eps,
               double weight_decay, double max_weight_norm, bool bias_correction, int64_t step) {
  const size_t n = params.size();
  TORCH_CHECK_VALUE(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n,
                    "lamb_step needs one grad and two moments per parameter");
  TORCH_CHECK_VALUE(step >= 1, "lamb_step: step counts from 1, got ", step);
  std::vector<at::Tensor> keep;  // contiguous fp32 gradients, alive for the call
  std::vector<cpu::LambTensor> tensors;
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    TORCH_CHECK_TYPE(p.scalar_type() == at::kFloat && p.is_contiguous() && p.device().is_cpu(),
                     "Lamb: parameter ", i, " must be a contiguous float32 CPU tensor, got ",
                     p.scalar_type(), " on ", p.device());
    check_same(p, grads[i], "grad", i);
    check_same(p, exp_avg[i], "exp_avg", i);
    check_same(p, exp_avg_sq[i], "exp_avg_sq", i);
    keep.push_back(grads[i].to(at::kFloat).contiguous());
    tensors.push_back({p.data_ptr<float>(), keep.back().data_ptr<float>(),
                       exp_avg[i].data_ptr<float>(), exp_avg_sq[i].data_ptr<float>(), p.numel()});
  }
  cpu::LambParams lp{static_cast<float>(lr), static_cast<float>(beta1), static_cast<float>(beta2),
                     static_cast<float>(eps), static_cast<float>(weight_decay),
                     static_cast<float>(max_weight_norm), bias_correction, step};
  const int threads = at::get_num_threads();
  DLRMX_ISA_CALL(isa::lamb_step(tensors.data(), static_cast<int64_t>(n), lp, threads));
}

void split_sgd_step(at::TensorList params, at::TensorList trails, at::TensorList grads, double lr,
                    double weight_decay) {
  const size_t n = params.size();
  TORCH_CHECK_VALUE(trails.size() == n && grads.size() == n,
                    "split_sgd_step needs one trail and one grad per parameter");
  std::vector<at::Tensor> keep;
  std::vector<cpu::SplitTensor> tensors;
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    TORCH_CHECK_TYPE(p.scalar_type() == at::kBFloat16 && p.is_contiguous() && p.device().is_cpu(),
                     "SplitSGD: parameter ", i, " must be a contiguous bfloat16 CPU tensor, got ",
                     p.scalar_type());
    TORCH_CHECK_TYPE(trails[i].scalar_type() == at::kShort && trails[i].is_contiguous(),
                     "SplitSGD: trail ", i, " must be a contiguous int16 tensor");
    check_same(p, trails[i], "trail", i);
    check_same(p, grads[i], "grad", i);
    keep.push_back(grads[i].to(at::kFloat).contiguous());
    tensors.push_back({static_cast<uint16_t*>(p.data_ptr()), static_cast<uint16_t*>(trails[i].data_ptr()),
                       keep.back().data_ptr<float>(), p.numel()});
  }
  const int threads = at::get_num_threads();
  DLRMX_ISA_CALL(isa::split_sgd_step(tensors.data(), static_cast<int64_t>(n),
                                     static_cast<float>(lr), static_cast<float>(weight_decay), threads));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dlrmx, m) {
  m.def("lamb_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avg, Tensor(c!)[] "
        "exp_avg_sq, float lr, float beta1, float beta2, float eps, float weight_decay, "
        "float max_weight_norm, bool bias_correction, int step) -> ()");
  m.def("split_sgd_step(Tensor(a!)[] params, Tensor(b!)[] trails, Tensor[] grads, float lr, "
        "float weight_decay) -> ()");
}

TORCH_LIBRARY_IMPL(dlrmx, CPU, m) {
  m.impl("lamb_step", &lamb_step);
  m.impl("split_sgd_step", &split_sgd_step);
}

}  // namespace dlrmx

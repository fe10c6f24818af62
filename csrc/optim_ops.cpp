// Torch glue for the fused dense optimizers (dlrmx.optim.Lamb, dlrmx.optim.SplitSGD).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "dense_optim.h"

namespace dlrmx {
namespace {

// A parameter-shaped tensor the step writes in place (a moment, a trail): checked like the
// parameter itself, as the kernels walk all of them with the parameter's flat index.
void check_state(const at::Tensor& p, const at::Tensor& s, const checks::Name& n,
                 at::ScalarType dtype) {
  checks::check_writable(s, n, dtype);
  checks::check_shape(s, n, p.sizes());
}

// A parameter's gradient (read only): returned as a contiguous float32 tensor.
at::Tensor checked_grad(const at::Tensor& p, const at::Tensor& g, const checks::Name& n) {
  checks::check_dense_cpu(g, n);
  checks::check_shape(g, n, p.sizes());
  return checks::readable_float(g, n, at::kFloat);
}

void lamb_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avg,
               at::TensorList exp_avg_sq, double lr, double beta1, double beta2, double eps,
               double weight_decay, double max_weight_norm, bool bias_correction, int64_t step) {
  constexpr const char* op = "lamb_step";
  const size_t n = params.size();
  TORCH_CHECK_VALUE(grads.size() == n && exp_avg.size() == n && exp_avg_sq.size() == n,
                    "lamb_step needs one grad and two moments per parameter");
  TORCH_CHECK_VALUE(step >= 1, "lamb_step: step counts from 1, got ", step);
  checks::check_hyper(op, "lr", lr, 0);
  checks::check_hyper(op, "beta1", beta1, 0, 1, true);
  checks::check_hyper(op, "beta2", beta2, 0, 1, true);
  checks::check_hyper(op, "eps", eps, 0);
  checks::check_hyper(op, "weight_decay", weight_decay, 0);
  checks::check_hyper(op, "max_weight_norm", max_weight_norm, 0);
  std::vector<at::Tensor> keep;  // contiguous fp32 gradients, alive for the call
  std::vector<cpu::LambTensor> tensors;
  checks::Footprint footprint(op);
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    const int64_t k = static_cast<int64_t>(i);
    checks::check_writable(p, {op, "params", k}, at::kFloat);
    check_state(p, exp_avg[i], {op, "exp_avg", k}, at::kFloat);
    check_state(p, exp_avg_sq[i], {op, "exp_avg_sq", k}, at::kFloat);
    keep.push_back(checked_grad(p, grads[i], {op, "grads", k}));
    footprint.add(p, {op, "params", k}, true);
    footprint.add(exp_avg[i], {op, "exp_avg", k}, true);
    footprint.add(exp_avg_sq[i], {op, "exp_avg_sq", k}, true);
    footprint.add(keep.back(), {op, "grads", k}, false);
    tensors.push_back({p.data_ptr<float>(), keep.back().const_data_ptr<float>(),
                       exp_avg[i].data_ptr<float>(), exp_avg_sq[i].data_ptr<float>(), p.numel()});
  }
  footprint.check();
  cpu::LambParams lp{static_cast<float>(lr), static_cast<float>(beta1), static_cast<float>(beta2),
                     static_cast<float>(eps), static_cast<float>(weight_decay),
                     static_cast<float>(max_weight_norm), bias_correction, step};
  const int threads = at::get_num_threads();
  DLRMX_ISA_CALL(isa::lamb_step(tensors.data(), static_cast<int64_t>(n), lp, threads));
}

void split_sgd_step(at::TensorList params, at::TensorList trails, at::TensorList grads, double lr,
                    double weight_decay) {
  constexpr const char* op = "split_sgd_step";
  const size_t n = params.size();
  TORCH_CHECK_VALUE(trails.size() == n && grads.size() == n,
                    "split_sgd_step needs one trail and one grad per parameter");
  checks::check_hyper(op, "lr", lr, 0);
  checks::check_hyper(op, "weight_decay", weight_decay, 0);
  std::vector<at::Tensor> keep;
  std::vector<cpu::SplitTensor> tensors;
  checks::Footprint footprint(op);
  for (size_t i = 0; i < n; ++i) {
    const auto& p = params[i];
    const int64_t k = static_cast<int64_t>(i);
    checks::check_writable(p, {op, "params", k}, at::kBFloat16);
    check_state(p, trails[i], {op, "trails", k}, at::kShort);
    keep.push_back(checked_grad(p, grads[i], {op, "grads", k}));
    footprint.add(p, {op, "params", k}, true);
    footprint.add(trails[i], {op, "trails", k}, true);
    footprint.add(keep.back(), {op, "grads", k}, false);
    tensors.push_back({static_cast<uint16_t*>(p.data_ptr()), static_cast<uint16_t*>(trails[i].data_ptr()),
                       keep.back().const_data_ptr<float>(), p.numel()});
  }
  footprint.check();
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

// Torch glue for the fused DLRM dot interaction: dlrmx::dot_interaction(_backward).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "interaction.h"
#include "isa.h"

namespace dlrmx {
namespace {

void check_inputs(const at::Tensor& dense, const at::Tensor& emb) {
  TORCH_CHECK_TYPE(dense.device().is_cpu() && emb.device().is_cpu(),
                   "dot_interaction: dense and emb must be CPU tensors");
  TORCH_CHECK_TYPE(dense.scalar_type() == emb.scalar_type() &&
                       (dense.scalar_type() == at::kFloat || dense.scalar_type() == at::kBFloat16),
                   "dot_interaction: dense and emb must both be float32 or both bfloat16, got ",
                   dense.scalar_type(), " and ", emb.scalar_type());
  TORCH_CHECK_VALUE(dense.dim() == 2 && emb.dim() == 2 && dense.size(0) == emb.size(0),
                    "dot_interaction: expected dense [B, D] and emb [B, T*D], got ", dense.sizes(),
                    " and ", emb.sizes());
  TORCH_CHECK_VALUE(dense.size(1) > 0 && emb.size(1) % dense.size(1) == 0,
                    "dot_interaction: emb width ", emb.size(1),
                    " is not a multiple of the dense width ", dense.size(1),
                    " (every embedding dim must equal the bottom MLP's output size)");
}

template <typename elem_t>
const elem_t* ptr(const at::Tensor& t) {
  return reinterpret_cast<const elem_t*>(t.const_data_ptr());
}
template <typename elem_t>
elem_t* mut(at::Tensor& t) {
  return reinterpret_cast<elem_t*>(t.mutable_data_ptr());
}

at::Tensor forward(const at::Tensor& dense_in, const at::Tensor& emb_in) {
  check_inputs(dense_in, emb_in);
  const auto dense = dense_in.contiguous(), emb = emb_in.contiguous();
  const int64_t B = dense.size(0), D = dense.size(1), T = emb.size(1) / D, F = T + 1;
  auto out = at::empty({B, D + F * (F - 1) / 2}, dense.options());
  const int nt = at::get_num_threads();
  using namespace cpu;
  if (dense.scalar_type() == at::kFloat) {
    [&] { DLRMX_ISA_CALL(isa::dot_interaction_forward<float>(ptr<float>(dense), ptr<float>(emb), B, T, D, mut<float>(out), nt)); }();
  } else {
    [&] { DLRMX_ISA_CALL(isa::dot_interaction_forward<uint16_t>(ptr<uint16_t>(dense), ptr<uint16_t>(emb), B, T, D, mut<uint16_t>(out), nt)); }();
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_in, const at::Tensor& dense_in,
                                            const at::Tensor& emb_in) {
  check_inputs(dense_in, emb_in);
  const auto dense = dense_in.contiguous(), emb = emb_in.contiguous();
  const int64_t B = dense.size(0), D = dense.size(1), T = emb.size(1) / D, F = T + 1;
  TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == B &&
                        grad_in.size(1) == D + F * (F - 1) / 2,
                    "dot_interaction_backward: grad has shape ", grad_in.sizes(), ", expected [",
                    B, ", ", D + F * (F - 1) / 2, "]");
  const auto grad = grad_in.to(dense.scalar_type()).contiguous();
  auto gd = at::empty_like(dense), ge = at::empty_like(emb);
  const int nt = at::get_num_threads();
  using namespace cpu;
  if (dense.scalar_type() == at::kFloat) {
    [&] { DLRMX_ISA_CALL(isa::dot_interaction_backward<float>(ptr<float>(grad), ptr<float>(dense), ptr<float>(emb), B, T, D, mut<float>(gd), mut<float>(ge), nt)); }();
  } else {
    [&] { DLRMX_ISA_CALL(isa::dot_interaction_backward<uint16_t>(ptr<uint16_t>(grad), ptr<uint16_t>(dense), ptr<uint16_t>(emb), B, T, D, mut<uint16_t>(gd), mut<uint16_t>(ge), nt)); }();
  }
  return {gd, ge};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dlrmx, m) {
  m.def("dot_interaction(Tensor dense, Tensor emb) -> Tensor");
  m.def("dot_interaction_backward(Tensor grad, Tensor dense, Tensor emb) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(dlrmx, CPU, m) {
  m.impl("dot_interaction", &forward);
  m.impl("dot_interaction_backward", &backward);
}

}  // namespace dlrmx

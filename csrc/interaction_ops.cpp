// Torch glue for the fused DLRM dot interaction: dlrmx::dot_interaction(_backward).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "checks.h"
#include "interaction.h"
#include "isa.h"

namespace dlrmx {
namespace {

constexpr const char* kOp = "dot_interaction";

void check_inputs(const at::Tensor& dense, const at::Tensor& emb) {
  checks::check_dense_cpu(dense, {kOp, "dense"});
  checks::check_dense_cpu(emb, {kOp, "emb"});
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

// The output width D + F(F-1)/2 with F = T + 1 features, or a ValueError if it overflows.
int64_t output_width(int64_t D, int64_t T) {
  const int64_t F = checks::add_size(T, 1, kOp, "the feature count");
  const int64_t pairs = checks::mul_size(F, T, kOp, "the pair count") / 2;  // F(F-1)/2
  return checks::add_size(D, pairs, kOp, "the output width");
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
  const int64_t B = dense_in.size(0), D = dense_in.size(1), T = emb_in.size(1) / D;
  const int64_t width = output_width(D, T);  // before any copy: an expanded emb may be huge
  checks::mul_size(B, width, kOp, "the output size (B * width)");
  const auto dense = checks::readable(dense_in, {kOp, "dense"});
  const auto emb = checks::readable(emb_in, {kOp, "emb"});
  auto out = at::empty({B, width}, dense.options());
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
  checks::check_dense_cpu(grad_in, {kOp, "grad"});
  const int64_t B = dense_in.size(0), D = dense_in.size(1), T = emb_in.size(1) / D;
  const int64_t width = output_width(D, T);
  TORCH_CHECK_VALUE(grad_in.dim() == 2 && grad_in.size(0) == B && grad_in.size(1) == width,
                    "dot_interaction_backward: grad has shape ", grad_in.sizes(), ", expected [",
                    B, ", ", width, "]");
  const auto dense = checks::readable(dense_in, {kOp, "dense"});
  const auto emb = checks::readable(emb_in, {kOp, "emb"});
  const auto grad = checks::readable_float(grad_in, {kOp, "grad"}, dense.scalar_type());
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

// Torch glue for the embedding-bag kernels: input checks (raised as Python TypeError /
// ValueError / IndexError before any weight is touched) and TORCH_LIBRARY registration.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <string>
#include <vector>

#include "checks.h"
#include "embedding_bag.h"

namespace dlrmx {
namespace {

using cpu::Bags;
using cpu::Pooling;
using cpu::Tables;

// Everything a kernel needs about the tables and a batch, checked and held alive.
struct Batch {
  std::vector<int64_t> rows, dims, padding_idx, output_offsets;
  Tables tables{};
  at::Tensor ids, offsets, psw;
  int64_t batch_size = 0;
  Pooling pooling = Pooling::sum;

  template <typename index_t>
  Bags<index_t> bags() const {
    return {batch_size, ids.numel(), ids.data_ptr<index_t>(), offsets.data_ptr<int64_t>(),
            psw.defined() ? psw.data_ptr<float>() : nullptr, pooling};
  }
};

constexpr const char* kOp = "embedding_bag";

void check_weight(const at::Tensor& w, size_t t) {
  const checks::Name n{kOp, "weights", static_cast<int64_t>(t)};
  checks::check_dense_cpu(w, n);
  TORCH_CHECK_TYPE(checks::dtype_in(w, {at::kFloat, at::kBFloat16}), n,
                   " must be float32 or bfloat16, got ", w.scalar_type());
  TORCH_CHECK_VALUE(w.dim() == 2 && w.is_contiguous() && !w.is_neg(), n,
                    " must be a contiguous 2-D [rows, dim] tensor (the fused backward updates it "
                    "in place), got sizes ", w.sizes(), ", strides ", w.strides());
}

// T * B, computed without overflow; a ValueError naming batch_size if offsets cannot hold T*B+1.
int64_t checked_num_bags(size_t T, int64_t batch_size, const at::Tensor& offsets) {
  TORCH_CHECK_VALUE(batch_size >= 0, "batch_size must be >= 0, got ", batch_size);
  int64_t nbags = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(static_cast<int64_t>(T), batch_size, &nbags) &&
                        nbags < INT64_MAX,
                    "batch_size ", batch_size, " is too large: T*B+1 offsets (T=", T,
                    " tables) overflow int64; offsets has ", offsets.numel(), " entries");
  TORCH_CHECK_VALUE(offsets.numel() == nbags + 1, "offsets must have T*B+1 = ", nbags + 1,
                    " entries (T=", T, " tables, B=batch_size=", batch_size, "), got ",
                    offsets.numel());
  return nbags;
}

Batch make_batch(at::TensorList weights, const at::Tensor& ids, const at::Tensor& offsets,
                 const std::optional<at::Tensor>& per_sample_weights, at::IntArrayRef padding_idx,
                 int64_t pooling, int64_t batch_size) {
  const size_t T = weights.size();
  TORCH_CHECK_VALUE(T > 0, "need at least one table");
  TORCH_CHECK_VALUE(padding_idx.size() == T, "padding_idx has ", padding_idx.size(),
                    " entries for ", T, " tables");
  TORCH_CHECK_VALUE(pooling >= 0 && pooling <= 2, "pooling must be 0 (sum), 1 (mean) or 2 (max)");
  checks::check_dense_cpu(ids, {kOp, "ids"});
  checks::check_dense_cpu(offsets, {kOp, "offsets"});
  TORCH_CHECK_TYPE(ids.scalar_type() == at::kInt || ids.scalar_type() == at::kLong,
                   "ids must be int32 or int64, got ", ids.scalar_type());
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kInt || offsets.scalar_type() == at::kLong,
                   "offsets must be int32 or int64, got ", offsets.scalar_type());
  TORCH_CHECK_VALUE(ids.dim() == 1 && offsets.dim() == 1, "ids and offsets must be 1-D, got ",
                    ids.dim(), "-D and ", offsets.dim(), "-D");
  const int64_t nbags = checked_num_bags(T, batch_size, offsets);
  TORCH_CHECK_VALUE(ids.numel() < (int64_t(1) << 32) && nbags < (int64_t(1) << 32),
                    "a batch may hold at most 2^32 ids and 2^32 bags");

  Batch b;
  b.batch_size = batch_size;
  b.pooling = static_cast<Pooling>(pooling);
  b.ids = checks::readable(ids, {kOp, "ids"});
  b.offsets = checks::readable(offsets, {kOp, "offsets"}).to(at::kLong);
  if (per_sample_weights.has_value() && per_sample_weights->defined()) {
    const auto& psw = *per_sample_weights;
    TORCH_CHECK_VALUE(b.pooling == Pooling::sum,
                      "per_sample_weights are only supported with mode='sum'");
    checks::check_dense_cpu(psw, {kOp, "per_sample_weights"});
    TORCH_CHECK_TYPE(psw.scalar_type() == at::kFloat,
                     "per_sample_weights must be a float32 CPU tensor, got ", psw.scalar_type(),
                     " on ", psw.device());
    TORCH_CHECK_VALUE(psw.dim() == 1 && psw.numel() == ids.numel(),
                      "per_sample_weights must be 1-D with one weight per id (", ids.numel(),
                      "), got shape ", psw.sizes());
    b.psw = checks::readable(psw, {kOp, "per_sample_weights"});
  }
  int64_t width = 0, total_rows = 0;
  for (size_t t = 0; t < T; ++t) {
    check_weight(weights[t], t);
    TORCH_CHECK_TYPE(weights[t].scalar_type() == weights[0].scalar_type(),
                     "all tables must share one dtype; weights[", t, "] is ",
                     weights[t].scalar_type(), ", weights[0] is ", weights[0].scalar_type());
    const int64_t rows = weights[t].size(0), pad = padding_idx[t];
    TORCH_CHECK_VALUE(pad == -1 || (pad >= 0 && pad < rows), "padding_idx[", t, "] = ", pad,
                      " must be -1 (none) or a row of table ", t, " (which has ", rows, " rows)");
    b.rows.push_back(rows);
    b.dims.push_back(weights[t].size(1));
    b.output_offsets.push_back(width);
    // Tables of width 0 hold no bytes, so their sizes are not bounded by memory: sum them safely.
    width = checks::add_size(width, weights[t].size(1), kOp, "the output width (sum of dims)");
    total_rows = checks::add_size(total_rows, rows, kOp, "the total number of rows");
    b.padding_idx.push_back(pad);
  }
  checks::mul_size(batch_size, width, kOp, "the output size (batch_size * sum of dims)");
  b.tables = {static_cast<int64_t>(T), b.rows.data(), b.dims.data(), b.padding_idx.data(),
              b.output_offsets.data(), width};

  cpu::BagsError e = b.ids.scalar_type() == at::kInt ? cpu::check_bags(b.tables, b.bags<int32_t>())
                                                     : cpu::check_bags(b.tables, b.bags<int64_t>());
  switch (e.kind) {
    case cpu::BagsError::ok: break;
    case cpu::BagsError::offsets_start:
      TORCH_CHECK_VALUE(false, "offsets must start at 0, got offsets[0] = ", e.value);
    case cpu::BagsError::offsets_decrease:
      TORCH_CHECK_VALUE(false, "offsets must not decrease: offsets[", e.position, "] = ", e.value,
                        " < offsets[", e.position - 1, "] (table ", e.table, ")");
    case cpu::BagsError::offsets_end:
      TORCH_CHECK_VALUE(false, "offsets must end at the number of ids (", ids.numel(),
                        "), got offsets[", e.position, "] = ", e.value);
    case cpu::BagsError::id_out_of_range:
      TORCH_CHECK_INDEX(false, "id ", e.value, " out of range for table ", e.table, " with ",
                        b.rows[e.table], " rows, at position ", e.position, " of ids");
  }
  return b;
}

int num_threads() { return at::get_num_threads(); }

std::tuple<at::Tensor, at::Tensor> forward(at::TensorList weights, const at::Tensor& ids,
                                           const at::Tensor& offsets,
                                           const std::optional<at::Tensor>& per_sample_weights,
                                           at::IntArrayRef padding_idx, int64_t pooling,
                                           int64_t batch_size) {
  Batch b = make_batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size);
  auto out = at::empty({batch_size, b.tables.output_width}, weights[0].options().dtype(at::kFloat));
  at::Tensor argmax = b.pooling == Pooling::max
                          ? at::empty({batch_size, b.tables.output_width}, ids.options().dtype(at::kLong))
                          : at::empty({0}, ids.options().dtype(at::kLong));
  int64_t* am = b.pooling == Pooling::max ? argmax.data_ptr<int64_t>() : nullptr;
  auto run = [&](auto index_tag, auto weight_tag) {
    using I = decltype(index_tag);
    using W = decltype(weight_tag);
    std::vector<const W*> ptrs;
    for (const auto& w : weights) ptrs.push_back(static_cast<const W*>(w.data_ptr()));
    DLRMX_ISA_CALL(isa::embedding_bag_forward<I, W>(b.tables, b.bags<I>(), ptrs.data(),
                                                     out.data_ptr<float>(), am, num_threads()));
  };
  const bool bf16 = weights[0].scalar_type() == at::kBFloat16;
  if (ids.scalar_type() == at::kInt)
    bf16 ? run(int32_t{}, uint16_t{}) : run(int32_t{}, float{});
  else
    bf16 ? run(int64_t{}, uint16_t{}) : run(int64_t{}, float{});
  return {out, argmax};
}

at::Tensor checked_grad_out(const at::Tensor& grad_out, const Batch& b) {
  checks::check_dense_cpu(grad_out, {kOp, "grad_out"});
  TORCH_CHECK_VALUE(grad_out.dim() == 2 && grad_out.size(0) == b.batch_size &&
                        grad_out.size(1) == b.tables.output_width,
                    "grad_out must be [", b.batch_size, ", ", b.tables.output_width, "], got ",
                    grad_out.sizes());
  return checks::readable_float(grad_out, {kOp, "grad_out"}, at::kFloat);
}

// The forward's argmax for max pooling (checked, as the ops are public; contiguous), else an
// undefined tensor. Its values are only compared with row numbers, so any value is safe.
at::Tensor checked_argmax(const at::Tensor& argmax, const Batch& b) {
  if (b.pooling != Pooling::max) return {};
  checks::check_dense_cpu(argmax, {kOp, "argmax"});
  TORCH_CHECK_VALUE(argmax.scalar_type() == at::kLong && argmax.dim() == 2 &&
                        argmax.size(0) == b.batch_size && argmax.size(1) == b.tables.output_width,
                    "max pooling needs the forward's argmax, an int64 [", b.batch_size, ", ",
                    b.tables.output_width, "] tensor; got ", argmax.scalar_type(), " ", argmax.sizes());
  return checks::readable(argmax, {kOp, "argmax"});
}

const int64_t* argmax_ptr(const at::Tensor& argmax) {
  return argmax.defined() ? argmax.const_data_ptr<int64_t>() : nullptr;
}

// The calling thread's plan, refilled for this batch: its buffers (O(ids of the largest batch
// seen)) stay allocated between steps instead of being page-faulted in again every step.
template <typename I>
const cpu::GradientPlan& plan_for(const Batch& b) {
  thread_local cpu::GradientPlan plan;
  cpu::fill_gradient_plan(b.tables, b.bags<I>(), num_threads(), plan);
  return plan;
}

// Dense weight gradients, one [rows, dim] tensor per table (standard autograd).
std::vector<at::Tensor> dense_grad(const at::Tensor& grad_out, at::TensorList weights,
                                   const at::Tensor& ids, const at::Tensor& offsets,
                                   const std::optional<at::Tensor>& per_sample_weights,
                                   at::IntArrayRef padding_idx, int64_t pooling, int64_t batch_size,
                                   const at::Tensor& argmax) {
  Batch b = make_batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size);
  at::Tensor go = checked_grad_out(grad_out, b);
  std::vector<at::Tensor> grads;
  std::vector<float*> ptrs;
  for (const auto& w : weights) {
    grads.push_back(at::zeros(w.sizes(), w.options().dtype(at::kFloat)));
    ptrs.push_back(grads.back().data_ptr<float>());
  }
  const at::Tensor am_kept = checked_argmax(argmax, b);
  const int64_t* am = argmax_ptr(am_kept);
  auto run = [&](auto index_tag) {
    using I = decltype(index_tag);
    const auto& plan = plan_for<I>(b);
    DLRMX_ISA_CALL(isa::embedding_bag_grad<I>(b.tables, b.bags<I>(), plan, go.data_ptr<float>(),
                                              am, ptrs.data(), nullptr, nullptr));
  };
  ids.scalar_type() == at::kInt ? run(int32_t{}) : run(int64_t{});
  return grads;
}

// Coalesced sparse gradients: per table, the distinct rows touched (sorted) and their summed
// gradients. Python wraps them as sparse COO tensors.
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> sparse_grad(
    const at::Tensor& grad_out, at::TensorList weights, const at::Tensor& ids,
    const at::Tensor& offsets, const std::optional<at::Tensor>& per_sample_weights,
    at::IntArrayRef padding_idx, int64_t pooling, int64_t batch_size, const at::Tensor& argmax) {
  Batch b = make_batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size);
  at::Tensor go = checked_grad_out(grad_out, b);
  const at::Tensor am_kept = checked_argmax(argmax, b);
  const int64_t* am = argmax_ptr(am_kept);
  std::vector<at::Tensor> rows, values;
  auto run = [&](auto index_tag) {
    using I = decltype(index_tag);
    const auto& plan = plan_for<I>(b);
    std::vector<int64_t*> row_ptrs;
    std::vector<float*> value_ptrs;
    for (size_t t = 0; t < weights.size(); ++t) {
      const int64_t nnz = plan.table_unique_rows(t);
      rows.push_back(at::empty({nnz}, ids.options().dtype(at::kLong)));
      values.push_back(at::empty({nnz, b.dims[t]}, go.options()));
      row_ptrs.push_back(rows.back().data_ptr<int64_t>());
      value_ptrs.push_back(values.back().data_ptr<float>());
    }
    DLRMX_ISA_CALL(isa::embedding_bag_grad<I>(b.tables, b.bags<I>(), plan, go.data_ptr<float>(),
                                              am, nullptr, row_ptrs.data(), value_ptrs.data()));
  };
  ids.scalar_type() == at::kInt ? run(int32_t{}) : run(int64_t{});
  // Threads own interleaved rows: sort each table's rows so the COO tensor is truly coalesced.
  for (size_t t = 0; t < rows.size(); ++t) {
    auto order = std::get<1>(rows[t].sort());
    rows[t] = rows[t].index_select(0, order);
    values[t] = values[t].index_select(0, order);
  }
  return {rows, values};
}

cpu::Update parse_update(const std::string& name) {
  if (name == "sgd") return cpu::Update::sgd;
  if (name == "split_sgd") return cpu::Update::split_sgd;
  if (name == "rowwise_adagrad") return cpu::Update::rowwise_adagrad;
  if (name == "adagrad") return cpu::Update::adagrad;
  TORCH_CHECK_VALUE(false, "unknown sparse optimizer '", name,
                    "' (expected sgd, split_sgd, rowwise_adagrad or adagrad)");
}

// Fused backward + optimizer: updates the touched rows of `weights` in place. `state` holds the
// optimizer's per-table tensors: split_sgd trails (int16, [rows, dim]), rowwise_adagrad sums
// (float32, [rows]), adagrad sums (float32, [rows, dim]); empty for sgd.
void update(const at::Tensor& grad_out, at::TensorList weights, const at::Tensor& ids,
            const at::Tensor& offsets, const std::optional<at::Tensor>& per_sample_weights,
            at::IntArrayRef padding_idx, int64_t pooling, int64_t batch_size,
            const at::Tensor& argmax, c10::string_view optimizer, double lr, double eps,
            at::TensorList state) {
  Batch b = make_batch(weights, ids, offsets, per_sample_weights, padding_idx, pooling, batch_size);
  at::Tensor go = checked_grad_out(grad_out, b);
  cpu::UpdateParams u;
  u.kind = parse_update(std::string(optimizer));
  // Checked here, where the rows are about to change: a NaN lr set on a live optimizer is
  // caught before any weight is touched.
  checks::check_hyper("embedding_bag_update", "lr", lr, 0);
  checks::check_hyper("embedding_bag_update", "eps", eps, 0);
  u.lr = static_cast<float>(lr);
  u.eps = static_cast<float>(eps);
  const bool bf16 = weights[0].scalar_type() == at::kBFloat16;
  TORCH_CHECK_TYPE(bf16 == (u.kind == cpu::Update::split_sgd),
                   "split_sgd needs bfloat16 weights (with int16 trails); the other optimizers "
                   "need float32 weights, got ", weights[0].scalar_type(), " for ", optimizer);
  checks::Footprint footprint("embedding_bag_update");
  for (size_t t = 0; t < weights.size(); ++t)
    footprint.add(weights[t], {kOp, "weights", static_cast<int64_t>(t)}, true);
  std::vector<float*> state_ptrs;
  std::vector<uint16_t*> trail_ptrs;
  if (u.kind == cpu::Update::sgd) {
    TORCH_CHECK_VALUE(state.empty(), "sgd keeps no state, got ", state.size(), " state tensors");
  } else {
    TORCH_CHECK_VALUE(state.size() == weights.size(), optimizer, " needs one state tensor per table (",
                      weights.size(), "), got ", state.size());
    for (size_t t = 0; t < state.size(); ++t) {
      const auto& s = state[t];
      const checks::Name n{kOp, "state", static_cast<int64_t>(t)};
      const bool rowwise = u.kind == cpu::Update::rowwise_adagrad;
      const auto want = rowwise ? std::vector<int64_t>{b.rows[t]} : std::vector<int64_t>{b.rows[t], b.dims[t]};
      checks::check_writable(s, n, u.kind == cpu::Update::split_sgd ? at::kShort : at::kFloat);
      checks::check_shape(s, n, want);
      footprint.add(s, n, true);
      if (u.kind == cpu::Update::split_sgd)
        trail_ptrs.push_back(static_cast<uint16_t*>(s.data_ptr()));
      else
        state_ptrs.push_back(s.data_ptr<float>());
    }
  }
  footprint.add(go, {kOp, "grad_out"}, false);
  if (b.psw.defined()) footprint.add(b.psw, {kOp, "per_sample_weights"}, false);
  footprint.add(b.ids, {kOp, "ids"}, false);
  footprint.add(b.offsets, {kOp, "offsets"}, false);
  const at::Tensor am_kept = checked_argmax(argmax, b);
  if (am_kept.defined()) footprint.add(am_kept, {kOp, "argmax"}, false);
  footprint.check();
  const int64_t* am = argmax_ptr(am_kept);
  u.state = state_ptrs.data();
  u.trail = trail_ptrs.data();
  auto run = [&](auto index_tag, auto weight_tag) {
    using I = decltype(index_tag);
    using W = decltype(weight_tag);
    std::vector<W*> ptrs;
    for (const auto& w : weights) ptrs.push_back(static_cast<W*>(w.data_ptr()));
    const bool linear = u.kind == cpu::Update::sgd || u.kind == cpu::Update::split_sgd;
    if (linear && b.pooling != Pooling::max) {  // SGD is linear: no grouping by row needed
      DLRMX_ISA_CALL(isa::embedding_bag_sgd<I, W>(b.tables, b.bags<I>(), go.data_ptr<float>(),
                                                   ptrs.data(), u, num_threads()));  // returns
    }
    const auto& plan = plan_for<I>(b);
    DLRMX_ISA_CALL(isa::embedding_bag_update<I, W>(b.tables, b.bags<I>(), plan,
                                                    go.data_ptr<float>(), am, ptrs.data(), u));
  };
  if (ids.scalar_type() == at::kInt)
    bf16 ? run(int32_t{}, uint16_t{}) : run(int32_t{}, float{});
  else
    bf16 ? run(int64_t{}, uint16_t{}) : run(int64_t{}, float{});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(dlrmx, m) {
  m.def("embedding_bag_forward(Tensor[] weights, Tensor ids, Tensor offsets, Tensor? "
        "per_sample_weights, int[] padding_idx, int pooling, int batch_size) -> (Tensor, Tensor)");
  m.def("embedding_bag_dense_grad(Tensor grad_out, Tensor[] weights, Tensor ids, Tensor offsets, "
        "Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
        "Tensor argmax) -> Tensor[]");
  m.def("embedding_bag_sparse_grad(Tensor grad_out, Tensor[] weights, Tensor ids, Tensor "
        "offsets, Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
        "Tensor argmax) -> (Tensor[], Tensor[])");
  m.def("embedding_bag_update(Tensor grad_out, Tensor(a!)[] weights, Tensor ids, Tensor offsets, "
        "Tensor? per_sample_weights, int[] padding_idx, int pooling, int batch_size, "
        "Tensor argmax, str optimizer, float lr, float eps, Tensor(b!)[] state) -> ()");
}

TORCH_LIBRARY_IMPL(dlrmx, CPU, m) {
  m.impl("embedding_bag_forward", &forward);
  m.impl("embedding_bag_dense_grad", &dense_grad);
  m.impl("embedding_bag_sparse_grad", &sparse_grad);
  m.impl("embedding_bag_update", &update);
}

}  // namespace dlrmx

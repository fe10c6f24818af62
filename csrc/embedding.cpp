// The C ABI of the embedding-bag kernels: the batch's data-dependent checks (raised in Python as
// TypeError / ValueError / IndexError before any weight is touched) and the calls.
#include <cstdint>
#include <vector>

#include "checks.h"
#include "dlrmx.h"
#include "embedding_bag.h"

namespace dlrmx {
namespace {

using cpu::Bags;
using cpu::Pooling;
using cpu::Tables;

// The batch description (csrc/dlrmx.h, DLRMX_BAGS_*), unpacked.
struct Args {
  int64_t num_tables;
  void* const* weights;
  int32_t weight_dtype;
  const int64_t* rows;
  const int64_t* dims;
  const int64_t* padding_idx;
  const void* ids;
  int32_t ids_dtype;
  int64_t num_ids;
  const int64_t* offsets;
  int64_t num_offsets;
  const float* psw;
  int32_t pooling;
  int64_t batch_size;
  int num_threads;
};

template <typename T>
T* address(int64_t v) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(v));
}

Args unpack(const int64_t* h) {
  CHECK_VALUE(h != nullptr, "no batch description");
  const int64_t T = h[DLRMX_BAGS_NUM_TABLES];
  CHECK_VALUE(T > 0, "need at least one table");
  for (int i : {DLRMX_BAGS_WEIGHT_DTYPE, DLRMX_BAGS_IDS_DTYPE, DLRMX_BAGS_POOLING,
                DLRMX_BAGS_NUM_THREADS})
    CHECK_VALUE(h[i] >= INT32_MIN && h[i] <= INT32_MAX, "batch description field ", i,
                " out of range");
  const int64_t* tables = h + DLRMX_BAGS_HEADER;
  return {T,
          reinterpret_cast<void* const*>(tables),
          static_cast<int32_t>(h[DLRMX_BAGS_WEIGHT_DTYPE]),
          tables + T,
          tables + 2 * T,
          tables + 3 * T,
          address<const void>(h[DLRMX_BAGS_IDS]),
          static_cast<int32_t>(h[DLRMX_BAGS_IDS_DTYPE]),
          h[DLRMX_BAGS_NUM_IDS],
          address<const int64_t>(h[DLRMX_BAGS_OFFSETS]),
          h[DLRMX_BAGS_NUM_OFFSETS],
          address<const float>(h[DLRMX_BAGS_PER_SAMPLE_WEIGHTS]),
          static_cast<int32_t>(h[DLRMX_BAGS_POOLING]),
          h[DLRMX_BAGS_BATCH_SIZE],
          static_cast<int>(h[DLRMX_BAGS_NUM_THREADS])};
}

// The checked batch: the kernels' view of the tables and bags.
struct Batch {
  Args a;
  std::vector<int64_t> output_offsets;
  Tables tables{};
  int64_t width = 0;
  bool bf16 = false, ids32 = false;

  template <typename index_t>
  Bags<index_t> bags() const {
    return {a.batch_size, a.num_ids, static_cast<const index_t*>(a.ids), a.offsets, a.psw,
            static_cast<Pooling>(a.pooling)};
  }
  int64_t weight_bytes(int64_t t) const { return a.rows[t] * a.dims[t] * (bf16 ? 2 : 4); }
};

Batch make_batch(const int64_t* description) {
  const Args a = unpack(description);
  const int64_t T = a.num_tables;
  CHECK_VALUE(a.num_threads >= 1, "num_threads must be >= 1, got ", a.num_threads);
  CHECK_VALUE(a.pooling >= 0 && a.pooling <= 2, "pooling must be 0 (sum), 1 (mean) or 2 (max)");
  CHECK_TYPE(a.weight_dtype == DLRMX_F32 || a.weight_dtype == DLRMX_BF16,
             "weights must be float32 or bfloat16");
  CHECK_TYPE(a.ids_dtype == DLRMX_I32 || a.ids_dtype == DLRMX_I64, "ids must be int32 or int64");
  CHECK_VALUE(a.batch_size >= 0, "batch_size must be >= 0, got ", a.batch_size);
  int64_t nbags = 0;
  CHECK_VALUE(!__builtin_mul_overflow(T, a.batch_size, &nbags) && nbags < INT64_MAX,
              "batch_size ", a.batch_size, " is too large: T*B+1 offsets (T=", T,
              " tables) overflow int64; offsets has ", a.num_offsets, " entries");
  CHECK_VALUE(a.num_offsets == nbags + 1, "offsets must have T*B+1 = ", nbags + 1, " entries (T=",
              T, " tables, B=batch_size=", a.batch_size, "), got ", a.num_offsets);
  CHECK_VALUE(a.num_ids >= 0 && a.num_ids < (int64_t(1) << 32) && nbags < (int64_t(1) << 32),
              "a batch may hold at most 2^32 ids and 2^32 bags");
  CHECK_VALUE(a.psw == nullptr || a.pooling == 0,
              "per_sample_weights are only supported with mode='sum'");

  Batch b{a};
  b.bf16 = a.weight_dtype == DLRMX_BF16;
  b.ids32 = a.ids_dtype == DLRMX_I32;
  const char* op = "embedding_bag";
  int64_t total_rows = 0;  // the gradient plan keys rows by their offset among all tables'
  for (int64_t t = 0; t < T; ++t) {
    const int64_t rows = a.rows[t], pad = a.padding_idx[t];
    CHECK_VALUE(rows >= 0 && a.dims[t] >= 0, "weights[", t, "] has negative sizes");
    CHECK_VALUE(pad == -1 || (pad >= 0 && pad < rows), "padding_idx[", t, "] = ", pad,
                " must be -1 (none) or a row of table ", t, " (which has ", rows, " rows)");
    b.output_offsets.push_back(b.width);
    // Tables of width 0 hold no bytes, so their sizes are not bounded by memory: sum them safely.
    b.width = checks::add_size(b.width, a.dims[t], op, "the output width (sum of dims)");
    checks::mul_size(rows, a.dims[t], op, "a table's size (rows * dim)");
    total_rows = checks::add_size(total_rows, rows, op, "the total number of rows");
  }
  checks::mul_size(a.batch_size, b.width, op, "the output size (batch_size * sum of dims)");
  b.tables = {T, a.rows, a.dims, a.padding_idx, b.output_offsets.data(), b.width};

  cpu::BagsError e = b.ids32 ? cpu::check_bags(b.tables, b.bags<int32_t>())
                             : cpu::check_bags(b.tables, b.bags<int64_t>());
  switch (e.kind) {
    case cpu::BagsError::ok: break;
    case cpu::BagsError::offsets_start:
      checks::fail(DLRMX_VALUE_ERROR, "offsets must start at 0, got offsets[0] = ", e.value);
    case cpu::BagsError::offsets_decrease:
      checks::fail(DLRMX_VALUE_ERROR, "offsets must not decrease: offsets[", e.position, "] = ",
                   e.value, " < offsets[", e.position - 1, "] (table ", e.table, ")");
    case cpu::BagsError::offsets_end:
      checks::fail(DLRMX_VALUE_ERROR, "offsets must end at the number of ids (", a.num_ids,
                   "), got offsets[", e.position, "] = ", e.value);
    case cpu::BagsError::id_out_of_range:
      checks::fail(DLRMX_INDEX_ERROR, "id ", e.value, " out of range for table ", e.table,
                   " with ", a.rows[e.table], " rows, at position ", e.position, " of ids");
  }
  return b;
}

// Runs f(index_tag, weight_tag) with the batch's index and weight types.
template <typename F>
void with_types(const Batch& b, F&& f) {
  if (b.ids32)
    b.bf16 ? f(int32_t{}, uint16_t{}) : f(int32_t{}, float{});
  else
    b.bf16 ? f(int64_t{}, uint16_t{}) : f(int64_t{}, float{});
}

// The calling thread's plan: its buffers (O(ids of the largest batch seen)) stay allocated
// between steps instead of being page-faulted in again every step. `key` remembers which batch
// filled it, so the second call of a sparse gradient can refuse a different batch.
struct ThreadPlan {
  cpu::GradientPlan plan;
  std::vector<int64_t> key;
};
ThreadPlan& thread_plan() {
  thread_local ThreadPlan p;
  return p;
}
std::vector<int64_t> batch_key(const Batch& b, int num_threads) {
  const Args& a = b.a;
  std::vector<int64_t> k{a.num_tables, a.num_ids, a.batch_size, a.pooling, num_threads,
                         reinterpret_cast<int64_t>(a.ids), reinterpret_cast<int64_t>(a.offsets),
                         reinterpret_cast<int64_t>(a.psw), a.ids_dtype};
  for (int64_t t = 0; t < a.num_tables; ++t) k.insert(k.end(), {a.rows[t], a.dims[t], a.padding_idx[t]});
  return k;
}
template <typename I>
const cpu::GradientPlan& fill_plan(const Batch& b, int num_threads) {
  ThreadPlan& p = thread_plan();
  p.key.clear();
  cpu::fill_gradient_plan(b.tables, b.bags<I>(), num_threads, p.plan);
  p.key = batch_key(b, num_threads);
  return p.plan;
}

const int64_t* checked_argmax(const Batch& b, const int64_t* argmax) {
  if (b.a.pooling != 2) return nullptr;
  CHECK_VALUE(argmax != nullptr || b.a.batch_size * b.width == 0,
              "max pooling needs the forward's argmax");
  return argmax;
}

}  // namespace
}  // namespace dlrmx

using dlrmx::checks::guarded;

extern "C" {

int dlrmx_embedding_bag_forward(const int64_t* bags, float* out, int64_t* argmax,
                                dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    const Batch b = make_batch(bags);
    const int num_threads = b.a.num_threads;
    int64_t* am = b.a.pooling == 2 ? argmax : nullptr;
    CHECK_VALUE(b.a.pooling != 2 || am != nullptr || b.a.batch_size * b.width == 0,
                "max pooling needs an argmax buffer");
    with_types(b, [&](auto index_tag, auto weight_tag) {
      using I = decltype(index_tag);
      using W = decltype(weight_tag);
      auto ptrs = reinterpret_cast<const W* const*>(b.a.weights);
      DLRMX_ISA_CALL(isa::embedding_bag_forward<I, W>(b.tables, b.bags<I>(), ptrs, out, am,
                                                       num_threads));
    });
  });
}

int dlrmx_embedding_bag_dense_grad(const int64_t* bags, const float* grad_out,
                                   const int64_t* argmax, float* const* grads,
                                   dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    const Batch b = make_batch(bags);
    const int num_threads = b.a.num_threads;
    const int64_t* am = checked_argmax(b, argmax);
    with_types(b, [&](auto index_tag, auto) {
      using I = decltype(index_tag);
      const auto& plan = fill_plan<I>(b, num_threads);
      DLRMX_ISA_CALL(isa::embedding_bag_grad<I>(b.tables, b.bags<I>(), plan, grad_out, am, grads,
                                                nullptr, nullptr));
    });
  });
}

int dlrmx_embedding_bag_sparse_plan(const int64_t* bags, int64_t* nnz, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    const Batch b = make_batch(bags);
    const int num_threads = b.a.num_threads;
    with_types(b, [&](auto index_tag, auto) {
      const auto& plan = fill_plan<decltype(index_tag)>(b, num_threads);
      for (int64_t t = 0; t < b.a.num_tables; ++t) nnz[t] = plan.table_unique_rows(t);
    });
  });
}

int dlrmx_embedding_bag_sparse_grad(const int64_t* bags, const float* grad_out,
                                    const int64_t* argmax, int64_t* const* rows_out,
                                    float* const* values, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    const Batch b = make_batch(bags);
    const int64_t* am = checked_argmax(b, argmax);
    ThreadPlan& p = thread_plan();
    CHECK_VALUE(!p.key.empty() && p.key == batch_key(b, p.plan.num_threads),
                "embedding_bag_sparse_grad: call dlrmx_embedding_bag_sparse_plan for this batch "
                "first, on the same thread");
    with_types(b, [&](auto index_tag, auto) {
      using I = decltype(index_tag);
      DLRMX_ISA_CALL(isa::embedding_bag_grad<I>(b.tables, b.bags<I>(), p.plan, grad_out, am,
                                                nullptr, rows_out, values));
    });
  });
}

int dlrmx_embedding_bag_update(const int64_t* bags, const float* grad_out, const int64_t* argmax,
                               int32_t optimizer, double lr, double eps, void* const* state,
                               int64_t num_state, dlrmx_status* status) {
  return guarded(status, [&] {
    using namespace dlrmx;
    const Batch b = make_batch(bags);
    const int num_threads = b.a.num_threads;
    CHECK_VALUE(optimizer >= DLRMX_SGD && optimizer <= DLRMX_ADAGRAD,
                "unknown sparse optimizer code ", optimizer);
    cpu::UpdateParams u;
    u.kind = static_cast<cpu::Update>(optimizer);
    // Checked here, where the rows are about to change: a NaN lr set on a live optimizer is
    // caught before any weight is touched.
    checks::check_hyper("embedding_bag_update", "lr", lr, 0);
    checks::check_hyper("embedding_bag_update", "eps", eps, 0);
    u.lr = static_cast<float>(lr);
    u.eps = static_cast<float>(eps);
    const bool split = u.kind == cpu::Update::split_sgd;
    CHECK_TYPE(b.bf16 == split,
               "split_sgd needs bfloat16 weights (with int16 trails); the other optimizers need "
               "float32 weights");
    const int64_t T = b.a.num_tables;
    if (u.kind == cpu::Update::sgd)
      CHECK_VALUE(num_state == 0, "sgd keeps no state, got ", num_state, " state tensors");
    else
      CHECK_VALUE(num_state == T, "the optimizer needs one state tensor per table (", T, "), got ",
                  num_state);
    const int64_t* am = checked_argmax(b, argmax);

    checks::Footprint footprint("embedding_bag_update");
    const bool rowwise = u.kind == cpu::Update::rowwise_adagrad;
    for (int64_t t = 0; t < T; ++t) {
      footprint.add(b.a.weights[t], b.weight_bytes(t), {"weights", t}, true);
      if (num_state > 0) {
        const int64_t elems = rowwise ? b.a.rows[t] : b.a.rows[t] * b.a.dims[t];
        footprint.add(state[t], elems * (split ? 2 : 4), {"state", t}, true);
      }
    }
    const int64_t out_elems = b.a.batch_size * b.width;
    footprint.add(grad_out, out_elems * 4, {"grad_out"}, false);
    footprint.add(b.a.psw, b.a.num_ids * 4, {"per_sample_weights"}, false);
    footprint.add(b.a.ids, b.a.num_ids * (b.ids32 ? 4 : 8), {"ids"}, false);
    footprint.add(b.a.offsets, b.a.num_offsets * 8, {"offsets"}, false);
    footprint.add(am, out_elems * 8, {"argmax"}, false);
    footprint.check();

    u.state = split ? nullptr : reinterpret_cast<float* const*>(state);
    u.trail = split ? reinterpret_cast<uint16_t* const*>(state) : nullptr;
    with_types(b, [&](auto index_tag, auto weight_tag) {
      using I = decltype(index_tag);
      using W = decltype(weight_tag);
      auto ptrs = reinterpret_cast<W* const*>(b.a.weights);
      const bool linear = u.kind == cpu::Update::sgd || split;
      if (linear && b.a.pooling != 2) {  // SGD is linear: no grouping by row needed
        DLRMX_ISA_CALL(isa::embedding_bag_sgd<I, W>(b.tables, b.bags<I>(), grad_out, ptrs, u,
                                                     num_threads));  // returns
      }
      const auto& plan = fill_plan<I>(b, num_threads);
      DLRMX_ISA_CALL(isa::embedding_bag_update<I, W>(b.tables, b.bags<I>(), plan, grad_out, am,
                                                      ptrs, u));
    });
  });
}

}  // extern "C"

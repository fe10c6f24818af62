// Fused multi-table embedding-bag kernels: forward pooling and backward (weight gradient or an
// in-place sparse optimizer update). Framework-free: raw pointers and sizes only.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "isa.h"

namespace dlrmx::cpu {

enum class Pooling : int32_t { sum = 0, mean = 1, max = 2 };

// T tables looked up in one call. Table t is a contiguous row-major [rows[t], dims[t]] array.
struct Tables {
  int64_t num_tables;
  const int64_t* rows;            // [T]
  const int64_t* dims;            // [T]
  const int64_t* padding_idx;     // [T]; -1 for none. Padding ids add nothing, count nothing, get no gradient.
  const int64_t* output_offsets;  // [T] first column of table t in the pooled output
  int64_t output_width;           // row stride of the pooled output and of its gradient
};

// One batch, in the table-major jagged layout: B bags per table, and bag (t, b) holds
// ids[offsets[t*B + b] : offsets[t*B + b + 1]].
template <typename index_t>
struct Bags {
  int64_t batch_size;
  int64_t num_ids;
  const index_t* ids;
  const int64_t* offsets;           // [T*B + 1], starts at 0, ends at the number of ids
  const float* per_sample_weights;  // nullable; one per id (sum pooling only)
  Pooling pooling;
};

// The first problem found in a batch, or kind == ok.
struct BagsError {
  enum Kind { ok, offsets_start, offsets_decrease, offsets_end, id_out_of_range } kind = ok;
  int64_t table = -1;     // table of the bad id or bag
  int64_t position = -1;  // index into ids (bad id) or into offsets
  int64_t value = 0;      // the bad id or offset
};
template <typename index_t>
BagsError check_bags(const Tables& tables, const Bags<index_t>& bags);

// bf16 values are stored as the upper 16 bits of an fp32 (uint16_t). split-SGD keeps the lower 16
// bits ("trail") beside them, so upper + trail is the exact fp32 master weight.
enum class Update : int32_t { sgd = 0, split_sgd = 1, rowwise_adagrad = 2, adagrad = 3 };

struct UpdateParams {
  Update kind = Update::sgd;
  float lr = 0.f;
  float eps = 0.f;
  float* const* state = nullptr;      // per table: rowwise_adagrad [rows], adagrad [rows, dim]
  uint16_t* const* trail = nullptr;   // per table, split_sgd: [rows, dim] lower halves
};

// Lookups grouped by destination row. Each thread owns a disjoint set of rows (by a hash of the
// row), and gets its lookups sorted by (table, row), lookup order kept within a row. Every later
// backward pass lets each thread touch only its own rows: race-free without atomics.
// Memory is O(ids in the batch), independent of table sizes.
struct RowLookup {
  uint64_t key;  // row_base[t] + id
  uint32_t bag;  // t * B + b
  uint32_t pos;  // index into ids
};

struct GradientPlan {
  int num_threads = 1;
  int64_t num_tables = 0;
  std::vector<int64_t> row_base;                 // [T + 1] prefix sums of rows
  std::vector<std::vector<RowLookup>> lookups;   // per thread
  std::vector<int64_t> unique_rows;              // [threads * T] distinct rows per thread and table
  std::vector<float> bag_scale;                  // [T*B]: 1/len for mean (non-padding ids), else 1
  std::vector<std::vector<RowLookup>> scratch;   // per thread, the radix sort's second buffer

  // Distinct rows of table t (the nnz of a coalesced sparse gradient).
  int64_t table_unique_rows(int64_t t) const;
  // Where thread `thread` writes its first distinct row of table t in a coalesced gradient.
  int64_t write_start(int thread, int64_t t) const;
};

// The thread (of `parts`) that owns global row `key`. Fibonacci hashing spreads popular (often
// small, consecutive) ids over all threads; the multiply-shift maps the hash onto [0, parts)
// without a division (this runs for every lookup in every thread).
inline int row_owner(uint64_t key, int parts) {
  const uint64_t hash = (key * 0x9E3779B97F4A7C15ull) >> 32;
  return static_cast<int>((hash * static_cast<uint64_t>(parts)) >> 32);
}

// Fills `plan` for a batch. A plan reused across batches keeps its buffers' capacity, so steady
// training allocates (and page-faults) nothing here.
template <typename index_t>
void fill_gradient_plan(const Tables& tables, const Bags<index_t>& bags, int num_threads,
                        GradientPlan& plan);

// Per-ISA kernels. weight_t: float, or uint16_t (bf16, forward and split_sgd only).
#define DLRMX_EMBEDDING_BAG_DECLS                                                                 \
  template <typename index_t, typename weight_t>                                                  \
  void embedding_bag_forward(const Tables& tables, const Bags<index_t>& bags,                     \
                             const weight_t* const* weights, float* out, int64_t* argmax,         \
                             int num_threads);                                                    \
  /* Weight gradient for autograd. dense_grads[t]: zero-filled [rows, dim] (or nullptr), or        \
     coalesced sparse: sparse_rows[t] [nnz_t], sparse_values[t] [nnz_t, dim]. */                   \
  template <typename index_t>                                                                     \
  void embedding_bag_grad(const Tables& tables, const Bags<index_t>& bags,                        \
                          const GradientPlan& plan, const float* grad_out, const int64_t* argmax, \
                          float* const* dense_grads, int64_t* const* sparse_rows,                 \
                          float* const* sparse_values);                                           \
  /* SGD and split-SGD with sum/mean pooling need no plan: each thread scans the batch and     \
     applies every lookup of the rows it owns directly (SGD is linear in the gradient). */      \
  template <typename index_t, typename weight_t>                                                  \
  void embedding_bag_sgd(const Tables& tables, const Bags<index_t>& bags, const float* grad_out,  \
                         weight_t* const* weights, const UpdateParams& update, int num_threads);  \
  /* Fused backward: applies the optimizer to each touched row in place; no gradient stored. */   \
  template <typename index_t, typename weight_t>                                                  \
  void embedding_bag_update(const Tables& tables, const Bags<index_t>& bags,                      \
                            const GradientPlan& plan, const float* grad_out,                      \
                            const int64_t* argmax, weight_t* const* weights,                      \
                            const UpdateParams& update);

namespace scalar { DLRMX_EMBEDDING_BAG_DECLS }
namespace avx2 { DLRMX_EMBEDDING_BAG_DECLS }
namespace avx512 { DLRMX_EMBEDDING_BAG_DECLS }

}  // namespace dlrmx::cpu

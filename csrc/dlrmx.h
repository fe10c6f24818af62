/* The C ABI of libdlrmx: the native kernels behind plain C functions (raw pointers, sizes, dtype
 * codes), so that the library builds without torch and loads under any torch (the ops are
 * defined in Python, python/dlrmx/native_ops.py, and call these through ctypes).
 *
 * Every function returns DLRMX_OK or an error kind, with a message in *status. The caller
 * describes its tensors (pointers and sizes it read from them); each function checks everything
 * that depends on the data (offsets, ids, overlapping outputs, hyper-parameters, sizes that could
 * overflow) before it writes anything, and the kernels touch only the memory described. */
#ifndef DLRMX_H
#define DLRMX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DLRMX_API __attribute__((visibility("default")))

/* Bumped whenever a signature below changes; python/dlrmx/native.py refuses another version. */
#define DLRMX_ABI_VERSION 2

/* Error kinds, raised in Python as the exception of the same name. */
enum { DLRMX_OK = 0, DLRMX_TYPE_ERROR = 1, DLRMX_VALUE_ERROR = 2, DLRMX_INDEX_ERROR = 3,
       DLRMX_RUNTIME_ERROR = 4, DLRMX_MEMORY_ERROR = 5 };

enum { DLRMX_F32 = 0, DLRMX_BF16 = 1, DLRMX_I32 = 2, DLRMX_I64 = 3 };

typedef struct {
  char message[1024];
} dlrmx_status;

DLRMX_API int32_t dlrmx_abi_version(void);

/* ISA levels as a comma-separated list: which 0 = compiled in, 1 = supported by this CPU,
 * 2 = the active one (DLRMX_CPU_ISA, else the best supported). */
DLRMX_API int dlrmx_isa_names(int32_t which, char* out, int64_t out_size, dlrmx_status* status);
DLRMX_API int dlrmx_set_isa(const char* name, dlrmx_status* status);
/* Back not yet touched memory with transparent huge pages where possible: 1 if advised. */
DLRMX_API int dlrmx_advise_huge_pages(void* data, int64_t bytes);

/* ---- Embedding bags over T tables, described by one int64 array (one argument is cheaper to
 * pass through ctypes than fourteen): DLRMX_BAGS_HEADER values, then 4T per-table values. */
enum {
  DLRMX_BAGS_NUM_TABLES = 0,    /* T */
  DLRMX_BAGS_WEIGHT_DTYPE,      /* DLRMX_F32 or DLRMX_BF16, one for all tables */
  DLRMX_BAGS_IDS,               /* address of ids[num_ids] */
  DLRMX_BAGS_IDS_DTYPE,         /* DLRMX_I32 or DLRMX_I64 */
  DLRMX_BAGS_NUM_IDS,
  DLRMX_BAGS_OFFSETS,           /* address of int64 offsets[num_offsets]: T*B+1 of them; bag
                                   (t, b) is ids[offsets[t*B+b] : offsets[t*B+b+1]] */
  DLRMX_BAGS_NUM_OFFSETS,
  DLRMX_BAGS_PER_SAMPLE_WEIGHTS, /* address of float[num_ids], or 0 (sum pooling only) */
  DLRMX_BAGS_POOLING,           /* 0 sum, 1 mean, 2 max */
  DLRMX_BAGS_BATCH_SIZE,        /* B */
  DLRMX_BAGS_NUM_THREADS,
  DLRMX_BAGS_HEADER             /* then: weight addresses [T] (each [rows, dim] contiguous),
                                   rows [T], dims [T], padding_idx [T] (-1: none) */
};
/* The pooled output and its gradient are [B, sum of dims] float32.
 * argmax: [B, width] int64 for max pooling (the row each output element came from), else NULL. */
DLRMX_API int dlrmx_embedding_bag_forward(const int64_t* bags, float* out, int64_t* argmax,
                                          dlrmx_status* status);
/* grads[t]: zero-filled float [rows[t], dims[t]]; argmax as the forward gave it (max pooling). */
DLRMX_API int dlrmx_embedding_bag_dense_grad(const int64_t* bags, const float* grad_out,
                                             const int64_t* argmax, float* const* grads,
                                             dlrmx_status* status);
/* Coalesced sparse gradients in two calls on one thread: the plan gives each table's number of
 * distinct rows (nnz[T]), then the gradient fills rows[t] [nnz[t]] and values[t] [nnz[t], dims[t]]
 * (rows in no particular order) for the same batch. */
DLRMX_API int dlrmx_embedding_bag_sparse_plan(const int64_t* bags, int64_t* nnz,
                                              dlrmx_status* status);
DLRMX_API int dlrmx_embedding_bag_sparse_grad(const int64_t* bags, const float* grad_out,
                                              const int64_t* argmax, int64_t* const* rows_out,
                                              float* const* values, dlrmx_status* status);

enum { DLRMX_SGD = 0, DLRMX_SPLIT_SGD = 1, DLRMX_ROWWISE_ADAGRAD = 2, DLRMX_ADAGRAD = 3 };
/* Fused backward + optimizer: updates the touched rows of the weights in place. state[t]:
 * split_sgd trails (int16 [rows, dim]), rowwise_adagrad sums (float [rows]), adagrad sums
 * (float [rows, dim]); num_state 0 for sgd. */
DLRMX_API int dlrmx_embedding_bag_update(const int64_t* bags, const float* grad_out,
                                         const int64_t* argmax, int32_t optimizer, double lr,
                                         double eps, void* const* state, int64_t num_state,
                                         dlrmx_status* status);

/* ---- DLRM dot interaction: dense [B, D], emb [B, T*D] -> out [B, D + F(F-1)/2], F = T + 1,
 * all of one dtype (F32 or BF16). */
DLRMX_API int dlrmx_dot_interaction_forward(int32_t dtype, const void* dense, const void* emb,
                                            int64_t batch, int64_t num_sparse, int64_t dim,
                                            void* out, int32_t num_threads, dlrmx_status* status);
DLRMX_API int dlrmx_dot_interaction_backward(int32_t dtype, const void* grad, const void* dense,
                                             const void* emb, int64_t batch, int64_t num_sparse,
                                             int64_t dim, void* grad_dense, void* grad_emb,
                                             int32_t num_threads, dlrmx_status* status);

/* ---- Fused dense optimizers over n parameters of numel[i] elements each. */
DLRMX_API int dlrmx_lamb_step(int64_t n, float* const* params, const float* const* grads,
                              float* const* exp_avg, float* const* exp_avg_sq,
                              const int64_t* numel, double lr, double beta1, double beta2,
                              double eps, double weight_decay, double max_weight_norm,
                              int32_t bias_correction, int64_t step, int32_t num_threads,
                              dlrmx_status* status);
/* params: bf16 upper halves; trails: their int16 lower halves; grads: all DLRMX_F32 or all
 * DLRMX_BF16 (grads_dtype; a bf16 gradient is widened exactly, never copied). */
DLRMX_API int dlrmx_split_sgd_step(int64_t n, void* const* params, void* const* trails,
                                   const void* const* grads, int32_t grads_dtype,
                                   const int64_t* numel, double lr, double weight_decay,
                                   int32_t num_threads, dlrmx_status* status);

/* ---- Popularity counting. A count-min sketch is `depth` rows of 2^log2_width int64 counters
 * (table[r * width + c]) with one 64-bit seed per row; ids are raw 64-bit values. weights may
 * be null (1 per id). */
DLRMX_API int dlrmx_cms_update(int64_t* table, int64_t log2_width, int64_t depth,
                               const uint64_t* seeds, const int64_t* ids, const int64_t* weights,
                               int64_t n, int32_t conservative, int32_t num_threads,
                               dlrmx_status* status);
DLRMX_API int dlrmx_cms_query(const int64_t* table, int64_t log2_width, int64_t depth,
                              const uint64_t* seeds, const int64_t* ids, int64_t n, int64_t* out,
                              int32_t num_threads, dlrmx_status* status);
/* counts[ids[i]] += 1; every id must be in [0, rows) (IndexError naming the first that is not,
 * before any count changes). */
DLRMX_API int dlrmx_exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n,
                                int32_t num_threads, dlrmx_status* status);

/* The hot/cold cache. remap: for a table-major batch (offsets: T*B+1), slots[j] (may be null)
 * = the hot-tier slot of ids[j] or -1; sample_hot[b] (may be null) = 1 iff all of sample b's
 * lookups are hot; *misses = the number of cold lookups. maps[t]: int32 slot per row of table t,
 * or null when its hot rows are the run [lo[t], hi[t]) (slot id - lo[t]). An id outside
 * [0, rows[t]) is an IndexError naming table and position. */
DLRMX_API int dlrmx_cache_remap(int64_t num_tables, const int32_t* const* maps, const int64_t* lo,
                                const int64_t* hi, const int64_t* rows, const void* ids,
                                int32_t ids_dtype, const int64_t* offsets, int64_t batch,
                                int32_t* slots, uint8_t* sample_hot, int64_t* misses,
                                int32_t num_threads, dlrmx_status* status);
/* dst[i] = src[idx[i]] / dst[idx[i]] = src[i], rows of row_bytes (idx checked against the
 * indexed tensor's rows; scatter indices must be distinct). */
DLRMX_API int dlrmx_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes,
                                const int64_t* idx, int64_t n, void* dst, int32_t num_threads,
                                dlrmx_status* status);
DLRMX_API int dlrmx_scatter_rows(const void* src, int64_t n, int64_t row_bytes, const int64_t* idx,
                                 void* dst, int64_t dst_rows, int32_t num_threads,
                                 dlrmx_status* status);

#ifdef __cplusplus
}
#endif

#endif /* DLRMX_H */

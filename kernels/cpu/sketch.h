// Popularity counting: a count-min sketch over raw 64-bit ids and an exact counter over dense
// row ids. Framework-free: raw pointers and sizes only.
//
// Sketch layout: table[r * width + c], depth rows r of width = 2^log2_width int64 counters; row r
// hashes id x to c = mix64(x ^ seeds[r]) >> (64 - log2_width) (splitmix64's finalizer).
#pragma once
#include <cstdint>

namespace dlrmx::cpu {

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

#define DLRMX_SKETCH_DECLS                                                                      \
  /* Adds weights[i] (1 when weights is null) for ids[i]. Plain: each sketch row is updated by  \
     one thread (no lost counts, the same result for any thread count). Conservative: raises    \
     only the counters below the new minimum estimate, in stream order, on one thread. */      \
  void cms_update(int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds,     \
                  const int64_t* ids, const int64_t* weights, int64_t n, bool conservative,     \
                  int num_threads);                                                             \
  /* out[i] = the minimum over the rows of id i's counters (never below the true count). */     \
  void cms_query(const int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds, \
                 const int64_t* ids, int64_t n, int64_t* out, int num_threads);                 \
  /* counts[ids[i]] += 1 for ids in [0, rows) (checked by the caller); each thread owns a range \
     of rows, so no count is lost. */                                                          \
  void exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n, int num_threads);

namespace scalar { DLRMX_SKETCH_DECLS }
namespace avx2 { DLRMX_SKETCH_DECLS }
namespace avx512 { DLRMX_SKETCH_DECLS }

}  // namespace dlrmx::cpu

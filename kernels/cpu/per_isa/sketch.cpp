// Count-min sketch and exact counter, compiled once per ISA level (DLRMX_ISA_NS names the level).
// The hash loops are plain integer loops the auto-vectorizer widens (64-bit multiplies).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "sketch.h"

namespace dlrmx::cpu::DLRMX_ISA_NS {

void cms_update(int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds,
                const int64_t* ids, const int64_t* weights, int64_t n, bool conservative,
                int num_threads) {
  const int shift = static_cast<int>(64 - log2_width);
  const int64_t width = int64_t{1} << log2_width;
  if (conservative) {
    std::vector<int64_t> cols(depth);
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t x = static_cast<uint64_t>(ids[i]);
      int64_t low = INT64_MAX;
      for (int64_t r = 0; r < depth; ++r) {
        cols[r] = r * width + static_cast<int64_t>(mix64(x ^ seeds[r]) >> shift);
        low = std::min(low, table[cols[r]]);
      }
      const int64_t target = low + (weights ? weights[i] : 1);
      for (int64_t r = 0; r < depth; ++r) table[cols[r]] = std::max(table[cols[r]], target);
    }
    return;
  }
  // Rows are independent: one thread per row (the rest of a row's work stays in its cache).
#pragma omp parallel for num_threads(std::max<int64_t>(1, std::min<int64_t>(num_threads, depth))) schedule(static)
  for (int64_t r = 0; r < depth; ++r) {
    int64_t* __restrict row = table + r * width;
    const uint64_t seed = seeds[r];
    for (int64_t i = 0; i < n; ++i)
      row[mix64(static_cast<uint64_t>(ids[i]) ^ seed) >> shift] += weights ? weights[i] : 1;
  }
}

void cms_query(const int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds,
               const int64_t* ids, int64_t n, int64_t* out, int num_threads) {
  const int shift = static_cast<int>(64 - log2_width);
  const int64_t width = int64_t{1} << log2_width;
#pragma omp parallel for num_threads(std::max(1, num_threads)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t x = static_cast<uint64_t>(ids[i]);
    int64_t low = INT64_MAX;
    for (int64_t r = 0; r < depth; ++r)
      low = std::min(low, table[r * width + static_cast<int64_t>(mix64(x ^ seeds[r]) >> shift)]);
    out[i] = depth > 0 ? low : 0;
  }
}

void exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n, int num_threads) {
  const int parts = std::max(1, num_threads);
  if (parts == 1 || n < (int64_t{1} << 16)) {  // one owner: no range test per id
    for (int64_t i = 0; i < n; ++i) ++counts[ids[i]];
    return;
  }
#pragma omp parallel num_threads(parts)
  {
    const int team = omp_get_num_threads(), me = omp_get_thread_num();
    const int64_t lo = rows * me / team, hi = rows * (me + 1) / team;  // the rows this thread owns
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = ids[i];
      if (id >= lo && id < hi) ++counts[id];
    }
  }
}

}  // namespace dlrmx::cpu::DLRMX_ISA_NS

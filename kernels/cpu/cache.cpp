// The hot/cold cache kernels (see cache.h).
#include "cache.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace dlrmx::cpu {

template <typename index_t>
int64_t remap_hot(const HotMaps& maps, const index_t* ids, const int64_t* offsets, int64_t batch,
                  int32_t* slots, uint8_t* sample_hot, int num_threads, RemapError& err) {
  const int64_t T = maps.num_tables;
  if (sample_hot != nullptr) std::fill(sample_hot, sample_hot + batch, uint8_t{1});
  int64_t misses = 0;
  // Threads split each table's bags by the same static schedule, so sample b's flag has one
  // writer in every table; the first bad id reported is the lowest position.
  std::vector<RemapError> bad(std::max(1, num_threads));
#pragma omp parallel num_threads(std::max(1, num_threads)) reduction(+ : misses)
  {
    RemapError& mine = bad[omp_get_thread_num()];
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* map = maps.map[t];
      const int64_t lo = maps.lo[t], hi = maps.hi[t], rows = maps.rows[t];
#pragma omp for schedule(static) nowait
      for (int64_t b = 0; b < batch; ++b) {
        const int64_t bag = t * batch + b;
        bool hot = true;
        for (int64_t j = offsets[bag]; j < offsets[bag + 1]; ++j) {
          const int64_t id = static_cast<int64_t>(ids[j]);
          if (id < 0 || id >= rows) {
            if (mine.table < 0 || j < mine.position) mine = {t, j, id};
            hot = false;
            if (slots != nullptr) slots[j] = -1;
            continue;
          }
          const int32_t s = map != nullptr ? map[id]
                            : (id >= lo && id < hi ? static_cast<int32_t>(id - lo) : -1);
          if (slots != nullptr) slots[j] = s;
          if (s < 0) {
            hot = false;
            ++misses;
          }
        }
        if (!hot && sample_hot != nullptr) sample_hot[b] = 0;
      }
    }
  }
  for (const auto& e : bad)
    if (e.table >= 0 && (err.table < 0 || e.position < err.position)) err = e;
  return err.table >= 0 ? -1 : misses;
}

namespace {

constexpr int64_t kAhead = 8;  // rows prefetched ahead of the copy

template <bool gather>
void copy_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
               int num_threads) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
#pragma omp parallel for schedule(static) num_threads(std::max(1, num_threads))
  for (int64_t i = 0; i < n; ++i) {
    if (i + kAhead < n) {
      const int64_t far = idx[i + kAhead] * row_bytes;
      if (gather) __builtin_prefetch(s + far, 0);
      else __builtin_prefetch(d + far, 1);
    }
    if (gather) std::memcpy(d + i * row_bytes, s + idx[i] * row_bytes, row_bytes);
    else std::memcpy(d + idx[i] * row_bytes, s + i * row_bytes, row_bytes);
  }
}

}  // namespace

void gather_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
                 int num_threads) {
  copy_rows<true>(src, row_bytes, idx, n, dst, num_threads);
}

void scatter_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
                  int num_threads) {
  copy_rows<false>(src, row_bytes, idx, n, dst, num_threads);
}

template int64_t remap_hot(const HotMaps&, const int32_t*, const int64_t*, int64_t, int32_t*,
                           uint8_t*, int, RemapError&);
template int64_t remap_hot(const HotMaps&, const int64_t*, const int64_t*, int64_t, int32_t*,
                           uint8_t*, int, RemapError&);

}  // namespace dlrmx::cpu

// The C ABI of the popularity counters (count-min sketch, exact counter).
#include <cstdint>

#include "checks.h"
#include "dlrmx.h"
#include "isa.h"
#include "sketch.h"

using dlrmx::checks::guarded;

namespace {

void check_sketch(int64_t log2_width, int64_t depth, int64_t n, int32_t nt) {
  CHECK_VALUE(log2_width >= 1 && log2_width <= 40, "count-min sketch: log2 width must be in "
              "[1, 40], got ", log2_width);
  CHECK_VALUE(depth >= 1 && depth <= 64, "count-min sketch: depth must be in [1, 64], got ", depth);
  CHECK_VALUE(n >= 0, "count-min sketch: negative id count ", n);
  CHECK_VALUE(nt >= 1, "num_threads must be >= 1, got ", nt);
}

}  // namespace

extern "C" {

int dlrmx_cms_update(int64_t* table, int64_t log2_width, int64_t depth, const uint64_t* seeds,
                     const int64_t* ids, const int64_t* weights, int64_t n, int32_t conservative,
                     int32_t nt, dlrmx_status* status) {
  return guarded(status, [&] {
    check_sketch(log2_width, depth, n, nt);
    if (weights != nullptr)
      for (int64_t i = 0; i < n; ++i)
        CHECK_VALUE(weights[i] >= 0, "count-min sketch: weights[", i, "] is ", weights[i],
                    "; counts only grow (weights must be >= 0)");
    DLRMX_ISA_CALL(isa::cms_update(table, log2_width, depth, seeds, ids, weights, n,
                                   conservative != 0, nt));
  });
}

int dlrmx_cms_query(const int64_t* table, int64_t log2_width, int64_t depth,
                    const uint64_t* seeds, const int64_t* ids, int64_t n, int64_t* out,
                    int32_t nt, dlrmx_status* status) {
  return guarded(status, [&] {
    check_sketch(log2_width, depth, n, nt);
    DLRMX_ISA_CALL(isa::cms_query(table, log2_width, depth, seeds, ids, n, out, nt));
  });
}

int dlrmx_exact_count(int64_t* counts, int64_t rows, const int64_t* ids, int64_t n, int32_t nt,
                      dlrmx_status* status) {
  return guarded(status, [&] {
    CHECK_VALUE(rows >= 1 && n >= 0 && nt >= 1, "exact counter: bad sizes rows=", rows, ", n=", n);
    for (int64_t i = 0; i < n; ++i)  // before any count changes: a bad id loses nothing
      CHECK_INDEX(ids[i] >= 0 && ids[i] < rows, "ids[", i, "] = ", ids[i],
                  " is outside the counter's rows [0, ", rows, ")");
    DLRMX_ISA_CALL(isa::exact_count(counts, rows, ids, n, nt));
  });
}

}  // extern "C"

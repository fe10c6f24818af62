// The C ABI of the hot/cold cache kernels (remap/classify, bulk row gather/scatter).
#include <cstdint>

#include "cache.h"
#include "checks.h"
#include "dlrmx.h"

using dlrmx::checks::guarded;

namespace {

void check_rows(const int64_t* idx, int64_t n, int64_t rows, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    CHECK_INDEX(idx[i] >= 0 && idx[i] < rows, what, ": rows[", i, "] = ", idx[i],
                " is outside the table's rows [0, ", rows, ")");
}

}  // namespace

extern "C" {

int dlrmx_cache_remap(int64_t num_tables, const int32_t* const* maps, const int64_t* lo,
                      const int64_t* hi, const int64_t* rows, const void* ids, int32_t ids_dtype,
                      const int64_t* offsets, int64_t batch, int32_t* slots, uint8_t* sample_hot,
                      int64_t* misses, int32_t nt, dlrmx_status* status) {
  return guarded(status, [&] {
    CHECK_VALUE(num_tables >= 1 && batch >= 0 && nt >= 1, "cache remap: bad sizes num_tables=",
                num_tables, ", batch=", batch);
    CHECK_TYPE(ids_dtype == DLRMX_I32 || ids_dtype == DLRMX_I64, "cache remap: ids must be int32 "
               "or int64");
    const int64_t nbags = num_tables * batch;
    CHECK_VALUE(offsets[0] == 0, "cache remap: offsets[0] must be 0, got ", offsets[0]);
    for (int64_t i = 1; i <= nbags; ++i)
      CHECK_VALUE(offsets[i] >= offsets[i - 1], "cache remap: offsets decrease at ", i);
    dlrmx::cpu::HotMaps m{num_tables, maps, lo, hi, rows};
    dlrmx::cpu::RemapError err;
    *misses = ids_dtype == DLRMX_I32
        ? dlrmx::cpu::remap_hot(m, static_cast<const int32_t*>(ids), offsets, batch, slots,
                                sample_hot, nt, err)
        : dlrmx::cpu::remap_hot(m, static_cast<const int64_t*>(ids), offsets, batch, slots,
                                sample_hot, nt, err);
    CHECK_INDEX(err.table < 0, "table ", err.table, ": values[", err.position, "] = ", err.id,
                " is outside its rows [0, ", err.table >= 0 ? rows[err.table] : 0, ")");
  });
}

int dlrmx_gather_rows(const void* src, int64_t src_rows, int64_t row_bytes, const int64_t* idx,
                      int64_t n, void* dst, int32_t nt, dlrmx_status* status) {
  return guarded(status, [&] {
    CHECK_VALUE(row_bytes >= 1 && n >= 0 && nt >= 1, "gather rows: bad sizes");
    check_rows(idx, n, src_rows, "gather rows");
    dlrmx::cpu::gather_rows(src, row_bytes, idx, n, dst, nt);
  });
}

int dlrmx_scatter_rows(const void* src, int64_t n, int64_t row_bytes, const int64_t* idx,
                       void* dst, int64_t dst_rows, int32_t nt, dlrmx_status* status) {
  return guarded(status, [&] {
    CHECK_VALUE(row_bytes >= 1 && n >= 0 && nt >= 1, "scatter rows: bad sizes");
    check_rows(idx, n, dst_rows, "scatter rows");
    dlrmx::cpu::scatter_rows(src, row_bytes, idx, n, dst, nt);
  });
}

}  // extern "C"

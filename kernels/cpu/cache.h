// The hot/cold embedding cache: remapping a batch's ids to hot-tier slots (which also classifies
// each sample as hot or cold), and the bulk row copies that sync the hot replica with the master
// tables. Framework-free: raw pointers and sizes only. Integer and copy work: not ISA-specific.
#pragma once
#include <cstdint>

namespace dlrmx::cpu {

// Where table t's hot rows are: map[t][id] is the slot of row id in the hot tier or -1, or, with
// map[t] null, the rows [lo[t], hi[t]) sit in slots 0..hi[t]-lo[t]-1 (a frequency-ordered table:
// its hot rows are one run of ids at the front).
struct HotMaps {
  int64_t num_tables;
  const int32_t* const* map;
  const int64_t* lo;
  const int64_t* hi;
  const int64_t* rows;  // each table's row count, for the range check of the ids
};

// First id outside its table: {table, position, id}; table < 0 when every id is in range.
struct RemapError {
  int64_t table = -1, position = 0, id = 0;
};

// ids: a table-major batch (bag t*B + b is table t, sample b; offsets has T*B+1 entries).
// slots (may be null): the hot slot of each id, or -1. sample_hot (may be null): 1 iff every
// lookup of sample b is hot. Returns the number of misses, or -1 with `err` set for an id out
// of range (nothing written is meaningful then).
template <typename index_t>
int64_t remap_hot(const HotMaps& maps, const index_t* ids, const int64_t* offsets, int64_t batch,
                  int32_t* slots, uint8_t* sample_hot, int num_threads, RemapError& err);

// dst row i = src row idx[i] (gather) / dst row idx[i] = src row i (scatter), rows of row_bytes;
// the indices are checked by the caller. Parallel over rows, prefetching ahead.
void gather_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
                 int num_threads);
void scatter_rows(const void* src, int64_t row_bytes, const int64_t* idx, int64_t n, void* dst,
                  int num_threads);

}  // namespace dlrmx::cpu

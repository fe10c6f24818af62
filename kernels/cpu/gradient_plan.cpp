// Validation of a batch and the row-ownership plan shared by every backward kernel. Not
// ISA-specific: integer work only.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "embedding_bag.h"

namespace dlrmx::cpu {

template <typename index_t>
BagsError check_bags(const Tables& tables, const Bags<index_t>& bags) {
  BagsError err;
  const int64_t nbags = tables.num_tables * bags.batch_size;
  const int64_t* off = bags.offsets;
  if (off[0] != 0) return {BagsError::offsets_start, 0, 0, off[0]};
  for (int64_t i = 1; i <= nbags; ++i)
    if (off[i] < off[i - 1]) return {BagsError::offsets_decrease, (i - 1) / bags.batch_size, i, off[i]};
  if (off[nbags] != bags.num_ids)
    return {BagsError::offsets_end, tables.num_tables - 1, nbags, off[nbags]};
  for (int64_t t = 0; t < tables.num_tables; ++t) {
    const int64_t rows = tables.rows[t];
    for (int64_t j = off[t * bags.batch_size]; j < off[(t + 1) * bags.batch_size]; ++j) {
      const int64_t id = static_cast<int64_t>(bags.ids[j]);
      if (id < 0 || id >= rows) return {BagsError::id_out_of_range, t, j, id};
    }
  }
  return err;
}

namespace {

// Stable LSD radix sort by key; only the low `bits` bits of the keys can be non-zero.
void radix_sort(std::vector<RowLookup>& v, std::vector<RowLookup>& tmp, int bits) {
  constexpr int kDigit = 11;
  tmp.resize(v.size());
  for (int shift = 0; shift < bits; shift += kDigit) {
    size_t count[(1 << kDigit) + 1] = {0};
    for (const auto& x : v) ++count[((x.key >> shift) & ((1u << kDigit) - 1)) + 1];
    for (int i = 0; i < (1 << kDigit); ++i) count[i + 1] += count[i];
    for (const auto& x : v) tmp[count[(x.key >> shift) & ((1u << kDigit) - 1)]++] = x;
    v.swap(tmp);
  }
}

}  // namespace

template <typename index_t>
void fill_gradient_plan(const Tables& tables, const Bags<index_t>& bags, int num_threads,
                        GradientPlan& plan) {
  const int64_t T = tables.num_tables, B = bags.batch_size, nbags = T * B;
  const int parts = std::max(1, num_threads);
  plan.num_threads = parts;
  plan.num_tables = T;
  plan.row_base.assign(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) plan.row_base[t + 1] = plan.row_base[t] + tables.rows[t];
  plan.lookups.resize(parts);
  plan.scratch.resize(parts);
  plan.unique_rows.assign(static_cast<size_t>(parts) * T, 0);
  plan.bag_scale.assign(nbags, 1.f);
  int bits = 0;
  while (bits < 64 && (static_cast<uint64_t>(plan.row_base[T]) >> bits) != 0) ++bits;

#pragma omp parallel num_threads(parts)
  {
    const int team = omp_get_num_threads();
    // A team smaller than asked for (nested parallelism) still covers every part.
    for (int part = omp_get_thread_num(); part < parts; part += team) {
      auto& mine = plan.lookups[part];
      const size_t expect = bags.num_ids / parts + 1024;
      // Keep the buffers of earlier batches, unless they are far larger than this one needs.
      if (mine.capacity() > 4 * expect) {
        std::vector<RowLookup>().swap(mine);
        std::vector<RowLookup>().swap(plan.scratch[part]);
      }
      mine.clear();
      mine.reserve(expect);
      for (int64_t bag = 0; bag < nbags; ++bag) {
        const int64_t t = bag / B, pad = tables.padding_idx[t];
        const uint64_t base = plan.row_base[t];
        int64_t len = 0;
        for (int64_t j = bags.offsets[bag]; j < bags.offsets[bag + 1]; ++j) {
          const int64_t id = static_cast<int64_t>(bags.ids[j]);
          if (id == pad) continue;
          ++len;
          const uint64_t key = base + id;
          if (row_owner(key, parts) == part)
            mine.push_back({key, static_cast<uint32_t>(bag), static_cast<uint32_t>(j)});
        }
        if (bags.pooling == Pooling::mean && bag % parts == part && len > 0)
          plan.bag_scale[bag] = 1.f / static_cast<float>(len);
      }
      radix_sort(mine, plan.scratch[part], bits);
      int64_t t = 0;
      for (size_t i = 0; i < mine.size(); ++i) {
        if (i > 0 && mine[i].key == mine[i - 1].key) continue;
        while (mine[i].key >= static_cast<uint64_t>(plan.row_base[t + 1])) ++t;
        ++plan.unique_rows[static_cast<size_t>(part) * T + t];
      }
    }
  }
}

int64_t GradientPlan::table_unique_rows(int64_t t) const { return write_start(num_threads, t); }

int64_t GradientPlan::write_start(int thread, int64_t t) const {
  int64_t start = 0;
  for (int p = 0; p < thread; ++p) start += unique_rows[static_cast<size_t>(p) * num_tables + t];
  return start;
}

template BagsError check_bags(const Tables&, const Bags<int32_t>&);
template BagsError check_bags(const Tables&, const Bags<int64_t>&);
template void fill_gradient_plan(const Tables&, const Bags<int32_t>&, int, GradientPlan&);
template void fill_gradient_plan(const Tables&, const Bags<int64_t>&, int, GradientPlan&);

}  // namespace dlrmx::cpu
